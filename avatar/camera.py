"""Pinhole cameras in gsplat's contract: world-to-camera `viewmat` (OpenCV axes), `K`, image size.

World axes are FLAME's (metres, +y up, +z towards the viewer). Camera axes are OpenCV's: x right,
y down, z forward (the direction the camera looks). A `Camera` holds the world-to-camera matrix
because that is what rasterizers consume; viser and most pose sources give camera-to-world, so
the constructors below take poses in whichever form the caller has.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from avatar.errors import TalkingAvatarError
from avatar.quaternion import matrix_to_quat, quat_to_matrix

#: The largest image side we accept; far beyond any display, small enough to catch unit mix-ups.
MAX_IMAGE_SIDE = 16384


def _check_size(width: int, height: int) -> tuple[int, int]:
    """Image size as two ints in [1, MAX_IMAGE_SIDE], or a one-line error."""
    try:
        w, h = int(width), int(height)
    except (TypeError, ValueError) as err:
        raise TalkingAvatarError(
            f"image size must be two integers, got width={width!r}, height={height!r}"
        ) from err
    if w != width or h != height or not (1 <= w <= MAX_IMAGE_SIDE and 1 <= h <= MAX_IMAGE_SIDE):
        raise TalkingAvatarError(
            f"image size {width}x{height} is invalid; width and height must be whole numbers "
            f"of pixels between 1 and {MAX_IMAGE_SIDE}"
        )
    return w, h


def _check_fov(fov_y: float) -> float:
    fov = float(fov_y)
    if not (0.0 < fov < math.pi):
        raise TalkingAvatarError(
            f"vertical field of view {fov_y!r} rad is invalid; it must lie in (0, pi) radians "
            "(20 degrees is math.radians(20))"
        )
    return fov


def _vec3(value: Sequence[float] | torch.Tensor, name: str) -> torch.Tensor:
    """A finite float64 3-vector from a sequence or tensor, or a one-line error."""
    vec = torch.as_tensor(value, dtype=torch.float64).reshape(-1)  # [3]
    if vec.shape != (3,) or not torch.isfinite(vec).all():
        raise TalkingAvatarError(f"{name} must be 3 finite numbers (metres), got {value!r}")
    return vec


def intrinsics_from_fov(fov_y: float, width: int, height: int) -> torch.Tensor:
    """Pinhole intrinsics `K` [3, 3] (float32) for a vertical field of view and image size.

    Square pixels (fx = fy), principal point at the image centre (width / 2, height / 2) in
    gsplat's pixel convention, where pixel (i, j) has its centre at (j + 0.5, i + 0.5).

    Args:
        fov_y: vertical field of view in radians, in (0, pi).
        width, height: image size in pixels.
    """
    fov = _check_fov(fov_y)
    w, h = _check_size(width, height)
    focal = 0.5 * h / math.tan(0.5 * fov)
    return torch.tensor(
        [[focal, 0.0, 0.5 * w], [0.0, focal, 0.5 * h], [0.0, 0.0, 1.0]], dtype=torch.float32
    )  # [3, 3]


@dataclass(frozen=True)
class Camera:
    """A pinhole camera in gsplat's contract.

    Attributes:
        viewmat: world-to-camera rigid transform `[4, 4]` float32; camera axes are OpenCV's
            (x right, y down, z forward), world axes FLAME's (metres, +y up, +z to the viewer).
        K: intrinsics `[3, 3]` float32 in pixels; pixel (i, j) has its centre at (j + 0.5, i + 0.5).
        width, height: image size in pixels.
    """

    viewmat: torch.Tensor  # [4, 4]
    K: torch.Tensor  # [3, 3]
    width: int
    height: int

    def __post_init__(self) -> None:
        w, h = _check_size(self.width, self.height)
        viewmat = torch.as_tensor(self.viewmat).detach().to("cpu", torch.float32)  # [4, 4]
        K = torch.as_tensor(self.K).detach().to("cpu", torch.float32)  # [3, 3]
        if viewmat.shape != (4, 4) or not torch.isfinite(viewmat).all():
            raise TalkingAvatarError(
                f"camera viewmat must be a finite 4x4 world-to-camera matrix, got shape "
                f"{tuple(viewmat.shape)}"
            )
        if K.shape != (3, 3) or not torch.isfinite(K).all() or K[0, 0] <= 0 or K[1, 1] <= 0:
            raise TalkingAvatarError(
                "camera K must be a finite 3x3 pinhole matrix with positive focal lengths "
                f"(fx, fy), got {K.tolist()}"
            )
        # frozen dataclass: normalise the fields in place once, at the boundary
        object.__setattr__(self, "viewmat", viewmat)
        object.__setattr__(self, "K", K)
        object.__setattr__(self, "width", w)
        object.__setattr__(self, "height", h)

    @classmethod
    def look_at(
        cls,
        eye: Sequence[float] | torch.Tensor,
        target: Sequence[float] | torch.Tensor,
        up: Sequence[float] | torch.Tensor = (0.0, 1.0, 0.0),
        *,
        fov_y: float,
        width: int,
        height: int,
    ) -> Camera:
        """A camera at `eye` (world, metres) looking at `target`, with world `up` appearing up.

        The target projects to the image centre (on the optical axis). `fov_y` is the vertical
        field of view in radians.
        """
        eye_w, target_w, up_w = _vec3(eye, "eye"), _vec3(target, "target"), _vec3(up, "up")
        forward = target_w - eye_w  # [3] camera +z
        if forward.norm() < 1e-12:
            raise TalkingAvatarError("look_at needs eye and target at different points")
        forward = forward / forward.norm()
        right = torch.linalg.cross(forward, up_w)  # [3] camera +x
        if right.norm() < 1e-9 * max(1.0, float(up_w.norm())):
            raise TalkingAvatarError(
                "look_at: the view direction is parallel to `up`; pass another `up` vector"
            )
        right = right / right.norm()
        down = torch.linalg.cross(forward, right)  # [3] camera +y
        rot_c2w = torch.stack([right, down, forward], dim=1)  # [3, 3] columns = camera axes
        return cls.from_camera_to_world_matrix(
            rot_c2w, eye_w, fov_y=fov_y, width=width, height=height
        )

    @classmethod
    def orbit(
        cls,
        target: Sequence[float] | torch.Tensor,
        radius: float,
        azimuth: float,
        elevation: float,
        *,
        fov_y: float,
        width: int,
        height: int,
    ) -> Camera:
        """A camera on a sphere of `radius` metres around `target`, looking at it, +y up.

        Angles in radians. Azimuth 0 puts the camera on +z (in front of the face); positive
        azimuth moves it towards +x (the subject's left). Positive elevation moves it up (+y).
        """
        r = float(radius)
        if not (r > 0.0 and math.isfinite(r)):
            raise TalkingAvatarError(f"orbit radius must be a positive number of metres, got {r}")
        if not abs(float(elevation)) < 0.5 * math.pi:
            raise TalkingAvatarError(
                f"orbit elevation {elevation} rad must lie strictly between -pi/2 and pi/2"
            )
        target_w = _vec3(target, "target")
        ce, se = math.cos(elevation), math.sin(elevation)
        offset = torch.tensor(
            [ce * math.sin(azimuth), se, ce * math.cos(azimuth)], dtype=torch.float64
        )  # [3]
        return cls.look_at(target_w + r * offset, target_w, fov_y=fov_y, width=width, height=height)

    @classmethod
    def from_camera_to_world(
        cls,
        wxyz: Sequence[float] | torch.Tensor,
        position: Sequence[float] | torch.Tensor,
        *,
        fov_y: float,
        width: int,
        height: int,
    ) -> Camera:
        """A camera from a camera-to-world pose with OpenCV camera axes (what viser hands over).

        Args:
            wxyz: orientation of the camera in the world, quaternion wxyz (normalised here).
            position: camera centre in world coordinates, metres.
            fov_y: vertical field of view in radians.
        """
        quat = torch.as_tensor(wxyz, dtype=torch.float64).reshape(-1)  # [4]
        if quat.shape != (4,) or not torch.isfinite(quat).all() or quat.norm() < 1e-12:
            raise TalkingAvatarError(f"camera wxyz must be a non-zero quaternion, got {wxyz!r}")
        return cls.from_camera_to_world_matrix(
            quat_to_matrix(quat),
            _vec3(position, "position"),
            fov_y=fov_y,
            width=width,
            height=height,
        )

    @classmethod
    def from_camera_to_world_matrix(
        cls,
        rotation: torch.Tensor,
        position: torch.Tensor,
        *,
        fov_y: float,
        width: int,
        height: int,
    ) -> Camera:
        """A camera from a camera-to-world rotation `[3, 3]` (OpenCV axes) and centre `[3]`."""
        rot = torch.as_tensor(rotation, dtype=torch.float64)  # [3, 3]
        pos = _vec3(position, "position")  # [3]
        viewmat = torch.eye(4, dtype=torch.float64)  # [4, 4]
        viewmat[:3, :3] = rot.T
        viewmat[:3, 3] = -rot.T @ pos
        return cls(
            viewmat=viewmat.to(torch.float32),
            K=intrinsics_from_fov(fov_y, width, height),
            width=width,
            height=height,
        )

    @property
    def camera_to_world(self) -> torch.Tensor:
        """Camera-to-world rigid transform `[4, 4]` float32 (OpenCV camera axes)."""
        vm = self.viewmat.to(torch.float64)
        c2w = torch.eye(4, dtype=torch.float64)  # [4, 4]
        c2w[:3, :3] = vm[:3, :3].T
        c2w[:3, 3] = -vm[:3, :3].T @ vm[:3, 3]
        return c2w.to(torch.float32)

    @property
    def camera_center(self) -> torch.Tensor:
        """Camera centre in world coordinates `[3]` float32, metres."""
        return self.camera_to_world[:3, 3]

    @property
    def wxyz(self) -> torch.Tensor:
        """Camera-to-world orientation as a unit quaternion `[4]` (wxyz, w >= 0), float32."""
        return matrix_to_quat(self.camera_to_world[:3, :3].double()).to(torch.float32)

    @property
    def fov_y(self) -> float:
        """Vertical field of view in radians."""
        return 2.0 * math.atan(0.5 * self.height / float(self.K[1, 1]))

    def scaled(self, width: int, height: int) -> Camera:
        """The same view at another image size (e.g. a low-resolution preview while moving).

        Scales fx, cx by width / self.width and fy, cy by height / self.height, so the same
        field of view fills the new image.
        """
        w, h = _check_size(width, height)
        sx, sy = w / self.width, h / self.height
        K = self.K.clone()  # [3, 3]
        K[0, 0] *= sx
        K[0, 2] *= sx
        K[1, 1] *= sy
        K[1, 2] *= sy
        return Camera(viewmat=self.viewmat.clone(), K=K, width=w, height=h)


# ------------------------------------------------------------------ the head's framing
#: Where the default framing looks (metres, head frame): a little below the eyes.
HEAD_TARGET = (0.0, -0.02, -0.025)
HEAD_DISTANCE = 0.68
HEAD_FOV_Y = math.radians(25.0)
VIEWS = {"front": 0.0, "three-quarter": 35.0, "side": 90.0}


def head_camera(view: str | float, width: int, height: int) -> Camera:
    """The standard framing of the head from a named view or an azimuth in degrees."""
    azimuth = VIEWS[view] if isinstance(view, str) else float(view)
    return Camera.orbit(
        HEAD_TARGET,
        HEAD_DISTANCE,
        math.radians(azimuth),
        0.0,
        fov_y=HEAD_FOV_Y,
        width=width,
        height=height,
    )


#: Export cameras: the fixed views, or a slow orbit.
CAMERAS = (*VIEWS, "orbit")


def camera_for_frame(kind: str, frame: int, fps: float, width: int, height: int) -> Camera:
    """The camera of a frame: a fixed view, or a slow orbit (+-35 degrees, 8 s period)."""
    if kind == "orbit":
        return head_camera(35.0 * math.sin(2 * math.pi * frame / fps / 8.0), width, height)
    return head_camera(kind, width, height)
