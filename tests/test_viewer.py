"""The browser viewer, headless: a real ViserServer on a free port, a raw websocket client standing
in for the page (it sends a camera, reads whatever the server sends), and the session driven
through its GUI handles. Browser behaviour (audio, screenshots) is in test_viewer_browser.py."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import msgspec
import numpy as np
import pytest
import viser
from viser import _messages
from websockets.sync.client import connect

from animator import Animator
from animator.audio import Audio
from avatar.builder import load_avatar
from avatar.camera import Camera
from avatar.flame import load_flame
from avatar.sheet import head_camera
from viewer.app import (
    AudioClock,
    ViewerApp,
    ViewerConfig,
    check_port_free,
    image_size,
)
from viewer.playback import ClockReport, audio_element_js, command_js

pytestmark = pytest.mark.filterwarnings("ignore:Queued a .* on a closed connection")
SIZE = 128  # small frames keep the suite fast; the benchmark measures 512


class FakePage:
    """A websocket client speaking viser's protocol: enough of a browser for the server to
    start a session (it needs one camera message) and to receive what the session sends."""

    def __init__(self, port: int, *, width: int = SIZE, height: int = SIZE) -> None:
        self.ws = connect(
            f"ws://127.0.0.1:{port}",
            subprotocols=[f"viser-v{viser.__version__}"],
            max_size=None,
        )
        self.received = 0
        self.closed = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        cam = head_camera("front", width, height)
        self.send(
            _messages.ViewerCameraMessage(
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

    def send(self, message: _messages.Message) -> None:
        self.ws.send(msgspec.msgpack.encode(message.as_serializable_dict()))

    def _read(self) -> None:
        try:
            for _ in self.ws:
                self.received += 1
        except Exception:  # noqa: BLE001 - the connection closing ends the reader
            pass
        self.closed.set()

    def close(self) -> None:
        self.ws.close()


@pytest.fixture(scope="module")
def models():
    head = load_flame()
    anim = Animator.load(head=head)
    return anim, load_avatar(None, head)


@pytest.fixture(scope="module")
def app(models):
    anim, avatar = models
    cfg = ViewerConfig(port=0, max_side=SIZE, moving_side=64, backend="cpu", render_fps=25.0)
    viewer = ViewerApp(cfg, animator=anim, avatar=avatar)
    viewer.start()
    yield viewer
    viewer.stop()


def _session(app: ViewerApp, page: FakePage):
    before = set(app.sessions)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        new = set(app.sessions) - before
        if new:
            session = app.sessions[new.pop()]
            assert session.wait_frames(1, timeout=20)
            return session
        time.sleep(0.02)
    raise AssertionError("no session started")


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
        jaw = session.app.animator.to_flame(
            session.clip.speech_weights, session._emotion_weights(0.0).expand(
                session.clip.num_frames, -1)
        ).jaw_pose[:, 0]  # fmt: skip
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


def test_upload_size_limit_is_enforced_on_the_server(app):
    page = FakePage(app.server.get_port())
    try:
        session = _session(app, page)
        uuid = session.controls.upload._impl.uuid
        page.send(
            _messages.FileTransferStartUpload(
                source_component_uuid=uuid,
                transfer_uuid="big",
                filename="big.wav",
                mime_type="audio/wav",
                part_count=2,
                size_bytes=60 * 1024 * 1024,
            )  # fmt: skip
        )
        deadline = time.monotonic() + 5
        states = app.server.gui._current_file_upload_states
        time.sleep(0.3)
        while "big" in states and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "big" not in states
    finally:
        page.close()


def test_share_url_request_is_refused(app):
    page = FakePage(app.server.get_port())
    try:
        _session(app, page)
        page.send(_messages.ShareUrlRequest())
        time.sleep(0.5)
        assert app.server._share_tunnel is None
        assert app.server.request_share_url() is None
    finally:
        page.close()


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
