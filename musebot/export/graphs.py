"""Export wrappers: the two halves of MIDIModel with the KV cache as plain input/output tensors.

Implements the graph interface of shared/spec/skytnt-format.md section 4.1 (``MIDIModelBase``,
``MIDIModelToken``). The reference wraps transformers' cache object; transformers 5 builds its causal mask
and cache with Python-side logic that does not trace to a shape-generic graph, so the decoder layers are
re-run here op by op from the very same submodules (norms, projections, rotary table, MLP), with the past
keys/values concatenated explicitly and the causal mask computed from tensor shapes. The result is one
graph that accepts any past length, including 0 on the first call.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import LlamaModel
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb


def kv_names(n_layer: int) -> tuple[list[str], list[str]]:
    """Reference names of the cache inputs (``past_key_values.{i}.key/value``) and outputs (``present.*``)."""
    past = [f"past_key_values.{i}.{kind}" for i in range(n_layer) for kind in ("key", "value")]
    present = [f"present.{i}.{kind}" for i in range(n_layer) for kind in ("key", "value")]
    return past, present


def run_llama(net: LlamaModel, embeds: torch.Tensor, past: list[torch.Tensor]) -> tuple[torch.Tensor, list]:
    """One LlamaModel forward on ``embeds (B, L, H)`` after ``past`` = [k0, v0, k1, v1, ...] ``(B, h, P, d)``.

    Same arithmetic as ``LlamaModel.forward`` with eager attention; returns the normed hidden states and the
    new caches ``(B, h, P + L, d)``.
    """
    batch, length = embeds.shape[0], embeds.shape[1]
    past_len = past[0].shape[2]
    positions = torch.arange(length, device=embeds.device) + past_len
    cos, sin = net.rotary_emb(embeds, positions.unsqueeze(0))
    # Query i (absolute position past_len + i) may attend to keys 0 .. past_len + i.
    keys = torch.arange(past_len + length, device=embeds.device)
    allowed = keys.unsqueeze(0) <= positions.unsqueeze(1)
    bias = torch.zeros(allowed.shape, dtype=embeds.dtype, device=embeds.device)
    bias = bias.masked_fill(~allowed, torch.finfo(embeds.dtype).min)

    hidden = embeds
    presents: list[torch.Tensor] = []
    for index, layer in enumerate(net.layers):
        attn = layer.self_attn
        heads = net.config.num_attention_heads
        kv_heads = net.config.num_key_value_heads or heads
        head_dim = attn.head_dim
        normed = layer.input_layernorm(hidden)
        q = attn.q_proj(normed).reshape(batch, length, heads, head_dim).transpose(1, 2)
        k = attn.k_proj(normed).reshape(batch, length, kv_heads, head_dim).transpose(1, 2)
        v = attn.v_proj(normed).reshape(batch, length, kv_heads, head_dim).transpose(1, 2)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        k = torch.cat([past[2 * index], k], dim=2)
        v = torch.cat([past[2 * index + 1], v], dim=2)
        presents += [k, v]
        if kv_heads != heads:
            k = k.repeat_interleave(heads // kv_heads, dim=1)
            v = v.repeat_interleave(heads // kv_heads, dim=1)
        scores = torch.matmul(q, k.transpose(2, 3)) * attn.scaling + bias
        weights = torch.softmax(scores.float(), dim=-1).to(q.dtype)
        context = torch.matmul(weights, v).transpose(1, 2).reshape(batch, length, heads * head_dim)
        hidden = hidden + attn.o_proj(context)
        hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
    return net.norm(hidden), presents


class BaseGraph(nn.Module):
    """``model_base.onnx``: x ``(B, L, 8)`` + past -> hidden ``(B, L, H)`` + present."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.net = model.net

    def forward(self, x: torch.Tensor, *past: torch.Tensor):
        embeds = self.net.embed_tokens(x).sum(dim=-2)
        hidden, presents = run_llama(self.net, embeds, list(past))
        return (hidden, *presents)


class TokenGraph(nn.Module):
    """``model_token.onnx``: hidden ``(B, S, H)``, x ``(B, T)`` + past -> y ``(B, S + T, V)`` + present."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.net_token = model.net_token
        self.lm_head = model.lm_head

    def forward(self, hidden: torch.Tensor, x: torch.Tensor, *past: torch.Tensor):
        embeds = torch.cat([hidden, self.net_token.embed_tokens(x)], dim=1)
        out, presents = run_llama(self.net_token, embeds, list(past))
        return (self.lm_head(out), *presents)


class SlicedTokenGraph(TokenGraph):
    """musebot's engine token graph: the reference one plus ``head_ids (n,)``, the vocabulary rows to score.

    y is ``(B, S + T, n)``: logits of those ids only. A position can only take the ids its mask allows (one
    parameter block, or the event types), so the head reads a few hundred of its rows instead of all of them:
    at batch 1 the time of a call follows the weight bytes it reads (shared/spec/skytnt-format.md 3.3).
    """

    def forward(self, hidden: torch.Tensor, x: torch.Tensor, head_ids: torch.Tensor, *past: torch.Tensor):
        embeds = torch.cat([hidden, self.net_token.embed_tokens(x)], dim=1)
        out, presents = run_llama(self.net_token, embeds, list(past))
        rows = self.lm_head.weight.index_select(0, head_ids)
        return (torch.matmul(out, rows.t()), *presents)
