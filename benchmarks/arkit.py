"""ARKit-52 fit: speed on a long clip, and how closely the curves reproduce the performance.

1. The bundled sample speech, neutral and happy=1 (seed 0, idle layer on): the fit error through
   the FLAME rig (what `talking-avatar animate --out x.csv` prints), and the error of the .glb as
   a glTF player shows it (linear morph targets, jawOpen's secant, the root/neck skin), both as
   the mean vertex distance over the face, mean and max over frames.
2. The sample's performance repeated to `--minutes` (default 10) at 30 fps: seconds for the
   whole `fit_arkit`, for its bounded least squares alone, and for scipy's `lsq_linear` frame by
   frame on the same problem (timed on 300 frames, scaled up).

Prints; asserts nothing. Run: `.venv/bin/python benchmarks/arkit.py [--minutes 10] [--threads N]`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from animator import Animator  # noqa: E402
from avatar.flame import FlameParams  # noqa: E402
from avatar.flame.arkit import JAW_OPEN, _box_least_squares, _rig, fit_arkit  # noqa: E402
from avatar.flame.arkit_export import write_arkit_glb  # noqa: E402
from avatar.flame.gltf_reader import GlbPlayer  # noqa: E402
from avatar.paths import asset_path  # noqa: E402


def glb_error_mm(head, params: FlameParams, curves) -> np.ndarray:
    """`[T]` mean distance (mm) over the face between the .glb played back and FLAME."""
    face = _rig(head).face.numpy()
    with tempfile.TemporaryDirectory() as tmp:
        player = GlbPlayer(write_arkit_glb(Path(tmp) / "p.glb", curves, head, params))
        target = head(params).numpy()
        return np.array(
            [
                np.linalg.norm(player.vertices(k) - target[k], axis=1)[face].mean() * 1000
                for k in range(params.num_frames)
            ]
        )


def solver_problem(head, params: FlameParams) -> tuple[torch.Tensor, torch.Tensor]:
    """The fit's Gram matrix and right-hand sides, built as `fit_arkit` builds them."""
    rig = _rig(head)
    e = head.num_expr
    x = torch.cat([params.expr, params.jaw_pose, params.eyes_pose], dim=1).double()
    axis = rig.units[JAW_OPEN, e : e + 3]
    jaw_open = (params.jaw_pose.double() @ axis / axis.dot(axis)).clamp(0, 1)
    rest = x - jaw_open[:, None] * rig.units[JAW_OPEN]
    p = rig.units[[i for i in range(52) if i != JAW_OPEN]]
    return p @ rig.gram @ p.T, rest @ rig.gram @ p.T


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    anim = Animator.load()
    head = anim.head
    speech = asset_path("speech", "sample.wav")
    print("sample speech, error vs the performance (mean vertex distance over the face, mm):")
    for label, emotion in (("neutral", {}), ("happy=1", {"happy": 1.0})):
        perf = anim.animate(speech, emotion, fps=30)
        curves = fit_arkit(head, perf.params, perf.fps)
        glb = glb_error_mm(head, perf.params, curves)
        print(
            f"  {label:8s} {perf.num_frames} frames: ARKit rig {curves.error_mm.mean():.3f} mean "
            f"{curves.error_mm.max():.3f} max; .glb played {glb.mean():.3f} mean {glb.max():.3f} max"
        )
    repeats = max(1, round(args.minutes * 60 * perf.fps / perf.num_frames))
    long = FlameParams.concat([perf.params] * repeats)
    minutes = long.num_frames / perf.fps / 60
    start = time.perf_counter()
    curves = fit_arkit(head, long, perf.fps)
    total = time.perf_counter() - start
    gram, rhs = solver_problem(head, long)
    start = time.perf_counter()
    _box_least_squares(gram, rhs)
    solver = time.perf_counter() - start
    print(
        f"{minutes:.1f} min at 30 fps ({long.num_frames} frames), {torch.get_num_threads()} threads:"
    )
    print(f"  fit_arkit {total:.1f} s (bounded least squares {solver:.1f} s; the rest is the")
    print("  error through two FLAME forward passes, the angles and the rig)")
    from scipy.optimize import lsq_linear

    chol = torch.linalg.cholesky(gram)  # G = L L^T: min |L^T w - L^-1 b|^2 is the same problem
    rows = torch.linalg.solve_triangular(chol, rhs[:300].T, upper=False).T.numpy()
    start = time.perf_counter()
    for row in rows:
        lsq_linear(chol.T.numpy(), row, bounds=(0, 1), method="bvls")
    scipy_s = (time.perf_counter() - start) * long.num_frames / len(rows)
    print(f"  scipy.optimize.lsq_linear (bvls), frame by frame: {scipy_s:.0f} s (from 300 frames)")


if __name__ == "__main__":
    main()
