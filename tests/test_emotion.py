"""Emotion mixes and tracks: validation with clear errors, exact keys, smooth easing."""

from __future__ import annotations

import json

import numpy as np
import pytest

from animator.emotion import EMOTIONS, EmotionTrack, check_mix, parse_mix_args
from avatar.errors import TalkingAvatarError


def test_mix_parsing_and_validation() -> None:
    assert parse_mix_args(["happy=0.8", "sad=0.2"]) == {"happy": 0.8, "sad": 0.2}
    assert check_mix({"neutral": 1.0, "Angry": 0.5}) == {"angry": 0.5}
    with pytest.raises(
        TalkingAvatarError, match="unknown emotion 'joyful'; choose from neutral, happy"
    ):
        check_mix({"joyful": 0.5})
    with pytest.raises(
        TalkingAvatarError, match=r"intensity of 'happy' is 1.5; it must be in \[0, 1\]"
    ):
        check_mix({"happy": 1.5})
    with pytest.raises(TalkingAvatarError, match="must be a number"):
        check_mix({"happy": "lots"})
    with pytest.raises(TalkingAvatarError, match="write LABEL=INTENSITY"):
        parse_mix_args(["happy"])


def test_track_hits_keys_exactly_and_is_smooth() -> None:
    track = EmotionTrack.from_list(
        [{"t": 0.0, "mix": {}}, {"t": 1.0, "mix": {"happy": 0.8}}, {"t": 2.5, "mix": {"sad": 1.0}}]
    )
    h, s = EMOTIONS.index("happy"), EMOTIONS.index("sad")
    at_keys = track.intensities(np.array([0.0, 1.0, 2.5]))
    assert at_keys[0].sum() == 0 and at_keys[1, h] == 0.8 and at_keys[2, s] == 1.0
    assert at_keys[1].sum() == pytest.approx(0.8) and at_keys[2].sum() == pytest.approx(1.0)
    t = np.linspace(-1, 4, 5001)
    x = track.intensities(t)
    dt = t[1] - t[0]
    slope = np.abs(np.diff(x, axis=0)) / dt
    assert slope.max() < 1.6  # smoothstep: at most 1.5 x (change / duration)
    # zero slope at the keys: no kinks
    for key in (1.0, 2.5):
        i = np.argmin(np.abs(t - key))
        assert slope[i - 2 : i + 2].max() < 0.01
    assert np.allclose(x[t < 0], x[0]) and np.allclose(x[t > 2.5], at_keys[2])


@pytest.mark.parametrize(
    ("keys", "match"),
    [
        (
            [{"t": 1.0, "mix": {}}, {"t": 0.5, "mix": {}}],
            'key 1: field "t" = 0.5 is not after key 0',
        ),
        ([{"mix": {}}], 'key 0 lacks field "t"'),
        ([{"t": 0}], 'key 0 lacks field "mix"'),
        ([{"t": 0, "mix": {"happy": 2}}], "key 0, field \"mix\": intensity of 'happy' is 2"),
        ([{"t": 0, "mix": {"hapy": 0.5}}], "key 0, field \"mix\": unknown emotion 'hapy'"),
        ([{"t": "soon", "mix": {}}], 'key 0: field "t" must be a number'),
        ([{"t": 0, "mix": {}, "ease": "x"}], "key 0 has unknown field"),
        ([], "non-empty list"),
    ],
)
def test_track_errors_name_key_and_field(keys, match) -> None:
    with pytest.raises(TalkingAvatarError, match=match):
        EmotionTrack.from_list(keys)


def test_track_file_round_trip_and_bad_json(tmp_path) -> None:
    track = EmotionTrack.from_list([{"t": 0, "mix": {"happy": 0.5}}, {"t": 2, "mix": {"angry": 1}}])
    track.save(tmp_path / "t.json")
    assert EmotionTrack.load(tmp_path / "t.json") == track
    (tmp_path / "bad.json").write_text('[{"t": 0,')
    with pytest.raises(TalkingAvatarError, match="not valid JSON"):
        EmotionTrack.load(tmp_path / "bad.json")
    assert json.loads((tmp_path / "t.json").read_text())[1]["mix"] == {"angry": 1.0}
