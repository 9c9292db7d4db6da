"""Which avatar to drive: a PLY with a binding, a GaussianAvatars output folder (with its
identity), the bundled default, or the default recipe painted on another head."""

from __future__ import annotations

from pathlib import Path

import torch

from avatar.binding import GaussianAvatar
from avatar.builder import build_default_avatar
from avatar.errors import TalkingAvatarError
from avatar.flame.model import FlameModel
from avatar.paths import ASSETS_DIR

DEFAULT_AVATAR = ASSETS_DIR / "avatar" / "avatar.ply"


def _is_bundled(model: FlameModel) -> bool:
    from avatar.flame.model import BUNDLED_HEAD

    if model.source == str(BUNDLED_HEAD):
        return True
    from avatar.flame import load_flame

    bundled = load_flame(BUNDLED_HEAD)
    return model.num_vertices == bundled.num_vertices and torch.equal(
        model.faces.cpu(), bundled.faces
    )


def load_avatar(path: str | Path | None = None, model: FlameModel | None = None) -> GaussianAvatar:
    """The avatar to drive: a PLY with binding_0, a GaussianAvatars output folder, or the default.

    The avatar is bound to `model`'s triangles (the bundled head by default); an avatar made
    for another head (a binding past the model's triangles) is refused with a clear error. A
    GaussianAvatars folder brings its identity (shape and static offset from flame_param.npz;
    `GaussianAvatar.dress`), so performances play on that person's head, not the template.
    Without a path on a head other than the bundled one, the default avatar's recipe is painted
    on that head (it needs the lips and eye regions, which a retarget carries over).
    """
    from avatar.flame import load_flame
    from avatar.ply import load_gaussian_avatars_dir, read_avatar_ply

    model = model if model is not None else load_flame()
    if path is None and not _is_bundled(model):
        # The default avatar is bound to the bundled head's triangles; another head gets the
        # same recipe painted on its own (0.1 s), with the regions a retarget gave it.
        if not {"lips", "eye_left", "eye_right"} <= set(model.regions):
            raise TalkingAvatarError(
                f"the default avatar is made for the bundled head, and {model.source} lacks the "
                "lips/eye regions to paint one; pass --avatar (a GaussianAvatars folder or PLY), "
                "or load the animator with this model first (it carries the regions over)"
            )
        return build_default_avatar(model)
    path = Path(path) if path is not None else DEFAULT_AVATAR
    if path == DEFAULT_AVATAR and not path.exists():
        raise TalkingAvatarError(
            f"the default avatar {path} is missing; rebuild it with `make assets`"
        )
    if path.is_dir():
        from dataclasses import replace

        from avatar.flame.identity import Identity

        avatar, params = load_gaussian_avatars_dir(path, faces=model.faces)
        identity = Identity.from_arrays(params, model, source=f"{path}: flame_param.npz")
        return replace(avatar, identity=identity)
    return read_avatar_ply(path, faces=model.faces)
