"""Chord-tracker benchmark: ``python -m musebot.bench.chords [--pieces N] [--json]``.

The music: Bach's four-part chorales from music21's corpus (the first ``--pieces`` by file name, BWV order),
ties joined. Every note of all four voices is fed to :class:`~musebot.realtime.chord_tracker.ChordTracker`
as if played live at ``--bpm`` (a beat is a quarter note), and at the end of each beat the tracker names that
beat's chord.

Ground truth: music21's ``chordify()`` reduces the chorale to the sounding vertical at each moment; a beat's
truth is the vertical sounding at its onset, with music21's root (``Chord.root()``) and quality. Scored beats
are those whose vertical is a recognisable chord: a complete triad (major, minor, diminished, augmented;
``isTriad``) or seventh chord (dominant, major, minor, half-diminished, diminished seventh). Beats whose
onset holds a suspension, an incomplete chord or another sonority are not scored (their share is reported).

Figures, per scored beat: **root** (the tracker's root is the truth's), **root + triad** (and the triad type
agrees: 7 and maj7 count as major, m7 as minor, m7b5 and dim7 as diminished), **root + quality** (the exact
quality among the tracker's nine). Trackers: the default one; the same with the chorale's key signature as
its key prior (the major scale of the signature); and plain template matching (no bass weighting, no
hysteresis), the baseline. Cost: mean microseconds per ``chord_for_beat`` call.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from musebot.realtime.chord_tracker import ChordTracker

TRIAD = {"": "maj", "7": "maj", "maj7": "maj", "m": "min", "m7": "min", "dim": "dim", "m7b5": "dim",
         "dim7": "dim", "aug": "aug"}
TRIADS = {"major": "", "minor": "m", "diminished": "dim", "augmented": "aug"}
SEVENTHS = {"dominant seventh chord": "7", "major seventh chord": "maj7", "minor seventh chord": "m7",
            "half-diminished seventh chord": "m7b5", "diminished seventh chord": "dim7"}


def chorale_paths(count: int) -> list[Path]:
    """The first ``count`` four-part chorales of music21's corpus, by file name."""
    from music21 import corpus

    paths = sorted(p for p in corpus.getComposer("bach") if p.name.startswith("bwv") and p.suffix == ".mxl")
    return paths[:count]


def label(chord) -> tuple[int, str] | None:
    """(root pitch class, quality) of a music21 chord that is a complete triad or seventh chord, else None."""
    if chord.isTriad():
        quality = TRIADS.get(chord.quality)
    elif chord.isSeventh():
        quality = SEVENTHS.get(chord.commonName)
    else:
        return None
    return None if quality is None else (chord.root().pitchClass, quality)


def load_piece(path: Path) -> dict:
    """Notes (onset, end, pitch in quarter notes), per-beat truth and the key signature of one chorale."""
    from music21 import converter

    score = converter.parse(str(path)).stripTies()
    notes = []
    for element in score.flatten().notes:
        onset = float(element.getOffsetInHierarchy(score))
        for pitch in element.pitches:
            notes.append((onset, onset + float(element.quarterLength), int(pitch.midi)))
    chordified = score.chordify()
    verticals = [(float(c.getOffsetInHierarchy(chordified)), float(c.quarterLength), c)
                 for c in chordified.recurse().getElementsByClass("Chord")]
    length = int(max(end for _, end, _ in notes))
    truth: list[tuple[int, str] | None] = []
    k = 0
    for beat in range(length):
        while k + 1 < len(verticals) and verticals[k + 1][0] <= beat:
            k += 1
        onset, duration, chord = verticals[k]
        truth.append(label(chord) if onset <= beat < onset + duration else None)
    signatures = score.flatten().getElementsByClass("KeySignature")
    sharps = signatures[0].sharps if signatures else 0
    tonic = (7 * sharps) % 12
    key = frozenset((tonic + s) % 12 for s in (0, 2, 4, 5, 7, 9, 11))
    return {"name": path.stem, "notes": notes, "truth": truth, "key": key}


def track(tracker: ChordTracker, piece: dict, bpm: float) -> tuple[list[tuple[int, str] | None], float]:
    """The tracker's (root, quality) per beat, the piece played live at ``bpm``; and seconds per beat call."""
    spb = 60.0 / bpm
    events = sorted([(on * spb, 1, p) for on, _, p in piece["notes"]] + [(end * spb, 0, p)
                                                                         for _, end, p in piece["notes"]])
    named: list[tuple[int, str] | None] = []
    i, spent = 0, 0.0
    for beat in range(len(piece["truth"])):
        start, end = beat * spb, (beat + 1) * spb
        while i < len(events) and events[i][0] < end:
            t, kind, pitch = events[i]
            if kind:
                tracker.note_on(t, pitch, 80)
            else:
                tracker.note_off(t, pitch)
            i += 1
        began = time.perf_counter()
        chord = tracker.chord_for_beat(start, end)
        spent += time.perf_counter() - began
        named.append(None if chord is None or chord.root is None else (chord.root, chord.quality))
    return named, spent / max(len(piece["truth"]), 1)


def score(named: list, truth: list) -> dict:
    """Counts of scored beats and of beats right by root, root + triad type, root + quality."""
    counts = {"beats": len(truth), "scored": 0, "root": 0, "triad": 0, "quality": 0}
    for guess, true in zip(named, truth):
        if true is None:
            continue
        counts["scored"] += 1
        if guess is None or guess[0] != true[0]:
            continue
        counts["root"] += 1
        counts["triad"] += TRIAD.get(guess[1]) == TRIAD[true[1]]
        counts["quality"] += guess[1] == true[1]
    return counts


def run(pieces: int = 12, bpm: float = 100.0) -> dict:
    """Every tracker over the first ``pieces`` chorales; totals and accuracies per tracker."""
    loaded = [load_piece(p) for p in chorale_paths(pieces)]
    trackers = {
        "musebot tracker": lambda piece: ChordTracker(),
        "musebot tracker + key signature": lambda piece: ChordTracker(key_scale=piece["key"]),
        "template matching (baseline)": lambda piece: ChordTracker.baseline(),
    }
    results = {}
    for name, make in trackers.items():
        totals = {"beats": 0, "scored": 0, "root": 0, "triad": 0, "quality": 0}
        cost = []
        for piece in loaded:
            named, per_beat = track(make(piece), piece, bpm)
            cost.append(per_beat)
            for key, value in score(named, piece["truth"]).items():
                totals[key] += value
        scored = max(totals["scored"], 1)
        results[name] = {**totals, "root_acc": totals["root"] / scored, "triad_acc": totals["triad"] / scored,
                         "quality_acc": totals["quality"] / scored, "us_per_beat": 1e6 * sum(cost) / len(cost)}
    return {"pieces": [p["name"] for p in loaded], "bpm": bpm, "results": results}


def table(report: dict) -> str:
    """The report as a markdown table."""
    lines = ["| tracker | scored beats | root | root + triad | root + quality | µs per beat |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, r in report["results"].items():
        lines.append(f"| {name} | {r['scored']} / {r['beats']} | {100 * r['root_acc']:.1f} % | "
                     f"{100 * r['triad_acc']:.1f} % | {100 * r['quality_acc']:.1f} % | {r['us_per_beat']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m musebot.bench.chords", description=__doc__.splitlines()[0])
    parser.add_argument("--pieces", type=int, default=12, help="chorales to play (default 12)")
    parser.add_argument("--bpm", type=float, default=100.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    try:
        import music21  # noqa: F401
    except ImportError:
        print("the chord benchmark needs music21 and its corpus: pip install music21", file=sys.stderr)
        return 2
    if args.pieces < 1:
        print("--pieces must be >= 1", file=sys.stderr)
        return 2
    report = run(args.pieces, args.bpm)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{len(report['pieces'])} Bach chorales (music21 corpus, {report['pieces'][0]} ...), "
          f"played at {report['bpm']:g} bpm; truth: the chordify vertical at each beat's onset")
    print(table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
