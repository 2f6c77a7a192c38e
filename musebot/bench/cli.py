"""The ``bench-realtime`` and ``bench-accompany`` sub-commands (``musebot bench`` is the engine's)."""

from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    bench = subparsers.add_parser(
        "bench-realtime", help="measure scheduling error, answer and thru latency over JACK, and headroom",
    )
    bench.add_argument("--notes", type=int, default=1000, help="scheduled notes to measure (>= 1000)")
    bench.add_argument("--model",
                       help="exported model folder: measure generation headroom and model answer latency")
    bench.add_argument("--bpm", type=float, default=120.0)
    bench.add_argument("--phrases", type=int, default=8, help="calls answered for the answer latency")
    bench.add_argument("--jack-server", help="use this running JACK server instead of a private one")
    bench.add_argument("--json", metavar="FILE", help="also write the figures to this JSON file")
    bench.add_argument("--ws", action="store_true",
                       help="instead: the latency of the network API's WebSocket path beside the MIDI-port path")
    bench.add_argument("--rounds", type=int, default=200, help="--ws: takeovers per path (default %(default)s)")
    bench.set_defaults(func=run_bench)

    accompany = subparsers.add_parser(
        "bench-accompany", help="a long accompaniment session over JACK: note timing, dropped notes, beats to "
        "follow a key change",
    )
    accompany.add_argument("--model", help="exported model folder (default: the shipped model)")
    accompany.add_argument("--minutes", type=float, default=5.0, help="length of the session (default 5)")
    accompany.add_argument("--bpm", type=float, default=120.0)
    accompany.add_argument("--parts", default="bass,chords", help="parts musebot plays (default bass,chords)")
    accompany.add_argument("--key-bars", type=int, default=4, help="the musician changes key every N bars")
    accompany.add_argument("--commit-beats", type=float, default=1.0, help="the commit horizon (default 1 beat)")
    accompany.add_argument("--seed", type=int, default=0)
    accompany.add_argument("--jack-server", help="use this running JACK server instead of a private one")
    accompany.add_argument("--json", metavar="FILE", help="also write the figures to this JSON file")
    accompany.set_defaults(func=run_bench_accompany)

    soak = subparsers.add_parser(
        "bench-soak", help="a long session against the daemon in its own process: memory per minute, answers, "
        "lateness, hanging notes",
    )
    soak.add_argument("--minutes", type=float, default=10.0, help="length of the session (default 10)")
    soak.add_argument("--mode", choices=("call", "accompany", "looper"), default="call")
    soak.add_argument("--model", help="exported model folder (default: the shipped model)")
    soak.add_argument("--bpm", type=float, default=120.0)
    soak.add_argument("--phrase-s", type=float, default=6.0, help="call mode: a phrase every N s (default 6)")
    soak.add_argument("--seed", type=int, default=0)
    soak.add_argument("--daemon-log", metavar="FILE", help="the daemon's output goes here")
    soak.add_argument("--json", metavar="FILE", help="also write the figures to this JSON file")
    soak.set_defaults(func=run_bench_soak)

    from musebot.bench import tempo

    tempo.register(subparsers)  # bench-tempo: the beat tracker over real music at known tempi


def run_bench(args: argparse.Namespace) -> int:
    from musebot.bench.realtime import run_realtime_bench

    if args.ws:
        from musebot.bench.ws import run_ws_bench

        figures = run_ws_bench(args)
    else:
        figures = run_realtime_bench(args)
    return report(figures, args.json)


def run_bench_accompany(args: argparse.Namespace) -> int:
    from musebot.bench.accompany import run_accompany_bench

    return report(run_accompany_bench(args), args.json)


def run_bench_soak(args: argparse.Namespace) -> int:
    from musebot.bench.soak import run_soak

    return report(run_soak(args), args.json)


def report(figures: dict, path: str | None) -> int:
    """A benchmark's figures as JSON on stdout, and in ``path`` when given."""
    text = json.dumps(figures, indent=2)
    print(text)
    if path:
        with open(path, "w") as handle:
            handle.write(text + "\n")
    return 0
