"""Running musebot's in-place engine graphs (``musebot.export.inplace``): caches that never move.

Each cache is a set of preallocated ``(B, kv_heads, capacity, head_dim)`` buffers and a count of valid
positions. A call binds every ``present.*`` output to the buffer it got as ``past_key_values.*``, so ONNX
Runtime's ``GroupQueryAttention`` writes the new positions in place; the binding is made once per cache and
only the small inputs (ids, the count) are bound per call. Rolling back is lowering the count; a cache grows
by doubling (one copy) when a call would pass its capacity. On the CPU the buffers are numpy arrays that the
OrtValues wrap without a copy, so cache surgery (branching) reads them directly.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from musebot.engine.runners import CpuRunner, GraphShape

MIN_CAPACITY = 64
KEPT_OUTPUT_ROWS, KEPT_OUTPUTS = 16, 64  # output arrays kept for reuse: shapes of at most 16 rows, 64 shapes
INPLACE_MARK = "seqlens_k"  # the graph input that tells an in-place pair from the reference interface
STATES_OUTPUT = "states"  # a token graph that ends at its final norm: the head is the engine's (``Head``)
HEAD_FILE = "lm_head.npy"  # that head, (vocabulary, hidden) float32, beside the graphs
HEAD_BLOCKS = 64  # row blocks of the head kept for the allowed-id arrays met (masks reuse a few of them)


class Head:
    """The token model's output layer over the vocabulary rows one position may take.

    A position's allowed ids are mostly one whole parameter block, contiguous in the vocabulary, so its
    rows are read where they lie (a view); other id sets are gathered once and kept while their array is
    in use. ``np.vecdot`` runs one dot product per row in numpy's own loops: no BLAS thread pool wakes in
    the real-time process (numpy's matmul would spread a 2,048-row product over every core).
    """

    def __init__(self, weight: np.ndarray) -> None:
        if weight.ndim != 2 or weight.dtype != np.float32:
            raise ValueError(f"a head is a (vocabulary, hidden) float32 array, got {weight.dtype} {weight.shape}")
        self.weight = np.ascontiguousarray(weight)
        self._blocks: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # id(ids) -> (ids, their rows)

    def rows(self, ids: np.ndarray | None) -> np.ndarray:
        if ids is None:
            return self.weight
        kept = self._blocks.get(id(ids))
        if kept is not None and kept[0] is ids:
            return kept[1]
        first, last = int(ids[0]), int(ids[-1])
        if last - first + 1 == len(ids) and bool(np.all(np.diff(ids) == 1)):
            rows = self.weight[first : last + 1]
        else:
            rows = self.weight[ids]
        if len(self._blocks) >= HEAD_BLOCKS:
            self._blocks.clear()
        self._blocks[id(ids)] = (ids, rows)  # the entry holds ``ids``, so its id is not reused meanwhile
        return rows

    def logits(self, states: np.ndarray, ids: np.ndarray | None) -> np.ndarray:
        """``(B, T, len(ids))`` logits for the states ``(B, T, H)`` (every row when ``ids`` is None)."""
        rows = self.rows(ids)
        if states.shape[0] == 1 and states.shape[1] == 1:  # the live case: one branch, one new position
            return np.vecdot(rows, states[0, 0])[None, None]
        return np.vecdot(rows, states.astype(np.float32, copy=False)[:, :, None, :])


def load_head(folder: Path) -> Head | None:
    """The head saved beside a headless token graph in ``folder``, or None when there is none."""
    path = folder / HEAD_FILE
    if not path.is_file():
        return None
    return Head(np.load(path, allow_pickle=False))


class InPlaceCache:
    """The buffers of one KV cache, ``length`` valid positions, and the IO binding that runs on them."""

    def __init__(self, arrays: list[np.ndarray], length: int = 0) -> None:
        self.arrays = arrays
        self.values = [ort.OrtValue.ortvalue_from_numpy(a) for a in arrays]  # views of ``arrays`` on the CPU
        self.length = length
        self.binding: Any = None
        # The position inputs, bound once with the binding and rewritten in place before each call.
        self.seqlens = np.zeros(self.batch if arrays else 0, np.int32)
        self.total = np.zeros((), np.int32)
        self.bound: dict[str, Any] = {}  # name -> the object bound to it last (rebound only when it changes)

    @property
    def capacity(self) -> int:
        return self.arrays[0].shape[2] if self.arrays else 0

    @property
    def batch(self) -> int:
        return self.arrays[0].shape[0]


class InPlaceRunner(CpuRunner):
    """Runs graphs with ``seqlens_k``/``total_sequence_length`` inputs over ``InPlaceCache`` objects (CPU)."""

    def __init__(self, base: ort.InferenceSession, token: ort.InferenceSession, config: dict[str, Any],
                 head: Head | None = None) -> None:
        super().__init__(base, token, config)
        # A token graph ending at its norm (``states``) leaves the head to the engine; an older export's
        # graph gathers the rows given as ``head_ids`` itself.
        headless = any(o.name == STATES_OUTPUT for o in token.get_outputs())
        if headless and head is None:
            raise ValueError(f"this token graph ends at its norm: its head ({HEAD_FILE}) is needed")
        self.head = head if headless else None
        if headless:
            self.token_out[0] = STATES_OUTPUT
            self.sliced = True
        self.max_positions = int(config.get("net_config", {}).get("max_position_embeddings", 4096))
        self._token_caches: dict[int, InPlaceCache] = {}
        self.reserved = 0  # positions every new event-model cache starts with (``Engine.reserve``)
        self.hidden_size = int(config.get("n_embd") or base.get_outputs()[0].shape[2])
        # First outputs (hidden, logits) land in arrays kept per shape: no allocation and no get_outputs().
        self._out: dict[tuple, tuple[np.ndarray, ort.OrtValue]] = {}

    def empty(self, shape: GraphShape, batch: int, capacity: int = 0) -> InPlaceCache:  # type: ignore[override]
        if shape is self.base_shape:
            capacity = max(capacity, self.reserved)
        size = (batch, shape.heads, capacity, shape.head_dim)
        return InPlaceCache([np.zeros(size, shape.dtype) for _ in range(2 * shape.layers)])

    def cleared(self, past: InPlaceCache, batch: int) -> InPlaceCache:  # type: ignore[override]
        """An empty event-model cache for ``batch`` branches: ``past`` itself, emptied, when it has that batch
        and at least the reserved capacity. A reset or a context refill then allocates nothing and keeps
        the cache's IO binding; a new cache each time (every bar in the looper) left the C heap fragmented,
        the process growing a few MB an hour."""
        if isinstance(past, InPlaceCache) and past.arrays and past.batch == batch and past.capacity >= self.reserved:
            past.length = 0
            return past
        return self.empty(self.base_shape, batch)

    def token_cache(self, batch: int) -> InPlaceCache:
        """The token model's cache for one event, reused across events (emptied, never reallocated)."""
        cache = self._token_caches.get(batch)
        if cache is None:
            cache = self._token_caches[batch] = self.empty(self.token_shape, batch, 2 * 8)
        cache.length = 0
        return cache

    def _room(self, cache: InPlaceCache, shape: GraphShape, needed: int) -> InPlaceCache:
        if needed <= cache.capacity:
            return cache
        if needed > self.max_positions + 8:
            raise ValueError(f"{needed} positions asked of a graph whose rotary table has {self.max_positions}")
        grown = self.empty(shape, cache.batch, max(needed, 2 * cache.capacity, MIN_CAPACITY))
        for new, old in zip(grown.arrays, cache.arrays):
            new[:, :, : cache.length] = old[:, :, : cache.length]
        grown.length = cache.length
        return grown

    def _output(self, shape: tuple, dtype: type) -> tuple[np.ndarray, ort.OrtValue]:
        out = self._out.get(shape)
        if out is None:
            array = np.empty(shape, dtype)
            out = (array, ort.OrtValue.ortvalue_from_numpy(array))
            # Kept for the shapes of a step, which repeat; a prefill's length is one-off, and keeping every
            # one grew the process for hours (hundreds of MB in a soak).
            if shape[1] <= KEPT_OUTPUT_ROWS and len(self._out) < KEPT_OUTPUTS:
                self._out[shape] = out
        return out

    def _run(self, session: ort.InferenceSession, cache: InPlaceCache, names: list[str], outputs: list[str],
             inputs: dict[str, np.ndarray], added: int, out_shape: tuple, dtype: type) -> np.ndarray:
        array, value = self._output(out_shape, dtype)
        binding, bound = cache.binding, cache.bound
        if binding is None:
            # Bound once: each present is the past buffer itself, and the position inputs are arrays
            # of the cache's own that are rewritten before each call (a CPU input is bound to its buffer).
            binding = cache.binding = session.io_binding()
            for name, past in zip(names, cache.values):
                binding.bind_ortvalue_input(name, past)
            for name, past in zip(outputs[1:], cache.values):
                binding.bind_ortvalue_output(name, past)
            binding.bind_cpu_input("seqlens_k", cache.seqlens)
            binding.bind_cpu_input("total_sequence_length", cache.total)
        # Inputs and the first output are bound again only when they are other objects than last time:
        # the engine passes the same buffers (token ids, empty states, head slices) call after call.
        if bound.get(outputs[0]) is not value:
            binding.bind_ortvalue_output(outputs[0], value)
            bound[outputs[0]] = value
        for name, value in inputs.items():
            if bound.get(name) is not value:
                binding.bind_cpu_input(name, value)
                bound[name] = value
        total = cache.length + added
        cache.seqlens.fill(total - 1)
        cache.total[()] = total
        start = time.perf_counter()
        session.run_with_iobinding(binding)
        first = array.copy()  # the kept array is overwritten by the next call of this shape
        self.ort_seconds += time.perf_counter() - start
        self.ort_calls += 1
        cache.length = total
        return first

    def run_base(self, x: np.ndarray, past: InPlaceCache) -> tuple[np.ndarray, InPlaceCache]:  # type: ignore[override]
        past = self._room(past, self.base_shape, past.length + x.shape[1])
        before = self.ort_seconds
        hidden = self._run(self.base, past, self.base_past_names, self.base_out, {"x": x}, x.shape[1],
                           (x.shape[0], x.shape[1], self.hidden_size), self.base_shape.dtype)
        self.ort_base_seconds += self.ort_seconds - before
        return hidden, past

    def run_token(self, hidden: np.ndarray, x: np.ndarray, past: InPlaceCache,  # type: ignore[override]
                  ids: np.ndarray | None = None) -> tuple[np.ndarray, InPlaceCache]:
        added = hidden.shape[1] + x.shape[1]
        past = self._room(past, self.token_shape, past.length + added)
        feeds = {"hidden": hidden.astype(self.token_shape.dtype, copy=False), "x": x}
        if self.head is not None:
            states = self._run(self.token, past, self.token_past_names, self.token_out, feeds, added,
                               (x.shape[0], added, self.hidden_size), self.token_shape.dtype)
            return self.head.logits(states, ids), past
        ids = self._all_ids if ids is None else ids
        feeds["head_ids"] = ids
        shape = (x.shape[0], added, len(ids))
        return self._run(self.token, past, self.token_past_names, self.token_out, feeds, added, shape,
                         self.token_shape.dtype), past

    def truncate(self, past: InPlaceCache, length: int) -> InPlaceCache:  # type: ignore[override]
        past.length = length
        return past

    def to_numpy(self, past: InPlaceCache) -> list[np.ndarray]:  # type: ignore[override]
        return [a[:, :, : past.length] for a in past.arrays]

    def from_numpy(self, arrays: list[np.ndarray]) -> InPlaceCache:  # type: ignore[override]
        length = arrays[0].shape[2]
        cache = self.empty(GraphShape(len(arrays) // 2, arrays[0].shape[1], arrays[0].shape[3], arrays[0].dtype),
                           arrays[0].shape[0], max(length, MIN_CAPACITY))
        for new, old in zip(cache.arrays, arrays):
            new[:, :, :length] = old
        cache.length = length
        return cache
