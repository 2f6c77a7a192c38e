"""Tempo and beat tracker benchmark: ``python -m musebot.bench.tempo [--pieces N] [--json]``.

Real music (the reference MIDI files in ``tests/data/reference/midi`` and pieces of music21's corpus,
parsed offline) is rendered to onsets the way a musician would play it: the top voice (``--texture``: every
note, chords included) from a seeded random starting note, at known tempi (72, 96, 104, 120, 142 bpm and
one drawn from 60-180), humanised by uniform +-15 ms, straight and with 2:1 swing on the off-beat eighths
(pieces in simple metre only: a 6/8 tune is not swung).
Each method hears the onsets one by one with ``--bpm 120`` as its initial guess, and is scored after 4, 8
and 16 notes (onset events: a chord counts once):

- tempo: the estimate is within 4 % of the true quarter-note tempo;
- metrical: within 4 % of x2 or x1/2 of it (octave errors) or of x3/2, x2/3, x3, x1/3 (triple-metre and
  compound-metre readings such as a dotted-quarter beat), counted apart and not as correct;
- phase: tempo correct and the estimate's beat nearest the last heard onset is within 1/16 beat of a true
  beat (the true beats are the score's quarter-note offsets);
- err: the median absolute tempo error in percent.

Methods: ``tracker`` (:class:`musebot.realtime.tempo.BeatTracker`), ``ioi-cluster`` (Dixon 2001 IOI
clustering, :mod:`musebot.realtime.tempo_baselines`) and ``fixed`` (always the initial bpm, phase at the
first onset). The tracker's cost per ``add_onset`` with 64 onsets in its window is measured too.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from musebot.realtime.tempo import BeatTracker
from musebot.realtime.tempo_baselines import FixedTempo, IOIClustering

REFERENCE = Path(__file__).resolve().parents[2] / "tests" / "data" / "reference" / "midi"
MUSIC21_WORKS = ("joplin/maple_leaf_rag", "mozart/k80/movement1", "leadSheet/fosterBrownHair.xml",
                 "verdi/laDonnaEMobile", "handel/rinaldo/lascia_chio_pianga", "cpebach",
                 "chopin/mazurka06-2", "haydn/opus1no1/movement1", "corelli/opus3no1/1grave",
                 "schumann_robert/opus41no1/movement2", "bach/bwv1.6", "bach/bwv10.7")
TEMPI = (72.0, 96.0, 104.0, 120.0, 142.0)
NOTE_COUNTS = (4, 8, 16)
METHODS: dict[str, Callable[[float], object]] = {
    "tracker": lambda bpm: BeatTracker(initial_bpm=bpm),
    "ioi-cluster": lambda bpm: IOIClustering(initial_bpm=bpm),
    "fixed": lambda bpm: FixedTempo(initial_bpm=bpm),
}
METRICAL_RATIOS = (2.0, 0.5, 1.5, 2 / 3, 3.0, 1 / 3)

Note = tuple[float, int, float]  # (onset in quarter notes, pitch, duration in quarter notes)


def _midi_notes(path: Path, texture: bool) -> tuple[list[Note], bool]:
    import mido

    mid = mido.MidiFile(path)
    voices: dict[tuple[int, int], list[Note]] = {}
    compound = False
    for index, track in enumerate(mid.tracks):
        tick, sounding = 0, {}
        for msg in track:
            tick += msg.time
            if msg.type == "time_signature":
                compound |= msg.denominator >= 8 and msg.numerator % 3 == 0
            elif msg.type == "note_on" and msg.velocity > 0:
                sounding[(msg.channel, msg.note)] = tick
            elif msg.type in ("note_on", "note_off") and (msg.channel, msg.note) in sounding:
                start = sounding.pop((msg.channel, msg.note))
                voices.setdefault((index, msg.channel), []).append(
                    (start / mid.ticks_per_beat, msg.note, (tick - start) / mid.ticks_per_beat))
    return _choose(list(voices.values()), texture), compound


def _music21_notes(work: str, texture: bool) -> tuple[list[Note], bool]:
    from music21 import corpus

    score = corpus.parse(work)
    signatures = score.flatten().getElementsByClass("TimeSignature")
    compound = any(ts.denominator >= 8 and ts.numerator % 3 == 0 for ts in signatures)
    voices = []
    for part in score.parts:
        notes = []
        for n in part.stripTies().flatten().notes:
            top = max(p.midi for p in n.pitches)
            notes.append((float(n.offset), top, float(n.quarterLength)))
        voices.append(notes)
    return _choose(voices, texture), compound


def _choose(voices: list[list[Note]], texture: bool) -> list[Note]:
    """The whole texture, or the voice with the highest mean pitch (the melody) among voices of >= 16 notes."""
    voices = [v for v in voices if v]
    if texture:
        return sorted(n for v in voices for n in v)
    long = [v for v in voices if len(v) >= 16] or voices
    if not long:
        return []
    melody = max(long, key=lambda v: statistics.mean(p for _, p, _ in v))
    # A voice can hold a chord (music21 keeps chords in one part): one onset, the top note.
    top: dict[float, Note] = {}
    for note in melody:
        if note[0] not in top or note[1] > top[note[0]][1]:
            top[note[0]] = note
    return sorted(top.values())


Piece = tuple[str, list[Note], bool]  # name, notes, compound metre (6/8, 9/8, 12/8: never swung)


def load_pieces(limit: int, texture: bool = False) -> list[Piece]:
    """Up to ``limit`` pieces: the reference MIDI files first, then music21 works."""
    pieces: list[Piece] = []
    for path in sorted(REFERENCE.glob("*.mid")):
        if len(pieces) >= limit:
            return pieces
        notes, compound = _midi_notes(path, texture)
        if len(notes) >= 20:
            pieces.append((path.stem, notes, compound))
    from music21.exceptions21 import Music21Exception

    for work in MUSIC21_WORKS:
        if len(pieces) >= limit:
            break
        try:
            notes, compound = _music21_notes(work, texture)
        except (Music21Exception, OSError, ValueError) as exc:  # a missing work or a parse failure: say so
            print(f"skipping music21 {work}: {exc}", file=sys.stderr)
            continue
        if len(notes) >= 20:
            pieces.append((f"music21:{work}", notes, compound))
    return pieces


def render(notes: list[Note], bpm: float, swing: bool, rng: random.Random, jitter_s: float = 0.015
           ) -> tuple[list[tuple[float, int, float]], float]:
    """Onsets ``(seconds, pitch, duration s)`` from a random starting note; returns them and the true time
    of quarter-note offset 0 (every true beat is that plus a whole number of beat periods)."""
    period = 60.0 / bpm
    start = rng.randrange(0, max(1, len(notes) - 20))
    origin = notes[start][0]
    t0 = 10.0 + rng.uniform(0, 5)
    zero = t0 - origin * period  # time of offset 0 (an integer number of beats from the true grid)
    onsets = []
    for offset, pitch, dur in notes[start:start + 64]:
        pos = offset
        if swing and abs(offset % 1.0 - 0.5) < 1e-6:
            pos = offset + 1 / 6
        onsets.append((zero + pos * period + rng.uniform(-jitter_s, jitter_s), pitch, dur * period))
    return onsets, zero


def _score(est, bpm: float, zero: float, last_onset: float) -> dict:
    ratio = est.bpm / bpm
    tempo_ok = abs(ratio - 1) <= 0.04
    metrical = not tempo_ok and any(abs(ratio / r - 1) <= 0.04 for r in METRICAL_RATIOS)
    octave = not tempo_ok and any(abs(ratio / r - 1) <= 0.04 for r in (2.0, 0.5))
    phase_ok = False
    if tempo_ok:
        beat = est.time_at(round(est.beat_at(last_onset)))
        pos = (beat - zero) / (60.0 / bpm)
        phase_ok = abs(pos - round(pos)) <= 1 / 16
    return {"tempo": tempo_ok, "octave": octave, "metrical": metrical, "phase": phase_ok,
            "err": abs(ratio - 1) * 100}


def run(pieces: list[Piece], seed: int = 0, swing: bool = True, initial_bpm: float = 120.0,
        texture: bool = False) -> dict:
    """Every method on every (piece, tempo, straight/swung) trial; returns the scores."""
    rng = random.Random(seed)
    chord = 0.045
    outcomes: dict[str, dict[int, list[dict]]] = {m: {n: [] for n in NOTE_COUNTS} for m in METHODS}
    trials = 0
    for _, notes, compound in pieces:
        for bpm in (*TEMPI, round(rng.uniform(60, 180), 1)):
            for swung in (False, True) if swing and not compound else (False,):
                onsets, zero = render(notes, bpm, swung, rng)
                trials += 1
                for name, make in METHODS.items():
                    tracker = make(initial_bpm)
                    events, last = 0, None
                    for t, pitch, dur in onsets:
                        if texture and last is not None and t - last <= chord:
                            tracker.add_onset(t, pitch, 80, dur)
                            continue
                        if events in NOTE_COUNTS:  # score after n events, before the next one
                            outcomes[name][events].append(_score(tracker.estimate(), bpm, zero, last))
                        if events >= max(NOTE_COUNTS):
                            break
                        tracker.add_onset(t, pitch, 80, dur)
                        events, last = events + 1, t
                    else:
                        if events in NOTE_COUNTS:
                            outcomes[name][events].append(_score(tracker.estimate(), bpm, zero, last))
    table = {}
    for name, by_n in outcomes.items():
        table[name] = {}
        for n, rows in by_n.items():
            k = max(1, len(rows))
            table[name][n] = {
                "trials": len(rows),
                "tempo_pct": 100 * sum(r["tempo"] for r in rows) / k,
                "phase_pct": 100 * sum(r["phase"] for r in rows) / k,
                "octave_pct": 100 * sum(r["octave"] for r in rows) / k,
                "metrical_pct": 100 * sum(r["metrical"] for r in rows) / k,
                "median_err_pct": statistics.median(r["err"] for r in rows) if rows else 0.0,
            }
    return {"pieces": [p[0] for p in pieces], "trials": trials, "seed": seed, "swing": swing,
            "texture": texture, "initial_bpm": initial_bpm, "results": table}


def measure_cost(n_onsets: int = 64, updates: int = 200, seed: int = 0) -> dict:
    """Milliseconds per ``BeatTracker.add_onset`` with ``n_onsets`` already in the window (median, p99)."""
    rng = random.Random(seed)
    tracker = BeatTracker(initial_bpm=120.0)
    t, period = 0.0, 60.0 / 100.0
    pattern = (0.5, 0.5, 1.0, 0.5, 0.5, 0.25, 0.25, 0.5)
    for i in range(n_onsets):
        tracker.add_onset(t + rng.uniform(-0.015, 0.015), 60 + i % 12, 80)
        t += pattern[i % len(pattern)] * period
    times = []
    for i in range(updates):
        started = time.perf_counter()
        tracker.add_onset(t + rng.uniform(-0.015, 0.015), 60 + i % 12, 80)
        times.append((time.perf_counter() - started) * 1000)
        t += pattern[i % len(pattern)] * period
    times.sort()
    return {"onsets_in_window": n_onsets, "updates": updates, "median_ms": statistics.median(times),
            "p99_ms": times[min(len(times) - 1, int(0.99 * len(times)))]}


def markdown(report: dict) -> str:
    kind = "texture" if report["texture"] else "melody"
    rendering = "straight + swung" if report["swing"] else "straight"
    head = (f"{len(report['pieces'])} pieces, {report['trials']} trials ({kind}, {rendering}, +-15 ms, "
            f"initial guess {report['initial_bpm']:g} bpm, seed {report['seed']})")
    columns = ("| method | notes | tempo within 4 % | phase within 1/16 beat | octave error (x2, x1/2) "
               "| other metrical (x3/2, x2/3, x3, x1/3) | median tempo error |")
    lines = [head, "", columns, "|---|---|---|---|---|---|---|"]
    for name, by_n in report["results"].items():
        for n, r in by_n.items():
            lines.append(f"| {name} | {n} | {r['tempo_pct']:.1f} % | {r['phase_pct']:.1f} % | "
                         f"{r['octave_pct']:.1f} % | {r['metrical_pct'] - r['octave_pct']:.1f} % | "
                         f"{r['median_err_pct']:.1f} % |")
    if "cost" in report:
        c = report["cost"]
        cost = (f"tracker cost per add_onset with {c['onsets_in_window']} onsets: median "
                f"{c['median_ms']:.2f} ms, p99 {c['p99_ms']:.2f} ms ({c['updates']} updates)")
        lines += ["", cost]
    return "\n".join(lines)


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pieces", type=int, default=30, help="at most this many pieces (reference files first)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bpm", type=float, default=120.0, help="every method's initial guess (call mode's --bpm)")
    parser.add_argument("--no-swing", action="store_true", help="straight renderings only")
    parser.add_argument("--texture", action="store_true", help="every note (chords) instead of the top voice")
    parser.add_argument("--no-cost", action="store_true", help="skip the tracker's cost measurement")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def _run_args(args: argparse.Namespace) -> int:
    pieces = load_pieces(args.pieces, args.texture)
    if not pieces:
        print("no pieces found", file=sys.stderr)
        return 2
    report = run(pieces, seed=args.seed, swing=not args.no_swing, initial_bpm=args.bpm, texture=args.texture)
    if not args.no_cost:
        report["cost"] = measure_cost()
    print(json.dumps(report, indent=2) if args.json else markdown(report))
    return 0


def register(subparsers) -> None:
    """Add ``bench-tempo`` to a CLI's subparsers (it runs :func:`main`'s benchmark)."""
    parser = subparsers.add_parser("bench-tempo", help="tempo/beat tracker benchmark over real music")
    _add_arguments(parser)
    parser.set_defaults(func=_run_args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m musebot.bench.tempo", description=__doc__.splitlines()[0])
    _add_arguments(parser)
    return _run_args(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
