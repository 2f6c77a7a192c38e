"""The input poller's arrival times when its thread is held up (a busy machine, the interpreter lock).

The port here is an in-memory stand-in for rtmidi's ``MidiIn`` (a queue of ``(message, delta)``, as
``get_message()`` returns them); the poller over a real JACK input is in test_input_close.py and every
JACK test that plays into musebot.
"""

from __future__ import annotations

import threading
import time
from collections import deque

import numpy as np

from musebot.realtime.clock import now
from musebot.realtime.io.poller import MidiPoller

CLOCK = [0xF8]


class HeldUpInput:
    """``get_message()`` over an in-memory queue. Once ``hold_s`` is set, the next poll that finds the queue
    empty keeps its caller that long before it returns: the poller's thread held up between looking at
    the queue and anything after, while messages go on arriving."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: deque[tuple[list[int], float]] = deque()
        self._last: float | None = None
        self.hold_s = 0.0
        self.held = threading.Event()
        self.held_until = 0.0

    def arrive(self, message: list[int]) -> float:
        """A message arrives now (RtMidi's delta: the time since the previous one); returns the moment."""
        with self._lock:
            t = now()
            self._queue.append((message, 0.0 if self._last is None else t - self._last))
            self._last = t
            return t

    def get_message(self):
        with self._lock:
            item = self._queue.popleft() if self._queue else None
            hold, self.hold_s = (self.hold_s, 0.0) if item is None else (0.0, self.hold_s)
        if hold:
            self.held.set()
            time.sleep(hold)
            self.held_until = now()
        return item


def wait_for(predicate, timeout: float = 5.0) -> None:
    end = now() + timeout
    while not predicate():
        assert now() < end, "timed out"
        time.sleep(0.001)


def test_what_arrives_while_the_poller_is_held_up_keeps_its_spacing_and_is_not_heard_before_it_is_read():
    port = HeldUpInput()
    heard: list[float] = []
    poller = MidiPoller(port, lambda t, message: heard.append(t), "held-up")
    try:
        port.arrive(CLOCK)
        wait_for(lambda: len(heard) == 1)
        port.hold_s = 0.3
        assert port.held.wait(5.0)
        looked = poller.heard_until
        arrivals = []
        for _ in range(8):  # every 20 ms while the poller is held up
            time.sleep(0.02)
            arrivals.append(port.arrive(CLOCK))
        # Nothing that arrived during the hold counts as heard: the poller last saw the queue empty before it.
        assert poller.heard_until == looked < arrivals[0]
        wait_for(lambda: len(heard) == 9)
        wait_for(lambda: poller.heard_until > arrivals[-1])
    finally:
        poller.stop()
    held_up = [i for i, t in enumerate(arrivals) if t < port.held_until]
    assert len(held_up) >= 4  # the machine may delay this test's own sleeps too: most arrive during the hold
    times = np.array(heard[1:])[held_up]
    # Each one at its own arrival, spaced as it came (RtMidi's deltas), not squeezed together at the moment
    # the poller ran again (before the fix: all within a millisecond of port.held_until).
    spacing, arrived_spacing = np.diff(times), np.diff(np.array(arrivals)[held_up])
    assert np.allclose(spacing, arrived_spacing, atol=1e-6), (spacing, arrived_spacing)
    assert times[0] < port.held_until - 0.05
