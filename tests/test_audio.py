"""Reading speech files: header probes without decoding, the `max_seconds` limit checked before
decoding, a bounded decode even when the header lies, and parity with librosa's loader."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
import soundfile as sf

import animator.audio as audio_module
from animator.audio import SAMPLE_RATE, AudioInfo, load_audio, probe_audio
from avatar.errors import TalkingAvatarError


def tone(seconds: float, rate: int, freq: float = 220.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write_blocks(path, samples: np.ndarray, rate: int, fmt: str, subtype: str) -> None:
    """Write in blocks: libsndfile's Vorbis encoder crashes on one very large write."""
    with sf.SoundFile(path, "w", rate, 1, format=fmt, subtype=subtype) as f:
        for i in range(0, len(samples), rate):
            f.write(samples[i : i + rate])


def ffmpeg_encode(source, target) -> None:
    imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg", reason="imageio-ffmpeg's ffmpeg")
    subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-i", str(source), str(target)],
        check=True, timeout=60,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("fmt", "subtype", "rate"),
    [("WAV", "PCM_16", 11025), ("FLAC", "PCM_16", 44100), ("OGG", "VORBIS", 22050),
     ("MP3", "MPEG_LAYER_III", 24000)],
)  # fmt: skip
def test_probe_reads_duration_and_rate_from_the_header(tmp_path, fmt, subtype, rate) -> None:
    path = tmp_path / f"speech.{fmt.lower()}"
    write_blocks(path, tone(2.5, rate), rate, fmt, subtype)
    info = probe_audio(path)
    assert info.sample_rate == rate and info.reader == "soundfile"
    assert info.duration == pytest.approx(2.5, abs=0.06)  # MP3 pads to whole frames


def test_probe_and_load_formats_libsndfile_does_not_read(tmp_path) -> None:
    wav = tmp_path / "speech.wav"
    sf.write(wav, np.stack([tone(3.0, 44100), tone(3.0, 44100, 330.0)], axis=1), 44100)
    m4a = tmp_path / "speech.m4a"
    ffmpeg_encode(wav, m4a)
    info = probe_audio(m4a)
    assert info.reader == "ffmpeg" and info.sample_rate == 44100
    assert info.duration == pytest.approx(3.0, abs=0.05)
    audio = load_audio(m4a)
    assert audio.source_rate == 44100 and audio.duration == pytest.approx(3.0, abs=0.05)
    with pytest.raises(TalkingAvatarError, match=r"lasts 3\.0 s; at most 2\.0 s can be used"):
        load_audio(m4a, max_seconds=2.0)


def test_long_low_bitrate_file_is_refused_before_decoding(tmp_path, monkeypatch) -> None:
    # 15 minutes of 8 kHz MP3 is about 0.9 MB: a small upload that would decode to a lot.
    path = tmp_path / "long.mp3"
    write_blocks(path, tone(900.0, 8000), 8000, "MP3", "MPEG_LAYER_III")

    def no_decode(*args, **kwargs):
        raise AssertionError("decoded a file its header already refused")

    monkeypatch.setattr(audio_module, "_decode_soundfile", no_decode)
    with pytest.raises(TalkingAvatarError) as err:
        load_audio(path, max_seconds=600.0, label="long.mp3")
    assert str(err.value) == (
        "long.mp3 lasts 15.0 minutes; at most 10.0 minutes can be used here: "
        "use a shorter recording"
    )


@pytest.mark.parametrize("suffix", ["flac", "m4a"])
def test_decode_stops_at_the_limit_when_the_header_lies(tmp_path, monkeypatch, suffix) -> None:
    path = tmp_path / "speech.flac"
    sf.write(path, tone(20.0, 22050), 22050)
    if suffix == "m4a":
        path, flac = tmp_path / "speech.m4a", path
        ffmpeg_encode(flac, path)
    honest = probe_audio(path)
    # The header claims 1 s; the file holds 20 s.
    monkeypatch.setattr(
        audio_module,
        "probe_audio",
        lambda *a, **k: AudioInfo(1.0, honest.sample_rate, honest.reader),
    )
    read_frames: list[int] = []
    original_read = sf.SoundFile.read

    def counting_read(self, frames=-1, *args, **kwargs):
        out = original_read(self, frames, *args, **kwargs)
        read_frames.append(len(out))
        return out

    monkeypatch.setattr(sf.SoundFile, "read", counting_read)
    decoded: list[int] = []
    original_ffmpeg = audio_module._decode_ffmpeg

    def counting_ffmpeg(*args, **kwargs):
        samples, over = original_ffmpeg(*args, **kwargs)
        decoded.append(len(samples))
        return samples, over

    monkeypatch.setattr(audio_module, "_decode_ffmpeg", counting_ffmpeg)
    with pytest.raises(TalkingAvatarError) as err:
        load_audio(path, max_seconds=5.0, label="speech")
    assert str(err.value) == (
        "speech lasts longer than 5.0 s, more than its header says; use a shorter recording"
    )
    if suffix == "flac":
        assert sum(read_frames) == 5 * 22050 + 1  # the limit's worth plus the one that tells
    else:
        assert decoded == [5 * SAMPLE_RATE + 1]


def test_exactly_the_limit_is_accepted(tmp_path) -> None:
    path = tmp_path / "speech.wav"
    sf.write(path, tone(5.0, 22050), 22050)
    assert load_audio(path, max_seconds=5.0).duration == pytest.approx(5.0, abs=1e-3)


@pytest.mark.parametrize(("fmt", "subtype"), [("FLAC", "PCM_16"), ("MP3", "MPEG_LAYER_III")])
def test_decoding_matches_librosa(tmp_path, fmt, subtype) -> None:
    """The block-wise decode (channel mean, streamed soxr resampling) gives librosa.load's
    samples: the models were trained on those."""
    librosa = pytest.importorskip("librosa")
    path = tmp_path / f"speech.{fmt.lower()}"
    stereo = np.stack([tone(4.3, 44100), tone(4.3, 44100, 330.0)], axis=1)
    with sf.SoundFile(path, "w", 44100, 2, format=fmt, subtype=subtype) as f:
        f.write(stereo)
    expected, _ = librosa.load(path, sr=SAMPLE_RATE, mono=True)
    got = load_audio(path).samples
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() < 1e-6


def test_arrays_and_audio_respect_the_limit() -> None:
    with pytest.raises(TalkingAvatarError, match=r"the audio array lasts 3\.0 s; at most 2\.0 s"):
        load_audio(tone(3.0, 8000), 8000, max_seconds=2.0)
    clip = load_audio(tone(1.0, 8000), 8000, max_seconds=2.0)
    assert clip.duration == pytest.approx(1.0)
    with pytest.raises(TalkingAvatarError, match="lasts 1.0 s; at most 0.5 s"):
        load_audio(clip, max_seconds=0.5)
