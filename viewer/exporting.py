"""Export from the viewer: the tab's clip as the page shows it, rendered to an MP4 in the
background with progress in the page, then offered for download.

`ExportHandling` is a part of `viewer.app.ClientSession` (it uses the session's clip, emotion
rule, view and controls); the MP4 itself is `viewer.export.export_mp4`, the same as the CLI's.
"""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path

from animator.animator import Performance
from viewer.upload import Cancelled


class ExportHandling:
    """Export handlers of a `ClientSession` (see the module docstring)."""

    def performance(self) -> Performance:
        """The clip as a performance, as the page shows it (`emotion_track`)."""
        anim, clip = self.app.animator, self.clip
        track = self.emotion_track()
        return anim.perform(
            clip.audio, clip.speech_weights, track, fps=clip.fps, blinks=self.blinks,
            head_motion=self.head_motion, seed=self.config.seed, speaking=clip.speaking,
        )  # fmt: skip

    def start_export(self) -> threading.Thread | None:
        """Export the MP4 in the background; the page shows progress, then a download link."""
        with self._lock:
            if self.exporting:
                return None
            self.exporting = True
        self.controls.export.disabled = True
        self.controls.export_progress.value = 0.0
        self.controls.export_progress.visible = True
        thread = threading.Thread(target=self._export, daemon=True, name="viewer-export")
        self.export_thread = thread
        thread.start()
        return thread

    def _export(self) -> None:
        from viewer.export import export_mp4

        last = [0.0]

        def on_progress(done: int, total: int) -> None:
            if self._closed.is_set():
                raise Cancelled  # export_mp4 removes its temporary file
            percent = 100.0 * done / max(total, 1)
            if percent - last[0] >= 1.0 or done == total:
                last[0] = percent
                self.controls.export_progress.value = percent

        try:
            with tempfile.TemporaryDirectory() as scratch:
                path = Path(scratch) / "talking-avatar.mp4"
                size = self.config.max_side
                export_mp4(
                    self.performance(), self.app.avatar, path, head=self.app.animator.head,
                    width=size, height=size, camera=self.view, background=self.background,
                    backend=self.config.backend, progress=False, on_progress=on_progress,
                )  # fmt: skip
                data = path.read_bytes()
            self.last_export = data
            if not self._closed.is_set():
                self.client.send_file_download("talking-avatar.mp4", data)
        except Cancelled:
            return
        except Exception as err:  # noqa: BLE001 - report in the page; the server keeps going
            if not self._closed.is_set():
                self.client.add_notification(
                    "Export failed", f"{type(err).__name__}: {err}", color="red"
                )
        finally:
            with self._lock:
                self.exporting = False
            if not self._closed.is_set():
                self.controls.export.disabled = False
                self.controls.export_progress.visible = False
