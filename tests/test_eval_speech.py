"""The real-speech evaluation set builder: pins, cutting at pauses, archive reading (no network)."""

from __future__ import annotations

import importlib.util
import io
import re
import sys
import tarfile
from pathlib import Path

import pytest

from animator.data.align import PhoneSpan
from avatar.errors import TalkingAvatarError

_PATH = Path(__file__).resolve().parent.parent / "scripts" / "build_eval_speech.py"
_SPEC = importlib.util.spec_from_file_location("build_eval_speech", _PATH)
build = importlib.util.module_from_spec(_SPEC)
sys.modules["build_eval_speech"] = build
_SPEC.loader.exec_module(build)


def test_pins_describe_a_varied_set() -> None:
    hex64 = re.compile(r"[0-9a-f]{64}")
    assert all(hex64.fullmatch(a.sha256) for a in build.ARCHIVES.values())
    assert all(hex64.fullmatch(r.sha256) for r in build.RECORDINGS)
    assert all(r.archive in build.ARCHIVES for r in build.RECORDINGS)
    clips = [r.clip for r in build.RECORDINGS]
    assert len(clips) == len(set(clips))
    assert len({r.speaker for r in build.RECORDINGS}) >= 8
    assert {r.sex for r in build.RECORDINGS} == {"male", "female"}


def _spans(words_per_phrase: list[int], phrase_s: float, pause_s: float) -> list[PhoneSpan]:
    """Phrases of one-phone words (0.25 s each) separated by pauses."""
    spans, t, index = [PhoneSpan("SIL", 0.0, 0.1)], 0.1, 0
    for k, count in enumerate(words_per_phrase):
        step = phrase_s / count
        for _ in range(count):
            spans.append(PhoneSpan("AA", t, t + step, f"w{index}", index))
            t, index = t + step, index + 1
        end = t + (pause_s if k + 1 < len(words_per_phrase) else 0.1)
        spans.append(PhoneSpan("SIL", t, end))
        t = end
    return spans


def test_cuts_fall_in_pauses_and_keep_every_word() -> None:
    spans = _spans([6, 4, 8, 3, 5, 7, 2, 6], phrase_s=3.0, pause_s=0.4)
    duration = spans[-1].end
    segments = build.cut_at_pauses(spans, duration)
    assert segments[0][0] == 0.0 and segments[-1][1] == duration
    assert segments[0][2] == 0 and segments[-1][3] == 41
    for (a, b, first, end), following in zip(segments, segments[1:] + [None], strict=True):
        assert build.MIN_CLIP_S <= b - a <= build.MAX_CLIP_S
        assert end > first
        if following is not None:
            assert following[0] == b and following[2] == end
            assert any(s.symbol == "SIL" and s.start < b < s.end for s in spans)


def test_a_stretch_without_pauses_stays_whole() -> None:
    spans = _spans([20], phrase_s=5.0, pause_s=0.4)
    assert build.cut_at_pauses(spans, spans[-1].end) == [(0.0, spans[-1].end, 0, 20)]


def test_segment_text_keeps_the_original_tokens() -> None:
    text = "Feed'st thy light's flame with self-substantial fuel,"
    assert build.segment_text(text, 3, 7) == "flame with self-substantial"
    assert build.segment_text(text, 7, 8) == "fuel,"


def _tar_gz(tmp_path: Path, member: str, data: bytes) -> Path:
    path = tmp_path / "pkg-1.0.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo(member)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return path


def test_read_member_of_an_sdist(tmp_path: Path) -> None:
    path = _tar_gz(tmp_path, "pkg-1.0/data/a.wav", b"RIFF1234")
    assert build.read_member(path, "pkg-1.0/data/a.wav") == b"RIFF1234"


def test_a_changed_archive_is_refused(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    folder = cache / "pkg-1.0"
    folder.mkdir(parents=True)
    _tar_gz(folder, "pkg-1.0/x", b"changed")
    archive = build.Archive("sdist", "pkg", "1.0", "0" * 64, "MIT")
    with pytest.raises(TalkingAvatarError, match=r"has sha256 [0-9a-f]{64}, expected 0{64}"):
        build.fetch(archive, cache)
