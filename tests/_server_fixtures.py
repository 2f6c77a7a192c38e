"""A daemon serving the network API in this process, and small clients for it over real sockets.

The daemon runs without a MIDI system (the JACK server name points nowhere, as in test_realtime_cli.py)
and plays through FluidSynth writing a WAV file, so the only way in and out is the network.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import aiohttp

from musebot.realtime.config import ServeConfig
from musebot.realtime.daemon import ServeOptions
from musebot.serve import Service

NO_JACK = {"JACK_DEFAULT_SERVER": "musebot-no-such-server", "JACK_NO_START_SERVER": "1"}
PHRASE = [(60, 0.08), (64, 0.08), (67, 0.08), (72, 0.12)]
SILENCE_MS = 200


@contextmanager
def serving(tmp_path: Path, config: ServeConfig | None = None, **options) -> Iterator[Service]:
    """A started daemon with the API on a free port of 127.0.0.1 (``options`` go to ServeOptions); the
    Service reads as the daemon, with ``.server`` for the API."""
    saved = {k: os.environ.get(k) for k in NO_JACK}
    os.environ.update(NO_JACK)
    config = config or ServeConfig(bpm=120, silence_ms=SILENCE_MS, seed=1)
    options = {"answer": "echo", "port": 0, "outputs": ["fluidsynth"], "fluidsynth_driver": "file",
               "fluidsynth_file": str(tmp_path / "out.wav"), "input": "none", **options}
    daemon = Service(config, ServeOptions(**options))
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.close()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def http(method: str, url: str, body: object = None, headers: dict | None = None,
         raw: bytes | None = None) -> tuple[int, object]:
    """One request; returns (status, decoded JSON body or text)."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    if body is not None and "Content-Type" not in request.headers:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, text = response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        status, text = exc.code, exc.read().decode()
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


class WsClient:
    """A WebSocket client on its own event loop, used synchronously from a test."""

    def __init__(self, url: str, headers: dict | None = None) -> None:
        self.loop = asyncio.new_event_loop()
        self.session = self.loop.run_until_complete(self._session())
        self.ws = self.loop.run_until_complete(self.session.ws_connect(url, headers=headers or {}))
        self.received: list[dict] = []

    @staticmethod
    async def _session() -> aiohttp.ClientSession:
        return aiohttp.ClientSession()

    def send(self, message: object) -> None:
        text = message if isinstance(message, str) else json.dumps(message)
        self.loop.run_until_complete(self.ws.send_str(text))

    def send_many(self, messages: list) -> None:
        """Send all at once, as fast as the socket takes them (one trip through the event loop)."""
        async def burst() -> None:
            for message in messages:
                await self.ws.send_str(message if isinstance(message, str) else json.dumps(message))

        self.loop.run_until_complete(burst())

    def send_bytes(self, data: bytes) -> None:
        self.loop.run_until_complete(self.ws.send_bytes(data))

    def receive_until(self, predicate, timeout: float = 3.0) -> list[dict]:
        """Read frames until ``predicate(all received so far)`` holds or ``timeout`` passes."""
        end = time.monotonic() + timeout
        while not predicate(self.received) and time.monotonic() < end:
            try:
                message = self.loop.run_until_complete(
                    self.ws.receive(timeout=max(0.01, end - time.monotonic())))
            except asyncio.TimeoutError:
                break
            if message.type != aiohttp.WSMsgType.TEXT:
                break
            self.received.append(json.loads(message.data))
        return self.received

    def of_type(self, kind: str) -> list[dict]:
        return [m for m in self.received if m["type"] == kind]

    def play(self, phrase=PHRASE, velocity: int = 90) -> None:
        for pitch, seconds in phrase:
            self.send({"type": "midi", "data": [0x90, pitch, velocity]})
            time.sleep(seconds)
            self.send({"type": "midi", "data": [0x80, pitch, 0]})

    @property
    def closed(self) -> bool:
        return self.ws.closed

    def close(self) -> None:
        self.loop.run_until_complete(self.ws.close())
        self.loop.run_until_complete(self.session.close())
        self.loop.close()


def note_ons(events: list[dict], kind: str = "played") -> list[dict]:
    return [e for e in events if e["type"] == kind and e["data"][0] & 0xF0 == 0x90 and e["data"][2] > 0]


def answered(n: int):
    """A ``receive_until`` predicate: ``n`` answer notes played, each started and ended."""
    return lambda received: len(note_ons(received)) >= n and sum(
        1 for m in received if m["type"] == "played" and m["data"][0] & 0xF0 == 0x80) >= n


def api_url(daemon: Service, path: str = "") -> str:
    return f"http://127.0.0.1:{daemon.server.port}{path}"


def ws_url(daemon: Service, query: str = "") -> str:
    return f"ws://127.0.0.1:{daemon.server.port}/ws{query}"
