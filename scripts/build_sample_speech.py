"""Build the bundled sample speech, `assets/speech/sample.wav`, with eSpeak NG (from PyPI).

The text is written here; the voice is eSpeak NG's own (GPL-3 program, its output is not a
derived work); the result is released under CC0 with the rest of the assets. It is not one of
the training sentences, and the voice setting (en-gb-x-rp, 150 wpm, pitch 44) is not one of the
training speakers', so it also checks how the animator does on speech it never saw.
Phoneme timings are written beside it (`sample.json`) for checks.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from animator.data.espeak import Voice, synthesize  # noqa: E402

TEXT = (
    "Hello! My name is Ava, and I can say anything you like. "
    "Move the sliders while I speak: happy, sad, or surprised. "
    "Bob brought a map of the big blue bay, and we sailed away at dawn."
)
VOICE = Voice(name="en-gb-x-rp", rate=150, pitch=44, pitch_range=60)


def main() -> None:
    out = Path(__file__).resolve().parent.parent / "assets" / "speech"
    out.mkdir(parents=True, exist_ok=True)
    utt = synthesize(TEXT, VOICE, seed=7)
    audio = utt.audio.astype(np.float32) / 32768.0
    sf.write(out / "sample.wav", audio, utt.sample_rate, subtype="PCM_16")
    spans = [{"phoneme": p.symbol, "start": p.start, "end": p.end} for p in utt.phonemes]
    (out / "sample.json").write_text(
        json.dumps({"text": TEXT, "voice": VOICE.__dict__, "phonemes": spans}, indent=1) + "\n"
    )
    print(f"wrote {out / 'sample.wav'} ({utt.duration:.1f} s at {utt.sample_rate} Hz)")


if __name__ == "__main__":
    main()
