"""The head and its Gaussians: FLAME-format head model, triangle-bound Gaussians, rendering.

Importing this package loads no model, touches no GPU and starts nothing.
"""

from avatar.errors import TalkingAvatarError

__all__ = ["TalkingAvatarError"]
