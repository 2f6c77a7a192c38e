"""``musebot bench-realtime --ws``: the latency the WebSocket path adds, beside the MIDI-port path, in one run.

One daemon serves both at once: JACK ports (``musebot:in`` -> ``musebot-out:out``, on a private ``jackd -d
dummy``) and the API (``/ws`` on 127.0.0.1). Rounds alternate between the paths. Each round the musician
holds the pedal, plays a note and hands over with the takeover controller; the echo answer is due
``takeover_lead_ms`` after the controller arrives. Measured on the one monotonic clock (client and daemon
share the process):

* ``in``: the client sends the controller -> the daemon has it (the timestamp the listener works with);
* ``out``: the scheduler sends the answer's first note-on -> the client has it (JACK: the probe's MIDI
  callback; WebSocket: the ``played`` frame read by the client);
* ``event_to_answer``: controller sent -> first answer note-on received (includes the lead);
* ``added``: ``event_to_answer`` less the lead: what the path itself costs, both ways.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import time

from musebot.bench.stats import Probe, percentiles
from musebot.realtime import midi
from musebot.realtime.clock import now
from musebot.realtime.config import ServeConfig
from musebot.realtime.io import system as ports

log = logging.getLogger(__name__)


class _WsProbe:
    """A performer on the WebSocket, used synchronously; frames are timestamped as they are read."""

    def __init__(self, url: str) -> None:
        import aiohttp

        self._aiohttp = aiohttp
        self.loop = asyncio.new_event_loop()
        self.session = self.loop.run_until_complete(self._session())
        self.ws = self.loop.run_until_complete(self.session.ws_connect(url))
        self.heard: list[tuple[float, dict]] = []
        self.send({"type": "hello", "role": "performer"})

    async def _session(self):
        return self._aiohttp.ClientSession()

    def send(self, frame: dict) -> float:
        t = now()
        self.loop.run_until_complete(self.ws.send_str(json.dumps(frame)))
        return t

    def send_midi(self, msg: tuple[int, ...]) -> float:
        return self.send({"type": "midi", "data": list(msg)})

    def wait_note_on(self, pitch: int, timeout: float) -> float | None:
        """Read frames until musebot plays ``pitch``; returns when that frame was read."""
        end = now() + timeout
        while now() < end:
            try:
                message = self.loop.run_until_complete(self.ws.receive(timeout=max(0.001, end - now())))
            except asyncio.TimeoutError:
                return None
            t = now()
            frame = json.loads(message.data)
            if frame["type"] == "played" and midi.is_note_on(tuple(frame["data"])) and frame["data"][1] == pitch:
                return t
        return None

    def close(self) -> None:
        self.loop.run_until_complete(self.ws.close())
        self.loop.run_until_complete(self.session.close())
        self.loop.close()


def bench_paths(rounds: int) -> dict:
    """``rounds`` takeovers over each path, alternating, in one daemon; figures per path."""
    from musebot.realtime.daemon import Observer, ServeOptions
    from musebot.serve import Service

    config = ServeConfig(bpm=120, seed=1)
    daemon = Service(config, ServeOptions(answer="echo", port=0)).start()
    jack = ws = None  # closed below even when one of them cannot be made
    try:
        received: list[tuple[float, tuple]] = []  # what the listener got, with its timestamps
        sent: list[tuple[float, tuple]] = []  # what the scheduler sent to the MIDI output
        daemon.observers.append(Observer(on_input=lambda t, data: received.append((t, tuple(data))),
                                         on_sent=lambda _due, t, _output, msg, _tag: sent.append((t, msg))))
        jack = Probe("musebot-out:out", play_to="musebot:in")
        ws = _WsProbe(f"ws://127.0.0.1:{daemon.server.port}/ws")
        takeover = config.controls.takeover
        lead = config.takeover_lead_ms / 1000
        figures = {}
        samples = {path: {"in": [], "out": [], "event_to_answer": []} for path in ("midi", "websocket")}
        missing = {"midi": 0, "websocket": 0}
        time.sleep(0.2)
        for k in range(2 * rounds):
            path = "midi" if k % 2 == 0 else "websocket"
            play = jack.send if path == "midi" else ws.send_midi
            pitch = 48 + k % 36
            play((0xB0, midi.CC_SUSTAIN, 127))
            play((0x90, pitch, 90))
            time.sleep(0.02)
            play((0x80, pitch, 0))
            time.sleep(0.005)
            n_sent, n_heard = len(sent), len(jack.note_ons())
            t0 = play((0xB0, takeover, 127))
            if path == "midi":
                end, t1 = now() + 1.0, None
                while now() < end and t1 is None:
                    t1 = next((t for t, m in jack.note_ons()[n_heard:] if m[1] == pitch), None)
                    time.sleep(0.0002)
            else:
                t1 = ws.wait_note_on(pitch, 1.0)
            # The observers run after the send, so the client may hear a note before it is recorded. Looked
            # for also when nothing was heard, to tell a lost answer (sent, never heard) from a missing one.
            end, out_sent = now() + 0.2, None
            while out_sent is None and now() < end:
                out_sent = next((t for t, m in sent[n_sent:] if midi.is_note_on(m) and m[1] == pitch), None)
                time.sleep(0.0005)
            arrived = next((t for t, m in reversed(received) if m == (0xB0, takeover, 127)), None)
            if t1 is None or arrived is None or out_sent is None:
                # Which end lost it: the answer never sent (late, dropped), or sent and never heard.
                missing[path] += 1
                log.warning("%s round %d: controller %s, answer %s, heard %s", path, k,
                            "in" if arrived else "lost", "sent" if out_sent else "not sent",
                            "yes" if t1 else "no")
            else:
                samples[path]["in"].append(arrived - t0)
                samples[path]["out"].append(t1 - out_sent)
                samples[path]["event_to_answer"].append(t1 - t0)
            play((0xB0, takeover, 0))
            play((0xB0, midi.CC_SUSTAIN, 0))
            end = now() + 2.0
            while daemon.session.state != "idle" and now() < end:
                time.sleep(0.002)
            time.sleep(0.01)
        for path, values in samples.items():
            figures[path] = {name: percentiles(v) for name, v in values.items()}
            figures[path]["added"] = percentiles([v - lead for v in values["event_to_answer"]])
            figures[path]["missing"] = missing[path]
        figures["takeover_lead_ms"] = config.takeover_lead_ms
        figures["rounds_per_path"] = rounds
        return figures
    finally:
        if ws is not None:
            ws.close()
        if jack is not None:
            jack.close()
        daemon.close()


def run_ws_bench(args: argparse.Namespace) -> dict:
    """Start a private JACK server (unless ``--jack-server``), measure both paths, stop it."""
    # Synchronous, as the tests' servers and the soak's: an asynchronous dummy JACK on a shared VM misses
    # cycles, and a client that misses one loses its MIDI (an answer counted missing in a CI run).
    with ports.benchmark_jack(getattr(args, "jack_server", None), "musebot-bench-ws") as server:
        return {"jack": {"server": server, "driver": "dummy", "rate": 48000, "period": 64,
                         "sync": getattr(args, "jack_server", None) is None},
                "ws_vs_midi": bench_paths(getattr(args, "rounds", 100))}
