"""Evaluation on held-out speakers: lip accuracy, upper-face dynamics, bilabial closure,
disentanglement, lip sync under emotion; the table of `talking-avatar eval` with its baselines.

Definitions (vertices in metres; figures reported in millimetres):
- LVE (FaceFormer/CodeTalker): per frame, the largest L2 error over the lip vertices, squared,
  averaged over frames; mm^2.
- FDD (CodeTalker): per upper-face vertex, the standard deviation over time of its displacement
  norm (its "dynamics"); the mean over vertices of |dyn(gt) - dyn(pred)|; mm.
- Bilabial closure: mean inner-lip aperture during p/b/m divided by the mean aperture at the
  centre of open vowels (0 = lips close fully; the ground truth is about 0).
- Leak: the share of the speech path's motion energy (B_A w_A on the test clips) that lies in the
  upper face; and the share of the expression path's energy (B_E w_E on the expression set's
  emotional sequences) that lies on the lips.
- Lip sync under emotion: LVE of the lips between the clip with each emotion at intensity 1 and
  the same clip without emotion, averaged over the seven emotions; mm^2. An emotion that owns
  a lip shape (a smile pulls the corners) raises it by design, so it is read together with:
- Bilabial closure under emotion: the closure ratio of the same clips with each emotion at
  intensity 1, averaged over the seven emotions: do the lips still meet on p/b/m? Both emotion
  columns go through the shipped path: FLAME, with the closure rule of `animator.closure`.

The expression tables that follow it come from `animator.expression_metrics`; the real-speech
lip-sync evaluation (`--speech`) is `animator.speech_eval`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from animator.data.lips import inner_lip_gap
from animator.expression_metrics import apex_fields, expression_table
from avatar.flame import FlameModel

if TYPE_CHECKING:
    from animator.animator import Animator


BILABIALS = {"p", "b", "m"}
OPEN_VOWELS = {"a", "a#", "aa", "A:", "A@", "aI", "aU", "0", "V", "O:", "e@", "E", "a:"}


def lve(pred: torch.Tensor, gt: torch.Tensor, lips: np.ndarray) -> float:
    """Lip vertex error `mm^2` of displacement or vertex sequences `[T, V, 3]`."""
    err = (pred[:, lips] - gt[:, lips]).norm(dim=-1).max(dim=1).values  # [T]
    return float((err**2).mean()) * 1e6


def fdd(pred: torch.Tensor, gt: torch.Tensor, upper: np.ndarray) -> float:
    """Upper-face dynamics deviation (mm) of displacement sequences `[T, V, 3]`."""
    dyn_p = pred[:, upper].norm(dim=-1).std(dim=0)
    dyn_g = gt[:, upper].norm(dim=-1).std(dim=0)
    return float((dyn_g - dyn_p).abs().mean()) * 1000.0


def _spans(timings, labels: set[str], fps: float, num: int, *, centre_only: bool) -> list[int]:
    frames: list[int] = []
    for t in timings:
        if t.label.lstrip("',") not in labels:
            continue
        if centre_only:
            if t.end - t.start >= 0.06:
                frames.append(min(num - 1, int(round((t.start + t.end) / 2 * fps))))
        else:
            lo, hi = int(math.ceil(t.start * fps)), int(math.floor(t.end * fps))
            frames.extend(range(max(lo, 0), min(hi + 1, num)))
    return frames


def closure_ratio(vertices: np.ndarray, timings, fps: float, head) -> tuple[float, float]:
    """(mean aperture during p/b/m / mean aperture at open-vowel centres, the two sums' counts).

    vertices `[T, V, 3]` metres. Returns (nan, 0) when the clip has neither kind of phoneme.
    """
    num = len(vertices)
    bil = _spans(timings, BILABIALS, fps, num, centre_only=False)
    vow = _spans(timings, OPEN_VOWELS, fps, num, centre_only=True)
    if not bil or not vow:
        return float("nan"), 0
    gap = inner_lip_gap(
        vertices,
        head.region("lip_upper_inner"),
        head.region("lip_lower_inner"),
        anchors=head.region("teeth_upper"),
        reference=head.v_template.numpy(),
    )
    return float(np.clip(gap[bil], 0, None).mean() / max(gap[vow].mean(), 1e-6)), len(bil)


def energy_share(disp: torch.Tensor, region: np.ndarray) -> float:
    """Share of the squared displacement `[..., V, 3]` that lies on the region's vertices."""
    e = disp.pow(2).sum(dim=-1)  # [..., V]
    return float(e[..., region].sum() / e.sum().clamp_min(1e-20))


def format_table(rows: list[dict], columns: list[tuple[str, str]], *, first: str = "method") -> str:
    """A Markdown table (row names under `first`, from each row's "method"); missing values
    print as n/a."""
    head = f"| {first} | " + " | ".join(title for _, title in columns) + " |"
    rule = "|---|" + "---|" * len(columns)
    lines = [head, rule]
    for row in rows:
        cells = []
        for key, _ in columns:
            v = row.get(key)
            if v is None or (isinstance(v, float) and math.isnan(v)):
                cells.append("n/a")
            else:
                cells.append(str(v) if isinstance(v, int) else f"{v:.3f}")
        lines.append(f"| {row['method']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


LEGEND = """\
Held-out speakers (the test split), neutral style, no idle layer. LVE, FDD and closure of the
fusion rows use the speech path alone (B_A w_A): what the animator plays with no emotion.
Without the sparsity loss a third of the speech motion goes through w_E and is lost there,
hence its LVE. The two emotion columns add each emotion at intensity 1: emotions own lip shapes
(a smile pulls the corners, surprise drops the jaw), so the lips move more and bilabials close
less than without emotion; with sparsity the emotions are stronger (docs/fusion_sweep.md), which
raises both. The expression-to-lips share is measured on the expression set, whose emotions
carry secondary lip and jaw motion by design; without sparsity part of that motion is carried
by w_A instead (57 % of it, docs/fusion_sweep.md), so its share looks lower.
"""

COLUMNS = [
    ("lve", "LVE (mm^2)"),
    ("fdd", "FDD (mm)"),
    ("closure", "bilabial closure (ratio)"),
    ("speech_leak", "speech leak to upper face (%)"),
    ("expr_leak", "expression leak to lips (%)"),
    ("emotion_lve", "lip sync under emotion, LVE (mm^2)"),
    ("emotion_closure", "bilabial closure under emotion (ratio)"),
]


@torch.no_grad()
def evaluate(
    checkpoint: str | Path,
    talking_dir: str | Path,
    expressions_dir: str | Path,
    *,
    ablation: str | Path | None = None,
    head=None,
    split: str = "test",
    log: Callable[[str], None] = print,
) -> tuple[list[dict], str]:
    """Evaluate a checkpoint (and an optional no-sparsity ablation) on held-out speakers.

    Returns the rows and the Markdown table.
    """
    from animator.animator import Animator
    from animator.data.vocaset import load_vocaset
    from avatar.flame import load_flame

    head = head if head is not None else load_flame()
    anim = Animator.load(checkpoint, head=head)
    variants = [("fusion + sparsity (ours)", anim)]
    if ablation is not None:
        variants.insert(0, ("fusion without sparsity", Animator.load(ablation, head=head)))
    data = load_vocaset(talking_dir, split=split)
    if len(data) == 0:
        data = load_vocaset(talking_dir)
    scores = _HeldOutScores(head, anim.fps)
    clips = list(data)
    log(
        f"evaluating on {len(clips)} {split} sequences of {len({c.subject for c in clips})} speakers"
    )
    for sample in clips:
        scores.score_clip(sample, anim, variants)
    scores.score_expression_leak(expressions_dir, variants)
    order = [
        "ground truth",
        "static template",
        "stage 1 alone",
        *(name for name, _ in variants),
        "ours through FLAME (shipped pipeline)",
    ]
    table_rows = scores.means(order)
    return table_rows, format_table(table_rows, COLUMNS) + "\n\n" + _expression_section(
        anim, expressions_dir, split
    )


@dataclass
class _HeldOutScores:
    """`evaluate`'s running values: per method and measure, one value per clip, in order.

    Attributes:
        head: the FLAME-format model every method is measured on.
        fps: the frame rate of the animator under test.
        values: method -> measure -> the values added so far.
    """

    head: FlameModel
    fps: float
    values: dict[str, dict[str, list]] = field(default_factory=dict)

    def add(self, method: str, key: str, value: float) -> None:
        """Record one clip's value of a measure."""
        self.values.setdefault(method, {}).setdefault(key, []).append(value)

    def means(self, order: list[str]) -> list[dict]:
        """One row per method that has values, in `order`: each measure's mean over clips."""
        return [
            {"method": method, **{k: float(np.nanmean(v)) for k, v in self.values[method].items()}}
            for method in order
            if method in self.values
        ]

    def score_clip(self, sample, anim, variants: list[tuple[str, Animator]]) -> None:
        """Score one held-out clip against its ground truth: the baselines, each variant's
        speech path and emotions (`score_variant`), and the shipped pipeline."""
        from animator.audio import load_audio
        from animator.features import log_mel

        head, fps = self.head, self.fps
        gt = torch.from_numpy(sample.offsets_at(fps))  # [T, V, 3]
        template = torch.from_numpy(np.asarray(sample.template, dtype=np.float32))
        audio = load_audio(sample.audio, sample.sample_rate)
        mel = torch.from_numpy(log_mel(audio))[None]
        n = len(gt)
        stage1 = anim.speech_model.predict_long(mel, n)  # [T, C]
        preds = {
            "static template": torch.zeros_like(gt),
            "stage 1 alone": anim.basis.decode(stage1),
        }
        for name, model in variants:
            preds[name] = self.score_variant(name, model, mel, n, sample, template)
        perf = anim.animate(audio, fps=fps, idle=False)
        flame_disp = head(perf.params) - head.v_template
        preds["ours through FLAME (shipped pipeline)"] = flame_disp
        # audio and motion may differ by a frame in length: compare the frames both have
        m = min(n, *(len(d) for d in preds.values()))
        gt = gt[:m]
        lips, upper = head.region("lips"), head.region("upper_face")
        for method, disp in preds.items():
            disp = disp[:m]
            self.add(method, "lve", lve(disp, gt, lips))
            self.add(method, "fdd", fdd(disp, gt, upper))
            ratio, count = closure_ratio((disp + template).numpy(), sample.timings, fps, head)
            if count:
                self.add(method, "closure", ratio)
        ratio, count = closure_ratio((gt + template).numpy(), sample.timings, fps, head)
        if count:
            self.add("ground truth", "closure", ratio)

    def score_variant(
        self, name: str, model: Animator, mel: torch.Tensor, n: int, sample, template: torch.Tensor
    ) -> torch.Tensor:
        """Score one variant on one clip: its speech path's leak to the upper face and its lip
        sync under each emotion. Returns the speech path's displacements `[T, V, 3]` (B_A w_A).

        mel: the clip's log-mel `[1, T_a, F]`; n: its frame count; template: `[V, 3]` metres.
        """
        from animator.emotion import EMOTIONS

        head, fps = self.head, self.fps
        lips = head.region("lips")
        w_a = model.fusion.speech_encoder(model.speech_model.predict_long(mel, n)[None])
        speech_only = model.basis.decode(w_a[0] @ model.fusion.speech_coeffs)  # [T, V, 3]
        self.add(name, "speech_leak", 100 * energy_share(speech_only, head.region("upper_face")))
        # Emotions go through the shipped path (FLAME, with the closure rule).
        no_emotion = torch.zeros(n, model.emotion_codes.shape[1])
        base = head(model.to_flame(w_a[0], no_emotion)) - head.v_template  # [T, V, 3]
        emo, closures = [], []
        for e in range(len(EMOTIONS)):
            w_e = model.emotion_codes[e].expand(n, -1)
            with_e = head(model.to_flame(w_a[0], w_e)) - head.v_template
            emo.append(lve(with_e, base, lips))
            ratio, count = closure_ratio((with_e + template).numpy(), sample.timings, fps, head)
            if count:
                closures.append(ratio)
        self.add(name, "emotion_lve", float(np.mean(emo)))
        if closures:
            self.add(name, "emotion_closure", float(np.mean(closures)))
        return speech_only

    def score_expression_leak(
        self, expressions_dir: str | Path, variants: list[tuple[str, Animator]]
    ) -> None:
        """The expression path on the expression set: how much of its motion lands on the lips."""
        from animator.data.florence import load_florence

        lips = self.head.region("lips")
        expr_clips = [s for s in load_florence(expressions_dir) if s.expression != "neutral"]
        for name, model in variants:
            shares = []
            for s in expr_clips:
                w_e = model.fusion.expression_encoder(
                    model.basis.encode(torch.from_numpy(s.offsets_at(self.fps)))[None]
                )
                path = model.basis.decode(w_e[0] @ model.fusion.expression_coeffs)  # [T, V, 3]
                shares.append(energy_share(path, lips))
            self.add(name, "expr_leak", 100 * float(np.mean(shares)))


def _expression_section(anim, expressions_dir: str | Path, split: str) -> str:
    """The expression tables of `talking-avatar eval`: the animator's emotions (silent face,
    shipped path) and the expression set's ground truth for one held-out identity."""
    from animator.data.florence import load_florence

    data = load_florence(expressions_dir)
    held_out = sorted(i for i, s in data.splits.items() if s == split) or sorted(data.identities)
    rest, truth = apex_fields(data, held_out[0])
    ours = expression_table(anim.head, anim.emotion_fields((0.5, 1.0))).markdown()
    theirs = expression_table(anim.head, truth, rest=rest).markdown()
    return (
        "### Emotions of the animator (silent face, through FLAME), in mm\n\n"
        f"{ours}\n\n### The expression set's apex, identity {held_out[0]} ({split}), in mm\n\n"
        f"{theirs}"
    )
