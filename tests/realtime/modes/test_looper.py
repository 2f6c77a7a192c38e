"""The reflexive looper on a memory output with the real scheduler: what the musician plays per bar decides
what musebot plays in the next, from the musician's own bars or from the model.

A listener loop here does what the daemon's listener thread does; the same session over JACK is in
test_accompany_jack.py.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from musebot.realtime.clock import now
from musebot.realtime.config import ServeConfig
from musebot.realtime.constraints import DEFAULT_PARTS
from musebot.realtime.io.outputs import MemoryOutput
from musebot.realtime.modes import make_session
from musebot.realtime.modes.band import BandConfig
from musebot.realtime.modes.looper import LOOPER_CONTROLS, RESERVED_EVENTS, fit_register, transposition
from musebot.realtime.scheduler import Scheduler
from tests._jack import hanging_notes
from tests._realtime_fixtures import exported_reference_model

BPM = 300  # a 4/4 bar lasts 0.8 s
SHIPPED_MODEL = Path(__file__).resolve().parents[3] / "musebot" / "assets" / "model"
BASS_LINE = [36, 43, 40, 43]
MELODY = [72, 74, 76, 77, 79, 77, 76, 74]
CHORD = [60, 64, 67]


def make_band(config, band, scheduler, outputs, model, api=None):
    """The band session ``musebot serve --mode accompany|looper`` makes (the daemon's factory)."""
    return make_session(band.mode, config, scheduler, outputs, model=model, band=band, api=api)


def bass_bar(bar, pitches=BASS_LINE):
    return [e for i, p in enumerate(pitches) for e in ((bar * 4 + i, (0x90, p, 80)),
                                                        (bar * 4 + i + 0.9, (0x80, p, 0)))]


def melody_bar(bar):
    return [e for i, p in enumerate(MELODY) for e in ((bar * 4 + i * 0.5, (0x90, p, 100)),
                                                      (bar * 4 + i * 0.5 + 0.45, (0x80, p, 0)))]


def chord_bar(bar, low=None):
    events = [e for b in (0, 2) for p in CHORD for e in ((bar * 4 + b, (0x90, p, 70)),
                                                         (bar * 4 + b + 1.8, (0x80, p, 0)))]
    if low is not None:
        events += [(bar * 4, (0x90, low, 80)), (bar * 4 + 3.9, (0x80, low, 0))]
    return events


def perform(band, events, until_beat):
    events = sorted(events, key=lambda e: e[0])
    tb = band.timebase
    while tb.beat_at(now()) < until_beat:
        while events and tb.beat_at(now()) >= events[0][0]:
            band.handle(now(), events.pop(0)[1])
        band.tick(now())
        time.sleep(0.001)


@pytest.fixture
def scheduler():
    sched = Scheduler(late_s=0.002, drop_late_s=0.1).start()
    yield sched
    sched.stop()


def looper(scheduler, out, model=None, **settings):
    band = BandConfig.for_mode("looper", **settings)
    return make_band(ServeConfig(bpm=BPM, seed=2), band, scheduler, [out], model)


def heard_in_bar(looper_band, out, channel, bar):
    tb = looper_band.timebase
    return [m[1] for t, m in out.sent if m[0] == 0x90 | channel and m[2] > 0 and tb.bar_of(tb.beat_at(t)) == bar]


def test_a_bass_line_played_for_two_bars_comes_back_under_the_melody(scheduler):
    out = MemoryOutput()
    band = looper(scheduler, out, looper_source="replay")
    bass = band.settings.parts["bass"]
    perform(band, bass_bar(0) + bass_bar(1) + melody_bar(2) + melody_bar(3), until_beat=16.2)
    history = {bar: (musician, ours) for bar, musician, ours in band.history}
    band.panic(now(), "test over")
    band.close()
    sent = [m for _, m in out.sent]
    assert history[2] == (("bass",), ())  # nothing recorded yet in the other roles: nothing to replay
    assert history[3] == (("melody",), ("bass",))
    # Bar 3 (the second melody bar) has the recorded bass line under it, note for note, on the bass channel.
    assert heard_in_bar(band, out, bass.channel, 3) == BASS_LINE
    assert not heard_in_bar(band, out, bass.channel, 2)  # while the musician played bass, musebot did not
    assert len(band.memory["bass"]) == 2 and len(band.memory["melody"]) == 2
    assert hanging_notes([(0, m) for m in sent]) == set()


def test_a_recorded_bar_is_transposed_to_the_key_the_musician_has_moved_to(scheduler):
    out = MemoryOutput()
    band = looper(scheduler, out, looper_source="replay", parts=["bass"])
    d_major_melody = [e for bar in (2, 3) for i, p in enumerate((74, 78, 81, 73, 76, 79, 78, 74))
                      for e in ((bar * 4 + i * 0.5, (0x90, p, 100)), (bar * 4 + i * 0.5 + 0.45, (0x80, p, 0)))]
    perform(band, bass_bar(0) + bass_bar(1) + d_major_melody, until_beat=16.2)
    band.panic(now(), "test over")
    band.close()
    assert band.key_tracker.tonic == 2
    assert heard_in_bar(band, out, band.settings.parts["bass"].channel, 3) == [p + 2 for p in BASS_LINE]


def test_a_musician_playing_bass_and_chords_at_once_gets_the_melody_only(scheduler, model_dir, caplog):
    out = MemoryOutput()
    band = looper(scheduler, out, model=model_dir)
    with caplog.at_level(logging.INFO, logger="musebot.realtime.modes.looper"):
        perform(band, chord_bar(0, low=36) + chord_bar(1, low=41), until_beat=8.2)
    band.panic(now(), "test over")
    band.close()
    history = {bar: (musician, ours) for bar, musician, ours in band.history}
    assert history[1] == (("bass", "chords"), ("melody",))
    assert "plays bass and chords at once" in caplog.text
    assert band.counts["multi_role_bars"] >= 1
    melody = band.settings.parts["melody"]
    generated = heard_in_bar(band, out, melody.channel, 1)
    assert band.counts["generated"] >= 1 and generated  # no melody was recorded: the model wrote one
    assert all(melody.low <= p <= melody.high for p in generated)


def test_the_generator_writes_every_bar_in_the_cache_it_reserved_at_the_start(scheduler):
    # The shipped model's in-place engine: a new cache per bar (grown by doubling) left the C heap
    # fragmented, and the looper grew ~13 MB in an hour's soak.
    out = MemoryOutput()
    band = looper(scheduler, out, model=str(SHIPPED_MODEL))
    engine = band.generator.engine
    cache, buffers = engine._past, [id(a) for a in engine._past.arrays]
    assert cache.capacity >= RESERVED_EVENTS
    perform(band, chord_bar(0, low=36) + chord_bar(1, low=41) + chord_bar(2, low=43), until_beat=12.2)
    band.panic(now(), "test over")
    band.close()
    assert band.counts["generated"] >= 2
    assert engine._past is cache and [id(a) for a in cache.arrays] == buffers


def test_controllers_clear_a_role_freeze_the_loops_and_switch_to_generation(scheduler, model_dir):
    out = MemoryOutput()
    band = looper(scheduler, out, model=model_dir, looper_source="replay")
    cc = LOOPER_CONTROLS
    perform(band, bass_bar(0) + bass_bar(1, [38, 45, 41, 45]) + [(8.5, (0xB0, cc["looper.freeze"], 127))]
            + melody_bar(2) + melody_bar(3) + melody_bar(4), until_beat=20.2)
    assert band.frozen and len(band.memory["melody"]) == 0  # frozen: the melody bars were not recorded
    bass = band.settings.parts["bass"].channel
    # A frozen loop cycles through its bars in order: both recorded bass bars come back in turn.
    assert {tuple(heard_in_bar(band, out, bass, bar)) for bar in (3, 4)} == {(36, 43, 40, 43), (38, 45, 41, 45)}
    for number, value in ((cc["looper.clear_bass"], 127), (cc["looper.source"], 127)):
        band.handle(now(), (0xB0, number, value))
    assert not band.memory["bass"] and band.source == "generate"
    band.handle(now(), (0xB0, cc["looper.interplay"], 100))
    assert band.interplay == "contrast"
    assert band.counts["controls"] == 4  # a looper controller is never played through
    band.panic(now(), "test over")
    band.close()


def test_registers_and_key_shifts_are_taken_the_short_way():
    bass = DEFAULT_PARTS["bass"]
    assert fit_register(72, bass) == 48 and fit_register(20, bass) == 32
    assert transposition(0, 7) == -5 and transposition(0, 5) == 5 and transposition(None, 3) == 0


@pytest.fixture(scope="module")
def model_dir(reference_dir):
    return str(exported_reference_model(reference_dir))
