"""``musebot dataset build SRC... --out DIR``: MIDI folders or music21 corpora -> a token dataset."""

from __future__ import annotations

import argparse
from pathlib import Path


def _threshold(text: str) -> tuple[str, float]:
    from musebot.data.build import DEFAULT_QUALITY

    name, sep, value = text.partition("=")
    if not sep or name not in DEFAULT_QUALITY:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE with NAME one of {', '.join(DEFAULT_QUALITY)}")
    try:
        return name, float(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from exc


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("dataset", help="build token datasets for training")
    sub = parser.add_subparsers(dest="dataset_command", metavar="ACTION")
    build = sub.add_parser("build", help="tokenize MIDI files into a dataset folder",
                           description="SRC is a folder of MIDI files, a MIDI file, music21:bach (Bach "
                           "chorales) or music21:folk (Essen folk songs); music21 pieces are converted once "
                           "and cached.")
    build.add_argument("sources", nargs="+", metavar="SRC")
    build.add_argument("--out", required=True, type=Path, help="dataset folder to write")
    build.add_argument("--tokenizer", default="v2o", choices=["v1", "v1o", "v2", "v2o"])
    build.add_argument("--transpose", action="store_true",
                       help="transpose every piece to C major / A minor (using its detected key)")
    build.add_argument("--max-len", type=int, default=None, help="keep at most N events per piece")
    build.add_argument("--quality", action=argparse.BooleanOptionalAction, default=True,
                       help="apply the quality filter (spec 2.8; default thresholds suit chorales/folk songs)")
    build.add_argument("--min-notes", type=int, default=None, help="quality: fewest notes a piece may have "
                       "(default 32; the reference uses 256)")
    build.add_argument("--quality-set", type=_threshold, action="append", default=[], metavar="NAME=VALUE",
                       help="override one quality threshold, e.g. tonality_min=0.7")
    build.add_argument("--valid", type=float, default=0.05, help="fraction of pieces for validation")
    build.add_argument("--test", type=float, default=0.05, help="fraction of pieces for test")
    build.add_argument("--seed", type=int, default=0, help="seed of the train/valid/test split")
    build.add_argument("--workers", type=int, default=2)
    build.add_argument("--cache", type=Path, default=None,
                       help="where converted music21 pieces are kept (default ~/.cache/musebot)")
    build.add_argument("--limit", type=int, default=None, help="use only the first N pieces of each source")
    build.set_defaults(func=_build)
    parser.set_defaults(func=lambda args: parser.print_help() or 1)


def _build(args: argparse.Namespace) -> int:
    from musebot.cli import CommandError
    from musebot.data.build import DEFAULT_QUALITY, BuildOptions, build_dataset
    from musebot.data.dataset import DatasetError
    from musebot.data.music21_sources import SourceError

    thresholds = dict(DEFAULT_QUALITY)
    if args.min_notes is not None:
        thresholds["total_notes_min"] = args.min_notes
    thresholds.update(dict(args.quality_set))
    if args.max_len is not None and args.max_len < 2:
        raise CommandError("--max-len must be at least 2 events")
    options = BuildOptions(tokenizer=args.tokenizer, transpose=args.transpose, max_len=args.max_len,
                           quality=args.quality, quality_thresholds=thresholds, valid_fraction=args.valid,
                           test_fraction=args.test, seed=args.seed, workers=args.workers)
    try:
        report = build_dataset(args.sources, args.out, options, args.cache, progress=True, limit=args.limit)
    except (DatasetError, SourceError) as exc:
        raise CommandError(str(exc)) from exc
    rejected = ", ".join(f"{k} {v}" for k, v in sorted(report.rejected.items())) or "none"
    print(f"{report.files} pieces read: {report.kept} kept ({report.rows} events), {report.corrupt} unreadable, "
          f"{report.conversion_failed} not convertible by music21, {report.duplicates} duplicates, "
          f"rejected by quality: {rejected}")
    print("split: " + ", ".join(f"{k} {v}" for k, v in report.split_sizes.items()) + f" -> {args.out}")
    return 0
