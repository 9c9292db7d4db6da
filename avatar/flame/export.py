"""Write a head model as an smplx-loadable FLAME folder (FLAME_NEUTRAL.pkl + landmark embedding).

smplx reads the shape block from shapedirs columns 0..299 and the expression block from 300..399,
so both are zero-padded to FLAME's widths (with fewer columns smplx silently reads expressions
from the shape slots). Our own keys ride along under `talking_avatar`; smplx ignores them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from avatar.errors import TalkingAvatarError
from avatar.flame.model import FlameModel
from avatar.flame.pickle_io import write_pickle
from avatar.paths import ensure_folder

FLAME_SHAPE_SLOTS = 300
FLAME_EXPR_SLOTS = 100


def flame_pickle_dict(model: FlameModel) -> dict:
    """The model in FLAME's pickle layout (plain numpy, float32)."""
    if model.num_shape > FLAME_SHAPE_SLOTS or model.num_expr > FLAME_EXPR_SLOTS:
        raise TalkingAvatarError(
            "a FLAME pickle holds at most 300 shape and 100 expression components"
        )
    num_v = model.num_vertices
    np32 = lambda t: t.detach().cpu().numpy().astype(np.float32)  # noqa: E731
    dirs = np32(model.dirs)  # [V, 3, S + E]
    shapedirs = np.zeros((num_v, 3, FLAME_SHAPE_SLOTS + FLAME_EXPR_SLOTS), dtype=np.float32)
    shapedirs[:, :, : model.num_shape] = dirs[:, :, : model.num_shape]
    shapedirs[:, :, FLAME_SHAPE_SLOTS : FLAME_SHAPE_SLOTS + model.num_expr] = dirs[
        :, :, model.num_shape :
    ]
    posedirs = np32(model.posedirs).T.reshape(num_v, 3, -1)  # [V, 3, 36]
    parents = model.parents.cpu().numpy().astype(np.int64)
    kintree = np.stack([np.where(parents < 0, 2**32 - 1, parents), np.arange(len(parents))])
    extra = {
        "num_shape": model.num_shape,
        "num_expr": model.num_expr,
        "regions": {k: v.astype(np.int64) for k, v in model.regions.items()},
        "meta": model.meta,
    }
    if model.face_unit_names is not None:
        extra["face_unit_names"] = list(model.face_unit_names)
        extra["face_unit_expr"] = np32(model.face_unit_expr)
        extra["face_unit_jaw"] = np32(model.face_unit_jaw)
    return {
        "v_template": np32(model.v_template),
        "f": model.faces.cpu().numpy().astype(np.uint32),
        "shapedirs": shapedirs,
        "posedirs": posedirs,
        "J_regressor": np32(model.J_regressor),  # dense: no scipy needed to read it
        "weights": np32(model.lbs_weights),
        "kintree_table": kintree.astype(np.int64),
        "talking_avatar": extra,
    }


def export_smplx_folder(model: FlameModel, out_dir: str | Path) -> list[Path]:
    """Write FLAME_NEUTRAL.pkl and flame_static_embedding.pkl into out_dir; returns the paths.

    Load the result with `smplx.FLAME(out_dir, num_betas=..., num_expression_coeffs=...)` or
    `smplx.create(out_dir_parent, model_type="flame")` when out_dir is named `flame`.
    """
    out = ensure_folder(out_dir)
    model_path = out / "FLAME_NEUTRAL.pkl"
    lmk_path = out / "flame_static_embedding.pkl"
    write_pickle(model_path, flame_pickle_dict(model))
    write_pickle(
        lmk_path,
        {
            "lmk_face_idx": model.lmk_face_idx.cpu().numpy().astype(np.int64),
            "lmk_b_coords": model.lmk_b_coords.cpu().numpy().astype(np.float64),
        },
    )
    return [model_path, lmk_path]
