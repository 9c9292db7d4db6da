"""The 52 ARKit face-unit names and helpers to build weight vectors from symmetric targets."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

__all__ = [
    "FACE_UNIT_NAMES",
    "SYMMETRIC_UNITS",
    "reorder_columns",
    "unit_index",
    "weights_from_targets",
]

#: ARKit's blend-shape names, in Apple's documented grouping (eyes, jaw, mouth, brows, cheeks,
#: nose, tongue). Heads may order their units differently; always map by name.
FACE_UNIT_NAMES: tuple[str, ...] = (
    "eyeBlinkLeft",
    "eyeLookDownLeft",
    "eyeLookInLeft",
    "eyeLookOutLeft",
    "eyeLookUpLeft",
    "eyeSquintLeft",
    "eyeWideLeft",
    "eyeBlinkRight",
    "eyeLookDownRight",
    "eyeLookInRight",
    "eyeLookOutRight",
    "eyeLookUpRight",
    "eyeSquintRight",
    "eyeWideRight",
    "jawForward",
    "jawLeft",
    "jawRight",
    "jawOpen",
    "mouthClose",
    "mouthFunnel",
    "mouthPucker",
    "mouthLeft",
    "mouthRight",
    "mouthSmileLeft",
    "mouthSmileRight",
    "mouthFrownLeft",
    "mouthFrownRight",
    "mouthDimpleLeft",
    "mouthDimpleRight",
    "mouthStretchLeft",
    "mouthStretchRight",
    "mouthRollLower",
    "mouthRollUpper",
    "mouthShrugLower",
    "mouthShrugUpper",
    "mouthPressLeft",
    "mouthPressRight",
    "mouthLowerDownLeft",
    "mouthLowerDownRight",
    "mouthUpperUpLeft",
    "mouthUpperUpRight",
    "browDownLeft",
    "browDownRight",
    "browInnerUp",
    "browOuterUpLeft",
    "browOuterUpRight",
    "cheekPuff",
    "cheekSquintLeft",
    "cheekSquintRight",
    "noseSneerLeft",
    "noseSneerRight",
    "tongueOut",
)

_INDEX = {name: i for i, name in enumerate(FACE_UNIT_NAMES)}

#: Units that come as a Left/Right pair; a target may name the pair without the side.
SYMMETRIC_UNITS: frozenset[str] = frozenset(
    name[: -len("Left")] for name in FACE_UNIT_NAMES if name.endswith("Left")
)


def unit_index(name: str) -> list[int]:
    """Column(s) of a unit in `FACE_UNIT_NAMES`; a side-less pair name gives both columns."""
    if name in _INDEX:
        return [_INDEX[name]]
    if name in SYMMETRIC_UNITS:
        return [_INDEX[name + "Left"], _INDEX[name + "Right"]]
    raise KeyError(f"unknown face unit {name!r}")


def weights_from_targets(target: Mapping[str, float]) -> np.ndarray:
    """A [52] weight vector from {unit or pair name: weight}; a pair name sets both sides."""
    weights = np.zeros(len(FACE_UNIT_NAMES), dtype=np.float64)  # [52]
    for name, value in target.items():
        weights[unit_index(name)] = value
    return weights


def reorder_columns(weights: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """Reorder [..., 52] weights from `FACE_UNIT_NAMES` order to a head's `names` order."""
    missing = [n for n in names if n not in _INDEX]
    if missing:
        raise KeyError(f"head face units not in ARKit's list: {missing[:5]}")
    return weights[..., [_INDEX[n] for n in names]]
