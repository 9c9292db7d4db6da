"""Write a performance's ARKit-52 curves: a Live Link Face CSV, a JSON file, or an animated
glTF binary (.glb) of the head with one morph target per ARKit unit. docs/arkit.md has the
formats; `avatar.flame.arkit` the fit and the angle convention.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from smplx.lbs import batch_rodrigues

from avatar.atomic import atomic_path, atomic_write_text, check_output_path
from avatar.errors import TalkingAvatarError
from avatar.flame.arkit import ARKIT_UNIT_NAMES, ArkitCurves, arkit_columns, fit_arkit
from avatar.flame.model import FlameModel
from avatar.flame.params import FlameParams
from avatar.mesh import vertex_normals
from avatar.quaternion import matrix_to_quat

__all__ = [
    "ANGLE_COLUMNS",
    "GLTF_COMPONENT_TYPES",
    "GLTF_WIDTHS",
    "LLF_UNIT_ORDER",
    "SUPPORTED_SUFFIXES",
    "load_arkit_json",
    "llf_timecode",
    "write_arkit",
    "write_arkit_glb",
    "write_arkit_json",
    "write_llf_csv",
]

#: Live Link Face's CSV order of the 52 units: Apple's, except that its recordings list
#: jawRight before jawLeft and mouthRight before mouthLeft (checked on recorded takes).
_LLF_SWAPS = {
    "jawLeft": "jawRight",
    "jawRight": "jawLeft",
    "mouthLeft": "mouthRight",
    "mouthRight": "mouthLeft",
}
LLF_UNIT_ORDER: tuple[str, ...] = tuple(_LLF_SWAPS.get(n, n) for n in ARKIT_UNIT_NAMES)
#: The nine angle columns that end a Live Link Face row (radians).
ANGLE_COLUMNS: tuple[str, ...] = tuple(
    f"{part}{angle}"
    for part in ("Head", "LeftEye", "RightEye")
    for angle in ("Yaw", "Pitch", "Roll")
)
#: glTF accessor component types of the arrays the .glb holds, and the widths of its kinds.
GLTF_COMPONENT_TYPES = {np.float32: 5126, np.uint8: 5121, np.uint16: 5123, np.uint32: 5125}
GLTF_WIDTHS = {"SCALAR": 1, "VEC3": 3, "VEC4": 4, "MAT4": 16}
JSON_FORMAT = "talking-avatar arkit"
JSON_VERSION = 1


class PerformanceLike(Protocol):
    """What the writers need of a performance (`animator.Performance` has it)."""

    params: FlameParams
    fps: float


#: What `write_arkit` (and `talking-avatar animate --out`) writes, besides the .npz performance.
SUPPORTED_SUFFIXES = (".csv", ".json", ".glb")


def write_arkit(perf: PerformanceLike, head: FlameModel, path: str | Path) -> ArkitCurves:
    """Fit a performance's ARKit-52 curves and write them, the format chosen by the suffix:
    `.csv` (Live Link Face), `.json`, or `.glb` (the head with 52 morph targets, animated).

    Returns the curves (their `error_mm` is the fit error per frame).

    Raises:
        TalkingAvatarError: an unknown suffix, an unwritable path, a head without face units.
    """
    suffix = Path(path).suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise TalkingAvatarError(
            f"{path}: unknown ARKit file type '{suffix}'; use {', '.join(SUPPORTED_SUFFIXES)}"
        )
    check_output_path(path, what="output")  # before the fit
    curves = fit_arkit(head, perf.params, perf.fps)
    if suffix == ".glb":
        write_arkit_glb(path, curves, head, perf.params)
    elif suffix == ".json":
        write_arkit_json(path, curves)
    else:
        write_llf_csv(path, curves)
    return curves


# ---------------------------------------------------------------------- Live Link Face CSV
def llf_timecode(frame: int, fps: float) -> str:
    """`HH:MM:SS:FF.fff` of frame i (time i / fps), as Live Link Face writes it: FF counts frames
    within the second at `fps`, `.fff` is the fraction of a frame (0 at a whole fps)."""
    seconds = math.floor(frame / fps + 1e-9)
    frames = frame - seconds * fps  # frames into this second (a fraction at a fractional fps)
    whole = math.floor(frames + 1e-6)
    fraction = min(999, round((frames - whole) * 1000)) if frames - whole > 1e-6 else 0
    hours, rest = divmod(seconds, 3600)
    return f"{hours:02d}:{rest // 60:02d}:{rest % 60:02d}:{whole:02d}.{fraction:03d}"


def write_llf_csv(path: str | Path, curves: ArkitCurves) -> Path:
    """Write the curves as a Live Link Face CSV (atomically); returns the path.

    Header `Timecode,BlendShapeCount,` + the 52 units (`LLF_UNIT_ORDER`, first letter capital)
    + `ANGLE_COLUMNS`; one row per frame: its timecode, 61, the weights, then the head's and
    eyes' (yaw, pitch, roll) in radians.
    """
    order = [ARKIT_UNIT_NAMES.index(n) for n in LLF_UNIT_ORDER]
    names = [n[0].upper() + n[1:] for n in LLF_UNIT_ORDER]
    header = ",".join(["Timecode", "BlendShapeCount", *names, *ANGLE_COLUMNS])
    values = np.concatenate(
        [curves.weights[:, order], curves.head, curves.left_eye, curves.right_eye], axis=1
    )  # [T, 61]
    count = values.shape[1]
    lines = [header]
    for i, row in enumerate(np.round(values.astype(np.float64), 6) + 0.0):  # no "-0.000000"
        cells = ",".join(f"{v:.6f}" for v in row)
        lines.append(f"{llf_timecode(i, curves.fps)},{count},{cells}")
    return atomic_write_text(path, "\n".join(lines) + "\n")


# ---------------------------------------------------------------------- JSON
def write_arkit_json(path: str | Path, curves: ArkitCurves) -> Path:
    """Write the curves as JSON (atomically); returns the path. Arrays per quantity, frame-major:

        {"format": "talking-avatar arkit", "version": 1, "fps": 30.0, "num_frames": T,
         "names": [52 ARKit names, Apple's order], "times": [T] seconds (i / fps),
         "weights": [T][52] in [0, 1],
         "head": [T][3], "left_eye": [T][3], "right_eye": [T][3]  (yaw, pitch, roll),
         "angles": {"units": "radians", "order": [...], "convention": "..."},
         "fit_error_mm": {"mean": m, "max": M, "per_frame": [T]}}

    Numbers are rounded to 6 decimals.
    """
    r = lambda a: np.round(np.asarray(a, dtype=np.float64), 6).tolist()  # noqa: E731
    error = curves.error_mm
    doc = {
        "format": JSON_FORMAT,
        "version": JSON_VERSION,
        "fps": curves.fps,
        "num_frames": curves.num_frames,
        "names": list(ARKIT_UNIT_NAMES),
        "times": r(curves.times),
        "weights": r(curves.weights),
        "head": r(curves.head),
        "left_eye": r(curves.left_eye),
        "right_eye": r(curves.right_eye),
        "angles": {
            "units": "radians",
            "order": ["yaw", "pitch", "roll"],
            "convention": "Live Link Face's: pitch > 0 looking down, yaw > 0 turning to the "
            "subject's right, roll > 0 tilting to the subject's left; eyes relative to the head",
        },
        "fit_error_mm": {
            "mean": round(float(error.mean()), 6) if len(error) else 0.0,
            "max": round(float(error.max()), 6) if len(error) else 0.0,
            "per_frame": r(error),
        },
    }
    return atomic_write_text(path, json.dumps(doc, separators=(",", ":")) + "\n")


def load_arkit_json(path: str | Path) -> ArkitCurves:
    """Read curves written by `write_arkit_json`.

    Raises:
        TalkingAvatarError: the file is missing, not JSON, or not in this format.
    """
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TalkingAvatarError(f"ARKit file {path} does not exist; check the path") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise TalkingAvatarError(f"{path} is not a readable JSON file ({err})") from None
    if not isinstance(doc, dict) or doc.get("format") != JSON_FORMAT:
        raise TalkingAvatarError(
            f"{path} is not a talking-avatar ARKit file; write one with "
            "`talking-avatar animate --out perf.json`"
        )
    f32 = lambda key, width: np.asarray(doc[key], dtype=np.float32).reshape(-1, width)  # noqa: E731
    try:
        order = [doc["names"].index(n) for n in ARKIT_UNIT_NAMES]
        return ArkitCurves(
            fps=float(doc["fps"]),
            weights=f32("weights", len(doc["names"]))[:, order],
            head=f32("head", 3),
            left_eye=f32("left_eye", 3),
            right_eye=f32("right_eye", 3),
            error_mm=np.asarray(doc["fit_error_mm"]["per_frame"], dtype=np.float64),
        )
    except (KeyError, TypeError, ValueError) as err:
        raise TalkingAvatarError(
            f"{path} is a damaged ARKit file ({err!r}); write it again"
        ) from None


# ---------------------------------------------------------------------- glTF binary
def write_arkit_glb(
    path: str | Path, curves: ArkitCurves, head: FlameModel, params: FlameParams
) -> Path:
    """Write the head as an animated glTF 2.0 binary (atomically); returns the path.

    One mesh: the performance's neutral head (its identity, no expression, rest pose; metres,
    FLAME's axes, which are glTF's: +y up, +z the front) with POSITION, NORMAL and indices, and
    one morph target per ARKit unit, named in `mesh.extras.targetNames` (three.js and Blender
    read them). A target's POSITION deltas are the unit's vertex motion at weight 1; jawOpen's
    is the secant of its jaw rotation (the vertices at full opening minus the neutral), exact at
    weights 0 and 1, a chord in between. The mesh is skinned to two joints, FLAME's root and
    neck, with FLAME's skinning weights (the jaw's and the eyes' folded into the neck's, their
    motion being in the targets), so the head turns and the neck bends as FLAME skins them.
    One animation, LINEAR samplers at the frame times i / fps: the 52 weights, the root's
    rotation and translation (`rotation`, `translation`) and the neck's rotation (`neck_pose`).
    """
    import pygltflib as gl

    if curves.num_frames == 0:
        raise TalkingAvatarError(f"{path}: the performance has no frames; nothing to animate")
    if params.num_frames != curves.num_frames:
        raise ValueError(
            f"{params.num_frames} frames of parameters for {curves.num_frames} of curves"
        )
    check_output_path(path, what="output")
    neutral, targets, joints = _glb_geometry(head, params)
    blob = _Blob()  # accessors in file order: mesh, skin, animation
    mesh = _glb_mesh(gl, blob, head, neutral, targets)
    skin = _glb_skin(gl, blob, joints)
    root, neck = joints
    channels, samplers = _glb_animation(gl, blob, curves, params, root)
    gltf = gl.GLTF2(
        asset=gl.Asset(generator="talking-avatar", version="2.0"),
        scene=0,
        scenes=[gl.Scene(nodes=[0, 2])],
        nodes=[
            gl.Node(name="root", translation=root.tolist(), children=[1]),
            gl.Node(name="neck", translation=(neck - root).tolist()),
            gl.Node(name="head", mesh=0, skin=0),
        ],
        meshes=[mesh],
        skins=[skin],
        accessors=blob.accessors,
        bufferViews=blob.views,
        buffers=[gl.Buffer(byteLength=len(blob.data))],
        animations=[gl.Animation(name="performance", channels=channels, samplers=samplers)],
    )
    gltf.set_binary_blob(bytes(blob.data))
    with atomic_path(path, what="output") as tmp:
        tmp.write_bytes(b"".join(gltf.save_to_bytes()))
    return Path(path)


def _glb_mesh(gl, blob: _Blob, head: FlameModel, neutral: np.ndarray, targets: list[np.ndarray]):
    """The head mesh: the neutral's positions, normals, indices and skin attributes (FLAME's
    root weight on joint 0, the rest on the neck), and one morph target per ARKit unit."""
    faces = head.faces.cpu().numpy()
    root_weight = head.lbs_weights[:, 0].numpy()  # [V]; the rest follows the neck
    attributes = gl.Attributes(
        POSITION=blob.add(neutral, "VEC3", vertex=True, bounds=True),
        NORMAL=blob.add(
            vertex_normals(neutral, faces, default=(0.0, 0.0, 1.0)), "VEC3", vertex=True
        ),
        JOINTS_0=blob.add(np.tile(np.uint8([0, 1, 0, 0]), (len(neutral), 1)), "VEC4", vertex=True),
        WEIGHTS_0=blob.add(
            np.stack([root_weight, 1 - root_weight, *np.zeros((2, len(neutral)))], 1),
            "VEC4",
            vertex=True,
        ),
    )
    index_type = np.uint16 if len(neutral) < 2**16 else np.uint32
    primitive = gl.Primitive(
        attributes=attributes,
        indices=blob.add(faces.reshape(-1).astype(index_type), "SCALAR", indices=True),
        targets=[
            gl.Attributes(POSITION=blob.add(t, "VEC3", vertex=True, bounds=True)) for t in targets
        ],
    )
    return gl.Mesh(
        name="head",
        primitives=[primitive],
        weights=[0.0] * len(ARKIT_UNIT_NAMES),
        extras={"targetNames": list(ARKIT_UNIT_NAMES)},
    )


def _glb_skin(gl, blob: _Blob, joints: np.ndarray):
    """The skin of joints 0 (root) and 1 (neck) at `joints` `[2, 3]`, rest pose."""
    unbind = np.tile(np.eye(4, dtype=np.float32), (2, 1, 1))  # [2, 4, 4]: each joint to the origin
    unbind[:, :3, 3] = -joints
    # glTF's matrices are column-major
    return gl.Skin(
        joints=[0, 1], skeleton=0, inverseBindMatrices=blob.add(unbind.transpose(0, 2, 1), "MAT4")
    )


@torch.no_grad()
def _glb_geometry(
    head: FlameModel, params: FlameParams
) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """(neutral `[V, 3]`, 52 morph targets `[V, 3]` in ARKit order, root and neck joints
    `[2, 3]`), metres, for the performance's identity (first frame's shape, static offset)."""
    columns = arkit_columns(head)
    rest = head.neutral_params(2)
    shape = params.shape if params.shape.dim() == 1 else params.shape[0]
    rest.shape = head._fit_width(shape.to(rest.expr), head.num_shape, "shape")
    rest.static_offset = params.static_offset
    jaw = ARKIT_UNIT_NAMES.index("jawOpen")
    rest.expr[1] = head.face_unit_expr[columns[jaw]]
    rest.jaw_pose[1] = head.face_unit_jaw[columns[jaw]]
    neutral, opened = head(rest)  # [V, 3] each
    exprdirs = head.dirs[:, :, head.num_shape :]  # [V, 3, E]
    targets = [exprdirs @ head.face_unit_expr[c] for c in columns]  # 52 x [V, 3]
    targets[jaw] = opened - neutral
    joints = (head.J_regressor[:2] @ neutral).numpy()  # [2, 3]: root, neck (rest pose)
    return neutral.numpy(), [t.numpy() for t in targets], joints


def _glb_animation(gl, blob: _Blob, curves: ArkitCurves, params: FlameParams, root: np.ndarray):
    """The animation's channels and samplers: the mesh's (node 2) weights, the root's (node 0)
    rotation and translation, the neck's (node 1) rotation."""

    def quats(axis_angle: torch.Tensor) -> np.ndarray:  # glTF's xyzw
        wxyz = matrix_to_quat(batch_rodrigues(axis_angle.double()))  # [T, 4]
        return wxyz[:, [1, 2, 3, 0]].float().numpy()

    times = blob.add(curves.times.astype(np.float32), "SCALAR", bounds=True)
    outputs = [
        (2, "weights", blob.add(np.clip(curves.weights, 0, 1).reshape(-1), "SCALAR")),
        (0, "rotation", blob.add(quats(params.rotation), "VEC4")),
        (0, "translation", blob.add(root + params.translation.numpy(), "VEC3")),
        (1, "rotation", blob.add(quats(params.neck_pose), "VEC4")),
    ]
    samplers = [
        gl.AnimationSampler(input=times, output=o, interpolation="LINEAR") for *_, o in outputs
    ]
    channels = [
        gl.AnimationChannel(sampler=i, target=gl.AnimationChannelTarget(node=node, path=what))
        for i, (node, what, _) in enumerate(outputs)
    ]
    return channels, samplers


class _Blob:
    """The .glb's binary chunk, filled accessor by accessor (4-byte aligned, one view each)."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.views: list = []
        self.accessors: list = []

    def add(
        self,
        array: np.ndarray,
        kind: str,
        *,
        vertex: bool = False,
        indices: bool = False,
        bounds: bool = False,
    ) -> int:
        """Append an array as one accessor of `kind`; returns the accessor's index."""
        import pygltflib as gl

        dtype = np.float32 if array.dtype.kind == "f" else array.dtype.type
        flat = np.ascontiguousarray(array, dtype=dtype).reshape(-1, GLTF_WIDTHS[kind])
        self.data.extend(b"\0" * (-len(self.data) % 4))
        target = 34962 if vertex else 34963 if indices else None  # ARRAY_ / ELEMENT_ARRAY_BUFFER
        self.views.append(
            gl.BufferView(
                buffer=0, byteOffset=len(self.data), byteLength=flat.nbytes, target=target
            )
        )
        self.data.extend(flat.tobytes())
        accessor = gl.Accessor(
            bufferView=len(self.views) - 1,
            componentType=GLTF_COMPONENT_TYPES[dtype],
            count=len(flat),
            type=kind,
        )
        if bounds:
            accessor.min = flat.min(axis=0).astype(np.float64).tolist()
            accessor.max = flat.max(axis=0).astype(np.float64).tolist()
        self.accessors.append(accessor)
        return len(self.accessors) - 1
