"""Keep the lips shut where the speech shuts them, whatever emotion is added on top.

The paper's model is additive: FLAME parameters p = p_A (speech) + p_E (expression). An emotion
that owns a mouth shape (surprise and fear drop the jaw, disgust raises the upper lip) then
opens the lips through every p, b and m, and a viewer sees a mouth that never closes. The rule
here changes nothing else: per frame,

    a_A = max_k G_k . p_A              the speech path's inner-lip gap (mm, linearised)
    c   = smoothstep((open - a_A) / (open - closed))   1 when the speech says "closed"
    d   = max(0, G p_E)                how far the expression would open the lips (mm) `[K]`
    p   = p_A + p_E - c U d

where G `[K, P]` holds, for each of the K central columns of the inner-lip contours, the gradient
of that column's gap in FLAME's expression + jaw parameters (from the head's Jacobian). A column's
gap is measured as a viewer sees it from the front, as `inner_lip_gap` does: the upper lip's
point over the lower contour at the same x, so a lip that slides sideways (a one-sided smile)
counts by how it moves the lower contour under that point,
and U `[P, K]` is the least-visible way to close each column by one millimetre: the parameter
change of smallest skin motion with G U = I, U = H^-1 G^T (G H^-1 G^T)^-1, H = J_skin^T J_skin.
On the bundled head this is the ARKit-style seal (lips meet, the emotion's jaw and everything
else stay), which is what people do when they say "b" while surprised. Where speech opens the
mouth (c = 0), or the expression only presses the lips (d = 0), the sum is the paper's. In
silence (no speech heard, `Animator.speech_track`'s speaking = 0) a closed mouth is rest, not a
closure: c is scaled by speaking, and a surprised face that says nothing has its mouth open.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from animator.mapping import flame_jacobian
from avatar.flame import FlameModel

__all__ = ["ClosureKeeper", "smoothstep"]

#: Speech gaps (mm) at or below `CLOSED_MM` count as a closure, at or above `OPEN_MM` as open.
#: On real recordings a speech path that has learnt from noisy renditions (`TrainConfig.
#: fusion_renditions`) meets a p/b/m at 1-3 mm where the bilabial seal is unsure; at 1/3 mm
#: surprise and fear then kept 0.27 of their opening through them, at 1.5/4 mm 0.19-0.20, as
#: without emotion (docs/lipsync_ablation.md, "Stage 2 on heard speech").
CLOSED_MM = 1.5
OPEN_MM = 4.0
#: Fraction of the mouth width kept shut, centred (what `inner_lip_gap` measures), and a margin:
#: a one-sided expression (contempt) moves a corner, and the measured window with it.
CENTRAL = 0.6
WINDOW_MARGIN = 0.1


def smoothstep(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """0 at `lo`, 1 at `hi` (either order), smooth (zero slope) at both ends, constant outside."""
    t = ((x - lo) / (hi - lo)).clamp(0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


@dataclass(frozen=True)
class ClosureKeeper:
    """The closure rule for one head (see the module docstring).

    Attributes:
        gradient: G `[K, P]`, millimetres of gap of each central inner-lip column per unit of
            each parameter (expression coefficients, then jaw pose).
        direction: U `[P, K]`, parameters per millimetre of closing each column, G U = I.
    """

    gradient: torch.Tensor
    direction: torch.Tensor
    skin_gram: torch.Tensor  # H `[P, P]`: J_skin^T J_skin, the cost of visible motion
    closed_mm: float = CLOSED_MM
    open_mm: float = OPEN_MM

    @classmethod
    @torch.no_grad()
    def for_head(cls, head: FlameModel) -> ClosureKeeper:
        """The rule for a head with matched inner-lip contours (regions lip_upper_inner and
        lip_lower_inner, ordered across the mouth) and a skin region."""
        upper = torch.as_tensor(head.region("lip_upper_inner"))
        lower = torch.as_tensor(head.region("lip_lower_inner"))
        rest = head.v_template.double()
        jac = flame_jacobian(head).double().view(head.num_vertices, 3, -1)  # [V, 3, P]
        g = 1000.0 * _aperture_gradient(rest, jac, upper, lower, CENTRAL + WINDOW_MARGIN)
        skin = torch.as_tensor(head.region("skin"))
        js = jac[skin].reshape(-1, jac.shape[-1])  # [3S, P]
        h = js.T @ js
        h = h + 1e-9 * h.diagonal().mean() * torch.eye(len(h), dtype=h.dtype)
        hg = torch.linalg.solve(h, g.T)  # [P, K]
        u = hg @ torch.linalg.pinv(g @ hg, rtol=1e-6)  # [P, K]
        return cls(gradient=g.float(), direction=u.float(), skin_gram=h.float())

    def speech_closure(self, speech: torch.Tensor) -> torch.Tensor:
        """c `[T]` in [0, 1] for speech parameters `[T, P]`: 1 where the speech shuts the lips."""
        gap = (speech @ self.gradient.T.to(speech)).amax(dim=1)  # [T] mm
        return smoothstep(gap, self.open_mm, self.closed_mm)

    def combine(
        self,
        speech: torch.Tensor,
        expression: torch.Tensor,
        speaking: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Parameters `[T, P]` of speech `[T, P]` plus expression `[T, P]`, the lips kept shut
        where the speech shuts them. `speaking` `[T]` in [0, 1] scales the rule: in silence (0)
        a closed mouth is rest, not a closure, and the expression opens it as it likes."""
        opening = (expression @ self.gradient.T.to(expression)).clamp_min(0.0)  # [T, K] mm
        closure = self.speech_closure(speech)
        if speaking is not None:
            closure = closure * speaking.to(closure)
        seal = closure[:, None] * opening  # [T, K] mm to take back
        return speech + expression - seal @ self.direction.T.to(speech)

    @torch.no_grad()
    def weight_sealer(self, mapping: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """For blend weights that drive FLAME through `mapping` `[K_A, P]`: (G_w `[K_A, K]`, the
        gap of each central inner-lip column per unit weight, and U_w `[K_A, K]`, the
        least-visible weight change that closes each column by one millimetre, G_w^T U_w = I)."""
        m = mapping.double()
        g_w = m @ self.gradient.double().T  # [K_A, K]
        h_w = m @ self.skin_gram.double() @ m.T  # [K_A, K_A]
        h_w = h_w + 1e-6 * h_w.diagonal().mean() * torch.eye(len(h_w), dtype=h_w.dtype)
        hg = torch.linalg.solve(h_w, g_w)  # [K_A, K]
        u_w = hg @ torch.linalg.pinv(g_w.T @ hg, rtol=1e-6)  # [K_A, K]
        return g_w.float(), u_w.float()

    def seal_weights(
        self,
        weights: torch.Tensor,
        strength: torch.Tensor,
        sealer: tuple[torch.Tensor, torch.Tensor],
    ) -> torch.Tensor:
        """Speech weights `[T, K_A]` with the lips shut by `strength` `[T]` in [0, 1] (1: fully
        shut, along the least-visible change of `weight_sealer`); pressed lips stay pressed."""
        g_w, u_w = sealer
        gap = (weights @ g_w.to(weights)).clamp_min(0.0)  # [T, K] mm to take back
        return weights - (strength[:, None] * gap) @ u_w.T.to(weights)


def _aperture_gradient(
    rest: torch.Tensor, jac: torch.Tensor, upper: torch.Tensor, lower: torch.Tensor, central: float
) -> torch.Tensor:
    """d(gap)/dp `[K, P]` (metres per unit) of each upper inner-lip point in the central
    `central` fraction of the mouth width, the gap being upper.y minus the lower contour's y at
    the same x (linear between its points). To first order, with s the lower contour's slope
    there: d gap = d upper.y - d lower.y - s (d upper.x - d lower.x)."""
    ux = rest[upper, 0]
    centre, half = 0.5 * (ux.min() + ux.max()), 0.5 * central * (ux.max() - ux.min())
    upper = upper[(ux - centre).abs() <= half]
    lower = lower[torch.argsort(rest[lower, 0])]
    lx, ly = rest[lower, 0], rest[lower, 1]
    rows = []
    for i in upper.tolist():
        x = rest[i, 0]
        b = int(torch.searchsorted(lx, x).clamp(1, len(lx) - 1))
        a = b - 1
        t = float(((x - lx[a]) / (lx[b] - lx[a])).clamp(0.0, 1.0))
        slope = float((ly[b] - ly[a]) / (lx[b] - lx[a]))
        d_low = (1.0 - t) * jac[lower[a]] + t * jac[lower[b]]  # [3, P]
        d = jac[i] - d_low
        rows.append(d[1] - slope * d[0])
    return torch.stack(rows)
