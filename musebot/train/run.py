"""One training run: build or load the model, train with Lightning, save the final weights.

A run folder holds ``checkpoints/`` (Lightning ``.ckpt``: ``last.ckpt`` plus periodic ones), ``logs/``
(CSV metrics), ``samples/`` (one MIDI per validation), ``train_options.json`` and, at the end, ``model/``
(``config.json`` + ``model.safetensors``, the layout ``musebot export`` and ``load_model`` read). Calling
``train`` again with the same folder resumes from ``last.ckpt``: model, optimiser, scheduler and step count.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger(__name__)

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class TrainOptions:
    """Flags of ``musebot train``; saved as ``train_options.json`` in the run folder."""

    data: str
    preset: str = "tv2o-small"
    out: str = "runs/train"
    init: str | None = None
    max_steps: int = 1000
    batch_size: int = 8
    max_len: int = 512
    lr: float = 3e-4
    weight_decay: float = 0.01
    warmup_steps: int = 100
    val_every: int = 200
    val_batches: int | None = None
    accelerator: str = "auto"
    devices: str = "auto"
    strategy: str = "auto"
    precision: str | None = None
    lora: bool = False
    lora_rank: int = 64
    lora_alpha: int = 128
    threads: int | None = None
    seed: int = 0
    sample_events: int = 256
    augment: bool = True
    max_pitch_shift: int = 4
    progress: bool = True
    n_layer: int | None = None
    n_head: int | None = None
    n_embd: int | None = None
    n_inner: int | None = None


class TrainError(ValueError):
    """A run that cannot start (bad preset, checkpoint or data); the message says what to change."""


def build_config(options: TrainOptions):
    """The preset's config, with any size overrides (``n_layer`` etc.) applied."""
    from musebot.models import ConfigError, MIDIModelConfig

    try:
        config = MIDIModelConfig.resolve(options.preset)
    except ConfigError as exc:
        raise TrainError(str(exc)) from exc
    overrides = {k: getattr(options, k) for k in ("n_layer", "n_head", "n_embd", "n_inner")}
    if any(v is not None for v in overrides.values()):
        sizes = {
            "n_layer": config.net.num_hidden_layers, "n_head": config.net.num_attention_heads,
            "n_embd": config.net.hidden_size, "n_inner": config.net.intermediate_size,
        }
        sizes.update({k: v for k, v in overrides.items() if v is not None})
        try:
            config = MIDIModelConfig.from_sizes(config.tokenizer["version"], config.tokenizer["optimise_midi"],
                                                **sizes)
        except ConfigError as exc:
            raise TrainError(str(exc)) from exc
    return config


def _precision(options: TrainOptions) -> str:
    import torch

    if options.precision:
        return options.precision
    if options.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"  # CPU autocast to bf16 measured slower than fp32 here


def _add_lora(model, rank: int, alpha: int):
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=LORA_TARGETS)
    model = inject_adapter_in_model(config, model)
    for name, param in model.named_parameters():
        param.requires_grad = "lora_" in name
    return model


def _merge_lora(model):
    """A plain MIDIModel with the LoRA deltas folded into the base weights."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    from musebot.models import MIDIModel

    for module in model.modules():
        if isinstance(module, BaseTunerLayer):
            module.merge()
    state = {k.replace(".base_layer", ""): v for k, v in model.state_dict().items() if "lora_" not in k}
    merged = MIDIModel(model.config)
    merged.load_state_dict(state, strict=True)
    return merged


def train(options: TrainOptions) -> dict:
    """Train (or resume) a run; returns a summary (steps, seconds, last validation metrics, model folder)."""
    import lightning as L
    import torch
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    from musebot.models import CheckpointError, MIDIModel, load_model, save_pretrained
    from musebot.train.data import TokenDataModule
    from musebot.train.module import MIDIModelModule

    if options.threads:
        torch.set_num_threads(options.threads)
    if options.max_steps < 1:
        raise TrainError("--max-steps must be at least 1")
    if not 0 <= options.max_pitch_shift <= 12:
        raise TrainError("--max-pitch-shift must be 0..12 semitones")
    out = Path(options.out)
    config = build_config(options)
    datamodule = TokenDataModule(options.data, options.max_len, options.batch_size, config.tokenizer,
                                 augment=options.augment, seed=options.seed,
                                 max_pitch_shift=options.max_pitch_shift)
    # Pieces transposed to C major / A minor and kept there: the model knows no other key (see the config).
    config.key_normalised = bool(datamodule.data.meta.get("options", {}).get("transpose")) and (
        not options.augment or options.max_pitch_shift == 0)
    L.seed_everything(options.seed, workers=True, verbose=False)
    last = out / "checkpoints" / "last.ckpt"
    resume = last.is_file()
    if options.init and not resume:
        try:
            model = load_model(options.init, config=config)
        except CheckpointError as exc:
            raise TrainError(f"--init {options.init}: {exc}") from exc
    else:
        model = MIDIModel(config)
    model.train()  # load_model returns eval mode; dropout-free, but Lightning expects train mode
    if options.lora:
        model = _add_lora(model, options.lora_rank, options.lora_alpha)
    module = MIDIModelModule(model, options.lr, options.weight_decay, options.warmup_steps, options.max_steps,
                             sample_dir=out / "samples", sample_events=options.sample_events)
    out.mkdir(parents=True, exist_ok=True)
    (out / "train_options.json").write_text(json.dumps(asdict(options), indent=2))
    # Keeps last.ckpt (for resuming) and the newest periodic checkpoint.
    checkpoints = ModelCheckpoint(dirpath=out / "checkpoints", filename="step{step:07d}",
                                  auto_insert_metric_name=False, every_n_train_steps=options.val_every,
                                  save_last=True, save_top_k=1)
    trainer = L.Trainer(
        default_root_dir=out,
        max_steps=options.max_steps,
        accelerator=options.accelerator,
        devices=options.devices,
        strategy=options.strategy,
        precision=_precision(options),
        gradient_clip_val=1.0,
        val_check_interval=options.val_every,
        check_val_every_n_epoch=None,
        limit_val_batches=options.val_batches,
        num_sanity_val_steps=0,
        logger=CSVLogger(out, name="logs"),  # a new version_N per (re)start
        callbacks=[checkpoints],
        enable_progress_bar=options.progress,
        enable_model_summary=False,
        use_distributed_sampler=False,  # the bucket sampler shards batches by rank itself
        log_every_n_steps=max(1, min(10, options.val_every)),
    )
    started = time.time()
    trainer.fit(module, datamodule=datamodule, ckpt_path=str(last) if resume else None)
    seconds = time.time() - started
    if trainer.global_step % options.val_every:
        trainer.validate(module, datamodule=datamodule, verbose=False)  # final figures for the summary
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val_")}
    final = _merge_lora(module.model) if options.lora else module.model
    if trainer.global_step % options.val_every or not last.is_file():
        trainer.save_checkpoint(last)  # every rank calls it; Lightning writes on rank 0
    model_dir = save_pretrained(final.float().cpu(), out / "model") if trainer.is_global_zero else None
    summary = {"steps": trainer.global_step, "seconds": round(seconds, 1), "resumed": resume,
               "rank": trainer.global_rank,
               "model": str(model_dir) if model_dir else None, **metrics}
    if trainer.is_global_zero:
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
