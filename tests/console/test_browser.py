"""The console in a real browser: Debian's Chromium, headless, driven by Playwright.

Signs in with a key, adds a file stream, sees it listed with its thumbnail, asks a question and
sees tokens, an answer and evidence pictures; then "Use my camera" with Chromium's fake camera
(a synthetic scene from a Y4M file): Chromium's own WebRTC stack publishes it to ``/v1/whip``,
the stream appears like any other, a question about it is answered, and the camera is stopped
(the WHIP ``DELETE``: the stream stays, ``ended``). Screenshots go to the test's directory or $STREAMVQA_SCREENSHOTS.

The engine is the server tests' tiny random model (its answers are noise, but the path is the
real one); ``docs/console.md`` has the same flow with the default model.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest

from streamvqa.server.app import create_app
from streamvqa.server.main import BackgroundServer
from streamvqa.synth.scenes import Obj, Scene, render_scene

from .conftest import ALICE, secure_settings

pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get("STREAMVQA_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip("no Chromium: `apt-get install chromium` (tools/setup.sh --test installs it)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the test extra)")

TIMEOUT_MS = 60_000


def wait_js(page, expression: str, timeout_s: float = 60.0) -> None:
    """Poll a JavaScript expression until truthy (``wait_for_function`` evaluates strings, which
    the console's Content-Security-Policy rightly forbids; ``evaluate`` goes through the driver)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if page.evaluate(expression):
            return
        page.wait_for_timeout(200)
    raise AssertionError(f"not true within {timeout_s:g} s: {expression}")


def write_fake_camera(path: Path, seconds: float = 4.0, fps: int = 10) -> Path:
    """A Y4M (what Chromium's fake camera reads): a red circle at the left, a blue square at the right."""
    scene = Scene(objects=[Obj("circle", "red", "left", 0.14), Obj("square", "blue", "right", 0.14)])
    rgb = render_scene(scene, 256, 256)
    with av.open(str(path), "w", format="yuv4mpegpipe") as out:
        st = out.add_stream("rawvideo", rate=fps)
        st.width, st.height, st.pix_fmt = 256, 256, "yuv420p"
        for _ in range(int(seconds * fps)):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24").reformat(format="yuv420p")
            for packet in st.encode(frame):
                out.mux(packet)
        for packet in st.encode():
            out.mux(packet)
    return path


@pytest.fixture
def console_server(engine, media: Path) -> Iterator[BackgroundServer]:  # noqa: F811
    settings = secure_settings(media, host="127.0.0.1", port=0, log_level="warning",
                               whip_ice_addresses=["127.0.0.1"], whip_connect_timeout_s=60)
    server = BackgroundServer(create_app(settings, engine=engine), settings).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[object]:
    camera = write_fake_camera(tmp_path / "camera.y4m")
    args = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
            f"--use-file-for-fake-video-capture={camera}", "--allow-loopback-in-peer-connection",
            "--no-sandbox", "--disable-dev-shm-usage"]
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
        try:
            yield b
        finally:
            b.close()


def test_console_in_chromium(console_server: BackgroundServer, browser, tmp_path: Path) -> None:
    shots = Path(os.environ.get("STREAMVQA_SCREENSHOTS") or tmp_path)  # docs/console.png comes from here
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []  # script errors and CSP violations (401/404 answers are expected below)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if "Content Security Policy" in m.text else None)
    outside: list[str] = []
    page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(
        (console_server.url, console_server.url.replace("http", "ws"), "blob:", "data:")) else None)

    page.goto(console_server.url + "/console")
    page.fill("#key", "svqa_not-a-valid-key-000000000000000000000")
    page.click("#signin-form button")
    sync_api.expect(page.locator("#signin-error")).to_contain_text("unauthorized")
    page.fill("#key", ALICE)
    page.click("#signin-form button")
    sync_api.expect(page.locator("#main")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('streamvqa.key')") == ALICE
    assert page.evaluate("localStorage.length") == 0

    # a file stream: listed, its frames counted, a thumbnail of its latest frame
    page.fill("#add-url", "clip.mp4")
    page.fill("#add-fps", "5")
    page.click("#add-form button")
    card = page.locator(".stream").first
    sync_api.expect(card.locator(".state")).to_have_text("ended")
    sync_api.expect(card.locator('[data-field="frames"]')).to_contain_text("15 encoded")
    wait_js(page, "document.querySelector('.stream img.thumb').src.startsWith('blob:')")
    assert page.evaluate("document.querySelector('.stream img.thumb').naturalWidth") > 0

    # ask: tokens arrive over the WebSocket, then the answer and its evidence pictures
    frames: list[str] = []
    page.on("websocket", lambda ws: ws.on("framereceived", lambda payload: frames.append(str(payload))))
    page.fill("#question", "What is shown?")
    page.fill("#ask-max", "6")
    page.click("#ask-form button")
    sync_api.expect(page.locator("#answer-meta")).to_contain_text("token")
    assert page.locator("#answer").inner_text().strip() != ""
    assert sum('"type":"token"' in f for f in frames) >= 1, frames  # tokens streamed before the answer
    assert '"type":"answer"' in frames[-1]
    wait_js(page, "[...document.querySelectorAll('#evidence img')].some(i => i.naturalWidth > 0)")
    assert page.locator("#evidence figcaption").count() >= 1
    sync_api.expect(page.locator("#evidence figcaption").first).to_contain_text(" s")
    page.screenshot(path=str(shots / "console-file.png"), full_page=True)

    # "Use my camera": Chromium's WebRTC publishes the fake camera over WHIP
    page.click("#camera")
    sync_api.expect(page.locator("#camera")).to_have_text("Stop camera")
    cam = page.locator(".stream", has_text="camera")
    sync_api.expect(cam.locator(".state")).to_have_text("running")
    wait_js(page,
        "[...document.querySelectorAll('.stream')].some(c => c.textContent.includes('camera') && "
        "/[1-9][0-9]* encoded/.test(c.querySelector('[data-field=frames]').textContent))")
    cam_id = cam.get_attribute("data-id")
    assert cam_id.startswith("w_")
    wait_js(page,
        f"document.querySelector('.stream[data-id={cam_id}] img.thumb').src.startsWith('blob:')")
    page.select_option("#ask-stream", cam_id)
    page.fill("#question", "What colour is the circle?")
    page.click("#ask-form button")
    sync_api.expect(page.locator("#answer-meta")).to_contain_text("token")
    page.screenshot(path=str(shots / "console-camera.png"), full_page=True)
    page.click("#camera")  # stop: the WHIP DELETE; the stream stays, ended
    sync_api.expect(cam.locator(".state")).to_have_text("ended")

    card.locator("button.delete").click()
    sync_api.expect(page.locator(".stream")).to_have_count(1)
    assert not outside, outside  # the page reached nothing but this server
    assert not errors, errors
    context.close()
