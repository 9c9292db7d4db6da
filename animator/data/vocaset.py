"""VOCAset loaders (the released files and FaceFormer's processed layout) and a writer.

Released VOCAset (https://voca.is.tue.mpg.de), one folder:

    data_verts.npy          [N_frames, V, 3] float32: every registered frame of every sequence,
                            concatenated; 60 fps; FLAME topology (V = 5023) for the real data.
    templates.pkl           {subject: [V, 3]} neutral mesh per subject.
    raw_audio_fixed.pkl     {subject: {sentence: {"audio": [N] int16 or float, "sample_rate": int}}}
    subj_seq_to_idx.pkl     {subject: {sentence: {frame: row of data_verts.npy}}}, frames 0..T-1.

FaceFormer's processed layout (github.com/EvelynFan/FaceFormer, folder `vocaset/`):

    wav/<subject>_<sentence>.wav
    vertices_npy/<subject>_<sentence>.npy   [T, V * 3] at 60 fps (FaceFormer keeps every 2nd row)
    templates.pkl

Subjects are named like "FaceTalk_170728_03272_TA" and sentences "sentence01".."sentence40".
FaceFormer's split is by subject name: 8 training subjects (sentences 1-40), 2 validation and 2
test subjects (sentences 21-40 each); `FACEFORMER_SPLIT` holds it and applies whenever a real
subject name is seen. Our stand-in set uses its own subject names and writes its own split to
`splits.json` ({split: {subject: [sentence, ...]}}); it also writes the ground-truth phoneme spans
to `phonemes/<subject>/<sentence>.json`. Both extras are optional for the loader.

The pickles are read as data by `avatar.flame.pickle_io`, which interprets their opcodes itself
and rebuilds only numpy arrays, scalars and containers: a pickle cannot run code here. `data_verts.npy` is memory-mapped: a sample's vertices are a view
into the file, so a several-GB dataset never has to fit in memory.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from animator.audio import pcm_to_float
from animator.data.sample import MotionSample, SampleSequence, TimedLabel
from avatar.atomic import atomic_path
from avatar.errors import TalkingAvatarError
from avatar.flame.pickle_io import load_data_pickle

__all__ = [
    "FACEFORMER_SPLIT",
    "FACEFORMER_SENTENCES",
    "VOCASET_FPS",
    "VocasetDataset",
    "load_vocaset",
    "faceformer_split_of",
    "VocasetWriter",
    "read_phoneme_json",
]

VOCASET_FPS = 60.0

FACEFORMER_SPLIT: dict[str, tuple[str, ...]] = {
    "train": (
        "FaceTalk_170728_03272_TA",
        "FaceTalk_170904_00128_TA",
        "FaceTalk_170725_00137_TA",
        "FaceTalk_170915_00223_TA",
        "FaceTalk_170811_03274_TA",
        "FaceTalk_170913_03279_TA",
        "FaceTalk_170904_03276_TA",
        "FaceTalk_170912_03278_TA",
    ),
    "val": ("FaceTalk_170811_03275_TA", "FaceTalk_170908_03277_TA"),
    "test": ("FaceTalk_170809_00138_TA", "FaceTalk_170731_00024_TA"),
}
#: Sentence numbers FaceFormer uses per split (inclusive ranges as Python ranges).
FACEFORMER_SENTENCES: dict[str, range] = {
    "train": range(1, 41),
    "val": range(21, 41),
    "test": range(21, 41),
}
SPLITS_FILE = "splits.json"
PHONEME_DIR = "phonemes"
_RELEASED_FILES = ("data_verts.npy", "templates.pkl", "subj_seq_to_idx.pkl")


def faceformer_split_of(subject: str, sentence: str) -> str | None:
    """FaceFormer's split ("train", "val", "test") of a real VOCAset sequence, else None."""
    match = re.search(r"(\d+)$", sentence)
    if match is None:
        return None
    number = int(match.group(1))
    for split, subjects in FACEFORMER_SPLIT.items():
        if subject in subjects and number in FACEFORMER_SENTENCES[split]:
            return split
    return None


def read_phoneme_json(path: str | Path) -> list[TimedLabel]:
    """Phoneme spans from a stand-in `phonemes/<subject>/<sentence>.json` file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        return [
            TimedLabel(p["symbol"], float(p["start"]), float(p["end"])) for p in data["phonemes"]
        ]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise TalkingAvatarError(f"{path} is not a phoneme timing file ({err})") from err


def _as_float_audio(audio: np.ndarray) -> np.ndarray:
    audio = pcm_to_float(audio)  # scale before any mixing, while the dtype says it is PCM
    if audio.ndim == 2:  # [N, C] -> mono
        audio = audio.mean(axis=1)
    return audio


class VocasetDataset(SampleSequence):
    """VOCAset sequences as `MotionSample`s, read lazily from either on-disk layout.

    Args:
        root: the folder holding the released files or FaceFormer's `wav/` + `vertices_npy/`.
        split: keep only sequences of this split ("train", "val", "test"); None keeps all.
        subjects: keep only these subjects.
        fps: frame rate of the vertex data (VOCAset: 60).
        audio_tolerance_s: a sample whose audio and motion durations differ by more than this
            raises `TalkingAvatarError`; None skips the check.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        split: str | None = None,
        subjects: Sequence[str] | None = None,
        fps: float = VOCASET_FPS,
        audio_tolerance_s: float | None = 0.5,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise TalkingAvatarError(
                f"VOCAset folder {self.root} does not exist; point at the folder that holds the VOCAset files"
            )
        if split not in (None, "train", "val", "test"):
            raise TalkingAvatarError(f"unknown split {split!r}; use train, val or test")
        self.fps = float(fps)
        self.audio_tolerance_s = audio_tolerance_s
        if (self.root / "data_verts.npy").exists() or (self.root / "subj_seq_to_idx.pkl").exists():
            self.layout = "released"
            entries = self._open_released()
        elif (self.root / "vertices_npy").is_dir():
            self.layout = "faceformer"
            entries = self._open_faceformer()
        else:
            raise TalkingAvatarError(
                f"{self.root} holds neither VOCAset's data_verts.npy + pickles nor FaceFormer's "
                "vertices_npy/ + wav/; point at the dataset folder"
            )
        self._own_split = self._read_own_split()
        keep = set(subjects) if subjects is not None else None
        self.keys: list[tuple[str, str]] = [
            key
            for key in sorted(entries)
            if (keep is None or key[0] in keep) and (split is None or self.split_of(*key) == split)
        ]
        self._entries = entries

    # --- opening -------------------------------------------------------------------------------

    def _open_released(self) -> dict[tuple[str, str], object]:
        for name in _RELEASED_FILES:
            if not (self.root / name).is_file():
                raise TalkingAvatarError(
                    f"{self.root / name} is missing; a VOCAset folder needs {', '.join(_RELEASED_FILES)}"
                )
        verts_path = self.root / "data_verts.npy"
        try:
            self._verts = np.load(verts_path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as err:
            raise TalkingAvatarError(f"{verts_path} is not a readable .npy array ({err})") from err
        if self._verts.ndim != 3 or self._verts.shape[2] != 3:
            raise TalkingAvatarError(
                f"{verts_path} must be [N_frames, V, 3], got {tuple(self._verts.shape)}"
            )
        num_rows, num_vertices = self._verts.shape[:2]
        self.templates = self._read_templates(self.root / "templates.pkl", num_vertices, verts_path)
        index_path = self.root / "subj_seq_to_idx.pkl"
        index = load_data_pickle(index_path)
        if not isinstance(index, Mapping):
            raise TalkingAvatarError(
                f"{index_path} must hold {{subject: {{sentence: {{frame: row}}}}}}"
            )
        entries: dict[tuple[str, str], object] = {}
        for subject, sentences in index.items():
            if subject not in self.templates:
                raise TalkingAvatarError(
                    f"{self.root / 'templates.pkl'} has no template for subject {subject!r} "
                    f"listed in {index_path.name}"
                )
            for sentence, frames in sentences.items():
                order = sorted(frames)
                if order != list(range(len(order))) or not order:
                    raise TalkingAvatarError(
                        f"{index_path}: frames of {subject}/{sentence} are not 0..T-1"
                    )
                rows = np.array([frames[k] for k in order], dtype=np.int64)  # [T]
                if rows.min() < 0 or rows.max() >= num_rows:
                    raise TalkingAvatarError(
                        f"{index_path}: {subject}/{sentence} points at row {int(rows.max())} but "
                        f"{verts_path.name} has {num_rows} frames; the files do not belong together"
                    )
                entries[(str(subject), str(sentence))] = rows
        self._audio: dict | None = None
        return entries

    def _open_faceformer(self) -> dict[tuple[str, str], object]:
        template_path = self.root / "templates.pkl"
        vert_dir = self.root / "vertices_npy"
        files = sorted(vert_dir.glob("*.npy"))
        if not files:
            raise TalkingAvatarError(f"{vert_dir} holds no <subject>_<sentence>.npy files")
        self.templates = self._read_templates(template_path, None, None)
        entries: dict[tuple[str, str], object] = {}
        for path in files:
            subject, _, sentence = path.stem.rpartition("_")
            if not subject:
                raise TalkingAvatarError(f"{path} is not named <subject>_<sentence>.npy")
            if subject not in self.templates:
                raise TalkingAvatarError(
                    f"{template_path} has no template for {subject!r} ({path.name})"
                )
            entries[(subject, sentence)] = path
        return entries

    def _read_templates(
        self, path: Path, num_vertices: int | None, verts_path: Path | None
    ) -> dict[str, np.ndarray]:
        raw = load_data_pickle(path)
        if not isinstance(raw, Mapping):
            raise TalkingAvatarError(f"{path} must hold {{subject: [V, 3] array}}")
        templates = {}
        for subject, template in raw.items():
            template = np.asarray(template, dtype=np.float32)
            if template.ndim == 1 and template.size % 3 == 0:
                template = template.reshape(-1, 3)
            if template.ndim != 2 or template.shape[1] != 3:
                raise TalkingAvatarError(f"{path}: template of {subject!r} is not [V, 3]")
            if num_vertices is not None and template.shape[0] != num_vertices:
                raise TalkingAvatarError(
                    f"{path}: template of {subject!r} has {template.shape[0]} vertices but "
                    f"{verts_path} has {num_vertices}; the files do not belong together"
                )
            templates[str(subject)] = template
        return templates

    def _read_own_split(self) -> dict[tuple[str, str], str]:
        path = self.root / SPLITS_FILE
        if not path.is_file():
            return {}
        try:
            data = json.loads(path.read_text())
            return {
                (subject, sentence): split
                for split, by_subject in data.items()
                for subject, sentences in by_subject.items()
                for sentence in sentences
            }
        except (ValueError, AttributeError, TypeError) as err:
            raise TalkingAvatarError(
                f"{path} must be {{split: {{subject: [sentence, ...]}}}} ({err})"
            ) from err

    # --- access --------------------------------------------------------------------------------

    def split_of(self, subject: str, sentence: str) -> str | None:
        """FaceFormer's split for real subject names, else the folder's own `splits.json`."""
        split = faceformer_split_of(subject, sentence)
        if split is not None or any(subject in s for s in FACEFORMER_SPLIT.values()):
            return split
        return self._own_split.get((subject, sentence))

    @property
    def subjects(self) -> list[str]:
        return sorted({s for s, _ in self.keys})

    def sample(self, subject: str, sentence: str) -> MotionSample:
        """The sequence `subject`/`sentence` (vertices memory-mapped where the layout allows)."""
        key = (subject, sentence)
        if key not in self._entries:
            raise TalkingAvatarError(f"{self.root} has no sequence {subject}/{sentence}")
        template = self.templates[subject]
        if self.layout == "released":
            vertices, audio, rate = self._released_sequence(key)
        else:
            vertices, audio, rate = self._faceformer_sequence(key, template.shape[0])
        if vertices.shape[1] != template.shape[0]:
            raise TalkingAvatarError(
                f"{self._entries[key]}: {vertices.shape[1]} vertices but the template of "
                f"{subject} has {template.shape[0]}"
            )
        if audio is not None and self.audio_tolerance_s is not None:
            audio_s, motion_s = audio.shape[0] / rate, vertices.shape[0] / self.fps
            if abs(audio_s - motion_s) > self.audio_tolerance_s:
                where = (
                    self.root / "raw_audio_fixed.pkl"
                    if self.layout == "released"
                    else self.root / "wav" / f"{subject}_{sentence}.wav"
                )
                raise TalkingAvatarError(
                    f"{where}: audio of {subject}/{sentence} lasts {audio_s:.2f} s but its "
                    f"{vertices.shape[0]} frames last {motion_s:.2f} s at {self.fps:g} fps"
                )
        timings_path = self.root / PHONEME_DIR / subject / f"{sentence}.json"
        timings = read_phoneme_json(timings_path) if timings_path.is_file() else []
        return MotionSample(
            vertices=vertices,
            template=template,
            fps=self.fps,
            subject=subject,
            sentence=sentence,
            audio=audio,
            sample_rate=rate,
            timings=timings,
            split=self.split_of(subject, sentence),
        )

    def _released_sequence(
        self, key: tuple[str, str]
    ) -> tuple[np.ndarray, np.ndarray | None, int | None]:
        rows = self._entries[key]
        assert isinstance(rows, np.ndarray)
        if np.array_equal(rows, np.arange(rows[0], rows[0] + rows.shape[0])):
            vertices = self._verts[rows[0] : rows[0] + rows.shape[0]]  # [T, V, 3] view
        else:
            vertices = np.asarray(self._verts[rows])  # [T, V, 3] copy (scattered rows)
        if self._audio is None:
            path = self.root / "raw_audio_fixed.pkl"
            self._audio = load_data_pickle(path) if path.is_file() else {}
        entry = self._audio.get(key[0], {}).get(key[1]) if isinstance(self._audio, dict) else None
        if entry is None:
            return vertices, None, None
        try:
            return vertices, _as_float_audio(entry["audio"]), int(entry["sample_rate"])
        except (KeyError, TypeError) as err:
            raise TalkingAvatarError(
                f"{self.root / 'raw_audio_fixed.pkl'}: entry {key[0]}/{key[1]} lacks "
                f"'audio' and 'sample_rate' ({err})"
            ) from err

    def _faceformer_sequence(
        self, key: tuple[str, str], num_vertices: int
    ) -> tuple[np.ndarray, np.ndarray | None, int | None]:
        path = self._entries[key]
        assert isinstance(path, Path)
        try:
            flat = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as err:
            raise TalkingAvatarError(f"{path} is not a readable .npy array ({err})") from err
        if flat.ndim != 2 or flat.shape[1] != num_vertices * 3:
            raise TalkingAvatarError(
                f"{path} must be [T, {num_vertices * 3}] (the template has {num_vertices} "
                f"vertices), got {tuple(flat.shape)}"
            )
        vertices = flat.reshape(flat.shape[0], num_vertices, 3)  # [T, V, 3]
        wav = self.root / "wav" / f"{key[0]}_{key[1]}.wav"
        if not wav.is_file():
            return vertices, None, None
        from scipy.io import wavfile

        try:
            rate, audio = wavfile.read(wav)
        except ValueError as err:
            raise TalkingAvatarError(f"{wav} is not a readable WAV file ({err})") from err
        return vertices, _as_float_audio(audio), int(rate)


def load_vocaset(
    root: str | Path,
    *,
    split: str | None = None,
    subjects: Sequence[str] | None = None,
    fps: float = VOCASET_FPS,
) -> VocasetDataset:
    """Open a VOCAset folder (released files or FaceFormer's layout); see `VocasetDataset`."""
    return VocasetDataset(root, split=split, subjects=subjects, fps=fps)


class VocasetWriter:
    """Write sequences in the released VOCAset layout, streaming vertices to a memory map.

    The total frame count is fixed up front (`num_frames`), so `data_verts.npy` is created once
    with `np.lib.format.open_memmap` and filled sequence by sequence: memory stays flat however
    large the set. Files are written under temporary names and renamed by `close()`.

    Args:
        root: output folder (created).
        num_frames: total frames of all sequences to be added.
        num_vertices: vertices per frame.
    """

    def __init__(self, root: str | Path, num_frames: int, num_vertices: int) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(dir=self.root, prefix=".data_verts.", suffix=".tmp.npy")
        os.close(handle)
        self._verts_tmp = Path(name)
        self._verts = np.lib.format.open_memmap(
            self._verts_tmp, mode="w+", dtype=np.float32, shape=(num_frames, num_vertices, 3)
        )
        self._next_row = 0
        self.templates: dict[str, np.ndarray] = {}
        self.audio: dict[str, dict[str, dict[str, object]]] = {}
        self.index: dict[str, dict[str, dict[int, int]]] = {}

    def set_template(self, subject: str, template: np.ndarray) -> None:
        self.templates[subject] = np.asarray(template, dtype=np.float32)  # [V, 3]

    def add(
        self,
        subject: str,
        sentence: str,
        vertices: np.ndarray,
        audio: np.ndarray,
        sample_rate: int,
    ) -> None:
        """Append one sequence: vertices `[T, V, 3]`, audio `[N]` int16."""
        num = vertices.shape[0]
        if self._next_row + num > self._verts.shape[0]:
            raise ValueError("more frames added than announced to VocasetWriter")
        rows = range(self._next_row, self._next_row + num)
        self._verts[rows.start : rows.stop] = vertices
        self._next_row = rows.stop
        self.index.setdefault(subject, {})[sentence] = {k: r for k, r in enumerate(rows)}
        self.audio.setdefault(subject, {})[sentence] = {
            "audio": np.asarray(audio),
            "sample_rate": int(sample_rate),
        }

    def close(self) -> list[Path]:
        """Flush and rename everything into place; returns the written paths."""
        if self._next_row != self._verts.shape[0]:
            raise ValueError(
                f"VocasetWriter got {self._next_row} frames, {self._verts.shape[0]} announced"
            )
        self._verts.flush()
        del self._verts
        written = [self.root / "data_verts.npy"]
        self._verts_tmp.replace(written[0])
        for name, value in (
            ("templates.pkl", self.templates),
            ("raw_audio_fixed.pkl", self.audio),
            ("subj_seq_to_idx.pkl", self.index),
        ):
            path = self.root / name
            with atomic_path(path, what="dataset file") as tmp, tmp.open("wb") as f:
                pickle.dump(value, f, protocol=4)
            written.append(path)
        return written

    def abort(self) -> None:
        """Drop what was written so far (after an error or Ctrl-C): nothing half-written stays."""
        self.__dict__.pop("_verts", None)
        self._verts_tmp.unlink(missing_ok=True)
