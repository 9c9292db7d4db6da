"""Speech engines for training data: real-time factor and how well their phone spans fit the audio.

For eSpeak NG and each installed neural voice (`animator.data.tts.neural_voices`), at three
speaking rates, over a few held-out sentences:

- synthesis real-time factor (wall seconds per second of speech, onnxruntime on all cores; the
  model alone: `tts.speak_neural`);
- alignment real-time factor (`align_phones` on the output, which is where neural voices get their
  spans);
- how the rate changes the duration;
- bilabial dips (`align.bilabial_dips`): by how many dB each P/B/M is quieter than the vowels
  beside it, and the share that is a dip at all (on the real-speech evaluation set: median 9 dB,
  98%; spans shifted by 50 ms: -1.5 dB, 38%).

`--plots DIR` also draws the first sentence of each voice (scripts/plot_alignment.py) to check the
bilabials by eye. Prints; asserts nothing. The first call of each engine loads its model; that
time is printed apart. Run: `.venv/bin/python benchmarks/tts.py [--sentences 4] [--plots DIR]`.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from animator.data.align import align_phones, bilabial_dips  # noqa: E402
from animator.data.espeak import Voice, synthesize  # noqa: E402
from animator.data.sentences import VAL_SENTENCES  # noqa: E402
from animator.data.tts import neural_voices, speak_neural  # noqa: E402

SPEEDS = (0.8, 1.0, 1.25)


def measure(name: str, speak, sentences, plots: Path | None) -> None:
    """speak(text, speed) -> (int16 audio, rate); prints one line per speed."""
    start = time.perf_counter()
    speak("Hello.", 1.0)  # loads the model
    print(f"{name}: first call {time.perf_counter() - start:.2f} s")
    base = None
    for speed in SPEEDS:
        synth = align = audio_s = 0.0
        dips = []
        for k, text in enumerate(sentences):
            t0 = time.perf_counter()
            audio, rate = speak(text, speed)
            t1 = time.perf_counter()
            spans = align_phones(audio, rate, text)
            t2 = time.perf_counter()
            synth, align, audio_s = synth + t1 - t0, align + t2 - t1, audio_s + audio.size / rate
            dips.append(bilabial_dips(audio, rate, spans))
            if plots is not None and k == 0 and speed == 1.0:
                sys.path.insert(0, str(ROOT / "scripts"))
                from plot_alignment import save_alignment_figure

                out = plots / f"tts_{name.replace(':', '_')}.png"
                save_alignment_figure(out, audio, rate, spans, title=f"{name}: {text}")
        base = base or audio_s
        d = np.concatenate(dips)
        print(
            f"  speed {speed:4.2f}: {audio_s:5.1f} s of speech ({audio_s / base:4.2f}x), "
            f"synthesis RTF {synth / audio_s:.3f}, alignment RTF {align / audio_s:.3f}, "
            f"bilabial dip median {np.median(d):4.1f} dB, dips {np.mean(d > 0):.0%} of {d.size}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sentences", type=int, default=4, help="held-out sentences per setting")
    ap.add_argument("--plots", type=Path, default=None)
    args = ap.parse_args()
    if args.plots is not None:
        args.plots.mkdir(parents=True, exist_ok=True)
    sentences = VAL_SENTENCES[: args.sentences]

    def espeak(text: str, speed: float):
        utt = synthesize(text, Voice("en-us", rate=int(165 * speed)))
        return utt.audio, utt.sample_rate

    measure("espeak:en-us", espeak, sentences, args.plots)
    voices = neural_voices()
    if not voices:
        print("neural voices: none installed (pip install -e .[data])")
    for voice in voices:

        def neural(text: str, speed: float, voice=voice):
            return speak_neural(text, replace(voice, speed=speed))

        measure(f"{voice.engine}:{voice.name}", neural, sentences, args.plots)


if __name__ == "__main__":
    main()
