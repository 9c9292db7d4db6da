"""Read pickles as data (FLAME models, dataset pickles) without executing anything in them.

A pickle is a program for a small stack machine whose instructions can import any name and call
it. Python's `pickle.Unpickler`, even with `find_class` restricted, still calls the callables it
admits, with whatever arguments the file chooses. So this module never unpickles: it walks the
opcodes (`pickletools.genops` only parses them) and interprets them itself, on a stack of plain
values (`avatar.flame.pickle_machine`). Global names are never imported. Each one becomes an
inert token, and only the exact (module, name) pairs in its `_KNOWN` mean anything: the numpy
array, dtype and scalar reconstructors, bytes from `_codecs.encode`, plain containers, and the
chumpy `Ch` and scipy sparse matrices that the official FLAME 2020/2023 `.pkl` files hold (their
array state is kept, nothing else). Every "call" of a token is our own code building a value
from checked arguments; anything else (another global, a dotted name, a call with unexpected
arguments, persistent ids, extension codes, out-of-band buffers, object arrays, a cycle) stops
the read with one clear error. This module turns the machine's result into numpy values.

What comes out is numpy arrays, numpy scalars, dicts, lists, tuples, sets, str, bytes, numbers,
booleans and None, for NumPy 1.x or 2.x and Python 2 or 3 pickles of protocols 0 to 5.
"""

from __future__ import annotations

import math
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from avatar.atomic import atomic_path
from avatar.errors import TalkingAvatarError
from avatar.flame.pickle_machine import (
    MAX_DEPTH,
    BufferArray,
    Global,
    Machine,
    PendingArray,
    PendingChumpy,
    PendingDtype,
    PendingSparse,
    Scalar,
    UnsafePickleError,
)

__all__ = [
    "UnsafePickleError",
    "read_pickle_bytes",
    "load_pickle",
    "load_model_pickle",
    "load_data_pickle",
    "write_pickle",
]

#: Larger files are refused before reading (the real FLAME 2023 model is about 150 MB).
MAX_PICKLE_BYTES = 2 * 1024**3
#: A sparse matrix is made dense only up to this many elements (FLAME's J_regressor: 25k).
MAX_DENSE_ELEMENTS = 50_000_000


def _dtype(pending: Any) -> np.dtype:
    if not isinstance(pending, PendingDtype):
        raise UnsafePickleError("an array's dtype is not a numpy dtype")
    dtype = np.dtype(pending.typestr)
    state = pending.state
    if state is None:
        return dtype
    if not isinstance(state, tuple) or len(state) < 8:
        raise UnsafePickleError("a numpy dtype has an unusual state")
    endian, subarray, names, fields, elsize = state[1:6]
    if subarray is not None or names is not None or fields is not None:
        raise UnsafePickleError("it holds a structured numpy dtype, which plain data never needs")
    if dtype.kind in "SU" and dtype.itemsize == 0:
        if not isinstance(elsize, int) or not 0 < elsize <= 1 << 20:
            raise UnsafePickleError("a numpy string dtype has an unusual size")
        dtype = np.dtype(f"{dtype.kind}{elsize // (4 if dtype.kind == 'U' else 1)}")
    if endian in ("<", ">"):
        dtype = dtype.newbyteorder(endian)
    elif endian not in ("|", "="):
        raise UnsafePickleError("a numpy dtype has an unusual byte order")
    return dtype


def _raw_bytes(raw: Any) -> bytes:
    if isinstance(raw, str):  # Python 2 str read as latin-1
        return raw.encode("latin1")
    if isinstance(raw, (bytes, bytearray)):
        return bytes(raw)
    raise UnsafePickleError("an array's data is not raw bytes (object arrays are not read)")


def _shape(value: Any) -> tuple[int, ...]:
    if not isinstance(value, tuple) or not all(
        isinstance(n, int) and not isinstance(n, bool) and 0 <= n < 2**40 for n in value
    ):
        raise UnsafePickleError("an array has an unusual shape")
    return value


def _from_bytes(raw: bytes, dtype: np.dtype, shape: tuple[int, ...], order: str) -> np.ndarray:
    count = math.prod(shape)
    if count * dtype.itemsize != len(raw):
        raise UnsafePickleError(
            f"an array of shape {shape} ({dtype}) holds {len(raw)} bytes instead of "
            f"{count * dtype.itemsize}"
        )
    flat = np.frombuffer(raw, dtype=dtype, count=count)
    return flat.reshape(shape, order=order).copy(order="K")


class _Finisher:
    """Turns the machine's result into plain values: arrays, scalars and containers."""

    def __init__(self) -> None:
        self.done: dict[int, Any] = {}
        self.active: set[int] = set()

    def __call__(self, value: Any, depth: int = 0) -> Any:
        if isinstance(value, (str, bytes, int, float, complex, bool, type(None))):
            return value
        key = id(value)
        if key in self.done:
            return self.done[key]
        if key in self.active:
            raise UnsafePickleError("it holds a container that contains itself")
        if depth > MAX_DEPTH:
            raise UnsafePickleError(f"it nests deeper than {MAX_DEPTH} levels")
        self.active.add(key)
        out = self._finish(value, depth + 1)
        self.active.discard(key)
        self.done[key] = out
        return out

    def _finish(self, value: Any, depth: int) -> Any:
        if isinstance(value, dict):
            return {self(k, depth): self(v, depth) for k, v in value.items()}
        if isinstance(value, list):
            return [self(v, depth) for v in value]
        if isinstance(value, tuple):
            return tuple(self(v, depth) for v in value)
        if isinstance(value, (set, frozenset)):
            return type(value)(self(v, depth) for v in value)
        if isinstance(value, PendingArray):
            return self._array(value, depth)
        if isinstance(value, PendingDtype):
            return _dtype(value)
        if isinstance(value, BufferArray):
            return self._frombuffer(value, depth)
        if isinstance(value, Scalar):
            dtype = _dtype(value.dtype)
            return _from_bytes(_raw_bytes(value.data), dtype, (), "C")[()]
        if isinstance(value, PendingChumpy):
            state = value.state[0] if isinstance(value.state, tuple) else value.state
            if not (isinstance(state, dict) and "x" in state):
                raise UnsafePickleError("it holds a chumpy object that is not a plain array")
            return np.asarray(self(state["x"], depth))
        if isinstance(value, PendingSparse):
            return self._sparse(value, depth)
        if isinstance(value, Global):
            raise UnsafePickleError(f"it holds the name {value.module}.{value.name} as a value")
        raise UnsafePickleError(f"it holds a {type(value).__name__}")

    def _array(self, pending: PendingArray, depth: int) -> np.ndarray:
        state = pending.state
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise UnsafePickleError("a numpy array has no state or an unusual one")
        if len(state) == 5:
            state = state[1:]
        shape, dtype, fortran, raw = state
        dtype = self(dtype, depth)
        if not isinstance(dtype, np.dtype):
            raise UnsafePickleError("an array's dtype is not a numpy dtype")
        return _from_bytes(_raw_bytes(raw), dtype, _shape(shape), "F" if fortran else "C")

    def _frombuffer(self, value: BufferArray, depth: int) -> np.ndarray:
        if value.order not in ("C", "F"):
            raise UnsafePickleError("a numpy buffer array has an unusual memory order")
        dtype = self(value.dtype, depth)
        return _from_bytes(_raw_bytes(value.buffer), dtype, _shape(value.shape), value.order)

    def _sparse(self, pending: PendingSparse, depth: int) -> np.ndarray:
        state = pending.state
        if not isinstance(state, dict):
            raise UnsafePickleError("a sparse matrix has no state")
        shape = self(state.get("_shape", state.get("shape")), depth)
        parts = [self(state.get(k), depth) for k in ("data", "indices", "indptr")]
        fmt = state.get("format", pending.format)
        if (
            not (isinstance(shape, tuple) and len(shape) == 2)
            or not all(isinstance(p, np.ndarray) and p.ndim == 1 for p in parts)
            or fmt not in ("csc", "csr")
        ):
            raise UnsafePickleError("a sparse matrix has an unusual state")
        rows, cols = _shape(shape)
        if rows * cols > MAX_DENSE_ELEMENTS:
            raise UnsafePickleError(f"a sparse matrix of {rows}x{cols} is too large to read")
        data, indices, indptr = parts
        major = cols if fmt == "csc" else rows
        minor = rows if fmt == "csc" else cols
        indptr = indptr.astype(np.int64)
        if (
            len(indptr) != major + 1
            or indptr[0] != 0
            or np.any(np.diff(indptr) < 0)
            or indptr[-1] != len(data)
            or len(indices) != len(data)
            or (len(indices) and (indices.min() < 0 or indices.max() >= minor))
        ):
            raise UnsafePickleError("a sparse matrix has inconsistent indices")
        dense = np.zeros((rows, cols), dtype=np.float64)
        outer = np.repeat(np.arange(major), np.diff(indptr))
        if fmt == "csc":
            np.add.at(dense, (indices, outer), data)
        else:
            np.add.at(dense, (outer, indices), data)
        return dense


def read_pickle_bytes(data: bytes) -> Any:
    """Plain values of a pickle held in memory (see the module docstring); never runs code.

    Raises:
        UnsafePickleError: anything but plain data, or a malformed pickle.
    """
    try:
        raw = Machine().run(data)
    except UnsafePickleError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, EOFError, OverflowError) as err:
        # pickletools' parser raises ValueError for truncated or unknown opcodes
        raise UnsafePickleError(f"it is not a well-formed pickle ({err})") from None
    try:
        return _Finisher()(raw)
    except (ValueError, TypeError, MemoryError, OverflowError) as err:
        if isinstance(err, UnsafePickleError):
            raise
        raise UnsafePickleError(f"its arrays cannot be rebuilt ({type(err).__name__})") from None


def load_pickle(path: str | Path, *, what: str, hint: str) -> Any:
    """Read a pickle file as plain data (see the module docstring); never runs code.

    Args:
        what: what the file should be, for messages ("FLAME model pickle", "dataset pickle").
        hint: the fix to suggest when it cannot be read.

    Raises:
        TalkingAvatarError: a missing, unreadable, malformed or unsafe file, in one line.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        if path.is_dir():
            raise IsADirectoryError
        if size > MAX_PICKLE_BYTES:
            raise TalkingAvatarError(
                f"{what} {path} is {size / 2**30:.1f} GB, larger than any such file; {hint}"
            )
        data = path.read_bytes()
    except FileNotFoundError:
        raise TalkingAvatarError(f"{what} {path} does not exist; {hint}") from None
    except IsADirectoryError:
        raise TalkingAvatarError(f"{what} {path} is a folder, not a file; {hint}") from None
    except OSError as err:
        raise TalkingAvatarError(f"cannot read {what} {path} ({err.strerror}); {hint}") from None
    try:
        return read_pickle_bytes(data)
    except UnsafePickleError as err:
        raise TalkingAvatarError(f"{path} is not a readable {what}: {err}; {hint}") from None


def load_model_pickle(path: str | Path) -> dict[str, Any]:
    """Read a FLAME-layout pickle into plain numpy values (chumpy and sparse made dense)."""
    obj = load_pickle(
        path,
        what="FLAME model pickle",
        hint="pass --flame PATH to a FLAME .pkl (or unset TALKING_AVATAR_FLAME to use the bundled head)",
    )
    if not isinstance(obj, dict):
        raise TalkingAvatarError(f"{path} does not hold a FLAME model dictionary")
    return obj


def load_data_pickle(path: str | Path) -> Any:
    """Read a dataset pickle (VOCAset's templates, audio, index): numpy and containers only."""
    return load_pickle(
        path,
        what="dataset pickle",
        hint="point at the dataset folder that holds it, or re-download it from the dataset site",
    )


def write_pickle(path: str | Path, data: dict[str, Any]) -> None:
    """Write a plain-numpy pickle (protocol 2, as FLAME's) atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        pickle.dump(data, f, protocol=2)
