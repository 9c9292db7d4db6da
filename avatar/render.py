"""One function that draws posed Gaussians through a camera: `render`, on gsplat (CUDA) or CPU.

This is the only module that imports gsplat, and only inside the gsplat backend, so importing
it (or `avatar`) touches neither gsplat nor CUDA.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from avatar import cpu_raster
from avatar.camera import Camera
from avatar.errors import TalkingAvatarError
from avatar.gaussians import Gaussians

log = logging.getLogger(__name__)

BACKENDS = ("auto", "cpu", "gsplat")

#: What "auto" chose in this process, once it has chosen ("gsplat" or "cpu").
_auto_choice: str | None = None


@dataclass
class RenderOutput:
    """One rendered image.

    Attributes:
        color: `[H, W, 3]` float32 RGB in [0, 1], background blended in.
        alpha: `[H, W]` float32 accumulated opacity in [0, 1] (1 - final transmittance).
        depth: `[H, W]` float32 expected camera-space depth in metres (sum w z / sum w; zero
            where nothing was drawn), or None unless `return_depth`.
        backend: the backend that drew it, "cpu" or "gsplat".
    """

    color: torch.Tensor  # [H, W, 3]
    alpha: torch.Tensor  # [H, W]
    depth: torch.Tensor | None  # [H, W]
    backend: str


def render(
    gaussians: Gaussians,
    camera: Camera,
    *,
    backend: str = "auto",
    background: Sequence[float] | torch.Tensor = (1.0, 1.0, 1.0),
    sh_degree: int | None = None,
    return_depth: bool = False,
    backface_culling: bool = False,
) -> RenderOutput:
    """Rasterize N 3D Gaussians into one image (3DGS / gsplat classic forward pass).

    Both backends compute the same image, up to float rounding and one documented clamp:

    - Projection: each Gaussian's covariance R(q) diag(s)^2 R(q)^T is moved to the camera frame
      and through the Jacobian of the pinhole projection (EWA splatting). The Jacobian is taken
      at the centre clamped to 1.3x the field of view, so Gaussians far off screen stay finite.
      0.3 px^2 is added to the 2D covariance's diagonal (gsplat's `eps2d`, classic mode, no
      opacity compensation). Gaussians with camera depth below 0.01 m are dropped.
    - Compositing: pixel (i, j) is sampled at (j + 0.5, i + 0.5). Each Gaussian contributes
      alpha = min(alpha_max, o exp(-1/2 d^T S^-1 d)), skipped below 1/255, front to back in
      depth order; a pixel ends before the Gaussian that would bring its transmittance T to
      1e-4 or below. color = sum_i c_i alpha_i T_i + T_final background.
    - alpha_max is 0.99 on "cpu" (the original 3DGS rasterizer that trains the avatars) and
      0.999 on "gsplat" 1.5.3; the two differ only where one Gaussian is nearly opaque
      (o > 0.99) at a pixel.
    - Colour is evaluated from the SH coefficients for the view direction (camera centre to
      Gaussian centre, world frame): c = max(sum_k Y_k(dir) sh_k + 0.5, 0). With degree 0 it is
      SH_C0 * sh_0 + 0.5 whatever the view.

    Conventions (shared/DESIGN.md): world in metres, +y up, +z towards the viewer; the camera's
    `viewmat` maps world to camera with OpenCV axes (x right, y down, z forward); quaternions
    are wxyz; scales are linear standard deviations; opacities in [0, 1].

    Args:
        gaussians: the Gaussians to draw (`Gaussians`: means [N, 3], quats [N, 4], scales
            [N, 3], opacities [N], sh [N, K, 3], optional normals [N, 3]). N may be 0.
        camera: pinhole camera (`Camera`: viewmat [4, 4], K [3, 3], width, height).
        backend: "cpu" (the project's numba rasterizer, `avatar.cpu_raster`), "gsplat"
            (`gsplat.rasterization` on CUDA; the Gaussians are moved to the GPU), or "auto":
            gsplat when CUDA is available and gsplat works, else cpu. The choice is logged once
            per process.
        background: RGB in [0, 1] shown where the Gaussians leave the pixel transparent.
        sh_degree: SH degree to evaluate, 0 .. `gaussians.sh_degree` (at most 3); None uses
            every coefficient present. Lower degrees render faster on the CPU.
        return_depth: also return the expected depth (gsplat's "ED" render mode).
        backface_culling: drop Gaussians whose `normals` face away from the camera (needs
            normals; ignored without them). Off by default: it is not lossless. Where the
            front surface leaves T above 1e-4 (opacity 0.9 surfels, silhouettes), the back
            surface shows through, and culling changes those pixels (measured on the synthetic
            head, see benchmarks/raster.py). It roughly halves CPU time for closed surfaces.

    Returns:
        `RenderOutput`: color [H, W, 3] clamped to [0, 1], alpha [H, W], depth [H, W] or
        None, all float32, on the device the backend ran on (CPU for "cpu", CUDA for "gsplat").

    Raises:
        TalkingAvatarError: unknown backend; "gsplat" without CUDA or without a working gsplat;
            inconsistent Gaussian shapes; an SH degree the coefficients do not hold; a bad
            background.

    Example:
        >>> cam = Camera.orbit((0, 0, 0), 0.6, 0.0, 0.0, fov_y=0.35, width=512, height=512)
        >>> out = render(gaussians, cam, backend="cpu")
        >>> out.color.shape
        torch.Size([512, 512, 3])
    """
    if backend not in BACKENDS:
        raise TalkingAvatarError(
            f"unknown render backend {backend!r}; use one of {', '.join(BACKENDS)}"
        )
    if not isinstance(camera, Camera):
        raise TalkingAvatarError(
            f"render needs an avatar.camera.Camera, got {type(camera).__name__}"
        )
    degree = _check_gaussians(gaussians, sh_degree)
    bg = _check_background(background)
    return _dispatch(backend, _Frame(gaussians, camera, bg, degree, return_depth, backface_culling))


@dataclass(frozen=True)
class _Frame:
    """One call's checked arguments, as both backends take them."""

    gaussians: Gaussians
    camera: Camera
    background: torch.Tensor  # [3], CPU
    sh_degree: int
    return_depth: bool
    backface_culling: bool


def _dispatch(backend: str, frame: _Frame) -> RenderOutput:
    """Draw the frame on the backend asked for; "auto" falls back to the CPU, once and logged,
    when gsplat fails to render."""
    by_auto = backend == "auto"
    if by_auto:
        backend = _choose_auto()
    elif backend == "gsplat":
        _require_gsplat()

    if backend == "gsplat":
        try:
            return _render_gsplat(frame)
        except TalkingAvatarError:
            raise
        except Exception as err:  # a gsplat that imports but cannot build or run its kernels
            reason = f"{type(err).__name__}: {_first_line(err)}"
            if not by_auto:
                raise TalkingAvatarError(
                    f"gsplat failed to render ({reason}); "
                    "use backend='cpu' or fix the gsplat / CUDA installation"
                ) from err
            _set_auto("cpu", f"gsplat failed: {reason}", level=logging.WARNING)
    return _render_cpu(frame)


def _check_gaussians(gaussians: Gaussians, sh_degree: int | None) -> int:
    """The SH degree to use, after checking the Gaussians' shapes agree."""
    if not isinstance(gaussians, Gaussians):
        raise TalkingAvatarError(
            f"render needs avatar.gaussians.Gaussians, got {type(gaussians).__name__}"
        )
    n = gaussians.means.shape[0] if gaussians.means.dim() == 2 else -1
    expected = {
        "means": (gaussians.means, (n, 3)),
        "quats": (gaussians.quats, (n, 4)),
        "scales": (gaussians.scales, (n, 3)),
        "opacities": (gaussians.opacities, (n,)),
    }
    if gaussians.normals is not None:
        expected["normals"] = (gaussians.normals, (n, 3))
    for name, (tensor, shape) in expected.items():
        if tuple(tensor.shape) != shape:
            raise TalkingAvatarError(
                f"Gaussians.{name} has shape {tuple(tensor.shape)}, expected {shape} "
                f"for {max(n, 0)} Gaussians"
            )
    sh = gaussians.sh
    k = sh.shape[1] if sh.dim() == 3 else -1
    if sh.dim() != 3 or sh.shape[0] != n or sh.shape[2] != 3 or k not in (1, 4, 9, 16):
        raise TalkingAvatarError(
            f"Gaussians.sh has shape {tuple(sh.shape)}, expected ({n}, K, 3) with K = 1, 4, 9 "
            "or 16 (SH degree 0 to 3)"
        )
    held = math.isqrt(k) - 1
    if sh_degree is None:
        return held
    if not 0 <= int(sh_degree) <= held:
        raise TalkingAvatarError(
            f"sh_degree={sh_degree} is not available: these Gaussians hold SH coefficients up "
            f"to degree {held}"
        )
    return int(sh_degree)


def _check_background(background: Sequence[float] | torch.Tensor) -> torch.Tensor:
    try:
        bg = torch.as_tensor(background, dtype=torch.float32).reshape(-1)  # [3]
    except (TypeError, ValueError, RuntimeError) as err:
        raise TalkingAvatarError(f"background must be 3 numbers (RGB), got {background!r}") from err
    if bg.shape != (3,) or not torch.isfinite(bg).all():
        raise TalkingAvatarError(f"background must be 3 finite numbers (RGB), got {background!r}")
    return bg.cpu()


def _require_gsplat() -> None:
    """A one-line error unless CUDA is available and gsplat imports."""
    if not torch.cuda.is_available():
        raise TalkingAvatarError(
            "render backend 'gsplat' needs a CUDA GPU, and none is available; "
            "use backend='cpu' or 'auto'"
        )
    try:
        import gsplat  # noqa: F401
    except Exception as err:
        raise TalkingAvatarError(
            f"render backend 'gsplat' cannot import gsplat ({type(err).__name__}: "
            f"{_first_line(err)}); "
            "install gsplat==1.5.3 or use backend='cpu'"
        ) from err


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else ""


def _set_auto(choice: str, reason: str, level: int = logging.INFO) -> None:
    global _auto_choice
    _auto_choice = choice
    log.log(level, "render backend 'auto' uses %s (%s)", choice, reason)


def _choose_auto() -> str:
    if _auto_choice is None:
        try:
            _require_gsplat()
        except TalkingAvatarError as err:
            _set_auto("cpu", str(err).split(";")[0])
        else:
            _set_auto("gsplat", "CUDA is available and gsplat imports")
    assert _auto_choice is not None
    return _auto_choice


def _facing_mask(gaussians: Gaussians, camera: Camera) -> torch.Tensor | None:
    """Gaussians whose normal faces the camera `[N]` bool, or None without normals."""
    if gaussians.normals is None:
        return None
    center = camera.camera_center.to(gaussians.means.device)  # [3]
    return ((gaussians.normals * (gaussians.means - center)).sum(-1) <= 0).reshape(-1)  # [N]


def _render_cpu(frame: _Frame) -> RenderOutput:
    gaussians, camera = frame.gaussians, frame.camera
    out = cpu_raster.rasterize(
        gaussians.means,
        gaussians.quats,
        gaussians.scales,
        gaussians.opacities,
        gaussians.sh,
        camera.viewmat,
        camera.K,
        camera.width,
        camera.height,
        sh_degree=frame.sh_degree,
        background=frame.background,
        normals=gaussians.normals,
        backface_culling=frame.backface_culling,
        return_depth=frame.return_depth,
        clamp=True,
    )
    return RenderOutput(color=out.color, alpha=out.alpha, depth=out.depth, backend="cpu")


def _render_gsplat(frame: _Frame) -> RenderOutput:
    import gsplat  # lazily: importing avatar.render must not import gsplat or touch CUDA

    camera, background, return_depth = frame.camera, frame.background, frame.return_depth
    device = torch.device("cuda")
    g = frame.gaussians.to(device)
    if frame.backface_culling and (keep := _facing_mask(g, camera)) is not None:
        g = Gaussians(g.means[keep], g.quats[keep], g.scales[keep], g.opacities[keep], g.sh[keep])
    height, width = camera.height, camera.width
    if len(g) == 0:  # gsplat's kernels expect at least one Gaussian
        color = background.to(device).expand(height, width, 3).clone()  # [H, W, 3]
        zeros = torch.zeros(height, width, device=device)  # [H, W]
        return RenderOutput(color, zeros, zeros.clone() if return_depth else None, "gsplat")
    colors, alphas, _ = gsplat.rasterization(
        **_gsplat_arguments(g, camera, background, frame.sh_degree, return_depth, device)
    )  # colors [1, H, W, 3 or 4], alphas [1, H, W, 1]
    return RenderOutput(
        color=colors[0, ..., :3].clamp(0.0, 1.0),
        alpha=alphas[0, ..., 0].clamp(0.0, 1.0),
        depth=colors[0, ..., 3] if return_depth else None,
        backend="gsplat",
    )


def _gsplat_arguments(
    g: Gaussians,
    camera: Camera,
    background: torch.Tensor,
    sh_degree: int,
    return_depth: bool,
    device: torch.device,
) -> dict:
    """Keyword arguments of `gsplat.rasterization` (1.5.3) for one camera, on `device`."""
    return dict(
        means=g.means.float(),  # [N, 3]
        quats=g.quats.float(),  # [N, 4]
        scales=g.scales.float(),  # [N, 3]
        opacities=g.opacities.float(),  # [N]
        colors=g.sh.float(),  # [N, K, 3] SH coefficients
        viewmats=camera.viewmat.to(device)[None],  # [1, 4, 4]
        Ks=camera.K.to(device)[None],  # [1, 3, 3]
        width=camera.width,
        height=camera.height,
        near_plane=cpu_raster.NEAR_PLANE,
        far_plane=cpu_raster.FAR_PLANE,
        eps2d=cpu_raster.EPS2D,
        sh_degree=sh_degree,
        tile_size=cpu_raster.TILE,
        backgrounds=background.to(device)[None],  # [1, 3]
        render_mode="RGB+ED" if return_depth else "RGB",
        rasterize_mode="classic",
    )


def render_device(backend: str = "auto") -> torch.device:
    """Where to pose the Gaussians for a backend: CUDA when it draws with gsplat, else the CPU.

    Posing (FLAME, binding) on the device that rasterizes saves copying every Gaussian to the
    GPU each frame; callers move their head model and avatar there once (`viewer.export`,
    `viewer.app`)."""
    if backend not in BACKENDS:
        raise TalkingAvatarError(f"unknown render backend '{backend}'; use {', '.join(BACKENDS)}")
    chosen = _choose_auto() if backend == "auto" else backend
    return torch.device("cuda" if chosen == "gsplat" else "cpu")
