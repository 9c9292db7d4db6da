"""FLAME forward pass on CPU: milliseconds for a 300-frame clip, and peak memory.

Run: `.venv/bin/python benchmarks/flame.py [--flame PATH] [--frames 300] [--repeats 10]`.
Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import torch

from avatar.flame import load_flame


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--flame", default=None)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    head = load_flame(args.flame)
    g = torch.Generator().manual_seed(0)
    p = head.neutral_params(args.frames)
    p.expr = torch.randn(args.frames, head.num_expr, generator=g)
    p.jaw_pose[:, 0] = torch.rand(args.frames, generator=g) * 0.3
    p.rotation = torch.randn(args.frames, 3, generator=g) * 0.05
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with torch.no_grad():
        head(p)  # warm-up
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            head(p)
            times.append((time.perf_counter() - t0) * 1000)
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    med = statistics.median(times)
    print(f"model: {head.source} ({head.num_vertices} vertices)")
    print(f"threads: {torch.get_num_threads()}")
    print(f"FLAME forward, {args.frames} frames: median {med:.1f} ms "
          f"({med / args.frames:.3f} ms/frame, {args.frames / med * 1000:.0f} frames/s)")  # fmt: skip
    print(f"peak RSS: {rss_after:.0f} MiB (before the forward passes: {rss_before:.0f} MiB)")


if __name__ == "__main__":
    main()
