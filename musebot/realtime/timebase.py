"""The session's tempo and bar grid: an internal clock, an external MIDI clock follower, MIDI clock out and
a metronome with count-in.

* :class:`Timebase` maps the one clock's seconds to beats: ``beat(t) = anchor_beat + (t - anchor_t) * bpm / 60``
  while running. Tempo changes re-anchor at the moment of change, so the phase never jumps.
* :class:`ClockFollower` follows MIDI clock (MIDI 1.0 spec, "System Real Time Messages": 0xF8 timing clock
  at 24 per quarter note, 0xFA start, 0xFB continue, 0xFC stop, 0xF2 song position pointer in sixteenths).
  The tempo is a least-squares line through the last ticks' arrival times (jitter averages out, an outlier
  tick is left out of the fit); a run of ticks that all leave the line the same way is a tempo jump and the
  fit restarts from them. When ticks stop coming while the transport runs (a dropout), the timebase goes on
  at the last tempo on its own clock and says so in the log; returning ticks are re-counted across the gap.
* :class:`ClockSender` and :class:`Metronome` schedule clock ticks and clicks a little ahead on the
  :class:`~musebot.realtime.scheduler.Scheduler`, so they are sent with its timing and telemetry.

The spec ``realtime-field.md`` §4 "Tempo" and §5 item 6 ask for MIDI clock in and out with start/stop and
song position. Ableton Link is not here yet: ``aalink`` (0.2.3) installs from PyPI as a binary wheel, but it
runs on an asyncio loop and needs a peer to be tested against; following it would be one more source
feeding :meth:`Timebase.align`, as the clock follower does.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from musebot.realtime.io.outputs import Output
from musebot.realtime.scheduler import Scheduler

log = logging.getLogger(__name__)

CLOCK, START, CONTINUE, STOP, SONG_POSITION = 0xF8, 0xFA, 0xFB, 0xFC, 0xF2
PPQ = 24  # MIDI clock ticks per quarter note
LOST_TICK_PERIODS = 1.75  # a gap this many periods long while locked is a lost tick, not a tempo change
TICKS_PER_SIXTEENTH = 6  # song position counts "MIDI beats" (sixteenths) of 6 clocks
CLOCK_TAG, METRONOME_TAG = "clock", "metronome"
MIN_PERIOD, MAX_PERIOD = 60.0 / (400 * PPQ), 60.0 / (20 * PPQ)  # tick periods of 400 and 20 bpm


@dataclass(frozen=True)
class Meter:
    """Beats per bar and the beat's note value (``4/4``, ``3/4``, ``6/8``); a beat is one quarter for the grid."""

    beats: int = 4
    unit: int = 4

    @classmethod
    def parse(cls, text: str) -> Meter:
        try:
            beats, unit = (int(part) for part in text.split("/"))
        except ValueError:
            raise ValueError(f"--meter must look like 4/4 or 3/4, got {text!r}") from None
        if not 1 <= beats <= 32 or unit not in (1, 2, 4, 8, 16):
            raise ValueError(f"--meter {text}: 1..32 beats over a unit of 1, 2, 4, 8 or 16")
        return cls(beats, unit)

    @property
    def bar_beats(self) -> float:
        """Length of a bar in quarter-note beats (the model's and MIDI clock's beat)."""
        return self.beats * 4 / self.unit

    def __str__(self) -> str:
        return f"{self.beats}/{self.unit}"


class Timebase:
    """Beats as a function of time (module docstring); thread-safe, every change bumps ``epoch``."""

    def __init__(self, bpm: float = 120.0, meter: Meter | None = None) -> None:
        if not 20 <= bpm <= 400:
            raise ValueError(f"--bpm must be between 20 and 400, got {bpm}")
        self.meter = meter or Meter()
        self._lock = threading.Lock()
        self._bpm = float(bpm)
        self._anchor = (0.0, 0.0)  # (seconds, beat)
        self._running = False
        self.epoch = 0  # bumped on every start, stop, locate or tempo change (planners re-plan on it)
        self.source = "internal"

    # ---- reading -------------------------------------------------------------------------------------
    @property
    def bpm(self) -> float:
        return self._bpm

    @property
    def running(self) -> bool:
        return self._running

    @property
    def seconds_per_beat(self) -> float:
        return 60.0 / self._bpm

    def beat_at(self, t: float) -> float:
        """Beat position at time ``t`` (the stopped position when not running)."""
        with self._lock:
            anchor_t, anchor_beat = self._anchor
            if not self._running:
                return anchor_beat
            return anchor_beat + (t - anchor_t) * self._bpm / 60.0

    def time_at(self, beat: float) -> float | None:
        """When ``beat`` comes at the current tempo; None while stopped."""
        with self._lock:
            if not self._running:
                return None
            anchor_t, anchor_beat = self._anchor
            return anchor_t + (beat - anchor_beat) * 60.0 / self._bpm

    def bar_of(self, beat: float) -> int:
        return math.floor(beat / self.meter.bar_beats + 1e-9)

    def bar_start(self, bar: int) -> float:
        return bar * self.meter.bar_beats

    # ---- changing ------------------------------------------------------------------------------------
    def start(self, t: float, beat: float = 0.0) -> None:
        with self._lock:
            self._anchor = (t, beat)
            self._running = True
            self.epoch += 1

    def stop(self, t: float) -> None:
        with self._lock:
            if self._running:
                anchor_t, anchor_beat = self._anchor
                self._anchor = (t, anchor_beat + (t - anchor_t) * self._bpm / 60.0)
            self._running = False
            self.epoch += 1

    def locate(self, beat: float, t: float) -> None:
        """Jump to ``beat`` at ``t`` (running or not)."""
        with self._lock:
            self._anchor = (t, beat)
            self.epoch += 1

    def set_tempo(self, bpm: float, t: float) -> None:
        """Tempo from ``t`` on, keeping the beat position at ``t``."""
        if not 20 <= bpm <= 400:
            raise ValueError(f"tempo must be between 20 and 400 bpm, got {bpm:.1f}")
        with self._lock:
            anchor_t, anchor_beat = self._anchor
            if self._running:
                self._anchor = (t, anchor_beat + (t - anchor_t) * self._bpm / 60.0)
            self._bpm = float(bpm)
            self.epoch += 1

    def align(self, t: float, beat: float, bpm: float) -> None:
        """Set anchor and tempo together (the clock follower's correction: one lock, one epoch)."""
        with self._lock:
            self._anchor = (t, beat)
            self._bpm = float(min(max(bpm, 20.0), 400.0))
            self.epoch += 1


class ClockFollower:
    """Follows MIDI clock into a :class:`Timebase` (module docstring). ``handle`` takes raw real-time
    messages with their arrival time; ``check`` (called often) notices dropouts."""

    def __init__(self, timebase: Timebase, window: int = 24, outlier: float = 0.35, jump_run: int = 6,
                 jump_ratio: float = 0.04, dropout_periods: float = 4.0) -> None:
        self.timebase = timebase
        self.window = window
        self.outlier = outlier
        self.jump_run = jump_run
        self.jump_ratio = jump_ratio
        self.dropout_periods = dropout_periods
        self.ticks = 0  # clock ticks counted since start / song position (the next tick's index)
        self.transport = False  # the external transport runs (start/continue seen, no stop)
        self.locked = False  # ticks are coming and the timebase follows them
        self._times: deque[tuple[float, int]] = deque(maxlen=window)
        self._period = 60.0 / (timebase.bpm * PPQ)
        self._last_tick = 0.0
        self._pending_start: float | None = None  # the beat the next tick marks, after start/continue
        self._owed = 0  # ticks counted across a gap that may still arrive late
        self.counts = {"ticks": 0, "outliers": 0, "jumps": 0, "dropouts": 0, "lost": 0, "starts": 0,
                       "stops": 0, "invalid": 0}

    @property
    def period(self) -> float:
        """Seconds per clock tick now believed."""
        return self._period

    def handle(self, t: float, msg: Sequence[int]) -> None:
        """One real-time message received at ``t``; anything else is counted as invalid and ignored."""
        if not msg:
            self.counts["invalid"] += 1
            return
        status = msg[0]
        if status == CLOCK:
            self._tick(t)
        elif status == START:
            self.counts["starts"] += 1
            self.ticks = 0
            self._begin(t)
            log.info("external clock: start")
        elif status == CONTINUE:
            self.counts["starts"] += 1
            self._begin(t)
            log.info("external clock: continue from beat %.2f", self.ticks / PPQ)
        elif status == STOP:
            self.counts["stops"] += 1
            self.transport = False
            self.locked = False
            self.timebase.stop(t)
            # A stop in the middle of a bar keeps the position: continue resumes there.
            self.timebase.locate(self.ticks / PPQ, t)
            log.info("external clock: stop at beat %.2f (bar %d)", self.ticks / PPQ,
                     self.timebase.bar_of(self.ticks / PPQ) + 1)
        elif status == SONG_POSITION and len(msg) == 3 and msg[1] < 128 and msg[2] < 128:
            sixteenths = msg[1] | msg[2] << 7
            self.ticks = sixteenths * TICKS_PER_SIXTEENTH
            self._times.clear()
            if not self.transport:
                self.timebase.locate(self.ticks / PPQ, t)
        else:
            self.counts["invalid"] += 1

    def _begin(self, t: float) -> None:
        # The next clock tick marks the position (MIDI 1.0: start is followed by the first clock).
        self.transport = True
        self._owed = 0
        self._times.clear()
        self._pending_start = self.ticks / PPQ
        self._last_tick = t

    def _tick(self, t: float) -> None:
        self.counts["ticks"] += 1
        if not self.transport:
            return  # a clock that runs while stopped only tells the tempo; the transport decides position
        gap = t - self._last_tick
        if self._owed and gap < 0.5 * self._period:
            # One of the ticks counted across the gap, arriving late (in a burst, or a delayed tick's
            # follower closer than half a period): already counted.
            self._owed -= 1
            self._last_tick = t
            return
        self._owed = 0
        if self._times and gap > self.dropout_periods * self._period:
            # Ticks sent while we heard nothing still moved the sender on: count them across the gap
            # (if they come after all, in a burst, they are not counted twice).
            missed = max(0, round(gap / self._period) - 1)
            self.ticks += missed
            self._owed = missed
            self._times.clear()
            log.warning("external clock: ticks back after %.0f ms; %d tick(s) counted across the gap",
                        gap * 1e3, missed)
        elif self.locked and len(self._times) >= 3 and gap > LOST_TICK_PERIODS * self._period:
            # A tick lost on the way (MIDI transports drop one now and then): the sender's beat went on,
            # so count it, or every later beat would come one tick early.
            missed = round(gap / self._period) - 1
            self.ticks += missed
            self._owed = missed
            self.counts["lost"] += missed
        index = self.ticks
        self.ticks += 1
        self._last_tick = t
        if self._pending_start is not None:
            self._pending_start = None
            self.timebase.start(t, index / PPQ)
            self.timebase.source = "external"
            self.locked = True
        self._times.append((t, index))
        self._fit(t, index)

    def _fit(self, t: float, index: int) -> None:
        if len(self._times) < 3:
            if not self.locked:
                # Ticks are back after a dropout: put this tick on its counted beat at the last tempo now;
                # the fit takes over from the third tick.
                self.locked = True
                self.timebase.align(t, index / PPQ, 60.0 / (self._period * PPQ))
                self.timebase.source = "external"
                log.warning("external clock: following it again at %.1f bpm", 60.0 / (self._period * PPQ))
            return
        times = np.array([p[0] for p in self._times])
        idx = np.array([p[1] for p in self._times], float)
        slope, intercept = np.polyfit(idx, times, 1)
        residual = times - (slope * idx + intercept)
        run = residual[-self.jump_run:]
        intervals = np.diff(times[-self.jump_run - 1:]) / np.maximum(np.diff(idx[-self.jump_run - 1:]), 1)
        jump_period = float(np.median(intervals))
        if (len(run) == self.jump_run and (np.all(run > 0) or np.all(run < 0))
                and abs(jump_period / self._period - 1) > self.jump_ratio
                and MIN_PERIOD <= jump_period <= MAX_PERIOD):
            # A tempo jump: the old ticks would drag the line; refit on the ticks since the jump.
            self.counts["jumps"] += 1
            keep = list(self._times)[-self.jump_run - 1:]
            self._times.clear()
            self._times.extend(keep)
            times, idx = times[-self.jump_run - 1:], idx[-self.jump_run - 1:]
            slope, intercept = np.polyfit(idx, times, 1)
            residual = times - (slope * idx + intercept)
            log.info("external clock: tempo jump to %.1f bpm", 60.0 / (slope * PPQ))
        good = np.abs(residual) <= self.outlier * self._period
        if not good[-1]:
            self.counts["outliers"] += 1
        if good.sum() >= 3 and not good.all():
            slope, intercept = np.polyfit(idx[good], times[good], 1)
        if not MIN_PERIOD <= slope <= MAX_PERIOD:
            # A burst of ticks (a sender catching up) or a stall fits no tempo musebot can play: keep the
            # last tempo and let the next ticks decide.
            self.counts["outliers"] += 1
            return
        self._period = float(slope)
        if not self.locked:
            self.locked = True
            log.warning("external clock: following it again at %.1f bpm", 60.0 / (slope * PPQ))
        # The line's time of this tick, not its jittered arrival, anchors the beat.
        self.timebase.align(float(slope * index + intercept), index / PPQ, 60.0 / (slope * PPQ))
        self.timebase.source = "external"

    def check(self, t: float, heard_until: float | None = None) -> None:
        """Notice a dropout: ticks overdue while the transport runs; then the timebase freewheels.

        ``heard_until``: the input has been read up to then (its poller's ``heard_until``; default ``t``).
        Ticks are overdue only if they had not arrived by then: a reader held up for a while (a busy
        machine) has them waiting in its queue, and that is no dropout of the sender's."""
        looked = t if heard_until is None else min(t, heard_until)
        if self.locked and self.transport and looked - self._last_tick > self.dropout_periods * self._period:
            self.locked = False
            self.counts["dropouts"] += 1
            self.timebase.source = "freewheel"
            log.warning("external clock lost (no tick for %.0f ms): following musebot's own clock at %.1f bpm",
                        (looked - self._last_tick) * 1e3, self.timebase.bpm)


class ClockSender:
    """Sends MIDI clock (24 per beat) and start/stop derived from a :class:`Timebase`, scheduled ahead."""

    def __init__(self, timebase: Timebase, scheduler: Scheduler, outputs: Sequence[Output],
                 lookahead_s: float = 0.1) -> None:
        self.timebase = timebase
        self.scheduler = scheduler
        self.outputs = list(outputs)
        self.lookahead_s = lookahead_s
        self._next_tick: int | None = None
        self._epoch = -1
        self.sent_start = False

    def pump(self, t: float) -> None:
        """Schedule the ticks due before ``t + lookahead``; after a locate or start, re-schedule them."""
        tb = self.timebase
        if not tb.running:
            if self.sent_start:
                self.scheduler.cancel(CLOCK_TAG, release=False)
                self.scheduler.schedule_many([(t, o, (STOP,)) for o in self.outputs], CLOCK_TAG)
                self.sent_start = False
            self._next_tick = None
            return
        if self._epoch != tb.epoch and self._next_tick is not None:
            # Tempo or position changed: ticks already queued for later than now may be off; redo them.
            self.scheduler.cancel(CLOCK_TAG, release=False)
            self._next_tick = max(self._next_tick - round(self.lookahead_s / (tb.seconds_per_beat / PPQ)) - 1,
                                  math.ceil(tb.beat_at(t) * PPQ))
        self._epoch = tb.epoch
        if self._next_tick is None:
            # A count-in (negative beats) is musebot's own: the DAW starts with bar 1.
            self._next_tick = max(math.ceil(tb.beat_at(t) * PPQ - 1e-9), 0)
            position = max(self._next_tick, 0) // TICKS_PER_SIXTEENTH
            first = tb.time_at(self._next_tick / PPQ)
            messages = [(SONG_POSITION, position & 0x7F, position >> 7), (CONTINUE if position else START,)]
            self.scheduler.schedule_many([(first - 0.001, o, m) for o in self.outputs for m in messages],
                                         CLOCK_TAG)
            self.sent_start = True
        items = []
        while True:
            due = tb.time_at(self._next_tick / PPQ)
            if due is None or due > t + self.lookahead_s:
                break
            if due >= t:
                items.extend((due, o, (CLOCK,)) for o in self.outputs)
            self._next_tick += 1
        if items:
            self.scheduler.schedule_many(items, CLOCK_TAG)


class Metronome:
    """Clicks on the GM drum channel: a high wood block on each bar's first beat, a low one on the others.

    ``count_in_bars`` bars of clicks are played before beat 0 even when ``enabled`` is off (a count-in).
    """

    HIGH, LOW, CHANNEL = 76, 77, 9

    def __init__(self, timebase: Timebase, scheduler: Scheduler, outputs: Sequence[Output],
                 enabled: bool = False, count_in_bars: int = 0, velocity: int = 90) -> None:
        self.timebase = timebase
        self.scheduler = scheduler
        self.outputs = list(outputs)
        self.enabled = enabled
        self.count_in_bars = count_in_bars
        self.velocity = velocity
        self._next_beat: int | None = None
        self.clicks = 0

    def pump(self, t: float, lookahead_s: float = 0.1) -> None:
        tb = self.timebase
        if not tb.running:
            self._next_beat = None
            return
        if self._next_beat is None:
            self._next_beat = math.ceil(tb.beat_at(t) - 1e-9)
        items = []
        while True:
            due = tb.time_at(self._next_beat)
            if due is None or due > t + lookahead_s:
                break
            counting_in = self._next_beat < 0 and -self._next_beat <= self.count_in_bars * tb.meter.bar_beats
            if due >= t and (self.enabled or counting_in):
                downbeat = self._next_beat % tb.meter.bar_beats == 0
                pitch = self.HIGH if downbeat else self.LOW
                for output in self.outputs:
                    items.append((due, output, (0x90 | self.CHANNEL, pitch, self.velocity)))
                    items.append((due + 0.05, output, (0x80 | self.CHANNEL, pitch, 0)))
                self.clicks += 1
            self._next_beat += 1
        if items:
            self.scheduler.schedule_many(items, METRONOME_TAG)
