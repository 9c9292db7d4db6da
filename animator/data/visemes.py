"""Phonemes to mouth motion: eSpeak phonemes -> visemes -> coarticulated ARKit face-unit curves.

Phones in ARPAbet (CMUdict's 39 phones, what the forced aligner reports) reach the same viseme
classes through `ESPEAK_TO_ARPABET`: each ARPAbet phone stands for its canonical eSpeak mnemonic.

Each phoneme gets a viseme: a target in face-unit weights plus how strongly it holds the jaw and
the lips against its neighbours (its dominance, after Cohen and Massaro 1993). The weight of a unit
at time t is the dominance-weighted average of the targets of all phonemes, each dominance
decaying with the distance from the phoneme's centre; anticipation (before the centre) reaches
further than carry-over. So a /k/ before /u:/ is already rounded, and nothing jumps.

Bilabials (p, b, m) are then made exact: a closure envelope c(t) is 1 over the whole phoneme and
eases to 0 outside it (earlier before it than after it: lips close ahead of the sound). While it is
on, the lip-opening units fade, the jaw rises, and mouthClose follows jawOpen, which is the ARKit
way to keep the lips together while the jaw is dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from animator.data.espeak import PAUSE_SYMBOLS, Phoneme
from animator.data.face_units import FACE_UNIT_NAMES, unit_index, weights_from_targets
from avatar.easing import smoothstep
from avatar.errors import TalkingAvatarError

__all__ = [
    "Viseme",
    "VISEMES",
    "ArticulationStyle",
    "viseme_of",
    "viseme_of_arpabet",
    "arpabet_of_espeak",
    "espeak_of_arpabet",
    "ARPABET_PHONES",
    "ESPEAK_TO_ARPABET",
    "VOWEL_VISEMES",
    "mouth_curves",
    "closure_envelope",
]


@dataclass(frozen=True)
class Viseme:
    """A mouth target with its coarticulation strength.

    Attributes:
        name: class name ("bilabial", "open", ...).
        target: face-unit weights, keyed by unit or Left/Right pair name.
        jaw_dominance, lip_dominance: how strongly this phoneme holds jawOpen, and every other
            mouth unit, against its neighbours (Cohen-Massaro alpha).
    """

    name: str
    target: dict[str, float]
    jaw_dominance: float
    lip_dominance: float


VISEMES: dict[str, Viseme] = {
    v.name: v
    for v in (
        Viseme("rest", {}, 0.35, 0.35),
        Viseme("bilabial", {"jawOpen": 0.05, "mouthPress": 0.25}, 0.7, 1.0),
        Viseme(
            "labiodental",
            {"jawOpen": 0.06, "mouthRollLower": 0.55, "mouthUpperUp": 0.2},
            0.6,
            1.0,
        ),
        Viseme("dental", {"jawOpen": 0.1, "tongueOut": 0.3, "mouthUpperUp": 0.08}, 0.6, 0.8),
        Viseme(
            "sibilant",
            {"jawOpen": 0.04, "mouthStretch": 0.2, "mouthSmile": 0.1, "mouthUpperUp": 0.1},
            0.8,
            0.5,
        ),
        Viseme(
            "postalveolar",
            {"jawOpen": 0.05, "mouthFunnel": 0.4, "mouthPucker": 0.25, "mouthUpperUp": 0.1},
            0.6,
            0.9,
        ),
        Viseme("alveolar", {"jawOpen": 0.08}, 0.6, 0.2),
        Viseme("lateral", {"jawOpen": 0.12, "tongueOut": 0.06}, 0.5, 0.2),
        Viseme("velar", {"jawOpen": 0.12}, 0.5, 0.15),
        Viseme("glottal", {"jawOpen": 0.15}, 0.1, 0.05),
        Viseme("rhotic", {"jawOpen": 0.07, "mouthPucker": 0.35, "mouthFunnel": 0.2}, 0.4, 0.7),
        Viseme("labiovelar", {"jawOpen": 0.05, "mouthPucker": 0.8, "mouthFunnel": 0.25}, 0.5, 1.0),
        Viseme("palatal", {"jawOpen": 0.05, "mouthStretch": 0.3, "mouthSmile": 0.15}, 0.5, 0.6),
        Viseme("open", {"jawOpen": 0.4, "mouthLowerDown": 0.15, "mouthStretch": 0.05}, 1.0, 1.0),
        Viseme("mid", {"jawOpen": 0.22, "mouthStretch": 0.15, "mouthLowerDown": 0.08}, 1.0, 0.9),
        Viseme("schwa", {"jawOpen": 0.14, "mouthLowerDown": 0.05}, 0.7, 0.5),
        Viseme("spread", {"jawOpen": 0.1, "mouthStretch": 0.35, "mouthSmile": 0.25}, 1.0, 1.0),
        Viseme("rounded", {"jawOpen": 0.25, "mouthFunnel": 0.45, "mouthPucker": 0.2}, 1.0, 1.0),
        Viseme(
            "close-rounded", {"jawOpen": 0.08, "mouthPucker": 0.65, "mouthFunnel": 0.3}, 1.0, 1.0
        ),
    )
}

# eSpeak English mnemonics (en, en-us, en-gb-*). Longest prefix wins; unknown vowels fall back to
# "mid", unknown consonants to "alveolar".
_CONSONANTS: dict[str, str] = {
    "p": "bilabial",
    "b": "bilabial",
    "m": "bilabial",
    "f": "labiodental",
    "v": "labiodental",
    "T": "dental",
    "D": "dental",
    "s": "sibilant",
    "z": "sibilant",
    "S": "postalveolar",
    "Z": "postalveolar",
    "tS": "postalveolar",
    "dZ": "postalveolar",
    "t": "alveolar",
    "d": "alveolar",
    "n": "alveolar",
    "?": "alveolar",
    "l": "lateral",
    "k": "velar",
    "g": "velar",
    "N": "velar",
    "x": "velar",
    "h": "glottal",
    ";": "glottal",
    "r": "rhotic",
    "w": "labiovelar",
    "j": "palatal",
}
_VOWELS: dict[str, str] = {
    "a": "open",
    "aa": "open",
    "a#": "open",
    "A": "open",
    "V": "open",
    "0": "open",
    "aI": "open",
    "aU": "open",
    "e": "mid",
    "E": "mid",
    "eI": "mid",
    "3": "mid",
    "@": "schwa",
    "i": "spread",
    "I": "spread",
    "O": "rounded",
    "o": "rounded",
    "u": "close-rounded",
    "U": "close-rounded",
}

#: eSpeak NG English mnemonics (stress removed) -> ARPAbet phones. An r-coloured vowel or a
#: syllabic consonant stands for two phones. The first mnemonic listed with a single ARPAbet phone
#: is that phone's canonical eSpeak form (`espeak_of_arpabet`): AH is "@" (schwa, by far the
#: commoner use in CMUdict; STRUT "V" is the other), so ARPAbet needs no viseme table of its own.
ESPEAK_TO_ARPABET: dict[str, tuple[str, ...]] = {
    "_": ("SIL",),
    "p": ("P",),
    "b": ("B",),
    "m": ("M",),
    "f": ("F",),
    "v": ("V",),
    "T": ("TH",),
    "D": ("DH",),
    "s": ("S",),
    "z": ("Z",),
    "S": ("SH",),
    "Z": ("ZH",),
    "tS": ("CH",),
    "dZ": ("JH",),
    "t": ("T",),
    "d": ("D",),
    "n": ("N",),
    "l": ("L",),
    "k": ("K",),
    "g": ("G",),
    "N": ("NG",),
    "h": ("HH",),
    "r": ("R",),
    "w": ("W",),
    "j": ("Y",),
    "t#": ("T",),  # American flap, as CMUdict spells it
    "d#": ("D",),
    "?": ("T",),  # glottal stop for /t/
    "x": ("K",),
    ";": (),  # palatalizes the phoneme before it; no phone of its own
    "n-": ("AH", "N"),
    "l-": ("AH", "L"),
    "A:": ("AA",),
    "0": ("AA",),
    "A": ("AA",),
    "a": ("AE",),
    "aa": ("AE",),
    "@": ("AH",),
    "V": ("AH",),
    "a#": ("AH",),
    "O:": ("AO",),
    "O": ("AO",),
    "aU": ("AW",),
    "aI": ("AY",),
    "E": ("EH",),
    "e": ("EH",),
    "3:": ("ER",),
    "3": ("ER",),
    "eI": ("EY",),
    "I": ("IH",),
    "i:": ("IY",),
    "i": ("IY",),
    "oU": ("OW",),
    "o": ("OW",),
    "OI": ("OY",),
    "U": ("UH",),
    "u:": ("UW",),
    "u": ("UW",),
    "A@": ("AA", "R"),
    "0@": ("AA", "R"),
    "O@": ("AO", "R"),
    "o@": ("AO", "R"),
    "e@": ("EH", "R"),
    "i@": ("IH", "R"),
    "U@": ("UH", "R"),
    "aI@": ("AY", "ER"),
    "aU@": ("AW", "ER"),
    "@L": ("AH", "L"),
}
#: ARPAbet phone -> its canonical eSpeak mnemonic (the first single-phone entry above).
_ESPEAK_OF_ARPABET: dict[str, str] = {
    phones[0]: mnemonic
    for mnemonic, phones in reversed(ESPEAK_TO_ARPABET.items())  # reversed: the first one wins
    if len(phones) == 1
}
#: The phone set of CMUdict and PocketSphinx's en-us model, plus SIL.
ARPABET_PHONES = frozenset(_ESPEAK_OF_ARPABET)


def arpabet_of_espeak(symbol: str) -> tuple[str, ...] | None:
    """ARPAbet phones of an eSpeak mnemonic (stress removed), or None when it is unknown.

    The longest listed prefix wins, so eSpeak's variants ("@2", "I#", "aI3") map as their stem.
    Pauses map to ("SIL",).
    """
    if symbol in PAUSE_SYMBOLS:
        return ("SIL",)
    for length in (3, 2, 1):
        if symbol[:length] in ESPEAK_TO_ARPABET:
            return ESPEAK_TO_ARPABET[symbol[:length]]
    return None


def espeak_of_arpabet(symbol: str) -> str:
    """The canonical eSpeak mnemonic of an ARPAbet phone ("AA1" and "aa" are accepted as "AA")."""
    phone = symbol.rstrip("012").upper()
    if phone not in _ESPEAK_OF_ARPABET:
        raise TalkingAvatarError(
            f"{symbol!r} is not an ARPAbet phone; use one of {' '.join(sorted(ARPABET_PHONES))}"
        )
    return _ESPEAK_OF_ARPABET[phone]


def viseme_of_arpabet(symbol: str) -> str:
    """The viseme class of an ARPAbet phone (stress digits allowed): that of its eSpeak form.

    PocketSphinx's filler phones ("+NSN+", "+SPN+", ...) are noise, not speech: "rest".
    """
    if symbol.startswith("+"):
        return "rest"
    return viseme_of(espeak_of_arpabet(symbol))


#: Viseme classes the generator guarantees closed lips for (over the whole phoneme).
CLOSED_VISEMES = frozenset({"bilabial"})
#: Viseme classes of vowels (and diphthongs).
VOWEL_VISEMES = frozenset({"open", "mid", "schwa", "spread", "rounded", "close-rounded"})


def viseme_of(symbol: str) -> str:
    """The viseme class of an eSpeak phoneme mnemonic (stress marks already removed)."""
    if symbol in PAUSE_SYMBOLS or not symbol:
        return "rest"
    for table in (_CONSONANTS, _VOWELS):
        for length in (2, 1):
            if symbol[:length] in table:
                # "a#" (reduced a) keeps its own entry; "aI@" etc. fall to their two-letter stem.
                return table[symbol[:length]]
    return "mid" if symbol[0] in "aeiouAEIOUV03@" else "alveolar"


@dataclass(frozen=True)
class ArticulationStyle:
    """How one speaker moves their mouth.

    Attributes:
        amplitude: scales every mouth target (0.8 = reserved, 1.2 = energetic).
        jaw_ratio: > 1 opens with the jaw more and shapes with the lips less; < 1 the opposite.
        anticipation_s: extra reach of a phoneme's dominance before its centre, in seconds.
        carryover_s: reach after its centre, in seconds.
        rest: constant face-unit offsets of this speaker's resting mouth (e.g. a slight smile).
    """

    amplitude: float = 1.0
    jaw_ratio: float = 1.0
    anticipation_s: float = 0.06
    carryover_s: float = 0.04
    rest: dict[str, float] = field(default_factory=dict)


#: Units a bilabial closure fades out (they part the lips).
_LIP_OPENING_UNITS = (
    "mouthFunnel",
    "mouthPucker",
    "mouthLowerDown",
    "mouthUpperUp",
    "mouthRollLower",
    "mouthStretch",
    "mouthShrugUpper",
    "tongueOut",
)
#: mouthClose per unit of jawOpen that seals the lips. ARKit's rule is 1.0 for linear blend shapes;
#: on the bundled head jawOpen is a jaw rotation, and 1.0 leaves 0.8-2 mm at jawOpen 0.1-0.4
#: while 1.2 leaves 0.1-0.3 mm (measured with `lips.inner_lip_gap`).
CLOSE_GAIN = 1.2
_JAW = FACE_UNIT_NAMES.index("jawOpen")
_CLOSE = FACE_UNIT_NAMES.index("mouthClose")


def closure_envelope(
    phonemes: Sequence[Phoneme],
    times: np.ndarray,
    *,
    lead_s: float = 0.07,
    release_s: float = 0.05,
) -> np.ndarray:
    """1 during every bilabial, easing to 0 before (lead) and after (release) it.

    The ramps stay inside 40% of the neighbouring phonemes, so a short vowel between two
    bilabials still opens at its centre.

    Args:
        phonemes: contiguous phoneme spans.
        times: sample times in seconds `[T]`.

    Returns:
        The envelope `[T]` in [0, 1].
    """
    envelope = np.zeros_like(times, dtype=np.float64)  # [T]
    for i, ph in enumerate(phonemes):
        if viseme_of(ph.symbol) not in CLOSED_VISEMES:
            continue
        before = phonemes[i - 1].end - phonemes[i - 1].start if i > 0 else lead_s
        after = phonemes[i + 1].end - phonemes[i + 1].start if i + 1 < len(phonemes) else release_s
        lead = max(min(lead_s, 0.4 * before), 1e-3)
        release = max(min(release_s, 0.4 * after), 1e-3)
        rise = smoothstep((times - (ph.start - lead)) / lead)
        fall = smoothstep(((ph.end + release) - times) / release)
        envelope = np.maximum(envelope, np.minimum(rise, fall))
    return envelope


def mouth_curves(
    phonemes: Sequence[Phoneme],
    times: np.ndarray,
    style: ArticulationStyle | None = None,
    *,
    close_gain: float = CLOSE_GAIN,
) -> np.ndarray:
    """Coarticulated face-unit weights for a phoneme sequence.

    Args:
        phonemes: contiguous phoneme spans (seconds), e.g. `Utterance.phonemes`.
        times: sample times in seconds `[T]` (frame i at i / fps).
        style: the speaker's articulation.
        close_gain: mouthClose = close_gain * jawOpen during a closure (see `CLOSE_GAIN`).

    Returns:
        Face-unit weights `[T, U]` in `FACE_UNIT_NAMES` order, in [0, 1]. Only mouth, jaw and
        tongue units are set; the upper face is left at 0 for other layers.
    """
    style = style or ArticulationStyle()
    times = np.asarray(times, dtype=np.float64)  # [T]
    if not phonemes:
        return np.zeros((times.shape[0], len(FACE_UNIT_NAMES)))
    visemes = [VISEMES[viseme_of(p.symbol)] for p in phonemes]
    targets = np.stack([weights_from_targets(v.target) for v in visemes])  # [P, U]
    stress_gain = np.array([1.12 if p.stress == 2 else 1.0 for p in phonemes])  # [P]
    targets = targets * stress_gain[:, None]
    targets[:, _JAW] *= style.jaw_ratio
    lip_cols = np.ones(len(FACE_UNIT_NAMES), dtype=bool)
    lip_cols[_JAW] = False
    targets[:, lip_cols] /= np.sqrt(style.jaw_ratio)
    targets *= style.amplitude

    starts = np.array([p.start for p in phonemes])  # [P]
    ends = np.array([p.end for p in phonemes])  # [P]
    centres = 0.5 * (starts + ends)
    half = 0.5 * (ends - starts)
    pause = np.array([v.name == "rest" for v in visemes])
    reach_before = half + style.anticipation_s  # anticipation reaches further than carry-over
    reach_after = half + style.carryover_s
    dt = times[:, None] - centres[None, :]  # [T, P]
    reach = np.where(dt < 0, reach_before[None, :], reach_after[None, :])
    falloff = np.exp(-((np.abs(dt) / reach) ** 1.5))  # [T, P]
    alpha_jaw = np.array([v.jaw_dominance for v in visemes])  # [P]
    alpha_lip = np.array([v.lip_dominance for v in visemes])
    # A long pause holds the rest pose firmly; a short one barely interrupts.
    pause_gain = np.where(pause, np.clip(ends - starts, 0.05, 0.5) / 0.2, 1.0)
    alpha_jaw = alpha_jaw * pause_gain
    alpha_lip = alpha_lip * pause_gain
    dom_jaw = falloff * alpha_jaw[None, :] + 1e-9  # [T, P]
    dom_lip = falloff * alpha_lip[None, :] + 1e-9
    weights = (dom_lip @ targets) / dom_lip.sum(axis=1, keepdims=True)  # [T, U]
    weights[:, _JAW] = (dom_jaw @ targets[:, _JAW]) / dom_jaw.sum(axis=1)

    rest = weights_from_targets(style.rest)  # [U]
    weights = weights + rest[None, :]

    closure = closure_envelope(phonemes, times)  # [T]
    opening = [c for name in _LIP_OPENING_UNITS for c in unit_index(name)]
    weights[:, opening] *= (1.0 - closure)[:, None]
    weights[:, _JAW] *= 1.0 - 0.5 * closure
    press = unit_index("mouthPress")
    weights[:, press] = np.maximum(weights[:, press], 0.2 * closure[:, None])
    weights = np.clip(weights, 0.0, 1.0)
    weights[:, _CLOSE] = closure * np.minimum(close_gain * weights[:, _JAW], 1.0)
    return weights
