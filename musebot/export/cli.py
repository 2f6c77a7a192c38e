"""``musebot export MODEL --out DIR [--precision fp32,int8,int4]``: write the ONNX graphs the engine runs.

The reference's ``export.py`` (shared/spec/skytnt-format.md section 4.1) with checkpoint auto-detection, a
verification run against torch per precision, and musebot's quantised engine graphs in one folder each.
"""

from __future__ import annotations

import argparse
import json

PRECISION_HELP = (
    "comma-separated precisions to write (default fp32,int8,int4): fp32 is the reference pair beside "
    "config.json; int8/int4 (CPU, MatMulNBits weight-only blocks) and fp16 (CUDA) go to DIR/<precision>/"
)


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
    parser.add_argument("--precision", default="fp32,int8,int4", metavar="LIST", help=PRECISION_HELP)
    parser.add_argument("--no-verify", action="store_true", help="skip the ONNX Runtime vs torch check")
    parser.set_defaults(func=handle)


def parse_precisions(text: str) -> list[str]:
    """``"fp32,int8"`` -> ``["fp32", "int8"]``, refusing unknown names in one line."""
    from musebot.cli import CommandError
    from musebot.engine.precision import PRECISIONS

    names = [p.strip() for p in text.split(",") if p.strip()]
    unknown = [p for p in names if p not in PRECISIONS]
    if unknown or not names:
        raise CommandError(f"--precision takes a list of {', '.join(PRECISIONS)}; got {text!r}")
    return names


def handle(args: argparse.Namespace) -> int:
    from musebot.cli import CommandError
    from musebot.export.onnx_export import ExportError, export_onnx
    from musebot.models import CheckpointError, ConfigError, load_model

    precisions = parse_precisions(args.precision)
    try:
        model = load_model(args.model, config=args.config, lora=args.lora)
        figures = export_onnx(model, args.out, check=not args.no_verify, precisions=precisions)
    except (CheckpointError, ConfigError, ExportError) as exc:
        raise CommandError(str(exc)) from None
    print(json.dumps(figures, indent=2))
    return 0
