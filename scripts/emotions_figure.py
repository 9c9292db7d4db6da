"""Render the seven emotions on the painted Gaussian avatar, driven by the face units, and measure them.

Writes docs/emotions_units.png: neutral and the seven emotions (`emotion_weights`, the expression
set's prototypes) at intensity 1 and 0.5, front and three-quarter view, one large tile per face.
With --animator CKPT (or "bundled") it draws a trained animator's emotions instead, through the
shipped path, at 1 and 0.5 on the silent face and at 1 in the middle of a spoken open vowel of
the sample speech: docs/emotions.png.
Prints, for docs/expressions.md, the expression table (`animator.expression_metrics.expression_table`) of
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
from animator.expression_metrics import apex_fields, expression_table
from avatar.atomic import atomic_path
from avatar.avatars import load_avatar
from avatar.camera import Camera
from avatar.flame import load_flame
from avatar.flame.preview import labelled_sheet
from avatar.image import to_uint8
from avatar.render import render

#: Framing of one face: per view, the azimuth (degrees) and the point the camera looks at (the
#: middle of the face; turned, the middle of the head), from FACE_DISTANCE metres.
VIEWS = (("front", 0.0, (0.0, -0.022, 0.02)), ("three-quarter", 35.0, (0.0, -0.028, 0.0)))
FACE_DISTANCE = 0.42
FACE_FOV_Y = math.radians(25.0)
INTENSITIES = (1.0, 0.5)


def emotion_sheet(
    head,
    avatar,
    fields: dict[str, dict[float, np.ndarray | torch.Tensor]],
    *,
    size: int,
    captions: bool,
    rest: torch.Tensor | None = None,
) -> np.ndarray:
    """`[H, W, 3]` uint8: one column per emotion (neutral first), one row per view and key of
    `fields` (an intensity, or a label such as "saying 'ah'"); `fields["neutral"]` may hold
    the neutral face for a key (default: the rest pose)."""
    rest = head.v_template if rest is None else rest
    keys = list(next(f for e, f in fields.items() if e != "neutral"))
    tiles, labels = [], []
    for view, azimuth, target in VIEWS:
        camera = Camera.orbit(
            target, FACE_DISTANCE, math.radians(azimuth), 0.0, fov_y=FACE_FOV_Y,
            width=size, height=size,
        )  # fmt: skip
        for key in keys:
            for emotion in EMOTIONS:
                disp = fields.get(emotion, {}).get(key, 0.0)
                with torch.no_grad():
                    image = render(avatar.pose(rest + torch.as_tensor(disp)), camera, backend="cpu")
                tiles.append(to_uint8(image.color))
                what = key if isinstance(key, str) else f"{key:g}"
                label = (
                    f"{emotion} {what}" if emotion != "neutral" or isinstance(key, str) else emotion
                )
                labels.append(f"{label}, {view}" if captions else "")
    return labelled_sheet(tiles, labels, columns=len(EMOTIONS))


def animator_fields(anim, speech: Path) -> dict[str, dict[object, torch.Tensor]]:
    """The trained animator's emotions through the shipped path: at 1 and 0.5 on the silent
    face, and at 1 in the middle of the longest open vowel of `speech` (its .json beside it)."""
    import json

    from animator.audio import load_audio
    from animator.emotion import as_track
    from animator.lipsync import detect_alphabet, phone_class

    phones = json.loads(speech.with_suffix(".json").read_text())["phonemes"]
    alphabet = detect_alphabet(p["phoneme"] for p in phones)
    vowel = max(
        (p for p in phones if phone_class(p["phoneme"], alphabet) == "open"),
        key=lambda p: p["end"] - p["start"],
    )
    audio = load_audio(speech)
    w_a, speaking = anim.speech_track(audio, fps=anim.fps)
    frame = int(round(0.5 * (vowel["start"] + vowel["end"]) * anim.fps))
    key = f"saying '{vowel['phoneme']}'"
    fields: dict[str, dict[object, torch.Tensor]] = {
        e: dict(f) for e, f in anim.emotion_fields(INTENSITIES).items()
    }
    with torch.no_grad():
        for emotion in EMOTIONS:
            mix = {} if emotion == "neutral" else {emotion: 1.0}
            w_e = anim.emotion_weights(as_track(mix), 1)
            params = anim.to_flame(w_a[frame : frame + 1], w_e, speaking[frame : frame + 1])
            fields.setdefault(emotion, {})[key] = anim.head(params)[0] - anim.head.v_template
    return fields


def save_sheet(sheet: np.ndarray, out: Path) -> None:
    # A 256-colour palette keeps the sheet under 1 MB; the faces' smooth shading survives it.
    with atomic_path(out, what="figure") as tmp:
        Image.fromarray(sheet).quantize(256, method=Image.Quantize.MEDIANCUT).save(
            tmp, format="PNG", optimize=True
        )
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB)\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="PNG (default: per mode, in docs/)")
    parser.add_argument("--size", type=int, default=340, help="pixels per face (square)")
    parser.add_argument("--no-captions", action="store_true")
    parser.add_argument("--expressions", type=Path, help="an expression set (default: --small)")
    parser.add_argument(
        "--animator", default=None, metavar="CKPT",
        help="draw a trained animator's emotions (docs/emotions.png) instead of the face units",
    )  # fmt: skip
    args = parser.parse_args()

    head = load_flame()
    avatar = load_avatar(None, head)
    captions = not args.no_captions
    if args.animator is not None:
        from animator import Animator
        from avatar.paths import asset_path

        anim = Animator.load(None if args.animator == "bundled" else args.animator, head=head)
        fields = animator_fields(anim, asset_path("speech", "sample.wav"))
        save_sheet(
            emotion_sheet(head, avatar, fields, size=args.size, captions=captions),
            args.out or Path("docs/emotions.png"),
        )
        print("The animator's emotions (silent face, through FLAME):\n")
        print(expression_table(head, anim.emotion_fields((0.5, 1.0))).markdown())
        return
    fields = emotion_fields(head, INTENSITIES)
    save_sheet(
        emotion_sheet(head, avatar, fields, size=args.size, captions=captions),
        args.out or Path("docs/emotions_units.png"),
    )
    print("Face units driven directly (the rest identity):\n")
    print(expression_table(head, emotion_fields(head, (0.5, 1.0))).markdown())
    with tempfile.TemporaryDirectory() as tmp_dir:
        expressions = args.expressions
        if expressions is None:
            expressions = Path(tmp_dir) / "expressions"
            generate_expression_set(expressions, small=True, head=head, progress=False, log=None)
        dataset = load_florence(expressions)
        identity = dataset.identities[0]
        rest, truth = apex_fields(dataset, identity)
        print(f"\nExpression set, {identity} at its apex (mean over the apex hold):\n")
        print(expression_table(head, truth, rest=rest).markdown())


if __name__ == "__main__":
    main()
