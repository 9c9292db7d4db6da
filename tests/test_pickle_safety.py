"""Pickles are read as data: known gadget payloads run nothing, and real layouts still load.

Every payload here would run code (or touch the file system) under the stock unpickler; each
test checks a canary file that the payload would create, and that the reader refuses the file
with one line. The CLI tests go through every way a user's pickle reaches the program:
--flame, TALKING_AVATAR_FLAME, the sibling files of a FLAME model, and VOCAset pickles.
"""

from __future__ import annotations

import copyreg
import os
import pickle
import struct
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from avatar.errors import TalkingAvatarError
from avatar.flame.pickle_io import (
    UnsafePickleError,
    load_data_pickle,
    load_model_pickle,
    read_pickle_bytes,
    write_pickle,
)
from viewer.cli import main


# ---------------------------------------------------------------------------------- payloads
def _text(s: str) -> bytes:
    data = s.encode("utf-8")
    return b"X" + struct.pack("<I", len(data)) + data  # BINUNICODE


def _global(module: str, name: str, proto: int) -> bytes:
    """The opcodes that push a global, as a pickler of that protocol writes them."""
    if proto >= 4:
        return _text(module) + _text(name) + b"\x93"  # STACK_GLOBAL
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"  # GLOBAL


def _call(module: str, name: str, args: bytes, proto: int) -> bytes:
    """global(*args): args are opcodes pushing the argument values, tupled by MARK .. TUPLE."""
    head = b"\x80" + bytes([proto]) if proto >= 2 else b""
    return head + _global(module, name, proto) + b"(" + args + b"tR."


def _canary_code(canary: Path) -> str:
    return f"open({str(canary)!r}, 'w').write('ran')"


GADGETS = [
    ("builtins", "eval"),
    ("builtins", "exec"),
    ("__builtin__", "eval"),
    ("builtins", "__import__"),
    ("builtins", "getattr"),
    ("builtins", "open"),
    ("os", "system"),
    ("posix", "system"),
    ("subprocess", "getoutput"),
    ("subprocess", "Popen"),
    ("numpy.testing", "assert_"),
    ("numpy", "load"),
    ("numpy.lib.npyio", "load"),
    ("numpy", "fromfile"),
    ("torch", "load"),
    ("pickle", "loads"),
]
# Dotted names under every module the reader knows: the stock lookup follows these to eval.
DOTTED = [
    ("numpy.dtypes", "__builtins__.get"),
    ("numpy", "testing.assert_"),
    ("numpy", "lib.npyio.load"),
    ("numpy.core.multiarray", "__builtins__.eval"),
    ("numpy._core.multiarray", "_reconstruct.__globals__.get"),
    ("numpy._core.numeric", "_frombuffer.__globals__.get"),
    ("_codecs", "encode.__self__.lookup"),
    ("collections", "OrderedDict.__init__"),
    ("copyreg", "_reconstructor.__globals__.get"),
    ("builtins", "dict.fromkeys"),
    ("chumpy.ch", "Ch.__init__"),
    ("scipy.sparse", "csc_matrix.__init__"),
]


def _payloads(canary: Path) -> list[tuple[str, bytes]]:
    code = _text(_canary_code(canary))
    shell = _text(f"touch {canary}")
    out = []
    for proto in range(6):
        for module, name in GADGETS:
            arg = shell if module in ("os", "posix", "subprocess") else code
            out.append((f"p{proto}-{module}.{name}", _call(module, name, arg, proto)))
        for module, name in DOTTED:
            out.append((f"p{proto}-dotted-{module}.{name}", _call(module, name, code, proto)))
        # Known callables with hostile arguments.
        out.append(
            (
                f"p{proto}-reconstruct-eval",
                _call("numpy.core.multiarray", "_reconstruct", _global("builtins", "eval", proto)
                      + b"(" + code + b"t" + _text("b"), proto),
            )
        )  # fmt: skip
        out.append(
            (
                f"p{proto}-reconstructor-system",
                _call("copyreg", "_reconstructor", _global("os", "system", proto)
                      + _global("builtins", "object", proto) + b"N", proto),
            )
        )  # fmt: skip
        out.append(
            (
                f"p{proto}-newobj-system",
                _call("copyreg", "__newobj__", _global("os", "system", proto) + shell, proto),
            )
        )
        out.append(
            (f"p{proto}-encode-rot13", _call("_codecs", "encode", code + _text("rot13"), proto))
        )
        out.append(
            (
                f"p{proto}-dict-kwargs",
                _call("collections", "OrderedDict", _global("os", "system", proto), proto),
            )
        )
    # Opcodes that call or import by themselves.
    out += [
        ("inst", b"(S'" + f"touch {canary}".encode() + b"'\nios\nsystem\n."),
        ("obj", b"(cos\nsystem\nS'" + f"touch {canary}".encode() + b"'\no."),
        ("persid", b"P" + f"touch {canary}".encode() + b"\n."),
        ("binpersid", b"\x80\x02" + shell + b"Q."),
        ("ext1", b"\x80\x02\x82\x01."),
        ("next-buffer", b"\x80\x05\x97."),
        ("newobj-ex", b"\x80\x04" + _global("os", "system", 4) + b")}\x92."),
        # BUILD on a plain dict: the stock unpickler would call its __setstate__ or update it
        ("build-dict", b"\x80\x02}(" + _text("a") + b"K\x01u}b."),
        # an object array: its data would be unpickled objects
        (
            "object-array",
            b"\x80\x02" + _global("numpy", "dtype", 2) + _text("O8") + b"\x89\x88\x87R.",
        ),
    ]
    return out


@pytest.fixture()
def canary(tmp_path: Path) -> Path:
    return tmp_path / "canary"


def test_no_payload_runs_code(canary: Path) -> None:
    payloads = _payloads(canary)
    assert len(payloads) > 150
    # The stock unpickler really would run the first one (the corpus is live, not inert).
    pickle.loads(_call("builtins", "eval", _text(_canary_code(canary)), 2))
    assert canary.exists()
    canary.unlink()
    for label, payload in payloads:
        with pytest.raises(UnsafePickleError):
            read_pickle_bytes(payload)
        assert not canary.exists(), f"payload {label} ran code"


def test_refusals_name_the_problem(canary: Path) -> None:
    with pytest.raises(UnsafePickleError, match=r"os\.system, which plain data never needs"):
        read_pickle_bytes(_call("os", "system", _text("true"), 2))
    with pytest.raises(UnsafePickleError, match=r"which is not a plain name"):
        read_pickle_bytes(_call("numpy.dtypes", "__builtins__.get", _text("eval"), 4))
    with pytest.raises(UnsafePickleError, match=r"INST opcode"):
        read_pickle_bytes(b"(S'x'\nios\nsystem\n.")
    with pytest.raises(UnsafePickleError, match=r"not a well-formed pickle"):
        read_pickle_bytes(pickle.dumps({"a": 1}, protocol=2)[:-3])
    with pytest.raises(UnsafePickleError, match=r"contains itself"):
        cyclic: list = []
        cyclic.append(cyclic)
        read_pickle_bytes(pickle.dumps(cyclic, protocol=2))


def test_memory_bombs_are_refused() -> None:
    # an array whose shape claims far more elements than its bytes hold
    fake = pickle.dumps(np.zeros(4), protocol=2).replace(b"K\x04\x85", b"J\x00\x00\x00\x40\x85")
    with pytest.raises(UnsafePickleError, match=r"holds 32 bytes"):
        read_pickle_bytes(fake)
    # a shared list nested 60 times is 2**60 items if expanded; it must read in linear time
    deep: list = [1]
    for _ in range(60):
        deep = [deep, deep]
    out = read_pickle_bytes(pickle.dumps(deep, protocol=2))
    assert out[0] is out[1]  # shared, not copied
    too_deep: list = []
    for _ in range(200):
        too_deep = [too_deep]
    with pytest.raises(UnsafePickleError, match=r"deeper than"):
        read_pickle_bytes(pickle.dumps(too_deep, protocol=2))


# ---------------------------------------------------------------------------------- real layouts
class _FakeChumpy:
    """Pickles like chumpy.ch.Ch: copyreg._reconstructor plus a state dict with 'x'."""

    def __init__(self, x: np.ndarray) -> None:
        self.x = x

    def __reduce_ex__(self, proto: int):  # noqa: ANN204
        return (copyreg._reconstructor, (type(self), object, None), {"x": self.x, "_dirty": {1}})


@pytest.fixture()
def chumpy_class(monkeypatch: pytest.MonkeyPatch) -> type:
    module = types.ModuleType("chumpy.ch")
    monkeypatch.setitem(sys.modules, "chumpy", types.ModuleType("chumpy"))
    monkeypatch.setitem(sys.modules, "chumpy.ch", module)
    cls = type("Ch", (_FakeChumpy,), {"__module__": "chumpy.ch"})
    module.Ch = cls
    return cls


@pytest.mark.parametrize("proto", range(6))
def test_flame_layout_round_trips(proto: int, chumpy_class: type) -> None:
    import scipy.sparse as sp

    rng = np.random.default_rng(proto)
    regressor = sp.csc_matrix(rng.random((5, 40)) * (rng.random((5, 40)) > 0.7))
    data = {
        "v_template": rng.random((40, 3)),
        "f": np.arange(30, dtype=np.uint32).reshape(10, 3),
        "shapedirs": chumpy_class(rng.random((40, 3, 10))),
        "J_regressor": regressor,
        "kintree_table": np.array([[2**32 - 1, 0], [0, 1]], dtype=np.int64),
        "bs_type": "lrotmin",
        "scale": np.float32(1.5),
        "fortran": np.asfortranarray(rng.random((3, 4))),
        "big_endian": np.arange(6, dtype=">i8"),
        "nested": {"t": (1, 2.0, None, True), "l": [b"raw", "text"], "s": {1, 2}},
    }
    out = read_pickle_bytes(pickle.dumps(data, protocol=proto))
    np.testing.assert_array_equal(out["v_template"], data["v_template"])
    np.testing.assert_array_equal(out["shapedirs"], data["shapedirs"].x)
    np.testing.assert_array_equal(out["J_regressor"], regressor.toarray())
    np.testing.assert_array_equal(out["fortran"], data["fortran"])
    np.testing.assert_array_equal(out["big_endian"], data["big_endian"])
    assert out["f"].dtype == np.uint32 and out["kintree_table"][0, 0] == 2**32 - 1
    assert type(out["scale"]) is np.float32 and out["scale"] == 1.5
    assert out["bs_type"] == "lrotmin" and out["nested"] == data["nested"]


def test_python2_style_pickle() -> None:
    """FLAME 2020 files were written by Python 2: copy_reg, __builtin__, arrays as str data."""
    raw = np.arange(6, dtype="<f8").tobytes()
    dtype = (
        b"cnumpy\ndtype\n(U\x02f8\x89\x88tR(K\x03U\x01<NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
    )
    array = (
        b"cnumpy.core.multiarray\n_reconstruct\n(cnumpy\nndarray\n(K\x00tU\x01btR"
        + b"(K\x01(K\x02K\x03t"
        + dtype
        + b"\x89U"
        + bytes([len(raw)])
        + raw
        + b"tb"
    )
    data = b"\x80\x02}(U\x0av_templateq\x01" + array + b"U\x07bs_typeU\x07lrotminu."
    out = read_pickle_bytes(data)
    np.testing.assert_array_equal(out["v_template"], np.arange(6.0).reshape(2, 3))
    assert out["bs_type"] == "lrotmin"


# ---------------------------------------------------------------------------------- every door
def _evil(path: Path, canary: Path) -> Path:
    path.write_bytes(_call("numpy.dtypes", "__builtins__.get", _text("eval"), 4)[:-1]
                     + b"(" + _text(_canary_code(canary)) + b"tR.")  # fmt: skip
    return path


def _one_line_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("talking-avatar: error: ")
    return err


def test_cli_flame_flag_and_env(tmp_path: Path, canary: Path, capsys, monkeypatch) -> None:
    evil = _evil(tmp_path / "FLAME_NEUTRAL.pkl", canary)
    err = _one_line_exit_2(capsys, ["avatar", "info", "--flame", str(evil)])
    assert "not a readable FLAME model pickle" in err and "--flame" in err
    monkeypatch.setenv("TALKING_AVATAR_FLAME", str(evil))
    _one_line_exit_2(capsys, ["avatar", "info"])
    assert not canary.exists()


def test_cli_flame_siblings(tmp_path: Path, canary: Path, capsys, head) -> None:
    from avatar.flame.export import export_smplx_folder

    folder = tmp_path / "flame"
    model = export_smplx_folder(head, folder)[0]
    data = load_model_pickle(model)
    del data["talking_avatar"]["regions"]  # as a real FLAME file: regions come from the masks
    write_pickle(model, data)
    assert main(["avatar", "info", "--flame", str(model)]) == 0  # the clean folder loads
    capsys.readouterr()
    for sibling in ("flame_static_embedding.pkl", "FLAME_masks.pkl"):
        _evil(folder / sibling, canary)
        _one_line_exit_2(capsys, ["avatar", "info", "--flame", str(model)])
        (folder / sibling).unlink()
    assert not canary.exists()


def test_vocaset_pickles(tmp_path: Path, canary: Path) -> None:
    for name in ("templates.pkl", "raw_audio_fixed.pkl", "subj_seq_to_idx.pkl"):
        with pytest.raises(TalkingAvatarError, match="not a readable dataset pickle"):
            load_data_pickle(_evil(tmp_path / name, canary))
    with pytest.raises(TalkingAvatarError, match="not a readable FLAME model pickle"):
        load_model_pickle(_evil(tmp_path / "m.pkl", canary))
    assert not canary.exists()


def test_cli_train_on_a_hostile_vocaset(tmp_path: Path, canary: Path, capsys) -> None:
    talking = tmp_path / "vocaset"
    talking.mkdir()
    np.save(talking / "data_verts.npy", np.zeros((2, 4, 3), np.float32))
    for name in ("templates.pkl", "subj_seq_to_idx.pkl", "raw_audio_fixed.pkl"):
        _evil(talking / name, canary)
    argv = ["train", "--talking", str(talking), "--expressions", str(tmp_path), "--out"]
    err = _one_line_exit_2(capsys, [*argv, str(tmp_path / "ckpt")])
    assert "templates.pkl is not a readable dataset pickle" in err
    assert not canary.exists() and not (tmp_path / "ckpt").exists()


def test_missing_and_folder(tmp_path: Path) -> None:
    with pytest.raises(TalkingAvatarError, match="does not exist"):
        load_data_pickle(tmp_path / "none.pkl")
    with pytest.raises(TalkingAvatarError, match="is a folder"):
        load_data_pickle(tmp_path)
    assert os.listdir(tmp_path) == []
