"""``musebot tokenize`` and ``musebot detokenize``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from musebot.cli import CommandError
from musebot.tokenizers.score import MidiFileError, load_score, save_score
from musebot.tokenizers.tokenizer import MIDITokenizer


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("tokenize", help="MIDI files -> SkyTNT token rows")
    p.add_argument("files", nargs="+", type=Path, metavar="FILE")
    p.add_argument("--tokenizer", default="v2o", choices=["v1", "v1o", "v2", "v2o"],
                   help="version, 'o' = optimise (remap tracks/channels, default instruments); default v2o")
    p.add_argument("--json", action="store_true",
                   help="one JSON object on stdout: {path: [[8 ids], ...]} with BOS/EOS rows")
    p.set_defaults(func=_tokenize)

    p = subparsers.add_parser("detokenize", help="token rows (JSON) -> a MIDI file")
    p.add_argument("rows", type=Path, metavar="ROWS.json",
                   help="a list of 8-int rows, or the {path: rows} object that tokenize --json prints")
    p.add_argument("--tokenizer", default="v2o", choices=["v1", "v1o", "v2", "v2o"])
    p.add_argument("--out", type=Path, required=True, metavar="FILE.mid")
    p.set_defaults(func=_detokenize)


def _tokenize(args: argparse.Namespace) -> int:
    tok = MIDITokenizer.from_name(args.tokenizer)
    result: dict[str, list[list[int]]] = {}
    failures = 0
    for path in args.files:
        try:
            rows = tok.tokenize(load_score(path))
        except (MidiFileError, ValueError) as exc:
            failures += 1
            print(f"musebot tokenize: skipped {exc}", file=sys.stderr)
            continue
        result[str(path)] = rows
        if tok.dropped_events:
            print(f"musebot tokenize: {path}: {tok.dropped_events} events dropped (a gap over 127 beats or a "
                  "note of 128 beats or more cannot be expressed in SkyTNT tokens)", file=sys.stderr)
        if not args.json:
            notes = sum(1 for r in rows if r[0] == tok.vocab.event_ids["note"])
            print(f"{path}: {len(rows)} rows, {notes} notes")
    if args.json:
        json.dump(result, sys.stdout, separators=(",", ":"))
        sys.stdout.write("\n")
    if failures and not result:
        raise CommandError(f"none of the {failures} file(s) could be read")
    return 1 if failures else 0


def _detokenize(args: argparse.Namespace) -> int:
    try:
        data = json.loads(args.rows.read_text())
    except json.JSONDecodeError as exc:
        raise CommandError(f"{args.rows}: not JSON ({exc})") from exc
    if isinstance(data, dict):
        if len(data) != 1:
            raise CommandError(f"{args.rows}: holds {len(data)} pieces; give a file with one")
        data = next(iter(data.values()))
    if not isinstance(data, list) or not all(
        isinstance(r, list) and r and all(isinstance(x, int) for x in r) for r in data
    ):
        raise CommandError(f"{args.rows}: expected a list of rows of integers")
    tok = MIDITokenizer.from_name(args.tokenizer)
    score = tok.detokenize(data)
    notes = sum(1 for track in score[1:] for e in track if e[0] == "note")
    save_score(score, args.out)
    print(f"{args.out}: {notes} notes in {len(score) - 1} tracks")
    return 0
