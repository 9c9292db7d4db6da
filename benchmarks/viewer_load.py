"""Load on one viewer server: simulated browser tabs (websocket clients speaking viser's protocol,
tests/viewer_client.py) that play, drag emotion sliders, upload a speech file and export an MP4
each, two of them closing mid-export. Prints per-tab frames per second, p95 slider-to-frame
latency, the server's memory over time and after all tabs left, and leftover temporary files.

Loopback only (127.0.0.1); bounded in time. Prints figures, asserts nothing. The process is the
server: its RSS is the server's (plus the small clients). The machine may be shared, so the
load average is printed with the figures.

Run: `.venv/bin/python benchmarks/viewer_load.py [--seconds 300] [--tabs 8] [--size 256]`.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import io
import os
import random
import shutil
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# Run as a script, this folder comes first on sys.path and its animator.py would shadow the
# package: put this checkout's root there instead (its packages, not an installed copy), and the
# tests folder, which has the fake browser tab.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path[:0] = [str(_HERE.parent), str(_HERE.parent / "tests")]

#: Seconds of speech each tab uploads (cut from the bundled sample).
UPLOAD_SECONDS = 4.0
#: Tabs that close while their export runs.
CLOSING_TABS = 2


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _release_free_memory() -> None:
    """Collect garbage and hand freed heap pages back to the system (glibc keeps them
    otherwise), so RSS shows what is still in use."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass  # not glibc: RSS then also counts freed pages the allocator kept


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


@dataclass
class Tab:
    """One simulated tab and what happened to it."""

    index: int
    page: object
    session: object
    closes_mid_export: bool
    opened: float = 0.0
    closed: float | None = None
    images_at_open: int = 0
    upload_sent: float | None = None
    upload_done: float | None = None
    export_clicked: float | None = None
    export_done: float | None = None
    drags: int = 0
    errors: list[str] = field(default_factory=list)


def _speech_flac() -> bytes:
    import soundfile as sf

    from animator.audio import SAMPLE_RATE, load_audio
    from avatar.paths import asset_path

    samples = load_audio(asset_path("speech", "sample.wav")).samples[: int(UPLOAD_SECONDS * 16_000)]
    buffer = io.BytesIO()
    sf.write(buffer, samples, SAMPLE_RATE, format="FLAC")
    return buffer.getvalue()


def _drive(tab: Tab, *, start: float, stop_at: float, upload: bytes, seconds: float) -> None:
    """What one person does: play, drag a slider every couple of seconds, upload a file, then
    export (and, for the closing tabs, leave while the export runs)."""
    from viewer._viser_compat import element_uuid

    page, session = tab.page, tab.session
    c = session.controls
    rng = random.Random(tab.index)
    sliders = [element_uuid(s) for s in c.emotions.values()]
    upload_at = start + 0.10 * seconds + 0.4 * tab.index
    export_at = start + 0.25 * seconds + 0.6 * tab.index
    page.click(element_uuid(c.play))
    next_drag = time.monotonic() + rng.uniform(0.0, 2.0)
    while time.monotonic() < stop_at:
        now = time.monotonic()
        if tab.upload_sent is None and now >= upload_at:
            tab.upload_sent = now
            page.upload(element_uuid(c.upload), f"speech-{tab.index}.flac", upload)
        if tab.upload_sent is not None and tab.upload_done is None:
            if any(title == "Speech loaded" for title, _ in page.notifications()):
                tab.upload_done = time.monotonic()
                page.click(element_uuid(c.play))  # a new clip starts paused
        if tab.export_clicked is None and now >= export_at and tab.upload_done is not None:
            tab.export_clicked = now
            page.click(element_uuid(c.export))
        if tab.export_clicked is not None and tab.export_done is None:
            if any(m.get("type") == "FileTransferStartDownload" for m in list(page.messages)):
                tab.export_done = time.monotonic()
            elif tab.closes_mid_export and c.export_progress.value >= 5.0:
                tab.closed = time.monotonic()  # leaves while frames are being rendered
                page.close()
                return
        if now >= next_drag:  # a drag: ten updates 50 ms apart (viser's page throttle)
            slider = rng.choice(sliders)
            target = rng.uniform(0.2, 1.0)
            for k in range(1, 11):
                page.set_value(slider, round(target * k / 10, 2))
                time.sleep(0.05)
            tab.drags += 1
            next_drag = time.monotonic() + rng.uniform(1.0, 2.5)
        time.sleep(0.05)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=300.0, help="length of the run (300)")
    ap.add_argument("--tabs", type=int, default=8)
    ap.add_argument("--size", type=int, default=256, help="frame side when the camera rests")
    args = ap.parse_args()

    # A frame or progress update racing a tab's departure is dropped by viser, with a warning.
    warnings.filterwarnings("ignore", message="Queued a .* on a closed connection")
    # Every temporary file of the server lands here, so leftovers can be counted.
    scratch = Path(tempfile.mkdtemp(prefix="viewer-load-"))
    tempfile.tempdir = str(scratch)

    app = _start_server(args.size)
    port = app.server.get_port()
    upload = _speech_flac()
    print(f"CPU cores: {os.cpu_count()}, load average before: {_load()}")
    # glibc gives busy threads their own heaps (up to 8 per core) and keeps what they free:
    # RSS after a load then stays above the baseline without any object being alive.
    print(f"MALLOC_ARENA_MAX={os.environ.get('MALLOC_ARENA_MAX', 'unset (glibc default)')}")
    print(f"{args.tabs} tabs, {args.seconds:.0f} s, {args.size}^2 frames, 127.0.0.1:{port}")

    # Baseline: the server after one tab came, uploaded, exported and went, so one-off
    # allocations (imports, caches, thread pools) are in it and what stays after is growth.
    _warm_up(app, args.size, upload)
    _release_free_memory()
    baseline = _rss_mb()
    print(f"RSS baseline (one tab came, uploaded, exported and went): {baseline:.0f} MB")

    tabs = _open_tabs(app, args.tabs, args.size)
    run = _run_tabs(tabs, upload, args.seconds)
    _report_tabs(tabs, run)
    _report_after_all_left(app, tabs, args.size, baseline, scratch)
    app.stop()
    shutil.rmtree(scratch, ignore_errors=True)


def _start_server(size: int):
    """A viewer on 127.0.0.1 (any free port) rendering `size`^2 frames on the CPU."""
    from animator import Animator
    from avatar.avatars import load_avatar
    from avatar.flame import load_flame
    from viewer.app import ViewerApp, ViewerConfig

    head = load_flame()
    app = ViewerApp(
        ViewerConfig(host="127.0.0.1", port=0, max_side=size, moving_side=size // 2,
                     backend="cpu"),
        animator=Animator.load(head=head), avatar=load_avatar(None, head),
    )  # fmt: skip
    app.start()
    return app


def _open_tabs(app, count: int, size: int) -> list[Tab]:
    """`count` tabs, connected one after the other, the first CLOSING_TABS of them to leave
    mid-export."""
    from viewer_client import FakePage

    tabs: list[Tab] = []
    for i in range(count):
        page = FakePage(app.server.get_port(), width=size, height=size)
        before = set(app.sessions)
        _wait(lambda before=before: set(app.sessions) - before, 60)
        session = app.sessions[(set(app.sessions) - before).pop()]
        tabs.append(Tab(i, page, session, closes_mid_export=i < CLOSING_TABS))
    return tabs


@dataclass
class Run:
    """What the server did while the tabs were driven."""

    end: float
    #: (seconds since the start, RSS MB, open tabs), sampled through the run.
    rss: list[tuple[float, float, int]]
    #: Images each staying tab had received when the closing tabs had gone, and when that was.
    images_when_closed: dict[int, int]
    closed_at: float


def _run_tabs(tabs: list[Tab], upload: bytes, seconds: float) -> Run:
    """Drive every tab on its own thread for `seconds`, sampling the server's memory."""
    start = time.monotonic()
    for tab in tabs:
        tab.opened, tab.images_at_open = start, tab.page.images
    stop_at = start + seconds
    drivers = [
        threading.Thread(
            target=_drive,
            args=(tab,),
            daemon=True,
            kwargs={"start": start, "stop_at": stop_at, "upload": upload, "seconds": seconds},
        )  # fmt: skip
        for tab in tabs
    ]
    for d in drivers:
        d.start()

    run = Run(end=0.0, rss=[], images_when_closed={}, closed_at=0.0)
    while time.monotonic() < stop_at:
        open_tabs = sum(t.closed is None for t in tabs)
        run.rss.append((time.monotonic() - start, _rss_mb(), open_tabs))
        if open_tabs == len(tabs) - CLOSING_TABS and not run.images_when_closed:
            run.images_when_closed = {t.index: t.page.images for t in tabs if t.closed is None}
            run.closed_at = time.monotonic()
        time.sleep(min(2.0, seconds / 60))
    run.end = time.monotonic()
    for d in drivers:
        d.join(timeout=30)
    return run


def _report_tabs(tabs: list[Tab], run: Run) -> None:
    """Per tab: frames per second, slider latency, upload and export; then the memory."""
    print("\nper tab: frames the page received per second, server-side slider-to-frame p95")
    for tab in tabs:
        until = tab.closed or run.end
        fps = (tab.page.images - tab.images_at_open) / max(until - tab.opened, 1e-9)
        lat = np.array(tab.session.change_latencies) * 1000
        p95 = f"{np.percentile(lat, 95):.0f} ms" if len(lat) else "n/a"
        upload_s = (
            f"{tab.upload_done - tab.upload_sent:.1f} s" if tab.upload_done and tab.upload_sent
            else "not done"
        )  # fmt: skip
        if tab.closed is not None:
            export = f"closed {tab.closed - (tab.export_clicked or tab.closed):.1f} s into export"
        elif tab.export_done is not None:
            export = f"export {tab.export_done - tab.export_clicked:.1f} s"
        else:
            export = f"export {tab.session.controls.export_progress.value:.0f} % done at the end"
        dropped = tab.session.render_loop.frames_dropped
        print(
            f"  tab {tab.index}: {fps:5.1f} fps, p95 {p95:>7s} (n={len(lat)}, {tab.drags} drags), "
            f"upload {upload_s}, {export}, {dropped} overtaken frames dropped"
        )
    if run.images_when_closed:
        span = run.end - run.closed_at
        rates = [
            (t.page.images - run.images_when_closed[t.index]) / span
            for t in tabs
            if t.index in run.images_when_closed
        ]
        print(
            f"after {CLOSING_TABS} tabs closed mid-export, the other {len(rates)} received "
            f"{min(rates):.1f}-{max(rates):.1f} fps over {span:.0f} s"
        )
    print("\nRSS over time (s, MB, open tabs):")
    step = max(1, len(run.rss) // 12)
    print("  " + ", ".join(f"{t:.0f}s {m:.0f}MB/{n}" for t, m, n in run.rss[::step]))
    print(f"  peak {max(m for _, m, _ in run.rss):.0f} MB; load average {_load()}")


def _report_after_all_left(app, tabs: list[Tab], size: int, baseline: float, scratch: Path) -> None:
    """Close every tab, check a new one is still served, then what the server kept: RSS,
    sessions alive, temporary files. Empties `tabs` (so no session is kept from here)."""
    from viewer_client import FakePage

    from viewer.app import ClientSession

    for tab in tabs:
        tab.page.close()
    _wait(lambda: not app.sessions and not any(t.session.exporting for t in tabs), 120)
    for tab in tabs:
        tab.session.render_loop.join(timeout=10)
    fresh = FakePage(app.server.get_port(), width=size, height=size)
    served = app.wait_for_session(1, timeout=30)[0].wait_frames(1, timeout=30)
    fresh.close()
    _wait(lambda: not app.sessions, 30)
    tabs.clear()
    del tab, fresh  # the loop variable still points at the last tab
    _release_free_memory()
    after = _rss_mb()
    alive = sum(type(o) is ClientSession for o in gc.get_objects())
    left = [p.name for p in scratch.iterdir()]
    print(
        f"\nafter every tab left: RSS {after:.0f} MB ({after - baseline:+.0f} MB vs baseline), "
        f"{alive} sessions still in memory, a new tab {'was' if served else 'was NOT'} served, "
        f"{len(left)} temporary files left{': ' + ', '.join(left) if left else ''}"
    )


def _warm_up(app, size: int, upload: bytes) -> None:
    """One tab comes, uploads, exports and goes."""
    from viewer_client import FakePage

    page = FakePage(app.server.get_port(), width=size, height=size)
    session = app.wait_for_session(1)[0]
    _wait(lambda: session.frames_sent >= 1, 60)
    session.load_upload("warm-up.flac", upload)
    export = session.start_export()
    if export is not None:
        export.join(timeout=300)
    page.close()
    _wait(lambda: not app.sessions, 30)


def _wait(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


if __name__ == "__main__":
    main()
