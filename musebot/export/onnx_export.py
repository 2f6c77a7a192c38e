"""Export a MIDIModel to the reference's ONNX pair and check ONNX Runtime against torch.

Implements shared/spec/skytnt-format.md section 4.1: ``model_base.onnx`` and ``model_token.onnx`` with the
reference's input/output names, dtypes and dynamic axes, metadata ``config_name`` / ``config``; plus a
``config.json`` beside them (the HF config with the tokenizer dict, and an ``onnx`` section giving the
engine the cache geometry). Unlike the reference we also write musebot's engine graphs in other precisions,
one folder each (``int8/``, ``int4/``: MatMulNBits weight-only blocks for the CPU; ``fp16/`` for CUDA), under
the same file names; their token graph scores only the vocabulary rows it is asked for (``head_ids``), and
the CPU ones keep their KV caches in preallocated buffers updated in place (``musebot.export.inplace``).
"""

from __future__ import annotations

import copy
import json
import logging
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from musebot.engine.inplace import HEAD_FILE, INPLACE_MARK, STATES_OUTPUT, load_head
from musebot.export.graphs import BaseGraph, SlicedTokenGraph, TokenGraph, kv_names
from musebot.export.inplace import build_inplace_graphs
from musebot.export.quantize import BITS, quantize_nbits
from musebot.models.config import MIDIModelConfig
from musebot.models.model import MIDIModel

log = logging.getLogger(__name__)

BASE_FILE = "model_base.onnx"
TOKEN_FILE = "model_token.onnx"
OPSET = 17
PRECISIONS = ("fp32", "fp16", "int8", "int4")
CPU_PRECISIONS = ("fp32", "int8", "int4")  # what `musebot export` writes unless told
# Verification limits on max|ort - torch| / max(1, max|torch|) over hidden states and logits, per precision.
TOLERANCE = {"fp32": 1e-4, "fp16": 2e-2, "int8": 0.1, "int4": 0.5}


class ExportError(RuntimeError):
    """Export failed or the exported graphs disagree with torch beyond tolerance."""


def _past(config, batch: int, length: int, dtype: torch.dtype) -> list[torch.Tensor]:
    shape = MIDIModelConfig.net_shape(config)
    size = (batch, shape["n_kv_head"], length, shape["head_dim"])
    return [torch.rand(size, dtype=dtype) for _ in range(2 * shape["n_layer"])]


def _export_graph(graph, args, input_names, output_names, dynamic_axes, path: Path) -> None:
    with torch.no_grad(), warnings.catch_warnings():
        # The TorchScript exporter is deprecated but is the one that keeps our exact I/O names and
        # dynamic_axes as given; the graphs are plain tensor code, so it traces them faithfully.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            graph,
            args,
            str(path),
            input_names=input_names,
            output_names=output_names,
            dynamic_axes=dynamic_axes,
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )


def _set_metadata(path: Path, metadata: dict[str, str]) -> None:
    import onnx

    model = onnx.load(str(path))
    for key, value in metadata.items():
        prop = model.metadata_props.add()
        prop.key, prop.value = key, value
    onnx.save(model, str(path))


def export_graphs(
    model: MIDIModel, out_dir: Path, dtype: torch.dtype = torch.float32, sliced: bool = False
) -> dict[str, Any]:
    """Trace both graphs into ``out_dir`` (reference I/O, section 4.1); returns the I/O names.

    ``sliced``: the token graph takes ``head_ids`` after ``x`` and scores those vocabulary rows only.
    """
    config = model.config
    graph_model = model if dtype == torch.float32 else _copy_as(model, dtype)
    base_past, base_present = kv_names(config.net.num_hidden_layers)
    token_past, token_present = kv_names(config.net_token.num_hidden_layers)
    width = int(config.tokenizer["max_token_seq"])

    axes = {"x": {0: "batch", 1: "mid_seq", 2: "token_seq"}, "hidden": {0: "batch", 1: "mid_seq"}}
    axes |= {n: {0: "batch", 2: "past_seq"} for n in base_past}
    axes |= {n: {0: "batch", 2: "present_seq"} for n in base_present}
    x = torch.randint(config.vocab_size, (1, 16, width))
    _export_graph(
        BaseGraph(graph_model).eval(),
        (x, *_past(config.net, 1, 16, dtype)),
        ["x", *base_past],
        ["hidden", *base_present],
        axes,
        out_dir / BASE_FILE,
    )

    axes = {"x": {0: "batch", 1: "token_seq"}, "hidden": {0: "batch", 1: "states"}}
    axes |= {"y": {0: "batch", 1: "token_seq1"}}
    axes |= {n: {0: "batch", 2: "past_seq"} for n in token_past}
    axes |= {n: {0: "batch", 2: "present_seq"} for n in token_present}
    hidden = torch.randn(1, 1, config.n_embd, dtype=dtype)
    x = torch.randint(config.vocab_size, (1, width // 2))
    inputs, args = ["hidden", "x"], [hidden, x]
    graph = TokenGraph(graph_model)
    if sliced:
        graph = SlicedTokenGraph(graph_model)
        inputs.append("head_ids")
        args.append(torch.arange(3, 3 + 16))
        axes |= {"head_ids": {0: "rows"}, "y": {0: "batch", 1: "token_seq1", 2: "rows"}}
    _export_graph(
        graph.eval(),
        (*args, *_past(config.net_token, 1, width // 2, dtype)),
        [*inputs, *token_past],
        ["y", *token_present],
        axes,
        out_dir / TOKEN_FILE,
    )
    return {
        "base": {"inputs": ["x", *base_past], "outputs": ["hidden", *base_present]},
        "token": {"inputs": [*inputs, *token_past], "outputs": ["y", *token_present]},
    }


def _copy_as(model: MIDIModel, dtype: torch.dtype) -> MIDIModel:
    return copy.deepcopy(model).to(dtype).eval()


def onnx_config(
    model: MIDIModel, precision: str | None, io_names: dict[str, Any], folders: dict[str, str] | None = None
) -> dict[str, Any]:
    """config.json for the export folder: HF config + what an ONNX engine needs to allocate caches.

    ``precision`` is that of the graphs beside config.json (None when only precision folders were written);
    ``folders`` maps each precision written to its folder (``.`` for the reference pair).
    """
    config = model.config
    data = config.to_dict()
    data["onnx"] = {
        "precision": precision,
        "precisions": folders or ({precision: "."} if precision else {}),
        "dtype": "float16" if precision == "fp16" else "float32",
        "opset": OPSET,
        "n_embd": config.n_embd,
        "vocab_size": config.vocab_size,
        "base": {"file": BASE_FILE, **MIDIModelConfig.net_shape(config.net), **io_names["base"]},
        "token": {"file": TOKEN_FILE, **MIDIModelConfig.net_shape(config.net_token), **io_names["token"]},
    }
    return data


class OnnxPair:
    """The two exported graphs in ONNX Runtime, fed and read by the reference's names."""

    def __init__(self, folder: Path, threads: int = 1) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        providers = ["CPUExecutionProvider"]
        self.base = ort.InferenceSession(str(folder / BASE_FILE), options, providers=providers)
        self.token = ort.InferenceSession(str(folder / TOKEN_FILE), options, providers=providers)
        self.head = load_head(folder) if any(o.name == STATES_OUTPUT for o in self.token.get_outputs()) else None
        # An engine graph's output is as wide as the rows asked for; the graphs' metadata names the vocabulary.
        reference = json.loads(self.token.get_modelmeta().custom_metadata_map.get("config", "{}"))
        net_token = reference.get("net_token", "{}")
        net_token = json.loads(net_token) if isinstance(net_token, str) else net_token
        self.vocab_size = int(net_token.get("vocab_size", 0))

    @staticmethod
    def _call(session, feed: dict[str, np.ndarray], past: list[np.ndarray] | None, batch: int, added: int):
        names = [i.name for i in session.get_inputs() if i.name.startswith("past_key_values.")]
        if past is None:
            past = []
            for meta in session.get_inputs():
                if meta.name.startswith("past_key_values."):
                    heads, head_dim = meta.shape[1], meta.shape[3]
                    dtype = np.float16 if meta.type == "tensor(float16)" else np.float32
                    past.append(np.zeros((batch, heads, 0, head_dim), dtype))
        if any(i.name == INPLACE_MARK for i in session.get_inputs()):
            # An in-place engine graph: past buffers with room for the new positions, and their count. Fed
            # without IO binding, its present is a new buffer whose every position is valid.
            total = past[0].shape[2] + added
            past = [np.pad(a, ((0, 0), (0, 0), (0, added), (0, 0))) for a in past]
            feed = {**feed, INPLACE_MARK: np.full(batch, total - 1, np.int32),
                    "total_sequence_length": np.array(total, np.int32)}
        outputs = session.run(None, {**feed, **dict(zip(names, past))})
        return outputs[0], outputs[1:]

    def base_step(self, x: np.ndarray, past: list[np.ndarray] | None = None):
        """x ``(B, L, 8)`` int64 -> hidden ``(B, L, H)``, present list."""
        return self._call(self.base, {"x": x.astype(np.int64)}, past, x.shape[0], x.shape[1])

    def token_step(self, hidden: np.ndarray, x: np.ndarray, past: list[np.ndarray] | None = None):
        """hidden ``(B, S, H)``, x ``(B, T)`` int64 -> logits ``(B, S + T, V)``, present list.

        An engine graph (``head_ids`` input) is asked for every row, so both kinds answer alike.
        """
        feed = {"hidden": hidden, "x": x.astype(np.int64)}
        if self.head is not None:  # a graph ending at its norm: the engine's head scores every row
            states, present = self._call(self.token, feed, past, x.shape[0], hidden.shape[1] + x.shape[1])
            return self.head.logits(states, None), present
        if any(i.name == "head_ids" for i in self.token.get_inputs()):
            vocab = self.token.get_outputs()[0].shape[2]
            vocab = vocab if isinstance(vocab, int) else self.vocab_size
            feed["head_ids"] = np.arange(vocab, dtype=np.int64)
        return self._call(self.token, feed, past, x.shape[0], hidden.shape[1] + x.shape[1])


def verify(model: MIDIModel, folder: Path, seed: int = 0, prompt_len: int = 24, steps: int = 3) -> dict:
    """Compare ORT with torch eager on a random prompt: prefill from an empty cache, cached base steps,
    then the token graph fed the last hidden state and 7 tokens one at a time with its cache.

    Returns max abs differences and the same divided by max(1, max|torch|) (the tolerance measure).
    """
    pair = OnnxPair(folder)
    dtype = np.float16 if pair.token.get_inputs()[0].type == "tensor(float16)" else np.float32
    config = model.config
    generator = torch.Generator().manual_seed(seed)
    width = int(config.tokenizer["max_token_seq"])
    events = torch.randint(3, config.vocab_size, (2, prompt_len + steps, width), generator=generator)
    with torch.no_grad():
        ref_hidden = model(events)
        tokens = events[:, -1, :7]
        ref_logits = model.forward_token(ref_hidden[:, -2:-1], tokens)

    hidden, past = pair.base_step(events[:, :prompt_len].numpy())
    got = [hidden]
    for step in range(steps):
        hidden, past = pair.base_step(events[:, prompt_len + step : prompt_len + step + 1].numpy(), past)
        got.append(hidden)
    got_hidden = np.concatenate(got, axis=1).astype(np.float32)

    last = ref_hidden[:, -2:-1].numpy().astype(dtype)
    logits, past = pair.token_step(last, np.zeros((2, 0), np.int64))
    got = [logits]
    for i in range(7):
        empty = np.zeros((2, 0, config.n_embd), dtype)
        logits, past = pair.token_step(empty, tokens[:, i : i + 1].numpy(), past)
        got.append(logits)
    got_logits = np.concatenate(got, axis=1).astype(np.float32)

    def compare(got: np.ndarray, ref: torch.Tensor) -> tuple[float, float]:
        ref_np = ref.numpy()
        diff = float(np.abs(got - ref_np).max())
        return diff, diff / max(1.0, float(np.abs(ref_np).max()))

    base_abs, base_rel = compare(got_hidden, ref_hidden)
    token_abs, token_rel = compare(got_logits, ref_logits)
    return {
        "base_max_abs_diff": base_abs,
        "base_rel_diff": base_rel,
        "token_max_abs_diff": token_abs,
        "token_rel_diff": token_rel,
    }


def _load(model_or_path: MIDIModel | str | Path, config, lora) -> MIDIModel:
    if isinstance(model_or_path, MIDIModel):
        model = model_or_path
        if lora is not None:
            from musebot.models.checkpoint import merge_lora

            model = merge_lora(copy.deepcopy(model), lora)
    else:
        from musebot.models.checkpoint import load_model

        model = load_model(model_or_path, config=config, lora=lora)
    return model.float().eval().cpu()


def export_pair(model: MIDIModel, out: Path, precision: str, engine: bool, check: bool = True) -> dict[str, Any]:
    """Write one graph pair of ``precision`` into ``out``; ``engine``: the token graph with ``head_ids``.

    With ``check`` the pair is run in ONNX Runtime (CPU) against torch and an ExportError raised beyond
    ``TOLERANCE[precision]``. Returns the figures: precision, seconds, sizes, verification differences.
    """
    if precision not in PRECISIONS:
        raise ExportError(f"unknown precision {precision!r}: choose from {', '.join(PRECISIONS)}")
    out.mkdir(parents=True, exist_ok=True)
    metadata = {"config_name": model.config.named(), "config": model.config.reference_str()}
    started = time.perf_counter()
    if precision in BITS:
        with tempfile.TemporaryDirectory() as tmp:
            if engine:  # caches updated in place (GroupQueryAttention), the head gathered per call
                io_names = build_inplace_graphs(model, Path(tmp), metadata)
            else:
                io_names = export_graphs(model, Path(tmp), sliced=False)
                for name in (BASE_FILE, TOKEN_FILE):
                    _set_metadata(Path(tmp) / name, metadata)
            for name in (BASE_FILE, TOKEN_FILE):
                quantize_nbits(Path(tmp) / name, out / name, precision)
            if (Path(tmp) / HEAD_FILE).is_file():  # the in-place token graph's head stays float
                shutil.copyfile(Path(tmp) / HEAD_FILE, out / HEAD_FILE)
    else:
        io_names = export_graphs(model, out, torch.float16 if precision == "fp16" else torch.float32, engine)
        for name in (BASE_FILE, TOKEN_FILE):
            _set_metadata(out / name, metadata)
    figures: dict[str, Any] = {
        "precision": precision,
        "out_dir": str(out),
        "engine_graphs": engine,
        "export_seconds": round(time.perf_counter() - started, 2),
        "base_mb": round((out / BASE_FILE).stat().st_size / 2**20, 2),
        "token_mb": round((out / TOKEN_FILE).stat().st_size / 2**20, 2),
        "tolerance": TOLERANCE[precision],
        "io_names": io_names,
    }
    if check:
        figures |= _checked(model, out, precision)
    return figures


def _checked(model: MIDIModel, out: Path, precision: str) -> dict[str, Any]:
    try:
        figures: dict[str, Any] = verify(model, out)
    except Exception as exc:
        if precision != "fp16":
            raise
        # ORT's CPU provider lacks fp16 kernels for some ops; the graph is meant for CUDA.
        reason = f"not on CPU: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        log.warning("fp16 graphs not verified on CPU (%s)", reason)
        return {"verified": reason}
    figures["verified"] = True
    worst = max(figures["base_rel_diff"], figures["token_rel_diff"])
    if worst >= TOLERANCE[precision]:
        raise ExportError(
            f"{precision} ONNX graphs disagree with torch: relative difference {worst:.3g} >= "
            f"{TOLERANCE[precision]} (base {figures['base_max_abs_diff']:.3g}, "
            f"token {figures['token_max_abs_diff']:.3g} max abs)"
        )
    return figures


def export_onnx(
    model_or_path: MIDIModel | str | Path,
    out_dir: str | Path,
    fp16: bool = False,
    int8: bool = False,
    config: MIDIModelConfig | str | Path | None = None,
    lora: str | Path | None = None,
    check: bool = True,
    precisions: tuple[str, ...] | list[str] | None = None,
) -> dict[str, Any]:
    """Export ``model_base.onnx``, ``model_token.onnx`` and ``config.json`` into ``out_dir``.

    ``model_or_path`` is a MIDIModel or anything ``musebot.models.load_model`` reads (``config``/``lora``
    are passed on). Without ``precisions``: one pair with the reference interface in ``out_dir`` (fp32, or
    fp16/int8 with those flags), and the figures of ``export_pair``. With ``precisions`` (e.g.
    ``CPU_PRECISIONS``): fp32 is the reference pair in ``out_dir``, every other precision musebot's engine
    pair in ``out_dir/<precision>/``; returns the figures per precision.
    """
    if fp16 and int8:
        raise ExportError("choose one of fp16 and int8")
    model = _load(model_or_path, config, lora)
    out = Path(out_dir)
    if precisions is None:
        precision = "fp16" if fp16 else "int8" if int8 else "fp32"
        figures = export_pair(model, out, precision, engine=False, check=check)
        io_names = figures.pop("io_names")
        (out / "config.json").write_text(json.dumps(onnx_config(model, precision, io_names), indent=2) + "\n")
        return figures
    unknown = sorted(set(precisions) - set(PRECISIONS))
    if unknown or not precisions:
        raise ExportError(f"precisions must be among {', '.join(PRECISIONS)}, got {', '.join(precisions)}")
    results: dict[str, Any] = {}
    folders: dict[str, str] = {}
    for precision in dict.fromkeys(precisions):
        root = precision == "fp32"
        folder = out if root else out / precision
        results[precision] = export_pair(model, folder, precision, engine=not root, check=check)
        folders[precision] = "." if root else precision
    io_names = next(iter(results.values()))["io_names"]
    for figures in results.values():
        figures.pop("io_names")
    base_precision = "fp32" if "fp32" in folders else None
    config_data = onnx_config(model, base_precision, io_names, folders)
    (out / "config.json").write_text(json.dumps(config_data, indent=2) + "\n")
    return results
