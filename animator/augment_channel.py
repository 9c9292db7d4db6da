"""The room and the channel of speech augmentation: reverberation, a phone line, lossy codecs.

Steps 2 and 4 of `animator.augment`'s chain, and the checks every step shares. Each keeps the
time axis: the impulse response starts with its direct path, the phone line's filters are zero
phase, and a codec's delay is removed by cross-correlation (`align_to`), so sample i of the
output belongs to sample i of the input. Audio is mono float32 `[N]` at `SAMPLE_RATE` unless a
`sample_rate` is given.
"""

from __future__ import annotations

import math
import subprocess

import numpy as np
from scipy import signal

from animator.audio import SAMPLE_RATE
from avatar.errors import TalkingAvatarError

#: ffmpeg encoder and container of each codec.
CODECS: dict[str, tuple[str, str]] = {
    "mp3": ("libmp3lame", "mp3"),
    "vorbis": ("libvorbis", "ogg"),
    "opus": ("libopus", "ogg"),
}
#: Guards divisions by an energy or a level that may be zero.
EPS = 1e-12


def mono_float32(audio: np.ndarray) -> np.ndarray:
    """`audio` as float32 `[N]`; a project error for anything but non-empty mono audio."""
    audio = np.asarray(audio)
    if audio.ndim != 1 or audio.size == 0:
        raise TalkingAvatarError(f"augmentation needs mono audio [N], got shape {audio.shape}")
    return audio.astype(np.float32, copy=False)


def fit_length(audio: np.ndarray, length: int) -> np.ndarray:
    """Trim or zero-pad the end to exactly `length` samples."""
    if audio.shape[0] >= length:
        return audio[:length]
    return np.pad(audio, (0, length - audio.shape[0]))


# ---------------------------------------------------------------------------------- room
def room_impulse_response(
    rt60_s: float,
    drr_db: float,
    rng: np.random.Generator,
    *,
    sample_rate: int = SAMPLE_RATE,
    gap_s: float = 0.002,
) -> np.ndarray:
    """A synthetic room impulse response `[L]`: the direct path (1 at sample 0), then after a
    `gap_s` gap a diffuse tail of Gaussian noise whose energy falls 60 dB in `rt60_s` seconds,
    scaled so that direct / tail energy is `drr_db`. L covers the decay to -80 dB."""
    if not 0.05 <= rt60_s <= 5.0:
        raise TalkingAvatarError(f"RT60 {rt60_s} s is out of range; use 0.05 to 5 s")
    length = int(rt60_s * 80.0 / 60.0 * sample_rate)
    t = np.arange(length) / sample_rate
    # energy exp(-t * 6 ln10 / rt60) falls 60 dB at rt60; amplitude decays at half that rate
    tail = rng.standard_normal(length) * np.exp(-3.0 * math.log(10.0) * t / rt60_s)
    tail[: max(1, int(gap_s * sample_rate))] = 0.0
    tail *= math.sqrt(10 ** (-drr_db / 10) / (np.sum(tail**2) + EPS))
    tail[0] = 1.0
    return tail.astype(np.float32)


def reverberate(audio: np.ndarray, impulse_response: np.ndarray) -> np.ndarray:
    """Convolve with an impulse response whose direct path is at sample 0; keep `[N]` and the
    input's RMS (a reverberant room is not a louder one)."""
    audio = mono_float32(audio)
    wet = signal.fftconvolve(audio, impulse_response)[: audio.shape[0]]
    rms_in = np.sqrt(np.mean(audio.astype(np.float64) ** 2))
    rms_out = np.sqrt(np.mean(wet.astype(np.float64) ** 2))
    return (wet * (rms_in / (rms_out + EPS))).astype(np.float32)


# ---------------------------------------------------------------------------------- channel
def telephone(audio: np.ndarray, *, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """A narrow-band phone line: 300-3400 Hz band-pass (zero phase), 8 kHz, 8-bit mu-law, and
    back to `sample_rate`. Returns `[N]` float32."""
    audio = mono_float32(audio)
    if sample_rate % 8000:
        raise TalkingAvatarError(f"telephone needs a multiple of 8 kHz, got {sample_rate} Hz")
    sos = signal.butter(6, [300.0, 3400.0], btype="bandpass", fs=sample_rate, output="sos")
    band = signal.sosfiltfilt(sos, audio)
    narrow = signal.resample_poly(band, 1, sample_rate // 8000)  # [N / k] at 8 kHz
    mu = 255.0
    # G.711-style: sign plus 7 bits of log magnitude, so silence stays exactly silent
    magnitude = np.log1p(mu * np.minimum(np.abs(narrow), 1.0)) / np.log1p(mu)
    magnitude = np.round(magnitude * 127.0) / 127.0
    expanded = np.sign(narrow) * np.expm1(magnitude * np.log1p(mu)) / mu
    wide = signal.resample_poly(expanded, sample_rate // 8000, 1)
    return fit_length(wide.astype(np.float32), audio.shape[0])


def align_to(reference: np.ndarray, delayed: np.ndarray, *, max_lag: int = 4000) -> np.ndarray:
    """`delayed` shifted so that it lines up with `reference` (the lag of the cross-correlation
    peak within +-max_lag samples), cut or padded to the reference's length."""
    reference, delayed = mono_float32(reference), mono_float32(delayed)
    size = 1 << int(np.ceil(np.log2(reference.shape[0] + delayed.shape[0])))
    corr = np.fft.irfft(
        np.fft.rfft(delayed, size) * np.conj(np.fft.rfft(reference, size)), size
    )  # corr[k]: delayed[n + k] against reference[n]
    lags = np.concatenate([np.arange(0, max_lag + 1), np.arange(-max_lag, 0)])
    lag = int(lags[np.argmax(corr[lags])])
    if lag >= 0:
        shifted = delayed[lag:]
    else:
        shifted = np.concatenate([np.zeros(-lag, np.float32), delayed])
    return fit_length(shifted, reference.shape[0])


def _ffmpeg() -> str:
    try:
        import imageio_ffmpeg
    except ImportError as err:  # pragma: no cover - it is a dependency
        raise TalkingAvatarError(
            "imageio-ffmpeg is not installed; install it with `pip install imageio-ffmpeg`"
        ) from err
    return imageio_ffmpeg.get_ffmpeg_exe()


def codec_round_trip(
    audio: np.ndarray, codec: str, kbps: int, *, sample_rate: int = SAMPLE_RATE
) -> np.ndarray:
    """Encode with a lossy codec (`CODECS`) at `kbps` and decode again, delay removed.

    Encoders add delay (LAME's mp3 leads by 1105 samples when the file has no gapless header,
    as through a pipe); `align_to` removes whatever the cross-correlation shows, so timings
    hold to the sample. Returns `[N]` float32.
    """
    audio = mono_float32(audio)
    if codec not in CODECS:
        raise TalkingAvatarError(f"unknown codec {codec!r}; use {', '.join(CODECS)}")
    encoder, container = CODECS[codec]
    exe = _ffmpeg()
    quiet = [exe, "-hide_banner", "-loglevel", "error", "-nostdin"]
    raw = ["-f", "f32le", "-ar", str(sample_rate), "-ac", "1"]
    try:
        encoded = subprocess.run(
            [*quiet, *raw, "-i", "pipe:0", "-c:a", encoder, "-b:a", f"{kbps}k"]
            + ["-f", container, "pipe:1"],
            input=np.clip(audio, -1, 1).tobytes(),
            capture_output=True,
            check=True,
        ).stdout
        decoded = subprocess.run(
            [*quiet, "-i", "pipe:0", *raw, "pipe:1"],
            input=encoded,
            capture_output=True,
            check=True,
        ).stdout
    except subprocess.CalledProcessError as err:
        message = err.stderr.decode(errors="replace").strip().splitlines()
        raise TalkingAvatarError(
            f"ffmpeg could not round-trip {codec} at {kbps} kbps "
            f"({message[-1] if message else 'no message'}); try another bitrate"
        ) from None
    return align_to(audio, np.frombuffer(decoded, dtype=np.float32).copy())
