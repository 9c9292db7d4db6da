"""Retargeting the animator to other FLAME heads: time, registration, and motion against the truth.

Run: `.venv/bin/python -m benchmarks.retarget [--flame PATH]`. Prints figures; asserts nothing.

Each head is derived from the bundled one (`avatar.flame.derive`) so the truth is known: the
head's own FLAME driven by the parameters that give the bundled motion on it. The motion is the
shipped animator on the sample speech, surprised at intensity 1 (the jaw at its widest). With
`--flame`, a user's model is retargeted too (no truth there: registration figures and time).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import torch

from animator import Animator
from animator.retarget import CACHE_ENV, cached_retarget, retarget
from avatar.flame import FlameModel, load_flame
from avatar.flame.derive import (
    arrays_of,
    build,
    drop,
    expected_params,
    reshape,
    rotate_expressions,
    scale,
    shuffle,
    subdivide,
)
from avatar.paths import asset_path


def heads(bundled: FlameModel) -> dict[str, tuple[FlameModel, np.ndarray, np.ndarray | None]]:
    """name -> (head, bundled vertex -> its vertex (-1: none), Q of its expression basis)."""
    a = arrays_of(bundled)
    num_v = bundled.num_vertices
    out = {}
    b, _ = subdivide(scale(a, 1.08, offset=(0.0, 0.01, 0.0)))
    b, where = shuffle(b, seed=3)
    b, q = rotate_expressions(b, width=100)
    out["4x triangles, shuffled, 1.08x, 100 rotated expr"] = (
        build(b, "topology"),
        where[:num_v],
        q,
    )
    for sigma in (1.0, 2.0, 3.0):
        out[f"another identity ({sigma:g} sigma)"] = (
            build(reshape(a, sigma=sigma), "identity"),
            np.arange(num_v),
            None,
        )
    parts = np.concatenate([bundled.region("teeth"), bundled.region("tongue")])
    b, where = drop(a, parts)
    out["no teeth or tongue (FLAME 2020)"] = (build(b, "no teeth"), where, None)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--flame", default=None, help="also retarget this FLAME model")
    args = parser.parse_args()
    torch.set_num_threads(1)
    anim = Animator.load()
    bundled = anim.head
    params = anim.animate(asset_path("speech", "sample.wav"), {"surprised": 1.0}, idle=False)
    params = params.params
    skin = bundled.region("skin")
    print(f"motion: {params.num_frames} frames of the sample speech, surprised at 1; 1 thread")
    print(
        f"{'head':48s} {'vertices':>8s} {'time s':>7s} {'lmk mm':>7s} {'surf p95':>8s} "
        f"{'err mean':>8s} {'err p99':>8s} {'err max':>8s} {'frame max':>9s}"
    )
    for name, (user, where, q) in heads(bundled).items():
        started = time.perf_counter()
        rt, _ = retarget(bundled, user)
        seconds = time.perf_counter() - started
        idx = torch.as_tensor(where[skin])
        idx = idx[idx >= 0]
        got = user(rt.carry(params, user))[:, idx]
        want = user(expected_params(params, user, q))[:, idx]
        err = 1000.0 * (got - want).norm(dim=-1)  # [T, N] mm
        r = rt.report
        print(
            f"{name:48s} {user.num_vertices:8d} {seconds:7.2f} {r['landmark_mm']:7.3f} "
            f"{r['surface_mm_p95']:8.3f} {float(err.mean()):8.3f} "
            f"{float(err.flatten().quantile(0.99)):8.3f} {float(err.max()):8.3f} "
            f"{float(err.mean(dim=1).max()):9.3f}"
        )
    print("err: mm between the retargeted and the true motion on the face (skin), every frame;")
    print("frame max: the worst frame's mean over the face.")
    if args.flame:
        user = load_flame(args.flame)
        with tempfile.TemporaryDirectory() as cache:
            os.environ[CACHE_ENV] = cache
            started = time.perf_counter()
            rt, _ = cached_retarget(bundled, user, log=lambda line: None)
            cold = time.perf_counter() - started
            started = time.perf_counter()
            cached_retarget(bundled, user, log=lambda line: None)
            warm = time.perf_counter() - started
        r = rt.report
        print(
            f"{args.flame}: {user.num_vertices} vertices; retarget {cold:.2f} s, from the cache "
            f"{warm:.2f} s; landmarks {r['landmark_mm']:.3f} mm, surface p95 "
            f"{r['surface_mm_p95']:.3f} mm"
        )


if __name__ == "__main__":
    main()
