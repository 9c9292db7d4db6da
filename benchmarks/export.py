"""MP4 export on CPU: frames per second at 512x512, and peak memory against clip length.

Each measurement runs in a fresh process so peak memory (ru_maxrss) is its own. The clips are
the bundled sample speech repeated. Prints; asserts nothing.

Run: `.venv/bin/python benchmarks/export.py [--size 512] [--seconds 10] [--lengths 60 300]`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile

CHILD = r"""
import json, resource, sys, time
import numpy as np
from animator import Animator
from animator.audio import SAMPLE_RATE, Audio, load_audio
from avatar.avatars import load_avatar
from avatar.paths import asset_path
from viewer.export import export_mp4

seconds, size, out = float(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
anim = Animator.load()
avatar = load_avatar(None, anim.head)
speech = load_audio(asset_path("speech", "sample.wav")).samples
n = int(seconds * SAMPLE_RATE)
audio = Audio(np.tile(speech, n // len(speech) + 1)[:n])
t0 = time.perf_counter()
perf = anim.animate(audio, {"happy": 0.5})
t1 = time.perf_counter()
export_mp4(perf, avatar, out, head=anim.head, width=size, height=size, progress=False)
t2 = time.perf_counter()
print(json.dumps({"frames": perf.num_frames, "animate_s": t1 - t0, "export_s": t2 - t1,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def run(seconds: float, size: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run(
            [sys.executable, "-c", CHILD, str(seconds), str(size), f"{tmp}/clip.mp4"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--lengths", type=float, nargs="+", default=[60.0, 300.0])
    ap.add_argument("--memory-size", type=int, default=64, help="frame size for the memory runs")
    args = ap.parse_args()
    r = run(args.seconds, args.size)
    print(
        f"{args.size}x{args.size}, {args.seconds:g} s clip ({r['frames']} frames): export "
        f"{r['frames'] / r['export_s']:.1f} frames/s, animate {r['animate_s']:.2f} s, "
        f"peak RSS {r['peak_rss_mib']:.0f} MiB"
    )
    peaks = []
    for seconds in args.lengths:
        r = run(seconds, args.memory_size)
        peaks.append(r["peak_rss_mib"])
        print(
            f"{seconds:g} s clip at {args.memory_size}x{args.memory_size} ({r['frames']} frames): "
            f"peak RSS {r['peak_rss_mib']:.0f} MiB, export {r['frames'] / r['export_s']:.0f} frames/s"
        )
    if len(peaks) > 1:
        print(f"peak memory, longest vs shortest clip: {100 * (peaks[-1] / peaks[0] - 1):+.1f}%")


if __name__ == "__main__":
    main()
