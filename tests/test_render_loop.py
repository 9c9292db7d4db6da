"""The viewer's per-tab render loop (`viewer.render_loop.RenderLoop`) around a fake renderer on a
fake clock, no server: a frame overtaken by a newer request is dropped (sent anyway once the
page has waited a frame period), and frames are small while the camera moves."""

from __future__ import annotations

import threading

import pytest

from viewer.render_loop import FrameRequest, RenderLoop


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
