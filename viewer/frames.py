"""The viewer's render seam: what one frame depends on, and the picture, without viser.

`FrameSource` is the tab's state for one frame (clip, emotion track, idle layer, avatar,
background), read once from the controls; `render(camera, media_time)` is nerfview's
`render_fn(camera, img_wh) -> image` with time added, so the picture can be tested without a
server. Its parameters are `Animator.frame_params` on the frame's slice of every input: the
path export takes for the whole clip.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from animator.animator import Animator
from animator.emotion import EmotionTrack
from animator.idle import IdleLayer
from avatar.binding import GaussianAvatar
from avatar.camera import Camera, quat_to_matrix
from avatar.flame import FlameModel, FlameParams
from avatar.gaussians import SH_C0, Gaussians
from avatar.image import to_uint8
from avatar.render import render
from viewer.clip import Clip


@dataclass(frozen=True)
class FrameSource:
    """Everything one frame depends on (see the module docstring)."""

    animator: Animator
    avatar: GaussianAvatar
    clip: Clip
    track: EmotionTrack
    idle: IdleLayer | None
    backend: str = "auto"
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    #: The head to pose on (default the animator's); the viewer passes a copy on the GPU when
    #: gsplat draws, with `avatar` there too.
    head: FlameModel | None = None

    @torch.no_grad()
    def params(self, frame: int) -> FlameParams:
        """FLAME parameters of frame `frame` of the clip, exactly as export computes them."""
        anim, clip = self.animator, self.clip
        w_e = anim.emotion_weights(self.track, 1, fps=clip.fps, start=frame)
        return anim.frame_params(
            clip.speech_weights[frame : frame + 1], w_e, clip.speaking[frame : frame + 1],
            None if self.idle is None else self.idle.frames(frame, frame + 1),
        )  # fmt: skip

    @torch.no_grad()
    def gaussians(self, media_time: float) -> Gaussians:
        """The posed Gaussians at a media time: its frame's parameters on the avatar's head."""
        params = self.params(self.clip.frame_index(media_time))
        head = self.head if self.head is not None else self.animator.head
        vertices = head(self.avatar.dress(params))[0]  # [V, 3]
        return self.avatar.pose(vertices)

    def render(self, camera: Camera, media_time: float) -> np.ndarray:
        """The picture `[H, W, 3]` uint8 at a media time through a camera."""
        return self.draw(self.gaussians(media_time), camera)

    def draw(self, gaussians: Gaussians, camera: Camera) -> np.ndarray:
        """The picture `[H, W, 3]` uint8 of posed Gaussians (from `gaussians`) through a
        camera: the rasterizer's step alone, so a caller can decide between the two."""
        out = render(gaussians, camera, backend=self.backend, background=self.background)
        return to_uint8(out.color)


def _splat_fields(gaussians: Gaussians) -> tuple[torch.Tensor, ...]:
    """(centres `[N, 3]`, covariances R diag(s^2) R^T `[N, 3, 3]` in metres^2, RGB `[N, 3]` in
    [0, 1] (SH degree 0 only: viser's splats are view-independent), opacities `[N]`), float32
    on the CPU."""
    gaussians = gaussians.to("cpu")  # posed on the GPU when gsplat is there
    rot = quat_to_matrix(gaussians.quats)  # [N, 3, 3]
    scaled = rot * gaussians.scales[:, None, :]  # [N, 3, 3]: columns scaled by s
    cov = scaled @ scaled.transpose(1, 2)  # [N, 3, 3]
    rgb = (gaussians.sh[:, 0] * SH_C0 + 0.5).clamp(0.0, 1.0)  # [N, 3]
    return gaussians.means.float(), cov.float(), rgb.float(), gaussians.opacities.float()


def gaussians_to_splats(
    gaussians: Gaussians,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """viser's splat arrays from posed Gaussians: centres `[N, 3]`, covariances `[N, 3, 3]`,
    RGB `[N, 3]` and opacities `[N, 1]`, float32 (see `_splat_fields`)."""
    fields = _splat_fields(gaussians)
    means, cov, rgb, opacities = (np.array(x.numpy(), dtype=np.float32) for x in fields)
    return means, cov, rgb, opacities[:, None]


#: The covariance's upper triangle in a flattened 3x3, as viser packs it.
_TRIU = [0, 1, 2, 4, 5, 8]


def gaussians_to_splat_buffer(gaussians: Gaussians) -> np.ndarray:
    """viser's packed splat buffer `[N, 8]` uint32 of posed Gaussians, in the layout viser
    documents for `GaussianSplatsProps.buffer`: centre x, y, z as float32, one unused word, the
    covariance's upper triangle as six float16, RGBA as four uint8. The same bits as
    `handle.set_gaussians(*gaussians_to_splats(g))` packs (tests/test_viewer.py holds them
    equal), but torch converts to float16 in about 1 ms for 100k Gaussians where numpy took
    21 ms, most of a 100k splat frame."""
    means, cov, rgb, opacities = _splat_fields(gaussians)
    n = means.shape[0]
    buffer = np.zeros((n, 8), dtype=np.uint32)
    buffer[:, 0:3] = np.ascontiguousarray(means.numpy()).view(np.uint32)
    triu = cov.reshape(n, 9)[:, _TRIU].contiguous().half().numpy()  # [N, 6] float16
    buffer[:, 4:7] = triu.view(np.uint32)
    rgba = torch.cat([rgb, opacities[:, None]], dim=1).numpy()  # [N, 4] float32
    buffer[:, 7:8] = np.clip(rgba * 255.0, 0, 255).astype(np.uint8).view(np.uint32)
    return buffer


def image_size(aspect: float, side: int) -> tuple[int, int]:
    """(width, height) of a frame with the canvas's aspect (width / height) and about side^2
    pixels: the render cost of a side x side square, spent on the canvas's shape (a wide
    canvas gets a wide frame, not a narrow one stretched)."""
    aspect = aspect if math.isfinite(aspect) and aspect > 0 else 1.0
    aspect = min(max(aspect, 0.25), 4.0)
    height = side / math.sqrt(aspect)
    return max(16, round(height * aspect)), max(16, round(height))
