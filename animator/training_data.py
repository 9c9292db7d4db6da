"""Training data for the animator: clips in motion-basis coefficients, their augmented
renditions, per-frame viseme labels, and the random crops both training stages draw.

`load_training_data` reads a VOCAset-format talking set and a Florence4D-format expression set,
fits (or takes) the shared motion basis and encodes every clip; `crop_batch` draws the crops
of one global batch from a generator, so every process of a distributed run draws the same.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch

from animator.audio import Audio, load_audio
from animator.augment import augment
from animator.closure import CENTRAL
from animator.data.sample import MotionSample, TimedLabel
from animator.data.visemes import VISEMES, viseme_of
from animator.features import FEATURE_RATE, log_mel, resample_frames
from animator.models import MotionBasis
from avatar.errors import TalkingAvatarError

if TYPE_CHECKING:
    from animator.train import TrainConfig


@dataclass
class Rendition:
    """A training clip heard differently: augmented features, and the motion if timing changed."""

    mel: torch.Tensor  # [T_a, 80] float16 at 100 Hz
    coeffs: torch.Tensor | None = None  # [T', C] when speed changed the timing, else the clip's
    phones: torch.Tensor | None = None  # [T'] viseme ids, warped with the coeffs
    speed: float = 1.0  # output time t shows the clean clip's time t * speed
    steps: tuple[str, ...] = ()


@dataclass
class Clip:
    """One sequence at the training frame rate, in motion-basis coefficients."""

    coeffs: torch.Tensor  # [T, C]
    name: str
    subject: str
    label: str  # sentence or expression
    split: str
    mel: torch.Tensor | None = None  # [T_a, 80] at 100 Hz
    style: int = -1
    timings: list[TimedLabel] = field(default_factory=list)
    disp: torch.Tensor | None = None  # [T, V, 3], kept only for evaluation clips
    phones: torch.Tensor | None = None  # [T] viseme id per frame (-1: unknown), talking clips
    renditions: list[Rendition] = field(default_factory=list)  # training talking clips only

    @property
    def num_frames(self) -> int:
        return self.coeffs.shape[0]


#: The classes of the auxiliary phone loss: the visemes (what the mouth does), a common label
#: space for every engine's phones (eSpeak mnemonics; neural voices' are mapped to them).
PHONE_CLASSES: tuple[str, ...] = tuple(VISEMES)


#: A lip gap (from rest) below this counts as shut for the gap loss's emphasis.
CLOSED_GAP_M = 0.001


def lip_gap_basis(basis: MotionBasis, head) -> torch.Tensor:
    """`[C, K]`: how each motion coefficient opens each central column of the inner lips
    (upper y minus lower y; metres per unit), for the gap loss."""
    upper = torch.as_tensor(head.region("lip_upper_inner"))
    lower = torch.as_tensor(head.region("lip_lower_inner"))
    n = len(upper)
    drop = int(round(n * (1 - CENTRAL) / 2))  # the central columns, as inner_lip_gap measures
    upper, lower = upper[drop : n - drop], lower[drop : n - drop]
    rows = basis.basis.view(basis.basis.shape[0], -1, 3)  # [C, V, 3]
    return rows[:, upper, 1] - rows[:, lower, 1]  # [C, K]


def phone_frames(timings: list[TimedLabel], num_frames: int, fps: float) -> torch.Tensor:
    """Viseme id `[T]` of the phone sounding at each frame time i / fps (-1 where none is)."""
    ids = torch.full((num_frames,), -1, dtype=torch.long)
    times = torch.arange(num_frames, dtype=torch.float64) / fps
    for t in timings:
        inside = (times >= t.start) & (times < t.end)
        ids[inside] = PHONE_CLASSES.index(viseme_of(t.label))
    return ids


def load_training_data(
    talking_dir: str | Path,
    expressions_dir: str | Path,
    cfg: TrainConfig,
    log: Callable[[str], None] = print,
    *,
    renditions: bool = True,
    basis: MotionBasis | None = None,
) -> tuple[MotionBasis, list[Clip], list[Clip], dict]:
    """Read both sets, fit the shared motion basis (or take `basis`, that of a resumed speech
    model, whose outputs are coefficients in it) and encode every clip.

    With `renditions` (and `cfg.augment_renditions` > 0) each training talking clip also gets
    its augmented renditions (`build_renditions`), for stage 1 and `cfg.fusion_renditions`.
    """
    t0 = time.perf_counter()
    talk_samples, expr_samples = _read_sets(talking_dir, expressions_dir)
    train_subjects = sorted({s.subject for s in talk_samples if (s.split or "train") == "train"})
    styles = {name: i for i, name in enumerate(train_subjects)}
    basis, kept = _motion_basis(talk_samples + expr_samples, cfg, basis, log)
    talk: list[Clip] = []
    train_audio: list[np.ndarray] = []  # [N] 16 kHz, of the training talking clips, in order
    for s in talk_samples:
        audio = _talking_audio(s)
        talk.append(_encode_clip(s, basis, styles, cfg.fps, audio))
        if talk[-1].split == "train":
            train_audio.append(audio.samples)
    expr = [_encode_clip(s, basis, styles, cfg.fps, None) for s in expr_samples]
    log(
        f"data: {len(talk)} talking clips ({sum(c.num_frames for c in talk)} frames at {cfg.fps:g} fps), "
        f"{len(expr)} expression clips; read in {time.perf_counter() - t0:.0f} s"
    )
    if renditions and cfg.augment_renditions > 0:
        build_renditions([c for c in talk if c.split == "train"], train_audio, cfg, log=log)
    meta = {
        "train_subjects": train_subjects,
        "num_vertices": talk_samples[0].template.shape[0],
        "basis_energy_kept": kept,
    }
    return basis, talk, expr, meta


def _read_sets(
    talking_dir: str | Path, expressions_dir: str | Path
) -> tuple[list[MotionSample], list[MotionSample]]:
    """Every sample of the talking and the expression set, checked to hold sequences on one
    topology."""
    from animator.data.florence import FlorenceDataset
    from animator.data.vocaset import VocasetDataset

    talking = VocasetDataset(talking_dir)
    expressions = FlorenceDataset(expressions_dir)
    if len(talking) == 0 or len(expressions) == 0:
        raise TalkingAvatarError("the talking and expression sets must each hold sequences")
    talk_samples = list(talking)
    expr_samples = list(expressions)
    num_v = talk_samples[0].template.shape[0]
    if expr_samples[0].template.shape[0] != num_v:
        raise TalkingAvatarError(
            f"the talking set has {num_v} vertices per mesh but the expression set has "
            f"{expr_samples[0].template.shape[0]}; both must share one topology"
        )
    return talk_samples, expr_samples


def _motion_basis(
    samples: list[MotionSample],
    cfg: TrainConfig,
    basis: MotionBasis | None,
    log: Callable[[str], None],
) -> tuple[MotionBasis, float]:
    """The shared motion basis, fitted on a subsample of the training frames of `samples`
    (uncentred: 0 = template), or `basis` as it is; with the share of their energy it keeps."""
    rng = np.random.default_rng(cfg.seed)
    fit_frames = []
    for s in samples:
        if (s.split or "train") != "train":
            continue
        d = torch.from_numpy(s.offsets_at(cfg.fps))
        take = rng.choice(len(d), size=min(len(d), 12), replace=False)
        fit_frames.append(d[np.sort(take)])
    fit_frames = torch.cat(fit_frames)
    if basis is None:
        basis, kept = MotionBasis.fit(fit_frames, cfg.components)
        what = f"{cfg.components} components"
    else:
        # Refitting on data regenerated since would rotate or flip components in the last bits.
        x = fit_frames.reshape(len(fit_frames), -1)
        kept = float((x @ basis.basis.T).pow(2).sum() / x.pow(2).sum())
        what = f"the resumed model's {basis.basis.shape[0]} components"
    log(f"motion basis: {what} keep {kept * 100:.3f}% of the motion energy")
    return basis, kept


def _talking_audio(s: MotionSample) -> Audio:
    """A talking sequence's speech, at 16 kHz."""
    if s.audio is None:
        raise TalkingAvatarError(f"talking sequence {s.subject}/{s.sentence} has no audio")
    return load_audio(s.audio, s.sample_rate)


def _encode_clip(
    s: MotionSample, basis: MotionBasis, styles: dict[str, int], fps: float, audio: Audio | None
) -> Clip:
    """One sequence as a clip at `fps`: a talking one (with its `audio`) gets features and
    viseme labels and keeps its offsets off the training split only; an expression keeps them."""
    disp = torch.from_numpy(s.offsets_at(fps))  # [T, V, 3]
    split = s.split or "train"
    talking = audio is not None
    return Clip(
        coeffs=basis.encode(disp),
        name=f"{s.subject}/{s.sentence or s.expression}",
        subject=s.subject,
        label=str(s.sentence or s.expression),
        split=split,
        mel=torch.from_numpy(log_mel(audio)) if talking else None,
        style=styles.get(s.subject, -1),
        timings=list(s.timings),
        disp=disp if split != "train" or not talking else None,
        phones=phone_frames(list(s.timings), len(disp), fps) if talking else None,
    )


def build_renditions(
    clips: list[Clip],
    audio: list[np.ndarray],
    cfg: TrainConfig,
    *,
    log: Callable[[str], None] = print,
) -> int:
    """Give each clip `cfg.augment_renditions` augmented renditions (`animator.augment`).

    Rendition k of clip i draws from `default_rng([cfg.seed, i, k])`, so every process of a
    distributed run builds the same pool. Babble comes from `cfg.babble_bank` other clips
    (never the same speaker). Features are stored as float16 to halve the memory; a
    speed-perturbed rendition also stores its motion, time-warped by the same factor.

    Args:
        clips: training talking clips (their `renditions` are replaced).
        audio: each clip's clean speech `[N]` float32 at 16 kHz, in the same order.

    Returns:
        The bytes the renditions hold.
    """
    if len(clips) != len(audio):
        raise ValueError(f"{len(clips)} clips but {len(audio)} audio arrays")
    t0 = time.perf_counter()
    rng = np.random.default_rng([cfg.seed, 7])
    bank = rng.choice(len(clips), size=min(cfg.babble_bank, len(clips)), replace=False)
    held = 0
    for i, (clip, samples) in enumerate(zip(clips, audio, strict=True)):
        sources = [audio[j] for j in bank if clips[j].subject != clip.subject]
        clip.renditions = []
        for k in range(cfg.augment_renditions):
            out = augment(
                samples,
                np.random.default_rng([cfg.seed, i, k]),
                config=cfg.augment,
                babble_sources=sources,
            )
            coeffs = phones = None
            if out.speed != 1.0:
                frames = max(1, int(round(clip.num_frames / out.speed)))
                coeffs = resample_frames(clip.coeffs, cfg.fps, frames, cfg.fps / out.speed)
                if clip.phones is not None:  # output frame j shows the clean frame j * speed
                    src = (torch.arange(frames) * out.speed).round().long()
                    phones = clip.phones[src.clamp(max=clip.num_frames - 1)]
            mel = torch.from_numpy(log_mel(Audio(out.audio))).half()
            clip.renditions.append(
                Rendition(mel=mel, coeffs=coeffs, phones=phones, speed=out.speed, steps=out.steps)
            )
            held += mel.numel() * mel.element_size()
            held += 0 if coeffs is None else coeffs.numel() * coeffs.element_size()
    elapsed = time.perf_counter() - t0
    count = len(clips) * cfg.augment_renditions
    log(
        f"augmentation: {cfg.augment_renditions} renditions of each of {len(clips)} training "
        f"clips, {held / 2**20:.0f} MB, built in {elapsed:.0f} s "
        f"({1000 * elapsed / max(1, count):.0f} ms each)"
    )
    return held


class Batch(NamedTuple):
    """Random crops: coeffs `[B, F, C]`, mel `[B, F_a, 80]` (or None), style `[B]`, and the
    viseme id per frame `[B, F]` (-1 unknown; None without audio)."""

    coeffs: torch.Tensor
    mel: torch.Tensor | None
    style: torch.Tensor
    phones: torch.Tensor | None


def crop_batch(
    clips: list[Clip], gen: torch.Generator, batch: int, frames: int, *, with_audio: bool
) -> Batch:
    """A batch of random crops (see `Batch`).

    With audio, a clip with renditions plays as itself or as one of them, drawn uniformly.
    Crops start on frames that are multiples of 3 so that, at 30 fps, they start exactly on a
    100 Hz feature frame.
    """
    per = FEATURE_RATE / 30.0
    coeffs, mels, styles, phones = [], [], [], []
    picks = torch.randint(len(clips), (batch,), generator=gen)
    for i in picks.tolist():
        clip = clips[i]
        motion, features, labels = clip.coeffs, clip.mel, clip.phones
        if with_audio and clip.renditions:
            # 0 is the clean clip, k > 0 its k-th augmented rendition
            r = int(torch.randint(len(clip.renditions) + 1, (1,), generator=gen))
            if r > 0:
                rendition = clip.renditions[r - 1]
                features = rendition.mel
                if rendition.coeffs is not None:
                    motion, labels = rendition.coeffs, rendition.phones
        n = motion.shape[0]
        if n <= frames:
            start = 0
        else:
            start = 3 * int(torch.randint((n - frames) // 3 + 1, (1,), generator=gen))
        c = motion[start : start + frames]
        if len(c) < frames:  # pad short clips by holding the last frame
            c = torch.cat([c, c[-1:].expand(frames - len(c), -1)])
        coeffs.append(c)
        styles.append(clip.style)
        if labels is None:
            labels = torch.full((n,), -1, dtype=torch.long)
        p = labels[start : start + frames]
        phones.append(torch.cat([p, p.new_full((frames - len(p),), -1)]))  # padding: unknown
        if with_audio:
            a = int(round(start * per))
            m = features[a : a + int(math.ceil(frames * per)) + 1].float()
            need = int(math.ceil(frames * per)) + 1
            if len(m) < need:
                m = torch.cat([m, m[-1:].expand(need - len(m), -1)])
            mels.append(m)
    mel = torch.stack(mels) if with_audio else None
    return Batch(
        torch.stack(coeffs), mel, torch.tensor(styles), torch.stack(phones) if with_audio else None
    )
