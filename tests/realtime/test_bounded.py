"""Nothing a flood touches grows without bound: the model thread's inbox, the recording, the log.

Each keeps what matters (commands, the newest notes, what was recorded first, the first lines of a kind)
and counts what it let go, so the status can say what a flood cost.
"""

from __future__ import annotations

import logging
import queue
import threading

import pytest

from musebot.realtime import midi
from musebot.realtime.inbox import Inbox
from musebot.realtime.io.recorder import SessionRecorder, read_session_meta
from musebot.realtime.logs import LogLimiter


def test_a_flood_of_notes_keeps_the_newest_and_every_command_in_order():
    inbox = Inbox(limit=100)
    inbox.put(("answer", 1))
    for i in range(10_000):
        inbox.put(("msg", i), sheddable=True)
        if i == 5_000:
            inbox.put(("stop", 1))
    assert len(inbox) <= 2 * 100 + 2  # bounded whatever the flood's length
    taken = []
    while True:
        try:
            taken.append(inbox.get_nowait())
        except queue.Empty:
            break
    commands = [c for c in taken if c[0] != "msg"]
    notes = [c[1] for c in taken if c[0] == "msg"]
    assert commands == [("answer", 1), ("stop", 1)]
    assert notes == sorted(notes) and notes[-1] == 9_999  # the newest win, in order
    assert inbox.dropped + len(notes) == 10_000 and len(notes) >= 100


def test_a_waiting_consumer_wakes_on_a_put_and_times_out_on_silence():
    inbox = Inbox()
    assert not inbox.wait(0.01)
    with pytest.raises(queue.Empty):
        inbox.get(timeout=0.01)
    threading.Timer(0.02, inbox.put, args=(("quit",),)).start()
    assert inbox.get(timeout=2.0) == ("quit",)


def test_a_full_recording_keeps_its_start_releases_what_it_kept_and_says_what_it_dropped(tmp_path):
    recorder = SessionRecorder(120.0, max_events=10)
    for i in range(6):
        recorder.add(i * 0.1, "musician", midi.note_on(0, 60 + i, 80))
    recorder.add(0.7, "musician", midi.control_change(0, 1, 5))
    for i in range(6):  # the recording is full from the 4th note-off on, but kept notes are released
        recorder.add(1.0 + i * 0.1, "musician", midi.note_off(0, 60 + i))
    recorder.add(2.0, "musebot", midi.note_on(0, 72, 80))  # dropped: no room
    recorder.add(2.1, "musebot", midi.note_off(0, 72))  # its note-on was not kept: dropped too
    events = recorder.events()
    assert len(events) == 13 and recorder.dropped == 2
    ons = {m[1] for _, m in events if midi.is_note_on(m)}
    offs = {m[1] for _, m in events if midi.is_note_off(m)}
    assert ons == offs  # no hanging note in what was kept
    path = recorder.save(tmp_path / "s.mid", {"seed": 0})
    assert read_session_meta(path)["recording_dropped_events"] == 2


def test_the_log_limiter_lets_the_first_lines_through_and_counts_the_rest():
    logger = logging.getLogger("musebot.realtime.test-bounded")
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())
    logger.addHandler(handler)
    limiter = LogLimiter(lines=5, window_s=60.0, loggers=[logger.name])
    limiter.install()
    try:
        for i in range(1000):
            logger.warning("scheduler: dropped note %d", i)
    finally:
        limiter.remove()
        logger.removeHandler(handler)
    assert len(records) == 5 and limiter.suppressed == 995


def test_a_listener_behind_a_flood_keeps_the_newest_input_so_the_phrase_after_it_is_heard(tmp_path):
    from musebot.realtime.clock import now
    from musebot.realtime.config import ServeConfig
    from musebot.realtime.daemon import LISTEN_BATCH, Daemon, ServeOptions

    options = ServeOptions(answer="echo", outputs=["fluidsynth"], fluidsynth_driver="file",
                           fluidsynth_file=str(tmp_path / "out.wav"), input="none")
    daemon = Daemon(ServeConfig(seed=1), options)  # not started: the test is its listener, and a stalled one
    try:
        t0 = now() - 2.0
        for i in range(2800):  # 1.4 s of a flood of controllers, from 2 s ago
            assert daemon.feed([0xB0, 1, i % 128], t0 + i * 0.0005)
        # The musician's phrase just after the flood, which also waited behind it: 0.25-0.4 s old now.
        phrase = [(t0 + 1.6 + 0.05 * k, [0x90 if k % 2 == 0 else 0x80, 60 + k // 2, 90 if k % 2 == 0 else 0])
                  for k in range(4)]
        for t, msg in phrase:
            daemon.feed(msg, t)
        batch = daemon._next_batch()
        assert batch == phrase  # the newest 0.25 s of what waited: the phrase, all of it
        assert daemon.stale_dropped == 2800  # the flood, counted
        # Behind a dense flood that is still going on, it catches up at once: a batch of the newest.
        late = now() - 0.4
        for i in range(1000):  # 0.1 s of a flood, from 0.4 s ago
            daemon.feed([0xB0, 2, i % 128], late + i * 0.0001)
        batch = daemon._next_batch()
        assert len(batch) == LISTEN_BATCH and batch[-1][1] == [0xB0, 2, 999 % 128]
        assert daemon.stale_dropped == 2800 + 1000 - LISTEN_BATCH
        # A listener that keeps up drops nothing, and takes at most a batch at a time.
        fresh = now()
        for i in range(LISTEN_BATCH + 10):
            daemon.feed([0xB0, 7, i % 128], fresh)
        assert len(daemon._next_batch()) == LISTEN_BATCH and len(daemon._next_batch()) == 10
        assert daemon.stale_dropped == 2800 + 1000 - LISTEN_BATCH
    finally:
        daemon.close()
