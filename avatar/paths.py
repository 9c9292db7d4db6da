"""Where the embedded defaults live, and how a user points at their own files."""

from __future__ import annotations

import os
from pathlib import Path

from avatar.errors import TalkingAvatarError

#: The repository's `assets/` folder; `TALKING_AVATAR_ASSETS` overrides it.
ASSETS_DIR = Path(
    os.environ.get("TALKING_AVATAR_ASSETS", Path(__file__).resolve().parent.parent / "assets")
)


def asset_path(*parts: str) -> Path:
    """Path of a bundled asset, with a clear error when it is missing."""
    path = ASSETS_DIR.joinpath(*parts)
    if not path.exists():
        raise TalkingAvatarError(
            f"bundled asset {path} is missing; rebuild it with `make assets` "
            "or set TALKING_AVATAR_ASSETS to a folder that has it"
        )
    return path


def ensure_folder(path: str | Path) -> Path:
    """Create an output folder (and its parents), or say in one line why it cannot be."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise TalkingAvatarError(
            f"cannot create folder {path} ({err.strerror}); choose a writable --out"
        ) from None
    return path
