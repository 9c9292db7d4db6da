"""Generate the stand-in expression set: FACS prototypes of eight emotions, Florence4D-style.

Every identity (a random combination of the head's shape basis) performs the eight emotions of
DESIGN.md. A sequence at 60 fps goes neutral -> onset -> apex (held) -> release -> neutral, and is
built from FACS action-unit prototypes (Ekman and Friesen's EMFACS combinations) mapped onto ARKit
face units:

    happy AU6+12, sad AU1+4+15, angry AU4+5+7+23, surprised AU1+2+5+26,
    fearful AU1+2+4+5+20+26, disgusted AU9+15+16, contempt unilateral AU12+14.

Per identity the emotion intensity (0.65-1.0), each unit's share (+-20%), the left/right balance
(up to +-15%) and the side of contempt vary; units start slightly out of step (the brows lead),
and small lip/jaw motion and blinks run on top, as in real captures. The neutral sequence has only
that secondary motion.

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
from animator.data.talking import format_bytes
from avatar.errors import TalkingAvatarError
from avatar.paths import ensure_folder

__all__ = [
    "EMOTIONS",
    "ACTION_UNITS",
    "EMOTION_PROTOTYPES",
    "ExpressionClip",
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

#: FACS action unit -> ARKit face units at full intensity (pair names mean both sides).
ACTION_UNITS: dict[int, dict[str, float]] = {
    1: {"browInnerUp": 1.0},  # inner brow raiser
    2: {"browOuterUp": 1.0},  # outer brow raiser
    4: {"browDown": 1.0},  # brow lowerer
    5: {"eyeWide": 1.0},  # upper lid raiser
    6: {"cheekSquint": 1.0, "eyeSquint": 0.35},  # cheek raiser
    7: {"eyeSquint": 1.0},  # lid tightener
    9: {"noseSneer": 1.0, "mouthUpperUp": 0.45},  # nose wrinkler (lifts the upper lip too)
    12: {"mouthSmile": 1.0},  # lip corner puller
    14: {"mouthDimple": 1.0},  # dimpler
    15: {"mouthFrown": 1.0},  # lip corner depressor
    16: {"mouthLowerDown": 0.8},  # lower lip depressor
    20: {"mouthStretch": 1.0},  # lip stretcher
    23: {"mouthPress": 0.8, "mouthRollUpper": 0.15},  # lip tightener
    26: {"jawOpen": 0.4},  # jaw drop (the bundled head's jawOpen 1.0 is a 38 mm drop)
}

#: Emotion -> {action unit: intensity}. Contempt's units act on one side only.
EMOTION_PROTOTYPES: dict[str, dict[int, float]] = {
    "neutral": {},
    "happy": {6: 0.7, 12: 0.9},
    "sad": {1: 0.9, 4: 0.5, 15: 0.9},
    "angry": {4: 0.9, 5: 0.45, 7: 0.6, 23: 0.8},
    "surprised": {1: 0.9, 2: 0.9, 5: 0.8, 26: 0.8},
    "fearful": {1: 0.85, 2: 0.6, 4: 0.4, 5: 0.85, 20: 0.7, 26: 0.45},
    "disgusted": {9: 1.0, 15: 0.6, 16: 0.6},
    "contempt": {12: 0.6, 14: 0.75},
}
_UNILATERAL = {"contempt"}
# Phase durations in seconds (each identity scales them by 0.85-1.15).
_PHASES = (("neutral", 0.2), ("onset", 0.4), ("apex", 0.5), ("release", 0.45), ("neutral", 0.15))
_SMALL_IDENTITIES = 1
_DEFAULT_IDENTITIES = 10


@dataclass
class ExpressionClip:
    """One generated sequence before meshing."""

    identity: str
    emotion: str
    face_units: np.ndarray  # [T, 52], FACE_UNIT_NAMES order
    neck_pose: np.ndarray  # [T, 3]
    phases: list[dict[str, float | str]]
    action_units: dict[int, float]
    fps: float = FLORENCE_FPS


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


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
    id_rng = np.random.default_rng([seed, identity_index, 20_000])
    asymmetry = id_rng.uniform(-0.15, 0.15)
    contempt_side = "Left" if id_rng.random() < 0.5 else "Right"
    tempo = id_rng.uniform(0.85, 1.15)
    rng = np.random.default_rng([seed, identity_index, 20_001 + EMOTIONS.index(emotion)])
    intensity = rng.uniform(0.65, 1.0)

    durations = [d * tempo * rng.uniform(0.9, 1.1) for _, d in _PHASES]
    edges = np.concatenate([[0.0], np.cumsum(durations)])
    num_frames = int(round(edges[-1] * fps))
    times = np.arange(num_frames) / fps  # [T]
    onset_start, apex_start, release_start, release_end = edges[1], edges[2], edges[3], edges[4]

    weights = np.zeros((num_frames, len(FACE_UNIT_NAMES)))  # [T, 52]
    for au, au_intensity in EMOTION_PROTOTYPES[emotion].items():
        lag = rng.uniform(-0.05, 0.05) - (0.04 if au in (1, 2, 4) else 0.0)
        rise = _smoothstep((times - onset_start - lag) / (apex_start - onset_start))
        fall = 1.0 - _smoothstep((times - release_start - lag) / (release_end - release_start))
        drift = 1.0 + _smooth_noise(rng, times, 0.05)
        envelope = rise * fall * drift  # [T]
        share = au_intensity * intensity * rng.uniform(0.8, 1.2)
        for name, amount in ACTION_UNITS[au].items():
            if emotion in _UNILATERAL:
                columns = (
                    unit_index(name + contempt_side) if name + "Left" in FACE_UNIT_NAMES else []
                )
                columns = columns or unit_index(name)
                weights[:, columns] += (share * amount * envelope)[:, None]
                continue
            for column in unit_index(name):
                side = FACE_UNIT_NAMES[column]
                balance = 1.0 + (
                    asymmetry
                    if side.endswith("Left")
                    else -asymmetry
                    if side.endswith("Right")
                    else 0.0
                )
                weights[:, column] += share * amount * balance * envelope

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
        vertices = face_unit_vertices(
            head, shapes[clip.identity], clip.face_units, neck_pose=clip.neck_pose
        )  # [T, V, 3]
        folder = out / clip.identity / clip.emotion
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
    splits = {"train": names[:-2] or names, "val": names[-2:-1], "test": names[-1:]}
    if count < 3:
        splits = {"train": names, "val": [], "test": []}
    meta = {
        "fps": FLORENCE_FPS,
        "generator": "talking-avatar stand-in expression set (synthetic, not Florence 4D)",
        "seed": seed,
        "emotions": list(EMOTIONS),
        "identities": names,
        "splits": splits,
    }
    (out / DATASET_FILE).write_text(json.dumps(meta, indent=1))
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    elapsed = time.perf_counter() - started
    say(f"  {out}: {format_bytes(total)} in {sum(1 for _ in out.rglob('*.ply'))} PLY files")
    say(
        f"wrote {len(clips)} sequences ({num_frames} frames), {format_bytes(total)} in {elapsed:.0f} s"
    )
    return {"sequences": len(clips), "frames": num_frames, "bytes": total, "elapsed_s": elapsed}
