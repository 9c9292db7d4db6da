"""FLAME-format head models: loading (no chumpy needed), skinning via smplx, landmarks, regions."""

from avatar.flame.model import FLAME_ENV, FlameModel, load_flame
from avatar.flame.params import FlameParams

__all__ = ["FLAME_ENV", "FlameModel", "FlameParams", "load_flame"]
