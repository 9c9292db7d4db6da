"""Expression measures on the head: how far brows, lids, mouth corners, lips, nose and jaw move.

The expression table of `talking-avatar eval` (`expression_table`): per emotion and intensity,
how far the brows, lids, mouth corners, upper lip, nose and jaw move (landmarks of the head's
embedding, mm), and the smallest largest-difference between any two emotions' displacement
fields: can they be told apart at all? The lid aperture is measured by casting front-view rays
at the eyeball (`lid_aperture`, `eyeball_visible`, `surface_depths`); `apex_fields` reads an
expression set's ground truth the same way.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from avatar.errors import TalkingAvatarError

#: iBUG 68-point indices the expression table reads; the static embedding holds 17-67.
_IBUG_FIRST = 17
_OUTER_BROW = (17, 26)  # subject's right, left
_INNER_BROW = (21, 22)
_NOSE_WING = (31, 35)
_MOUTH_CORNER = (48, 54)
_UPPER_LIP = 51
_LOWER_LIP = 57
#: Lower-teeth vertices within this depth (metres) of the most forward one are the incisors.
_INCISOR_DEPTH = 0.004

EXPRESSION_COLUMNS = [
    ("inner_brow", "inner brow up (mm)"),
    ("outer_brow", "outer brow up (mm)"),
    ("lid_aperture", "lid aperture (mm)"),
    ("mouth_corner_up", "mouth corner up (mm)"),
    ("mouth_corner_out", "mouth corner out (mm)"),
    ("upper_lip", "upper lip up (mm)"),
    ("nose", "nose wing up (mm)"),
    ("jaw", "jaw drop (mm)"),
    ("max_motion", "max motion (mm)"),
]


def surface_depths(points: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Where front-view rays meet triangles: z `[R, T]` of each triangle under each point.

    Orthographic rays along -z (the head's frame) through points `[R, 2]` (x, y) against
    triangles `[T, 3, 3]`; -inf where a triangle does not cover a point (or stands edge-on).
    """
    a, b, c = triangles[:, 0], triangles[:, 1], triangles[:, 2]
    det = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (c[:, 0] - a[:, 0]) * (b[:, 1] - a[:, 1])
    det = np.where(np.abs(det) > 1e-16, det, np.nan)  # edge-on triangles hide nothing
    px = points[:, :1] - a[None, :, 0]  # [R, T]
    py = points[:, 1:2] - a[None, :, 1]
    u = (px * (c[:, 1] - a[:, 1]) - (c[:, 0] - a[:, 0]) * py) / det  # [R, T] barycentric
    v = ((b[:, 0] - a[:, 0]) * py - px * (b[:, 1] - a[:, 1])) / det
    inside = (u >= 0) & (v >= 0) & (u + v <= 1)
    return np.where(inside, a[:, 2] + u * (b[:, 2] - a[:, 2]) + v * (c[:, 2] - a[:, 2]), -np.inf)


def eyeball_visible(
    vertices: np.ndarray | torch.Tensor, head, eye: str, points: np.ndarray
) -> np.ndarray:
    """Whether the eyeball is what a viewer in front sees at each point `[R]` (bool).

    Orthographic rays along -z (the head's frame) through points `[R, 2]` (x, y in metres);
    True where the nearest surface a ray meets belongs to the `eye` region (`eye_left` or
    `eye_right`), i.e. the eye shows between the lids there.
    """
    verts = torch.as_tensor(vertices).detach().cpu().numpy().astype(np.float64)
    faces = head.faces.cpu().numpy()
    ids = head.region(eye)
    centre = verts[ids].mean(axis=0)
    radius = np.linalg.norm(verts[ids] - centre, axis=1).max()
    on_eye = np.zeros(len(verts), dtype=bool)
    on_eye[ids] = True
    near = (np.linalg.norm(verts[faces] - centre, axis=2) < 2.0 * radius).any(axis=1)
    z = surface_depths(points, verts[faces[near]])  # [R, T] the eyeball and skin around it
    first = np.argmax(z, axis=1)  # [R] the surface nearest a viewer at +z
    hit = np.isfinite(z[np.arange(len(points)), first])
    return hit & on_eye[faces[near]].all(axis=1)[first]


def lid_aperture(vertices: np.ndarray | torch.Tensor, head, *, step: float = 1e-4) -> np.ndarray:
    """Vertical lid opening `[2]` (left eye, right eye; metres) of one mesh, seen from the front.

    The total height over which the eyeball shows (`eyeball_visible`) on the vertical line
    through each eyeball's centre: 0 for a closed lid; a lid sunk into the eyeball shows as
    eyeball where skin should be.

    Args:
        vertices: `[V, 3]` metres, FLAME axes.
        head: a model with `eye_left` / `eye_right` regions and faces.
        step: ray spacing (metres).
    """
    verts = torch.as_tensor(vertices).detach().cpu().numpy().astype(np.float64)
    out = []
    for eye in ("eye_left", "eye_right"):
        ids = head.region(eye)
        centre = verts[ids].mean(axis=0)
        radius = np.linalg.norm(verts[ids] - centre, axis=1).max()
        ys = centre[1] + np.arange(-radius, radius, step)  # [R]
        line = np.stack([np.full_like(ys, centre[0]), ys], axis=1)  # [R, 2]
        out.append(float(eyeball_visible(verts, head, eye, line).sum() * step))
    return np.array(out)


def _side_of_larger(values: np.ndarray) -> float:
    """Of a (right, left) pair, the value with the larger magnitude: one-sided expressions
    (contempt) report their moving side."""
    return float(values[np.argmax(np.abs(values))])


def expression_measures(
    head,
    displacement: np.ndarray | torch.Tensor,
    *,
    rest: np.ndarray | torch.Tensor | None = None,
) -> dict[str, float]:
    """Landmark motions (mm) of one displacement field `[V, 3]` from a neutral mesh.

    Brows and lips through the head's landmark embedding (iBUG points), the lid aperture by
    `lid_aperture`, the jaw as the drop of the lower incisors (the lower lip where the head has
    no teeth). Signed: up, out (away from the midline) and jaw opening are positive.

    Args:
        head: the FLAME-format model (landmark embedding, regions, faces).
        displacement: `[V, 3]` metres.
        rest: the neutral mesh `[V, 3]` the field starts from (an identity's template); default
            the head's template.
    """
    rest = torch.as_tensor(head.v_template if rest is None else rest).detach().cpu().float()
    disp = torch.as_tensor(displacement).detach().cpu().float()
    verts = torch.stack([rest, rest + disp])  # [2, V, 3]
    lmk = head.landmarks(verts).numpy() * 1000.0  # [2, 51, 3] mm
    move = lmk[1] - lmk[0]

    def at(*ibug: int) -> np.ndarray:
        return move[[i - _IBUG_FIRST for i in ibug]]  # [k, 3]

    corner_x = lmk[0, [i - _IBUG_FIRST for i in _MOUTH_CORNER], 0]
    out = {
        "inner_brow": _side_of_larger(at(*_INNER_BROW)[:, 1]),
        "outer_brow": _side_of_larger(at(*_OUTER_BROW)[:, 1]),
        "mouth_corner_up": _side_of_larger(at(*_MOUTH_CORNER)[:, 1]),
        "mouth_corner_out": _side_of_larger(at(*_MOUTH_CORNER)[:, 0] * np.sign(corner_x)),
        "upper_lip": float(at(_UPPER_LIP)[0, 1]),
        "nose": _side_of_larger(at(*_NOSE_WING)[:, 1]),
        "max_motion": float(disp.norm(dim=-1).max()) * 1000.0,
    }
    d = disp.numpy()
    if "teeth_lower" in head.regions:
        lower = head.region("teeth_lower")
        z = rest.numpy()[lower, 2]
        incisors = lower[z > z.max() - _INCISOR_DEPTH]
        out["jaw"] = float(-d[incisors, 1].mean()) * 1000.0
    else:
        out["jaw"] = float(-at(_LOWER_LIP)[0, 1])
    if {"eye_left", "eye_right"} <= set(head.regions):
        out["lid_aperture"] = float(lid_aperture(verts[1], head).mean()) * 1000.0
    else:
        out["lid_aperture"] = float("nan")
    return out


@dataclass
class ExpressionTable:
    """`expression_table`'s result: measures per (emotion, intensity) and how distinct they are.

    Attributes:
        rows: one dict per emotion and intensity: `emotion`, `intensity`, then the
            EXPRESSION_COLUMNS keys (mm).
        rest_aperture_mm: the lid aperture of the rest pose (mean of both eyes).
        closest: per intensity, (emotion a, emotion b, mm): the pair whose displacement fields
            differ least, measured as the largest per-vertex distance between the two fields.
    """

    rows: list[dict[str, float | str]]
    rest_aperture_mm: float
    closest: dict[float, tuple[str, str, float]]

    def markdown(self) -> str:
        """The table in Markdown (one row per emotion and intensity), then the rest aperture and
        the closest pair at each intensity."""
        head = "| emotion | intensity | " + " | ".join(t for _, t in EXPRESSION_COLUMNS) + " |"
        lines = [head, "|---|---|" + "---|" * len(EXPRESSION_COLUMNS)]
        for row in self.rows:
            cells = " | ".join(f"{row[k]:.1f}" for k, _ in EXPRESSION_COLUMNS)
            lines.append(f"| {row['emotion']} | {row['intensity']:g} | {cells} |")
        lines.append("")
        lines.append(f"Rest lid aperture: {self.rest_aperture_mm:.1f} mm.")
        for intensity, (a, b, mm) in sorted(self.closest.items()):
            lines.append(
                f"Closest pair at intensity {intensity:g}: {a} / {b}, whose fields differ by "
                f"{mm:.1f} mm at most."
            )
        return "\n".join(lines)


def expression_table(
    head,
    fields: Mapping[str, Mapping[float, np.ndarray | torch.Tensor]],
    *,
    rest: np.ndarray | torch.Tensor | None = None,
) -> ExpressionTable:
    """Measure per-emotion displacement fields on a head (see `expression_measures`).

    Args:
        head: the FLAME-format model the fields belong to (landmark embedding, regions).
        fields: emotion -> intensity -> displacement `[V, 3]` (metres) from the neutral mesh:
            the ground truth of the expression set (`apex_fields`), the face units driven
            directly (`animator.data.expressions.emotion_fields`), or a trained animator's
            output for the same emotions.
        rest: the neutral mesh `[V, 3]` the fields start from; default the head's template.

    Returns:
        An `ExpressionTable` (its `markdown()` prints it).
    """
    rows: list[dict[str, float | str]] = []
    by_intensity: dict[float, dict[str, torch.Tensor]] = {}
    for emotion, per_intensity in fields.items():
        for intensity, disp in sorted(per_intensity.items()):
            d = torch.as_tensor(disp).detach().cpu().float()
            if d.shape != head.v_template.shape:
                raise ValueError(
                    f"expression_table: the {emotion} field at {intensity} has shape "
                    f"{tuple(d.shape)}, expected {tuple(head.v_template.shape)}"
                )
            measures = expression_measures(head, d, rest=rest)
            rows.append({"emotion": emotion, "intensity": float(intensity), **measures})
            by_intensity.setdefault(float(intensity), {})[emotion] = d
    closest: dict[float, tuple[str, str, float]] = {}
    for intensity, group in by_intensity.items():
        names = list(group)
        pairs = [
            (a, b, float((group[a] - group[b]).norm(dim=-1).max()) * 1000.0)
            for i, a in enumerate(names)
            for b in names[i + 1 :]
        ]
        if pairs:
            closest[intensity] = min(pairs, key=lambda p: p[2])
    neutral = head.v_template if rest is None else rest
    aperture = float(lid_aperture(neutral, head).mean()) * 1000.0
    return ExpressionTable(rows=rows, rest_aperture_mm=aperture, closest=closest)


def apex_fields(dataset, identity: str) -> tuple[np.ndarray, dict[str, dict[float, np.ndarray]]]:
    """One identity's emotions in an expression set, as `expression_table` reads them.

    Each emotion's field is its mean displacement `[V, 3]` (metres) from the identity's
    template over the apex phase of its timings (the middle third without timings), keyed as
    intensity 1; "neutral" is left out.

    Args:
        dataset: a `FlorenceDataset` (`animator.data.load_florence`).
        identity: one of `dataset.identities`.

    Returns:
        (the identity's template `[V, 3]`, emotion -> {1.0: field}).
    """
    rest = None
    fields: dict[str, dict[float, np.ndarray]] = {}
    for emotion in dataset.expressions:
        if emotion == "neutral":
            continue
        sample = dataset.sample(identity, emotion)
        apex = next((t for t in sample.timings if t.label == "apex"), None)
        n = sample.num_frames
        lo, hi = (
            (n // 3, 2 * n // 3)
            if apex is None
            else (
                int(math.floor(apex.start * sample.fps)),
                int(math.ceil(apex.end * sample.fps)),
            )
        )
        lo, hi = min(lo, n - 1), max(min(hi, n), min(lo, n - 1) + 1)
        frames = np.asarray(sample.vertices[lo:hi], dtype=np.float64)  # [k, V, 3]
        fields[emotion] = {1.0: frames.mean(axis=0) - sample.template}
        rest = np.asarray(sample.template)
    if rest is None:
        raise TalkingAvatarError(f"identity {identity} has no emotional sequences to measure")
    return rest, fields
