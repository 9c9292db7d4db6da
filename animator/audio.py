"""Speech audio in: any common file (wav, flac, mp3, ogg) or array, as 16 kHz mono float32."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avatar.errors import TalkingAvatarError

SAMPLE_RATE = 16_000
#: RMS below this (about -60 dBFS) counts as silence: nothing to lip-sync.
SILENCE_RMS = 1e-3


@dataclass
class Audio:
    """Mono speech at 16 kHz.

    Attributes:
        samples: `[N]` float32 in [-1, 1] at `SAMPLE_RATE`.
        source_rate: the sample rate of the file it came from (Hz).
        path: the file, when it came from one.
    """

    samples: np.ndarray  # [N]
    source_rate: int = SAMPLE_RATE
    path: Path | None = None

    @property
    def duration(self) -> float:
        """Seconds."""
        return len(self.samples) / SAMPLE_RATE

    def num_frames(self, fps: float) -> int:
        """Frames of a clip at fps that spans the audio (frame i shows time i / fps)."""
        return max(1, int(round(self.duration * fps)))

    @property
    def is_silent(self) -> bool:
        """True when there is no speech to follow (RMS below about -60 dBFS)."""
        return float(np.sqrt(np.mean(self.samples.astype(np.float64) ** 2))) < SILENCE_RMS


def load_audio(source: str | Path | np.ndarray | Audio, sample_rate: int | None = None) -> Audio:
    """Load speech as 16 kHz mono float32.

    Args:
        source: a path to a wav/flac/mp3/ogg file, an `Audio`, or samples `[N]` / `[C, N]`
            (then `sample_rate` is required).
        sample_rate: the rate of array input, in Hz.

    Raises:
        TalkingAvatarError: missing, unreadable or empty audio, or a bad sample rate.
    """
    if isinstance(source, Audio):
        return source
    if isinstance(source, np.ndarray):
        if sample_rate is None or sample_rate <= 0:
            raise TalkingAvatarError("audio samples need a positive sample_rate in Hz")
        samples = pcm_to_float(source)
        if samples.ndim == 2:
            samples = samples.mean(axis=0)
        return _finish(_resample(samples, sample_rate), sample_rate, None, "the audio array")
    path = Path(source)
    if not path.exists():
        raise TalkingAvatarError(f"audio file {path} does not exist; check the path")
    if path.is_dir():
        raise TalkingAvatarError(f"{path} is a folder; pass an audio file (wav, flac, mp3, ogg)")
    if path.stat().st_size == 0:
        raise TalkingAvatarError(f"audio file {path} is empty; pass a recording with speech")
    import librosa  # heavy import, only when audio is read

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # librosa's audioread fallback warns; we report errors
            native_rate = int(librosa.get_samplerate(str(path)))
            samples, _ = librosa.load(str(path), sr=SAMPLE_RATE, mono=True)
    except Exception as err:  # noqa: BLE001 - soundfile/audioread raise many types for bad files
        raise TalkingAvatarError(
            f"cannot read audio file {path} ({type(err).__name__}); use wav, flac, mp3 or ogg"
        ) from None
    return _finish(samples.astype(np.float32), native_rate, path, f"audio file {path}")


def pcm_to_float(samples: np.ndarray) -> np.ndarray:
    """Samples as float32; integer PCM (int16 from eSpeak or a pickle) scaled to [-1, 1)."""
    samples = np.asarray(samples)
    if np.issubdtype(samples.dtype, np.integer):
        return (samples / (float(np.iinfo(samples.dtype).max) + 1.0)).astype(np.float32)
    return samples.astype(np.float32)


def _resample(samples: np.ndarray, rate: int) -> np.ndarray:
    if rate == SAMPLE_RATE:
        return samples
    import librosa

    return librosa.resample(samples, orig_sr=rate, target_sr=SAMPLE_RATE).astype(np.float32)


def _finish(samples: np.ndarray, rate: int, path: Path | None, what: str) -> Audio:
    if samples.size == 0:
        raise TalkingAvatarError(f"{what} holds no audio samples; pass a recording with speech")
    if not np.isfinite(samples).all():
        raise TalkingAvatarError(f"{what} contains NaN or infinite samples")
    return Audio(samples=np.clip(samples, -1.0, 1.0), source_rate=rate, path=path)
