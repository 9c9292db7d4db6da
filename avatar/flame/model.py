"""FlameModel: a FLAME-format head (official FLAME 2020/2023 or the bundled one) and its forward pass.

Skinning uses smplx's `lbs` functions; this module only loads files, holds the buffers and
checks inputs. Vertices are in metres, FLAME axes (+y up, +z towards the viewer).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from smplx.lbs import lbs, vertices2landmarks

from avatar.errors import TalkingAvatarError
from avatar.flame.params import FlameParams
from avatar.flame.pickle_io import load_model_pickle
from avatar.paths import ASSETS_DIR

#: Environment variable naming a FLAME model to use everywhere instead of the bundled head.
FLAME_ENV = "TALKING_AVATAR_FLAME"
BUNDLED_HEAD = ASSETS_DIR / "head" / "head.npz"
NUM_POSE_BASIS = 36  # 4 non-root joints x 9


class FlameModel(torch.nn.Module):
    """A FLAME-format head model: template, shape/expression bases, 5 joints, skinning.

    Call it with `FlameParams` for T frames to get vertices `[T, V, 3]`. Load with `load_flame`.

    Attributes:
        v_template: `[V, 3]` rest vertices. faces: `[F, 3]` int64 triangles.
        num_shape, num_expr: sizes of the identity and expression bases.
        regions: named vertex index sets (`lips`, `lip_upper_inner`, `lip_lower_inner`,
            `upper_face`, `eyes`, `teeth`, ... where the model provides them).
        face_unit_names: the face-unit names when the model has them (the bundled head: the 52
            ARKit units and its FACS action units), else None; `face_units_to_params` maps
            face-unit weights to (expr, jaw_pose).
    """

    def __init__(self, arrays: dict[str, Any], *, source: str) -> None:
        super().__init__()
        self.source = source
        f32 = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float32))  # noqa: E731
        v_template = f32(arrays["v_template"])  # [V, 3]
        num_v = v_template.shape[0]
        shapedirs = f32(arrays["shapedirs"])  # [V, 3, S]
        exprdirs = f32(arrays["exprdirs"])  # [V, 3, E]
        self.num_shape = shapedirs.shape[2]
        self.num_expr = exprdirs.shape[2]
        self.register_buffer("v_template", v_template)
        self.register_buffer("faces", torch.as_tensor(np.asarray(arrays["faces"], dtype=np.int64)))
        self.register_buffer("dirs", torch.cat([shapedirs, exprdirs], dim=2))  # [V, 3, S + E]
        posedirs = f32(arrays["posedirs"]).reshape(num_v * 3, NUM_POSE_BASIS).T  # [36, 3V]
        self.register_buffer("posedirs", posedirs.contiguous())
        self.register_buffer("J_regressor", f32(arrays["J_regressor"]))  # [J, V]
        self.register_buffer("lbs_weights", f32(arrays["weights"]))  # [V, J]
        self.register_buffer(
            "parents", torch.as_tensor(np.asarray(arrays["parents"], dtype=np.int64))
        )
        self.register_buffer(
            "lmk_face_idx", torch.as_tensor(np.asarray(arrays["lmk_face_idx"], dtype=np.int64))
        )
        self.register_buffer("lmk_b_coords", f32(arrays["lmk_b_coords"]))
        self.regions: dict[str, np.ndarray] = {
            k: np.asarray(v, dtype=np.int64) for k, v in arrays.get("regions", {}).items()
        }
        names = arrays.get("face_unit_names")
        self.face_unit_names: list[str] | None = None if names is None else [str(n) for n in names]
        if self.face_unit_names is not None:
            self.register_buffer("face_unit_expr", f32(arrays["face_unit_expr"]))  # [U, E]
            self.register_buffer("face_unit_jaw", f32(arrays["face_unit_jaw"]))  # [U, 3]
        self.meta: dict[str, Any] = arrays.get("meta", {})

    # ------------------------------------------------------------------ sizes
    @property
    def num_vertices(self) -> int:
        return self.v_template.shape[0]

    # ------------------------------------------------------------------ forward
    def forward(self, params: FlameParams, *, chunk: int = 256) -> torch.Tensor:
        """Vertices `[T, V, 3]` (metres) for T frames of parameters.

        Frames are skinned `chunk` at a time so memory stays bounded for long clips. Shape and
        expression vectors longer than the model's bases must be zero beyond them (a FLAME 2023
        flame_param.npz on a head with fewer components); shorter ones are zero-padded.
        """
        params.validate()
        t = params.num_frames
        out = []
        for start in range(0, max(t, 1), chunk):
            out.append(self._forward_chunk(params.slice(start, min(t, start + chunk))))
        return torch.cat(out) if out else self.v_template.new_zeros(0, self.num_vertices, 3)

    def _forward_chunk(self, p: FlameParams) -> torch.Tensor:
        t = p.num_frames
        dtype, device = self.v_template.dtype, self.v_template.device
        shape = self._fit_width(p.shape.to(device, dtype), self.num_shape, "shape")
        shape = shape.expand(t, -1) if shape.dim() == 1 else shape  # [T, S]
        expr = self._fit_width(p.expr.to(device, dtype), self.num_expr, "expr")  # [T, E]
        betas = torch.cat([shape, expr], dim=1)  # [T, S + E]
        pose = torch.cat([p.rotation, p.neck_pose, p.jaw_pose, p.eyes_pose], dim=1).to(
            device, dtype
        )  # [T, 15]
        template = self.v_template
        if p.static_offset is not None:
            template = template + p.static_offset.to(device, dtype)
        verts, _ = lbs(
            betas,
            pose,
            template,
            self.dirs,
            self.posedirs,
            self.J_regressor,
            self.parents,
            self.lbs_weights,
        )  # [T, V, 3]
        return verts + p.translation.to(device, dtype)[:, None, :]

    @staticmethod
    def _fit_width(x: torch.Tensor, width: int, name: str) -> torch.Tensor:
        have = x.shape[-1]
        if have == width:
            return x
        if have < width:
            return torch.nn.functional.pad(x, (0, width - have))
        if x[..., width:].abs().max() > 0:
            raise TalkingAvatarError(
                f"FLAME {name} has {have} coefficients but this head model has {width}; "
                f"use the FLAME model the parameters were made for (--flame PATH)"
            )
        return x[..., :width]

    def landmarks(self, vertices: torch.Tensor) -> torch.Tensor:
        """The 51 static landmarks `[T, 51, 3]` of vertices `[T, V, 3]` (iBUG points 17-67)."""
        t = vertices.shape[0]
        return vertices2landmarks(
            vertices,
            self.faces,
            self.lmk_face_idx.expand(t, -1).contiguous(),
            self.lmk_b_coords.expand(t, -1, -1).contiguous(),
        )

    def neutral_params(self, num_frames: int = 1) -> FlameParams:
        """Zero parameters sized for this model."""
        return FlameParams.zeros(
            num_frames, self.num_shape, self.num_expr, device=self.v_template.device
        )

    def face_units_to_params(self, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Face-unit weights `[T, U]` (face_unit_names order, 0..1) -> (expr `[T, E]`, jaw `[T, 3]`).

        Exact: the expression basis spans every unit but jawOpen, which is a jaw rotation.
        """
        if self.face_unit_names is None:
            raise TalkingAvatarError(
                f"the head model {self.source} has no face units (ARKit blend shapes); "
                "use the bundled head for this"
            )
        w = weights.to(self.face_unit_expr)
        return w @ self.face_unit_expr, w @ self.face_unit_jaw

    def region(self, name: str) -> np.ndarray:
        """Vertex indices of a named region, with a clear error when this model lacks it."""
        if name not in self.regions:
            have = ", ".join(sorted(self.regions)) or "none"
            raise TalkingAvatarError(
                f"the head model {self.source} has no '{name}' region (it has: {have}); "
                "put FLAME_masks.pkl beside a FLAME model to get the regions"
            )
        return self.regions[name]

    def describe(self) -> str:
        """A few lines for `talking-avatar avatar info`."""
        lines = [
            f"model: {self.source}",
            f"vertices: {self.num_vertices}  triangles: {self.faces.shape[0]}",
            f"shape components: {self.num_shape}  expression components: {self.num_expr}",
            f"joints: {self.J_regressor.shape[0]}  landmarks: {self.lmk_face_idx.shape[0]}",
            "regions: "
            + (", ".join(f"{k} ({len(v)})" for k, v in sorted(self.regions.items())) or "none"),
            f"face units: {len(self.face_unit_names) if self.face_unit_names else 'none'}",
        ]
        return "\n".join(lines)


# ---------------------------------------------------------------------- loading
def load_flame(path: str | Path | None = None, *, device: torch.device | str = "cpu") -> FlameModel:
    """Load a FLAME-format head model.

    Args:
        path: a FLAME `.pkl` (official FLAME 2020/2023, chumpy inside is fine, chumpy need not be
            installed; or one written by `talking-avatar avatar export-flame`), or the bundled
            head's `.npz`. None: `$TALKING_AVATAR_FLAME` if set, else the bundled head.
        device: where the buffers live.
    """
    if path is None:
        path = os.environ.get(FLAME_ENV) or BUNDLED_HEAD
    path = Path(path)
    if path.is_dir():
        candidates = [path / n for n in ("FLAME_NEUTRAL.pkl", "flame2023.pkl", "generic_model.pkl")]
        found = [c for c in candidates if c.exists()]
        if not found:
            raise TalkingAvatarError(
                f"{path} is a folder without FLAME_NEUTRAL.pkl, flame2023.pkl or generic_model.pkl; "
                "point --flame at the model file itself"
            )
        path = found[0]
    if not path.exists():
        hint = "run `make assets` to rebuild it" if path == BUNDLED_HEAD else "check the path"
        raise TalkingAvatarError(f"FLAME model {path} does not exist; {hint}")
    if path.suffix == ".npz":
        arrays = _read_bundled(path)
    else:
        arrays = _read_flame_pickle(path)
    return FlameModel(arrays, source=str(path)).to(device)


def _read_bundled(path: Path) -> dict[str, Any]:
    try:
        with np.load(path, allow_pickle=False) as data:
            raw = {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError) as err:
        raise TalkingAvatarError(
            f"{path} is not a readable head model ({err}); rebuild it with `make assets`"
        ) from None
    required = ("v_template", "faces", "shapedirs", "exprdirs", "J_regressor", "weights", "parents")
    missing = [k for k in required if k not in raw]
    if missing:
        raise TalkingAvatarError(
            f"{path} lacks {', '.join(missing)}: not a talking-avatar head model; rebuild with `make assets`"
        )
    num_v = raw["v_template"].shape[0]
    posedirs = np.zeros((num_v, 3, NUM_POSE_BASIS), dtype=np.float32)
    posedirs[:, :, raw["posedir_columns"]] = raw["posedir_values"]
    arrays: dict[str, Any] = {k: v for k, v in raw.items() if not k.startswith("region_")}
    arrays["posedirs"] = posedirs
    arrays["regions"] = {k[len("region_") :]: v for k, v in raw.items() if k.startswith("region_")}
    arrays["meta"] = json.loads(str(raw["meta"])) if "meta" in raw else {}
    _check_layout(arrays, path)
    return arrays


def _read_flame_pickle(path: Path) -> dict[str, Any]:
    data = load_model_pickle(path)
    required = (
        "v_template",
        "f",
        "shapedirs",
        "posedirs",
        "J_regressor",
        "weights",
        "kintree_table",
    )
    missing = [k for k in required if k not in data]
    if missing:
        raise TalkingAvatarError(
            f"{path} lacks {', '.join(missing)}: not a FLAME model file (expected FLAME 2020/2023 "
            "generic_model.pkl / flame2023.pkl layout)"
        )
    extra = data.get("talking_avatar", {})
    num_shape = int(extra.get("num_shape", 300))
    num_expr = int(extra.get("num_expr", 100))
    shapedirs = np.asarray(data["shapedirs"])
    if shapedirs.ndim != 3 or shapedirs.shape[2] < 300 + num_expr:
        raise TalkingAvatarError(
            f"{path}: shapedirs has shape {shapedirs.shape}, expected [V, 3, 400] "
            "(300 shape + 100 expression components, as FLAME 2020/2023)"
        )
    parents = np.asarray(data["kintree_table"])[0].astype(np.int64)
    parents[0] = -1
    arrays: dict[str, Any] = {
        "v_template": data["v_template"],
        "faces": data["f"],
        "shapedirs": shapedirs[:, :, :num_shape],
        "exprdirs": shapedirs[:, :, 300 : 300 + num_expr],
        "posedirs": data["posedirs"],
        "J_regressor": data["J_regressor"],
        "weights": data["weights"],
        "parents": parents,
        "regions": dict(extra.get("regions", {})),
        "meta": extra.get("meta", {}),
    }
    for key in ("face_unit_names", "face_unit_expr", "face_unit_jaw"):
        if key in extra:
            arrays[key] = extra[key]
    lmk = _read_landmark_embedding(path.parent / "flame_static_embedding.pkl")
    arrays["lmk_face_idx"], arrays["lmk_b_coords"] = lmk
    if not arrays["regions"]:
        arrays["regions"] = _read_flame_masks(path.parent / "FLAME_masks.pkl")
    _check_layout(arrays, path)
    return arrays


def _read_landmark_embedding(path: Path) -> tuple[np.ndarray, np.ndarray]:
    if not path.exists():
        return np.zeros(0, dtype=np.int64), np.zeros((0, 3), dtype=np.float32)
    emb = load_model_pickle(path)
    try:
        return np.asarray(emb["lmk_face_idx"], dtype=np.int64), np.asarray(emb["lmk_b_coords"])
    except KeyError:
        raise TalkingAvatarError(
            f"{path} lacks lmk_face_idx / lmk_b_coords: not a FLAME static landmark embedding"
        ) from None


def _read_flame_masks(path: Path) -> dict[str, np.ndarray]:
    """FLAME_masks.pkl (FLAME's vertex masks), renamed to this project's region names."""
    if not path.exists():
        return {}
    masks = load_model_pickle(path)
    rename = {"lips": "lips", "forehead": "forehead", "eye_region": "eye_region"}
    regions = {
        ours: np.asarray(masks[theirs]) for theirs, ours in rename.items() if theirs in masks
    }
    if "left_eyeball" in masks and "right_eyeball" in masks:
        regions["eyes"] = np.concatenate([masks["left_eyeball"], masks["right_eyeball"]])
    if "forehead" in masks and "eye_region" in masks:
        regions["upper_face"] = np.union1d(masks["forehead"], masks["eye_region"])
    return regions


def _check_layout(arrays: dict[str, Any], path: Path) -> None:
    v = np.asarray(arrays["v_template"])
    if v.ndim != 2 or v.shape[1] != 3:
        raise TalkingAvatarError(f"{path}: v_template must be [V, 3], got {v.shape}")
    num_v = v.shape[0]
    checks = {
        "shapedirs": (np.asarray(arrays["shapedirs"]).shape[:2], (num_v, 3)),
        "exprdirs": (np.asarray(arrays["exprdirs"]).shape[:2], (num_v, 3)),
        "posedirs": (np.asarray(arrays["posedirs"]).shape, (num_v, 3, NUM_POSE_BASIS)),
        "weights": (np.asarray(arrays["weights"]).shape, (num_v, 5)),
        "J_regressor": (np.asarray(arrays["J_regressor"]).shape, (5, num_v)),
    }
    for name, (got, want) in checks.items():
        if tuple(got) != want:
            raise TalkingAvatarError(
                f"{path}: {name} has shape {tuple(got)}, expected {want} for a 5-joint FLAME "
                f"model with {num_v} vertices"
            )
    faces = np.asarray(arrays["faces"])
    if faces.ndim != 2 or faces.shape[1] != 3 or faces.min() < 0 or faces.max() >= num_v:
        raise TalkingAvatarError(f"{path}: faces must be [F, 3] indices below {num_v}")
