"""The ``musebot`` console script: one argparse sub-command per job.

Each command module exposes ``register(subparsers)`` and keeps its heavy imports (torch, onnxruntime)
inside the handler, so ``musebot --help`` and the real-time commands start fast and never import torch.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# Modules that add sub-commands, in the order they appear in --help.
COMMAND_MODULES = [
    "musebot.tokenizers.cli",
    "musebot.export.cli",
    "musebot.engine.cli",
    "musebot.data.cli",
    "musebot.train.cli",
    "musebot.eval.cli",
    "musebot.serve",
    "musebot.tools.cli",
    "musebot.bench.cli",
]


class CommandError(Exception):
    """A user-facing failure: printed as one line, exit status 2, no traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="musebot", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        return int(args.func(args) or 0)
    except (CommandError, FileNotFoundError, ValueError) as exc:
        print(f"musebot {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
