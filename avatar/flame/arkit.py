"""ARKit-52 curves of a performance: per frame, the 52 blend-shape weights in [0, 1] that best
reproduce the face, and the head's and eyes' angles in Live Link Face's convention.

Only a head with face units can be fitted (the bundled one, a FLAME pickle written from it by
`talking-avatar avatar export-flame`, or a user's FLAME model once the animator is retargeted to
it, `animator.retarget`, which carries the units over): its `face_unit_expr` / `face_unit_jaw` express each ARKit
blend shape in the head's own FLAME bases, so "the face at weights w" is the head itself driven by
`face_units_to_params(w)`.

The fit, per frame. jawOpen is the one unit that rotates the jaw, so its weight is read off the
jaw's pitch (the jaw pose projected on jawOpen's rotation, clipped to [0, 1]); the jaw then sits
exactly where the performance put it. The other 51 weights solve a bounded least squares in
vertex space over the face:

    min over w in [0, 1]^51 of  sum over face vertices of |M (P^T w - x_t)|^2

where x_t is what is left of the frame's parameters (expression coefficients, the jaw rotation
jawOpen did not take, the eyes' rotations), P holds the 51 units as such parameters and M maps
parameters to rest-pose vertex motion (the expression basis; the jaw's and eyes' rotations
linearised at rest). The distance is taken before skinning: the jaw turns the lower face by a
blend of rotations, which keeps distances within 2 % up to a fully open jaw. So the Gram
matrix G = P M^T M P^T (51 x 51) is built once, each frame costs one small right-hand side, and
a batched projected-Newton solver finds every frame's exact box-constrained minimum together
(`_box_least_squares`). The error reported is measured on the real, nonlinear FLAME forward pass.

The face: every vertex some ARKit unit moves by 0.1 mm or more at weight 1 (3598 of the bundled
head's 4784: the skin of the face and jaw, the eyeballs, the lower teeth, the tongue; not the
scalp, the back of the head or the neck). The eyeballs, teeth and tongue (`head.regions` "eyes",
"teeth", "tongue") stay in on purpose: the eyeLook* units turn the eyeballs, jawLeft/Right/Forward
move the lower teeth most, and tongueOut moves nothing else. With the eyeballs in and the
performance's eye rotations in x_t, the gaze lands in eyeLook* as an iPhone capture records it,
besides the exact eye angles.

Angles are radians, as Live Link Face records them. With R = R_y(a) R_x(b) R_z(c) in FLAME's frame
(+x the subject's left, +y up, +z towards the viewer), (yaw, pitch, roll) = (-a, b, -c): pitch
is positive looking down, yaw positive turning to the subject's right, roll positive tilting the
top of the head to the subject's left. These are FLAME's angles seen in a mirror, as Unreal's
ARKit face support reports them (it negates yaw and roll unless mirrored); in six recorded Live
Link Face takes, LeftEyeYaw follows -(EyeLookOutLeft - EyeLookInLeft) (r <= -0.999) and
LeftEyePitch follows EyeLookDownLeft - EyeLookUpLeft (r >= 0.995), which fixes the yaw's and
pitch's signs (docs/arkit.md); roll takes the same mirror, unconfirmed by the recordings.
The head's angles are those of rotation then neck_pose (the head's orientation in the world);
each eye's are relative to the head.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch
from smplx.lbs import batch_rodrigues

from avatar.errors import TalkingAvatarError
from avatar.flame.model import FlameModel
from avatar.flame.params import FlameParams

__all__ = ["ARKIT_UNIT_NAMES", "ArkitCurves", "arkit_columns", "fit_arkit", "llf_angles"]

#: ARKit's blend-shape names, in Apple's documented grouping (eyes, jaw, mouth, brows, cheeks,
#: nose, tongue). Heads may order their units differently; always map by name.
ARKIT_UNIT_NAMES: tuple[str, ...] = (
    "eyeBlinkLeft",
    "eyeLookDownLeft",
    "eyeLookInLeft",
    "eyeLookOutLeft",
    "eyeLookUpLeft",
    "eyeSquintLeft",
    "eyeWideLeft",
    "eyeBlinkRight",
    "eyeLookDownRight",
    "eyeLookInRight",
    "eyeLookOutRight",
    "eyeLookUpRight",
    "eyeSquintRight",
    "eyeWideRight",
    "jawForward",
    "jawLeft",
    "jawRight",
    "jawOpen",
    "mouthClose",
    "mouthFunnel",
    "mouthPucker",
    "mouthLeft",
    "mouthRight",
    "mouthSmileLeft",
    "mouthSmileRight",
    "mouthFrownLeft",
    "mouthFrownRight",
    "mouthDimpleLeft",
    "mouthDimpleRight",
    "mouthStretchLeft",
    "mouthStretchRight",
    "mouthRollLower",
    "mouthRollUpper",
    "mouthShrugLower",
    "mouthShrugUpper",
    "mouthPressLeft",
    "mouthPressRight",
    "mouthLowerDownLeft",
    "mouthLowerDownRight",
    "mouthUpperUpLeft",
    "mouthUpperUpRight",
    "browDownLeft",
    "browDownRight",
    "browInnerUp",
    "browOuterUpLeft",
    "browOuterUpRight",
    "cheekPuff",
    "cheekSquintLeft",
    "cheekSquintRight",
    "noseSneerLeft",
    "noseSneerRight",
    "tongueOut",
)

JAW_OPEN = ARKIT_UNIT_NAMES.index("jawOpen")
FACE_MOTION_M = 1e-4  # a vertex belongs to the face when some unit moves it this far (0.1 mm)
JACOBIAN_STEP = 1e-3  # rad, central differences of the jaw's and eyes' rotations at rest
SOLVER_BLOCK = 512  # frames solved together ([512, 51, 51] systems stay in cache: fastest measured)


@dataclass
class ArkitCurves:
    """The ARKit-52 curves of T frames, with head and eye angles and the fit's error.

    Attributes:
        fps: frames per second; frame i is at time i / fps.
        weights: `[T, 52]` in [0, 1], columns in `ARKIT_UNIT_NAMES` order.
        head: `[T, 3]` the head's (yaw, pitch, roll), radians, Live Link Face's convention
            (module docstring). left_eye, right_eye: `[T, 3]` each eye's, relative to the head.
        error_mm: `[T]` per frame, the mean distance in millimetres over the face between the
            head driven by `weights` (eyes at rest) and the performance (head pose removed).
    """

    fps: float
    weights: np.ndarray
    head: np.ndarray
    left_eye: np.ndarray
    right_eye: np.ndarray
    error_mm: np.ndarray

    @property
    def num_frames(self) -> int:
        return self.weights.shape[0]

    @property
    def times(self) -> np.ndarray:
        """`[T]` seconds: frame i at i / fps."""
        return np.arange(self.num_frames, dtype=np.float64) / self.fps

    def describe_error(self) -> str:
        """One line: the fit error's mean and max over frames."""
        if self.num_frames == 0:
            return "ARKit fit error: no frames"
        return (
            f"ARKit fit error {self.error_mm.mean():.2f} mm mean, {self.error_mm.max():.2f} mm "
            "max over frames (mean vertex distance over the face)"
        )


def arkit_columns(head: FlameModel) -> list[int]:
    """Indices into `head.face_unit_names` of the 52 ARKit units, in `ARKIT_UNIT_NAMES` order.

    Raises:
        TalkingAvatarError: the head has no face units, or not all 52.
    """
    names = head.face_unit_names
    if names is None:
        raise TalkingAvatarError(
            f"ARKit export needs face units, and the head model {head.source} has none; use the "
            "bundled head, or a FLAME model of your own through the animator (its retarget "
            "carries the face units over)"
        )
    missing = [n for n in ARKIT_UNIT_NAMES if n not in names]
    if missing:
        raise TalkingAvatarError(
            f"the head model {head.source} lacks ARKit units {', '.join(missing[:3])}; "
            "ARKit export needs face units (the bundled head's, or a retarget's)"
        )
    return [names.index(n) for n in ARKIT_UNIT_NAMES]


@dataclass
class _Rig:
    """The fit's fixed parts for one head (float64, millimetres).

    units: `[52, E + 9]` each ARKit unit as (expression, jaw pose, eyes pose) parameters.
    gram: `[E + 9, E + 9]` M^T M over the face, M `[3F, E + 9]` the rest-pose vertex motion per
    parameter (mm). face: `[F]` vertex indices.
    """

    units: torch.Tensor
    gram: torch.Tensor
    face: torch.Tensor


def _rest_jacobian(head: FlameModel, field: str, width: int) -> torch.Tensor:
    """`[V, 3, width]` vertex motion (m/rad) per component of a rotation at the rest pose."""
    p = head.neutral_params(2 * width)
    rows = torch.arange(width)
    getattr(p, field)[2 * rows, rows] = JACOBIAN_STEP
    getattr(p, field)[2 * rows + 1, rows] = -JACOBIAN_STEP
    v = head(p).double()  # [2W, V, 3]
    return ((v[0::2] - v[1::2]) / (2 * JACOBIAN_STEP)).permute(1, 2, 0)


def _rig(head: FlameModel) -> _Rig:
    columns = arkit_columns(head)
    e = head.num_expr
    unit_expr = head.face_unit_expr[columns].double()  # [52, E]
    unit_jaw = head.face_unit_jaw[columns].double()  # [52, 3]
    units = torch.cat([unit_expr, unit_jaw, unit_jaw.new_zeros(52, 6)], dim=1)  # [52, E + 9]
    motion = torch.cat(
        [
            head.dirs[:, :, head.num_shape :].double(),
            _rest_jacobian(head, "jaw_pose", 3),
            _rest_jacobian(head, "eyes_pose", 6),
        ],
        dim=2,
    )  # [V, 3, E + 9]
    reach = torch.einsum("vcp,up->uvc", motion, units).norm(dim=-1).amax(0)  # [V]
    face = torch.nonzero(reach >= FACE_MOTION_M).squeeze(1)  # [F]
    m = motion[face].reshape(-1, e + 9) * 1000.0  # [3F, E + 9], mm
    return _Rig(units=units, gram=m.T @ m, face=face)


@torch.no_grad()
def fit_arkit(head: FlameModel, params: FlameParams, fps: float) -> ArkitCurves:
    """The ARKit-52 curves that best reproduce T frames of FLAME parameters (module docstring).

    Args:
        head: the head the parameters drive; it must have face units (the bundled head).
        params: T frames (the performance's `params`).
        fps: the performance's frame rate.

    Returns:
        weights `[T, 52]` in [0, 1], head and eye angles, and the per-frame error in mm.

    Raises:
        TalkingAvatarError: the head has no face units (the bundled head and retargets have them),
            or fps is not positive.
    """
    if not math.isfinite(fps) or fps <= 0:
        raise TalkingAvatarError(f"fps {fps} is out of range; give a positive frame rate")
    rig = _rig(head)
    params = params.validate()
    expr = head._fit_width(params.expr.double(), head.num_expr, "expr")  # [T, E]
    x = torch.cat([expr, params.jaw_pose.double(), params.eyes_pose.double()], dim=1)  # [T, P]
    jaw_axis = rig.units[JAW_OPEN, head.num_expr : head.num_expr + 3]  # [3]
    jaw_open = (params.jaw_pose.double() @ jaw_axis / jaw_axis.dot(jaw_axis)).clamp(0, 1)  # [T]
    rest = x - jaw_open[:, None] * rig.units[JAW_OPEN]  # [T, P]
    others = [i for i in range(len(ARKIT_UNIT_NAMES)) if i != JAW_OPEN]
    p = rig.units[others]  # [51, P]
    weights = torch.zeros(x.shape[0], len(ARKIT_UNIT_NAMES), dtype=torch.float64)  # [T, 52]
    weights[:, others] = _box_least_squares(p @ rig.gram @ p.T, rest @ rig.gram @ p.T)
    weights[:, JAW_OPEN] = jaw_open
    eyes = params.eyes_pose
    return ArkitCurves(
        fps=float(fps),
        weights=weights.float().numpy(),
        head=llf_angles(_matrices(params.rotation) @ _matrices(params.neck_pose)).numpy(),
        left_eye=llf_angles(_matrices(eyes[:, :3])).numpy(),
        right_eye=llf_angles(_matrices(eyes[:, 3:])).numpy(),
        error_mm=_error_mm(head, params, weights, rig.face).numpy(),
    )


def llf_angles(rotations: torch.Tensor) -> torch.Tensor:
    """(yaw, pitch, roll) `[..., 3]` radians, Live Link Face's convention, of rotation matrices
    `[..., 3, 3]` in FLAME's frame: R = R_y(a) R_x(b) R_z(c) -> (-a, b, -c)."""
    r = rotations
    a = torch.atan2(r[..., 0, 2], r[..., 2, 2])
    b = torch.asin((-r[..., 1, 2]).clamp(-1, 1))
    c = torch.atan2(r[..., 1, 0], r[..., 1, 1])
    return torch.stack([-a, b, -c], dim=-1)


def _matrices(axis_angle: torch.Tensor) -> torch.Tensor:
    """Rotation matrices `[T, 3, 3]` (float64) of axis-angle vectors `[T, 3]`."""
    return batch_rodrigues(axis_angle.double())


def _box_least_squares(
    gram: torch.Tensor, rhs: torch.Tensor, *, tol: float = 1e-9, max_iter: int = 100
) -> torch.Tensor:
    """argmin over w in [0, 1]^K of 1/2 w^T G w - b^T w, for every row b of `rhs` `[T, K]`.

    Projected Newton (Bertsekas, 1982), batched over frames: each iteration fixes the weights
    at a bound whose gradient pushes outward, takes the Newton step on the others, and keeps
    the best of a few step lengths projected on the box, so the objective never rises. Frames
    stop once the projected step `w - clip(w - g / diag(G))` is below `tol` everywhere. They go
    through in blocks of `SOLVER_BLOCK`, so memory stays bounded for any length. `gram` `[K, K]`
    must be positive definite (the units move the face independently).
    """
    blocks = [
        _box_block(gram, rhs[i : i + SOLVER_BLOCK], tol, max_iter)
        for i in range(0, len(rhs), SOLVER_BLOCK)
    ]
    return torch.cat(blocks) if blocks else rhs.clone()


def _box_block(gram: torch.Tensor, rhs: torch.Tensor, tol: float, max_iter: int) -> torch.Tensor:
    diag = gram.diagonal()  # [K]
    eye = torch.eye(len(diag), dtype=gram.dtype)
    w = torch.linalg.solve(gram, rhs.T).T.clamp(0, 1)  # [T, K]
    todo = torch.arange(w.shape[0])
    for _ in range(max_iter):
        wt, bt = w[todo], rhs[todo]
        grad = wt @ gram - bt  # [n, K]
        done = ((wt - (wt - grad / diag).clamp(0, 1)).abs() < tol).all(dim=1)
        todo, wt, bt, grad = todo[~done], wt[~done], bt[~done], grad[~done]
        if len(todo) == 0:
            break
        free = ~(((wt <= 0) & (grad > 0)) | ((wt >= 1) & (grad < 0)))  # [n, K]
        system = torch.where(free[:, :, None] & free[:, None, :], gram, eye)  # [n, K, K]
        step = torch.cholesky_solve(
            torch.where(free, -grad, 0.0)[..., None], torch.linalg.cholesky(system)
        )[..., 0]  # [n, K]
        best, best_f = wt, _objective(gram, wt, bt)
        for length in (1.0, 0.5, 0.25, 0.125, 1 / 16, 1 / 64):
            cand = (wt + length * step).clamp(0, 1)
            f = _objective(gram, cand, bt)
            better = f < best_f
            best = torch.where(better[:, None], cand, best)
            best_f = torch.where(better, f, best_f)
        w[todo] = best
    return w


def _objective(gram: torch.Tensor, w: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    return 0.5 * ((w @ gram) * w).sum(-1) - (rhs * w).sum(-1)  # [n]


def _error_mm(
    head: FlameModel, params: FlameParams, weights: torch.Tensor, face: torch.Tensor, chunk=512
) -> torch.Tensor:
    """`[T]` mean distance (mm) over `face` between the head at `weights` (eyes at rest) and at
    `params`, both without head pose (rotation, neck, translation)."""
    target = _without_head_pose(params)
    fitted = _without_head_pose(params)
    full = torch.zeros(weights.shape[0], len(head.face_unit_names), dtype=torch.float64)
    full[:, arkit_columns(head)] = weights
    fitted.expr, fitted.jaw_pose = (t.float() for t in head.face_units_to_params(full))
    fitted.eyes_pose = torch.zeros_like(params.eyes_pose)
    out = []
    for start in range(0, params.num_frames, chunk):
        stop = min(params.num_frames, start + chunk)
        a = head(target.slice(start, stop))[:, face]  # [n, F, 3]
        b = head(fitted.slice(start, stop))[:, face]
        out.append((a - b).norm(dim=-1).mean(dim=1).double() * 1000.0)
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)


def _without_head_pose(params: FlameParams) -> FlameParams:
    """A copy of `params` with no head pose: rotation, neck and translation at zero."""
    z = torch.zeros_like
    return replace(
        params,
        rotation=z(params.rotation),
        neck_pose=z(params.neck_pose),
        translation=z(params.translation),
    )
