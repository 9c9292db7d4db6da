"""Speech augmentation for training: other voices, rooms, noises and channels from one clean clip.

Every function takes mono float32 audio `[N]` at `SAMPLE_RATE` (16 kHz, what the speech model
hears) and, where it draws anything, a `np.random.Generator`, so a rendition is a function of its
seed. `augment` draws a random chain from an `AugmentConfig`:

1. the speaker: speed (changes the duration; the factor comes back so the caller can time-warp
   the motion target the same way), pitch (F0 only, duration and formants kept), vocal-tract
   length (formants only, F0 and duration kept);
2. the room: reverberation by a synthetic impulse response (exponentially decaying noise with a
   requested RT60 and direct-to-reverberant ratio);
3. the background: white, pink or brown noise, or babble (a mix of other utterances), at an SNR
   measured on the speech's active part;
4. the channel: telephone band (300-3400 Hz, 8 kHz, mu-law) or a lossy codec round trip (mp3,
   ogg/vorbis, ogg/opus at low bitrates, through the ffmpeg binary of imageio-ffmpeg);
5. the level: gain and clipping.

Every step except speed keeps the time axis: sample i of the output belongs to sample i of the
input (filters are zero-phase, the impulse response starts with its direct path, codec delay is
removed by cross-correlation), so phoneme timings and motion targets stay valid.

The room and channel steps (2 and 4) live in `animator.augment_channel`; this module
re-exports them, so `animator.augment` stays the whole augmentation API.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np
from scipy import signal

from animator.audio import SAMPLE_RATE
from animator.augment_channel import (
    CODECS,
    EPS,
    align_to,
    codec_round_trip,
    fit_length,
    mono_float32,
    reverberate,
    room_impulse_response,
    telephone,
)
from avatar.errors import TalkingAvatarError

__all__ = [
    "AugmentConfig",
    "Augmented",
    "augment",
    "change_speed",
    "shift_pitch",
    "warp_vocal_tract",
    "time_stretch",
    "coloured_noise",
    "babble",
    "active_mask",
    "add_at_snr",
    "room_impulse_response",
    "reverberate",
    "telephone",
    "codec_round_trip",
    "align_to",
    "apply_gain",
    "clip",
    "NOISE_COLOURS",
    "CODECS",
]

#: Spectral slope of each noise colour: power falls as 1 / f**slope.
NOISE_COLOURS: dict[str, float] = {"white": 0.0, "pink": 1.0, "brown": 2.0}


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and ranges of the random chain (every default is written here only).

    Each `p_*` is the probability that a step is applied; ranges are (low, high), drawn
    uniformly. Noise and babble exclude each other, as do telephone and codec (one channel).
    """

    p_speed: float = 0.4
    speed: tuple[float, float] = (0.85, 1.15)
    p_pitch: float = 0.4
    semitones: tuple[float, float] = (-4.0, 4.0)
    p_vocal_tract: float = 0.4
    vocal_tract: tuple[float, float] = (0.85, 1.15)
    p_reverb: float = 0.35
    rt60_s: tuple[float, float] = (0.15, 0.9)
    drr_db: tuple[float, float] = (-3.0, 12.0)
    p_noise: float = 0.45
    noise_snr_db: tuple[float, float] = (5.0, 30.0)
    #: share of noise draws that are babble (when babble sources are given)
    babble_share: float = 0.35
    babble_talkers: tuple[int, int] = (3, 7)
    p_telephone: float = 0.08
    p_codec: float = 0.12
    codec_kbps: dict[str, tuple[int, ...]] = field(
        default_factory=lambda: {"mp3": (16, 24, 32), "vorbis": (16, 24), "opus": (8, 12, 16)}
    )
    p_gain: float = 0.5
    gain_db: tuple[float, float] = (-20.0, 10.0)
    p_clip: float = 0.08
    #: clipping level as a fraction of the clip's peak
    clip_fraction: tuple[float, float] = (0.3, 0.8)


@dataclass
class Augmented:
    """One rendition.

    Attributes:
        audio: `[M]` float32 at `SAMPLE_RATE`, in [-1, 1]; M = round(N / speed).
        speed: how much faster than the input it plays (1.0: same timing). Output time t shows
            input time t * speed.
        steps: what was applied, in order, e.g. ("speed 1.08", "noise pink 12.3 dB").
    """

    audio: np.ndarray
    speed: float = 1.0
    steps: tuple[str, ...] = ()


# ---------------------------------------------------------------------------------- speaker
def change_speed(audio: np.ndarray, factor: float) -> tuple[np.ndarray, float]:
    """Play `audio` `factor` times faster by resampling (tempo, pitch and formants all change).

    Returns the output `[round(N / factor)]` and the factor actually used (rounded to 0.01,
    which is what the motion must be warped by).
    """
    audio = mono_float32(audio)
    if not 0.25 <= factor <= 4.0:
        raise TalkingAvatarError(f"speed factor {factor} is out of range; use 0.25 to 4")
    ratio = Fraction(int(round(factor * 100)), 100)
    out = signal.resample_poly(audio, ratio.denominator, ratio.numerator)  # [~N / factor]
    return fit_length(out, int(round(audio.shape[0] / float(ratio)))).astype(np.float32), float(
        ratio
    )


def time_stretch(
    audio: np.ndarray, stretch: float, *, frame: int = 512, tolerance: int = 160
) -> np.ndarray:
    """Make `audio` `stretch` times longer without changing its pitch (WSOLA).

    Overlap-add of Hann frames (hop frame / 2); each frame is taken near its nominal input time
    (within `tolerance` samples), where it best continues the previous one, so periods line up
    and no phase is smeared. Output sample j shows input time j / stretch to within
    `tolerance` samples; bursts (p, t, k releases) stay sharp.

    Returns `[round(N * stretch)]` float32.
    """
    audio = mono_float32(audio)
    hop = frame // 2
    n_out = int(round(audio.shape[0] * stretch))
    window = signal.windows.hann(frame, sym=False).astype(np.float32)  # sums to 1 at hop W/2
    pad = frame + tolerance
    padded = np.pad(audio, (pad, pad + int(np.ceil(hop / stretch)) + frame))
    num_frames = n_out // hop + 2
    out = np.zeros((num_frames + 1) * hop + frame, dtype=np.float32)
    previous = None
    for k in range(num_frames):
        # frame k is centred on output sample k * hop, nominally input sample k * hop / stretch
        nominal = pad + int(round(k * hop / stretch)) - hop
        if previous is None:
            start = nominal
        else:
            template = padded[previous + hop : previous + hop + frame]
            region = padded[nominal - tolerance : nominal + tolerance + frame]
            score = np.correlate(region, template, mode="valid")  # [2 * tolerance + 1]
            start = nominal - tolerance + int(np.argmax(score))
        out[k * hop : k * hop + frame] += padded[start : start + frame] * window
        previous = start
    return out[hop : hop + n_out]


def _stft(audio: np.ndarray, n_fft: int) -> np.ndarray:
    _, _, spec = signal.stft(audio, nperseg=n_fft, noverlap=3 * n_fft // 4, window="hann")
    return spec  # [F, T]


def _istft(spec: np.ndarray, n_fft: int, length: int) -> np.ndarray:
    _, audio = signal.istft(spec, nperseg=n_fft, noverlap=3 * n_fft // 4, window="hann")
    return fit_length(audio.astype(np.float32), length)


def _envelope(log_mag: np.ndarray, lifter: int) -> np.ndarray:
    """Cepstrally smoothed log spectrum `[F, T]`: the vocal tract, without the harmonics."""
    cepstrum = np.fft.irfft(log_mag, axis=0)  # [n_fft, T]
    keep = np.zeros(cepstrum.shape[0])
    keep[:lifter] = 1.0
    keep[-lifter + 1 :] = 1.0
    return np.fft.rfft(cepstrum * keep[:, None], axis=0).real


def warp_vocal_tract(
    audio: np.ndarray,
    alpha: float,
    *,
    sample_rate: int = SAMPLE_RATE,
    n_fft: int = 1024,
    lifter: int = 40,
) -> np.ndarray:
    """Vocal-tract-length perturbation: move the spectral envelope by `alpha`, keep F0 and time.

    The log-magnitude envelope (cepstrum liftered to its first `lifter` quefrencies, which stays
    below the pitch period for F0 < sample_rate / lifter = 400 Hz) is read at frequency
    warp(f), piecewise linear: f / alpha up to a knee, then straight to Nyquist (so nothing
    leaves the band). Each STFT bin is scaled by new envelope / old envelope; phases and
    harmonic positions stay. alpha > 1 raises the formants (a shorter vocal tract).

    Returns `[N]` float32.
    """
    audio = mono_float32(audio)
    if not 0.5 <= alpha <= 2.0:
        raise TalkingAvatarError(f"vocal-tract warp {alpha} is out of range; use 0.5 to 2")
    spec = _stft(audio, n_fft)  # [F, T]
    log_mag = np.log(np.abs(spec) + 1e-9)
    env = _envelope(log_mag, lifter)  # [F, T]
    nyquist = sample_rate / 2
    freqs = np.linspace(0.0, nyquist, spec.shape[0])  # [F]
    knee = 0.8 * nyquist * min(1.0, alpha)
    source = np.where(
        freqs <= knee,
        freqs / alpha,
        knee / alpha + (freqs - knee) * (nyquist - knee / alpha) / (nyquist - knee),
    )  # [F] the frequency whose envelope value lands on each bin
    pos = source / nyquist * (spec.shape[0] - 1)
    lo = np.clip(np.floor(pos).astype(np.int64), 0, spec.shape[0] - 2)
    frac = (pos - lo)[:, None]
    warped = env[lo] * (1.0 - frac) + env[lo + 1] * frac  # [F, T]
    return _istft(spec * np.exp(warped - env), n_fft, audio.shape[0])


def shift_pitch(
    audio: np.ndarray, semitones: float, *, sample_rate: int = SAMPLE_RATE
) -> np.ndarray:
    """Raise F0 by `semitones`, keeping the duration and the formants.

    WSOLA stretches the audio by r = 2 ** (semitones / 12), resampling plays it r times faster
    (F0 and formants times r, duration back to N), and `warp_vocal_tract(1 / r)` puts the
    formants back.

    Returns `[N]` float32.
    """
    audio = mono_float32(audio)
    if abs(semitones) > 12:
        raise TalkingAvatarError(f"pitch shift {semitones} semitones is out of range; use -12..12")
    ratio = Fraction(2.0 ** (semitones / 12.0)).limit_denominator(64)
    longer = time_stretch(audio, float(ratio))  # [~N * r]
    back = signal.resample_poly(longer, ratio.denominator, ratio.numerator)  # [~N]
    shifted = fit_length(back.astype(np.float32), audio.shape[0])
    return warp_vocal_tract(shifted, 1.0 / float(ratio), sample_rate=sample_rate)


# ---------------------------------------------------------------------------------- noise
def coloured_noise(length: int, colour: str, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise `[length]` with power spectrum 1 / f**slope (`NOISE_COLOURS`), unit RMS."""
    if colour not in NOISE_COLOURS:
        raise TalkingAvatarError(f"unknown noise colour {colour!r}; use {', '.join(NOISE_COLOURS)}")
    white = rng.standard_normal(length)
    slope = NOISE_COLOURS[colour]
    if slope:
        spectrum = np.fft.rfft(white)
        f = np.fft.rfftfreq(length)
        spectrum[1:] /= f[1:] ** (slope / 2.0)
        spectrum[0] = 0.0
        white = np.fft.irfft(spectrum, n=length)
    return (white / (np.sqrt(np.mean(white**2)) + EPS)).astype(np.float32)


def active_mask(
    audio: np.ndarray,
    *,
    sample_rate: int = SAMPLE_RATE,
    frame_s: float = 0.02,
    floor_db: float = 40.0,
) -> np.ndarray:
    """Samples `[N]` (bool) in frames whose power is within `floor_db` of the loud frames.

    "Loud" is the 95th percentile of frame power, so one click does not set the scale; frames
    of digital silence are never active.
    """
    audio = mono_float32(audio)
    size = max(1, int(round(frame_s * sample_rate)))
    num = int(np.ceil(audio.shape[0] / size))
    frames = np.pad(audio, (0, num * size - audio.shape[0])).reshape(num, size)
    power = np.mean(frames.astype(np.float64) ** 2, axis=1)  # [num]
    loud = np.percentile(power, 95)
    active = (power > loud * 10 ** (-floor_db / 10)) & (power > 0)
    return np.repeat(active, size)[: audio.shape[0]]


def add_at_snr(
    speech: np.ndarray, noise: np.ndarray, snr_db: float, *, sample_rate: int = SAMPLE_RATE
) -> np.ndarray:
    """`speech + g * noise` with g such that the SNR over the speech's active part is `snr_db`.

    Both powers are measured on the same active samples (`active_mask` of the speech), so
    babble that pauses is scaled by what it does during the speech.
    """
    speech = mono_float32(speech)
    noise = fit_length(mono_float32(noise), speech.shape[0])
    mask = active_mask(speech, sample_rate=sample_rate)
    if not mask.any():
        return speech.copy()
    p_speech = float(np.mean(speech[mask].astype(np.float64) ** 2))
    p_noise = float(np.mean(noise[mask].astype(np.float64) ** 2))
    if p_noise <= 0:
        return speech.copy()
    gain = math.sqrt(p_speech / (p_noise * 10 ** (snr_db / 10)))
    return (speech + gain * noise).astype(np.float32)


def babble(
    sources: Sequence[np.ndarray], length: int, talkers: int, rng: np.random.Generator
) -> np.ndarray:
    """A crowd `[length]`: `talkers` utterances drawn from `sources`, each looped from a random
    point, at equal active level within +-3 dB, summed. Needs at least one source."""
    if not sources:
        raise TalkingAvatarError("babble needs other utterances to mix; pass babble sources")
    mix = np.zeros(length, dtype=np.float64)
    for _ in range(talkers):
        source = mono_float32(sources[int(rng.integers(len(sources)))])
        mask = active_mask(source)
        level = np.sqrt(np.mean(source[mask].astype(np.float64) ** 2)) if mask.any() else 1.0
        start = int(rng.integers(source.shape[0]))
        looped = np.resize(np.roll(source, -start), length)  # np.resize repeats the array
        mix += looped / (level + EPS) * 10 ** (rng.uniform(-3, 3) / 20)
    return mix.astype(np.float32)


# ---------------------------------------------------------------------------------- level
def apply_gain(audio: np.ndarray, gain_db: float) -> np.ndarray:
    """Scale by `gain_db` decibels (no clipping here)."""
    return (mono_float32(audio) * 10 ** (gain_db / 20)).astype(np.float32)


def clip(audio: np.ndarray, level: float) -> np.ndarray:
    """Hard-clip at +-level (an overdriven microphone or converter)."""
    if level <= 0:
        raise TalkingAvatarError(f"clipping level must be positive, got {level}")
    return np.clip(mono_float32(audio), -level, level)


# ---------------------------------------------------------------------------------- chain
def augment(
    audio: np.ndarray,
    rng: np.random.Generator,
    *,
    config: AugmentConfig | None = None,
    babble_sources: Sequence[np.ndarray] = (),
    sample_rate: int = SAMPLE_RATE,
) -> Augmented:
    """Draw and apply a random chain of augmentations (see the module docstring for the order).

    Args:
        audio: clean speech `[N]` float32 at `sample_rate`.
        rng: the only source of randomness: the same seed gives the same rendition.
        config: probabilities and ranges; default `AugmentConfig()`.
        babble_sources: other utterances `[M_i]` at `sample_rate` for babble noise (never the
            clip itself); without them every noise draw is coloured noise.

    Returns:
        An `Augmented`: audio `[round(N / speed)]` in [-1, 1], the speed factor, the steps.
    """
    cfg = config or AugmentConfig()
    out = mono_float32(audio)
    steps: list[str] = []
    speed = 1.0

    def hit(p: float) -> bool:
        return bool(rng.random() < p)

    if hit(cfg.p_speed):
        out, speed = change_speed(out, float(rng.uniform(*cfg.speed)))
        steps.append(f"speed {speed:.2f}")
    if hit(cfg.p_pitch):
        semitones = float(rng.uniform(*cfg.semitones))
        out = shift_pitch(out, semitones, sample_rate=sample_rate)
        steps.append(f"pitch {semitones:+.1f} st")
    if hit(cfg.p_vocal_tract):
        alpha = float(rng.uniform(*cfg.vocal_tract))
        out = warp_vocal_tract(out, alpha, sample_rate=sample_rate)
        steps.append(f"vocal tract {alpha:.2f}")
    if hit(cfg.p_reverb):
        rt60, drr = float(rng.uniform(*cfg.rt60_s)), float(rng.uniform(*cfg.drr_db))
        out = reverberate(out, room_impulse_response(rt60, drr, rng, sample_rate=sample_rate))
        steps.append(f"reverb RT60 {rt60:.2f} s DRR {drr:.1f} dB")
    if hit(cfg.p_noise):
        snr = float(rng.uniform(*cfg.noise_snr_db))
        if babble_sources and hit(cfg.babble_share):
            talkers = int(rng.integers(cfg.babble_talkers[0], cfg.babble_talkers[1] + 1))
            noise = babble(babble_sources, out.shape[0], talkers, rng)
            kind = f"babble x{talkers}"
        else:
            kind = str(rng.choice(list(NOISE_COLOURS)))
            noise = coloured_noise(out.shape[0], kind, rng)
        out = add_at_snr(out, noise, snr, sample_rate=sample_rate)
        steps.append(f"noise {kind} {snr:.1f} dB")
    channel = rng.random()
    if channel < cfg.p_telephone:
        out = telephone(out, sample_rate=sample_rate)
        steps.append("telephone")
    elif channel < cfg.p_telephone + cfg.p_codec:
        codec = str(rng.choice(list(cfg.codec_kbps)))
        kbps = int(rng.choice(cfg.codec_kbps[codec]))
        out = codec_round_trip(out, codec, kbps, sample_rate=sample_rate)
        steps.append(f"{codec} {kbps} kbps")
    if hit(cfg.p_gain):
        gain = float(rng.uniform(*cfg.gain_db))
        out = apply_gain(out, gain)
        steps.append(f"gain {gain:+.1f} dB")
    if hit(cfg.p_clip):
        fraction = float(rng.uniform(*cfg.clip_fraction))
        out = clip(out, fraction * float(np.max(np.abs(out)) + EPS))
        steps.append(f"clip at {fraction:.2f} of peak")
    # a recorder's converter: whatever a gain pushed past full scale clips there
    return Augmented(audio=np.clip(out, -1.0, 1.0), speed=speed, steps=tuple(steps))
