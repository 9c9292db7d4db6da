"""One client's render loop, knowing nothing of the GUI: paced while playing, on demand when
paused, small frames while the camera moves and one full-size frame once it rests, and
interruptible: a frame overtaken by a newer request is dropped and the newest state drawn next.

    loop = RenderLoop(prepare, send, fps=25.0, playing=lambda: clock.playing)
    loop.request()          # a control changed: draw the newest state soon
    loop.camera_moved()     # the same, with small frames until the camera rests
    loop.start("viewer-render-1")
    ...
    loop.stop()

`prepare(request) -> (media time, frame) | None` reads the state and draws (the picture itself is
`viewer.frames.FrameSource`, nerfview's `render_fn`); `send(frame)` puts it on the wire.

What "interrupt" means here: the rasterizer call cannot be cancelled, so the loop decides between
stages. Every request bumps a generation counter; a frame whose generation is no longer the
newest when it is ready (or when `prepare` polls `request.stale()` between posing and drawing)
is not sent, and the loop starts over at once. Requests coalesce: the next frame reads the state
as it is then, so there is never a queue of stale work. One exception keeps continuous input
(a drag) from starving the page: once the page has waited `max_delay_s` (default one frame
period) for a newer picture, an overtaken frame goes out anyway, since its replacement would take
at least one more render. So a frame slower than that is never dropped, and during a drag the
page still gets a frame at least every `max_delay_s` plus one render.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

#: Frames and request-to-frame latencies kept for statistics (the newest ones): at 25 fps,
#: 20 000 frames are the last 13 minutes.
FRAME_LOG_LEN = 20_000
LATENCY_LOG_LEN = 2_000
#: After the last camera message, the camera counts as moving for this long (seconds): frames
#: are rendered small meanwhile, then once at full size.
CAMERA_REST_S = 0.25

F = TypeVar("F")


@dataclass(frozen=True)
class FrameRequest:
    """What one frame is prepared for.

    Attributes:
        moving: the camera is moving: draw the small size.
        generation: the loop's request counter when the frame's state was read.
        started: when the frame was started (the loop's clock, seconds).
        changed_at: when the oldest request this frame is the first to show arrived, or None
            (a frame of playback or of the camera coming to rest).
    """

    moving: bool
    generation: int
    started: float
    changed_at: float | None
    loop: RenderLoop = field(repr=False, compare=False)

    @property
    def superseded(self) -> bool:
        """A newer request arrived after this frame's state was read."""
        return self.loop.generation != self.generation

    def stale(self) -> bool:
        """Whether to abandon this frame: superseded while the page has waited less than
        `max_delay_s` for a newer picture (see the module docstring)."""
        if not self.superseded:
            return False
        waiting_since = self.started if self.changed_at is None else self.changed_at
        return self.loop.now() - waiting_since < self.loop.max_delay_s


class RenderLoop(Generic[F]):
    """A paced render thread for one client (see the module docstring).

    Args:
        prepare: reads the state and draws: `(media time shown, frame)`, or None when it saw
            `request.stale()` and abandoned the frame.
        send: puts a prepared frame on the wire (and flushes).
        fps: frames per second while playing.
        playing: whether time runs (then frames are paced; when paused, drawn on request).
        tick: called at most every `tick_s` while playing, after a frame (the GUI's playhead).
        rest_s: the camera counts as moving this long after its last move.
        max_delay_s: an overtaken frame is still sent once the page has waited this long for a
            newer picture (default: one frame period).
        clock: monotonic seconds (injectable for tests).
    """

    def __init__(
        self,
        prepare: Callable[[FrameRequest], tuple[float, F] | None],
        send: Callable[[F], None],
        *,
        fps: float,
        playing: Callable[[], bool],
        tick: Callable[[], None] | None = None,
        tick_s: float = 0.25,
        rest_s: float = CAMERA_REST_S,
        max_delay_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._prepare, self._send, self._playing = prepare, send, playing
        self._tick, self.tick_s = tick, tick_s
        self.period = 1.0 / fps
        self.rest_s = rest_s
        self.max_delay_s = self.period if max_delay_s is None else max_delay_s
        self.now = clock
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        #: Requests so far; a frame prepared for an older one is superseded.
        self.generation = 0
        self._changed_at: float | None = None
        self._full_res_pending = False
        #: When the camera last moved (the loop's clock).
        self.camera_moved_at = 0.0
        #: Frames sent and frames dropped because a newer request overtook them.
        self.frames_sent = 0
        self.frames_dropped = 0
        #: (time flushed, media time shown) per frame sent, the newest ones.
        self.frame_log: deque[tuple[float, float]] = deque(maxlen=FRAME_LOG_LEN)
        #: Seconds from a request to the first frame that shows it leaving (the newest ones).
        self.change_latencies: deque[float] = deque(maxlen=LATENCY_LOG_LEN)
        self._sent = threading.Condition()

    # -- requests (any thread) --------------------------------------------------------------

    def request(self) -> None:
        """Something that shows in the picture changed: draw the newest state soon."""
        with self._lock:
            self.generation += 1
            if self._changed_at is None:
                self._changed_at = self.now()
        self._wake.set()

    def camera_moved(self) -> None:
        """The camera moved: small frames until it rests, then one at full size."""
        with self._lock:
            self.camera_moved_at = self.now()
            self._full_res_pending = True
        self.request()

    # -- lifetime ---------------------------------------------------------------------------

    def start(self, name: str) -> None:
        """Start the render thread (a daemon named `name`)."""
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop after the frame in flight (which is then not sent)."""
        self._stopped.set()
        self._wake.set()

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()

    @property
    def running(self) -> bool:
        """Whether the render thread is still going (it may outlive `stop` by one frame)."""
        return self._thread is not None and self._thread.is_alive()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def wait_frames(self, count: int, timeout: float = 10.0) -> bool:
        """Block until `count` more frames have been sent (tests, benchmarks)."""
        with self._sent:
            target = self.frames_sent + count
            return self._sent.wait_for(lambda: self.frames_sent >= target, timeout)

    # -- the thread -------------------------------------------------------------------------

    def _run(self) -> None:
        """Paced: one frame per period while playing; on demand when paused."""
        next_tick = self.now()
        last_tick = 0.0
        while not self._stopped.is_set():
            now = self.now()
            playing = self._playing()
            request = self._next_request(now, playing)
            if request is None:
                continue
            try:
                self._frame(request)
            except Exception as err:  # noqa: BLE001 - one bad frame must not kill the loop
                if self._stopped.is_set():
                    return
                print(f"talking-avatar view: frame failed ({type(err).__name__}: {err})")
                self._stopped.wait(0.5)
            if playing and self._tick is not None and now - last_tick > self.tick_s:
                last_tick = now
                self._tick()
            # Pace: sleep to the next tick, but wake early for a request (slider latency).
            next_tick = max(next_tick + self.period, self.now() + 0.2 * self.period)
            if playing:
                self._wake.wait(max(0.0, next_tick - self.now()))
            else:
                next_tick = self.now()

    def _next_request(self, now: float, playing: bool) -> FrameRequest | None:
        """The next frame to draw, or None after waiting for a reason to draw one."""
        with self._lock:
            moving = now - self.camera_moved_at < self.rest_s
            rest_due = self._full_res_pending and not moving
        if not (playing or self._wake.is_set() or rest_due):
            # Paused and nothing changed: sleep until a request (or the camera comes to rest
            # and wants its full-size frame).
            self._wake.wait(self.rest_s if self._full_res_pending else 1.0)
            return None
        self._wake.clear()
        with self._lock:
            changed_at, self._changed_at = self._changed_at, None
            if not moving:
                self._full_res_pending = False
            return FrameRequest(moving, self.generation, now, changed_at, self)

    def _frame(self, request: FrameRequest) -> None:
        prepared = self._prepare(request)
        if self._stopped.is_set():
            return  # the client left while this frame was drawn
        if prepared is None or request.stale():
            self._drop(request)
            return
        media_time, frame = prepared
        self._send(frame)
        sent = self.now()
        with self._sent:
            self.frames_sent += 1
            self.frame_log.append((sent, media_time))
            if request.changed_at is not None:
                self.change_latencies.append(sent - request.changed_at)
            self._sent.notify_all()

    def _drop(self, request: FrameRequest) -> None:
        """Forget an overtaken frame; the next one shows its requests (and is timed from them).
        The request that overtook it has set the wake event, so the loop draws again at once."""
        with self._lock:
            self.frames_dropped += 1
            if request.changed_at is not None and (
                self._changed_at is None or request.changed_at < self._changed_at
            ):
                self._changed_at = request.changed_at
