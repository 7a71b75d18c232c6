"""The play page in a real browser: Debian's chromium, headless, driven by Playwright, against the
real server (uvicorn) on a free localhost port."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from contextlib import contextmanager

import pytest
from test_play_server import build_play_model

from infworld.serve.server import ServerConfig, create_app
from infworld.serve.session import SessionConfig

CHROMIUM = next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser"), "/usr/bin/chromium")
                 if p and os.path.exists(p)), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None,
                                reason="chromium is not installed (apt-get install chromium)")
sync_api = pytest.importorskip("playwright.sync_api",
                               reason="playwright is not installed (pip install playwright)")
uvicorn = pytest.importorskip("uvicorn")


def serve(app):
    """Run ``app`` on a free local port in a thread; yield its URL, stop it afterwards."""
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("the play server did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/"
    srv.should_exit = True
    thread.join(timeout=10)


@contextmanager
def chromium():
    """Debian's chromium, headless, closed afterwards."""
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                     args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        try:
            yield browser
        finally:
            browser.close()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    model, starts, _ = build_play_model(tmp_path_factory.mktemp("browser"))
    app = create_app(str(model), "window", starts=starts,
                     config=ServerConfig(max_sessions=2, session=SessionConfig(max_log_frames=50)))
    yield from serve(app)


def canvas_pixels(page) -> str:
    return page.evaluate("document.getElementById('screen').toDataURL()")


def test_page_plays_with_the_keyboard_and_downloads_mp4(server, tmp_path):
    with chromium() as browser:
        page = browser.new_page(accept_downloads=True)
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(server)
        # the hello and the starting frame arrive: the chooser is filled, the frame counter is set
        page.wait_for_function("document.getElementById('frame').textContent !== '-'", timeout=20_000)
        assert page.locator("#start option").count() == 3
        assert page.locator("#memory").inner_text() == "window"
        page.wait_for_function("Number(document.getElementById('screen').dataset.frames || 0) >= 1")
        before = canvas_pixels(page)
        assert page.locator("#fps").inner_text() == "-"

        page.click("#screen")
        page.keyboard.down("w")  # held: continuous stepping, one action per received frame
        page.wait_for_function("Number(document.getElementById('generated').textContent) >= 3",
                               timeout=20_000)
        page.keyboard.up("w")
        page.keyboard.press("ArrowLeft")  # a tap is one more action
        page.wait_for_function("document.getElementById('action').textContent.includes('view 1')")
        page.wait_for_timeout(300)
        assert canvas_pixels(page) != before  # the frame on screen changed
        fps = page.locator("#fps").inner_text()
        assert float(fps) > 0, fps  # the FPS readout appeared
        assert page.locator("#latency").inner_text().endswith("ms")
        generated = int(page.locator("#generated").inner_text())
        assert generated >= 4

        with page.expect_download() as info:
            page.click("#download")
        path = tmp_path / "session.mp4"
        info.value.save_as(path)
        data = path.read_bytes()
        assert data[4:8] == b"ftyp" and len(data) > 1000

        page.select_option("#start", "2")  # choosing a start resets to it
        page.wait_for_function("document.getElementById('generated').textContent === '0'")
        assert not errors, errors


def test_a_tab_over_the_cap_shows_the_busy_message(server):
    """With every session taken (the server allows 2), the next tab says so in words, not a close code;
    no request 404s (the favicon included) and the readout wraps between words only."""
    with chromium() as browser:
        missing = []
        pages = []
        for _ in range(3):
            page = browser.new_page()
            page.on("response", lambda r: missing.append(r.url) if r.status == 404 else None)
            page.goto(server)
            pages.append(page)
        for page in pages[:2]:
            page.wait_for_function("document.getElementById('frame').textContent !== '-'", timeout=20_000)
        third = pages[2]
        third.wait_for_function("document.getElementById('status').classList.contains('error')",
                                timeout=20_000)
        busy = "all 2 play sessions are in use"
        assert busy in third.locator("#status").inner_text()
        assert busy in third.locator("#model").inner_text()  # not "connecting..."
        assert "1013" not in third.locator("#status").inner_text()
        assert pages[0].evaluate(
            "getComputedStyle(document.getElementById('action')).wordBreak") != "break-all"
        pages[0].wait_for_timeout(300)
        assert not missing, missing
