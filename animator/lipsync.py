"""Lip-sync measures against phone timings: closures, their specificity, vowel openings, lag.

These are the numbers that say whether a face speaks a recording: they need only the audio's
phone labels (from a forced aligner on real speech, or a synthesizer's own events), not ground
truth motion, so they work on speech nobody here made. Phones may be written in ARPAbet (CMU,
what pocketsphinx aligns; stress digits are ignored) or in eSpeak NG's mnemonics (the stand-in
data). Every measure is on the inner-lip gap of the animated head, in millimetres, with head
motion removed (`animator.data.lips.inner_lip_gap`).

- closure ratio: mean gap over the frames inside p/b/m over the mean gap at the centres of open
  vowels (the definition of `talking-avatar eval`; 0 = the lips shut fully on every bilabial).
- specificity: mean over p/b/m of the smallest gap within the phone, over the same for t/d/k/g/n.
  A mouth that shuts on every quiet consonant (a loudness envelope) scores about 1; a mouth that
  shuts on bilabials only scores near 0.
- open-vowel gap: mean gap at the centres of open vowels (mm).
- lag: the shift (frames) of the best normalised cross-correlation between the gap and a phone
  opening target (0 for silence and bilabials, up to 1 for open vowels); positive means the
  mouth moves after the sound. And that correlation.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from animator.data.sample import TimedLabel

__all__ = [
    "PhoneClass",
    "detect_alphabet",
    "phone_class",
    "opening_target",
    "LipSyncScores",
    "lip_sync_scores",
    "best_lag",
]

# Explicit sets, so that the measures never move when the training data's visemes are retuned.
_ARPABET = {
    "bilabial": {"P", "B", "M"},
    "control": {"T", "D", "K", "G", "N"},
    "open": {"AA", "AE", "AO", "AW", "AY"},
    "mid": {"AH", "EH", "EY", "OW", "OY", "ER"},
    "close": {"IY", "IH", "UW", "UH"},
    "labiodental": {"F", "V"},
    "silence": {"SIL", "SP", "SPN", "NSN", "+SPN+", "+NSN+", "<SIL>", "</S>", "<S>"},
}
_ESPEAK = {
    "bilabial": {"p", "b", "m"},
    "control": {"t", "d", "k", "g", "n"},
    "open": {"a", "a#", "aa", "A:", "A@", "aI", "aU", "0", "V", "O:", "e@", "E", "a:"},
    "mid": {"@", "3", "3:", "@L", "e", "eI", "o@", "oU", "OI", "O@", "@U", "e:"},
    "close": {"i", "i:", "I", "I2", "u", "u:", "U", "i@", "U@", "y"},
    "labiodental": {"f", "v"},
    "silence": {"_", "_:", "_!", "_|", "||", "|", ""},
}
#: How far each class opens the mouth, for the lag's target (a coarse articulatory scale).
_OPENING = {
    "silence": 0.0,
    "bilabial": 0.0,
    "labiodental": 0.15,
    "consonant": 0.3,
    "control": 0.3,
    "close": 0.5,
    "mid": 0.75,
    "open": 1.0,
}

PhoneClass = str


def detect_alphabet(symbols: Iterable[str]) -> str:
    """ "arpabet" when every phone is an upper-case ARPAbet symbol, else "espeak" (the two
    share letters with other meanings: eSpeak's D is ARPAbet's DH)."""
    for symbol in symbols:
        s = symbol.strip()
        if s and s.upper() not in _ARPABET["silence"] and not s.rstrip("012").isupper():
            return "espeak"
    return "arpabet"


def phone_class(symbol: str, alphabet: str = "arpabet") -> PhoneClass:
    """The measure class of a phone: bilabial, control (t/d/k/g/n), open, mid, close,
    labiodental, silence or consonant (any other), in "arpabet" (stress digits ignored) or
    "espeak" mnemonics (stress marks ignored)."""
    if alphabet == "arpabet":
        key, table = symbol.strip().rstrip("012").upper(), _ARPABET
    elif alphabet == "espeak":
        key, table = symbol.strip().lstrip("',%="), _ESPEAK
    else:
        raise ValueError(f"unknown phone alphabet {alphabet!r}")
    for name in ("silence", "bilabial", "control", "labiodental", "open", "mid", "close"):
        if key in table[name]:
            return name
    return "consonant"


def _frames_in(label: TimedLabel, fps: float, num: int) -> np.ndarray:
    """Frames whose time i / fps lies in [start, end); the nearest frame for a very short span."""
    lo, hi = int(math.ceil(label.start * fps - 1e-9)), int(math.ceil(label.end * fps - 1e-9)) - 1
    if hi < lo:
        lo = hi = int(round(0.5 * (label.start + label.end) * fps))
    lo, hi = min(max(lo, 0), num - 1), min(max(hi, 0), num - 1)  # spans past the end: last frame
    return np.arange(lo, max(lo, hi) + 1)


def opening_target(timings: Sequence[TimedLabel], fps: float, num: int) -> np.ndarray:
    """Per-frame opening target `[num]` in [0, 1] from the phones (silence where unlabelled)."""
    alphabet = detect_alphabet(t.label for t in timings)
    target = np.zeros(num)
    for t in timings:
        target[_frames_in(t, fps, num)] = _OPENING[phone_class(t.label, alphabet)]
    return target


def best_lag(gap: np.ndarray, target: np.ndarray, *, max_lag: int = 8) -> tuple[int, float]:
    """(lag in frames, correlation) maximising the normalised cross-correlation of the gap at
    t with the target at t - lag. Positive lag: the mouth follows the sound late."""
    best = (0, -math.inf)
    for lag in range(-max_lag, max_lag + 1):
        if lag >= 0:
            a, b = gap[lag:], target[: len(target) - lag]
        else:
            a, b = gap[:lag], target[-lag:]
        if len(a) < 3 or a.std() == 0 or b.std() == 0:
            continue
        r = float(np.corrcoef(a, b)[0, 1])
        if r > best[1]:
            best = (lag, r)
    return best if math.isfinite(best[1]) else (0, float("nan"))


@dataclass(frozen=True)
class LipSyncScores:
    """The measures of one clip (see the module docstring); nan where a class is absent."""

    closure_ratio: float
    specificity: float
    open_vowel_mm: float
    lag_frames: int
    correlation: float
    bilabials: int
    open_vowels: int

    def as_dict(self) -> dict[str, float]:
        return {
            "closure": self.closure_ratio,
            "specificity": self.specificity,
            "open_mm": self.open_vowel_mm,
            "lag": float(self.lag_frames),
            "corr": self.correlation,
        }


def lip_sync_scores(gap_mm: np.ndarray, timings: Sequence[TimedLabel], fps: float) -> LipSyncScores:
    """Measures of one clip from its inner-lip gap `[T]` (mm) and its phone spans (seconds)."""
    num = len(gap_mm)
    gap = np.asarray(gap_mm, dtype=np.float64)
    alphabet = detect_alphabet(t.label for t in timings)
    by_class: dict[str, list[TimedLabel]] = {}
    for t in timings:
        by_class.setdefault(phone_class(t.label, alphabet), []).append(t)
    bilabial_frames = [
        f for t in by_class.get("bilabial", []) for f in _frames_in(t, fps, num).tolist()
    ]
    vowel_centres = [
        min(num - 1, int(round(0.5 * (t.start + t.end) * fps)))
        for t in by_class.get("open", [])
        if t.end - t.start >= 0.04
    ]
    open_mm = float(gap[vowel_centres].mean()) if vowel_centres else float("nan")
    closure = (
        float(np.clip(gap[bilabial_frames], 0, None).mean() / max(open_mm, 1e-6))
        if bilabial_frames and vowel_centres
        else float("nan")
    )

    def minima(name: str) -> list[float]:
        return [max(0.0, float(gap[_frames_in(t, fps, num)].min())) for t in by_class.get(name, [])]

    bil_min, ctl_min = minima("bilabial"), minima("control")
    specificity = (
        float(np.mean(bil_min) / max(np.mean(ctl_min), 1e-6))
        if bil_min and ctl_min
        else float("nan")
    )
    lag, corr = best_lag(gap, opening_target(timings, fps, num))
    return LipSyncScores(
        closure_ratio=closure,
        specificity=specificity,
        open_vowel_mm=open_mm,
        lag_frames=lag,
        correlation=corr,
        bilabials=len(bil_min),
        open_vowels=len(vowel_centres),
    )
