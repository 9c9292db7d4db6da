"""The browser viewer: a viser server where each person plays the avatar with sound, moves emotion
sliders, records an emotion track, uploads speech and exports an MP4.

    app = ViewerApp(ViewerConfig(audio="speech.wav"))
    print(app.start())          # the URL; binds 127.0.0.1 unless told otherwise
    app.wait()                  # until Ctrl-C

One `ClientSession` per browser tab: its own camera, controls, audio clock (`viewer.playback`,
driven by `viewer.transport`) and ONE paced render thread (`viewer.render_loop`). Each frame,
the session reads the clip's speech weights w_A at the audio time (as the page reports it,
extrapolated, plus a lead for the frame's trip to the screen), the emotion weights w_E of the
sliders or the recorded track, maps them to FLAME, adds the idle layer, poses the Gaussians and
either renders them on the server at the browser's camera (`mode="image"`, sent as a JPEG
background) or sends the posed Gaussians for the browser's GPU to draw (`mode="splats"`). A
frame overtaken by a newer request while it is drawn is dropped (`viewer.render_loop`).
Importing this module starts nothing.
"""

from __future__ import annotations

import copy
import shutil
import socket
import tempfile
import threading
import time
from collections import deque
from pathlib import Path

import numpy as np
import torch
import viser

from animator.animator import Animator
from animator.audio import load_audio
from avatar.binding import GaussianAvatar
from avatar.camera import HEAD_FOV_Y, HEAD_TARGET, Camera, head_camera
from avatar.errors import TalkingAvatarError
from avatar.flame import FlameModel, FlameParams
from avatar.gaussians import Gaussians
from avatar.image import to_uint8
from avatar.render import render, render_device
from viewer import _viser_compat as compat
from viewer import gui as gui_layout
from viewer.clip import make_clip
from viewer.config import MODES, ViewerConfig
from viewer.exporting import ExportHandling
from viewer.frames import FrameSource, gaussians_to_splat_buffer, gaussians_to_splats, image_size
from viewer.origins import OriginPolicy
from viewer.playback import AudioClock
from viewer.recording import RecordingHandling
from viewer.render_loop import FrameRequest, RenderLoop
from viewer.transport import GUI_FOLLOW_S, TransportHandling
from viewer.upload import MAX_PARALLEL_ANALYSES, UploadHandling

#: What the render loop sends: an image `[H, W, 3]` uint8, or viser's splat buffer `[N, 8]`.
Frame = np.ndarray


def check_port_free(host: str, port: int) -> None:
    """Raise a one-line error when something already listens on host:port.

    viser would otherwise move to the next free port without a word, and the URL a person
    bookmarked would silently reach another program.
    """
    if not 0 <= port <= 65535:
        raise TalkingAvatarError(f"port {port} is out of range; use 1 to 65535 (0: any free one)")
    if port == 0:
        return  # the system picks a free port
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # Same option the server sets: a port in TIME_WAIT is free, a listening one is not.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as err:
            raise TalkingAvatarError(
                f"port {port} on {host} is not available ({err.strerror}); "
                "pass another --port or stop the program using it"
            ) from None


class ClientSession(TransportHandling, RecordingHandling, UploadHandling, ExportHandling):
    """One browser tab: its controls, audio clock, render loop, recording and export.

    Thread model: viser calls the callbacks on its thread pool; the render loop
    (`viewer.render_loop`) runs on its own thread and reads the state under `_lock`;
    `_changed()` is a request to it (the newest state is drawn next).
    """

    def __init__(self, app: ViewerApp, client: viser.ClientHandle) -> None:
        self.app = app
        self.client = client
        self.config = app.config
        self._lock = threading.RLock()
        self._closed = threading.Event()
        #: The MP4 export in flight or last run (`start_export`), if any.
        self.export_thread: threading.Thread | None = None
        self.clip = app.default_clip
        self.clock = AudioClock(self.clip.duration, loop=True)
        self.mix: dict[str, float] = {}
        self.blinks = True
        self.head_motion = True
        self.view = "front"
        self.background = (1.0, 1.0, 1.0)
        self.track_keys: dict[float, dict[str, float]] = {}
        self.exporting = False
        self._started = False
        #: Draws and sends this tab's frames; frame statistics for tests and benchmarks.
        self.render_loop: RenderLoop = RenderLoop(
            self._prepare_frame, self._send_frame, fps=self.config.render_fps,
            playing=lambda: self.clock.playing, tick=self._follow_playhead, tick_s=GUI_FOLLOW_S,
        )  # fmt: skip
        #: The last image sent `[H, W, 3]` uint8 (image mode).
        self.last_image: np.ndarray | None = None
        self._splats: viser.GaussianSplatHandle | None = None
        #: The bytes of the last MP4 exported (also offered to the page for download).
        self.last_export: bytes | None = None
        #: Held while this tab decodes and analyses an upload (one at a time per tab).
        self._analysing = threading.Lock()
        #: This tab's folder for its uploaded recording, kept while it plays so that an export
        #: muxes the user's own audio at its own quality (removed when the tab goes away).
        self._upload_dir = Path(tempfile.mkdtemp(prefix="talking-avatar-session-"))

        # Before the upload button exists: no transfer may reach it unguarded.
        compat.guard_uploads(
            client, max_bytes=self.config.max_upload_bytes, admit=self._admit_upload,
            refuse=self._refuse_upload,
        )  # fmt: skip
        self.controls = gui_layout.build_controls(
            client, duration=self.clip.duration, clip_name=self.clip.name
        )
        self._setup_scene()
        self._wire()
        self._send_audio()
        self._update_plot()
        self.render_loop.start(f"viewer-render-{client.client_id}")

    # -- setup ---------------------------------------------------------------------------

    def _setup_scene(self) -> None:
        client = self.client
        self.set_view("front")
        if self.config.mode == "splats":
            means, cov, rgb, opacity = gaussians_to_splats(self._pose(0.0))
            self._splats = client.scene.add_gaussian_splats(
                "/avatar", centers=means, covariances=cov, rgbs=rgb, opacities=opacity
            )
            self._send_solid_background()

    def _wire(self) -> None:
        c = self.controls
        c.start.on_click(lambda _: self._on_start())
        c.play.on_click(lambda _: self.toggle_play())
        c.timeline.on_update(self._on_timeline)
        c.loop.on_update(lambda _: self._command(self.clock.set_loop(c.loop.value)))
        c.speed.on_update(lambda _: self._command(self.clock.set_rate(float(c.speed.value))))
        for slider in c.emotions.values():
            slider.on_update(lambda _: self._on_emotion())
        c.presets.on_click(lambda _: self.apply_mix(gui_layout.PRESETS[c.presets.value]))
        c.reset.on_click(lambda _: self.apply_mix({}))
        c.blinks.on_update(lambda _: self._on_idle())
        c.head_motion.on_update(lambda _: self._on_idle())
        c.views.on_click(lambda _: self.set_view(c.views.value))
        c.background.on_update(lambda _: self._on_background())
        c.record.on_update(lambda _: self._on_record())
        c.follow_track.on_update(lambda _: self._changed())
        c.save_track.on_click(lambda _: self.save_track())
        c.clear_track.on_click(lambda _: self._clear_track())
        c.upload.on_upload(lambda _: self._on_upload())
        c.export.on_click(lambda _: self.start_export())
        c.clock_report.on_update(self._on_clock_report)
        self.client.camera.on_update(lambda _: self._on_camera())

    # -- controls ------------------------------------------------------------------------

    def _changed(self) -> None:
        """Something that shows in the picture changed: render a new frame soon."""
        self.render_loop.request()

    def current_mix(self) -> dict[str, float]:
        return {k: float(s.value) for k, s in self.controls.emotions.items() if s.value > 0}

    def _on_emotion(self) -> None:
        with self._lock:
            self.mix = self.current_mix()
        if self.controls.record.value and self.clock.playing:
            self._record_key()
        self._changed()
        self._update_plot()

    def apply_mix(self, mix: dict[str, float]) -> None:
        """Set the sliders to a mix (a preset, or all zero)."""
        for label, slider in self.controls.emotions.items():
            slider.value = float(mix.get(label, 0.0))  # each assignment calls _on_emotion
        self._on_emotion()

    def _on_idle(self) -> None:
        with self._lock:
            self.blinks = bool(self.controls.blinks.value)
            self.head_motion = bool(self.controls.head_motion.value)
        self._changed()

    def set_view(self, view: str) -> None:
        """Move this client's camera to a named framing (front, three-quarter, side)."""
        self.view = view
        cam = head_camera(view, 512, 512)
        with self.client.atomic():
            self.client.camera.up_direction = (0.0, 1.0, 0.0)  # FLAME is +y up
            self.client.camera.fov = HEAD_FOV_Y
            # Position first: the page moves the look-at point along with a new position.
            self.client.camera.position = tuple(float(x) for x in cam.camera_center)
            self.client.camera.look_at = HEAD_TARGET
        self._changed()

    def _on_background(self) -> None:
        with self._lock:
            self.background = tuple(c / 255.0 for c in self.controls.background.value)
        if self.config.mode == "splats":
            self._send_solid_background()
        self._changed()

    def _send_solid_background(self) -> None:
        colour = to_uint8(np.array(self.background))
        self.client.scene.set_background_image(np.broadcast_to(colour, (8, 8, 3)).copy())
        self.client.flush()

    def _on_camera(self) -> None:
        self.render_loop.camera_moved()

    # -- the picture -----------------------------------------------------------------------

    def frame_source(self) -> FrameSource:
        """What the next frame depends on, read once from the controls (`viewer.frames`)."""
        anim, clip = self.app.animator, self.clip
        head, avatar = self.app.render_models()
        with self._lock:
            blinks, head_motion, background = self.blinks, self.head_motion, self.background
        return FrameSource(
            animator=anim, avatar=avatar, head=head, clip=clip, track=self.emotion_track(),
            idle=clip.idle(anim, blinks=blinks, head_motion=head_motion, seed=self.config.seed),
            backend=self.config.backend, background=background,
        )  # fmt: skip

    def frame_params(self, frame: int) -> FlameParams:
        """FLAME parameters of one frame of the clip, as export computes them."""
        return self.frame_source().params(frame)

    def _pose(self, media_time: float) -> Gaussians:
        return self.frame_source().gaussians(media_time)

    def _camera(self, side: int) -> Camera:
        """This client's camera, with the browser canvas's aspect and the longest side `side`."""
        cam = self.client.camera
        width, height = image_size(cam.aspect, side)
        return Camera.from_camera_to_world(
            cam.wxyz, cam.position, fov_y=cam.fov, width=width, height=height
        )

    def render_image(self, media_time: float, *, side: int | None = None) -> np.ndarray:
        """The frame at a media time through this client's camera: `[H, W, 3]` uint8 with the
        browser canvas's aspect and the longest side `side` (default: max_side)."""
        return self.frame_source().render(self._camera(side or self.config.max_side), media_time)

    def _prepare_frame(self, request: FrameRequest) -> tuple[float, Frame] | None:
        """The render loop's `prepare`: the frame at the page's audio time (plus the lead for
        its trip to the screen), small while the camera moves; None when a newer request
        overtook it before the rasterizer ran."""
        media = self.clock.position(lead=self.config.lead_s)
        source = self.frame_source()
        if self.config.mode == "splats":
            return media, gaussians_to_splat_buffer(source.gaussians(media))
        camera = self._camera(self.config.moving_side if request.moving else self.config.max_side)
        gaussians = source.gaussians(media)
        if request.stale():
            return None
        return media, source.draw(gaussians, camera)

    def _send_frame(self, frame: Frame) -> None:
        """The render loop's `send`: splat arrays, or the image as the JPEG background."""
        if self.config.mode == "splats":
            assert self._splats is not None
            self._splats.buffer = frame  # viser's packed layout (frames.gaussians_to_splat_buffer)
        else:
            self.client.scene.set_background_image(
                frame, format="jpeg", jpeg_quality=self.config.jpeg_quality
            )
            self.last_image = frame
        self.client.flush()

    # Frame statistics (tests, benchmarks): see `viewer.render_loop.RenderLoop`.
    @property
    def frames_sent(self) -> int:
        return self.render_loop.frames_sent

    @property
    def frame_log(self) -> deque[tuple[float, float]]:
        """(monotonic time flushed, media time shown) per frame sent, the newest ones."""
        return self.render_loop.frame_log

    @property
    def change_latencies(self) -> deque[float]:
        """Seconds from a control change to the first frame that shows it leaving the server."""
        return self.render_loop.change_latencies

    @property
    def last_camera_update(self) -> float:
        return self.render_loop.camera_moved_at

    def wait_frames(self, count: int, timeout: float = 10.0) -> bool:
        """Block until `count` more frames have been sent (tests, benchmarks)."""
        return self.render_loop.wait_frames(count, timeout)

    def _update_plot(self, playhead: float | None = None) -> None:
        anim, clip = self.app.animator, self.clip
        n = clip.num_frames
        times = np.arange(n) / clip.fps
        intensities = self.emotion_track().frames(n, clip.fps)  # [T, 7]
        with torch.no_grad():
            w_e = torch.from_numpy(intensities).float() @ anim.emotion_codes  # [T, K_E]
            params = anim.to_flame(clip.speech_weights, w_e, clip.speaking)
            jaw = params.jaw_pose[:, 0].numpy()  # [T] rad
        t = self.clock.position() if playhead is None else playhead
        self.controls.plot.data = gui_layout.plot_data(times, jaw, intensities, t)

    # -- lifetime ----------------------------------------------------------------------------

    def close(self) -> None:
        """The tab went away: stop the render loop (an export in flight cancels itself) and
        remove its uploaded recording."""
        self._closed.set()
        self.render_loop.stop()
        shutil.rmtree(self._upload_dir, ignore_errors=True)

    def running(self) -> bool:
        """Whether its render thread or an export is still going."""
        exporting = self.export_thread is not None and self.export_thread.is_alive()
        return self.render_loop.running or exporting

    def join(self, timeout: float = 10.0) -> None:
        """After `close`: wait for the render thread and an export in flight to end. At exit
        Python ends daemon threads by unwinding them from where they stand, and one standing in
        torch's or TBB's C++ frames aborts the process ("terminate called without an active
        exception", exit code 134), so the server joins them before it returns."""
        deadline = time.monotonic() + timeout
        self.render_loop.join(max(0.0, deadline - time.monotonic()))
        if self.export_thread is not None:
            self.export_thread.join(max(0.0, deadline - time.monotonic()))


class ViewerApp:
    """The server and its sessions. Loads the animator, the avatar and the default clip once
    (shared read-only by all sessions) and starts a session per connecting client.

    Args:
        config: what to serve.
        animator, avatar: already-loaded models (tests pass them to skip loading).
    """

    def __init__(
        self,
        config: ViewerConfig | None = None,
        *,
        animator: Animator | None = None,
        avatar: GaussianAvatar | None = None,
    ) -> None:
        from avatar.avatars import load_avatar
        from avatar.paths import asset_path

        self.config = config or ViewerConfig()
        # Flags first: a typo should not wait for the models to load.
        compat.check_version()
        self.origin_policy = OriginPolicy.from_flags(self.config.host, self.config.allow_origins)
        if self.config.mode not in MODES:
            raise TalkingAvatarError(
                f"unknown viewer mode {self.config.mode!r}; use {' or '.join(MODES)}"
            )
        if not 1.0 <= self.config.render_fps <= 60.0:
            raise TalkingAvatarError(
                f"--fps {self.config.render_fps} is out of range; use 1 to 60 frames per second"
            )
        if not 64 <= self.config.max_side <= 2048:
            raise TalkingAvatarError(
                f"--size {self.config.max_side} is out of range; use 64 to 2048 pixels"
            )
        self.animator = animator or Animator.load(self.config.checkpoint, flame=self.config.flame)
        self.avatar = avatar or load_avatar(self.config.avatar, self.animator.head)
        audio_path = self.config.audio or asset_path("speech", "sample.wav")
        self.default_clip = make_clip(
            self.animator, load_audio(audio_path), name=Path(audio_path).name,
            fps=self.config.anim_fps,
        )  # fmt: skip
        #: Where frames are posed: the GPU when gsplat draws them (see `render_models`).
        self.device = render_device(self.config.backend)
        self._on_device: tuple | None = None
        # One tiny render now, so the renderer's one-off JIT compile (seconds on a new machine)
        # happens before the URL is printed, not on the first visitor's first frame.
        head, avatar = self.render_models()
        render(
            avatar.pose(head.v_template), head_camera("front", 32, 32), backend=self.config.backend
        )
        self.server: viser.ViserServer | None = None
        #: Uploads being decoded and analysed at once, server-wide (see MAX_PARALLEL_ANALYSES).
        self.analysis_slots = threading.BoundedSemaphore(MAX_PARALLEL_ANALYSES)
        self.sessions: dict[int, ClientSession] = {}
        #: Sessions whose tab went away; their threads may still be ending.
        self._closed_sessions: list[ClientSession] = []
        self._sessions_lock = threading.Lock()
        self._session_ready = threading.Condition(self._sessions_lock)

    def render_models(self) -> tuple[FlameModel, GaussianAvatar]:
        """The head model and avatar on the device that draws: the loaded ones on the CPU, a
        copy of each on the GPU when gsplat renders (made once per avatar), so a frame is
        posed there and no Gaussian crosses the bus."""
        if self.device.type == "cpu":
            return self.animator.head, self.avatar
        key = (id(self.animator.head), id(self.avatar))
        if self._on_device is None or self._on_device[0] != key:
            head = copy.deepcopy(self.animator.head).to(self.device)
            self._on_device = (key, head, self.avatar.to(self.device))
        return self._on_device[1], self._on_device[2]

    @property
    def url(self) -> str:
        assert self.server is not None
        host = self.server.get_host()
        shown = "localhost" if host in ("127.0.0.1", "0.0.0.0", "::") else host
        return f"http://{shown}:{self.server.get_port()}"

    def start(self) -> str:
        """Start listening; returns the URL. Raises TalkingAvatarError when the port is taken.

        Only the viewer's own page and the configured origins may open its WebSocket
        (`viewer.origins`); others get HTTP 403 at the handshake."""
        cfg = self.config
        check_port_free(cfg.host, cfg.port)
        server = compat.start_server(cfg.host, cfg.port, accept=self.origin_policy.accepts)
        if cfg.port != 0 and server.get_port() != cfg.port:
            server.stop()  # taken between our check and viser's bind: viser moved on silently
            raise TalkingAvatarError(
                f"port {cfg.port} on {cfg.host} was taken while starting; pass another --port"
            )
        self.server = server
        # No public share tunnel, whoever asks: hide the button and replace the request handler
        # (any page can send ShareUrlRequest; viser would open share.viser.studio).
        compat.replace_share_handler(server, self._refuse_share)
        server.gui.configure_theme(
            control_width="large", show_share_button=False, dark_mode=False,
            brand_color=(60, 110, 200),
        )  # fmt: skip
        server.on_client_connect(self._connect)
        server.on_client_disconnect(self._disconnect)
        return self.url

    def _refuse_share(self, client_id: int, message: object) -> None:
        client = self._client(client_id)
        if client is not None:
            client.add_notification(
                "Sharing is off", "This viewer does not open public links.", auto_close_seconds=5
            )

    def _client(self, client_id: int) -> viser.ClientHandle | None:
        assert self.server is not None
        return self.server.get_clients().get(client_id)

    def _connect(self, client: viser.ClientHandle) -> None:
        session = ClientSession(self, client)
        with self._session_ready:
            self.sessions[client.client_id] = session
            self._session_ready.notify_all()

    def _disconnect(self, client: viser.ClientHandle) -> None:
        with self._sessions_lock:
            session = self.sessions.pop(client.client_id, None)
            if session is not None:  # joined by `stop`; those already done are let go
                self._closed_sessions = [s for s in self._closed_sessions if s.running()]
                self._closed_sessions.append(session)
        if session is not None:
            session.close()

    def wait_for_session(self, count: int = 1, timeout: float = 20.0) -> list[ClientSession]:
        """Block until `count` clients are connected (tests, benchmarks)."""
        with self._session_ready:
            self._session_ready.wait_for(lambda: len(self.sessions) >= count, timeout)
            return list(self.sessions.values())

    def wait(self) -> None:
        """Serve until Ctrl-C."""
        try:
            while True:
                time.sleep(3600)
        finally:
            self.stop()

    def stop(self) -> None:
        with self._sessions_lock:
            sessions = list(self.sessions.values())
            self.sessions.clear()
            closed, self._closed_sessions = self._closed_sessions, []
        for session in sessions:
            session.close()
        for session in sessions + closed:  # after closing them all: their frames end at once
            session.join()
        if self.server is not None:
            self.server.stop()
            self.server = None


def run_viewer(config: ViewerConfig) -> None:
    """Load, start, print the URL and serve until Ctrl-C (the `view` subcommand)."""
    check_port_free(config.host, config.port)  # before the slow loading, not after
    app = ViewerApp(config)
    url = app.start()
    exposed = (
        "" if config.host in ("127.0.0.1", "localhost", "::1") else " (reachable from the network)"
    )
    print(f"talking-avatar viewer: open {url}{exposed}; Ctrl-C stops it")
    app.wait()
