"""Cost of speech augmentation on CPU: each step on a 3-second clip, the random chain with the
default `AugmentConfig`, and a full training rendition (chain + log-mel). Prints; asserts nothing.

Run from the repository root: `.venv/bin/python -m benchmarks.augment [--draws 60]`.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

from animator import augment as A
from animator.audio import SAMPLE_RATE, Audio, load_audio
from animator.data.espeak import Voice, synthesize
from animator.features import log_mel


def clip_of(seconds: float) -> np.ndarray:
    """eSpeak speech, repeated to exactly `seconds` at 16 kHz."""
    u = synthesize("Maybe the baker will bring a bigger basket of plums tomorrow.", Voice())
    speech = load_audio(u.audio, u.sample_rate).samples
    return np.resize(speech, int(seconds * SAMPLE_RATE)).astype(np.float32)


def median_ms(run: Callable[[], object], repeats: int) -> float:
    run()  # warm-up (imports, ffmpeg's first start, caches)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return 1000 * float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--draws", type=int, default=60, help="random chains to average")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    clip = clip_of(3.0)
    rng = np.random.default_rng(0)
    sources = [clip_of(2.1), clip_of(3.7)]
    ir = A.room_impulse_response(0.6, 3.0, rng)
    noise = A.coloured_noise(clip.shape[0], "pink", rng)
    steps: dict[str, Callable[[], object]] = {
        "speed x1.1": lambda: A.change_speed(clip, 1.1),
        "pitch +3 st": lambda: A.shift_pitch(clip, 3.0),
        "vocal tract 1.1": lambda: A.warp_vocal_tract(clip, 1.1),
        "impulse response (RT60 0.6 s)": lambda: A.room_impulse_response(0.6, 3.0, rng),
        "reverberate (RT60 0.6 s)": lambda: A.reverberate(clip, ir),
        "pink noise + SNR": lambda: A.add_at_snr(
            clip, A.coloured_noise(clip.shape[0], "pink", rng), 10.0
        ),
        "babble x5 + SNR": lambda: A.add_at_snr(
            clip, A.babble(sources, clip.shape[0], 5, rng), 10.0
        ),
        "add at SNR (noise given)": lambda: A.add_at_snr(clip, noise, 10.0),
        "telephone": lambda: A.telephone(clip),
        "mp3 16 kbps round trip": lambda: A.codec_round_trip(clip, "mp3", 16),
        "vorbis 16 kbps round trip": lambda: A.codec_round_trip(clip, "vorbis", 16),
        "opus 8 kbps round trip": lambda: A.codec_round_trip(clip, "opus", 8),
        "gain + clip": lambda: A.clip(A.apply_gain(clip, 6.0), 0.5),
        "log-mel features": lambda: log_mel(Audio(clip)),
    }
    print(f"one {clip.shape[0] / SAMPLE_RATE:.1f} s clip at {SAMPLE_RATE} Hz (median ms):")
    for name, run in steps.items():
        print(f"  {name:32s} {median_ms(run, args.repeats):8.1f}")
    cfg = A.AugmentConfig()
    chain, rendition = [], []
    for seed in range(args.draws):
        t0 = time.perf_counter()
        out = A.augment(clip, np.random.default_rng(seed), config=cfg, babble_sources=sources)
        t1 = time.perf_counter()
        log_mel(Audio(out.audio))
        t2 = time.perf_counter()
        chain.append(t1 - t0)
        rendition.append(t2 - t0)
    chain_ms, rendition_ms = 1000 * np.array(chain), 1000 * np.array(rendition)
    print(f"random chain, default AugmentConfig, {args.draws} draws:")
    print(
        f"  chain     mean {chain_ms.mean():6.1f} ms, median {np.median(chain_ms):6.1f}, "
        f"max {chain_ms.max():6.1f}"
    )
    print(
        f"  rendition mean {rendition_ms.mean():6.1f} ms (chain + log-mel): "
        f"{rendition_ms.mean() / 3.0:.1f} ms per second of audio"
    )


if __name__ == "__main__":
    main()
