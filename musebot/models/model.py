"""The SkyTNT two-level decoder in torch: an event-level Llama and an intra-event Llama sharing one lm_head.

Implements shared/spec/skytnt-format.md section 3.2 (architecture, training objective) and 3.3 (the
reference ``generate`` loop). Module and parameter names match the reference exactly (``net.*``,
``net_token.*``, ``lm_head.weight``) so its checkpoints load with strict key matching.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import DynamicCache, LlamaModel

from musebot.models.config import MIDIModelConfig


class MIDIModel(nn.Module):
    """``net`` reads whole events (8 summed token embeddings each); ``net_token`` spells out the next event."""

    def __init__(self, config: MIDIModelConfig) -> None:
        super().__init__()
        self.config = config
        self.net = LlamaModel(config.net)
        self.net_token = LlamaModel(config.net_token)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)

    @property
    def device(self) -> torch.device:
        return self.lm_head.weight.device

    def new_cache(self, token_level: bool = False) -> DynamicCache:
        """An empty KV cache for ``net`` (or ``net_token``)."""
        return DynamicCache(config=self.config.net_token if token_level else self.config.net)

    def forward(self, x: torch.Tensor, cache: DynamicCache | None = None) -> torch.Tensor:
        """Event level: ``x (B, L, 8)`` ids -> hidden ``(B, L, n_embd)``; ``cache`` holds earlier events.

        Each event is the sum of its 8 token embeddings (pad embeds to zero), positions continue after the
        cached events.
        """
        embeds = self.net.embed_tokens(x).sum(dim=-2)
        out = self.net(inputs_embeds=embeds, cache=cache, use_cache=cache is not None)
        return out.last_hidden_state

    def forward_token(
        self,
        hidden: torch.Tensor | None = None,
        x: torch.Tensor | None = None,
        cache: DynamicCache | None = None,
    ) -> torch.Tensor:
        """Intra-event level: ``[hidden] + embed(x)`` -> logits ``(B, S + T, vocab)``.

        ``hidden`` is the event-level output of the previous event, ``(B, 1, H)`` or ``(B, H)``, or None /
        ``(B, 0, H)`` when ``cache`` already holds it; ``x (B, T)`` are the tokens of the event so far. Logit
        row 0 predicts the event type, row j predicts token j.
        """
        parts = []
        if hidden is not None:
            parts.append(hidden.unsqueeze(1) if hidden.dim() == 2 else hidden)
        if x is not None:
            parts.append(self.net_token.embed_tokens(x))
        if not parts:
            raise ValueError("forward_token needs a hidden state or tokens")
        embeds = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
        out = self.net_token(inputs_embeds=embeds, cache=cache, use_cache=cache is not None)
        return self.lm_head(out.last_hidden_state)

    def loss(self, batch: torch.Tensor, token_positions: int | None = None) -> torch.Tensor:
        """Teacher-forced cross-entropy of a batch of event sequences ``(B, L, 8)`` (spec 3.2).

        Every event predicts the next one: the token net sees the event-level state of event ``t`` and the
        first 7 tokens of event ``t+1``; pad targets are ignored. ``token_positions`` keeps only the last
        position plus that many random others per sequence for the token net (the reference's
        ``--sample-seq``, which saves memory on long sequences).
        """
        pad_id = int(self.config.tokenizer["pad_id"])
        x, y = batch[:, :-1], batch[:, 1:]
        hidden = self.forward(x)
        if token_positions is not None and token_positions + 1 < hidden.shape[1]:
            length = hidden.shape[1]
            picks = torch.rand(hidden.shape[0], length - 1, device=hidden.device).argsort(dim=1)
            picks = picks[:, :token_positions]
            last = torch.full((hidden.shape[0], 1), length - 1, device=hidden.device, dtype=picks.dtype)
            index = torch.cat([picks, last], dim=1)
            hidden = torch.gather(hidden, 1, index[..., None].expand(-1, -1, hidden.shape[-1]))
            y = torch.gather(y, 1, index[..., None].expand(-1, -1, y.shape[-1]))
        hidden = hidden.reshape(-1, 1, hidden.shape[-1])
        y = y.reshape(-1, y.shape[-1])
        logits = self.forward_token(hidden, y[:, :-1])
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), ignore_index=pad_id)

    @torch.inference_mode()
    def generate(
        self,
        prompt: torch.Tensor | None = None,
        batch_size: int = 1,
        max_len: int = 512,
        temp: float = 1.0,
        top_p: float = 0.98,
        top_k: int = 20,
        generator: torch.Generator | None = None,
        allow_eos: bool = True,
    ) -> torch.Tensor:
        """The reference sampling loop (spec 3.3) in torch eager with KV caches; returns ``(B, L_total, 8)``.

        ``prompt`` is ``(L, 8)`` or ``(B, L, 8)`` ids (None: a single BOS row); ``max_len`` counts prompt
        events. ``allow_eos=False`` never samples the end (benchmarks of untrained models run to max_len).
        Used as the speed/accuracy baseline for the ONNX engine.
        """
        vocab = self.config.vocab
        width = vocab.max_token_seq
        if prompt is None:
            prompt = torch.tensor([vocab.special_row(vocab.bos_id)])
        prompt = torch.as_tensor(prompt, dtype=torch.long, device=self.device)
        if prompt.dim() == 2:
            prompt = prompt.unsqueeze(0)
        prompt = F.pad(prompt[..., :width], (0, width - min(width, prompt.shape[-1])), value=vocab.pad_id)
        seq = prompt.expand(batch_size, -1, -1).clone() if prompt.shape[0] == 1 else prompt.clone()
        batch_size = seq.shape[0]
        starts = sorted(vocab.event_ids.values()) + ([vocab.eos_id] if allow_eos else [])
        event_ids = torch.tensor(starts, device=self.device)
        ended = torch.zeros(batch_size, dtype=torch.bool, device=self.device)
        cache = self.new_cache()
        past_len = 0
        while seq.shape[1] < max_len and not bool(ended.all()):
            hidden = self.forward(seq[:, past_len:], cache=cache)[:, -1:]
            past_len = seq.shape[1]
            row = self._sample_event(hidden, event_ids, ended, temp, top_p, top_k, generator)
            ended |= row[:, 0] == vocab.eos_id
            seq = torch.cat([seq, row.unsqueeze(1)], dim=1)
        return seq

    def _sample_event(self, hidden, event_ids, ended, temp, top_p, top_k, generator) -> torch.Tensor:
        """Sample one 8-token row per batch item with the token net (spec 3.3 step b)."""
        vocab = self.config.vocab
        width = vocab.max_token_seq
        batch = hidden.shape[0]
        row = torch.full((batch, width), vocab.pad_id, dtype=torch.long, device=self.device)
        kinds: list[list[str]] = [[] for _ in range(batch)]
        cache = self.new_cache(token_level=True)
        for i in range(width):
            mask = torch.zeros(batch, vocab.vocab_size, device=self.device)
            for b in range(batch):
                if ended[b] or (i > 0 and i > len(kinds[b])):
                    mask[b, vocab.pad_id] = 1
                elif i == 0:
                    mask[b, event_ids] = 1
                else:
                    start, stop = vocab.parameter_range(kinds[b][i - 1])
                    mask[b, start:stop] = 1
            logits = self.forward_token(
                hidden if i == 0 else None, None if i == 0 else row[:, i - 1 : i], cache
            )
            # Mask after softmax without renormalising, as the reference does (its top-p quirk).
            probs = F.softmax(logits[:, -1] / temp, dim=-1) * mask
            token = sample_top_p_k(probs, top_p, top_k, generator)
            row[:, i] = token
            if i == 0:
                for b in range(batch):
                    name = vocab.id_events.get(int(token[b]))
                    kinds[b] = list(vocab.events[name]) if name and not ended[b] else []
            if all(ended[b] or i >= len(kinds[b]) for b in range(batch)):
                break
        return row


def sample_top_p_k(
    probs: torch.Tensor, top_p: float, top_k: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """The reference ``sample_top_p_k``: nucleus then top-k on ``(B, V)`` probabilities -> ``(B,)`` ids."""
    sorted_p, order = torch.sort(probs, dim=-1, descending=True)
    cumulative = torch.cumsum(sorted_p, dim=-1)
    sorted_p = sorted_p.masked_fill(cumulative - sorted_p > top_p, 0.0)
    sorted_p[:, top_k:] = 0.0
    sorted_p = sorted_p / sorted_p.sum(dim=-1, keepdim=True)
    picked = torch.multinomial(sorted_p, 1, generator=generator)
    return torch.gather(order, -1, picked).squeeze(-1)
