"""Screen eSpeak NG's voice variants for the talking set: which make plausible human speech?

For every variant the library lists (and the plain voice), two test sentences in en-US at the
default rate give: duration relative to the plain voice, median F0 and its spread in semitones
(librosa.pyin; whisper voices have none), the voiced share, the share of int16 samples in
eSpeak's soft limiter (|x| >= 32000) at volume 100, the echo the variant file asks for (delay ms,
amplitude %), and the variant whose waveform correlates best with it (same-length outputs only;
> 0.99 means the same timbre). Prints a Markdown table and whether
`voices.ESPEAK_DROPPED_VARIANTS` drops each one.

    .venv/bin/python scripts/screen_espeak_voices.py > screen.md
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from animator.audio import load_audio
from animator.data.espeak import Voice, list_voices, synthesize
from animator.data.voices import ESPEAK_DROPPED_VARIANTS

TEXTS = (
    "Maybe the baker will bring a bigger basket of plums tomorrow.",
    "Please pass me both maps before the meeting begins.",
)
PLAIN = "(plain)"


def echo_of(variant: str) -> str:
    """The `echo delay amplitude` line of the variant file, or "-"."""
    import espeakng_loader

    path = Path(espeakng_loader.get_data_path()) / "voices" / "!v" / variant
    for line in path.read_text(errors="replace").splitlines():
        match = re.match(r"\s*echo\s+(\d+)\s+(\d+)", line)
        if match:
            return f"{match.group(1)} ms {match.group(2)}%"
    return "-"


def main() -> None:
    import librosa

    variants = [PLAIN] + sorted(v.name for v in list_voices(variants=True))
    rows, waves = [], {}
    for variant in variants:
        name = "en-US" + ("" if variant == PLAIN else f"+{variant}")
        seconds, f0s, voiced, limited, total = 0.0, [], [], 0, 0
        for text in TEXTS:
            utterance = synthesize(text, Voice(name))
            limited += int(np.sum(np.abs(utterance.audio.astype(np.int32)) >= 32000))
            total += utterance.audio.shape[0]
            seconds += utterance.duration
            audio = load_audio(utterance.audio, utterance.sample_rate).samples
            f0, is_voiced, _ = librosa.pyin(audio, fmin=50, fmax=600, sr=16000, frame_length=1024)
            f0s.extend(f0[is_voiced].tolist())
            voiced.append(float(np.mean(is_voiced)))
        waves[variant] = synthesize("Mama moved a big map.", Voice(name)).audio.astype(np.float64)
        f0 = np.array(f0s)
        spread = float(np.std(12 * np.log2(f0 / np.median(f0)))) if f0.size > 5 else float("nan")
        rows.append(
            {
                "variant": variant,
                "seconds": seconds,
                "f0": float(np.median(f0)) if f0.size else float("nan"),
                "spread": spread,
                "voiced": float(np.mean(voiced)),
                "limited": 1000 * limited / total,
                "echo": "-" if variant == PLAIN else echo_of(variant),
            }
        )
    plain_seconds = rows[0]["seconds"]
    print(
        "| variant | duration | F0 (Hz) | F0 spread (st) | voiced | limited (per mille) | echo | closest (corr.) | kept |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        mine = waves[row["variant"]]
        best, best_corr = "-", 0.0
        for other, wave in waves.items():
            if other == row["variant"] or wave.shape != mine.shape:
                continue
            corr = float(np.dot(mine, wave) / np.sqrt(np.dot(mine, mine) * np.dot(wave, wave)))
            if corr > best_corr:
                best, best_corr = other, corr
        kept = "dropped" if row["variant"] in ESPEAK_DROPPED_VARIANTS else "kept"
        print(
            f"| {row['variant']} | {row['seconds'] / plain_seconds:.2f} | {row['f0']:.0f} | "
            f"{row['spread']:.1f} | {row['voiced']:.2f} | {row['limited']:.2f} | {row['echo']} | "
            f"{best} ({best_corr:.3f}) | {kept} |"
        )


if __name__ == "__main__":
    main()
