"""The inference engine: a SkyTNT two-level model (ONNX pair) with event-level KV cache, rollback and branches.

Runs the two graphs of shared/spec/skytnt-format.md section 4.1 with ONNX Runtime and numpy only (no torch):
``model_base.onnx`` turns event rows into hidden states and grows the event-level KV cache; ``model_token.onnx``
turns the last hidden state into the 8 tokens of the next event with its own small cache (the generation loop
of spec section 3.3). Layer, head and head-size counts are read from the graphs' inputs, so graphs made by
SkyTNT's own ``export.py`` run too.

State is explicit: ``n_events`` rows have been appended (their ids are kept in a history), the cache covers a
context window of them, and ``rollback(n)`` returns to any earlier count. When the context would pass
``window`` events the oldest are dropped (the BOS row is kept) and the rest re-prefilled (spec section 5: the
reference keeps the last 4096 events). A batch of ``branches`` shares one prompt: each branch is a row of the
graphs' batch dimension.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from musebot.engine.inplace import INPLACE_MARK, InPlaceRunner, load_head
from musebot.engine.masks import Constraints, MaskTable, time2_of
from musebot.engine.precision import (
    BASE_GRAPH,
    CONFIG_FILE,
    PRECISIONS,
    TOKEN_GRAPH,
    choose_precision,
    model_root,
)
from musebot.engine.runners import BoundRunner, CpuRunner, ModelLoadError, session_options
from musebot.engine.sampling import Rng, SamplerSettings, candidates, choose, draw_uniform, sample_one
from musebot.tokenizers.vocab import Vocabulary

log = logging.getLogger(__name__)

DEFAULT_WINDOW = 4096  # the reference's context limit (spec 3.1 max_position_embeddings, 5 checklist)
class EngineStateError(RuntimeError):
    """An engine call out of order (sampling before any row was appended, rolling forward...)."""


class _History:
    """Every appended row and the event model's output at it, per branch, in buffers that grow by doubling.

    Appending one event costs a copy of one row and one hidden vector, not of the whole history.
    """

    def __init__(self, batch: int = 1, hidden_size: int = 0, dtype: type = np.float32) -> None:
        self.n = 0
        self._rows = np.zeros((batch, 64, 8), np.int64)
        self._hidden = np.zeros((batch, 64, hidden_size), dtype)

    @property
    def batch(self) -> int:
        return self._rows.shape[0]

    @property
    def rows(self) -> np.ndarray:
        return self._rows[:, : self.n]

    @property
    def hidden(self) -> np.ndarray:
        return self._hidden[:, : self.n]

    def _reserve(self, n: int) -> None:
        if n > self._rows.shape[1]:
            size = max(n, 2 * self._rows.shape[1])
            self._rows = _grown(self._rows, size)
            self._hidden = _grown(self._hidden, size)

    def extend(self, rows: np.ndarray) -> None:
        self._reserve(self.n + rows.shape[1])
        self._rows[:, self.n : self.n + rows.shape[1]] = rows
        self.n += rows.shape[1]

    def set_hidden(self, start: int, hidden: np.ndarray) -> None:
        if self._hidden.shape[2] != hidden.shape[2] or self._hidden.dtype != hidden.dtype:
            self._hidden = np.zeros((*self._rows.shape[:2], hidden.shape[2]), hidden.dtype)
        self._hidden[:, start : start + hidden.shape[1]] = hidden

    def truncate(self, n: int) -> None:
        self.n = n

    def map_branches(self, index: np.ndarray) -> None:
        """Rebuild the branch axis: ``index`` lists, for each new branch, the old branch it copies."""
        self._rows = self._rows[index]
        self._hidden = self._hidden[index]


def _grown(array: np.ndarray, size: int) -> np.ndarray:
    out = np.zeros((array.shape[0], size, *array.shape[2:]), array.dtype)
    out[:, : array.shape[1]] = array
    return out


def resolve_model_dir(model_dir: str | Path, provider: str = "cpu", precision: str | None = None
                      ) -> tuple[Path, Path]:
    """(folder with config.json, folder with the graph pair the engine runs for ``provider``/``precision``)."""
    return model_root(model_dir), choose_precision(model_dir, provider, precision)[1]


class Engine:
    """Event-level generation with a KV cache over ``branches`` parallel continuations.

    Typical use::

        engine = Engine.load("model/")
        engine.append(prompt_rows)                  # prefill (n, 8) ids
        for _ in range(100):
            row = engine.step(SamplerSettings(), masks, rng)[0]   # sample one event and append it
        engine.rollback(len(prompt_rows))           # forget the continuation, keep the prompt cached
    """

    def __init__(
        self,
        runner: CpuRunner,
        config: dict[str, Any],
        window: int | None = None,
        provider: str = "cpu",
    ) -> None:
        if "tokenizer" not in config:
            raise ModelLoadError("config.json has no 'tokenizer' entry: not a SkyTNT midi-model config")
        self.config = config
        self.provider = provider
        self.precision = "fp32"  # of the graphs the runner holds; ``load`` sets it from the folder it chose
        self.vocab = Vocabulary.for_version(config["tokenizer"].get("version", "v2"))
        self.runner = runner
        max_positions = int(config.get("net_config", {}).get("max_position_embeddings", DEFAULT_WINDOW))
        self.window = int(window or max_positions)
        limit = getattr(runner, "max_positions", None)
        if limit is not None and self.window > limit:
            # In-place graphs carry a rotary table of the model's positions: a longer context cannot be encoded.
            log.warning("window %d clamped to the graphs' %d positions", self.window, limit)
            self.window = limit
        if self.window < 2:
            raise ValueError(f"window must hold at least 2 events, got {self.window}")
        self.batch = 1
        self._history = _History()  # every appended row and its event-model output, per branch
        self.reserved = 0  # events the history and cache are sized for from the start (``reserve``)
        self._past: list = runner.empty(runner.base_shape, 1)
        self._ctx_start = 0  # history index where the cached context starts (after the pinned BOS row)
        self._pinned = False  # whether history row 0 (BOS) is kept in front of a slid window
        self.last_logits: np.ndarray | None = None
        self._default_masks: MaskTable | None = None
        self._last_table: MaskTable | None = None
        self._param_count = {i: len(self.vocab.events[name]) for name, i in self.vocab.event_ids.items()}
        self._token_inputs: tuple[np.ndarray, ...] | None = None  # (no states, no tokens, one token) buffers

    # ---- construction ---------------------------------------------------------------------------------
    @classmethod
    def load(
        cls,
        model_dir: str | Path,
        provider: str = "auto",
        threads: int = 1,
        window: int | None = None,
        io_binding: bool | None = None,
        precision: str | None = None,
    ) -> Engine:
        """Open ``model_dir`` (config.json + model_base.onnx + model_token.onnx, or those in ``onnx/``).

        ``provider``: "cpu", "cuda" or "auto" (CUDA when onnxruntime offers it). ``threads``: CPU intra-op
        threads (1 by default: a real-time process wants a predictable, single busy core). ``window``: most
        events in the cache (default: the model's 4096). ``io_binding``: keep caches as device OrtValues
        (default: on for CUDA, off for CPU, where plain numpy feeds are as fast). ``precision``: "fp32",
        "fp16", "int8" or "int4" graphs (a folder of that name, see ``musebot.engine.precision``); None or
        "auto" takes the best the folder has for the provider (CPU: int8, CUDA: fp16, else fp32).
        """
        if precision not in (None, "auto", *PRECISIONS):
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)} or 'auto', got {precision!r}")
        root = model_root(model_dir)
        try:
            config = json.loads((root / CONFIG_FILE).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ModelLoadError(f"{root / CONFIG_FILE}: cannot read it ({exc})") from exc
        available = ort.get_available_providers()
        if provider == "auto":
            provider = "cuda" if "CUDAExecutionProvider" in available else "cpu"
        if provider not in ("cpu", "cuda"):
            raise ValueError(f"provider must be 'auto', 'cpu' or 'cuda', got {provider!r}")
        if provider == "cuda" and "CUDAExecutionProvider" not in available:
            raise ModelLoadError("provider 'cuda' asked for, but this onnxruntime has no CUDAExecutionProvider")
        # The graphs' own input types tell the runner the cache dtype (fp16 halves CUDA's cache traffic).
        precision, graphs = choose_precision(root, provider, precision)
        options = session_options(threads)
        base_path, token_path = graphs / BASE_GRAPH, graphs / TOKEN_GRAPH
        providers = ["CPUExecutionProvider"]
        if provider == "cuda":
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        try:
            base = ort.InferenceSession(str(base_path), options, providers=providers)
            token = ort.InferenceSession(str(token_path), options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception family
            raise ModelLoadError(f"{graphs}: onnxruntime cannot load the graphs ({exc})") from exc
        if io_binding is None:
            io_binding = provider == "cuda"
        runner: CpuRunner
        if any(i.name == INPLACE_MARK for i in base.get_inputs()):
            if provider != "cpu":
                raise ModelLoadError(f"{graphs}: graphs with in-place caches run on the CPU provider only")
            try:
                runner = InPlaceRunner(base, token, config, load_head(graphs))
            except (OSError, ValueError) as exc:
                raise ModelLoadError(f"{graphs}: {exc}") from exc
        elif io_binding:
            runner = BoundRunner(base, token, config, device=provider)
        else:
            runner = CpuRunner(base, token, config)
        engine = cls(runner, config, window=window, provider=provider)
        engine.precision = precision
        return engine

    # ---- state ----------------------------------------------------------------------------------------
    @property
    def n_events(self) -> int:
        """Rows appended so far (per branch), including those the window has slid past."""
        return self._history.n

    @property
    def context_length(self) -> int:
        """Rows currently in the KV cache."""
        return int(self._pinned) + self.n_events - self._ctx_start

    @property
    def rows(self) -> np.ndarray:
        """Every appended row, ``(branches, n_events, 8)`` int64 (a copy)."""
        return self._history.rows.copy()

    @property
    def hidden(self) -> np.ndarray:
        """The event model's output at the last row, ``(branches, hidden_size)``: what the next event samples from."""
        if self.n_events == 0:
            raise EngineStateError("no row appended yet: append a prompt (at least the BOS row) first")
        return self._history.hidden[:, -1].astype(np.float32)

    def reserve(self, n_events: int, warm: bool = True) -> None:
        """Size the history and the event model's cache for ``n_events`` from the start, so a session that
        stays within that many events allocates nothing more as its context fills (a cache otherwise grows
        by doubling as it is needed). ``warm`` also runs one prefill of that length and forgets it: ONNX
        Runtime's memory arena then reaches the size the longest prefill needs at once, not over an hour.
        Runners without preallocated caches keep only the history's reservation."""
        n_events = self.reserved = min(int(n_events), self.window)
        self._history._reserve(n_events)
        if hasattr(self.runner, "reserved"):
            self.runner.reserved = n_events
        if warm and n_events > 0:
            self.reset()
            self.append(np.full((n_events, 8), self.vocab.pad_id, np.int64))
        self.reset()

    def reset(self) -> None:
        """Forget everything (one branch, empty cache)."""
        self.batch = 1
        if self._history.batch == 1:
            self._history.truncate(0)  # its buffers (and their reservation) are kept
        else:
            self._history = _History()
            self._history._reserve(self.reserved)
        self._past = self.runner.cleared(self._past, 1)  # the same buffers, when they fit
        self._ctx_start, self._pinned = 0, False

    # ---- event model ----------------------------------------------------------------------------------
    def _check_rows(self, rows: np.ndarray | Sequence) -> np.ndarray:
        rows = np.asarray(rows)
        if rows.ndim == 2:
            rows = np.broadcast_to(rows[None], (self.batch, *rows.shape))
        if rows.ndim != 3 or rows.shape[0] != self.batch or rows.shape[1] == 0:
            raise ValueError(
                f"rows must be (n, 8) or (branches={self.batch}, n, 8) with n >= 1, got shape {rows.shape}"
            )
        if not np.issubdtype(rows.dtype, np.integer):
            raise ValueError(f"rows must hold integer token ids, got dtype {rows.dtype}")
        width = rows.shape[2]
        if width > 8:
            raise ValueError(f"rows have {width} tokens; an event row has at most 8")
        if rows.min() < 0 or rows.max() >= self.vocab.vocab_size:
            raise ValueError(f"token ids must be in 0..{self.vocab.vocab_size - 1} for this model's vocabulary")
        out = np.full((self.batch, rows.shape[1], 8), self.vocab.pad_id, np.int64)
        out[:, :, :width] = rows
        return out

    def append(self, rows: np.ndarray | Sequence) -> np.ndarray:
        """Feed rows to the event model: a whole prompt (prefill) or one new event; returns the last hidden state.

        ``rows`` is ``(n, 8)`` (the same rows for every branch) or ``(branches, n, 8)``; shorter rows are padded.
        Returns ``(branches, hidden_size)`` float32. Slides the window when the context would pass it.
        """
        self._feed(self._check_rows(rows))
        return self.hidden

    def _feed(self, rows: np.ndarray) -> None:
        """Append checked ``(branches, n, 8)`` rows to the history and run them through the event model."""
        n_before = self.n_events
        self._history.extend(rows)
        if self.context_length > self.window:
            self._refill(self.n_events)
        else:
            hidden, self._past = self.runner.run_base(rows, self._past)
            # Kept for every row, so a rollback knows the state to sample from without a recompute.
            self._history.set_hidden(n_before, hidden)

    def _refill(self, n_events: int, keep: int | None = None) -> None:
        """Rebuild the cache for history ``[:n_events]``: the newest ``keep`` rows, behind a pinned BOS row.

        By default everything is kept if it fits, else three quarters of the window, so the next re-prefill
        comes a quarter window later instead of on every event.
        """
        self._history.truncate(n_events)
        history = self._history.rows
        pin = n_events > 0 and bool(np.all(history[:, 0, 0] == self.vocab.bos_id))
        if keep is None:
            keep = n_events if n_events <= self.window else self.slide_keep
        keep = min(n_events, keep)
        start = n_events - keep
        if start > 0 and pin:
            start += 1  # the pinned BOS row takes one place of the window
            context = np.concatenate([history[:, :1], history[:, start:]], axis=1)
        else:
            pin = False
            context = history[:, start:]
        self._ctx_start, self._pinned = start, pin
        self._past = self.runner.cleared(self._past, self.batch)
        if n_events == 0:
            return
        log.debug("context refill: %d events from history row %d (BOS pinned: %s)", context.shape[1], start, pin)
        hidden, self._past = self.runner.run_base(context, self._past)
        self._history.set_hidden(start, hidden[:, int(pin):])

    @property
    def slide_keep(self) -> int:
        """Rows (BOS included) a slide keeps: three quarters of the window, at least BOS and the last event."""
        return max(2, self.window * 3 // 4)

    def slide(self) -> bool:
        """Slide the window now if the context is longer than ``slide_keep``; returns whether it did.

        A slide re-prefills ``slide_keep`` events, which takes as long as a prefill of that length; a real-time
        caller can call this at a quiet moment (between phrases) instead of letting ``append`` do it mid-phrase.
        """
        if self.context_length <= self.slide_keep:
            return False
        self._refill(self.n_events, self.slide_keep)
        return True

    def rollback(self, n_events: int) -> None:
        """Return to the state after the first ``n_events`` rows: later rows leave the history and the cache."""
        if not 0 <= n_events <= self.n_events:
            raise EngineStateError(f"cannot roll back to {n_events} events: only {self.n_events} were appended")
        if n_events == self.n_events:
            return
        keep_in_context = n_events - self._ctx_start
        if n_events > 0 and keep_in_context >= 1 and (self._ctx_start == 0 or self._pinned):
            self._past = self.runner.truncate(self._past, int(self._pinned) + keep_in_context)
            self._history.truncate(n_events)
        else:
            # The target is older than the slid context: rebuild the window that ends there.
            self._refill(n_events)

    # ---- branches -------------------------------------------------------------------------------------
    def branch(self, n: int) -> None:
        """Turn the single current state into ``n`` identical branches (the graphs' batch dimension)."""
        if self.batch != 1:
            raise EngineStateError(f"already {self.batch} branches: select() one before branching again")
        if n < 1:
            raise ValueError(f"branch count must be >= 1, got {n}")
        self.batch = n
        self._history.map_branches(np.zeros(n, np.intp))
        arrays = self.runner.to_numpy(self._past)
        self._past = self.runner.from_numpy([np.repeat(a, n, axis=0) for a in arrays])

    def select(self, index: int) -> None:
        """Keep only branch ``index`` (e.g. the continuation a listener liked) and drop the others."""
        if not 0 <= index < self.batch:
            raise ValueError(f"branch {index} does not exist (have {self.batch})")
        self.batch = 1
        self._history.map_branches(np.array([index]))
        arrays = self.runner.to_numpy(self._past)
        self._past = self.runner.from_numpy([a[index : index + 1] for a in arrays])

    # ---- token model ----------------------------------------------------------------------------------
    def sample_event(
        self,
        settings: SamplerSettings | None = None,
        masks: MaskTable | Constraints | None = None,
        rng: Rng | None = None,
        keep_logits: bool = False,
    ) -> np.ndarray:
        """Sample the next event of every branch: ``(branches, 8)`` int64 ids (not appended; see ``step``).

        Runs the token model once per token with its own cache, stopping as soon as every branch has all the
        parameters of its event type (spec 3.3: 8 runs for a note, 5 for a tempo change). ``masks`` limits
        each token to allowed ids (default: the reference's masks; a ``Constraints`` is turned into a table once
        and kept while the same constraints come back); ``rng`` is one Generator or one per branch.
        With ``keep_logits`` the raw logits of each run are kept in ``last_logits`` ``(branches, runs, V)``.
        """
        settings = settings or SamplerSettings()
        masks = self._mask_table(masks)
        rng = rng if rng is not None else np.random.default_rng()
        if self.batch == 1 and not keep_logits and isinstance(rng, np.random.Generator) and self.n_events:
            self.last_logits = None
            return self._sample_one_event(settings, masks, rng)
        vocab, batch = self.vocab, self.batch
        last_rows = self._history.rows[:, -1] if self.n_events else np.zeros((batch, 8), np.int64)
        prev_time2 = [time2_of(vocab, r) for r in last_rows]
        per_branch_rng = not isinstance(rng, np.random.Generator)
        row = np.full((batch, 8), vocab.pad_id, np.int64)
        live = list(range(batch))  # branches still sampling this event
        token_past = self.runner.token_cache(batch)
        states = self.hidden[:, None, :]
        x = np.zeros((batch, 0), np.int64)
        kept = []
        for position in range(8):
            # The allowed ids are known before the run (they follow from the tokens sampled so far), so the
            # token graph scores only those rows. Branches sharing one allowed-id array are sampled together.
            groups: dict[int, tuple[np.ndarray, list[int]]] = {}
            for k, b in enumerate(live):
                ids = masks.allowed(position, row[b], prev_time2[b])
                groups.setdefault(id(ids), (ids, []))[1].append(k)
            if keep_logits:
                head = None
            elif len(groups) == 1:
                head = next(iter(groups.values()))[0]
            else:
                head = np.unique(np.concatenate([ids for ids, _ in groups.values()]))
            logits, token_past = self.runner.run_token(states, x, token_past, head)
            logits = logits[:, -1]
            if keep_logits:
                kept.append(logits.astype(np.float32))
            u = draw_uniform([rng[b] for b in live] if per_branch_rng else rng, len(live))
            for ids, members in groups.values():
                # Columns of ``logits`` holding ``ids``: all of them when the head was exactly ``ids``.
                columns = ids if head is None else None if head is ids else np.searchsorted(head, ids)
                targets = [live[k] for k in members]
                if len(targets) == 1:  # the common case (one branch): 1-D numpy, fewer calls
                    scores = logits[targets[0]] if columns is None else logits[targets[0], columns]
                    row[targets[0], position] = ids[sample_one(scores, settings, u[members[0]])]
                    continue
                scores = logits[targets] if columns is None else logits[targets][:, columns]
                index, probs = candidates(scores.astype(np.float64), settings)
                picked = index[np.arange(len(targets)), choose(probs, u[members])]
                row[targets, position] = ids[picked]
            # A branch is done once eos is chosen or every parameter of its event type is sampled.
            live = [b for b in live if position < self._param_count.get(int(row[b, 0]), 0)]
            if not live:
                break
            states = states[:, :0]
            x = row[:, position : position + 1]
        self.last_logits = np.stack(kept, axis=1) if keep_logits else None
        return row

    def _sample_one_event(self, settings: SamplerSettings, masks: MaskTable, rng: np.random.Generator
                          ) -> np.ndarray:
        """``sample_event`` for one branch and one generator, the live case: the same draws and the same
        choices as the general path, with none of its per-branch bookkeeping. The token graph's inputs
        after the first run are buffers reused from event to event (the runner binds them once)."""
        vocab = self.vocab
        n = self.n_events
        rows, hidden = self._history._rows, self._history._hidden
        prev_time2 = time2_of(vocab, rows[0, n - 1])
        row = np.full(8, vocab.pad_id, np.int64)
        if self._token_inputs is None or self._token_inputs[0].shape[2] != hidden.shape[2]:
            self._token_inputs = (np.zeros((1, 0, hidden.shape[2]), hidden.dtype), np.zeros((1, 0), np.int64),
                                  np.zeros((1, 1), np.int64))
        no_states, no_tokens, token = self._token_inputs
        token_past = self.runner.token_cache(1)
        states, x = hidden[:, n - 1 : n], no_tokens
        params = 0
        for position in range(8):
            ids = masks.allowed(position, row, prev_time2)
            logits, token_past = self.runner.run_token(states, x, token_past, ids)
            row[position] = ids[sample_one(logits[0, -1], settings, rng.random())]
            if position == 0:
                params = self._param_count.get(int(row[0]), 0)
            if position >= params:  # eos chosen, or every parameter of the event type sampled
                break
            token[0, 0] = row[position]
            states, x = no_states, token
        return row[None]

    def step(
        self,
        settings: SamplerSettings | None = None,
        masks: MaskTable | Constraints | None = None,
        rng: Rng | None = None,
    ) -> np.ndarray:
        """Sample the next event of every branch and append it; returns ``(branches, 8)``."""
        row = self.sample_event(settings, masks, rng)
        self._feed(row[:, None, :])  # the sampler's own rows need no validation
        return row

    def generate(
        self,
        n_events: int,
        settings: SamplerSettings | None = None,
        masks: MaskTable | Constraints | None = None,
        rng: Rng | None = None,
        stop_at_eos: bool = True,
    ) -> np.ndarray:
        """Sample and append up to ``n_events`` events; returns the new rows ``(branches, k, 8)``.

        Stops early once every branch has produced EOS (the EOS row is included and appended).
        """
        rows = []
        ended = np.zeros(self.batch, bool)
        for _ in range(n_events):
            row = self.step(settings, masks, rng)
            rows.append(row)
            ended |= row[:, 0] == self.vocab.eos_id
            if stop_at_eos and ended.all():
                break
        if not rows:
            return np.zeros((self.batch, 0, 8), np.int64)
        return np.stack(rows, axis=1)

    def _mask_table(self, masks: MaskTable | Constraints | None) -> MaskTable:
        if masks is None:
            return self.default_masks()
        if isinstance(masks, MaskTable):
            return masks
        if self._last_table is None or self._last_table.constraints != masks:
            self._last_table = MaskTable(self.vocab, masks)
        return self._last_table

    def default_masks(self) -> MaskTable:
        """The reference's masks: every event type and eos, full parameter ranges."""
        if self._default_masks is None:
            self._default_masks = MaskTable(self.vocab)
        return self._default_masks

    # ---- uncached references (tests, benchmarks) -----------------------------------------------------
    def hidden_uncached(self, rows: np.ndarray) -> np.ndarray:
        """Event-model outputs for all of ``rows`` ``(B, n, 8)`` in one pass with no cache: ``(B, n, H)``."""
        rows = np.asarray(rows, np.int64)
        return self.runner.run_base(rows, self.runner.empty(self.runner.base_shape, rows.shape[0]))[0]

    def token_logits_uncached(self, hidden: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        """Token-model logits for ``[hidden, tokens...]`` in one pass: hidden ``(B, H)``, tokens ``(B, k)``
        -> ``(B, k + 1, V)`` (teacher forcing, as in training, spec 3.2)."""
        hidden = np.asarray(hidden)[:, None, :]
        tokens = np.asarray(tokens, np.int64)
        empty = self.runner.empty(self.runner.token_shape, hidden.shape[0])
        return self.runner.run_token(hidden, tokens, empty, None)[0]
