"""The accompaniment plan's pieces: its notes (:class:`Item`, kept in step order by :func:`insert`), and
whether the planner guesses the musician's next notes, and when it re-plans to hear them (:class:`Guessing`).

A plan that guesses the musician is re-made at each note the guess did not foresee: the parts after the
guess were conditioned on a wrong future. With a model that rarely guesses right (the shipped one guessed 0
of 24 notes of an eighth-note melody), that re-plan came every eighth note, while the plan's first part note
lay a beat and a half ahead, past the commit horizon: the parts were dropped before they could be fixed
(3 notes in 12 beats, none at all on a loaded CI machine).

So after ``MISSES_TO_PAUSE`` misses in a row the planner stops guessing for ``PAUSE_BARS`` bars, then tries
again. Meanwhile (and while degraded) the plan stands when the musician plays. Not degraded, it is re-made
to hear her notes once the playhead has moved far enough that the plan's notes are fixed (the plan's reach
less the commit horizon, at least a horizon: 2 beats by default), so the parts sound without a gap and few
planned notes are thrown away.

Notes fixed ahead are timed when they are fixed; a clock that speeds up or slows down moves their beats.
:class:`Retiming` says when to time them again: once the furthest of them would move by more than
``RESCHEDULE_S`` (following a tempo ramp, re-timing only at each 1 % change of tempo left part notes up to
2 % of a beat off the drummer's grid). :func:`to_retime` says which: only the notes whose messages were
still waiting in the scheduler, so a note about to sound is neither lost nor played twice.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from musebot.realtime import midi

log = logging.getLogger(__name__)

MISSES_TO_PAUSE = 4  # guesses missed in a row before the planner stops guessing
PAUSE_BARS = 2  # for this many bars, then it tries again
RESCHEDULE_S = 0.001  # re-time the fixed part notes once the furthest would move by more than this


@dataclass
class Item:
    """One note of the context: grid step (1/16 beat from beat 0), track, channel, pitch, velocity, length."""

    step: int
    track: int
    channel: int
    pitch: int
    velocity: int
    duration: int
    part: str | None = None  # None: the musician's


class Guessing:
    """The planner's record of its guesses; all positions in grid steps (1/16 beat)."""

    def __init__(self) -> None:
        self.misses_in_row = 0
        self.paused_until = -1.0  # no guessing before this step
        self.heard = False  # a note of the musician came after the plan began
        self.pauses = 0

    def active(self, playhead: float) -> bool:
        return playhead >= self.paused_until

    def hit(self) -> None:
        self.misses_in_row = 0

    def miss(self, playhead: float, bar_steps: float) -> None:
        """A guess missed; the ``MISSES_TO_PAUSE``-th in a row pauses guessing for ``PAUSE_BARS`` bars."""
        self.misses_in_row += 1
        if self.misses_in_row >= MISSES_TO_PAUSE:
            self.misses_in_row = 0
            self.paused_until = playhead + PAUSE_BARS * bar_steps
            self.pauses += 1
            level = logging.INFO if self.pauses == 1 else logging.DEBUG
            log.log(level, "accompany: %d guesses of the musician missed in a row; the parts are planned "
                    "without guessing for %d bars, hearing the musician every few beats", MISSES_TO_PAUSE,
                    PAUSE_BARS)

    def replan_to_hear(self, playhead: float, plan_began: float, every_steps: float) -> bool:
        """Not guessing: whether the plan should be re-made now to hear the notes played since it began."""
        return self.heard and playhead >= plan_began + every_steps


def insert(items: list[Item], item: Item) -> None:
    """Insert keeping step order (stable: equal steps keep arrival order)."""
    i = len(items)
    while i > 0 and items[i - 1].step > item.step:
        i -= 1
    items.insert(i, item)


class Retiming:
    """When the clock has moved the fixed part notes (module docstring): the timebase's line as it was
    when they were last timed, compared with its line now at the furthest beat a fixed note can lie on."""

    def __init__(self) -> None:
        self._seen: tuple[float, float, float] | None = None  # (beat, time, seconds per beat)

    def moved(self, timebase, far_beat: float) -> bool:
        t = timebase.time_at(far_beat)
        if t is None:
            return False
        if self._seen is not None:
            beat, then, spb = self._seen
            if abs(then + (far_beat - beat) * spb - t) <= RESCHEDULE_S:
                return False
        first = self._seen is None
        self._seen = (far_beat, t, timebase.seconds_per_beat)
        return not first


def to_retime(items: Iterable[Item], withdrawn: list, channels: dict[str, int]) -> list[tuple[Item, bool]]:
    """The part notes to schedule again once their waiting messages were ``withdrawn`` from the scheduler
    (``(due, output, msg)``): ``(item, True)`` for a note whose note-on had not gone out (on and off again),
    ``(item, False)`` for a sounding one (its note-off). What waits of a key belongs to its latest notes, so
    they are matched latest first; a note whose messages all went out is left alone."""
    ons, offs = Counter(), Counter()
    # One message per output: a note's messages to several outputs share their due time.
    for on, key, _ in {(midi.is_note_on(msg), (msg[0] & 0x0F, msg[1]), due) for due, _, msg in withdrawn
                       if midi.is_note_on(msg) or midi.is_note_off(msg)}:
        (ons if on else offs)[key] += 1
    again = []
    for item in sorted(items, key=lambda i: i.step, reverse=True):
        key = (channels.get(item.part, -1), item.pitch)
        if ons[key] > 0:
            ons[key] -= 1
            offs[key] -= 1
            again.append((item, True))
        elif offs[key] > 0:
            offs[key] -= 1
            again.append((item, False))
    return again
