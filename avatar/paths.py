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
