"""Audio to FLAME parameters: speech model, disentangled blendshapes, emotions, training data."""

from animator.animator import Animator, Performance

__all__ = ["Animator", "Performance"]
