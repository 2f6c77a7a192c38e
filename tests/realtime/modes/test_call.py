"""Call and response above the ports: phrase ends, controls, takeover, panic and mode changes.

Memory outputs and the echo answerer (plays the call back) stand in for ports and model, so what is
tested is the interaction logic itself, with the real scheduler sending at real deadlines.
"""

from __future__ import annotations

import logging
import os
import threading
import time

import pytest

from musebot.realtime import midi
from musebot.realtime.clock import now
from musebot.realtime.config import ServeConfig
from musebot.realtime.io.outputs import MemoryOutput
from musebot.realtime.io.recorder import SessionRecorder, read_session_meta
from musebot.realtime.modes.answers import AnswerSlot, EchoAnswerer
from musebot.realtime.modes.call import Duet
from musebot.realtime.scheduler import Scheduler

SILENCE_S = 0.1


@pytest.fixture
def rig():
    config = ServeConfig(silence_ms=SILENCE_S * 1000, thru=True)
    scheduler = Scheduler().start()
    out = MemoryOutput()
    slot = AnswerSlot(scheduler, [out])
    recorder = SessionRecorder(config.bpm)
    duet = Duet(config, scheduler, [out], slot, EchoAnswerer(slot), recorder)
    yield duet, out
    scheduler.stop()


def play(duet: Duet, pitches, t: float, step: float = 0.05) -> float:
    for pitch in pitches:
        duet.handle(t, midi.note_on(0, pitch, 80))
        t += step
        duet.handle(t, midi.note_off(0, pitch))
    return t


def settle(duet: Duet, seconds: float, until: float | None = None) -> None:
    end = max(now() + seconds, until or 0.0)
    while now() < end:
        duet.tick(now())
        time.sleep(0.002)


def answered(out: MemoryOutput, after: float) -> list[int]:
    return [m[1] for t, m in out.sent if midi.is_note_on(m) and t >= after]


def test_the_answer_is_due_after_the_silence_and_as_long_as_the_call(rig):
    duet, out = rig
    release = play(duet, [60, 64, 67], now())
    assert duet.state == "waiting" and duet.due == pytest.approx(release + SILENCE_S)
    settle(duet, 0, until=release + SILENCE_S + 0.4)
    assert answered(out, release) == [60, 64, 67]
    assert duet.state == "idle" and duet.counts["answers"] == 1


def test_thru_plays_the_musician_at_once_and_controllers_are_not_passed_on(rig):
    duet, out = rig
    t = now()
    duet.handle(t, midi.note_on(0, 50, 70))
    duet.handle(t, midi.control_change(0, duet.config.controls.temperature, 127))
    assert out.messages() == [midi.note_on(0, 50, 70)]
    assert duet.config.temperature == pytest.approx(2.0)


def test_takeover_controller_hands_over_at_once_even_with_a_key_held(rig):
    duet, out = rig
    t = now()
    duet.handle(t, midi.note_on(0, 62, 80))
    duet.handle(t + 0.05, midi.control_change(0, duet.config.controls.takeover, 127))
    assert duet.state == "waiting"
    assert duet.due == pytest.approx(t + 0.05 + duet.config.takeover_lead_ms / 1000)
    settle(duet, 0.3)
    assert 62 in answered(out, t + 0.05)


def test_answer_length_controller_caps_the_answer(rig):
    duet, out = rig
    duet.handle(now(), midi.control_change(0, duet.config.controls.answer_length, 1))  # about 1 beat
    release = play(duet, [60, 62, 64, 65, 67, 69, 71, 72, 74, 76, 77, 79], now(), step=0.1)  # 1.2 s call
    settle(duet, 0, until=release + SILENCE_S + 0.8)
    # 1.1 beats at 120 bpm = 0.55 s: the first six notes of a 0.1 s-per-note phrase.
    assert answered(out, release) == [60, 62, 64, 65, 67, 69]


def test_panic_controller_releases_every_sounding_note_on_all_channels(rig):
    duet, out = rig
    t = now()
    duet.handle(t, midi.note_on(3, 40, 100))  # thru: sounding on channel 3
    duet.handle(t, midi.control_change(0, duet.config.controls.panic, 127))
    sent = out.messages()
    assert midi.note_off(3, 40) in sent
    controls = [m for m in sent if midi.kind_of(m) == midi.CONTROL_CHANGE]
    all_notes_off = [m for m in controls if m[1] == midi.CC_ALL_NOTES_OFF]
    assert sorted(midi.channel_of(m) for m in all_notes_off) == list(range(16))
    assert out.ledger.sounding() == []


def test_a_mode_change_panics_and_listen_mode_does_not_answer(rig):
    duet, out = rig
    release = play(duet, [60, 62], now())
    duet.set_mode(now(), "listen")
    assert duet.counts["panics"] == 1 and duet.state == "idle"
    settle(duet, 0, until=release + SILENCE_S + 0.2)
    assert answered(out, release) == []
    release = play(duet, [65], now())
    settle(duet, 0, until=release + SILENCE_S + 0.2)
    assert answered(out, release) == []
    with pytest.raises(ValueError, match="mode must be one of"):
        duet.set_mode(now(), "jam")


def test_malformed_messages_are_counted_and_ignored(rig):
    duet, out = rig
    for junk in [(0xF8,), (0xF0, 1, 2, 0xF7), (0x90, 60), (0x90, 200, 10), (), "x", None, (0x45, 1, 2)]:
        duet.handle(now(), junk)
    assert duet.counts["invalid"] == 8
    assert out.messages() == []
    duet.handle(now(), midi.note_off(0, 61))  # a note-off without a note-on
    assert duet.tracker.orphan_note_offs == 1 and duet.state == "idle"


def test_the_session_records_both_parts_with_the_seed(rig, tmp_path):
    duet, out = rig
    start = now()
    release = play(duet, [60, 67], start)
    settle(duet, 0, until=release + SILENCE_S + 0.3)
    for t, m in out.sent:  # the daemon records what the scheduler sends; here, by hand
        if t >= release:
            duet.recorder.add(t, "musebot", m)
    path = duet.recorder.save(tmp_path / "s.mid", {"seed": 5}, origin=start)
    assert read_session_meta(path) == {"seed": 5}
    import mido

    tracks = mido.MidiFile(path).tracks
    assert [sum(1 for m in tr if m.type == "note_on" and m.velocity) for tr in tracks[1:]] == [2, 2]


def fifo_allowed() -> bool:
    """Whether this process may put a thread of its own in SCHED_FIFO (root, or an rtprio limit)."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
    except (PermissionError, OSError):
        return False
    os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    return True


def test_the_answers_are_scheduled_by_a_real_time_thread_where_the_system_allows_it(rig, caplog):
    duet, _ = rig
    allowed = fifo_allowed() if hasattr(os, "sched_setscheduler") else False
    main_nice = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    with caplog.at_level(logging.INFO, logger="musebot.realtime.modes.base"):
        duet.started()
    try:
        assert duet.realtime_priority is allowed
        if allowed:
            # The answers' notes go out before ordinary work on a busy machine (as a band's parts do), and the
            # threads that share the interpreter lock with the scheduler get a lower nice.
            assert os.sched_getscheduler(duet.scheduler.native_id) == os.SCHED_FIFO
            assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) <= -5
            assert "real-time priority" in caplog.text
        else:
            assert "keeps normal priority" in caplog.text
    finally:
        duet.close()
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == main_nice  # as it was
