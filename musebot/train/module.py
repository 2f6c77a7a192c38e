"""The Lightning module that trains a MIDIModel (spec 3.2 training objective).

Loss: teacher-forced cross-entropy over all 8 tokens of every next event, pad ignored (``MIDIModel.loss``).
Optimiser: AdamW, linear warm-up then cosine decay to 10% of the peak rate. Validation reports the loss,
the token accuracy (share of non-pad target tokens whose argmax is right) and the event accuracy (share of
events whose every token is right), and writes one sample MIDI per validation.

Checkpoints store the weights under the reference's key names (``net.*``, ``net_token.*``, ``lm_head.*``, no
``model.`` prefix), so a musebot ``.ckpt`` loads wherever a SkyTNT Lightning checkpoint does.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F

from musebot.models import MIDIModel

log = logging.getLogger(__name__)


def lr_factor(step: int, warmup: int, total: int, floor: float = 0.1) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to ``floor`` at ``total`` steps."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


@torch.no_grad()
def next_token_stats(model: MIDIModel, batch: torch.Tensor) -> dict[str, float]:
    """Sums over a batch of ``(B, L, 8)`` sequences: ``loss`` (summed cross-entropy), ``tokens`` (non-pad
    targets), ``correct`` (argmax right), ``events`` and ``events_correct`` (every token of the event right).

    The same teacher forcing as the training loss (spec 3.2): event ``t``'s state plus the first 7 tokens of
    event ``t+1`` predict the 8 tokens of event ``t+1``.
    """
    pad_id = int(model.config.tokenizer["pad_id"])
    x, y = batch[:, :-1], batch[:, 1:]
    hidden = model.forward(x)
    hidden = hidden.reshape(-1, 1, hidden.shape[-1])
    y = y.reshape(-1, y.shape[-1])
    real = y[:, 0] != pad_id  # padded events of short sequences
    hidden, y = hidden[real], y[real]
    logits = model.forward_token(hidden, y[:, :-1]).float()
    mask = y != pad_id
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), ignore_index=pad_id,
                           reduction="sum")
    right = (logits.argmax(-1) == y) | ~mask
    return {
        "loss": float(loss),
        "tokens": int(mask.sum()),
        "correct": int((right & mask).sum()),
        "events": len(y),
        "events_correct": int(right.all(dim=1).sum()),
    }


class MIDIModelModule(L.LightningModule):
    """Wraps a MIDIModel for ``lightning.Trainer``; ``sample_dir`` receives one MIDI per validation."""

    def __init__(self, model: MIDIModel, lr: float = 3e-4, weight_decay: float = 0.01, warmup_steps: int = 100,
                 max_steps: int = 1000, sample_dir: str | Path | None = None, sample_events: int = 256) -> None:
        super().__init__()
        self.model = model
        self.lr = lr
        self.weight_decay = weight_decay
        self.warmup_steps = warmup_steps
        self.max_steps = max_steps
        self.sample_dir = Path(sample_dir) if sample_dir else None
        self.sample_events = sample_events
        self._val: dict[str, float] = {}

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        loss = self.model.loss(batch)
        self.log("train_loss", loss, prog_bar=True, on_step=True, batch_size=batch.shape[0])
        self.log("lr", self.optimizers().param_groups[0]["lr"], on_step=True, batch_size=batch.shape[0])
        return loss

    def on_validation_epoch_start(self) -> None:
        self._val = {"loss": 0.0, "tokens": 0, "correct": 0, "events": 0, "events_correct": 0}

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        for key, value in next_token_stats(self.model, batch).items():
            self._val[key] += value

    def on_validation_epoch_end(self) -> None:
        totals = torch.tensor([self._val[k] for k in ("loss", "tokens", "correct", "events", "events_correct")],
                              dtype=torch.float64, device=self.device)
        totals = self.trainer.strategy.reduce(totals, reduce_op="sum")  # all ranks' sums under DDP
        loss, tokens, correct, events, events_correct = totals.tolist()
        # Already summed over ranks, so every rank logs the same values; sync_dist only averages equals.
        tokens, events = max(tokens, 1.0), max(events, 1.0)
        self.log("val_loss", loss / tokens, prog_bar=True, sync_dist=True)
        self.log("val_token_acc", correct / tokens, prog_bar=True, sync_dist=True)
        self.log("val_event_acc", events_correct / events, sync_dist=True)
        if self.sample_dir is not None and self.trainer.is_global_zero and not self.trainer.sanity_checking:
            self.write_sample()

    def write_sample(self) -> Path | None:
        """Generate ``sample_events`` events from a BOS row and save them as a MIDI file."""
        from musebot.tokenizers import MIDITokenizer, save_score

        tok = MIDITokenizer.from_dict(self.model.config.tokenizer)
        generator = torch.Generator(device=self.device).manual_seed(self.global_step)
        was_training = self.model.training
        self.model.eval()
        try:
            rows = self.model.generate(max_len=self.sample_events, generator=generator)[0].tolist()
        finally:
            self.model.train(was_training)
        self.sample_dir.mkdir(parents=True, exist_ok=True)
        path = self.sample_dir / f"sample_step{self.global_step:07d}.mid"
        score = tok.detokenize(rows)
        if not any(track for track in score[1:]):
            log.info("sample at step %d has no events", self.global_step)
            return None
        save_score(score, path)
        return path

    def configure_optimizers(self):
        decay = [p for n, p in self.model.named_parameters() if p.requires_grad and p.dim() >= 2]
        no_decay = [p for n, p in self.model.named_parameters() if p.requires_grad and p.dim() < 2]
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": self.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=self.lr, betas=(0.9, 0.99),
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: lr_factor(step, self.warmup_steps, self.max_steps)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # The reference's key names in checkpoints (see module docstring).
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["state_dict"] = {k.removeprefix("model."): v for k, v in checkpoint["state_dict"].items()}
        checkpoint["model_config"] = self.model.config.to_dict()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint["state_dict"]
        if not any(k.startswith("model.") for k in state):
            checkpoint["state_dict"] = {f"model.{k}": v for k, v in state.items()}
