"""Call and response in the musician's time: the Duet follows the tempo and beat of the call.

The musician plays at a tempo musebot is not told (``--bpm`` stays 120, the tracker's first guess); the
phrase end asks for the answer on their next beat (or downbeat), counts the silence and the answer's length
in their beats, and reports the tempo. Memory outputs and the echo answerer stand in for ports and model
(the model's side is in ``test_tempo_follow_worker.py``); times are given, not waited for.
"""

from __future__ import annotations

import random

import mido
import pytest

from musebot.realtime import midi
from musebot.realtime.clock import now
from musebot.realtime.config import ServeConfig
from musebot.realtime.io.outputs import MemoryOutput
from musebot.realtime.io.recorder import SessionRecorder
from musebot.realtime.modes.answers import AnswerSlot, EchoAnswerer
from musebot.realtime.modes.call import Duet
from musebot.realtime.scheduler import Scheduler

# Two bars of 4/4 in quarters and eighths, landing on a half note on the next downbeat (lengths in beats).
RHYTHM = [1, 0.5, 0.5, 1, 1, 0.5, 0.5, 0.5, 0.5, 1, 1, 2]
PITCHES = [60, 62, 64, 65, 67, 69, 67, 65, 64, 62, 59, 60]


def melody(bpm: float, start: float, swing: bool = False, jitter_s: float = 0.0, seed: int = 0,
           rhythm=RHYTHM, pitches=PITCHES) -> list[tuple[float, float, int]]:
    """``(onset, release, pitch)`` of the melody at ``bpm`` from ``start`` (beat 0 at ``start``): swung
    eighths are 2/3 + 1/3 of a beat, onsets moved by up to ``jitter_s`` (uniform, seeded)."""
    rng = random.Random(seed)
    period = 60.0 / bpm
    notes, beat = [], 0.0
    for length, pitch in zip(rhythm, pitches):
        place = beat
        if swing and beat % 1 == 0.5:
            place = beat + 1 / 6  # the off-beat eighth comes late
        played = length
        if swing and length == 0.5:
            played = 2 / 3 if beat % 1 == 0 else 1 / 3
        onset = start + place * period + rng.uniform(-jitter_s, jitter_s)
        notes.append((onset, onset + 0.8 * played * period, pitch))
        beat += length
    return notes


def play(duet: Duet, notes: list[tuple[float, float, int]], velocity: int = 80) -> float:
    """Feed the notes' messages in time order; returns the last release."""
    messages = [(on, 1, midi.note_on(0, p, velocity)) for on, _, p in notes]
    messages += [(off, 0, midi.note_off(0, p)) for _, off, p in notes]
    for t, _, msg in sorted(messages, key=lambda m: (m[0], m[1])):
        duet.handle(t, msg)
        duet.tick(t)
    return max(off for _, off, _ in notes)


@pytest.fixture
def rig():
    scheduler = Scheduler().start()
    made = []

    def make(**settings) -> tuple[Duet, MemoryOutput]:
        config = ServeConfig(**{"tempo": "follow", "bpm": 120.0, **settings})
        out = MemoryOutput()
        slot = AnswerSlot(scheduler, [out])
        recorder = SessionRecorder(config.bpm)
        duet = Duet(config, scheduler, [out], slot, EchoAnswerer(slot), recorder)
        made.append(duet)
        return duet, out

    yield make
    scheduler.stop()


def beats_off_grid(t: float, start: float, bpm: float, division: float = 1.0) -> float:
    """Distance of ``t`` from the grid of ``division`` beats laid from ``start``, in beats."""
    beats = (t - start) * bpm / 60.0 / division
    return abs(beats - round(beats)) * division


@pytest.mark.parametrize("bpm", [72, 142])
def test_the_answer_is_due_on_the_musicians_next_beat_at_their_tempo(rig, bpm):
    duet, _ = rig()
    start = now() + 1.0
    release = play(duet, melody(bpm, start, jitter_s=0.015, seed=bpm))
    assert duet.state == "waiting"
    assert duet.bpm == pytest.approx(bpm, rel=0.04)
    assert duet.tempo() == {"bpm": pytest.approx(bpm, rel=0.04), "source": "follow",
                            "confidence": pytest.approx(duet.tempo_confidence, abs=1e-3)}
    period = 60.0 / bpm
    # One beat of silence in their tempo, then their next beat: the melody's last note ends at beat 9.6.
    assert release + period * 0.9 <= duet.due <= release + 2.1 * period
    assert beats_off_grid(duet.due, start, bpm) < 0.06


def test_answer_on_bar_waits_for_the_downbeat_of_the_musicians_bar(rig):
    bpm = 96
    duet, _ = rig(answer_on="bar")
    start = now() + 1.0
    play(duet, melody(bpm, start, jitter_s=0.01))
    beats = (duet.due - start) * bpm / 60.0
    assert abs(beats - round(beats)) < 0.06 and round(beats) % 4 == 0  # a downbeat of their 4/4
    assert round(beats) == 12  # the bar after the call (it ends on beat 9.6, the silence takes one more)


def test_tempo_fixed_keeps_the_configured_grid_and_the_plain_silence(rig):
    duet, _ = rig(tempo="fixed", silence_ms=300)
    release = play(duet, melody(96, now() + 1.0))
    assert duet.beats is None
    assert duet.due == pytest.approx(release + 0.3)  # today's behaviour: the end of the silence, no beat
    assert duet.tempo() == {"bpm": 120.0, "source": "fixed", "confidence": None}


def test_silence_given_in_ms_is_kept_and_the_answer_still_lands_on_a_beat(rig):
    duet, _ = rig(silence_ms=200)
    start = now() + 1.0
    release = play(duet, melody(104, start))
    assert duet.due >= release + 0.2 - 0.05 * 60 / 104
    assert beats_off_grid(duet.due, start, 104) < 0.05


def test_the_next_call_starts_from_the_last_tempo(rig):
    """A second call of two notes is too short to find a tempo: the first call's tempo is kept."""
    duet, _ = rig()
    start = now() + 1.0
    release = play(duet, melody(84, start, jitter_s=0.01))
    duet.tick(duet.due)
    duet.tick(duet.due + 30.0)  # the echo answer is over (nothing scheduled any more is checked)
    duet.panic(duet.due, "test: end of the answer")
    second = release + 8.0
    play(duet, melody(84, second, rhythm=[1, 1], pitches=[67, 60]))
    assert duet.bpm == pytest.approx(84, rel=0.04)


def test_the_recording_writes_the_followed_tempo_at_the_answer(rig, tmp_path):
    duet, _ = rig()
    start = now() + 1.0
    play(duet, melody(90, start, jitter_s=0.01))
    due, followed = duet.due, duet.bpm
    duet.tick(due)  # the answer starts
    assert duet.state == "answering"
    duet.handle(due + 1.0, midi.note_on(0, 72, 80))  # the musician comes back in, in the new tempo
    duet.handle(due + 1.5, midi.note_off(0, 72))
    path = duet.recorder.save(tmp_path / "s.mid", {"seed": 0}, origin=start)
    tempos, tick = [], 0
    for msg in mido.MidiFile(path).tracks[0]:
        tick += msg.time
        if msg.type == "set_tempo":
            tempos.append((tick, mido.tempo2bpm(msg.tempo)))
    assert tempos[0] == (0, pytest.approx(120.0))  # --bpm until the tempo is known
    at, bpm = tempos[-1]
    assert bpm == pytest.approx(followed, rel=1e-3) and bpm == pytest.approx(90, rel=0.04)
    assert at == round((due - start) * 2 * 480)  # at the answer's start, 120 bpm before it
    # The musician's notes after the change are placed in the new tempo's ticks.
    mid = mido.MidiFile(path)
    assert mid.length == pytest.approx(due + 1.5 - start, abs=0.01)


# ---- bad input: a sensible estimate or the last good one, within 30..300 bpm, and an answer that starts --

def one_note(start):
    return [(start, start + 0.3, 60)]


def only_chords(start):
    return [(start + i * 0.7 + d, start + i * 0.7 + 0.5, p) for i in range(4) for d, p in
            ((0.0, 60), (0.01, 64), (0.02, 67))]


def two_minute_hold(start):
    return [(start, start + 120.0, 48), (start + 0.5, start + 0.8, 72)]


def random_timing(start):
    rng = random.Random(3)
    t, notes = start, []
    for _ in range(24):
        t += rng.uniform(0.05, 0.9)
        notes.append((t, t + 0.04, rng.randint(55, 80)))
    return notes


def tempo_change(start):
    slow = melody(70, start)
    return slow + melody(160, slow[-1][1] + 0.1)


def very_fast_and_very_slow(start):
    return ([(start + i * 0.05, start + i * 0.05 + 0.02, 60 + i % 5) for i in range(30)]
            + [(start + 3 + i * 4.0, start + 3.5 + i * 4.0, 60) for i in range(3)])


@pytest.mark.parametrize("call", [one_note, only_chords, two_minute_hold, random_timing, tempo_change,
                                  very_fast_and_very_slow])
def test_bad_input_gives_a_tempo_in_range_and_an_answer_that_starts(rig, call):
    duet, _ = rig()
    start = now() + 0.5
    notes = call(start)
    release = play(duet, notes)
    assert duet.state == "waiting"
    assert 30.0 <= duet.bpm <= 300.0
    assert release < duet.due <= release + 4 * 4 * 60.0 / duet.bpm  # within a bar of a beat at most
    duet.tick(duet.due)
    assert duet.state == "answering" and duet.counts["answers"] == 1
    assert duet.slot.first_due[duet.answer_id] == pytest.approx(duet.due)  # the echo's first note
