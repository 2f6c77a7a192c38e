"""``--clock follow``: the band's internal clock takes its tempo and beat from the musician's playing.

The :class:`~musebot.realtime.timebase.Timebase` stays stopped until the :class:`~musebot.realtime.tempo.
BeatTracker` has heard most of the musician's first bar; it then starts in step with them, bar 1 beat 0
being the beat of their first note, so the band comes in with their second bar. From then on, once a bar,
the clock moves towards the tracked tempo and beat, within limits (``max_drift`` of the tempo and
``max_shift`` of a beat per bar), so the band drifts with a musician who speeds up or slows down and one odd
phrase does not throw it. An estimate at another metrical level (half or double time) corrects the tempo
only; an unsure one (random playing) is ignored: the band keeps its time.
"""

from __future__ import annotations

import math

from musebot.realtime.tempo import BeatTracker
from musebot.realtime.timebase import Timebase


class MusicianClock:
    """Drives ``timebase`` from the musician's note-ons (listener thread; see the module docstring)."""

    def __init__(self, timebase: Timebase, bpm: float, max_drift: float = 0.08, max_shift: float = 0.25,
                 min_confidence: float = 0.25) -> None:
        self.timebase = timebase
        self.tracker = BeatTracker(bpm)
        self.max_drift = max_drift
        self.max_shift = max_shift
        self.min_confidence = min_confidence
        self.first_onset: float | None = None
        self.corrections = 0
        self._last_bar: int | None = None

    def hear(self, t: float, pitch: int, velocity: int) -> None:
        """A note-on of the musician at ``t``: start the clock or correct it (once a bar)."""
        if not math.isfinite(t):
            return
        est = self.tracker.add_onset(t, pitch, velocity)
        if self.first_onset is None:
            self.first_onset = t
        tb = self.timebase
        bar_beats = tb.meter.bar_beats
        if not tb.running:
            if est.n_onsets >= 3 and t - self.first_onset >= (bar_beats - 1) * est.period:
                first_beat = round(est.beat_at(self.first_onset))
                tb.set_tempo(est.bpm, t)
                tb.start(t, est.beat_at(t) - first_beat)
                self._last_bar = tb.bar_of(tb.beat_at(t))
            return
        bar = tb.bar_of(tb.beat_at(t))
        if bar == self._last_bar or est.confidence < self.min_confidence:
            return
        self._last_bar = bar
        self._correct(t, est.bpm, est.beat_at(t))

    def _correct(self, t: float, bpm: float, their_beat: float) -> None:
        tb = self.timebase
        level = round(math.log2(bpm / tb.bpm))  # heard in half or double time: the same pulse
        target = bpm / 2.0 ** level
        limited = min(max(target, tb.bpm * (1 - self.max_drift)), tb.bpm * (1 + self.max_drift))
        ours = tb.beat_at(t)
        shift = 0.0
        if level == 0:
            shift = (their_beat - ours + 0.5) % 1.0 - 0.5  # to their nearest beat
            shift = min(max(shift, -self.max_shift), self.max_shift)
        if abs(limited - tb.bpm) > 1e-6 or abs(shift) > 1e-6:
            tb.align(t, ours + shift, limited)
            self.corrections += 1
