"""Recording an emotion track in the viewer, and the one rule for what drives the emotions.

`RecordingHandling` is a part of `viewer.app.ClientSession`: while "Record" is ticked and the
clip plays, slider moves become keys of a track (the CLI's --track format, downloadable);
`emotion_track` says what the picture, the plot and export all follow.
"""

from __future__ import annotations

from animator.emotion import EmotionTrack


class RecordingHandling:
    """Recording handlers of a `ClientSession` (see the module docstring)."""

    def _on_record(self) -> None:
        if self.controls.record.value:
            self._record_key()
        self._update_track_info()
        self._changed()

    def _record_key(self) -> None:
        """A key at the current audio time with the current sliders (replacing one at the
        same millisecond)."""
        t = round(self.clock.position(), 3)
        with self._lock:
            self.track_keys[t] = dict(self.mix)
        self._update_track_info()

    def recorded_track(self) -> EmotionTrack | None:
        with self._lock:
            keys = sorted(self.track_keys.items())
        if not keys:
            return None
        return EmotionTrack.from_list([{"t": t, "mix": mix} for t, mix in keys])

    def _clear_track(self) -> None:
        with self._lock:
            self.track_keys.clear()
        self._update_track_info()
        self._update_plot()
        self._changed()

    def _update_track_info(self) -> None:
        n = len(self.track_keys)
        rec = " (recording)" if self.controls.record.value else ""
        self.controls.track_info.content = (
            f"{n} key{'s' * (n != 1)}{rec}." if n else f"No track recorded{rec}."
        )

    def track_json(self) -> bytes:
        import json

        track = self.recorded_track()
        return (json.dumps(track.to_list() if track else [], indent=1) + "\n").encode()

    def save_track(self) -> None:
        """Offer the recorded track as JSON (the CLI's --track format) for download."""
        if self.recorded_track() is None:
            self.client.add_notification(
                "No track", "Tick Record and move sliders while playing.", auto_close_seconds=5
            )
            return
        self.client.send_file_download("emotion_track.json", self.track_json())

    def emotion_track(self) -> EmotionTrack:
        """What drives the emotions, the one rule for the picture, the plot and export: the
        recorded track when "follow track" is on and a track exists (not while recording: then
        the sliders being recorded do), else the sliders, held."""
        if self.controls.follow_track.value and not self.controls.record.value:
            track = self.recorded_track()
            if track is not None:
                return track
        return EmotionTrack.constant(self.current_mix())
