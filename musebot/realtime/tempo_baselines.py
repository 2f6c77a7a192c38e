"""Reference tempo trackers to compare :class:`musebot.realtime.tempo.BeatTracker` with.

- :class:`FixedTempo`: what call mode does without following: always the initial bpm, the beat phase at the
  call's first onset.
- :class:`IOIClustering`: tempo induction by inter-onset-interval clustering after Dixon (2001, "Automatic
  extraction of tempo and beat from expressive performances", JNMR 30(1), section 3.1): the intervals
  between all pairs of onsets up to ``max_ioi_s`` are clustered (a new cluster when an interval is more
  than ``cluster_width_s`` from every cluster mean); each cluster scores its size plus the sizes of
  clusters at integer multiples and submultiples of its interval (weighted by the relationship, as Dixon's
  f(d)); the best cluster's interval is the beat, folded by octaves into ``beat_range_bpm``. The phase is
  that of the simplified beat-tracking agent (one per early onset) whose grid catches most onsets.

Both have the tracker's interface: ``add_onset``, ``estimate``, ``reset_call``.
"""

from __future__ import annotations

import math

import numpy as np

from musebot.realtime.tempo import TempoEstimate


class FixedTempo:
    """Always ``initial_bpm``, beat phase at the first onset of the call."""

    def __init__(self, initial_bpm: float = 120.0) -> None:
        self.initial_bpm = min(300.0, max(30.0, initial_bpm))
        self._first: float | None = None
        self._n = 0

    def add_onset(self, t: float, pitch: int = 60, velocity: int = 64, duration: float | None = None
                  ) -> TempoEstimate:
        if math.isfinite(t):
            self._first = t if self._first is None else min(self._first, t)
            self._n += 1
        return self.estimate()

    def estimate(self) -> TempoEstimate:
        return TempoEstimate(self.initial_bpm, self._first or 0.0, 0.0, self._n)

    def reset_call(self) -> None:
        self._first, self._n = None, 0


class IOIClustering:
    """Dixon-style IOI clustering tempo induction with a simple phase agent (see the module docstring)."""

    def __init__(self, initial_bpm: float = 120.0, cluster_width_s: float = 0.025, max_ioi_s: float = 2.5,
                 beat_range_bpm: tuple[float, float] = (60.0, 180.0), chord_window_s: float = 0.045) -> None:
        self.initial_bpm = min(300.0, max(30.0, initial_bpm))
        self.width = cluster_width_s
        self.max_ioi = max_ioi_s
        self.range = beat_range_bpm
        self.chord = chord_window_s
        self._times: list[float] = []

    def add_onset(self, t: float, pitch: int = 60, velocity: int = 64, duration: float | None = None
                  ) -> TempoEstimate:
        if math.isfinite(t) and not (self._times and abs(t - self._times[-1]) <= self.chord):
            self._times.append(t)
            self._times.sort()
        return self.estimate()

    def reset_call(self) -> None:
        self._times = []

    def _tempo(self) -> float:
        times = self._times
        clusters: list[list[float]] = []  # [sum, count]
        for i in range(len(times)):
            for j in range(i + 1, len(times)):
                ioi = times[j] - times[i]
                if ioi > self.max_ioi:
                    break
                for c in clusters:
                    if abs(c[0] / c[1] - ioi) < self.width:
                        c[0] += ioi
                        c[1] += 1
                        break
                else:
                    clusters.append([ioi, 1])
        if not clusters:
            return self.initial_bpm
        means = np.array([c[0] / c[1] for c in clusters])
        sizes = np.array([c[1] for c in clusters], dtype=float)
        scores = np.zeros(len(means))
        for i, m in enumerate(means):
            for j, other in enumerate(means):
                ratio = other / m if other >= m else m / other
                n = round(ratio)
                if 1 <= n <= 8 and abs(other - n * m if other >= m else m - n * other) < self.width:
                    # Dixon's f(d): 6 - d for d <= 4, 1 for 5..8 (d = the integer ratio).
                    scores[i] += (6 - n if n <= 4 else 1) * sizes[j]
        beat = float(means[int(np.argmax(scores))])
        bpm = 60.0 / max(beat, 1e-3)
        while bpm < self.range[0]:
            bpm *= 2
        while bpm > self.range[1]:
            bpm /= 2
        return bpm

    def estimate(self) -> TempoEstimate:
        times = self._times
        if not times:
            return TempoEstimate(self.initial_bpm, 0.0, 0.0, 0)
        if len(times) == 1:
            return TempoEstimate(self.initial_bpm, times[0], 0.0, 1)
        bpm = self._tempo()
        period = 60.0 / bpm
        arr = np.array(times)
        best, best_hits = times[0], -1
        for start in times[:4]:  # agents start at the early onsets
            pos = (arr - start) / period
            hits = int(np.sum(np.abs(pos - np.round(pos)) * period < 0.07))
            if hits > best_hits:
                best, best_hits = start, hits
        return TempoEstimate(bpm, best, best_hits / len(times), len(times))
