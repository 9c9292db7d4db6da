"""The default Gaussian avatar: its build, its colours, rendering it, and mismatched avatars."""

from __future__ import annotations

import math

import numpy as np
import pytest

from avatar.avatars import load_avatar
from avatar.builder import build_default_avatar, scheme_from_options
from avatar.camera import Camera, head_camera
from avatar.errors import TalkingAvatarError
from avatar.gaussians import sh_to_rgb
from avatar.ply import write_ply
from avatar.raster_reference import render_reference
from avatar.render import render


@pytest.fixture(scope="module")
def avatar(head):
    return load_avatar(None, head)


def test_default_avatar_is_bound_to_the_head(avatar, head) -> None:
    assert len(avatar.binding) >= 30_000
    assert int(avatar.binding.max()) < head.faces.shape[0] and int(avatar.binding.min()) >= 0
    g = avatar.pose(head.v_template)
    # flat: the normal axis is far thinner than the in-plane ones
    assert float((g.scales.min(dim=1).values / g.scales.max(dim=1).values).median()) < 0.1


def test_cpu_render_of_the_avatar_matches_the_reference(avatar, head) -> None:
    g = avatar.pose(head.v_template)
    cam = head_camera("three-quarter", 40, 40)
    out = render(g, cam, backend="cpu")
    ref, _, _ = render_reference(
        g.means, g.quats, g.scales, g.opacities, g.sh, cam.viewmat, cam.K, 40, 40
    )
    assert (out.color.double() - ref).abs().max() < 1e-3


def test_mouth_opens_in_the_picture(avatar, head) -> None:
    cam = head_camera("front", 128, 128)
    closed = render(avatar.pose(head.v_template), cam, backend="cpu").color
    p = head.neutral_params(1)
    p.jaw_pose[0, 0] = 0.3
    opened = render(avatar.pose(head(p)[0]), cam, backend="cpu").color
    diff = (opened - closed).abs().sum(dim=-1)  # [H, W]
    rows = diff.sum(dim=1)
    assert rows[: 128 // 2].sum() < 0.2 * rows.sum()  # the change is in the lower face
    assert diff.max() > 0.3


@pytest.mark.parametrize("jaw", [0.05, 0.1, 0.2])
def test_the_opening_a_viewer_sees_is_the_opening_of_the_mesh(avatar, head, jaw) -> None:
    """Down the mouth's centre line, between the projected inner-lip contours, the pixels are
    the mouth (dark inside, teeth), not lip: the lips' Gaussians must not spill over the
    opening and the inside must not be lip-coloured (the first avatar showed 33-55 % of it)."""
    p = head.neutral_params(1)
    p.jaw_pose[0, 0] = jaw
    verts = head(p)[0]
    mouth = head.v_template[head.region("lips")].mean(dim=0).tolist()
    cam = Camera.orbit(mouth, 0.16, 0.0, 0.0, fov_y=math.radians(25.0), width=256, height=256)
    color = render(avatar.pose(verts), cam, backend="cpu").color  # [H, W, 3]

    def project(region: str) -> np.ndarray:
        cam_pts = verts[head.region(region)] @ cam.viewmat[:3, :3].T + cam.viewmat[:3, 3]
        uv = cam_pts @ cam.K.T
        return (uv[:, :2] / uv[:, 2:3]).numpy()

    upper, lower = project("lip_upper_inner"), project("lip_lower_inner")
    x = int(upper[:, 0].mean())
    y_up = upper[np.abs(upper[:, 0] - x).argmin(), 1]
    y_low = lower[np.abs(lower[:, 0] - x).argmin(), 1]
    column = color[:, x]  # [H, 3]
    lip_above, lip_below = column[int(y_up) - 6], column[int(y_low) + 6]  # about 1 mm outside
    inside = column[int(math.ceil(y_up)) : int(y_low) + 1]
    lip_like = (
        np.minimum(
            (inside - lip_above).abs().sum(dim=-1).numpy(),
            (inside - lip_below).abs().sum(dim=-1).numpy(),
        )
        < 0.12
    )
    assert len(inside) >= 15  # 3 mm or more of opening at this jaw angle
    assert (~lip_like).mean() >= 0.75


def test_colour_scheme_options(head) -> None:
    dark = build_default_avatar(head, count=5000, scheme=scheme_from_options(skin="dark"), seed=1)
    light = build_default_avatar(head, count=5000, scheme=scheme_from_options(skin="light"), seed=1)
    lum = lambda a: sh_to_rgb(a.sh[:, 0]).mean().item()  # noqa: E731
    assert lum(light) > lum(dark) + 0.12  # skin is most of the head; hair and eyes stay
    with pytest.raises(TalkingAvatarError, match="unknown skin tone 'purple'"):
        scheme_from_options(skin="purple")
    with pytest.raises(TalkingAvatarError, match="not a hex colour"):
        scheme_from_options(hair="#12345")


def test_avatar_for_another_head_is_refused(head, tmp_path) -> None:
    avatar = build_default_avatar(head, count=2000, seed=0)
    avatar.binding = avatar.binding + head.faces.shape[0]  # as if bound to a bigger mesh
    write_ply(tmp_path / "other.ply", avatar)
    with pytest.raises(TalkingAvatarError, match="binding"):
        load_avatar(tmp_path / "other.ply", head)


def test_open_eyes_show_white_on_both_sides_of_the_iris(avatar, head) -> None:
    # Render the rest face from the front and read the pixel row through each eyeball centre:
    # white sclera must show left and right of the dark iris (no lid Gaussians spilling over).
    size = 320
    cam = Camera.orbit(
        (0.0, 0.0, 0.0), 0.25, 0.0, 0.0, fov_y=math.radians(25), width=size, height=size
    )
    image = render(avatar.pose(head.v_template), cam, backend="cpu").color.numpy()  # [H, W, 3]
    rest = head.v_template.numpy()
    for eye in ("eye_left", "eye_right"):
        centre = rest[head.region(eye)].mean(axis=0)
        cam_point = cam.viewmat[:3, :3].numpy() @ centre + cam.viewmat[:3, 3].numpy()
        u, v = (cam.K.numpy() @ (cam_point / cam_point[2]))[:2]
        half = int(round(0.014 * cam.K[0, 0].item() / cam_point[2]))  # 14 mm each side
        row = image[int(round(v)), int(round(u)) - half : int(round(u)) + half + 1]  # [n, 3]
        darkest = int(np.argmin(row.sum(axis=1)))  # the pupil
        white = row.min(axis=1) > 0.75
        assert row[darkest].max() < 0.3, eye
        assert white[:darkest].any() and white[darkest:].any(), eye
