"""Emotion mixes and timed tracks: what a person asks for, checked and turned into per-frame weights.

A mix maps emotion labels to intensities in [0, 1] (several at once are allowed). A track is a
list of keys `{"t": seconds, "mix": {...}}` in increasing time; between keys each intensity eases
with a smoothstep, so the track passes through every key exactly, with zero slope there, and
holds the first and last keys outside their range.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avatar.atomic import atomic_write_text
from avatar.errors import TalkingAvatarError

EMOTIONS = ("happy", "sad", "angry", "surprised", "fearful", "disgusted", "contempt")
#: "neutral" is accepted in a mix and means no emotion.
NEUTRAL = "neutral"


def check_mix(mix: Mapping[str, float], *, where: str = "emotion mix") -> dict[str, float]:
    """A validated copy of a mix: known labels, intensities in [0, 1]; neutral dropped."""
    out: dict[str, float] = {}
    if not isinstance(mix, Mapping):
        raise TalkingAvatarError(
            f"{where} must map emotion labels to intensities, like {{'happy': 0.7}}"
        )
    for label, value in mix.items():
        name = str(label).strip().lower()
        if name != NEUTRAL and name not in EMOTIONS:
            raise TalkingAvatarError(
                f"{where}: unknown emotion '{label}'; choose from {', '.join((NEUTRAL, *EMOTIONS))}"
            )
        try:
            x = float(value)
        except (TypeError, ValueError):
            raise TalkingAvatarError(
                f"{where}: intensity of '{label}' must be a number, got {value!r}"
            ) from None
        if not math.isfinite(x) or x < 0.0 or x > 1.0:
            raise TalkingAvatarError(
                f"{where}: intensity of '{label}' is {value}; it must be in [0, 1]"
            )
        if name != NEUTRAL:
            out[name] = out.get(name, 0.0) + x
            if out[name] > 1.0:
                raise TalkingAvatarError(
                    f"{where}: '{name}' is given more than once, summing past 1"
                )
    return out


def parse_mix_args(items: Sequence[str]) -> dict[str, float]:
    """`["happy=0.8", "sad=0.2"]` (the CLI's repeated --emotion) -> a checked mix."""
    mix: dict[str, float] = {}
    for item in items:
        label, sep, value = item.partition("=")
        if not sep:
            raise TalkingAvatarError(f"--emotion {item!r}: write LABEL=INTENSITY, e.g. happy=0.8")
        if label.strip().lower() in mix:
            raise TalkingAvatarError(f"--emotion {label} is given twice; give each emotion once")
        mix[label.strip().lower()] = value  # type: ignore[assignment]
    return check_mix(mix, where="--emotion")


@dataclass(frozen=True)
class EmotionKey:
    """One key of a track: at time t (seconds) the mix is exactly this."""

    t: float
    mix: dict[str, float]


@dataclass(frozen=True)
class EmotionTrack:
    """Timed emotion mixes, eased smoothly between keys."""

    keys: tuple[EmotionKey, ...]

    @classmethod
    def constant(cls, mix: Mapping[str, float]) -> EmotionTrack:
        return cls((EmotionKey(0.0, check_mix(mix)),))

    @classmethod
    def from_list(cls, keys: Sequence, *, source: str = "track") -> EmotionTrack:
        """From `[{"t": 0.0, "mix": {"happy": 0.7}}, ...]`; errors name the key and the field."""
        if not isinstance(keys, Sequence) or isinstance(keys, (str, bytes)) or not keys:
            raise TalkingAvatarError(
                f'{source}: a track is a non-empty list of {{"t": ..., "mix": {{...}}}} keys'
            )
        out: list[EmotionKey] = []
        for i, key in enumerate(keys):
            where = f"{source}: key {i}"
            if not isinstance(key, Mapping):
                raise TalkingAvatarError(f'{where} must be an object with fields "t" and "mix"')
            unknown = set(key) - {"t", "mix"}
            if unknown:
                raise TalkingAvatarError(
                    f'{where} has unknown field(s) {", ".join(sorted(unknown))}; use "t" and "mix"'
                )
            if "t" not in key:
                raise TalkingAvatarError(f'{where} lacks field "t" (seconds)')
            if "mix" not in key:
                raise TalkingAvatarError(f'{where} lacks field "mix" (e.g. {{"happy": 0.7}})')
            try:
                t = float(key["t"])
            except (TypeError, ValueError):
                raise TalkingAvatarError(
                    f'{where}: field "t" must be a number of seconds, got {key["t"]!r}'
                ) from None
            if not math.isfinite(t) or t < 0:
                raise TalkingAvatarError(
                    f'{where}: field "t" must be >= 0 seconds, got {key["t"]!r}'
                )
            if out and t <= out[-1].t:
                raise TalkingAvatarError(
                    f'{where}: field "t" = {t} is not after key {i - 1} (t = {out[-1].t}); keys must be in increasing time'
                )
            out.append(EmotionKey(t, check_mix(key["mix"], where=f'{where}, field "mix"')))
        return cls(tuple(out))

    @classmethod
    def load(cls, path: str | Path) -> EmotionTrack:
        """Read a JSON track file."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise TalkingAvatarError(f"track file {path} does not exist; check the path") from None
        except (OSError, UnicodeDecodeError) as err:
            raise TalkingAvatarError(f"cannot read track file {path} ({err})") from None
        except json.JSONDecodeError as err:
            raise TalkingAvatarError(
                f"track file {path} is not valid JSON (line {err.lineno}: {err.msg})"
            ) from None
        except RecursionError:
            raise TalkingAvatarError(
                f"track file {path} is nested too deeply to be a track; a track is a list of "
                '{"t": seconds, "mix": {"happy": 0.7}} keys'
            ) from None
        return cls.from_list(data, source=str(path))

    def to_list(self) -> list[dict]:
        return [{"t": k.t, "mix": dict(k.mix)} for k in self.keys]

    def save(self, path: str | Path) -> None:
        atomic_write_text(path, json.dumps(self.to_list(), indent=1) + "\n", what="emotion track")

    def intensities(self, times: np.ndarray) -> np.ndarray:
        """Per-time intensities `[T, 7]` in EMOTIONS order for times `[T]` (seconds)."""
        times = np.asarray(times, dtype=np.float64)
        table = np.array([[k.mix.get(e, 0.0) for e in EMOTIONS] for k in self.keys])  # [K, 7]
        key_t = np.array([k.t for k in self.keys])
        if len(self.keys) == 1:
            return np.repeat(table, len(times), axis=0)
        seg = np.clip(np.searchsorted(key_t, times, side="right") - 1, 0, len(key_t) - 2)
        u = np.clip((times - key_t[seg]) / (key_t[seg + 1] - key_t[seg]), 0.0, 1.0)
        ease = (u * u * (3.0 - 2.0 * u))[:, None]  # smoothstep: exact at keys, zero slope there
        return table[seg] * (1.0 - ease) + table[seg + 1] * ease

    def frames(self, num_frames: int, fps: float, *, start: int = 0) -> np.ndarray:
        """Intensities `[num_frames, 7]` of frames start, start + 1, ... (frame i shows i / fps)."""
        return self.intensities(np.arange(start, start + num_frames) / fps)


def as_track(
    emotion: Mapping[str, float] | EmotionTrack | Sequence | str | Path | None,
) -> EmotionTrack:
    """A track from a mix, a track, a list of keys, or a JSON file path (None: neutral)."""
    if emotion is None:
        return EmotionTrack.constant({})
    if isinstance(emotion, EmotionTrack):
        return emotion
    if isinstance(emotion, Mapping):
        return EmotionTrack.constant(emotion)
    if isinstance(emotion, (str, Path)):
        return EmotionTrack.load(emotion)
    return EmotionTrack.from_list(emotion)
