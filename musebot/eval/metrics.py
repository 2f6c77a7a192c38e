"""Objective music metrics, as defined in ``spec/music-metrics.md``.

All metrics read a :class:`NoteList`: note onsets on musebot's time grid (16 steps per beat, the grid of the
SkyTNT tokenizer, so a 4/4 bar has 64 positions) and pitches, drums already left out. Bars are cut at
multiples of the bar length taken from the first time signature (4/4 when there is none); pieces that change
metre are measured with their opening metre.

- H1, H4 (``pitch_class_histogram_entropy``) and GS (``grooving_pattern_similarity``): the Jazz Transformer
  evaluation (Wu & Yang, ISMIR 2020, MusDr ``eval_metrics.py``).
- pitch-class entropy, scale consistency, groove consistency: the Multitrack Music Transformer evaluation
  (Dong et al., ICASSP 2023, computed there with muspy).

Each function returns ``nan`` when the piece is too short for the quantity to exist (no notes; fewer than
two bars for the bar-pair metrics), so averages over pieces can use ``np.nanmean``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from musebot.tokenizers.vocab import STEPS_PER_BEAT

DRUM_CHANNEL = 9
METRIC_NAMES = ("H1", "H4", "GS", "pitch_class_entropy", "scale_consistency", "groove_consistency")

_MAJOR = (0, 2, 4, 5, 7, 9, 11)
_MINOR = (0, 2, 3, 5, 7, 8, 10)  # natural minor, as muspy's scale_consistency uses


@dataclass(frozen=True)
class NoteList:
    """Pitched notes of one piece: ``onsets`` in grid steps (16 per beat), ``pitches`` 0..127."""

    onsets: np.ndarray
    pitches: np.ndarray
    bar_steps: int = 4 * STEPS_PER_BEAT

    @property
    def n_bars(self) -> int:
        """Bars from bar 0 up to and including the bar of the last onset."""
        if len(self.onsets) == 0:
            return 0
        return int(self.onsets.max()) // self.bar_steps + 1

    def window(self, start_step: int, stop_step: int | None = None) -> NoteList:
        """Notes with onsets in ``[start_step, stop_step)``, shifted so that ``start_step`` becomes 0."""
        keep = self.onsets >= start_step
        if stop_step is not None:
            keep &= self.onsets < stop_step
        return NoteList(self.onsets[keep] - start_step, self.pitches[keep], self.bar_steps)


def bar_steps_of(numerator: int, denominator: int) -> int:
    """Grid steps in a bar of ``numerator/denominator`` (a beat is a quarter note: 16 steps)."""
    return max(1, round(numerator * 4 * STEPS_PER_BEAT / denominator))


def notes_from_score(score: list) -> NoteList:
    """Pitched notes of a MIDI.py score (``[ticks_per_beat, track, ...]``, spec section 1), drums left out."""
    tpb = score[0]
    onsets: list[int] = []
    pitches: list[int] = []
    bar_steps = 4 * STEPS_PER_BEAT
    first_ts: tuple[int, int] | None = None
    for track in score[1:]:
        for event in track:
            if event[0] == "note" and event[3] != DRUM_CHANNEL:
                onsets.append(round(STEPS_PER_BEAT * event[1] / tpb))
                pitches.append(event[4])
            elif event[0] == "time_signature" and (first_ts is None or event[1] < first_ts[0]):
                first_ts = (event[1], bar_steps_of(event[2], 2 ** event[3]))
    if first_ts is not None:
        bar_steps = first_ts[1]
    order = np.argsort(np.asarray(onsets, dtype=np.int64), kind="stable")
    return NoteList(np.asarray(onsets, dtype=np.int64)[order], np.asarray(pitches, dtype=np.int64)[order],
                    bar_steps)


def _entropy_bits(counts: np.ndarray) -> float:
    total = counts.sum()
    if total == 0:
        return float("nan")
    p = counts[counts > 0] / total
    return float(-(p * np.log2(p)).sum())


def pitch_class_histogram_entropy(notes: NoteList, window_bars: int) -> float:
    """H_w (Wu & Yang 2020): mean Shannon entropy (bits) of the 12-bin pitch-class histogram of the note
    onsets in every window of ``window_bars`` consecutive bars (stride one bar; ``n_bars - w + 1`` windows,
    ``w = n_bars`` when the piece is shorter); empty windows are skipped. H1 = ``window_bars=1``, H4 = 4."""
    n_bars = notes.n_bars
    if n_bars == 0:
        return float("nan")
    w = min(window_bars, n_bars)
    bars = notes.onsets // notes.bar_steps
    per_bar = np.zeros((n_bars, 12), dtype=np.int64)
    np.add.at(per_bar, (bars, notes.pitches % 12), 1)
    # Sliding sums of w bars via a cumulative sum over bars.
    cum = np.vstack([np.zeros((1, 12), dtype=np.int64), np.cumsum(per_bar, axis=0)])
    windows = cum[w:] - cum[:-w]
    values = [_entropy_bits(h) for h in windows if h.sum() > 0]
    return float(np.mean(values)) if values else float("nan")


def _onset_patterns(notes: NoteList) -> np.ndarray:
    """Binary matrix (n_bars, bar_steps): 1 where at least one note starts at that grid position."""
    patterns = np.zeros((notes.n_bars, notes.bar_steps), dtype=bool)
    patterns[notes.onsets // notes.bar_steps, notes.onsets % notes.bar_steps] = True
    return patterns


def grooving_pattern_similarity(notes: NoteList, max_pairs: int = 1000, seed: int = 0) -> float:
    """GS (Wu & Yang 2020): mean over pairs of bars (all pairs, randomly subsampled to ``max_pairs``) of
    ``1 - differing positions / grid positions`` between the bars' binary onset vectors. The grid is the real
    one, 16 steps per beat (64 positions in a 4/4 bar), never a fixed 64 over a 16-step grid."""
    patterns = _onset_patterns(notes)
    n = len(patterns)
    if n < 2:
        return float("nan")
    first, second = np.triu_indices(n, k=1)
    if len(first) > max_pairs:
        pick = np.random.default_rng(seed).choice(len(first), size=max_pairs, replace=False)
        first, second = first[pick], second[pick]
    differing = (patterns[first] != patterns[second]).sum(axis=1)
    return float(np.mean(1.0 - differing / notes.bar_steps))


def pitch_class_entropy(notes: NoteList) -> float:
    """Shannon entropy (bits) of the whole piece's pitch-class histogram (Dong et al. 2023, muspy)."""
    return _entropy_bits(np.bincount(notes.pitches % 12, minlength=12))


def scale_consistency(notes: NoteList) -> float:
    """Largest fraction of notes whose pitch class lies in one of the 24 major / natural-minor scales
    (Dong et al. 2023, muspy ``scale_consistency``)."""
    if len(notes.pitches) == 0:
        return float("nan")
    histogram = np.bincount(notes.pitches % 12, minlength=12)
    best = 0
    for root in range(12):
        for scale in (_MAJOR, _MINOR):
            best = max(best, int(histogram[[(root + step) % 12 for step in scale]].sum()))
    return best / len(notes.pitches)


def groove_consistency(notes: NoteList) -> float:
    """1 - mean Hamming distance between the onset patterns of *adjacent* bars, normalised by the bar length
    in grid positions (Dong et al. 2023, muspy ``groove_consistency``)."""
    patterns = _onset_patterns(notes)
    if len(patterns) < 2:
        return float("nan")
    distances = (patterns[1:] != patterns[:-1]).sum(axis=1) / notes.bar_steps
    return float(1.0 - distances.mean())


def compute_all(notes: NoteList) -> dict[str, float]:
    """The six metrics of ``METRIC_NAMES`` for one piece."""
    return {
        "H1": pitch_class_histogram_entropy(notes, 1),
        "H4": pitch_class_histogram_entropy(notes, 4),
        "GS": grooving_pattern_similarity(notes),
        "pitch_class_entropy": pitch_class_entropy(notes),
        "scale_consistency": scale_consistency(notes),
        "groove_consistency": groove_consistency(notes),
    }
