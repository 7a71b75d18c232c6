"""The play page with ``--real-reference`` in a real browser: the model's and the game's frames side by
side, both moving under the same keys."""

from __future__ import annotations

import pytest
from test_play_browser import CHROMIUM, chromium, serve
from test_play_server import build_play_model, doom_starts

from infworld.serve.server import ServerConfig, create_app

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
pytest.importorskip("vizdoom")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    model, _, _ = build_play_model(tmp_path_factory.mktemp("reference"))
    app = create_app(str(model), "window", starts=doom_starts(), config=ServerConfig(real_reference=True))
    yield from serve(app)


def pixels(page, canvas: str) -> str:
    return page.evaluate(f"document.getElementById('{canvas}').toDataURL()")


def test_page_shows_the_real_game_beside_the_model(server):
    with chromium() as browser:
        page = browser.new_page()
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(server)
        page.wait_for_function("document.getElementById('refcap').textContent.includes('same start')",
                               timeout=20_000)
        assert page.locator("#refbox").is_visible() and page.locator("#screencap").is_visible()
        blank = page.evaluate("(() => { const c = document.createElement('canvas');"
                              " c.width = c.height = 32; return c.toDataURL(); })()")
        page.wait_for_timeout(200)
        game_before, model_before = pixels(page, "refscreen"), pixels(page, "screen")
        assert game_before != blank  # the game's start frame is drawn
        page.click("#screen")
        page.keyboard.down("w")
        page.wait_for_function("Number(document.getElementById('generated').textContent) >= 3",
                               timeout=20_000)
        page.keyboard.up("w")
        page.wait_for_timeout(300)
        assert pixels(page, "refscreen") != game_before and pixels(page, "screen") != model_before
        assert not errors, errors
