"""Export a performance as an MP4 (H.264, yuv420p, AAC audio of the speech) that plays anywhere.

Frames are rendered and streamed to ffmpeg (the binary imageio-ffmpeg ships) one at a time and
FLAME is evaluated in chunks, so memory stays flat for any clip length. The file is written
under a temporary name and renamed when complete: an error or Ctrl-C leaves no partial file.
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Callable, Generator, Sequence
from pathlib import Path

import numpy as np
import torch

from animator.animator import Performance
from animator.audio import SAMPLE_RATE
from avatar.atomic import atomic_path, check_output_path
from avatar.binding import GaussianAvatar
from avatar.camera import CAMERAS, camera_for_frame
from avatar.errors import TalkingAvatarError
from avatar.flame import FlameModel
from avatar.image import to_uint8
from avatar.paths import ensure_folder
from avatar.render import render, render_device
from avatar.threads import torch_threads

NAMED_COLOURS = {
    "white": (1.0, 1.0, 1.0),
    "black": (0.0, 0.0, 0.0),
    "grey": (0.5, 0.5, 0.5),
    "gray": (0.5, 0.5, 0.5),
}


def parse_colour(text: str | Sequence[float]) -> tuple[float, float, float]:
    """A background colour from a name, `#rrggbb`, or `r,g,b` in [0, 1]."""
    if not isinstance(text, str):
        values = tuple(float(x) for x in text)
    elif text.lower() in NAMED_COLOURS:
        return NAMED_COLOURS[text.lower()]
    elif text.startswith("#") and len(text) == 7:
        try:
            return tuple(int(text[i : i + 2], 16) / 255.0 for i in (1, 3, 5))  # type: ignore[return-value]
        except ValueError:
            values = ()
    else:
        try:
            values = tuple(float(x) for x in text.split(","))
        except ValueError:
            values = ()
    if len(values) != 3 or not all(0.0 <= v <= 1.0 for v in values):
        raise TalkingAvatarError(
            f"background {text!r} is not a colour; use white, black, grey, #rrggbb or r,g,b in [0, 1]"
        )
    return values  # type: ignore[return-value]


def even_size(width: int, height: int) -> tuple[int, int]:
    """H.264 in yuv420p needs even sizes: odd ones are padded by one pixel (never cropped)."""
    for name, v in (("width", width), ("height", height)):
        if not 16 <= v <= 4096:
            raise TalkingAvatarError(f"video {name} {v} is out of range; use 16 to 4096 pixels")
    return width + width % 2, height + height % 2


#: Sample rates AAC can carry; other rates are resampled up to the next one (or down to 96 kHz).
AAC_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000)
#: AAC bitrate per channel: transparent for speech at any of those rates.
AAC_KBPS_PER_CHANNEL = 128


def audio_stream_args(source_rate: int, channels: int) -> list[str]:
    """ffmpeg output options for the MP4's AAC track at the speech's own sample rate."""
    rate = next((r for r in AAC_RATES if r >= source_rate), AAC_RATES[-1])
    kbps = AAC_KBPS_PER_CHANNEL * max(1, min(channels, 2))
    return ["-ar", str(rate), "-ac", str(max(1, min(channels, 2))), "-b:a", f"{kbps}k"]


def _speech_source(performance: Performance, scratch: Path) -> tuple[Path, list[str]]:
    """The audio to mux: the user's original file where it still matches the clip, else the
    16 kHz samples the models heard. Returns the file and the ffmpeg options for its track."""
    import soundfile as sf

    audio = performance.audio
    original = audio.path
    if original is not None and original.is_file():
        from animator.audio import probe_audio

        try:
            info = probe_audio(original)
        except TalkingAvatarError:
            info = None
        if (
            info is not None
            and info.duration is not None
            and abs(info.duration - audio.duration) < 0.05
        ):
            return original, audio_stream_args(info.sample_rate, info.channels)
    wav = scratch / "speech.wav"
    sf.write(wav, audio.samples, SAMPLE_RATE, subtype="PCM_16")
    return wav, audio_stream_args(SAMPLE_RATE, 1)


def export_mp4(
    performance: Performance,
    avatar: GaussianAvatar,
    path: str | Path,
    *,
    head: FlameModel | None = None,
    width: int = 512,
    height: int = 512,
    camera: str = "front",
    background: str | Sequence[float] = "white",
    backend: str = "auto",
    frames_dir: str | Path | None = None,
    chunk: int = 64,
    progress: bool = True,
    on_progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Render a performance with an avatar to an MP4 with the speech as AAC audio.

    Args:
        performance: from `Animator.animate` (FLAME parameters per frame, fps, audio).
        avatar: Gaussians bound to `head`'s triangles.
        head: the FLAME head the parameters drive; default the performance's own.
        path: the .mp4 to write (replaced atomically when complete).
        width, height: video size in pixels (odd sizes are padded by one pixel).
        camera: front, three-quarter, side, or orbit.
        background: a colour name, #rrggbb or r,g,b.
        backend: renderer backend (auto, cpu, gsplat).
        frames_dir: also write every frame as PNG here.
        on_progress: called with (frames done, total) after each frame.
    """
    path = Path(path)
    head = head if head is not None else performance.head
    if head is None:
        raise TalkingAvatarError("export_mp4 needs the performance's head (pass head=)")
    if path.suffix.lower() != ".mp4":
        raise TalkingAvatarError(f"{path}: the output must be an .mp4 file")
    if camera not in CAMERAS:
        raise TalkingAvatarError(f"unknown camera '{camera}'; choose from {', '.join(CAMERAS)}")
    check_output_path(path, what="video")
    even = even_size(width, height)
    bg = parse_colour(background)
    frames = ensure_folder(frames_dir) if frames_dir is not None else None
    device = render_device(backend)
    if device.type != "cpu":  # pose where gsplat draws: no per-frame copy of every Gaussian
        head, avatar = copy.deepcopy(head).to(device), avatar.to(device)
    with (
        tempfile.TemporaryDirectory() as scratch,
        atomic_path(path, what="video") as tmp,
        torch_threads(1),  # the raster's threads get the cores (avatar/threads.py)
    ):
        speech, audio_args = _speech_source(performance, Path(scratch))
        writer = _open_writer(tmp, even, performance.fps, speech, audio_args)
        try:
            writer.send(None)
            _write_frames(
                writer, performance, avatar, head, camera=camera, size=(width, height),
                even=even, background=bg, backend=backend, frames_dir=frames, chunk=chunk,
                progress=progress, on_progress=on_progress,
            )  # fmt: skip
        finally:
            writer.close()
    return path


def _open_writer(
    path: Path, size: tuple[int, int], fps: float, speech: Path, audio_args: list[str]
) -> Generator[None, np.ndarray | None, None]:
    """imageio-ffmpeg's frame writer for the MP4: H.264 yuv420p frames of `size` (w, h), the
    speech file muxed as AAC with `audio_args`; send it None first, then each frame."""
    import imageio_ffmpeg

    return imageio_ffmpeg.write_frames(
        str(path),
        size,
        fps=fps,
        codec="libx264",
        pix_fmt_out="yuv420p",
        quality=8,
        macro_block_size=1,
        audio_path=str(speech),
        audio_codec="aac",
        output_params=[*audio_args, "-movflags", "+faststart"],
        ffmpeg_log_level="error",
    )


def _write_frames(
    writer: Generator[None, np.ndarray | None, None],
    performance: Performance,
    avatar: GaussianAvatar,
    head: FlameModel,
    *,
    camera: str,
    size: tuple[int, int],
    even: tuple[int, int],
    background: tuple[float, float, float],
    backend: str,
    frames_dir: Path | None,
    chunk: int,
    progress: bool,
    on_progress: Callable[[int, int], None] | None,
) -> None:
    """Render every frame (FLAME in chunks of `chunk` frames) at `size` (w, h), padded to the
    `even` size, into the writer and, when given, `frames_dir` as PNG."""
    import imageio.v3 as iio
    from tqdm import tqdm

    width, height = size
    total, fps = performance.num_frames, performance.fps
    fixed = None if camera == "orbit" else camera_for_frame(camera, 0, fps, width, height)
    bar = tqdm(total=total, desc="export", unit="frame", disable=not progress)
    with torch.no_grad():
        for start in range(0, total, chunk):
            verts = head(avatar.dress(performance.params.slice(start, min(total, start + chunk))))
            for i, v in enumerate(verts):
                frame = start + i
                cam = fixed or camera_for_frame(camera, frame, fps, width, height)
                out = render(avatar.pose(v), cam, backend=backend, background=background)
                image = _pad(to_uint8(out.color), even, background)
                writer.send(np.ascontiguousarray(image))
                if frames_dir is not None:
                    iio.imwrite(frames_dir / f"{frame:06d}.png", image)
                bar.update(1)
                if on_progress is not None:
                    on_progress(frame + 1, total)
    bar.close()


def _pad(
    image: np.ndarray, size: tuple[int, int], background: tuple[float, float, float]
) -> np.ndarray:
    """`image` `[H, W, 3]` uint8 at the top left of a `size` (w, h) canvas of the background
    colour (H.264's even sizes); the image itself when it has that size already."""
    width, height = size
    if image.shape[:2] == (height, width):
        return image
    padded = np.empty((height, width, 3), dtype=np.uint8)
    padded[:] = to_uint8(np.array(background))
    padded[: image.shape[0], : image.shape[1]] = image
    return padded


def read_video_info(path: str | Path) -> dict:
    """Frame count, fps, size, duration and whether there is an audio stream (via ffmpeg)."""
    import subprocess

    import imageio_ffmpeg

    exe = imageio_ffmpeg.get_ffmpeg_exe()
    proc = subprocess.run(
        [exe, "-hide_banner", "-i", str(path), "-map", "0:v:0", "-f", "null", "-"],
        capture_output=True,
        text=True,
    )
    text = proc.stderr
    info: dict = {"audio": " Audio: " in text, "audio_codec": None, "video_codec": None}
    in_output = False  # after "Output", stream lines describe ffmpeg's null output, not the file
    for line in text.splitlines():
        line = line.strip()
        in_output = in_output or line.startswith("Output")
        if line.startswith("Stream") and " Video: " in line and not in_output:
            info["video_codec"] = line.split(" Video: ")[1].split()[0]
            for part in line.split(","):
                part = part.strip()
                if "x" in part.split(" ")[0] and part.split(" ")[0].replace("x", "").isdigit():
                    w, h = part.split(" ")[0].split("x")
                    info["width"], info["height"] = int(w), int(h)
                if part.endswith(" fps"):
                    info["fps"] = float(part.split()[0])
            info["pix_fmt"] = "yuv420p" if "yuv420p" in line else None
        if line.startswith("Stream") and " Audio: " in line and not in_output:
            info["audio_codec"] = line.split(" Audio: ")[1].split()[0].rstrip(",")
            for part in (p.strip() for p in line.split(",")):
                words = part.split()
                if len(words) >= 2 and words[1] == "Hz":
                    info["audio_rate"] = int(words[0])
                elif len(words) >= 2 and words[1] == "kb/s":
                    info["audio_kbps"] = int(words[0])
                elif words[:1] in (["mono"], ["stereo"]):
                    info["audio_channels"] = 1 if words[0] == "mono" else 2
        if line.startswith("Duration:"):
            hms = line.split()[1].rstrip(",")
            h, m, s = hms.split(":")
            info["duration"] = int(h) * 3600 + int(m) * 60 + float(s)
        if line.startswith("frame="):
            info["frames"] = int(line.split("frame=")[1].split()[0])
    return info
