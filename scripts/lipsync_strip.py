"""A strip of mouth close-ups of a real recording, frame by frame, with its aligned phones.

Writes docs/lipsync_strip.png: the bundled animator (or --checkpoint) speaking a recording of the
real-speech evaluation set (`make eval-speech`; default praatio's "Bobby ripped the ledger": three
bilabials in 1.3 s), one mouth close-up per frame at 30 fps, each captioned with the phone the
forced aligner places at that instant (bilabials in capitals and red), and under the frames the
inner-lip gap in millimetres with the p/b/m spans shaded.

    python scripts/lipsync_strip.py [--clip data/eval_speech/praatio-bobby.wav] [--out PNG]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from animator import Animator
from animator.audio import load_audio
from animator.data.lips import inner_lip_gap
from animator.data.sample import TimedLabel
from animator.lipsync import detect_alphabet, phone_class
from avatar.atomic import atomic_path
from avatar.avatars import load_avatar
from avatar.camera import Camera
from avatar.image import to_uint8
from avatar.render import render

TILE = 128  # pixels per close-up
COLUMNS = 14
LABEL = 22  # pixels under each tile for its phone
PLOT = 150  # pixels of the gap plot
MOUTH_DISTANCE = 0.16  # metres from the mouth
FOV_Y = math.radians(25.0)


def phone_at(timings: list[TimedLabel], t: float) -> TimedLabel | None:
    return next((p for p in timings if p.start <= t < p.end), None)


def strip(anim: Animator, wav: Path, *, tile: int = TILE, columns: int = COLUMNS) -> np.ndarray:
    head = anim.head
    meta = json.loads(wav.with_suffix(".json").read_text())
    timings = [TimedLabel(p["symbol"], p["start"], p["end"]) for p in meta["phones"]]
    alphabet = detect_alphabet(t.label for t in timings)
    audio = load_audio(wav)
    perf = anim.animate(audio, fps=anim.fps, idle=False)
    with torch.no_grad():
        vertices = head(perf.params)  # [T, V, 3]
    gap = 1000.0 * inner_lip_gap(
        vertices.numpy(), head.region("lip_upper_inner"), head.region("lip_lower_inner"),
        anchors=head.region("teeth_upper"), reference=head.v_template.numpy(),
    )  # fmt: skip
    lips = head.v_template[head.region("lips")]
    mouth = lips.mean(dim=0).tolist()
    camera = Camera.orbit(
        mouth, MOUTH_DISTANCE, 0.0, math.radians(8.0), fov_y=FOV_Y, width=tile, height=tile
    )
    avatar = load_avatar(None, head)
    frames = len(vertices)
    rows = math.ceil(frames / columns)
    width = columns * tile
    sheet = Image.new("RGB", (width, rows * (tile + LABEL) + PLOT + 30), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for i in range(frames):
        with torch.no_grad():
            image = render(avatar.pose(vertices[i]), camera, backend="cpu").color
        x, y = (i % columns) * tile, (i // columns) * (tile + LABEL)
        sheet.paste(Image.fromarray(to_uint8(image)), (x, y))
        phone = phone_at(timings, i / anim.fps)
        name = "" if phone is None else phone.label
        bilabial = phone is not None and phone_class(phone.label, alphabet) == "bilabial"
        colour = (200, 0, 0) if bilabial else (0, 0, 0)
        draw.text((x + 4, y + tile + 4), f"{i / anim.fps:.2f}s {name}", fill=colour)
    # the gap plot: one column of the plot per frame, in step with the tiles above
    top = rows * (tile + LABEL) + 10
    scale = PLOT / max(12.0, float(gap.max()) + 1.0)
    step = width / frames
    for t in timings:
        if phone_class(t.label, alphabet) == "bilabial":
            x0, x1 = t.start * anim.fps * step, t.end * anim.fps * step
            draw.rectangle((x0, top, x1, top + PLOT), fill=(255, 215, 215))
    points = [(i * step + step / 2, top + PLOT - max(0.0, g) * scale) for i, g in enumerate(gap)]
    draw.line((0, top + PLOT, width, top + PLOT), fill=(160, 160, 160))
    draw.line(points, fill=(0, 0, 160), width=2)
    draw.text(
        (6, top + PLOT + 4),
        f'"{meta.get("text", wav.stem)}" ({wav.stem}, {meta.get("speaker", "")}): inner-lip gap '
        f"(mm, 0 at the grey line, {1 / scale:.1f} mm per pixel); p/b/m shaded",
        fill=(0, 0, 0),
    )
    return np.asarray(sheet)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", type=Path, default=Path("data/eval_speech/praatio-bobby.wav"))
    parser.add_argument("--checkpoint", default=None, help="animator (default: the bundled one)")
    parser.add_argument("--out", type=Path, default=Path("docs/lipsync_strip.png"))
    args = parser.parse_args()
    image = strip(Animator.load(args.checkpoint), args.clip)
    with atomic_path(args.out, what="figure") as tmp:
        Image.fromarray(image).save(tmp, format="PNG", optimize=True)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e3:.0f} KB)")


if __name__ == "__main__":
    main()
