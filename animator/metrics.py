"""Evaluation: lip accuracy, upper-face dynamics, bilabial closure, disentanglement, lip sync
under emotion; the table of `talking-avatar eval` with its baselines.

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
- Expression table (`expression_table`): per emotion and intensity, how far the brows, lids,
  mouth corners, upper lip, nose and jaw move (landmarks of the head's embedding, mm), and the
  smallest largest-difference between any two emotions' displacement fields: can they be told
  apart at all?
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from animator.data.lips import inner_lip_gap
from avatar.errors import TalkingAvatarError

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
    from animator.emotion import EMOTIONS
    from avatar.flame import load_flame

    head = head if head is not None else load_flame()
    anim = Animator.load(checkpoint, head=head)
    variants = [("fusion + sparsity (ours)", anim)]
    if ablation is not None:
        variants.insert(0, ("fusion without sparsity", Animator.load(ablation, head=head)))
    data = load_vocaset(talking_dir, split=split)
    if len(data) == 0:
        data = load_vocaset(talking_dir)
    lips = head.region("lips")
    upper = head.region("upper_face")
    fps = anim.fps
    rows: dict[str, dict[str, list]] = {}

    def add(method: str, key: str, value: float) -> None:
        rows.setdefault(method, {}).setdefault(key, []).append(value)

    clips = list(data)
    log(
        f"evaluating on {len(clips)} {split} sequences of {len({c.subject for c in clips})} speakers"
    )
    for sample in clips:
        gt = torch.from_numpy(sample.offsets_at(fps))  # [T, V, 3]
        template = torch.from_numpy(np.asarray(sample.template, dtype=np.float32))
        from animator.audio import load_audio
        from animator.features import log_mel

        audio = load_audio(sample.audio, sample.sample_rate)
        mel = torch.from_numpy(log_mel(audio))[None]
        n = len(gt)
        stage1 = anim.speech_model.predict_long(mel, n)  # [T, C]
        preds = {
            "static template": torch.zeros_like(gt),
            "stage 1 alone": anim.basis.decode(stage1),
        }
        for name, model in variants:
            w_a = model.fusion.speech_encoder(model.speech_model.predict_long(mel, n)[None])
            speech_only = model.basis.decode(w_a[0] @ model.fusion.speech_coeffs)  # [T, V, 3]
            preds[name] = speech_only
            add(name, "speech_leak", 100 * energy_share(speech_only, upper))
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
            add(name, "emotion_lve", float(np.mean(emo)))
            if closures:
                add(name, "emotion_closure", float(np.mean(closures)))
        perf = anim.animate(audio, fps=fps, idle=False)
        flame_disp = head(perf.params) - head.v_template
        preds["ours through FLAME (shipped pipeline)"] = flame_disp
        # audio and motion may differ by a frame in length: compare the frames both have
        m = min(n, *(len(d) for d in preds.values()))
        gt = gt[:m]
        for method, disp in preds.items():
            disp = disp[:m]
            add(method, "lve", lve(disp, gt, lips))
            add(method, "fdd", fdd(disp, gt, upper))
            ratio, count = closure_ratio((disp + template).numpy(), sample.timings, fps, head)
            if count:
                add(method, "closure", ratio)
        ratio, count = closure_ratio((gt + template).numpy(), sample.timings, fps, head)
        if count:
            add("ground truth", "closure", ratio)
    # The expression path on the expression set: how much of its motion lands on the lips.
    from animator.data.florence import load_florence

    expr_clips = [s for s in load_florence(expressions_dir) if s.expression != "neutral"]
    for name, model in variants:
        shares = []
        for s in expr_clips:
            w_e = model.fusion.expression_encoder(
                model.basis.encode(torch.from_numpy(s.offsets_at(fps)))[None]
            )
            path = model.basis.decode(w_e[0] @ model.fusion.expression_coeffs)  # [T, V, 3]
            shares.append(energy_share(path, lips))
        add(name, "expr_leak", 100 * float(np.mean(shares)))
    order = [
        "ground truth",
        "static template",
        "stage 1 alone",
        *(name for name, _ in variants),
        "ours through FLAME (shipped pipeline)",
    ]
    table_rows = []
    for method in order:
        if method in rows:
            table_rows.append(
                {"method": method, **{k: float(np.nanmean(v)) for k, v in rows[method].items()}}
            )
    return table_rows, format_table(table_rows, COLUMNS) + "\n\n" + _expression_section(
        anim, expressions_dir, split
    )


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


# ------------------------------------------------------------------------- real-speech lip sync
SPEECH_COLUMNS = [
    ("closure", "bilabial closure (ratio)"),
    ("specificity", "bilabial specificity (ratio)"),
    ("open_mm", "open-vowel gap (mm)"),
    ("lag", "lag (frames)"),
    ("corr", "correlation"),
]

SPEECH_LEGEND = """\
Rows are medians per speaker, then over speakers. Per clip: closure = mean inner-lip gap inside p/b/m over the mean gap at open-vowel centres
(0 = shut); specificity = mean over p/b/m of the smallest gap within the phone over the same for
t/d/k/g/n (a mouth that shuts on every quiet consonant scores about 1); open-vowel gap in mm;
lag = frames of best cross-correlation between the gap and a phone opening target (positive =
mouth after sound) and that correlation. Each emotion row adds that emotion at intensity 1 to
the same clips. No idle layer.
"""


def read_speech_clips(folder: str | Path) -> list[tuple[Path, list, str]]:
    """(wav, phone spans, speaker) of every `<clip>.wav` with a `<clip>.json` beside it.

    The JSON holds {"phones": [{"symbol", "start", "end"}, ...]} (seconds; ARPAbet or eSpeak
    symbols), or the talking set's {"phonemes": [...]} with the same fields, and optionally
    "speaker" (default: the clip's name).
    """
    import json

    from animator.data.sample import TimedLabel
    from avatar.errors import TalkingAvatarError

    folder = Path(folder)
    if not folder.is_dir():
        raise TalkingAvatarError(f"--speech {folder} is not a folder of .wav + .json clips")
    clips = []
    for wav in sorted(folder.glob("*.wav")):
        meta = wav.with_suffix(".json")
        if not meta.is_file():
            continue
        try:
            data = json.loads(meta.read_text())
            spans = data.get("phones", data.get("phonemes"))
            timings = [
                TimedLabel(str(p["symbol"]), float(p["start"]), float(p["end"])) for p in spans
            ]
            speaker = str(data.get("speaker") or data.get("subject") or wav.stem)
        except (ValueError, TypeError, KeyError, AttributeError) as err:
            raise TalkingAvatarError(
                f"{meta} is not a phone-timing file ({type(err).__name__}); it needs "
                '{"phones": [{"symbol": "B", "start": 0.1, "end": 0.15}, ...]}'
            ) from None
        clips.append((wav, timings, speaker))
    if not clips:
        raise TalkingAvatarError(
            f"{folder} holds no <clip>.wav with a <clip>.json of phone timings beside it"
        )
    return clips


@torch.no_grad()
def evaluate_speech(
    anim,
    folder: str | Path,
    *,
    emotions: bool | Sequence[str] = True,
    log: Callable[[str], None] = print,
) -> tuple[list[dict], dict[str, dict[str, float]], str]:
    """Lip-sync measures (`animator.lipsync`) of an animator on recordings with phone timings.

    Medians are taken per speaker first, then over speakers, so a speaker with many clips
    does not outweigh the others; the per-speaker and per-clip tables follow.

    Args:
        emotions: True for every emotion at intensity 1 besides neutral, False for neutral
            only, or the emotions to add.

    Returns (per-clip rows, medians per condition, the Markdown tables).
    """
    from animator.audio import load_audio
    from animator.emotion import EMOTIONS, as_track
    from animator.lipsync import lip_sync_scores

    head = anim.head
    fps = anim.fps
    chosen = EMOTIONS if emotions is True else () if emotions is False else tuple(emotions)
    conditions = ["neutral", *chosen]
    clip_rows: list[dict] = []
    per_condition: dict[str, list[tuple[str, dict[str, float]]]] = {c: [] for c in conditions}
    for wav, timings, speaker in read_speech_clips(folder):
        audio = load_audio(wav)
        w_a, speaking = anim.speech_track(audio, fps=fps)
        row: dict = {"method": wav.stem, "speaker": speaker}
        for condition in conditions:
            mix = {} if condition == "neutral" else {condition: 1.0}
            perf = anim.perform(
                audio, w_a, as_track(mix), fps=fps, blinks=False, head_motion=False,
                speaking=speaking,
            )  # fmt: skip
            gap = 1000.0 * inner_lip_gap(
                head(perf.params).numpy(),
                head.region("lip_upper_inner"),
                head.region("lip_lower_inner"),
                anchors=head.region("teeth_upper"),
                reference=head.v_template.numpy(),
            )
            scores = lip_sync_scores(gap, timings, fps).as_dict()
            per_condition[condition].append((speaker, scores))
            if condition == "neutral":
                row.update(scores)
            elif not math.isnan(scores["closure"]):
                worst = row.get("worst_emotion_closure", float("nan"))
                row["worst_emotion_closure"] = (
                    scores["closure"] if math.isnan(worst) else max(worst, scores["closure"])
                )
        clip_rows.append(row)
        log(
            f"{wav.stem}: closure {row['closure']:.2f}, specificity {row['specificity']:.2f}, "
            f"open {row['open_mm']:.1f} mm, lag {row['lag']:+.0f}, corr {row['corr']:.2f}"
        )

    def median_of_speakers(rows: list[tuple[str, dict[str, float]]]) -> dict[str, float]:
        groups = _by_speaker(rows)
        return {
            k: float(np.nanmedian([_nanmedian([s[k] for s in v]) for v in groups.values()]))
            for k in rows[0][1]
        }

    medians = {c: median_of_speakers(rows) for c, rows in per_condition.items()}
    speakers = [
        {"method": name, "clips": len(v), **{k: _nanmedian([s[k] for s in v]) for k in v[0]}}
        for name, v in _by_speaker(per_condition["neutral"]).items()
    ]
    summary = format_table(
        [{"method": f"median, {c}" if c == "neutral" else f"median, {c} at 1", **m}
         for c, m in medians.items()],
        SPEECH_COLUMNS,
    )  # fmt: skip
    per_speaker = format_table(speakers, [("clips", "clips"), *SPEECH_COLUMNS], first="speaker")
    per_clip = format_table(
        clip_rows,
        [*SPEECH_COLUMNS, ("worst_emotion_closure", "worst closure under emotion")],
        first="clip",
    )
    return clip_rows, medians, f"{summary}\n\n{per_speaker}\n\n{per_clip}"


def _by_speaker(rows: list[tuple[str, dict[str, float]]]) -> dict[str, list[dict[str, float]]]:
    out: dict[str, list[dict[str, float]]] = {}
    for speaker, scores in rows:
        out.setdefault(speaker, []).append(scores)
    return out


def _nanmedian(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.median(finite)) if finite else float("nan")


# ------------------------------------------------------------------ expressions on the head
#: iBUG 68-point indices the expression table reads; the static embedding holds 17-67.
_IBUG_FIRST = 17
_OUTER_BROW = (17, 26)  # subject's right, left
_INNER_BROW = (21, 22)
_NOSE_WING = (31, 35)
_MOUTH_CORNER = (48, 54)
_UPPER_LIP = 51
_LOWER_LIP = 57
#: Lower-teeth vertices within this depth (metres) of the most forward one are the incisors.
_INCISOR_DEPTH = 0.004

EXPRESSION_COLUMNS = [
    ("inner_brow", "inner brow up (mm)"),
    ("outer_brow", "outer brow up (mm)"),
    ("lid_aperture", "lid aperture (mm)"),
    ("mouth_corner_up", "mouth corner up (mm)"),
    ("mouth_corner_out", "mouth corner out (mm)"),
    ("upper_lip", "upper lip up (mm)"),
    ("nose", "nose wing up (mm)"),
    ("jaw", "jaw drop (mm)"),
    ("max_motion", "max motion (mm)"),
]


def surface_depths(points: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Where front-view rays meet triangles: z `[R, T]` of each triangle under each point.

    Orthographic rays along -z (the head's frame) through points `[R, 2]` (x, y) against
    triangles `[T, 3, 3]`; -inf where a triangle does not cover a point (or stands edge-on).
    """
    a, b, c = triangles[:, 0], triangles[:, 1], triangles[:, 2]
    det = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (c[:, 0] - a[:, 0]) * (b[:, 1] - a[:, 1])
    det = np.where(np.abs(det) > 1e-16, det, np.nan)  # edge-on triangles hide nothing
    px = points[:, :1] - a[None, :, 0]  # [R, T]
    py = points[:, 1:2] - a[None, :, 1]
    u = (px * (c[:, 1] - a[:, 1]) - (c[:, 0] - a[:, 0]) * py) / det  # [R, T] barycentric
    v = ((b[:, 0] - a[:, 0]) * py - px * (b[:, 1] - a[:, 1])) / det
    inside = (u >= 0) & (v >= 0) & (u + v <= 1)
    return np.where(inside, a[:, 2] + u * (b[:, 2] - a[:, 2]) + v * (c[:, 2] - a[:, 2]), -np.inf)


def eyeball_visible(
    vertices: np.ndarray | torch.Tensor, head, eye: str, points: np.ndarray
) -> np.ndarray:
    """Whether the eyeball is what a viewer in front sees at each point `[R]` (bool).

    Orthographic rays along -z (the head's frame) through points `[R, 2]` (x, y in metres);
    True where the nearest surface a ray meets belongs to the `eye` region (`eye_left` or
    `eye_right`), i.e. the eye shows between the lids there.
    """
    verts = torch.as_tensor(vertices).detach().cpu().numpy().astype(np.float64)
    faces = head.faces.cpu().numpy()
    ids = head.region(eye)
    centre = verts[ids].mean(axis=0)
    radius = np.linalg.norm(verts[ids] - centre, axis=1).max()
    on_eye = np.zeros(len(verts), dtype=bool)
    on_eye[ids] = True
    near = (np.linalg.norm(verts[faces] - centre, axis=2) < 2.0 * radius).any(axis=1)
    z = surface_depths(points, verts[faces[near]])  # [R, T] the eyeball and skin around it
    first = np.argmax(z, axis=1)  # [R] the surface nearest a viewer at +z
    hit = np.isfinite(z[np.arange(len(points)), first])
    return hit & on_eye[faces[near]].all(axis=1)[first]


def lid_aperture(vertices: np.ndarray | torch.Tensor, head, *, step: float = 1e-4) -> np.ndarray:
    """Vertical lid opening `[2]` (left eye, right eye; metres) of one mesh, seen from the front.

    The total height over which the eyeball shows (`eyeball_visible`) on the vertical line
    through each eyeball's centre: 0 for a closed lid; a lid sunk into the eyeball shows as
    eyeball where skin should be.

    Args:
        vertices: `[V, 3]` metres, FLAME axes.
        head: a model with `eye_left` / `eye_right` regions and faces.
        step: ray spacing (metres).
    """
    verts = torch.as_tensor(vertices).detach().cpu().numpy().astype(np.float64)
    out = []
    for eye in ("eye_left", "eye_right"):
        ids = head.region(eye)
        centre = verts[ids].mean(axis=0)
        radius = np.linalg.norm(verts[ids] - centre, axis=1).max()
        ys = centre[1] + np.arange(-radius, radius, step)  # [R]
        line = np.stack([np.full_like(ys, centre[0]), ys], axis=1)  # [R, 2]
        out.append(float(eyeball_visible(verts, head, eye, line).sum() * step))
    return np.array(out)


def _side_of_larger(values: np.ndarray) -> float:
    """Of a (right, left) pair, the value with the larger magnitude: one-sided expressions
    (contempt) report their moving side."""
    return float(values[np.argmax(np.abs(values))])


def expression_measures(
    head,
    displacement: np.ndarray | torch.Tensor,
    *,
    rest: np.ndarray | torch.Tensor | None = None,
) -> dict[str, float]:
    """Landmark motions (mm) of one displacement field `[V, 3]` from a neutral mesh.

    Brows and lips through the head's landmark embedding (iBUG points), the lid aperture by
    `lid_aperture`, the jaw as the drop of the lower incisors (the lower lip where the head has
    no teeth). Signed: up, out (away from the midline) and jaw opening are positive.

    Args:
        head: the FLAME-format model (landmark embedding, regions, faces).
        displacement: `[V, 3]` metres.
        rest: the neutral mesh `[V, 3]` the field starts from (an identity's template); default
            the head's template.
    """
    rest = torch.as_tensor(head.v_template if rest is None else rest).detach().cpu().float()
    disp = torch.as_tensor(displacement).detach().cpu().float()
    verts = torch.stack([rest, rest + disp])  # [2, V, 3]
    lmk = head.landmarks(verts).numpy() * 1000.0  # [2, 51, 3] mm
    move = lmk[1] - lmk[0]

    def at(*ibug: int) -> np.ndarray:
        return move[[i - _IBUG_FIRST for i in ibug]]  # [k, 3]

    corner_x = lmk[0, [i - _IBUG_FIRST for i in _MOUTH_CORNER], 0]
    out = {
        "inner_brow": _side_of_larger(at(*_INNER_BROW)[:, 1]),
        "outer_brow": _side_of_larger(at(*_OUTER_BROW)[:, 1]),
        "mouth_corner_up": _side_of_larger(at(*_MOUTH_CORNER)[:, 1]),
        "mouth_corner_out": _side_of_larger(at(*_MOUTH_CORNER)[:, 0] * np.sign(corner_x)),
        "upper_lip": float(at(_UPPER_LIP)[0, 1]),
        "nose": _side_of_larger(at(*_NOSE_WING)[:, 1]),
        "max_motion": float(disp.norm(dim=-1).max()) * 1000.0,
    }
    d = disp.numpy()
    if "teeth_lower" in head.regions:
        lower = head.region("teeth_lower")
        z = rest.numpy()[lower, 2]
        incisors = lower[z > z.max() - _INCISOR_DEPTH]
        out["jaw"] = float(-d[incisors, 1].mean()) * 1000.0
    else:
        out["jaw"] = float(-at(_LOWER_LIP)[0, 1])
    if {"eye_left", "eye_right"} <= set(head.regions):
        out["lid_aperture"] = float(lid_aperture(verts[1], head).mean()) * 1000.0
    else:
        out["lid_aperture"] = float("nan")
    return out


@dataclass
class ExpressionTable:
    """`expression_table`'s result: measures per (emotion, intensity) and how distinct they are.

    Attributes:
        rows: one dict per emotion and intensity: `emotion`, `intensity`, then the
            EXPRESSION_COLUMNS keys (mm).
        rest_aperture_mm: the lid aperture of the rest pose (mean of both eyes).
        closest: per intensity, (emotion a, emotion b, mm): the pair whose displacement fields
            differ least, measured as the largest per-vertex distance between the two fields.
    """

    rows: list[dict[str, float | str]]
    rest_aperture_mm: float
    closest: dict[float, tuple[str, str, float]]

    def markdown(self) -> str:
        head = "| emotion | intensity | " + " | ".join(t for _, t in EXPRESSION_COLUMNS) + " |"
        lines = [head, "|---|---|" + "---|" * len(EXPRESSION_COLUMNS)]
        for row in self.rows:
            cells = " | ".join(f"{row[k]:.1f}" for k, _ in EXPRESSION_COLUMNS)
            lines.append(f"| {row['emotion']} | {row['intensity']:g} | {cells} |")
        lines.append("")
        lines.append(f"Rest lid aperture: {self.rest_aperture_mm:.1f} mm.")
        for intensity, (a, b, mm) in sorted(self.closest.items()):
            lines.append(
                f"Closest pair at intensity {intensity:g}: {a} / {b}, whose fields differ by "
                f"{mm:.1f} mm at most."
            )
        return "\n".join(lines)


def expression_table(
    head,
    fields: Mapping[str, Mapping[float, np.ndarray | torch.Tensor]],
    *,
    rest: np.ndarray | torch.Tensor | None = None,
) -> ExpressionTable:
    """Measure per-emotion displacement fields on a head (see `expression_measures`).

    Args:
        head: the FLAME-format model the fields belong to (landmark embedding, regions).
        fields: emotion -> intensity -> displacement `[V, 3]` (metres) from the neutral mesh:
            the ground truth of the expression set (`apex_fields`), the face units driven
            directly (`animator.data.expressions.emotion_fields`), or a trained animator's
            output for the same emotions.
        rest: the neutral mesh `[V, 3]` the fields start from; default the head's template.

    Returns:
        An `ExpressionTable` (its `markdown()` prints it).
    """
    rows: list[dict[str, float | str]] = []
    by_intensity: dict[float, dict[str, torch.Tensor]] = {}
    for emotion, per_intensity in fields.items():
        for intensity, disp in sorted(per_intensity.items()):
            d = torch.as_tensor(disp).detach().cpu().float()
            if d.shape != head.v_template.shape:
                raise ValueError(
                    f"expression_table: the {emotion} field at {intensity} has shape "
                    f"{tuple(d.shape)}, expected {tuple(head.v_template.shape)}"
                )
            measures = expression_measures(head, d, rest=rest)
            rows.append({"emotion": emotion, "intensity": float(intensity), **measures})
            by_intensity.setdefault(float(intensity), {})[emotion] = d
    closest: dict[float, tuple[str, str, float]] = {}
    for intensity, group in by_intensity.items():
        names = list(group)
        pairs = [
            (a, b, float((group[a] - group[b]).norm(dim=-1).max()) * 1000.0)
            for i, a in enumerate(names)
            for b in names[i + 1 :]
        ]
        if pairs:
            closest[intensity] = min(pairs, key=lambda p: p[2])
    neutral = head.v_template if rest is None else rest
    aperture = float(lid_aperture(neutral, head).mean()) * 1000.0
    return ExpressionTable(rows=rows, rest_aperture_mm=aperture, closest=closest)


def apex_fields(dataset, identity: str) -> tuple[np.ndarray, dict[str, dict[float, np.ndarray]]]:
    """One identity's emotions in an expression set, as `expression_table` reads them.

    Each emotion's field is its mean displacement `[V, 3]` (metres) from the identity's
    template over the apex phase of its timings (the middle third without timings), keyed as
    intensity 1; "neutral" is left out.

    Args:
        dataset: a `FlorenceDataset` (`animator.data.load_florence`).
        identity: one of `dataset.identities`.

    Returns:
        (the identity's template `[V, 3]`, emotion -> {1.0: field}).
    """
    rest = None
    fields: dict[str, dict[float, np.ndarray]] = {}
    for emotion in dataset.expressions:
        if emotion == "neutral":
            continue
        sample = dataset.sample(identity, emotion)
        apex = next((t for t in sample.timings if t.label == "apex"), None)
        n = sample.num_frames
        lo, hi = (
            (n // 3, 2 * n // 3)
            if apex is None
            else (
                int(math.floor(apex.start * sample.fps)),
                int(math.ceil(apex.end * sample.fps)),
            )
        )
        lo, hi = min(lo, n - 1), max(min(hi, n), min(lo, n - 1) + 1)
        frames = np.asarray(sample.vertices[lo:hi], dtype=np.float64)  # [k, V, 3]
        fields[emotion] = {1.0: frames.mean(axis=0) - sample.template}
        rest = np.asarray(sample.template)
    if rest is None:
        raise TalkingAvatarError(f"identity {identity} has no emotional sequences to measure")
    return rest, fields


#: The rules on top of the paper's additive model, turned off one at a time for the ablation.
SPEECH_VARIANTS = (
    ("shipped: bilabial seal + closure rule", True, True),
    ("no bilabial seal", False, True),
    ("no closure rule", True, False),
    ("the paper's plain sum (neither)", False, False),
)


def speech_ablation(anim, folder: str | Path, *, log: Callable[[str], None] = print) -> str:
    """What the bilabial seal and the closure rule each do on real speech: the closure ratio,
    specificity and correlation without emotion, and the closure ratio with surprise and fear
    at 1 (the emotions that open the mouth most), for each variant of `SPEECH_VARIANTS`."""
    rows = []
    before = anim.seal_bilabials, anim.keep_closures
    for name, seal, keep in SPEECH_VARIANTS:
        anim.seal_bilabials, anim.keep_closures = seal, keep
        try:
            _, medians, _ = evaluate_speech(
                anim, folder, emotions=("surprised", "fearful"), log=lambda *_: None
            )
        finally:
            anim.seal_bilabials, anim.keep_closures = before
        rows.append(
            {
                "method": name,
                **{k: medians["neutral"][k] for k in ("closure", "specificity", "corr")},
                "surprised": medians["surprised"]["closure"],
                "fearful": medians["fearful"]["closure"],
            }
        )
        log(f"ablation: {name} done")
    return format_table(
        rows,
        [
            ("closure", "closure, no emotion"),
            ("specificity", "specificity, no emotion"),
            ("corr", "correlation, no emotion"),
            ("surprised", "closure, surprised at 1"),
            ("fearful", "closure, fearful at 1"),
        ],
        first="variant",
    )
