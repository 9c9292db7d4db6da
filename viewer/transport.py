"""The transport of one viewer tab: which clip plays, play, pause, seek, loop and speed, the
page's audio element and its clock reports, and the timeline following playback.

`TransportHandling` is a part of `viewer.app.ClientSession` (it uses the session's client,
controls, clip and clock); the clock itself, and the JavaScript that drives the page's audio,
are `viewer.playback`.
"""

from __future__ import annotations

import viser

from viewer import _viser_compat as compat
from viewer import gui as gui_layout
from viewer.clip import Clip
from viewer.playback import AudioClock, ClockReport, audio_element_js, command_js

#: How often the timeline slider and the plot's playhead follow playback (seconds).
GUI_FOLLOW_S = 0.25


class TransportHandling:
    """Transport handlers of a `ClientSession` (see the module docstring)."""

    def _send_audio(self) -> None:
        compat.run_javascript(
            self.client,
            audio_element_js(
                self.clip.wav,
                compat.element_uuid(self.controls.clock_report),
                loop=self.clock.loop,
                seq=self.clock.seq,
            ),
        )
        # The page captures viser's websocket worker at its next send; a tiny fov change
        # (0.006 degrees, above viser's allclose) makes the page send its camera back at once,
        # so reports can start before any click.
        self.client.camera.fov = self.client.camera.fov + 1e-4
        self.client.flush()

    def _command(self, seq: int, *, seek: float | None = None) -> None:
        compat.run_javascript(self.client, command_js(self.clock, seq, seek=seek))
        self._changed()

    def _on_start(self) -> None:
        self._started = True
        self.controls.start.visible = False
        self.play()

    def play(self) -> None:
        self._command(self.clock.play())
        if self.controls.record.value:
            self._record_key()

    def pause(self) -> None:
        self._command(self.clock.pause())
        self._follow_playhead()

    def toggle_play(self) -> None:
        self.pause() if self.clock.playing else self.play()

    def seek(self, media_time: float) -> None:
        media_time = min(max(float(media_time), 0.0), self.clip.duration)
        self._command(self.clock.seek(media_time), seek=media_time)
        self._follow_playhead()

    def _on_timeline(self, event: viser.GuiEvent) -> None:
        if event.client is None:
            return  # our own follow-the-playhead update, not a person scrubbing
        self.seek(self.controls.timeline.value)

    def _on_clock_report(self, event: viser.GuiEvent) -> None:
        report = ClockReport.parse(self.controls.clock_report.value)
        if report is None:
            return
        was_error = self.clock.browser_error
        self.clock.report(report)
        if report.error and not was_error and self.clock.playing:
            self.client.add_notification(
                "Sound is blocked", "Click the green Start button to hear the speech.",
                color="yellow", auto_close_seconds=8.0,
            )  # fmt: skip
            self.controls.start.visible = True

    def _follow_playhead(self) -> None:
        """Move the timeline slider and the plot's playhead with playback (a few times a second;
        each update is a message to the page)."""
        t = round(self.clock.position(), 2)
        self.controls.timeline.value = t  # event.client is None: _on_timeline ignores it
        self._update_plot(t)

    def set_clip(self, clip: Clip) -> None:
        """Play another clip: a new clock (paused at 0), timeline, plot and page audio."""
        loop, rate = self.clock.loop, self.clock.rate
        with self._lock:
            self.clip = clip
            self.clock = AudioClock(clip.duration, loop=loop, rate=rate)
            self.track_keys.clear()  # keys belong to the old clip's times
        self.controls.timeline.max = max(clip.duration, 0.01)
        self.controls.timeline.value = 0.0
        self.controls.status.content = gui_layout._status_text(clip.name, clip.duration)
        self._send_audio()
        self._update_track_info()
        self._update_plot()
        self._changed()
