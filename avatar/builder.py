"""Build the default Gaussian avatar from a head model: Gaussians on its surface, painted as a face.

Gaussians are spread over the rest mesh by area (denser on the eyes, lips and teeth, where detail
shows), lie flat in their triangle (thin along the normal) and are bound to it, so they follow
every expression. Colours are painted procedurally from the head's named regions and geometry:
skin with soft variation and warmer cheeks, darker lips, brows, sclera, iris and pupil, teeth,
tongue, a dark mouth interior and hair on the skull, with soft lighting baked in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from avatar.binding import GaussianAvatar, bind_to_triangles
from avatar.easing import smoothstep
from avatar.errors import TalkingAvatarError
from avatar.flame.model import FlameModel
from avatar.gaussians import Gaussians, rgb_to_sh
from avatar.quaternion import matrix_to_quat


def _hex(colour: str) -> tuple[float, float, float]:
    c = colour.lstrip("#")
    if len(c) != 6 or any(ch not in "0123456789abcdefABCDEF" for ch in c):
        raise TalkingAvatarError(f"colour {colour!r} is not a hex colour like #c89478")
    return tuple(int(c[i : i + 2], 16) / 255.0 for i in (0, 2, 4))  # type: ignore[return-value]


@dataclass(frozen=True)
class ColourScheme:
    """Colours of the painted avatar (sRGB hex)."""

    skin: str = "#d9a58a"
    lips: str = "#b5605f"
    hair: str = "#3b2a20"
    brows: str = "#3a2a22"
    iris: str = "#5b3b22"


SKIN_TONES = {
    "light": "#edc3ae",
    "medium": "#d9a58a",
    "tan": "#b98263",
    "brown": "#8d5a3f",
    "dark": "#5e3b2a",
}
HAIR_COLOURS = {
    "black": "#1d1815",
    "brown": "#3b2a20",
    "auburn": "#6a3322",
    "blond": "#b58b55",
    "grey": "#8f8a86",
}
IRIS_COLOURS = {"brown": "#5b3b22", "blue": "#4f7596", "green": "#5a7048", "grey": "#6f7a80"}


def scheme_from_options(
    skin: str = "medium", hair: str = "brown", iris: str = "brown", lips: str | None = None
) -> ColourScheme:
    """A scheme from named choices (or hex colours): the build script's options."""

    def pick(value: str, table: dict[str, str], what: str) -> str:
        if value in table:
            return table[value]
        if value.startswith("#"):
            _hex(value)
            return value
        raise TalkingAvatarError(
            f"unknown {what} {value!r}; choose from {', '.join(table)} or a hex colour like #c89478"
        )

    skin_hex = pick(skin, SKIN_TONES, "skin tone")
    r, g, b = _hex(skin_hex)
    default_lips = "#" + "".join(
        f"{int(255 * min(1.0, x)):02x}" for x in (r * 0.85, g * 0.6, b * 0.68)
    )
    hair_hex = pick(hair, HAIR_COLOURS, "hair colour")
    return ColourScheme(
        skin=skin_hex,
        lips=pick(lips, {}, "lip colour") if lips else default_lips,
        hair=hair_hex,
        brows=hair_hex,
        iris=pick(iris, IRIS_COLOURS, "iris colour"),
    )


def _srgb_to_linear(c: np.ndarray) -> np.ndarray:
    # Colours are composited as stored; we keep them in display space (as 3DGS captures do).
    return c


def _smooth_noise(
    points: np.ndarray, rng: np.random.Generator, scale: float, octaves: int = 6
) -> np.ndarray:
    """Band-limited noise in about [-1, 1] over 3-D points (a sum of random plane waves)."""
    out = np.zeros(len(points))
    for _ in range(octaves):
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        freq = rng.uniform(0.6, 1.4) / scale
        out += np.sin(2 * math.pi * freq * points @ direction + rng.uniform(0, 2 * math.pi))
    return out / math.sqrt(octaves / 2)


def _face_labels(model: FlameModel) -> np.ndarray:
    """Per triangle, the region it belongs to (by majority of its vertices)."""
    faces = model.faces.cpu().numpy()
    labels = np.full(len(faces), "skin", dtype=object)
    for name in ("mouth_interior", "lips", "tongue", "teeth", "eye_left", "eye_right"):
        if name in model.regions:
            mask = np.zeros(model.num_vertices, dtype=bool)
            mask[model.regions[name]] = True
            labels[mask[faces].sum(axis=1) >= 2] = name
    return labels


DENSITY = {
    "skin": 1.0,
    "lips": 2.5,
    "mouth_interior": 0.6,
    "tongue": 0.6,
    "teeth": 2.0,
    "eye_left": 4.0,
    "eye_right": 4.0,
}
#: The lids get smaller (denser) Gaussians, or the skin's would spill over the eye opening and
#: hide the white of the eye: skin density rises smoothly from 1 at LID_FADE[1] to LID_DENSITY
#: inside LID_FADE[0] (metres from an eyeball centre), so no edge shows.
LID_DENSITY = 8.0
LID_FADE = (0.016, 0.026)
#: The same at the lips' inner edges, or the lips' Gaussians would spill a few millimetres over
#: the opening and a mouth open 10 mm would show a slit: lip density rises from 1 at
#: LIP_EDGE_FADE[1] to LIP_EDGE_DENSITY inside LIP_EDGE_FADE[0] (metres from the nearest
#: inner-contour vertex).
LIP_EDGE_DENSITY = 5.0
LIP_EDGE_FADE = (0.0015, 0.005)
#: Half-angles (degrees from the eyeball's forward axis) of the painted iris and pupil.
IRIS_DEG = 21.5
PUPIL_DEG = 8.0


def _densities(model: FlameModel, labels: np.ndarray, tri: np.ndarray) -> np.ndarray:
    """Relative Gaussian density `[F]` per triangle (tri `[F, 3, 3]` its rest corners)."""
    density = np.array([DENSITY[label] for label in labels])
    verts = model.v_template.cpu().numpy()
    centroids = tri.mean(axis=1)  # [F, 3]
    near = np.min(
        [
            np.linalg.norm(centroids - verts[model.regions[eye]].mean(axis=0), axis=1)
            for eye in ("eye_left", "eye_right")
        ],
        axis=0,
    )  # [F] metres to the nearer eyeball centre
    lid = smoothstep(near, LID_FADE[1], LID_FADE[0])
    skin = labels == "skin"
    density[skin] *= 1.0 + (LID_DENSITY - 1.0) * lid[skin]
    inner = [r for r in ("lip_upper_inner", "lip_lower_inner") if r in model.regions]
    if inner:
        contour = verts[np.concatenate([model.regions[r] for r in inner])]  # [K, 3]
        edge = np.linalg.norm(centroids[:, None] - contour[None], axis=2).min(axis=1)  # [F]
        lips = labels == "lips"
        density[lips] *= (
            1.0
            + (LIP_EDGE_DENSITY - 1.0) * smoothstep(edge, LIP_EDGE_FADE[1], LIP_EDGE_FADE[0])[lips]
        )
    return density


def build_default_avatar(
    model: FlameModel, *, count: int = 40_000, scheme: ColourScheme | None = None, seed: int = 0
) -> GaussianAvatar:
    """Gaussians bound to the head's triangles, painted as a face (see the module docstring)."""
    if count < 1000:
        raise TalkingAvatarError(
            f"--count {count} is too few Gaussians for a face; use at least 1000"
        )
    if not {"lips", "eye_left", "eye_right"} <= set(model.regions):
        raise TalkingAvatarError(
            f"the head model {model.source} lacks the lips/eye regions the painter needs; "
            "build the default avatar from the bundled head"
        )
    scheme = scheme or ColourScheme()
    rng = np.random.default_rng(seed)
    verts = model.v_template.cpu().numpy().astype(np.float64)  # [V, 3]
    faces = model.faces.cpu().numpy()
    tri = verts[faces]  # [F, 3, 3]
    cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    area = 0.5 * np.linalg.norm(cross, axis=1)  # [F]
    normal = cross / np.maximum(2 * area[:, None], 1e-20)
    labels = _face_labels(model)
    density = _densities(model, labels, tri)  # [F]
    weight = area * density
    # Stratified counts per triangle (expected count, rounded by a coin flip) and stratified
    # positions inside it leave fewer holes than independent draws.
    expected = weight / weight.sum() * count
    per_face = np.floor(expected + rng.random(len(faces))).astype(np.int64)
    binding = np.repeat(np.arange(len(faces)), per_face)  # [N]
    count = len(binding)
    rank = np.arange(count) - np.repeat(np.cumsum(per_face) - per_face, per_face)
    r1 = (rank + rng.random(count)) / np.repeat(np.maximum(per_face, 1), per_face)
    r2 = rng.random(count)
    s = np.sqrt(r1)
    bary = np.stack([1 - s, s * (1 - r2), s * r2], axis=1)  # uniform on the triangle
    means = np.einsum("nk,nkc->nc", bary, tri[binding])  # [N, 3]
    n = normal[binding]  # [N, 3]

    # Orientation: the Gaussian's local z along the surface normal, x random in the plane.
    helper = np.where(np.abs(n[:, :1]) < 0.9, [[1.0, 0.0, 0.0]], [[0.0, 1.0, 0.0]])
    t1 = np.cross(n, helper)
    t1 /= np.linalg.norm(t1, axis=1, keepdims=True)
    t2 = np.cross(n, t1)
    angle = rng.uniform(0, 2 * math.pi, count)[:, None]
    u = np.cos(angle) * t1 + np.sin(angle) * t2
    w = np.cross(n, u)
    rot = np.stack([u, w, n], axis=-1)  # columns: in-plane u, in-plane w, normal
    quats = matrix_to_quat(torch.as_tensor(rot, dtype=torch.float32))

    # Size: each Gaussian covers about the area its share of samples spans.
    spacing = np.sqrt(weight.sum() / (count * density[binding]))  # [N] metres
    sigma = 0.95 * spacing[:, None] * np.exp(rng.normal(0.0, 0.12, (count, 2)))
    scales = np.concatenate([sigma, np.full((count, 1), 0.08e-3)], axis=1)  # thin along the normal

    colours = paint(model, means, n, labels[binding], scheme, rng)
    opacities = np.full(count, 0.99)
    world = Gaussians(
        means=torch.as_tensor(means, dtype=torch.float32),
        quats=quats,
        scales=torch.as_tensor(scales, dtype=torch.float32),
        opacities=torch.as_tensor(opacities, dtype=torch.float32),
        sh=rgb_to_sh(torch.as_tensor(colours, dtype=torch.float32))[:, None, :],
    )
    return bind_to_triangles(
        world, torch.as_tensor(binding, dtype=torch.int64), model.v_template, model.faces
    )


def paint(
    model: FlameModel,
    p: np.ndarray,
    n: np.ndarray,
    label: np.ndarray,
    scheme: ColourScheme,
    rng: np.random.Generator,
) -> np.ndarray:
    """Colours `[N, 3]` in [0, 1] for Gaussians at rest positions p `[N, 3]` with normals n."""
    verts = model.v_template.cpu().numpy()
    eyes = [verts[model.regions[name]].mean(axis=0) for name in ("eye_left", "eye_right")]
    painter = _Painter(p, label, scheme, rng, verts, *eyes)
    # The layers draw from `rng` in this order, which fixes the avatar for a seed.
    colour = painter.hair(painter.brows(painter.skin()))
    painter.mouth(colour, verts[model.regions["lips"], 2].max())
    for name, centre in zip(("eye_left", "eye_right"), eyes, strict=True):
        sel = label == name
        colour[sel] = _paint_eye(p[sel] - centre, scheme)
    return np.clip(_srgb_to_linear(colour) * _baked_light(n, label)[:, None], 0.0, 1.0)


@dataclass
class _Painter:
    """What the paint layers read: rest positions p `[N, 3]` and region labels `[N]` of the
    Gaussians, the scheme, the random stream, the head's rest vertices `[V, 3]` and its eyeball
    centres `[3]`. Each layer paints over the colours `[N, 3]` of the ones before."""

    p: np.ndarray
    label: np.ndarray
    scheme: ColourScheme
    rng: np.random.Generator
    verts: np.ndarray
    eye_l: np.ndarray
    eye_r: np.ndarray

    def skin(self) -> np.ndarray:
        """Skin: soft blotchy variation and warmer cheeks, nose tip and ears."""
        p, verts = self.p, self.verts
        colour = np.tile(np.array(_hex(self.scheme.skin)), (len(p), 1))
        colour *= 1.0 + 0.03 * _smooth_noise(p, self.rng, 0.02)[:, None]
        colour *= 1.0 + 0.02 * _smooth_noise(p, self.rng, 0.004)[:, None]
        warm = np.array([1.06, 0.93, 0.92])
        for centre in (self.eye_l + [0.012, -0.035, 0.01], self.eye_r + [-0.012, -0.035, 0.01]):
            blob = np.exp(-np.sum((p - centre) ** 2, axis=1) / (2 * 0.018**2))
            colour *= 1 + (warm - 1) * blob[:, None]
        nose_tip = verts[np.argmax(np.where(np.abs(verts[:, 0]) < 0.005, verts[:, 2], -1))]
        blob = np.exp(-np.sum((p - nose_tip) ** 2, axis=1) / (2 * 0.012**2))
        colour *= 1 + (warm - 1) * 0.6 * blob[:, None]
        return colour

    def brows(self, colour: np.ndarray) -> np.ndarray:
        """Brows: an arc above each eye, thicker towards the middle, with hair-like streaks."""
        p = self.p
        brows = np.zeros(len(p))
        for centre, side in ((self.eye_l, 1.0), (self.eye_r, -1.0)):
            dx = (p[:, 0] - centre[0]) * side  # + towards the outer end
            t = dx / 0.026  # -1 (inner end) .. 1 (outer end)
            arc_y = centre[1] + 0.0185 + 0.004 * (1 - t**2) - 0.003 * np.clip(t, 0, 1)
            half_thick = 0.0032 * (1.0 - 0.45 * np.clip(t, 0, 1))
            inside = (np.abs(t) < 1.05) & (p[:, 2] > centre[2])
            d = np.abs(p[:, 1] - arc_y) / half_thick
            brows = np.maximum(
                brows, inside * np.clip(1.3 - d, 0, 1) * np.clip((1.05 - np.abs(t)) * 6, 0, 1)
            )
        streaks = 0.8 + 0.2 * _smooth_noise(p * [1.0, 6.0, 1.0], self.rng, 0.003)
        brow_colour = np.array(_hex(self.scheme.brows))
        return (
            colour * (1 - 0.85 * brows[:, None])
            + 0.85 * brows[:, None] * brow_colour * streaks[:, None]
        )

    def hair(self, colour: np.ndarray) -> np.ndarray:
        """Hair: a cap over the skull. Around a centre inside the head, hair covers directions
        whose elevation is above a hairline that runs from the forehead down past the ears to
        the nape."""
        p = self.p
        centre = np.array([0.0, self.eye_l[1] + 0.012, self.eye_l[2] - 0.085])
        d = p - centre
        elevation = np.degrees(np.arctan2(d[:, 1], np.hypot(d[:, 0], d[:, 2])))
        azimuth = np.arctan2(np.abs(d[:, 0]), d[:, 2])  # 0 in front, pi at the back
        hairline = (
            2.5 + 27.0 * np.cos(azimuth) - 5.5 * np.cos(2 * azimuth)
        )  # 24 deg front, 8 side, -30 back
        hairline += 1.0 * _smooth_noise(p, self.rng, 0.015)
        ear = (np.abs(p[:, 0]) > 0.06) & (np.abs(np.degrees(azimuth) - 95) < 30) & (elevation < 22)
        fade = np.clip((elevation - hairline) / 3.0, 0, 1) * (~ear) * (self.label == "skin")
        strands = 0.75 + 0.25 * _smooth_noise(p * [3.0, 1.0, 3.0], self.rng, 0.0025, octaves=8)
        hair_colour = np.array(_hex(self.scheme.hair)) * strands[:, None]
        return colour * (1 - fade[:, None]) + fade[:, None] * hair_colour

    def mouth(self, colour: np.ndarray, lips_front: float) -> None:
        """Lips (darker and redder), the dark mouth interior (darker deeper in, behind the lips'
        front z `lips_front`, metres), tongue and teeth, painted into `colour` in place."""
        p, label = self.p, self.label
        lips = label == "lips"
        colour[lips] = (
            np.array(_hex(self.scheme.lips))
            * (1.0 + 0.05 * _smooth_noise(p[lips], self.rng, 0.003))[:, None]
        )
        depth = np.clip((lips_front - p[:, 2]) / 0.04, 0, 1)  # [N] 0 at the lips, 1 4 cm in
        mouth = label == "mouth_interior"
        colour[mouth] = np.array([0.30, 0.09, 0.09]) * (1 - 0.8 * depth[mouth])[:, None]
        tongue = label == "tongue"
        colour[tongue] = np.array([0.58, 0.25, 0.27]) * (1 - 0.6 * depth[tongue])[:, None]
        colour[label == "teeth"] = [0.92, 0.9, 0.82]


def _paint_eye(d: np.ndarray, scheme: ColourScheme) -> np.ndarray:
    """Sclera, iris and pupil `[M, 3]` at offsets d `[M, 3]` from the eyeball's centre, around
    its forward (+z) axis."""
    cos = d[:, 2] / np.linalg.norm(d, axis=1)
    ang = np.degrees(np.arccos(np.clip(cos, -1, 1)))
    c = np.tile([0.93, 0.91, 0.88], (len(d), 1))
    # The eyeball is 30 mm across: an 11 mm iris and a 4 mm pupil subtend these angles.
    iris = ang < IRIS_DEG
    c[iris] = (
        np.array(_hex(scheme.iris))
        * (0.8 + 0.35 * np.clip((ang[iris] - PUPIL_DEG) / (IRIS_DEG - PUPIL_DEG), 0, 1))[:, None]
    )
    c[(ang > IRIS_DEG - 2.5) & (ang < IRIS_DEG + 1.0)] *= 0.55  # limbal ring
    c[ang < PUPIL_DEG] = [0.03, 0.03, 0.03]
    return c


def _baked_light(n: np.ndarray, label: np.ndarray) -> np.ndarray:
    """Shading `[N]` of soft light baked in: key from the upper front left, fill from the sky,
    darker facing down; flatter inside the mouth, none on the eyes."""
    light = np.array([0.35, 0.55, 0.76])
    lambert = np.clip(n @ light, 0, 1)
    sky = 0.5 + 0.5 * n[:, 1]
    shade = 0.52 + 0.38 * lambert + 0.14 * sky
    inner = np.isin(label, ["mouth_interior", "tongue", "teeth"])
    shade[inner] = 0.55 + 0.3 * lambert[inner]
    shade[np.isin(label, ["eye_left", "eye_right"])] = 1.0
    return shade
