"""The browser page in headless Chromium (Debian's chromium, driven by Playwright): it loads from the daemon,
a phrase played on its on-screen keys reaches the model over the WebSocket, and the answer appears in the
piano roll. The screenshot is kept in ``artifacts/`` (or ``$MUSEBOT_TEST_ARTIFACTS``) for a human to look at.
"""

from __future__ import annotations

import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from musebot.realtime.config import ServeConfig
from tests._realtime_fixtures import exported_reference_model
from tests._server_fixtures import api_url, http, serving

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(os.environ.get("MUSEBOT_TEST_ARTIFACTS", Path(__file__).parents[2] / "artifacts"))
# No network but loopback, no sandbox (CI containers run as root), no GPU.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium is not installed (apt install chromium)")

# Pixels of the roll in each player's colour (style.css / app.js), counted in the browser.
COUNT_COLOUR = """([r, g, b]) => {
  const c = document.getElementById("roll");
  const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
  let n = 0;
  for (let i = 0; i < d.length; i += 4) if (d[i] === r && d[i + 1] === g && d[i + 2] === b) n++;
  return n;
}"""
MUSICIAN, MUSEBOT = [0x4A, 0xA3, 0xFF], [0xFF, 0x9A, 0x3C]


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@contextmanager
def page_of(browser, console_errors: bool = False):
    """A fresh page in its own context, and the list of its script errors (console errors too if asked).
    Playwright's waits evaluate strings, which the page's Content-Security-Policy rightly forbids: the
    context bypasses CSP for them."""
    context = browser.new_context(bypass_csp=True, viewport={"width": 1280, "height": 860})
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(str(error)))
    if console_errors:
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    try:
        yield page, problems
    finally:
        context.close()


def press(page, pitch: int, seconds: float) -> None:
    """Click an on-screen key (low on the key, where a black key does not cover a white one)."""
    box = page.locator(f'.key[data-pitch="{pitch}"]').bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] - 8)
    page.mouse.down()
    time.sleep(seconds)
    page.mouse.up()


def test_a_phrase_played_on_the_page_is_answered_in_its_piano_roll(tmp_path, browser, reference_dir):
    model = exported_reference_model(reference_dir)
    config = ServeConfig(bpm=120, silence_ms=400, seed=2)
    with serving(tmp_path, config, answer="model", model=str(model)) as daemon, \
            page_of(browser, console_errors=True) as (page, problems):
        page.goto(api_url(daemon, "/"))
        page.wait_for_function("window.musebot.connected && window.musebot.settings !== null")
        page.wait_for_function("document.querySelectorAll('#telemetry-list dt').length > 5")
        assert page.locator("#mode option").all_inner_texts()[:2] == ["call", "listen"]
        assert page.inner_text("#connection") == "connected"

        for pitch in (60, 62, 64, 67, 65, 64):
            press(page, pitch, 0.12)
        # In the silence that ends the phrase the model's answer is planned: drawn ahead of "now".
        page.wait_for_function("window.musebot.drawn.planned >= 1", timeout=5000)
        page.screenshot(path=str(ARTIFACTS / "test-server-page-planned.png"))
        page.wait_for_function("window.musebot.received.input >= 12")
        assert page.inner_text("#role") == "performer"
        # The answer played: its notes drawn in musebot's colour once the daemon is idle again.
        page.wait_for_function("window.musebot.drawn.musebot >= 1", timeout=10_000)
        end = time.monotonic() + 10
        while daemon.session.state != "idle" and time.monotonic() < end:
            time.sleep(0.05)
        played = [e for e in page.evaluate("window.musebot.notes") if e["who"] == "musebot"]
        assert played and all(n["end"] is not None for n in played)  # every answer note ended
        state = page.evaluate("window.musebot")
        assert state["drawn"]["musician"] == 6 and state["errors"] == []
        assert page.evaluate(COUNT_COLOUR, MUSICIAN) > 0 and page.evaluate(COUNT_COLOUR, MUSEBOT) > 0
        page.screenshot(path=str(ARTIFACTS / "test-server-page.png"))

        # The computer keyboard plays too ("a" is the lowest C), and the controls reach the daemon.
        page.keyboard.down("a")
        page.keyboard.up("a")
        page.wait_for_function("window.musebot.received.input >= 14")
        page.fill("#bpm", "100")
        page.dispatch_event("#bpm", "change")
        page.wait_for_function("window.musebot.settings.bpm === 100")
        assert http("GET", api_url(daemon, "/api/settings"))[1]["bpm"] == 100
        panics = daemon.session.counts["panics"]
        page.click("#panic")
        page.wait_for_function(f"document.querySelector('#telemetry-list').textContent.includes('panics{panics + 1}')",
                               timeout=3000)
        assert daemon.session.counts["panics"] == panics + 1
        assert problems == []


def test_in_an_accompany_session_the_page_mutes_a_part(tmp_path, browser, reference_dir):
    model = exported_reference_model(reference_dir)
    with serving(tmp_path, mode="accompany", answer=None, model=str(model)) as daemon, \
            page_of(browser) as (page, problems):
        page.goto(api_url(daemon, "/"))
        page.wait_for_function("document.querySelectorAll('#parts .part').length >= 2")
        page.click('.part[data-part="bass"] input[data-field="mute"]')
        page.wait_for_function("window.musebot.settings.parts.bass.mute === true")
        assert not page.is_visible("#answer_beats")  # the call-and-response settings do not apply
        assert daemon.session.settings.parts["bass"].mute is True
        page.wait_for_function("document.querySelector('#telemetry-list').textContent.includes('clock')")
        page.screenshot(path=str(ARTIFACTS / "test-server-page-accompany.png"))
        assert problems == []
