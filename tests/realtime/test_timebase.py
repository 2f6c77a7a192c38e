"""The session's clock: beats from seconds, following an external MIDI clock through jitter, tempo jumps,
dropouts and stops, sending MIDI clock out, and the metronome's count-in.

The follower is fed tick times directly (as the clock input's callback does), so each bad-input case is exact
and instant; the MIDI clock over JACK is in test_accompany_jack.py.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import pytest

from musebot.realtime.clock import now
from musebot.realtime.io.outputs import MemoryOutput
from musebot.realtime.scheduler import Scheduler
from musebot.realtime.timebase import (
    CLOCK,
    CONTINUE,
    PPQ,
    SONG_POSITION,
    START,
    STOP,
    ClockFollower,
    ClockSender,
    Meter,
    Metronome,
    Timebase,
)


def ticks(follower: ClockFollower, start: float, bpm: float, n: int, jitter_s: float = 0.0,
          seed: int = 0) -> float:
    """Feed ``n`` clock ticks at ``bpm`` from ``start`` (plus uniform jitter); returns the next tick's time."""
    rng = np.random.default_rng(seed)
    period = 60.0 / (bpm * PPQ)
    for i in range(n):
        follower.handle(start + i * period + rng.uniform(-jitter_s, jitter_s), (CLOCK,))
    return start + n * period


def test_a_tick_lost_on_the_way_is_counted_so_the_beat_does_not_slip():
    # A drum machine at 150 bpm; MIDI over JACK (or USB) drops a tick now and then.
    tb = Timebase(120)
    follower = ClockFollower(tb)
    follower.handle(0.0, (START,))
    period = 60.0 / (150 * PPQ)
    times = [i * period for i in range(4 * PPQ) if i not in (30, 61, 62)]  # three ticks never arrive
    for t in times:
        follower.handle(t, (CLOCK,))
    assert follower.ticks == 4 * PPQ  # the sender's count, not the 93 ticks heard
    assert follower.counts["lost"] == 3
    assert tb.beat_at(4 * PPQ * period) == pytest.approx(4.0, abs=0.02)
    assert tb.bpm == pytest.approx(150, rel=0.01)


def test_a_tick_that_arrives_late_is_not_taken_for_a_lost_one():
    # A loaded machine delays one tick by most of a period; the next comes on time: nothing was lost.
    tb = Timebase(120)
    follower = ClockFollower(tb)
    follower.handle(0.0, (START,))
    period = 60.0 / (150 * PPQ)
    for i in range(4 * PPQ):
        follower.handle(i * period + (0.85 * period if i == 40 else 0.0), (CLOCK,))
    assert follower.ticks == 4 * PPQ
    assert follower.counts["lost"] <= 1  # counted as lost at first, then the next tick is known as owed


def test_meter_parses_time_signatures_and_rejects_nonsense():
    assert Meter.parse("3/4").bar_beats == 3
    assert Meter.parse("6/8").bar_beats == 3
    assert str(Meter.parse("7/8")) == "7/8"
    for bad in ("4", "4/3", "0/4", "x/4"):
        with pytest.raises(ValueError, match="--meter"):
            Meter.parse(bad)


def test_internal_clock_counts_beats_and_a_tempo_change_keeps_the_phase():
    tb = Timebase(120, Meter.parse("4/4"))
    tb.start(10.0)
    assert tb.beat_at(11.0) == pytest.approx(2.0)
    assert tb.time_at(4.0) == pytest.approx(12.0)
    assert tb.bar_of(tb.beat_at(12.01)) == 1
    tb.set_tempo(60, 11.0)  # at beat 2, half the speed from now on
    assert tb.beat_at(11.0) == pytest.approx(2.0)
    assert tb.beat_at(12.0) == pytest.approx(3.0)
    tb.stop(12.0)
    assert tb.beat_at(20.0) == pytest.approx(3.0) and tb.time_at(4.0) is None
    with pytest.raises(ValueError, match="20 and 400"):
        tb.set_tempo(1000, 13.0)


def test_follower_locks_to_a_jittery_clock_within_one_percent():
    tb = Timebase(100)
    follower = ClockFollower(tb)
    follower.handle(0.0, (START,))
    # +-2 ms of jitter on every tick (a USB MIDI interface is far better); the fitted tempo stays close.
    ticks(follower, 0.01, 128.0, 4 * PPQ, jitter_s=0.002)
    assert tb.source == "external" and tb.running
    assert tb.bpm == pytest.approx(128.0, rel=0.01)
    # Beat 4 (tick 96) is due at 0.01 + 96 periods; the line through jittered ticks predicts it closely.
    assert tb.time_at(4.0) == pytest.approx(0.01 + 96 * 60 / (128 * PPQ), abs=0.002)


def test_follower_follows_a_tempo_jump_within_a_beat(caplog):
    tb = Timebase(120)
    follower = ClockFollower(tb)
    follower.handle(0.0, (START,))
    t = ticks(follower, 0.0, 120.0, 2 * PPQ)
    with caplog.at_level(logging.INFO, logger="musebot.realtime.timebase"):
        ticks(follower, t, 150.0, PPQ)
    assert tb.bpm == pytest.approx(150.0, rel=0.01)
    assert follower.counts["jumps"] >= 1
    assert "tempo jump" in caplog.text


def test_a_clock_that_speeds_up_gradually_is_followed():
    tb = Timebase(100)
    follower = ClockFollower(tb)
    follower.handle(0.0, (START,))
    t, bpm = 0.0, 100.0
    for _ in range(8 * PPQ):  # eight beats, accelerating from 100 to about 140 bpm
        follower.handle(t, (CLOCK,))
        t += 60.0 / (bpm * PPQ)
        bpm += 40.0 / (8 * PPQ)
    assert tb.bpm == pytest.approx(bpm, rel=0.03)


def test_an_outlier_tick_does_not_move_the_tempo():
    tb = Timebase(120)
    follower = ClockFollower(tb)
    follower.handle(0.0, (START,))
    period = 60.0 / (120 * PPQ)
    for i in range(3 * PPQ):
        late = 0.012 if i == 2 * PPQ else 0.0  # one tick 12 ms late (more than half a period)
        follower.handle(i * period + late, (CLOCK,))
    assert tb.bpm == pytest.approx(120.0, rel=0.005)


def test_a_clock_dropout_falls_back_to_musebot_s_own_clock_and_says_so(caplog):
    tb = Timebase(120)
    follower = ClockFollower(tb)
    follower.handle(0.0, (START,))
    t = ticks(follower, 0.0, 120.0, 2 * PPQ)
    with caplog.at_level(logging.WARNING, logger="musebot.realtime.timebase"):
        follower.check(t + 0.5)  # half a second without a tick while the transport runs
    assert tb.source == "freewheel" and tb.running
    assert "external clock lost" in caplog.text
    # The beat goes on at the last tempo: 0.5 s after beat 2 is beat 3.
    assert tb.beat_at(t + 0.5) == pytest.approx(3.0, abs=0.02)
    # The ticks come back one second after the last: the ones missed are counted across the gap.
    with caplog.at_level(logging.WARNING, logger="musebot.realtime.timebase"):
        ticks(follower, t + 1.0, 120.0, 6)
    assert tb.source == "external" and follower.locked
    assert "following it again" in caplog.text
    assert follower.ticks == 2 * PPQ + 2 * PPQ + 6  # 48 heard, 48 missed, 6 more
    assert tb.beat_at(t + 1.0) == pytest.approx(4.0, abs=0.02)


def test_ticks_waiting_for_a_held_up_reader_are_no_dropout():
    tb = Timebase(120)
    follower = ClockFollower(tb)
    follower.handle(0.0, (START,))
    t = ticks(follower, 0.0, 120.0, 2 * PPQ)
    # Half a second on the wall clock, but the clock input last looked at its queue 5 ms after the last tick
    # (its thread held up by a busy machine): the ticks since may be waiting there, nothing is lost yet.
    follower.check(t + 0.5, heard_until=t + 0.005)
    assert tb.source == "external" and follower.locked and follower.counts["dropouts"] == 0
    # It looked again and found nothing for half a second: that is a dropout.
    follower.check(t + 0.5, heard_until=t + 0.5)
    assert tb.source == "freewheel" and follower.counts["dropouts"] == 1


def test_stop_in_the_middle_of_a_bar_keeps_the_position_and_continue_resumes_there(caplog):
    tb = Timebase(120)
    follower = ClockFollower(tb)
    follower.handle(0.0, (START,))
    t = ticks(follower, 0.0, 120.0, 6 * PPQ + 12)  # bar 2, beat 3 and a half
    with caplog.at_level(logging.INFO, logger="musebot.realtime.timebase"):
        follower.handle(t, (STOP,))
    assert not tb.running and "stop at beat 6.50 (bar 2)" in caplog.text
    assert tb.beat_at(t + 5) == pytest.approx(6.5)
    follower.handle(t + 5, (CONTINUE,))
    assert not tb.running  # the position is marked by the next tick
    ticks(follower, t + 5.01, 120.0, 3)
    assert tb.running and tb.beat_at(t + 5.01) == pytest.approx(6.5, abs=1e-3)


def test_song_position_moves_the_stopped_transport_and_start_goes_back_to_zero():
    tb = Timebase(120)
    follower = ClockFollower(tb)
    follower.handle(0.0, (SONG_POSITION, 32, 0))  # 32 sixteenths = bar 3
    assert tb.beat_at(0.0) == 8.0
    follower.handle(0.1, (CONTINUE,))
    ticks(follower, 0.2, 120.0, 3)
    assert tb.beat_at(0.2) == pytest.approx(8.0, abs=1e-3)
    follower.handle(1.0, (STOP,))
    follower.handle(2.0, (START,))
    ticks(follower, 2.1, 120.0, 3)
    assert tb.beat_at(2.1) == pytest.approx(0.0, abs=1e-3)


def test_malformed_clock_messages_are_counted_and_ignored():
    tb = Timebase(120)
    follower = ClockFollower(tb)
    for msg in ((), (SONG_POSITION, 200, 0), (SONG_POSITION, 1), (0xF1, 3), (0xF8 + 7,)):
        follower.handle(0.0, msg)
    assert follower.counts["invalid"] == 5
    assert not tb.running
    ticks(follower, 0.0, 120.0, 24)  # clock while stopped: tells nothing about position
    assert not tb.running


@pytest.fixture
def scheduler():
    sched = Scheduler(late_s=0.002, drop_late_s=0.1).start()
    yield sched
    sched.stop()


def test_clock_out_sends_start_then_24_ticks_a_beat_then_stop(scheduler):
    out = MemoryOutput()
    tb = Timebase(240)
    sender = ClockSender(tb, scheduler, [out], lookahead_s=0.05)
    start = now() + 0.02
    tb.start(start)
    end = start + 0.52  # a bit more than two beats at 240 bpm
    while now() < end:
        sender.pump(now())
        time.sleep(0.005)
    tb.stop(now())
    sender.pump(now())
    time.sleep(0.05)
    messages = out.messages()
    assert messages[:2] == [(SONG_POSITION, 0, 0), (START,)]
    tick_times = [t for t, m in out.sent if m == (CLOCK,)]
    assert 2 * PPQ <= len(tick_times) <= 2 * PPQ + 6
    # The ticks come at the timebase's times (the scheduler's timing): 1/96 s apart at 240 bpm.
    assert np.median(np.diff(tick_times)) == pytest.approx(60 / (240 * PPQ), abs=0.0005)
    assert messages[-1] == (STOP,)


def test_count_in_clicks_one_bar_before_bar_one_with_an_accent_on_its_downbeat(scheduler):
    out = MemoryOutput()
    tb = Timebase(300, Meter.parse("3/4"))
    metronome = Metronome(tb, scheduler, [out], enabled=False, count_in_bars=1)
    tb.start(now() + 0.02, -3.0)  # one bar of 3/4 before beat 0
    end = tb.time_at(2.0)
    while now() < end:
        metronome.pump(now())
        time.sleep(0.005)
    time.sleep(0.1)
    clicks = [m[1] for m in out.messages() if m[0] == 0x99]
    assert clicks == [Metronome.HIGH, Metronome.LOW, Metronome.LOW]  # the count-in only, then silence


def test_a_burst_of_ticks_from_a_sender_catching_up_does_not_run_away_with_the_tempo():
    tb = Timebase(120)
    follower = ClockFollower(tb)
    follower.handle(0.0, (START,))
    t = ticks(follower, 0.0, 120.0, 2 * PPQ)
    # The sender stalls for 150 ms, then sends the eight ticks it owes in one burst, then goes on.
    for i in range(8):
        follower.handle(t + 0.15 + i * 1e-5, (CLOCK,))
    period = 60.0 / (120 * PPQ)
    ticks(follower, t + 8 * period + period, 120.0, PPQ)
    assert tb.bpm == pytest.approx(120.0, rel=0.02)
    assert follower.ticks == 2 * PPQ + 8 + PPQ


def test_after_a_count_in_clock_out_starts_the_daw_on_bar_one(scheduler):
    out = MemoryOutput()
    tb = Timebase(240)
    sender = ClockSender(tb, scheduler, [out], lookahead_s=0.05)
    tb.start(now() + 0.02, -2.0)  # two beats of count-in
    end = tb.time_at(1.0)
    while now() < end:
        sender.pump(now())
        time.sleep(0.005)
    time.sleep(0.05)
    start_at = next(t for t, m in out.sent if m == (START,))
    first_tick = next(t for t, m in out.sent if m == (CLOCK,))
    assert start_at < first_tick
    assert first_tick == pytest.approx(tb.time_at(0.0), abs=0.002)  # not during the count-in
