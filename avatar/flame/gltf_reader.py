"""A small, plain glTF player: reads the .glb that `avatar.flame.arkit_export.write_arkit_glb`
writes (with pygltflib) and poses its one skinned, morphed mesh at a keyframe (morph targets,
then linear blend skinning), as glTF 2.0 specifies and three.js / Blender play it. The tests and
benchmarks/arkit.py check the writer's files with it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pygltflib

from avatar.flame.arkit_export import GLTF_COMPONENT_TYPES, GLTF_WIDTHS

_DTYPES = {code: dtype for dtype, code in GLTF_COMPONENT_TYPES.items()}


class GlbPlayer:
    """The mesh of a .glb at keyframe k of its first animation."""

    def __init__(self, path: str | Path) -> None:
        self.gltf = pygltflib.GLTF2().load(str(path))
        self.blob = self.gltf.binary_blob()
        prim = self.gltf.meshes[0].primitives[0]
        self.base = self.accessor(prim.attributes.POSITION)  # [V, 3]
        self.targets = np.stack([self.accessor(t["POSITION"]) for t in prim.targets])  # [U, V, 3]
        self.joints = self.accessor(prim.attributes.JOINTS_0).astype(np.int64)  # [V, 4]
        self.weights = self.accessor(prim.attributes.WEIGHTS_0)  # [V, 4]
        skin = self.gltf.skins[0]
        unbind = self.accessor(skin.inverseBindMatrices).reshape(-1, 4, 4)
        self.unbind = unbind.transpose(0, 2, 1)  # column-major -> [J, 4, 4]
        self.skin_joints = skin.joints
        anim = self.gltf.animations[0]
        self.times = self.accessor(anim.samplers[0].input)[:, 0]  # [T]
        self.channels = {
            (c.target.node, c.target.path): self.accessor(anim.samplers[c.sampler].output)
            for c in anim.channels
        }

    def accessor(self, index: int) -> np.ndarray:
        """Accessor `index` as an array `[count, width]`."""
        a = self.gltf.accessors[index]
        view = self.gltf.bufferViews[a.bufferView]
        width = GLTF_WIDTHS[a.type]
        start = view.byteOffset + (a.byteOffset or 0)
        flat = np.frombuffer(self.blob, _DTYPES[a.componentType], a.count * width, start)
        return flat.reshape(a.count, width)

    def morph_weights(self, k: int) -> np.ndarray:
        """`[U]` the mesh's morph weights at keyframe k."""
        mesh_node = next(i for i, n in enumerate(self.gltf.nodes) if n.mesh is not None)
        out = self.channels[(mesh_node, "weights")]
        return out.reshape(len(self.times), -1)[k]

    def vertices(self, k: int) -> np.ndarray:
        """`[V, 3]` the mesh at keyframe k: morphs, then skinning."""
        rest = self.base + np.einsum("u,uvc->vc", self.morph_weights(k), self.targets)
        skinning = np.stack(
            [self._world(j, k) @ self.unbind[i] for i, j in enumerate(self.skin_joints)]
        )  # [J, 4, 4]
        blend = np.einsum("vi,virc->vrc", self.weights, skinning[self.joints])  # [V, 4, 4]
        return np.einsum("vrc,vc->vr", blend[:, :3, :3], rest) + blend[:, :3, 3]

    def _world(self, node: int, k: int) -> np.ndarray:
        parent = next(
            (i for i, n in enumerate(self.gltf.nodes) if node in (n.children or [])), None
        )
        local = self._local(node, k)
        return local if parent is None else self._world(parent, k) @ local

    def _local(self, node: int, k: int) -> np.ndarray:
        n = self.gltf.nodes[node]
        m = np.eye(4)
        t = self.channels.get((node, "translation"))
        m[:3, 3] = t[k] if t is not None else (n.translation or [0.0, 0.0, 0.0])
        q = self.channels.get((node, "rotation"))
        x, y, z, w = q[k] if q is not None else (n.rotation or [0.0, 0.0, 0.0, 1.0])
        m[:3, :3] = [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
        return m
