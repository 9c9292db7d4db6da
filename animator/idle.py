"""The idle layer: blinks, small eye movements and slow head motion, seeded, added on top of a
performance so the face looks alive between and during words.

Blinks come every 2-6 s (uniformly drawn) and last 150-300 ms, with a fast close and a slower
open. Eyes make small saccades (a few degrees, every 0.5-2.5 s). The head sways slowly (about
one to two degrees) as smooth noise. Everything is drawn from one seed, so a performance is
reproducible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch

from avatar.flame import FlameModel, FlameParams


def _smooth_noise(
    rng: np.random.Generator, times: np.ndarray, period: float, octaves: int = 3
) -> np.ndarray:
    """Smooth zero-mean noise in about [-1, 1]: a few sines with random phases."""
    out = np.zeros_like(times)
    for k in range(octaves):
        f = (1.5**k) / period * rng.uniform(0.8, 1.25)
        out += np.sin(2 * math.pi * f * times + rng.uniform(0, 2 * math.pi)) / (1.6**k)
    return out / sum(1 / 1.6**k for k in range(octaves))


def blink_curve(times: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Eyelid closure in [0, 1] per time: blinks every 2-6 s lasting 150-300 ms."""
    closure = np.zeros_like(times)
    t = rng.uniform(0.5, 3.0)
    end = times[-1] if len(times) else 0.0
    while t < end:
        duration = rng.uniform(0.15, 0.30)
        close = duration * 0.4  # closing is faster than opening
        u = times - t
        rising = (u >= 0) & (u < close)
        falling = (u >= close) & (u < duration)
        closure[rising] = np.maximum(closure[rising], np.sin(0.5 * math.pi * u[rising] / close))
        v = (u[falling] - close) / (duration - close)
        closure[falling] = np.maximum(closure[falling], 0.5 * (1 + np.cos(math.pi * v)))
        t += duration + rng.uniform(2.0, 6.0)
    return closure


@dataclass(frozen=True)
class IdleLayer:
    """What the idle layer adds to a performance, per frame: expression coefficients (blinks)
    `[T, E]`, eyes_pose (gaze) `[T, 6]` and neck_pose (sway) `[T, 3]`. Pure data: the same
    clip, seed and toggles give the same layer, and `frames(i, j).apply` on frames i..j of a
    performance equals `apply` on the whole clip, sliced."""

    expr: torch.Tensor
    eyes_pose: torch.Tensor
    neck_pose: torch.Tensor

    def frames(self, start: int, stop: int) -> IdleLayer:
        return IdleLayer(
            self.expr[start:stop], self.eyes_pose[start:stop], self.neck_pose[start:stop]
        )

    def apply(self, params: FlameParams) -> FlameParams:
        """A copy of params with the layer added."""
        return replace(
            params,
            expr=params.expr + self.expr.to(params.expr),
            eyes_pose=params.eyes_pose + self.eyes_pose.to(params.eyes_pose),
            neck_pose=params.neck_pose + self.neck_pose.to(params.neck_pose),
        )


def idle_layer(
    head: FlameModel,
    num_frames: int,
    fps: float,
    *,
    seed: int = 0,
    blinks: bool = True,
    head_motion: bool = True,
) -> IdleLayer:
    """The idle layer of a clip of num_frames at fps (blinks need a head with face units)."""
    rng = np.random.default_rng(seed)
    n = num_frames
    times = np.arange(n) / fps
    expr = torch.zeros(n, head.num_expr)
    eyes = torch.zeros(n, 6)
    neck = torch.zeros(n, 3)
    if blinks and head.face_unit_names is not None:
        closure = torch.from_numpy(blink_curve(times, rng)).float()  # [T]
        w = torch.zeros(n, len(head.face_unit_names))
        for name in ("eyeBlinkLeft", "eyeBlinkRight"):
            w[:, head.face_unit_names.index(name)] = closure
        expr, _ = head.face_units_to_params(w)
        expr = expr.cpu()
    if head_motion:
        # Eyes: saccades to a new small gaze target every 0.5-2.5 s, each reached in ~50 ms.
        gaze = np.zeros((n, 2))
        t, target = 0.0, np.zeros(2)
        while t < (times[-1] if n else 0.0):
            nxt = t + rng.uniform(0.5, 2.5)
            new = rng.normal(0, [0.035, 0.05])  # rad: pitch, yaw
            seg = (times >= t) & (times < nxt)
            ramp = np.clip((times[seg] - t) / 0.05, 0, 1)[:, None]
            gaze[seg] = target + (new - target) * ramp
            target, t = new, nxt
        eyes[:, 0] = eyes[:, 3] = torch.from_numpy(gaze[:, 0]).float()
        eyes[:, 1] = eyes[:, 4] = torch.from_numpy(gaze[:, 1]).float()
        sway = np.stack(
            [
                0.020 * _smooth_noise(rng, times, 4.0),
                0.030 * _smooth_noise(rng, times, 6.0),
                0.012 * _smooth_noise(rng, times, 5.0),
            ],
            axis=1,
        )  # rad, pitch / yaw / roll of the neck
        neck = torch.from_numpy(sway).float()
    return IdleLayer(expr=expr, eyes_pose=eyes, neck_pose=neck)
