"""What keeps the network face of ``musebot serve`` closed to web pages and bounded under abuse.

**Web pages.** A page on another site runs in the musician's browser, next to musebot on loopback. Four rules
keep it out (:func:`refusal`, run before routing by the API's middleware):

1. *Host allow-list* (DNS rebinding: a name the attacker controls, re-pointed at 127.0.0.1, makes the
   browser treat musebot as that site). The ``Host`` header must name ``localhost``, ``127.0.0.1``, ``::1``
   (with or without a port, IPv6 in brackets), the ``--host`` address, or a name given with ``--allow-host``.
   When bound to every address (``0.0.0.0``, ``::``) any IP literal is accepted too: a browser that
   connected to an IP sent that IP, not a name an attacker can re-point. Else 421.
2. *Origin.* Browsers send ``Origin`` on every WebSocket upgrade and every request that is not GET or HEAD
   (Fetch standard, "append a request Origin header"). When present it must be ``http(s)://`` + the
   request's own ``Host``, itself allowed; ``Origin: null`` (sandboxed iframe, ``file://``, redirects) is
   refused. Else 403. A request without ``Origin`` does not come from a page (curl, python, Max, the
   tests) and is let through.
3. *No simple cross-site writes.* A state-changing request (not GET, HEAD, OPTIONS) with a CORS-safelisted
   content type (``text/plain``, ``application/x-www-form-urlencoded``, ``multipart/form-data``: what a
   form or a ``no-cors`` fetch may send without asking first) is refused with 415. Bodies are JSON, so a
   real client sends ``application/json`` (or no body at all, as for ``POST /api/panic``); a browser
   needs a CORS preflight for that type, and the preflight is refused (rule 4). This holds even if a
   browser forgot rule 2.
4. *Preflight.* ``OPTIONS`` is answered here: 403 for a foreign or null ``Origin``, else 204 with ``Allow``
   and no ``Access-Control-Allow-*`` header: musebot grants no cross-origin access, never a wildcard.

The token (off loopback) is checked after these, in the API's middleware.

**Abuse.** :class:`CappedSite` bounds the open connections well under the fd limit (above the cap the
oldest idle connections are closed; above a hard margin new ones get a 503), the API's
``keepalive_timeout`` (:data:`IDLE_TIMEOUT_S`) closes a connection that has not sent a complete request
in time (slowloris) or sits idle, :class:`Buckets` keeps one token bucket per client address, and
:class:`LogLimiter` bounds what a flood writes to the log, counting the lines it suppressed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
from collections.abc import Iterable
from urllib.parse import urlsplit

from aiohttp import web

from musebot.realtime.clock import now
from musebot.realtime.logs import LogLimiter as _LogLimiter

log = logging.getLogger(__name__)

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
WILDCARDS = frozenset({"", "0.0.0.0", "::"})
SIMPLE_CONTENT_TYPES = frozenset({"text/plain", "application/x-www-form-urlencoded", "multipart/form-data"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
MAX_CONNECTIONS = 256  # open TCP connections: far below the usual fd limit of 1024, MIDI ports need fds too
HARD_MARGIN = 64  # above MAX_CONNECTIONS + this, new connections get a 503 at once
IDLE_TIMEOUT_S = 5.0  # a connection must send a complete request within this, and not idle longer between
BODY_TIMEOUT_S = 5.0  # a request body (at most 16 KB) must arrive within this
LOGGERS = ("aiohttp.server", "aiohttp.web", "aiohttp.access", "aiohttp.websocket", "asyncio",
           "musebot.server.app", "musebot.server.osc", "musebot.server.security")


class TokenBucket:
    """``rate`` tokens a second up to ``burst``; :meth:`take` is False when empty (the message is refused)."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self.tokens, self.last = burst, now()

    def take(self) -> bool:
        t = now()
        self.tokens = min(self.burst, self.tokens + (t - self.last) * self.rate)
        self.last = t
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class Buckets:
    """One :class:`TokenBucket` per client address, so opening more connections buys no more rate.

    At most ``size`` addresses are remembered; the least recently seen is forgotten first (clearing them
    all, as before, let a flood from many addresses reset everyone's limit)."""

    def __init__(self, rate: float, burst: float, size: int = 1024) -> None:
        self.rate, self.burst, self.size = rate, burst, size
        self._buckets: dict[str, TokenBucket] = {}

    def get(self, address: str) -> TokenBucket:
        bucket = self._buckets.pop(address, None)
        if bucket is None:
            bucket = TokenBucket(self.rate, self.burst)
            if len(self._buckets) >= self.size:
                del self._buckets[next(iter(self._buckets))]
        self._buckets[address] = bucket  # reinserted: dict order is the order last seen
        return bucket

    def take(self, address: str) -> bool:
        return self.get(address).take()


def host_name(host: str) -> str | None:
    """The name or address of a ``Host`` header or an origin's netloc (lower case, no port, no brackets);
    None when it does not parse."""
    try:
        return urlsplit(f"//{host}").hostname  # also checks the port is a number
    except ValueError:
        return None


def is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class HostPolicy:
    """The names the API answers to (rules 1 and 2 of the module docstring)."""

    def __init__(self, bind_host: str, allow_hosts: Iterable[str] = ()) -> None:
        self.any_ip = bind_host in WILDCARDS
        names = set(LOOPBACK_NAMES) | {h for h in (host_name(n) for n in allow_hosts) if h}
        bound = host_name(f"[{bind_host}]" if ":" in bind_host else bind_host)
        if bound and not self.any_ip:
            names.add(bound)
        self.names = frozenset(names)

    def host_ok(self, host: str | None) -> bool:
        if host is None:  # HTTP/1.0 without Host: not a browser, nothing to rebind
            return True
        name = host_name(host)
        return name is not None and (name in self.names or (self.any_ip and is_ip(name)))

    def origin_ok(self, origin: str, host: str | None) -> bool:
        """Same origin: the page was served by this server under an allowed name."""
        parts = urlsplit(origin)
        return (parts.scheme in ("http", "https") and host is not None
                and parts.netloc.lower() == host.lower() and self.host_ok(parts.netloc))


def refusal(request: web.Request, policy: HostPolicy) -> web.Response | None:
    """The answer to a request a web page must not make (module docstring, rules 1-4), else None."""
    host = request.headers.get("Host")
    if not policy.host_ok(host):
        return error_response(421, f"host {host[:100]!r} is not served here: musebot answers on "
                                   f"{', '.join(sorted(policy.names))} (add names with --allow-host)")
    origin = request.headers.get("Origin")
    if origin is not None and not policy.origin_ok(origin, host):
        what = "an opaque origin (Origin: null: a sandboxed page or a file)" if origin == "null" else origin[:100]
        return error_response(403, f"cross-origin request from {what} refused: musebot only takes requests "
                                   "from its own page")
    if request.method == "OPTIONS":  # a same-origin page never needs a preflight: grant nothing
        return web.Response(status=204, headers={"Allow": "GET, HEAD, PATCH, POST, OPTIONS"})
    if request.method not in SAFE_METHODS and request.content_type in SIMPLE_CONTENT_TYPES \
            and "Content-Type" in request.headers:
        return error_response(415, f"a {request.method} with {request.content_type} is refused (what a page "
                                   "on another site can send): send application/json, or no body")
    return None


def error_response(status: int, message: str, details: str | None = None) -> web.Response:
    body = {"error": message}
    if details:
        body["details"] = details
    return json_response(body, status=status)


def json_response(data: object, status: int = 200) -> web.Response:
    """Strict JSON out: NaN or Infinity would make a body no JSON parser takes (a 500 is logged instead)."""
    return web.json_response(data, status=status, dumps=lambda d: json.dumps(d, allow_nan=False))


class LogLimiter(_LogLimiter):
    """The real-time path's limiter (``musebot.realtime.logs``) on the network face's loggers (``LOGGERS``)."""

    def __init__(self, lines: int = 10, window_s: float = 10.0) -> None:
        super().__init__(lines, window_s, LOGGERS)


_BUSY_BODY = json.dumps({"error": "too many connections: retry later"}).encode()
_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nConnection: close\r\n"
         b"Content-Length: %d\r\n\r\n%s" % (len(_BUSY_BODY), _BUSY_BODY))


class _Busy(asyncio.Protocol):
    """A connection above the hard cap: told so and closed, without reading its request."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(_BUSY)
        transport.close()


class CappedSite(web.TCPSite):
    """aiohttp's TCP site with a bound on open connections (aiohttp has none of its own).

    Above ``limit`` idle connections (waiting for a request: a slowloris, an idle keep-alive, a silent
    socket), the oldest idle ones are closed, so a flood of idle connections never locks a musician out.
    Connections in the middle of a request (the API's middleware marks them in :attr:`busy`; WebSockets
    are busy all along, and at most ``MAX_CLIENTS``) are never cut. At ``limit + HARD_MARGIN`` open
    connections new ones get a 503 at once."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, limit: int = MAX_CONNECTIONS,
                 **kwargs) -> None:
        super().__init__(runner, host, port, **kwargs)
        self.limit = limit
        self.evicted = 0
        self.refused = 0
        self.busy: set = set()  # request.protocol of the requests being handled
        self._closing: set = set()  # closed by us, not yet forgotten by aiohttp's server

    def _accept(self) -> asyncio.Protocol:
        server = self._runner.server
        assert server is not None
        if len(server.connections) >= self.limit + HARD_MARGIN:
            self.refused += 1
            log.warning("connection refused: %d open (cap %d + %d)", len(server.connections), self.limit,
                        HARD_MARGIN)
            return _Busy()
        # asyncio accepts a burst of connections before any is made (registered with aiohttp's server):
        # count them once they are, on the next turn of the loop.
        asyncio.get_running_loop().call_soon(self._enforce)
        return server()

    def _enforce(self) -> None:
        server = self._runner.server
        if server is None:
            return
        connections = server.connections  # oldest first
        self._closing.intersection_update(connections)  # forget those gone
        idle = [c for c in connections if c not in self.busy and c not in self._closing]
        for oldest in idle[:max(0, len(idle) - self.limit)]:
            self._closing.add(oldest)
            oldest.force_close()  # aiohttp's close() would leave an idle connection's socket open
            self.evicted += 1
            log.warning("connection cap %d reached: the oldest idle connection is closed", self.limit)

    async def start(self) -> None:
        # TCPSite.start with our factory in place of the runner's server (the rest as aiohttp does it).
        await web.BaseSite.start(self)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._accept, self._host, self._port, ssl=self._ssl_context, backlog=self._backlog,
            reuse_address=self._reuse_address, reuse_port=self._reuse_port,
        )
        sockets = self._server.sockets
        self._bound_port = sockets[0].getsockname()[1] if sockets else self._port
