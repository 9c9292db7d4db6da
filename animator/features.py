"""Audio features for the speech model: normalised log-mel frames, resampled to the motion rate."""

from __future__ import annotations

import numpy as np
import torch

from animator.audio import SAMPLE_RATE, Audio

HOP = 160  # 10 ms at 16 kHz: features at 100 Hz
WINDOW = 400  # 25 ms
N_MELS = 80
FEATURE_RATE = SAMPLE_RATE / HOP  # 100 Hz


def log_mel(audio: Audio) -> np.ndarray:
    """Per-clip normalised log-mel frames `[T_a, 80]` float32 at 100 Hz.

    Frame j is centred on time j / 100 s. Each mel band is normalised to zero mean and unit
    variance over the clip, which removes most of the voice's and the microphone's colour.
    """
    import librosa

    mel = librosa.feature.melspectrogram(
        y=audio.samples,
        sr=SAMPLE_RATE,
        n_fft=512,
        hop_length=HOP,
        win_length=WINDOW,
        n_mels=N_MELS,
        fmin=60.0,
        fmax=7600.0,
    )  # [80, T_a]
    logmel = np.log(mel + 1e-6).T  # [T_a, 80]
    mean = logmel.mean(axis=0, keepdims=True)
    std = logmel.std(axis=0, keepdims=True) + 1e-3
    return ((logmel - mean) / std).astype(np.float32)


def resample_frames(
    frames: torch.Tensor, src_rate: float, num_out: int, out_rate: float
) -> torch.Tensor:
    """Linear interpolation of frames `[..., T_src, C]` at src_rate to `[..., num_out, C]`.

    Output frame i takes time i / out_rate; times past the end hold the last frame.
    """
    t_src = frames.shape[-2]
    pos = torch.arange(num_out, dtype=torch.float64) * (src_rate / out_rate)
    pos = pos.clamp(0, t_src - 1)
    lo = pos.floor().long()
    hi = (lo + 1).clamp(max=t_src - 1)
    frac = (pos - lo).to(frames.dtype)[:, None]
    return frames[..., lo, :] * (1 - frac) + frames[..., hi, :] * frac
