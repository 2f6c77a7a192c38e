"""OSC control over UDP (python-osc): the same settings and panic as the HTTP API, for Max, Pd, TouchOSC, DAWs.

Addresses (arguments in brackets; with a token, every message's first argument is the token):

* ``/musebot/panic``, ``/musebot/status`` (replies ``/musebot/status`` with the status as a JSON string),
  ``/musebot/tempo`` (replies ``/musebot/tempo [f s f]``: the bpm in use, ``follow`` or ``fixed``, and the
  tracker's confidence, -1 when fixed)
* ``/musebot/mode [s]``, ``/musebot/bpm [f]``, ``/musebot/temperature [f]``, ``/musebot/thru [i]``,
  ``/musebot/answer_beats [f]`` (0: as long as the call), ``/musebot/channel [i]``,
  ``/musebot/pitch_range [i i]``
* ``/musebot/chords [s]`` (a chord chart, e.g. ``"Dm7 | G7 | Cmaj7 | %"``), ``/musebot/harmony [s]`` (chart,
  follow or key): accompany and looper

Each message is turned into a settings object and checked against the same schema as ``PATCH
/api/settings`` (NaN and infinities refused). The sender gets ``/musebot/ok [address]`` or ``/musebot/error
[reason]`` back (OSC has no replies of its own; Aria's bridge and Somax2 answer the same way). A token
bucket per sender address bounds the rate; with a token, it is checked before anything else is done.

Bundles: their messages are handled at once, in order, and the timetag is ignored. python-osc's own
dispatcher sleeps until a future timetag on the event loop, so one 28-byte bundle froze HTTP, WebSocket
and OSC; scheduling them instead (``call_later``) would keep state for any sender and play a panic late.
musebot's addresses are settings and panic, whose effect needs no sub-second timing.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math

from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.osc_packet import OscPacket

from musebot.server.control import Control, SettingsError
from musebot.server.schemas import Validator
from musebot.server.security import Buckets

log = logging.getLogger(__name__)

PREFIX = "/musebot/"
OSC_RATE = (200.0, 400.0)  # messages per second, burst (per sender address)


def _settings_of(name: str, args: list) -> dict:
    """The settings object one OSC message stands for (validated by the caller)."""
    one = args[0] if len(args) == 1 else args
    if name == "answer_beats":
        return {"answer_beats": None if one in (0, 0.0) else one}
    if name == "thru":
        # bool(NaN) is True: a non-finite number goes on to the validator, which refuses it.
        return {"thru": bool(one) if isinstance(one, (int, float)) and math.isfinite(one) else one}
    if name == "channel":
        return {"parts": {"answer": {"channel": one}}}
    if name == "pitch_range":
        return {"constraints": {"pitch_range": list(args)}}
    if name == "chords":
        return {"harmony": {"chart": one}}
    if name == "harmony":
        return {"harmony": {"mode": one}}
    return {name: one}


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, owner: OscControl) -> None:
        self.owner = owner

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        self.owner.received(data, addr)


class OscControl:
    """An OSC server on the API's event loop; replies go back to the sender's address."""

    def __init__(self, control: Control, host: str, port: int, token: str | None, settings: Validator) -> None:
        self.control = control
        self.host = host
        self.port = port
        self.token = token
        self.settings = settings
        self.buckets = Buckets(*OSC_RATE)
        self.transport: asyncio.DatagramTransport | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.transport, _ = await loop.create_datagram_endpoint(lambda: _Protocol(self),
                                                                local_addr=(self.host, self.port))
        self.port = self.transport.get_extra_info("sockname")[1]

    def received(self, data: bytes, sender: tuple) -> None:
        """One datagram: a message, or a bundle whose messages are handled now (see the module docstring)."""
        try:
            messages = [timed.message for timed in OscPacket(data).messages]
        # ParseError, or what a hostile bundle raises inside python-osc (RecursionError on deep nesting)
        except Exception as exc:  # noqa: BLE001 - no datagram may stop the server
            log.info("OSC: datagram from %s not understood: %s", sender[0], type(exc).__name__)
            return
        for message in messages:
            self._handle(sender, message.address, *message.params)

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
        if not self.buckets.take(sender[0]):
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
        if name == "tempo" and not args:
            tempo = self.control.status()["tempo"]
            confidence = tempo["confidence"]
            return "/musebot/tempo", float(tempo["bpm"]), tempo["source"], -1.0 if confidence is None else confidence
        if name not in ("mode", "bpm", "temperature", "thru", "answer_beats", "channel", "pitch_range", "chords",
                        "harmony"):
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
