"""The animator's two training stages: stage 1 fits the speech model (audio features to motion
coefficients), stage 2 the fusion module (the speech and expression blendshape bases, kept apart
by a sparsity loss); and what stage 1 hands to stage 2 (its predictions on clean clips and on
their augmented renditions).

Each stage builds its model from a fixed seed and runs the one loop of
`animator.training_loop.optimise`; `animator.train.train` runs them in order.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

import torch
from torch import nn

from animator.models import FusionConfig, FusionModule, SpeechModel, SpeechModelConfig
from animator.training_data import CLOSED_GAP_M, PHONE_CLASSES, Clip, crop_batch
from animator.training_loop import optimise, shard
from avatar.threads import TrainingThreads

if TYPE_CHECKING:
    from animator.train import TrainConfig


def _velocity(x: torch.Tensor) -> torch.Tensor:
    return x[:, 1:] - x[:, :-1]


# ---------------------------------------------------------------------------------- stage 1
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
    model = _speech_model(cfg, num_vertices, num_subjects)
    if state is not None:
        model.load_state_dict(state)
        return model
    train = [c for c in talk if c.split == "train"]
    val = [c for c in talk if c.split == "val"]

    def step_loss(net: nn.Module, gen: torch.Generator) -> tuple[torch.Tensor, dict]:
        coeffs, mel, style, phones = crop_batch(
            train, gen, cfg.batch, cfg.crop_frames, with_audio=True
        )
        coeffs, mel, style, phones = shard(coeffs), shard(mel), shard(style), shard(phones)
        if model.to_phones is not None:
            pred, logits = net(mel, cfg.crop_frames, style, with_phones=True)
        else:
            pred, logits = net(mel, cfg.crop_frames, style), None
        loss = _speech_loss(
            pred, coeffs, logits, phones, cfg, num_vertices,
            lip_basis=lip_basis, gap_basis=gap_basis,
        )  # fmt: skip
        return loss, {"loss": loss}

    def validate(step: int, shown: dict) -> None:
        if val:
            err = _speech_val_error(model, val)
            log(
                f"stage 1 step {step}: train loss {shown['loss'].item():.3e}, val rms {err * 1000:.2f} mm"
            )

    optimise(
        model, cfg, cfg.stage1_steps, seed=cfg.seed + 1, desc="stage 1: speech model",
        step_loss=step_loss, postfix=lambda shown: {"loss": f"{shown['loss'].item():.3e}"},
        validate=validate, progress=progress, threads=threads,
    )  # fmt: skip
    return model.eval()


def _speech_model(cfg: TrainConfig, num_vertices: int, num_subjects: int) -> SpeechModel:
    """A fresh speech model of `cfg`'s sizes (the viseme head only when the phone loss counts)."""
    return SpeechModel(
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


def _speech_loss(
    pred: torch.Tensor,
    coeffs: torch.Tensor,
    logits: torch.Tensor | None,
    phones: torch.Tensor | None,
    cfg: TrainConfig,
    num_vertices: int,
    *,
    lip_basis: torch.Tensor | None,
    gap_basis: torch.Tensor | None,
) -> torch.Tensor:
    """Stage 1's loss on this process's share of a batch: the motion `pred` `[B, F, C]`
    against `coeffs`, and the viseme `logits` `[B, F, P]` (or None) against `phones` `[B, F]`."""
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
        loss = loss + cfg.gap_weight * scale * (weight * (pred @ gap_basis - gap_true) ** 2).mean()
    return loss


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
    return [_predict(model, c.mel, c.num_frames, -1 if neutral else c.style) for c in clips]


def _predict(model: SpeechModel, mel: torch.Tensor, frames: int, style: int) -> torch.Tensor:
    """The speech model's output `[frames, C]` for features `[T_a, 80]` in a training style,
    or the neutral one (style < 0, long clips in windows)."""
    mel = mel.float()[None]
    if style < 0:
        return model.predict_long(mel, frames)
    return model(mel, frames, torch.tensor([style]))[0]


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
        for r in c.renditions[:count]:
            coeffs = c.coeffs if r.coeffs is None else r.coeffs
            inputs.append(_predict(model, r.mel, len(coeffs), c.style))
            targets.append(replace(c, coeffs=coeffs, renditions=[]))
    return inputs, targets


# ---------------------------------------------------------------------------------- stage 2
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
        tb = crop_batch(pairs, gen, half, cfg.crop_frames, with_audio=False).coeffs
        eb = crop_batch(expr_train, gen, half, cfg.crop_frames, with_audio=False).coeffs
        tb, eb = shard(tb), shard(eb)
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

    optimise(
        model, cfg, cfg.stage2_steps, seed=cfg.seed + 3, desc="stage 2: fusion",
        step_loss=step_loss, validate=validate, progress=progress, threads=threads,
        postfix=lambda shown: {
            "rec": f"{shown['rec'].item():.3e}", "off": f"{shown['off'].item():.3f}"
        },
    )  # fmt: skip
    return model.eval()
