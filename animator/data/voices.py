"""Speech engines and their voices: where the stand-in talking set gets its speakers' speech.

An engine is registered once as a `SpeechEngine`: a name, its voices (timbres: what makes two
speakers sound like two people; the train / val / test split never shares one) and a function
`synthesize(text, voice) -> espeak.Utterance` (int16 audio, its rate, phoneme spans whose symbols
`visemes.viseme_of` reads). Optionally `speaker_voice(voice, rng)` turns a timbre into one
speaker's own setting of it (accent, rate, pitch). Another engine is one line:

    register_engine(SpeechEngine("neural", neural_voices, synthesize_neural))

eSpeak NG is registered here. Its timbres are the voice variants the library lists (m1..m8,
f1..f5, klatt*, whisper, named voices, plus each language's own voice), minus those that do not
make plausible human speech (`ESPEAK_DROPPED_VARIANTS`, measured by
`scripts/screen_espeak_voices.py`); a speaker of a timbre draws an English accent (every English
language eSpeak lists except `ESPEAK_DROPPED_LANGUAGES`), a rate of 120-220 words per minute and
a pitch and pitch range.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field, replace
from functools import cache
from typing import Any

import numpy as np

from animator.data.espeak import Utterance, Voice, list_voices, synthesize
from avatar.errors import TalkingAvatarError

__all__ = [
    "SpeechEngine",
    "register_engine",
    "engines",
    "get_engine",
    "voice_key",
    "split_voices",
    "ESPEAK_DROPPED_LANGUAGES",
    "ESPEAK_DROPPED_VARIANTS",
    "ESPEAK_DEFAULT_TIMBRE",
    "espeak_languages",
    "espeak_timbres",
]

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class SpeechEngine:
    """A text-to-speech engine the talking set can draw speakers from.

    Attributes:
        name: short name, stored with every generated clip ("espeak", "neural").
        voices: returns the engine's distinct voices (any values with a stable `name` attribute
            or `str`); an empty list contributes no speakers.
        synthesize: `(text, voice) -> Utterance` for a value `speaker_voice` returned.
        speaker_voice: `(voice, rng) -> voice` one speaker's setting of a timbre; None uses
            the timbre as it is.
        pinned: voice key -> split, for voices that must land in one split.
        speakers_per_voice: split -> speakers drawn from each voice of this engine; None uses
            the talking set's default (an engine with few voices draws more from each).
        held_out: share of the voices (per group) held out for validation and as many for test.
    """

    name: str
    voices: Callable[[], Sequence[Any]]
    synthesize: Callable[[str, Any], Utterance]
    speaker_voice: Callable[[Any, np.random.Generator], Any] | None = None
    pinned: dict[str, str] = field(default_factory=dict)
    speakers_per_voice: dict[str, int] | None = None
    held_out: float = 0.125


_ENGINES: dict[str, SpeechEngine] = {}


def register_engine(engine: SpeechEngine) -> None:
    """Add (or replace) an engine; the talking set draws from every registered one."""
    _ENGINES[engine.name] = engine


def engines() -> list[SpeechEngine]:
    """The registered engines, in registration order (eSpeak first)."""
    return list(_ENGINES.values())


def get_engine(name: str) -> SpeechEngine:
    if name not in _ENGINES:
        raise TalkingAvatarError(
            f"no speech engine {name!r} is registered; known: {', '.join(_ENGINES)}"
        )
    return _ENGINES[name]


def voice_key(voice: Hashable) -> str:
    """A stable name of a voice (its `name` attribute, else `str`), used to split and to log."""
    return str(getattr(voice, "name", voice))


def split_voices(
    voices: Sequence[Any],
    seed: int,
    *,
    held_out: float = 0.125,
    groups: Callable[[Any], str] | None = None,
    pinned: dict[str, str] | None = None,
) -> dict[str, list[Any]]:
    """Assign whole voices to train / val / test: a held-out voice is never heard in training.

    Within each group (e.g. gender) `held_out` of the voices go to val and as many to test
    (rounded, none when a group is too small), drawn with `seed`; the rest train. `pinned` maps
    voice keys to a split before the draw. Each split lists its pinned voices first, then the
    others by key.
    """
    pinned = pinned or {}
    out: dict[str, list[Any]] = {split: [] for split in SPLITS}
    free: dict[str, list[Any]] = {}
    for voice in voices:
        key = voice_key(voice)
        if key in pinned:
            out[pinned[key]].append(voice)
        else:
            free.setdefault(groups(voice) if groups else "", []).append(voice)
    for group, members in sorted(free.items()):
        members = sorted(members, key=voice_key)
        rng = np.random.default_rng([seed, zlib.crc32(group.encode())])
        order = rng.permutation(len(members))
        count = int(round(held_out * len(members)))
        for rank, i in enumerate(order):
            split = "val" if rank < count else "test" if rank < 2 * count else "train"
            out[split].append(members[i])
    for split in SPLITS:  # pinned voices first (they open the small set), then by name
        out[split].sort(key=lambda v: (voice_key(v) not in pinned, voice_key(v)))
    return out


# ------------------------------------------------------------------------------ eSpeak NG
#: English languages not used, and why.
ESPEAK_DROPPED_LANGUAGES: dict[str, str] = {
    "en-Shaw": "a Shavian-script voice: Latin text comes out exactly as 'en' (a duplicate)",
}

_ROBOT = "echo over 100% of the voice (a metallic, ringing robot), see the screen's table"
_NEAR_COPY = "waveform correlates > 0.99 with a kept variant (the same timbre)"
#: eSpeak variants that do not make plausible human speech or repeat another, and why
#: (numbers in docs/training_data.md, from scripts/screen_espeak_voices.py).
ESPEAK_DROPPED_VARIANTS: dict[str, str] = {
    **{
        name: _ROBOT
        for name in (
            "Demonic",
            "RicishayMax",
            "RicishayMax2",
            "RicishayMax3",
            "UniRobot",
            "anikaRobot",
            "robosoft",
            "robosoft2",
            "robosoft3",
            "robosoft4",
            "robosoft5",
            "robosoft6",
            "robosoft7",
            "robosoft8",
        )
    },
    "Alex": "monotone: F0 spread 0.4 semitones (every kept voice has 0.7 or more)",
    "AnxiousAndy": "monotone: F0 spread 0.2 semitones (every kept voice has 0.7 or more)",
    "fast": "a test voice: the same audio as the language's own voice",
    "klatt6": _NEAR_COPY + " (adam)",
    "iven3": _NEAR_COPY + " (iven2)",
    "iven4": _NEAR_COPY + " (iven2)",
    "steph2": _NEAR_COPY + " (steph)",
    "steph3": _NEAR_COPY + " (steph)",
}
#: The timbre of each language's own voice (no variant). It is pinned to the test split: the
#: bundled sample speech (scripts/build_sample_speech.py) uses it, and stays unheard; the small
#: set's test speaker speaks with it too (eSpeak's plainest voice, for quick checks).
ESPEAK_DEFAULT_TIMBRE = "default"
ESPEAK_RATE_WPM = (120, 220)
ESPEAK_PITCH = (25, 75)
ESPEAK_PITCH_RANGE = (20, 90)
#: eSpeak limits loud output softly just below full scale (|x| >= 32000 of 32767); the share of
#: samples in that range tolerated before the volume is lowered
_LIMITER_LEVEL = 32000
_MAX_LIMITED = 1e-3


@dataclass(frozen=True)
class EspeakTimbre:
    """An eSpeak voice variant (or the languages' own voice) as a timbre.

    Attributes:
        name: the variant file name ("m3", "whisper") or `ESPEAK_DEFAULT_TIMBRE`.
        gender: "male", "female" or "".
    """

    name: str
    gender: str


@cache
def espeak_languages() -> tuple[str, ...]:
    """The English languages (accents) speakers draw from, as eSpeak file names."""
    return tuple(
        v.name for v in list_voices(language="en") if v.name not in ESPEAK_DROPPED_LANGUAGES
    )


@cache
def espeak_timbres() -> tuple[EspeakTimbre, ...]:
    """The kept variants (see `ESPEAK_DROPPED_VARIANTS`) plus the languages' own voice."""
    kept = [
        EspeakTimbre(v.name, v.gender)
        for v in list_voices(variants=True)
        if v.name not in ESPEAK_DROPPED_VARIANTS
    ]
    return (EspeakTimbre(ESPEAK_DEFAULT_TIMBRE, "male"), *sorted(kept, key=lambda t: t.name))


def espeak_speaker_voice(timbre: EspeakTimbre, rng: np.random.Generator) -> Voice:
    """One speaker's voice of a timbre: an English accent, a rate, a pitch and a pitch range."""
    language = str(rng.choice(espeak_languages()))
    variant = "" if timbre.name == ESPEAK_DEFAULT_TIMBRE else f"+{timbre.name}"
    return Voice(
        name=language + variant,
        rate=int(rng.integers(ESPEAK_RATE_WPM[0], ESPEAK_RATE_WPM[1] + 1)),
        pitch=int(rng.integers(ESPEAK_PITCH[0], ESPEAK_PITCH[1] + 1)),
        pitch_range=int(rng.integers(ESPEAK_PITCH_RANGE[0], ESPEAK_PITCH_RANGE[1] + 1)),
    )


def espeak_unclipped(text: str, voice: Voice) -> Utterance:
    """`espeak.synthesize`, with the volume lowered (x0.7 a step) while the output saturates.

    Loud variants (iven, Jacky, antonio, ...) push 0.3-0.7% of their samples into eSpeak's
    limiter at volume 100; the returned utterance's voice carries the volume used.
    """
    for _ in range(6):
        utterance = synthesize(text, voice)
        limited = np.mean(np.abs(utterance.audio.astype(np.int32)) >= _LIMITER_LEVEL)
        if limited <= _MAX_LIMITED:
            break
        voice = replace(voice, volume=max(10, int(voice.volume * 0.7)))
    return utterance


register_engine(
    SpeechEngine(
        name="espeak",
        voices=espeak_timbres,
        synthesize=espeak_unclipped,
        speaker_voice=espeak_speaker_voice,
        pinned={ESPEAK_DEFAULT_TIMBRE: "test"},
    )
)


# ------------------------------------------------------------------------------ neural voices
#: Speaking rates a neural speaker draws from (relative to the voice's own).
NEURAL_SPEED = (0.85, 1.2)


def _neural_speaker_voice(voice: Any, rng: np.random.Generator) -> Any:
    return replace(voice, speed=round(float(rng.uniform(*NEURAL_SPEED)), 3))


def _neural_voices() -> list[Any]:
    from animator.data.tts import neural_voices

    return neural_voices()


def _synthesize_neural(text: str, voice: Any) -> Utterance:
    from animator.data.tts import synthesize_neural

    return synthesize_neural(text, voice)


# Piper's and Kokoro's voices are natural speech (recordings of people behind them) and few, so
# all of them train, each as many speakers at different rates; generalisation to natural voices
# is measured on real recordings (docs/eval_speech.md), never on these. None when their packages
# are absent.
register_engine(
    SpeechEngine(
        name="neural",
        voices=_neural_voices,
        synthesize=_synthesize_neural,
        speaker_voice=_neural_speaker_voice,
        speakers_per_voice={"train": 12, "val": 0, "test": 0},
        held_out=0.0,
    )
)
