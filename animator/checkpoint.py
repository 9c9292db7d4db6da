"""Animator checkpoints: a folder with `config.json` and `weights.safetensors`, nothing pickled."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from avatar.atomic import atomic_folder
from avatar.errors import TalkingAvatarError

CONFIG = "config.json"
WEIGHTS = "weights.safetensors"
FORMAT = "talking-avatar-animator"
VERSION = 1


def save_checkpoint(
    path: str | Path, config: dict[str, Any], tensors: dict[str, torch.Tensor]
) -> Path:
    """Write a checkpoint folder atomically (a temporary folder renamed into place)."""
    from safetensors.torch import save_file

    path = Path(path)
    with atomic_folder(path, what="animator checkpoint") as tmp:
        meta = {"format": FORMAT, "version": VERSION, **config}
        (tmp / CONFIG).write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
        save_file(
            {k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp / WEIGHTS)
        )
    return path


def load_checkpoint(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Read a checkpoint folder; any problem is one clear error naming the file."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_dir():
        what = "does not exist" if not path.exists() else "is not a checkpoint folder"
        raise TalkingAvatarError(
            f"animator checkpoint {path} {what}; pass a folder written by `talking-avatar train`"
        )
    cfg_path, w_path = path / CONFIG, path / WEIGHTS
    for p in (cfg_path, w_path):
        if not p.exists():
            raise TalkingAvatarError(
                f"animator checkpoint {path} lacks {p.name}; retrain or re-copy it"
            )
    try:
        config = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise TalkingAvatarError(
            f"{cfg_path} is not valid JSON ({err}); the checkpoint is damaged"
        ) from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise TalkingAvatarError(f"{cfg_path} is not a talking-avatar animator config")
    if config.get("version") != VERSION:
        raise TalkingAvatarError(
            f"{path} is animator checkpoint version {config.get('version')}; this program reads "
            f"version {VERSION}: retrain it with `talking-avatar train`"
        )
    try:
        tensors = load_file(str(w_path))
    except (SafetensorError, OSError, ValueError) as err:
        raise TalkingAvatarError(
            f"{w_path} is not a readable safetensors file ({err}); the checkpoint is damaged"
        ) from None
    return config, tensors
