"""Time GaussianAvatar.pose (triangle-bound Gaussians to world space) on CPU; prints, never asserts.

Without a gradient `pose` runs numba kernels (avatar/binding_kernels.py); the torch code it runs
for autograd is timed without a gradient as well, for the ratio in one run.

Run from the repository root:  .venv/bin/python -m benchmarks.binding [--repeats 50] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from avatar import binding
from avatar.binding import GaussianAvatar


def wavy_grid(cells: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A jittered, wavy grid patch 20 cm across: 2 cells^2 triangles, head-sized ones."""
    side = cells + 1
    u = torch.linspace(-0.1, 0.1, side)
    x, y = torch.meshgrid(u, u, indexing="xy")
    z = 0.03 * torch.sin(20 * x) * torch.cos(15 * y)
    vertices = torch.stack((x, y, z), dim=-1).reshape(-1, 3)  # [V, 3]
    vertices = vertices + torch.randn(vertices.shape, generator=generator) * 2e-4
    i = (torch.arange(cells)[:, None] * side + torch.arange(cells)[None, :]).reshape(-1)  # [C]
    faces = torch.cat(
        (torch.stack((i, i + 1, i + side), -1), torch.stack((i + 1, i + side + 1, i + side), -1))
    )  # [F, 3]
    return vertices, faces


def random_avatar(faces: torch.Tensor, n: int, generator: torch.Generator) -> GaussianAvatar:
    return GaussianAvatar(
        faces=faces,
        binding=torch.randint(0, len(faces), (n,), generator=generator),
        local_means=torch.randn(n, 3, generator=generator) * 0.3,
        local_quats=torch.randn(n, 4, generator=generator),
        local_log_scales=torch.randn(n, 3, generator=generator) - 2,
        opacity_logits=torch.randn(n, generator=generator),
        sh=torch.randn(n, 16, 3, generator=generator),
    )


def median_ms(function, repeats: int) -> float:
    for _ in range(5):  # warm-up: allocator, caches
        function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50, help="timed calls per figure")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    generator = torch.Generator().manual_seed(0)
    vertices, faces = wavy_grid(71, generator)  # 10082 triangles, 5184 vertices
    print(
        f"mesh: {len(vertices)} vertices, {len(faces)} triangles; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
        f"median of {args.repeats}"
    )
    for n in (30_000, 100_000):
        avatar = random_avatar(faces, n, generator)
        with torch.no_grad():
            inference = median_ms(lambda: avatar.pose(vertices), args.repeats)  # noqa: B023
            kernels = binding._numba_pose_applies
            binding._numba_pose_applies = lambda *_: False  # the torch code, no gradient
            try:
                torch_ms = median_ms(lambda: avatar.pose(vertices), args.repeats)  # noqa: B023
            finally:
                binding._numba_pose_applies = kernels
        for tensor in (avatar.local_means, avatar.local_quats, avatar.local_log_scales):
            tensor.requires_grad_()
        training = median_ms(lambda: avatar.pose(vertices), args.repeats)  # noqa: B023
        frames = torch.stack([vertices] * 8)  # [8, V, 3]
        with torch.no_grad():
            batched = median_ms(lambda: avatar.pose_frames(frames), args.repeats) / 8  # noqa: B023
        print(
            f"{n:>7} Gaussians: pose {inference:6.2f} ms (no grad, numba; torch {torch_ms:.2f} ms, "
            f"{torch_ms / inference:.1f}x), "
            f"{training:6.2f} ms (autograd), pose_frames {batched:6.2f} ms/frame (T=8)"
        )


if __name__ == "__main__":
    main()
