"""Read pickles as data (FLAME models, dataset pickles) without executing anything in them.

A pickle is a program for a small stack machine whose instructions can import any name and call
it. Python's `pickle.Unpickler`, even with `find_class` restricted, still calls the callables it
admits, with whatever arguments the file chooses. So this module never unpickles: it walks the
opcodes (`pickletools.genops` only parses them) and interprets them itself, on a stack of plain
values. Global names are never imported. Each one becomes an inert token, and only the exact
(module, name) pairs in `_KNOWN` mean anything: the numpy array, dtype and scalar reconstructors,
bytes from `_codecs.encode`, plain containers, and the chumpy `Ch` and scipy sparse matrices that
the official FLAME 2020/2023 `.pkl` files hold (their array state is kept, nothing else). Every
"call" of a token is our own code building a value from checked arguments; anything else (another
global, a dotted name, a call with unexpected arguments, persistent ids, extension codes,
out-of-band buffers, object arrays, a cycle) stops the read with one clear error.

What comes out is numpy arrays, numpy scalars, dicts, lists, tuples, sets, str, bytes, numbers,
booleans and None, for NumPy 1.x or 2.x and Python 2 or 3 pickles of protocols 0 to 5.
"""

from __future__ import annotations

import io
import math
import pickle
import pickletools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from avatar.atomic import atomic_path
from avatar.errors import TalkingAvatarError

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
#: Nesting deeper than this is refused (FLAME files nest three or four levels).
MAX_DEPTH = 100
#: A sparse matrix is made dense only up to this many elements (FLAME's J_regressor: 25k).
MAX_DENSE_ELEMENTS = 50_000_000


class UnsafePickleError(ValueError):
    """The file is not a pickle of plain data that this reader accepts."""


@dataclass(frozen=True)
class _Global:
    """A global name the file mentions. Never imported; `_KNOWN` says what it stands for."""

    module: str
    name: str


def _builtin(name: str) -> set[tuple[str, str]]:
    return {("builtins", name), ("__builtin__", name)}


#: The exact names that mean something, by role. Nothing else is accepted.
_KNOWN: dict[tuple[str, str], str] = {
    **{
        (m, "_reconstruct"): "reconstruct"
        for m in ("numpy.core.multiarray", "numpy._core.multiarray")
    },
    **{(m, "scalar"): "scalar" for m in ("numpy.core.multiarray", "numpy._core.multiarray")},
    **{(m, "_frombuffer"): "frombuffer" for m in ("numpy.core.numeric", "numpy._core.numeric")},
    ("numpy", "ndarray"): "ndarray",
    ("numpy", "dtype"): "dtype",
    ("_codecs", "encode"): "encode",
    ("collections", "OrderedDict"): "dict",
    ("collections", "defaultdict"): "defaultdict",
    ("copy_reg", "_reconstructor"): "reconstructor",
    ("copyreg", "_reconstructor"): "reconstructor",
    ("copy_reg", "__newobj__"): "newobj",
    ("copyreg", "__newobj__"): "newobj",
    **{k: "object" for k in _builtin("object")},
    **{k: n for n in ("dict", "list", "tuple", "set", "frozenset") for k in _builtin(n)},
    **{k: "number" for n in ("int", "float", "complex", "long") for k in _builtin(n)},
    **{k: "bytearray" for k in _builtin("bytearray")},
    **{k: "bytes" for k in _builtin("bytes")},
}
# FLAME files pickle chumpy arrays (chumpy.ch.Ch) and scipy sparse matrices by class.
_CHUMPY_MODULES = {"chumpy", "chumpy.ch", "chumpy.ch_ops", "chumpy.reordering", "chumpy.utils"}
_SPARSE_MODULES = {
    f"scipy.sparse.{m}" for m in ("csc", "_csc", "csr", "_csr", "compressed", "_compressed")
} | {"scipy.sparse"}
_SPARSE_CLASSES = {"csc_matrix", "csr_matrix", "csc_array", "csr_array"}
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_MODULE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*\Z")
# Plain numeric and string dtypes only: no objects, records, voids or datetimes.
_TYPESTR = re.compile(
    r"[<>|=]?(b1|\?|[iu][1248]|f(2|4|8|16)|c(8|16|32)|[SU]\d*|[bBhHiIlLqQefdgFDG])\Z"
)


def _role(token: _Global) -> str:
    known = _KNOWN.get((token.module, token.name))
    if known is not None:
        return known
    if token.module in _CHUMPY_MODULES and token.name[:1].isupper():
        return "chumpy"
    if token.module in _SPARSE_MODULES and token.name in _SPARSE_CLASSES:
        return "sparse"
    raise UnsafePickleError(f"it names {token.module}.{token.name}, which plain data never needs")


def _global(module: Any, name: Any) -> _Global:
    if not isinstance(module, str) or not isinstance(name, str):
        raise UnsafePickleError("a global name is not text")
    if not _MODULE.match(module) or not _IDENTIFIER.match(name):
        raise UnsafePickleError(f"it names {module!r}.{name!r}, which is not a plain name")
    token = _Global(module, name)
    _role(token)  # refuse unknown names where they appear
    return token


class _Pending:
    """An object the file builds in steps (create, then BUILD with its state)."""

    role: str = ""

    def __init__(self) -> None:
        self.state: Any = None
        self.built = False

    def build(self, state: Any) -> None:
        if self.built:
            raise UnsafePickleError(f"a {self.role} is given state twice")
        self.state, self.built = state, True


class _PendingArray(_Pending):
    role = "numpy array"

    def __init__(self, typecode: Any) -> None:
        super().__init__()
        if typecode not in (b"b", "b"):
            raise UnsafePickleError("a numpy array is reconstructed with an unusual type code")


class _PendingDtype(_Pending):
    role = "numpy dtype"

    def __init__(self, typestr: Any) -> None:
        super().__init__()
        if not isinstance(typestr, str) or not _TYPESTR.match(typestr):
            raise UnsafePickleError(f"it holds a numpy dtype {typestr!r} that is not plain numbers")
        self.typestr = typestr


class _PendingChumpy(_Pending):
    role = "chumpy array"


class _PendingSparse(_Pending):
    role = "sparse matrix"

    def __init__(self, name: str) -> None:
        super().__init__()
        self.format = "csr" if name.startswith("csr") else "csc"


@dataclass
class _Buffer:
    """A protocol-5 array: numpy's _frombuffer(buffer, dtype, shape, order)."""

    buffer: Any
    dtype: Any
    shape: Any
    order: Any


@dataclass
class _Scalar:
    dtype: Any
    data: Any


@dataclass
class _Machine:
    """The pickle stack machine, interpreting opcodes on plain values only."""

    stack: list[Any] = field(default_factory=list)
    marks: list[list[Any]] = field(default_factory=list)
    memo: dict[int, Any] = field(default_factory=dict)

    def pop_mark(self) -> list[Any]:
        if not self.marks:
            raise UnsafePickleError("its opcodes use a mark that was never set")
        items, self.stack = self.stack, self.marks.pop()
        return items

    def pop(self) -> Any:
        if not self.stack:
            raise UnsafePickleError("its opcodes pop from an empty stack")
        return self.stack.pop()

    def top(self) -> Any:
        if not self.stack:
            raise UnsafePickleError("its opcodes read an empty stack")
        return self.stack[-1]

    def memo_get(self, key: Any) -> Any:
        try:
            return self.memo[key]
        except (KeyError, TypeError):
            raise UnsafePickleError(
                f"it reads memo entry {key!r}, which was never stored"
            ) from None


def _container(value: Any, kind: type | tuple[type, ...], what: str) -> Any:
    if not isinstance(value, kind):
        raise UnsafePickleError(f"its opcodes {what} something that is not a container for it")
    return value


def _call(role: str, args: Any, kwargs: dict | None = None) -> Any:
    """What a REDUCE or NEWOBJ of a known token produces: our own value, from checked args."""
    if not isinstance(args, tuple):
        raise UnsafePickleError("a call's arguments are not a tuple")
    if kwargs:
        raise UnsafePickleError(f"a {role} is called with keyword arguments")
    n = len(args)
    if role == "reconstruct":  # numpy _reconstruct(ndarray, (0,), b'b') then BUILD
        if n != 3 or not (isinstance(args[0], _Global) and _role(args[0]) == "ndarray"):
            raise UnsafePickleError("numpy's reconstructor is called for something not an array")
        return _PendingArray(args[2])
    if role == "dtype":  # dtype('f8', False, True) then BUILD
        if n not in (1, 3):
            raise UnsafePickleError("a numpy dtype is built with unusual arguments")
        return _PendingDtype(args[0])
    if role == "scalar":  # scalar(dtype, data bytes)
        if n != 2 or not isinstance(args[0], _PendingDtype):
            raise UnsafePickleError("a numpy scalar is built with unusual arguments")
        return _Scalar(args[0], args[1])
    if role == "frombuffer":  # protocol 5 arrays: _frombuffer(buffer, dtype, shape, order)
        if n != 4 or not isinstance(args[1], _PendingDtype):
            raise UnsafePickleError("a numpy buffer array is built with unusual arguments")
        return _Buffer(*args)
    if role == "encode":  # Python 3 bytes in protocol-2 pickles: encode(text, 'latin1')
        if n != 2 or not isinstance(args[0], str) or args[1] not in ("latin1", "latin-1"):
            raise UnsafePickleError("_codecs.encode is called with unusual arguments")
        return args[0].encode("latin1")
    if role in ("dict", "defaultdict"):
        if role == "defaultdict" and n <= 1:
            return {}
        if n == 0:
            return {}
        if n == 1 and isinstance(args[0], list):
            return dict(_pairs(args[0]))
        raise UnsafePickleError(f"a {role} is built with unusual arguments")
    if role in ("list", "tuple", "set", "frozenset"):
        if n == 0:
            return {"list": list, "tuple": tuple, "set": set, "frozenset": frozenset}[role]()
        if n == 1 and isinstance(args[0], (list, tuple)):
            return {"list": list, "tuple": tuple, "set": set, "frozenset": frozenset}[role](args[0])
        raise UnsafePickleError(f"a {role} is built with unusual arguments")
    if role in ("bytes", "bytearray"):
        if n == 0:
            return b""
        if n == 1 and isinstance(args[0], (bytes, bytearray)):
            return bytes(args[0])
        if n == 2 and isinstance(args[0], str) and args[1] in ("latin1", "latin-1"):
            return args[0].encode("latin1")
        raise UnsafePickleError(f"{role} is built with unusual arguments")
    if role == "number":
        if n == 1 and isinstance(args[0], (int, float, complex)) and not isinstance(args[0], bool):
            return args[0]
        raise UnsafePickleError("a number is built with unusual arguments")
    if role == "reconstructor":  # copyreg._reconstructor(cls, object, None): an empty instance
        if n != 3 or not isinstance(args[0], _Global) or args[2] is not None:
            raise UnsafePickleError("copyreg's reconstructor is called with unusual arguments")
        if not (isinstance(args[1], _Global) and _role(args[1]) == "object"):
            raise UnsafePickleError("copyreg's reconstructor is called with unusual arguments")
        return _instance(args[0])
    if role == "newobj":
        if n < 1 or not isinstance(args[0], _Global):
            raise UnsafePickleError("copyreg.__newobj__ is called with unusual arguments")
        return _call_class(args[0], args[1:])
    raise UnsafePickleError(f"it calls a {role}, which plain data never needs")


def _call_class(cls: Any, args: tuple) -> Any:
    """NEWOBJ cls(*args): only the classes FLAME files hold, always created empty."""
    if not isinstance(cls, _Global):
        raise UnsafePickleError("it creates an object of something that is not a class name")
    role = _role(cls)
    if role in ("chumpy", "sparse"):
        return _instance(cls)
    if role in ("dict", "list", "set", "frozenset", "tuple", "defaultdict"):
        return _call(role, args)
    if role == "object" and not args:
        return _instance(cls)
    raise UnsafePickleError(f"it creates a {cls.module}.{cls.name} object")


def _instance(cls: _Global) -> _Pending:
    role = _role(cls)
    if role == "chumpy":
        return _PendingChumpy()
    if role == "sparse":
        return _PendingSparse(cls.name)
    raise UnsafePickleError(f"it creates a {cls.module}.{cls.name} object")


def _pairs(items: list[Any]) -> list[tuple[Any, Any]]:
    out = []
    for item in items:
        if not (isinstance(item, (list, tuple)) and len(item) == 2):
            raise UnsafePickleError("a dictionary is built from something that is not pairs")
        out.append((item[0], item[1]))
    return out


def _hashable(key: Any) -> Any:
    if isinstance(key, (str, bytes, int, float, complex, bool, type(None), _Global)):
        return key
    if isinstance(key, tuple) and all(isinstance(k, (str, bytes, int, float, bool)) for k in key):
        return key
    raise UnsafePickleError("it uses something other than text or a number as a dictionary key")


def _run(data: bytes) -> Any:
    """Interpret the opcodes of `data`; returns the raw result (pending objects still inside)."""
    m = _Machine()
    push = m.stack.append
    simple_values = {"NONE": None, "NEWTRUE": True, "NEWFALSE": False}
    for op, arg, _pos in pickletools.genops(io.BytesIO(data)):
        name = op.name
        if name in ("PROTO", "FRAME"):
            continue
        if name == "STOP":
            if len(m.stack) != 1 or m.marks:
                raise UnsafePickleError("it ends with a malformed stack")
            return m.stack[0]
        if name in simple_values:
            push(simple_values[name])
        elif name in ("INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4"):
            push(arg)
        elif name in ("FLOAT", "BINFLOAT"):
            push(float(arg))
        elif name in ("STRING", "BINSTRING", "SHORT_BINSTRING"):
            push(arg)  # a Python 2 str, read as latin-1 text (what numpy expects for its data)
        elif name in ("UNICODE", "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8"):
            push(arg)
        elif name in ("BINBYTES", "SHORT_BINBYTES", "BINBYTES8"):
            push(bytes(arg))
        elif name == "BYTEARRAY8":
            push(bytes(arg))
        elif name == "MARK":
            m.marks.append(m.stack)
            m.stack = []
            push = m.stack.append
        elif name == "POP":
            m.pop()
        elif name == "POP_MARK":
            m.pop_mark()
            push = m.stack.append
        elif name == "DUP":
            push(m.top())
        elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
            m.memo[arg] = m.top()
        elif name == "MEMOIZE":
            m.memo[len(m.memo)] = m.top()
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            push(m.memo_get(arg))
        elif name == "EMPTY_TUPLE":
            push(())
        elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
            k = int(name[-1])
            if len(m.stack) < k:
                raise UnsafePickleError("its opcodes pop from an empty stack")
            items = tuple(m.stack[-k:])
            del m.stack[-k:]
            push(items)
        elif name == "TUPLE":
            items = tuple(m.pop_mark())
            push = m.stack.append
            push(items)
        elif name == "EMPTY_LIST":
            push([])
        elif name == "LIST":
            items = m.pop_mark()
            push = m.stack.append
            push(items)
        elif name == "APPEND":
            value = m.pop()
            _container(m.top(), list, "append to").append(value)
        elif name == "APPENDS":
            items = m.pop_mark()
            push = m.stack.append
            _container(m.top(), list, "append to").extend(items)
        elif name == "EMPTY_DICT":
            push({})
        elif name == "DICT":
            items = m.pop_mark()
            push = m.stack.append
            if len(items) % 2:
                raise UnsafePickleError("a dictionary has a key without a value")
            push({_hashable(k): v for k, v in zip(items[::2], items[1::2], strict=True)})
        elif name == "SETITEM":
            value, key = m.pop(), m.pop()
            _container(m.top(), dict, "set an item of")[_hashable(key)] = value
        elif name == "SETITEMS":
            items = m.pop_mark()
            push = m.stack.append
            if len(items) % 2:
                raise UnsafePickleError("a dictionary has a key without a value")
            target = _container(m.top(), dict, "set items of")
            for k, v in zip(items[::2], items[1::2], strict=True):
                target[_hashable(k)] = v
        elif name == "EMPTY_SET":
            push(set())
        elif name == "ADDITEMS":
            items = m.pop_mark()
            push = m.stack.append
            _container(m.top(), set, "add to").update(_hashable(i) for i in items)
        elif name == "FROZENSET":
            items = m.pop_mark()
            push = m.stack.append
            push(frozenset(_hashable(i) for i in items))
        elif name == "GLOBAL":
            module, _, attr = str(arg).partition(" ")
            push(_global(module, attr))
        elif name == "STACK_GLOBAL":
            attr, module = m.pop(), m.pop()
            push(_global(module, attr))
        elif name == "REDUCE":
            args, func = m.pop(), m.pop()
            if not isinstance(func, _Global):
                raise UnsafePickleError("it calls something that is not a known name")
            push(_call(_role(func), args))
        elif name == "NEWOBJ":
            args, cls = m.pop(), m.pop()
            push(_call_class(cls, _container(args, tuple, "pass as arguments")))
        elif name == "NEWOBJ_EX":
            kwargs, args, cls = m.pop(), m.pop(), m.pop()
            if kwargs:
                raise UnsafePickleError("it creates an object with keyword arguments")
            push(_call_class(cls, _container(args, tuple, "pass as arguments")))
        elif name == "BUILD":
            state, target = m.pop(), m.top()
            if not isinstance(target, _Pending):
                raise UnsafePickleError("it sets the state of something that is not an array")
            target.build(state)
        else:  # INST, OBJ, PERSID, BINPERSID, EXT1/2/4, NEXT_BUFFER, READONLY_BUFFER, ...
            raise UnsafePickleError(f"it uses the {name} opcode, which plain data never needs")
        if len(m.marks) > MAX_DEPTH:
            raise UnsafePickleError(f"it nests deeper than {MAX_DEPTH} levels")
    raise UnsafePickleError("it ends without a STOP opcode")


def _dtype(pending: Any) -> np.dtype:
    if not isinstance(pending, _PendingDtype):
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
        if isinstance(value, _PendingArray):
            return self._array(value, depth)
        if isinstance(value, _PendingDtype):
            return _dtype(value)
        if isinstance(value, _Buffer):
            return self._frombuffer(value, depth)
        if isinstance(value, _Scalar):
            dtype = _dtype(value.dtype)
            return _from_bytes(_raw_bytes(value.data), dtype, (), "C")[()]
        if isinstance(value, _PendingChumpy):
            state = value.state[0] if isinstance(value.state, tuple) else value.state
            if not (isinstance(state, dict) and "x" in state):
                raise UnsafePickleError("it holds a chumpy object that is not a plain array")
            return np.asarray(self(state["x"], depth))
        if isinstance(value, _PendingSparse):
            return self._sparse(value, depth)
        if isinstance(value, _Global):
            raise UnsafePickleError(f"it holds the name {value.module}.{value.name} as a value")
        raise UnsafePickleError(f"it holds a {type(value).__name__}")

    def _array(self, pending: _PendingArray, depth: int) -> np.ndarray:
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

    def _frombuffer(self, value: _Buffer, depth: int) -> np.ndarray:
        if value.order not in ("C", "F"):
            raise UnsafePickleError("a numpy buffer array has an unusual memory order")
        dtype = self(value.dtype, depth)
        return _from_bytes(_raw_bytes(value.buffer), dtype, _shape(value.shape), value.order)

    def _sparse(self, pending: _PendingSparse, depth: int) -> np.ndarray:
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
        raw = _run(data)
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
