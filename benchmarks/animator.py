"""Animator speed on CPU: seconds of audio animated per second of compute, and peak memory,
for a 10 s and a 10 min clip (the bundled sample speech, repeated). Prints; asserts nothing.

Run from the repository root: `.venv/bin/python -m benchmarks.animator [--checkpoint CKPT]
[--threads N]` (as a module: a script named animator.py would shadow the package).
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import torch

from animator import Animator
from animator.audio import SAMPLE_RATE, Audio, load_audio
from animator.features import log_mel
from avatar.paths import asset_path


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    anim = Animator.load(args.checkpoint)
    speech = load_audio(asset_path("speech", "sample.wav")).samples
    print(f"threads: {torch.get_num_threads()}")
    for seconds in (10, 600):
        reps = int(np.ceil(seconds * SAMPLE_RATE / len(speech)))
        audio = Audio(np.tile(speech, reps)[: seconds * SAMPLE_RATE])
        anim.animate(Audio(audio.samples[: 2 * SAMPLE_RATE]))  # warm-up
        rss0 = peak_rss_mib()
        t0 = time.perf_counter()
        mel = log_mel(audio)
        t1 = time.perf_counter()
        perf = anim.animate(audio, emotion={"happy": 0.5})
        t2 = time.perf_counter()
        rss_animate = peak_rss_mib()
        verts = anim.head(perf.params)
        t3 = time.perf_counter()
        total = t2 - t0 - (t1 - t0)  # animate() computes its own features; t1 - t0 is a share of it
        print(
            f"{seconds:4d} s clip: animate {t2 - t1:.2f} s -> {seconds / (t2 - t1):.0f}x real time "
            f"(log-mel alone {t1 - t0:.2f} s); FLAME vertices for {perf.num_frames} frames "
            f"{t3 - t2:.2f} s; peak RSS {rss0:.0f} -> {rss_animate:.0f} MiB after animate, "
            f"{peak_rss_mib():.0f} MiB with all vertices in memory"
        )
        del verts, mel, total


if __name__ == "__main__":
    main()
