"""Lip-sync measures: phone classes in both alphabets, lag, closure and specificity on known
gaps, and the real-speech evaluation end to end on eSpeak clips written as a user would."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from animator.data.sample import TimedLabel
from animator.lipsync import (
    best_lag,
    detect_alphabet,
    lip_sync_scores,
    opening_target,
    phone_class,
)
from viewer.cli import main


def test_phone_classes_in_both_alphabets() -> None:
    assert [phone_class(s) for s in ("B", "M", "P", "T", "N", "AA1", "AE", "IY0", "SIL", "S")] == [
        "bilabial", "bilabial", "bilabial", "control", "control", "open", "open", "close",
        "silence", "consonant",
    ]  # fmt: skip
    # eSpeak's D and T are the dental fricatives, not ARPAbet's d and t
    assert phone_class("D", "espeak") == "consonant" and phone_class("D") == "control"
    assert [phone_class(s, "espeak") for s in ("b", "m", "t", "aI", "'a", "_:")] == [
        "bilabial", "bilabial", "control", "open", "open", "silence",
    ]  # fmt: skip
    assert detect_alphabet(["SIL", "B", "AA1", "D"]) == "arpabet"
    assert detect_alphabet(["_", "b", "aI", "D"]) == "espeak"
    with pytest.raises(ValueError, match="unknown phone alphabet"):
        phone_class("B", "ipa")


def _spans(seq: list[tuple[str, float]]) -> list[TimedLabel]:
    out, t = [], 0.0
    for symbol, length in seq:
        out.append(TimedLabel(symbol, t, t + length))
        t += length
    return out


# "ba-ta-ma-ka" with generous phones: 0.1 s consonants, 0.2 s open vowels, silence around
SPEECH = _spans(
    [("SIL", 0.3), ("B", 0.1), ("AA", 0.2), ("T", 0.1), ("AA", 0.2), ("M", 0.1), ("AE", 0.2),
     ("K", 0.1), ("AA", 0.2), ("P", 0.1), ("AY", 0.2), ("SIL", 0.3)]
)  # fmt: skip
FPS = 30.0


def test_lag_is_found_in_frames_with_its_sign() -> None:
    target = opening_target(SPEECH, FPS, 60)
    for shift in (-2, 0, 3):
        late = np.roll(target, shift)  # the mouth `shift` frames after the sound
        lag, corr = best_lag(late * 12.0, target)
        assert lag == shift and corr > 0.95


def test_a_mouth_that_shuts_on_bilabials_only() -> None:
    target = opening_target(SPEECH, FPS, 60)
    gap = 12.0 * target  # mm: open vowels 12, t/k 3.6, bilabials and silence 0
    s = lip_sync_scores(gap, SPEECH, FPS)
    assert s.closure_ratio == pytest.approx(0.0, abs=1e-9) and s.specificity == pytest.approx(0.0)
    assert s.open_vowel_mm == pytest.approx(12.0) and s.lag_frames == 0 and s.correlation > 0.99
    assert (s.bilabials, s.open_vowels) == (3, 5)


def test_a_loudness_envelope_scores_about_one_on_specificity() -> None:
    target = opening_target(SPEECH, FPS, 60)
    consonant = np.isin(np.round(target, 2), [0.0, 0.3])
    gap = np.where(consonant, 2.0, 10.0)  # every consonant alike, as loudness would
    s = lip_sync_scores(gap, SPEECH, FPS)
    assert s.specificity == pytest.approx(1.0) and s.closure_ratio == pytest.approx(0.2)


@pytest.fixture(scope="module")
def espeak_clips(tmp_path_factory) -> Path:
    """Two held-out sentences in a voice the animator never heard, written as a user would:
    16-bit wav at 22.05 kHz plus eSpeak's own phone spans as JSON."""
    from animator.data.espeak import Voice, synthesize

    folder = tmp_path_factory.mktemp("speech")
    for i, text in enumerate(("Maybe Bob bought a map of Bombay.", "The puppy met a mob of bees.")):
        utt = synthesize(text, Voice("en-us+f2", rate=170))
        sf.write(folder / f"clip{i}.wav", utt.audio, utt.sample_rate, subtype="PCM_16")
        phones = [{"symbol": p.symbol, "start": p.start, "end": p.end} for p in utt.phonemes]
        (folder / f"clip{i}.json").write_text(json.dumps({"phones": phones}))
    (folder / "notes.wav").write_bytes(b"")  # a wav without timings is skipped
    return folder


def test_eval_speech_end_to_end(espeak_clips: Path, tmp_path: Path, capsys) -> None:
    from animator import Animator
    from animator.speech_eval import evaluate_speech

    rows, medians, table = evaluate_speech(Animator.load(), espeak_clips, log=lambda *_: None)
    assert [r["method"] for r in rows] == ["clip0", "clip1"]
    neutral = medians["neutral"]
    assert neutral["closure"] < 0.5 and neutral["open_mm"] > 5.0  # a talking mouth
    assert abs(neutral["lag"]) <= 2 and neutral["corr"] > 0.4
    assert set(medians) == {"neutral", "happy", "sad", "angry", "surprised", "fearful",
                            "disgusted", "contempt"}  # fmt: skip
    assert "| median, happy at 1 |" in table and "| clip0 |" in table
    out = tmp_path / "speech.md"
    assert main(["eval", "--speech", str(espeak_clips), "--out", str(out)]) == 0
    assert "bilabial specificity" in out.read_text()


def test_eval_speech_bad_folders(tmp_path: Path, capsys) -> None:
    assert main(["eval", "--speech", str(tmp_path / "none")]) == 2
    assert "is not a folder" in capsys.readouterr().err
    (tmp_path / "a.wav").write_bytes(b"x")
    (tmp_path / "a.json").write_text('{"phones": [{"symbol": "B"}]}')
    assert main(["eval", "--speech", str(tmp_path)]) == 2
    assert "is not a phone-timing file (KeyError)" in capsys.readouterr().err
    assert main(["eval"]) == 2
    assert "eval needs --talking DIR and --expressions DIR, or --speech DIR" in (
        capsys.readouterr().err
    )
