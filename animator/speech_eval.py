"""The real-speech lip-sync evaluation of `talking-avatar eval --speech`, and its ablation.

An animator speaks recordings with phone timings (`<clip>.wav` + `<clip>.json`, read by
`read_speech_clips`); the lip-sync measures of `animator.lipsync` are taken on the inner-lip
gap of the shipped path (FLAME, with the closure rule), without emotion and with each emotion
at intensity 1 (`evaluate_speech`). `speech_ablation` turns the rules on top of the paper's
additive model (the bilabial seal, the closure rule) off one at a time.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from animator.data.lips import inner_lip_gap
from animator.metrics import format_table
from avatar.errors import TalkingAvatarError

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
    from animator.emotion import EMOTIONS

    chosen = EMOTIONS if emotions is True else () if emotions is False else tuple(emotions)
    conditions = ["neutral", *chosen]
    clip_rows: list[dict] = []
    per_condition: dict[str, list[tuple[str, dict[str, float]]]] = {c: [] for c in conditions}
    for wav, timings, speaker in read_speech_clips(folder):
        row: dict = {"method": wav.stem, "speaker": speaker}
        for condition, scores in _clip_scores(anim, load_audio(wav), timings, conditions):
            per_condition[condition].append((speaker, scores))
            _add_to_row(row, condition, scores)
        clip_rows.append(row)
        log(
            f"{wav.stem}: closure {row['closure']:.2f}, specificity {row['specificity']:.2f}, "
            f"open {row['open_mm']:.1f} mm, lag {row['lag']:+.0f}, corr {row['corr']:.2f}"
        )
    medians, tables = _speech_tables(clip_rows, per_condition)
    return clip_rows, medians, tables


def _clip_scores(
    anim, audio: np.ndarray, timings: list, conditions: Sequence[str]
) -> list[tuple[str, dict[str, float]]]:
    """(condition, lip-sync scores) of one clip for each condition: "neutral" or an emotion at
    intensity 1, through the shipped path without the idle layer."""
    from animator.emotion import as_track
    from animator.lipsync import lip_sync_scores

    head = anim.head
    fps = anim.fps
    w_a, speaking = anim.speech_track(audio, fps=fps)
    out = []
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
        out.append((condition, lip_sync_scores(gap, timings, fps).as_dict()))
    return out


def _add_to_row(row: dict, condition: str, scores: dict[str, float]) -> None:
    """Put one condition's scores in a clip's row: neutral's as they are, an emotion's closure
    into the worst closure under emotion."""
    if condition == "neutral":
        row.update(scores)
    elif not math.isnan(scores["closure"]):
        worst = row.get("worst_emotion_closure", float("nan"))
        row["worst_emotion_closure"] = (
            scores["closure"] if math.isnan(worst) else max(worst, scores["closure"])
        )


def _median_of_speakers(rows: list[tuple[str, dict[str, float]]]) -> dict[str, float]:
    """Per measure, the median over speakers of each speaker's median."""
    groups = _by_speaker(rows)
    return {
        k: float(np.nanmedian([_nanmedian([s[k] for s in v]) for v in groups.values()]))
        for k in rows[0][1]
    }


def _speech_tables(
    clip_rows: list[dict], per_condition: dict[str, list[tuple[str, dict[str, float]]]]
) -> tuple[dict[str, dict[str, float]], str]:
    """The medians per condition and the Markdown tables: summary, per speaker, per clip."""
    medians = {c: _median_of_speakers(rows) for c, rows in per_condition.items()}
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
    return medians, f"{summary}\n\n{per_speaker}\n\n{per_clip}"


def _by_speaker(rows: list[tuple[str, dict[str, float]]]) -> dict[str, list[dict[str, float]]]:
    """Scores grouped by speaker, in the order speakers first appear."""
    out: dict[str, list[dict[str, float]]] = {}
    for speaker, scores in rows:
        out.setdefault(speaker, []).append(scores)
    return out


def _nanmedian(values: list[float]) -> float:
    """The median of the values that are not NaN; NaN when none is."""
    finite = [v for v in values if not math.isnan(v)]
    return float(np.median(finite)) if finite else float("nan")


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
