"""``musebot bench-realtime``: timing figures of the real-time path over a real JACK server.

Measured, all on the one clock (spec ``realtime-field.md`` §6 goals: thru <= 10 ms added latency and
<= 1 ms p99 jitter; >= 99.9 % of notes within +-2 ms; model takeover -> first note <= 250 ms on CPU):

* ``scheduling``: ``|sent - due|`` of >= 1000 scheduled notes (2 messages each) on a JACK port, and
  ``arrival - due`` at a client listening to that port (adds JACK's one-period hop);
* ``thru``: musician's note-on sent to ``musebot:in`` -> arrival from ``musebot-out:out`` (``--thru``);
* ``answer``: the moment an answer is due -> its first note-on arriving from ``musebot-out:out``, for the
  model answerer when ``--model`` is given (else the echo answerer, labelled so); and the takeover
  controller sent by the musician -> the first answer note-on they hear (due ``takeover_lead_ms`` later);
* ``generation``: the engine's events per second and headroom, seconds of music generated per second of
  compute (answer-style sampling: notes only), when ``--model`` is given.

A private ``jackd -S -t 500 -d dummy -r 48000 -p 64`` is started (and stopped) unless ``--jack-server`` names
one: synchronous, so that a client the machine held up delays its cycle instead of losing its MIDI.
"""

from __future__ import annotations

import argparse
import logging
import time

import numpy as np

from musebot.bench.stats import Probe, percentiles
from musebot.realtime import midi
from musebot.realtime.clock import now
from musebot.realtime.config import ServeConfig
from musebot.realtime.io import system as ports
from musebot.realtime.io.outputs import RtMidiOutput
from musebot.realtime.scheduler import Scheduler

log = logging.getLogger(__name__)


def bench_scheduling(n_notes: int, spacing_s: float = 0.004) -> dict:
    """``n_notes`` notes through the scheduler to a virtual JACK port, heard by a second client."""
    api = ports.api_id("jack")
    out = RtMidiOutput(api, "bench-sched", "out", virtual=True)
    probe = Probe("bench-sched:out")
    sched = Scheduler(late_s=0.002, drop_late_s=1.0, errors_kept=2 * n_notes)  # every message
    due_of: dict[tuple[int, int], float] = {}
    try:
        sched.start()
        start = now() + 0.2
        items = []
        for i in range(n_notes):
            due = start + i * spacing_s
            # Pitch and velocity encode the index, so each arrival is matched to its own deadline.
            pitch, velocity = 20 + i % 100, 1 + (i // 100) % 126
            due_of[(pitch, velocity)] = due
            items.append((due, out, midi.note_on(0, pitch, velocity)))
            items.append((due + spacing_s / 2, out, midi.note_off(0, pitch)))
        sched.schedule_many(items)
        time.sleep(0.4 + n_notes * spacing_s)
        errors = list(sched.stats.errors)
        arrivals = [t - due_of[(m[1], m[2])] for t, m in probe.note_ons() if (m[1], m[2]) in due_of]
        within_2ms = float(np.mean(np.abs(errors) <= 0.002)) if errors else 0.0
        return {
            "notes": n_notes, "messages_sent": sched.stats.sent, "late_over_2ms": sched.stats.late,
            "dropped": sched.stats.dropped_late, "share_within_2ms": round(within_2ms, 5),
            "abs_sent_minus_due": percentiles([abs(e) for e in errors]),
            "arrival_minus_due": percentiles(arrivals), "arrivals": len(arrivals),
        }
    finally:
        sched.stop()
        probe.close()
        out.close()


def bench_thru(n_notes: int = 300) -> dict:
    """Note-on into ``musebot:in`` -> the same note out of ``musebot-out:out`` (listen mode, --thru)."""
    from musebot.realtime.daemon import Daemon, ServeOptions

    daemon = Daemon(ServeConfig(thru=True), ServeOptions(mode="listen", answer="echo")).start()
    probe = Probe("musebot-out:out", play_to="musebot:in")
    try:
        time.sleep(0.1)
        sent = {}  # (pitch, velocity) -> when it was sent: one note each for up to lcm(60, 127) notes
        for i in range(n_notes):
            pitch, velocity = 30 + i % 60, 1 + i % 127
            sent[pitch, velocity] = probe.send((0x90, pitch, velocity))
            time.sleep(0.003)
            probe.send((0x80, pitch, 0))
            time.sleep(0.003)
        # Wait for the stragglers (a starved listener on a loaded machine is late, not lossy) rather than
        # count what arrived within a fixed time; each arrival is paired with its own note, not by order.
        deadline = now() + 2.0
        while len(probe.note_ons()) < n_notes and now() < deadline:
            time.sleep(0.01)
        ons = probe.note_ons()
        latencies = [t - sent[m[1], m[2]] for t, m in ons if (m[1], m[2]) in sent]
        return {"notes": n_notes, "received": len(ons), "latency": percentiles(latencies)}
    finally:
        probe.close()
        daemon.close()


def bench_answers(model: str | None, phrases: int, bpm: float) -> dict:
    """Call and response through JACK: due moment -> first answer note-on at the musician's port."""
    from musebot.realtime.daemon import Daemon, ServeOptions

    config = ServeConfig(bpm=bpm, silence_ms=300, seed=1)
    daemon = Daemon(config, ServeOptions(model=model, answer="model" if model else "echo")).start()
    probe = Probe("musebot-out:out", play_to="musebot:in")
    latencies, missing = [], 0
    try:
        time.sleep(0.1)
        scale = [60, 62, 64, 65, 67, 69, 71, 72]
        for k in range(phrases):
            before = len(probe.note_ons())
            for j in range(len(scale)):
                p = scale[(j + k) % len(scale)]
                probe.send((0x90, p, 80))
                time.sleep(0.1)
                probe.send((0x80, p, 0))
            end = now() + 1.0
            while daemon.session.state != "waiting" and now() < end:  # the listener saw the last release
                time.sleep(0.001)
            answer_id = daemon.session.answer_id
            end = now() + 0.3 + 2.0
            while now() < end and len(probe.note_ons()) == before:
                time.sleep(0.002)
            due = daemon.slot.first_due.get(answer_id)
            ons = probe.note_ons()[before:]
            if due is None or not ons:
                missing += 1
            else:
                latencies.append(ons[0][0] - due)
            # Let the answer play out before the next call (the answer is as long as the call).
            while daemon.session.state != "idle" and now() < end + 3:
                time.sleep(0.01)
        takeover, takeover_missing = [], 0
        for k in range(phrases):
            # Pedal down: the phrase cannot end by silence; the takeover controller hands over.
            before = len(probe.note_ons())
            probe.send((0xB0, 64, 127))
            for j in range(4):
                p = scale[(j + k) % len(scale)]
                probe.send((0x90, p, 80))
                time.sleep(0.1)
                probe.send((0x80, p, 0))
            time.sleep(0.05)
            sent = probe.send((0xB0, config.controls.takeover, 127))
            end = now() + 2.0
            while now() < end and len(probe.note_ons()) == before:
                time.sleep(0.001)
            ons = probe.note_ons()[before:]
            if ons:
                takeover.append(ons[0][0] - sent)
            else:
                takeover_missing += 1
            probe.send((0xB0, config.controls.takeover, 0))
            probe.send((0xB0, 64, 0))
            while daemon.session.state != "idle" and now() < end + 3:
                time.sleep(0.01)
        figures = {"answerer": daemon.session.name, "phrases": phrases, "missing": missing,
                   "first_note_minus_due": percentiles(latencies),
                   "takeover_lead_ms": config.takeover_lead_ms, "takeover_missing": takeover_missing,
                   "takeover_cc_to_first_note": percentiles(takeover)}
        generation = daemon.session.generation()
        if generation is not None:
            figures["worker"] = generation
        return figures
    finally:
        probe.close()
        daemon.close()


def bench_generation(model: str, events: int, bpm: float) -> dict:
    """Engine speed with the answer masks (notes only): events/s and seconds of music per compute second."""
    from musebot.engine.engine import Engine
    from musebot.engine.masks import Constraints, MaskTable
    from musebot.engine.sampling import SamplerSettings
    from musebot.realtime.modes.call_worker import MAX_DURATION_STEPS, MAX_GAP_STEPS, PIANO_RANGE

    engine = Engine.load(model, provider="auto", threads=1)
    masks = MaskTable(engine.vocab, Constraints(
        event_types=frozenset({"note"}), allow_eos=False, max_time_gap=MAX_GAP_STEPS,
        max_duration=MAX_DURATION_STEPS, pitch_range=PIANO_RANGE,
    ))
    engine.append([engine.vocab.special_row(engine.vocab.bos_id)])
    rng = np.random.default_rng(0)
    offset = engine.vocab.parameter_offsets
    steps, start = 0, now()
    per_event = []
    for _ in range(events):
        t = now()
        row = engine.step(SamplerSettings(), masks, rng)[0]
        per_event.append(now() - t)
        steps += 16 * int(row[1] - offset["time1"])  # whole beats since the previous event
    compute = now() - start
    music = steps / 16 * 60.0 / bpm
    return {
        "provider": engine.provider, "events": events, "events_per_s": round(events / compute, 1),
        "per_event": percentiles(per_event), "music_s": round(music, 2), "compute_s": round(compute, 3),
        "headroom": round(music / compute, 2) if compute else None,
    }


def run_realtime_bench(args: argparse.Namespace) -> dict:
    """Run every measurement; returns the figures (``musebot bench-realtime`` prints them as JSON)."""
    if args.notes < 1000:
        raise ValueError("--notes must be at least 1000")
    # The private server is synchronous (start_dummy_jack): asynchronous, it dropped the MIDI of clients a
    # loaded VM froze (a loop run received 271 of 300 thru notes), a figure of the machine, not of musebot.
    with ports.benchmark_jack(getattr(args, "jack_server", None), "musebot-bench") as server:
        figures = {
            "jack": {"server": server, "driver": "dummy", "rate": 48000, "period": 64, "hop_ms": 1.333},
            "scheduling": bench_scheduling(args.notes),
            "thru": bench_thru(),
            "answer": bench_answers(args.model, phrases=getattr(args, "phrases", 8), bpm=args.bpm),
        }
        if args.model:
            figures["generation"] = bench_generation(args.model, events=256, bpm=args.bpm)
        else:
            figures["generation"] = "no --model given: pass an exported model folder to measure headroom"
        return figures
