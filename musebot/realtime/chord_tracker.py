"""Live chord following: the chord of each beat, from the musician's notes (both hands).

Template matching over pitch-class weights, the classic chord-recognition scheme (Fujishima 1999, "Realtime
chord recognition of musical sound"; Pardo & Birmingham 2002, "Algorithms for chordal analysis"), on
symbolic notes:

* each note adds to its pitch class the share of the beat it sounds, scaled by its velocity; the lowest note
  of the beat (the bass, the root evidence of a left hand or a bass player) is weighted up;
* each candidate chord (12 roots x :attr:`TrackerConfig.qualities`) scores the weight on its tones, minus
  ``outside`` times the weight off them, minus ``missing`` for each of its tones that is absent (so a triad
  is not heard as a seventh chord, and a seventh chord is when its seventh sounds); a chord whose root is the
  bass gains ``root_bonus``;
* priors: the chord of the previous beat gains ``stay``, and ``held_stay`` more in proportion to the
  share of the beat's sound held over from before it (hysteresis: a chord changes with new attacks, so a
  passing note under a held voicing does not change it); chords inside the key (when one is given) gain
  ``in_key``;
* notes in the second half of the beat count ``late`` times as much as in the first (metric weight: passing
  notes fall off the beat).

A beat with no note keeps the previous chord. :meth:`ChordTracker.baseline` is plain template matching (no
bass weighting, no priors), the benchmark's reference. Pure and cheap: a few small numpy products per beat,
no threads, no I/O; call it from the listener thread.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, replace

import numpy as np

from musebot.realtime.chords import Chord, make_chord, parse_chord

HELD_EPS = 0.05  # a note struck this share of a beat before the window still counts as struck in it
QUALITIES = ("", "m", "7", "maj7", "m7", "m7b5", "dim", "dim7", "aug")
# How much a missing chord tone counts against a chord, by interval above the root: the root and third
# define the chord, a seventh or an altered fifth its quality; a perfect fifth is often left out.
IMPORTANCE = {0: 1.0, 3: 1.0, 4: 1.0, 6: 0.8, 7: 0.35, 8: 0.8, 9: 0.8, 10: 0.8, 11: 0.8}


@dataclass(frozen=True)
class TrackerConfig:
    """The tracker's weights (module docstring); the defaults were set on Bach chorales (``musebot.bench
    .chords``) and a few jazz voicings."""

    qualities: tuple[str, ...] = QUALITIES
    bass_weight: float = 0.6  # extra weight of the lowest note, as a share of its own
    root_bonus: float = 0.12  # score of a chord whose root is the bass
    outside: float = 0.7  # penalty per unit of weight off the chord's tones
    missing: float = 0.25  # penalty per absent chord tone (times its importance)
    present: float = 0.2  # a tone with this share of the weight counts as fully present
    stay: float = 0.05  # the previous beat's chord
    in_key: float = 0.04  # a chord inside the key, when one is known
    velocity: bool = True  # scale a note's weight by its velocity
    late: float = 0.3  # weight of the beat's second half (off-beat passing notes) against its first
    held_stay: float = 0.3  # more hysteresis, times the share of the beat's weight held from before it


class ChordTracker:
    """Hears note-ons and note-offs (seconds on one clock) and names the chord of each beat window."""

    def __init__(self, config: TrackerConfig | None = None, key_scale: frozenset[int] | None = None,
                 memory: int = 256) -> None:
        self.config = config = config or TrackerConfig()
        self.key_scale = key_scale
        self._held: dict[int, tuple[float, int]] = {}  # pitch -> (onset, velocity)
        self._done: deque[tuple[float, float, int, int]] = deque(maxlen=memory)  # (onset, end, pitch, vel)
        self.chord: Chord | None = None
        self.changes = 0
        self.history: deque[tuple[float, Chord]] = deque(maxlen=1024)  # (beat start time, chord) per change
        shapes = [parse_chord("C" + q) for q in config.qualities]
        rows, importance, self._labels = [], [], []
        for root in range(12):
            for quality, shape in zip(config.qualities, shapes):
                row = np.zeros(12)
                weight = np.zeros(12)
                for interval in shape.intervals:
                    row[(root + interval) % 12] = 1.0
                    weight[(root + interval) % 12] = IMPORTANCE.get(interval, 0.8)
                rows.append(row)
                importance.append(weight)
                self._labels.append((root, quality))
        self._templates = np.array(rows)
        self._importance = np.array(importance)
        self._roots = np.array([r for r, _ in self._labels])
        self._index = {label: k for k, label in enumerate(self._labels)}
        self._in_key_cache: dict[frozenset[int], np.ndarray] = {}
        self._held_share = 0.0  # share of the latest window's weight from notes struck before it

    @classmethod
    def baseline(cls, qualities: tuple[str, ...] = QUALITIES) -> ChordTracker:
        """Plain template matching: pitch-class durations only, no bass weighting, no hysteresis, no key."""
        return cls(replace(TrackerConfig(qualities=qualities), bass_weight=0.0, root_bonus=0.0, stay=0.0,
                           in_key=0.0, velocity=False, late=1.0, held_stay=0.0))

    def reset(self) -> None:
        """Forget every note and the current chord (a new song)."""
        self._held.clear()
        self._done.clear()
        self.chord = None

    def note_on(self, t: float, pitch: int, velocity: int = 80) -> None:
        """A key pressed at ``t`` seconds (velocity 0 is a release, as in MIDI)."""
        if velocity <= 0:
            self.note_off(t, pitch)
            return
        if pitch in self._held:  # re-struck without a release: the old note ends here
            self.note_off(t, pitch)
        self._held[pitch] = (t, velocity)

    def note_off(self, t: float, pitch: int) -> None:
        """A key released at ``t``; a release without a press is ignored."""
        held = self._held.pop(pitch, None)
        if held is not None:
            self._done.append((held[0], max(t, held[0]), pitch, held[1]))

    def weights(self, start: float, end: float) -> tuple[np.ndarray, int | None]:
        """Pitch-class weights of the window ``[start, end)`` (before normalisation) and its bass pitch class:
        the lowest note sounding at least a quarter of the window, else the lowest sounding at all."""
        length = max(end - start, 1e-6)
        middle = start + length / 2
        weights = np.zeros(12)
        lowest: list[tuple[bool, int]] = []
        held = 0.0
        notes = list(self._done) + [(on, end, p, v) for p, (on, v) in self._held.items()]
        for onset, stop, pitch, velocity in notes:
            overlap = min(stop, end) - max(onset, start)
            if overlap <= 0:
                continue
            share = overlap / length
            late = min(stop, end) - max(onset, middle)
            if late > 0:  # the second half of the beat, where passing notes fall, counts less
                share -= (1.0 - self.config.late) * late / length
            scale = velocity / 100 if self.config.velocity else 1.0
            weights[pitch % 12] += share * scale
            held += share * scale if onset < start - HELD_EPS * length else 0.0
            lowest.append((share < 0.25, pitch))
        while self._done and self._done[0][1] <= start and len(self._done) > 8:
            self._done.popleft()  # notes over before this window are not asked about again
        self._held_share = held / weights.sum() if lowest else 0.0
        if not lowest:
            return weights, None
        bass = min(lowest)[1]
        if self.config.bass_weight:
            weights[bass % 12] += self.config.bass_weight * weights[bass % 12]
        return weights, bass % 12

    def scores(self, weights: np.ndarray, bass: int | None) -> np.ndarray:
        """The score of every template (``12 x len(qualities)``, root-major) for one window's weights."""
        c = self.config
        w = weights / weights.sum()
        inside = self._templates @ w
        absent = np.clip((c.present - w) / c.present, 0.0, 1.0)
        scores = inside - c.outside * (1.0 - inside) - c.missing * (self._importance @ absent)
        if bass is not None and c.root_bonus:
            scores = scores + c.root_bonus * (self._roots == bass)
        if self.chord is not None and c.stay and self.chord.root is not None:
            k = self._index.get((self.chord.root, self.chord.quality))
            if k is not None:
                scores[k] += c.stay + c.held_stay * self._held_share
        if self.key_scale is not None and c.in_key:
            scores = scores + c.in_key * self._inside_key(self.key_scale)
        return scores

    def _inside_key(self, key: frozenset[int]) -> np.ndarray:
        if key not in self._in_key_cache:
            outside = np.array([pc not in key for pc in range(12)], float)
            self._in_key_cache[key] = (self._templates @ outside == 0).astype(float)
        return self._in_key_cache[key]

    def chord_for_beat(self, beat_start_t: float, beat_end_t: float) -> Chord | None:
        """The chord of the beat from ``beat_start_t`` to ``beat_end_t`` (seconds), from the notes heard so far
        (call it at the beat's end); the previous chord when nothing sounded, None before any note."""
        weights, bass = self.weights(beat_start_t, beat_end_t)
        if weights.sum() <= 0:
            return self.chord
        k = int(np.argmax(self.scores(weights, bass)))
        root, quality = self._labels[k]
        chord = make_chord(root, quality)
        if bass is not None and self.config.bass_weight and bass in chord.tones:
            chord = make_chord(root, quality, bass)  # an inversion (a passing bass note is no chord's bass)
        if self.chord is None or chord.root != self.chord.root or chord.quality != self.chord.quality:
            self.changes += self.chord is not None
            self.history.append((beat_start_t, chord))
        self.chord = chord
        return chord
