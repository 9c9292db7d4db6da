"""The viewer in a real browser: Debian's headless Chromium driven by selenium.

Opens the page, waits for the first server-rendered frame, checks the head is drawn, clicks
Start (audio plays in the page and its clock reaches the server), moves an emotion slider
through the page and sees the picture change. Skips when chromium or chromedriver is missing
(CI: `apt-get install -y chromium chromium-driver`).
"""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
pytestmark = [
    pytest.mark.skipif(
        not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
        reason="needs Debian's chromium and chromium-driver (/usr/bin/chromium, /usr/bin/chromedriver)",
    ),
    pytest.mark.filterwarnings("ignore:Queued a .* on a closed connection"),
]

# Count the frames (JPEG blobs) the page receives; installed before the page's own scripts.
BLOB_HOOK = """
window.__frames = [];
const create = URL.createObjectURL;
URL.createObjectURL = function (obj) {
  if (obj && obj.type === "image/jpeg") window.__frames.push(performance.now());
  return create.call(URL, obj);
};
"""


def _driver():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)  # Debian's: Selenium Manager downloads nothing
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-background-networking", "--autoplay-policy=no-user-gesture-required",
        "--window-size=1280,800", "--mute-audio",
    ):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": BLOB_HOOK})
    return driver


def _open_panel(driver, port: int, timeout: float = 20.0) -> None:
    """Load the viewer's page on `port` and wait until its control panel is drawn."""
    from selenium.webdriver.common.by import By

    driver.get(f"http://127.0.0.1:{port}")
    _wait(lambda: driver.find_elements(By.CSS_SELECTOR, '[role="slider"]'), timeout, "the panel")


def _screenshot(driver) -> np.ndarray:
    import imageio.v3 as iio

    return iio.imread(io.BytesIO(driver.get_screenshot_as_png()))[..., :3]  # [H, W, 3]


def _keep(image: np.ndarray, name: str) -> None:
    """Save a screenshot when TALKING_AVATAR_SCREENSHOTS names a folder (to look at them)."""
    folder = os.environ.get("TALKING_AVATAR_SCREENSHOTS")
    if folder:
        import imageio.v3 as iio

        Path(folder).mkdir(parents=True, exist_ok=True)
        iio.imwrite(Path(folder) / name, image)


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def viewer():
    from viewer.app import ViewerApp, ViewerConfig

    app = ViewerApp(ViewerConfig(port=0, max_side=384, moving_side=192, backend="cpu"))
    app.start()
    yield app
    app.stop()


def test_page_shows_avatar_plays_audio_and_reacts_to_a_slider(viewer, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    driver = _driver()
    try:
        _open_panel(driver, viewer.server.get_port())
        _wait(lambda: driver.execute_script("return window.__frames.length") > 0, 20, "a frame")
        session = viewer.wait_for_session(1)[0]
        time.sleep(1.2)  # panel transitions and the texture upload
        before = _screenshot(driver)
        _keep(before, "viewer_start.png")
        # The canvas is the page left of the panel; the head sits in its middle.
        h, w = before.shape[:2]
        centre = before[h // 4 : 3 * h // 4, w // 5 : w // 2]
        assert (centre.min(axis=2) < 200).mean() > 0.15, "the head should be drawn"

        # Start: the click is the user gesture browsers want before sound.
        start = driver.find_element(By.XPATH, "//button[contains(., 'Start')]")
        start.click()
        _wait(lambda: session.clock.playing, 5, "playback to start")
        _wait(
            lambda: driver.execute_script(
                "const a = document.getElementById('talking-avatar-audio');"
                "return a !== null && !a.paused && a.currentTime > 0.3;"
            ),
            10,
            "the audio element to play",
        )
        _wait(lambda: session.clock.reports >= 5, 10, "clock reports from the page")
        page_time = driver.execute_script(
            "return document.getElementById('talking-avatar-audio').currentTime"
        )
        assert abs(session.clock.position() - page_time) < 0.25
        session.pause()
        session.seek(0.0)
        session.controls.blinks.value = False
        session.controls.head_motion.value = False
        time.sleep(1.0)
        still = _screenshot(driver)

        # Move the Angry slider through the page (sliders: time, then the seven emotions).
        slider = driver.find_elements(By.CSS_SELECTOR, '[role="slider"]')[3]
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", slider)
        slider.click()
        slider.send_keys(Keys.END)
        _wait(lambda: session.mix.get("angry", 0.0) > 0.9, 5, "the slider to reach the server")
        time.sleep(1.0)
        after = _screenshot(driver)
        region = (slice(h // 4, 3 * h // 4), slice(w // 5, w // 2))
        diff = np.abs(after[region].astype(int) - still[region].astype(int)).max(axis=2)
        assert (diff > 20).sum() > 200, "the face should change with the slider"
        _keep(still, "viewer_still.png")
        _keep(after, "viewer_angry.png")
    finally:
        driver.quit()


# Opens a WebSocket to the viewer from whatever page the browser shows; reports how it ended.
TRY_SOCKET = """
const done = arguments[arguments.length - 1];
const ws = new WebSocket(arguments[0], [arguments[1]]);
ws.onopen = () => { ws.close(); done("open"); };
ws.onerror = () => done("refused");
"""


def test_other_sites_cannot_connect_and_names_stay_text(viewer, tmp_path):
    """In a real browser: a page from another origin cannot open the viewer's WebSocket (the
    viewer's own page can), and an uploaded file named like HTML shows as text."""
    import functools
    import http.server
    import threading

    import soundfile as sf
    import viser
    from selenium.webdriver.common.by import By

    port = viewer.server.get_port()
    ws_url, protocol = f"ws://127.0.0.1:{port}", f"viser-v{viser.__version__}"
    # Another site: any other origin, here another port on this machine.
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    other = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    (tmp_path / "index.html").write_text("<html><body>another site</body></html>")
    driver = _driver()
    try:
        driver.set_script_timeout(20)
        driver.get(f"http://127.0.0.1:{other.server_address[1]}/")
        assert driver.execute_async_script(TRY_SOCKET, ws_url, protocol) == "refused"

        _open_panel(driver, port)
        assert driver.execute_async_script(TRY_SOCKET, ws_url, protocol) == "open"

        name = "<img src=x onerror=alert(1)>.wav"
        session = viewer.wait_for_session(1)[-1]
        speech = tmp_path / "tone.wav"
        sf.write(speech, 0.3 * np.sin(np.arange(16_000) / 16_000 * 2 * np.pi * 220), 16_000)
        assert session.load_upload(name, speech.read_bytes())
        _wait(lambda: name in driver.find_element(By.TAG_NAME, "body").text, 10, "the name")
        # No element came from the name (an alert would also have stopped the driver here).
        assert (
            driver.execute_script("return document.querySelectorAll('img[src=\"x\"]').length") == 0
        )
        _keep(_screenshot(driver), "viewer_hostile_name.png")
    finally:
        driver.quit()
        other.shutdown()


def test_upload_button_refuses_a_large_file_as_it_starts(viewer, tmp_path):
    """The page's own upload button with a 60 MB file: refused from its announcement, nothing
    buffered, on_upload never called, and the button usable again."""
    from selenium.webdriver.common.by import By

    from viewer._viser_compat import buffered_upload_bytes, element_uuid

    big = tmp_path / "big.wav"
    with open(big, "wb") as f:
        f.truncate(60 * 2**20)
    driver = _driver()
    try:
        _open_panel(driver, viewer.server.get_port())
        session = viewer.wait_for_session(1)[-1]
        called: list[int] = []
        session._on_upload = lambda: called.append(1)
        button = element_uuid(session.controls.upload)
        driver.find_element(By.ID, f"file_upload_{button}").send_keys(str(big))
        peak = 0
        deadline = time.monotonic() + 20
        while "Upload refused" not in driver.find_element(By.TAG_NAME, "body").text:
            assert time.monotonic() < deadline, "no refusal shown"
            peak = max(peak, buffered_upload_bytes(session.client))
            time.sleep(0.02)
        body = driver.find_element(By.TAG_NAME, "body").text
        assert "big.wav: 60 MB is over the 50 MB limit; upload a shorter recording" in body
        _wait(lambda: driver.find_element(By.ID, button).is_enabled(), 10, "the button")
        time.sleep(1.0)  # the page keeps sending parts: none may be kept
        assert peak == 0 and buffered_upload_bytes(session.client) == 0 and called == []
    finally:
        driver.quit()
