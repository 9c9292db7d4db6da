"""Open FLAME model pickles safely, without chumpy or scipy, and write smplx-loadable ones.

The official FLAME 2020/2023 `.pkl` files hold chumpy `Ch` objects and a scipy sparse joint
regressor, pickled under Python 2. A restricted unpickler maps exactly those classes to inert
stand-ins that keep only their array state; every other global is refused, so opening a model
file cannot run code.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from avatar.errors import TalkingAvatarError

_NUMPY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),  # protocol-2 pickles written by Python 3 store bytes through it
}


class _Stateful:
    """Stand-in for a pickled object whose state we only read (chumpy Ch, scipy sparse)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._state: Any = None

    def __setstate__(self, state: Any) -> None:
        self._state = state


class _ChumpyArray(_Stateful):
    def to_numpy(self) -> np.ndarray:
        state = self._state[0] if isinstance(self._state, tuple) else self._state
        if isinstance(state, dict) and "x" in state:
            return np.asarray(_plain(state["x"]))
        raise TalkingAvatarError("FLAME pickle holds a chumpy object that is not a plain array")


class _SparseMatrix(_Stateful):
    def to_numpy(self) -> np.ndarray:
        s = self._state if isinstance(self._state, dict) else {}
        shape = s.get("_shape", s.get("shape"))
        data, indices, indptr = (np.asarray(s.get(k)) for k in ("data", "indices", "indptr"))
        if shape is None or data.ndim != 1:
            raise TalkingAvatarError("FLAME pickle holds a sparse matrix this loader cannot read")
        dense = np.zeros(shape, dtype=np.float64)
        if s.get("format", "csc") == "csr" or self.kind == "csr":
            for row in range(shape[0]):
                sl = slice(indptr[row], indptr[row + 1])
                dense[row, indices[sl]] = data[sl]
        else:
            for col in range(shape[1]):
                sl = slice(indptr[col], indptr[col + 1])
                dense[indices[sl], col] = data[sl]
        return dense

    kind = "csc"


class _CsrMatrix(_SparseMatrix):
    kind = "csr"


def _reconstructor(cls: type, base: type, state: Any) -> Any:
    # copyreg._reconstructor for old-style pickles: build the stand-in without running code.
    return cls.__new__(cls)


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _NUMPY_GLOBALS:
            return super().find_class(module, name)
        if module.startswith("chumpy"):
            return _ChumpyArray
        if module.startswith("scipy.sparse"):
            return _CsrMatrix if "csr" in name else _SparseMatrix
        if (module, name) in {("copy_reg", "_reconstructor"), ("copyreg", "_reconstructor")}:
            return _reconstructor
        if (module, name) in {("__builtin__", "object"), ("builtins", "object")}:
            return object
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")


def _plain(value: Any) -> Any:
    if isinstance(value, (_ChumpyArray, _SparseMatrix)):
        return value.to_numpy()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def load_model_pickle(path: str | Path) -> dict[str, Any]:
    """Read a FLAME-layout pickle into plain numpy values (chumpy and sparse made dense)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            obj = _RestrictedUnpickler(f, encoding="latin1").load()
    except FileNotFoundError:
        raise TalkingAvatarError(
            f"FLAME model {path} does not exist; pass --flame PATH to a FLAME .pkl "
            "(or unset TALKING_AVATAR_FLAME to use the bundled head)"
        ) from None
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
    ) as err:
        raise TalkingAvatarError(
            f"{path} is not a readable FLAME model pickle ({type(err).__name__}: {err}); "
            "re-download the model or point --flame at the right file"
        ) from None
    if not isinstance(obj, dict):
        raise TalkingAvatarError(f"{path} does not hold a FLAME model dictionary")
    return _plain(obj)


def write_pickle(path: str | Path, data: dict[str, Any]) -> None:
    """Write a plain-numpy pickle (protocol 2, as FLAME's) atomically."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        pickle.dump(data, f, protocol=2)
    tmp.replace(path)
