"""OSC control over UDP (python-osc): the same settings and panic as the HTTP API, for Max, Pd, TouchOSC, DAWs.

Addresses (arguments in brackets; with a token, every message's first argument is the token):

* ``/musebot/panic``, ``/musebot/status`` (replies ``/musebot/status`` with the status as a JSON string)
* ``/musebot/mode [s]``, ``/musebot/bpm [f]``, ``/musebot/temperature [f]``, ``/musebot/thru [i]``,
  ``/musebot/answer_beats [f]`` (0: as long as the call), ``/musebot/channel [i]``,
  ``/musebot/pitch_range [i i]``

Each message is turned into a settings object and checked against the same schema as ``PATCH
/api/settings``. The sender gets ``/musebot/ok [address]`` or ``/musebot/error [reason]`` back (OSC has
no replies of its own; Aria's bridge and Somax2 answer the same way). A global token bucket bounds the rate.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging

from pythonosc.dispatcher import Dispatcher
from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.osc_server import AsyncIOOSCUDPServer

from musebot.server.control import Control, SettingsError
from musebot.server.schemas import Validator

log = logging.getLogger(__name__)

PREFIX = "/musebot/"
OSC_RATE = (200.0, 400.0)  # messages per second, burst (all senders together)


def _settings_of(name: str, args: list) -> dict:
    """The settings object one OSC message stands for (validated by the caller)."""
    one = args[0] if len(args) == 1 else args
    if name == "answer_beats":
        return {"answer_beats": None if one in (0, 0.0) else one}
    if name == "thru":
        return {"thru": bool(one) if isinstance(one, (int, float)) else one}
    if name == "channel":
        return {"parts": {"answer": {"channel": one}}}
    if name == "pitch_range":
        return {"constraints": {"pitch_range": list(args)}}
    return {name: one}


class OscControl:
    """An OSC server on the API's event loop; replies go back to the sender's address."""

    def __init__(self, control: Control, host: str, port: int, token: str | None, settings: Validator) -> None:
        from musebot.server.app import TokenBucket

        self.control = control
        self.host = host
        self.port = port
        self.token = token
        self.settings = settings
        self.bucket = TokenBucket(*OSC_RATE)
        self.transport: asyncio.DatagramTransport | None = None
        self.dispatcher = Dispatcher()
        self.dispatcher.set_default_handler(self._handle, needs_reply_address=True)

    async def start(self) -> None:
        server = AsyncIOOSCUDPServer((self.host, self.port), self.dispatcher, asyncio.get_running_loop())
        self.transport, _ = await server.create_serve_endpoint()
        self.port = self.transport.get_extra_info("sockname")[1]

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def _reply(self, to: tuple, address: str, *args: object) -> None:
        builder = OscMessageBuilder(address=address)
        for arg in args:
            builder.add_arg(arg)
        if self.transport is not None:
            self.transport.sendto(builder.build().dgram, to)

    def _handle(self, sender: tuple, address: str, *args: object) -> None:
        if not self.bucket.take():
            return  # a flood gets no replies either: they would feed it
        try:
            self._reply(sender, *self._dispatch(address, list(args)))
        except SettingsError as exc:
            self._reply(sender, "/musebot/error", str(exc)[:300])
        except Exception:  # no datagram may stop the server
            log.exception("OSC: error on %s", address)
            self._reply(sender, "/musebot/error", "internal error")

    def _dispatch(self, address: str, args: list) -> tuple:
        if self.token:
            given = args.pop(0) if args and isinstance(args[0], str) else ""
            if not hmac.compare_digest(given.encode(), self.token.encode()):
                raise SettingsError("missing or wrong token: send it as the first argument")
        if not address.startswith(PREFIX):
            raise SettingsError(f"unknown address {address[:80]!r}: musebot's start with {PREFIX}")
        name = address[len(PREFIX):]
        if name == "panic" and not args:
            self.control.panic("panic over OSC")
            return "/musebot/ok", address
        if name == "status" and not args:
            return "/musebot/status", json.dumps(self.control.status())
        if name not in ("mode", "bpm", "temperature", "thru", "answer_beats", "channel", "pitch_range"):
            raise SettingsError(f"unknown address {address[:80]!r}")
        if not args or (name == "pitch_range") != (len(args) == 2) or len(args) > 2:
            raise SettingsError(f"{address} takes {'two arguments' if name == 'pitch_range' else 'one argument'}")
        changes = _settings_of(name, args)
        problem = self.settings.check(changes)
        if problem:
            raise SettingsError(f"invalid {address}: {problem}")
        self.control.apply(changes)
        log.info("settings changed over OSC: %s", changes)
        return "/musebot/ok", address
