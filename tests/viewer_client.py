"""A stand-in for the viewer's browser tab: a websocket client speaking viser's protocol.

It sends what the page sends (a camera message, GUI updates, file uploads in parts) and decodes
what the server sends (notifications, upload acknowledgements, frames), so tests and benchmarks
can drive a real headless `ViewerApp` without a browser. `wait_session` and `open_tab` find the
session a page opened; the test viewer (tests/conftest.py's `app`) draws `SIZE` pixel frames.
"""

from __future__ import annotations

import io
import threading
import time
import uuid as uuid_module
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np
import soundfile as sf
import viser
from websockets.sync.client import connect

from avatar.camera import head_camera
from viewer._viser_compat import decode_server_frame, encode_client_message, messages

if TYPE_CHECKING:
    from viewer.app import ClientSession, ViewerApp

#: Parts of an upload, as viser's page cuts files (UploadButton.tsx).
PART_BYTES = 512 * 1024
#: The test viewer's frame side (small frames keep the suite fast; the benchmark measures 512).
SIZE = 128
#: An origin the test viewer is told to allow.
PROXY = "https://studio.example:9443"


def start_test_viewer(animator, avatar) -> ViewerApp:
    """A started headless viewer on a free port: `SIZE` pixel frames, the CPU rasterizer,
    `PROXY` allowed (the `app` fixture, and tests that stop their own)."""
    from viewer.app import ViewerApp, ViewerConfig

    cfg = ViewerConfig(
        port=0, max_side=SIZE, moving_side=64, backend="cpu", render_fps=25.0,
        allow_origins=(PROXY,),
    )  # fmt: skip
    viewer = ViewerApp(cfg, animator=animator, avatar=avatar)
    viewer.start()
    return viewer


class FakePage:
    """One tab: connects, sends its camera (the server starts a session on the first one),
    reads and decodes everything the server sends on a background thread.

    Args:
        port: the viewer's port on 127.0.0.1.
        width, height: the canvas size the camera message reports.
        keep: how many decoded messages to keep (the newest).
    """

    def __init__(self, port: int, *, width: int = 128, height: int = 128, keep: int = 4000) -> None:
        self.ws = connect(
            f"ws://127.0.0.1:{port}",
            subprotocols=[f"viser-v{viser.__version__}"],
            max_size=None,
        )
        self.received = 0  # frames (each may hold several messages)
        self.images = 0  # background images among the messages
        self.messages: deque[dict[str, Any]] = deque(maxlen=keep)
        self.closed = threading.Event()
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        cam = head_camera("front", width, height)
        self.send(
            messages.ViewerCameraMessage(
                wxyz=tuple(float(x) for x in cam.wxyz),
                position=tuple(float(x) for x in cam.camera_center),
                fov=cam.fov_y,
                near=0.01,
                far=100.0,
                image_height=height,
                image_width=width,
                look_at=(0.0, 0.0, 0.0),
                up_direction=(0.0, 1.0, 0.0),
            )  # fmt: skip
        )

    def send(self, message: messages.Message) -> None:
        self.ws.send(encode_client_message(message))

    def _read(self) -> None:
        try:
            for frame in self.ws:
                assert isinstance(frame, bytes)
                decoded = decode_server_frame(frame)
                with self._cond:
                    self.received += 1
                    self.images += sum(m.get("type") == "BackgroundImageMessage" for m in decoded)
                    self.messages.extend(decoded)
                    self._cond.notify_all()
        except Exception:  # noqa: BLE001 - the connection closing ends the reader
            pass
        self.closed.set()

    def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 20.0
    ) -> dict[str, Any]:
        """The first kept message (received before or during the wait) that matches."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for message in list(self.messages):
                    if predicate(message):
                        return message
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("the server never sent the expected message")
                self._cond.wait(left)

    def notifications(self) -> list[tuple[str, str]]:
        """(title, body) of every notification shown so far (of those kept)."""
        with self._cond:
            return [
                (m["props"]["title"], m["props"]["body"])
                for m in self.messages
                if m.get("type") == "NotificationShowMessage"
            ]

    def wait_notification(self, title: str, timeout: float = 20.0) -> str:
        """The body of the first notification with this title."""
        found = self.wait_for(
            lambda m: m.get("type") == "NotificationShowMessage" and m["props"]["title"] == title,
            timeout,
        )
        return str(found["props"]["body"])

    def wait_ack(self, transfer: str, transferred: int, timeout: float = 20.0) -> None:
        """Until the server acknowledged `transferred` bytes of a transfer."""
        self.wait_for(
            lambda m: (
                m.get("type") == "FileTransferPartAck"
                and m["transfer_uuid"] == transfer
                and m["transferred_bytes"] == transferred
            ),
            timeout,
        )

    def start_upload(self, button: str, name: str, *, size: int, parts: int | None = None) -> str:
        """Announce an upload through the upload button `button` (its uuid); returns the
        transfer's uuid. `parts` defaults to what the page would send for `size` bytes."""
        transfer = uuid_module.uuid4().hex
        self.send(
            messages.FileTransferStartUpload(
                source_component_uuid=button,
                transfer_uuid=transfer,
                filename=name,
                mime_type="audio/wav",
                part_count=parts if parts is not None else -(-size // PART_BYTES),
                size_bytes=size,
            )  # fmt: skip
        )
        return transfer

    def send_part(self, button: str, transfer: str, index: int, content: bytes) -> None:
        self.send(
            messages.FileTransferPart(
                source_component_uuid=button,
                transfer_uuid=transfer,
                part_index=index,
                content=content,
            )  # fmt: skip
        )

    def upload(self, button: str, name: str, data: bytes) -> str:
        """Upload a whole file as the page does: the announcement, then 512 KB parts."""
        transfer = self.start_upload(button, name, size=len(data))
        for i in range(0, len(data), PART_BYTES):
            self.send_part(button, transfer, i // PART_BYTES, data[i : i + PART_BYTES])
        return transfer

    def set_value(self, element: str, value: Any) -> None:
        """What the page sends when a person moves a control (element: its uuid)."""
        self.send(messages.GuiUpdateMessage(uuid=element, updates={"value": value}))

    def click(self, button: str) -> None:
        self.set_value(button, True)

    def close(self) -> None:
        self.ws.close()


def wait_session(app: ViewerApp, page: FakePage) -> ClientSession:
    """The session `page` has just opened on `app`, once it has sent a first frame."""
    before = set(app.sessions)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        new = set(app.sessions) - before
        if new:
            session = app.sessions[new.pop()]
            # Its first frames may be out already (paused, it then waits for a change): wait
            # for a first frame, not for one more.
            while session.frames_sent < 1 and time.monotonic() < deadline + 20:
                time.sleep(0.02)
            assert session.frames_sent >= 1
            return session
        time.sleep(0.02)
    raise AssertionError("no session started")


@contextmanager
def open_tab(app: ViewerApp) -> Iterator[tuple[FakePage, ClientSession]]:
    """A tab connected for the length of a with-block, and its session."""
    page = FakePage(app.server.get_port())
    try:
        yield page, wait_session(app, page)
    finally:
        page.close()


def tone_file(seconds: float, fmt: str = "FLAC", rate: int = 16_000) -> bytes:
    """A 220 Hz tone as the bytes of an audio file (`fmt`: a soundfile format)."""
    t = np.arange(int(seconds * rate)) / rate
    buffer = io.BytesIO()
    sf.write(buffer, 0.3 * np.sin(2 * np.pi * 220 * t), rate, format=fmt)
    return buffer.getvalue()
