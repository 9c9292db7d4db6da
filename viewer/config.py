"""What `talking-avatar view` serves: the viewer's settings, checked where they are used."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from animator.audio import DEFAULT_FPS
from viewer.upload import MAX_UPLOAD_BYTES, MAX_UPLOAD_SECONDS

#: How the page gets its frames: rendered on the server (JPEG), or splats drawn by the browser.
MODES = ("image", "splats")


@dataclass
class ViewerConfig:
    """What `talking-avatar view` serves.

    Attributes:
        audio: speech to start with (default: the bundled sample).
        avatar: PLY or GaussianAvatars folder (default: the bundled avatar).
        checkpoint: animator checkpoint folder (default: the bundled one).
        flame: FLAME-format head model (default: $TALKING_AVATAR_FLAME, else the bundled head).
        host, port: where to listen; 127.0.0.1 keeps the viewer on this machine.
        mode: "image" (server renders JPEG frames) or "splats" (the browser draws the Gaussians).
        render_fps: target frames per second of each client's render loop.
        anim_fps: frame rate of the animation (speech weights are sampled at it).
        max_side: frames have about max_side^2 pixels when the camera rests (max_side x
            max_side on a square canvas), shaped like the browser's canvas.
        moving_side: the same while the camera moves.
        lead_s: render the audio time this far ahead (seconds): a frame takes about this long
            from the server to the screen (measured in shared/notes/viser.md).
        jpeg_quality: JPEG quality of the frames (1-100).
        seed: seed of the idle layer.
        backend: renderer backend (auto, cpu, gsplat).
        allow_origins: web origins, besides the viewer's own page, whose pages may connect
            (`viewer.origins`), e.g. ("https://avatar.example.org",) behind a reverse proxy.
        max_upload_bytes, max_upload_seconds: the largest and longest speech upload accepted.
    """

    audio: str | Path | None = None
    avatar: str | Path | None = None
    checkpoint: str | Path | None = None
    flame: str | Path | None = None
    host: str = "127.0.0.1"
    port: int = 8080
    mode: str = "image"
    render_fps: float = 25.0
    anim_fps: float = DEFAULT_FPS
    max_side: int = 512
    moving_side: int = 256
    lead_s: float = 0.09
    jpeg_quality: int = 85
    seed: int = 0
    backend: str = "auto"
    allow_origins: tuple[str, ...] = ()
    max_upload_bytes: int = MAX_UPLOAD_BYTES
    max_upload_seconds: float = MAX_UPLOAD_SECONDS
