"""The browser viewer, headless: a real ViserServer on a free port, a websocket client standing
in for the page (tests/viewer_client.py: it sends a camera, uploads, reads whatever the server
sends), and the session driven through its GUI handles. Browser behaviour (audio, screenshots)
is in test_viewer_browser.py."""

from __future__ import annotations

import base64
import io
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

import numpy as np
import pytest
import soundfile as sf
import viser
from viewer_client import PART_BYTES, FakePage

from animator import Animator
from animator.audio import Audio
from animator.emotion import as_track
from avatar.avatars import load_avatar
from avatar.camera import Camera, head_camera
from avatar.flame import load_flame
from viewer import _viser_compat as compat
from viewer.app import (
    AudioClock,
    ClientSession,
    ViewerApp,
    ViewerConfig,
    check_port_free,
)
from viewer.frames import image_size
from viewer.origins import OriginPolicy, normalize_origin
from viewer.playback import ERROR_WINDOW, ClockReport, audio_element_js, command_js
from viewer.render_loop import FrameRequest, RenderLoop
from viewer.upload import MAX_UPLOAD_BYTES

pytestmark = pytest.mark.filterwarnings("ignore:Queued a .* on a closed connection")
SIZE = 128  # small frames keep the suite fast; the benchmark measures 512
PROXY = "https://studio.example:9443"  # an origin the test server is told to allow
MIB = 2**20


@pytest.fixture(scope="module")
def models():
    head = load_flame()
    anim = Animator.load(head=head)
    return anim, load_avatar(None, head)


@pytest.fixture(scope="module")
def app(models):
    anim, avatar = models
    cfg = ViewerConfig(
        port=0, max_side=SIZE, moving_side=64, backend="cpu", render_fps=25.0,
        allow_origins=(PROXY,),
    )  # fmt: skip
    viewer = ViewerApp(cfg, animator=anim, avatar=avatar)
    viewer.start()
    yield viewer
    viewer.stop()


def _tone_file(seconds: float, fmt: str = "FLAC", rate: int = 16_000) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    buffer = io.BytesIO()
    sf.write(buffer, 0.3 * np.sin(2 * np.pi * 220 * t), rate, format=fmt)
    return buffer.getvalue()


def _session(app: ViewerApp, page: FakePage):
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
def _tab(app: ViewerApp) -> Iterator[tuple[FakePage, ClientSession]]:
    """A tab connected for the length of a with-block, and its session."""
    page = FakePage(app.server.get_port())
    try:
        yield page, _session(app, page)
    finally:
        page.close()


def _next_frame(session) -> np.ndarray:
    assert session.wait_frames(1, timeout=20)  # may have started before the change
    session._changed()
    assert session.wait_frames(1, timeout=20)  # started after: certainly shows it
    return session.last_image.astype(np.float32)


def _changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a - b).max(axis=2) > 12  # [H, W] pixels that visibly changed


def test_sliders_and_speech_move_the_right_regions(app):
    page = FakePage(app.server.get_port())
    try:
        session = _session(app, page)
        c = session.controls
        c.blinks.value = False  # a blink would change the eyes between frames
        c.head_motion.value = False
        session.seek(0.0)
        neutral = _next_frame(session)
        assert neutral.shape == (SIZE, SIZE, 3)
        assert (neutral.min(axis=2) < 200).mean() > 0.1, "the head should fill the frame"

        c.emotions["angry"].value = 1.0  # lowered, knitted brows: mostly the upper face
        angry = _next_frame(session)
        moved = _changed(neutral, angry)
        assert moved.sum() > 40
        rows = np.nonzero(moved)[0]
        assert np.median(rows) < 0.5 * SIZE, "anger should change the upper face most"
        assert moved[: SIZE // 2].sum() > moved[int(0.62 * SIZE) :].sum()

        c.emotions["angry"].value = 0.0
        # Speech: the loudest frame of the sample opens the jaw: the lower face changes.
        anim, clip = session.app.animator, session.clip
        w_e = anim.emotion_weights(session.emotion_track(), clip.num_frames, fps=clip.fps)
        jaw = anim.to_flame(clip.speech_weights, w_e).jaw_pose[:, 0]
        open_t = int(jaw.argmax()) / session.clip.fps
        session.seek(0.0)
        closed = _next_frame(session)
        session.seek(open_t)
        opened = _next_frame(session)
        moved = _changed(closed, opened)
        assert moved.sum() > 20
        assert np.median(np.nonzero(moved)[0]) > 0.55 * SIZE, "speech should move the mouth"
        assert session.change_latencies, "slider changes should be timed"
    finally:
        page.close()


def test_playback_advances_and_two_clients_are_independent(app):
    a = FakePage(app.server.get_port())
    sa = _session(app, a)
    b = FakePage(app.server.get_port())
    try:
        sb = _session(app, b)
        assert sa is not sb and sa.controls.emotions["happy"] is not sb.controls.emotions["happy"]
        sa.controls.emotions["angry"].value = 0.8
        assert sb.current_mix() == {}
        sa.play()
        t0 = sa.clock.position()
        assert sa.wait_frames(5, timeout=20)
        assert sa.clock.playing and sa.clock.position() > t0
        assert not sb.clock.playing
        sa.pause()
    finally:
        a.close()
        b.close()


def test_frame_source_is_the_render_seam_without_a_server(models):
    """viewer.frames.FrameSource: a frame's parameters and picture from plain data (no viser),
    the parameters exactly those of the performance export renders."""
    import torch

    from animator.audio import load_audio
    from avatar.paths import asset_path
    from viewer.app import make_clip
    from viewer.frames import FrameSource

    anim, avatar = models
    speech = load_audio(asset_path("speech", "sample.wav"))
    audio = Audio(speech.samples[: speech.samples.size // 10])
    clip = make_clip(anim, audio, name="part", fps=30.0)
    track = as_track({"sad": 0.6})
    idle = clip.idle(anim, blinks=True, head_motion=True, seed=4)
    source = FrameSource(anim, avatar, clip, track, idle, backend="cpu")
    perf = anim.perform(audio, clip.speech_weights, track, fps=30.0, seed=4,
                        speaking=clip.speaking)  # fmt: skip
    for i in (0, clip.num_frames // 2, clip.num_frames - 1):
        got, want = source.params(i), perf.params.slice(i, i + 1)
        assert torch.equal(got.expr, want.expr) and torch.equal(got.jaw_pose, want.jaw_pose)
        assert torch.equal(got.eyes_pose, want.eyes_pose)
    image = source.render(head_camera("front", 64, 64), 0.2)
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    assert (image.min(axis=2) < 200).mean() > 0.1  # the head is in the picture


class _FakeFrames:
    """A render loop around a fake renderer on a fake clock: `state` is what a frame shows;
    drawing a state in `hold` blocks until `release` is set, so requests can arrive while a
    frame is in flight, deterministically. With `poll`, `prepare` checks `request.stale()`
    before its (fake) rasterizer, as the session does."""

    def __init__(self, *, hold: tuple[str, ...] = (), poll: bool = False) -> None:
        self.state, self.now, self.hold, self.poll = "a", 100.0, hold, poll
        self.prepared: list[tuple[str, bool]] = []  # (state, moving) per frame begun
        self.drawn: list[str] = []  # states the rasterizer ran for
        self.sent: list[str] = []
        self.blocked, self.release = threading.Event(), threading.Event()
        self._cond = threading.Condition()
        self.loop = RenderLoop(
            self.prepare, self.send, fps=25.0, playing=lambda: False, clock=lambda: self.now
        )

    def prepare(self, request: FrameRequest) -> tuple[float, str] | None:
        state = self.state
        self.prepared.append((state, request.moving))
        if state in self.hold:
            self.blocked.set()
            assert self.release.wait(20)
        if self.poll and request.stale():
            return None
        self.drawn.append(state)
        return 0.0, state

    def send(self, frame: str) -> None:
        with self._cond:
            self.sent.append(frame)
            self._cond.notify_all()

    def wait_sent(self, count: int) -> None:
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.sent) >= count, 20), self.sent

    def finish(self) -> RenderLoop:
        """Stop the loop and wait for its thread: its counters are final."""
        self.loop.stop()
        self.loop.join(20)
        return self.loop


@pytest.mark.parametrize("poll", [False, True], ids=["checked-before-send", "polled-in-prepare"])
def test_render_loop_drops_an_overtaken_frame_and_draws_the_newest_state(poll):
    """Requests that arrive while a frame is drawn (a slider, then a seek) overtake it: it is
    never sent, the next frame shows the newest state, and the state in between is never drawn
    (no queue of stale work). Polled between posing and drawing, the overtaken frame skips the
    rasterizer too. Latency is timed from the first request the page has not seen."""
    frames = _FakeFrames(hold=("a",), poll=poll)
    frames.loop.request()
    frames.loop.start("test-render")
    try:
        assert frames.blocked.wait(20)  # drawing "a"
        frames.now += 0.01
        frames.state = "b"
        frames.loop.request()
        frames.state = "c"
        frames.loop.request()
        frames.release.set()
        frames.wait_sent(1)
    finally:
        loop = frames.finish()
    assert frames.sent == ["c"]
    assert [state for state, _ in frames.prepared] == ["a", "c"]
    assert frames.drawn == (["c"] if poll else ["a", "c"])
    assert (loop.frames_sent, loop.frames_dropped) == (1, 1)
    assert list(loop.change_latencies) == [pytest.approx(0.01)]  # from the request "a" answered


def test_render_loop_sends_an_overtaken_frame_once_the_page_waited_too_long():
    """A drag overtakes every frame that takes longer than the requests' spacing: a frame the
    page has waited a frame period for goes out anyway, then the newest state."""
    frames = _FakeFrames(hold=("a",))
    frames.loop.request()
    frames.loop.start("test-render")
    try:
        assert frames.blocked.wait(20)
        frames.state = "c"
        frames.loop.request()
        frames.now += 2 * frames.loop.period  # this frame took two periods to draw
        frames.release.set()
        frames.wait_sent(2)
    finally:
        loop = frames.finish()
    assert frames.sent == ["a", "c"]
    assert (loop.frames_sent, loop.frames_dropped) == (2, 0)


def test_render_loop_draws_small_while_the_camera_moves_then_once_full_size():
    frames = _FakeFrames()
    frames.loop.start("test-render")
    try:
        frames.loop.camera_moved()
        frames.wait_sent(1)
        assert frames.prepared == [("a", True)]
        frames.now += 1.0  # the camera has rested: the loop wakes for its full-size frame
        frames.wait_sent(2)
    finally:
        frames.finish()
    assert frames.prepared == [("a", True), ("a", False)]


def test_viewer_frame_is_the_exported_frame(app, models, tmp_path):
    """One frame path: with speech, a recorded emotion track, the idle layer (blinks, gaze,
    head sway) and an imported identity, frame i in the viewer has exactly the exported
    performance's parameters for frame i, and the same pixels through the same camera."""
    import imageio.v3 as iio
    import torch

    from avatar.camera import camera_for_frame
    from avatar.flame.identity import Identity
    from avatar.image import to_uint8
    from avatar.render import render
    from viewer.export import export_mp4

    anim, avatar = models
    head = anim.head
    shaped = replace(avatar, identity=Identity(shape=torch.full((head.num_shape,), 1.5)))
    frames = [0, 7, 19, 33, 48]
    with _tab(app) as (_, session):
        assert session.blinks and session.head_motion  # the idle layer is on by default
        session.controls.follow_track.value = True
        with session._lock:
            session.track_keys.update({0.0: {"happy": 1.0}, 1.2: {"sad": 0.8, "angry": 0.3}})
        app.avatar = shaped
        try:
            fps = session.clip.fps
            shown = {i: session.frame_params(i) for i in frames}
            posed = {i: session._pose(i / fps) for i in frames}
            perf = session.performance()
        finally:
            app.avatar = avatar
    assert perf.num_frames > max(frames)
    for i in frames:
        exported = perf.params.slice(i, i + 1)
        for name in ("expr", "jaw_pose", "eyes_pose", "neck_pose", "rotation", "translation"):
            assert torch.equal(getattr(shown[i], name), getattr(exported, name)), (i, name)
    assert float(perf.params.eyes_pose.abs().max()) > 0  # the idle layer is in both
    short = replace(perf, params=perf.params.slice(0, max(frames) + 1))
    export_mp4(short, shaped, tmp_path / "x.mp4", head=head, width=96, height=96,
               backend="cpu", frames_dir=tmp_path / "frames", progress=False)  # fmt: skip
    for i in frames:
        exported = iio.imread(tmp_path / "frames" / f"{i:06d}.png").astype(int)
        cam = camera_for_frame("front", i, perf.fps, 96, 96)
        viewed = to_uint8(render(posed[i], cam, backend="cpu").color).astype(int)
        # FLAME batched over frames (export) or one frame (viewer) rounds its last float bit
        # differently (< 1e-7 m): at most one level on a few edge pixels
        assert np.abs(exported - viewed).max() <= 1, i
        assert (exported != viewed).any(axis=2).mean() < 0.002, i


def test_record_track_and_export_mp4_with_audio(app, tmp_path):
    from viewer.export import read_video_info

    page = FakePage(app.server.get_port())
    try:
        session = _session(app, page)
        short = Audio(session.clip.audio.samples[:16_000])  # 1 s keeps the export quick
        from viewer.app import make_clip

        session.set_clip(make_clip(app.animator, short, name="short.wav", fps=30.0))
        c = session.controls
        c.record.value = True
        session.play()
        c.emotions["happy"].value = 0.9
        time.sleep(0.2)
        c.emotions["sad"].value = 0.4
        session.pause()
        c.record.value = False
        track = session.recorded_track()
        assert track is not None and len(track.keys) >= 2
        assert track.keys[-1].mix.get("sad") == pytest.approx(0.4)
        assert b'"mix"' in session.track_json()

        thread = session.start_export()
        assert thread is not None
        assert session.start_export() is None, "one export at a time"
        thread.join(timeout=120)
        assert session.last_export is not None
        out = tmp_path / "export.mp4"
        out.write_bytes(session.last_export)
        info = read_video_info(out)
        assert info["audio"] and info["frames"] == 30
        assert info["width"] == SIZE and info["height"] == SIZE
        assert not c.export.disabled
    finally:
        page.close()


def test_upload_bad_file_and_disconnect_mid_export_leave_server_healthy(app, tmp_path):
    import soundfile as sf

    page = FakePage(app.server.get_port())
    session = _session(app, page)
    old = session.clip
    assert not session.load_upload("notes.txt", b"hello")
    assert not session.load_upload("broken.wav", b"RIFF....not audio")
    assert session.clip is old
    wav = tmp_path / "tone.flac"
    t = np.arange(16_000) / 16_000
    sf.write(wav, 0.3 * np.sin(2 * np.pi * 220 * t), 16_000)
    assert session.load_upload("tone.flac", wav.read_bytes())
    assert session.clip.name == "tone.flac" and abs(session.clip.duration - 1.0) < 0.01

    thread = session.start_export()
    page.close()  # leave mid-export: the export cancels, the server keeps serving
    thread.join(timeout=60)
    assert not thread.is_alive()
    deadline = time.monotonic() + 10
    while session.client.client_id in app.sessions and time.monotonic() < deadline:
        time.sleep(0.05)
    assert session.client.client_id not in app.sessions
    again = FakePage(app.server.get_port())
    try:
        assert _session(app, again).frames_sent >= 1
    finally:
        again.close()


def test_upload_over_the_limit_is_refused_while_it_arrives(app):
    """A real transfer over the websocket: the callback never sees an oversized file and the
    server never buffers more than the limit."""
    with _tab(app) as (page, session):
        arrived: list[int] = []
        session._on_upload = lambda: arrived.append(1)  # what viser calls once a file is whole
        button = compat.element_uuid(session.controls.upload)
        part = bytes(PART_BYTES)

        # Announced as 60 MB: refused at once; the parts the page sends anyway are discarded.
        big = page.start_upload(button, "big.wav", size=60 * MIB)
        for i in range(3):
            page.send_part(button, big, i, part)
        body = page.wait_notification("Upload refused")
        assert body == "big.wav: 60 MB is over the 50 MB limit; upload a shorter recording"
        page.wait_ack(big, 60 * MIB)  # the page's button is told the transfer is over
        assert compat.buffered_upload_bytes(session.client) == 0

        # Announced as exactly 50 MB but in one part more: buffered up to the limit, then
        # dropped whole on the part that passes it.
        liar = page.start_upload(button, "liar.wav", size=MAX_UPLOAD_BYTES, parts=101)
        for i in range(100):
            page.send_part(button, liar, i, part)
        page.wait_ack(liar, MAX_UPLOAD_BYTES)
        assert compat.buffered_upload_bytes(session.client) == MAX_UPLOAD_BYTES
        page.send_part(button, liar, 100, part)
        page.wait_for(
            lambda m: (
                m.get("type") == "NotificationShowMessage"
                and m["props"]["body"].startswith("liar.wav")
            )
        )
        assert compat.buffered_upload_bytes(session.client) == 0
        assert ("Upload refused", "liar.wav: it sent more than the 50 MB it announced") in (
            page.notifications()
        )
        time.sleep(0.3)  # any late callback would have been queued by now
        assert arrived == []


def test_upload_guard_passes_honest_files_one_at_a_time(app):
    with _tab(app) as (page, session):
        button = compat.element_uuid(session.controls.upload)
        # A small lie is caught on the first part past the announced size.
        liar = page.start_upload(button, "small.wav", size=600_000, parts=4)
        page.send_part(button, liar, 0, bytes(PART_BYTES))
        page.wait_ack(liar, PART_BYTES)
        page.send_part(button, liar, 1, bytes(PART_BYTES))
        assert page.wait_notification("Upload refused") == (
            "small.wav: it sent more than the 0.6 MB it announced"
        )
        assert compat.buffered_upload_bytes(session.client) == 0

        # While one transfer arrives, a second from the same tab is refused.
        first = page.start_upload(button, "first.flac", size=3 * PART_BYTES)
        page.send_part(button, first, 0, bytes(PART_BYTES))
        page.wait_ack(first, PART_BYTES)
        page.start_upload(button, "second.flac", size=1000)
        page.wait_for(
            lambda m: (
                m.get("type") == "NotificationShowMessage"
                and m["props"]["body"].startswith("second.flac")
            )
        )
        assert (
            "Upload refused",
            "second.flac: another upload from this tab is still arriving; wait for it to finish",
        ) in page.notifications()
        page.close()  # the tab goes: its half-received transfer goes with it
        deadline = time.monotonic() + 10
        while compat.buffered_upload_bytes(session.client) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert compat.buffered_upload_bytes(session.client) == 0

    # A real file through the real protocol reaches the session and becomes the clip.
    with _tab(app) as (page, session):
        button = compat.element_uuid(session.controls.upload)
        page.upload(button, "tone.flac", _tone_file(2.0))
        assert page.wait_notification("Speech loaded") == "tone.flac (2.0 s). Press Play."
        assert session.clip.name == "tone.flac"


def test_uploads_are_analysed_one_per_tab_and_two_per_server(app):
    with _tab(app) as (page, session):
        old = session.clip
        tone = _tone_file(1.0)
        with session._analysing:  # this tab is busy analysing
            assert not session.load_upload("tone.flac", tone)
        assert page.wait_notification("Upload refused") == (
            "tone.flac: this tab is still analysing the last upload; wait for it to finish"
        )
        slots = app.analysis_slots
        assert slots.acquire(blocking=False) and slots.acquire(blocking=False)  # two others run
        try:
            assert not slots.acquire(blocking=False), "two analyses at most"
            worker = threading.Thread(target=session.load_upload, args=("tone.flac", tone))
            worker.start()
            assert page.wait_notification("Waiting").startswith("The server is analysing")
            time.sleep(0.3)
            assert worker.is_alive() and session.clip is old  # it waits, it does not decode
        finally:
            slots.release()
        worker.join(timeout=60)
        slots.release()
        assert session.clip.name == "tone.flac"


def test_long_upload_is_refused_from_its_header(app):
    with _tab(app) as (page, session):
        header = io.BytesIO()
        # 11 minutes of 8 kHz silence (about 10 MB as 8-bit WAV): over the 10-minute limit.
        sf.write(header, np.zeros(8_000 * 660, np.float32), 8_000, format="WAV", subtype="PCM_U8")
        assert not session.load_upload("long.wav", header.getvalue())
        assert page.wait_notification("Upload refused") == (
            "long.wav lasts 11.0 minutes; at most 10.0 minutes can be used here: "
            "use a shorter recording"
        )


def test_uploaded_file_name_is_shown_as_text(app):
    """A name that is HTML (or markdown) shows as the same characters, and stays inert."""
    markdown_it = pytest.importorskip("markdown_it", reason="markdown-it-py renders markdown")
    name = "<img src=x onerror=alert(1)>.wav"
    with _tab(app) as (page, session):
        page.upload(compat.element_uuid(session.controls.upload), name, _tone_file(1.0, "WAV"))
        assert page.wait_notification("Speech loaded").startswith(name)
        shown = session.controls.status.content
        html = markdown_it.MarkdownIt("commonmark", {"html": True}).render(shown)
        assert "<img" not in html and "&lt;img src=x onerror=alert(1)&gt;.wav" in html


def _handshake(port: int, origin: str | None) -> int:
    """HTTP status of a raw WebSocket opening handshake (101: accepted)."""
    headers = [
        "GET / HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}",
        "Sec-WebSocket-Version: 13",
        f"Sec-WebSocket-Protocol: viser-v{viser.__version__}",
    ] + ([f"Origin: {origin}"] if origin is not None else [])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(("\r\n".join(headers) + "\r\n\r\n").encode())
        status_line = sock.recv(4096).split(b"\r\n", 1)[0]
    return int(status_line.split()[1])


def test_websocket_handshake_checks_the_origin(app):
    port = app.server.get_port()
    for evil in (
        "http://evil.example",
        f"http://evil.example:{port}",  # DNS rebinding: a foreign name resolving to us
        f"http://127.0.0.1:{port + 1}",  # another local program's page
        f"https://localhost:{port}",
        "null",  # sandboxed frames and file: pages
    ):
        assert _handshake(port, evil) == 403, evil
    for own in (f"http://127.0.0.1:{port}", f"http://localhost:{port}", f"http://[::1]:{port}"):
        assert _handshake(port, own) == 101, own
    assert _handshake(port, PROXY) == 101  # --allow-origin
    assert _handshake(port, None) == 101  # not a browser page: scripts, this test's client
    # The page itself (plain HTTP, no upgrade) is still served.
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")


def test_origin_policy_rules():
    local = OriginPolicy.from_flags("127.0.0.1", ["HTTP://Studio.LAN"])
    assert local.allowed == {"http://studio.lan:80"}
    assert local.accepts("http://studio.lan", "x", 8080)
    assert local.accepts("http://localhost:8080", "localhost:8080", 8080)
    assert not local.accepts("http://192.168.1.5:8080", "192.168.1.5:8080", 8080)
    lan = OriginPolicy.from_flags("0.0.0.0", [])
    # Reached by this machine's address: the origin is the address the browser connected to.
    assert lan.accepts("http://192.168.1.5:8080", "192.168.1.5:8080", 8080)
    assert not lan.accepts("http://192.168.1.5:8080", "10.0.0.2:8080", 8080)
    assert not lan.accepts("http://myhost.lan:8080", "myhost.lan:8080", 8080)  # names: flag
    assert OriginPolicy.from_flags("192.168.1.5", []).accepts("http://192.168.1.5:8080", None, 8080)
    assert normalize_origin("http://[::1]:8080/") == "http://[::1]:8080"
    for bad in ("studio.lan:8080", "ftp://x", "http://x/path", "http://x:99999", "*"):
        with pytest.raises(Exception, match="is not an origin; give scheme://host"):
            normalize_origin(bad)


def test_bad_allow_origin_is_one_line_and_exit_2():
    proc = subprocess.run(
        [sys.executable, "-m", "viewer.cli", "view", "--port", "0", "--allow-origin", "*"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "talking-avatar: error: --allow-origin '*' is not an origin; give scheme://host[:port], "
        "e.g. http://studio.lan:8080"
    ]


def test_share_url_request_opens_no_tunnel(app, monkeypatch):
    asked: list[object] = []
    # viser's own handler would call this on its thread pool; ours must not reach it.
    monkeypatch.setattr(type(app.server), "request_share_url", lambda *a, **k: asked.append(a))
    with _tab(app) as (page, _):
        page.send(compat.messages.ShareUrlRequest())
        assert page.wait_notification("Sharing is off") == "This viewer does not open public links."
        time.sleep(0.5)  # the pool would have run viser's handler by now
        assert asked == []
        assert not any(m.get("type") == "ShareUrlUpdated" for m in page.messages)


def test_clock_keeps_a_bounded_window_of_errors():
    now = [0.0]
    clock = AudioClock(10.0, loop=True, clock=lambda: now[0])
    seq = clock.play()
    for i in range(ERROR_WINDOW + 500):
        now[0] += 0.05
        clock.report(ClockReport(clock.position() - 0.001 * (i % 7), False, seq))
    assert len(clock.errors) == ERROR_WINDOW and clock.reports == ERROR_WINDOW + 500
    assert clock.errors[-1] == pytest.approx(0.001 * ((ERROR_WINDOW + 499) % 7))


def test_splats_mode_sends_posed_gaussians(models):
    anim, avatar = models
    cfg = ViewerConfig(port=0, mode="splats", backend="cpu")
    viewer = ViewerApp(cfg, animator=anim, avatar=avatar)
    viewer.start()
    page = FakePage(viewer.server.get_port())
    try:
        session = _session(viewer, page)
        before = session._splats.centers.copy()
        session.seek(1.0)  # another frame of speech: the mouth's splats move
        assert session.wait_frames(1, timeout=20)
        session._changed()
        assert session.wait_frames(1, timeout=20)
        moved = np.linalg.norm(session._splats.centers - before, axis=1)  # [N] metres
        assert len(moved) == len(avatar) and moved.max() > 1e-3
    finally:
        page.close()
        viewer.stop()


def test_audio_clock_follows_reports():
    now = [100.0]
    clock = AudioClock(10.0, loop=True, clock=lambda: now[0])
    seq = clock.play()
    now[0] += 1.0
    assert clock.position() == pytest.approx(1.0)
    assert clock.position(lead=0.1) == pytest.approx(1.1)
    clock.report(ClockReport(0.96, False, seq))  # the page is 40 ms behind: pull halfway
    assert clock.position() == pytest.approx(0.98)
    clock.report(ClockReport(5.0, False, seq - 1))  # stale: before the last command
    assert clock.position() == pytest.approx(0.98)
    clock.report(ClockReport(3.0, False, seq))  # a jump: adopt it
    assert clock.position() == pytest.approx(3.0)
    now[0] += 7.5
    assert clock.position() == pytest.approx(0.5)  # looped
    clock.set_rate(2.0)
    now[0] += 1.0
    assert clock.position() == pytest.approx(2.5)
    clock.pause()
    now[0] += 1.0
    assert clock.position(lead=0.1) == pytest.approx(2.5) and not clock.playing
    clock.set_loop(False)
    clock.seek(9.0)
    clock.play()
    now[0] += 1.0
    assert clock.position() == pytest.approx(10.0) and not clock.playing


def test_javascript_is_self_contained():
    js = audio_element_js(b"RIFF", "uuid-1", loop=True, seq=3)
    assert "data:audio/wav;base64," in js and "uuid-1" in js and "GuiUpdateMessage" in js
    clock = AudioClock(5.0)
    cmd = command_js(clock, clock.play(), seek=None)
    assert "play()" in cmd and "st.seq = 1" in cmd


def test_image_size_and_camera_framing():
    assert image_size(1.0, 512) == (512, 512)
    w, h = image_size(16 / 9, 512)
    assert abs(w / h - 16 / 9) < 0.01 and abs(w * h - 512 * 512) < 2000
    cam = head_camera("front", 64, 64)
    again = Camera.from_camera_to_world(cam.wxyz, cam.camera_center, fov_y=cam.fov_y,
                                        width=64, height=64)  # fmt: skip
    assert np.allclose(again.viewmat, cam.viewmat, atol=1e-5)


def test_port_in_use_is_one_line_and_exit_2():
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(Exception, match="not available"):
            check_port_free("127.0.0.1", port)
        proc = subprocess.run(
            [sys.executable, "-m", "viewer.cli", "view", "--port", str(port)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and f"port {port}" in lines[0] and "--port" in lines[0]


def test_import_starts_nothing():
    code = (
        "import threading, viewer.app, viewer.playback, viewer.gui;"
        "assert threading.active_count() == 1, threading.enumerate()"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_other_viser_release_is_refused(models, monkeypatch):
    anim, avatar = models
    monkeypatch.setattr(viser, "__version__", "1.2.0")
    with pytest.raises(Exception) as err:
        ViewerApp(ViewerConfig(port=0), animator=anim, avatar=avatar)
    assert str(err.value) == (
        "viser 1.2.0 is installed but the viewer needs viser 1.1.1; run: pip install viser==1.1.1"
    )


def test_viser_private_api_is_where_the_compat_module_expects(app):
    """Every private piece of viser that viewer/_viser_compat.py reaches, checked by name, so a
    viser upgrade that moves one fails here, saying which, not in a callback thread."""
    import dataclasses
    from pathlib import Path

    from viser import _gui_handles

    assert viser.__version__ == compat.VISER_VERSION
    assert compat.GuiProgressBarHandle is _gui_handles.GuiProgressBarHandle
    # start_server raises unless viser still binds through websockets.asyncio.server.serve.
    assert app.server is not None
    wanted = {  # the messages we build or read, and their fields
        "ShareUrlRequest": set(),
        "ShareUrlUpdated": set(),
        "RunJavascriptMessage": {"source"},
        "FileTransferStartUpload": {"source_component_uuid", "transfer_uuid", "filename",
                                    "mime_type", "part_count", "size_bytes"},
        "FileTransferPart": {"source_component_uuid", "transfer_uuid", "part_index", "content"},
        "FileTransferPartAck": {"source_component_uuid", "transfer_uuid", "transferred_bytes",
                                "total_bytes"},
        "FileTransferStartDownload": {"transfer_uuid", "filename"},
        "GuiUpdateMessage": {"uuid", "updates"},
        "NotificationShowMessage": {"props"},
        "BackgroundImageMessage": {"format", "rgb_data"},
        "ViewerCameraMessage": {"wxyz", "position", "fov", "near", "far", "image_height",
                                "image_width", "look_at", "up_direction"},
    }  # fmt: skip
    for name, fields in wanted.items():
        cls = getattr(compat.messages, name, None)
        assert cls is not None, f"viser._messages.{name} is gone"
        missing = fields - {f.name for f in dataclasses.fields(cls)}
        assert not missing, f"viser._messages.{name} lost {missing}"
    server_ws = app.server._websock_server
    assert callable(server_ws.register_handler) and callable(server_ws.unregister_handler)
    with _tab(app) as (page, session):
        client = session.client
        conn = client._websock_connection
        for name in ("queue_message", "register_handler", "unregister_handler"):
            assert callable(getattr(conn, name)), f"ClientConnection.{name} is gone"
        gui = client.gui
        assert callable(gui._handle_file_transfer_start)
        assert callable(gui._handle_file_transfer_part)
        assert isinstance(gui._current_file_upload_states, dict)
        assert isinstance(session.controls.upload._impl.uuid, str)
        # The per-transfer state guard_uploads reads, on a transfer that is arriving.
        button = compat.element_uuid(session.controls.upload)
        transfer = page.start_upload(button, "state.flac", size=3 * PART_BYTES)
        page.send_part(button, transfer, 0, bytes(PART_BYTES))
        page.wait_ack(transfer, PART_BYTES)
        state = gui._current_file_upload_states[transfer]
        assert {"filename", "total_bytes", "transferred_bytes", "parts"} <= set(state)
    # The page side: viser's page posts {type: "send", message} to its websocket worker, which
    # compat.page_sender_js captures (the clock reports ride on it).
    client_src = Path(viser.__file__).parent / "client" / "src"
    worker = (client_src / "WebsocketClientWorker.ts").read_text()
    interface = (client_src / "WebsocketInterface.tsx").read_text()
    assert '{ type: "send"; message: Message }' in worker
    assert 'postMessage({ type: "send", message }' in interface
    assert 'msg.type === "send"' in compat.page_sender_js("st")


def test_an_uploaded_recording_is_kept_for_export_at_its_own_quality(app, tmp_path):
    """The export muxes the user's own file (44.1 kHz stereo here), not the models' 16 kHz;
    a new upload replaces the old file and a closed tab leaves nothing behind."""
    import soundfile as sf

    from viewer.export import _speech_source

    page = FakePage(app.server.get_port())
    session = _session(app, page)
    folder = session._upload_dir
    t = np.arange(44_100) / 44_100
    stereo = np.stack([0.3 * np.sin(2 * np.pi * 220 * t), 0.2 * np.sin(2 * np.pi * 330 * t)], 1)
    sf.write(tmp_path / "a.flac", stereo, 44_100)
    try:
        assert session.load_upload("a.flac", (tmp_path / "a.flac").read_bytes())
        first = session.clip.audio.path
        assert first is not None and first.parent == folder and first.is_file()
        perf = session.app.animator.perform(
            session.clip.audio, session.clip.speech_weights, as_track({}), fps=session.clip.fps
        )
        source, args = _speech_source(perf, tmp_path)
        assert source == first and args[args.index("-ar") + 1] == "44100"
        assert args[args.index("-ac") + 1] == "2"
        assert session.load_upload("b.flac", (tmp_path / "a.flac").read_bytes())
        assert not first.exists() and session.clip.audio.path.is_file()
    finally:
        page.close()
    deadline = time.monotonic() + 10
    while folder.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not folder.exists()
