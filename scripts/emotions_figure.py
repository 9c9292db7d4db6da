"""Render the seven emotions on the painted Gaussian avatar, driven by the face units, and measure them.

Writes docs/emotions_units.png: neutral and the seven emotions (`emotion_weights`, the expression
set's prototypes) at intensity 1 and 0.5, front and three-quarter view, one large tile per face.
Prints, for docs/expressions.md, the expression table (`animator.metrics.expression_table`) of
the face units driven directly and of the expression set's ground truth at its apex (identity 0
of a small set generated into a temporary folder, or of --expressions).

    .venv/bin/python scripts/emotions_figure.py [--out docs/emotions_units.png] [--size 340]
        [--no-captions] [--expressions DIR]

Without captions the sheet is for checking that each emotion can be named from the face alone.
"""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from animator.data import load_florence
from animator.data.expressions import EMOTIONS, emotion_fields, generate_expression_set
from animator.metrics import apex_fields, expression_table
from avatar.builder import load_avatar
from avatar.camera import Camera
from avatar.flame import load_flame
from avatar.flame.preview import labelled_sheet
from avatar.render import render

#: Framing of one face: per view, the azimuth (degrees) and the point the camera looks at (the
#: middle of the face; turned, the middle of the head), from FACE_DISTANCE metres.
VIEWS = (("front", 0.0, (0.0, -0.022, 0.02)), ("three-quarter", 35.0, (0.0, -0.028, 0.0)))
FACE_DISTANCE = 0.42
FACE_FOV_Y = math.radians(25.0)
INTENSITIES = (1.0, 0.5)


def emotion_sheet(head, avatar, *, size: int, captions: bool) -> np.ndarray:
    """`[H, W, 3]` uint8: one column per emotion (neutral first), one row per view and intensity."""
    fields = emotion_fields(head, INTENSITIES)
    rest = head.v_template
    tiles, labels = [], []
    for view, azimuth, target in VIEWS:
        camera = Camera.orbit(
            target,
            FACE_DISTANCE,
            math.radians(azimuth),
            0.0,
            fov_y=FACE_FOV_Y,
            width=size,
            height=size,
        )
        for intensity in INTENSITIES:
            for emotion in EMOTIONS:
                disp = 0.0 if emotion == "neutral" else torch.from_numpy(fields[emotion][intensity])
                with torch.no_grad():
                    image = render(avatar.pose(rest + disp), camera, backend="cpu").color
                tiles.append((image.clamp(0, 1).numpy() * 255).astype(np.uint8))
                label = emotion if emotion == "neutral" else f"{emotion} {intensity:g}"
                labels.append(f"{label}, {view}" if captions else "")
    return labelled_sheet(tiles, labels, columns=len(EMOTIONS))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/emotions_units.png"))
    parser.add_argument("--size", type=int, default=340, help="pixels per face (square)")
    parser.add_argument("--no-captions", action="store_true")
    parser.add_argument("--expressions", type=Path, help="an expression set (default: --small)")
    args = parser.parse_args()

    head = load_flame()
    sheet = emotion_sheet(
        head, load_avatar(None, head), size=args.size, captions=not args.no_captions
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp.png")
    # A 256-colour palette keeps the sheet under 1 MB; the faces' smooth shading survives it.
    Image.fromarray(sheet).quantize(256, method=Image.Quantize.MEDIANCUT).save(tmp, optimize=True)
    tmp.replace(args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)\n")

    print("Face units driven directly (the rest identity):\n")
    print(expression_table(head, emotion_fields(head, (0.5, 1.0))).markdown())
    with tempfile.TemporaryDirectory() as tmp_dir:
        expressions = args.expressions
        if expressions is None:
            expressions = Path(tmp_dir) / "expressions"
            generate_expression_set(expressions, small=True, head=head, progress=False, log=None)
        dataset = load_florence(expressions)
        identity = dataset.identities[0]
        rest, fields = apex_fields(dataset, identity)
        print(f"\nExpression set, {identity} at its apex (mean over the apex hold):\n")
        print(expression_table(head, fields, rest=rest).markdown())


if __name__ == "__main__":
    main()
