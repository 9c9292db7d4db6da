"""Show each kind of speech augmentation once: one spectrogram row per kind, with numbers.

Speaks one test sentence with eSpeak NG, applies each augmentation of `animator.augment` alone
at a fixed setting, prints a line of measurements per kind and writes the spectrograms
(0-8 kHz, 70 dB range, the phoneme boundaries of the clean clip as ticks) as one PNG.

    .venv/bin/python scripts/augment_figure.py [--out docs/augment_kinds.png] [--wav-dir DIR]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from animator import augment as A
from animator.audio import SAMPLE_RATE, load_audio
from animator.data.espeak import Voice, synthesize

TEXT = "Maybe Bob will bring a map of the bumpy path."
WIDTH, ROW = 600, 72


def spectrogram_row(audio: np.ndarray, label: str, ticks: list[float]) -> np.ndarray:
    """A labelled log-power spectrogram image `[ROW, WIDTH, 3]` uint8 (time left to right)."""
    import librosa

    power = np.abs(librosa.stft(audio, n_fft=512, hop_length=80)) ** 2  # [257, T]
    db = 10 * np.log10(power + 1e-12)
    level = np.clip((db - db.max() + 70) / 70, 0, 1)[::-1]  # low frequencies at the bottom
    rgb = (np.stack([level**0.6, level**1.4, level**3.0], axis=-1) * 255).astype(np.uint8)
    image = Image.fromarray(rgb).resize((WIDTH, ROW))
    draw = ImageDraw.Draw(image)
    seconds = audio.shape[0] / SAMPLE_RATE
    for t in ticks:
        x = int(t / seconds * WIDTH)
        draw.line([(x, ROW - 8), (x, ROW)], fill=(90, 200, 255))
    draw.rectangle([0, 0, 8 + 6 * len(label), 14], fill=(0, 0, 0))
    draw.text((4, 2), label, fill=(255, 255, 255))
    return np.asarray(image)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="docs/augment_kinds.png")
    parser.add_argument("--wav-dir", default=None, help="also write each rendition as a wav")
    args = parser.parse_args()

    utterance = synthesize(TEXT, Voice("en-us+m3"))
    clean = load_audio(utterance.audio, utterance.sample_rate).samples
    ticks = [p.start for p in utterance.phonemes if p.symbol in ("p", "b", "m")]
    other = synthesize("Five pumpkins sat on the bench by the garden path.", Voice("en+f3"))
    third = synthesize("Father found the old violin under a blanket.", Voice("en-029+m7"))
    sources = [load_audio(u.audio, u.sample_rate).samples for u in (other, third)]
    rng = np.random.default_rng(0)
    speedy, used = A.change_speed(clean, 1.12)
    kinds: list[tuple[str, np.ndarray, float]] = [
        ("clean", clean, 1.0),
        ("speed x1.12 (shorter)", speedy, used),
        ("pitch +4 st", A.shift_pitch(clean, 4.0), 1.0),
        ("pitch -4 st", A.shift_pitch(clean, -4.0), 1.0),
        ("vocal tract 0.87", A.warp_vocal_tract(clean, 0.87), 1.0),
        ("vocal tract 1.15", A.warp_vocal_tract(clean, 1.15), 1.0),
        (
            "reverb RT60 0.7 s, DRR 0 dB",
            A.reverberate(clean, A.room_impulse_response(0.7, 0.0, rng)),
            1.0,
        ),
        (
            "pink noise 10 dB",
            A.add_at_snr(clean, A.coloured_noise(clean.shape[0], "pink", rng), 10.0),
            1.0,
        ),
        (
            "babble x5, 10 dB",
            A.add_at_snr(clean, A.babble(sources, clean.shape[0], 5, rng), 10.0),
            1.0,
        ),
        ("telephone", A.telephone(clean), 1.0),
        ("mp3 16 kbps", A.codec_round_trip(clean, "mp3", 16), 1.0),
        ("vorbis 16 kbps", A.codec_round_trip(clean, "vorbis", 16), 1.0),
        ("opus 8 kbps", A.codec_round_trip(clean, "opus", 8), 1.0),
        ("gain +10 dB, clipped", np.clip(A.apply_gain(clean, 10.0), -1, 1), 1.0),
    ]
    rows = []
    for label, audio, speed in kinds:
        rms = 20 * np.log10(np.sqrt(np.mean(audio**2)) + 1e-12)
        clipped = float(np.mean(np.abs(audio) >= 0.999)) * 100
        change = ""
        if audio.shape == clean.shape and label != "clean":
            ratio = np.sum((audio - clean) ** 2) / np.sum(clean**2)
            change = f"  change vs clean {10 * np.log10(ratio):6.1f} dB"
        print(
            f"{label:30s} {audio.shape[0] / SAMPLE_RATE:5.2f} s  RMS {rms:6.1f} dBFS  "
            f"clipped {clipped:5.2f}%{change}"
        )
        rows.append(spectrogram_row(audio, label, [t / speed for t in ticks]))
        if args.wav_dir:
            from scipy.io import wavfile

            folder = Path(args.wav_dir)
            folder.mkdir(parents=True, exist_ok=True)
            name = label.split(",")[0].replace(" ", "_").replace("/", "")
            wavfile.write(folder / f"{name}.wav", SAMPLE_RATE, (audio * 32767).astype(np.int16))
    out = Path(args.out)
    tmp = out.with_name(out.stem + ".tmp.png")
    # a 32-colour palette keeps the figure small enough to commit
    Image.fromarray(np.concatenate(rows)).quantize(32).save(tmp, optimize=True)
    tmp.replace(out)
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KB)")


if __name__ == "__main__":
    main()
