"""``musebot train --data DIR --preset NAME``: train or fine-tune a model with Lightning (CPU, GPU, DDP)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train", help="train or fine-tune a model on a dataset folder",
        description="Trains a SkyTNT-compatible model. Runs resume from OUT/checkpoints/last.ckpt when it "
        "exists; --devices/--strategy go to Lightning unchanged (e.g. --devices 2 --strategy ddp).")
    p.add_argument("--data", required=True, help="dataset folder from `musebot dataset build`")
    p.add_argument("--preset", default="tv2o-small", help="model config name (tv2o-tiny, tv2o-small, ...) "
                   "or a config.json")
    p.add_argument("--init", default=None, help="start from this checkpoint (.ckpt, .safetensors or a model "
                   "folder) of the same preset")
    p.add_argument("--out", default="runs/train", help="run folder (checkpoints, logs, samples, model/)")
    p.add_argument("--max-steps", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-len", type=int, default=512, help="events per training crop")
    p.add_argument("--lr", type=float, default=3e-4, help="peak learning rate")
    p.add_argument("--warmup-steps", type=int, default=100)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--val-every", type=int, default=200, help="validate, sample and checkpoint every N steps")
    p.add_argument("--val-batches", type=int, default=None, help="limit validation to N batches")
    p.add_argument("--accelerator", default="auto", help="cpu, gpu or auto")
    p.add_argument("--devices", default="auto", help="number of devices or 'auto'")
    p.add_argument("--strategy", default="auto", help="Lightning strategy: auto, ddp, fsdp, ...")
    p.add_argument("--precision", default=None, help="default: bf16-mixed on GPUs that support it, else 32")
    p.add_argument("--lora", action="store_true", help="train LoRA adapters only (r=64, alpha=128); the "
                   "saved model has them merged")
    p.add_argument("--lora-rank", type=int, default=64)
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-augment", dest="augment", action="store_false", help="turn augmentation off")
    p.add_argument("--max-pitch-shift", type=int, default=4, help="augmentation's largest transposition in "
                   "semitones (0 keeps a dataset built with --transpose in C major / A minor)")
    p.add_argument("--sample-events", type=int, default=256, help="events in each validation sample MIDI")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    for size in ("n_layer", "n_head", "n_embd", "n_inner"):
        p.add_argument(f"--{size.replace('_', '-')}", dest=size, type=int, default=None,
                       help=f"override the preset's {size}")
    p.set_defaults(func=_train)


def _train(args: argparse.Namespace) -> int:
    from musebot.cli import CommandError
    from musebot.data.dataset import DatasetError
    from musebot.train.run import TrainError, TrainOptions, train

    devices = int(args.devices) if str(args.devices).isdigit() else args.devices
    options = TrainOptions(
        data=args.data, preset=args.preset, out=args.out, init=args.init, max_steps=args.max_steps,
        batch_size=args.batch_size, max_len=args.max_len, lr=args.lr, weight_decay=args.weight_decay,
        warmup_steps=args.warmup_steps, val_every=args.val_every, val_batches=args.val_batches,
        accelerator=args.accelerator, devices=devices, strategy=args.strategy, precision=args.precision,
        lora=args.lora, lora_rank=args.lora_rank, lora_alpha=2 * args.lora_rank, threads=args.threads,
        seed=args.seed, sample_events=args.sample_events, augment=args.augment, progress=args.progress,
        max_pitch_shift=args.max_pitch_shift,
        n_layer=args.n_layer, n_head=args.n_head, n_embd=args.n_embd, n_inner=args.n_inner,
    )
    try:
        summary = train(options)
    except (TrainError, DatasetError) as exc:
        raise CommandError(str(exc)) from exc
    if summary["rank"]:
        return 0  # DDP worker processes run this too; rank 0 reports
    figures = ", ".join(f"{k} {v:.4f}" for k, v in summary.items() if k.startswith("val_"))
    print(f"trained {summary['steps']} steps in {summary['seconds']:.0f} s ({figures}); model: {summary['model']}")
    return 0
