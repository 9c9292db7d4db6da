"""The browser viewer, headless: a real ViserServer on a free port, a websocket client standing
in for the page (tests/viewer_client.py: it sends a camera, uploads, reads whatever the server
sends), and the session driven through its GUI handles. Browser behaviour (audio, screenshots)
is in test_viewer_browser.py; uploads in test_viewer_upload.py, the render loop alone in
test_render_loop.py, the audio clock in test_playback.py. The `models` and `app` fixtures are
tests/conftest.py's."""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
import time
from dataclasses import replace

import numpy as np
import pytest
import viser
from viewer_client import (
    PART_BYTES,
    PROXY,
    SIZE,
    FakePage,
    open_tab,
    start_test_viewer,
    wait_session,
)

from animator.audio import Audio
from animator.emotion import as_track
from avatar.camera import Camera, head_camera
from viewer import _viser_compat as compat
from viewer.app import ViewerApp, ViewerConfig, check_port_free
from viewer.frames import image_size
from viewer.origins import OriginPolicy, normalize_origin

pytestmark = pytest.mark.filterwarnings("ignore:Queued a .* on a closed connection")


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
        session = wait_session(app, page)
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
    sa = wait_session(app, a)
    b = FakePage(app.server.get_port())
    try:
        sb = wait_session(app, b)
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


def test_stop_leaves_no_render_or_export_thread_running(models):
    """After `stop` no thread of the viewer is inside torch or the rasterizer: at exit Python
    unwinds daemon threads where they stand, and one in C++ frames aborts the process (exit 134,
    seen after the viewer benchmark). Tabs that left before the stop are joined too."""
    viewer = start_test_viewer(*models)
    pages, sessions = [], []
    try:
        for _ in range(2):
            pages.append(FakePage(viewer.server.get_port()))
            sessions.append(wait_session(viewer, pages[-1]))
        for session in sessions:
            session.play()
            assert session.wait_frames(2, timeout=20)
        threads = [s.render_loop._thread for s in sessions]
        assert all(t is not None and t.is_alive() for t in threads)
        threads.append(sessions[0].start_export())
        pages[1].close()  # one tab leaves while frames are drawn
    finally:
        viewer.stop()
        for page in pages:
            page.close()
    assert not any(t.is_alive() for t in threads)


def test_tabs_that_left_are_held_only_until_their_threads_end(app):
    """The server keeps a tab that left until `stop` joins it, unless its threads have ended:
    a long-running viewer does not accumulate every session it ever served."""

    def leave(page, session):
        page.close()
        deadline = time.monotonic() + 20
        while session not in app._closed_sessions and time.monotonic() < deadline:
            time.sleep(0.02)
        assert session in app._closed_sessions

    first = FakePage(app.server.get_port())
    gone = wait_session(app, first)
    leave(first, gone)
    deadline = time.monotonic() + 20
    while gone.running() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not gone.running()
    second = FakePage(app.server.get_port())
    leave(second, wait_session(app, second))
    assert gone not in app._closed_sessions


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
    with open_tab(app) as (_, session):
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
        session = wait_session(app, page)
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
    with open_tab(app) as (page, _):
        page.send(compat.messages.ShareUrlRequest())
        assert page.wait_notification("Sharing is off") == "This viewer does not open public links."
        time.sleep(0.5)  # the pool would have run viser's handler by now
        assert asked == []
        assert not any(m.get("type") == "ShareUrlUpdated" for m in page.messages)


def test_splats_mode_sends_posed_gaussians(models):
    anim, avatar = models
    cfg = ViewerConfig(port=0, mode="splats", backend="cpu")
    viewer = ViewerApp(cfg, animator=anim, avatar=avatar)
    viewer.start()
    page = FakePage(viewer.server.get_port())
    try:
        session = wait_session(viewer, page)
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


def test_splat_buffer_has_the_bits_viser_packs(models):
    """Our packed splat buffer equals what viser's own set_gaussians packs from the splat
    arrays, bit for bit (fails loudly if viser changes its layout)."""
    from viser._scene_handles import GaussianSplatHandle

    from viewer.frames import gaussians_to_splat_buffer, gaussians_to_splats

    anim, avatar = models
    p = anim.head.neutral_params(1)
    p.jaw_pose[0, 0] = 0.2
    posed = avatar.pose(anim.head(p)[0])
    means, cov, rgb, opacity = gaussians_to_splats(posed)
    expected = np.zeros((len(means), 8), dtype=np.uint32)
    GaussianSplatHandle._pack_centers(expected, means)
    GaussianSplatHandle._pack_covariances(expected, cov)
    GaussianSplatHandle._pack_rgba(expected, rgbs=rgb, opacities=opacity)
    buffer = gaussians_to_splat_buffer(posed)
    assert buffer.dtype == np.uint32 and buffer.shape == (len(avatar), 8)
    np.testing.assert_array_equal(buffer, expected)


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
    with open_tab(app) as (page, session):
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
