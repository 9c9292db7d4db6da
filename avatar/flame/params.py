"""FLAME parameters per frame, under GaussianAvatars' flame_param.npz names."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch

from avatar.errors import TalkingAvatarError

#: The per-frame pose fields and their widths (axis-angle radians, translation in metres).
POSE_FIELDS = {"rotation": 3, "neck_pose": 3, "jaw_pose": 3, "eyes_pose": 6, "translation": 3}


@dataclass
class FlameParams:
    """FLAME parameters for T frames (GaussianAvatars' flame_param.npz field names).

    Attributes:
        shape: identity coefficients, `[S]` shared by all frames, or `[T, S]`.
        expr: expression coefficients `[T, E]`.
        rotation: global head rotation, axis-angle `[T, 3]`.
        neck_pose: neck joint rotation `[T, 3]`.
        jaw_pose: jaw rotation `[T, 3]`; +x (pitch) opens the mouth.
        eyes_pose: left then right eye rotation `[T, 6]`.
        translation: `[T, 3]`, metres, added after skinning.
        static_offset: optional per-vertex offset of the template `[V, 3]` (GaussianAvatars).
    """

    shape: torch.Tensor
    expr: torch.Tensor
    rotation: torch.Tensor
    neck_pose: torch.Tensor
    jaw_pose: torch.Tensor
    eyes_pose: torch.Tensor
    translation: torch.Tensor
    static_offset: torch.Tensor | None = None

    @property
    def num_frames(self) -> int:
        return self.expr.shape[0]

    @classmethod
    def zeros(
        cls,
        num_frames: int,
        num_shape: int,
        num_expr: int,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> FlameParams:
        """Neutral parameters: the template in the rest pose for every frame."""
        z = lambda *s: torch.zeros(*s, dtype=dtype, device=device)  # noqa: E731
        return cls(
            shape=z(num_shape),
            expr=z(num_frames, num_expr),
            **{name: z(num_frames, width) for name, width in POSE_FIELDS.items()},
        )

    def validate(self) -> FlameParams:
        """Check shapes and finiteness once, at the boundary; returns self."""
        t = self.expr.shape[0] if self.expr.dim() == 2 else -1
        if t < 0:
            raise TalkingAvatarError(f"FLAME expr must be [T, E], got {tuple(self.expr.shape)}")
        for name, width in POSE_FIELDS.items():
            value = getattr(self, name)
            if tuple(value.shape) != (t, width):
                raise TalkingAvatarError(
                    f"FLAME {name} must be [{t}, {width}] to match expr, got {tuple(value.shape)}"
                )
        if self.shape.dim() not in (1, 2) or (self.shape.dim() == 2 and self.shape.shape[0] != t):
            raise TalkingAvatarError(
                f"FLAME shape must be [S] or [{t}, S], got {tuple(self.shape.shape)}"
            )
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None and not torch.isfinite(value).all():
                raise TalkingAvatarError(f"FLAME {f.name} contains NaN or infinite values")
        return self

    def slice(self, start: int, stop: int) -> FlameParams:
        """Frames [start, stop) (a per-frame shape is sliced too)."""
        per_frame = {name: getattr(self, name)[start:stop] for name in ("expr", *POSE_FIELDS)}
        shape = self.shape[start:stop] if self.shape.dim() == 2 else self.shape
        return replace(self, shape=shape, **per_frame)

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> FlameParams:
        move = lambda x: None if x is None else x.to(device=device, dtype=dtype)  # noqa: E731
        return FlameParams(**{f.name: move(getattr(self, f.name)) for f in fields(self)})

    @classmethod
    def concat(cls, parts: list[FlameParams]) -> FlameParams:
        """Join clips along time (they must share a per-clip shape)."""
        first = parts[0]
        cat = lambda name: torch.cat([getattr(p, name) for p in parts])  # noqa: E731
        shape = first.shape if first.shape.dim() == 1 else cat("shape")
        return cls(
            shape=shape,
            expr=cat("expr"),
            **{name: cat(name) for name in POSE_FIELDS},
            static_offset=first.static_offset,
        )

    def to_arrays(self) -> dict[str, np.ndarray]:
        """float32 arrays under the flame_param.npz names."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        return {
            k: v.detach().cpu().numpy().astype(np.float32) for k, v in out.items() if v is not None
        }

    @classmethod
    def from_arrays(cls, arrays: dict, *, source: str = "arrays") -> FlameParams:
        """Build from flame_param.npz-style arrays; static_offset may be [1, V, 3] or [V, 3]."""
        missing = [k for k in ("shape", "expr", *POSE_FIELDS) if k not in arrays]
        if missing:
            raise TalkingAvatarError(
                f"{source} lacks FLAME parameter(s) {', '.join(missing)}; expected GaussianAvatars' "
                "flame_param.npz names (shape, expr, rotation, neck_pose, jaw_pose, eyes_pose, translation)"
            )
        as_t = lambda k: torch.as_tensor(np.asarray(arrays[k], dtype=np.float32))  # noqa: E731
        static = None
        if "static_offset" in arrays:
            static = as_t("static_offset")
            static = static[0] if static.dim() == 3 else static
        shape = as_t("shape")
        if shape.dim() == 2 and shape.shape[0] == 1:
            shape = shape[0]
        return cls(
            shape=shape,
            expr=as_t("expr"),
            **{k: as_t(k) for k in POSE_FIELDS},
            static_offset=static,
        ).validate()

    def save_npz(
        self,
        path: str | Path,
        *,
        streamed: dict[str, StreamedArray] | None = None,
        **extra: np.ndarray,
    ) -> Path:
        """Write flame_param.npz (plus extra arrays, and `streamed` ones chunk by chunk)
        atomically; returns the path."""
        return write_npz(path, {**self.to_arrays(), **extra}, streamed=streamed)

    @classmethod
    def load_npz(cls, path: str | Path) -> FlameParams:
        arrays = read_npz(path, what="flame_param.npz", hint="pass an existing flame_param.npz")
        return cls.from_arrays(arrays, source=str(path))


@dataclass
class StreamedArray:
    """An array written to an .npz chunk by chunk along its first axis, never held whole.

    Attributes:
        shape: the whole array's shape; chunks must add up to shape[0] rows.
        dtype: its dtype (chunks are converted to it).
        chunks: the rows, in order, as arrays `[n_i, *shape[1:]]`.
    """

    shape: tuple[int, ...]
    dtype: np.dtype
    chunks: Iterable[np.ndarray]

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * np.dtype(self.dtype).itemsize


def write_npz(
    path: str | Path,
    arrays: dict[str, np.ndarray],
    *,
    streamed: dict[str, StreamedArray] | None = None,
) -> Path:
    """Write an uncompressed .npz (what `np.savez` writes) atomically, streaming large arrays.

    `np.load` reads the result like any .npz. Streamed arrays go straight from their chunks to
    the file, so memory stays bounded by one chunk; the disk must hold the whole file, which
    is checked before anything is written.
    """
    import shutil
    import zipfile

    from avatar.atomic import atomic_path, check_output_path

    path = check_output_path(path, what="output")
    streamed = streamed or {}
    need = sum(np.asarray(a).nbytes for a in arrays.values()) + sum(
        s.nbytes for s in streamed.values()
    )
    folder = next(p for p in (path, *path.parents) if p.exists())
    free = shutil.disk_usage(folder).free
    if need > free:
        raise TalkingAvatarError(
            f"{path} needs {need / 2**30:.1f} GB but the disk has {free / 2**30:.1f} GB free; "
            "free space or choose another --out"
        )
    with (
        atomic_path(path, what="output") as tmp,
        zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive,
    ):
        for name, value in arrays.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asanyarray(value), allow_pickle=False)
        for name, stream in streamed.items():
            dtype = np.dtype(stream.dtype)
            header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
                      "shape": tuple(stream.shape)}  # fmt: skip
            rows = 0
            with archive.open(f"{name}.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array_header_2_0(f, header)
                for chunk in stream.chunks:
                    chunk = np.ascontiguousarray(chunk, dtype=dtype)
                    if chunk.shape[1:] != tuple(stream.shape[1:]):
                        raise ValueError(f"chunk of {name} has shape {chunk.shape}")
                    f.write(chunk.tobytes())
                    rows += chunk.shape[0]
            if rows != stream.shape[0]:
                raise ValueError(f"{name}: {rows} rows streamed, {stream.shape[0]} announced")
    return path


def read_npz(path: str | Path, *, what: str, hint: str) -> dict[str, np.ndarray]:
    """All arrays of an .npz (no pickles), with one clear error for a missing or bad file."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except FileNotFoundError:
        raise TalkingAvatarError(f"{what} {path} does not exist; {hint}") from None
    except (OSError, ValueError, EOFError) as err:
        raise TalkingAvatarError(f"{path} is not a readable {what} ({err}); {hint}") from None
