"""What the benchmarks share: percentiles of timing figures, and a JACK probe client that listens (and plays)."""

from __future__ import annotations

import threading

import numpy as np

from musebot.realtime import midi
from musebot.realtime.clock import now
from musebot.realtime.io import system as ports
from musebot.realtime.io.poller import MidiPoller


def percentiles(values_s: list[float]) -> dict:
    if not values_s:
        return {"n": 0}
    ms = np.asarray(values_s) * 1e3
    return {
        "n": int(ms.size), "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3), "max_ms": round(float(ms.max()), 3),
        "mean_ms": round(float(ms.mean()), 3),
    }


class Probe:
    """A JACK client: an ear on one port (arrival times) and optionally a key into another."""

    def __init__(self, listen_to: str, play_to: str | None = None) -> None:
        rtmidi = ports.rtmidi_module()
        self.heard: list[tuple[float, tuple[int, ...]]] = []
        self._lock = threading.Lock()
        self.ear = rtmidi.MidiIn(rtmidi.API_UNIX_JACK, name="bench-ear")
        self.ear.open_port(ports.wait_for_port(self.ear, listen_to), "in")
        self._poller = MidiPoller(self.ear, self._hear, "bench-ear")
        self.key = None
        if play_to:
            self.key = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, name="bench-key")
            self.key.open_port(ports.wait_for_port(self.key, play_to), "out")

    def _hear(self, t: float, message: list[int]) -> None:
        with self._lock:
            self.heard.append((t, tuple(message)))

    def send(self, msg: tuple[int, ...]) -> float:
        t = now()
        self.key.send_message(list(msg))
        return t

    def note_ons(self) -> list[tuple[float, tuple[int, ...]]]:
        with self._lock:
            return [(t, m) for t, m in self.heard if midi.is_note_on(m)]

    def close(self) -> None:
        self._poller.stop()
        for client in (self.ear, self.key):
            if client is not None:
                ports.close_client(client)
