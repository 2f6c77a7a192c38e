"""Token sampling: temperature, top-k, top-p (nucleus), min-p, over the allowed ids only.

Implements the sampling step of shared/spec/skytnt-format.md section 3.3 (``sample_top_p_k``), with one
deliberate difference: the reference multiplies the softmax by the allowed-id mask and measures top-p against
that *unnormalised* mass, so when the allowed ids hold less than ``top_p`` of the probability only top-k acts.
Here the allowed ids are renormalised first (a softmax over the allowed logits), so top-p and min-p always mean
"of the probability the model gives to what may be played". No checkpoint depends on the quirk: it only changes
which tail tokens survive the filters.

Everything is vectorised over a batch of rows; nothing loops over the vocabulary. One uniform number is drawn per
sampled token (inverse-CDF sampling), so a seeded ``numpy.random.Generator`` replays the same choices, and a
batch drawn with one generator per row equals the rows drawn one at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from math import exp

import numpy as np


@dataclass(frozen=True)
class SamplerSettings:
    """Sampling knobs; defaults are the reference ``generate`` defaults (temp 1.0, top-p 0.98, top-k 20).

    ``temperature`` 0 means greedy (argmax); ``top_k`` 0 and ``top_p`` 1 and ``min_p`` 0 switch a filter off.
    """

    temperature: float = 1.0
    top_p: float = 0.98
    top_k: int = 20
    min_p: float = 0.0

    def __post_init__(self) -> None:
        if not self.temperature >= 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 = off), got {self.top_k}")
        if not 0 <= self.min_p < 1:
            raise ValueError(f"min_p must be in [0, 1), got {self.min_p}")


Rng = np.random.Generator | Sequence[np.random.Generator]


def candidates(logits: np.ndarray, settings: SamplerSettings) -> tuple[np.ndarray, np.ndarray]:
    """The tokens that survive the filters, most likely first: ``(indices (B, m), probabilities (B, m))``.

    Works on the top-k candidates only (``argpartition``, no sort of the whole row): min-p compares with the
    best token and top-p with the mass left after top-k, so neither needs the full softmax. Probabilities of
    filtered entries inside the ``m`` columns are 0; each row sums to 1. Masked logits are ``-inf``.
    """
    batch, n = logits.shape
    if settings.temperature == 0:
        best = np.argmax(logits, axis=1)[:, None]
        return best, np.ones((batch, 1))
    k = settings.top_k if 0 < settings.top_k < n else n
    if k < n:
        index = np.argpartition(logits, n - k, axis=1)[:, n - k :]
        values = np.take_along_axis(logits, index, axis=1)
    else:
        index = np.broadcast_to(np.arange(n), (batch, n))
        values = logits
    order = np.argsort(-values, axis=1, kind="stable")
    index = np.take_along_axis(index, order, axis=1)
    values = np.take_along_axis(values, order, axis=1).astype(np.float64)
    # Relative to the best token: w = p / p_max (exp(-inf) = 0 drops masked ids).
    weights = np.exp((values - values[:, :1]) / settings.temperature)
    if settings.min_p > 0:
        weights[weights < settings.min_p] = 0.0
    if settings.top_p < 1:
        # Keep the smallest prefix whose (renormalised) mass reaches top_p: an entry survives while the mass
        # before it is still below top_p, so the most likely token always survives.
        mass = weights / weights.sum(axis=1, keepdims=True)
        before = np.cumsum(mass, axis=1) - mass
        weights[before >= settings.top_p] = 0.0
    return index, weights / weights.sum(axis=1, keepdims=True)


def sample_one(logits: np.ndarray, settings: SamplerSettings, u: float) -> int:
    """``candidates`` + ``choose`` for one row ``(n,)``: the per-token path of one branch, called for every
    token the live daemon samples. numpy picks and orders the top-k; the filters and the draw then run over
    that short list in plain Python (a handful of numbers: cheaper than a dozen numpy calls).

    Gives the same index as the batched functions: the same candidates in the same order and the same
    arithmetic, up to the last bit of ``exp`` (numpy's and the C library's may differ there).
    """
    if settings.temperature == 0:
        return int(logits.argmax())
    n = logits.shape[0]
    k = settings.top_k if 0 < settings.top_k < n else n
    if k < n:
        index = logits.argpartition(n - k)[n - k :]
        values = logits[index]
        order = (-values).argsort(kind="stable")
        index = index[order]
        values = values[order]
    else:
        index = (-logits).argsort(kind="stable")
        values = logits[index]
    if k > PYTHON_TAIL:
        return int(index[_draw_numpy(values.astype(np.float64), settings, u)])
    return int(index[_draw(values.tolist(), settings, u)])


PYTHON_TAIL = 64  # candidates up to which the filters and the draw run in plain Python


def _draw(values: list[float], settings: SamplerSettings, u: float) -> int:
    """The index into ``values`` (sorted, best first) that ``u`` picks after temperature, min-p and top-p."""
    best, temperature = values[0], settings.temperature
    if temperature == 1:
        weights = [exp(v - best) for v in values]
    else:
        weights = [exp((v - best) / temperature) for v in values]
    if settings.min_p > 0:
        weights = [w if w >= settings.min_p else 0.0 for w in weights]
    if settings.top_p < 1:
        # Keep an entry while the mass before it is below top_p (as ``candidates``: its cumulative mass
        # minus its own).
        total, cumulative, kept = sum(weights), 0.0, []
        for w in weights:
            mass = w / total
            cumulative += mass
            kept.append(w if cumulative - mass < settings.top_p else 0.0)
        weights = kept
    total = sum(weights)
    cdf, chosen, last = 0.0, 0, 0
    for i, w in enumerate(weights):
        if w > 0:
            last = i
        cdf += w / total
        if cdf <= u:
            chosen = i + 1
    return min(chosen, last)


def _draw_numpy(values: np.ndarray, settings: SamplerSettings, u: float) -> int:
    """``_draw`` over a long candidate list (top-k off over a whole vocabulary), with numpy."""
    n = values.shape[0]
    values -= values[0]
    if settings.temperature != 1:
        values /= settings.temperature
    weights = np.exp(values, out=values)
    if settings.min_p > 0:
        weights[weights < settings.min_p] = 0.0
    if settings.top_p < 1:
        mass = weights / _sum(weights)
        before = mass.cumsum()
        before -= mass
        weights[before >= settings.top_p] = 0.0
    probs = weights / _sum(weights)
    chosen = int(probs.cumsum().searchsorted(u, side="right"))
    if chosen >= n or probs[min(chosen, n - 1)] == 0:
        chosen = min(chosen, int(probs.nonzero()[0][-1]))
    return chosen


_sum = np.add.reduce  # what ``ndarray.sum`` calls, without its wrapper


def filtered_probabilities(
    logits: np.ndarray, settings: SamplerSettings, allowed: np.ndarray | None = None
) -> np.ndarray:
    """Probabilities after masking, temperature, min-p, top-k and top-p, each row summing to 1.

    ``logits`` is ``(B, n)``; ``allowed`` an optional boolean ``(n,)`` or ``(B, n)`` mask (every row needs at
    least one allowed id). Returns ``(B, n)`` float64 with disallowed and filtered entries at exactly 0.
    """
    logits = _masked(logits, allowed)
    index, probs = candidates(logits, settings)
    full = np.zeros(logits.shape)
    np.put_along_axis(full, index, probs, axis=1)
    return full


def _masked(logits: np.ndarray, allowed: np.ndarray | None) -> np.ndarray:
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 2:
        raise ValueError(f"logits must be (batch, n), got shape {logits.shape}")
    if allowed is not None:
        allowed = np.broadcast_to(np.asarray(allowed, dtype=bool), logits.shape)
        if not allowed.any(axis=1).all():
            raise ValueError("a row has no allowed token: the constraints exclude everything")
        logits = np.where(allowed, logits, -np.inf)
    return logits


def draw_uniform(rng: Rng, batch: int) -> np.ndarray:
    """One uniform number per row: from one generator, or from one generator per row."""
    if isinstance(rng, np.random.Generator):
        return rng.random(batch)
    if len(rng) != batch:
        raise ValueError(f"got {len(rng)} random generators for a batch of {batch}")
    return np.array([g.random() for g in rng])


def choose(probs: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Inverse-CDF choice: for each row of ``probs`` ``(B, n)``, the index where the cumulative mass passes ``u``.

    The result always has a nonzero probability: rounding at the top of the cdf falls back to the last
    nonzero entry instead of a filtered-out one.
    """
    cdf = np.cumsum(probs, axis=1)
    chosen = (cdf <= u[:, None]).sum(axis=1)
    last_nonzero = probs.shape[1] - 1 - np.argmax(probs[:, ::-1] > 0, axis=1)
    return np.minimum(chosen, last_nonzero).astype(np.int64)


def sample(
    logits: np.ndarray, settings: SamplerSettings, rng: Rng, allowed: np.ndarray | None = None
) -> np.ndarray:
    """Sample one index per row of ``logits`` ``(B, n)``; returns ``(B,)`` int64 indices into ``n``."""
    index, probs = candidates(_masked(logits, allowed), settings)
    picked = choose(probs, draw_uniform(rng, len(probs)))
    return index[np.arange(len(index)), picked]


def sample_ids(
    logits: np.ndarray, ids: np.ndarray, settings: SamplerSettings, rng: Rng
) -> np.ndarray:
    """Sample among the vocabulary ``ids`` only (a sorted int array) from full-vocabulary ``logits`` (B, V).

    Gathering the allowed columns first keeps the per-token cost proportional to the allowed set (7 event
    types, 16 positions in a beat...) rather than to the whole vocabulary. Returns ``(B,)`` vocabulary ids.
    """
    return ids[sample(logits[:, ids], settings, rng)]
