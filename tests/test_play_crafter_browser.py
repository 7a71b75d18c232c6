"""The play page on a Crafter world model, in a real browser: Crafter's own keys (W/A/S/D walk,
Space do, T place a table, 1 make a wood pickaxe...) send the model's interaction ids by name."""

from __future__ import annotations

import pytest
from test_play_browser import CHROMIUM, chromium, serve

from infworld.cli import main
from infworld.envs.crafter import CRAFTER_INTERACT_VOCAB
from infworld.serve.server import ServerConfig, create_app

pytestmark = pytest.mark.skipif(CHROMIUM is None,
                                reason="chromium is not installed (apt-get install chromium)")
pytest.importorskip("crafter")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from infworld.serve.starts import starts_from_dataset

    base = tmp_path_factory.mktemp("crafter-play")
    assert main(["collect", "--env", "crafter", "--policy", "craft", "--episodes", "2", "--steps", "30",
                 "--out", str(base / "data"), "--seed", "1", "--no-progress"]) == 0
    assert main(["train", "--recipe", "tiny-test-world", "--set", f"data.root={base / 'data'}",
                 "train.steps=2", "model.dit.patch_size=4", "--out", str(base / "run"), "--no-progress"]) == 0
    assert main(["export", str(base / "run"), "--out", str(base / "model")]) == 0
    starts = starts_from_dataset(base / "data", count=2, context=4)
    yield from serve(create_app(str(base / "model"), "window", starts=starts, config=ServerConfig()))


def test_crafter_keys_send_crafter_actions(server):
    with chromium() as browser:
        page = browser.new_page()
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(server)
        page.wait_for_function("document.getElementById('frame').textContent !== '-'", timeout=20_000)
        assert page.locator("#crafterhelp").is_visible() and not page.locator("#fpshelp").is_visible()
        help_text = page.locator("#crafterkeys").inner_text()
        for shown in ("Space do", "T place_table", "1 make_wood_pickaxe"):
            assert shown in help_text
        page.click("#screen")
        for key, name in (("Space", "do"), ("t", "place_table"), ("1", "make_wood_pickaxe"),
                          ("r", "place_stone")):
            want = CRAFTER_INTERACT_VOCAB.index(name)
            page.keyboard.press(key)
            page.wait_for_function(
                f"document.getElementById('action').textContent.includes('interact {want} ')",
                timeout=20_000)
        page.keyboard.press("d")  # walk right: move id (0 + 1) * 3 + (1 + 1) = 5, no interaction
        page.wait_for_function("document.getElementById('action').textContent.startsWith('move 5 view 4 "
                               "interact 0')", timeout=20_000)
        assert not errors, errors
