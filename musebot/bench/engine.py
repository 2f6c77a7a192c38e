"""``musebot bench``: the engine at each precision against the plainest correct loop, in one process.

Measured (shared/spec/skytnt-format.md section 5: "latency budget per note = 1 base step + 8 token steps"):

* ``reference``: the loop of spec section 3.3 as SkyTNT's ``app_onnx.py`` runs it: the fp32 reference pair,
  a full-vocabulary token call per token, numpy softmax, mask, sort and top-p/top-k per token;
* ``engine[precision]``: musebot's ``Engine.step`` (sample one event, append it) after ``context`` events, for
  every precision the model folder holds, with the share spent inside ONNX Runtime;
* ``generate``: a whole generation of N events from BOS, engine (default precision) against the reference;
* ``prefill``: one prefill of ``context`` events.

The runs take turns (16 events of each, then the next; whole generations alternate), so a shared machine
whose load drifts during the benchmark slows each alike.

Beside each, the weight bytes one note event reads (base call + 8 token calls; an embedding or a gathered head
reads only its rows) and the floor they imply at the measured memory bandwidth: at batch 1 a decoder streams
its weights, so time follows bytes. Figures are medians and 99th percentiles in milliseconds; ratios compare
figures of this run only (the machine is shared). ``--shape tv2o-medium`` builds a model of SkyTNT's flagship
shape with random weights (speed does not depend on them) and exports it to a temporary folder.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from musebot.engine.engine import Engine
from musebot.engine.inplace import HEAD_FILE
from musebot.engine.masks import Constraints, MaskTable
from musebot.engine.precision import BASE_GRAPH, TOKEN_GRAPH, available_precisions
from musebot.engine.runners import session_options
from musebot.engine.sampling import SamplerSettings
from musebot.tokenizers.vocab import Vocabulary

NO_EOS = Constraints(allow_eos=False)  # keep generating: every timed event is a full one


def synthetic_context(engine: Engine, length: int, seed: int = 0) -> np.ndarray:
    """BOS plus ``length - 1`` random but well-formed note rows: the model's speed does not depend on content."""
    vocab = engine.vocab
    rng = np.random.default_rng(seed)
    rows = np.full((length, 8), vocab.pad_id, np.int64)
    rows[0, 0] = vocab.bos_id
    kinds = vocab.events["note"]
    rows[1:, 0] = vocab.event_ids["note"]
    for i, kind in enumerate(kinds):
        size = {"time1": 2, "channel": 9, "track": 4, "duration": 32}.get(kind, vocab.event_parameters[kind])
        rows[1:, i + 1] = vocab.parameter_offsets[kind] + rng.integers(0, size, length - 1)
    return rows


def summarise(seconds: list[float]) -> dict[str, float]:
    ms = np.array(seconds) * 1e3
    return {
        "p50_ms": float(np.median(ms)),
        "p99_ms": float(np.percentile(ms, 99)),
        "events_per_s": float(1e3 / np.median(ms)),
        "n": len(ms),
    }


class ReferenceLoop:
    """Spec 3.3's generate loop over the fp32 reference pair, written as plainly as SkyTNT's app_onnx.py.

    Every token call scores the whole vocabulary; the sampler is softmax, mask after softmax, a full sort,
    top-p against the masked mass, top-k, renormalise, draw. The KV caches are the graphs' own outputs.
    """

    def __init__(self, graphs: Path, vocab: Vocabulary, threads: int, top_p: float = 0.98, top_k: int = 20):
        import onnxruntime as ort

        options = session_options(threads)
        self.base = ort.InferenceSession(str(graphs / BASE_GRAPH), options, providers=["CPUExecutionProvider"])
        self.token = ort.InferenceSession(str(graphs / TOKEN_GRAPH), options, providers=["CPUExecutionProvider"])
        self.vocab, self.top_p, self.top_k = vocab, top_p, top_k
        self.base_past = [i for i in self.base.get_inputs() if i.name.startswith("past")]
        self.token_past = [i for i in self.token.get_inputs() if i.name.startswith("past")]
        self.type_mask = np.zeros(vocab.vocab_size, bool)
        self.type_mask[list(vocab.event_ids.values())] = True  # no eos: the bench generates full events
        self.kind_masks = {}
        for kind in vocab.event_parameters:
            mask = np.zeros(vocab.vocab_size, bool)
            mask[slice(*vocab.parameter_range(kind))] = True
            self.kind_masks[kind] = mask

    @staticmethod
    def _empty(inputs: list, batch: int = 1) -> dict[str, np.ndarray]:
        return {i.name: np.zeros((batch, i.shape[1], 0, i.shape[3]), np.float32) for i in inputs}

    def append(self, rows: np.ndarray, past: dict | None) -> tuple[np.ndarray, dict]:
        feeds = {"x": rows[None], **(past or self._empty(self.base_past))}
        out = self.base.run(None, feeds)
        return out[0][:, -1:], {i.name: v for i, v in zip(self.base_past, out[1:])}

    def _sample(self, probs: np.ndarray, rng: np.random.Generator) -> int:
        order = np.argsort(-probs)
        sorted_probs = probs[order]
        cumulative = np.cumsum(sorted_probs)
        sorted_probs[cumulative - sorted_probs > self.top_p] = 0
        sorted_probs[self.top_k:] = 0
        sorted_probs = sorted_probs / sorted_probs.sum()
        return int(order[rng.choice(len(sorted_probs), p=sorted_probs)])

    def event(self, hidden: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        row = np.full(8, self.vocab.pad_id, np.int64)
        past = self._empty(self.token_past)
        feeds = {"hidden": hidden, "x": np.zeros((1, 0), np.int64)}
        kinds: list[str] = []
        for i in range(8):
            out = self.token.run(None, {**feeds, **past})
            logits = out[0][0, -1]
            past = {p.name: v for p, v in zip(self.token_past, out[1:])}
            mask = self.type_mask if i == 0 else self.kind_masks[kinds[i - 1]]
            exp = np.exp(logits - logits.max())
            row[i] = self._sample(exp / exp.sum() * mask, rng)
            if i == 0:
                kinds = self.vocab.events[self.vocab.id_events[int(row[0])]]
            if i >= len(kinds):
                break
            feeds = {"hidden": np.zeros((1, 0, hidden.shape[-1]), np.float32), "x": row[None, i : i + 1]}
        return row


BLOCK = 16  # events timed in a row before the next run takes its turn


class ReferenceRun:
    """The reference loop stepping after ``context``, timed event by event (back to ``context`` every 64)."""

    def __init__(self, loop: ReferenceLoop, context: np.ndarray, seed: int = 0) -> None:
        self.loop, self.rng = loop, np.random.default_rng(seed)
        self.start = loop.append(context, None)
        self.times: list[float] = []
        self.state = self.start
        for _ in range(3):  # warm-up: the first runs allocate
            self._event()
        self.state = self.start

    def _event(self) -> None:
        hidden, past = self.state
        row = self.loop.event(hidden, self.rng)
        self.state = self.loop.append(row[None], past)

    def run(self, events: int) -> None:
        for _ in range(events):
            start = time.perf_counter()
            self._event()
            self.times.append(time.perf_counter() - start)
            if len(self.times) % 64 == 0:  # keep the context near ``context`` events, as the engine does
                self.state = self.start

    def figures(self) -> dict[str, Any]:
        return summarise(self.times)


class EngineRun:
    """``Engine.step`` after ``context``, timed event by event with its ONNX Runtime share (rolled back to
    ``context`` every 64 events)."""

    def __init__(self, engine: Engine, context: np.ndarray, seed: int = 0) -> None:
        self.engine, self.length = engine, len(context)
        self.masks, self.settings = MaskTable(engine.vocab, NO_EOS), SamplerSettings()
        self.rng = np.random.default_rng(seed)
        engine.reset()
        engine.append(context)
        for _ in range(3):  # warm-up: the first runs allocate
            engine.step(self.settings, self.masks, self.rng)
        engine.rollback(self.length)
        self.steps: list[float] = []
        self.model: list[float] = []
        self.base: list[float] = []

    def run(self, events: int) -> None:
        engine, runner = self.engine, self.engine.runner
        for _ in range(events):
            ort_before, base_before = runner.ort_seconds, runner.ort_base_seconds
            start = time.perf_counter()
            engine.step(self.settings, self.masks, self.rng)
            self.steps.append(time.perf_counter() - start)
            self.model.append(runner.ort_seconds - ort_before)
            self.base.append(runner.ort_base_seconds - base_before)
            if len(self.steps) % 64 == 0 or engine.context_length >= engine.window - 1:
                engine.rollback(self.length)

    def figures(self) -> dict[str, Any]:
        result = summarise(self.steps)
        model_ms = float(np.median(self.model) * 1e3)
        result["ort_p50_ms"] = model_ms
        result["ort_base_p50_ms"] = float(np.median(self.base) * 1e3)
        result["ort_token_p50_ms"] = float(np.median(np.array(self.model) - np.array(self.base)) * 1e3)
        result["overhead_p50_ms"] = result["p50_ms"] - model_ms
        return result


def interleaved(runs: list, events: int, block: int = BLOCK) -> None:
    """Time ``events`` events of every run, ``block`` at a time in turn: a shared machine whose load drifts
    during the benchmark then slows every run alike, and their ratios stay honest."""
    for done in range(0, events, block):
        for run in runs:
            run.run(min(block, events - done))


def bench_prefill(engine: Engine, context: np.ndarray, repeats: int) -> dict[str, Any]:
    times = []
    for i in range(repeats + 1):
        engine.reset()
        start = time.perf_counter()
        engine.append(context)
        if i:
            times.append(time.perf_counter() - start)
    result = summarise(times)
    del result["events_per_s"]
    result["context_events_per_s"] = len(context) * 1e3 / result["p50_ms"]
    return result


GENERATE_ROUNDS = 3  # whole generations of each, alternating; the median of each is reported


def bench_generate(engine: Engine, loop: ReferenceLoop | None, events: int, seed: int = 0,
                   rounds: int = GENERATE_ROUNDS) -> dict[str, Any]:
    """Seconds for ``events`` events from BOS: the engine's ``generate`` and the reference loop, taking turns
    (``rounds`` each, the same seed each time; medians)."""
    bos = np.array([engine.vocab.special_row(engine.vocab.bos_id)], np.int64)
    masks = MaskTable(engine.vocab, NO_EOS)

    def by_engine() -> float:
        start = time.perf_counter()
        engine.reset()
        engine.append(bos)
        engine.generate(events, SamplerSettings(), masks, np.random.default_rng(seed))
        return time.perf_counter() - start

    def by_reference() -> float:
        assert loop is not None
        rng = np.random.default_rng(seed)
        start = time.perf_counter()
        hidden, past = loop.append(bos, None)
        for _ in range(events):
            row = loop.event(hidden, rng)
            hidden, past = loop.append(row[None], past)
        return time.perf_counter() - start

    engine_s, reference_s = [], []
    for _ in range(rounds):
        engine_s.append(by_engine())
        if loop is not None:
            reference_s.append(by_reference())
    result: dict[str, Any] = {"events": events, "rounds": rounds, "engine_s": float(np.median(engine_s))}
    if reference_s:
        result["reference_s"] = float(np.median(reference_s))
        result["speedup"] = result["reference_s"] / result["engine_s"]
    return result


def weight_bytes(path: Path, gathered_rows: int) -> int:
    """Bytes of weights one call of the graph at ``path`` reads: every initializer, except that a table
    read by a Gather (an embedding, a gathered head) costs only ``gathered_rows`` of its rows."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    gathered = {node.input[0] for node in graph.node if node.op_type == "Gather"}
    # GroupQueryAttention reads the rows of its cos/sin tables at the new positions only.
    gathered |= {name for node in graph.node if node.op_type == "GroupQueryAttention" for name in node.input[7:9]}
    total = 0
    for tensor in graph.initializer:
        size = int(np.prod(tensor.dims)) * onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
        if tensor.name in gathered and len(tensor.dims) == 2:
            size = size * min(gathered_rows, tensor.dims[0]) // tensor.dims[0]
        total += size
    return total


def note_head_rows(vocab: Vocabulary) -> int:
    """Head rows a note event needs: the allowed ids of each of its 8 positions (event types, then one
    parameter block each)."""
    masks = MaskTable(vocab, NO_EOS)
    row = np.full(8, vocab.pad_id, np.int64)
    row[0] = vocab.event_ids["note"]
    return sum(len(masks.allowed(i, row, 0)) for i in range(8))


def event_bytes(graphs: Path, engine: Engine, sliced: bool | None = None) -> int:
    """Weight bytes of one note event: one base call (8 embedding rows) and 8 token calls.

    ``sliced``: whether the token graph at ``graphs`` gathers its head (default: as ``engine``'s does).
    """
    per_call = weight_bytes(graphs / TOKEN_GRAPH, 1)
    total = weight_bytes(graphs / BASE_GRAPH, 8) + 8 * per_call
    if engine.runner.sliced if sliced is None else sliced:
        # A note event reads the allowed rows of the head: in the graph (a gathered head, counted above as
        # one row a call) or in the engine (the head beside a graph that ends at its norm).
        head_row = int(engine.config["n_embd"]) * 4
        in_graph = 0 if (graphs / HEAD_FILE).is_file() else 8
        total += (note_head_rows(engine.vocab) - in_graph) * head_row
    return total


def memory_bandwidth(megabytes: int = 64, repeats: int = 5) -> float:
    """Streaming read bandwidth in bytes/s: a dot product over two arrays larger than any cache."""
    a = np.ones(megabytes * 2**20 // 4, np.float32)
    b = np.ones_like(a)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        float(np.dot(a, b))
        times.append(time.perf_counter() - start)
    return 2 * a.nbytes / float(np.median(times))


def build_shape(name: str, folder: Path, precisions: tuple[str, ...] = ("fp32", "int8", "int4")) -> Path:
    """A model of the named shape (e.g. ``tv2o-medium``) with random weights, exported to ``folder``."""
    import torch

    from musebot.export.onnx_export import export_onnx
    from musebot.models import MIDIModel, MIDIModelConfig

    torch.manual_seed(0)
    with torch.no_grad():
        model = MIDIModel(MIDIModelConfig.from_name(name)).eval()
    export_onnx(model, folder, check=False, precisions=list(precisions))
    return folder


def reference_graphs(model_dir: Path, scratch: Path) -> Path | None:
    """The fp32 reference pair of ``model_dir``; exported from its safetensors when the folder ships without it."""
    found = available_precisions(model_dir)
    if "fp32" in found:
        return found["fp32"]
    if not any(model_dir.glob("*.safetensors")):
        return None
    from musebot.export.onnx_export import export_onnx

    export_onnx(model_dir, scratch, check=False)
    return scratch


def run_bench(
    model_dir: Path | None,
    contexts: tuple[int, ...] = (512,),
    events: int = 100,
    threads: int = 1,
    provider: str = "cpu",
    precisions: tuple[str, ...] | None = None,
    shape: str | None = None,
    generate_events: int = 512,
) -> dict[str, Any]:
    """All figures for one model folder (or a random model of ``shape``), as a JSON-ready dict."""
    with tempfile.TemporaryDirectory(prefix="musebot-bench-") as tmp:
        if shape is not None:
            model_dir = build_shape(shape, Path(tmp) / "model")
        assert model_dir is not None
        found = available_precisions(model_dir)
        precisions = tuple(p for p in (precisions or found) if p in found)
        default = Engine.load(model_dir, provider=provider, threads=threads)
        graphs = reference_graphs(model_dir, Path(tmp) / "fp32")
        loop = ReferenceLoop(graphs, default.vocab, threads) if graphs is not None else None
        bandwidth = memory_bandwidth()
        results: dict[str, Any] = {
            "model_dir": str(model_dir) if shape is None else f"random {shape}",
            "provider": default.provider, "threads": threads, "default_precision": default.precision,
            "bandwidth_gb_s": bandwidth / 1e9, "runs": [],
        }
        engines = {p: Engine.load(model_dir, provider=provider, threads=threads, precision=p) for p in precisions}
        bytes_per_event = {p: event_bytes(found[p], e) for p, e in engines.items()}
        if graphs is not None:
            bytes_per_event["reference"] = event_bytes(graphs, default, sliced=False)
        for length in contexts:
            length = min(length, default.window - 8)
            context = synthetic_context(default, length)
            run: dict[str, Any] = {"context_events": length, "engine": {}}
            timed = {p: EngineRun(engine, context) for p, engine in engines.items()}
            reference = ReferenceRun(loop, context) if loop is not None else None
            interleaved(([reference] if reference else []) + list(timed.values()), events)
            if reference is not None:
                run["reference"] = reference.figures() | _bytes(bytes_per_event["reference"], bandwidth)
            for precision, engine_run in timed.items():
                figures = engine_run.figures() | _bytes(bytes_per_event[precision], bandwidth)
                if reference is not None:
                    figures["speedup_vs_reference"] = run["reference"]["p50_ms"] / figures["p50_ms"]
                run["engine"][precision] = figures
            run["prefill"] = bench_prefill(default, context, max(3, events // 20))
            results["runs"].append(run)
        if generate_events:
            results["generate"] = bench_generate(default, loop, generate_events)
    return results


def _bytes(count: int, bandwidth: float) -> dict[str, float]:
    return {"weight_mb_per_event": count / 2**20, "floor_ms": count / bandwidth * 1e3}


def format_report(r: dict[str, Any]) -> str:
    out = [
        (f"model {r['model_dir']} on {r['provider']} ({r['threads']} thread(s)); default precision "
         f"{r['default_precision']}; memory read bandwidth {r['bandwidth_gb_s']:.1f} GB/s (numpy, 1 thread)"),
    ]
    for run in r["runs"]:
        out += [
            "",
            f"context {run['context_events']} events",
            "| run | p50 ms | p99 ms | events/s | vs reference | weights MB/event | floor ms | ORT base + token ms |",
            "|---|---|---|---|---|---|---|---|",
        ]
        rows = [("reference loop (fp32, full vocab, numpy)", run.get("reference"))]
        rows += [(f"engine {p}" + (" (default)" if p == r["default_precision"] else ""), f)
                 for p, f in run["engine"].items()]
        for name, f in rows:
            if f is None:
                out.append(f"| {name} | skipped: no fp32 graphs or safetensors | | | | | | |")
                continue
            ratio = f"{f['speedup_vs_reference']:.2f}x" if "speedup_vs_reference" in f else "1.00x"
            split = f"{f['ort_base_p50_ms']:.2f} + {f['ort_token_p50_ms']:.2f}" if "ort_base_p50_ms" in f else ""
            out.append(f"| {name} | {f['p50_ms']:.2f} | {f['p99_ms']:.2f} | {f['events_per_s']:.1f} | {ratio} | "
                       f"{f['weight_mb_per_event']:.1f} | {f['floor_ms']:.2f} | {split} |")
        p = run["prefill"]
        out.append(f"prefill of {run['context_events']} events: p50 {p['p50_ms']:.1f} ms "
                   f"({p['context_events_per_s']:.0f} context events/s)")
    g = r.get("generate")
    if g:
        line = f"generate {g['events']} events from BOS: engine ({r['default_precision']}) {g['engine_s']:.2f} s"
        if "reference_s" in g:
            line += f", reference loop {g['reference_s']:.2f} s: {g['speedup']:.2f}x faster"
        line += f" (medians of {g['rounds']} rounds, taking turns)"
        out += ["", line]
    return "\n".join(out)
