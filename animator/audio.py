"""Speech audio in: any common file (wav, flac, mp3, ogg) or array, as 16 kHz mono float32.

Files are probed before they are decoded: `probe_audio` reads the duration and sample rate from
the header (libsndfile; ffmpeg for what libsndfile cannot open), so `load_audio(...,
max_seconds=...)` refuses an over-long file before spending memory on it (50 MB of low-bitrate
MP3 is hours of audio and gigabytes of float32). The decode itself is bounded too: it never
reads more than the limit's worth of samples, whatever the header claimed.
"""

from __future__ import annotations

import math
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avatar.errors import TalkingAvatarError

SAMPLE_RATE = 16_000
#: Animation frames per second unless a caller asks for another rate (frame i shows i / fps).
DEFAULT_FPS = 30.0
#: RMS below this (about -60 dBFS) counts as silence: nothing to lip-sync.
SILENCE_RMS = 1e-3
#: Frames read per call while decoding (bounds the memory besides the output itself).
_BLOCK_FRAMES = 1 << 16
#: libsndfile reports this many frames when a file does not say how long it is.
_UNKNOWN_FRAMES = 1 << 62
#: ffmpeg's header read should take milliseconds; this only stops a wedged process.
_FFMPEG_PROBE_TIMEOUT_S = 30.0


@dataclass
class Audio:
    """Mono speech at 16 kHz.

    Attributes:
        samples: `[N]` float32 in [-1, 1] at `SAMPLE_RATE`.
        source_rate: the sample rate of the file it came from (Hz).
        path: the file, when it came from one.
    """

    samples: np.ndarray  # [N]
    source_rate: int = SAMPLE_RATE
    path: Path | None = None

    @property
    def duration(self) -> float:
        """Seconds."""
        return len(self.samples) / SAMPLE_RATE

    def num_frames(self, fps: float) -> int:
        """Frames of a clip at fps that spans the audio (frame i shows time i / fps)."""
        return max(1, int(round(self.duration * fps)))

    @property
    def is_silent(self) -> bool:
        """True when there is no speech to follow (RMS below about -60 dBFS)."""
        return float(np.sqrt(np.mean(self.samples.astype(np.float64) ** 2))) < SILENCE_RMS


@dataclass(frozen=True)
class AudioInfo:
    """What a file's header says, read without decoding.

    Attributes:
        duration: seconds, or None when the header does not say (a stream). A header can lie,
            so the decode is bounded on its own.
        sample_rate: Hz.
        reader: who decodes the file: "soundfile" (libsndfile) or "ffmpeg" (imageio-ffmpeg's
            binary, for formats libsndfile does not know, such as m4a).
        channels: how many channels the file holds.
    """

    duration: float | None
    sample_rate: int
    reader: str
    channels: int = 1


def probe_audio(path: str | Path, *, label: str | None = None) -> AudioInfo:
    """Duration and sample rate of an audio file from its header, without decoding.

    Args:
        path: the file.
        label: how error messages name the file (default: "audio file <path>").

    Raises:
        TalkingAvatarError: a file neither libsndfile nor ffmpeg can read, or one without audio.
    """
    import soundfile as sf

    what = label or f"audio file {path}"
    try:
        info = sf.info(str(path))
    except (sf.SoundFileError, RuntimeError, TypeError):
        return _ffmpeg_probe(Path(path), what)
    if info.samplerate <= 0:
        raise TalkingAvatarError(f"{what} has no valid sample rate; use wav, flac, mp3 or ogg")
    frames = int(info.frames)
    duration = None if frames <= 0 or frames >= _UNKNOWN_FRAMES else frames / info.samplerate
    return AudioInfo(duration, int(info.samplerate), "soundfile", max(1, int(info.channels)))


def load_audio(
    source: str | Path | np.ndarray | Audio,
    sample_rate: int | None = None,
    *,
    max_seconds: float | None = None,
    label: str | None = None,
) -> Audio:
    """Load speech as 16 kHz mono float32.

    Args:
        source: a path to a wav/flac/mp3/ogg file (or anything ffmpeg reads), an `Audio`, or
            samples `[N]` / `[C, N]` (then `sample_rate` is required).
        sample_rate: the rate of array input, in Hz.
        max_seconds: refuse audio longer than this. A file is refused from its header, before
            decoding, and the decode never reads more than this many seconds of samples (plus
            one) even when the header lies. None: no limit.
        label: how error messages name the input (default: "audio file <path>").

    Raises:
        TalkingAvatarError: missing, unreadable, empty or over-long audio, or a bad sample rate.
    """
    if max_seconds is not None and not max_seconds > 0:
        raise ValueError(f"max_seconds must be positive, got {max_seconds}")
    if isinstance(source, Audio):
        _check_length(source.duration, max_seconds, label or "the audio")
        return source
    if isinstance(source, np.ndarray):
        what = label or "the audio array"
        if sample_rate is None or sample_rate <= 0:
            raise TalkingAvatarError("audio samples need a positive sample_rate in Hz")
        samples = pcm_to_float(source)
        if samples.ndim == 2:
            samples = samples.mean(axis=0)
        _check_length(samples.shape[-1] / sample_rate, max_seconds, what)
        return _finish(_resample(samples, sample_rate), sample_rate, None, what)
    path = Path(source)
    what = label or f"audio file {path}"
    if not path.exists():
        raise TalkingAvatarError(f"{what} does not exist; check the path")
    if path.is_dir():
        raise TalkingAvatarError(f"{path} is a folder; pass an audio file (wav, flac, mp3, ogg)")
    if path.stat().st_size == 0:
        raise TalkingAvatarError(f"{what} is empty; pass a recording with speech")
    info = probe_audio(path, label=what)
    if info.duration is not None:
        _check_length(info.duration, max_seconds, what)
    if info.reader == "soundfile":
        samples, over = _decode_soundfile(path, info.sample_rate, max_seconds, what)
    else:
        samples, over = _decode_ffmpeg(path, max_seconds, what)
    if over:
        assert max_seconds is not None
        raise TalkingAvatarError(
            f"{what} lasts longer than {_describe_seconds(max_seconds)}, more than its header "
            "says; use a shorter recording"
        )
    return _finish(samples, info.sample_rate, path, what)


def _check_length(seconds: float, max_seconds: float | None, what: str) -> None:
    if max_seconds is not None and seconds > max_seconds:
        raise TalkingAvatarError(
            f"{what} lasts {_describe_seconds(seconds)}; at most "
            f"{_describe_seconds(max_seconds)} can be used here: use a shorter recording"
        )


def _describe_seconds(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} hours"
    if seconds >= 60:
        return f"{seconds / 60:.1f} minutes"
    return f"{seconds:.1f} s"


def _budget(max_seconds: float | None, rate: int) -> int | None:
    """Samples at `rate` a decode may produce: the limit's worth plus one, which tells a file
    that is too long (a lying header) from one that fits exactly."""
    return None if max_seconds is None else math.floor(max_seconds * rate) + 1


def _decode_soundfile(
    path: Path, rate: int, max_seconds: float | None, what: str
) -> tuple[np.ndarray, bool]:
    """16 kHz mono samples `[N]` and whether the file held more than `max_seconds`.

    Reads block by block, averaging the channels and resampling as it goes (soxr's stream gives
    the same samples as resampling the whole signal at once), so memory holds the 16 kHz output
    and one block, never the whole file at its own rate.
    """
    import soundfile as sf
    import soxr

    budget = _budget(max_seconds, rate)
    pieces: list[np.ndarray] = []
    done = 0
    try:
        with sf.SoundFile(str(path)) as f:
            block = _BLOCK_FRAMES
            if f.format == "MP3":
                # libsndfile 1.2.2's MP3 decoder returns wrong samples after a partial read
                # (measured: a glitch at every block boundary): read it in one bounded call.
                block = max(1, min(budget or f.frames, f.frames))
            stream = None
            if rate != SAMPLE_RATE:
                stream = soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ")
            while True:
                want = block if budget is None else min(block, budget - done)
                chunk = f.read(want, dtype="float32", always_2d=True)  # [n, C]
                done += len(chunk)
                last = len(chunk) < want or done == budget
                mono = chunk.mean(axis=1, dtype=np.float32)  # [n]
                pieces.append(mono if stream is None else stream.resample_chunk(mono, last=last))
                if last:
                    break
    except (sf.SoundFileError, RuntimeError, TypeError) as err:
        raise TalkingAvatarError(
            f"cannot read {what} ({type(err).__name__}); use wav, flac, mp3 or ogg"
        ) from None
    return np.concatenate(pieces).astype(np.float32, copy=False), done == budget


def _ffmpeg_probe(path: Path, what: str) -> AudioInfo:
    """ffmpeg's reading of the header (`ffmpeg -i` parses the container and decodes nothing)."""
    import imageio_ffmpeg

    try:
        proc = subprocess.run(
            [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path)],
            capture_output=True, text=True, errors="replace", timeout=_FFMPEG_PROBE_TIMEOUT_S,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        raise TalkingAvatarError(
            f"cannot read {what} (reading its header timed out); use wav, flac, mp3 or ogg"
        ) from None
    stream = re.search(r"Stream #.*?: Audio: .*?(\d+) Hz", proc.stderr)
    if stream is None:
        raise TalkingAvatarError(
            f"cannot read {what} (no audio stream found); use wav, flac, mp3 or ogg"
        )
    duration = None
    found = re.search(r"Duration: (\d+):(\d+):(\d+(?:\.\d+)?)", proc.stderr)
    if found is not None:
        h, m, s = found.groups()
        duration = int(h) * 3600 + int(m) * 60 + float(s)
    layout = re.search(r"Stream #.*?: Audio: .*?\d+ Hz, (mono|stereo|(\d+) channels)", proc.stderr)
    channels = 1 if layout is None or layout.group(1) == "mono" else int(layout.group(2) or 2)
    return AudioInfo(duration, int(stream.group(1)), "ffmpeg", channels)


def _decode_ffmpeg(path: Path, max_seconds: float | None, what: str) -> tuple[np.ndarray, bool]:
    """16 kHz mono samples `[N]` decoded by ffmpeg (which downmixes and resamples), and whether
    the file held more than `max_seconds`: ffmpeg is stopped once its output passes the limit."""
    import tempfile

    import imageio_ffmpeg

    budget = _budget(max_seconds, SAMPLE_RATE)
    limit = None if budget is None else 4 * budget  # bytes of float32
    cmd = [
        imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-nostdin", "-i", str(path),
        "-map", "0:a:0", "-ac", "1", "-ar", str(SAMPLE_RATE), "-f", "f32le", "-",
    ]  # fmt: skip
    chunks: list[bytes] = []
    size = 0
    # stderr goes to a file: a pipe nobody reads would block ffmpeg once a broken file fills it.
    with tempfile.TemporaryFile() as log:
        with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log) as proc:
            assert proc.stdout is not None
            while limit is None or size < limit:
                chunk = proc.stdout.read(1 << 20 if limit is None else min(1 << 20, limit - size))
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
            over = limit is not None and size >= limit
            if over:
                proc.kill()  # the rest would only be refused
            code = proc.wait()
        log.seek(0)
        errors = log.read().decode(errors="replace").strip()
    if not over and code != 0:
        reason = errors.splitlines()[-1] if errors else f"ffmpeg exit status {code}"
        raise TalkingAvatarError(f"cannot read {what} ({reason}); use wav, flac, mp3 or ogg")
    data = b"".join(chunks)
    return np.frombuffer(data[: len(data) // 4 * 4], dtype="<f4").astype(np.float32), over


def pcm_to_float(samples: np.ndarray) -> np.ndarray:
    """Samples as float32; integer PCM (int16 from eSpeak or a pickle) scaled to [-1, 1)."""
    samples = np.asarray(samples)
    if np.issubdtype(samples.dtype, np.integer):
        return (samples / (float(np.iinfo(samples.dtype).max) + 1.0)).astype(np.float32)
    return samples.astype(np.float32)


def _resample(samples: np.ndarray, rate: int) -> np.ndarray:
    if rate == SAMPLE_RATE:
        return samples
    import librosa

    return librosa.resample(samples, orig_sr=rate, target_sr=SAMPLE_RATE).astype(np.float32)


def _finish(samples: np.ndarray, rate: int, path: Path | None, what: str) -> Audio:
    if samples.size == 0:
        raise TalkingAvatarError(f"{what} holds no audio samples; pass a recording with speech")
    if not np.isfinite(samples).all():
        raise TalkingAvatarError(f"{what} contains NaN or infinite samples")
    return Audio(samples=np.clip(samples, -1.0, 1.0), source_rate=rate, path=path)
