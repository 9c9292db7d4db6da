"""Minimal mesh files for per-frame datasets: PLY (read any, write binary) and OBJ (read, write)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from avatar.errors import TalkingAvatarError

__all__ = ["read_vertices", "write_ply", "write_obj"]


def write_ply(path: str | Path, vertices: np.ndarray, faces: np.ndarray | None = None) -> None:
    """Write a binary little-endian PLY with float32 vertices `[V, 3]` and optional faces `[F, 3]`.

    Frames of a sequence are usually written without faces (the topology is the template's).
    """
    vertices = np.ascontiguousarray(vertices, dtype="<f4")  # [V, 3]
    header = [
        "ply",
        "format binary_little_endian 1.0",
        f"element vertex {vertices.shape[0]}",
        "property float x",
        "property float y",
        "property float z",
    ]
    if faces is not None:
        header += [f"element face {faces.shape[0]}", "property list uchar int vertex_indices"]
    header.append("end_header")
    with Path(path).open("wb") as f:
        f.write(("\n".join(header) + "\n").encode("ascii"))
        f.write(vertices.tobytes())
        if faces is not None:
            record = np.empty(faces.shape[0], dtype=[("n", "u1"), ("idx", "<i4", (3,))])
            record["n"] = 3
            record["idx"] = faces
            f.write(record.tobytes())


def write_obj(path: str | Path, vertices: np.ndarray, faces: np.ndarray | None = None) -> None:
    """Write a text OBJ with vertices `[V, 3]` and optional 0-based triangle faces `[F, 3]`."""
    lines = [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in np.asarray(vertices, dtype=np.float64)]
    if faces is not None:
        lines += [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in np.asarray(faces, dtype=np.int64)]
    Path(path).write_text("\n".join(lines) + "\n")


def _read_obj_vertices(path: Path) -> np.ndarray:
    rows = []
    with path.open("r", errors="replace") as f:
        for line in f:
            if line.startswith("v "):
                rows.append(line.split()[1:4])
    if not rows:
        raise TalkingAvatarError(f"{path} has no vertices ('v x y z' lines); is it a mesh?")
    try:
        return np.asarray(rows, dtype=np.float32)  # [V, 3]
    except ValueError as err:
        raise TalkingAvatarError(f"{path} has a malformed vertex line ({err})") from err


def _read_ply_vertices(path: Path) -> np.ndarray:
    from plyfile import PlyData, PlyParseError

    try:
        vertex = PlyData.read(str(path))["vertex"]
        return np.stack([vertex["x"], vertex["y"], vertex["z"]], axis=1).astype(np.float32)
    except (PlyParseError, KeyError, ValueError, IndexError, EOFError) as err:
        raise TalkingAvatarError(f"{path} is not a readable PLY mesh ({err})") from err


def read_vertices(path: str | Path) -> np.ndarray:
    """Vertex positions `[V, 3]` float32 of a .ply or .obj mesh (faces are ignored)."""
    path = Path(path)
    if not path.is_file():
        raise TalkingAvatarError(f"{path} is missing; check the dataset folder")
    suffix = path.suffix.lower()
    if suffix == ".obj":
        return _read_obj_vertices(path)
    if suffix == ".ply":
        return _read_ply_vertices(path)
    raise TalkingAvatarError(f"{path} is not a .ply or .obj mesh")
