"""3D Gaussian Splatting PLY files: read, write, and import GaussianAvatars output folders.

The layout is the one 3DGS (Kerbl et al. 2023, `scene/gaussian_model.py: save_ply`) writes and
splat viewers open: one `vertex` element, binary little-endian float32 properties

    x y z  nx ny nz  f_dc_0..2  f_rest_0..M-1  opacity  scale_0..2  rot_0..3  [binding_0]

- f_dc: the degree-0 SH coefficients (R, G, B); f_rest: the higher ones channel-major, all of
  R's coefficients, then G's, then B's (M = 3 ((degree + 1)^2 - 1): 0, 9, 24 or 45);
- opacity: the logit of the opacity; scale: the natural log of the standard deviations;
  rot: the rotation quaternion, wxyz, as stored (not necessarily unit);
- binding_0: GaussianAvatars' extra column, the parent triangle of each Gaussian, a float32
  holding an integer (as GaussianAvatars writes it). With a binding, x..rot are the local
  parameters in the triangle's frame (GaussianAvatars' `save_ply` stores `_xyz`, `_scaling`,
  `_rotation` unposed); normals are written as zeros, as both projects do.

Reading and writing a `GaussianAvatar` round-trips every stored number bit for bit. Plain world
`Gaussians` hold linear scales and opacities in [0, 1], so their log/logit round trip is exact
only up to float rounding.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import torch
from plyfile import PlyData, PlyElement, PlyParseError

from avatar.atomic import atomic_path
from avatar.binding import GaussianAvatar
from avatar.errors import TalkingAvatarError
from avatar.flame.params import read_npz
from avatar.gaussians import Gaussians

BINDING = "binding_0"

# Float32 represents every integer up to 2**24 exactly; larger triangle indices would not survive.
_MAX_FLOAT32_INDEX = 2**24
# Quaternion norms within float32 rounding of 1 (a few ulps) count as unit.
_UNIT_QUAT_TOLERANCE = 1e-6
# Opacities 0 and 1 have infinite logits; writing world Gaussians clamps to this margin.
_OPACITY_EPS = 1e-6

# The per-frame arrays of GaussianAvatars' flame_param.npz (`FlameGaussianModel.save_ply`).
FLAME_PARAM_KEYS = (
    "shape",
    "expr",
    "rotation",
    "neck_pose",
    "jaw_pose",
    "eyes_pose",
    "translation",
)
_PER_FRAME_KEYS = ("expr", "rotation", "neck_pose", "jaw_pose", "eyes_pose", "translation")


def _property_names(num_rest: int, with_binding: bool) -> list[str]:
    names = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    names += [f"f_rest_{i}" for i in range(num_rest)]
    names += ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    return names + [BINDING] if with_binding else names


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float32).numpy()


def write_ply(path: str | os.PathLike, data: GaussianAvatar | Gaussians) -> None:
    """Write Gaussians as a 3DGS PLY, atomically (a temporary file renamed into place).

    Args:
        path: the file to write; its folder is created if missing.
        data: a `GaussianAvatar` (local parameters and the `binding_0` column, GaussianAvatars'
            layout) or world `Gaussians` (plain 3DGS; scales are logged, opacities clamped to
            [1e-6, 1 - 1e-6] and turned into logits; normals written when present).

    Raises:
        TalkingAvatarError: empty, non-finite or otherwise unwritable Gaussians.
    """
    path = Path(path)
    n = len(data)
    if n == 0:
        raise TalkingAvatarError(f"{path}: refusing to write a PLY with no Gaussians")
    sh = _numpy(data.sh)  # [N, K, 3]
    rest = sh[:, 1:, :].transpose(0, 2, 1).reshape(n, -1)  # [N, 3 (K - 1)], channel-major
    binding = None
    if isinstance(data, GaussianAvatar):
        means = _numpy(data.local_means)
        normals = np.zeros((n, 3), np.float32)
        opacity = _numpy(data.opacity_logits)
        log_scales = _numpy(data.local_log_scales)
        quats = _numpy(data.local_quats)
        binding = data.binding.detach().cpu().numpy()
        if binding.min() < 0 or binding.max() >= _MAX_FLOAT32_INDEX:
            raise TalkingAvatarError(
                f"{path}: binding indices must lie in [0, {_MAX_FLOAT32_INDEX}) to be stored"
            )
    else:
        if not bool((data.scales > 0).all()):
            raise TalkingAvatarError(f"{path}: Gaussian scales must be positive to be written")
        means = _numpy(data.means)
        normals = np.zeros((n, 3), np.float32) if data.normals is None else _numpy(data.normals)
        opacity = _numpy(torch.logit(data.opacities.detach().float(), eps=_OPACITY_EPS))
        log_scales = _numpy(data.scales.detach().float().log())
        quats = _numpy(data.quats)

    columns = [means, normals, sh[:, 0, :], rest, opacity[:, None], log_scales, quats]
    if binding is not None:
        columns.append(binding.astype(np.float32)[:, None])
    table = np.ascontiguousarray(np.concatenate(columns, axis=1), dtype="<f4")  # [N, P]
    if not np.isfinite(table).all():
        raise TalkingAvatarError(f"{path}: refusing to write NaN or infinite Gaussian parameters")
    names = _property_names(rest.shape[1], binding is not None)
    vertices = table.view([(name, "<f4") for name in names])[:, 0]  # [N] structured rows

    with atomic_path(path, what="PLY file") as tmp, open(tmp, "wb") as file:
        PlyData([PlyElement.describe(vertices, "vertex")], byte_order="<").write(file)


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


_PLY_SIZES = {
    **dict.fromkeys(("char", "int8", "uchar", "uint8"), 1),
    **dict.fromkeys(("short", "int16", "ushort", "uint16"), 2),
    **dict.fromkeys(("int", "int32", "uint", "uint32", "float", "float32"), 4),
    **dict.fromkeys(("double", "float64"), 8),
}


def _check_header_sizes(path: Path) -> None:
    """Refuse a header whose element counts need more bytes than the file has, before
    anything is allocated for them (a 100-byte file may claim 4e9 vertices)."""
    with open(path, "rb") as f:
        head = f.read(65536)
    end = head.find(b"end_header")
    if not head.startswith(b"ply") or end < 0:
        return  # plyfile reports malformed headers itself
    body = max(0, path.stat().st_size - (end + len(b"end_header\n")))
    lines = head[:end].decode("ascii", "replace").splitlines()
    binary = any(line.startswith("format binary") for line in lines)
    elements: list[list] = []  # [name, count, least bytes a row]
    for words in (line.split() for line in lines):
        if words[:1] == ["element"] and len(words) == 3:
            count = int(words[2]) if words[2].isdigit() else 0
            elements.append([words[1], count, 0])
        elif words[:1] == ["property"] and len(words) >= 3 and elements:
            # a list costs at least its count; an ascii value at least 2 bytes ("0 ")
            kind = words[2] if words[1] == "list" else words[1]
            elements[-1][2] += _PLY_SIZES.get(kind, 1) if binary else 2
    need = 0
    for name, count, row in elements:
        need += count * row
        if need > body:
            raise TalkingAvatarError(
                f"{path}: the header claims {count} '{name}' rows (at least {count * row} bytes) "
                f"but the file holds {body} bytes after it; the file is truncated or corrupt"
            )


def _read_vertex_table(path: Path) -> tuple[np.ndarray, list[str]]:
    """The `vertex` element's rows (structured array) and its property names, checked."""
    if not path.is_file():
        raise TalkingAvatarError(f"{path}: no such PLY file")
    _check_header_sizes(path)
    try:
        ply = PlyData.read(str(path), mmap=False)
    except PlyParseError as error:
        raise TalkingAvatarError(f"{path}: not a valid PLY file ({_one_line(error)})") from error
    except (OSError, ValueError, UnicodeDecodeError) as error:
        raise TalkingAvatarError(
            f"{path}: cannot read the PLY file ({_one_line(error)})"
        ) from error
    elements = {element.name: element for element in ply.elements}
    if "vertex" not in elements:
        raise TalkingAvatarError(f"{path}: the PLY has no 'vertex' element; not a Gaussian splat")
    element = elements["vertex"]
    names = [p.name for p in element.properties]
    return element.data, names


def _rest_count(path: Path, names: list[str]) -> int:
    """How many f_rest_* properties there are, checked to be 0..M-1 with a valid M."""
    indices = sorted(int(m.group(1)) for m in map(re.compile(r"f_rest_(\d+)$").match, names) if m)
    if indices != list(range(len(indices))):
        raise TalkingAvatarError(f"{path}: the f_rest_* properties are not numbered 0..M-1")
    count = len(indices)
    coefficients = count // 3 + 1  # K = (degree + 1)^2
    degree = round(coefficients**0.5) - 1
    if count % 3 or (degree + 1) ** 2 != coefficients:
        raise TalkingAvatarError(
            f"{path}: {count} f_rest_* properties is not 3 ((degree + 1)^2 - 1) for any SH degree "
            "(expected 0, 9, 24 or 45)"
        )
    return count


def read_ply(
    path: str | os.PathLike,
    *,
    faces: torch.Tensor | None = None,
    num_faces: int | None = None,
    device: torch.device | str = "cpu",
) -> GaussianAvatar | Gaussians:
    """Read a 3DGS PLY: a `GaussianAvatar` when it has a `binding_0` column, else `Gaussians`.

    Args:
        path: the PLY file.
        faces: the head's triangles `[F, 3]`; attached to the avatar, and the binding checked
            against them.
        num_faces: the head's triangle count, to check the binding when `faces` is not given.
        device: where the tensors go.

    Returns:
        A `GaussianAvatar` with the file's local parameters exactly as stored (float32), or world
        `Gaussians` (float32; scales exp'ed, opacities sigmoid'ed, quats normalised, normals
        when the file has non-zero ones).

    Raises:
        TalkingAvatarError: one line naming the file and the problem, for a missing file, a file
            that is not a PLY or is truncated, missing or misnumbered properties, NaN or infinite
            values, or a binding that is not an index into the head's triangles.
    """
    path = Path(path)
    rows, names = _read_vertex_table(path)
    _check_properties(path, names, len(rows))
    num_rest = _rest_count(path, names)
    params = _GaussianColumns(path, rows, names, num_rest, device)
    if BINDING not in names:
        if faces is not None or num_faces is not None:
            raise TalkingAvatarError(
                f"{path}: the PLY has no {BINDING} column, so it is not an avatar bound to a head"
            )
        return params.world_gaussians()
    binding = _read_binding(path, rows[BINDING], faces, num_faces)
    local = dict(
        local_means=params.take("x", "y", "z"),
        local_quats=params.take("rot_0", "rot_1", "rot_2", "rot_3"),
        local_log_scales=params.take("scale_0", "scale_1", "scale_2"),
        opacity_logits=params.take("opacity")[:, 0],
        sh=params.sh(),
    )
    try:
        return GaussianAvatar(
            faces=None if faces is None else faces.to(device),
            binding=torch.from_numpy(binding).to(device),
            **local,
        )
    except ValueError as error:
        raise TalkingAvatarError(f"{path}: {_one_line(error)}") from error


def _check_properties(path: Path, names: list[str], n: int) -> None:
    """Refuse a vertex table without the 3DGS properties, or without rows."""
    required = _property_names(0, with_binding=False)
    missing = [name for name in required if name not in names and name not in ("nx", "ny", "nz")]
    if missing:
        raise TalkingAvatarError(
            f"{path}: missing the 3DGS properties {' '.join(missing)}; not a Gaussian splat PLY"
        )
    for dimension, prefix in ((3, "scale_"), (4, "rot_")):
        found = [name for name in names if name.startswith(prefix)]
        if len(found) != dimension:
            raise TalkingAvatarError(
                f"{path}: {len(found)} {prefix}* properties, expected {dimension} "
                "(3D Gaussians, wxyz quaternions)"
            )
    if n == 0:
        raise TalkingAvatarError(f"{path}: the PLY holds no Gaussians")


class _GaussianColumns:
    """The 3DGS properties of a vertex table as one float32 table `[N, P]`, checked finite."""

    def __init__(
        self,
        path: Path,
        rows: np.ndarray,
        names: list[str],
        num_rest: int,
        device: torch.device | str,
    ) -> None:
        wanted = [name for name in _property_names(num_rest, with_binding=False) if name in names]
        try:
            table = np.stack([np.asarray(rows[name], dtype=np.float32) for name in wanted], axis=1)
        except (TypeError, ValueError) as error:
            raise TalkingAvatarError(
                f"{path}: non-numeric Gaussian properties ({_one_line(error)})"
            ) from error
        if not np.isfinite(table).all():
            bad = [name for i, name in enumerate(wanted) if not np.isfinite(table[:, i]).all()]
            raise TalkingAvatarError(f"{path}: NaN or infinite values in {' '.join(bad)}")
        self.table, self.num_rest, self.device = table, num_rest, device
        self.column = {name: i for i, name in enumerate(wanted)}

    def take(self, *keys: str) -> torch.Tensor:
        """The named columns `[N, len(keys)]`, float32, on the device."""
        return torch.from_numpy(self.table[:, [self.column[k] for k in keys]].copy()).to(
            self.device
        )

    def sh(self) -> torch.Tensor:
        """SH coefficients `[N, K, 3]`: f_dc, then f_rest, which is channel-major in the file
        ([N, 3, K - 1] -> ours [N, K - 1, 3])."""
        n, num_rest = len(self.table), self.num_rest
        rest_names = [f"f_rest_{i}" for i in range(num_rest)]
        rest = (
            self.take(*rest_names).reshape(n, 3, num_rest // 3).transpose(1, 2)
            if num_rest
            else None
        )
        dc = self.take("f_dc_0", "f_dc_1", "f_dc_2")[:, None, :]  # [N, 1, 3]
        return dc if rest is None else torch.cat((dc, rest), dim=1)  # [N, K, 3]

    def world_gaussians(self) -> Gaussians:
        """Plain 3DGS Gaussians: scales exp'ed, opacities sigmoid'ed, quaternions normalised,
        normals when the file has non-zero ones."""
        normals = None
        if all(k in self.column for k in ("nx", "ny", "nz")):
            stored = self.take("nx", "ny", "nz")
            normals = stored if bool(stored.any()) else None
        # Normalise only quaternions that are not unit already: renormalising a unit float32
        # quaternion can change its last bit, which would break write-read-write identity.
        quats = self.take("rot_0", "rot_1", "rot_2", "rot_3")
        norms = quats.norm(dim=-1, keepdim=True)  # [N, 1]
        unit = (norms - 1).abs() <= _UNIT_QUAT_TOLERANCE
        return Gaussians(
            means=self.take("x", "y", "z"),
            quats=torch.where(unit, quats, quats / norms.clamp_min(1e-12)),
            scales=self.take("scale_0", "scale_1", "scale_2").exp(),
            opacities=torch.sigmoid(self.take("opacity")[:, 0]),
            sh=self.sh(),
            normals=normals,
        )


def _read_binding(
    path: Path, stored: np.ndarray, faces: torch.Tensor | None, num_faces: int | None
) -> np.ndarray:
    """The binding column as int64 `[N]`, checked to be whole, non-negative and in range."""
    values = np.asarray(stored, dtype=np.float64)
    if not np.isfinite(values).all() or (values != np.round(values)).any() or values.min() < 0:
        raise TalkingAvatarError(
            f"{path}: {BINDING} must hold triangle indices (whole numbers >= 0)"
        )
    binding = values.astype(np.int64)
    limit = faces.shape[0] if faces is not None else num_faces
    if limit is not None and binding.max() >= limit:
        raise TalkingAvatarError(
            f"{path}: {BINDING} refers to triangle {int(binding.max())} but the head has {limit} "
            "triangles; load the avatar with the head model it was trained on"
        )
    return binding


def read_avatar_ply(
    path: str | os.PathLike,
    *,
    faces: torch.Tensor | None = None,
    num_faces: int | None = None,
    device: torch.device | str = "cpu",
) -> GaussianAvatar:
    """`read_ply` for a file that must hold a triangle-bound avatar (a `binding_0` column)."""
    avatar = read_ply(path, faces=faces, num_faces=num_faces, device=device)
    if not isinstance(avatar, GaussianAvatar):
        raise TalkingAvatarError(
            f"{path}: the PLY has no {BINDING} column; it is a plain 3DGS splat, not an avatar "
            "bound to a head (GaussianAvatars writes that column)"
        )
    return avatar


def _latest_point_cloud(folder: Path, iteration: int | None) -> Path:
    """`<folder>/point_cloud/iteration_<N>/point_cloud.ply` for the requested or largest N."""
    if (folder / "point_cloud.ply").is_file() and iteration is None:
        return folder / "point_cloud.ply"  # pointed at an iteration folder itself
    saved = {}
    if (folder / "point_cloud").is_dir():
        for child in (folder / "point_cloud").iterdir():
            match = re.fullmatch(r"iteration_(\d+)", child.name)
            if match and (child / "point_cloud.ply").is_file():
                saved[int(match.group(1))] = child / "point_cloud.ply"
    if not saved:
        raise TalkingAvatarError(
            f"{folder}: no point_cloud/iteration_<N>/point_cloud.ply inside; point at a "
            "GaussianAvatars output folder (the training run's --model_path)"
        )
    if iteration is None:
        return saved[max(saved)]
    if iteration not in saved:
        raise TalkingAvatarError(
            f"{folder}: no iteration {iteration}; saved iterations are "
            f"{', '.join(map(str, sorted(saved)))}"
        )
    return saved[iteration]


def _read_flame_params(path: Path) -> dict[str, np.ndarray]:
    """GaussianAvatars' flame_param.npz as a dict of arrays, checked."""
    if not path.is_file():
        raise TalkingAvatarError(
            f"{path}: missing; GaussianAvatars saves it beside point_cloud.ply, and the avatar's "
            "identity (shape, static_offset) is in it"
        )
    params = read_npz(path, what="flame_param.npz", hint="re-copy GaussianAvatars' output")
    missing = [key for key in FLAME_PARAM_KEYS if key not in params]
    if missing:
        raise TalkingAvatarError(f"{path}: missing the FLAME parameters {' '.join(missing)}")
    for key, value in params.items():
        if not np.issubdtype(value.dtype, np.number) or not np.isfinite(value).all():
            raise TalkingAvatarError(f"{path}: '{key}' is not a finite numeric array")
    frames = {params[key].shape[0] if params[key].ndim == 2 else None for key in _PER_FRAME_KEYS}
    if None in frames or len(frames) != 1:
        shapes = ", ".join(f"{key} {params[key].shape}" for key in _PER_FRAME_KEYS)
        raise TalkingAvatarError(
            f"{path}: per-frame parameters must be [T, D] with one T for all; got {shapes}"
        )
    return params


def load_gaussian_avatars_dir(
    path: str | os.PathLike,
    *,
    faces: torch.Tensor | None = None,
    num_faces: int | None = None,
    iteration: int | None = None,
    device: torch.device | str = "cpu",
) -> tuple[GaussianAvatar, dict[str, np.ndarray]]:
    """Import a trained GaussianAvatars model: its Gaussians and its fitted FLAME parameters.

    GaussianAvatars (`scene/__init__.py: Scene.save`, `FlameGaussianModel.save_ply`) writes
    `<path>/point_cloud/iteration_<N>/point_cloud.ply` with `flame_param.npz` beside it. The
    latest iteration is taken unless `iteration` is given; `path` may also be an iteration
    folder (or any folder) holding `point_cloud.ply` and `flame_param.npz` directly.

    Args:
        path: the output folder.
        faces: the FLAME head's triangles `[F, 3]` (GaussianAvatars' FLAME adds teeth), attached
            to the avatar and checked against the binding.
        num_faces: the head's triangle count, to check the binding when `faces` is not given.
        iteration: which saved iteration to load (default: the largest).
        device: where the avatar's tensors go.

    Returns:
        (avatar, flame_params): the avatar's local parameters as stored, and the npz arrays by
        name (shape [S], expr [T, E], rotation, neck_pose, jaw_pose, translation [T, 3],
        eyes_pose [T, 6], and static_offset / dynamic_offset when saved), unchanged.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise TalkingAvatarError(f"{folder}: no such folder; point at a GaussianAvatars output")
    ply_path = _latest_point_cloud(folder, iteration)
    avatar = read_avatar_ply(ply_path, faces=faces, num_faces=num_faces, device=device)
    return avatar, _read_flame_params(ply_path.parent / "flame_param.npz")
