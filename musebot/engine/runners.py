"""How the engine runs the two graphs: sessions, KV-cache layout and the calls themselves.

``CpuRunner`` feeds numpy arrays and gets numpy back (the cache is the graphs' own outputs);
``BoundRunner`` keeps the caches on the device with IO binding (CUDA; it runs on CPU too, for the tests).
Both run the reference token graph (full-vocabulary logits) and musebot's engine token graph, whose
``head_ids`` input makes it score only the vocabulary rows the current position may take.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnxruntime as ort

from musebot.tokenizers.vocab import Vocabulary

_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


class ModelLoadError(RuntimeError):
    """A model folder that cannot be used (missing files, graphs that do not look like the SkyTNT pair)."""


@dataclass(frozen=True)
class GraphShape:
    """KV layout of one graph, read from its ``past_key_values.{i}.key`` inputs."""

    layers: int
    heads: int
    head_dim: int
    dtype: type

    @classmethod
    def of(cls, session: ort.InferenceSession, fallback: dict[str, Any]) -> GraphShape:
        past = [i for i in session.get_inputs() if i.name.startswith("past_key_values.") and i.name.endswith(".key")]
        if not past:
            raise ModelLoadError(
                "graph has no past_key_values inputs: it is an old export without KV cache; re-export it "
                "with `musebot export` (or SkyTNT's export.py after Oct 2024)"
            )
        shape = past[0].shape
        # Static in every export we know; a symbolic axis falls back to the Llama config.
        heads = shape[1] if isinstance(shape[1], int) else fallback["num_attention_heads"]
        head_dim = shape[3] if isinstance(shape[3], int) else (
            fallback.get("head_dim") or fallback["hidden_size"] // fallback["num_attention_heads"]
        )
        return cls(len(past), heads, head_dim, _DTYPES.get(past[0].type, np.float32))

    def names(self, prefix: str) -> list[str]:
        return [f"{prefix}.{i}.{kv}" for i in range(self.layers) for kv in ("key", "value")]


class CpuRunner:
    """Runs the graphs with numpy in and out; the cache is a list of numpy arrays (the graphs' own outputs)."""

    def __init__(self, base: ort.InferenceSession, token: ort.InferenceSession, config: dict[str, Any]) -> None:
        self.base, self.token = base, token
        self.base_shape = GraphShape.of(base, config.get("net_config", {}))
        self.token_shape = GraphShape.of(token, config.get("net_token_config", {}))
        self.base_past_names = self.base_shape.names("past_key_values")
        self.token_past_names = self.token_shape.names("past_key_values")
        self.base_out = ["hidden"] + self.base_shape.names("present")
        self.token_out = ["y"] + self.token_shape.names("present")
        # musebot's engine token graph scores only the rows it is given; the reference one all of them.
        self.sliced = any(i.name == "head_ids" for i in token.get_inputs())
        self.vocab_size = Vocabulary.for_version(config["tokenizer"].get("version", "v2")).vocab_size
        self._all_ids = np.arange(self.vocab_size, dtype=np.int64)
        # Time spent inside session runs, for the engine-overhead figure of `musebot bench`.
        self.ort_seconds = 0.0
        self.ort_base_seconds = 0.0
        self.ort_calls = 0

    def empty(self, shape: GraphShape, batch: int) -> list[np.ndarray]:
        return [np.zeros((batch, shape.heads, 0, shape.head_dim), shape.dtype)] * (2 * shape.layers)

    def cleared(self, past: list, batch: int) -> list:
        """An empty event-model cache for ``batch`` branches, in place of ``past`` (which is let go)."""
        return self.empty(self.base_shape, batch)

    def run_base(self, x: np.ndarray, past: list) -> tuple[np.ndarray, list]:
        feeds = dict(zip(self.base_past_names, past))
        feeds["x"] = x
        start = time.perf_counter()
        out = self.base.run(self.base_out, feeds)
        elapsed = time.perf_counter() - start
        self.ort_seconds += elapsed
        self.ort_base_seconds += elapsed
        self.ort_calls += 1
        return out[0], out[1:]

    def run_token(self, hidden: np.ndarray, x: np.ndarray, past: list, ids: np.ndarray | None = None
                  ) -> tuple[np.ndarray, list]:
        """Token-model logits ``(B, S + T, len(ids))`` for the sorted vocabulary ``ids`` (None: all of them)."""
        feeds = dict(zip(self.token_past_names, past))
        feeds["hidden"] = hidden.astype(self.token_shape.dtype, copy=False)
        feeds["x"] = x
        if self.sliced:
            feeds["head_ids"] = self._all_ids if ids is None else ids
        start = time.perf_counter()
        out = self.token.run(self.token_out, feeds)
        self.ort_seconds += time.perf_counter() - start
        self.ort_calls += 1
        logits = out[0] if self.sliced or ids is None else out[0][..., ids]
        return logits, out[1:]

    def token_cache(self, batch: int) -> list:
        """An empty token-model cache for one event."""
        return self.empty(self.token_shape, batch)

    def truncate(self, past: list, length: int) -> list:
        """The cache of the first ``length`` positions (a rollback)."""
        return self.from_numpy([a[:, :, :length] for a in self.to_numpy(past)])

    # Cache surgery (rare: rollback, branching) goes through numpy on every backend.
    def to_numpy(self, past: list) -> list[np.ndarray]:
        return past

    def from_numpy(self, arrays: list[np.ndarray]) -> list:
        return [np.ascontiguousarray(a) for a in arrays]


class BoundRunner(CpuRunner):
    """IO binding with the KV caches left on the device as OrtValues; only ids go up and hidden/logits come
    down. Used on CUDA; on CPU it runs too (``io_binding=True``), which is how the tests cover it without a GPU.
    """

    def __init__(self, base: ort.InferenceSession, token: ort.InferenceSession, config: dict[str, Any],
                 device: str = "cuda", device_id: int = 0) -> None:
        super().__init__(base, token, config)
        self.device, self.device_id = device, device_id

    def _ort(self, array: np.ndarray) -> ort.OrtValue:
        return ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array), self.device, self.device_id)

    def empty(self, shape: GraphShape, batch: int) -> list:
        return [
            ort.OrtValue.ortvalue_from_shape_and_type(
                (batch, shape.heads, 0, shape.head_dim), shape.dtype, self.device, self.device_id
            )
            for _ in range(2 * shape.layers)
        ]

    def _run(self, session: ort.InferenceSession, cpu_inputs: dict, past_names: list, past: list,
             outputs: list[str]) -> tuple[np.ndarray, list]:
        binding = session.io_binding()
        for name, value in cpu_inputs.items():
            binding.bind_cpu_input(name, value)
        for name, value in zip(past_names, past):
            binding.bind_ortvalue_input(name, value)
        binding.bind_output(outputs[0], "cpu")
        for name in outputs[1:]:
            binding.bind_output(name, self.device, self.device_id)
        start = time.perf_counter()
        session.run_with_iobinding(binding)
        values = binding.get_outputs()
        first = values[0].numpy()
        self.ort_seconds += time.perf_counter() - start
        self.ort_calls += 1
        return first, list(values[1:])

    def run_base(self, x: np.ndarray, past: list) -> tuple[np.ndarray, list]:
        before = self.ort_seconds
        out = self._run(self.base, {"x": x}, self.base_past_names, past, self.base_out)
        self.ort_base_seconds += self.ort_seconds - before
        return out

    def run_token(self, hidden: np.ndarray, x: np.ndarray, past: list, ids: np.ndarray | None = None
                  ) -> tuple[np.ndarray, list]:
        feeds = {"hidden": np.ascontiguousarray(hidden, dtype=self.token_shape.dtype), "x": x}
        if self.sliced:
            feeds["head_ids"] = self._all_ids if ids is None else ids
        logits, present = self._run(self.token, feeds, self.token_past_names, past, self.token_out)
        return (logits if self.sliced or ids is None else logits[..., ids]), present

    def to_numpy(self, past: list) -> list[np.ndarray]:
        return [v.numpy() for v in past]

    def from_numpy(self, arrays: list[np.ndarray]) -> list:
        return [self._ort(a) for a in arrays]


def session_options(threads: int) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Spinning worker threads burn the cores the MIDI and audio threads need; sleep instead.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    # A memory pattern is planned and kept for every new set of input shapes, and a live session meets new
    # ones for hours (prefills of every length, head slices, cache capacities): the process grew with them.
    # Measured: the same speed without it (5,600 steps 88.6 s against 89.6 s), 20 MB less at the plateau.
    options.enable_mem_pattern = False
    options.log_severity_level = 3
    return options


