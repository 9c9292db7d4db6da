"""The stand-in expression set: Florence4D-style layout, eight emotions, FACS-shaped timing."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from animator.data import load_florence
from animator.data.driving import face_unit_vertices
from animator.data.expressions import (
    EMOTIONS,
    Expressiveness,
    emotion_clip,
    generate_expression_set,
)
from animator.data.face_units import FACE_UNIT_NAMES, weights_from_targets
from animator.expression_metrics import apex_fields, expression_table
from avatar.errors import TalkingAvatarError

SEED = 3


@pytest.fixture(scope="module")
def expression_set(tmp_path_factory, head) -> Path:
    out = tmp_path_factory.mktemp("expressions")
    generate_expression_set(out, small=True, seed=SEED, head=head, progress=False, log=None)
    return out


def test_layout_and_labels(expression_set: Path, head) -> None:
    dataset = load_florence(expression_set)
    assert dataset.expressions == sorted(EMOTIONS)
    assert len(dataset.identities) == 1
    assert (expression_set / dataset.identities[0] / "template.ply").is_file()
    for sample in dataset:
        assert sample.fps == 60
        assert sample.vertices.shape[1:] == (head.num_vertices, 3)
        assert [t.label for t in sample.timings] == [
            "neutral",
            "onset",
            "apex",
            "release",
            "neutral",
        ]
        assert sample.timings[-1].end == pytest.approx(sample.duration, abs=1.0 / sample.fps)


def test_neutral_to_apex_to_neutral(expression_set: Path, head) -> None:
    shut = face_unit_vertices(
        head, np.zeros(head.num_shape), weights_from_targets({"eyeBlink": 1.0})[None]
    )[0]
    not_lids = np.linalg.norm(shut - head.v_template.numpy(), axis=1) < 5e-4  # blinks aside
    for sample in load_florence(expression_set):
        verts = np.asarray(sample.vertices)[:, not_lids]
        offsets = np.linalg.norm(verts - sample.template[not_lids], axis=2)  # [T, V']
        apex = next(t for t in sample.timings if t.label == "apex")
        frame = int(0.5 * (apex.start + apex.end) * sample.fps)
        peak = np.percentile(offsets[frame], 99)
        if sample.expression == "neutral":
            assert peak < 0.002  # only the small secondary lip and jaw motion
        else:
            assert peak > 0.002, sample.expression
            assert np.percentile(offsets[0], 99) < min(0.0015, 0.7 * peak)  # starts near neutral
            assert np.percentile(offsets[-1], 99) < min(0.0015, 0.7 * peak)  # and returns there


def test_prototypes_use_their_units() -> None:
    def apex(emotion: str) -> dict[str, float]:
        clip = emotion_clip("x", 0, emotion, SEED)
        row = clip.face_units[clip.face_units.shape[0] // 2]
        return dict(zip(FACE_UNIT_NAMES, row, strict=True))

    assert apex("happy")["AU12Left"] > 0.6 and apex("happy")["AU06Right"] > 0.6
    assert apex("sad")["AU01Left"] > 0.6 and apex("sad")["AU15Right"] > 0.6
    assert apex("surprised")["AU02Left"] > 0.6 and apex("surprised")["jawOpen"] > 0.3
    assert apex("angry")["AU04Left"] > 0.6 and apex("angry")["AU24"] > 0.3
    assert apex("fearful")["AU20Right"] > 0.6 and apex("fearful")["AU05Left"] > 0.6
    assert apex("disgusted")["AU09Left"] > 0.6 and apex("disgusted")["AU10Right"] > 0.5
    contempt = apex("contempt")
    assert abs(contempt["AU12Left"] - contempt["AU12Right"]) > 0.4  # one-sided


def test_identities_differ_in_intensity_timing_and_asymmetry() -> None:
    styles = [Expressiveness.draw(SEED, i) for i in range(4)]
    for field in ("gain", "asymmetry", "onset", "apex", "offset"):
        assert len({round(getattr(s, field), 6) for s in styles}) == 4, field
    clips = [emotion_clip(f"id{i}", i, "surprised", SEED) for i in range(2)]
    assert clips[0].phases != clips[1].phases
    apex = [c.face_units[c.face_units.shape[0] // 2] for c in clips]
    left, right = FACE_UNIT_NAMES.index("AU01Left"), FACE_UNIT_NAMES.index("AU01Right")
    for style, row in zip(styles[:2], apex, strict=True):  # the stronger side follows the balance
        assert np.sign(row[left] - row[right]) == np.sign(style.asymmetry)
    assert not np.allclose(apex[0], apex[1])


def test_apex_reaches_real_amplitudes(expression_set: Path, head) -> None:
    dataset = load_florence(expression_set)
    rest, fields = apex_fields(dataset, dataset.identities[0])
    table = expression_table(head, fields, rest=rest)
    row = {r["emotion"]: r for r in table.rows}

    def brows(e: str) -> float:
        return max(abs(row[e]["inner_brow"]), abs(row[e]["outer_brow"]))

    for emotion in ("sad", "angry", "surprised", "fearful"):
        assert brows(emotion) >= 6.0, emotion  # mm
    assert row["happy"]["mouth_corner_up"] >= 8.0
    assert row["sad"]["mouth_corner_up"] <= -8.0
    assert row["contempt"]["mouth_corner_up"] >= 8.0  # on its one side
    assert max(row["disgusted"]["upper_lip"], row["disgusted"]["nose"]) >= 4.0
    for emotion in ("surprised", "fearful"):
        assert row[emotion]["jaw"] >= 8.0, emotion
    assert table.closest[1.0][2] >= 3.0  # every two emotions differ by 3 mm somewhere
    assert 9.0 <= table.rest_aperture_mm <= 11.0  # open eyes at rest


def test_deterministic_from_the_seed() -> None:
    a = emotion_clip("x", 2, "fearful", SEED)
    b = emotion_clip("x", 2, "fearful", SEED)
    c = emotion_clip("x", 2, "fearful", SEED + 1)
    np.testing.assert_array_equal(a.face_units, b.face_units)
    assert a.face_units.shape != c.face_units.shape or not np.allclose(a.face_units, c.face_units)


def test_unknown_emotion_and_missing_face_units(tmp_path: Path) -> None:
    with pytest.raises(TalkingAvatarError, match="unknown emotion"):
        emotion_clip("x", 0, "bored", SEED)
    flame_like = SimpleNamespace(face_unit_names=None, source="generic_model.pkl")
    with pytest.raises(TalkingAvatarError, match="face units"):
        generate_expression_set(tmp_path, small=True, head=flame_like, log=None)
