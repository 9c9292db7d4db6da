"""Run every bad input we know of through the real command line and write what a user sees.

Each case makes its inputs in a fresh folder, runs `talking-avatar ...` there as a separate
process, and records the exit code, what it printed on stderr, whether a traceback appeared, and
which files it left behind. The table replaces the part of docs/robustness.md between the
markers, so the document is always a measurement, never a promise:

    python scripts/robustness_table.py            # prints the table
    python scripts/robustness_table.py --write    # also updates docs/robustness.md
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "robustness.md"
BEGIN, END = "<!-- cli-table: begin -->", "<!-- cli-table: end -->"


@dataclass
class Case:
    name: str
    argv: list[str]
    setup: Callable[[Path], None] | None = None
    expect: int = 2


def _speech(folder: Path, name: str = "speech.wav", rate: int = 16000, seconds: float = 1.0):
    t = np.arange(int(rate * seconds)) / rate
    wave = 0.3 * np.sin(2 * np.pi * 180 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))
    sf.write(folder / name, wave.astype(np.float32), rate)


def _write(name: str, data: bytes | str) -> Callable[[Path], None]:
    def make(folder: Path) -> None:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data if isinstance(data, bytes) else data.encode())

    return make


def _all(*steps: Callable[[Path], None]) -> Callable[[Path], None]:
    def make(folder: Path) -> None:
        for step in steps:
            step(folder)

    return make


def _evil_pickle(folder: Path) -> None:
    code = f"open({str(folder / 'PWNED')!r}, 'w')"
    payload = (
        b"\x80\x04\x8c\x0cnumpy.dtypes\x8c\x10__builtins__.get\x93(\x8c\x04evalt\x85R"
        + b"(X" + struct.pack("<I", len(code)) + code.encode() + b"tR."
    )  # fmt: skip
    (folder / "FLAME_NEUTRAL.pkl").write_bytes(payload)


def _nan_wav(folder: Path) -> None:
    data = np.full(16000, np.nan, dtype=np.float32)
    sf.write(folder / "speech.wav", data, 16000, subtype="FLOAT")


def _busy_port(folder: Path) -> None:
    pass  # the port is bound by `run` for this case


def _flame_without_landmarks(folder: Path) -> None:
    """A FLAME pickle of another topology (the bundled head subdivided) with no
    flame_static_embedding.pkl beside it: nothing to register it by."""
    from avatar.flame import load_flame
    from avatar.flame.derive import arrays_of, build, subdivide
    from avatar.flame.export import export_smplx_folder

    arrays, _ = subdivide(arrays_of(load_flame()))
    export_smplx_folder(build(arrays, "user"), folder)
    (folder / "flame_static_embedding.pkl").unlink()


def _flame_without_face_units(folder: Path) -> None:
    """The bundled head as a FLAME pickle without its face units (nothing to retarget from)."""
    from avatar.flame import load_flame
    from avatar.flame.export import flame_pickle_dict
    from avatar.flame.pickle_io import write_pickle

    model = flame_pickle_dict(load_flame())
    for key in ("face_unit_names", "face_unit_expr", "face_unit_jaw"):
        del model["talking_avatar"][key]
    write_pickle(folder / "own.pkl", model)


def _gaussian_avatars_other_head(folder: Path) -> None:
    """A GaussianAvatars folder whose static_offset has another head's vertex count."""
    from avatar.avatars import DEFAULT_AVATAR
    from avatar.ply import read_avatar_ply, write_ply

    out = folder / "ga" / "point_cloud" / "iteration_30000"
    write_ply(out / "point_cloud.ply", read_avatar_ply(DEFAULT_AVATAR))
    params = {k: np.zeros((1, 3), np.float32) for k in ("rotation", "neck_pose", "jaw_pose")}
    params |= {"translation": np.zeros((1, 3), np.float32), "eyes_pose": np.zeros((1, 6))}
    params |= {"shape": np.zeros(300), "expr": np.zeros((1, 100))}
    params["static_offset"] = np.zeros((1, 5143, 3), np.float32)
    np.savez(out / "flame_param.npz", **params)


def _checkpoint(folder: Path, config: str | None, weights: bytes | None) -> None:
    ckpt = folder / "ckpt"
    ckpt.mkdir()
    if config is not None:
        (ckpt / "config.json").write_text(config)
    if weights is not None:
        (ckpt / "weights.safetensors").write_bytes(weights)


SPEECH = _speech
AUDIO = ["--audio", "speech.wav"]
OUT = ["--out", "out.mp4"]
CASES = [
    # audio
    Case("audio file missing", ["render", "--audio", "none.wav", *OUT]),
    Case("audio file empty", ["render", *AUDIO, *OUT], _write("speech.wav", b"")),
    Case(
        "audio file corrupt", ["render", *AUDIO, *OUT], _write("speech.wav", b"RIFF" + b"x" * 400)
    ),
    Case(
        "audio path is a folder", ["render", "--audio", "dir", *OUT], lambda f: (f / "dir").mkdir()
    ),
    Case("audio with NaN samples", ["render", *AUDIO, *OUT], _nan_wav),
    Case(
        "silent audio (works: closed neutral face)",
        ["animate", *AUDIO, "--out", "p.npz"],
        lambda f: sf.write(f / "speech.wav", np.zeros(16000, np.float32), 16000),
        0,
    ),
    Case(
        "8 kHz audio (works)",
        ["animate", *AUDIO, "--out", "p.npz"],
        lambda f: _speech(f, rate=8000),
        0,
    ),
    Case(
        "96 kHz audio (works)",
        ["animate", *AUDIO, "--out", "p.npz"],
        lambda f: _speech(f, rate=96000),
        0,
    ),
    # emotions and tracks
    Case("unknown emotion", ["render", *AUDIO, "--emotion", "joyful=0.5", *OUT], SPEECH),
    Case("intensity out of range", ["render", *AUDIO, "--emotion", "happy=1.2", *OUT], SPEECH),
    Case("emotion without intensity", ["render", *AUDIO, "--emotion", "happy", *OUT], SPEECH),
    Case(
        "same emotion twice past 1",
        ["render", *AUDIO, "--emotion", "sad=0.7", "--emotion", "sad=0.6", *OUT],
        SPEECH,
    ),
    Case("track file missing", ["render", *AUDIO, "--track", "t.json", *OUT], SPEECH),
    Case(
        "track not JSON",
        ["render", *AUDIO, "--track", "t.json", *OUT],
        _all(SPEECH, _write("t.json", "{nope")),
    ),
    Case(
        "track keys out of order",
        ["render", *AUDIO, "--track", "t.json", *OUT],
        _all(SPEECH, _write("t.json", json.dumps([{"t": 1, "mix": {}}, {"t": 0.5, "mix": {}}]))),
    ),
    Case(
        "track key without mix",
        ["render", *AUDIO, "--track", "t.json", *OUT],
        _all(SPEECH, _write("t.json", '[{"t": 0}]')),
    ),
    Case(
        "track nested 100k deep",
        ["render", *AUDIO, "--track", "t.json", *OUT],
        _all(SPEECH, _write("t.json", "[" * 100000 + "]" * 100000)),
    ),
    # outputs
    Case(
        "--out under a regular file",
        ["render", *AUDIO, "--out", "plain/out.mp4"],
        _all(SPEECH, _write("plain", "x")),
    ),
    Case(
        "--out is a folder",
        ["animate", *AUDIO, "--out", "dir"],
        _all(SPEECH, lambda f: (f / "dir").mkdir()),
    ),
    Case("--out not .mp4", ["render", *AUDIO, "--out", "out.avi"], SPEECH),
    Case("animate --out of an unknown type", ["animate", *AUDIO, "--out", "perf.fbx"], SPEECH),
    Case("animate --out without a type", ["animate", *AUDIO, "--out", "perf"], SPEECH),
    Case(
        "ARKit curves from a head without face units",
        ["animate", *AUDIO, "--flame", "own.pkl", "--out", "perf.csv"],
        _all(SPEECH, _flame_without_face_units),
    ),
    Case(
        "--frames under a regular file",
        ["render", *AUDIO, "--frames", "plain/f", *OUT],
        _all(SPEECH, _write("plain", "x")),
    ),
    Case(
        "train --out is a file",
        ["train", "--talking", "t", "--expressions", "e", "--out", "plain"],
        _write("plain", "x"),
    ),
    Case(
        "eval --out under a file",
        ["eval", "--speech", "s", "--out", "plain/r.md"],
        _write("plain", "x"),
    ),
    # sizes and options
    Case("video size too small", ["render", *AUDIO, "--size", "8", *OUT], SPEECH),
    Case("fps out of range", ["render", *AUDIO, "--fps", "0", *OUT], SPEECH),
    Case("unknown camera", ["render", *AUDIO, "--camera", "top", *OUT], SPEECH),
    Case("bad background colour", ["render", *AUDIO, "--background", "sky", *OUT], SPEECH),
    # models, checkpoints, avatars
    Case("--flame missing", ["avatar", "info", "--flame", "none.pkl"]),
    Case(
        "--flame folder without a model",
        ["avatar", "info", "--flame", "dir"],
        lambda f: (f / "dir").mkdir(),
    ),
    Case(
        "--flame pickle that would run code",
        ["avatar", "info", "--flame", "FLAME_NEUTRAL.pkl"],
        _evil_pickle,
    ),
    Case(
        "--flame truncated pickle",
        ["avatar", "info", "--flame", "m.pkl"],
        _write("m.pkl", b"\x80\x02}q\x00(X"),
    ),
    Case(
        "checkpoint folder missing",
        ["animate", *AUDIO, "--checkpoint", "ckpt", "--out", "p.npz"],
        SPEECH,
    ),
    Case(
        "checkpoint config not JSON",
        ["animate", *AUDIO, "--checkpoint", "ckpt", "--out", "p.npz"],
        _all(SPEECH, lambda f: _checkpoint(f, "{", b"x")),
    ),
    Case(
        "checkpoint weights corrupt",
        ["animate", *AUDIO, "--checkpoint", "ckpt", "--out", "p.npz"],
        _all(
            SPEECH,
            lambda f: _checkpoint(
                f, json.dumps({"format": "talking-avatar-animator", "version": 1}), b"garbage"
            ),
        ),
    ),
    Case(
        "avatar PLY not a PLY",
        ["render", *AUDIO, "--avatar", "a.ply", *OUT],
        _all(SPEECH, _write("a.ply", "solid cube\n")),
    ),
    Case(
        "avatar PLY header claims 4e9 Gaussians",
        ["render", *AUDIO, "--avatar", "a.ply", *OUT],
        _all(
            SPEECH,
            _write(
                "a.ply",
                "ply\nformat binary_little_endian 1.0\nelement vertex 4000000000\nproperty float x\nend_header\n"
                + "x" * 100,
            ),
        ),
    ),
    Case("avatar missing", ["render", *AUDIO, "--avatar", "none.ply", *OUT], SPEECH),
    Case(
        "GaussianAvatars identity for another head",
        ["render", *AUDIO, "--avatar", "ga", *OUT],
        _all(SPEECH, _gaussian_avatars_other_head),
    ),
    Case("retarget the bundled head", ["retarget"]),
    Case(
        "retarget a FLAME model without landmarks",
        ["retarget", "--flame", "FLAME_NEUTRAL.pkl"],
        _flame_without_landmarks,
    ),
    Case(
        "saved performance for other audio",
        ["render", "--audio", "long.wav", "--performance", "p.npz", *OUT],
        _all(SPEECH, lambda f: _speech(f, "long.wav", seconds=3.0)),
    ),
    # data and evaluation
    Case(
        "training set folder missing",
        ["train", "--talking", "none", "--expressions", "none", "--out", "ckpt"],
    ),
    Case(
        "training steps 0",
        ["train", "--talking", "t", "--expressions", "e", "--out", "ckpt", "--stage1-steps", "0"],
    ),
    Case(
        "negative fusion renditions",
        [
            "train",
            "--talking",
            "t",
            "--expressions",
            "e",
            "--out",
            "ckpt",
            "--fusion-renditions",
            "-1",
        ],
    ),
    Case(
        "real-speech folder without clips",
        ["eval", "--speech", "dir"],
        lambda f: (f / "dir").mkdir(),
    ),
    # the viewer
    Case("viewer port in use", ["view", "--port", "PORT"], _busy_port),
]


def run(case: Case, folder: Path) -> dict:
    if case.setup is not None:
        case.setup(folder)
    if case.name.startswith("saved performance"):  # needs a real performance first
        subprocess.run([sys.executable, "-m", "viewer.cli", "animate", *AUDIO, "--out", "p.npz"],
                       cwd=folder, capture_output=True, env=_env(), check=True)  # fmt: skip
    before = {p.relative_to(folder) for p in folder.rglob("*")}
    argv = list(case.argv)
    sock = None
    if "PORT" in argv:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        argv[argv.index("PORT")] = str(sock.getsockname()[1])
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "viewer.cli", *argv], cwd=folder, capture_output=True,
            text=True, env=_env(), timeout=300,
        )  # fmt: skip
    finally:
        if sock is not None:
            sock.close()
    after = {p.relative_to(folder) for p in folder.rglob("*")}
    left = sorted(str(p) for p in after - before)
    err = proc.stderr.strip().splitlines()
    message = next((line for line in reversed(err) if line.startswith("talking-avatar")), "")
    return {
        "case": case.name,
        "command": "talking-avatar " + " ".join(case.argv),
        "code": proc.returncode,
        "expected": case.expect,
        "message": message.replace("talking-avatar: error: ", "").replace(str(folder) + "/", ""),
        "traceback": "Traceback" in proc.stderr,
        "left": left,
    }


def _env() -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), TQDM_DISABLE="1")
    env.pop("TALKING_AVATAR_FLAME", None)
    return env


def table(rows: list[dict]) -> str:
    lines = [
        "| input | command | exit | what the user sees | left on disk |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        message = r["message"].replace("|", "\\|") or "(runs: no error)"
        if r["traceback"]:
            message += " **(traceback!)**"
        left = ", ".join(r["left"]) or "nothing"
        lines.append(f"| {r['case']} | `{r['command']}` | {r['code']} | {message} | {left} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="update docs/robustness.md")
    parser.add_argument("--only", default=None, help="run the cases whose name contains this")
    args = parser.parse_args()
    rows = []
    for case in CASES:
        if args.only and args.only not in case.name:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            rows.append(run(case, Path(tmp)))
        r = rows[-1]
        ok = r["code"] == case.expect and not r["traceback"] and (case.expect == 0 or not r["left"])
        print(f"{'ok ' if ok else 'BAD'} {r['code']} {case.name}: {r['message'][:110]}", flush=True)
    text = table(rows)
    if args.write:
        doc = DOC.read_text()
        start, stop = doc.index(BEGIN) + len(BEGIN), doc.index(END)
        DOC.write_text(doc[:start] + "\n" + text + "\n" + doc[stop:])
        print(f"wrote {DOC}")
    bad = [r for r in rows if r["code"] != r["expected"] or r["traceback"]]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
