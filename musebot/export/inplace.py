"""musebot's engine graphs: the two Llamas written op by op with the KV cache updated in place.

The reference pair (shared/spec/skytnt-format.md section 4.1) takes the past keys/values and returns them
concatenated with the new ones, so every step copies the whole cache (at 512 events of context most of the
base graph's memory traffic). These graphs run each attention as ONNX Runtime's ``GroupQueryAttention``
(com.microsoft) over a preallocated cache of ``capacity`` positions: ``past_key_values.{i}.*`` are
``(B, kv_heads, capacity, head_dim)`` buffers, ``seqlens_k (B,)`` int32 is the number of valid positions after
this call minus one and ``total_sequence_length`` that number as a scalar. When the caller binds each
``present.*`` output to the very buffer given as ``past_key_values.*`` (IO binding), the kernel writes the new
positions into it and reads the rest where they lie: nothing is copied, and rolling back is a smaller count.
Rotary embeddings are applied inside the attention from cos/sin tables of the model's own rotary module.

Same arithmetic as ``musebot.export.graphs`` (the SkyTNT reference interface): ``q/k/v`` and ``gate/up`` are
packed into one MatMul each, RMS norms are ORT's (Skip)SimplifiedLayerNormalization. The token graph ends at
the final norm: its head (``lm_head.npy`` beside the graphs, float32) is applied by the engine to just the
vocabulary rows the position may take. In the graph, gathering those rows (2,048 of them for a note's
duration) and multiplying by an operand that is not a constant cost 0.44 ms of a 2.3 ms event; reading them
where they lie in numpy costs 0.05 ms.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from musebot.engine.inplace import HEAD_FILE, STATES_OUTPUT
from musebot.engine.inplace import INPLACE_MARK as INPUTS_MARK

OPSET = 17
MS = "com.microsoft"


class _Builder:
    """Nodes, initializers and names of one graph under construction."""

    def __init__(self, dtype: np.dtype) -> None:
        self.nodes: list = []
        self.inits: list = []
        self.dtype = dtype
        self._n = 0

    def name(self, stem: str) -> str:
        self._n += 1
        return f"{stem}_{self._n}"

    def const(self, stem: str, array: np.ndarray, cast: bool = True) -> str:
        name = self.name(stem)
        array = array.astype(self.dtype) if cast else array
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def op(self, op_type: str, inputs: list[str], outputs: int = 1, domain: str = "", **attrs) -> list[str]:
        names = [self.name(op_type) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op_type, inputs, names, name=self.name("n"), domain=domain, **attrs))
        return names


def _weight(linear: nn.Linear) -> np.ndarray:
    """A torch Linear's weight as the right operand of MatMul: ``(in, out)``."""
    return linear.weight.detach().float().numpy().T


def _rotary_tables(net: nn.Module, positions: int, head_dim: int) -> tuple[np.ndarray, np.ndarray]:
    """cos/sin ``(positions, head_dim / 2)`` from the model's own rotary module (rotate-half layout)."""
    probe = torch.zeros(1, 1, head_dim)
    with torch.no_grad():
        cos, sin = net.rotary_emb(probe, torch.arange(positions)[None])
    return cos[0, :, : head_dim // 2].numpy(), sin[0, :, : head_dim // 2].numpy()


def _llama(b: _Builder, net: nn.Module, hidden: str, past_names: list[str], present_names: list[str],
           seqlens: str, total: str, positions: int) -> str:
    """The decoder layers and final norm of ``net`` on ``hidden (B, L, H)``; returns the normed output."""
    config = net.config
    heads = config.num_attention_heads
    kv_heads = config.num_key_value_heads or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    eps = float(config.rms_norm_eps)
    cos_np, sin_np = _rotary_tables(net, positions, head_dim)
    cos, sin = b.const("cos_cache", cos_np), b.const("sin_cache", sin_np)
    layers = list(net.layers)
    normed = b.op("SimplifiedLayerNormalization", [hidden, b.const("ln", _norm(layers[0].input_layernorm))],
                  axis=-1, epsilon=eps, stash_type=1)[0]
    residual = hidden
    for index, layer in enumerate(layers):
        attn = layer.self_attn
        qkv_w = np.concatenate([_weight(attn.q_proj), _weight(attn.k_proj), _weight(attn.v_proj)], axis=1)
        qkv = b.op("MatMul", [normed, b.const("qkv_proj", qkv_w)])[0]
        context = b.name("attn")
        b.nodes.append(helper.make_node(
            "GroupQueryAttention",
            [qkv, "", "", past_names[2 * index], past_names[2 * index + 1], seqlens, total, cos, sin],
            [context, present_names[2 * index], present_names[2 * index + 1]],
            name=b.name("gqa"), domain=MS, num_heads=heads, kv_num_heads=kv_heads, do_rotary=1,
            rotary_interleaved=0, scale=float(attn.scaling),
        ))
        attn_out = b.op("MatMul", [context, b.const("o_proj", _weight(attn.o_proj))])[0]
        # Skip norm: output 0 is the normed sum, output 3 the sum itself (the next residual).
        normed, _, _, residual = b.op(
            "SkipSimplifiedLayerNormalization",
            [attn_out, residual, b.const("ln", _norm(layer.post_attention_layernorm))],
            outputs=4, domain=MS, epsilon=eps,
        )
        mlp = layer.mlp
        gate_up = b.op("MatMul", [normed, b.const("gate_up_proj", np.concatenate(
            [_weight(mlp.gate_proj), _weight(mlp.up_proj)], axis=1))])[0]
        gate, up = b.op("Split", [gate_up], outputs=2, axis=-1)
        act = b.op("Mul", [gate, b.op("Sigmoid", [gate])[0]])[0]  # SiLU
        down = b.op("MatMul", [b.op("Mul", [act, up])[0], b.const("down_proj", _weight(mlp.down_proj))])[0]
        after = layers[index + 1].input_layernorm if index + 1 < len(layers) else net.norm
        normed, _, _, residual = b.op(
            "SkipSimplifiedLayerNormalization", [down, residual, b.const("ln", _norm(after))],
            outputs=4, domain=MS, epsilon=eps,
        )
    return normed


def _norm(module: nn.Module) -> np.ndarray:
    return module.weight.detach().float().numpy()


def _kv_io(prefix: str, n_layer: int) -> list[str]:
    return [f"{prefix}.{i}.{kind}" for i in range(n_layer) for kind in ("key", "value")]


def _cache_infos(names: list[str], elem: int, kv_heads: int, head_dim: int, axis: str) -> list:
    return [helper.make_tensor_value_info(n, elem, ["batch", kv_heads, axis, head_dim]) for n in names]


def _save(b: _Builder, name: str, inputs: list, outputs: list, path: Path, metadata: dict[str, str]) -> None:
    graph = helper.make_graph(b.nodes, name, inputs, outputs, initializer=b.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(MS, 1)],
                              producer_name="musebot")
    model.ir_version = 8
    for key, value in metadata.items():
        prop = model.metadata_props.add()
        prop.key, prop.value = key, value
    import onnx

    onnx.save(model, str(path))


def _shape(net: nn.Module) -> tuple[int, int, int]:
    config = net.config
    heads = config.num_attention_heads
    return (config.num_hidden_layers, config.num_key_value_heads or heads,
            getattr(config, "head_dim", None) or config.hidden_size // heads)


def build_inplace_graphs(model: nn.Module, out: Path, metadata: dict[str, str],
                         dtype: type = np.float32) -> dict[str, dict[str, list[str]]]:
    """Write ``model_base.onnx`` and ``model_token.onnx`` (in-place caches) for ``model`` into ``out``."""
    elem = TensorProto.FLOAT16 if dtype == np.float16 else TensorProto.FLOAT
    width = int(model.config.tokenizer["max_token_seq"])
    seq_infos = [helper.make_tensor_value_info(INPUTS_MARK, TensorProto.INT32, ["batch"]),
                 helper.make_tensor_value_info("total_sequence_length", TensorProto.INT32, [])]
    io: dict[str, dict[str, list[str]]] = {}

    # Event model: x (B, L, 8) -> hidden (B, L, H).
    net = model.net
    layers, kv_heads, head_dim = _shape(net)
    past, present = _kv_io("past_key_values", layers), _kv_io("present", layers)
    b = _Builder(dtype)
    embedded = b.op("Gather", [b.const("embed_tokens", net.embed_tokens.weight.detach().float().numpy()), "x"])[0]
    summed = b.op("ReduceSum", [embedded, b.const("axis", np.array([2], np.int64), cast=False)], keepdims=0)[0]
    positions = int(net.config.max_position_embeddings)
    hidden = _llama(b, net, summed, past, present, INPUTS_MARK, "total_sequence_length", positions)
    b.nodes.append(helper.make_node("Identity", [hidden], ["hidden"], name=b.name("n")))
    inputs = [helper.make_tensor_value_info("x", TensorProto.INT64, ["batch", "mid_seq", width]), *seq_infos,
              *_cache_infos(past, elem, kv_heads, head_dim, "capacity")]
    outputs = [helper.make_tensor_value_info("hidden", elem, ["batch", "mid_seq", model.config.n_embd]),
               *_cache_infos(present, elem, kv_heads, head_dim, "capacity")]
    _save(b, "model_base", inputs, outputs, out / "model_base.onnx", metadata)
    io["base"] = {"inputs": [i.name for i in inputs], "outputs": [o.name for o in outputs]}

    # Token model: [hidden (B, S, H), embed(x (B, T))] -> the final normed states (B, S + T, H).
    net = model.net_token
    layers, kv_heads, head_dim = _shape(net)
    past, present = _kv_io("past_key_values", layers), _kv_io("present", layers)
    b = _Builder(dtype)
    embedded = b.op("Gather", [b.const("embed_tokens", net.embed_tokens.weight.detach().float().numpy()), "x"])[0]
    joined = b.op("Concat", ["hidden", embedded], axis=1)[0]
    out_states = _llama(b, net, joined, past, present, INPUTS_MARK, "total_sequence_length", width + 1)
    b.nodes.append(helper.make_node("Identity", [out_states], [STATES_OUTPUT], name=b.name("n")))
    inputs = [helper.make_tensor_value_info("hidden", elem, ["batch", "states", model.config.n_embd]),
              helper.make_tensor_value_info("x", TensorProto.INT64, ["batch", "token_seq"]), *seq_infos,
              *_cache_infos(past, elem, kv_heads, head_dim, "capacity")]
    outputs = [helper.make_tensor_value_info(STATES_OUTPUT, elem, ["batch", "token_seq1", model.config.n_embd]),
               *_cache_infos(present, elem, kv_heads, head_dim, "capacity")]
    _save(b, "model_token", inputs, outputs, out / "model_token.onnx", metadata)
    io["token"] = {"inputs": [i.name for i in inputs], "outputs": [o.name for o in outputs]}
    # The head is applied by the engine to the rows a position may take (``musebot.engine.inplace.Head``).
    np.save(out / HEAD_FILE, np.ascontiguousarray(model.lm_head.weight.detach().float().numpy()))
    return io
