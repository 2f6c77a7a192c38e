"""The band's harmony in a session: a chord chart, the live chord tracker, or only the key.

``--harmony chart`` (the default when ``--chords``/``--chords-file`` gives a chart): the chart loops from bar 1
of the band's timebase (beat 0), and each part's pitch classes on each beat come from the chord in force there
(:mod:`harmony_parts`). ``--harmony follow``: the :class:`~musebot.realtime.chord_tracker.ChordTracker` hears the
musician (both hands, the bass note as root evidence) and names the chord of each beat when the beat is over;
the parts follow that chord from the next beat on (and, as far as they plan ahead, assume it holds).
``--harmony key``: the parts follow the key only, as without a chart.

Threads: the listener thread feeds notes and ticks (:meth:`Harmony.hear`, :meth:`Harmony.tick`), the network
API sets a chart or mode under the session lock, and the model threads read. Every change is one reference
swap of an immutable value (a :class:`Chart`, a tuple of tracked changes), and :attr:`Harmony.version` grows
with each, so a reader caches per version and never sees half a change.
"""

from __future__ import annotations

import math

from musebot.realtime.chord_tracker import ChordTracker
from musebot.realtime.chords import Chart, Chord, load_chart_file, parse_chart
from musebot.realtime.harmony_parts import (
    BASS_ARRIVAL_BEATS,
    ONSET_TOLERANCE,
    allowed_pitch_classes,
    strong_beat,
)

HARMONY_MODES = ("chart", "follow", "key")
FOLLOW_MEMORY = 64  # tracked chord changes kept (the looper asks about the last few bars)


def read_chart(text: str | None = None, path: str | None = None, beats_per_bar: float = 4.0) -> Chart | None:
    """The chart of ``--chords TEXT`` or ``--chords-file PATH`` (not both), or None when neither is given.
    Raises :class:`~musebot.realtime.chords.ChordSyntaxError` (the symbol, its bar and position) or
    :class:`~musebot.realtime.chords.ChartError` (empty, over :data:`~musebot.realtime.chords.MAX_BARS`
    bars, an unreadable file); both are ValueErrors."""
    if text is not None and path is not None:
        raise ValueError("give the chart once: --chords TEXT or --chords-file FILE, not both")
    if path is not None:
        return load_chart_file(path, beats_per_bar)
    if text is not None:
        return parse_chart(text, beats_per_bar)
    return None


def default_mode(mode: str | None, chart: Chart | None) -> str:
    """``--harmony``: as given, else chart when a chart is given, else key. Chart mode needs a chart."""
    if mode is None:
        return "chart" if chart is not None else "key"
    if mode not in HARMONY_MODES:
        raise ValueError(f"--harmony must be one of {', '.join(HARMONY_MODES)}, got {mode!r}")
    if mode == "chart" and chart is None:
        raise ValueError("--harmony chart needs a chart: --chords 'Dm7 | G7 | Cmaj7 | %' or --chords-file FILE")
    return mode


class Harmony:
    """What chord is in force on each beat, and what each part may play over it (module docstring)."""

    def __init__(self, chart: Chart | None = None, mode: str | None = None, beats_per_bar: float = 4.0) -> None:
        self.beats_per_bar = beats_per_bar
        self.chart = chart
        self.mode = default_mode(mode, chart)
        self.tracker = ChordTracker()
        self.tracked: tuple[tuple[float, Chord], ...] = ()  # (from beat, chord) of each tracked change
        self._beat_done: int | None = None  # the latest beat whose chord the tracker named
        self.version = 0

    # ---- what the parts read -------------------------------------------------------------------------
    @property
    def active(self) -> bool:
        """Whether chords (not just the key) shape the parts now: a chart, or a chord tracked so far."""
        return (self.mode == "chart" and self.chart is not None) or (self.mode == "follow" and bool(self.tracked))

    def chord_at(self, beat: float) -> tuple[Chord | None, float, float]:
        """The chord in force at ``beat`` (absolute) and its span's start and end (``inf`` when unknown):
        the chart's, or the tracked chord (assumed to hold until the tracker hears otherwise)."""
        if self.mode == "chart" and self.chart is not None:
            return self.chart.chord_at(beat)
        if self.mode == "follow":
            tracked = self.tracked
            for k in range(len(tracked) - 1, -1, -1):
                start, chord = tracked[k]
                if beat >= start - 1e-9:
                    end = tracked[k + 1][0] if k + 1 < len(tracked) else math.inf
                    return chord, start, end
        return None, -math.inf, math.inf

    def classes(self, role: str, beat: float, key_scale: frozenset[int] | None = None) -> frozenset[int] | None:
        """The pitch classes a note of ``role`` starting at ``beat`` may use (None: no limit); with no chord
        known, ``key_scale``."""
        chord, start, _ = self.chord_at(beat)
        if chord is None:
            return None if role == "drums" else key_scale
        strong = strong_beat(beat, start, self.beats_per_bar)
        if role == "bass" and start - ONSET_TOLERANCE <= beat < start + BASS_ARRIVAL_BEATS:
            strong = True  # the bass's first note over a new chord is one of its tones (it states the change)
        return allowed_pitch_classes(chord, role, strong, key_scale)

    def next_change(self, beat: float) -> float:
        """The beat of the next chord change after ``beat`` (``inf`` when none is known)."""
        return self.chord_at(beat)[2]

    def bar_spans(self, start: float, beats: float) -> tuple[tuple[float, float, Chord], ...]:
        """The ``(start, end, chord)`` spans of the bar from ``start`` (beats from the bar start), for the
        looper to move a recorded bar over changes; empty when no chord is known anywhere in it."""
        spans: list[tuple[float, float, Chord]] = []
        beat = start
        while beat < start + beats - 1e-9:
            chord, _, end = self.chord_at(beat)
            end = min(end, start + beats)
            if chord is None:
                return ()
            spans.append((beat - start, end - start, chord))
            beat = end
        return tuple(spans)

    # ---- the listener thread -------------------------------------------------------------------------
    def hear(self, t: float, pitch: int, velocity: int) -> None:
        """A note-on (``velocity`` > 0) or note-off of the musician at ``t`` seconds (not drums)."""
        if velocity > 0:
            self.tracker.note_on(t, pitch, velocity)
        else:
            self.tracker.note_off(t, pitch)

    def tick(self, beat: float, time_at) -> tuple[float, Chord] | None:
        """At a beat boundary past ``beat``'s last one, the tracker names the chord of the beat just over;
        returns ``(beat, chord)`` when the tracked chord changed (in force from ``beat``, the next beat).
        ``time_at`` maps a beat to seconds (the timebase's)."""
        b = math.floor(beat + 1e-9)
        if self._beat_done is None or b < self._beat_done:  # the first beat heard, or the clock went back
            self._beat_done = b
            return None
        if b == self._beat_done:
            return None
        self._beat_done = b
        start, end = time_at(b - 1), time_at(b)
        if start is None or end is None:
            return None
        chord = self.tracker.chord_for_beat(start, end)
        if chord is None or (self.tracked and _same(self.tracked[-1][1], chord)):
            return None
        self.tracked = (self.tracked + ((float(b), chord),))[-FOLLOW_MEMORY:]
        if self.mode == "follow":
            self.version += 1
        return float(b), chord

    # ---- what the API changes ------------------------------------------------------------------------
    def set(self, chart: Chart | None = None, mode: str | None = None, clear_chart: bool = False) -> None:
        """A new chart and/or mode (validated first: nothing changes when it is refused). A new chart without
        a mode is played (chart mode); ``clear_chart`` drops the chart (chart mode then falls back to key)."""
        new_chart = None if clear_chart else (chart or self.chart)
        if mode is None:  # a new chart is played; without a chart, chart mode falls back to the key
            mode = "chart" if chart is not None else (
                "key" if self.mode == "chart" and new_chart is None else self.mode)
        new_mode = default_mode(mode, new_chart)
        self.chart, self.mode = new_chart, new_mode
        self.version += 1

    def status(self, beat: float) -> dict:
        """Mode, chart, the bar (1-based within the chart) and chord now, and the tracked chord."""
        chord, _, _ = self.chord_at(beat)
        chart = self.chart
        tracked = self.tracked[-1][1].symbol if self.tracked else None
        return {"mode": self.mode, "chart": chart.text() if chart is not None else None,
                "bars": chart.bar_count if chart is not None else 0,
                "bar": chart.bar_at(beat) + 1 if chart is not None else None,
                "chord": chord.symbol if chord is not None else None, "tracked_chord": tracked}


def _same(a: Chord, b: Chord) -> bool:
    return a.root == b.root and a.quality == b.quality and a.bass == b.bass
