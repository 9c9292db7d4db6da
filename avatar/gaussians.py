"""A set of posed 3D Gaussians in world space: what the renderers draw."""

from __future__ import annotations

from dataclasses import dataclass

import torch

#: 0th-order real spherical-harmonic constant; rgb = SH_C0 * sh_dc + 0.5 (3DGS convention).
SH_C0 = 0.28209479177387814


@dataclass
class Gaussians:
    """N Gaussians in world space (metres, FLAME axes: +y up, +z towards the viewer).

    Attributes:
        means: centres `[N, 3]`.
        quats: rotations as unit quaternions, wxyz, `[N, 4]`.
        scales: standard deviations along the local axes, linear (not log), `[N, 3]`.
        opacities: in [0, 1], `[N]`.
        sh: colour as real spherical-harmonic coefficients `[N, K, 3]`, K = (degree + 1) ** 2;
            degree 0 (K = 1) gives view-independent colour rgb = SH_C0 * sh[:, 0] + 0.5.
        normals: optional unit normals `[N, 3]` of the surface each Gaussian lies on (from the
            triangle binding); renderers may cull Gaussians facing away from the camera.
    """

    means: torch.Tensor  # [N, 3]
    quats: torch.Tensor  # [N, 4]
    scales: torch.Tensor  # [N, 3]
    opacities: torch.Tensor  # [N]
    sh: torch.Tensor  # [N, K, 3]
    normals: torch.Tensor | None = None  # [N, 3]

    def __len__(self) -> int:
        return self.means.shape[0]

    @property
    def sh_degree(self) -> int:
        """The highest SH degree the coefficients hold."""
        return int(round(self.sh.shape[1] ** 0.5)) - 1

    def to(self, device: torch.device | str) -> Gaussians:
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return Gaussians(
            means=move(self.means),
            quats=move(self.quats),
            scales=move(self.scales),
            opacities=move(self.opacities),
            sh=move(self.sh),
            normals=move(self.normals),
        )


def rgb_to_sh(rgb: torch.Tensor) -> torch.Tensor:
    """Degree-0 SH coefficients `[..., 3]` for linear colours `[..., 3]` in [0, 1]."""
    return (rgb - 0.5) / SH_C0


def sh_to_rgb(sh_dc: torch.Tensor) -> torch.Tensor:
    """Colours `[..., 3]` of degree-0 SH coefficients `[..., 3]` (not clamped)."""
    return sh_dc * SH_C0 + 0.5
