"""``musebot serve --port N``: the HTTP + WebSocket API and the browser page, on aiohttp, in its own thread.

* ``GET /api/status``, ``GET|PATCH /api/settings``, ``POST /api/panic``: JSON, described by
  ``GET /openapi.json`` (OpenAPI 3.1, built in :mod:`musebot.server.schemas`);
* ``GET /ws``: a WebSocket of JSON text frames. In: ``hello`` (claim the performer role: one at a time),
  ``midi`` (a channel message, queued exactly like MIDI input), ``panic``, ``ping``. Out: ``welcome``,
  ``input`` (what the musician played, from any source), ``played`` (every message musebot sends to its
  first output, with ``t`` and ``due`` on the daemon's clock; ``due`` is null for the releases of a
  barge-in or a panic; notes passed thru are not included, they are ``input``), ``plan`` (notes scheduled
  ahead, and their cancellation), ``pong``, ``error``. Frames above 64 x ``MAX_FRAME_BYTES`` close the
  connection (code 1009); smaller oversized ones get an ``error``;
* ``GET /``: the page (``musebot/server/page``), plain files from a fixed table (no path from the network
  ever names a file).

Robustness: every frame and body is size-checked and validated against a schema; a bad one gets an
``error`` reply and the connection stays usable; token buckets bound the rate per client address (HTTP
requests, WebSocket frames of all its connections together). Off loopback a token is required. Web pages
of other sites are kept out (Host allow-list, Origin, no simple cross-site writes, preflight refused) and
connections are capped and timed out: see :mod:`musebot.server.security`. The daemon's threads never wait
on the network: events are handed to the loop with ``call_soon_threadsafe`` and a slow client's queue
drops, not blocks.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import secrets
import threading
from importlib import resources
from typing import TYPE_CHECKING

from aiohttp import WSMsgType, web

from musebot.realtime import midi
from musebot.realtime.clock import now
from musebot.realtime.errors import RealtimeError
from musebot.server import schemas, security
from musebot.server.control import Control, SettingsError, modes
from musebot.server.security import Buckets, TokenBucket, json_response
from musebot.server.security import error_response as _error

if TYPE_CHECKING:
    from musebot.realtime.daemon import Daemon

log = logging.getLogger(__name__)

WS_RATE = (400.0, 800.0)  # frames per second, burst: well above a pianist's (and a CC sweep's) rate
HTTP_RATE = (50.0, 200.0)  # requests per second per address, burst
CLIENT_QUEUE = 2048  # events waiting for one WebSocket client before the oldest are dropped
MAX_CLIENTS = 32
PAGE_FILES = {  # URL -> (file in musebot/server/page, content type)
    "/": ("index.html", "text/html"),
    "/app.js": ("app.js", "text/javascript"),
    "/style.css": ("style.css", "text/css"),
}


class ServerError(RealtimeError):
    """The API could not start (port taken, bad host)."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Client:
    """One WebSocket connection: its outgoing queue, rate limit, and the notes it holds as performer."""

    def __init__(self, ws: web.WebSocketResponse, peer: str, bucket: TokenBucket) -> None:
        self.ws = ws
        self.peer = peer
        self.queue: asyncio.Queue[str] = asyncio.Queue(maxsize=CLIENT_QUEUE)
        self.bucket = bucket  # shared by every connection from the same address
        self.held: set[tuple[int, int]] = set()  # (channel, pitch) of its note-ons not yet released
        self.dropped = 0

    def push(self, text: str) -> None:
        if self.queue.full():  # a client that does not read must not hold up the others
            self.queue.get_nowait()
            self.dropped += 1
        self.queue.put_nowait(text)


class ApiServer:
    """The API of one daemon: ``start()`` binds (raises :class:`ServerError`), ``stop()`` closes."""

    def __init__(self, daemon: Daemon) -> None:
        options = daemon.options
        self.daemon = daemon
        self.control = Control(daemon)
        self.host = options.host or "127.0.0.1"
        self.port = options.port
        self.osc_port = options.osc_port
        self.token = options.token
        if not is_loopback(self.host) and not self.token:
            self.token = secrets.token_urlsafe(18)
            print(f"musebot API token (needed off loopback): {self.token}", flush=True)
        self.clients: set[Client] = set()
        self.performer: Client | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.url: str | None = None
        self.osc = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._stopped: asyncio.Event | None = None
        self._http_buckets = Buckets(*HTTP_RATE)
        self._ws_buckets = Buckets(*WS_RATE)
        self.policy = security.HostPolicy(self.host, options.allow_hosts)
        self.max_connections = security.MAX_CONNECTIONS
        self.site: security.CappedSite | None = None
        self._log_limiter = security.LogLimiter()
        self._settings = schemas.Validator(schemas.settings_schema(modes()))
        self._frames = schemas.Validator(schemas.CLIENT_MESSAGE_SCHEMA)
        self._openapi = json.dumps(schemas.openapi_document(modes(), bool(self.token)))
        self._output = daemon.outputs[0] if daemon.outputs else None

    # ---- life ----------------------------------------------------------------------------------------
    def start(self, timeout: float = 10.0) -> ApiServer:
        self._thread = threading.Thread(target=self._serve, name="musebot-api", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise ServerError("the API did not start in time")
        if self._error is not None:
            raise ServerError(f"cannot serve the API on {self.host}:{self.port}: {self._error} "
                              "(choose another --port / --osc-port, or --host)") from self._error
        self.daemon.observers.append(self)  # an Observer of the daemon: on_input, on_sent, on_plan
        return self

    def stop(self) -> None:
        if self in self.daemon.observers:
            self.daemon.observers.remove(self)
        if self.loop is not None and self._stopped is not None and self.loop.is_running():
            self.loop.call_soon_threadsafe(self._stopped.set)
        if self._thread is not None:
            self._thread.join(5.0)

    def _serve(self) -> None:
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self._log_limiter.install()
        try:
            self.loop.run_until_complete(self._main())
        except BaseException as exc:  # reported to start() or logged
            if not self._ready.is_set():
                self._error = exc
                self._ready.set()
            else:
                log.exception("API server stopped on an error")
        finally:
            self._log_limiter.remove()
            self.loop.close()

    async def _main(self) -> None:
        self._stopped = asyncio.Event()
        if self.port is not None:
            app = self.make_app()
            # keepalive_timeout runs from the connection's start until a complete request, then between
            # requests: the header timeout (slowloris) and the idle timeout in one (aiohttp >= 3.10).
            self._runner = web.AppRunner(app, access_log=None, handle_signals=False,
                                         keepalive_timeout=security.IDLE_TIMEOUT_S, handler_cancellation=True)
            await self._runner.setup()
            self.site = security.CappedSite(self._runner, self.host, self.port, self.max_connections,
                                            reuse_address=True)
            await self.site.start()
            self.port = self._runner.addresses[0][1]
            host = f"[{self.host}]" if ":" in self.host else self.host
            self.url = f"http://{host}:{self.port}/"
            log.info("API and page on %s (OpenAPI at %sopenapi.json)", self.url, self.url)
        if self.osc_port is not None:
            from musebot.server.osc import OscControl

            self.osc = OscControl(self.control, self.host, self.osc_port, self.token, self._settings)
            await self.osc.start()
            self.osc_port = self.osc.port
            log.info("OSC control on udp %s:%d (addresses /musebot/...)", self.host, self.osc_port)
        self._ready.set()
        await self._stopped.wait()
        if self.osc is not None:
            self.osc.close()
        for client in list(self.clients):
            await client.ws.close(code=1001, message=b"musebot is stopping")
        if self._runner is not None:
            await self._runner.cleanup()

    # ---- the application -----------------------------------------------------------------------------
    def make_app(self) -> web.Application:
        app = web.Application(client_max_size=schemas.MAX_BODY_BYTES, middlewares=[self._guard])
        app.router.add_get("/api/status", self.get_status)
        app.router.add_get("/api/settings", self.get_settings)
        app.router.add_patch("/api/settings", self.patch_settings)
        app.router.add_post("/api/panic", self.post_panic)
        app.router.add_get("/openapi.json", self.get_openapi)
        app.router.add_get("/ws", self.websocket)
        for url in PAGE_FILES:
            app.router.add_get(url, self.get_page)
        return app

    @web.middleware
    async def _guard(self, request: web.Request, handler):
        """Rate limit, web-page rules (:mod:`musebot.server.security`) and token, before any handler runs."""
        if not self._http_buckets.take(request.remote or "?"):
            return _error(429, "too many requests: slow down")
        # A page from another site must not drive musebot through the musician's browser.
        refused = security.refusal(request, self.policy)
        if refused is not None:
            if refused.status >= 400:
                log.info("API: refused %s %s: %s", request.method, request.path, refused.text)
            return refused
        protected = request.path.startswith("/api/") or request.path == "/ws"
        if protected and self.token and not self._token_ok(request):
            return _error(401, "missing or wrong token: send Authorization: Bearer TOKEN")
        busy = self.site.busy if self.site is not None else set()
        busy.add(request.protocol)  # the connection cap never cuts a request in progress
        try:
            return await handler(request)
        except web.HTTPRequestEntityTooLarge:
            return _error(413, f"body larger than {schemas.MAX_BODY_BYTES} bytes")
        except web.HTTPException:
            raise
        except Exception:  # a bug answers 500 in JSON and is logged; the server goes on
            log.exception("API: error on %s %s", request.method, request.path)
            return _error(500, "internal error (logged by the daemon)")
        finally:
            busy.discard(request.protocol)

    def _token_ok(self, request: web.Request) -> bool:
        given = request.headers.get("X-Musebot-Token") or request.query.get("token") or ""
        auth = request.headers.get("Authorization", "")
        if auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        return hmac.compare_digest(given.encode(), self.token.encode())

    def _clients_summary(self) -> dict:
        return {"observers": len(self.clients), "performer": self.performer is not None}

    async def get_status(self, _request: web.Request) -> web.Response:
        return json_response(self.control.status(self._clients_summary()))

    async def get_settings(self, _request: web.Request) -> web.Response:
        return json_response(self.control.settings())

    async def patch_settings(self, request: web.Request) -> web.Response:
        if request.content_type != "application/json":
            return _error(415, "send the settings as application/json")
        if request.content_length is not None and request.content_length > schemas.MAX_BODY_BYTES:
            return _error(413, f"body larger than {schemas.MAX_BODY_BYTES} bytes")
        try:  # a body trickled byte by byte must not hold the handler
            raw = await asyncio.wait_for(request.read(), security.BODY_TIMEOUT_S)
        except asyncio.TimeoutError:
            return _error(408, f"body not received within {security.BODY_TIMEOUT_S:g} s")
        try:
            changes = schemas.parse_json(raw)
        except schemas.BadJson as exc:
            return _error(400, "body is not valid JSON", str(exc))
        problem = self._settings.check(changes)
        if problem:
            return _error(400, "invalid settings", problem)
        try:
            settings = self.control.apply(changes)
        except SettingsError as exc:
            return _error(exc.status, str(exc))
        log.info("settings changed over HTTP: %s", changes)
        return json_response(settings)

    async def post_panic(self, _request: web.Request) -> web.Response:
        return json_response({"ok": True, "panics": self.control.panic("panic over the API")})

    async def get_openapi(self, _request: web.Request) -> web.Response:
        return web.Response(text=self._openapi, content_type="application/json")

    async def get_page(self, request: web.Request) -> web.Response:
        name, content_type = PAGE_FILES[request.path]
        text = resources.files("musebot.server").joinpath("page", name).read_text(encoding="utf-8")
        return web.Response(text=text, content_type=content_type, headers={
            "Cache-Control": "no-store",
            # The page loads only its own files and talks only to this server.
            "Content-Security-Policy": "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:",
        })

    # ---- the WebSocket -------------------------------------------------------------------------------
    async def websocket(self, request: web.Request) -> web.StreamResponse:
        if len(self.clients) >= MAX_CLIENTS:
            return _error(503, f"{MAX_CLIENTS} clients already connected")
        # aiohttp closes on frames above max_msg_size; ours is lower, so an oversized frame is answered.
        ws = web.WebSocketResponse(max_msg_size=64 * schemas.MAX_FRAME_BYTES, heartbeat=30)
        await ws.prepare(request)
        peer = request.remote or "?"
        client = Client(ws, peer, self._ws_buckets.get(peer))
        self.clients.add(client)
        sender = asyncio.ensure_future(self._send_loop(client))
        client.push(json.dumps({
            "type": "welcome", "clock": now(), "role": "observer", "performer": self.performer is not None,
            "settings": self.control.settings(), "answer_channel": self.daemon.slot.channel,
        }))
        try:
            async for message in ws:
                if message.type == WSMsgType.TEXT:
                    try:
                        self._receive(client, message.data)
                    except Exception:  # a bug must not close the connection nor stop the server
                        log.exception("API: error on a WebSocket frame")
                        self._reply_error(client, "internal error (logged by the daemon)")
                elif message.type == WSMsgType.BINARY:
                    self._reply_error(client, "binary frames are not accepted: send JSON text frames")
                elif message.type == WSMsgType.ERROR:
                    break
        finally:
            self.clients.discard(client)
            if self.performer is client:
                self._release_performer(client)
            sender.cancel()
        return ws

    async def _send_loop(self, client: Client) -> None:
        try:
            while True:
                text = await client.queue.get()
                await client.ws.send_str(text)
        except (ConnectionError, RuntimeError, asyncio.CancelledError):
            return

    def _receive(self, client: Client, text: str) -> None:
        if len(text) > schemas.MAX_FRAME_BYTES:
            self._reply_error(client, f"frame larger than {schemas.MAX_FRAME_BYTES} bytes")
            return
        if not client.bucket.take():
            self._reply_error(client, "rate limit: too many frames, this one was dropped")
            return
        try:
            frame = schemas.parse_json(text)
        except schemas.BadJson as exc:
            self._reply_error(client, f"not valid JSON: {exc}")
            return
        problem = self._frames.check(frame)
        if problem:
            self._reply_error(client, f"invalid message: {problem}")
            return
        kind = frame["type"]
        if kind == "midi":
            self._midi_in(client, frame)
        elif kind == "hello":
            self._hello(client, frame["role"])
        elif kind == "panic":
            self.control.panic("panic over the WebSocket")
        elif kind == "ping":
            client.push(json.dumps({"type": "pong", "id": frame.get("id"), "clock": now()}))

    def _hello(self, client: Client, role: str) -> None:
        if role == "performer":
            if self.performer not in (None, client):
                self._reply_error(client, "another performer is connected: you stay an observer")
                return
            self.performer = client
        elif self.performer is client:
            self._release_performer(client)
        client.push(json.dumps({"type": "role", "role": role}))

    def _midi_in(self, client: Client, frame: dict) -> None:
        if self.performer is not client:
            self._reply_error(client, "only the performer plays: send {\"type\": \"hello\", \"role\": "
                                      "\"performer\"} first")
            return
        msg = midi.channel_message(frame["data"])
        if msg is None:
            self._reply_error(client, "not a MIDI channel message (status 0x80..0xEF and its data bytes)")
            return
        key = (midi.channel_of(msg), msg[1]) if len(msg) > 1 else None
        if midi.is_note_on(msg):
            client.held.add(key)
        elif midi.is_note_off(msg):
            client.held.discard(key)
        if not self.control.feed(msg):
            self._reply_error(client, "input queue full: message dropped")

    def _release_performer(self, client: Client) -> None:
        """The performer left: let go of its keys, so the phrase can end and nothing hangs."""
        self.performer = None
        for channel, pitch in sorted(client.held):
            self.control.feed(midi.note_off(channel, pitch))
        client.held.clear()

    def _reply_error(self, client: Client, text: str) -> None:
        client.push(json.dumps({"type": "error", "error": text}))

    # ---- events from the daemon's threads (quick: hand over to the loop) --------------------------------
    def _broadcast(self, payload: dict) -> None:
        if not self.clients:
            return
        text = json.dumps(payload)
        for client in self.clients:
            client.push(text)

    def _post(self, payload: dict) -> None:
        loop = self.loop
        if loop is not None and self.clients and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._broadcast, payload)
            except RuntimeError:  # the loop closed between the check and the call
                pass

    def on_input(self, t: float, data: object) -> None:
        msg = midi.channel_message(data)
        if msg is not None:
            self._post({"type": "input", "t": t, "data": list(msg)})

    def on_sent(self, due: float, sent: float, output, msg: tuple, tag: str | None) -> None:
        if output is self._output:
            self._post({"type": "played", "t": sent, "due": due, "data": list(msg), "tag": tag})

    def on_plan(self, action: str, items: list, tag: str | None) -> None:
        out = self._output
        notes = [{"due": due, "data": list(msg)} for due, output, msg in items if output is out]
        if action == "clear" or notes:
            self._post({"type": "plan", "action": action, "tag": tag, "notes": notes})
        if out is None:
            return
        # A cancel (barge-in) or a clear (panic) is reported before the releases it causes, and those go
        # straight to the output, not through the scheduler's on_send: report them here, so a client sees
        # every note musebot started also end. A cancel releases the notes still sounding; a panic, all.
        if action == "cancel":
            released = [msg for _due, output, msg in items if output is out and midi.is_note_off(msg)
                        and out.ledger.is_sounding(midi.channel_of(msg), msg[1])]
        elif action == "clear":
            released = [midi.note_off(channel, pitch) for channel, pitch in out.ledger.sounding()]
        else:
            return
        t = now()
        for msg in released:
            self._post({"type": "played", "t": t, "due": None, "data": list(msg), "tag": tag or "panic"})
