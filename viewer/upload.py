"""Speech uploads of one viewer tab: checked while they arrive, decoded and analysed off the
render thread, a bounded number at once per server, then played.

`UploadHandling` is a part of `viewer.app.ClientSession` (it uses the session's client,
controls, clip and locks); it lives here so the session module holds the picture and the
controls, and this one what comes in.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from animator.audio import load_audio
from avatar.errors import TalkingAvatarError
from viewer import _viser_compat as compat
from viewer import gui as gui_layout
from viewer.clip import make_clip

#: Uploads: what we accept and how much (checked on the server, whatever the page claims).
UPLOAD_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg")
MAX_UPLOAD_BYTES = 50 * 1024 * 1024
MAX_UPLOAD_SECONDS = 600.0
#: Uploads decoded and analysed at once on one server (a 10-minute file keeps a core busy for
#: about two minutes); later ones wait for a slot. One tab analyses one upload at a time.
MAX_PARALLEL_ANALYSES = 2
_BUSY = "this tab is still analysing the last upload; wait for it to finish"


class Cancelled(Exception):
    """The client left while its export ran or its upload waited."""


class UploadHandling:
    """Upload handlers of a `ClientSession` (see the module docstring)."""

    def _upload_problem(self, name: str, size: int) -> str | None:
        """Why an upload of this name and size is refused, or None."""
        if Path(name).suffix.lower() not in UPLOAD_SUFFIXES:
            return "not a speech file this viewer reads; upload wav, flac, mp3 or ogg"
        return compat.oversize_reason(size, self.config.max_upload_bytes)

    def _admit_upload(self, name: str, size: int) -> str | None:
        """Whether a transfer may start (None) or why not (called as it starts; the byte
        limits are enforced by `compat.guard_uploads` while the bytes arrive)."""
        if self._analysing.locked():
            return _BUSY
        return self._upload_problem(name, size)

    def _refuse_upload(self, name: str, reason: str) -> None:
        self.client.add_notification(
            "Upload refused", f"{gui_layout.display_name(name)}: {reason}", color="red"
        )

    def _on_upload(self) -> None:
        upload = self.controls.upload.value
        threading.Thread(
            target=self.load_upload, args=(upload.name, upload.content), daemon=True
        ).start()

    def load_upload(self, name: str, content: bytes) -> bool:
        """Check, decode and analyse an uploaded file, then play it; a bad file shows a message
        in the page and changes nothing. One upload per tab at a time, and at most
        `MAX_PARALLEL_ANALYSES` per server (the others wait for a slot). Returns whether the
        clip was replaced."""
        if not self._analysing.acquire(blocking=False):
            self._refuse_upload(name, _BUSY)
            return False
        try:
            return self._analyse_upload(name, content)
        finally:
            self._analysing.release()

    def _analyse_upload(self, name: str, content: bytes) -> bool:
        cfg = self.config
        shown = gui_layout.display_name(name)
        progress = self.controls.upload_progress
        note = None
        try:
            problem = self._upload_problem(name, len(content))
            if problem is not None:
                raise TalkingAvatarError(f"{shown}: {problem}")
            with self._analysis_slot():
                note = self.client.add_notification(
                    f"Animating {shown}", "Reading and analysing the speech...", loading=True,
                    with_close_button=False,
                )  # fmt: skip
                progress.visible = True
                progress.value = 10.0
                handle, tmp = tempfile.mkstemp(
                    dir=self._upload_dir, prefix="upload-", suffix=Path(name).suffix.lower()
                )
                os.close(handle)
                path = Path(tmp)
                try:
                    path.write_bytes(content)
                    # Refused from the header before decoding; never decodes past the limit.
                    audio = load_audio(path, max_seconds=cfg.max_upload_seconds, label=shown)
                    progress.value = 40.0
                    clip = make_clip(
                        self.app.animator, audio, name=Path(name).name, fps=cfg.anim_fps
                    )
                except BaseException:
                    path.unlink(missing_ok=True)
                    raise
            progress.value = 90.0
            if self._closed.is_set():
                path.unlink(missing_ok=True)
                return False
            previous = self.clip.audio.path
            self.set_clip(clip)
            if previous is not None and previous.parent == self._upload_dir:
                previous.unlink(missing_ok=True)  # an export in flight keeps its open handle
        except Cancelled:
            return False
        except TalkingAvatarError as err:
            self.client.add_notification("Upload refused", str(err), color="red")
            return False
        except Exception as err:  # noqa: BLE001 - the server must survive any upload
            self.client.add_notification(
                "Upload failed", f"{shown}: {type(err).__name__}: {err}", color="red"
            )
            return False
        finally:
            if note is not None:
                note.remove()
            progress.visible = False
        self.client.add_notification(
            "Speech loaded", f"{shown} ({clip.duration:.1f} s). Press Play.",
            auto_close_seconds=5.0, color="green",
        )  # fmt: skip
        return True

    @contextmanager
    def _analysis_slot(self) -> Iterator[None]:
        """One of the server's analysis slots, waiting (and saying so) while all are taken;
        raises Cancelled when the tab closes meanwhile."""
        slots = self.app.analysis_slots
        if not slots.acquire(blocking=False):
            waiting = self.client.add_notification(
                "Waiting", "The server is analysing other uploads; yours starts next.",
                loading=True, with_close_button=False,
            )  # fmt: skip
            try:
                while not slots.acquire(timeout=0.5):
                    if self._closed.is_set():
                        raise Cancelled
            finally:
                waiting.remove()
        try:
            yield
        finally:
            slots.release()
