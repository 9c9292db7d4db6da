"""Render the stand-in data for a look: a phoneme-labelled frame strip and the eight emotions.

Writes docs/data_sentence_strip.png (one sentence of the talking set, a frame at the centre of
each phoneme, its eSpeak symbol and viseme below) and docs/data_emotions.png (the eight emotions
of the expression set at their apex). Without --talking/--expressions it generates the small sets
into a temporary folder first. The renderer is a plain z-buffer with Lambert shading in numpy,
enough to judge shapes; it is not the project's Gaussian renderer.

    .venv/bin/python scripts/data_figures.py [--talking DIR] [--expressions DIR] [--out docs]
"""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from animator.data.florence import load_florence
from animator.data.visemes import viseme_of
from animator.data.vocaset import load_vocaset
from avatar.flame.preview import render_mesh
from avatar.image import to_uint8

SKIN = np.array([0.86, 0.68, 0.58])
BROW = np.array([0.35, 0.24, 0.18])
COLOURS = {
    "teeth": np.array([0.95, 0.93, 0.86]),
    "tongue": np.array([0.78, 0.38, 0.40]),
    "mouth_interior": np.array([0.45, 0.18, 0.20]),
    "eyes": np.array([0.92, 0.92, 0.95]),
    "lips": np.array([0.80, 0.48, 0.46]),
}


def vertex_colours(head, num_vertices: int) -> np.ndarray:
    """Per-vertex albedo `[V, 3]` from the head's regions (skin elsewhere).

    The head has no eyebrows, so brow motion is hard to read; the skin that browDown moves most
    is painted brown as a stand-in brow.
    """
    from animator.data.driving import face_unit_vertices
    from animator.data.face_units import weights_from_targets

    colours = np.tile(SKIN, (num_vertices, 1))
    for name in ("lips", "mouth_interior", "tongue", "teeth", "eyes"):
        if name in head.regions:
            colours[head.regions[name]] = COLOURS[name]
    shape = np.zeros(head.num_shape, dtype=np.float32)
    lowered = face_unit_vertices(head, shape, weights_from_targets({"browDown": 1.0})[None])[0]
    moved = np.linalg.norm(lowered - head.v_template.numpy(), axis=1)  # [V]
    colours[moved > 0.65 * moved.max()] = BROW
    return colours


def render(
    vertices: np.ndarray,
    faces: np.ndarray,
    colours: np.ndarray,
    *,
    size: tuple[int, int] = (200, 240),
    centre: tuple[float, float, float] = (0.0, -0.025, 0.0),
    height_m: float = 0.25,
    distance_m: float = 0.8,
) -> np.ndarray:
    """Shaded render `[H, W, 3]` uint8 of a mesh seen from +z, framing height_m metres."""
    width, height = size
    side = max(width, height)  # render a square that frames height_m over `height` pixels
    fov = math.degrees(2 * math.atan(height_m * side / height / 2 / distance_m))
    image = render_mesh(
        vertices, faces, colours, size=side, distance=distance_m, fov_deg=fov, target=centre
    )
    x0, y0 = (side - width) // 2, (side - height) // 2
    return to_uint8(image[y0 : y0 + height, x0 : x0 + width])


def _label(tile: np.ndarray, lines: list[str], font) -> Image.Image:
    h, w = tile.shape[:2]
    canvas = Image.new("RGB", (w, h + 18 * len(lines) + 4), "white")
    canvas.paste(Image.fromarray(tile), (0, 0))
    draw = ImageDraw.Draw(canvas)
    for k, text in enumerate(lines):
        box = draw.textbbox((0, 0), text, font=font)
        draw.text(((w - (box[2] - box[0])) / 2, h + 2 + 18 * k), text, fill="black", font=font)
    return canvas


def _grid(tiles: list[Image.Image], columns: int, title: str, font) -> Image.Image:
    w, h = tiles[0].size
    rows = (len(tiles) + columns - 1) // columns
    sheet = Image.new("RGB", (w * columns, h * rows + 26), "white")
    ImageDraw.Draw(sheet).text((6, 4), title, fill="black", font=font)
    for k, tile in enumerate(tiles):
        sheet.paste(tile, ((k % columns) * w, 26 + (k // columns) * h))
    return sheet


def sentence_strip(talking: Path, head, out: Path, *, subject: str | None, max_frames: int = 24):
    dataset = load_vocaset(talking)
    subject = subject or dataset.keys[0][0]
    sample = dataset.sample(subject, next(s for u, s in dataset.keys if u == subject))
    faces = head.faces.numpy()
    colours = vertex_colours(head, sample.template.shape[0])
    font = ImageFont.load_default(size=14)
    spoken = [p for p in sample.timings if viseme_of(p.label) != "rest"][:max_frames]
    tiles = []
    for p in spoken:
        frame = min(int(round(0.5 * (p.start + p.end) * sample.fps)), sample.num_frames - 1)
        image = render(
            np.asarray(sample.vertices[frame]),
            faces,
            colours,
            size=(150, 120),
            centre=(0.0, -0.06, 0.0),
            height_m=0.11,
        )
        tiles.append(_label(image, [p.label, viseme_of(p.label)], font))
    title = (
        f"{sample.subject} {sample.sentence}: lower face at each phoneme's centre "
        "(eSpeak symbol, viseme class)"
    )
    _grid(tiles, 8, title, font).save(out)


def emotion_grid(expressions: Path, head, out: Path, *, identity: str | None):
    dataset = load_florence(expressions)
    identity = identity or dataset.identities[0]
    faces = head.faces.numpy()
    font = ImageFont.load_default(size=14)
    order = ["neutral", "happy", "sad", "angry", "surprised", "fearful", "disgusted", "contempt"]
    tiles = []
    for emotion in [e for e in order if e in dataset.expressions]:
        sample = dataset.sample(identity, emotion)
        apex = next((t for t in sample.timings if t.label == "apex"), None)
        frame = (
            sample.num_frames // 2
            if apex is None
            else int(0.5 * (apex.start + apex.end) * sample.fps)
        )
        colours = vertex_colours(head, sample.template.shape[0])
        image = render(np.asarray(sample.vertices[frame]), faces, colours, size=(220, 264))
        tiles.append(_label(image, [emotion], font))
    _grid(tiles, 4, f"{identity}: the eight emotions at apex", font).save(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--talking", type=Path, help="a talking set (default: generate --small)")
    parser.add_argument("--expressions", type=Path, help="an expression set (default: --small)")
    parser.add_argument("--subject", help="talking-set subject to show")
    parser.add_argument("--identity", help="expression-set identity to show")
    parser.add_argument("--out", type=Path, default=Path("docs"))
    args = parser.parse_args()

    from avatar.flame import load_flame

    head = load_flame()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        talking, expressions = args.talking, args.expressions
        if talking is None:
            from animator.data.talking import generate_talking_set

            talking = Path(tmp) / "talking"
            generate_talking_set(talking, small=True, head=head, progress=False, log=None)
        if expressions is None:
            from animator.data.expressions import generate_expression_set

            expressions = Path(tmp) / "expressions"
            generate_expression_set(expressions, small=True, head=head, progress=False, log=None)
        strip = args.out / "data_sentence_strip.png"
        sentence_strip(talking, head, strip, subject=args.subject)
        print(f"wrote {strip}")
        grid = args.out / "data_emotions.png"
        emotion_grid(expressions, head, grid, identity=args.identity)
        print(f"wrote {grid}")


if __name__ == "__main__":
    main()
