"""The scheduler: a heap of timed MIDI messages sent from one thread at their absolute deadlines.

The pattern of python-rtmidi's sequencer example: deadlines are absolute times on the one clock, so an
error in one wait never carries into the next (no drift); the thread sleeps until about ``spin_s`` before
a deadline and busy-waits the rest, because ``time.sleep`` alone oversleeps by a scheduler tick. A message
sent later than ``late_s`` is counted and logged; a note-on later than ``drop_late_s`` is not sent at all
(with its note-off) rather than bunched with the notes that follow it (Aria's demo drops notes > 100 ms
late, spec ``realtime-field.md`` §3.3).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from musebot.realtime import midi
from musebot.realtime.clock import now, sleep_until
from musebot.realtime.io.outputs import Output

log = logging.getLogger(__name__)

SendHook = Callable[[float, float, Output, midi.Message, "str | None"], None]
# ("add" | "cancel" | "clear", [(due, output, message)], tag): what is planned ahead, for observers.
PlanHook = Callable[[str, list, "str | None"], None]


@dataclass(order=True)
class Timed:
    """One message due at ``due`` (seconds on the clock) on ``output``; ``tag`` names what it belongs to."""

    due: float
    seq: int
    output: Output = field(compare=False)
    msg: midi.Message = field(compare=False)
    tag: str | None = field(compare=False, default=None)


ERRORS_KEPT = 20_000  # ``sent - due`` of this many latest messages (about 10 minutes of a busy band)


@dataclass
class SchedulerStats:
    """Lateness accounting: ``errors`` holds ``sent - due`` (seconds) of the latest sent messages."""

    sent: int = 0
    late: int = 0
    dropped_late: int = 0
    cancelled: int = 0
    max_late_s: float = 0.0
    # The status's percentiles read these; 100,000 took a soak's busiest mode 36-48 minutes (3 MB) to fill.
    errors: deque = field(default_factory=lambda: deque(maxlen=ERRORS_KEPT))


class Scheduler:
    """Sends :class:`Timed` messages at their deadlines from its own thread.

    ``on_send(due, sent, output, msg, tag)`` is called after each send (session recording, benchmarks);
    it runs on the scheduler thread and must be quick.
    """

    def __init__(
        self,
        late_s: float = 0.002,
        drop_late_s: float = 0.1,
        spin_s: float = 0.001,
        on_send: SendHook | None = None,
        errors_kept: int = ERRORS_KEPT,
    ) -> None:
        self.late_s = late_s
        self.drop_late_s = drop_late_s
        self.spin_s = spin_s
        self.on_send = on_send
        self.on_plan: PlanHook | None = None
        self.stats = SchedulerStats(errors=deque(maxlen=errors_kept))
        self._heap: list[Timed] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._running = False
        self._thread: threading.Thread | None = None
        # (output id, channel, pitch, tag) of note-ons dropped as too late, so their note-offs are skipped.
        self._dropped: set[tuple[int, int, int, str | None]] = set()
        self._last_late_log = 0.0
        self._late_since_log = 0

    def start(self) -> Scheduler:
        self._running = True
        self._thread = threading.Thread(target=self._run, name="musebot-scheduler", daemon=True)
        self._thread.start()
        return self

    @property
    def native_id(self) -> int | None:
        """The OS id of the sending thread (to raise its priority), None before ``start``."""
        return self._thread.native_id if self._thread is not None else None

    def stop(self, timeout: float = 1.0) -> None:
        """Stop the thread; pending messages stay in the heap (the caller panics the outputs)."""
        with self._cond:
            self._running = False
            self._cond.notify()
        if self._thread:
            self._thread.join(timeout)

    def schedule(self, due: float, output: Output, msg: midi.Message, tag: str | None = None) -> None:
        self.schedule_many([(due, output, msg)], tag)

    def schedule_many(
        self, items: Iterable[tuple[float, Output, midi.Message]], tag: str | None = None
    ) -> None:
        """Queue several ``(due, output, message)`` at once (one wake-up of the thread)."""
        items = list(items)
        with self._cond:
            for due, output, msg in items:
                heapq.heappush(self._heap, Timed(due, next(self._seq), output, msg, tag))
            self._cond.notify()
        if self.on_plan:
            self.on_plan("add", items, tag)

    def cancel(self, tag: str, release: bool = True, withdrawn: list | None = None) -> int:
        """Remove every pending message tagged ``tag``; with ``release``, send at once the note-offs of its
        notes already sounding (barge-in: the answer stops and lets go of its keys). Returns the count; a
        ``withdrawn`` list gets ``(due, output, msg)`` of each message removed (what had not gone out yet)."""
        with self._cond:
            keep, gone = [], []
            for item in self._heap:
                (gone if item.tag == tag else keep).append(item)
            heapq.heapify(keep)
            self._heap = keep
            self.stats.cancelled += len(gone)
            # A dropped note-on whose note-off is withdrawn here must not swallow a later note-off.
            self._dropped = {key for key in self._dropped if key[3] != tag}
        if withdrawn is not None:
            withdrawn += [(item.due, item.output, item.msg) for item in gone]
        if self.on_plan and gone:
            self.on_plan("cancel", [(item.due, item.output, item.msg) for item in gone], tag)
        if release:
            for item in gone:
                msg = item.msg
                if midi.is_note_off(msg) and item.output.ledger.is_sounding(midi.channel_of(msg), msg[1]):
                    item.output.send(msg)
        return len(gone)

    def pending(self, tag: str | None = None) -> int:
        with self._cond:
            return sum(1 for item in self._heap if tag is None or item.tag == tag)

    def clear(self) -> int:
        """Drop everything pending (panic); returns the count."""
        with self._cond:
            count = len(self._heap)
            self._heap.clear()
            self._dropped.clear()  # no note-off of theirs is coming any more
            self.stats.cancelled += count
        if self.on_plan:
            self.on_plan("clear", [], None)
        return count

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._running:
                    return
                if not self._heap:
                    self._cond.wait()
                    continue
                wait = self._heap[0].due - now() - self.spin_s
                if wait > 0:
                    # Woken early by a new, possibly earlier message: look at the heap again.
                    self._cond.wait(wait)
                    continue
                item = heapq.heappop(self._heap)
            sleep_until(item.due, self.spin_s)
            try:
                self._dispatch(item)
            except Exception:  # never let one bad message stop the music
                log.exception("scheduler: failed to send %s to %s", item.msg, item.output)

    def _dispatch(self, item: Timed) -> None:
        msg = item.msg
        lateness = now() - item.due
        key = (id(item.output), midi.channel_of(msg), msg[1] if len(msg) > 1 else -1, item.tag)
        if midi.is_note_on(msg) and lateness > self.drop_late_s:
            self.stats.dropped_late += 1
            with self._cond:
                self._dropped.add(key)
            log.warning("scheduler: dropped %s, %.1f ms late, on %s", msg, lateness * 1e3, item.output.name)
            return
        if midi.is_note_off(msg) and key in self._dropped:
            with self._cond:
                self._dropped.discard(key)
            return
        item.output.send(msg)
        sent = now()
        error = sent - item.due
        stats = self.stats
        stats.sent += 1
        stats.errors.append(error)
        if error > self.late_s:
            stats.late += 1
            stats.max_late_s = max(stats.max_late_s, error)
            self._late_since_log += 1
            if sent - self._last_late_log > 1.0:
                log.warning(
                    "scheduler: %d message(s) late by more than %.1f ms (latest %.1f ms, worst %.1f ms)",
                    self._late_since_log, self.late_s * 1e3, error * 1e3, stats.max_late_s * 1e3,
                )
                self._last_late_log = sent
                self._late_since_log = 0
        if self.on_send:
            self.on_send(item.due, sent, item.output, msg, item.tag)
