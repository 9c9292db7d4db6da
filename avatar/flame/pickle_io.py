"""Open pickles safely (FLAME models, dataset pickles) and write smplx-loadable ones.

The project's rule: no pickle is opened with the stock unpickler. This restricted unpickler
resolves only what rebuilds numpy arrays, scalars and plain containers (NumPy 1.x or 2.x,
Python 2 or 3). For FLAME model files it also maps chumpy `Ch` objects and scipy sparse matrices
(the official FLAME 2020/2023 `.pkl` hold both) to inert stand-ins that keep only their array
state, so neither chumpy nor scipy is needed. Any other global is refused: opening a file cannot
run code.
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
    ("collections", "OrderedDict"),
    ("collections", "defaultdict"),
    *(
        (mod, name)
        for mod in ("builtins", "__builtin__")
        for name in (
            "dict",
            "list",
            "tuple",
            "set",
            "frozenset",
            "int",
            "float",
            "complex",
            "bytearray",
        )
    ),
}
# numpy's dtype classes (numpy.dtypes.Float32DType, ...) appear in some NumPy 2 pickles.
_NUMPY_MODULE_PREFIXES = ("numpy.dtypes",)


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
    def __init__(self, file: Any, *, model_objects: bool) -> None:
        super().__init__(file, encoding="latin1")
        self.model_objects = model_objects

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _NUMPY_GLOBALS or module.startswith(_NUMPY_MODULE_PREFIXES):
            return super().find_class(module, name)
        if not self.model_objects:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")
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


def load_pickle(path: str | Path, *, what: str, hint: str, model_objects: bool = False) -> Any:
    """Read a pickle through the restricted unpickler into plain numpy values and containers.

    Args:
        what: what the file should be, for messages ("FLAME model", "VOCAset data pickle").
        hint: the fix to suggest when it cannot be read.
        model_objects: also accept chumpy arrays and scipy sparse matrices (made dense).
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            obj = _RestrictedUnpickler(f, model_objects=model_objects).load()
    except FileNotFoundError:
        raise TalkingAvatarError(f"{what} {path} does not exist; {hint}") from None
    except IsADirectoryError:
        raise TalkingAvatarError(f"{what} {path} is a folder, not a file; {hint}") from None
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        ImportError,
    ) as err:
        raise TalkingAvatarError(
            f"{path} is not a readable {what} ({type(err).__name__}: {err}); {hint}"
        ) from None
    return _plain(obj)


def load_model_pickle(path: str | Path) -> dict[str, Any]:
    """Read a FLAME-layout pickle into plain numpy values (chumpy and sparse made dense)."""
    obj = load_pickle(
        path,
        what="FLAME model pickle",
        hint="pass --flame PATH to a FLAME .pkl (or unset TALKING_AVATAR_FLAME to use the bundled head)",
        model_objects=True,
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
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        pickle.dump(data, f, protocol=2)
    tmp.replace(path)
