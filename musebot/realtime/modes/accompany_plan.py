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
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

log = logging.getLogger(__name__)

MISSES_TO_PAUSE = 4  # guesses missed in a row before the planner stops guessing
PAUSE_BARS = 2  # for this many bars, then it tries again


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
