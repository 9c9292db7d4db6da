"""The stack machine `avatar.flame.pickle_io` reads pickles with: it interprets a pickle's
opcodes on plain values and inert name tokens, and never imports or calls anything.

`pickletools.genops` only parses the opcodes; `Machine.run` gives each one a handler of its own
(`_OPCODES`: values, the stack and memo, containers, names and calls) and refuses every other
opcode. A global name becomes a `Global` token, never imported; only the exact (module, name)
pairs in `_KNOWN` mean anything, and a "call" of one (REDUCE, NEWOBJ) is our own code building
a value from checked arguments: a container, bytes, a number, or a pending numpy array, dtype,
scalar, chumpy array or sparse matrix that `pickle_io` turns into numpy once the file is read.
"""

from __future__ import annotations

import io
import pickletools
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

#: Nesting deeper than this is refused (FLAME files nest three or four levels).
MAX_DEPTH = 100


class UnsafePickleError(ValueError):
    """The file is not a pickle of plain data that this reader accepts."""


@dataclass(frozen=True)
class Global:
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


def _role(token: Global) -> str:
    known = _KNOWN.get((token.module, token.name))
    if known is not None:
        return known
    if token.module in _CHUMPY_MODULES and token.name[:1].isupper():
        return "chumpy"
    if token.module in _SPARSE_MODULES and token.name in _SPARSE_CLASSES:
        return "sparse"
    raise UnsafePickleError(f"it names {token.module}.{token.name}, which plain data never needs")


def _global(module: Any, name: Any) -> Global:
    if not isinstance(module, str) or not isinstance(name, str):
        raise UnsafePickleError("a global name is not text")
    if not _MODULE.match(module) or not _IDENTIFIER.match(name):
        raise UnsafePickleError(f"it names {module!r}.{name!r}, which is not a plain name")
    token = Global(module, name)
    _role(token)  # refuse unknown names where they appear
    return token


class Pending:
    """An object the file builds in steps (create, then BUILD with its state)."""

    role: str = ""

    def __init__(self) -> None:
        self.state: Any = None
        self.built = False

    def build(self, state: Any) -> None:
        if self.built:
            raise UnsafePickleError(f"a {self.role} is given state twice")
        self.state, self.built = state, True


class PendingArray(Pending):
    role = "numpy array"

    def __init__(self, typecode: Any) -> None:
        super().__init__()
        if typecode not in (b"b", "b"):
            raise UnsafePickleError("a numpy array is reconstructed with an unusual type code")


class PendingDtype(Pending):
    role = "numpy dtype"

    def __init__(self, typestr: Any) -> None:
        super().__init__()
        if not isinstance(typestr, str) or not _TYPESTR.match(typestr):
            raise UnsafePickleError(f"it holds a numpy dtype {typestr!r} that is not plain numbers")
        self.typestr = typestr


class PendingChumpy(Pending):
    role = "chumpy array"


class PendingSparse(Pending):
    role = "sparse matrix"

    def __init__(self, name: str) -> None:
        super().__init__()
        self.format = "csr" if name.startswith("csr") else "csc"


@dataclass
class BufferArray:
    """A protocol-5 array: numpy's _frombuffer(buffer, dtype, shape, order)."""

    buffer: Any
    dtype: Any
    shape: Any
    order: Any


@dataclass
class Scalar:
    dtype: Any
    data: Any


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
        if n != 3 or not (isinstance(args[0], Global) and _role(args[0]) == "ndarray"):
            raise UnsafePickleError("numpy's reconstructor is called for something not an array")
        return PendingArray(args[2])
    if role == "dtype":  # dtype('f8', False, True) then BUILD
        if n not in (1, 3):
            raise UnsafePickleError("a numpy dtype is built with unusual arguments")
        return PendingDtype(args[0])
    if role == "scalar":  # scalar(dtype, data bytes)
        if n != 2 or not isinstance(args[0], PendingDtype):
            raise UnsafePickleError("a numpy scalar is built with unusual arguments")
        return Scalar(args[0], args[1])
    if role == "frombuffer":  # protocol 5 arrays: _frombuffer(buffer, dtype, shape, order)
        if n != 4 or not isinstance(args[1], PendingDtype):
            raise UnsafePickleError("a numpy buffer array is built with unusual arguments")
        return BufferArray(*args)
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
        if n != 3 or not isinstance(args[0], Global) or args[2] is not None:
            raise UnsafePickleError("copyreg's reconstructor is called with unusual arguments")
        if not (isinstance(args[1], Global) and _role(args[1]) == "object"):
            raise UnsafePickleError("copyreg's reconstructor is called with unusual arguments")
        return _instance(args[0])
    if role == "newobj":
        if n < 1 or not isinstance(args[0], Global):
            raise UnsafePickleError("copyreg.__newobj__ is called with unusual arguments")
        return _call_class(args[0], args[1:])
    raise UnsafePickleError(f"it calls a {role}, which plain data never needs")


def _call_class(cls: Any, args: tuple) -> Any:
    """NEWOBJ cls(*args): only the classes FLAME files hold, always created empty."""
    if not isinstance(cls, Global):
        raise UnsafePickleError("it creates an object of something that is not a class name")
    role = _role(cls)
    if role in ("chumpy", "sparse"):
        return _instance(cls)
    if role in ("dict", "list", "set", "frozenset", "tuple", "defaultdict"):
        return _call(role, args)
    if role == "object" and not args:
        return _instance(cls)
    raise UnsafePickleError(f"it creates a {cls.module}.{cls.name} object")


def _instance(cls: Global) -> Pending:
    role = _role(cls)
    if role == "chumpy":
        return PendingChumpy()
    if role == "sparse":
        return PendingSparse(cls.name)
    raise UnsafePickleError(f"it creates a {cls.module}.{cls.name} object")


def _pairs(items: list[Any]) -> list[tuple[Any, Any]]:
    out = []
    for item in items:
        if not (isinstance(item, (list, tuple)) and len(item) == 2):
            raise UnsafePickleError("a dictionary is built from something that is not pairs")
        out.append((item[0], item[1]))
    return out


def _hashable(key: Any) -> Any:
    if isinstance(key, (str, bytes, int, float, complex, bool, type(None), Global)):
        return key
    if isinstance(key, tuple) and all(isinstance(k, (str, bytes, int, float, bool)) for k in key):
        return key
    raise UnsafePickleError("it uses something other than text or a number as a dictionary key")


#: The opcodes the machine interprets, each with its handler (`_handles`); every other opcode
#: (INST, OBJ, PERSID, BINPERSID, EXT1/2/4, NEXT_BUFFER, READONLY_BUFFER, ...) is refused.
_OPCODES: dict[str, Callable[[Machine, str, Any], None]] = {}


def _handles(*names: str) -> Callable:
    """Register a `Machine` method as the handler of the opcodes `names`."""

    def register(method: Callable) -> Callable:
        for name in names:
            _OPCODES[name] = method
        return method

    return register


_CONSTANTS = {"NONE": None, "NEWTRUE": True, "NEWFALSE": False}
_EMPTY = {"EMPTY_TUPLE": tuple, "EMPTY_LIST": list, "EMPTY_DICT": dict, "EMPTY_SET": set}


@dataclass
class Machine:
    """The pickle stack machine, interpreting opcodes on plain values only."""

    stack: list[Any] = field(default_factory=list)
    marks: list[list[Any]] = field(default_factory=list)
    memo: dict[int, Any] = field(default_factory=dict)

    def run(self, data: bytes) -> Any:
        """Interpret the opcodes of `data`; returns the raw result (pending objects inside)."""
        for op, arg, _pos in pickletools.genops(io.BytesIO(data)):
            name = op.name
            if name in ("PROTO", "FRAME"):
                continue
            if name == "STOP":
                if len(self.stack) != 1 or self.marks:
                    raise UnsafePickleError("it ends with a malformed stack")
                return self.stack[0]
            handler = _OPCODES.get(name)
            if handler is None:
                raise UnsafePickleError(f"it uses the {name} opcode, which plain data never needs")
            handler(self, name, arg)
            if len(self.marks) > MAX_DEPTH:
                raise UnsafePickleError(f"it nests deeper than {MAX_DEPTH} levels")
        raise UnsafePickleError("it ends without a STOP opcode")

    def push(self, value: Any) -> None:
        self.stack.append(value)

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

    # ------------------------------------------------------------------ values
    @_handles(*_CONSTANTS)
    def _constant(self, name: str, arg: Any) -> None:
        self.push(_CONSTANTS[name])

    # a Python 2 str (STRING...) is read as latin-1 text, what numpy expects for its data
    @_handles("INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4")
    @_handles("UNICODE", "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8")
    @_handles("STRING", "BINSTRING", "SHORT_BINSTRING")
    def _literal(self, name: str, arg: Any) -> None:
        self.push(arg)

    @_handles("FLOAT", "BINFLOAT")
    def _float(self, name: str, arg: Any) -> None:
        self.push(float(arg))

    @_handles("BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "BYTEARRAY8")
    def _bytes(self, name: str, arg: Any) -> None:
        self.push(bytes(arg))

    # ------------------------------------------------------------------ stack and memo
    @_handles("MARK")
    def _mark(self, name: str, arg: Any) -> None:
        self.marks.append(self.stack)
        self.stack = []

    @_handles("POP")
    def _pop(self, name: str, arg: Any) -> None:
        self.pop()

    @_handles("POP_MARK")
    def _pop_mark(self, name: str, arg: Any) -> None:
        self.pop_mark()

    @_handles("DUP")
    def _dup(self, name: str, arg: Any) -> None:
        self.push(self.top())

    @_handles("PUT", "BINPUT", "LONG_BINPUT")
    def _put(self, name: str, arg: Any) -> None:
        self.memo[arg] = self.top()

    @_handles("MEMOIZE")
    def _memoize(self, name: str, arg: Any) -> None:
        self.memo[len(self.memo)] = self.top()

    @_handles("GET", "BINGET", "LONG_BINGET")
    def _get(self, name: str, arg: Any) -> None:
        self.push(self.memo_get(arg))

    # ------------------------------------------------------------------ containers
    @_handles(*_EMPTY)
    def _empty(self, name: str, arg: Any) -> None:
        self.push(_EMPTY[name]())

    @_handles("TUPLE1", "TUPLE2", "TUPLE3")
    def _short_tuple(self, name: str, arg: Any) -> None:
        k = int(name[-1])
        if len(self.stack) < k:
            raise UnsafePickleError("its opcodes pop from an empty stack")
        items = tuple(self.stack[-k:])
        del self.stack[-k:]
        self.push(items)

    @_handles("TUPLE")
    def _tuple(self, name: str, arg: Any) -> None:
        self.push(tuple(self.pop_mark()))

    @_handles("LIST")
    def _list(self, name: str, arg: Any) -> None:
        self.push(self.pop_mark())

    @_handles("APPEND")
    def _append(self, name: str, arg: Any) -> None:
        value = self.pop()
        _container(self.top(), list, "append to").append(value)

    @_handles("APPENDS")
    def _appends(self, name: str, arg: Any) -> None:
        items = self.pop_mark()
        _container(self.top(), list, "append to").extend(items)

    @_handles("DICT")
    def _dict(self, name: str, arg: Any) -> None:
        items = self.pop_mark()
        if len(items) % 2:
            raise UnsafePickleError("a dictionary has a key without a value")
        self.push({_hashable(k): v for k, v in zip(items[::2], items[1::2], strict=True)})

    @_handles("SETITEM")
    def _setitem(self, name: str, arg: Any) -> None:
        value, key = self.pop(), self.pop()
        _container(self.top(), dict, "set an item of")[_hashable(key)] = value

    @_handles("SETITEMS")
    def _setitems(self, name: str, arg: Any) -> None:
        items = self.pop_mark()
        if len(items) % 2:
            raise UnsafePickleError("a dictionary has a key without a value")
        target = _container(self.top(), dict, "set items of")
        for k, v in zip(items[::2], items[1::2], strict=True):
            target[_hashable(k)] = v

    @_handles("ADDITEMS")
    def _additems(self, name: str, arg: Any) -> None:
        items = self.pop_mark()
        _container(self.top(), set, "add to").update(_hashable(i) for i in items)

    @_handles("FROZENSET")
    def _frozenset(self, name: str, arg: Any) -> None:
        items = self.pop_mark()
        self.push(frozenset(_hashable(i) for i in items))

    # ------------------------------------------------------------------ names and calls
    @_handles("GLOBAL")
    def _global_name(self, name: str, arg: Any) -> None:
        module, _, attr = str(arg).partition(" ")
        self.push(_global(module, attr))

    @_handles("STACK_GLOBAL")
    def _stack_global(self, name: str, arg: Any) -> None:
        attr, module = self.pop(), self.pop()
        self.push(_global(module, attr))

    @_handles("REDUCE")
    def _reduce(self, name: str, arg: Any) -> None:
        args, func = self.pop(), self.pop()
        if not isinstance(func, Global):
            raise UnsafePickleError("it calls something that is not a known name")
        self.push(_call(_role(func), args))

    @_handles("NEWOBJ")
    def _newobj(self, name: str, arg: Any) -> None:
        args, cls = self.pop(), self.pop()
        self.push(_call_class(cls, _container(args, tuple, "pass as arguments")))

    @_handles("NEWOBJ_EX")
    def _newobj_ex(self, name: str, arg: Any) -> None:
        kwargs, args, cls = self.pop(), self.pop(), self.pop()
        if kwargs:
            raise UnsafePickleError("it creates an object with keyword arguments")
        self.push(_call_class(cls, _container(args, tuple, "pass as arguments")))

    @_handles("BUILD")
    def _build(self, name: str, arg: Any) -> None:
        state, target = self.pop(), self.top()
        if not isinstance(target, Pending):
            raise UnsafePickleError("it sets the state of something that is not an array")
        target.build(state)
