"""Fuzzing the running API: schemathesis generates requests from the daemon's own /openapi.json (valid and
invalid settings), hypothesis generates WebSocket frames (random JSON, near-valid messages, random bytes).
Bounded in count; afterwards the daemon must still serve: answer the status, and answer a phrase.
"""

from __future__ import annotations

import json

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests._server_fixtures import PHRASE, WsClient, answered, api_url, http, serving, ws_url

FUZZ = settings(max_examples=80, deadline=None, database=None, derandomize=True,
                suppress_health_check=list(HealthCheck))

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
# Frames close to the real ones reach deeper than random JSON: right type, wrong fields or values.
near_frames = st.fixed_dictionaries(
    {"type": st.sampled_from(["midi", "hello", "panic", "ping", "MIDI", ""])},
    optional={"data": st.lists(st.integers(-5, 300), max_size=5), "role": st.text(max_size=10),
              "id": st.integers(-(2**64), 2**64) | st.text(max_size=5)},
)
frames = (
    json_values.map(json.dumps) | near_frames.map(json.dumps) | st.text(max_size=200)
    | st.binary(max_size=64) | st.integers(1, 3000).map(lambda n: "[" * n)
)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    with serving(tmp_path_factory.mktemp("fuzz")) as daemon:
        yield daemon


def still_answers(daemon) -> None:
    """Settings back to call and response, then a phrase in over a fresh connection gets its answer."""
    status, body = http("PATCH", api_url(daemon, "/api/settings"),
                        {"mode": "call", "answer_beats": None, "thru": False, "bpm": 120,
                         "parts": {"answer": {"channel": 0}}})
    assert status == 200, body
    client = WsClient(ws_url(daemon))
    try:
        client.send({"type": "hello", "role": "performer"})
        client.play()
        assert len([m for m in client.receive_until(answered(len(PHRASE)), timeout=5)
                    if m["type"] == "played" and m["data"][0] == 0x90]) == len(PHRASE)
    finally:
        client.close()


def fuzz(operation, mode, calls: dict) -> None:
    @FUZZ
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case):
        # Checks: no 5xx, documented status and content type, response matches its schema, invalid
        # input refused and valid input accepted.
        case.call_and_validate()
        calls[mode.value] += 1

    run()


def test_schemathesis_against_the_openapi_description_leaves_the_daemon_serving(daemon):
    schema = schemathesis.openapi.from_url(api_url(daemon, "/openapi.json"))
    calls = {"positive": 0, "negative": 0}
    for result in schema.get_all_operations():
        operation = result.ok()
        modes = [schemathesis.GenerationMode.POSITIVE]
        if operation.body:  # only PATCH /api/settings takes input that can be wrong
            modes.append(schemathesis.GenerationMode.NEGATIVE)
        for mode in modes:
            fuzz(operation, mode, calls)
    assert calls["positive"] >= 60 and calls["negative"] >= 30, calls
    still_answers(daemon)


def test_random_websocket_frames_get_replies_and_leave_the_daemon_serving(daemon):
    client = WsClient(ws_url(daemon))
    client.send({"type": "hello", "role": "performer"})
    sent = []

    @settings(FUZZ, max_examples=400)
    @given(frame=frames)
    def send(frame):
        if isinstance(frame, bytes):
            client.send_bytes(frame)
        else:
            client.send(frame)
        sent.append(frame)

    try:
        send()
        client.send({"type": "ping", "id": 42})
        received = client.receive_until(lambda r: any(m["type"] == "pong" and m["id"] == 42 for m in r),
                                        timeout=10)
        assert any(m["type"] == "pong" and m["id"] == 42 for m in received)
        assert sum(m["type"] == "error" for m in received) >= len(sent) // 4  # most frames were bad
        assert not client.closed
    finally:
        client.close()  # lets go of any key a random frame held down
    still_answers(daemon)
