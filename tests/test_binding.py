"""Tests for avatar.binding (triangle frames, posing, binding world Gaussians) and quaternions."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from avatar import binding, binding_kernels
from avatar.binding import GaussianAvatar, bind_to_triangles, triangle_frames
from avatar.errors import TalkingAvatarError
from avatar.gaussians import Gaussians
from avatar.quaternion import (
    matrix_to_quat,
    quat_conjugate,
    quat_multiply,
    quat_normalize,
    quat_right_matrix,
    quat_to_matrix,
)


def grid_mesh(
    size: int = 6, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """A wavy height-field patch, 10 cm across: well-shaped triangles of varied orientation."""
    u = torch.linspace(-0.05, 0.05, size, dtype=torch.float64)
    x, y = torch.meshgrid(u, u, indexing="xy")
    z = 0.02 * torch.sin(40 * x) * torch.cos(30 * y)
    vertices = torch.stack((x, y, z), dim=-1).reshape(-1, 3).to(dtype)  # [V, 3]
    faces = []
    for r in range(size - 1):
        for c in range(size - 1):
            i = r * size + c
            faces += [(i, i + 1, i + size), (i + 1, i + size + 1, i + size)]
    return vertices, torch.tensor(faces)  # [F, 3]


def random_avatar(
    faces: torch.Tensor, n: int = 200, sh_degree: int = 1, dtype: torch.dtype = torch.float32
) -> GaussianAvatar:
    g = torch.Generator().manual_seed(0)
    return GaussianAvatar(
        faces=faces,
        binding=torch.randint(0, len(faces), (n,), generator=g),
        local_means=torch.randn(n, 3, generator=g, dtype=dtype) * 0.3,
        local_quats=torch.randn(n, 4, generator=g, dtype=dtype) * 2,  # not unit, as trained
        local_log_scales=torch.randn(n, 3, generator=g, dtype=dtype) - 2,
        opacity_logits=torch.randn(n, generator=g, dtype=dtype),
        sh=torch.randn(n, (sh_degree + 1) ** 2, 3, generator=g, dtype=dtype),
    )


def random_rotation(seed: int = 1) -> torch.Tensor:
    return quat_to_matrix(torch.randn(4, generator=torch.Generator().manual_seed(seed)))


def reference_frames(vertices: torch.Tensor, faces: torch.Tensor):
    """GaussianAvatars' `compute_face_orientation` rule, spelt out independently."""
    v0, v1, v2 = (vertices[faces[:, k]] for k in range(3))

    def unit(x):
        return x / torch.linalg.norm(x, dim=-1, keepdim=True)

    a0 = unit(v1 - v0)
    a1 = unit(torch.cross(a0, v2 - v0, dim=-1))
    a2 = -unit(torch.cross(a1, a0, dim=-1))
    rotations = torch.stack((a0, a1, a2), dim=-1)
    scales = (torch.linalg.norm(v1 - v0, dim=-1) + (a2 * (v2 - v0)).sum(-1).abs()) / 2
    return (v0 + v1 + v2) / 3, rotations, scales


def rotation_of(gaussians: Gaussians) -> torch.Tensor:
    return quat_to_matrix(gaussians.quats)  # sign-free comparison of quaternions


# --- quaternions ---------------------------------------------------------------------------


def test_quaternion_helpers_agree_with_rotation_matrices():
    g = torch.Generator().manual_seed(0)
    a, b = quat_normalize(torch.randn(2, 500, 4, generator=g, dtype=torch.float64))
    ra, rb = quat_to_matrix(a), quat_to_matrix(b)
    assert torch.allclose(ra @ ra.transpose(-1, -2), torch.eye(3, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(torch.linalg.det(ra), torch.ones(500, dtype=torch.float64))
    assert torch.allclose(quat_to_matrix(quat_multiply(a, b)), ra @ rb, atol=1e-12)
    assert torch.allclose((quat_right_matrix(b) @ a[..., None])[..., 0], quat_multiply(a, b))
    assert torch.allclose(quat_multiply(a, quat_conjugate(a))[:, 0], torch.ones(500).double())
    back = matrix_to_quat(ra)
    assert torch.allclose(back, a * a[:, :1].sign(), atol=1e-12)  # w >= 0 hemisphere
    # A vector rotated by q v q* equals R v.
    v = torch.randn(500, 3, generator=g, dtype=torch.float64)
    pure = torch.cat((torch.zeros(500, 1, dtype=torch.float64), v), dim=-1)
    turned = quat_multiply(quat_multiply(a, pure), quat_conjugate(a))[:, 1:]
    assert torch.allclose(turned, (ra @ v[..., None])[..., 0], atol=1e-12)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_matrix_to_quat_half_turns_and_gradients(axis):
    m = -torch.eye(3, dtype=torch.float64)
    m[axis, axis] = 1  # 180 degrees about `axis`: w = 0, the hard case
    expected = torch.zeros(4, dtype=torch.float64)
    expected[axis + 1] = 1
    q = matrix_to_quat(m)
    assert torch.allclose(q.abs(), expected)
    rotations = quat_to_matrix(torch.randn(8, 4, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(matrix_to_quat, (rotations,))


# --- triangle frames -----------------------------------------------------------------------


def test_triangle_frames_of_a_known_triangle():
    vertices = torch.tensor([[0.0, 0, 0], [2, 0, 0], [0, 1, 0]])
    centres, rotations, scales = triangle_frames(vertices, torch.tensor([[0, 1, 2]]))
    assert torch.allclose(centres, torch.tensor([[2 / 3, 1 / 3, 0]]))
    # Columns: first edge (+x), normal (+z, counter-clockwise), their cross product (-y).
    assert torch.allclose(rotations, torch.tensor([[[1.0, 0, 0], [0, 0, -1], [0, 1, 0]]]))
    assert torch.allclose(scales, torch.tensor([1.5]))  # (edge 2 + height 1) / 2


def test_triangle_frames_follow_gaussian_avatars_rule_with_batches():
    vertices, faces = grid_mesh(dtype=torch.float64)
    centres, rotations, scales = triangle_frames(vertices, faces)
    for ours, theirs in zip(
        (centres, rotations, scales), reference_frames(vertices, faces), strict=True
    ):
        assert torch.allclose(ours, theirs, atol=1e-12)
    eye = torch.eye(3, dtype=torch.float64).expand_as(rotations)
    assert torch.allclose(rotations.transpose(-1, -2) @ rotations, eye, atol=1e-12)
    assert torch.allclose(torch.linalg.det(rotations), torch.ones(len(faces), dtype=torch.float64))
    stacked = torch.stack((vertices, vertices * 2))  # [T, V, 3]
    batched = triangle_frames(stacked, faces)
    assert torch.allclose(batched[1][1], rotations) and torch.allclose(batched[2][1], 2 * scales)


def test_degenerate_triangle_stays_finite():
    vertices = torch.tensor([[0.0, 0, 0], [0, 0, 0], [0, 0, 0]], requires_grad=True)
    centres, rotations, scales = triangle_frames(vertices, torch.tensor([[0, 1, 2]]))
    (centres.sum() + rotations.sum() + scales.sum()).backward()
    assert torch.isfinite(rotations).all() and torch.isfinite(vertices.grad).all()


# --- posing --------------------------------------------------------------------------------


def test_pose_matches_gaussian_avatars_formulas():
    vertices, faces = grid_mesh(dtype=torch.float64)
    avatar = random_avatar(faces, dtype=torch.float64)
    posed = avatar.pose(vertices)
    centres, rotations, scales = reference_frames(vertices, faces)
    rot, s, c = rotations[avatar.binding], scales[avatar.binding, None], centres[avatar.binding]
    assert torch.allclose(posed.means, (rot @ avatar.local_means[..., None])[..., 0] * s + c)
    local_rotation = quat_to_matrix(avatar.local_quats)
    assert torch.allclose(rotation_of(posed), rot @ local_rotation, atol=1e-12)
    assert torch.allclose(posed.quats.norm(dim=-1), torch.ones(len(avatar), dtype=torch.float64))
    assert torch.allclose(posed.scales, avatar.local_log_scales.exp() * s)
    assert torch.allclose(posed.opacities, torch.sigmoid(avatar.opacity_logits))
    assert posed.sh is avatar.sh
    normals = torch.cross(*(vertices[faces[:, k]] - vertices[faces[:, 0]] for k in (1, 2)), dim=-1)
    normals = normals / normals.norm(dim=-1, keepdim=True)
    assert torch.allclose(posed.normals, normals[avatar.binding], atol=1e-12)


def test_rigid_motion_moves_every_gaussian_rigidly():
    vertices, faces = grid_mesh()
    avatar = random_avatar(faces)
    rotation, translation = random_rotation(), torch.tensor([0.3, -0.1, 0.05])
    before = avatar.pose(vertices)
    after = avatar.pose(vertices @ rotation.T + translation)
    assert torch.allclose(after.means, before.means @ rotation.T + translation, atol=1e-6)
    assert torch.allclose(rotation_of(after), rotation @ rotation_of(before), atol=1e-5)
    assert torch.allclose(after.scales, before.scales, rtol=1e-5)
    assert torch.allclose(after.normals, before.normals @ rotation.T, atol=1e-5)


def test_uniform_scaling_scales_means_about_the_centre_and_scales():
    vertices, faces = grid_mesh()
    avatar = random_avatar(faces)
    centre, factor = torch.tensor([0.01, 0.02, -0.03]), 1.7
    before = avatar.pose(vertices)
    after = avatar.pose(centre + factor * (vertices - centre))
    assert torch.allclose(after.means, centre + factor * (before.means - centre), atol=1e-6)
    assert torch.allclose(after.scales, factor * before.scales, rtol=1e-5)
    assert torch.allclose(rotation_of(after), rotation_of(before), atol=1e-5)


def test_pose_frames_equals_pose_per_frame():
    vertices, faces = grid_mesh()
    avatar = random_avatar(faces)
    frames = torch.stack((vertices, vertices @ random_rotation().T, vertices * 0.5))
    for one, many in zip((avatar.pose(v) for v in frames), avatar.pose_frames(frames), strict=True):
        for name in ("means", "quats", "scales", "normals", "opacities"):
            assert torch.allclose(getattr(one, name), getattr(many, name), atol=1e-6), name
    with pytest.raises(ValueError, match="pose_frames"):
        avatar.pose(frames)


def test_cached_parameters_follow_in_place_edits():
    vertices, faces = grid_mesh()
    avatar = random_avatar(faces)
    first = avatar.pose(vertices)
    with torch.no_grad():
        avatar.local_log_scales += 1.0
        avatar.opacity_logits.zero_()
    second = avatar.pose(vertices)
    assert torch.allclose(second.scales, first.scales * math.e, rtol=1e-5)
    assert torch.allclose(second.opacities, torch.full_like(second.opacities, 0.5))
    avatar.local_quats = torch.tensor([[1.0, 0, 0, 0]]).expand(len(avatar), 4).clone()
    third = avatar.pose(vertices)
    assert torch.allclose(third.normals, rotation_of(third)[:, :, 1], atol=1e-6)


def test_gradients_flow_to_local_parameters_and_vertices():
    vertices, faces = grid_mesh(dtype=torch.float64)
    avatar = random_avatar(faces, n=30, dtype=torch.float64)
    leaves = [
        avatar.local_means,
        avatar.local_quats,
        avatar.local_log_scales,
        avatar.opacity_logits,
        vertices,
    ]
    for leaf in leaves:
        leaf.requires_grad_()
    posed = avatar.pose(vertices)
    loss = sum((t * torch.randn_like(t)).sum() for t in (posed.means, posed.quats, posed.scales))
    (loss + posed.opacities.sum() + posed.normals.sum()).backward()
    for leaf in leaves:
        assert leaf.grad is not None and torch.isfinite(leaf.grad).all()
        assert leaf.grad.abs().sum() > 0

    def world(v, means, quats, log_scales):
        small = GaussianAvatar(
            faces=faces,
            binding=avatar.binding[:5],
            local_means=means,
            local_quats=quats,
            local_log_scales=log_scales,
            opacity_logits=avatar.opacity_logits[:5].detach(),
            sh=avatar.sh[:5],
        )
        posed = small.pose(v)
        return posed.means, posed.quats, posed.scales, posed.normals

    inputs = (
        vertices.detach().clone().requires_grad_(),
        avatar.local_means[:5].detach().clone().requires_grad_(),
        avatar.local_quats[:5].detach().clone().requires_grad_(),
        avatar.local_log_scales[:5].detach().clone().requires_grad_(),
    )
    assert torch.autograd.gradcheck(world, inputs)


def torch_pose(avatar: GaussianAvatar, vertices: torch.Tensor) -> Gaussians:
    """`pose` through its torch code: a vertex tensor that wants a gradient keeps it there."""
    posed = avatar.pose(vertices.detach().clone().requires_grad_())
    return dataclasses.replace(
        posed, **{k: getattr(posed, k).detach() for k in ("means", "quats", "scales", "normals")}
    )


def test_numba_pose_matches_the_torch_pose(monkeypatch):
    """Frames that want no gradient are posed by numba kernels; they give torch's numbers.
    Turned meshes make every branch of the matrix-to-quaternion step run."""
    calls = []
    monkeypatch.setattr(
        binding, "pose_arrays", lambda *a: calls.append(1) or binding_kernels.pose_arrays(*a)
    )
    vertices, faces = grid_mesh(size=9)
    vertices = torch.cat((vertices, torch.zeros(3, 3)))  # and one degenerate triangle
    faces = torch.cat((faces, torch.tensor([[len(vertices) - 3, len(vertices) - 2, 81]])))
    avatar = random_avatar(faces, n=2000)
    turns = [torch.eye(3)] + [quat_to_matrix(q) for q in torch.eye(4)[1:]]  # half turns
    turns += [random_rotation(seed) for seed in range(4)]
    for turn in turns:
        posed_vertices = vertices @ turn.T + torch.tensor([0.01, -0.2, 0.5])
        fast, slow = avatar.pose(posed_vertices), torch_pose(avatar, posed_vertices)
        for name in ("means", "quats", "scales", "normals"):
            ours, theirs = getattr(fast, name), getattr(slow, name)
            assert ours.dtype == torch.float32 and ours.shape == theirs.shape, name
            torch.testing.assert_close(ours, theirs, atol=2e-6, rtol=0, msg=name)
        assert fast.opacities is slow.opacities and fast.sh is avatar.sh
    assert len(calls) == len(turns)


def test_pose_keeps_gradients_and_other_dtypes_on_the_torch_path(monkeypatch):
    monkeypatch.setattr(binding, "pose_arrays", lambda *a: pytest.fail("numba path taken"))
    vertices, faces = grid_mesh()
    avatar = random_avatar(faces)
    avatar.local_means.requires_grad_()
    assert avatar.pose(vertices).means.requires_grad
    avatar64 = random_avatar(faces, dtype=torch.float64)
    assert avatar64.pose(vertices.double()).means.dtype == torch.float64


def test_pose_checks_its_inputs():
    vertices, faces = grid_mesh()
    avatar = random_avatar(faces)
    with pytest.raises(ValueError, match="do not fit"):
        avatar.pose(vertices[:5])
    with pytest.raises(TalkingAvatarError, match="with_faces"):
        dataclasses.replace(avatar, faces=None).pose(vertices)
    with pytest.raises(TalkingAvatarError, match="triangles"):
        avatar.with_faces(faces[:3])
    with pytest.raises(ValueError, match="local_means"):
        dataclasses.replace(avatar, local_means=avatar.local_means[:3])


# --- binding world Gaussians ---------------------------------------------------------------


def world_gaussians(n: int, dtype: torch.dtype = torch.float32) -> Gaussians:
    g = torch.Generator().manual_seed(3)
    return Gaussians(
        means=(torch.rand(n, 3, generator=g, dtype=dtype) - 0.5) * 0.1,
        quats=quat_normalize(torch.randn(n, 4, generator=g, dtype=dtype)),
        scales=torch.rand(n, 3, generator=g, dtype=dtype) * 0.005 + 1e-4,
        opacities=torch.rand(n, generator=g, dtype=dtype),
        sh=torch.randn(n, 4, 3, generator=g, dtype=dtype),
    )


def test_from_world_then_pose_on_the_rest_mesh_round_trips():
    vertices, faces = grid_mesh()
    world = world_gaussians(300)
    binding = torch.randint(0, len(faces), (300,), generator=torch.Generator().manual_seed(4))
    avatar = GaussianAvatar.from_world(world, binding, vertices, faces)
    assert torch.equal(avatar.binding, binding) and torch.equal(avatar.faces, faces)
    posed = avatar.pose(vertices)
    assert torch.allclose(posed.means, world.means, atol=1e-7)
    assert torch.allclose(rotation_of(posed), quat_to_matrix(world.quats), atol=1e-5)
    assert torch.allclose(posed.scales, world.scales, rtol=1e-5)
    assert torch.allclose(posed.opacities, world.opacities, atol=1e-6)
    assert posed.sh is world.sh


def test_bind_to_triangles_inverts_pose():
    vertices, faces = grid_mesh(dtype=torch.float64)
    avatar = random_avatar(faces, dtype=torch.float64)
    posed = avatar.pose(vertices)
    again = bind_to_triangles(posed, avatar.binding, vertices, faces)
    assert torch.allclose(again.local_means, avatar.local_means, atol=1e-10)
    assert torch.allclose(again.local_log_scales, avatar.local_log_scales, atol=1e-10)
    assert torch.allclose(
        quat_to_matrix(again.local_quats), quat_to_matrix(avatar.local_quats), atol=1e-10
    )
    assert torch.allclose(again.opacity_logits, avatar.opacity_logits, atol=1e-8)


def test_bind_to_triangles_checks_its_inputs():
    vertices, faces = grid_mesh()
    world = world_gaussians(10)
    with pytest.raises(TalkingAvatarError, match="triangles"):
        bind_to_triangles(world, torch.full((10,), len(faces)), vertices, faces)
    with pytest.raises(ValueError, match="shape"):
        bind_to_triangles(world, torch.zeros(9, dtype=torch.long), vertices, faces)
    flat = Gaussians(**{**vars(world), "scales": world.scales * 0})
    with pytest.raises(TalkingAvatarError, match="positive"):
        bind_to_triangles(flat, torch.zeros(10, dtype=torch.long), vertices, faces)
    squashed = vertices.clone()
    squashed[faces[0]] = 0
    with pytest.raises(TalkingAvatarError, match="degenerate"):
        bind_to_triangles(world, torch.zeros(10, dtype=torch.long), squashed, faces)
