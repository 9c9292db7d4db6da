"""Shaded mesh pictures of a head model: the head preview and quick looks at motion.

A small z-buffer triangle rasterizer (numba) with Gouraud-interpolated Lambert shading. It draws
meshes, not Gaussians: it shows the head model itself, before any avatar is bound to it.
"""

from __future__ import annotations

import math
from pathlib import Path

import numba
import numpy as np
import torch

from avatar.atomic import atomic_path, check_output_path
from avatar.errors import TalkingAvatarError
from avatar.image import to_uint8
from avatar.mesh import vertex_normals

#: Flat colours per region for mesh pictures (linear RGB in [0, 1]).
REGION_COLOURS = {
    "skin": (0.80, 0.62, 0.52),
    "lips": (0.68, 0.36, 0.36),
    "mouth_interior": (0.35, 0.12, 0.12),
    "tongue": (0.72, 0.35, 0.38),
    "teeth": (0.93, 0.91, 0.85),
    "eyes": (0.92, 0.92, 0.92),
}


@numba.njit(cache=True)
def _raster(screen, depth_cam, normals, colours, faces, width, height):  # pragma: no cover - jit
    image = np.ones((height, width, 3), dtype=np.float32)
    zbuf = np.full((height, width), np.inf, dtype=np.float32)
    light = np.array([0.3, 0.4, 1.0])
    light = light / np.sqrt((light**2).sum())
    for f in range(faces.shape[0]):
        a, b, c = faces[f, 0], faces[f, 1], faces[f, 2]
        if depth_cam[a] <= 0 or depth_cam[b] <= 0 or depth_cam[c] <= 0:
            continue
        x0, y0 = screen[a, 0], screen[a, 1]
        x1, y1 = screen[b, 0], screen[b, 1]
        x2, y2 = screen[c, 0], screen[c, 1]
        area = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
        if abs(area) < 1e-12:
            continue
        xmin = max(int(math.floor(min(x0, x1, x2))), 0)
        xmax = min(int(math.ceil(max(x0, x1, x2))), width - 1)
        ymin = max(int(math.floor(min(y0, y1, y2))), 0)
        ymax = min(int(math.ceil(max(y0, y1, y2))), height - 1)
        for py in range(ymin, ymax + 1):
            for px in range(xmin, xmax + 1):
                sx, sy = px + 0.5, py + 0.5
                w0 = ((x1 - sx) * (y2 - sy) - (x2 - sx) * (y1 - sy)) / area
                w1 = ((x2 - sx) * (y0 - sy) - (x0 - sx) * (y2 - sy)) / area
                w2 = 1.0 - w0 - w1
                if w0 < 0 or w1 < 0 or w2 < 0:
                    continue
                z = w0 * depth_cam[a] + w1 * depth_cam[b] + w2 * depth_cam[c]
                if z >= zbuf[py, px]:
                    continue
                zbuf[py, px] = z
                nx = w0 * normals[a, 0] + w1 * normals[b, 0] + w2 * normals[c, 0]
                ny = w0 * normals[a, 1] + w1 * normals[b, 1] + w2 * normals[c, 1]
                nz = w0 * normals[a, 2] + w1 * normals[b, 2] + w2 * normals[c, 2]
                norm = math.sqrt(nx * nx + ny * ny + nz * nz) + 1e-12
                lambert = abs(nx * light[0] + ny * light[1] + nz * light[2]) / norm
                shade = 0.25 + 0.75 * lambert
                for ch in range(3):
                    image[py, px, ch] = shade * (
                        w0 * colours[a, ch] + w1 * colours[b, ch] + w2 * colours[c, ch]
                    )
    return image


def render_mesh(
    vertices: np.ndarray,
    faces: np.ndarray,
    colours: np.ndarray,
    *,
    size: int = 256,
    yaw_deg: float = 0.0,
    distance: float = 0.75,
    fov_deg: float = 25.0,
    target: tuple[float, float, float] = (0.0, -0.03, 0.0),
) -> np.ndarray:
    """Shaded picture `[size, size, 3]` float32 of a mesh seen from the front, turned by yaw.

    vertices `[V, 3]` metres in FLAME axes; colours `[V, 3]` in [0, 1]; yaw rotates the camera
    about +y towards the subject's left.
    """
    yaw = math.radians(yaw_deg)
    eye = np.array(target) + distance * np.array([math.sin(yaw), 0.0, math.cos(yaw)])
    forward = np.array(target) - eye
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, [0.0, 1.0, 0.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    rel = vertices - eye
    cam = np.stack([rel @ right, rel @ down, rel @ forward], axis=1)  # OpenCV axes
    focal = 0.5 * size / math.tan(math.radians(fov_deg) / 2)
    screen = focal * cam[:, :2] / cam[:, 2:3] + size / 2
    normals = vertex_normals(vertices, faces)
    return _raster(
        screen.astype(np.float64),
        cam[:, 2].astype(np.float64),
        normals.astype(np.float64),
        colours.astype(np.float32),
        faces.astype(np.int64),
        size,
        size,
    )


def region_colours(model, num_vertices: int) -> np.ndarray:
    """Per-vertex colours from the model's regions (skin tone where none applies)."""
    colours = np.tile(np.array(REGION_COLOURS["skin"], dtype=np.float32), (num_vertices, 1))
    for name in ("lips", "mouth_interior", "tongue", "teeth", "eyes"):
        if name in model.regions:
            colours[model.regions[name]] = REGION_COLOURS[name]
    if "eye_left" in model.regions:  # a dark iris and pupil at the front of each eyeball
        verts = model.v_template.cpu().numpy()
        for side in ("eye_left", "eye_right"):
            ids = model.regions[side]
            centre = verts[ids].mean(axis=0)
            front = (verts[ids, 2] - centre[2]) / np.ptp(verts[ids, 2])
            colours[ids[front > 0.38]] = (0.25, 0.18, 0.12)
    return colours


def head_preview(model, *, tile: int = 256) -> np.ndarray:
    """A labelled sheet `[H, W, 3]` uint8: neutral, jaw open, smile, and an expression sweep."""
    frames: list[tuple[str, object, float]] = []
    neutral = model.neutral_params(1)
    frames.append(("neutral", neutral, 0.0))
    frames.append(("neutral, 3/4 view", neutral, 35.0))
    jaw = model.neutral_params(1)
    jaw.jaw_pose[0, 0] = 0.3
    frames.append(("jaw open 0.3 rad", jaw, 0.0))
    frames.append(("jaw open, side", jaw, 90.0))
    if model.face_unit_names is not None:
        for label, units in (
            ("smile", {"mouthSmileLeft": 1.0, "mouthSmileRight": 1.0, "cheekSquintLeft": 0.5, "cheekSquintRight": 0.5}),
            ("brows up, eyes wide", {"browInnerUp": 1.0, "browOuterUpLeft": 1.0, "browOuterUpRight": 1.0, "eyeWideLeft": 1.0, "eyeWideRight": 1.0}),
            ("funnel + jaw", {"mouthFunnel": 1.0, "jawOpen": 0.4}),
            ("blink", {"eyeBlinkLeft": 1.0, "eyeBlinkRight": 1.0}),
        ):  # fmt: skip
            w = torch.zeros(1, len(model.face_unit_names))
            for name, value in units.items():
                w[0, model.face_unit_names.index(name)] = value
            p = model.neutral_params(1)
            p.expr[:], p.jaw_pose[:] = model.face_units_to_params(w)
            frames.append((label, p, 0.0))
    for k in range(4):
        for sign in (1.0, -1.0):
            p = model.neutral_params(1)
            p.expr[0, k] = 2.0 * sign
            frames.append((f"expr[{k}] = {2.0 * sign:+.0f}", p, 0.0))
    faces = model.faces.cpu().numpy()
    colours = region_colours(model, model.num_vertices)
    tiles = []
    with torch.no_grad():
        for _, params, yaw in frames:
            verts = model(params)[0].cpu().numpy()
            img = render_mesh(verts, faces, colours, size=tile, yaw_deg=yaw)
            tiles.append(to_uint8(img))
    return labelled_sheet(tiles, [label for label, _, _ in frames], columns=4)


def labelled_sheet(
    tiles: list[np.ndarray], labels: list[str], *, columns: int, label_height: int = 20
) -> np.ndarray:
    """Equal-sized uint8 tiles `[h, w, 3]` in a grid, each with its label underneath."""
    from PIL import Image, ImageDraw

    h, w = tiles[0].shape[:2]
    rows = math.ceil(len(tiles) / columns)
    sheet = Image.new("RGB", (columns * w, rows * (h + label_height)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for i, (tile, label) in enumerate(zip(tiles, labels, strict=True)):
        x, y = (i % columns) * w, (i // columns) * (h + label_height)
        sheet.paste(Image.fromarray(tile), (x, y))
        draw.text((x + 6, y + h + 3), label, fill=(0, 0, 0))
    return np.asarray(sheet)


def write_head_preview(
    path: str | Path, *, flame: str | Path | None = None, tile: int = 256
) -> Path:
    """Render `head_preview` for a model (the bundled head by default) to a PNG; returns its path."""
    import imageio.v3 as iio

    from avatar.flame import load_flame

    if tile < 32 or tile > 2048:
        raise TalkingAvatarError(f"tile size {tile} is out of range; use 32 to 2048 pixels")
    path = check_output_path(path, what="head preview")
    sheet = head_preview(load_flame(flame), tile=tile)
    with atomic_path(path, what="head preview") as tmp:
        iio.imwrite(tmp, sheet)
    return path
