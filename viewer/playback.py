"""The audio clock of one viewer client: play, pause, seek, loop and speed, driven from the server
and corrected by the browser, whose HTML audio element is what the person actually hears.

The speech plays in the browser, so the mouth must follow the browser's `currentTime`, not the
server's wall clock. viser 1.1.1 has no audio API (see shared/notes/viser.md), so:

- `audio_element_js` builds JavaScript, sent once per clip through viser's RunJavascriptMessage to
  one client, that creates an `<audio>` element holding the clip as a data: URL (seekable, unlike
  a second HTTP server without Range support) and reports `currentTime` back every 50 ms. The
  report rides viser's own websocket: the JavaScript captures the Web Worker that owns the socket
  (`viewer._viser_compat.page_sender_js`) and posts a `GuiUpdateMessage` into a hidden text input, whose `on_update` calls `AudioClock.report`.
- `command_js` builds the JavaScript of one transport command (play / pause / seek / rate / loop),
  stamped with a sequence number; reports carry the number of the last command the page applied,
  so a report sent before a command arrived cannot undo it.
- `AudioClock` extrapolates the audio position between reports with the server's monotonic clock
  (reports arrive at 10-20 Hz; the browser's clock and ours advance at the same rate to 0.2 ms
  per report, measured in the note) and pulls the estimate onto each report.

Without a browser (tests, benchmarks, a page that never clicked Start) the clock simply runs on
the server's clock, so the viewer behaves the same, only silent.
"""

from __future__ import annotations

import base64
import io
import json
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from viewer._viser_compat import page_sender_js

#: A report this far (seconds) from the estimate is a jump (a loop wrap, a stall, a seek
#: applied late): adopt it at once. Smaller errors are network jitter: pull in part of them.
SNAP_ERROR_S = 0.25
#: Share of a small error corrected per report (~20 reports/s: a 63 % settle time of ~0.1 s).
CORRECTION_GAIN = 0.5
#: Playback speeds the browser plays with pitch preserved (Chrome supports 0.0625-16).
MIN_RATE, MAX_RATE = 0.25, 4.0
#: How often the page reports its clock, milliseconds.
REPORT_INTERVAL_MS = 50
#: The global the page-side JavaScript keeps its state under (one per page, one page per client).
JS_STATE = "__talkingAvatarAudio"
#: Clock errors kept for statistics (the newest): 10 minutes of reports at 20 per second.
ERROR_WINDOW = 12_000


@dataclass
class ClockReport:
    """What the page said about its audio element.

    Attributes:
        media_time: `currentTime`, seconds into the clip.
        paused: whether the element is paused.
        seq: sequence number of the last transport command the page applied.
        error: the name of the last play() failure ("NotAllowedError" until the person clicks
            in the page), or "".
        ready_state: the element's readyState (4: enough data to play through).
    """

    media_time: float
    paused: bool
    seq: int
    error: str = ""
    ready_state: int = 0

    @classmethod
    def parse(cls, text: str) -> ClockReport | None:
        """The report in a hidden input's value (JSON from `audio_element_js`), None if malformed."""
        try:
            data = json.loads(text)
            report = cls(
                media_time=float(data["t"]),
                paused=bool(data["p"]),
                seq=int(data["s"]),
                error=str(data.get("e", "")),
                ready_state=int(data.get("r", 0)),
            )
        except (ValueError, TypeError, KeyError):
            return None  # a stale or hand-made value: ignore it, the next report will do
        return report if math.isfinite(report.media_time) else None


class AudioClock:
    """Where the clip is, in seconds of media time, at any moment: the server's side of playback.

    Thread-safe: GUI callbacks (transport buttons, clock reports) and the render loop call it from
    different threads.

    Args:
        duration: clip length in seconds (> 0).
        loop: wrap around at the end instead of stopping.
        rate: playback speed (1.0 is real time).
        clock: monotonic wall clock in seconds (injectable for tests).
    """

    def __init__(
        self,
        duration: float,
        *,
        loop: bool = True,
        rate: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._duration = max(float(duration), 1e-3)
        self._loop = loop
        self._rate = _check_rate(rate)
        self._playing = False
        self._anchor_media = 0.0  # media time at _anchor_wall
        self._anchor_wall = clock()
        self._seq = 0  # number of the latest command
        self.browser_error = ""
        self.reports = 0
        #: Estimate minus report (seconds) for the newest reports received while both sides
        #: played, before the correction: the drift the mouth would have had without each one.
        self.errors: deque[float] = deque(maxlen=ERROR_WINDOW)

    # -- reading ---------------------------------------------------------------------------

    @property
    def duration(self) -> float:
        return self._duration

    @property
    def playing(self) -> bool:
        with self._lock:
            self._settle_end()
            return self._playing

    @property
    def rate(self) -> float:
        return self._rate

    @property
    def loop(self) -> bool:
        return self._loop

    @property
    def seq(self) -> int:
        return self._seq

    def position(self, lead: float = 0.0) -> float:
        """Media time in seconds now, or `lead` seconds of wall time from now while playing.

        The render loop asks for a small lead (about 0.1 s) because a frame takes that long
        from the server to the screen, while the audio element plays with little delay.
        """
        with self._lock:
            self._settle_end()
            return self._wrap(self._unwrapped(self._clock() + (lead if self._playing else 0.0)))

    # -- commands (the server's side; each returns its sequence number for command_js) ----

    def play(self) -> int:
        with self._lock:
            self._settle_end()
            if not self._playing:
                at_end = not self._loop and self._anchor_media >= self._duration - 1e-3
                self._rebase(0.0 if at_end else None)
                self._playing = True
            return self._next_seq()

    def pause(self) -> int:
        with self._lock:
            self._rebase()
            self._playing = False
            return self._next_seq()

    def seek(self, media_time: float) -> int:
        with self._lock:
            self._rebase(min(max(float(media_time), 0.0), self._duration))
            return self._next_seq()

    def set_rate(self, rate: float) -> int:
        with self._lock:
            self._rebase()
            self._rate = _check_rate(rate)
            return self._next_seq()

    def set_loop(self, loop: bool) -> int:
        with self._lock:
            self._rebase()
            self._loop = bool(loop)
            return self._next_seq()

    # -- the browser's side ----------------------------------------------------------------

    def report(self, report: ClockReport, *, wall: float | None = None) -> None:
        """Correct the estimate with what the page heard at `wall` (default: now, on arrival;
        the websocket adds a few milliseconds, which the render lead absorbs)."""
        with self._lock:
            self.browser_error = report.error
            if report.seq != self._seq:
                return  # sent before our latest command reached the page: already stale
            self.reports += 1
            wall = self._clock() if wall is None else wall
            if report.paused:
                if self._playing and report.error:
                    return  # play() was refused (no click yet): keep the silent server clock
                if self._playing and report.media_time < self._duration - 0.05:
                    return  # still buffering the data: URL; it will start and report again
                self._playing = False
                self._anchor_media, self._anchor_wall = report.media_time, wall
                return
            if not self._playing:
                return  # a report from just before our pause; seq guards the usual case
            estimate = self._wrap(self._unwrapped(wall))
            error = estimate - report.media_time
            if self._loop and abs(error) > 0.5 * self._duration:
                error -= math.copysign(self._duration, error)  # the two sides wrapped apart
            self.errors.append(error)
            gain = 1.0 if abs(error) > SNAP_ERROR_S else CORRECTION_GAIN
            self._anchor_media = self._wrap(estimate - gain * error)
            self._anchor_wall = wall

    # -- internals (call with the lock held) --------------------------------------------------

    def _unwrapped(self, wall: float) -> float:
        if not self._playing:
            return self._anchor_media
        return self._anchor_media + (wall - self._anchor_wall) * self._rate

    def _wrap(self, media_time: float) -> float:
        if self._loop:
            return media_time % self._duration
        return min(max(media_time, 0.0), self._duration)

    def _rebase(self, media_time: float | None = None) -> None:
        now = self._clock()
        current = self._wrap(self._unwrapped(now))
        self._anchor_media = current if media_time is None else media_time
        self._anchor_wall = now

    def _settle_end(self) -> None:
        """Without loop, stop at the end (the audio element fires `ended` there too)."""
        if self._playing and not self._loop:
            if self._unwrapped(self._clock()) >= self._duration:
                self._playing = False
                self._anchor_media, self._anchor_wall = self._duration, self._clock()

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq


def _check_rate(rate: float) -> float:
    rate = float(rate)
    if not (MIN_RATE <= rate <= MAX_RATE):
        raise ValueError(f"playback rate {rate} is out of range [{MIN_RATE}, {MAX_RATE}]")
    return rate


def wav_bytes(samples: np.ndarray, sample_rate: int) -> bytes:
    """A mono 16-bit PCM WAV of `samples` `[N]` (float in [-1, 1]); what the page plays."""
    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, np.asarray(samples, dtype=np.float32), sample_rate, format="WAV",
             subtype="PCM_16")  # fmt: skip
    return buffer.getvalue()


def audio_element_js(wav: bytes, report_uuid: str, *, loop: bool, seq: int) -> str:
    """JavaScript that (re)creates the page's audio element for a clip and starts its reports.

    Args:
        wav: the clip as a WAV file (embedded as a base64 data: URL).
        report_uuid: uuid of the hidden text input whose updates carry the reports.
        loop: the element's `loop`.
        seq: the clock's current command number (reports carry it back).
    """
    url = "data:audio/wav;base64," + base64.b64encode(wav).decode("ascii")
    return f"""(() => {{
  const st = window.{JS_STATE} || (window.{JS_STATE} = {{}});
{page_sender_js("st")}
  if (st.audio) {{ st.audio.pause(); st.audio.remove(); }}
  if (st.timer) clearInterval(st.timer);
  const a = new Audio({json.dumps(url)});
  a.id = "talking-avatar-audio";
  a.preload = "auto";
  a.loop = {json.dumps(loop)};
  a.preservesPitch = true;
  document.body.appendChild(a);
  st.audio = a;
  st.seq = {seq};
  st.error = "";
  st.timer = setInterval(() => {{
    if (!st.worker) return;
    const value = JSON.stringify({{
      t: a.currentTime, p: a.paused, s: st.seq, e: st.error, r: a.readyState }});
    st.send({{ type: "GuiUpdateMessage", uuid: {json.dumps(report_uuid)}, updates: {{ value }} }});
  }}, {REPORT_INTERVAL_MS});
}})();"""


def command_js(clock: AudioClock, seq: int, *, seek: float | None = None) -> str:
    """JavaScript that makes the page's audio element match the clock after command `seq`."""
    with clock._lock:  # one consistent snapshot of the state the command produced
        clock._settle_end()
        playing, rate, loop = clock._playing, clock._rate, clock._loop
        media = clock._wrap(clock._unwrapped(clock._clock()))
    target = media if seek is None else seek
    return f"""(() => {{
  const st = window.{JS_STATE};
  if (!st || !st.audio) return;
  const a = st.audio;
  st.seq = {seq};
  a.playbackRate = {rate!r};
  a.loop = {json.dumps(loop)};
  if ({json.dumps(seek is not None or not playing)} ||
      Math.abs(a.currentTime - {target!r}) > {SNAP_ERROR_S}) a.currentTime = {target!r};
  if ({json.dumps(playing)}) {{
    a.play().then(() => {{ st.error = ""; }}).catch((e) => {{ st.error = e.name || "play failed"; }});
  }} else {{
    a.pause();
  }}
}})();"""
