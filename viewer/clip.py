"""A speech clip ready to play in the viewer: its audio, w_A once, and its idle layers."""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field

import torch

from animator.animator import Animator
from animator.audio import SAMPLE_RATE, Audio
from animator.idle import IdleLayer, idle_layer
from viewer.playback import wav_bytes


@dataclass
class Clip:
    """A speech clip ready to play: its audio, w_A once, and the idle layers (lazily).

    Attributes:
        name: shown in the page. audio: 16 kHz mono. fps: animation frame rate.
        speech_weights: w_A `[T, K_A]`. speaking: `[T]` in [0, 1], where speech is heard
        (`Animator.speech_track`). wav: the audio as a WAV file, for the page.
    """

    name: str
    audio: Audio
    fps: float
    speech_weights: torch.Tensor  # [T, K_A]
    speaking: torch.Tensor  # [T]
    wav: bytes
    _idle: dict[tuple[bool, bool], IdleLayer] = field(default_factory=dict, repr=False)
    _idle_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def num_frames(self) -> int:
        return self.speech_weights.shape[0]

    @property
    def duration(self) -> float:
        return self.audio.duration

    def frame_index(self, media_time: float) -> int:
        """The animation frame shown at a media time (seconds): frame i shows i / fps."""
        return int(min(max(math.floor(media_time * self.fps + 0.5), 0), self.num_frames - 1))

    def idle(
        self, animator: Animator, *, blinks: bool, head_motion: bool, seed: int
    ) -> IdleLayer | None:
        """The clip's idle layer for these toggles (computed once per combination; None when
        both are off): the layer `Animator.perform` adds on export."""
        if not (blinks or head_motion):
            return None
        key = (blinks, head_motion)
        with self._idle_lock:
            if key not in self._idle:
                self._idle[key] = idle_layer(
                    animator.head, self.num_frames, self.fps, seed=seed, blinks=blinks,
                    head_motion=head_motion,
                )  # fmt: skip
            return self._idle[key]


def make_clip(animator: Animator, audio: Audio, *, name: str, fps: float) -> Clip:
    """Analyse speech once: w_A for every frame (the slow part, ~0.2 s per 1 s of audio on CPU)."""
    w_a, speaking = animator.speech_track(audio, fps=fps)
    return Clip(name=name, audio=audio, fps=fps, speech_weights=w_a, speaking=speaking,
                wav=wav_bytes(audio.samples, SAMPLE_RATE))  # fmt: skip
