"""Closing MIDI inputs while MIDI floods in: safe at any moment, because no Python runs on JACK's thread.

With a callback, JACK's real-time thread ran Python; closing the client cancelled that thread, which could
die holding the interpreter lock (a hang) or half-way through reference counting (a segfault later). Here
a flood of notes and clock ticks pours into musebot's inputs while they are opened and closed 200 times.
"""

from __future__ import annotations

import threading
import time

import pytest

from musebot.realtime.io import system as ports
from musebot.realtime.io.inputs import ClockInput, RtMidiInput
from musebot.realtime.timebase import ClockFollower, Timebase
from tests._jack import jack_server, requires_jackd, wait_for_port

pytestmark = [pytest.mark.jack, requires_jackd]


class Flood:
    """A virtual output ``flood:out`` sending about 10,000 messages a second (notes, CCs, clock, junk)."""

    def __init__(self) -> None:
        import rtmidi

        self.out = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, name="flood")
        self.out.open_virtual_port("out")
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        pitch = 40
        while not self._stop.is_set():
            for _ in range(10):
                pitch = 40 + (pitch - 39) % 40
                self.out.send_message([0x90, pitch, 100])
                self.out.send_message([0xF8])
                self.out.send_message([0x80, pitch, 0])
                self.out.send_message([0xB0, 21, pitch])
                self.sent += 4
            time.sleep(0.004)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.out.close_port()
        self.out.delete()


def test_inputs_closed_200_times_under_a_flood_never_hang_or_crash():
    with jack_server("-close"):
        api = ports.api_id("jack")
        flood = Flood()
        try:
            probe = RtMidiInput(api, "musebot-probe", None)
            wait_for_port(probe._midi_in, "flood:out")
            probe.close()
            received = 0
            for cycle in range(200):
                if cycle % 2 == 0:
                    port = RtMidiInput(api, f"musebot-in{cycle}", "flood:out")
                    time.sleep(0.005 + (cycle % 5) * 0.002)  # close at a different moment each time
                    received += port.queue.qsize()
                    port.close()
                else:
                    follower = ClockFollower(Timebase())
                    clock = ClockInput(api, follower, "flood:out", client_name=f"musebot-clock{cycle}")
                    time.sleep(0.005 + (cycle % 5) * 0.002)
                    clock.close()
            assert flood.sent > 10_000
            assert received > 0  # the inputs really were reading the flood when they were closed
        finally:
            flood.close()
