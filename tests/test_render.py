"""`avatar.render.render`: dispatch, checks at the boundary, and gsplat-vs-CPU parity."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch

from avatar import render as render_module
from avatar.camera import Camera
from avatar.errors import TalkingAvatarError
from avatar.gaussians import Gaussians, rgb_to_sh
from avatar.render import RenderOutput, render

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU for gsplat")


def head_gaussians(n: int, seed: int = 0, sh_degree: int = 0) -> Gaussians:
    """A head-like scene: surfels on an ellipsoid (0.08, 0.11, 0.10) m, random colours."""
    gen = torch.Generator().manual_seed(seed)
    radii = torch.tensor([0.08, 0.11, 0.10])
    u = torch.randn(n, 3, generator=gen)
    means = u / u.norm(dim=1, keepdim=True) * radii  # [n, 3]
    normals = means / radii**2
    sh = torch.zeros(n, (sh_degree + 1) ** 2, 3)  # [n, K, 3]
    sh[:, 0] = rgb_to_sh(torch.rand(n, 3, generator=gen))
    sh[:, 1:] = 0.2 * torch.randn(n, sh.shape[1] - 1, 3, generator=gen)
    return Gaussians(
        means=means,
        quats=torch.randn(n, 4, generator=gen),
        scales=torch.tensor([3e-3, 3e-3, 3e-4]) * torch.exp(0.2 * torch.randn(n, 3, generator=gen)),
        opacities=0.9 + 0.03 * torch.randn(n, generator=gen).clamp(-3, 3),
        sh=sh,
        normals=normals / normals.norm(dim=1, keepdim=True),
    )


def camera(width: int = 96, height: int = 80) -> Camera:
    return Camera.orbit(
        (0, 0, 0), 0.6, 0.4, 0.1, fov_y=math.radians(25), width=width, height=height
    )


def test_cpu_backend_output():
    out = render(head_gaussians(500, sh_degree=1), camera(), backend="cpu", return_depth=True)
    assert isinstance(out, RenderOutput) and out.backend == "cpu"
    assert out.color.shape == (80, 96, 3) and out.color.dtype == torch.float32
    assert out.alpha.shape == (80, 96) and out.depth.shape == (80, 96)
    assert 0.0 <= out.color.min() and out.color.max() <= 1.0
    assert out.alpha.max() > 0.99 and out.alpha.min() == 0.0  # head in the middle, corners empty
    covered = out.alpha > 0.5
    assert ((out.depth[covered] > 0.45) & (out.depth[covered] < 0.75)).all()
    # background shows where nothing is drawn
    black = render(head_gaussians(500), camera(), backend="cpu", background=(0, 0, 0))
    assert black.color[0, 0].abs().max() == 0.0
    assert render(head_gaussians(50), camera(), backend="cpu").depth is None


def test_lower_sh_degree_and_backface_culling_options():
    g = head_gaussians(400, sh_degree=2)
    full = render(g, camera(), backend="cpu")
    dc = render(g, camera(), backend="cpu", sh_degree=0)
    assert not torch.equal(full.color, dc.color)
    culled = render(g, camera(), backend="cpu", backface_culling=True)
    assert (culled.color - full.color).abs().mean() < 0.05


def test_empty_scene():
    g = head_gaussians(0)
    out = render(g, camera(), backend="cpu", background=(0.5, 0.5, 0.5))
    assert torch.allclose(out.color, torch.full((80, 96, 3), 0.5))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(backend="opengl"), "unknown render backend"),
        (dict(sh_degree=2), "sh_degree=2"),
        (dict(background=(1.0, 0.0)), "background"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(TalkingAvatarError, match=message) as info:
        render(head_gaussians(10), camera(), **kwargs)
    assert "\n" not in str(info.value)


def test_inconsistent_gaussians():
    g = head_gaussians(10)
    g.scales = g.scales[:5]
    with pytest.raises(TalkingAvatarError, match="scales"):
        render(g, camera(), backend="cpu")
    g = head_gaussians(10)
    g.sh = torch.zeros(10, 5, 3)
    with pytest.raises(TalkingAvatarError, match="sh"):
        render(g, camera(), backend="cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_gsplat_without_cuda_is_a_clear_error_and_auto_uses_cpu():
    with pytest.raises(TalkingAvatarError, match="needs a CUDA GPU"):
        render(head_gaussians(10), camera(), backend="gsplat")
    assert render(head_gaussians(10), camera()).backend == "cpu"
    assert render_module._auto_choice == "cpu"


def test_import_touches_neither_gsplat_nor_cuda():
    code = (
        "import sys, torch; import avatar.render; "
        "assert 'gsplat' not in sys.modules, 'gsplat imported'; "
        "assert not torch.cuda.is_initialized(), 'CUDA initialised'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a.double() - b.double()) ** 2).mean())
    return float("inf") if mse == 0 else 10 * math.log10(1.0 / mse)


@pytest.mark.cuda
@cuda
@pytest.mark.parametrize("sh_degree", [0, 3])
def test_gsplat_matches_cpu(sh_degree: int):
    g = head_gaussians(20000, seed=1, sh_degree=sh_degree)
    cam = Camera.orbit((0, 0, 0), 0.6, 0.3, 0.1, fov_y=math.radians(20), width=320, height=256)
    cpu = render(g, cam, backend="cpu", return_depth=True)
    gpu = render(g, cam, backend="gsplat", return_depth=True)
    assert gpu.backend == "gsplat"
    assert psnr(gpu.color.cpu(), cpu.color) > 40
    assert (gpu.alpha.cpu() - cpu.alpha).abs().max() < 0.02
    covered = cpu.alpha > 0.5
    assert (gpu.depth.cpu() - cpu.depth)[covered].abs().max() < 1e-3


def test_gsplat_arguments_fit_gsplat_signature():
    """Runs without CUDA: the call we make binds to gsplat 1.5.3's real `rasterization`."""
    import inspect

    gsplat = pytest.importorskip("gsplat")
    g = head_gaussians(20, sh_degree=2)
    kwargs = render_module._gsplat_arguments(
        g, camera(), torch.ones(3), 2, True, torch.device("cpu")
    )
    bound = inspect.signature(gsplat.rasterization).bind(**kwargs)
    assert bound.arguments["render_mode"] == "RGB+ED"
    assert bound.arguments["viewmats"].shape == (1, 4, 4)
    assert bound.arguments["colors"].shape == (20, 9, 3)


@pytest.mark.parametrize("sh_degree", [0, 2])
def test_gsplat_reads_our_arguments_as_the_cpu_renderer_does(sh_degree: int):
    """Runs without CUDA: gsplat's own torch twins of its kernels (projection, covariance and
    spherical harmonics, `gsplat/cuda/_torch_impl.py`) take the exact arguments the gsplat
    backend passes, and their result, blended by the reference compositor, matches the CPU
    renderer. A wrong convention (xyzw quaternions, log scales, camera-to-world matrices, SH
    layout) fails here even though the CUDA kernels never run."""
    pytest.importorskip("gsplat")
    from gsplat.cuda import _torch_impl as twin

    from avatar.raster_reference import composite_reference

    g = head_gaussians(3000, seed=1, sh_degree=sh_degree)
    cam = Camera.orbit((0, 0, 0), 0.6, 0.3, 0.1, fov_y=math.radians(20), width=96, height=80)
    kw = render_module._gsplat_arguments(
        g, cam, torch.ones(3), sh_degree, True, torch.device("cpu")
    )
    covars, _ = twin._quat_scale_to_covar_preci(kw["quats"], kw["scales"], True, False, triu=False)
    radii, means2d, depths, conics, _ = twin._fully_fused_projection(
        kw["means"], covars, kw["viewmats"], kw["Ks"], kw["width"], kw["height"],
        eps2d=kw["eps2d"], near_plane=kw["near_plane"], far_plane=kw["far_plane"],
    )  # fmt: skip
    camera_centre = torch.linalg.inv(kw["viewmats"][0])[:3, 3]
    k = (kw["sh_degree"] + 1) ** 2
    rgb = (
        twin._spherical_harmonics(
            kw["sh_degree"], kw["means"] - camera_centre, kw["colors"][:, :k]
        ).clamp_min(-0.5)
        + 0.5
    )  # gsplat's rasterization() adds 0.5 and clamps at 0
    visible = (radii[0] > 0).all(-1) if radii.dim() == 3 else radii[0] > 0  # [N]
    idx = torch.nonzero(visible).squeeze(1)
    order = idx[torch.sort(depths[0, idx], stable=True).indices]
    a, b, c = conics[0, order].unbind(-1)
    conic = torch.stack([torch.stack([a, b], -1), torch.stack([b, c], -1)], -2)
    image, alpha, _ = composite_reference(
        means2d[0, order], conic, depths[0, order], rgb[order], kw["opacities"][order],
        kw["width"], kw["height"],
    )  # fmt: skip
    cpu = render(g, cam, backend="cpu", sh_degree=sh_degree)
    assert alpha.max() > 0.5  # the head is in view
    assert psnr(image.float(), cpu.color) > 40
    assert (alpha.float() - cpu.alpha).abs().max() < 0.02
