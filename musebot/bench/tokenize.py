"""Benchmarks run as ``python -m musebot.bench NAME``; figures are medians over repeats, as ratios in one run.

``tokenize``: notes per second for reading and tokenizing a corpus with musebot (mido + the SkyTNT
tokenizer), beside miditok's REMI on symusic on the same files as a reference point.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

DEFAULT_CORPUS = Path(__file__).resolve().parents[2] / "tests" / "data" / "reference" / "midi"


def _timed(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return times


def bench_tokenize(files: list[Path], repeats: int = 5) -> dict:
    from musebot.tokenizers import MIDITokenizer, load_score

    datas = [f.read_bytes() for f in files]
    scores = [load_score(d) for d in datas]
    n_notes = sum(e[0] == "note" for s in scores for tr in s[1:] for e in tr)
    results: dict[str, dict] = {}

    def record(name: str, fn) -> None:
        times = _timed(fn, repeats)
        med = statistics.median(times)
        results[name] = {"median_s": med, "min_s": min(times), "max_s": max(times), "notes_per_s": n_notes / med}

    record("musebot read (mido)", lambda: [load_score(d) for d in datas])
    for variant in ("v2o", "v1"):
        tok = MIDITokenizer.from_name(variant)
        record(f"musebot tokenize {variant}", lambda tok=tok: [tok.tokenize(s) for s in scores])
        record(f"musebot read+tokenize {variant}", lambda tok=tok: [tok.tokenize(load_score(d)) for d in datas])
    try:
        import miditok
        import symusic
    except ImportError:
        results["miditok REMI (symusic)"] = {"error": "miditok/symusic not installed (pip install '.[dev]')"}
    else:
        remi = miditok.REMI()
        sym_scores = [symusic.Score.from_midi(d) for d in datas]
        record("miditok REMI tokenize", lambda: [remi(s) for s in sym_scores])
        record("miditok REMI read+tokenize (symusic)",
               lambda: [remi(symusic.Score.from_midi(d)) for d in datas])
    return {"files": len(files), "notes": n_notes, "repeats": repeats, "results": results}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m musebot.bench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="name", required=True)
    p = sub.add_parser("tokenize", help="notes/s of tokenizing a corpus, beside miditok REMI")
    p.add_argument("paths", nargs="*", type=Path, help="MIDI files or folders (default: the reference files)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    files: list[Path] = []
    for path in args.paths or [DEFAULT_CORPUS]:
        files += sorted(path.rglob("*.mid")) if path.is_dir() else [path]
    if not files:
        print("no MIDI files found", file=sys.stderr)
        return 2
    report = bench_tokenize(files, args.repeats)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{report['files']} files, {report['notes']} notes, median of {report['repeats']} runs")
    print(f"{'':40s} {'median ms':>10s} {'notes/s':>12s}")
    for name, r in report["results"].items():
        if "error" in r:
            print(f"{name:40s} {r['error']}")
        else:
            print(f"{name:40s} {r['median_s'] * 1e3:10.1f} {r['notes_per_s']:12,.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
