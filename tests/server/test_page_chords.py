"""The page of a band session with a chord chart, in headless Chromium: it shows the chart's bars, the bar and
chord the band is at (moving with the clock), and a chart typed into it is played from then on."""

from __future__ import annotations

import re

from musebot.realtime.modes.band import BandConfig
from tests._server_fixtures import api_url, http, serving

# The Chromium fixture, and the mark that skips only where chromium is not installed.
from tests.server.test_page import ARTIFACTS, browser, page_of, pytestmark  # noqa: F401

CHART = "Dm7 | G7 | Cmaj7 | A7b9"


def test_the_page_shows_the_chart_the_current_bar_and_chord_and_edits_the_chart(tmp_path, browser):  # noqa: F811
    band = BandConfig.for_mode("looper", chords=CHART)
    with serving(tmp_path, mode="looper", answer=None, band=band) as daemon:
        daemon.session.set_tempo(240)  # a bar a second: the page's status poll sees the bars go by
        with page_of(browser) as (page, problems):
            page.goto(api_url(daemon, "/"))
            page.wait_for_function("document.querySelectorAll('#chart-bars li').length === 4")
            assert page.locator("#chart-bars li").all_inner_texts() == CHART.split(" | ")
            assert page.input_value("#chart") == CHART and page.input_value("#harmony-mode") == "chart"
            seen = set()
            for _ in range(12):  # about three seconds of status polls: the bar and chord move with the clock
                page.wait_for_timeout(250)
                text = page.inner_text("#chord-now")
                found = re.match(r"bar (\d)/4 · chord (\S+)", text)
                assert found, text
                bar, chord = int(found.group(1)), found.group(2)
                assert chord == CHART.split(" | ")[bar - 1], text  # the chord shown is its bar's
                highlighted = page.locator("#chart-bars li.now").all_inner_texts()
                assert highlighted in ([CHART.split(" | ")[bar - 1]], [CHART.split(" | ")[bar % 4]], [])
                seen.add(bar)
            assert len(seen) >= 2, seen
            page.screenshot(path=str(ARTIFACTS / "test-server-page-chords.png"))

            page.fill("#chart", "F7 | Bb7 | F7 | C7")
            page.press("#chart", "Enter")
            page.locator("#chart").blur()
            page.wait_for_function("document.querySelectorAll('#chart-bars li').length === 4 && "
                                   "document.querySelector('#chart-bars li').textContent === 'F7'", timeout=5000)
            assert http("GET", api_url(daemon, "/api/settings"))[1]["harmony"]["chart"] == "F7 | Bb7 | F7 | C7"
            page.fill("#chart", "F7 | Hb7")
            page.locator("#chart").blur()
            page.wait_for_function("document.getElementById('settings-error').textContent.includes('Hb7')")
            assert "bar 2" in page.inner_text("#settings-error")
            assert problems == []
