"""Camera helpers against known answers."""

from __future__ import annotations

import math

import pytest
import torch

from avatar.camera import Camera, intrinsics_from_fov
from avatar.errors import TalkingAvatarError

FOV = math.radians(20)


def project(camera: Camera, point: tuple[float, float, float]) -> tuple[float, float, float]:
    """Pixel (u, v) and depth of a world point."""
    p = camera.viewmat.double() @ torch.tensor([*point, 1.0], dtype=torch.float64)  # [4]
    uvw = camera.K.double() @ p[:3]  # [3]
    return float(uvw[0] / uvw[2]), float(uvw[1] / uvw[2]), float(p[2])


def test_intrinsics_from_fov():
    K = intrinsics_from_fov(FOV, 640, 480)
    focal = 240 / math.tan(FOV / 2)
    expected = torch.tensor([[focal, 0, 320], [0, focal, 240], [0, 0, 1]], dtype=torch.float32)
    torch.testing.assert_close(K, expected)


def test_look_at_puts_target_at_the_image_centre():
    cam = Camera.look_at((0.3, 0.2, 0.5), (0.01, 0.02, -0.03), fov_y=FOV, width=320, height=200)
    u, v, z = project(cam, (0.01, 0.02, -0.03))
    assert u == pytest.approx(160, abs=1e-3) and v == pytest.approx(100, abs=1e-3)
    assert z == pytest.approx(math.dist((0.3, 0.2, 0.5), (0.01, 0.02, -0.03)), rel=1e-6)
    # world up appears up in the image (OpenCV: smaller v), +x (subject's left) on the right
    cam = Camera.look_at((0, 0, 1), (0, 0, 0), fov_y=FOV, width=100, height=100)
    assert project(cam, (0, 0.05, 0))[1] < 50
    assert project(cam, (0.05, 0, 0))[0] > 50
    torch.testing.assert_close(cam.camera_center, torch.tensor([0.0, 0.0, 1.0]))
    assert torch.linalg.det(cam.viewmat[:3, :3]) == pytest.approx(1.0, abs=1e-6)


def test_orbit_azimuth_and_elevation():
    front = Camera.orbit((0, 0, 0), 0.6, 0.0, 0.0, fov_y=FOV, width=64, height=64)
    torch.testing.assert_close(front.camera_center, torch.tensor([0.0, 0.0, 0.6]))
    left = Camera.orbit((0, 0, 0), 0.6, math.pi / 2, 0.0, fov_y=FOV, width=64, height=64)
    torch.testing.assert_close(left.camera_center, torch.tensor([0.6, 0.0, 0.0]), atol=1e-6, rtol=0)
    above = Camera.orbit((0, 0.1, 0), 0.5, 0.0, math.radians(30), fov_y=FOV, width=64, height=64)
    expected = torch.tensor([0.0, 0.1 + 0.25, 0.5 * math.cos(math.radians(30))])
    torch.testing.assert_close(above.camera_center, expected)
    u, v, _ = project(above, (0, 0.1, 0))
    assert (u, v) == pytest.approx((32, 32), abs=1e-3)


def test_camera_to_world_round_trip():
    cam = Camera.look_at((0.2, -0.1, 0.7), (0, 0.05, 0), fov_y=FOV, width=90, height=60)
    again = Camera.from_camera_to_world(
        cam.wxyz, cam.camera_center, fov_y=cam.fov_y, width=90, height=60
    )
    torch.testing.assert_close(again.viewmat, cam.viewmat, atol=1e-6, rtol=0)
    torch.testing.assert_close(again.K, cam.K)
    c2w = cam.camera_to_world
    torch.testing.assert_close(c2w @ cam.viewmat, torch.eye(4), atol=1e-6, rtol=0)
    # identity orientation: camera axes are the world's (looking down world +z, y down)
    ident = Camera.from_camera_to_world((1, 0, 0, 0), (0, 0, -1), fov_y=FOV, width=8, height=8)
    torch.testing.assert_close(ident.viewmat[:3, 3], torch.tensor([0.0, 0.0, 1.0]))


def test_scaled_keeps_the_field_of_view():
    cam = Camera.orbit((0, 0, 0), 0.6, 0.3, 0.1, fov_y=FOV, width=512, height=256)
    small = cam.scaled(128, 64)
    assert (small.width, small.height) == (128, 64)
    assert small.fov_y == pytest.approx(FOV)
    u, v, _ = project(cam, (0.02, 0.03, 0.01))
    us, vs, _ = project(small, (0.02, 0.03, 0.01))
    assert (us, vs) == pytest.approx((u / 4, v / 4), abs=1e-3)


@pytest.mark.parametrize(
    "call",
    [
        lambda: intrinsics_from_fov(FOV, 0, 10),
        lambda: intrinsics_from_fov(FOV, 10.5, 10),
        lambda: intrinsics_from_fov(0.0, 10, 10),
        lambda: intrinsics_from_fov(math.pi, 10, 10),
        lambda: Camera.look_at((0, 0, 1), (0, 0, 1), fov_y=FOV, width=8, height=8),
        lambda: Camera.look_at((0, 1, 0), (0, 0, 0), fov_y=FOV, width=8, height=8),
        lambda: Camera.look_at((0, 0), (0, 0, 0), fov_y=FOV, width=8, height=8),
        lambda: Camera.orbit((0, 0, 0), -1.0, 0, 0, fov_y=FOV, width=8, height=8),
        lambda: Camera.orbit((0, 0, 0), 1.0, 0, math.pi / 2, fov_y=FOV, width=8, height=8),
        lambda: Camera.from_camera_to_world((0, 0, 0, 0), (0, 0, 0), fov_y=FOV, width=8, height=8),
        lambda: Camera(torch.eye(3), torch.eye(3), 8, 8),
        lambda: Camera(torch.eye(4), torch.zeros(3, 3), 8, 8),
        lambda: Camera(torch.eye(4), torch.eye(3), -8, 8),
        lambda: Camera.orbit((0, 0, 0), 1.0, 0, 0, fov_y=FOV, width=8, height=8).scaled(0, 8),
    ],
)
def test_bad_input_raises_one_line_error(call):
    with pytest.raises(TalkingAvatarError) as info:
        call()
    assert "\n" not in str(info.value)
