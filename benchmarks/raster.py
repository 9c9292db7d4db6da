"""Prints how fast the CPU rasterizer draws a head-like scene (never asserts timings).

    .venv/bin/python benchmarks/raster.py             # 30k and 100k at 256, 512, 1024 px
    .venv/bin/python benchmarks/raster.py --quick     # 512 px only
    .venv/bin/python benchmarks/raster.py --ply PATH  # another avatar than the default one
    .venv/bin/python benchmarks/raster.py --synthetic  # also the note's synthetic 30k/100k heads
    .venv/bin/python benchmarks/raster.py --contention  # only quiet vs one busy core, 30k/100k

Per configuration: median ms per frame over >= 20 frames after warm-up, with the configurations
interleaved over several rounds (the machine may be shared: the load average is printed), the
speed-up over the brute-force reference (timed at a small size and scaled by pixel count), how
many Gaussians were drawn or culled, the (tile, Gaussian) pairs, and the stage split. Each row is
run with back-face culling off (the default) and on, with the image difference between the two.

Then (alone with --contention, skipped with --no-contention): `avatar.render.render` back to back (what the viewer and the exporter call)
on the synthetic 30k and 100k heads at 512 px, in rounds that alternate a quiet machine with one
where another process keeps one core busy (a Python busy loop), and, as the viewer does with
several tabs, three threads rendering at once; per row the median ms per frame, quiet and busy,
their ratio and the busy 90th percentile, all from the same run.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere

from avatar import cpu_raster  # noqa: E402
from avatar.camera import Camera  # noqa: E402
from avatar.gaussians import Gaussians, rgb_to_sh  # noqa: E402
from avatar.quaternion import quat_multiply  # noqa: E402

#: Radii (x, y, z) in metres of the ellipsoid the synthetic head's Gaussians lie on.
HEAD_RADII = (0.08, 0.11, 0.10)


def make_scene(n: int, seed: int = 0) -> Gaussians:
    """A head-like scene: `n` thin surfels spread uniformly by area over an ellipsoid.

    Radii HEAD_RADII m centred at the origin; each Gaussian lies in the surface with scales
    about (2, 2, 0.2) mm (+-20 % log-normal), a random in-plane rotation, opacity 0.9 +- 0.03,
    a random colour (SH degree 0) and the surface normal.
    """
    rng = np.random.default_rng(seed)
    radii = np.asarray(HEAD_RADII)
    points = np.empty((0, 3))
    while len(points) < n:
        u = rng.normal(size=(2 * n, 3))  # [2n, 3]
        u /= np.linalg.norm(u, axis=1, keepdims=True)
        # the ellipsoid's area element relative to the sphere's is |u / radii| (up to a constant)
        weight = np.linalg.norm(u / radii, axis=1)  # [2n]
        keep = rng.uniform(size=len(u)) < weight / weight.max()
        points = np.concatenate([points, u[keep] * radii])
    points = points[:n]  # [n, 3]
    normals = points / radii**2
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)  # [n, 3]
    # rotation taking local +z to the normal (half-angle form), then a random spin about it
    align = np.concatenate(
        [1.0 + normals[:, 2:3], -normals[:, 1:2], normals[:, 0:1], 0 * normals[:, :1]], 1
    )
    align[align[:, 0] < 1e-6] = (0.0, 1.0, 0.0, 0.0)  # normal = -z: half turn about x
    align /= np.linalg.norm(align, axis=1, keepdims=True)
    spin = rng.uniform(0, math.pi, size=n)
    twist = np.stack([np.cos(spin), 0 * spin, 0 * spin, np.sin(spin)], 1)
    quats = quat_multiply(torch.from_numpy(align), torch.from_numpy(twist)).numpy()  # [n, 4]
    scales = np.array([2e-3, 2e-3, 2e-4]) * np.exp(0.2 * rng.normal(size=(n, 3)))  # [n, 3]
    opacities = np.clip(0.9 + 0.03 * rng.normal(size=n), 0.0, 1.0)  # [n]
    rgb = rng.uniform(size=(n, 3))
    f32 = lambda a: torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
    return Gaussians(
        means=f32(points),
        quats=f32(quats),
        scales=f32(scales),
        opacities=f32(opacities),
        sh=rgb_to_sh(f32(rgb))[:, None, :],
        normals=f32(normals),
    )


def synthetic_camera(size: int) -> Camera:
    """The note's view of the synthetic head: 0.6 m in front, vertical fov 20 degrees."""
    return Camera.orbit(
        (0.0, 0.0, 0.0), 0.6, 0.0, 0.0, fov_y=math.radians(20), width=size, height=size
    )


def camera_for(scene: str, size: int) -> Camera:
    """Avatars are framed as the product frames them (avatar.sheet), front view."""
    if scene.endswith("k"):
        return synthetic_camera(size)
    from avatar.sheet import head_camera

    return head_camera("front", size, size)


def load_ply_scene(path: str | None) -> Gaussians:
    """Gaussians from a 3DGS PLY; a triangle-bound avatar (the default one when path is None)
    is posed on the bundled head's neutral mesh."""
    from avatar.avatars import load_avatar
    from avatar.flame import load_flame
    from avatar.ply import read_ply

    if path is not None:
        loaded = read_ply(path)
        if isinstance(loaded, Gaussians):
            return loaded
    head = load_flame()
    return load_avatar(path, head).pose(head.v_template)


def cpu_idle_fraction(seconds: float = 0.5) -> float | None:
    """Fraction of CPU time idle over `seconds` (Linux /proc/stat), or None elsewhere."""

    def sample() -> tuple[int, int]:
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        return values[3] + values[4], sum(values)  # idle + iowait, total

    try:
        idle0, total0 = sample()
        time.sleep(seconds)
        idle1, total1 = sample()
    except OSError:
        return None
    return (idle1 - idle0) / max(1, total1 - total0)


def wait_until_quiet(max_wait_s: float, idle: float = 0.85) -> bool:
    """Wait (at most `max_wait_s`) until the CPUs are at least `idle` idle; True if they were."""
    deadline = time.monotonic() + max_wait_s
    while time.monotonic() < deadline:
        fraction = cpu_idle_fraction()
        if fraction is None or fraction >= idle:
            return True
    return False


def _arguments(scene: Gaussians, camera: Camera) -> list:
    """The positional arguments of `rasterize` (and of the reference renderer)."""
    gaussians = [scene.means, scene.quats, scene.scales, scene.opacities, scene.sh]
    return [*gaussians, camera.viewmat, camera.K, camera.width, camera.height]


def _render(scene: Gaussians, camera: Camera, culling: bool) -> cpu_raster.RasterResult:
    return cpu_raster.rasterize(
        *_arguments(scene, camera),
        sh_degree=scene.sh_degree,
        normals=scene.normals,
        backface_culling=culling,
    )


def reference_ms_per_pixel(scene: Gaussians, name: str, size: int) -> float:
    """Time of the float64 brute-force reference at `size` px square, per pixel (ms)."""
    from avatar.raster_reference import render_reference

    camera = camera_for(name, size)
    start = time.perf_counter()
    render_reference(*_arguments(scene, camera), sh_degree=scene.sh_degree, chunk_pixels=64)
    return 1e3 * (time.perf_counter() - start) / size**2


#: A process that keeps one core busy until killed.
BUSY_LOOP = "while True: pass"


def _frames(scene: Gaussians, camera: Camera, frames: int, callers: int) -> list[float]:
    """ms per frame of `render` back to back; with `callers` > 1, that many threads rendering
    at once (as the viewer's tabs do), each frame costing the batch's wall time / frames."""
    from avatar.render import render

    if callers == 1:
        times = []
        for _ in range(frames):
            t0 = time.perf_counter()
            render(scene, camera, backend="cpu")
            times.append(1e3 * (time.perf_counter() - t0))
        return times
    per_caller = max(1, frames // callers)

    def work() -> None:
        for _ in range(per_caller):
            render(scene, camera, backend="cpu")

    workers = [threading.Thread(target=work) for _ in range(callers)]
    t0 = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return [1e3 * (time.perf_counter() - t0) / (per_caller * callers)]


def contention(rounds: int, frames: int, quiet_wait: float) -> None:
    """Quiet vs one busy core, rounds interleaved, ratios from this run (see the docstring)."""
    from avatar import threads

    size = 512
    camera = synthetic_camera(size)
    scenes = {f"{n // 1000}k": make_scene(n, seed=0) for n in (30_000, 100_000)}
    rows = [(name, callers) for name in scenes for callers in (1, 3)]
    for name, _ in rows:  # compile (or load the cache) and warm up
        _frames(scenes[name], camera, 3, 1)
    print(
        f"contention: {size}x{size}, numba threading layer {threads.threading_layer()} "
        f"({cpu_raster.numba.get_num_threads()} threads), torch threads "
        f"{torch.get_num_threads()}, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}"
        f"; load average before: {os.getloadavg()}"
    )
    times: dict[tuple, list[float]] = {(r, busy): [] for r in rows for busy in (False, True)}
    for _ in range(rounds):
        for busy in (False, True):
            if quiet_wait > 0:
                wait_until_quiet(quiet_wait)
            hog = subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) if busy else None
            try:
                time.sleep(0.3)  # let the busy loop start
                for name, callers in rows:
                    n = frames if name == "30k" else max(4, frames // 3)
                    if callers > 1:
                        n = 3 * max(2, n // 3)
                    times[((name, callers), busy)] += _frames(scenes[name], camera, n, callers)
            finally:
                if hog is not None:
                    hog.kill()
                    hog.wait()
    print(f"load average after: {os.getloadavg()}")
    print(
        f"{'scene':>7} {'callers':>7} {'quiet ms':>9} {'busy ms':>8} {'ratio':>6} {'busy p90':>9}"
    )
    for row in rows:
        quiet, busy = times[(row, False)], times[(row, True)]
        q, b = statistics.median(quiet), statistics.median(busy)
        p90 = float(np.percentile(busy, 90))
        name, callers = row
        print(f"{name:>7} {callers:>7} {q:9.2f} {b:8.2f} {b / q:6.2f} {p90:9.2f}")
    print("  (callers 3: three threads rendering at once; ms = wall time / frames, all threads)")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ply", help="a 3DGS or avatar PLY instead of the default avatar")
    parser.add_argument(
        "--synthetic", action="store_true", help="also the 30k/100k synthetic heads"
    )
    parser.add_argument("--quick", action="store_true", help="512 px only")
    parser.add_argument("--frames", type=int, default=24, help="timed frames per configuration")
    parser.add_argument("--rounds", type=int, default=4, help="interleaved rounds")
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=20.0,
        help="before each batch of frames, wait up to this many seconds for the CPUs to be "
        ">= 85 %% idle (the machine may be shared); 0 to not wait",
    )
    parser.add_argument(
        "--contention",
        action="store_true",
        help="only the quiet vs one-busy-core comparison (30k and 100k at 512 px)",
    )
    parser.add_argument(
        "--no-contention", action="store_true", help="skip that comparison after the figures"
    )
    return parser.parse_args()


def time_configs(
    scenes: dict[str, Gaussians], configs: list[tuple], args: argparse.Namespace
) -> tuple[dict, dict, dict]:
    """Per configuration (scene, size, culling): ms per frame, stage splits and the last result,
    the configurations interleaved over `args.rounds` rounds after a warm-up."""
    print(
        f"load average before: {os.getloadavg()}; numba threads: {cpu_raster.numba.get_num_threads()}"
    )
    start = time.perf_counter()
    for name, size, culling in configs:  # compile (or load the cache) and warm up
        for _ in range(2):
            _render(scenes[name], camera_for(name, size), culling)
    print(f"warm-up incl. numba compile/cache load: {time.perf_counter() - start:.1f} s")

    times: dict[tuple, list[float]] = {c: [] for c in configs}
    stages: dict[tuple, list[dict[str, float]]] = {c: [] for c in configs}
    last: dict[tuple, cpu_raster.RasterResult] = {}
    per_round = max(1, math.ceil(args.frames / args.rounds))
    quiet_batches = 0
    for _ in range(args.rounds):
        for config in configs:
            quiet_batches += args.quiet_wait > 0 and wait_until_quiet(args.quiet_wait)
            name, size, culling = config
            camera = camera_for(name, size)
            for _ in range(per_round):
                t0 = time.perf_counter()
                out = _render(scenes[name], camera, culling)
                times[config].append(1e3 * (time.perf_counter() - t0))
                stages[config].append(out.stage_ms)
            last[config] = out
    print(
        f"load average after: {os.getloadavg()}; "
        f"batches started on a quiet machine: {quiet_batches} of {args.rounds * len(configs)}"
    )
    return times, stages, last


def print_table(
    configs: list[tuple], times: dict, stages: dict, last: dict, ref_ms_px: dict
) -> None:
    """One row per configuration: ms, fps, speed-up over the reference, counts, stage split."""
    header = (
        f"{'scene':>7} {'size':>5} {'cull':>4} {'ms':>7} {'fps':>6} {'speed-up':>9} "
        f"{'drawn':>7} {'culled':>7} {'pairs':>8}  stage split ms (project/sort/color/bin/composite)"
    )
    print(header)
    for config in configs:
        name, size, culling = config
        ms = statistics.median(times[config])
        out = last[config]
        split = "/".join(
            f"{statistics.median(s[k] for s in stages[config]):.2f}" for k in out.stage_ms
        )
        speedup = ref_ms_px[name] * size**2 / ms
        print(
            f"{name:>7} {size:>5} {'on' if culling else 'off':>4} {ms:7.2f} {1e3 / ms:6.0f} "
            f"{speedup:9.0f} {out.n_visible:7d} {len(out.status) - out.n_visible:7d} "
            f"{out.n_tile_pairs:8d}  {split}"
        )


def print_culling_difference(scenes: dict, sizes: tuple[int, ...], last: dict) -> None:
    """How back-face culling changes each image (covered pixels, max over RGB)."""
    print("back-face culling on vs off (covered pixels, max over RGB):")
    for name in scenes:
        for size in sizes:
            off, on = last[(name, size, False)], last[(name, size, True)]
            diff = (off.color - on.color).abs().amax(-1)  # [H, W]
            covered = off.alpha > 1 / 255
            mse = float(((off.color - on.color) ** 2).mean())
            psnr = float("inf") if mse == 0 else 10 * math.log10(1 / mse)
            print(
                f"  {name} {size}: {100 * float((diff[covered] > 1 / 255).float().mean()):.1f} % "
                f"of covered pixels differ by > 1/255, max {float(diff.max()):.3f}, "
                f"PSNR {psnr:.1f} dB"
            )


def main() -> None:
    args = parse_args()
    if args.contention:
        contention(args.rounds, args.frames, args.quiet_wait)
        return

    sizes = (512,) if args.quick else (256, 512, 1024)
    name = os.path.basename(args.ply) if args.ply else "default avatar"
    scenes = {name: load_ply_scene(args.ply)}
    if args.synthetic:
        scenes.update({f"{n // 1000}k": make_scene(n, seed=0) for n in (30_000, 100_000)})
    configs = [
        (name, size, culling) for name in scenes for size in sizes for culling in (False, True)
    ]
    times, stages, last = time_configs(scenes, configs, args)

    ref_size = 32
    ref_ms_px = {}
    for name, scene in scenes.items():
        if args.quiet_wait > 0:
            wait_until_quiet(args.quiet_wait)
        ref_ms_px[name] = reference_ms_per_pixel(scene, name, ref_size)
    print(
        f"reference (float64 brute force) at {ref_size}x{ref_size}: "
        + ", ".join(f"{n}: {v * ref_size**2 / 1e3:.1f} s" for n, v in ref_ms_px.items())
    )
    print_table(configs, times, stages, last, ref_ms_px)
    print_culling_difference(scenes, sizes, last)
    if not args.no_contention:
        contention(args.rounds, args.frames, args.quiet_wait)


if __name__ == "__main__":
    main()
