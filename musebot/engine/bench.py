"""``musebot bench`` figures: per-event latency of the engine against its baselines, all in one run.

Measured (shared/spec/skytnt-format.md section 5: "latency budget per note = 1 base step + 8 token steps"):

* ``engine_cached``: the engine's ``step`` (sample one event, append it) after a context of ``context`` events;
  also the share of that time spent inside ONNX Runtime runs (the rest is the engine's overhead: Python,
  masks, sampling, copies);
* ``ort_uncached``: the same with no event-level cache, i.e. the whole context re-run for every event;
* ``torch_eager``: the torch model (musebot.models) with transformers' KV caches, when torch and weights exist;
* ``prefill``: one prefill of ``context`` events from an empty cache.

Latencies are medians and 99th percentiles in milliseconds; ratios compare figures from the same run only.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from musebot.engine.engine import Engine
from musebot.engine.masks import Constraints, MaskTable
from musebot.engine.sampling import SamplerSettings


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
        "events_per_s": float(1e3 / ms.mean()),
        "n": len(ms),
    }


def bench_engine(engine: Engine, context: np.ndarray, events: int, seed: int = 0) -> dict[str, Any]:
    """Cached generation after ``context``: per-event step time and the ONNX Runtime share of it."""
    masks = MaskTable(engine.vocab, Constraints(allow_eos=False))  # keep generating: no early end
    settings = SamplerSettings()
    rng = np.random.default_rng(seed)
    engine.reset()
    engine.append(context)
    for _ in range(3):  # warm-up: first runs allocate
        engine.step(settings, masks, rng)
    engine.rollback(len(context))
    steps, model, base = [], [], []
    for _ in range(events):
        ort_before, base_before = engine.runner.ort_seconds, engine.runner.ort_base_seconds
        start = time.perf_counter()
        engine.step(settings, masks, rng)
        steps.append(time.perf_counter() - start)
        model.append(engine.runner.ort_seconds - ort_before)
        base.append(engine.runner.ort_base_seconds - base_before)
        if engine.context_length >= engine.window - 1:
            engine.rollback(len(context))
    result = summarise(steps)
    model_ms = float(np.median(model) * 1e3)
    result["ort_p50_ms"] = model_ms
    result["ort_base_p50_ms"] = float(np.median(base) * 1e3)
    result["ort_token_p50_ms"] = float(np.median(np.array(model) - np.array(base)) * 1e3)
    result["overhead_p50_ms"] = result["p50_ms"] - model_ms
    result["overhead_vs_model"] = (result["p50_ms"] - model_ms) / model_ms
    return result


def bench_uncached(engine: Engine, context: np.ndarray, events: int, seed: int = 0) -> dict[str, Any]:
    """No event-level cache: every event re-runs the base graph over the whole ``context`` (the old graphs' way)."""
    masks = MaskTable(engine.vocab, Constraints(allow_eos=False))
    settings = SamplerSettings()
    rng = np.random.default_rng(seed)
    times = []
    for i in range(events + 1):
        start = time.perf_counter()
        engine.reset()
        engine.append(context)
        engine.sample_event(settings, masks, rng)
        if i:  # the first one is warm-up
            times.append(time.perf_counter() - start)
    return summarise(times)


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


def bench_torch(checkpoint: Path | None, context: np.ndarray, events: int, threads: int, seed: int = 0
                ) -> dict[str, Any]:
    """The torch model in eager mode with KV caches (imports torch here only); ``skipped`` says why if absent."""
    if checkpoint is None:
        return {"skipped": "no torch checkpoint (model.safetensors) in the model folder; pass --checkpoint"}
    try:
        import torch

        from musebot.models import load_model
    except ImportError as exc:
        return {"skipped": f"torch or musebot.models unavailable ({exc}); install musebot[train]"}
    torch.set_num_threads(threads)
    model = load_model(checkpoint).eval()
    vocab = model.config.vocab
    generator = torch.Generator().manual_seed(seed)
    type_ids = torch.tensor(sorted(vocab.event_ids.values()))
    ranges = {kind: vocab.parameter_range(kind) for kind in vocab.event_parameters}

    def sample(logits: torch.Tensor, ids: torch.Tensor) -> int:
        probs = torch.softmax(logits[ids], dim=-1)
        top = torch.topk(probs, min(20, len(ids)))
        pick = torch.multinomial(top.values, 1, generator=generator)
        return int(ids[top.indices[pick]])

    times = []
    with torch.inference_mode():
        cache = model.new_cache()
        hidden = model.forward(torch.as_tensor(context)[None], cache=cache)[:, -1:]
        for i in range(events + 3):
            start = time.perf_counter()
            token_cache = model.new_cache(token_level=True)
            row = [vocab.pad_id] * 8
            logits = model.forward_token(hidden, None, token_cache)[0, -1]
            row[0] = sample(logits, type_ids)
            kinds = vocab.events[vocab.id_events[row[0]]]
            for j, kind in enumerate(kinds, start=1):
                logits = model.forward_token(None, torch.tensor([[row[j - 1]]]), token_cache)[0, -1]
                row[j] = sample(logits, torch.arange(*ranges[kind]))
            hidden = model.forward(torch.tensor([[row]]), cache=cache)[:, -1:]
            if i >= 3:  # warm-up
                times.append(time.perf_counter() - start)
    return summarise(times)


def run_bench(
    model_dir: Path,
    checkpoint: Path | None,
    context_length: int = 512,
    events: int = 100,
    threads: int = 1,
    provider: str = "cpu",
) -> dict[str, Any]:
    """All figures for one model folder, as a JSON-ready dict."""
    engine = Engine.load(model_dir, provider=provider, threads=threads)
    context_length = min(context_length, engine.window - 8)
    context = synthetic_context(engine, context_length)
    base, token = engine.runner.base_shape, engine.runner.token_shape
    cached = bench_engine(engine, context, events)
    results: dict[str, Any] = {
        "model_dir": str(model_dir),
        "provider": engine.provider,
        "threads": threads,
        "context_events": context_length,
        "base_graph": {"layers": base.layers, "heads": base.heads, "head_dim": base.head_dim},
        "token_graph": {"layers": token.layers, "heads": token.heads, "head_dim": token.head_dim},
        "engine_cached": cached,
        "ort_uncached": bench_uncached(engine, context, max(10, events // 5)),
        "prefill": bench_prefill(engine, context, max(5, events // 10)),
        "torch_eager": bench_torch(checkpoint, context, events, threads),
    }
    results["speedup_cached_vs_uncached"] = results["ort_uncached"]["p50_ms"] / cached["p50_ms"]
    if "p50_ms" in results["torch_eager"]:
        results["speedup_engine_vs_torch"] = results["torch_eager"]["p50_ms"] / cached["p50_ms"]
    return results


def format_report(r: dict[str, Any]) -> str:
    def line(name: str, f: dict[str, Any]) -> str:
        if "skipped" in f:
            return f"{name:<26} skipped: {f['skipped']}"
        rate = f.get("events_per_s", f.get("context_events_per_s"))
        unit = "events/s" if "events_per_s" in f else "context events/s"
        return f"{name:<26} p50 {f['p50_ms']:8.2f} ms   p99 {f['p99_ms']:8.2f} ms   {rate:9.1f} {unit}"

    c = r["engine_cached"]
    out = [
        f"model {r['model_dir']} on {r['provider']} ({r['threads']} thread(s)), context {r['context_events']} events",
        f"base graph {r['base_graph']}, token graph {r['token_graph']}",
        line("(a) engine, KV cache", c),
        (f"{'':<26} ORT runs {c['ort_p50_ms']:.2f} ms (base {c['ort_base_p50_ms']:.2f} + token"
         f" {c['ort_token_p50_ms']:.2f}) + engine overhead {c['overhead_p50_ms']:.2f} ms"
         f" = {100 * c['overhead_vs_model']:.0f}% of model time"),
        line("(b) ORT, no cache", r["ort_uncached"]),
        line("(c) torch eager, KV cache", r["torch_eager"]),
        line(f"(d) prefill {r['context_events']} events", r["prefill"]),
        f"cached vs uncached: {r['speedup_cached_vs_uncached']:.1f}x faster",
    ]
    if "speedup_engine_vs_torch" in r:
        out.append(f"engine vs torch eager: {r['speedup_engine_vs_torch']:.1f}x faster")
    return "\n".join(out)
