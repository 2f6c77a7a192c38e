"""The baseline of ``musebot eval``: a first-order Markov chain over whole events (token rows).

``spec/music-metrics.md`` asks for a simple baseline beside model and real music, "for example a first-order
Markov chain over the same events". The states are the training set's distinct 8-token rows (an event with
its time delta, track, channel, pitch, velocity and duration), and the next row is drawn in proportion to
how often it followed the current one in training. A row never seen in training backs off to a draw from all
training rows (the unigram distribution).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np


class MarkovChain:
    """Row -> next-row transition counts, stored as sorted (state, next state) pairs."""

    def __init__(self, states: np.ndarray, current: np.ndarray, following: np.ndarray, eos_id: int = 2) -> None:
        self.states = states  # (n_states, 8) distinct rows
        self.current = current  # (n_pairs,) sorted state ids
        self.following = following  # (n_pairs,) next-state id of each pair
        self.eos_id = eos_id
        self._index = {row.tobytes(): i for i, row in enumerate(states)}

    @classmethod
    def fit(cls, sequences: Iterable[np.ndarray], eos_id: int = 2) -> MarkovChain:
        """Count transitions between consecutive rows of every sequence ``(n, 8)``."""
        sequences = [np.asarray(s, dtype=np.int64) for s in sequences if len(s) > 1]
        if not sequences:
            raise ValueError("the Markov baseline needs at least one sequence of two or more events")
        rows = np.concatenate(sequences)
        states, inverse = np.unique(rows, axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)
        current, following = [], []
        start = 0
        for seq in sequences:
            ids = inverse[start:start + len(seq)]
            current.append(ids[:-1])
            following.append(ids[1:])
            start += len(seq)
        current_arr = np.concatenate(current)
        following_arr = np.concatenate(following)
        order = np.argsort(current_arr, kind="stable")
        return cls(states, current_arr[order], following_arr[order], eos_id)

    @property
    def n_states(self) -> int:
        return len(self.states)

    def next_row(self, row: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Draw the row that follows ``row``."""
        state = self._index.get(np.asarray(row, dtype=np.int64).tobytes())
        if state is not None:
            lo, hi = np.searchsorted(self.current, [state, state + 1])
            if hi > lo:
                return self.states[self.following[rng.integers(lo, hi)]]
        return self.states[self.following[rng.integers(0, len(self.following))]]

    def continue_rows(self, prompt: np.ndarray, max_events: int, rng: np.random.Generator,
                      stop: Callable[[np.ndarray], bool] | None = None) -> np.ndarray:
        """Up to ``max_events`` new rows after ``prompt``; stops after EOS or when ``stop(rows so far)``."""
        rows = [np.asarray(r, dtype=np.int64) for r in prompt]
        new: list[np.ndarray] = []
        for _ in range(max_events):
            row = self.next_row(rows[-1], rng)
            rows.append(row)
            new.append(row)
            if row[0] == self.eos_id or (stop is not None and stop(np.asarray(new))):
                break
        return np.asarray(new, dtype=np.int64).reshape(-1, 8)
