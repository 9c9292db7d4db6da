"""Retarget the shipped animator to any FLAME-topology head, without retraining.

The animator drives the head it was trained on (the bundled one) through a linear mapping from
blend weights to that head's FLAME parameters (`animator.mapping`). For another head (a user's
FLAME 2020/2023, or a GaussianAvatars head with teeth) we:

1. register the bundled head onto it (`avatar.flame.register`: landmarks, then non-rigid);
2. carry the bundled head's motion basis (each expression coefficient's vertex motion) through
   that correspondence, and fit each transferred column with the user's expression
   coefficients and jaw (least squares over the user's vertices, jaw as in `flame_jacobian`):
   a matrix R `[E_b + 3, E_u + 3]`, with the jaw carried to the jaw as it is. Every bundled
   parameter vector p becomes p R on the user's head: the animator's mapping (M R), its face
   units (blinks, ARKit) alike;
3. give the user's head the named regions the closure rule and metrics need (inner-lip
   contours, skin, ...) that its own files lack, through the same correspondence;
4. report, per blendshape, how far the user's head driven by M R lies from the bundled
   blendshape's motion carried over (`mapping_residual`, mm, at the blendshape's typical
   weight).

R depends on the two heads only, so it is cached by their sha256 (`retarget-<sha>.safetensors`
+ `.json` in `cache_folder()`), and the next run is instant for any animator trained on the
bundled head.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from animator.mapping import flame_jacobian
from avatar.atomic import atomic_path, atomic_write_text
from avatar.errors import TalkingAvatarError
from avatar.flame import FlameModel, FlameParams
from avatar.flame.register import Correspondence, register

#: Where retargets are cached unless $TALKING_AVATAR_CACHE names another folder.
CACHE_ENV = "TALKING_AVATAR_CACHE"
FORMAT = "talking-avatar-retarget"
VERSION = 1
#: Inner-lip contours are carried vertex by vertex (ordered lists), the rest as sets.
_CONTOURS = ("lip_upper_inner", "lip_lower_inner")


@dataclass
class Retarget:
    """The animator on a user's head: R and what it gives.

    Attributes:
        params: R `[E_b + 3, E_u + 3]`: bundled (expr, jaw) -> user (expr, jaw), row vectors.
        regions: named vertex sets for the user's head (only those its files lack).
        report: registration and fit figures (mm).
    """

    params: torch.Tensor
    regions: dict[str, np.ndarray]
    report: dict = field(default_factory=dict)

    def carry(self, params: FlameParams, target: FlameModel) -> FlameParams:
        """Parameters made for the source head (expression, jaw) on `target`, through R; the
        rest of `target`'s parameters neutral."""
        out = target.neutral_params(params.num_frames)
        both = torch.cat([params.expr, params.jaw_pose], dim=1) @ self.params.to(params.expr)
        out.expr, out.jaw_pose = both[:, : target.num_expr], both[:, target.num_expr :]
        return out

    def apply(self, source: FlameModel, target: FlameModel) -> None:
        """Give `target` the regions and face units (source's, through R) it lacks."""
        for name, idx in self.regions.items():
            target.regions.setdefault(name, np.asarray(idx, dtype=np.int64))
        if target.face_unit_names is None and source.face_unit_names is not None:
            units = torch.cat([source.face_unit_expr, source.face_unit_jaw], dim=1) @ self.params
            target.face_unit_names = list(source.face_unit_names)
            target.register_buffer("face_unit_expr", units[:, : target.num_expr].contiguous())
            target.register_buffer("face_unit_jaw", units[:, target.num_expr :].contiguous())


def model_digest(model: FlameModel) -> str:
    """sha256 of what a retarget depends on in a head model (geometry, bases, rig, landmarks)."""
    h = hashlib.sha256()
    for t in (
        model.v_template,
        model.faces,
        model.dirs[:, :, model.num_shape :],
        model.J_regressor,
        model.lbs_weights,
        model.lmk_face_idx,
        model.lmk_b_coords,
    ):
        h.update(np.ascontiguousarray(t.detach().cpu().numpy()).tobytes())
    return h.hexdigest()


def cache_folder() -> Path:
    base = os.environ.get(CACHE_ENV)
    if base:
        return Path(base)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "talking-avatar" / "retarget"


def _transfer_regions(source: FlameModel, target: FlameModel, corr) -> dict:
    """Source regions the target lacks: each target vertex joins its nearest source vertex's
    regions; the inner-lip contours map source point by source point to the nearest target
    vertex (keeping their order, so they stay contours)."""
    nearest = corr.nearest_source_vertex()  # [V_t]
    tgt = target.v_template.cpu().double().numpy()
    out: dict[str, np.ndarray] = {}
    for name, idx in source.regions.items():
        if name in target.regions:
            continue
        if name in _CONTOURS:
            from scipy.spatial import cKDTree

            _, hit = cKDTree(tgt).query(corr.registered[np.asarray(idx)])
            out[name] = np.asarray(list(dict.fromkeys(hit.tolist())), dtype=np.int64)
        else:
            out[name] = np.flatnonzero(np.isin(nearest, np.asarray(idx))).astype(np.int64)
    return out


@torch.no_grad()
def retarget(
    source: FlameModel, target: FlameModel, *, progress=None
) -> tuple[Retarget, Correspondence]:
    """R and the regions for driving `target` with parameters made for `source` (module doc),
    and the correspondence it came from."""
    corr, report = register(source, target, progress=progress)
    e_b, e_u = source.num_expr, target.num_expr
    jac_b = flame_jacobian(source).double().view(source.num_vertices, 3, -1)  # [V_s, 3, P_b]
    moved = corr.transfer(jac_b.permute(2, 0, 1)[:e_b])  # [E_b, V_t, 3]
    jac_u = flame_jacobian(target).double()  # [3 V_t, P_u]
    fit = torch.linalg.lstsq(jac_u, moved.reshape(e_b, -1).T).solution.T  # [E_b, P_u]
    r = torch.zeros(e_b + 3, e_u + 3, dtype=torch.float64)
    r[:e_b] = fit
    r[e_b:, e_u:] = torch.eye(3, dtype=torch.float64)
    fitted = (jac_u @ fit.T).T.reshape(e_b, -1, 3)
    report["basis_fit_mm_per_unit"] = 1000.0 * float((fitted - moved).norm(dim=-1).mean())
    return Retarget(
        params=r.float(), regions=_transfer_regions(source, target, corr), report=report
    ), corr


@torch.no_grad()
def mapping_residual(
    source: FlameModel,
    target: FlameModel,
    corr: Correspondence,
    rt: Retarget,
    mapping: torch.Tensor,
    amplitudes: torch.Tensor,
) -> torch.Tensor:
    """Per blendshape `[K]` (mm): the target driven by mapping @ R against the source driven
    by mapping, its motion carried over by `corr`, each at its typical weight (the real,
    nonlinear FLAME on both sides; mean over the target's vertices)."""
    e_b = source.num_expr
    p_b = source.neutral_params(len(mapping))
    scaled = mapping.float() * amplitudes.float()[:, None]  # [K, P_b]
    p_b.expr, p_b.jaw_pose = scaled[:, :e_b], scaled[:, e_b:]
    want = corr.transfer((source(p_b) - source.v_template).double())
    got = (target(rt.carry(p_b, target)) - target.v_template).double()
    return 1000.0 * (got - want).norm(dim=-1).mean(dim=1)


def save_retarget(path: Path, rt: Retarget, meta: dict) -> Path:
    """`path`.safetensors (R) + `path`.json (regions, report, meta), each written atomically."""
    from safetensors.torch import save_file

    with atomic_path(path.with_suffix(".safetensors"), what="retarget") as tmp:
        save_file({"params": rt.params.contiguous()}, str(tmp))
    doc = {
        "format": FORMAT,
        "version": VERSION,
        **meta,
        "regions": {k: v.tolist() for k, v in rt.regions.items()},
        "report": rt.report,
    }
    atomic_write_text(path.with_suffix(".json"), json.dumps(doc, indent=1) + "\n", what="retarget")
    return path.with_suffix(".safetensors")


def load_retarget(path: Path) -> Retarget | None:
    """A cached retarget, or None when absent, damaged or from another version."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        doc = json.loads(path.with_suffix(".json").read_text())
        tensors = load_file(str(path.with_suffix(".safetensors")))
    except (OSError, ValueError, SafetensorError):
        return None
    if "params" not in tensors:
        return None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("version") != VERSION:
        return None
    regions = {k: np.asarray(v, dtype=np.int64) for k, v in doc.get("regions", {}).items()}
    return Retarget(params=tensors["params"], regions=regions, report=doc.get("report", {}))


def cache_path(source: FlameModel | str, target: FlameModel | str) -> Path:
    """The cache file stem for a pair of heads (models, or their `model_digest`s): the sha256
    of both heads' digests."""
    digests = [m if isinstance(m, str) else model_digest(m) for m in (source, target)]
    key = hashlib.sha256(":".join(digests).encode()).hexdigest()
    return cache_folder() / f"retarget-{key}"


def cached_retarget(
    source: FlameModel, target: FlameModel, *, force: bool = False, log=print
) -> tuple[Retarget, Path]:
    """The retarget from source to target: from the cache (keyed by both heads' sha256), or
    computed and cached. Returns it and its cache file."""
    path = cache_path(source, target)
    rt = None if force else load_retarget(path)
    if rt is not None and tuple(rt.params.shape) == (source.num_expr + 3, target.num_expr + 3):
        return rt, path.with_suffix(".safetensors")
    log(
        f"retargeting the animator to {target.source} ({target.num_vertices} vertices, "
        f"{target.num_expr} expression components); once, then cached"
    )
    rt, _ = retarget(source, target, progress=lambda i, n: log(f"  registration round {i}/{n}"))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        saved = save_retarget(path, rt, {"target": target.source})
    except (OSError, TalkingAvatarError) as err:
        log(f"could not cache the retarget in {path.parent} ({err}); set ${CACHE_ENV}")
        saved = path.with_suffix(".safetensors")
    return rt, saved


def describe(rt: Retarget) -> str:
    """A few lines on a retarget for the CLI."""
    r = rt.report
    lines = [
        f"similarity scale {r.get('scale', float('nan')):.4f}; landmarks "
        f"{r.get('landmark_mm_similarity', float('nan')):.2f} mm after the similarity, "
        f"{r.get('landmark_mm', float('nan')):.2f} mm after the non-rigid fit",
        f"registered surface to the target: median {r.get('surface_mm_median', float('nan')):.3f} "
        f"mm, 95th percentile {r.get('surface_mm_p95', float('nan')):.3f} mm",
        f"expression basis carried over and refit: {r.get('basis_fit_mm_per_unit', float('nan')):.4f} "
        "mm per unit coefficient (mean over the target's vertices)",
        "regions carried over: " + (", ".join(sorted(rt.regions)) or "none"),
    ]
    for kind in ("speech", "expression"):
        if f"residual_mm_{kind}" in r:
            mean, worst = r[f"residual_mm_{kind}"]
            lines.append(
                f"{kind} blendshapes on the target, against their motion carried over: mean "
                f"{mean:.3f} mm, worst {worst:.3f} mm (at their typical weight)"
            )
    return "\n".join(lines)


def retarget_animator(
    target: FlameModel, checkpoint: str | Path | None = None, *, log=print
) -> tuple[Retarget, Path]:
    """`talking-avatar retarget`: retarget (again, replacing the cache) the animator at
    `checkpoint` (default: bundled) to `target`, with the per-blendshape residual in the report
    (speech blendshapes at the 95th percentile of their weights on the bundled sample speech,
    expression ones at their largest weight in an emotion). Returns it and its cache file."""
    from animator.animator import Animator
    from avatar.flame import load_flame
    from avatar.flame.model import BUNDLED_HEAD
    from avatar.paths import asset_path

    source = load_flame(BUNDLED_HEAD)
    digests = model_digest(source), model_digest(target)
    if digests[0] == digests[1]:
        raise TalkingAvatarError(
            f"{target.source} is the bundled head the animator was trained on: nothing to "
            "retarget; pass your own model with --flame PATH"
        )
    anim = Animator.load(checkpoint, head=source)
    rt, corr = retarget(source, target, progress=lambda i, n: log(f"registration round {i}/{n}"))
    speech = anim.speech_weights(asset_path("speech", "sample.wav"))  # [T, K_A]
    amplitudes = torch.cat(
        [speech.abs().quantile(0.95, dim=0), anim.emotion_codes.abs().max(dim=0).values]
    )
    residual = mapping_residual(source, target, corr, rt, anim.mapping, amplitudes)
    k_a = anim.num_speech
    rt.report["residual_mm"] = [round(float(r), 4) for r in residual]
    rt.report["residual_mm_speech"] = [float(residual[:k_a].mean()), float(residual[:k_a].max())]
    rt.report["residual_mm_expression"] = [
        float(residual[k_a:].mean()),
        float(residual[k_a:].max()),
    ]
    path = cache_path(*digests)
    path.parent.mkdir(parents=True, exist_ok=True)
    return rt, save_retarget(path, rt, {"target": target.source})
