"""The control panel of one viewer client: every widget, built with `client.gui.*` so each person
gets their own (viser's `server.gui.*` widgets are shared by all clients and keep their values).

This module only lays the widgets out and holds their handles; `viewer.app.ClientSession` wires
their callbacks, so the layout can change without touching the playback or render logic.
"""

from __future__ import annotations

import string
import unicodedata
from dataclasses import dataclass

import numpy as np
import viser
import viser.uplot

from animator.emotion import EMOTIONS
from avatar.camera import VIEWS
from viewer._viser_compat import GuiProgressBarHandle

#: Emotion presets: a mix of the seven emotions (several at once), applied to the sliders.
PRESETS: dict[str, dict[str, float]] = {
    "Neutral": {},
    "Joyful": {"happy": 0.85, "surprised": 0.2},
    "Gloomy": {"sad": 0.75, "fearful": 0.2},
    "Furious": {"angry": 0.9, "disgusted": 0.3},
    "Smug": {"contempt": 0.7, "happy": 0.25},
    "Startled": {"surprised": 0.8, "fearful": 0.4},
}
#: Playback speeds offered (the audio element keeps the pitch).
SPEEDS = ("0.5", "0.75", "1", "1.25", "1.5", "2")
#: Points drawn in the plot; the clip is resampled to at most this many.
PLOT_POINTS = 300
#: File names longer than this are shortened in the page (the start and the suffix are kept).
NAME_CHARS = 60
#: Colours of the plot's series: jaw, the seven emotions, the playhead.
_JAW_COLOUR = "#222222"
_EMOTION_COLOURS = ("#e6a800", "#3a6fd8", "#d83a3a", "#9b51e0", "#2aa198", "#5c8a2e", "#b5651d")
_PLAYHEAD_COLOUR = "#ff3b7f"


@dataclass
class Controls:
    """Handles of one client's widgets (see `build_controls` for what each does)."""

    start: viser.GuiButtonHandle
    play: viser.GuiButtonHandle
    timeline: viser.GuiSliderHandle[float]
    loop: viser.GuiCheckboxHandle
    speed: viser.GuiDropdownHandle[str]
    status: viser.GuiMarkdownHandle
    emotions: dict[str, viser.GuiSliderHandle[float]]
    presets: viser.GuiButtonGroupHandle[str]
    reset: viser.GuiButtonHandle
    blinks: viser.GuiCheckboxHandle
    head_motion: viser.GuiCheckboxHandle
    views: viser.GuiButtonGroupHandle[str]
    background: viser.GuiRgbHandle
    plot: viser.GuiUplotHandle
    record: viser.GuiCheckboxHandle
    follow_track: viser.GuiCheckboxHandle
    save_track: viser.GuiButtonHandle
    clear_track: viser.GuiButtonHandle
    track_info: viser.GuiMarkdownHandle
    upload: viser.GuiUploadButtonHandle
    upload_progress: GuiProgressBarHandle
    export: viser.GuiButtonHandle
    export_progress: GuiProgressBarHandle
    clock_report: viser.GuiTextHandle


def build_controls(client: viser.ClientHandle, *, duration: float, clip_name: str) -> Controls:
    """Lay out one client's panel.

    Args:
        client: the browser tab the widgets belong to.
        duration: length of the clip in seconds (the timeline's range).
        clip_name: shown in the status line.
    """
    gui = client.gui
    start = gui.add_button(
        "Start (click to enable sound)", color="green", icon=viser.Icon.PLAYER_PLAY,
        hint="Browsers play sound only after a click in the page",
    )  # fmt: skip
    with gui.add_folder("Playback"):
        play = gui.add_button("Play / pause", icon=viser.Icon.PLAYER_PAUSE)
        timeline = gui.add_slider("Time (s)", 0.0, max(duration, 0.01), 0.01, 0.0)
        loop = gui.add_checkbox("Loop", True)
        speed = gui.add_dropdown("Speed", SPEEDS, initial_value="1")
        status = gui.add_markdown(_status_text(clip_name, duration))
    with gui.add_folder("Emotions"):
        emotions = {
            label: gui.add_slider(label.capitalize(), 0.0, 1.0, 0.01, 0.0) for label in EMOTIONS
        }
        presets = gui.add_button_group("Presets", tuple(PRESETS))
        reset = gui.add_button("Reset emotions", icon=viser.Icon.REFRESH)
    with gui.add_folder("Idle layer"):
        blinks = gui.add_checkbox("Blinks", True)
        head_motion = gui.add_checkbox("Head and eye motion", True)
    with gui.add_folder("View"):
        views = gui.add_button_group("Camera", tuple(VIEWS))
        background = gui.add_rgb("Background", (255, 255, 255))
    with gui.add_folder("Timeline plot"):
        plot = gui.add_uplot(
            empty_plot_data(),
            plot_series(),
            title="jaw opening (rad) and emotions",
            height=220,
            scales={"x": {"time": False}, "y": {"range": (0.0, 1.05)}},
            legend={"show": False},
        )
    with gui.add_folder("Record emotions"):
        record = gui.add_checkbox(
            "Record", False, hint="While playing, slider moves become keys of an emotion track"
        )
        follow_track = gui.add_checkbox(
            "Play recorded track",
            True,
            hint="Drive the face and the export from the track, not the sliders",
        )
        save_track = gui.add_button("Save track (JSON)", icon=viser.Icon.DOWNLOAD)
        clear_track = gui.add_button("Clear track", icon=viser.Icon.TRASH)
        track_info = gui.add_markdown("No track recorded.")
    with gui.add_folder("Audio and export"):
        upload = gui.add_upload_button(
            "Upload speech", icon=viser.Icon.UPLOAD, mime_type="audio/*",
            hint="wav, flac, mp3 or ogg; up to 50 MB and 10 minutes",
        )  # fmt: skip
        upload_progress = gui.add_progress_bar(0.0, visible=False, animated=True)
        export = gui.add_button("Export MP4", icon=viser.Icon.MOVIE)
        export_progress = gui.add_progress_bar(0.0, visible=False)
    # The page's audio clock arrives here (see viewer.playback); nobody types into it.
    clock_report = gui.add_text("audio clock", "", visible=False)
    return Controls(
        start=start, play=play, timeline=timeline, loop=loop, speed=speed, status=status,
        emotions=emotions, presets=presets, reset=reset, blinks=blinks, head_motion=head_motion,
        views=views, background=background, plot=plot, record=record, follow_track=follow_track,
        save_track=save_track, clear_track=clear_track, track_info=track_info, upload=upload,
        upload_progress=upload_progress, export=export, export_progress=export_progress,
        clock_report=clock_report,
    )  # fmt: skip


def _status_text(clip_name: str, duration: float) -> str:
    return f"**{markdown_text(display_name(clip_name))}** ({duration:.1f} s)"


def display_name(name: str) -> str:
    """A file name as the page shows it: control and formatting characters (newlines,
    right-to-left overrides) become spaces, and a long name keeps its start and suffix."""
    clean = "".join(" " if unicodedata.category(c)[0] == "C" else c for c in name).strip()
    if len(clean) <= NAME_CHARS:
        return clean
    head, dot, suffix = clean.rpartition(".")
    suffix = dot + suffix if dot and len(suffix) <= 8 else ""
    return clean[: NAME_CHARS - len(suffix) - 1] + "\u2026" + suffix


def markdown_text(text: str) -> str:
    """Text that viser's markdown (GFM, raw HTML allowed) shows literally: every ASCII
    punctuation character is backslash-escaped, so none starts HTML, a link, an image or
    emphasis. Use for anything a person supplied, such as an uploaded file's name."""
    return "".join("\\" + c if c in string.punctuation else c for c in text)


def plot_series() -> tuple[viser.uplot.Series, ...]:
    """Series of the plot: time (x), jaw, the seven emotions, the playhead."""
    series: list[viser.uplot.Series] = [{"label": "t (s)"}]
    series.append({"label": "jaw", "stroke": _JAW_COLOUR, "width": 2})
    for label, colour in zip(EMOTIONS, _EMOTION_COLOURS, strict=True):
        series.append({"label": label, "stroke": colour, "width": 1.5})
    series.append({"label": "now", "stroke": _PLAYHEAD_COLOUR, "width": 2})
    return tuple(series)


def empty_plot_data() -> tuple[np.ndarray, ...]:
    x = np.linspace(0.0, 1.0, 2)
    return (x,) + tuple(np.zeros(2) for _ in range(len(EMOTIONS) + 2))


def plot_data(
    times: np.ndarray, jaw: np.ndarray, intensities: np.ndarray, playhead: float
) -> tuple[np.ndarray, ...]:
    """The plot's arrays, resampled to at most `PLOT_POINTS` points.

    Args:
        times: frame times `[T]`, seconds.
        jaw: jaw opening `[T]`, radians (about 0 to 0.4, so it shares the 0-1 axis).
        intensities: emotion intensities `[T, 7]` in EMOTIONS order, in [0, 1].
        playhead: the current time, seconds; drawn as a spike from 0 to 1.
    """
    n = len(times)
    pick = np.linspace(0, n - 1, min(n, PLOT_POINTS)).round().astype(int)  # [P]
    x = times[pick].astype(np.float64)
    head = np.zeros(len(x))
    if len(x) > 1:
        head[int(np.clip(np.searchsorted(x, playhead), 0, len(x) - 1))] = 1.0
    columns = [x, jaw[pick].astype(np.float64)]
    columns += [intensities[pick, k].astype(np.float64) for k in range(intensities.shape[1])]
    columns.append(head)
    return tuple(columns)
