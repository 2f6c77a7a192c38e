"""``--clock follow``: the band's internal clock waits for the musician, comes in with their second bar at
their tempo, and drifts with them within limits (8 % of the tempo and 1/4 beat a bar); an external clock is
untouched. The clock itself is tested with given times; the looper shows the flag wired through the factory.
"""

from __future__ import annotations

import itertools
import random

import pytest

from musebot.realtime.clock import now
from musebot.realtime.config import ServeConfig
from musebot.realtime.io.outputs import MemoryOutput
from musebot.realtime.modes import make_session
from musebot.realtime.modes.band import BandConfig
from musebot.realtime.scheduler import Scheduler
from musebot.realtime.tempo_clock import MusicianClock
from musebot.realtime.timebase import Timebase


def quarters(bpm_at, beats: int, start: float = 100.0, jitter_s: float = 0.01, seed: int = 1):
    """Onset times of ``beats`` quarter notes whose tempo at beat k is ``bpm_at(k)``, humanised."""
    rng = random.Random(seed)
    t, onsets = start, []
    for k in range(beats):
        onsets.append(t + rng.uniform(-jitter_s, jitter_s))
        t += 60.0 / bpm_at(k)
    return onsets


def follow(onsets, bpm: float = 120.0):
    timebase = Timebase(bpm)
    clock = MusicianClock(timebase, bpm)
    tempi = []  # (onset index, clock bpm) after each onset
    for i, t in enumerate(onsets):
        clock.hear(t, 60 + i % 7, 90)
        tempi.append((i, timebase.bpm if timebase.running else None))
    return timebase, clock, tempi


def test_the_band_comes_in_after_the_musicians_first_bar_on_their_beat():
    onsets = quarters(lambda k: 96, 16)
    timebase, _, tempi = follow(onsets)
    started = next(i for i, bpm in tempi if bpm is not None)
    assert 2 <= started <= 4  # most of their first bar heard, not before
    assert timebase.bpm == pytest.approx(96, rel=0.04)
    for k in range(4, 16):  # their beat k is the band's beat k (bar 1 beat 0 = their first note)
        assert timebase.beat_at(onsets[k]) == pytest.approx(k, abs=0.08)


def test_the_clock_drifts_with_the_musician_within_eight_percent_a_bar():
    # Steady at 100 for two bars, then suddenly 130: the band follows, a bar at a time.
    onsets = quarters(lambda k: 100 if k < 8 else 130, 40)
    timebase, clock, tempi = follow(onsets)
    running = [bpm for _, bpm in tempi if bpm is not None]
    for before, after in itertools.pairwise(running):
        assert after / before == pytest.approx(1.0, abs=0.08 + 1e-9)
    assert clock.corrections >= 3
    assert timebase.bpm == pytest.approx(130, rel=0.04)  # there within the 8 bars at the new tempo
    off_beat = (timebase.beat_at(onsets[-1]) + 0.5) % 1.0 - 0.5
    assert abs(off_beat) < 0.1  # and back on their beat


def test_random_playing_never_throws_the_clock_out_of_range():
    rng = random.Random(4)
    t, onsets = 10.0, []
    for _ in range(60):
        t += rng.uniform(0.05, 1.2)
        onsets.append(t)
    _timebase, _, tempi = follow(onsets + [float("nan")])
    running = [bpm for _, bpm in tempi if bpm is not None]
    assert all(30 <= bpm <= 300 for bpm in running)
    for before, after in itertools.pairwise(running):
        assert after / before == pytest.approx(1.0, abs=0.08 + 1e-9)


def test_an_external_or_internal_clock_is_not_followed():
    with pytest.raises(ValueError, match="internal, external or follow"):
        BandConfig(clock="sometimes").validate()
    scheduler = Scheduler().start()
    try:
        out = MemoryOutput()
        internal = make_session("looper", ServeConfig(bpm=100), scheduler, [out], band=BandConfig.for_mode("looper"))
        assert internal.musician_clock is None and internal.timebase.running
        internal.close()
    finally:
        scheduler.stop()


def test_the_looper_with_clock_follow_waits_for_the_musician_then_keeps_their_time():
    scheduler = Scheduler().start()
    try:
        out = MemoryOutput()
        band = BandConfig.for_mode("looper", clock="follow")
        session = make_session("looper", ServeConfig(bpm=120), scheduler, [out], band=band)
        try:
            tb = session.timebase
            assert not tb.running and tb.source == "follow" and session.state == "stopped"
            start = now() + 0.2
            for k, t in enumerate(quarters(lambda k: 90, 8, start=start)):
                session.handle(t, (0x90, [36, 43, 40, 43][k % 4], 80))
                session.handle(t + 0.3, (0x80, [36, 43, 40, 43][k % 4], 0))
            assert tb.running and session.state == "playing"
            assert tb.bpm == pytest.approx(90, rel=0.04)
            assert tb.beat_at(start + 7 * 60 / 90) == pytest.approx(7, abs=0.1)
            assert session.band_status()["clock"] == "follow"
        finally:
            session.close()
    finally:
        scheduler.stop()
