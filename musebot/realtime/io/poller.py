"""Reading an rtmidi input from a thread of ours, never from a callback on JACK's real-time thread.

python-rtmidi runs a Python callback on the MIDI system's thread (JACK's real-time process thread).
Closing the client cancels that thread; if it was holding the interpreter lock or was half-way through
reference counting, the process hangs or its heap is corrupted (a segfault later). So musebot installs no
callback: :class:`MidiPoller` pulls ``get_message()`` from its own thread, which it stops and joins before
the port is closed.

Arrival times: RtMidi gives each message the time since the previous one (``delta``, measured by the MIDI
system when the message arrived). The poller chains those deltas, and clamps each estimate between the
last moment it saw the queue empty and now, so a burst keeps its exact spacing and no estimate is ever off
by more than one poll interval. "Seen empty" is the moment the poll *began*: a thread held up after an
empty poll (a busy machine, the interpreter lock) must not take the moment it runs again for one at which
nothing had arrived, or what arrived meanwhile would be squeezed together at that moment.

``heard_until`` is that moment as the poller's owner reads it: everything that arrived before it has been
handled. A watchdog that waits for a message (the MIDI clock's dropout check) asks it rather than the wall
clock, so a poller held up is not taken for a sender that stopped.

``nudge``: called from the poller's thread whenever nothing arrived for ``nudge_after_s`` (and again after as
long); the inputs use it to end a sysex RtMidi is stuck in (:class:`~musebot.realtime.io.inputs.SysexEnder`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from musebot.realtime.clock import now

log = logging.getLogger(__name__)

POLL_INTERVAL_S = 0.0005  # half a millisecond: well inside the 1 ms jitter budget, a few % of one core
NUDGE_AFTER_S = 0.05  # quiet this long, the poller calls its ``nudge`` (at most 20 times a second)


class MidiPoller:
    """Pulls messages from an rtmidi ``MidiIn`` and hands ``(arrival time, message)`` to ``handle``.

    ``handle`` runs on the poller's thread and must be quick (enqueue, or a few arithmetic steps). An
    exception in it is logged and the message skipped: a malformed message must not stop the input.
    """

    def __init__(self, midi_in, handle: Callable[[float, list[int]], None], name: str,
                 interval_s: float = POLL_INTERVAL_S, nudge: Callable[[], None] | None = None,
                 nudge_after_s: float = NUDGE_AFTER_S) -> None:
        self._midi_in = midi_in
        self._handle = handle
        self._nudge = nudge
        self.nudge_after_s = nudge_after_s
        self.name = name
        self.interval_s = interval_s
        self._stop = threading.Event()
        self.heard_until = now()  # everything that arrived before this has been handled (docstring)
        self._thread = threading.Thread(target=self._run, name=f"midi-in {name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        get_message = self._midi_in.get_message
        empty_at = now()  # the last moment the queue was seen empty: nothing waiting arrived before it
        previous: float | None = None
        active_at = empty_at  # the last message, or the last nudge
        while not self._stop.is_set():
            looked_at = now()
            try:
                item = get_message()
            except Exception as exc:  # noqa: BLE001 - a client of a dead server: wait for the reopen
                log.debug("polling %s: %s", self.name, exc)
                item = None
            if item is None:
                empty_at = self.heard_until = looked_at
                if self._nudge is not None and looked_at - active_at >= self.nudge_after_s:
                    active_at = looked_at
                    try:
                        self._nudge()
                    except Exception as exc:  # noqa: BLE001 - a dead server: the reopen makes a new one
                        log.debug("nudging %s: %s", self.name, exc)
                time.sleep(self.interval_s)
                continue
            active_at = looked_at
            message, delta = item
            t_now = now()
            t = t_now if previous is None else previous + max(float(delta), 0.0)
            t = min(max(t, empty_at), t_now)
            previous = t
            try:
                self._handle(t, message)
            except Exception:
                log.exception("input %s: cannot handle %r", self.name, message)

    def stop(self, timeout: float = 1.0) -> None:
        """Stop and join the thread; afterwards nothing of ours touches the port, so it can be closed."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)
