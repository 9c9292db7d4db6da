"""A labelled contact sheet of a Gaussian avatar: several views, mouth closed and open, expressions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from avatar.atomic import atomic_path
from avatar.binding import GaussianAvatar
from avatar.camera import VIEWS, head_camera
from avatar.errors import TalkingAvatarError
from avatar.flame.model import FlameModel
from avatar.flame.preview import labelled_sheet
from avatar.image import to_uint8
from avatar.render import render


def _face_unit_params(model: FlameModel, units: dict[str, float], jaw: float = 0.0):
    p = model.neutral_params(1)
    p.jaw_pose[0, 0] = jaw
    if units and model.face_unit_names is not None:
        w = torch.zeros(1, len(model.face_unit_names))
        for name, value in units.items():
            w[0, model.face_unit_names.index(name)] = value
        expr, jaw_pose = model.face_units_to_params(w)
        p.expr, p.jaw_pose = expr, p.jaw_pose + jaw_pose
    return p


def contact_sheet(
    avatar: GaussianAvatar, model: FlameModel, *, size: int = 512, backend: str = "auto"
) -> np.ndarray:
    """An image `[H, W, 3]` uint8: front / three-quarter / side, mouth closed and open, and a
    few expressions when the head has face units."""
    shots: list[tuple[str, object, str]] = []
    closed = model.neutral_params(1)
    opened = _face_unit_params(model, {}, jaw=0.3)
    for view in VIEWS:
        shots.append((f"{view}, mouth closed", closed, view))
    for view in VIEWS:
        shots.append((f"{view}, mouth open", opened, view))
    if model.face_unit_names is not None:
        for label, units, jaw in (
            ("smile", {"mouthSmileLeft": 1.0, "mouthSmileRight": 1.0, "cheekSquintLeft": 0.6, "cheekSquintRight": 0.6}, 0.0),
            ("surprise", {"browInnerUp": 1.0, "browOuterUpLeft": 1.0, "browOuterUpRight": 1.0, "eyeWideLeft": 1.0, "eyeWideRight": 1.0}, 0.2),
            ("frown", {"browDownLeft": 1.0, "browDownRight": 1.0, "mouthFrownLeft": 1.0, "mouthFrownRight": 1.0, "mouthPressLeft": 0.5, "mouthPressRight": 0.5}, 0.0),
        ):  # fmt: skip
            shots.append(
                (
                    label,
                    _face_unit_params(model, units, jaw),
                    "three-quarter" if label == "frown" else "front",
                )
            )
    tiles = []
    with torch.no_grad():
        for _, params, view in shots:
            gaussians = avatar.pose(model(avatar.dress(params))[0])
            out = render(gaussians, head_camera(view, size, size), backend=backend)
            tiles.append(to_uint8(out.color))
    return labelled_sheet(tiles, [label for label, _, _ in shots], columns=3)


def write_contact_sheet(
    path: str | Path,
    *,
    avatar: str | Path | None = None,
    flame: str | Path | None = None,
    model: FlameModel | None = None,
    size: int = 512,
    backend: str = "auto",
) -> Path:
    """Render `contact_sheet` of an avatar (the default one) on a head (`model`, else the one
    `flame` names) to a PNG, atomically."""
    import imageio.v3 as iio

    from avatar.avatars import load_avatar
    from avatar.flame import load_flame

    if not 64 <= size <= 2048:
        raise TalkingAvatarError(f"size {size} is out of range; use 64 to 2048 pixels")
    model = model if model is not None else load_flame(flame)
    sheet = contact_sheet(load_avatar(avatar, model), model, size=size, backend=backend)
    path = Path(path)
    with atomic_path(path, what="contact sheet") as tmp:
        iio.imwrite(tmp, sheet)
    return path
