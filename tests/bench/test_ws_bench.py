"""``musebot bench-realtime --ws``: the WebSocket path measured beside the MIDI-port path in one run, and
``musebot serve`` refusing an impossible API port."""

from __future__ import annotations

import json

from musebot.cli import main
from tests._jack import requires_jackd
from tests.test_realtime_cli import NO_JACK, musebot


@requires_jackd
def test_bench_measures_both_paths_in_one_run(tmp_path, capsys):
    out = tmp_path / "ws.json"
    assert main(["bench-realtime", "--ws", "--rounds", "5", "--json", str(out)]) == 0
    figures = json.loads(out.read_text())["ws_vs_midi"]
    assert json.loads(capsys.readouterr().out)["ws_vs_midi"] == figures
    for path in ("midi", "websocket"):
        assert figures[path]["missing"] == 0
        for name in ("in", "out", "event_to_answer", "added"):
            assert figures[path][name]["n"] == 5
        # Never before the answer was due; the added latency (both ways) is a few ms, not a beat.
        assert figures[path]["event_to_answer"]["p50_ms"] >= figures["takeover_lead_ms"]
        assert 0 < figures[path]["in"]["p50_ms"] < 50 and 0 < figures[path]["out"]["p50_ms"] < 50


def test_serve_refuses_an_api_port_out_of_range():
    result = musebot("serve", "--output", "fluidsynth", "--fluidsynth-driver", "file", "--port", "70000",
                     env=NO_JACK)
    assert result.returncode != 0
    assert "--port must be 0..65535, got 70000" in result.stderr
