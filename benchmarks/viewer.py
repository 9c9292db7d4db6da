"""The browser viewer on CPU: frames per second per client (1 and 3 clients), slider-to-frame
latency, and, with --browser, audio/mouth drift over a 60 s clip in headless Chromium.

Clients are raw websocket connections speaking viser's protocol (tests/test_viewer.py's
FakePage) with a 512x512 canvas, so the figures are the server's: frames leaving it. Prints;
asserts nothing. The machine is shared, so the load average is printed with the figures.

Run: `.venv/bin/python benchmarks/viewer.py [--seconds 6] [--size 512] [--browser]
[--gaussians N]` (N: an avatar built with N Gaussians instead of the default one's 40k; the
process runs on `talking-avatar view`'s thread policy, avatar/threads.py).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

# Run as a script, this folder comes first on sys.path and its animator.py would shadow the
# package; the tests folder has the fake page and the browser helpers.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent / "tests"))


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _percentiles(values: list[float]) -> str:
    if not values:
        return "no samples"
    ms = np.array(values) * 1000
    return f"median {np.median(ms):.0f} ms, p90 {np.percentile(ms, 90):.0f} ms (n={len(ms)})"


def measure_fps(models, mode: str, clients: int, size: int, seconds: float) -> list[float]:
    """Frames per second each client received while all of them played."""
    from viewer_client import FakePage

    from viewer.app import ViewerApp, ViewerConfig

    anim, avatar = models
    cfg = ViewerConfig(port=0, max_side=size, mode=mode, backend="cpu")
    app = ViewerApp(cfg, animator=anim, avatar=avatar)
    app.start()
    pages = [FakePage(app.server.get_port(), width=size, height=size) for _ in range(clients)]
    try:
        sessions = app.wait_for_session(clients)
        for s in sessions:
            s.wait_frames(1, timeout=30)
            s.play()
        time.sleep(1.0)  # warm-up
        start = {id(s): s.frames_sent for s in sessions}
        time.sleep(seconds)
        return [(s.frames_sent - start[id(s)]) / seconds for s in sessions]
    finally:
        for p in pages:
            p.close()
        app.stop()


def measure_latency(models, size: int, playing: bool, repeats: int = 12) -> list[float]:
    """Seconds from a slider change (server side, as its on_update runs) to the first frame
    rendered after it leaving the server (flushed)."""
    from viewer_client import FakePage

    from viewer.app import ViewerApp, ViewerConfig

    anim, avatar = models
    app = ViewerApp(ViewerConfig(port=0, max_side=size, backend="cpu"), animator=anim,
                    avatar=avatar)  # fmt: skip
    app.start()
    page = FakePage(app.server.get_port(), width=size, height=size)
    try:
        session = app.wait_for_session(1)[0]
        session.wait_frames(1, timeout=30)
        if playing:
            session.play()
        time.sleep(0.5)
        session.change_latencies.clear()
        slider = session.controls.emotions["happy"]
        for i in range(repeats):
            slider.value = 0.5 * (i % 2) + 0.25
            time.sleep(0.3)
        return list(session.change_latencies)
    finally:
        page.close()
        app.stop()


def measure_drift(seconds: float = 60.0) -> None:
    """Play a 60 s clip in headless Chromium and compare the server's audio clock (what the mouth
    follows) with the page's `currentTime` as each report arrives, before it is corrected."""
    from selenium.webdriver.common.by import By
    from test_viewer_browser import _driver, _open_panel, _wait

    from animator.audio import Audio, load_audio
    from avatar.paths import asset_path
    from viewer.app import ViewerApp, ViewerConfig, make_clip

    app = ViewerApp(ViewerConfig(port=0, max_side=256, backend="cpu"))
    sample = load_audio(asset_path("speech", "sample.wav")).samples
    n = int(seconds * 16_000)
    clip = make_clip(app.animator, Audio(np.tile(sample, n // len(sample) + 1)[:n]),
                     name="sample x5", fps=30.0)  # fmt: skip
    app.start()
    driver = _driver()
    try:
        _open_panel(driver, app.server.get_port(), 30.0)
        session = app.wait_for_session(1)[0]
        session.set_clip(clip)
        session.controls.loop.value = False
        time.sleep(1.0)
        driver.find_element(By.XPATH, "//button[contains(., 'Start')]").click()
        t0 = time.monotonic()
        _wait(lambda: session.clock.reports > 0, 20, "reports")
        while time.monotonic() - t0 < seconds + 1 and session.clock.playing:
            time.sleep(1.0)
        errors = np.abs(np.array(session.clock.errors))
        page_t = driver.execute_script(
            "return document.getElementById('talking-avatar-audio').currentTime"
        )
        print(
            f"drift over {seconds:.0f} s (server clock vs the page's currentTime at each report, "
            f"before correction): median {np.median(errors) * 1000:.1f} ms, "
            f"p95 {np.percentile(errors, 95) * 1000:.1f} ms, max {errors.max() * 1000:.1f} ms, "
            f"{len(errors)} reports; page ended at {page_t:.2f} s; load {_load()}"
        )
        frames = np.array(session.frame_log)
        if len(frames) > 10:
            gaps = np.diff(frames[:, 0])
            print(f"  frames while playing: {1 / np.median(gaps):.1f} fps median at 256^2 pixels")
    finally:
        driver.quit()
        app.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--browser", action="store_true", help="also measure drift in Chromium")
    ap.add_argument("--gaussians", type=int, default=None, help="build an avatar this large")
    ap.add_argument("--fps-only", action="store_true", help="only frames per second")
    ap.add_argument(
        "--modes", default="image,splats", help="comma-separated viewer modes to measure"
    )
    args = ap.parse_args()

    from avatar.threads import configure_interactive

    configure_interactive()  # as `talking-avatar view` does, before torch loads

    from animator import Animator
    from avatar.avatars import load_avatar
    from avatar.flame import load_flame

    head = load_flame()
    if args.gaussians:
        from avatar.builder import build_default_avatar

        avatar = build_default_avatar(head, count=args.gaussians)
    else:
        avatar = load_avatar(None, head)
    models = (Animator.load(head=head), avatar)
    print(
        f"CPU cores: {os.cpu_count()}, load average before: {_load()}; "
        f"avatar of {len(avatar)} Gaussians"
    )
    for mode in args.modes.split(","):
        for clients in (1, 3):
            fps = measure_fps(models, mode, clients, args.size, args.seconds)
            print(
                f"{mode:6s} {clients} client(s) at {args.size}x{args.size}: "
                + ", ".join(f"{f:.1f}" for f in fps)
                + f" fps per client (target 25); load {_load()}"
            )
    if args.fps_only:
        return
    for playing in (False, True):
        lat = measure_latency(models, args.size, playing)
        state = "playing" if playing else "paused "
        print(f"slider -> frame flushed ({state}, {args.size}^2): {_percentiles(lat)}")
    if args.browser:
        measure_drift()
    print(f"load average after: {_load()}")


if __name__ == "__main__":
    main()
