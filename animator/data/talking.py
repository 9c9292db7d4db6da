"""Generate the stand-in talking set: synthetic speech with known phoneme timings, as VOCAset.

Each speaker has a voice from a registered speech engine (`voices.py`: eSpeak NG's English
variants with an accent, rate and pitch of their own; other engines plug in there), an identity
(a random combination of the head's shape basis, kept only if the lips still close at rest), and
an articulation style (amplitude, jaw versus lip use, rest posture). A sentence becomes:

1. audio and phoneme spans from the engine, padded with silence at both ends;
2. coarticulated mouth curves in ARKit face units (`visemes.mouth_curves`), sampled at 60 fps,
   with exact lip closure inside every p/b/m;
3. the secondary motion real talking data has: brow raises on some stressed syllables, blinks,
   slight head motion (neck rotation) with nods on stresses;
4. vertices from the head (`driving.face_unit_vertices`), streamed into `data_verts.npy`.

Output (see `vocaset.py` for the format): VOCAset's four files, `phonemes/<subject>/<sentence>.json`
with the ground-truth spans, `splits.json`, and `README.txt` saying what the folder is.

Split (our own): whole voices (timbres) are assigned to train, val or test (`voices.split_voices`),
and every clip says its own sentence from `sentences.sentence_pool`, so validation and test have
unheard voices, unseen faces and unseen text. Many speakers say a few sentences each:
`SPEAKERS_PER_VOICE` speakers per voice, `SENTENCES_PER_SPEAKER` sentences per speaker.

Everything is a function of the seed: speaker i and sentence j draw from
`np.random.default_rng([seed, i, j])`, so the small set (the first speaker of each split, two
sentences each) is an exact subset of the default one.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np

from animator.data.driving import face_unit_vertices, identity_template, require_face_units
from animator.data.espeak import Phoneme, Utterance
from animator.data.face_units import FACE_UNIT_NAMES, unit_index
from animator.data.lips import inner_lip_gap
from animator.data.sentences import sentence_pool
from animator.data.sizes import format_bytes
from animator.data.visemes import ArticulationStyle, mouth_curves, viseme_of
from animator.data.vocaset import PHONEME_DIR, SPLITS_FILE, VOCASET_FPS, VocasetWriter
from animator.data.voices import SPLITS, engines, get_engine, split_voices, voice_key
from avatar.errors import TalkingAvatarError
from avatar.paths import ensure_folder

__all__ = [
    "Speaker",
    "TalkingClip",
    "make_speakers",
    "sentence_plan",
    "synthesize_clip",
    "generate_talking_set",
    "lip_gap",
]

#: Speakers per voice (timbre) in each split, and sentences each of them says.
SPEAKERS_PER_VOICE: dict[str, int] = {"train": 3, "val": 1, "test": 2}
SENTENCES_PER_SPEAKER: dict[str, int] = {"train": 3, "val": 3, "test": 2}
_SMALL_SENTENCES = 2
_LEAD_SILENCE_S = (0.2, 0.35)
_TRAIL_SILENCE_S = (0.25, 0.4)
_MAX_REST_GAP_M = 0.0008  # an identity whose lips part at rest is redrawn


@dataclass(frozen=True)
class Speaker:
    """One synthetic speaker.

    Attributes:
        name: subject name in the dataset ("SynthTalk_001").
        index: 0-based speaker number (feeds the random streams).
        engine: the speech engine's registered name ("espeak").
        timbre: the engine's voice this speaker is a setting of (the unit of the split).
        voice: what the engine's `synthesize` takes (for eSpeak a `Voice`: accent+variant,
            rate, pitch).
        shape: identity coefficients of the head's shape basis `[S]`.
        style: articulation style.
        brow_rate: probability that a primary-stressed syllable raises the brows.
        brow_gain: size of those raises (face-unit weight).
        blink_interval_s: mean time between blinks.
        head_motion_rad: amplitude of the slow head sway (radians).
        split: "train", "val" or "test".
        sentences: (sentence name, text) pairs this speaker says.
    """

    name: str
    index: int
    engine: str
    timbre: str
    voice: Any
    shape: np.ndarray
    style: ArticulationStyle
    brow_rate: float
    brow_gain: float
    blink_interval_s: float
    head_motion_rad: float
    split: str
    sentences: tuple[tuple[str, str], ...] = ()


@dataclass
class TalkingClip:
    """One generated sentence: audio, phonemes, face-unit curves and poses at 60 fps."""

    speaker: Speaker
    sentence: str
    text: str
    audio: np.ndarray  # [N] int16
    sample_rate: int
    phonemes: list[Phoneme]
    face_units: np.ndarray  # [T, U], FACE_UNIT_NAMES order
    neck_pose: np.ndarray  # [T, 3]
    voice: Any = None  # the setting the engine used (eSpeak may have lowered the volume)
    fps: float = VOCASET_FPS
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def num_frames(self) -> int:
        return int(self.face_units.shape[0])


def lip_gap(vertices: np.ndarray, head, template: np.ndarray) -> np.ndarray:
    """Inner-lip aperture `[T]` (metres) of frames `[T, V, 3]` of a head, head motion removed."""
    return inner_lip_gap(
        vertices,
        head.regions["lip_upper_inner"],
        head.regions["lip_lower_inner"],
        anchors=head.regions.get("teeth_upper"),
        reference=template,
    )


def _voice_plan(seed: int) -> list[tuple[str, str, Any, str]]:
    """(engine, timbre key, timbre, split) per speaker, train speakers first, then val, test.

    Voices are split per engine, balanced over their `gender` attribute where they have one.
    """
    per_engine = []
    for engine in engines():
        splits = split_voices(
            list(engine.voices()),
            seed,
            held_out=engine.held_out,
            groups=lambda t: str(getattr(t, "gender", "")),
            pinned=engine.pinned,
        )
        per_engine.append((engine.name, splits))
    plan = []
    for split in SPLITS:
        for engine_name, splits in per_engine:
            per_voice = get_engine(engine_name).speakers_per_voice or SPEAKERS_PER_VOICE
            for timbre in splits[split]:
                for _ in range(per_voice[split]):
                    plan.append((engine_name, voice_key(timbre), timbre, split))
    return plan


def make_speakers(head, seed: int, *, small: bool = False) -> list[Speaker]:
    """The speakers of the default set with their sentences (deterministic in `seed`).

    With `small`, only the first speaker of each split (the same speakers as in the full set).
    """
    require_face_units(head)
    plan = _voice_plan(seed)
    counts = {
        split: SENTENCES_PER_SPEAKER[split] * sum(1 for *_, s in plan if s == split)
        for split in SPLITS
    }
    pool = sentence_pool(counts["train"], counts["val"], counts["test"], seed)
    numbering = {"train": 0, "val": counts["train"], "test": counts["train"] + counts["val"]}
    used = dict.fromkeys(SPLITS, 0)
    width = max(2, len(str(sum(counts.values()))))
    speakers = []
    for i, (engine_name, timbre_key, timbre, split) in enumerate(plan):
        take = SENTENCES_PER_SPEAKER[split]
        first = used[split]
        used[split] += take
        if small and first > 0:
            continue
        rng = np.random.default_rng([seed, i, 10_000])
        engine = get_engine(engine_name)
        voice = engine.speaker_voice(timbre, rng) if engine.speaker_voice else timbre
        sentences = tuple(
            (f"sentence{numbering[split] + k + 1:0{width}d}", pool[split][k])
            for k in range(first, first + take)
        )
        for _ in range(50):
            shape = np.clip(rng.normal(0.0, 1.0, head.num_shape), -2.5, 2.5).astype(np.float32)
            template = identity_template(head, shape)
            if lip_gap(template[None], head, template)[0] < _MAX_REST_GAP_M:
                break
        else:  # pragma: no cover - the neutral shape always closes
            shape = np.zeros(head.num_shape, dtype=np.float32)
        rest = {}
        if rng.random() < 0.5:
            rest["mouthSmile"] = float(rng.uniform(0.0, 0.12))
        else:
            rest["mouthFrown"] = float(rng.uniform(0.0, 0.1))
        style = ArticulationStyle(
            amplitude=float(rng.uniform(0.85, 1.2)),
            jaw_ratio=float(rng.uniform(0.8, 1.25)),
            anticipation_s=float(rng.uniform(0.045, 0.08)),
            carryover_s=float(rng.uniform(0.03, 0.05)),
            rest=rest,
        )
        speakers.append(
            Speaker(
                name=f"SynthTalk_{i + 1:03d}",
                index=i,
                engine=engine_name,
                timbre=timbre_key,
                voice=voice,
                shape=shape,
                style=style,
                brow_rate=float(rng.uniform(0.2, 0.7)),
                brow_gain=float(rng.uniform(0.2, 0.5)),
                blink_interval_s=float(rng.uniform(2.0, 4.5)),
                head_motion_rad=float(np.deg2rad(rng.uniform(0.8, 2.2))),
                split=split,
                sentences=sentences,
            )
        )
    return speakers


def sentence_plan(speaker: Speaker) -> list[tuple[str, str]]:
    """(sentence name, text) pairs a speaker says under our split."""
    return list(speaker.sentences)


def _pad(utterance: Utterance, rng: np.random.Generator) -> tuple[np.ndarray, list[Phoneme]]:
    """Add silence before and after the speech; shift and extend the phoneme spans."""
    rate = utterance.sample_rate
    lead = int(rng.uniform(*_LEAD_SILENCE_S) * rate)
    trail = int(rng.uniform(*_TRAIL_SILENCE_S) * rate)
    audio = np.concatenate(
        [np.zeros(lead, np.int16), utterance.audio, np.zeros(trail, np.int16)]
    )  # [N]
    shift = lead / rate
    duration = audio.shape[0] / rate
    spans = [
        Phoneme(p.symbol, p.start + shift, p.end + shift, p.stress) for p in utterance.phonemes
    ]
    if spans and spans[0].is_pause:
        spans[0] = Phoneme(spans[0].symbol, 0.0, spans[0].end, 0)
    else:
        spans.insert(0, Phoneme("_", 0.0, shift, 0))
    if spans[-1].is_pause:
        spans[-1] = Phoneme(spans[-1].symbol, spans[-1].start, duration, 0)
    else:
        spans.append(Phoneme("_", spans[-1].end, duration, 0))
    return audio, spans


def _bump(times: np.ndarray, centre: float, width: float) -> np.ndarray:
    """Raised-cosine bump of total `width` seconds, 1 at `centre`."""
    x = np.clip((times - centre) / (0.5 * width), -1.0, 1.0)
    return 0.5 * (1.0 + np.cos(np.pi * x))


def _blink(times: np.ndarray, start: float) -> np.ndarray:
    """Eyelid closure of one blink: fast close (70 ms), short hold, slower open (130 ms)."""
    close, hold, reopen = 0.07, 0.03, 0.13
    t = times - start
    out = np.zeros_like(times)
    rising = (t >= 0) & (t < close)
    out[rising] = np.sin(0.5 * np.pi * t[rising] / close) ** 2
    out[(t >= close) & (t < close + hold)] = 1.0
    falling = (t >= close + hold) & (t < close + hold + reopen)
    out[falling] = np.cos(0.5 * np.pi * (t[falling] - close - hold) / reopen) ** 2
    return out


def _upper_face(
    speaker: Speaker, phonemes: Sequence[Phoneme], times: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Brow raises, blinks and head motion: (face-unit weights `[T, U]`, neck pose `[T, 3]`)."""
    weights = np.zeros((times.shape[0], len(FACE_UNIT_NAMES)))  # [T, U]
    neck = np.zeros((times.shape[0], 3))  # [T, 3]
    brows = unit_index("browInnerUp") + unit_index("browOuterUp")
    for p in phonemes:
        if p.stress != 2 or viseme_of(p.symbol) in ("rest",):
            continue
        centre = p.start + 0.04
        if rng.random() < speaker.brow_rate:
            gain = speaker.brow_gain * rng.uniform(0.6, 1.0)
            weights[:, brows] += gain * _bump(times, centre, rng.uniform(0.3, 0.5))[:, None]
        # a small nod (chin down = +x) on stressed syllables
        neck[:, 0] += 0.25 * speaker.head_motion_rad * _bump(times, centre, 0.35)
    blink_l, blink_r = unit_index("eyeBlinkLeft")[0], unit_index("eyeBlinkRight")[0]
    t = rng.uniform(0.2, 1.2)
    while t < times[-1]:
        shape = _blink(times, t) * rng.uniform(0.85, 1.0)
        weights[:, blink_l] += shape
        weights[:, blink_r] += shape * rng.uniform(0.93, 1.0)
        t += max(0.6, rng.gamma(4.0, speaker.blink_interval_s / 4.0))
    for axis, gain in ((0, 0.6), (1, 1.0), (2, 0.4)):
        for _ in range(3):
            freq = rng.uniform(0.12, 0.6)
            phase = rng.uniform(0, 2 * np.pi)
            amp = speaker.head_motion_rad * gain * rng.uniform(0.2, 0.45)
            neck[:, axis] += amp * np.sin(2 * np.pi * freq * times + phase)
    return np.clip(weights, 0.0, 1.0), neck


def _sentence_number(sentence: str) -> int:
    match = re.search(r"(\d+)$", sentence)
    if match is None:
        raise TalkingAvatarError(f"sentence name {sentence!r} does not end in a number")
    return int(match.group(1))


def _as_json(voice: Any) -> Any:
    return asdict(voice) if is_dataclass(voice) else str(voice)


def synthesize_clip(speaker: Speaker, sentence: str, text: str, seed: int) -> TalkingClip:
    """Audio, phonemes, face-unit curves and head motion of one sentence (no vertices yet)."""
    rng = np.random.default_rng([seed, speaker.index, _sentence_number(sentence)])
    utterance = get_engine(speaker.engine).synthesize(text, speaker.voice)
    audio, phonemes = _pad(utterance, rng)
    rate = utterance.sample_rate
    num_frames = int(round(audio.shape[0] / rate * VOCASET_FPS))
    times = np.arange(num_frames) / VOCASET_FPS  # [T]
    mouth = mouth_curves(phonemes, times, speaker.style)  # [T, U]
    upper, neck = _upper_face(speaker, phonemes, times, rng)
    return TalkingClip(
        speaker=speaker,
        sentence=sentence,
        text=text,
        audio=audio,
        sample_rate=rate,
        phonemes=phonemes,
        face_units=np.clip(mouth + upper, 0.0, 1.0),
        neck_pose=neck,
        voice=utterance.voice,
    )


def _phoneme_json(clip: TalkingClip) -> dict:
    return {
        "subject": clip.speaker.name,
        "sentence": clip.sentence,
        "text": clip.text,
        "engine": clip.speaker.engine,
        "timbre": clip.speaker.timbre,
        "voice": _as_json(clip.voice),
        "fps": clip.fps,
        "num_frames": clip.num_frames,
        "sample_rate": clip.sample_rate,
        "num_samples": int(clip.audio.shape[0]),
        "phonemes": [
            {
                "symbol": p.symbol,
                "start": round(p.start, 6),
                "end": round(p.end, 6),
                "stress": p.stress,
                "viseme": viseme_of(p.symbol),
            }
            for p in clip.phonemes
        ],
    }


def generate_talking_set(
    out: str | Path,
    *,
    small: bool = False,
    seed: int = 0,
    head=None,
    progress: bool = True,
    log=print,
) -> dict[str, object]:
    """Write the stand-in talking set in VOCAset's released format.

    Args:
        out: output folder (created; existing dataset files in it are replaced).
        small: 3 speakers (one per split) x 2 sentences, for tests and quick looks.
        seed: everything is deterministic in it.
        head: a head with face units; default the bundled head.
        progress: show tqdm progress bars.
        log: where the one-line messages go (None for silence).

    Returns:
        A summary: sequences, frames, seconds, bytes per file, elapsed seconds.
    """
    from tqdm import tqdm

    say = log or (lambda *_: None)
    started = time.perf_counter()
    out = ensure_folder(out)  # before the slow part: a bad --out fails at once
    if head is None:
        from avatar.flame import load_flame

        head = load_flame()
    require_face_units(head)
    speakers = make_speakers(head, seed, small=small)
    plan = [
        (speaker, name, text)
        for speaker in speakers
        for name, text in sentence_plan(speaker)[: _SMALL_SENTENCES if small else None]
    ]
    clips = [
        synthesize_clip(speaker, name, text, seed)
        for speaker, name, text in tqdm(plan, desc="speech", unit="sentence", disable=not progress)
    ]
    num_frames = sum(c.num_frames for c in clips)
    _check_space(out, head, clips, num_speakers=len(speakers), small=small, say=say)
    written = _write_sequences(out, head, speakers, clips, progress=progress)
    splits: dict[str, dict[str, list[str]]] = {"train": {}, "val": {}, "test": {}}
    for clip in clips:
        splits[clip.speaker.split].setdefault(clip.speaker.name, []).append(clip.sentence)
    (out / SPLITS_FILE).write_text(json.dumps(splits, indent=1))
    (out / "README.txt").write_text(_README.format(seed=seed, small=small))
    sizes = {p.name: p.stat().st_size for p in written}
    sizes[PHONEME_DIR + "/"] = sum(f.stat().st_size for f in (out / PHONEME_DIR).rglob("*.json"))
    elapsed = time.perf_counter() - started
    for name, size in sizes.items():
        say(f"  {out / name}: {format_bytes(size)}")
    say(
        f"wrote {len(clips)} sequences ({num_frames / VOCASET_FPS:.0f} s of speech), "
        f"{format_bytes(sum(sizes.values()))} in {elapsed:.0f} s"
    )
    return {
        "sequences": len(clips),
        "frames": num_frames,
        "seconds": num_frames / VOCASET_FPS,
        "bytes": sizes,
        "elapsed_s": elapsed,
    }


def _check_space(
    out: Path, head, clips: list[TalkingClip], *, num_speakers: int, small: bool, say
) -> None:
    """Say how large `data_verts.npy` will be, and refuse a folder without room for it."""
    num_frames = sum(c.num_frames for c in clips)
    num_vertices = int(head.v_template.shape[0])
    verts_bytes = num_frames * num_vertices * 3 * 4
    say(
        f"{len(clips)} sentences from {num_speakers} speakers: {num_frames} frames at 60 fps, "
        f"{num_vertices} vertices -> data_verts.npy of {format_bytes(verts_bytes)}"
        + ("" if small else " (--small writes about 60 MB)")
    )
    free = shutil.disk_usage(out).free
    if verts_bytes * 1.1 > free:
        raise TalkingAvatarError(
            f"{out} has {format_bytes(free)} free but the talking set needs about "
            f"{format_bytes(verts_bytes * 1.1)}; free space, pick another --out or use --small"
        )


def _write_sequences(
    out: Path, head, speakers: list[Speaker], clips: list[TalkingClip], *, progress: bool
) -> list[Path]:
    """VOCAset's four files (templates, meshes, audio, index) and each clip's phoneme spans;
    returns the paths of the four. On a failure the writer drops what it has written."""
    from tqdm import tqdm

    num_frames = sum(c.num_frames for c in clips)
    writer = VocasetWriter(out, num_frames, int(head.v_template.shape[0]))
    phoneme_root = out / PHONEME_DIR
    try:
        for speaker in speakers:
            writer.set_template(speaker.name, identity_template(head, speaker.shape))
        for clip in tqdm(clips, desc="meshes", unit="sentence", disable=not progress):
            vertices = face_unit_vertices(
                head, clip.speaker.shape, clip.face_units, neck_pose=clip.neck_pose
            )  # [T, V, 3]
            writer.add(clip.speaker.name, clip.sentence, vertices, clip.audio, clip.sample_rate)
            folder = phoneme_root / clip.speaker.name
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{clip.sentence}.json").write_text(json.dumps(_phoneme_json(clip), indent=1))
        return writer.close()
    except BaseException:
        writer.abort()
        raise


_README = """\
Stand-in talking set in VOCAset's released format (talking-avatar, seed {seed}, small={small}).

Synthetic: speech from the registered speech engines (eSpeak NG's English accents and voice
variants; see docs/training_data.md), meshes from the bundled head driven by phoneme-timed ARKit
face units. Not VOCAset. Files: data_verts.npy [N, V, 3] float32 at 60 fps, templates.pkl,
raw_audio_fixed.pkl, subj_seq_to_idx.pkl (as VOCAset), plus phonemes/<subject>/<sentence>.json
(ground-truth phoneme spans in seconds, the engine and voice) and splits.json (train/val/test by
subject; held-out subjects have voices and sentences never heard in training).
Read it with animator.data.vocaset.load_vocaset(folder).
"""
