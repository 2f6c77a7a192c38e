"""``musebot export MODEL --out DIR [--fp16 | --int8]``: write the ONNX pair the engine runs.

The reference's ``export.py`` (shared/spec/skytnt-format.md section 4.1) with checkpoint auto-detection, a
verification run against torch, and optional fp16/int8 graphs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export a model checkpoint to model_base.onnx + model_token.onnx",
        description=__doc__.splitlines()[0],
    )
    parser.add_argument("model", help="checkpoint: HF folder, .safetensors, or Lightning .ckpt")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument(
        "--config", help="config name (e.g. tv2o-medium) or config.json, if the checkpoint has none beside it"
    )
    parser.add_argument("--lora", help="PEFT LoRA adapter folder to merge before export")
    precision = parser.add_mutually_exclusive_group()
    precision.add_argument("--fp16", action="store_true", help="float16 graphs (for the CUDA provider)")
    precision.add_argument("--int8", action="store_true", help="dynamically quantised int8 weights (CPU)")
    parser.add_argument(
        "--also-fp16",
        action="store_true",
        help="also write float16 graphs to OUT/fp16/ (the engine prefers them on CUDA)",
    )
    parser.add_argument("--no-verify", action="store_true", help="skip the ONNX Runtime vs torch check")
    parser.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    from musebot.cli import CommandError
    from musebot.export.onnx_export import ExportError, export_onnx
    from musebot.models import CheckpointError, ConfigError, load_model

    if args.also_fp16 and args.fp16:
        raise CommandError("--also-fp16 adds fp16 graphs beside fp32/int8 ones; drop --fp16")
    try:
        model = load_model(args.model, config=args.config, lora=args.lora)
        figures = export_onnx(model, args.out, fp16=args.fp16, int8=args.int8, check=not args.no_verify)
        if args.also_fp16:
            figures = {"main": figures, "fp16": export_onnx(model, Path(args.out) / "fp16", fp16=True)}
    except (CheckpointError, ConfigError, ExportError) as exc:
        raise CommandError(str(exc)) from None
    print(json.dumps(figures, indent=2))
    return 0
