"""The bundled head's face-unit names (52 ARKit + FACS action units) and weight-vector helpers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from avatar.flame.arkit import ARKIT_UNIT_NAMES  # one definition, re-exported here

__all__ = [
    "ARKIT_UNIT_NAMES",
    "FACS_UNIT_NAMES",
    "FACE_UNIT_NAMES",
    "SYMMETRIC_UNITS",
    "reorder_columns",
    "unit_index",
    "weights_from_targets",
]

#: FACS action units the bundled head adds where the ARKit set is too weak or lacks them
#: (scripts/facs_units.py builds them; docs/expressions.md lists recipes and amplitudes).
#: `AU04` names the Left/Right pair; weight 1 is FACS intensity E, the maximum.
FACS_UNIT_NAMES: tuple[str, ...] = (
    *(
        f"AU{au:02d}{side}"
        for au in (1, 2, 4, 5, 6, 7, 9, 10, 12, 15, 16)
        for side in ("Left", "Right")
    ),
    "AU17",
    "AU20Left",
    "AU20Right",
    "AU23",
    "AU24",
)

#: Every face unit the data generators drive, in the column order of their weight arrays.
FACE_UNIT_NAMES: tuple[str, ...] = ARKIT_UNIT_NAMES + FACS_UNIT_NAMES

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
    """A `[U]` weight vector (FACE_UNIT_NAMES order) from {unit or pair name: weight}; a pair
    name sets both sides."""
    weights = np.zeros(len(FACE_UNIT_NAMES), dtype=np.float64)  # [U]
    for name, value in target.items():
        weights[unit_index(name)] = value
    return weights


def reorder_columns(weights: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """Reorder `[..., U]` weights from `FACE_UNIT_NAMES` order to a head's `names` order."""
    missing = [n for n in names if n not in _INDEX]
    if missing:
        raise KeyError(f"head face units not in FACE_UNIT_NAMES: {missing[:5]}")
    return weights[..., [_INDEX[n] for n in names]]
