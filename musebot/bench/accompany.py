"""``musebot bench-accompany``: a long accompaniment session over a real JACK server, and its figures.

A synthetic musician in its own process (as a real one would be: no share of musebot's interpreter) plays an
eighth-note melody into ``musebot:in`` on musebot's beat grid, moving to a distant key every
``--key-bars`` bars. musebot accompanies with ``--parts`` from ``--model`` on one CPU thread (the shipped
model by default). Measured, all on the one clock (spec ``realtime-field.md`` §6):

* ``timing``: share of the parts' note-ons sent within 2 ms of their planned time (target >= 99.9 %), the
  scheduler's ``sent - planned`` percentiles, notes sent late (> 2 ms) and dropped (target 0 both);
* ``key_follow``: for each key change, beats from the musician's first note outside the old key (when the
  change becomes audible) to the last part note-on outside the new key (0 when none strayed; target <= 1
  beat), the same from the first note of the new key's segment, and the key tracker's own delay;
* ``planning``: events generated, compute, headroom, re-plans, guesses of the musician confirmed or not,
  times the planner fell behind and degraded.

``python -m musebot.bench.accompany --play ...`` is the musician process (internal).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from musebot.realtime.clock import now, sleep_until
from musebot.realtime.constraints import NOTE_NAMES, SCALES
from musebot.realtime.io import system as ports

log = logging.getLogger(__name__)

# Each key a tritone or a third from the one before: every change moves several pitch classes.
KEYS = (0, 6, 2, 8, 4, 10, 5, 11, 7, 1, 9, 3)


def musician_plan(minutes: float, bpm: float, key_bars: int, seed: int = 0) -> list[tuple[float, int, int]]:
    """``(beat, pitch, key tonic)`` of the musician's note-ons: eighth notes, a stepwise walk over the
    major scale of the current key (around middle C to two octaves up), a new key every ``key_bars`` bars."""
    rng = np.random.default_rng(seed)
    beats = int(minutes * bpm)
    notes, degree = [], 7
    for i in range(beats * 2):
        beat = i / 2
        tonic = KEYS[int(beat // (4 * key_bars)) % len(KEYS)]
        degree = int(np.clip(degree + rng.choice((-2, -1, 1, 2)), 0, 13))
        octave, step = divmod(degree, 7)
        notes.append((beat, 60 + tonic % 12 + 12 * octave + SCALES["major"][step] - (12 if tonic > 6 else 0),
                      tonic))
    return notes


def _play(argv: list[str]) -> int:
    """The musician process: ``--play ORIGIN BPM MINUTES KEY_BARS``; prints its note-on times as JSON."""
    import rtmidi

    origin, bpm, minutes, key_bars = float(argv[0]), float(argv[1]), float(argv[2]), int(argv[3])
    port = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, name="bench-musician")
    deadline = time.monotonic() + 10
    while "musebot:in" not in port.get_ports():
        if time.monotonic() > deadline:
            raise SystemExit("musebot:in did not appear")
        time.sleep(0.02)
    port.open_port(port.get_ports().index("musebot:in"), "out")
    spb = 60.0 / bpm
    sent = []
    for beat, pitch, _ in musician_plan(minutes, bpm, key_bars):
        sleep_until(origin + beat * spb)
        port.send_message([0x90, pitch, 90])
        sent.append(now())
        sleep_until(origin + (beat + 0.45) * spb)
        port.send_message([0x80, pitch, 0])
    port.close_port()
    print(json.dumps(sent))
    return 0


def key_follow(plan: list[tuple[float, int, int]], part_ons: list[tuple[float, int, int]],
               key_changes_heard: list[tuple[float, int]]) -> dict:
    """Beats the parts take to follow each key change (module docstring). ``part_ons``: ``(beat, channel,
    pitch)`` of the parts' note-ons; ``key_changes_heard``: ``(beat, tonic)`` when the tracker moved.

    A change is counted from the musician's first note outside the old key, when it becomes audible (the
    first notes of a new key are often in the old one too); ``from_first_new_key_note`` counts from the
    first note of the new key's segment, for comparison.
    """
    changes = []
    for i in range(1, len(plan)):
        beat, _, tonic = plan[i]
        old = plan[i - 1][2]
        if tonic == old:
            continue
        old_scale = {(old + s) % 12 for s in SCALES["major"]}
        segment = [n for n in plan[i:] if n[2] == tonic]
        reveal = next((b for b, pitch, t in segment if pitch % 12 not in old_scale), None)
        changes.append((beat, reveal, tonic))
    follow, from_start, detect = [], [], []
    last_part = part_ons[-1][0] if part_ons else 0
    for k, (beat, reveal, tonic) in enumerate(changes):
        end = changes[k + 1][0] if k + 1 < len(changes) else float("inf")
        if beat > last_part or reveal is None:
            continue
        scale = {(tonic + s) % 12 for s in SCALES["major"]}
        strays = [b for b, channel, pitch in part_ons if beat <= b < end and channel != 9 and pitch % 12 not in scale]
        follow.append(max(0.0, max(strays) - reveal) if strays else 0.0)
        from_start.append(max(strays) - beat if strays else 0.0)
        heard = [b for b, t in key_changes_heard if beat - 0.01 <= b < end and t == tonic]
        detect.append(heard[0] - reveal if heard else None)
    found = [d for d in detect if d is not None]
    return {
        "changes": len(follow), "beats_to_follow": [round(f, 2) for f in follow],
        "median_beats": round(float(np.median(follow)), 2) if follow else None,
        "max_beats": round(float(max(follow)), 2) if follow else None,
        "within_1_beat": sum(f <= 1.0 for f in follow),
        "from_first_new_key_note": {"beats": [round(f, 2) for f in from_start],
                                    "max_beats": round(float(max(from_start)), 2) if from_start else None},
        "tracker_beats_median": round(float(np.median(found)), 2) if found else None,
        "tracker_missed": sum(d is None for d in detect),
    }


def run_accompany_bench(args: argparse.Namespace) -> dict:
    """The whole benchmark (module docstring); returns the figures."""
    if not 0.05 <= args.minutes <= 120:
        raise ValueError("--minutes must be 0.05..120")
    model = args.model or _shipped_model()
    with ports.benchmark_jack(args.jack_server, "musebot-bench-accompany") as server:
        return _measure(args, model, server)


def _measure(args: argparse.Namespace, model, server: str) -> dict:
    """A daemon in accompany mode against the musician process, on the JACK server ``server``."""
    from musebot.realtime.config import ServeConfig
    from musebot.realtime.daemon import Daemon, Observer, ServeOptions
    from musebot.realtime.modes.band import BandConfig

    daemon = None
    try:
        parts = [p.strip() for p in args.parts.split(",") if p.strip()]
        band = BandConfig.for_mode("accompany", parts=parts, commit_beats=args.commit_beats)
        config = ServeConfig(bpm=args.bpm, seed=args.seed)
        daemon = Daemon(config, ServeOptions(mode="accompany", model=str(model), band=band))
        sends: list[tuple[float, float, tuple, str]] = []
        daemon.observers.append(Observer(
            on_sent=lambda due, sent, output, msg, tag: sends.append((due, sent, msg, tag))
            if tag and tag.startswith("part:") and output is daemon.outputs[0] else None))
        daemon.start()
        accompanist = daemon.session
        tb = accompanist.timebase
        origin = tb.time_at(float(int(tb.beat_at(now())) + 2))  # the musician starts on a beat, 2 beats in
        musician = subprocess.Popen(
            [sys.executable, "-m", "musebot.bench.accompany", "--play", str(origin), str(args.bpm),
             str(args.minutes), str(args.key_bars)], stdout=subprocess.PIPE, text=True)
        out, _ = musician.communicate(timeout=args.minutes * 60 + 60)
        if musician.returncode:
            raise RuntimeError(f"the musician process failed ({musician.returncode})")
        time.sleep(0.2)
        daemon.close()
        daemon = None
        first_beat = tb.beat_at(origin)
        plan = [(first_beat + beat, pitch, tonic) for beat, pitch, tonic in
                musician_plan(args.minutes, args.bpm, args.key_bars)]
        keys_heard = list(accompanist.key_tracker.history)
        return _figures(args, model, server, accompanist, sends, plan, keys_heard, json.loads(out))
    finally:
        if daemon is not None:
            daemon.close()


def _figures(args, model, server, band, sends, plan, keys_heard, musician_sent) -> dict:
    tb = band.timebase
    ons = [(due, sent, msg) for due, sent, msg, _ in sends if msg[0] & 0xF0 == 0x90 and msg[2] > 0]
    errors = np.array([sent - due for due, sent, _ in ons]) if ons else np.zeros(0)
    ms = np.abs(errors) * 1e3
    per_part = {name: sum(1 for _, _, m in ons if m[0] & 0x0F == part.channel)
                for name, part in band.settings.parts.items()}
    part_ons = sorted((tb.beat_at(due), m[0] & 0x0F, m[1]) for due, _, m in ons)
    stats = band.plan_stats
    music_s = len(plan) and (plan[-1][0] - plan[0][0]) * tb.seconds_per_beat
    return {
        "model": str(model), "cpu_threads": 1, "bpm": args.bpm, "minutes": args.minutes,
        # Other work on the machine moves these figures: the load and whether the scheduler thread got
        # real-time priority (root or an rtprio limit) are part of the result.
        "machine": {"cpus": os.cpu_count(), "load_average_1min": round(os.getloadavg()[0], 2),
                    "scheduler_realtime_priority": band.realtime_priority},
        "parts": per_part, "jack": {"server": server, "driver": "dummy", "rate": 48000, "period": 64},
        "musician_notes": len(musician_sent),
        "timing": {
            "part_notes": len(ons),
            "share_within_2ms": round(float(np.mean(ms <= 2.0)), 5) if len(ms) else None,
            "p50_ms": round(float(np.percentile(ms, 50)), 3) if len(ms) else None,
            "p99_ms": round(float(np.percentile(ms, 99)), 3) if len(ms) else None,
            "max_ms": round(float(ms.max()), 3) if len(ms) else None,
            "late_over_2ms": int(np.sum(ms > 2.0)),
            "dropped": band.telemetry.dropped,
            "dropped_by_scheduler": band.scheduler.stats.dropped_late,
            "stale_plan_notes": band.telemetry.stale,
            "retracted": band.telemetry.retracted,
        },
        "key_follow": key_follow(plan, part_ons, keys_heard),
        "keys_played": [NOTE_NAMES[k] + " major" for k in dict.fromkeys(tonic for _, _, tonic in plan)],
        "planning": {
            "events": stats["events"], "compute_s": round(stats["compute_s"], 2),
            "headroom": round(music_s / stats["compute_s"], 2) if stats["compute_s"] else None,
            "replans": stats["replans"], "guess_hits": stats["guess_hits"], "guess_misses": stats["guess_misses"],
            "fell_behind": stats["behind"], "polyphony_capped": stats["capped"],
        },
    }


def _shipped_model() -> Path:
    from musebot.engine.generate import DEFAULT_MODEL_DIR

    if not (DEFAULT_MODEL_DIR / "config.json").is_file():
        raise ValueError(f"no shipped model in {DEFAULT_MODEL_DIR} yet: pass --model DIR (a `musebot export`)")
    return DEFAULT_MODEL_DIR


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--play":
        sys.exit(_play(sys.argv[2:]))
    sys.exit("usage: musebot bench-accompany (this module's --play is the benchmark's musician)")
