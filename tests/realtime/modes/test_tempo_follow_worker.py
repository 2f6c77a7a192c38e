"""The model hears the call on the musician's beat and answers on it (real ONNX engine, reference model).

The musician plays eighths and quarters at 96 bpm while musebot is told 120: read at 120 the call's rows
fall between the model's sixteenths; followed, every row sits on an eighth of the model's grid, and the
answer's notes are scheduled on the model's grid (16 steps a beat) laid on the musician's beats, from their
next beat. (Whether those steps are musical eighths is the shipped model's part: the JACK tests.)
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from musebot.realtime import midi
from musebot.realtime.clock import now
from musebot.realtime.config import ServeConfig
from musebot.realtime.io.outputs import MemoryOutput
from musebot.realtime.modes.answers import AnswerSlot
from musebot.realtime.modes.call import Duet
from musebot.realtime.modes.call_worker import ModelAnswerer
from musebot.realtime.scheduler import Scheduler
from tests._realtime_fixtures import exported_reference_model
from tests.realtime.modes.test_tempo_follow import melody, play

BPM = 96


@pytest.fixture(scope="module")
def model_dir(reference_dir) -> Path:
    return exported_reference_model(reference_dir)


class Rig:
    def __init__(self, model_dir: Path, tempo: str) -> None:
        self.config = ServeConfig(tempo=tempo, bpm=120.0, seed=3, answer_beats=4)
        self.planned: list[tuple[float, tuple[int, ...]]] = []  # (due, message): timing without the load
        self.scheduler = Scheduler(on_send=lambda due, sent, output, msg, tag: self.planned.append((due, msg)))
        self.scheduler.start()
        self.out = MemoryOutput()
        self.slot = AnswerSlot(self.scheduler, [self.out])
        self.answerer = ModelAnswerer.load(model_dir, self.slot, self.config)
        self.duet = Duet(self.config, self.scheduler, [self.out], self.slot, self.answerer)

    def call_and_answer(self, notes) -> float:
        release = play(self.duet, notes)
        while now() < self.duet.due + 60.0 / BPM * 4.5:
            self.duet.tick(now())
            time.sleep(0.002)
        return release

    def call_steps(self, first: int, n: int) -> list[int]:
        """Sixteenth positions within the beat (time2) of the context's rows first..first+n."""
        events = [self.answerer.tokenizer.row_to_event(list(row))
                  for row in self.answerer.engine.rows[0, first:first + n]]
        return [event[2] for event in events]

    def close(self) -> None:
        self.answerer.close()
        self.scheduler.stop()


@pytest.mark.parametrize("tempo", ["follow", "fixed"])
def test_the_call_is_heard_on_the_musicians_beat_only_when_followed(model_dir, tempo):
    rig = Rig(model_dir, tempo)
    try:
        start = now() + 0.3
        notes = melody(BPM, start)
        time.sleep(max(0.0, start - now()))
        rig.call_and_answer(notes)
        steps = rig.call_steps(1, len(notes))  # after BOS: the call's rows
        on_eighths = sum(step % 8 == 0 for step in steps)
        if tempo == "follow":
            assert on_eighths == len(notes), steps
            assert rig.answerer.stats.regrids >= 1
            assert rig.answerer.converter.bpm == pytest.approx(BPM, rel=0.04)
        else:
            assert on_eighths < len(notes) * 0.7, steps  # heard at 120: between the model's eighths
            assert rig.answerer.stats.regrids == 0
            assert rig.answerer.converter.bpm == 120.0
    finally:
        rig.close()


def test_the_answer_is_played_on_the_model_grid_laid_on_the_musicians_beats(model_dir):
    rig = Rig(model_dir, "follow")
    try:
        start = now() + 0.3
        notes = melody(BPM, start)
        time.sleep(max(0.0, start - now()))
        rig.call_and_answer(notes)
        ons = [t for t, m in rig.planned if midi.is_note_on(m)]
        assert len(ons) >= 2, "the model gave no answer"
        period = 60.0 / BPM
        due_beats = (rig.duet.due - start) / period
        assert abs(due_beats - round(due_beats)) < 0.05  # due on their beat
        for t in ons:
            steps = (t - start) / period * 16  # in the model's steps (1/16 of their beat)
            assert abs(steps - round(steps)) < 0.1, (t - start) / period
        first = rig.slot.first_due[rig.duet.answer_id]
        assert rig.duet.due - 1e-6 <= first < rig.duet.due + period  # it keeps its place within that beat
        assert rig.out.ledger.sounding() == []
    finally:
        rig.close()
