"""The network API of ``musebot serve --port``, used over real sockets: a started daemon in this process,
aiohttp's WebSocket client, urllib for HTTP, python-osc over UDP. The daemon has no MIDI system here and plays
through FluidSynth into a WAV file, so the network is the only way in and out.
"""

from __future__ import annotations

import json
import socket
import time

import pytest
from openapi_spec_validator import validate
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder

from musebot.realtime.config import ServeConfig
from musebot.server import schemas
from musebot.server.app import ApiServer, ServerError, is_loopback
from tests._realtime_fixtures import exported_reference_model
from tests._server_fixtures import PHRASE, WsClient, answered, api_url, http, note_ons, serving, ws_url

PITCHES = [pitch for pitch, _ in PHRASE]


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    with serving(tmp_path_factory.mktemp("api"), osc_port=0) as daemon:
        yield daemon


@pytest.fixture
def performer(daemon):
    client = WsClient(ws_url(daemon))
    client.send({"type": "hello", "role": "performer"})
    client.receive_until(lambda r: any(m["type"] == "role" for m in r))
    yield client
    client.close()


def test_status_gives_mode_tempo_model_and_the_schedulers_telemetry(daemon, performer):
    performer.play()
    performer.receive_until(answered(len(PHRASE)))
    status, body = http("GET", api_url(daemon, "/api/status"))
    assert status == 200
    assert schemas.Validator(schemas.STATUS_SCHEMA).check(body) is None
    assert body["mode"] == "call" and body["answerer"] == "echo" and body["model"] is None
    assert body["bpm"] == daemon.config.bpm
    telemetry = body["telemetry"]
    assert telemetry["sent"] >= 2 * len(PHRASE)
    assert telemetry["scheduling_error_ms"]["n"] >= 2 * len(PHRASE)
    assert 0 <= telemetry["scheduling_error_ms"]["p50"] <= telemetry["scheduling_error_ms"]["p99"]
    assert telemetry["late"] >= 0 and telemetry["dropped_late"] >= 0
    assert telemetry["counts"]["answers"] >= 1
    assert body["clients"] == {"observers": 1, "performer": True}


def test_a_phrase_played_over_the_websocket_is_answered_and_every_observer_sees_it(daemon, performer):
    observer = WsClient(ws_url(daemon))
    try:
        performer.play()
        performer.receive_until(answered(len(PHRASE)))
        observer.receive_until(answered(len(PHRASE)))
        for client in (performer, observer):
            # The musician's notes come back as input; the echo answer plays them back on its channel.
            assert [m["data"][1] for m in note_ons(client.received, "input")] == PITCHES
            ons = note_ons(client.received)
            assert [m["data"][1] for m in ons] == PITCHES
            assert all(m["data"][0] == 0x90 | daemon.slot.channel for m in ons)
            assert all(m["t"] >= m["due"] - 1e-4 for m in ons)  # never early
            # Each note was announced in a plan before it was played.
            first_played = client.received.index(ons[0])
            planned = [n["data"][1] for m in client.received[:first_played] if m["type"] == "plan"
                       and m["action"] == "add" for n in m["notes"] if n["data"][0] & 0xF0 == 0x90]
            assert set(PITCHES) <= set(planned)
    finally:
        observer.close()


def test_one_performer_at_a_time_and_observers_cannot_play(daemon, performer):
    other = WsClient(ws_url(daemon))
    try:
        other.send({"type": "hello", "role": "performer"})
        other.send({"type": "midi", "data": [0x90, 60, 100]})
        errors = other.receive_until(lambda r: len([m for m in r if m["type"] == "error"]) >= 2)
        texts = [m["error"] for m in errors if m["type"] == "error"]
        assert "another performer" in texts[0] and "only the performer plays" in texts[1]
        # The performer steps down; the other takes over.
        performer.send({"type": "hello", "role": "observer"})
        performer.receive_until(lambda r: [m for m in r if m["type"] == "role"][-1]["role"] == "observer")
        other.send({"type": "hello", "role": "performer"})
        assert other.receive_until(lambda r: any(m["type"] == "role" for m in r))[-1]["role"] == "performer"
    finally:
        other.close()


def test_a_performer_that_leaves_lets_go_of_its_keys(daemon):
    client = WsClient(ws_url(daemon))
    client.send({"type": "hello", "role": "performer"})
    client.send({"type": "midi", "data": [0x90, 50, 100]})
    observer = WsClient(ws_url(daemon))
    try:
        client.receive_until(lambda r: any(m["type"] == "input" for m in r))
        client.close()  # key still down
        heard = observer.receive_until(lambda r: any(m["type"] == "input" and m["data"][:2] == [0x80, 50]
                                                     for m in r))
        assert any(m["type"] == "input" and m["data"][:2] == [0x80, 50] for m in heard)
    finally:
        observer.close()


def test_settings_change_live_and_bad_ones_are_refused_with_a_reason(daemon, performer):
    url = api_url(daemon, "/api/settings")
    status, body = http("PATCH", url, {"bpm": 96, "temperature": 0.7, "parts": {"answer": {"channel": 3}}})
    assert status == 200, body
    assert body["bpm"] == 96 and body["temperature"] == 0.7 and body["parts"]["answer"]["channel"] == 3
    assert http("GET", url)[1] == body
    performer.play(PHRASE[:2])
    ons = note_ons(performer.receive_until(answered(2)))
    assert [m["data"][0] for m in ons] == [0x93, 0x93]  # the answer moved to channel 4

    refused = {
        "out of range": ({"bpm": 1000}, 400),
        "unknown setting": ({"volume": 3}, 400),
        "unknown mode": ({"mode": "karaoke"}, 400),
        "wrong type": ({"thru": "yes"}, 400),
        "constraints without a model": ({"constraints": {"pitch_range": [60, 72]}}, 409),
    }
    for why, (changes, expected) in refused.items():
        status, body = http("PATCH", url, changes)
        assert status == expected, why
        assert body["error"], why
    assert http("PATCH", url, raw=b'{"bpm": NaN}', headers={"Content-Type": "application/json"})[0] == 400
    assert http("PATCH", url, raw=b"[" * 5000, headers={"Content-Type": "application/json"})[0] == 400
    assert http("PATCH", url, raw=b"bpm=90", headers={"Content-Type": "text/plain"})[0] == 415
    big = b'{"bpm": 90' + b" " * (schemas.MAX_BODY_BYTES + 10) + b"}"
    assert http("PATCH", url, raw=big, headers={"Content-Type": "application/json"})[0] == 413
    status, body = http("GET", url)
    assert body["bpm"] == 96 and body["thru"] is False  # nothing refused was applied
    assert http("PATCH", url, {"bpm": 120, "temperature": 1.0, "parts": {"answer": {"channel": 0}}})[0] == 200


def test_mode_names_come_from_the_daemon(daemon):
    from musebot.server.control import modes

    status, document = http("GET", api_url(daemon, "/openapi.json"))
    assert document["components"]["schemas"]["Settings"]["properties"]["mode"]["enum"] == list(modes())
    assert {"call", "listen"} <= set(modes())
    for mode in modes():
        status, body = http("PATCH", api_url(daemon, "/api/settings"), {"mode": mode})
        if mode in ("call", "listen"):  # a call-and-response session switches between these live
            assert status == 200 and body["mode"] == mode
        else:  # the band modes need a restart: refused with the reason
            assert status == 409 and "--mode" in body["error"], body
    http("PATCH", api_url(daemon, "/api/settings"), {"mode": "call"})


def test_panic_stops_the_answer_and_ends_every_note_it_started(daemon, performer):
    performer.play([(60, 0.4), (62, 0.4), (64, 0.4)])
    performer.receive_until(lambda r: len(note_ons(r)) >= 1)
    status, body = http("POST", api_url(daemon, "/api/panic"))
    assert status == 200 and body["ok"] and body["panics"] >= 1
    time.sleep(1.5)  # the rest of the answer would have played by now
    received = performer.receive_until(lambda r: False, timeout=0.2)
    assert any(m["type"] == "plan" and m["action"] == "clear" for m in received)
    assert len(note_ons(received)) == 1
    offs = [m for m in received if m["type"] == "played" and m["data"][:2] == [0x80, 60]]
    assert offs and offs[0]["tag"] in ("panic", "answer")
    assert daemon.outputs[0].ledger.sounding() == []


def test_bad_frames_get_an_error_reply_and_the_connection_stays_usable(daemon, performer):
    bad = [
        "not json", '{"type": "midi"}', '{"type": "midi", "data": [1, 2, 3]}', '{"type": "sing"}',
        '{"type": "midi", "data": [144, 60, NaN]}', "[" * 3000, '{"type": "hello", "role": "boss"}',
        json.dumps({"type": "midi", "data": [0x90, 60, 90], "extra": "x" * (schemas.MAX_FRAME_BYTES + 1)}),
        "[]", "null", '"text"', '{"type": "midi", "data": [144, 60, 90, 1]}',
    ]
    for frame in bad:
        performer.send(frame)
    performer.send_bytes(b"\x90\x3c\x40")
    received = performer.receive_until(lambda r: sum(m["type"] == "error" for m in r) >= len(bad) + 1)
    errors = [m["error"] for m in received if m["type"] == "error"]
    assert len(errors) == len(bad) + 1
    assert any("larger than" in e for e in errors) and any("binary" in e for e in errors)
    assert not performer.closed
    performer.send({"type": "ping", "id": 7})
    assert performer.receive_until(lambda r: any(m["type"] == "pong" for m in r))[-1]["id"] == 7
    assert http("GET", api_url(daemon, "/api/status"))[0] == 200


def test_a_flood_of_frames_is_rate_limited_not_fatal(daemon, performer):
    performer.send_many([{"type": "ping"}] * 1500)  # the burst allows 800, then 400 a second
    received = performer.receive_until(lambda r: len(r) >= 1500 + 1, timeout=5)
    assert any(m["type"] == "error" and "rate limit" in m["error"] for m in received)
    time.sleep(0.3)
    performer.received.clear()
    performer.send({"type": "ping", "id": 1})
    assert performer.receive_until(lambda r: any(m["type"] == "pong" for m in r))


def test_other_sites_cannot_drive_musebot_through_the_browser(daemon):
    status, body = http("POST", api_url(daemon, "/api/panic"), headers={"Origin": "http://evil.example"})
    assert status == 403 and "cross-origin" in body["error"]
    same = f"http://127.0.0.1:{daemon.server.port}"
    assert http("POST", api_url(daemon, "/api/panic"), headers={"Origin": same})[0] == 200


def test_the_openapi_document_validates_and_describes_what_the_server_accepts(daemon):
    status, document = http("GET", api_url(daemon, "/openapi.json"))
    assert status == 200
    validate(document)  # OpenAPI 3.1 and its JSON Schema 2020-12 dialect
    assert set(document["paths"]) == {"/api/status", "/api/settings", "/api/panic"}
    assert "security" not in document  # loopback without --token: none needed


def test_the_page_is_served_and_no_path_names_a_file(daemon):
    status, html = http("GET", api_url(daemon, "/"))
    assert status == 200 and "<canvas" in html and "/app.js" in html
    assert http("GET", api_url(daemon, "/app.js"))[0] == 200
    for path in ("/../pyproject.toml", "/page/index.html", "/style.css/../app.py", "/%2e%2e/app.py"):
        assert http("GET", api_url(daemon, path))[0] == 404, path


class OscClient:
    """A UDP socket that sends one OSC message and reads musebot's reply."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(3)
        self.sock.bind(("127.0.0.1", 0))

    def __call__(self, address: str, *args) -> tuple[str, list]:
        builder = OscMessageBuilder(address=address)
        for arg in args:
            builder.add_arg(arg)
        self.sock.sendto(builder.build().dgram, ("127.0.0.1", self.port))
        reply = OscMessage(self.sock.recvfrom(65536)[0])
        return reply.address, reply.params


def test_osc_changes_settings_and_panics_with_a_reply_to_each_message(daemon):
    osc = OscClient(daemon.server.osc_port)
    sock = osc.sock
    try:
        assert osc("/musebot/bpm", 100.0) == ("/musebot/ok", ["/musebot/bpm"])
        assert osc("/musebot/channel", 2) == ("/musebot/ok", ["/musebot/channel"])
        assert daemon.config.bpm == 100 and daemon.slot.channel == 2
        address, (text,) = osc("/musebot/status")
        assert address == "/musebot/status" and json.loads(text)["bpm"] == 100
        for bad in (("/musebot/bpm", 5000.0), ("/musebot/bpm",), ("/musebot/mode", "karaoke"),
                    ("/musebot/volume", 1), ("/other/thing",), ("/musebot/pitch_range", 60)):
            address, params = osc(*bad)
            assert address == "/musebot/error" and params[0], bad
        sock.sendto(b"\x00garbage", ("127.0.0.1", daemon.server.osc_port))  # not OSC: ignored
        assert osc("/musebot/panic")[0] == "/musebot/ok"
        assert osc("/musebot/bpm", 120.0)[0] == "/musebot/ok"
        assert osc("/musebot/channel", 0)[0] == "/musebot/ok"
    finally:
        sock.close()


def test_with_a_token_nothing_is_served_without_it(tmp_path):
    with serving(tmp_path, token="s3cret", osc_port=0) as daemon:
        assert http("GET", api_url(daemon, "/api/status"))[0] == 401
        assert http("GET", api_url(daemon, "/api/status"), headers={"Authorization": "Bearer nope"})[0] == 401
        assert http("GET", api_url(daemon, "/api/status"), headers={"Authorization": "Bearer s3cret"})[0] == 200
        assert http("GET", api_url(daemon, "/api/status"), headers={"X-Musebot-Token": "s3cret"})[0] == 200
        assert "security" in http("GET", api_url(daemon, "/openapi.json"))[1]
        with pytest.raises(Exception, match="401"):
            WsClient(ws_url(daemon))
        client = WsClient(ws_url(daemon, "?token=s3cret"))
        assert client.receive_until(lambda r: r)[0]["type"] == "welcome"
        client.close()
        osc = OscClient(daemon.server.osc_port)
        try:
            assert osc("/musebot/bpm", 90.0)[0] == "/musebot/error"
            assert osc("/musebot/bpm", "nope", 90.0)[0] == "/musebot/error"
            assert osc("/musebot/bpm", "s3cret", 90.0) == ("/musebot/ok", ["/musebot/bpm"])
            assert daemon.config.bpm == 90
        finally:
            osc.sock.close()


def test_off_loopback_a_token_is_made_when_none_is_given(tmp_path, capsys):
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.20")
    with serving(tmp_path, port=None) as daemon:  # no API started; the server object is only built
        daemon.options.host, daemon.options.port = "0.0.0.0", 0
        server = ApiServer(daemon.daemon)
        assert server.token and len(server.token) >= 20
        assert server.token in capsys.readouterr().out


def test_a_port_in_use_is_a_clear_error(tmp_path):
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    try:
        with pytest.raises(ServerError, match="cannot serve the API on 127.0.0.1:.*choose another --port"), \
                serving(tmp_path, port=holder.getsockname()[1]):
            pass
    finally:
        holder.close()


@pytest.mark.slow
def test_the_model_answers_a_phrase_streamed_over_the_websocket_within_its_constraints(tmp_path, reference_dir):
    model = exported_reference_model(reference_dir)
    config = ServeConfig(bpm=120, silence_ms=300, seed=3)
    with serving(tmp_path, config, answer="model", model=str(model)) as daemon:
        status, body = http("PATCH", api_url(daemon, "/api/settings"),
                            {"constraints": {"pitch_range": [60, 72], "pitch_classes": [0, 2, 4, 5, 7, 9, 11]}})
        assert status == 200, body
        assert body["constraints"] == {"pitch_range": [60, 72], "pitch_classes": [0, 2, 4, 5, 7, 9, 11]}
        status, body = http("PATCH", api_url(daemon, "/api/settings"), {"constraints": {"pitch_range": [61, 61]}})
        assert status == 409 and "constraints" in body["error"]  # C# is outside the scale: nothing could play
        status, body = http("PATCH", api_url(daemon, "/api/settings"), {"constraints": {"pitch_range": [72, 60]}})
        assert status == 400 and "above" in body["error"]
        client = WsClient(ws_url(daemon))
        try:
            client.send({"type": "hello", "role": "performer"})
            client.play([(60, 0.1), (62, 0.1), (64, 0.1), (65, 0.1), (67, 0.1)])
            ons = note_ons(client.receive_until(lambda r: len(note_ons(r)) >= 3, timeout=8))
            assert ons, "the model gave no answer"
            assert all(60 <= m["data"][1] <= 72 and m["data"][1] % 12 in (0, 2, 4, 5, 7, 9, 11) for m in ons)
            status, body = http("GET", api_url(daemon, "/api/status"))
            assert body["answerer"] == "model" and body["model"] == model.name
            assert body["telemetry"]["generation"]["events"] > 0
        finally:
            client.close()


@pytest.mark.slow
def test_the_band_parts_of_an_accompany_session_are_set_live(tmp_path, reference_dir):
    model = exported_reference_model(reference_dir)
    with serving(tmp_path, mode="accompany", answer=None, model=str(model)) as daemon:
        url = api_url(daemon, "/api/settings")
        parts = http("GET", url)[1]["parts"]
        assert {"answer", "bass", "chords"} <= set(parts) and parts["bass"]["mute"] is False
        status, body = http("PATCH", url, {"parts": {"bass": {"mute": True, "density": 0.5}}})
        assert status == 200, body
        assert body["parts"]["bass"]["mute"] is True and body["parts"]["bass"]["density"] == 0.5
        band = http("GET", api_url(daemon, "/api/status"))[1]["band"]
        assert band["parts"]["bass"]["mute"] is True and band["mode"] == "accompany"
        refused = [({"parts": {"drums": {"mute": True}}}, "no such part"),
                   ({"parts": {"bass": {"channel": 5}}}, "set at start"),
                   ({"parts": {"answer": {"mute": True}}}, "only its channel"),
                   ({"mode": "call"}, "--mode call")]
        for changes, reason in refused:
            status, body = http("PATCH", url, changes)
            assert status == 409 and reason in body["error"], body


def test_a_frame_beyond_the_hard_limit_closes_only_its_own_connection(daemon, performer):
    rude = WsClient(ws_url(daemon))
    try:
        rude.send("x" * (64 * schemas.MAX_FRAME_BYTES + 1))  # aiohttp closes with 1009 (message too big)
        rude.receive_until(lambda r: False, timeout=1)
        assert rude.closed
    finally:
        rude.close()
    performer.send({"type": "ping", "id": 3})
    assert performer.receive_until(lambda r: any(m["type"] == "pong" for m in r))[-1]["id"] == 3
