"""The expression table of `animator.expression_metrics`: landmark motions and distinctness on known fields."""

from __future__ import annotations

import numpy as np
import pytest

from animator.data.driving import face_unit_vertices
from animator.data.face_units import weights_from_targets
from animator.expression_metrics import expression_measures, expression_table, lid_aperture


def test_a_rigid_lift_moves_every_landmark_by_the_lift(head) -> None:
    lift = np.zeros((head.num_vertices, 3))
    lift[:, 1] = 0.005  # 5 mm up, the whole head
    m = expression_measures(head, lift)
    for key in ("inner_brow", "outer_brow", "mouth_corner_up", "upper_lip", "nose"):
        assert m[key] == pytest.approx(5.0, abs=1e-3), key
    assert m["jaw"] == pytest.approx(-5.0, abs=1e-3)  # the jaw went up, not down
    assert m["mouth_corner_out"] == pytest.approx(0.0, abs=1e-3)
    assert m["max_motion"] == pytest.approx(5.0, abs=1e-3)
    rest = lid_aperture(head.v_template, head).mean() * 1000
    assert m["lid_aperture"] == pytest.approx(rest, abs=0.15)  # ray sampling: 0.1 mm


def test_a_sideways_stretch_moves_the_corners_out(head) -> None:
    rest = head.v_template.numpy()
    stretch = np.zeros_like(rest)
    stretch[:, 0] = 0.1 * rest[:, 0]  # 10 % wider about the midline
    corners = head.landmarks(head.v_template[None])[0, [48 - 17, 54 - 17], 0].numpy()
    m = expression_measures(head, stretch)
    assert m["mouth_corner_out"] == pytest.approx(0.1 * np.abs(corners).max() * 1000, rel=1e-4)
    assert m["mouth_corner_up"] == pytest.approx(0.0, abs=1e-6)
    assert m["inner_brow"] == pytest.approx(0.0, abs=1e-6)


def test_closed_lids_have_no_aperture(head) -> None:
    zero = np.zeros(head.num_shape, dtype=np.float32)
    shut = face_unit_vertices(head, zero, weights_from_targets({"eyeBlink": 1.0})[None])[0]
    assert expression_measures(head, shut - head.v_template.numpy())["lid_aperture"] == 0.0


def test_table_rows_and_closest_pair(head) -> None:
    shape = (head.num_vertices, 3)
    lift = np.zeros(shape)
    lift[:, 1] = 0.005
    drop = np.zeros(shape)
    drop[:, 1] = -0.002
    fields = {
        "still": {0.5: np.zeros(shape), 1.0: np.zeros(shape)},
        "up": {0.5: lift / 2, 1.0: lift},
        "down": {0.5: drop / 2, 1.0: drop},
    }
    table = expression_table(head, fields)
    assert [(r["emotion"], r["intensity"]) for r in table.rows] == [
        (e, x) for e in ("still", "up", "down") for x in (0.5, 1.0)
    ]
    a, b, mm = table.closest[1.0]
    assert {a, b} == {"still", "down"} and mm == pytest.approx(2.0, abs=1e-4)
    assert table.closest[0.5][2] == pytest.approx(1.0, abs=1e-4)
    assert "Closest pair at intensity 1: still / down" in table.markdown()
    with pytest.raises(ValueError, match=r"the up field at 1.0 has shape \(3, 3\)"):
        expression_table(head, {"up": {1.0: np.zeros((3, 3))}})
