"""Draw a phone alignment for a look: waveform, spectrogram (0-4 kHz) and labelled phone spans.

Bilabials (P, B, M) are shaded red across the whole figure, so a reader can check that each one
sits on a closure (a gap or a low, voiced murmur in the spectrogram) and that the vowels next to
them start and end where their formants do.

    .venv/bin/python scripts/plot_alignment.py data/eval_speech/<clip>.json [--out clip.png]

draws a clip of the evaluation set (the .wav beside the .json); `save_alignment_figure` is the
same drawing for arrays, used by build_eval_speech.py and benchmarks/tts.py.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image, ImageDraw, ImageFont

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from animator.data.align import PhoneSpan  # noqa: E402
from animator.data.visemes import viseme_of_arpabet  # noqa: E402

PX_PER_S = 400
WAVE_H, SPEC_H, LABEL_H = 70, 150, 36
MAX_HZ = 4000.0  # the telephone-band clips have nothing above


def _spectrogram(samples: np.ndarray, rate: int, width: int) -> np.ndarray:
    """Log-magnitude spectrogram `[SPEC_H, width]` in [0, 1], low frequencies at the bottom."""
    x = samples.astype(np.float64) / 32768.0  # [N]
    n_fft = int(2 ** np.ceil(np.log2(0.025 * rate)))
    hop = max(1, x.shape[0] // width)
    pad = np.pad(x, (n_fft // 2, n_fft // 2))
    starts = np.arange(width) * hop
    frames = np.stack([pad[s : s + n_fft] for s in starts if s + n_fft <= pad.shape[0]])
    mag = np.abs(np.fft.rfft(frames * np.hanning(n_fft), axis=1))  # [W', F]
    keep = int(MAX_HZ / (rate / n_fft))
    db = 20 * np.log10(mag[:, :keep] + 1e-6)
    db = np.clip((db - (db.max() - 70.0)) / 70.0, 0.0, 1.0)  # 70 dB of range
    image = Image.fromarray((255 * (1 - db.T[::-1])).astype(np.uint8))
    return np.asarray(image.resize((width, SPEC_H), Image.BILINEAR))


def alignment_figure(
    samples: np.ndarray, rate: int, spans: Sequence[PhoneSpan], *, title: str = ""
) -> Image.Image:
    """The figure for int16 `samples` `[N]` at `rate` and their phone spans (ARPAbet)."""
    duration = samples.shape[0] / rate
    width = max(200, int(duration * PX_PER_S))
    top = 18
    image = Image.new("RGB", (width, top + WAVE_H + SPEC_H + LABEL_H), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    for span in spans:
        if viseme_of_arpabet(span.symbol) == "bilabial":
            x0, x1 = span.start * PX_PER_S, span.end * PX_PER_S
            draw.rectangle([x0, top, x1, image.height], fill=(255, 215, 215))
    # Waveform: min/max per pixel column.
    x = samples.astype(np.float64) / 32768.0
    peak = max(np.abs(x).max(), 1e-3)
    mid = top + WAVE_H // 2
    per_px = max(1, x.shape[0] // width)
    for px in range(width):
        chunk = x[px * per_px : (px + 1) * per_px]
        if chunk.size:
            lo, hi = chunk.min() / peak, chunk.max() / peak
            draw.line([px, mid - hi * WAVE_H / 2, px, mid - lo * WAVE_H / 2], fill=(40, 40, 40))
    spec = _spectrogram(samples, rate, width)  # [SPEC_H, width]
    spec_rgb = Image.fromarray(np.stack([spec] * 3, axis=-1))
    tinted = Image.blend(spec_rgb, image.crop((0, top + WAVE_H, width, top + WAVE_H + SPEC_H)), 0.3)
    image.paste(tinted, (0, top + WAVE_H))
    label_y = top + WAVE_H + SPEC_H
    for span in spans:
        x0 = int(span.start * PX_PER_S)
        draw.line([x0, top, x0, label_y + LABEL_H], fill=(120, 120, 200))
        viseme = viseme_of_arpabet(span.symbol)
        colour = (200, 0, 0) if viseme == "bilabial" else (0, 0, 0)
        if span.symbol != "SIL":
            draw.text((x0 + 2, label_y + 4), span.symbol, fill=colour, font=font)
    words_drawn = set()
    for span in spans:
        if span.word_index is not None and span.word_index not in words_drawn:
            words_drawn.add(span.word_index)
            draw.text((span.start * PX_PER_S + 2, label_y + 20), span.word, fill=(0, 90, 0))
    draw.text((4, 3), f"{title}  ({duration:.2f} s, {rate} Hz)", fill=(0, 0, 0), font=font)
    return image


def save_alignment_figure(
    path: Path, samples: np.ndarray, rate: int, spans: Sequence[PhoneSpan], *, title: str = ""
) -> None:
    """Write `alignment_figure` as a PNG (64 colours: a few seconds stay under 100 KB)."""
    image = alignment_figure(samples, rate, spans, title=title)
    image.quantize(colors=64).save(path, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("clip", type=Path, help="a <clip>.json of the evaluation set")
    parser.add_argument("--out", type=Path, default=None, help="PNG (default: beside the clip)")
    args = parser.parse_args()
    meta = json.loads(args.clip.read_text())
    samples, rate = sf.read(args.clip.with_suffix(".wav"), dtype="int16")
    spans = [PhoneSpan(p["symbol"], p["start"], p["end"]) for p in meta["phones"]]
    out = args.out or args.clip.with_suffix(".png")
    save_alignment_figure(out, samples, rate, spans, title=f"{args.clip.stem}: {meta['text']}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
