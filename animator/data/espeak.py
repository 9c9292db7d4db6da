"""Speech from eSpeak NG through ctypes, with the phoneme timings the synthesizer itself reports.

The library and its data come from the `espeakng-loader` wheel (no system package needed). The
library is loaded on the first call to `synthesize`, never at import. eSpeak keeps global state, so
calls are serialized with a lock.

Timings: with `espeakINITIALIZE_PHONEME_EVENTS`, eSpeak emits one event per phoneme with its start
in milliseconds of the output audio. A phoneme ends where the next one starts; the last one ends
with the audio. Consecutive events with the same symbol (eSpeak repeats some, and a word-final
consonant followed by the same word-initial one is a single closure) are merged into one span. A
leading pause `_` covers the silence before the first phoneme.

Reproducibility: eSpeak's pitch "flutter" reads a counter that lives on between utterances, so the
same call twice gives audio that differs by a few samples and phoneme times that differ by a
millisecond or two. Each voice is therefore loaded from a voice file written to a temporary folder
(the language file, the variant file and `flutter 0`), and eSpeak's random generator is seeded
before each utterance. Phoneme timings and the audio's length then depend only on the text, the
voice and the seed. The samples of fricative noise (and the breathiness of some variants) still
come from a generator whose state eSpeak does not expose, so they match bit for bit only between
runs that make the same calls in the same order (e.g. two runs of a generator).
"""

from __future__ import annotations

import atexit
import ctypes
import re
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from avatar.errors import TalkingAvatarError

if TYPE_CHECKING:
    from animator.data.tts import NeuralVoice

__all__ = [
    "Phoneme",
    "Utterance",
    "Voice",
    "VoiceInfo",
    "synthesize",
    "phonemize_ipa",
    "list_voices",
    "PAUSE_SYMBOLS",
]

#: eSpeak's pause mnemonics (short and long pause).
PAUSE_SYMBOLS = frozenset({"_", "_:", "_!", "_|", "||", "|"})

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 0x0001
_CHARS_UTF8 = 1
_POS_CHARACTER = 1
_EVENT_LIST_TERMINATED = 0
_EVENT_PHONEME = 7
_PARAM_RATE = 1
_PARAM_VOLUME = 2
_PARAM_PITCH = 3
_PARAM_RANGE = 4
_PHONEMES_IPA = 0x02  # espeak_TextToPhonemes: IPA as UTF-8 instead of mnemonics


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),  # milliseconds from the start of the output
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


class _VoiceRecord(ctypes.Structure):
    """espeak_VOICE: `languages` is a run of (priority byte, NUL-terminated name), then a 0 byte."""

    _fields_ = [
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_void_p),
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    ]


_Callback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event)
)


@dataclass(frozen=True)
class Voice:
    """An eSpeak voice setting.

    Attributes:
        name: voice name with an optional variant, e.g. "en-us", "en+f3", "en-gb-x-rp+m2"
            (languages are the file names under espeak-ng-data/lang, variants those under
            espeak-ng-data/voices/!v).
        rate: speaking rate in words per minute (eSpeak's range is about 80-450; default 175).
        pitch: base pitch, 0-100 (default 50).
        pitch_range: pitch range, 0-100 (0 is monotone; default 50).
        volume: amplitude, 0-200 (default 100); some variants clip at 100.
    """

    name: str = "en-us"
    rate: int = 165
    pitch: int = 50
    pitch_range: int = 50
    volume: int = 100


@dataclass(frozen=True)
class VoiceInfo:
    """A voice or variant file as eSpeak lists it.

    Attributes:
        name: the file name, usable in `Voice.name` ("en-GB-x-rp", or "m3" after a "+").
        title: eSpeak's display name ("English (Received Pronunciation)", "male3").
        languages: language tags with their priority, e.g. (("en-gb-x-rp", 5), ("en", 5)).
        gender: "male", "female" or "" (unspecified).
    """

    name: str
    title: str
    languages: tuple[tuple[str, int], ...]
    gender: str


@dataclass(frozen=True)
class Phoneme:
    """One phoneme span in seconds from the start of the audio.

    Attributes:
        symbol: eSpeak mnemonic without stress marks ("b", "O:", "aI", "_:" for a pause).
        start, end: seconds.
        stress: 2 primary ('), 1 secondary (,), 0 none.
    """

    symbol: str
    start: float
    end: float
    stress: int = 0

    @property
    def is_pause(self) -> bool:
        return self.symbol in PAUSE_SYMBOLS


@dataclass
class Utterance:
    """Synthesized speech and its phoneme timings (eSpeak mnemonics, also for neural voices)."""

    text: str
    voice: Voice | NeuralVoice
    audio: np.ndarray  # [N] int16, mono
    sample_rate: int
    phonemes: list[Phoneme]

    @property
    def duration(self) -> float:
        """Length of the audio in seconds."""
        return self.audio.shape[0] / self.sample_rate


class _Engine:
    """The loaded library; one per process."""

    def __init__(self) -> None:
        try:
            import espeakng_loader
        except ImportError as err:  # pragma: no cover - it is a dependency
            raise TalkingAvatarError(
                "espeakng-loader is not installed; install it with `pip install espeakng-loader`"
            ) from err
        lib = ctypes.CDLL(str(espeakng_loader.get_library_path()))
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_Callback]
        lib.espeak_SetVoiceByFile.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByFile.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.POINTER(ctypes.c_uint),
            ctypes.c_void_p,
        ]
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_TextToPhonemes.argtypes = [
            ctypes.POINTER(ctypes.c_void_p),
            ctypes.c_int,
            ctypes.c_int,
        ]
        lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
        lib.espeak_ListVoices.argtypes = [ctypes.POINTER(_VoiceRecord)]
        lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_VoiceRecord))
        # The one random generator eSpeak lets us seed (absent from very old builds); see the
        # module docstring for what stays history-dependent.
        self._set_seed = getattr(lib, "espeak_ng_SetRandSeed", None)
        if self._set_seed is not None:
            self._set_seed.argtypes = [ctypes.c_long]
        self.data_dir = Path(espeakng_loader.get_data_path())
        data_path = str(self.data_dir).encode()
        rate = lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path, _INITIALIZE_PHONEME_EVENTS
        )
        if rate <= 0:
            raise TalkingAvatarError(
                f"eSpeak NG failed to initialize with data at {data_path.decode()}; "
                "reinstall espeakng-loader"
            )
        self.lib = lib
        self.sample_rate = int(rate)
        self._chunks: list[np.ndarray] = []
        self._events: list[tuple[str, int]] = []
        self._callback = _Callback(self._on_synth)  # kept referenced for the library's lifetime
        lib.espeak_SetSynthCallback(self._callback)
        self.lock = threading.Lock()
        self._voice_dir: Path | None = None
        self._voice_files: dict[str, Path] = {}

    def _voice_file(self, name: str) -> Path:
        """A voice file for `name` ("language" or "language+variant") without pitch flutter."""
        if name in self._voice_files:
            return self._voice_files[name]
        language, _, variant = name.partition("+")
        matches = [
            p
            for p in (self.data_dir / "lang").rglob("*")
            if p.is_file() and p.name.lower() == language.lower()
        ]
        variant_path = self.data_dir / "voices" / "!v" / variant
        if not matches or (variant and not variant_path.is_file()):
            raise TalkingAvatarError(
                f"eSpeak has no voice {name!r}; use a name such as 'en-us', 'en+f3' or 'en-gb-x-rp+m2'"
            )
        lines = matches[0].read_text(errors="replace").splitlines()
        if variant:
            lines += [
                line
                for line in variant_path.read_text(errors="replace").splitlines()
                if not line.startswith("language")
            ]
        lines.append("flutter 0")
        if self._voice_dir is None:
            self._voice_dir = Path(tempfile.mkdtemp(prefix="talking-avatar-espeak-"))
            atexit.register(shutil.rmtree, self._voice_dir, True)
        path = self._voice_dir / f"voice{len(self._voice_files)}"
        path.write_text("\n".join(lines) + "\n")
        self._voice_files[name] = path
        return path

    def _on_synth(self, wav, num_samples: int, events) -> int:
        if num_samples > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(num_samples,)).copy())
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            event = events[i]
            if event.type == _EVENT_PHONEME:
                symbol = event.id.string.decode("ascii", errors="replace")
                self._events.append((symbol, int(event.audio_position)))
            i += 1
        return 0

    def list_voices(self, variants: bool) -> list[VoiceInfo]:
        spec = None
        if variants:  # eSpeak lists variants when asked for the pseudo-language "variant"
            tag = ctypes.c_char_p(b"variant")
            spec = ctypes.pointer(_VoiceRecord(languages=ctypes.cast(tag, ctypes.c_void_p)))
        found = []
        with self.lock:
            records = self.lib.espeak_ListVoices(spec)
            i = 0
            while records[i]:
                record = records[i].contents
                found.append(
                    VoiceInfo(
                        name=record.identifier.decode().rsplit("/", 1)[-1],
                        title=record.name.decode(errors="replace"),
                        languages=_language_tags(record.languages),
                        gender={1: "male", 2: "female"}.get(record.gender, ""),
                    )
                )
                i += 1
        return found

    def synthesize(
        self, text: str, voice: Voice, seed: int
    ) -> tuple[np.ndarray, list[tuple[str, int]]]:
        with self.lock:
            if self.lib.espeak_SetVoiceByFile(str(self._voice_file(voice.name)).encode()) != 0:
                raise TalkingAvatarError(f"eSpeak could not load voice {voice.name!r}")
            self.lib.espeak_SetParameter(_PARAM_RATE, int(voice.rate), 0)
            self.lib.espeak_SetParameter(_PARAM_PITCH, int(voice.pitch), 0)
            self.lib.espeak_SetParameter(_PARAM_RANGE, int(voice.pitch_range), 0)
            self.lib.espeak_SetParameter(_PARAM_VOLUME, int(voice.volume), 0)
            if self._set_seed is not None:
                self._set_seed(int(seed))
            self._chunks, self._events = [], []
            data = text.encode("utf-8") + b"\0"
            buf = ctypes.create_string_buffer(data)
            status = self.lib.espeak_Synth(
                buf, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None
            )
            if status != 0:
                raise TalkingAvatarError(f"eSpeak failed to synthesize {text!r} (status {status})")
            audio = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
            events = list(self._events)
        return audio.astype(np.int16), events

    def text_to_ipa(self, text: str, voice: Voice) -> list[str]:
        """IPA of each clause eSpeak finds in `text` (it drops the punctuation between them)."""
        with self.lock:
            if self.lib.espeak_SetVoiceByFile(str(self._voice_file(voice.name)).encode()) != 0:
                raise TalkingAvatarError(f"eSpeak could not load voice {voice.name!r}")
            buf = ctypes.create_string_buffer(text.encode("utf-8") + b"\0")
            pointer = ctypes.c_void_p(ctypes.addressof(buf))
            clauses = []
            # Each call consumes one clause and advances the pointer; NULL after the last.
            while pointer.value:
                out = self.lib.espeak_TextToPhonemes(
                    ctypes.byref(pointer), _CHARS_UTF8, _PHONEMES_IPA
                )
                if out:
                    clauses.append(out.decode("utf-8", errors="replace").strip())
        return [c for c in clauses if c]


def _language_tags(address: int | None) -> tuple[tuple[str, int], ...]:
    tags = []
    if address:
        raw = ctypes.cast(address, ctypes.POINTER(ctypes.c_ubyte))
        i = 0
        while raw[i] != 0:
            priority, i = int(raw[i]), i + 1
            start = i
            while raw[i] != 0:
                i += 1
            tags.append((bytes(raw[start:i]).decode(errors="replace"), priority))
            i += 1
    return tuple(tags)


_ENGINE: _Engine | None = None
_ENGINE_LOCK = threading.Lock()


def _engine() -> _Engine:
    global _ENGINE
    with _ENGINE_LOCK:
        if _ENGINE is None:
            _ENGINE = _Engine()
        return _ENGINE


def _split_stress(symbol: str) -> tuple[str, int]:
    stress = 0
    while symbol and symbol[0] in "',":
        stress = max(stress, 2 if symbol[0] == "'" else 1)
        symbol = symbol[1:]
    return symbol, stress


def list_voices(*, variants: bool = False, language: str | None = None) -> list[VoiceInfo]:
    """The voices eSpeak NG has, from the library itself.

    Args:
        variants: list the voice variants (the `+name` part: m1..m8, f1..f5, klatt, whisper,
            ...) instead of the languages.
        language: keep only languages with a tag equal to it or starting with it and "-"
            (e.g. "en" gives en, en-us, en-gb-x-rp, en-029, ...). Ignored for variants.
    """
    found = _engine().list_voices(variants)
    if language is not None and not variants:
        prefix = language.lower()
        found = [
            v
            for v in found
            if any(tag == prefix or tag.startswith(prefix + "-") for tag, _ in v.languages)
        ]
    return found


def synthesize(text: str, voice: Voice | None = None, *, seed: int = 0) -> Utterance:
    """Speak `text` with eSpeak NG and return the audio with its phoneme spans.

    Args:
        text: UTF-8 text, one or more sentences.
        voice: voice, rate and pitch; default `Voice()` (en-us, 165 wpm).
        seed: seeds eSpeak's random pitch and timing jitter; the same text, voice and seed give
            the same samples.

    Returns:
        An `Utterance`: int16 mono audio at eSpeak's rate (22050 Hz) and contiguous phoneme spans
        covering [0, duration] in seconds.
    """
    if not text.strip():
        raise TalkingAvatarError("cannot synthesize empty text; pass a sentence")
    voice = voice or Voice()
    engine = _engine()
    audio, events = engine.synthesize(text, voice, seed)
    sample_rate = engine.sample_rate
    duration = audio.shape[0] / sample_rate
    merged: list[tuple[str, int, float]] = []  # (symbol, stress, start)
    for raw, position_ms in events:
        symbol, stress = _split_stress(raw.strip())
        if not symbol:
            continue
        start = min(position_ms / 1000.0, duration)
        if merged and (
            merged[-1][0] == symbol or (symbol in PAUSE_SYMBOLS and merged[-1][0] in PAUSE_SYMBOLS)
        ):
            merged[-1] = (merged[-1][0], max(merged[-1][1], stress), merged[-1][2])
            continue
        if merged and start <= merged[-1][2]:
            # Two phonemes reported at the same instant: the earlier one has no duration.
            merged.pop()
        merged.append((symbol, stress, start))
    if merged and merged[0][2] > 0.0:
        merged.insert(0, ("_", 0, 0.0))
    phonemes = []
    for i, (symbol, stress, start) in enumerate(merged):
        end = merged[i + 1][2] if i + 1 < len(merged) else duration
        if end - start > 1e-4:
            phonemes.append(Phoneme(symbol=symbol, start=start, end=end, stress=stress))
    return Utterance(
        text=text, voice=voice, audio=audio, sample_rate=sample_rate, phonemes=phonemes
    )


def phonemize_ipa(text: str, voice: Voice | None = None) -> str:
    """The IPA eSpeak NG would speak for `text`, punctuation kept.

    Args:
        text: UTF-8 text.
        voice: language (and variant) whose pronunciation rules apply; default en-us.

    Returns:
        IPA with stress marks (e.g. "bˈɑːb bˈɔːt ɐ mˈæp."); words separated by spaces, and each
        run of text between punctuation marks followed by its mark (",", ".", "?", ...).
    """
    if not text.strip():
        raise TalkingAvatarError("cannot phonemize empty text; pass a sentence")
    voice = voice or Voice()
    engine = _engine()
    pieces = []
    # eSpeak drops punctuation, which neural voices need for phrasing: phonemize each run of text
    # between marks on its own and put its mark back.
    for chunk, mark in re.findall(r"([^,.;:!?]*)([,.;:!?]*)", text):
        if chunk.strip():
            ipa = " ".join(engine.text_to_ipa(chunk, voice))
            pieces.append(ipa + mark[:1])
    return " ".join(pieces)
