"""Chord charts over the network API: a looper session (no model needed) started with a chart, then the chart
and harmony mode changed live over HTTP (``PATCH /api/settings``) and OSC (``/musebot/chords``,
``/musebot/harmony``); bad charts are refused with the symbol and its place, and nothing changes."""

from __future__ import annotations

import pytest

from musebot.realtime.modes.band import BandConfig
from tests._server_fixtures import api_url, http, serving
from tests.server.test_api import OscClient

BLUES = "F7 | Bb7 | F7 | F7 | Bb7 | Bb7 | F7 | D7b9 | Gm7 | C7 | F7 D7 | Gm7 C7"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    band = BandConfig.for_mode("looper", chords="Dm7 | G7 | Cmaj7 | %")
    with serving(tmp_path_factory.mktemp("harmony"), mode="looper", answer=None, band=band, osc_port=0) as daemon:
        yield daemon


def settings(daemon) -> dict:
    return http("GET", api_url(daemon, "/api/settings"))[1]


def test_the_chart_given_at_start_is_in_the_settings_and_the_status_shows_bar_and_chord(daemon):
    http("PATCH", api_url(daemon, "/api/settings"), {"harmony": {"chart": "Dm7 | G7 | Cmaj7 | %"}})
    assert settings(daemon)["harmony"] == {"mode": "chart", "chart": "Dm7 | G7 | Cmaj7 | %"}
    status, body = http("GET", api_url(daemon, "/api/status"))
    harmony = body["band"]["harmony"]
    assert status == 200 and harmony["mode"] == "chart" and harmony["bars"] == 4
    # The band's clock runs from bar 1: the bar and chord shown are those of the chart at the beat now.
    beat = body["band"]["beat"]
    bar = int(beat // 4) % 4
    assert harmony["bar"] in (bar + 1, (bar + 1) % 4 + 1)  # the clock may cross a bar line between reads
    assert harmony["chord"] in ("Dm7", "G7", "Cmaj7")


def test_a_new_chart_is_played_and_a_bad_one_is_refused_naming_the_symbol_and_its_place(daemon):
    status, body = http("PATCH", api_url(daemon, "/api/settings"), {"harmony": {"chart": BLUES}})
    assert status == 200 and body["harmony"]["chart"].startswith("F7 | Bb7 | F7 | % | Bb7")
    assert http("GET", api_url(daemon, "/api/status"))[1]["band"]["harmony"]["bars"] == 12
    status, body = http("PATCH", api_url(daemon, "/api/settings"),
                        {"harmony": {"chart": "Cm7 | F7 | Bbmaj7 | Ebmaj7 Hm7"}, "bpm": 90})
    assert status == 400
    assert "'Hm7'" in body["error"] and "bar 4, chord 2" in body["error"]
    # All or nothing: neither the chart nor the tempo changed.
    after = settings(daemon)
    assert after["harmony"]["chart"].startswith("F7 | Bb7") and after["bpm"] != 90
    for bad, words in (("", "no bars"), ("  |  | ", "no bars"), ("% | C", "'%'"), ("C | | G", "empty bar"),
                       ("C / / | G", "marks 3 beats")):
        status, body = http("PATCH", api_url(daemon, "/api/settings"), {"harmony": {"chart": bad}})
        assert status == 400 and words in body["error"], (bad, body)


def test_a_long_chart_is_taken_and_one_beyond_the_body_limit_is_refused(daemon):
    long = " | ".join(["Dm7 G7", "Cmaj7"] * 500)  # 1,000 bars
    status, _ = http("PATCH", api_url(daemon, "/api/settings"), {"harmony": {"chart": long}})
    assert status == 200
    assert http("GET", api_url(daemon, "/api/status"))[1]["band"]["harmony"]["bars"] == 1000
    status, _ = http("PATCH", api_url(daemon, "/api/settings"), {"harmony": {"chart": "C | " * 4000}})
    assert status in (400, 413)  # over the schema's 12,000 characters, or the body limit


def test_the_harmony_mode_follows_the_musician_or_the_key_and_chart_mode_needs_a_chart(daemon):
    http("PATCH", api_url(daemon, "/api/settings"), {"harmony": {"chart": "Dm7 | G7"}})
    status, body = http("PATCH", api_url(daemon, "/api/settings"), {"harmony": {"mode": "follow"}})
    assert status == 200 and body["harmony"] == {"mode": "follow", "chart": "Dm7 | G7"}
    assert daemon.session.harmony.mode == "follow"
    status, body = http("PATCH", api_url(daemon, "/api/settings"), {"harmony": {"chart": None}})
    assert status == 200 and body["harmony"] == {"mode": "follow", "chart": None}
    status, body = http("PATCH", api_url(daemon, "/api/settings"), {"harmony": {"mode": "chart"}})
    assert status == 400 and "needs a chart" in body["error"]
    status, body = http("PATCH", api_url(daemon, "/api/settings"), {"harmony": {"mode": "jazz"}})
    assert status == 400 and "invalid settings" in body["error"]
    status, body = http("PATCH", api_url(daemon, "/api/settings"), {"harmony": {"chart": "C7 | F7", "mode": "key"}})
    assert status == 200 and body["harmony"] == {"mode": "key", "chart": "C7 | F7"}
    assert not daemon.session.harmony.active  # the key only: the chart is kept for later


def test_osc_sets_the_chart_and_the_mode_and_names_a_bad_symbol(daemon):
    osc = OscClient(daemon.server.osc_port)
    try:
        assert osc("/musebot/chords", "Am7b5 | D7alt | Gm6 | %") == ("/musebot/ok", ["/musebot/chords"])
        assert settings(daemon)["harmony"] == {"mode": "chart", "chart": "Am7b5 | D7alt | Gm6 | %"}
        address, (reason,) = osc("/musebot/chords", "Am7b5 | D7 | Gq6")
        assert address == "/musebot/error" and "'Gq6'" in reason and "bar 3" in reason
        assert osc("/musebot/harmony", "follow")[0] == "/musebot/ok"
        assert osc("/musebot/harmony", "nonsense")[0] == "/musebot/error"
        assert osc("/musebot/chords", 3)[0] == "/musebot/error"
        assert settings(daemon)["harmony"]["mode"] == "follow"
    finally:
        osc.sock.close()


def test_a_call_session_has_no_chart_to_set(tmp_path):
    with serving(tmp_path) as daemon:
        status, body = http("PATCH", api_url(daemon, "/api/settings"), {"harmony": {"chart": "C | G"}})
        assert status == 409 and "--mode accompany" in body["error"]
        assert "harmony" not in settings(daemon)
