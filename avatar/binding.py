"""Gaussians bound to mesh triangles (GaussianAvatars' rule), posed per frame from the vertices.

Each Gaussian lives in the local frame of one parent triangle (its "binding"). The frame follows
GaussianAvatars (Qian et al. 2024, `utils/graphics_utils.py: compute_face_orientation` and
`scene/gaussian_model.py: get_xyz / get_rotation / get_scaling`):

- origin: the triangle's centroid (v0 + v1 + v2) / 3;
- axes (the columns of R): a0 = unit(v1 - v0), the first edge; a1 = unit(a0 x (v2 - v0)), the
  triangle's normal (following the winding); a2 = a0 x a1, in the plane. R is a rotation;
- scale: one scalar per triangle, (|v1 - v0| + |a2 . (v2 - v0)|) / 2, the mean of the first
  edge's length and the triangle's height over it.

A Gaussian with local mean m, local rotation q (wxyz, any norm) and local log-scales l is, in
world space: mean = R @ m * scale + origin, rotation = quat(R) * unit(q), scales =
exp(l) * scale. These are the numbers a trained GaussianAvatars `point_cloud.ply` stores with its
`binding_0` column, so such a file poses here exactly as it does there.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from avatar.binding_kernels import pose_arrays
from avatar.errors import TalkingAvatarError
from avatar.flame.identity import Identity
from avatar.flame.params import FlameParams
from avatar.gaussians import Gaussians
from avatar.quaternion import (
    matrix_to_quat,
    quat_conjugate,
    quat_multiply,
    quat_normalize,
    quat_right_matrix,
)

# GaussianAvatars' `length()` clamps squared lengths here so that degenerate triangles give
# finite values and gradients instead of NaN.
_SQUARED_LENGTH_EPS = 1e-20

# Triangles smaller than this (metres) cannot carry a frame: local coordinates would explode.
_MIN_TRIANGLE_SCALE = 1e-9

# Opacities are stored as logits; 0 and 1 would be infinite, so from_world clamps them first.
_OPACITY_EPS = 1e-6


def _safe_length(x: torch.Tensor) -> torch.Tensor:
    """Lengths `[..., 1]` of vectors `[..., 3]`, clamped away from 0 (GaussianAvatars' rule)."""
    return (x * x).sum(dim=-1, keepdim=True).clamp_min(_SQUARED_LENGTH_EPS).sqrt()


def triangle_frames(
    vertices: torch.Tensor, faces: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Local frames of a mesh's triangles, GaussianAvatars' convention (see the module docstring).

    Args:
        vertices: mesh vertices `[..., V, 3]` in metres; leading dimensions are batch (frames).
        faces: vertex indices `[F, 3]` (int), counter-clockwise seen from the outside.

    Returns:
        centres: triangle centroids `[..., F, 3]`, metres.
        rotations: `[..., F, 3, 3]` whose columns are the first edge's direction, the normal, and
            their cross product; maps triangle-local directions to world directions.
        scales: `[..., F]`, metres: mean of the first edge's length and the height over it.
    """
    # One gather per corner keeps each [..., F, 3] contiguous, which the cross products need to
    # be fast (several times faster than slicing one [..., F, 3, 3] gather).
    v0, v1, v2 = (vertices.index_select(-2, faces[:, k]) for k in range(3))  # each [..., F, 3]
    edge1 = v1 - v0  # [..., F, 3]
    edge2 = v2 - v0  # [..., F, 3]

    edge1_length = _safe_length(edge1)  # [..., F, 1]
    a0 = edge1 / edge1_length  # [..., F, 3]
    normal = torch.linalg.cross(a0, edge2)  # [..., F, 3]
    a1 = normal / _safe_length(normal)  # [..., F, 3]
    in_plane = torch.linalg.cross(a0, a1)  # [..., F, 3]
    a2 = in_plane / _safe_length(in_plane)  # [..., F, 3]

    rotations = torch.stack((a0, a1, a2), dim=-1)  # [..., F, 3, 3]
    height = (a2 * edge2).sum(dim=-1).abs()  # [..., F]
    scales = (edge1_length.squeeze(-1) + height) / 2  # [..., F]
    centres = (v0 + v1 + v2) / 3  # [..., F, 3]
    return centres, rotations, scales


@dataclass(eq=False)
class GaussianAvatar:
    """Gaussians bound to the triangles of a head mesh, in their triangles' local frames.

    The parameters are stored as GaussianAvatars stores (and trains) them, so a PLY round trip
    is exact and a trained model loads as it is. `pose` turns them into world `Gaussians`.

    Attributes:
        faces: the head's triangles `[F, 3]` (int64), or None when not yet known (a PLY alone
            holds no faces); `pose` needs them, `with_faces` attaches them.
        binding: parent triangle of each Gaussian `[N]` (int64), indices into `faces`.
        local_means: centres `[N, 3]` in the parent triangle's frame, in units of its scale.
        local_quats: rotations relative to the parent frame `[N, 4]`, wxyz, not necessarily
            unit (normalised when posed, as GaussianAvatars does).
        local_log_scales: natural log of the standard deviations, in units of the parent
            triangle's scale, `[N, 3]`.
        opacity_logits: opacities before the sigmoid `[N]`.
        sh: colour as real SH coefficients `[N, K, 3]` (view directions are world directions).
        identity: whose head the Gaussians are bound to (FLAME shape and static offset, from a
            GaussianAvatars folder), or None for the head model's template; `dress` puts a
            performance's parameters on it.
    """

    faces: torch.Tensor | None  # [F, 3]
    binding: torch.Tensor  # [N]
    local_means: torch.Tensor  # [N, 3]
    local_quats: torch.Tensor  # [N, 4]
    local_log_scales: torch.Tensor  # [N, 3]
    opacity_logits: torch.Tensor  # [N]
    sh: torch.Tensor  # [N, K, 3]
    identity: Identity | None = None
    # What does not change from frame to frame, keyed on the tensors it came from.
    _cache: tuple | None = field(default=None, init=False, repr=False)
    _faces_max: tuple | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        n = self.binding.shape[0]
        expected = {
            "binding": (self.binding, (n,)),
            "local_means": (self.local_means, (n, 3)),
            "local_quats": (self.local_quats, (n, 4)),
            "local_log_scales": (self.local_log_scales, (n, 3)),
            "opacity_logits": (self.opacity_logits, (n,)),
        }
        for name, (tensor, shape) in expected.items():
            if tuple(tensor.shape) != shape:
                raise ValueError(
                    f"GaussianAvatar.{name} has shape {tuple(tensor.shape)}, expected {shape}"
                )
        if self.sh.ndim != 3 or self.sh.shape[0] != n or self.sh.shape[2] != 3:
            raise ValueError(
                f"GaussianAvatar.sh has shape {tuple(self.sh.shape)}, expected ({n}, K, 3)"
            )
        if self.binding.dtype != torch.int64:
            self.binding = self.binding.long()
        if self.faces is not None:
            self._check_faces(self.faces)
            if self.faces.dtype != torch.int64:
                self.faces = self.faces.long()

    def _check_faces(self, faces: torch.Tensor) -> None:
        if faces.ndim != 2 or faces.shape[1] != 3:
            raise ValueError(f"faces must have shape [F, 3], got {tuple(faces.shape)}")
        if len(self) and (int(self.binding.min()) < 0 or int(self.binding.max()) >= len(faces)):
            raise TalkingAvatarError(
                f"the avatar binds Gaussians to triangles {int(self.binding.min())}.."
                f"{int(self.binding.max())} but the head has {len(faces)} triangles; "
                "use the head model the avatar was made for"
            )

    def __len__(self) -> int:
        return self.binding.shape[0]

    @property
    def num_faces(self) -> int | None:
        """Number of triangles of the head, or None when the faces are not attached."""
        return None if self.faces is None else self.faces.shape[0]

    @property
    def sh_degree(self) -> int:
        """The highest SH degree the coefficients hold."""
        return int(round(self.sh.shape[1] ** 0.5)) - 1

    def with_faces(self, faces: torch.Tensor) -> GaussianAvatar:
        """The same avatar bound to the head's triangles `[F, 3]` (checked against `binding`)."""
        return GaussianAvatar(
            faces=faces.to(self.binding.device),
            binding=self.binding,
            local_means=self.local_means,
            local_quats=self.local_quats,
            local_log_scales=self.local_log_scales,
            opacity_logits=self.opacity_logits,
            sh=self.sh,
            identity=self.identity,
        )

    def to(self, device: torch.device | str) -> GaussianAvatar:
        return GaussianAvatar(
            faces=None if self.faces is None else self.faces.to(device),
            binding=self.binding.to(device),
            local_means=self.local_means.to(device),
            local_quats=self.local_quats.to(device),
            local_log_scales=self.local_log_scales.to(device),
            opacity_logits=self.opacity_logits.to(device),
            sh=self.sh.to(device),
            identity=self.identity,
        )

    def dress(self, params: FlameParams) -> FlameParams:
        """FLAME parameters of a performance on this avatar's identity (unchanged without one):
        pose the head with `head(avatar.dress(params))`, then `pose` the Gaussians."""
        return params if self.identity is None else self.identity.apply(params)

    @classmethod
    def from_world(
        cls,
        gaussians: Gaussians,
        binding: torch.Tensor,
        vertices: torch.Tensor,
        faces: torch.Tensor,
    ) -> GaussianAvatar:
        """Bind world-space Gaussians to the triangles of a rest mesh; see `bind_to_triangles`."""
        return bind_to_triangles(gaussians, binding, vertices, faces)

    def _frame_independent(
        self,
    ) -> tuple[tuple[torch.Tensor, ...], torch.Tensor, torch.Tensor, torch.Tensor]:
        """What `pose` needs that does not depend on the mesh, cached unless autograd must see
        it computed: the four columns `[N, 4]` of the right-multiplication matrices of the unit
        local quaternions, the local scales exp(log-scales) `[N, 3]`, the opacities `[N]` and
        the unit local quaternions `[N, 4]`."""
        sources = (self.local_quats, self.local_log_scales, self.opacity_logits)
        tracked = torch.is_grad_enabled() and any(t.requires_grad for t in sources)
        versions = [t._version for t in sources]
        if not tracked and self._cache is not None:
            cached_sources, cached_versions, values = self._cache
            # Identity plus the version counter catches both reassignment and in-place edits.
            same = all(a is b for a, b in zip(cached_sources, sources, strict=True))
            if same and cached_versions == versions:
                return values
        unit = quat_normalize(self.local_quats)  # [N, 4]
        right = quat_right_matrix(unit)  # [N, 4, 4]
        values = (
            tuple(column.contiguous() for column in right.unbind(-1)),  # 4 x [N, 4]
            self.local_log_scales.exp(),  # [N, 3]
            torch.sigmoid(self.opacity_logits),  # [N]
            unit,
        )
        if not tracked:
            self._cache = (sources, versions, values)
        return values

    def _max_vertex_index(self) -> int:
        cached = self._faces_max
        if cached is None or cached[0] is not self.faces:
            top = int(self.faces.max()) if self.faces.numel() else -1
            cached = (self.faces, top)
            self._faces_max = cached
        return cached[1]

    def pose(self, vertices: torch.Tensor) -> Gaussians:
        """World Gaussians for one frame of the head mesh.

        Vectorised and differentiable with respect to `vertices` and the local parameters.
        Opacities and SH coefficients are the same for every frame; `sh` is returned as is.
        A float32 CPU frame that wants no gradient (the viewer, export) is posed by the numba
        kernels of `avatar.binding_kernels` instead: the same numbers, 4-5x faster.

        Args:
            vertices: the posed head's vertices `[V, 3]`, metres, FLAME's world axes.

        Returns:
            Gaussians with means `[N, 3]`, unit quats (wxyz) `[N, 4]`, linear scales `[N, 3]`,
            opacities `[N]`, sh `[N, K, 3]` and the parent triangles' unit normals `[N, 3]`.
        """
        if self.faces is None:
            raise TalkingAvatarError(
                "the avatar has no faces attached; call avatar.with_faces(head.faces) first"
            )
        if vertices.ndim != 2:
            raise ValueError(
                f"pose takes vertices [V, 3], got {tuple(vertices.shape)}; "
                "use pose_frames for a sequence [T, V, 3]"
            )
        if vertices.shape[1] != 3 or vertices.shape[0] <= self._max_vertex_index():
            raise ValueError(
                f"vertices of shape {tuple(vertices.shape)} do not fit the avatar's faces, "
                f"which index {self._max_vertex_index() + 1} vertices"
            )
        right_columns, local_scales, opacities, unit_quats = self._frame_independent()
        if _numba_pose_applies(vertices, self):
            means, quats, scales, normals = (
                torch.from_numpy(a)
                for a in pose_arrays(
                    _contiguous_numpy(vertices),
                    _contiguous_numpy(self.faces),
                    _contiguous_numpy(self.binding),
                    _contiguous_numpy(self.local_means),
                    _contiguous_numpy(unit_quats),
                    _contiguous_numpy(local_scales),
                    _SQUARED_LENGTH_EPS,
                )
            )
            return Gaussians(
                means=means, quats=quats, scales=scales, opacities=opacities, sh=self.sh,
                normals=normals,
            )  # fmt: skip
        centres, rotations, scales = triangle_frames(vertices, self.faces)
        face_quats = matrix_to_quat(rotations)  # [F, 4]
        # One gather of everything per triangle instead of four.
        packed = torch.cat(
            (rotations.flatten(-2), face_quats, scales[:, None], centres), dim=-1
        )  # [F, 17]
        per_gaussian = packed.index_select(0, self.binding)  # [N, 17]
        rot, quat, scale, centre = per_gaussian.split((9, 4, 1, 3), dim=-1)
        rot = rot.unflatten(-1, (3, 3))  # [N, 3, 3]

        # Matrix-vector products written as sums of columns times scalars: on CPU about twice as
        # fast as batched 3x3 / 4x4 matmuls, and five times as fast as broadcast-and-sum.
        local = self.local_means  # [N, 3]
        means = rot[:, :, 0] * local[:, 0:1] + rot[:, :, 1] * local[:, 1:2]  # [N, 3]
        means = (means + rot[:, :, 2] * local[:, 2:3]) * scale + centre  # [N, 3]
        quats = right_columns[0] * quat[:, 0:1]  # [N, 4]: face * local (Hamilton product)
        for k in range(1, 4):
            quats = quats + right_columns[k] * quat[:, k : k + 1]
        return Gaussians(
            means=means,
            quats=quats,
            scales=local_scales * scale,  # [N, 3]
            opacities=opacities,
            sh=self.sh,
            normals=rot[:, :, 1],  # [N, 3]: the frame's second axis is the triangle's normal
        )

    def pose_frames(self, vertices: torch.Tensor) -> list[Gaussians]:
        """World Gaussians for T frames of the head mesh `[T, V, 3]`, one `Gaussians` per frame.

        Each frame is one vectorised `pose`; batching the frames into one pass was measured
        slower on CPU (the [T, N, ...] intermediates fall out of cache). Every frame shares the
        same opacities and sh tensors.
        """
        if vertices.ndim != 3:
            raise ValueError(f"pose_frames takes vertices [T, V, 3], got {tuple(vertices.shape)}")
        return [self.pose(frame) for frame in vertices]


def _numba_pose_applies(vertices: torch.Tensor, avatar: GaussianAvatar) -> bool:
    """Whether `pose` may take the numba kernels: float32 on the CPU, no gradient wanted."""
    tensors = (vertices, avatar.local_means, avatar.local_quats, avatar.local_log_scales)
    if any(t.device.type != "cpu" or t.dtype != torch.float32 for t in tensors):
        return False
    return not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors))


def _contiguous_numpy(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().numpy())


def bind_to_triangles(
    gaussians: Gaussians,
    binding: torch.Tensor,
    vertices: torch.Tensor,
    faces: torch.Tensor,
) -> GaussianAvatar:
    """The local parameters that pose the given world Gaussians exactly on the rest mesh.

    The inverse of `GaussianAvatar.pose`: `bind_to_triangles(g, b, v, f).pose(v)` returns `g`
    (up to float rounding; quaternions possibly negated, the same rotation).

    Args:
        gaussians: world Gaussians (metres, unit wxyz quats, linear scales > 0, opacities in
            [0, 1], which are clamped to [1e-6, 1 - 1e-6] before the logit).
        binding: parent triangle of each Gaussian `[N]` (int), e.g. the nearest triangle.
        vertices: the rest mesh `[V, 3]` the Gaussians were placed on, metres.
        faces: the mesh's triangles `[F, 3]` (int).

    Returns:
        A GaussianAvatar holding `faces`, `binding` and the local parameters.
    """
    n = len(gaussians)
    binding = binding.long()
    if binding.shape != (n,):
        raise ValueError(f"binding must have shape [{n}], got {tuple(binding.shape)}")
    if n and (int(binding.min()) < 0 or int(binding.max()) >= faces.shape[0]):
        raise TalkingAvatarError(
            f"binding refers to triangles {int(binding.min())}..{int(binding.max())} "
            f"but the mesh has {faces.shape[0]} triangles"
        )
    if n and not bool((gaussians.scales > 0).all()):
        raise TalkingAvatarError("Gaussian scales must be positive to be bound to triangles")

    centres, rotations, scales = triangle_frames(vertices, faces.long())
    rot = rotations.index_select(0, binding)  # [N, 3, 3]
    scale = scales.index_select(0, binding)[:, None]  # [N, 1]
    if n and not bool((scale > _MIN_TRIANGLE_SCALE).all()):
        raise TalkingAvatarError("some Gaussians are bound to degenerate (zero-size) triangles")
    offsets = gaussians.means - centres.index_select(0, binding)  # [N, 3]
    # R is orthonormal, so R^T undoes it: local = R^T (mean - centre) / scale.
    local_means = (rot * offsets[:, :, None]).sum(-2) / scale  # [N, 3]
    face_quats = matrix_to_quat(rot)  # [N, 4]
    local_quats = quat_multiply(quat_conjugate(face_quats), gaussians.quats)  # [N, 4]
    return GaussianAvatar(
        faces=faces.long(),
        binding=binding,
        local_means=local_means,
        local_quats=local_quats,
        local_log_scales=(gaussians.scales / scale).log(),
        opacity_logits=torch.logit(gaussians.opacities, eps=_OPACITY_EPS),
        sh=gaussians.sh,
    )
