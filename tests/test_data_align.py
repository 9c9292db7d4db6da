"""Forced alignment (PocketSphinx) against eSpeak NG's own phoneme timings; ARPAbet visemes."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from animator.data import align
from animator.data.align import (
    PhoneSpan,
    align_phones,
    bilabial_dips,
    boundary_errors,
    pronunciation,
    spans_of_phonemes,
    transcript_words,
)
from animator.data.espeak import Voice, synthesize
from animator.data.visemes import (
    ARPABET_PHONES,
    arpabet_of_espeak,
    espeak_of_arpabet,
    viseme_of,
    viseme_of_arpabet,
)
from avatar.errors import TalkingAvatarError

pytest.importorskip("pocketsphinx", reason="pocketsphinx is not installed")

SENTENCES = (
    "Bob bought a map of Bombay.",
    "Please remember to bring my umbrella tomorrow morning.",
    "Mister Babbage built an amazing calculating machine.",
)


@pytest.fixture(scope="module")
def aligned_espeak() -> list[tuple]:
    """(utterance, spans) for three sentences in two voices."""
    out = []
    for voice in (Voice("en-us"), Voice("en-gb-x-rp+m1", rate=150)):
        for text in SENTENCES:
            utt = synthesize(text, voice)
            out.append((utt, align_phones(utt.audio, utt.sample_rate, text)))
    return out


def test_boundaries_agree_with_espeak(aligned_espeak) -> None:
    # Measured with benchmarks/align.py on 24 utterances (4 voices): median |error| 16 ms for
    # bilabial and 14 ms for vowel boundaries, 90th percentile 55 ms; on real speech against
    # independent labels 10-11 ms. 30 ms (three frames) leaves room for voice-to-voice spread.
    pooled = {"bilabial": [], "vowel": []}
    expected_bilabials = 0
    for utt, spans in aligned_espeak:
        errors = boundary_errors(spans_of_phonemes(utt.phonemes), spans)
        for kind in pooled:
            pooled[kind].append(errors[kind])
        expected_bilabials += sum(viseme_of(p.symbol) == "bilabial" for p in utt.phonemes)
    for kind, parts in pooled.items():
        errors = np.abs(np.concatenate(parts))
        assert np.median(errors) < 0.030, kind
        assert np.percentile(errors, 90) < 0.080, kind
    # Nearly every bilabial eSpeak spoke was found (start and end: two boundaries each).
    assert np.concatenate(pooled["bilabial"]).size >= 2 * 0.9 * expected_bilabials


def test_spans_cover_the_audio_in_transcript_order(aligned_espeak) -> None:
    for utt, spans in aligned_espeak:
        assert spans[0].start == 0.0
        assert spans[-1].end == pytest.approx(utt.duration)
        for a, b in zip(spans, spans[1:], strict=False):
            assert a.end == pytest.approx(b.start) and a.end > a.start
            assert not (a.symbol == "SIL" and b.symbol == "SIL")
        words = transcript_words(utt.text)
        seen = []
        for span in spans:
            assert span.symbol in ARPABET_PHONES
            assert (span.word is None) == (span.word_index is None) == (span.symbol == "SIL")
            if span.word_index is not None and (not seen or seen[-1] != span.word_index):
                seen.append(span.word_index)
                assert span.word == words[span.word_index]
        assert seen == list(range(len(words)))


def test_bilabials_sit_on_loudness_dips(aligned_espeak) -> None:
    utt, spans = aligned_espeak[0]  # "Bob bought a map of Bombay." has six bilabials
    dips = bilabial_dips(utt.audio, utt.sample_rate, spans)
    assert dips.size >= 5 and np.median(dips) > 3.0
    # The same spans 80 ms late sit on the vowels instead.
    late = [PhoneSpan(s.symbol, s.start + 0.08, s.end + 0.08) for s in spans]
    assert np.median(bilabial_dips(utt.audio, utt.sample_rate, late)) < np.median(dips) - 3.0


def test_words_missing_from_the_dictionary_are_spoken_by_espeak() -> None:
    phones = pronunciation("blimbop")
    assert phones[0] == "B" and phones[-1] == "P" and set(phones) <= ARPABET_PHONES
    text = "The blimbop map."
    utt = synthesize(text)
    spans = align_phones(utt.audio, utt.sample_rate, text)
    assert [s.symbol for s in spans if s.word == "blimbop"] == phones


def test_unpronounceable_word_is_named(monkeypatch) -> None:
    monkeypatch.setattr(align, "arpabet_of_espeak", lambda symbol: None)
    with pytest.raises(TalkingAvatarError, match="cannot pronounce 'qwzx'"):
        pronunciation("qwzx")


def test_bad_input() -> None:
    speech = synthesize("Hello there.").audio
    with pytest.raises(TalkingAvatarError, match="nothing to align"):
        align_phones(speech, 22050, " ... ")
    with pytest.raises(TalkingAvatarError, match="too short to align"):
        align_phones(speech[:1000], 22050, "hello there")
    with pytest.raises(TalkingAvatarError, match="could not align"):
        align_phones(speech[:4410], 22050, " ".join(SENTENCES))  # 0.2 s for 40 phones
    with pytest.raises(TalkingAvatarError, match="positive sample_rate"):
        align_phones(speech, 0, "hello there")
    with pytest.raises(TalkingAvatarError, match="NaN"):
        align_phones(np.full(8000, np.nan, np.float32), 16000, "hello")


def test_float_and_int16_input_align_alike() -> None:
    utt = synthesize("Maybe the baker will bring plums.")
    as_int = align_phones(utt.audio, utt.sample_rate, utt.text)
    as_float = align_phones(utt.audio.astype(np.float32) / 32768.0, utt.sample_rate, utt.text)
    assert as_int == as_float


def test_transcript_words() -> None:
    assert transcript_words("Feed'st thy light's self-substantial fuel, 'em!") == [
        "feed'st",
        "thy",
        "light's",
        "self",
        "substantial",
        "fuel",
        "em",
    ]


def test_arpabet_visemes_follow_the_espeak_table() -> None:
    assert {viseme_of_arpabet(p) for p in ("P", "B", "M", "B1")} == {"bilabial"}
    assert viseme_of_arpabet("AA1") == "open" and viseme_of_arpabet("AH0") == "schwa"
    assert viseme_of_arpabet("F") == "labiodental" and viseme_of_arpabet("W") == "labiovelar"
    assert viseme_of_arpabet("SIL") == "rest" and viseme_of_arpabet("+NSN+") == "rest"
    for phone in ARPABET_PHONES:  # the canonical eSpeak form maps back to the same phone
        assert arpabet_of_espeak(espeak_of_arpabet(phone)) == (phone,)
    assert arpabet_of_espeak("aI@") == ("AY", "ER") and arpabet_of_espeak("@2") == ("AH",)
    assert arpabet_of_espeak("_:") == ("SIL",) and arpabet_of_espeak("Q") is None
    with pytest.raises(TalkingAvatarError, match="'QX' is not an ARPAbet phone"):
        viseme_of_arpabet("QX")


def test_boundary_errors_match_by_sequence() -> None:
    ref = [PhoneSpan("B", 0.0, 0.1), PhoneSpan("AA", 0.1, 0.3), PhoneSpan("P", 0.3, 0.4)]
    hyp = [
        PhoneSpan("SIL", 0.0, 0.02),
        PhoneSpan("B", 0.02, 0.1),
        PhoneSpan("AO", 0.1, 0.32),  # a vowel variant still matches
        PhoneSpan("T", 0.32, 0.35),  # an inserted phone is skipped
        PhoneSpan("P", 0.35, 0.4),
    ]
    errors = boundary_errors(ref, hyp)
    np.testing.assert_allclose(errors["bilabial"], [0.02, 0.0, 0.05, 0.0], atol=1e-9)
    np.testing.assert_allclose(errors["vowel"], [0.0, 0.02], atol=1e-9)
    assert errors["other"].size == 0


def test_import_loads_no_model() -> None:
    code = (
        "import sys\nimport animator.data.align, animator.data.tts\n"
        "assert animator.data.align._ALIGNER is None and not animator.data.tts._ENGINES\n"
        "assert 'pocketsphinx' not in sys.modules and 'onnxruntime' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
