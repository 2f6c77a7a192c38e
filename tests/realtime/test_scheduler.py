"""The scheduler sends timed messages in deadline order, on time, and accounts for lateness honestly."""

from __future__ import annotations

import time

import pytest

from musebot.realtime import midi
from musebot.realtime.clock import now
from musebot.realtime.io.outputs import MemoryOutput
from musebot.realtime.scheduler import Scheduler


@pytest.fixture
def scheduler():
    sched = Scheduler(late_s=0.002, drop_late_s=0.1).start()
    yield sched
    sched.stop()


def wait_until_idle(sched: Scheduler, timeout: float = 2.0) -> None:
    end = now() + timeout
    while sched.pending() and now() < end:
        time.sleep(0.005)
    time.sleep(0.01)


def test_messages_scheduled_out_of_order_are_sent_in_deadline_order(scheduler):
    out = MemoryOutput()
    start = now() + 0.05
    # A descending scale handed to the scheduler backwards: it must come out ascending in time.
    items = [(start + 0.01 * i, out, midi.note_on(0, 60 + i, 100)) for i in reversed(range(10))]
    scheduler.schedule_many(items)
    wait_until_idle(scheduler)
    assert [msg[1] for msg in out.messages()] == list(range(60, 70))
    times = [t for t, _ in out.sent]
    assert times == sorted(times)
    assert all(t >= start + 0.01 * i for i, t in enumerate(times))  # never early


def test_same_deadline_keeps_insertion_order(scheduler):
    out = MemoryOutput()
    due = now() + 0.03
    chord = [(due, out, midi.note_on(0, p, 90)) for p in (64, 60, 67)]
    scheduler.schedule_many(chord)
    wait_until_idle(scheduler)
    assert [m[1] for m in out.messages()] == [64, 60, 67]


def test_a_message_already_overdue_is_sent_counted_late_and_a_very_late_note_is_dropped(scheduler):
    out = MemoryOutput()
    t = now()
    scheduler.schedule(t - 0.02, out, midi.control_change(0, 7, 100))  # 20 ms late: sent, counted late
    scheduler.schedule(t - 0.5, out, midi.note_on(0, 60, 100), tag="answer")  # 500 ms late: dropped
    scheduler.schedule(t - 0.4, out, midi.note_off(0, 60), tag="answer")  # its note-off goes with it
    wait_until_idle(scheduler)
    assert out.messages() == [midi.control_change(0, 7, 100)]
    assert scheduler.stats.late == 1
    assert scheduler.stats.dropped_late == 1
    assert scheduler.stats.max_late_s >= 0.02


def test_on_time_messages_are_not_counted_late(scheduler):
    out = MemoryOutput()
    start = now() + 0.05
    scheduler.schedule_many([(start + 0.005 * i, out, midi.note_on(0, 60, 1 + i)) for i in range(20)])
    wait_until_idle(scheduler)
    assert scheduler.stats.sent == 20
    # Errors are non-negative (never early); lateness is counted only above late_s.
    assert min(scheduler.stats.errors) >= 0
    assert scheduler.stats.late == sum(1 for e in scheduler.stats.errors if e > scheduler.late_s)


def test_cancel_removes_only_the_tag_and_releases_sounding_notes(scheduler):
    out = MemoryOutput()
    t = now()
    scheduler.schedule(t, out, midi.note_on(0, 72, 100), tag="answer")
    scheduler.schedule(t + 10, out, midi.note_off(0, 72), tag="answer")
    scheduler.schedule(t + 10, out, midi.note_on(0, 74, 100), tag="answer")
    scheduler.schedule(t + 10, out, midi.note_on(1, 40, 100), tag="other")
    time.sleep(0.05)
    assert out.ledger.is_sounding(0, 72)
    assert scheduler.cancel("answer") == 2
    # The sounding note got its note-off at once; the note that never started is not sent.
    assert out.messages()[-1] == midi.note_off(0, 72)
    assert not out.ledger.sounding()
    assert scheduler.pending() == 1 and scheduler.pending("other") == 1


def test_stop_joins_the_thread():
    sched = Scheduler().start()
    sched.stop(timeout=1.0)
    assert not sched._thread.is_alive()


@pytest.mark.parametrize("withdraw", ["cancel", "clear"])
def test_a_dropped_note_whose_note_off_is_withdrawn_does_not_swallow_the_next_note_off(scheduler, withdraw):
    # An answer's note-on comes too late and is dropped; the musician barges in (cancel) or panics (clear)
    # before its note-off is due. The next answer plays the same pitch: its note-off must be sent, or the
    # listener hears a stuck note.
    out = MemoryOutput()
    t = now()
    scheduler.schedule(t - 0.5, out, midi.note_on(0, 60, 100), tag="answer")  # dropped as too late
    scheduler.schedule(t + 0.3, out, midi.note_off(0, 60), tag="answer")
    end = now() + 1.0
    while scheduler.stats.dropped_late == 0 and now() < end:
        time.sleep(0.002)
    assert scheduler.stats.dropped_late == 1
    scheduler.cancel("answer") if withdraw == "cancel" else scheduler.clear()
    t = now()
    scheduler.schedule_many([(t + 0.02, out, midi.note_on(0, 60, 90)), (t + 0.05, out, midi.note_off(0, 60))],
                            tag="answer")
    wait_until_idle(scheduler)
    assert out.messages() == [midi.note_on(0, 60, 90), midi.note_off(0, 60)]
    assert not out.ledger.is_sounding(0, 60)


def test_cancel_hands_back_what_it_withdrew():
    sched = Scheduler()  # not started: everything waits
    out = MemoryOutput()
    sched.schedule_many([(now() + 1, out, midi.note_on(0, 60, 90)), (now() + 2, out, midi.note_off(0, 60))], "part")
    sched.schedule_many([(now() + 1, out, midi.note_on(1, 62, 90))], "other")
    withdrawn = []
    assert sched.cancel("part", release=False, withdrawn=withdrawn) == 2
    assert sorted(msg for _, _, msg in withdrawn) == sorted([midi.note_on(0, 60, 90), midi.note_off(0, 60)])
    assert sched.pending() == 1
