"""The network face of ``musebot serve`` under attack, over real sockets: web pages of other sites (DNS
rebinding, ``Origin: null``, preflights, text/plain posts), hostile OSC (a bundle timed in the future, NaN),
floods of connections, slowloris, and a network-only daemon whose sound is the browser's.
"""

from __future__ import annotations

import json
import logging
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
from http.client import HTTPConnection

import aiohttp
import pytest
from pythonosc.osc_bundle_builder import OscBundleBuilder
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder

from musebot.server import schemas, security
from tests._server_fixtures import (
    NO_JACK,
    PHRASE,
    WsClient,
    answered,
    api_url,
    http,
    note_ons,
    serving,
    ws_url,
)

EVIL = "http://evil.example"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    with serving(tmp_path_factory.mktemp("security"), osc_port=0, allow_hosts=["studio.lan"]) as daemon:
        yield daemon


def request(daemon, method: str, path: str, headers: dict | None = None,
            body: bytes | None = None) -> tuple[int, dict, str]:
    """One request with exactly these headers (http.client adds Host only when not given)."""
    connection = HTTPConnection("127.0.0.1", daemon.server.port, timeout=10)
    try:
        headers = dict(headers or {})
        connection.putrequest(method, path, skip_host="Host" in headers, skip_accept_encoding=True)
        for name, value in headers.items():
            connection.putheader(name, value)
        if body is not None:
            connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        response = connection.getresponse()
        return response.status, dict(response.headers), response.read().decode()
    finally:
        connection.close()


def ws_refusal(daemon, headers: dict) -> int | None:
    """The status of a refused WebSocket upgrade, or None when it was accepted."""
    try:
        WsClient(ws_url(daemon), headers=headers).close()
    except aiohttp.WSServerHandshakeError as exc:
        return exc.status
    return None


def panics(daemon) -> int:
    return daemon.session.counts["panics"]


def settings_now(daemon) -> dict:
    status, _headers, text = request(daemon, "GET", "/api/settings")
    assert status == 200
    return schemas.parse_json(text)  # strict JSON: NaN or Infinity in it would fail here


# ---- web pages ---------------------------------------------------------------------------------------------
def test_a_rebinding_host_is_refused_on_http_and_on_the_websocket(daemon):
    port = daemon.server.port
    # evil.example re-pointed at 127.0.0.1: the browser sends the attacker's name as Host (and Origin).
    for headers in ({"Host": f"evil.example:{port}"},
                    {"Host": f"evil.example:{port}", "Origin": f"{EVIL}:{port}"}):
        status, _headers, text = request(daemon, "GET", "/api/status", headers)
        assert status == 421 and "not served here" in json.loads(text)["error"]
        assert request(daemon, "PATCH", "/api/settings", {**headers, "Content-Type": "application/json"},
                       b'{"bpm": 99}')[0] == 421
        assert ws_refusal(daemon, headers) == 421
    assert request(daemon, "GET", "/", {"Host": "evil.example"})[0] == 421  # the page too
    assert settings_now(daemon)["bpm"] != 99
    # Loopback names and addresses, with or without the port, and the --allow-host name are served.
    for host in ("localhost", f"localhost:{port}", "127.0.0.1", f"127.0.0.1:{port}", "[::1]", f"[::1]:{port}",
                 f"studio.lan:{port}", f"STUDIO.LAN:{port}"):
        assert request(daemon, "GET", "/api/status", {"Host": host})[0] == 200, host
    assert ws_refusal(daemon, {"Host": f"localhost:{port}", "Origin": f"http://localhost:{port}"}) is None


def test_origin_null_is_refused_on_the_websocket_and_on_a_post(daemon):
    before = panics(daemon)
    assert ws_refusal(daemon, {"Origin": "null"}) == 403
    status, _headers, text = request(daemon, "POST", "/api/panic", {"Origin": "null"})
    assert status == 403 and "Origin: null" in json.loads(text)["error"]
    status, _headers, _text = request(daemon, "POST", "/api/panic", {"Origin": "null", "Content-Type": "text/plain"},
                                      b"x")
    assert status == 403
    assert panics(daemon) == before
    # The page's own origin is welcome on both.
    same = f"http://127.0.0.1:{daemon.server.port}"
    assert ws_refusal(daemon, {"Origin": same}) is None
    assert request(daemon, "POST", "/api/panic", {"Origin": same})[0] == 200
    assert panics(daemon) == before + 1


def test_a_preflight_from_another_site_is_refused_and_none_grants_access(daemon):
    asking = {"Access-Control-Request-Method": "PATCH", "Access-Control-Request-Headers": "content-type"}
    for origin in (EVIL, "null", f"http://evil.example:{daemon.server.port}"):
        status, headers, _text = request(daemon, "OPTIONS", "/api/settings", {"Origin": origin, **asking})
        assert status == 403, origin
        assert not any(name.lower().startswith("access-control-allow") for name in headers)
    # Its own origin needs no preflight; one is answered, and grants nothing either.
    status, headers, _text = request(daemon, "OPTIONS", "/api/settings",
                                     {"Origin": f"http://127.0.0.1:{daemon.server.port}", **asking})
    assert status == 204 and "PATCH" in headers["Allow"]
    assert not any(name.lower().startswith("access-control-allow") for name in headers)


def test_a_text_plain_panic_posted_by_another_site_does_not_panic(daemon):
    before = panics(daemon)
    # What a <form> or a no-cors fetch on evil.example can send without a preflight.
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        status, _headers, text = request(daemon, "POST", "/api/panic",
                                         {"Origin": EVIL, "Content-Type": content_type}, b"panic")
        assert status == 403 and "cross-origin" in json.loads(text)["error"]
        # Even from a browser that left Origin out, a simple content type changes nothing.
        assert request(daemon, "POST", "/api/panic", {"Content-Type": content_type}, b"panic")[0] == 415
        assert request(daemon, "PATCH", "/api/settings", {"Content-Type": content_type}, b'{"bpm": 99}')[0] == 415
    assert panics(daemon) == before
    assert settings_now(daemon)["bpm"] != 99
    # A script (no Origin) panics with JSON or no body at all.
    assert request(daemon, "POST", "/api/panic", {"Content-Type": "application/json"}, b"{}")[0] == 200
    assert request(daemon, "POST", "/api/panic")[0] == 200
    assert panics(daemon) == before + 2


# ---- OSC ---------------------------------------------------------------------------------------------------
class Osc:
    """A UDP socket that sends OSC datagrams and reads musebot's replies."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(3)
        self.sock.bind(("127.0.0.1", 0))

    def send(self, dgram: bytes) -> None:
        self.sock.sendto(dgram, ("127.0.0.1", self.port))

    def reply(self) -> tuple[str, list]:
        message = OscMessage(self.sock.recvfrom(65536)[0])
        return message.address, message.params

    def __call__(self, address: str, *args) -> tuple[str, list]:
        self.send(message(address, *args).dgram)
        return self.reply()

    def close(self) -> None:
        self.sock.close()


def message(address: str, *args):
    builder = OscMessageBuilder(address=address)
    for arg in args:
        builder.add_arg(arg)
    return builder.build()


def test_an_osc_bundle_timed_30_s_ahead_leaves_http_answering_within_100_ms(daemon):
    osc = Osc(daemon.server.osc_port)
    try:
        bundle = OscBundleBuilder(time.time() + 30)
        bundle.add_content(message("/musebot/bpm", 123.0))
        dgram = bundle.build().dgram
        assert len(dgram) <= 64  # a few dozen bytes froze python-osc's server for the timetag's 30 s
        osc.send(dgram)
        start = time.perf_counter()
        status, _headers, _text = request(daemon, "GET", "/api/status")
        latency = time.perf_counter() - start
        assert status == 200
        print(f"GET /api/status sent with a 30 s-ahead OSC bundle: answered in {latency * 1000:.1f} ms")
        assert latency < 0.1
        # The bundle's message was handled at once (its timetag ignored, as the osc module says).
        assert osc.reply() == ("/musebot/ok", ["/musebot/bpm"])
        assert settings_now(daemon)["bpm"] == 123
        # And a bundle that is not one (truncated) is ignored without a word.
        osc.send(dgram[:20])
        assert osc("/musebot/bpm", 120.0)[0] == "/musebot/ok"
    finally:
        osc.close()


def test_nan_and_infinity_are_refused_over_osc_http_and_the_websocket(daemon):
    before = settings_now(daemon)
    osc = Osc(daemon.server.osc_port)
    try:
        for address, value in (("/musebot/bpm", float("nan")), ("/musebot/temperature", float("inf")),
                                ("/musebot/answer_beats", float("nan")), ("/musebot/thru", float("nan"))):
            reply, args = osc(address, value)
            assert reply == "/musebot/error" and "not a finite number" in args[0], (address, args)
    finally:
        osc.close()
    url = api_url(daemon, "/api/settings")
    json_type = {"Content-Type": "application/json"}
    for raw in (b'{"bpm": NaN}', b'{"bpm": 1e400}', b'{"temperature": -1e999}',
                b'{"parts": {"bass": {"density": 1e309}}}'):
        status, body = http("PATCH", url, raw=raw, headers=json_type)
        assert status == 400, (raw, body)
    status, body = http("PATCH", url, raw=b'{"bpm": 1e400}', headers=json_type)
    assert "not a finite number" in body["details"]
    assert settings_now(daemon) == before
    client = WsClient(ws_url(daemon))
    try:
        client.send('{"type": "ping", "id": 1e400}')
        errors = client.receive_until(lambda r: any(m["type"] == "error" for m in r))
        assert any(m["type"] == "error" and "not a finite number" in m["error"] for m in errors)
    finally:
        client.close()


def test_json_nested_thousands_deep_is_refused_unparsed_even_under_a_raised_recursion_limit(daemon):
    # The recursion limit is the whole process's, and a test library (hypothesis) raises it while it runs:
    # then 1,300 nested arrays in a frame took the server's thread so deep into the C parser that a
    # garbage-collector callback there aborted the process ("Cannot recover from stack overflow"). Nesting
    # deeper than the messages need is now refused before anything is parsed.
    deep = 3_000
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(100_000)
    try:
        for text in ("[" * deep, '{"a":' * deep, b"[" * deep, "[" * (schemas.MAX_NESTING + 1)):
            with pytest.raises(schemas.BadJson, match="nested deeper"):
                schemas.parse_json(text)
        status, body = http("PATCH", api_url(daemon, "/api/settings"), raw=b"[" * deep,
                            headers={"Content-Type": "application/json"})
        assert status == 400 and "nested deeper" in body["details"], body
        client = WsClient(ws_url(daemon))
        try:
            client.send("[" * deep)
            errors = client.receive_until(lambda r: any(m["type"] == "error" for m in r))
            assert any(m["type"] == "error" and "nested deeper" in m["error"] for m in errors)
        finally:
            client.close()
    finally:
        sys.setrecursionlimit(limit)
    # Brackets inside strings are not nesting; what the messages need still parses.
    assert schemas.parse_json('{"type": "ping", "x": "' + "[" * deep + '"}')["type"] == "ping"
    assert schemas.parse_json("[" * schemas.MAX_NESTING + "]" * schemas.MAX_NESTING) == \
        json.loads("[" * schemas.MAX_NESTING + "]" * schemas.MAX_NESTING)


# ---- connections -------------------------------------------------------------------------------------------
def is_closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(4096) == b""
    except ConnectionResetError:
        return True
    except BlockingIOError:
        return False


def test_connections_over_the_cap_leave_a_normal_client_served(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(security, "MAX_CONNECTIONS", 16)
    with serving(tmp_path) as daemon:
        caplog.set_level(logging.INFO)
        idle = []
        try:
            for _ in range(80):  # five times the cap, each connected and silent
                idle.append(socket.create_connection(("127.0.0.1", daemon.server.port), timeout=5))
            time.sleep(0.3)
            start = time.perf_counter()
            status, body = http("GET", api_url(daemon, "/api/status"))
            assert status == 200 and body["mode"] == "call"
            assert time.perf_counter() - start < 1.0
            site = daemon.server.site
            assert site.evicted >= 80 - 16
            assert len(daemon.server._runner.server.connections) <= 16 + 1
            for sock in idle:
                sock.setblocking(False)
            time.sleep(0.2)
            assert sum(is_closed(sock) for sock in idle[:60]) == 60  # the oldest were let go
        finally:
            for sock in idle:
                sock.close()
        # The log holds a few lines about the cap, not one per connection; no fd ran out.
        cap_lines = [r for r in caplog.records if "connection cap" in r.getMessage()]
        assert 1 <= len(cap_lines) <= 10
        assert not any("Too many open files" in r.getMessage() for r in caplog.records)


def test_a_flood_of_refused_requests_writes_a_few_log_lines(daemon, caplog):
    caplog.set_level(logging.INFO)
    time.sleep(4)  # the HTTP bucket refills (50 a second)
    for _ in range(150):
        assert request(daemon, "GET", "/api/status", {"Host": "evil.example"})[0] in (421, 429)
    refused = [r for r in caplog.records if "refused" in r.getMessage()]
    assert 1 <= len(refused) <= 10


def test_slowloris_half_sent_requests_are_closed_by_the_header_timeout(daemon):
    socks = []
    try:
        for _ in range(100):
            sock = socket.create_connection(("127.0.0.1", daemon.server.port), timeout=5)
            sock.sendall(b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")  # never finished
            socks.append(sock)
        start = time.monotonic()
        # Meanwhile a normal client is served.
        assert http("GET", api_url(daemon, "/api/status"))[0] == 200
        open_ = set(socks)
        deadline = start + security.IDLE_TIMEOUT_S + 3
        while open_ and time.monotonic() < deadline:
            readable, _, _ = select.select(list(open_), [], [], 0.5)
            for sock in readable:
                if is_closed(sock):
                    open_.discard(sock)
        elapsed = time.monotonic() - start
        assert not open_, f"{len(open_)} of 100 half-sent requests still open after {elapsed:.1f} s"
        print(f"100 half-sent requests closed {elapsed:.1f} s after they were sent")
    finally:
        for sock in socks:
            sock.close()


# ---- a network-only daemon ---------------------------------------------------------------------------------
def test_output_none_with_a_port_plays_to_the_page(tmp_path):
    with serving(tmp_path, outputs=["none"]) as daemon:
        client = WsClient(ws_url(daemon))
        try:
            client.send({"type": "hello", "role": "performer"})
            client.play()
            received = client.receive_until(answered(len(PHRASE)), timeout=5)
            assert [m["data"][1] for m in note_ons(received)] == [pitch for pitch, _ in PHRASE]
        finally:
            client.close()


def test_musebot_serve_output_none_port_starts_and_stops(tmp_path):
    process = subprocess.Popen(
        [sys.executable, "-m", "musebot", "serve", "--output", "none", "--input", "none", "--port", "0",
         "--answer", "echo"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=dict(os.environ, **NO_JACK),
        cwd=tmp_path,
    )
    lines = []
    try:
        deadline = time.monotonic() + 60
        url = None
        while time.monotonic() < deadline and url is None:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line)
            found = re.search(r"API and page on (http://\S+/)", line)
            url = found.group(1) if found else None
        assert url, "".join(lines)
        status, body = http("GET", url + "api/status")
        assert status == 200 and body["mode"] == "call"
        process.send_signal(signal.SIGTERM)
        rest, _ = process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, "".join(lines) + rest


def test_output_none_without_a_port_is_refused(tmp_path):
    result = subprocess.run([sys.executable, "-m", "musebot", "serve", "--output", "none", "--input", "none"],
                            capture_output=True, text=True, env=dict(os.environ, **NO_JACK), timeout=60,
                            cwd=tmp_path, check=False)
    assert result.returncode == 2
    assert "--output none needs --port" in result.stderr and "Traceback" not in result.stderr


def test_with_a_token_an_osc_bundle_is_refused_at_once_without_it(tmp_path):
    with serving(tmp_path, osc_port=0, token="s3cret") as daemon:
        before = daemon.server.control.settings()
        osc = Osc(daemon.server.osc_port)
        try:
            bundle = OscBundleBuilder(time.time() + 30)
            bundle.add_content(message("/musebot/panic"))
            bundle.add_content(message("/musebot/bpm", 90.0))
            start = time.perf_counter()
            osc.send(bundle.build().dgram)
            replies = [osc.reply(), osc.reply()]
            assert time.perf_counter() - start < 1.0  # not 30 s
            assert all(address == "/musebot/error" and "token" in args[0] for address, args in replies)
            assert daemon.server.control.settings() == before
            assert osc("/musebot/bpm", "s3cret", 90.0)[0] == "/musebot/ok"
        finally:
            osc.close()


def test_a_flood_of_one_log_line_is_cut_and_the_cut_is_counted():
    limiter = security.LogLimiter(lines=3, window_s=0.2)
    logger = logging.getLogger("musebot.test.flood")
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logger.addHandler(handler)
    logger.addFilter(limiter)
    try:
        for n in range(1000):
            logger.warning("connection refused: %d open", n)
        assert len(records) == 3
        time.sleep(0.25)
        logger.warning("connection refused: %d open", 1000)
        assert records[-1].getMessage() == "connection refused: 1000 open [997 similar lines suppressed]"
    finally:
        logger.removeFilter(limiter)
        logger.removeHandler(handler)
