"""One training sample shared by every dataset loader: mesh sequence, template, labels, audio."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = ["TimedLabel", "MotionSample", "SampleSequence"]


@dataclass(frozen=True)
class TimedLabel:
    """A labelled time span in seconds (a phoneme, or an expression phase such as "apex")."""

    label: str
    start: float
    end: float


@dataclass
class MotionSample:
    """A registered mesh sequence with what is known about it.

    Attributes:
        vertices: per-frame vertex positions `[T, V, 3]` float32, metres. May be a read-only
            memory-mapped view into the dataset file; `np.asarray(sample.vertices)` reads it.
        template: the subject's neutral mesh `[V, 3]` float32, metres.
        fps: frames per second; frame i shows time i / fps.
        subject: subject or identity name.
        sentence: sentence name for speech data ("sentence01"), else None.
        expression: expression label for expression data ("happy"), else None.
        audio: mono speech `[N]` float32 in [-1, 1], or None when the sample has no audio.
        sample_rate: audio sample rate in Hz, or None.
        timings: ground-truth spans where the data has them: phonemes (with their eSpeak
            mnemonic as label) for speech, phases (neutral, onset, apex, release) for expressions;
            empty when unknown.
        split: "train", "val" or "test" when the dataset defines a split for this sample.
    """

    vertices: np.ndarray  # [T, V, 3]
    template: np.ndarray  # [V, 3]
    fps: float
    subject: str
    sentence: str | None = None
    expression: str | None = None
    audio: np.ndarray | None = None  # [N]
    sample_rate: int | None = None
    timings: list[TimedLabel] = field(default_factory=list)
    split: str | None = None

    @property
    def num_frames(self) -> int:
        return int(self.vertices.shape[0])

    @property
    def duration(self) -> float:
        """Length of the motion in seconds (num_frames / fps)."""
        return self.num_frames / self.fps

    @property
    def offsets(self) -> np.ndarray:
        """Per-frame displacement from the template `[T, V, 3]` (reads the whole sequence)."""
        return np.asarray(self.vertices, dtype=np.float32) - self.template[None]

    def offsets_at(self, fps: float) -> np.ndarray:
        """Displacements from the template `[T', V, 3]` float32, resampled to fps (nearest
        frame: `resample_indices`)."""
        idx = resample_indices(self.num_frames, self.fps, fps)
        verts = np.asarray(self.vertices[idx], dtype=np.float32)
        return verts - self.template[None].astype(np.float32)


def resample_indices(num_src: int, src_fps: float, fps: float) -> np.ndarray:
    """Source frame shown at each output time i / fps (nearest), for a clip of num_src frames."""
    num_out = max(1, int(round(num_src * fps / src_fps)))
    return np.clip(np.round(np.arange(num_out) * src_fps / fps).astype(np.int64), 0, num_src - 1)


class SampleSequence(Sequence[MotionSample]):
    """A dataset as a sequence of samples, addressed by `keys` (one tuple per sample) and read
    lazily by `sample(*key)`; subclasses fill `keys` and define `sample`."""

    keys: list[tuple[str, str]]

    def sample(self, *key: str) -> MotionSample:
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.keys)

    def __iter__(self) -> Iterator[MotionSample]:
        for i in range(len(self)):
            yield self[i]

    def __getitem__(self, index: int) -> MotionSample:  # type: ignore[override]
        if isinstance(index, slice):
            raise TypeError(
                f"{type(self).__name__} does not support slicing; index one sample at a time"
            )
        return self.sample(*self.keys[index])
