"""The followed tempo where a user looks for it: ``/api/status`` (HTTP), ``/musebot/tempo`` (OSC), and the
``--tempo``/``--answer-on`` flags of ``musebot serve``.

A daemon serving the API over real sockets (no MIDI system; the echo answers); the musician's call is handed
to its session under the session lock with given timestamps, as the listener would.
"""

from __future__ import annotations

import socket

import pytest
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder

from musebot.realtime.clock import now
from musebot.realtime.config import ServeConfig
from tests._server_fixtures import api_url, http, serving
from tests.realtime.modes.test_tempo_follow import melody, play


def osc(port: int, address: str) -> tuple[str, list]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.settimeout(3)
        sock.sendto(OscMessageBuilder(address=address).build().dgram, ("127.0.0.1", port))
        reply = OscMessage(sock.recvfrom(65536)[0])
        return reply.address, reply.params
    finally:
        sock.close()


def test_status_and_osc_report_the_tempo_followed_from_the_musician(tmp_path):
    config = ServeConfig(bpm=120, tempo="follow", silence_ms=200, seed=1)
    with serving(tmp_path, config, osc_port=0) as daemon:
        status, body = http("GET", api_url(daemon, "/api/status"))
        assert status == 200 and body["tempo"] == {"bpm": 120.0, "source": "follow", "confidence": 0.0}
        with daemon.session_lock:
            play(daemon.session, melody(84, now() + 0.5, jitter_s=0.01))
        status, body = http("GET", api_url(daemon, "/api/status"))
        tempo = body["tempo"]
        assert tempo["source"] == "follow" and tempo["bpm"] == pytest.approx(84, rel=0.04)
        assert 0.0 < tempo["confidence"] <= 1.0
        assert body["bpm"] == 120  # the setting (the first guess) is unchanged
        address, (bpm, source, confidence) = osc(daemon.server.osc_port, "/musebot/tempo")
        assert address == "/musebot/tempo" and source == "follow"
        assert bpm == pytest.approx(tempo["bpm"], abs=0.01) and confidence == pytest.approx(tempo["confidence"])


def test_with_tempo_fixed_the_status_says_so(tmp_path):
    with serving(tmp_path, ServeConfig(bpm=100, tempo="fixed", silence_ms=200), osc_port=0) as daemon:
        _, body = http("GET", api_url(daemon, "/api/status"))
        assert body["tempo"] == {"bpm": 100.0, "source": "fixed", "confidence": None}
        assert osc(daemon.server.osc_port, "/musebot/tempo") == ("/musebot/tempo", [100.0, "fixed", -1.0])


def test_serve_follows_by_default_and_takes_tempo_fixed_and_answer_on_bar():
    import argparse

    from musebot.serve import config_from_args, register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    default = config_from_args(parser.parse_args(["serve"]))
    assert default.tempo == "follow" and default.answer_on == "beat" and default.bpm == 120
    fixed = config_from_args(parser.parse_args(["serve", "--tempo", "fixed", "--answer-on", "bar", "--bpm", "90"]))
    assert (fixed.tempo, fixed.answer_on, fixed.bpm) == ("fixed", "bar", 90)
    with pytest.raises(SystemExit):
        parser.parse_args(["serve", "--tempo", "sometimes"])
