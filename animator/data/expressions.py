"""Generate the stand-in expression set: FACS prototypes of eight emotions, Florence4D-style.

Every identity (a random combination of the head's shape basis) performs the eight emotions of
DESIGN.md. A sequence at 60 fps goes neutral -> onset -> apex (held) -> release -> neutral. Each
emotion is its EMFACS prototype (Ekman and Friesen's combinations of FACS action units), driven
through the head's face units (ACTION_UNITS; the FACS units `AU<nn>` of the bundled head are
built by scripts/facs_units.py, amplitudes and sources in docs/expressions.md):

    happy AU6+12, sad AU1+4+15+17, angry AU4+5+7+23+24, surprised AU1+2+5+26,
    fearful AU1+2+4+5+7+20+26, disgusted AU9+10+15+16, contempt unilateral AU12+14.

`emotion_weights(emotion, intensity)` is the canonical mapping: intensity 1 is a strong,
unmistakable expression (action units at FACS intensity D-E), 0.5 a clear, moderate one.

Identities differ as people do in posed-expression captures: each has its own expressiveness
(intensity x0.85-1.15), left/right balance (up to +-15 %; contempt on the subject's left in every
identity, so that the learned code stays one-sided) and timing
(onset, apex hold and offset each x0.75-1.3); per sequence each action unit's share varies by
+-10 % and units start slightly out of step (the brows lead). Small lip/jaw motion and blinks run
on top, as in real captures. The neutral sequence has only that secondary motion.

Output (read it with `florence.load_florence`):

    <out>/dataset.json                                fps, emotions, identities, splits
    <out>/<identity>/template.ply                     neutral mesh with faces
    <out>/<identity>/<emotion>/<emotion>_<frame:03d>.ply   vertex-only binary PLY per frame
    <out>/<identity>/<emotion>/timings.json           phases and the action units used

Split by identity: the last identity is test, the one before it validation, the rest training.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from animator.data.driving import face_unit_vertices, identity_template, require_face_units
from animator.data.face_units import FACE_UNIT_NAMES, unit_index
from animator.data.florence import DATASET_FILE, FLORENCE_FPS, TIMINGS_FILE
from animator.data.meshio import write_ply
from animator.data.sizes import format_bytes
from avatar.easing import smoothstep
from avatar.errors import TalkingAvatarError
from avatar.paths import ensure_folder

__all__ = [
    "EMOTIONS",
    "ACTION_UNITS",
    "EMOTION_PROTOTYPES",
    "Expressiveness",
    "ExpressionClip",
    "action_unit_weights",
    "emotion_weights",
    "emotion_fields",
    "emotion_clip",
    "generate_expression_set",
]

#: DESIGN.md's emotion labels.
EMOTIONS: tuple[str, ...] = (
    "neutral",
    "happy",
    "sad",
    "angry",
    "surprised",
    "fearful",
    "disgusted",
    "contempt",
)

#: FACS action unit -> face units at FACS intensity E (pair names mean both sides).
ACTION_UNITS: dict[int, dict[str, float]] = {
    1: {"AU01": 1.0},  # inner brow raiser
    2: {"AU02": 1.0},  # outer brow raiser
    4: {"AU04": 1.0},  # brow lowerer
    5: {"AU05": 1.0},  # upper lid raiser
    6: {"AU06": 1.0},  # cheek raiser
    7: {"AU07": 1.0},  # lid tightener
    9: {"AU09": 1.0},  # nose wrinkler
    10: {"AU10": 1.0},  # upper lip raiser
    12: {"AU12": 1.0},  # lip corner puller
    14: {"mouthDimple": 1.0},  # dimpler
    15: {"AU15": 1.0},  # lip corner depressor
    16: {"AU16": 1.0},  # lower lip depressor
    17: {"AU17": 1.0},  # chin raiser
    20: {"AU20": 1.0},  # lip stretcher
    23: {"AU23": 1.0},  # lip tightener
    24: {"AU24": 1.0},  # lip pressor
    25: {"jawOpen": 0.12, "mouthLowerDown": 0.6, "mouthUpperUp": 0.3},  # lips part
    26: {"jawOpen": 0.55},  # jaw drop (the bundled head's jawOpen 1.0 is a 21-degree, 38 mm drop)
}

#: Emotion -> {action unit: weight at intensity 1}. Contempt's units act on one side only.
EMOTION_PROTOTYPES: dict[str, dict[int, float]] = {
    "neutral": {},
    "happy": {6: 1.0, 12: 1.0, 25: 1.0},
    "sad": {1: 1.0, 4: 0.4, 15: 1.0, 17: 0.5},
    "angry": {4: 1.0, 5: 0.6, 7: 0.7, 23: 0.8, 24: 0.5},
    "surprised": {1: 0.9, 2: 0.9, 5: 0.8, 26: 0.8},
    "fearful": {1: 1.0, 2: 0.8, 4: 0.5, 5: 1.0, 7: 0.4, 16: 0.5, 20: 1.0, 26: 0.7},
    "disgusted": {4: 0.3, 9: 1.0, 10: 0.8, 15: 0.5, 16: 0.5},
    "contempt": {12: 0.6, 14: 0.8},
}
_UNILATERAL = {"contempt"}
# Phase durations in seconds at an identity's own pace (see Expressiveness).
_PHASES = (("neutral", 0.2), ("onset", 0.4), ("apex", 0.5), ("release", 0.45), ("neutral", 0.15))
_SMALL_IDENTITIES = 1
_DEFAULT_IDENTITIES = 10


#: The side of contempt's one-sided action units in every identity (the subject's left).
CONTEMPT_SIDE = "Left"


@dataclass(frozen=True)
class Expressiveness:
    """How one identity performs: intensity gain, left/right balance, contempt's side, pace.

    Attributes:
        gain: multiplies every action unit (0.85-1.15).
        asymmetry: the left side gets 1 + asymmetry, the right 1 - asymmetry (+-0.15).
        side: the side of one-sided (contempt) action units, "Left" or "Right". The same for
            every identity of a set (`CONTEMPT_SIDE`): the animator learns one code per emotion
            as the mean over identities, and contempt on both sides would average into a weak
            two-sided smile, losing the asymmetry that defines it.
        onset, apex, offset: duration scales of the rise, the held apex and the release.
    """

    gain: float = 1.0
    asymmetry: float = 0.0
    side: str = "Left"
    onset: float = 1.0
    apex: float = 1.0
    offset: float = 1.0

    @classmethod
    def draw(cls, seed: int, identity_index: int) -> Expressiveness:
        rng = np.random.default_rng([seed, identity_index, 20_000])
        return cls(
            gain=float(rng.uniform(0.85, 1.15)),
            asymmetry=float(rng.uniform(-0.15, 0.15)),
            side=CONTEMPT_SIDE,
            onset=float(rng.uniform(0.75, 1.3)),
            apex=float(rng.uniform(0.75, 1.3)),
            offset=float(rng.uniform(0.75, 1.3)),
        )


def action_unit_weights(
    au: int, amount: float, *, asymmetry: float = 0.0, side: str | None = None
) -> np.ndarray:
    """Face-unit weights `[U]` (FACE_UNIT_NAMES order) of one action unit at `amount`.

    Left/Right pairs get 1 +- asymmetry; with `side` ("Left" or "Right") a pair acts on that
    side only (midline units act in full). Not clipped.
    """
    if au not in ACTION_UNITS:
        raise TalkingAvatarError(
            f"unknown action unit {au}; use one of {', '.join(map(str, sorted(ACTION_UNITS)))}"
        )
    weights = np.zeros(len(FACE_UNIT_NAMES))  # [U]
    for name, share in ACTION_UNITS[au].items():
        for column in unit_index(name):
            unit = FACE_UNIT_NAMES[column]
            lateral = unit.endswith(("Left", "Right"))
            if side is not None and lateral and not unit.endswith(side):
                continue
            balance = 1.0
            if lateral and side is None:
                balance += asymmetry if unit.endswith("Left") else -asymmetry
            weights[column] += amount * share * balance
    return weights


def emotion_weights(
    emotion: str, intensity: float = 1.0, *, style: Expressiveness | None = None
) -> np.ndarray:
    """Face-unit weights `[U]` in [0, 1] (FACE_UNIT_NAMES order) of an emotion's prototype.

    Args:
        emotion: one of EMOTIONS ("neutral" gives zeros).
        intensity: 1 is strong and unmistakable, 0.5 clear and moderate.
        style: an identity's expressiveness (default: the canonical, symmetric face).
    """
    if emotion not in EMOTION_PROTOTYPES:
        raise TalkingAvatarError(f"unknown emotion {emotion!r}; use one of {', '.join(EMOTIONS)}")
    style = style or Expressiveness()
    side = style.side if emotion in _UNILATERAL else None
    weights = sum(
        (
            action_unit_weights(
                au, amount * intensity * style.gain, asymmetry=style.asymmetry, side=side
            )
            for au, amount in EMOTION_PROTOTYPES[emotion].items()
        ),
        start=np.zeros(len(FACE_UNIT_NAMES)),
    )
    return np.clip(weights, 0.0, 1.0)


def emotion_fields(
    head, intensities: tuple[float, ...] = (0.5, 1.0)
) -> dict[str, dict[float, np.ndarray]]:
    """Displacement fields `[V, 3]` (metres) of the seven emotions driven directly through the
    head's face units at each intensity: `animator.expression_metrics.expression_table`'s input."""
    require_face_units(head)
    rest = head.v_template.numpy()
    zero = np.zeros(head.num_shape, dtype=np.float32)
    out: dict[str, dict[float, np.ndarray]] = {}
    for emotion in EMOTIONS[1:]:
        weights = np.stack([emotion_weights(emotion, x) for x in intensities])  # [I, U]
        verts = face_unit_vertices(head, zero, weights)  # [I, V, 3]
        out[emotion] = {x: v - rest for x, v in zip(intensities, verts, strict=True)}
    return out


@dataclass
class ExpressionClip:
    """One generated sequence before meshing."""

    identity: str
    emotion: str
    face_units: np.ndarray  # [T, U], FACE_UNIT_NAMES order
    neck_pose: np.ndarray  # [T, 3]
    phases: list[dict[str, float | str]]
    action_units: dict[int, float]
    fps: float = FLORENCE_FPS


def _smooth_noise(rng: np.random.Generator, times: np.ndarray, scale: float) -> np.ndarray:
    """A slow random wiggle `[T]` of about `scale` amplitude (three random sinusoids)."""
    out = np.zeros_like(times)
    for _ in range(3):
        out += np.sin(2 * np.pi * rng.uniform(0.3, 1.5) * times + rng.uniform(0, 2 * np.pi))
    return scale * out / 3.0


def emotion_clip(
    identity: str, identity_index: int, emotion: str, seed: int, *, fps: float = FLORENCE_FPS
) -> ExpressionClip:
    """Face-unit curves of one identity performing one emotion (deterministic in the seed)."""
    if emotion not in EMOTION_PROTOTYPES:
        raise TalkingAvatarError(f"unknown emotion {emotion!r}; use one of {', '.join(EMOTIONS)}")
    style = Expressiveness.draw(seed, identity_index)
    rng = np.random.default_rng([seed, identity_index, 20_001 + EMOTIONS.index(emotion)])
    pace = dict(
        zip(
            ("neutral", "onset", "apex", "release"),
            (1.0, style.onset, style.apex, style.offset),
            strict=True,
        )
    )
    durations = [d * pace[label] * rng.uniform(0.92, 1.08) for label, d in _PHASES]
    edges = np.concatenate([[0.0], np.cumsum(durations)])
    num_frames = int(round(edges[-1] * fps))
    times = np.arange(num_frames) / fps  # [T]
    onset_start, apex_start, release_start, release_end = edges[1], edges[2], edges[3], edges[4]

    weights = np.zeros((num_frames, len(FACE_UNIT_NAMES)))  # [T, U]
    side = style.side if emotion in _UNILATERAL else None
    for au, amount in EMOTION_PROTOTYPES[emotion].items():
        lag = rng.uniform(-0.04, 0.04) - (0.04 if au in (1, 2, 4) else 0.0)
        rise = smoothstep((times - onset_start - lag) / (apex_start - onset_start))
        fall = 1.0 - smoothstep((times - release_start - lag) / (release_end - release_start))
        drift = 1.0 + _smooth_noise(rng, times, 0.04)
        envelope = rise * fall * drift  # [T]
        share = amount * style.gain * rng.uniform(0.9, 1.1)
        unit = action_unit_weights(au, share, asymmetry=style.asymmetry, side=side)  # [U]
        weights += envelope[:, None] * unit[None, :]

    # Secondary motion: small jaw/lip movement and a blink or two.
    weights[:, unit_index("jawOpen")[0]] += np.abs(_smooth_noise(rng, times, 0.03))
    for name in ("mouthPress", "mouthRollLower", "mouthShrugLower"):
        weights[:, unit_index(name)] += np.abs(_smooth_noise(rng, times, 0.04))[:, None]
    blink_cols = unit_index("eyeBlink")
    for _ in range(rng.integers(0, 3)):
        start = rng.uniform(0.1, max(0.2, times[-1] - 0.3))
        t = times - start
        closing = np.sin(0.5 * np.pi * np.clip(t / 0.07, 0, 1)) ** 2
        opening = np.cos(0.5 * np.pi * np.clip((t - 0.1) / 0.13, 0, 1)) ** 2
        blink = np.where(t < 0, 0.0, np.where(t < 0.1, closing, opening))
        weights[:, blink_cols] += blink[:, None] * rng.uniform(0.8, 1.0)
    neck = np.stack([_smooth_noise(rng, times, np.deg2rad(0.4)) for _ in range(3)], axis=1)

    phases = [
        {"label": label, "start": round(float(a), 6), "end": round(float(b), 6)}
        for (label, _), a, b in zip(_PHASES, edges[:-1], edges[1:], strict=True)
    ]
    return ExpressionClip(
        identity=identity,
        emotion=emotion,
        face_units=np.clip(weights, 0.0, 1.0),
        neck_pose=neck,
        phases=phases,
        action_units=dict(EMOTION_PROTOTYPES[emotion]),
        fps=fps,
    )


def _identity_shape(head, seed: int, index: int) -> np.ndarray:
    rng = np.random.default_rng([seed, index, 20_000 - 1])
    return np.clip(rng.normal(0.0, 1.0, head.num_shape), -2.5, 2.5).astype(np.float32)


def generate_expression_set(
    out: str | Path,
    *,
    small: bool = False,
    seed: int = 0,
    identities: int | None = None,
    head=None,
    progress: bool = True,
    log=print,
) -> dict[str, object]:
    """Write the stand-in expression set in the Florence4D-style layout (see the module docstring).

    Args:
        out: output folder (created).
        small: one identity (8 sequences) for tests and quick looks.
        seed: everything is deterministic in it.
        identities: number of identities (default 10, or 1 with `small`).
        head: a head with face units; default the bundled head.
        progress: show a tqdm progress bar.
        log: where the one-line messages go (None for silence).

    Returns:
        A summary: sequences, frames, bytes, elapsed seconds.
    """
    from tqdm import tqdm

    say = log or (lambda *_: None)
    started = time.perf_counter()
    out = ensure_folder(out)  # before the slow part: a bad --out fails at once
    if head is None:
        from avatar.flame import load_flame

        head = load_flame()
    require_face_units(head)
    count = identities or (_SMALL_IDENTITIES if small else _DEFAULT_IDENTITIES)
    names = [f"SynthExpr_{i + 1:02d}" for i in range(count)]
    clips = [emotion_clip(name, i, e, seed) for i, name in enumerate(names) for e in EMOTIONS]
    num_frames = sum(c.face_units.shape[0] for c in clips)
    frame_bytes = int(head.v_template.shape[0]) * 12 + 160
    say(
        f"{len(clips)} sequences ({count} identities x {len(EMOTIONS)} emotions), "
        f"{num_frames} frames at 60 fps -> about {format_bytes(num_frames * frame_bytes)} of PLY"
    )
    if num_frames * frame_bytes * 1.1 > shutil.disk_usage(out).free:
        raise TalkingAvatarError(
            f"{out} lacks the free space for the expression set; pick another --out or use --small"
        )
    faces = head.faces.numpy()
    shapes = {name: _identity_shape(head, seed, i) for i, name in enumerate(names)}
    for name in names:
        (out / name).mkdir(exist_ok=True)
        write_ply(out / name / "template.ply", identity_template(head, shapes[name]), faces)
    for clip in tqdm(clips, desc="expressions", unit="sequence", disable=not progress):
        _write_sequence(out / clip.identity / clip.emotion, head, shapes[clip.identity], clip)
    (out / DATASET_FILE).write_text(json.dumps(_dataset_meta(names, seed), indent=1))
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    elapsed = time.perf_counter() - started
    say(f"  {out}: {format_bytes(total)} in {sum(1 for _ in out.rglob('*.ply'))} PLY files")
    say(
        f"wrote {len(clips)} sequences ({num_frames} frames), {format_bytes(total)} in {elapsed:.0f} s"
    )
    return {"sequences": len(clips), "frames": num_frames, "bytes": total, "elapsed_s": elapsed}


def _write_sequence(folder: Path, head, shape: np.ndarray, clip: ExpressionClip) -> None:
    """One sequence into `folder`: a vertex-only PLY per frame (replacing any there) and
    `timings.json`; `shape` `[S]` is the identity's."""
    vertices = face_unit_vertices(
        head, shape, clip.face_units, neck_pose=clip.neck_pose
    )  # [T, V, 3]
    folder.mkdir(exist_ok=True)
    for old in folder.glob("*.ply"):
        old.unlink()
    for k, frame in enumerate(vertices):
        write_ply(folder / f"{clip.emotion}_{k:03d}.ply", frame)
    timings = {
        "fps": clip.fps,
        "num_frames": int(vertices.shape[0]),
        "phases": clip.phases,
        "action_units": {str(k): v for k, v in clip.action_units.items()},
    }
    (folder / TIMINGS_FILE).write_text(json.dumps(timings, indent=1))


def _dataset_meta(names: list[str], seed: int) -> dict:
    """`dataset.json`: the last identity is test, the one before validation, the rest training
    (all training below three identities)."""
    splits = {"train": names[:-2] or names, "val": names[-2:-1], "test": names[-1:]}
    if len(names) < 3:
        splits = {"train": names, "val": [], "test": []}
    return {
        "fps": FLORENCE_FPS,
        "generator": "talking-avatar stand-in expression set (synthetic, not Florence 4D)",
        "seed": seed,
        "emotions": list(EMOTIONS),
        "identities": names,
        "splits": splits,
    }
