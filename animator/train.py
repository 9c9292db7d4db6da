"""Training the animator: stage 1 (speech model), stage 2 (fusion with sparsity), emotion codes,
the FLAME mapping; single process or torch.distributed (gloo on CPU, NCCL on GPU).

`train(talking_dir, expressions_dir, out)` reads a VOCAset-format talking set and a
Florence4D-format expression set, trains, and writes a checkpoint folder (safetensors + JSON).
Under `torchrun --nproc_per_node=N` every rank draws the same global batch from a shared seed and
takes its slice; DDP averages the gradients, so N processes give the result of one process with
the same global batch.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from animator.audio import Audio, load_audio
from animator.augment import AugmentConfig, augment
from animator.closure import CENTRAL
from animator.data.sample import MotionSample, TimedLabel
from animator.data.visemes import VISEMES, viseme_of
from animator.emotion import EMOTIONS
from animator.features import FEATURE_RATE, log_mel, resample_frames
from animator.models import (
    FusionConfig,
    FusionModule,
    MotionBasis,
    SpeechModel,
    SpeechModelConfig,
)
from avatar.errors import TalkingAvatarError
from avatar.threads import TrainingThreads


@dataclass
class TrainConfig:
    """Hyper-parameters (the defaults build the shipped animator in minutes on 2 CPU cores)."""

    # The models' sizes: each default is the model config's own (declared once, there).
    fps: float = SpeechModelConfig.fps
    components: int = SpeechModelConfig.components
    dim: int = SpeechModelConfig.dim
    layers: int = SpeechModelConfig.layers
    heads: int = SpeechModelConfig.heads
    window: int = SpeechModelConfig.window
    dropout: float = SpeechModelConfig.dropout
    speech_blendshapes: int = FusionConfig.speech_blendshapes
    expression_blendshapes: int = FusionConfig.expression_blendshapes
    #: weight of stage 2's sparsity loss (5e-3 keeps the speech leak to the upper face under
    #: 2 % once stage 2 also learns from renditions; 3e-3 did without them)
    sparsity: float = 5e-3
    #: stage 2 also learns from the speech model's output on this many of each clip's augmented
    #: renditions (what it meets on real recordings), each against its true motion: trained on
    #: clean output only, its speech encoder fits the synthetic voices (real-speech correlation
    #: 0.602 at 1200 steps, 0.577 at 2500); with 3 renditions 0.604 at 2500
    fusion_renditions: int = 3
    stage1_steps: int = 3000
    stage2_steps: int = 2500
    batch: int = 16
    crop_frames: int = 60
    lr: float = 2e-3
    velocity_weight: float = 1.0
    lip_weight: float = 1.0  # extra loss on the lip vertices (about 16x emphasis on this head)
    #: weight of the auxiliary per-frame viseme classification (cross-entropy) in stage 1,
    #: in the units of the motion loss; 0 turns it off
    phone_weight: float = 1e-2
    #: weight of the inner-lip gap loss in stage 1 (per central lip column, in the lip loss's
    #: units), and how much more a frame counts where the lips are shut in the data
    gap_weight: float = 0.1
    closure_emphasis: float = 4.0
    val_every: int = 250
    seed: int = 0
    #: augmented renditions of each training talking clip, beside the clean one (0: clean only)
    augment_renditions: int = 3
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    #: clips whose audio babble noise is mixed from (other speakers' training clips)
    babble_bank: int = 64


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


def _is_main() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def _world() -> tuple[int, int]:
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed() -> bool:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); returns whether it did."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return dist.is_initialized()
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend=backend)
    return True


# ---------------------------------------------------------------------------------- data
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
    from animator.data.florence import FlorenceDataset
    from animator.data.vocaset import VocasetDataset

    talking = VocasetDataset(talking_dir)
    expressions = FlorenceDataset(expressions_dir)
    if len(talking) == 0 or len(expressions) == 0:
        raise TalkingAvatarError("the talking and expression sets must each hold sequences")
    t0 = time.perf_counter()
    talk_samples = list(talking)
    expr_samples = list(expressions)
    num_v = talk_samples[0].template.shape[0]
    if expr_samples[0].template.shape[0] != num_v:
        raise TalkingAvatarError(
            f"the talking set has {num_v} vertices per mesh but the expression set has "
            f"{expr_samples[0].template.shape[0]}; both must share one topology"
        )
    train_subjects = sorted({s.subject for s in talk_samples if (s.split or "train") == "train"})
    styles = {name: i for i, name in enumerate(train_subjects)}

    # The basis is fitted on a subsample of frames from both sets (uncentred: 0 = template).
    rng = np.random.default_rng(cfg.seed)
    fit_frames = []
    for s in talk_samples + expr_samples:
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

    train_audio: list[np.ndarray] = []  # [N] 16 kHz, of the training talking clips, in order

    def clip_of(s: MotionSample, kind: str) -> Clip:
        disp = torch.from_numpy(s.offsets_at(cfg.fps))
        split = s.split or "train"
        mel = None
        if kind == "talking":
            if s.audio is None:
                raise TalkingAvatarError(f"talking sequence {s.subject}/{s.sentence} has no audio")
            audio = load_audio(s.audio, s.sample_rate)
            mel = torch.from_numpy(log_mel(audio))
            if split == "train":
                train_audio.append(audio.samples)
        return Clip(
            coeffs=basis.encode(disp),
            name=f"{s.subject}/{s.sentence or s.expression}",
            subject=s.subject,
            label=str(s.sentence or s.expression),
            split=split,
            mel=mel,
            style=styles.get(s.subject, -1),
            timings=list(s.timings),
            disp=disp if split != "train" or kind == "expression" else None,
            phones=phone_frames(list(s.timings), len(disp), cfg.fps) if kind == "talking" else None,
        )

    talk = [clip_of(s, "talking") for s in talk_samples]
    expr = [clip_of(s, "expression") for s in expr_samples]
    log(
        f"data: {len(talk)} talking clips ({sum(c.num_frames for c in talk)} frames at {cfg.fps:g} fps), "
        f"{len(expr)} expression clips; read in {time.perf_counter() - t0:.0f} s"
    )
    if renditions and cfg.augment_renditions > 0:
        build_renditions([c for c in talk if c.split == "train"], train_audio, cfg, log=log)
    meta = {"train_subjects": train_subjects, "num_vertices": num_v, "basis_energy_kept": kept}
    return basis, talk, expr, meta


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


def _crop_batch(
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


def _shard(x: torch.Tensor | None) -> torch.Tensor | None:
    rank, world = _world()
    if x is None or world == 1:
        return x
    if x.shape[0] % world:
        raise TalkingAvatarError(f"batch {x.shape[0]} must divide by the {world} processes")
    per = x.shape[0] // world
    return x[rank * per : (rank + 1) * per]


def _wrap(model: nn.Module) -> nn.Module:
    if dist.is_initialized() and dist.get_world_size() > 1:
        return nn.parallel.DistributedDataParallel(model)
    return model


def _velocity(x: torch.Tensor) -> torch.Tensor:
    return x[:, 1:] - x[:, :-1]


# ---------------------------------------------------------------------------------- stages
def _optimise(
    model: nn.Module,
    cfg: TrainConfig,
    steps: int,
    *,
    seed: int,
    desc: str,
    step_loss: Callable[[nn.Module, torch.Generator], tuple[torch.Tensor, dict]],
    postfix: Callable[[dict], dict[str, str]],
    validate: Callable[[int, dict], None],
    progress: bool,
    threads: TrainingThreads | None,
) -> None:
    """The one training loop of both stages: AdamW with a one-cycle schedule over `steps`
    batches; `step_loss(net, gen)` crops a batch with the loop's generator and returns the loss
    and what to show (`postfix` every 10 steps on the progress bar, `validate(step, shown)`
    every `cfg.val_every` steps on the main process). `net` is the model wrapped for
    distributed training when torchrun started us."""
    from tqdm import tqdm

    net = _wrap(model)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=steps, pct_start=0.1)
    gen = torch.Generator().manual_seed(seed)
    bar = tqdm(range(steps), desc=desc, disable=not (progress and _is_main()))
    for step in bar:
        if threads is not None:
            threads.update()
        loss, shown = step_loss(net, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 10 == 0:
            bar.set_postfix(postfix(shown))
        if _is_main() and (step + 1) % cfg.val_every == 0:
            validate(step + 1, shown)


def train_speech_model(
    talk: list[Clip],
    cfg: TrainConfig,
    num_vertices: int,
    num_subjects: int,
    *,
    log: Callable[[str], None] = print,
    progress: bool = True,
    state: dict | None = None,
    lip_basis: torch.Tensor | None = None,
    gap_basis: torch.Tensor | None = None,
    threads: TrainingThreads | None = None,
) -> SpeechModel:
    """Stage 1 on the training split: MSE on motion coefficients plus their velocity, plus
    (with `lip_basis` `[C, 3L]`, the basis rows of the lip vertices) an MSE on the lips, plus
    (with `gap_basis` `[C, K]`, the change of each central inner-lip column's gap per
    coefficient) an MSE on the lip gaps that counts shut frames `closure_emphasis` more: a
    plain MSE smooths a 60 ms closure into a half-open mouth."""

    torch.manual_seed(cfg.seed)
    model = SpeechModel(
        SpeechModelConfig(
            num_vertices=num_vertices,
            num_subjects=max(1, num_subjects),
            dim=cfg.dim,
            layers=cfg.layers,
            heads=cfg.heads,
            window=cfg.window,
            components=cfg.components,
            fps=cfg.fps,
            dropout=cfg.dropout,
            phone_classes=len(PHONE_CLASSES) if cfg.phone_weight > 0 else 0,
        )
    )
    if state is not None:
        model.load_state_dict(state)
        return model
    train = [c for c in talk if c.split == "train"]
    val = [c for c in talk if c.split == "val"]

    def step_loss(net: nn.Module, gen: torch.Generator) -> tuple[torch.Tensor, dict]:
        coeffs, mel, style, phones = _crop_batch(
            train, gen, cfg.batch, cfg.crop_frames, with_audio=True
        )
        coeffs, mel, style, phones = _shard(coeffs), _shard(mel), _shard(style), _shard(phones)
        if model.to_phones is not None:
            pred, logits = net(mel, cfg.crop_frames, style, with_phones=True)
        else:
            pred, logits = net(mel, cfg.crop_frames, style), None
        loss = nn.functional.mse_loss(pred, coeffs) + cfg.velocity_weight * nn.functional.mse_loss(
            _velocity(pred), _velocity(coeffs)
        )
        if logits is not None:
            # Naming the viseme from the same features keeps them phonetic across voices.
            # Summed over labelled frames, divided by all frames: equal shards of a global
            # batch then average to the global loss, as the motion terms do.
            aux = (
                nn.functional.cross_entropy(
                    logits.flatten(0, 1), phones.flatten(), ignore_index=-1, reduction="sum"
                )
                / phones.numel()
                + 0.0 * logits.sum()
            )  # (kept in the graph when none is labelled)
            loss = loss + cfg.phone_weight * aux
        if lip_basis is not None and cfg.lip_weight > 0:
            # Per-coordinate MSE on the lips, rescaled by 3V / C to the coefficient loss's units:
            # with equal error density on the lips and elsewhere the two terms are equal.
            scale = 3.0 * num_vertices / coeffs.shape[-1]
            loss = loss + cfg.lip_weight * scale * nn.functional.mse_loss(
                pred @ lip_basis, coeffs @ lip_basis
            )
        if gap_basis is not None and cfg.gap_weight > 0:
            gap_true = coeffs @ gap_basis  # [B, F, K] metres from the rest gap
            shut = (gap_true < CLOSED_GAP_M).to(gap_true.dtype)
            weight = 1.0 + cfg.closure_emphasis * shut
            scale = 3.0 * num_vertices / coeffs.shape[-1]
            loss = (
                loss + cfg.gap_weight * scale * (weight * (pred @ gap_basis - gap_true) ** 2).mean()
            )
        return loss, {"loss": loss}

    def validate(step: int, shown: dict) -> None:
        if val:
            err = _speech_val_error(model, val)
            log(
                f"stage 1 step {step}: train loss {shown['loss'].item():.3e}, val rms {err * 1000:.2f} mm"
            )

    _optimise(
        model, cfg, cfg.stage1_steps, seed=cfg.seed + 1, desc="stage 1: speech model",
        step_loss=step_loss, postfix=lambda shown: {"loss": f"{shown['loss'].item():.3e}"},
        validate=validate, progress=progress, threads=threads,
    )  # fmt: skip
    return model.eval()


@torch.no_grad()
def _speech_val_error(model: SpeechModel, clips: list[Clip]) -> float:
    model.eval()
    se, n = 0.0, 0
    for c in clips[:20]:
        pred = model(c.mel[None], c.num_frames)[0]
        se += float((pred - c.coeffs).pow(2).sum())
        n += c.coeffs.numel()
    model.train()
    # coefficient error equals vertex error; divide by 3V/C to get per-coordinate RMS
    return math.sqrt(se / n * c.coeffs.shape[1] / (3 * model.cfg.num_vertices))


@torch.no_grad()
def speech_predictions(
    model: SpeechModel, clips: list[Clip], *, neutral: bool = False
) -> list[torch.Tensor]:
    """Stage-1 output `[T, C]` per clip, with each clip's own style (or the neutral style)."""
    model.eval()
    out = []
    for c in clips:
        style = None if neutral or c.style < 0 else torch.tensor([c.style])
        if style is None:
            out.append(model.predict_long(c.mel[None], c.num_frames))
        else:
            out.append(model(c.mel[None], c.num_frames, style)[0])
    return out


@torch.no_grad()
def rendition_predictions(
    model: SpeechModel, clips: list[Clip], count: int
) -> tuple[list[torch.Tensor], list[Clip]]:
    """Stage-1 output `[T', C]` on the first `count` augmented renditions of each clip, each
    paired with a clip holding that rendition's true motion (time-warped where its speed
    changed)."""
    model.eval()
    inputs, targets = [], []
    for c in clips:
        style = None if c.style < 0 else torch.tensor([c.style])
        for r in c.renditions[:count]:
            coeffs = c.coeffs if r.coeffs is None else r.coeffs
            mel = r.mel.float()[None]
            if style is None:
                inputs.append(model.predict_long(mel, len(coeffs)))
            else:
                inputs.append(model(mel, len(coeffs), style)[0])
            targets.append(replace(c, coeffs=coeffs, renditions=[]))
    return inputs, targets


def train_fusion(
    talk_inputs: list[torch.Tensor],
    talk_targets: list[Clip],
    expr: list[Clip],
    cfg: TrainConfig,
    num_vertices: int,
    *,
    sparsity: float | None = None,
    log: Callable[[str], None] = print,
    progress: bool = True,
    state: dict | None = None,
    threads: TrainingThreads | None = None,
) -> FusionModule:
    """Stage 2: reconstruct talking (from stage-1 output) and expression sequences with the
    two bases; L1 on the off-domain weights keeps speech out of w_E and expression out of w_A."""

    lam = cfg.sparsity if sparsity is None else sparsity
    torch.manual_seed(cfg.seed + 2)
    model = FusionModule(
        FusionConfig(
            components=cfg.components,
            num_vertices=num_vertices,
            speech_blendshapes=cfg.speech_blendshapes,
            expression_blendshapes=cfg.expression_blendshapes,
        )
    )
    if state is not None:
        model.load_state_dict(state)
        return model
    # Pair each talking input with its target as one clip-like record for cropping.
    pairs = [
        Clip(
            coeffs=torch.cat([x, c.coeffs], dim=1),
            name=c.name,
            subject=c.subject,
            label=c.label,
            split=c.split,
        )
        for x, c in zip(talk_inputs, talk_targets, strict=True)
    ]
    expr_train = [c for c in expr if c.split == "train"]
    c_dim = cfg.components
    half = cfg.batch // 2

    def step_loss(net: nn.Module, gen: torch.Generator) -> tuple[torch.Tensor, dict]:
        tb = _crop_batch(pairs, gen, half, cfg.crop_frames, with_audio=False).coeffs
        eb = _crop_batch(expr_train, gen, half, cfg.crop_frames, with_audio=False).coeffs
        tb, eb = _shard(tb), _shard(eb)
        t_in, t_gt = tb[..., :c_dim], tb[..., c_dim:]
        t_out, t_wa, t_we = net(t_in)
        e_out, e_wa, e_we = net(eb)
        rec = nn.functional.mse_loss(t_out, t_gt) + nn.functional.mse_loss(e_out, eb)
        vel = nn.functional.mse_loss(_velocity(t_out), _velocity(t_gt))
        # Sparsity: L1 on the weights each domain should not use (w_E on speech, w_A on
        # expressions), in the reconstruction loss's units (coefficients squared).
        sparse = t_we.abs().mean() + e_wa.abs().mean()
        return rec + cfg.velocity_weight * vel + lam * sparse, {"rec": rec, "off": sparse}

    def validate(step: int, shown: dict) -> None:
        log(
            f"stage 2 step {step}: reconstruction {shown['rec'].item():.3e}, off-domain |w| {shown['off'].item():.3f}"
        )

    _optimise(
        model, cfg, cfg.stage2_steps, seed=cfg.seed + 3, desc="stage 2: fusion",
        step_loss=step_loss, validate=validate, progress=progress, threads=threads,
        postfix=lambda shown: {
            "rec": f"{shown['rec'].item():.3e}", "off": f"{shown['off'].item():.3f}"
        },
    )  # fmt: skip
    return model.eval()


@torch.no_grad()
def emotion_codes(model: FusionModule, expr: list[Clip], fps: float) -> torch.Tensor:
    """Apex code per emotion `[7, K_E]`: mean w_E over apex frames across identities."""
    codes = torch.zeros(len(EMOTIONS), model.cfg.expression_blendshapes)
    for i, emotion in enumerate(EMOTIONS):
        frames = []
        for c in expr:
            if c.label != emotion:
                continue
            _, w_e = model.encode(c.coeffs[None])
            apex = [t for t in c.timings if t.label == "apex"]
            if apex:
                lo = int(math.floor(apex[0].start * fps))
                hi = max(lo + 1, int(math.ceil(apex[0].end * fps)))
                frames.append(w_e[0, lo:hi])
            else:  # no timings: the middle third is the apex hold
                n = c.num_frames
                frames.append(w_e[0, n // 3 : 2 * n // 3])
        if not frames:
            raise TalkingAvatarError(f"the expression set has no '{emotion}' sequence")
        codes[i] = torch.cat(frames).mean(dim=0)
    return codes


def train_config_dict(cfg: TrainConfig) -> dict:
    return asdict(cfg)


def _state(prefix: str, module: nn.Module) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v for k, v in module.state_dict().items()}


def train(
    talking_dir: str | Path,
    expressions_dir: str | Path,
    out: str | Path,
    cfg: TrainConfig | None = None,
    *,
    resume: str | Path | None = None,
    head=None,
    log: Callable[[str], None] = print,
    progress: bool = True,
    threads: int | None = None,
) -> dict:
    """Train every stage and write the checkpoint folder `out`; returns the run summary.

    `threads` fixes torch's thread count; None follows the cores other processes leave free
    (`avatar.threads.TrainingThreads`), so a busy machine does not slow every step.

    With `resume`, the speech model (stage 1, the long part) is taken from that checkpoint
    instead of trained again: a run stopped after stage 1 resumes there, and fusion variants
    (other K_A, K_E or sparsity weights) reuse one speech model. Stage 2 always trains.
    """
    from animator.checkpoint import load_checkpoint, save_checkpoint
    from animator.mapping import fit_flame_mapping
    from avatar.flame import load_flame

    cfg = cfg or TrainConfig()
    init_distributed()
    pacer = TrainingThreads(threads)
    started = time.perf_counter()
    head = head if head is not None else load_flame()
    resumed: dict[str, torch.Tensor] = {}
    if resume is not None:
        _, resumed = load_checkpoint(resume)
        log(
            f"resuming from {resume}: stages found: {'speech model' if any(k.startswith('speech.') for k in resumed) else 'none'}"
        )

    def sub(prefix: str) -> dict | None:
        got = {k[len(prefix) + 1 :]: v for k, v in resumed.items() if k.startswith(prefix + ".")}
        return got or None

    resumed_basis = None
    if sub("speech") is not None and sub("basis") is not None:
        rows = sub("basis")["basis"]
        resumed_basis = MotionBasis(rows.shape[0], rows.shape[1] // 3)
        resumed_basis.load_state_dict(sub("basis"))
    basis, talk, expr, meta = load_training_data(
        talking_dir,
        expressions_dir,
        cfg,
        log=log if _is_main() else lambda *_: None,
        renditions=sub("speech") is None or cfg.fusion_renditions > 0,
        basis=resumed_basis,
    )
    if meta["num_vertices"] != head.num_vertices:
        raise TalkingAvatarError(
            f"the training meshes have {meta['num_vertices']} vertices but the head model "
            f"{head.source} has {head.num_vertices}; train with the head the data was made for (--flame)"
        )

    num_subjects = len(meta["train_subjects"])
    lips = torch.as_tensor(head.region("lips"))
    lip_basis = basis.basis.view(cfg.components, -1, 3)[:, lips].reshape(cfg.components, -1)
    speech = train_speech_model(
        talk,
        cfg,
        head.num_vertices,
        num_subjects,
        log=log,
        progress=progress,
        state=sub("speech"),
        lip_basis=lip_basis,
        gap_basis=lip_gap_basis(basis, head),
        threads=pacer,
    )
    base_config = {
        "train": train_config_dict(cfg),
        "speech_model": asdict(speech.cfg),
        "train_subjects": meta["train_subjects"],
        "basis_energy_kept": meta["basis_energy_kept"],
        "head": {
            "source": Path(head.source).name,
            "num_vertices": head.num_vertices,
            "num_expr": head.num_expr,
        },
        "emotions": list(EMOTIONS),
    }
    if _is_main() and sub("speech") is None:
        save_checkpoint(
            out,
            {**base_config, "stage": "speech"},
            {**_state("basis", basis), **_state("speech", speech)},
        )
        log(f"stage 1 done ({time.perf_counter() - started:.0f} s); wrote {out} (resumable)")

    train_talk = [c for c in talk if c.split == "train"]
    inputs = speech_predictions(speech, train_talk)
    fusion_in, fusion_gt = inputs, train_talk
    if cfg.fusion_renditions:
        heard_in, heard_gt = rendition_predictions(speech, train_talk, cfg.fusion_renditions)
        fusion_in, fusion_gt = inputs + heard_in, train_talk + heard_gt
    fusion = train_fusion(
        fusion_in,
        fusion_gt,
        expr,
        cfg,
        head.num_vertices,
        log=log,
        progress=progress,
        threads=pacer,
    )
    codes = emotion_codes(fusion, expr, cfg.fps)
    blendshapes = torch.cat(
        [
            basis.decode(fusion.speech_coeffs.detach()),
            basis.decode(fusion.expression_coeffs.detach()),
        ]
    )  # [K, V, 3]
    # Typical amplitudes: the 95th percentile of |w| on the training data.
    w_a = torch.cat([fusion.speech_encoder(x[None])[0] for x in inputs])
    amp = torch.cat([w_a.abs().quantile(0.95, dim=0), codes.abs().max(dim=0).values])
    mapping, residual = fit_flame_mapping(head, blendshapes, amp)
    log(
        f"FLAME mapping: residual {residual.mean():.3f} mm mean, {residual.max():.3f} mm worst "
        f"(per blendshape, at its typical weight)"
    )
    summary = {
        "seconds": time.perf_counter() - started,
        "mapping_residual_mm": [round(float(r), 4) for r in residual],
    }
    tensors = {
        **_state("basis", basis),
        **_state("speech", speech),
        **_state("fusion", fusion),
        "emotion_codes": codes,
        "mapping": mapping,
        "mapping_residual_mm": residual,
    }
    config = {**base_config, "fusion": asdict(fusion.cfg), "stage": "complete", "summary": summary}
    if _is_main():
        save_checkpoint(out, config, tensors)
        log(f"trained in {summary['seconds']:.0f} s; wrote {out}")
    return summary
