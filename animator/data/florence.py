"""Florence4D-style expression sequences: one folder per identity, one per expression, mesh frames.

Florence 4D (Principi et al. 2022, https://www.micc.unifi.it/resources/datasets/florence-4d-facial-expression/)
holds registered mesh sequences of many identities performing many expressions. Its exact
release layout could not be checked here; this loader reads the per-frame layout that public code
using it works with (`<identity>/<Expression>/<Expression>_<frame>.ply`, e.g. EmoVOCA's condition
meshes), which our stand-in generator also writes:

    <root>/dataset.json                            optional: {"fps": 60, "splits": {split: [identity]}}
    <root>/<identity>/template.ply                 optional neutral mesh (faces included)
    <root>/<identity>/<expression>/<expression>_<frame>.ply   one mesh per frame (.ply or .obj)
    <root>/<identity>/<expression>/timings.json    optional: {"phases": [{label, start, end}]}

Frame numbers are the last run of digits in a file name and must be consecutive. The identity's
template is `template.ply`/`template.obj` when present, else the first frame of its "neutral"
sequence, else the first frame of each sequence. Frame files carry vertices only; faces, when
present, are ignored (the topology is the template's). Sequences are read when indexed, one at a
time, so a large folder does not have to fit in memory.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from animator.data.meshio import read_vertices
from animator.data.sample import MotionSample, SampleSequence, TimedLabel
from avatar.errors import TalkingAvatarError

__all__ = ["FlorenceDataset", "load_florence", "FLORENCE_FPS", "MESH_SUFFIXES"]

FLORENCE_FPS = 60.0
MESH_SUFFIXES = (".ply", ".obj")
DATASET_FILE = "dataset.json"
TIMINGS_FILE = "timings.json"
_TEMPLATE_NAMES = ("template.ply", "template.obj")
_FRAME_NUMBER = re.compile(r"(\d+)(?!.*\d)")


def _frame_files(folder: Path) -> list[Path]:
    files = [p for p in folder.iterdir() if p.suffix.lower() in MESH_SUFFIXES and p.is_file()]
    numbered = []
    for path in files:
        match = _FRAME_NUMBER.search(path.stem)
        if match is None:
            raise TalkingAvatarError(
                f"{path} has no frame number; name frames <expression>_<frame>.ply"
            )
        numbered.append((int(match.group(1)), path))
    numbered.sort()
    numbers = [n for n, _ in numbered]
    for k, (a, b) in enumerate(zip(numbers, numbers[1:], strict=False)):
        if b != a + 1:
            raise TalkingAvatarError(
                f"{folder}: frame {a + 1} is missing (after {numbered[k][1].name}); "
                "a sequence needs consecutive frames"
            )
    return [p for _, p in numbered]


class FlorenceDataset(SampleSequence):
    """Expression sequences as `MotionSample`s (labels: identity and expression).

    Args:
        root: the dataset folder.
        fps: frame rate; default `dataset.json`'s "fps", else 60.
        identities: keep only these identities.
        expressions: keep only these expression labels (folder names, case-insensitive).
        split: keep only identities of this split (needs `dataset.json` "splits").
    """

    def __init__(
        self,
        root: str | Path,
        *,
        fps: float | None = None,
        identities: Sequence[str] | None = None,
        expressions: Sequence[str] | None = None,
        split: str | None = None,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise TalkingAvatarError(
                f"expression dataset folder {self.root} does not exist; point at the folder that holds the expression set"
            )
        meta = self._read_meta()
        self.fps = float(fps if fps is not None else meta.get("fps", FLORENCE_FPS))
        self.splits: dict[str, str] = {
            identity: name
            for name, members in meta.get("splits", {}).items()
            for identity in members
        }
        wanted_ids = set(identities) if identities is not None else None
        wanted_expr = {e.lower() for e in expressions} if expressions is not None else None
        self.keys: list[tuple[str, str]] = []
        self._folders: dict[tuple[str, str], Path] = {}
        for id_dir in sorted(p for p in self.root.iterdir() if p.is_dir()):
            identity = id_dir.name
            if wanted_ids is not None and identity not in wanted_ids:
                continue
            if split is not None and self.splits.get(identity) != split:
                continue
            for seq_dir in sorted(p for p in id_dir.iterdir() if p.is_dir()):
                if wanted_expr is not None and seq_dir.name.lower() not in wanted_expr:
                    continue
                if any(p.suffix.lower() in MESH_SUFFIXES for p in seq_dir.iterdir()):
                    self.keys.append((identity, seq_dir.name))
                    self._folders[(identity, seq_dir.name)] = seq_dir
        if not self.keys:
            raise TalkingAvatarError(
                f"{self.root} holds no <identity>/<expression>/<frame>.ply sequences"
            )
        self._templates: dict[str, np.ndarray] = {}

    def _read_meta(self) -> dict:
        path = self.root / DATASET_FILE
        if not path.is_file():
            return {}
        try:
            meta = json.loads(path.read_text())
        except ValueError as err:
            raise TalkingAvatarError(f"{path} is not valid JSON ({err})") from err
        if not isinstance(meta, dict):
            raise TalkingAvatarError(f"{path} must hold a JSON object")
        return meta

    @property
    def identities(self) -> list[str]:
        return sorted({i for i, _ in self.keys})

    @property
    def expressions(self) -> list[str]:
        return sorted({e for _, e in self.keys})

    def template(self, identity: str) -> np.ndarray:
        """The identity's neutral mesh `[V, 3]` (see the module docstring for where it comes from)."""
        if identity not in self._templates:
            id_dir = self.root / identity
            for name in _TEMPLATE_NAMES:
                if (id_dir / name).is_file():
                    self._templates[identity] = read_vertices(id_dir / name)
                    break
            else:
                neutral = [
                    p for p in id_dir.iterdir() if p.is_dir() and p.name.lower() == "neutral"
                ]
                if neutral:
                    files = _frame_files(neutral[0])
                    self._templates[identity] = read_vertices(files[0])
                else:
                    return np.empty((0, 3), np.float32)  # per-sequence fallback
        return self._templates[identity]

    def sample(self, identity: str, expression: str) -> MotionSample:
        """Read one sequence (all its frames) from disk."""
        folder = self._folders.get((identity, expression))
        if folder is None:
            raise TalkingAvatarError(f"{self.root} has no sequence {identity}/{expression}")
        files = _frame_files(folder)
        template = self.template(identity)
        frames = []
        for path in files:
            verts = read_vertices(path)
            reference = template if template.shape[0] else (frames[0] if frames else verts)
            if verts.shape[0] != reference.shape[0]:
                raise TalkingAvatarError(
                    f"{path} has {verts.shape[0]} vertices but the template of {identity} has "
                    f"{reference.shape[0]}; every frame must share the template's topology"
                )
            frames.append(verts)
        vertices = np.stack(frames)  # [T, V, 3]
        if not template.shape[0]:
            template = vertices[0].copy()
        return MotionSample(
            vertices=vertices,
            template=template,
            fps=self.fps,
            subject=identity,
            expression=expression,
            timings=self._timings(folder),
            split=self.splits.get(identity),
        )

    @staticmethod
    def _timings(folder: Path) -> list[TimedLabel]:
        path = folder / TIMINGS_FILE
        if not path.is_file():
            return []
        try:
            data = json.loads(path.read_text())
            return [
                TimedLabel(p["label"], float(p["start"]), float(p["end"])) for p in data["phases"]
            ]
        except (ValueError, KeyError, TypeError) as err:
            raise TalkingAvatarError(f"{path} is not a phase timing file ({err})") from err


def load_florence(
    root: str | Path,
    *,
    fps: float | None = None,
    identities: Sequence[str] | None = None,
    expressions: Sequence[str] | None = None,
    split: str | None = None,
) -> FlorenceDataset:
    """Open a Florence4D-style folder; see `FlorenceDataset`."""
    return FlorenceDataset(
        root, fps=fps, identities=identities, expressions=expressions, split=split
    )
