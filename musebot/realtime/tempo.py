"""Tempo and beat following for live playing: the musician's tempo and beat phase from their note onsets.

Method: metrical-grid template matching, scored in the Fourier domain, with a tempo prior and hysteresis.

- Onsets closer than ``chord_window_s`` are one event (a chord). Each event has a salience in the spirit of
  Dixon (2001, "Automatic extraction of tempo and beat from expressive performances", JNMR 30(1)): longer
  notes (the interval to the next onset, or the duration when known), chords and louder notes weigh more,
  and older events fade with ``memory_s`` so the estimate follows rubato and tempo changes.
- A candidate beat period ``T`` (log-spaced, 1 % apart, ``min_bpm..max_bpm``) and phase ``phi`` are scored
  by how much weight lands on a metrical grid: the template ``g`` has unit mass on the beat, less on the
  eighth, the sixteenths and the triplets, each smoothed by a Gaussian of ``timing_sigma_s`` seconds. The
  fit ``sum_i w_i g((t_i - phi) / T)`` is computed for every phase at once from the onsets' circular
  moments ``S_h(T) = sum_i w_i exp(2 pi i h t_i / T)``, h = 1..12 (the comb-template / circular statistics
  view of Large & Kolen 1994 and Scheirer 1998). The fit expected by chance (the template's mean times
  the total weight) is subtracted, so a finer grid is not preferred for fitting anything.
- A log-normal prior over tempo (centre ``prior_bpm``, width ``prior_octaves``) and a narrow bonus near the
  last estimate (``--bpm`` at first, then the previous call's tempo) settle metrical ambiguity (x2, x1/2).
- The winner is refined by weighted least squares of onset times on their nearest grid positions (as a
  beat-tracking agent's period/phase update, Dixon 2001), which also tracks gradual tempo drift.
- Hysteresis: once a few events are in, a different hypothesis (another tempo class, or a phase shift)
  replaces the current one only when it scores ``switch_margin`` better on two updates running (or three
  margins better once), so one odd note does not move the beat.

Pure: no I/O, no threads, no clock reads; times are seconds on the caller's clock. Never raises on bad
input (NaN times are ignored), and the tempo is always within ``min_bpm..max_bpm`` (30..300 by default).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Metrical template within one beat: (position in beats, weight). Beat, eighth, sixteenths, triplets.
GRID: tuple[tuple[float, float], ...] = (
    (0.0, 1.0), (0.5, 0.55), (0.25, 0.3), (0.75, 0.3), (1 / 3, 0.35), (2 / 3, 0.35))
_HARMONICS = np.arange(1, 13)
_SNAP_DIVISIONS = (4, 3)  # grid positions used to refine: sixteenths and eighth triplets


@dataclass(frozen=True)
class TrackerConfig:
    """Settings of :class:`BeatTracker`, with their defaults in one place."""

    min_bpm: float = 30.0
    max_bpm: float = 300.0
    prior_bpm: float = 105.0  # centre of the generic tempo prior (log-normal)
    prior_octaves: float = 0.8  # its standard deviation in octaves
    prior_weight: float = 0.12  # scale of the log prior against the grid fit (0..1)
    previous_octaves: float = 0.05  # width of the bonus near the last estimate
    previous_bonus: float = 0.12  # that bonus at full confidence
    initial_confidence: float = 0.5  # how much the ``initial_bpm`` is trusted before any playing
    chord_window_s: float = 0.045  # onsets closer than this are one chord
    timing_sigma_s: float = 0.025  # expected timing noise of a human player
    memory_s: float = 12.0  # events fade with this time constant
    window: int = 64  # most events considered
    candidates_per_octave: int = 70
    phases: int = 32  # phase grid per candidate, refined afterwards
    chance_weight: float = 0.6  # how much of the fit expected by chance is subtracted (0..1)
    switch_margin: float = 0.06  # hysteresis: how much better a new hypothesis must fit
    free_events: int = 4  # up to this many events the estimate moves freely


@dataclass(frozen=True)
class TempoEstimate:
    """The tracked tempo and beat phase.

    ``bpm``: beats per minute; ``beat_time``: seconds of one beat (the latest at or before the last onset,
    or the first onset); ``confidence``: 0 (a guess: the prior) .. 1 (a clear, well-supported grid);
    ``n_onsets``: onset events (a chord counts once) heard in this call.
    """

    bpm: float
    beat_time: float
    confidence: float
    n_onsets: int

    @property
    def period(self) -> float:
        """Seconds per beat."""
        return 60.0 / self.bpm

    def beat_at(self, t: float) -> float:
        """Beats from ``beat_time`` to ``t`` (negative before it)."""
        return (t - self.beat_time) / self.period

    def time_at(self, beat: float) -> float:
        """Seconds at ``beat`` beats from ``beat_time``."""
        return self.beat_time + beat * self.period


def _log_prior(bpm: np.ndarray, cfg: TrackerConfig, previous_bpm: float | None, previous_conf: float
               ) -> np.ndarray:
    generic = -0.5 * (np.log2(bpm / cfg.prior_bpm) / cfg.prior_octaves) ** 2
    out = cfg.prior_weight * generic
    if previous_bpm is not None and previous_conf > 0:
        near = np.exp(-0.5 * (np.log2(bpm / previous_bpm) / cfg.previous_octaves) ** 2)
        out = out + cfg.previous_bonus * previous_conf * near
    return out


def _template_coefficients(periods: np.ndarray, sigma_s: float) -> np.ndarray:
    """Fourier coefficients c_h, h >= 1 (shape periods x harmonics) of the smoothed template."""
    s = sigma_s / periods  # kernel width in beats
    norm = s * math.sqrt(2 * math.pi)  # peak-normalised Gaussian: its integral over one beat
    masses = np.array([sum(w * math.cos(2 * math.pi * h * p) for p, w in GRID) for h in _HARMONICS])
    damp = np.exp(-2 * math.pi ** 2 * np.outer(s, _HARMONICS) ** 2)
    return norm[:, None] * damp * masses[None, :]


def grid_fit(times: np.ndarray, weights: np.ndarray, periods: np.ndarray, phases: np.ndarray,
             sigma_s: float, chance_weight: float = 1.0) -> np.ndarray:
    """Weighted template fit above chance, per period and phase (shape periods x phases), over sum(w).

    ``phases`` are in beats (0..1): a beat falls at times ``phase * T + k T``. See the module docstring.
    """
    base = np.exp(2j * np.pi * np.outer(1.0 / periods, times))  # periods x events
    power = np.ones_like(base)
    moments = np.empty((len(periods), len(_HARMONICS)), dtype=complex)
    for k in range(len(_HARMONICS)):
        power = power * base
        moments[:, k] = power @ weights
    coef = _template_coefficients(periods, sigma_s)
    rot = np.exp(-2j * np.pi * np.outer(_HARMONICS, phases))  # harmonics x phases
    # The constant term (c_0 times the total weight, the fit expected by chance) is left out: the excess;
    # ``chance_weight`` < 1 adds part of it back.
    fit = 2.0 * np.real((coef * moments) @ rot) / (float(weights.sum()) or 1.0)
    if chance_weight < 1.0:
        c0 = sigma_s / periods * math.sqrt(2 * math.pi) * sum(w for _, w in GRID)
        fit = fit + (1.0 - chance_weight) * c0[:, None]
    return fit


def _snap(q: np.ndarray) -> np.ndarray:
    """Nearest position on the sixteenth or eighth-triplet grid (in beats)."""
    best = np.round(q * _SNAP_DIVISIONS[0]) / _SNAP_DIVISIONS[0]
    for div in _SNAP_DIVISIONS[1:]:
        other = np.round(q * div) / div
        best = np.where(np.abs(other - q) < np.abs(best - q) - 1e-9, other, best)
    return best


@dataclass
class _Event:
    time: float
    notes: int
    velocity: int
    low_pitch: int
    duration: float | None = None


class BeatTracker:
    """Follows the tempo and beat of live playing; see the module docstring for the method.

    Feed it with :meth:`add_onset` (and :meth:`add_note_off` when releases are known); read
    :meth:`estimate`. :meth:`reset_call` starts a new call keeping the tempo as a prior.
    """

    def __init__(self, initial_bpm: float = 120.0, config: TrackerConfig | None = None) -> None:
        self.config = config or TrackerConfig()
        cfg = self.config
        self.initial_bpm = self._clamp(initial_bpm if math.isfinite(initial_bpm) else 120.0)
        n = round(math.log2(cfg.max_bpm / cfg.min_bpm) * cfg.candidates_per_octave) + 1
        self._bpms = cfg.min_bpm * 2.0 ** (np.arange(n) / cfg.candidates_per_octave)
        self._periods = 60.0 / self._bpms
        self._phases = np.arange(cfg.phases) / cfg.phases
        self.reset()

    # ------------------------------------------------------------------------------------------- state
    def reset(self) -> None:
        """Forget everything, back to ``initial_bpm``."""
        self._prior_bpm: float = self.initial_bpm
        self._prior_conf: float = self.config.initial_confidence
        self._events: list[_Event] = []
        self._bpm: float = self.initial_bpm
        self._beat: float | None = None
        self._stale = False  # a chord note came in since the last fit (refit when the estimate is read)
        self._confidence = 0.0
        self._challenger: tuple[float, float] | None = None

    def reset_call(self) -> None:
        """A new call starts: forget its onsets but keep the tempo (and its phase) as the prior."""
        if self._stale:
            self._update()
        if self._events:
            self._prior_bpm = self._bpm
            self._prior_conf = max(self._prior_conf * 0.5, min(1.0, self._confidence))
        self._events = []
        self._stale = False
        self._confidence = 0.0
        self._challenger = None

    @property
    def n_onsets(self) -> int:
        return len(self._events)

    def _clamp(self, bpm: float) -> float:
        return min(self.config.max_bpm, max(self.config.min_bpm, bpm))

    # ------------------------------------------------------------------------------------------- input
    def add_onset(self, t: float, pitch: int = 60, velocity: int = 64, duration: float | None = None
                  ) -> TempoEstimate:
        """A note started at ``t`` seconds (``duration`` in seconds if already known); returns the estimate.

        Onsets within ``chord_window_s`` of an event's first onset join it as a chord. Out-of-order onsets
        are placed in order; non-finite times are ignored.
        """
        if not math.isfinite(t):
            return self.estimate()
        dur = duration if duration is not None and math.isfinite(duration) and duration > 0 else None
        events = self._events
        index = len(events)
        while index > 0 and events[index - 1].time > t + self.config.chord_window_s:
            index -= 1
        if index > 0 and abs(t - events[index - 1].time) <= self.config.chord_window_s:
            ev = events[index - 1]
            ev.notes += 1
            ev.velocity = max(ev.velocity, int(velocity))
            ev.low_pitch = min(ev.low_pitch, int(pitch))
            if dur is not None:
                ev.duration = max(ev.duration or 0.0, dur)
            # Another note of a chord only re-weighs its event: the fit is redone when next asked for, so
            # a chord (or a flood of notes) costs one fit, not one per note.
            self._stale = True
            return self._current()
        else:
            events.insert(index, _Event(t, 1, int(velocity), int(pitch), dur))
            if len(events) > 4 * self.config.window:
                del events[: len(events) - self.config.window]
        if self._beat is None:
            self._beat = events[0].time
        self._update()
        return self.estimate()

    def add_note_off(self, t: float, pitch: int) -> None:
        """The key ``pitch`` was released at ``t``: the duration of its latest onset (a salience cue)."""
        if not math.isfinite(t):
            return
        for ev in reversed(self._events):
            if ev.time <= t and ev.low_pitch <= pitch:
                if ev.duration is None or ev.duration < t - ev.time:
                    ev.duration = t - ev.time
                return

    # ------------------------------------------------------------------------------------------- output
    def estimate(self) -> TempoEstimate:
        """The current tempo and phase; before any onset, ``initial_bpm`` (or the last call's) at time 0."""
        if self._stale:
            self._update()
        return self._current()

    def _current(self) -> TempoEstimate:
        beat = self._beat if self._beat is not None else 0.0
        return TempoEstimate(self._bpm, beat, self._confidence, len(self._events))

    def beat_at(self, t: float) -> float:
        """Beats since the phase reference ``estimate().beat_time`` at ``t``."""
        return self.estimate().beat_at(t)

    def time_at(self, beat: float) -> float:
        """Seconds at ``beat`` beats from the phase reference."""
        return self.estimate().time_at(beat)

    def next_beat_time(self, after_t: float, on: str = "beat", beats_per_bar: int = 4) -> float:
        """The first beat (``on="beat"``) or downbeat (``on="bar"``) at or after ``after_t``.

        The downbeat is the beat of the bar (modulo ``beats_per_bar``) that carries the most salient onsets
        of this call, ties going to the beat of the call's first onset.
        """
        est = self.estimate()
        k = math.ceil(est.beat_at(after_t) - 1e-9)
        if on != "bar" or beats_per_bar <= 1:
            return est.time_at(k)
        offset = self._downbeat_offset(est, max(1, int(beats_per_bar)))
        k += (offset - k) % beats_per_bar
        return est.time_at(k)

    def _downbeat_offset(self, est: TempoEstimate, beats_per_bar: int) -> int:
        score = np.zeros(beats_per_bar)
        if not self._events:
            return 0
        times, weights = self._features()
        beats = (times - est.beat_time) / est.period
        nearest = np.round(beats)
        on_beat = np.abs(beats - nearest) * est.period < 0.08
        np.add.at(score, nearest[on_beat].astype(int) % beats_per_bar, weights[on_beat])
        first = round(est.beat_at(self._events[0].time)) % beats_per_bar
        score[first] += 1e-3 + 0.1 * float(score.max())
        return int(np.argmax(score))

    # ------------------------------------------------------------------------------------------- model
    def _features(self) -> tuple[np.ndarray, np.ndarray]:
        """Event times and weights (salience x recency), for the last ``window`` events."""
        cfg = self.config
        events = self._events[-cfg.window:]
        times = np.array([e.time for e in events])
        n = len(times)
        iois = np.diff(times)
        typical = float(np.median(iois)) if n > 1 else 0.5
        typical = max(typical, 0.05)
        # The agogic cue: the time to the next onset (the last event uses its duration, or a typical IOI).
        length = np.empty(n)
        length[:-1] = iois
        length[-1] = events[-1].duration or typical
        for i, e in enumerate(events):
            if e.duration is not None:
                length[i] = min(length[i], max(e.duration, 0.5 * length[i]))
        agogic = np.clip(np.log2(np.maximum(length, 1e-3) / typical), -1.0, 1.5)
        notes = np.array([e.notes for e in events], dtype=float)
        vel = np.array([e.velocity for e in events], dtype=float)
        loud = np.clip((vel - vel.mean()) / 40.0, -0.5, 0.5) if n > 1 else np.zeros(n)
        salience = 1.0 + 0.35 * agogic + 0.25 * np.minimum(notes - 1, 3) + 0.3 * loud
        if self._events and events[0] is self._events[0]:
            salience[0] += 0.3  # a call tends to start on a beat
        recency = np.exp(-(times[-1] - times) / cfg.memory_s)
        return times, np.maximum(salience, 0.2) * recency

    def _fit_one(self, times: np.ndarray, weights: np.ndarray, bpm: float, beat: float) -> float:
        period = np.array([60.0 / bpm])
        phase = np.array([((beat - times[-1]) / period[0]) % 1.0])
        fit = grid_fit(times - times[-1], weights, period, phase, self.config.timing_sigma_s,
                       self.config.chance_weight)[0, 0]
        return float(fit + _log_prior(np.array([bpm]), self.config, self._prior_bpm, self._prior_conf)[0])

    def _refine(self, times: np.ndarray, weights: np.ndarray, bpm: float, beat: float) -> tuple[float, float]:
        """Least-squares period and phase from onsets snapped to the grid of (bpm, beat)."""
        period = 60.0 / bpm
        for _ in range(2):
            q = (times - beat) / period
            g = _snap(q)
            resid = np.abs(q - g) * period
            ok = resid < min(0.08, 0.15 * period)
            if ok.sum() < 1:
                break
            w, x, y = weights[ok], g[ok], times[ok]
            if ok.sum() >= 2 and np.ptp(x) >= 1.0:
                xm, ym = np.average(x, weights=w), np.average(y, weights=w)
                slope = float(np.sum(w * (x - xm) * (y - ym)) / np.sum(w * (x - xm) ** 2))
                if 0.92 * period < slope < 1.08 * period:
                    period = slope
            beat = float(np.average(y - x * period, weights=w))
        return self._clamp(60.0 / period), beat

    def _update(self) -> None:
        self._stale = False
        cfg = self.config
        events = self._events[-cfg.window:]
        if len(events) < 2:
            self._confidence = 0.0
            if len(self._events) == 1:
                self._bpm, self._beat = self._clamp(self._prior_bpm), events[0].time
            return
        times, weights = self._features()
        rel = times - times[-1]
        fit = grid_fit(rel, weights, self._periods, self._phases, cfg.timing_sigma_s, cfg.chance_weight)
        total = fit + _log_prior(self._bpms, cfg, self._prior_bpm, self._prior_conf)[:, None]
        flat = int(np.argmax(total))
        i, j = divmod(flat, total.shape[1])
        best_score = float(total[i, j])
        best_bpm, best_beat = self._refine(times, weights, float(self._bpms[i]),
                                           times[-1] + self._phases[j] * self._periods[i])
        # Confidence: the best fit's margin over the best rival tempo class (more than 6 % away).
        per_bpm = total.max(axis=1)
        rival = per_bpm[np.abs(np.log2(self._bpms / self._bpms[i])) > 0.09]
        margin = best_score - (float(rival.max()) if rival.size else 0.0)
        support = 1.0 - math.exp(-(len(events) - 1) / 4.0)
        if len(events) <= cfg.free_events or self._beat is None:
            self._adopt(best_bpm, best_beat, margin, support, times)
            return
        cur_bpm, cur_beat = self._refine(times, weights, self._bpm, self._beat)
        same_tempo = abs(math.log(best_bpm / cur_bpm)) < math.log(1.04)
        period = 60.0 / cur_bpm
        phase_gap = abs((best_beat - cur_beat) / period - round((best_beat - cur_beat) / period))
        if same_tempo and phase_gap < 0.125:
            self._challenger = None
            self._adopt(cur_bpm, cur_beat, margin, support, times)
            return
        gain = best_score - self._fit_one(times, weights, cur_bpm, cur_beat)
        repeat = self._challenger is not None and abs(math.log(best_bpm / self._challenger[0])) < 0.04
        if gain > 3 * cfg.switch_margin or (gain > cfg.switch_margin and repeat):
            self._challenger = None
            self._adopt(best_bpm, best_beat, margin, support, times)
        else:
            self._challenger = (best_bpm, best_beat) if gain > cfg.switch_margin else None
            self._adopt(cur_bpm, cur_beat, max(0.0, -gain), support, times)

    def _adopt(self, bpm: float, beat: float, margin: float, support: float, times: np.ndarray) -> None:
        self._bpm = self._clamp(bpm)
        period = 60.0 / self._bpm
        # Keep the reference beat near the playing: the latest beat at or before the last onset.
        self._beat = beat + math.floor((times[-1] - beat) / period + 1e-6) * period
        self._confidence = float(min(1.0, max(0.0, support * (0.3 + 4.0 * margin))))
