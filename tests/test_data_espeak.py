"""eSpeak NG through ctypes: audio with contiguous phoneme spans; the CLI glue for `data`."""

from __future__ import annotations

import argparse
import subprocess
import sys

import numpy as np
import pytest

from animator.data.cli import add_data_commands
from animator.data.espeak import Voice, list_voices, synthesize
from avatar.errors import TalkingAvatarError


def test_phoneme_spans_cover_the_audio() -> None:
    utterance = synthesize("Bob bought a map of Bombay.", Voice("en-us", rate=160))
    assert utterance.sample_rate == 22050
    assert 1.0 < utterance.duration < 3.0
    spans = utterance.phonemes
    assert spans[0].start == 0.0
    assert spans[-1].end == pytest.approx(utterance.duration)
    for a, b in zip(spans, spans[1:], strict=False):
        assert a.end == pytest.approx(b.start) and a.end > a.start
    symbols = [p.symbol for p in spans]
    assert symbols.count("b") >= 4 and "m" in symbols and "p" in symbols
    assert any(p.stress == 2 for p in spans)


def test_voices_and_rate_change_the_speech() -> None:
    slow = synthesize("Five brave sailors.", Voice("en-gb-x-rp+m1", rate=120))
    fast = synthesize("Five brave sailors.", Voice("en-us+f3", rate=220))
    assert slow.duration > fast.duration * 1.3


def test_the_library_lists_english_languages_and_variants() -> None:
    languages = {v.name for v in list_voices(language="en")}
    assert {"en", "en-US", "en-GB-x-rp", "en-029", "en-GB-scotland", "en-US-nyc"} <= languages
    assert all(any(t.startswith("en") for t, _ in v.languages) for v in list_voices(language="en"))
    variants = {v.name: v for v in list_voices(variants=True)}
    assert {f"m{i}" for i in range(1, 8)} | {f"f{i}" for i in range(1, 6)} <= set(variants)
    assert {"klatt", "whisper", "croak"} <= set(variants)
    assert variants["f3"].gender == "female" and variants["m3"].gender == "male"
    for name in ("en-GB-x-rp", "en-US-nyc"):  # listed names are loadable voice names
        assert synthesize("Bob.", Voice(f"{name}+whisper")).duration > 0.2


def test_volume_scales_the_audio() -> None:
    loud = synthesize("Bob bought a map.", Voice("en-us+m3", volume=100))
    quiet = synthesize("Bob bought a map.", Voice("en-us+m3", volume=50))
    ratio = np.sqrt(
        np.mean(quiet.audio.astype(float) ** 2) / np.mean(loud.audio.astype(float) ** 2)
    )
    assert ratio == pytest.approx(0.5, abs=0.05)
    assert [p.symbol for p in quiet.phonemes] == [p.symbol for p in loud.phonemes]


def test_unknown_voice() -> None:
    with pytest.raises(TalkingAvatarError, match="no voice"):
        synthesize("hello", Voice("xx-nowhere"))
    with pytest.raises(TalkingAvatarError, match="empty"):
        synthesize("  ")


def test_import_loads_no_library() -> None:
    code = (
        "import animator.data, animator.data.talking, animator.data.expressions, "
        "animator.data.cli\nimport animator.data.espeak as e\nassert e._ENGINE is None"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cli_commands_call_the_generators(monkeypatch, tmp_path) -> None:
    calls = []
    import animator.data.expressions as expressions
    import animator.data.talking as talking

    monkeypatch.setattr(talking, "generate_talking_set", lambda out, **kw: calls.append((out, kw)))
    monkeypatch.setattr(
        expressions, "generate_expression_set", lambda out, **kw: calls.append((out, kw))
    )
    parser = argparse.ArgumentParser()
    add_data_commands(parser.add_subparsers(dest="command"))
    for argv in (
        ["data", "talking", "--out", str(tmp_path), "--small", "--seed", "4"],
        ["data", "expressions", "--out", str(tmp_path)],
    ):
        args = parser.parse_args(argv)
        args.handler(args)
    assert calls == [
        (str(tmp_path), {"small": True, "seed": 4}),
        (str(tmp_path), {"small": False, "seed": 0}),
    ]
    with pytest.raises(SystemExit):
        parser.parse_args(["data", "talking"])  # --out is required
