"""A model slower than the music, over a real JACK server: musebot plans with its measured generation rate.

The model is real: SkyTNT's ``tv2o-small`` shape with random weights (built with torch, exported to ONNX at
fp32, run by musebot's engine on one CPU thread). It is made slower than the music the honest way, by asking
for more music per second than it can generate: a tempo of 400 bpm and, in call mode, the densest answers the
constraints allow (``max_time_gap`` of one grid step: a note every 1/16 beat at most, 9 ms at 400 bpm). The
status must then say so (headroom below 1, ``behind``), and what is heard must stay honest: no note sent more
than 20 ms late (a note generated too late is dropped and counted, never sent late), no answer that stalls
mid-phrase, and nothing left hanging when the daemon stops.

``MUSEBOT_SLOW_SHAPE=tv2o-medium`` runs the same tests with SkyTNT's 234 M-parameter shape (fp32, one thread:
about 130 ms an event here, and 1 GB of graphs built first), the case the engine issue names; CI runs the
small shape, which is slower than 400 bpm too and builds in seconds.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from collections import Counter
from pathlib import Path

import pytest

from musebot.realtime.clock import now
from musebot.realtime.config import ServeConfig
from musebot.realtime.daemon import Daemon, Observer, ServeOptions
from musebot.realtime.modes.answers import ANSWER_TAG
from musebot.realtime.modes.band import PART_TAG, BandConfig
from tests._jack import Musician, hanging_notes, jack_server, note_ons, requires_jackd

pytestmark = [pytest.mark.jack, requires_jackd]

BPM = 400.0
LATE_LIMIT_S = 0.020
PHRASE = [60, 62, 64, 65, 67, 69, 71, 72]
SHAPE = os.environ.get("MUSEBOT_SLOW_SHAPE", "tv2o-small")


@pytest.fixture(scope="module")
def slow_model(tmp_path_factory) -> Path:
    pytest.importorskip("torch")
    from musebot.bench.engine import build_shape

    return build_shape(SHAPE, tmp_path_factory.mktemp(SHAPE) / "model", precisions=("fp32",))


@pytest.fixture(scope="module")
def jack():
    with jack_server("-slow") as server:
        yield server


def serve(config: ServeConfig, options: ServeOptions) -> Daemon:
    daemon = Daemon(config, options)
    daemon.sends = []  # (due, sent, msg, tag) of each message the scheduler sent
    daemon.planned = []  # (due, when it was handed to the scheduler, msg, tag) of each message planned

    daemon.withdrawn = []  # (due, msg, tag) of each planned message cancelled or cleared

    def plan(action, items, tag) -> None:
        if action == "add":
            t = now()
            daemon.planned += [(due, t, msg, tag) for due, _output, msg in items]
        else:
            daemon.withdrawn += [(due, msg, tag) for due, _output, msg in items]

    daemon.observers.append(Observer(on_sent=lambda due, sent, output, msg, tag:
                                     daemon.sends.append((due, sent, msg, tag)), on_plan=plan))
    return daemon.start()


def stop(daemon: Daemon, musician: Musician) -> None:
    """Stop the daemon, let its last note-offs arrive, and check that nothing was left hanging."""
    daemon.close()
    time.sleep(0.3)
    heard = musician.snapshot()
    musician.close()
    assert hanging_notes(heard) == set()


def status(daemon: Daemon) -> dict:
    from musebot.server.control import Control

    return Control(daemon).status()


def planned_late(daemon: Daemon, tag_prefix: str, freezes=None) -> list[float]:
    """Lateness (s) of the note-ons of ``tag_prefix`` handed to the scheduler more than LATE_LIMIT_S after
    they were due: what the planner made too late (the honest planner drops those, never bunches them).
    With ``freezes`` (tests/_stalls.py), those a freeze of the machine held up on their way are left out."""
    return [t - due for due, t, msg, tag in daemon.planned
            if tag and tag.startswith(tag_prefix) and msg[0] & 0xF0 == 0x90 and msg[2] > 0
            and t - due > LATE_LIMIT_S and not (freezes and freezes.touched(due - LATE_LIMIT_S, t))]


def dropped_note_ons(daemon: Daemon, tag_prefix: str, until: float) -> list[float]:
    """Due times of the note-ons of ``tag_prefix`` due before ``until`` that were planned and neither sent
    nor withdrawn: the scheduler's drops (a note-on it reached too late to send)."""
    def ons(rows):
        return Counter((due, tuple(msg)) for due, msg, tag in rows
                       if tag and tag.startswith(tag_prefix) and msg[0] & 0xF0 == 0x90 and msg[2] > 0 and due < until)

    planned = ons((due, msg, tag) for due, _t, msg, tag in daemon.planned)
    sent = ons((due, msg, tag) for due, _sent, msg, tag in daemon.sends)
    left = planned - sent - ons(daemon.withdrawn)
    return sorted(due for (due, _msg), n in left.items() for _ in range(n))


def answer_fate(daemon: Daemon, t0: float, t1: float, freezes) -> dict:
    """What became of the answer note-ons due in ``[t0, t1)``: planned, sent, dropped by the scheduler (and of
    those, how many a freeze of the machine held past their ``LATE_LIMIT_S``) and withdrawn."""
    def within(rows):
        return [due for due, *_rest, msg, tag in rows if tag and tag.startswith(ANSWER_TAG) and t0 <= due < t1
                and msg[0] & 0xF0 == 0x90 and msg[2] > 0]

    dropped = [due for due in dropped_note_ons(daemon, ANSWER_TAG, until=t1) if due >= t0]
    return {"planned": len(within(daemon.planned)), "sent": len(within(daemon.sends)), "dropped": len(dropped),
            "frozen": sum(freezes.touched(due, due + LATE_LIMIT_S) for due in dropped),
            "withdrawn": len(within(daemon.withdrawn))}


def late_note_ons(daemon: Daemon, tag_prefix: str, freezes=None) -> list[float]:
    """Lateness (s) of the note-ons of ``tag_prefix`` the scheduler sent more than LATE_LIMIT_S late; with
    ``freezes``, leaving out those a freeze of the machine held between their due time and their send (the
    scheduler found them in time, the machine stopped before the send)."""
    return [sent - due for due, sent, msg, tag in daemon.sends
            if tag and tag.startswith(tag_prefix) and msg[0] & 0xF0 == 0x90 and msg[2] > 0
            and sent - due > LATE_LIMIT_S and not (freezes and freezes.touched(due, sent))]


def test_a_model_slower_than_the_music_answers_without_late_notes_or_stalls(slow_model, jack, freezes):
    # --drop-late-ms 20, as in the accompaniment test below: the scheduler never sends a note more than
    # 20 ms late; its own drops (a thread starved on a loaded machine) are counted and bounded.
    config = ServeConfig(bpm=BPM, silence_ms=250, seed=3, max_answer_beats=8, drop_late_ms=LATE_LIMIT_S * 1000)
    daemon = serve(config, ServeOptions(model=str(slow_model)))
    musician = Musician()
    try:
        daemon.session.set_constraints(max_time_gap=1)  # the densest answers: more than the model can make
        answers, windows = [], []
        for _ in range(4):
            release = musician.play([(p, 0.06) for p in PHRASE])
            musician.wait_for(lambda h, r=release: any(t > r for t, _ in note_ons(h)), timeout=8)
            time.sleep(1.5)  # the answer (8 beats at 400 bpm: 1.2 s, later if it was delayed) plays out
            answers.append([t for t, _ in note_ons(musician.snapshot()) if t > release])
            windows.append((release, now()))
        report = status(daemon)
        generation = report["telemetry"]["generation"]
        print(f"\n{SHAPE} call: answers of {[len(a) for a in answers]} notes, headroom {generation['headroom']:.3f}, "
              f"delayed {generation['delayed_answers']}, shortened {generation['shortened_answers']}, "
              f"scheduler drops {report['telemetry']['dropped_late']}")
        # The status says the model is slower than the music.
        assert generation["headroom"] is not None and generation["headroom"] < 1.0, generation
        assert generation["behind"] is True
        # Every call was answered, each answer as one phrase: no gap between its notes longer than the
        # longest the constraints allow (a step) plus the scheduling slack; so no stall mid-answer. An answer
        # heard empty passes only if the worker planned it and a freeze of the machine took what it planned
        # (a 100-ms freeze at its start: the scheduler drops its first notes, the worker's next is too late).
        fates = [answer_fate(daemon, t0, t1, freezes) for t0, t1 in windows]
        print(f"answers planned, sent, dropped (in a freeze), withdrawn: {fates}")
        assert all(answer or (fate["planned"] and fate["dropped"] == fate["frozen"] == fate["planned"])
                   for answer, fate in zip(answers, fates, strict=True)), \
            f"answers of {[len(a) for a in answers]} notes, {fates}; {freezes.summary()}; " \
            f"status {json.dumps(report, default=str)}"
        answers = [answer for answer in answers if answer]
        step_s = 60.0 / BPM / 16
        gaps = [b - a for answer in answers for a, b in itertools.pairwise(answer)]
        assert max(gaps, default=0.0) < 2 * step_s + LATE_LIMIT_S, (max(gaps), generation)
        assert generation["delayed_answers"] + generation["shortened_answers"] >= 1, generation
        assert late_note_ons(daemon, ANSWER_TAG, freezes) == [], freezes.summary()
        # The worker hands over nothing already late.
        assert planned_late(daemon, ANSWER_TAG, freezes) == [], freezes.summary()
        # The scheduler's own drops stay a small share of what was sent, leaving out those a freeze of the
        # machine held past their 20 ms (one freeze of 100 ms in a dense answer drops ten notes or more).
        sent = sum(len(a) for a in answers)
        dropped = dropped_note_ons(daemon, ANSWER_TAG, until=now() - 1.0)
        unfrozen = [due for due in dropped if not freezes.touched(due, due + LATE_LIMIT_S)]
        print(f"scheduler drops of answer notes: {len(dropped)}, {len(unfrozen)} clear of {freezes.summary()}")
        assert len(unfrozen) <= max(2, sent // 20), (unfrozen, report["telemetry"], sent)
    finally:
        stop(daemon, musician)


def test_an_accompaniment_by_a_model_slower_than_the_music_keeps_playing_and_says_it_is_behind(slow_model, jack,
                                                                                                freezes):
    band = BandConfig.for_mode("accompany", parts=["bass", "chords"], key="C major")
    # --drop-late-ms 20: the scheduler itself never sends a note-on more than 20 ms late. On this loaded
    # 2-core machine (two busy processes beside the suite) its thread, although SCHED_FIFO, at times waits
    # 20-40 ms for the interpreter lock; what it drops then is counted and bounded below, and the planner's
    # own honesty (nothing handed over already late) is checked apart from it.
    config = ServeConfig(bpm=BPM, seed=5, drop_late_ms=LATE_LIMIT_S * 1000)
    daemon = serve(config, ServeOptions(mode="accompany", model=str(slow_model), band=band))
    daemon.session.max_time_gap = 1  # the densest parts: more events per beat than the model can make
    musician = Musician()
    try:
        beat = 60.0 / BPM
        start = time.monotonic()
        i = 0
        while time.monotonic() - start < 12.0:  # an endless melody in eighths, 12 s (80 beats)
            musician.send(0x90, PHRASE[i % len(PHRASE)], 90)
            time.sleep(beat / 2 * 0.9)
            musician.send(0x80, PHRASE[i % len(PHRASE)], 0)
            time.sleep(beat / 2 * 0.1)
            i += 1
        report = status(daemon)
        generation = report["telemetry"]["generation"]
        assert generation["headroom"] is not None and generation["headroom"] < 1.0, generation
        assert report["state"] == "behind"
        assert generation["replayed_bars"] + generation["leaps"] >= 1, generation
        assert report["band"]["telemetry"]["dropped"] == generation["dropped"]
        # It kept playing: part notes in every 2-second stretch of the last 8 seconds, never a silence of a
        # minute; the ones it could not make in time were dropped, none sent late.
        ons = [due for due, sent, msg, tag in daemon.sends
               if tag and tag.startswith(PART_TAG) and msg[0] & 0xF0 == 0x90 and msg[2] > 0]
        print(f"\n{SHAPE} accompaniment: {len(ons)} part notes in 12 s, headroom {generation['headroom']:.3f}, "
              f"replayed bars {generation['replayed_bars']}, leaps {generation['leaps']}, "
              f"scheduler drops {report['telemetry']['dropped_late']}")
        end = max(ons)
        assert all(any(end - 2 * (k + 1) < t <= end - 2 * k for t in ons) for k in range(4)), ons
        assert late_note_ons(daemon, PART_TAG, freezes) == [], freezes.summary()
        assert planned_late(daemon, PART_TAG, freezes) == [], freezes.summary()
        # The scheduler's own drops (a late thread, not a late plan) stay a small share of what was sent,
        # leaving out those a freeze of the machine (tests/_stalls.py) held past their 20 ms.
        dropped = dropped_note_ons(daemon, PART_TAG, until=now() - 1.0)
        unfrozen = [due for due in dropped if not freezes.touched(due, due + LATE_LIMIT_S)]
        print(f"scheduler drops of part notes due until a second ago: {len(dropped)}, {len(unfrozen)} clear of "
              f"{freezes.summary()}")
        assert len(unfrozen) <= max(2, len(ons) // 20), (unfrozen, report["telemetry"]["dropped_late"], len(ons))
    finally:
        stop(daemon, musician)
