"""Training data: loaders for VOCAset and Florence4D-style sets, and stand-in generators.

`load_vocaset` and `load_florence` read the real on-disk formats (and our stand-ins, which use
them) into `MotionSample`s; `talking.generate_talking_set` and
`expressions.generate_expression_set` write the stand-ins. Importing this package loads nothing
heavy: no head model, no eSpeak library.
"""

from animator.data.florence import FlorenceDataset, load_florence
from animator.data.sample import MotionSample, TimedLabel
from animator.data.vocaset import VocasetDataset, load_vocaset

__all__ = [
    "FlorenceDataset",
    "MotionSample",
    "TimedLabel",
    "VocasetDataset",
    "load_florence",
    "load_vocaset",
]
