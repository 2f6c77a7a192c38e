"""A lost note-off or pedal-up never leaves musebot listening forever, and nothing the tracker keeps grows.

The musician's controller loses a release (a cable, a flood, a dropped USB packet): after the held-key
timeout musebot forgets the key and answers; All Notes Off / All Sound Off (CC 123/120) let go at once.
"""

from __future__ import annotations

import time

import pytest

from musebot.realtime import midi
from musebot.realtime.clock import now
from musebot.realtime.config import ServeConfig
from musebot.realtime.io.outputs import MemoryOutput
from musebot.realtime.modes.answers import AnswerSlot, EchoAnswerer
from musebot.realtime.modes.call import Duet
from musebot.realtime.scheduler import Scheduler
from musebot.realtime.tracker import NoteTracker


def test_a_key_whose_note_off_was_lost_is_forgotten_after_the_timeout():
    tracker = NoteTracker(held_timeout_s=2.0)
    tracker.handle(0.0, midi.note_on(0, 60, 80))
    assert not tracker.expire(1.9) and tracker.anything_held
    assert tracker.expire(2.0)
    assert not tracker.anything_held and tracker.held_timeouts == 1
    [note] = tracker.release_ready()
    assert (note.pitch, note.onset, note.end) == (60, 0.0, 2.0)


def test_a_pedal_whose_release_was_lost_is_forgotten_after_the_timeout():
    tracker = NoteTracker(held_timeout_s=2.0)
    tracker.handle(0.0, midi.control_change(3, midi.CC_SUSTAIN, 127))
    tracker.handle(1.0, midi.control_change(3, midi.CC_SUSTAIN, 100))  # still down: the clock is not reset
    assert tracker.anything_held and not tracker.expire(1.5)
    assert tracker.expire(2.0) and not tracker.anything_held


def test_timeout_zero_never_forgets():
    tracker = NoteTracker(held_timeout_s=0)
    tracker.handle(0.0, midi.note_on(0, 60, 80))
    assert not tracker.expire(1e6) and tracker.anything_held


@pytest.mark.parametrize("controller", [midi.CC_ALL_NOTES_OFF, midi.CC_ALL_SOUND_OFF])
def test_all_notes_off_releases_the_keys_and_pedal_of_its_channel_at_once(controller):
    tracker = NoteTracker()
    tracker.handle(0.0, midi.note_on(0, 60, 80))
    tracker.handle(0.1, midi.note_on(0, 64, 80))
    tracker.handle(0.1, midi.control_change(0, midi.CC_SUSTAIN, 127))
    tracker.handle(0.2, midi.note_on(1, 48, 80))
    tracker.handle(0.5, midi.control_change(0, controller, 0))
    assert tracker.held_keys == 1  # channel 1's key is another hand's business
    tracker.handle(0.6, midi.note_off(1, 48))
    assert not tracker.anything_held
    assert [n.pitch for n in tracker.release_ready()] == [60, 64, 48]


def test_finished_notes_behind_a_held_key_are_capped_and_counted():
    tracker = NoteTracker(held_timeout_s=0, max_finished=100)
    tracker.handle(0.0, midi.note_on(0, 36, 80))  # held for ever (its release lost, timeout off)
    for i in range(1000):
        tracker.handle(0.01 + i * 0.01, midi.note_on(0, 60, 80))
        tracker.handle(0.015 + i * 0.01, midi.note_off(0, 60))
        assert tracker.release_ready() == []  # they wait for the held key
    assert tracker.waiting <= 200 and tracker.trimmed + tracker.waiting == 1000


@pytest.fixture
def duet():
    config = ServeConfig(silence_ms=100, held_key_timeout_s=0.5)
    scheduler = Scheduler().start()
    out = MemoryOutput()
    slot = AnswerSlot(scheduler, [out])
    yield Duet(config, scheduler, [out], slot, EchoAnswerer(slot)), out
    scheduler.stop()


def run_until(duet: Duet, seconds: float) -> None:
    end = now() + seconds
    while now() < end:
        duet.tick(now())
        time.sleep(0.002)


def test_a_lost_note_off_delays_the_answer_only_until_the_timeout(duet):
    duet, out = duet
    t = now()
    duet.handle(t, midi.note_on(0, 62, 80))
    duet.handle(t + 0.05, midi.note_on(0, 65, 80))
    duet.handle(t + 0.1, midi.note_off(0, 65))  # 62's note-off never arrives
    run_until(duet, 0.3)
    assert duet.state == "listening"  # still held: musebot waits, as it should for a real held note
    run_until(duet, 0.8)
    assert duet.tracker.held_timeouts == 1
    assert sorted(m[1] for _, m in out.sent if midi.is_note_on(m)) == [62, 65]  # the echo answered


def test_all_notes_off_from_the_musician_ends_the_phrase_at_once(duet):
    duet, out = duet
    t = now()
    duet.handle(t, midi.note_on(0, 60, 80))  # lost note-off
    duet.handle(t + 0.05, midi.control_change(0, midi.CC_ALL_NOTES_OFF, 0))
    assert duet.state == "waiting" and duet.due == pytest.approx(t + 0.05 + 0.1)
    run_until(duet, 0.3)
    assert duet.tracker.held_timeouts == 0
    assert [m[1] for _, m in out.sent if midi.is_note_on(m)] == [60]
