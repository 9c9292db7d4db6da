"""Redraw docs/viewer.png: the browser viewer, in headless Chromium, paused on the sample speech
with a few emotion sliders set through the page's own controls.

Needs Debian's chromium and chromium-driver (`apt-get install chromium chromium-driver`) and
selenium (in the `dev` extra). Run: python scripts/viewer_screenshot.py [--out docs/viewer.png]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "viewer.png"))
    parser.add_argument("--time", type=float, default=2.2, help="seconds into the sample speech")
    parser.add_argument("--mix", default="happy=0.85,surprised=0.2", help="emotion=intensity,...")
    args = parser.parse_args()

    import imageio.v3 as iio
    from selenium.webdriver.common.by import By
    from test_viewer_browser import _driver, _open_panel, _screenshot, _wait

    from avatar.atomic import atomic_path
    from viewer.app import ViewerApp, ViewerConfig

    mix = {k: float(v) for k, v in (item.split("=") for item in args.mix.split(",") if item)}
    app = ViewerApp(ViewerConfig(port=0, max_side=640, backend="cpu"))
    app.start()
    driver = _driver()
    try:
        _open_panel(driver, app.server.get_port(), 30.0)
        session = app.wait_for_session(1)[0]
        session.pause()
        session.seek(args.time)
        session.controls.blinks.value = False
        session.controls.head_motion.value = False
        for label, value in mix.items():
            session.controls.emotions[label].value = value
        _wait(lambda: all(abs(session.mix.get(k, 0.0) - v) < 1e-6 for k, v in mix.items()), 10,
              "the sliders")  # fmt: skip
        time.sleep(3.0)  # the still frame at full resolution, and the panel's transitions
        # viser's toast about software WebGL (headless Chromium has no GPU) is not the product
        for button in driver.find_elements(By.CSS_SELECTOR, '[class*="Notification"] button'):
            button.click()
        time.sleep(0.5)
        with atomic_path(args.out) as tmp:
            iio.imwrite(tmp, _screenshot(driver), extension=".png")
        print(f"wrote {args.out}")
    finally:
        driver.quit()
        app.stop()


if __name__ == "__main__":
    main()
