"""Training the animator: stage 1 (speech model), stage 2 (fusion with sparsity), emotion codes,
the FLAME mapping; single process or torch.distributed (gloo on CPU, NCCL on GPU).

`train(talking_dir, expressions_dir, out)` reads a VOCAset-format talking set and a
Florence4D-format expression set (`animator.training_data`), trains both stages
(`animator.training_stages`, each in the one loop of `animator.training_loop`), derives the
emotion codes and the FLAME mapping, and writes a checkpoint folder (safetensors + JSON). Under
`torchrun --nproc_per_node=N` every rank draws the same global batch from a shared seed and
takes its slice; DDP averages the gradients, so N processes give the result of one process with
the same global batch.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from animator.augment import AugmentConfig
from animator.emotion import EMOTIONS
from animator.models import FusionConfig, FusionModule, MotionBasis, SpeechModel, SpeechModelConfig
from animator.training_data import Clip, lip_gap_basis, load_training_data
from animator.training_loop import init_distributed, is_main
from animator.training_stages import (
    rendition_predictions,
    speech_predictions,
    train_fusion,
    train_speech_model,
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
    #: stage 2 also learns from the speech model's output on up to this many of each clip's
    #: augmented renditions (of the `augment_renditions` built; what it meets on real
    #: recordings), each against its true motion: trained on clean output only, its speech
    #: encoder fits the synthetic voices (real-speech correlation 0.602 at 1200 steps, 0.577 at
    #: 2500); with 3 renditions 0.604 at 2500
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

    def __post_init__(self) -> None:
        """Refuse settings training cannot run with, naming the flag (one line, exit 2)."""
        at_least = {
            "stage1_steps": ("--stage1-steps", 1), "stage2_steps": ("--stage2-steps", 1),
            "batch": ("--batch", 2), "speech_blendshapes": ("--speech-blendshapes", 1),
            "expression_blendshapes": ("--expression-blendshapes", 1),
            "augment_renditions": ("--augment", 0), "fusion_renditions": ("--fusion-renditions", 0),
        }  # fmt: skip
        for name, (flag, low) in at_least.items():
            if getattr(self, name) < low:
                raise TalkingAvatarError(
                    f"{flag} must be at least {low}, got {getattr(self, name)}"
                )
        weights = {"sparsity": "--sparsity", "phone_weight": "--phone-weight",
                   "gap_weight": "--gap-weight"}  # fmt: skip
        for name, flag in weights.items():
            if not math.isfinite(getattr(self, name)) or getattr(self, name) < 0:
                raise TalkingAvatarError(f"{flag} must be a weight >= 0, got {getattr(self, name)}")


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
    """`cfg` as the JSON-ready dict a checkpoint's config records."""
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
    from animator.checkpoint import save_checkpoint
    from avatar.flame import load_flame

    cfg = cfg or TrainConfig()
    init_distributed()
    pacer = TrainingThreads(threads)
    started = time.perf_counter()
    head = head if head is not None else load_flame()
    resumed = _resumed_stages(resume, log)
    basis, talk, expr, meta = load_training_data(
        talking_dir, expressions_dir, cfg, log=log if is_main() else lambda *_: None,
        renditions="speech" not in resumed or cfg.fusion_renditions > 0,
        basis=_resumed_basis(resumed),
    )  # fmt: skip
    _check_head(meta, head)
    lips = torch.as_tensor(head.region("lips"))
    lip_basis = basis.basis.view(cfg.components, -1, 3)[:, lips].reshape(cfg.components, -1)
    speech = train_speech_model(
        talk, cfg, head.num_vertices, len(meta["train_subjects"]), log=log, progress=progress,
        state=resumed.get("speech"), lip_basis=lip_basis, gap_basis=lip_gap_basis(basis, head),
        threads=pacer,
    )  # fmt: skip
    base_config = _base_config(cfg, speech, meta, head)
    if is_main() and "speech" not in resumed:
        save_checkpoint(
            out,
            {**base_config, "stage": "speech"},
            {**_state("basis", basis), **_state("speech", speech)},
        )
        log(f"stage 1 done ({time.perf_counter() - started:.0f} s); wrote {out} (resumable)")

    train_talk = [c for c in talk if c.split == "train"]
    inputs = speech_predictions(speech, train_talk)
    fusion = _stage_two(
        speech, inputs, train_talk, expr, cfg, head.num_vertices,
        log=log, progress=progress, threads=pacer,
    )  # fmt: skip
    codes = emotion_codes(fusion, expr, cfg.fps)
    mapping, residual = _flame_mapping(head, basis, fusion, codes, inputs, log)
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
    if is_main():
        save_checkpoint(out, config, tensors)
        log(f"trained in {summary['seconds']:.0f} s; wrote {out}")
    return summary


def _stage_two(
    speech: SpeechModel,
    inputs: list[torch.Tensor],
    train_talk: list[Clip],
    expr: list[Clip],
    cfg: TrainConfig,
    num_vertices: int,
    *,
    log: Callable[[str], None],
    progress: bool,
    threads: TrainingThreads,
) -> FusionModule:
    """Stage 2 on the speech model's output for the training talking clips (`inputs`) and, with
    `cfg.fusion_renditions`, for that many augmented renditions of each, against their motion."""
    heard_in, heard_gt = rendition_predictions(speech, train_talk, cfg.fusion_renditions)
    return train_fusion(
        inputs + heard_in, train_talk + heard_gt, expr, cfg, num_vertices,
        log=log, progress=progress, threads=threads,
    )  # fmt: skip


def _resumed_stages(
    resume: str | Path | None, log: Callable[[str], None]
) -> dict[str, dict[str, torch.Tensor]]:
    """The state dicts a checkpoint to `resume` from holds, by module prefix ("basis",
    "speech", ...; none without `resume`)."""
    from animator.checkpoint import load_checkpoint

    if resume is None:
        return {}
    _, tensors = load_checkpoint(resume)
    stages: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        prefix, dot, name = key.partition(".")
        if dot:
            stages.setdefault(prefix, {})[name] = value
    found = "speech model" if "speech" in stages else "none"
    log(f"resuming from {resume}: stages found: {found}")
    return stages


def _resumed_basis(resumed: dict[str, dict[str, torch.Tensor]]) -> MotionBasis | None:
    """The resumed speech model's motion basis (its outputs are coefficients in it), or None."""
    if "speech" not in resumed or "basis" not in resumed:
        return None
    rows = resumed["basis"]["basis"]
    basis = MotionBasis(rows.shape[0], rows.shape[1] // 3)
    basis.load_state_dict(resumed["basis"])
    return basis


def _check_head(meta: dict, head) -> None:
    """Refuse a head whose vertices are not those of the training meshes."""
    if meta["num_vertices"] != head.num_vertices:
        raise TalkingAvatarError(
            f"the training meshes have {meta['num_vertices']} vertices but the head model "
            f"{head.source} has {head.num_vertices}; train with the head the data was made for (--flame)"
        )


def _base_config(cfg: TrainConfig, speech: SpeechModel, meta: dict, head) -> dict:
    """What every checkpoint of this run records: the settings, the data and the head."""
    return {
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


def _flame_mapping(
    head,
    basis: MotionBasis,
    fusion: FusionModule,
    codes: torch.Tensor,
    inputs: list[torch.Tensor],
    log: Callable[[str], None],
) -> tuple[torch.Tensor, torch.Tensor]:
    """The linear map from the blend weights to FLAME and its residual per blendshape (mm),
    fitted at each blendshape's typical weight: the 95th percentile of |w_A| on the training
    speech `inputs`, the largest emotion code for w_E."""
    from animator.mapping import fit_flame_mapping

    blendshapes = torch.cat(
        [
            basis.decode(fusion.speech_coeffs.detach()),
            basis.decode(fusion.expression_coeffs.detach()),
        ]
    )  # [K, V, 3]
    w_a = torch.cat([fusion.speech_encoder(x[None])[0] for x in inputs])
    amp = torch.cat([w_a.abs().quantile(0.95, dim=0), codes.abs().max(dim=0).values])
    mapping, residual = fit_flame_mapping(head, blendshapes, amp)
    log(
        f"FLAME mapping: residual {residual.mean():.3f} mm mean, {residual.max():.3f} mm worst "
        f"(per blendshape, at its typical weight)"
    )
    return mapping, residual
