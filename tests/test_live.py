"""The live converter: a stream of played messages gives the notes a file of the same music gives."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import mido
import pytest

from musebot.tokenizers import MIDITokenizer, load_score
from musebot.tokenizers.live import LiveConverter

REFERENCE_MIDI = sorted((Path(__file__).parent / "data" / "reference" / "midi").glob("*.mid"))


def played(midi: mido.MidiFile):
    """The file's messages in time order as a player would send them: (seconds, track, message)."""
    timed = []
    for index, track in enumerate(midi.tracks):
        tick = 0
        for msg in track:
            tick += msg.time
            timed.append((tick, index, msg))
    timed.sort(key=lambda item: item[0])
    tempo, last_tick, seconds = 500000, 0, 0.0
    for tick, index, msg in timed:
        seconds += (tick - last_tick) * tempo / 1e6 / midi.ticks_per_beat
        last_tick = tick
        if msg.type == "set_tempo":
            tempo = msg.tempo
        yield seconds, index, msg


def grid_notes(rows, tok) -> Counter:
    beat, notes = 0, Counter()
    for row in rows:
        event = tok.row_to_event(row)
        if event is None:
            continue
        beat += event[1]
        if event[0] == "note":
            notes[(beat * 16 + event[2], *event[4:8])] += 1
    return notes


@pytest.mark.parametrize("path", REFERENCE_MIDI, ids=lambda p: p.stem)
def test_playing_a_file_gives_the_notes_of_tokenizing_it(path: Path):
    tok = MIDITokenizer("v2", optimise=False)
    midi = mido.MidiFile(str(path))
    converter = LiveConverter(tok, ticks_per_beat=midi.ticks_per_beat)
    rows, events, now = [], [], 0.0
    for now, track, msg in played(midi):
        out = converter.feed(msg, now, source=track)
        rows += out.rows
        events += out.events
    final = converter.flush(now)
    rows += final.rows
    events += final.events
    assert grid_notes(rows, tok) == grid_notes(tok.tokenize(load_score(path)), tok)
    file_notes = Counter(tuple(e[1:]) for tr in load_score(path)[1:] for e in tr if e[0] == "note")
    assert Counter(tuple(e[1:]) for e in events if e[0] == "note") == file_notes


def test_rows_enter_in_onset_order_while_a_long_note_is_held():
    tok = MIDITokenizer("v2", optimise=True)
    conv = LiveConverter(tok, bpm=120)  # 0.5 s per beat
    assert conv.feed(mido.Message("note_on", note=48, velocity=80), 0.0).rows == []
    conv.feed(mido.Message("note_on", note=64, velocity=80), 0.25)
    out = conv.feed(mido.Message("note_off", note=64), 0.5)
    assert [e[4] for e in out.events] == [64] and out.rows == []  # the bass note began earlier: wait
    out = conv.feed(mido.Message("note_off", note=48), 1.0)
    pitches = [tok.row_to_event(r)[5] for r in out.rows]
    assert pitches == [48, 64]
    starts = [tok.row_to_event(r)[2] for r in out.rows]
    assert starts == [0, 8]  # on the 1/16-beat grid: the second note half a beat later


def test_a_key_held_for_minutes_does_not_freeze_the_context():
    conv = LiveConverter(MIDITokenizer("v2", optimise=True), bpm=120, hold_limit_beats=4)
    conv.feed(mido.Message("note_on", note=40, velocity=80), 0.0)  # held for three minutes
    rows = []
    for i in range(20):
        t = 1.0 + i * 0.5
        rows += conv.feed(mido.Message("note_on", note=72, velocity=80), t).rows
        rows += conv.feed(mido.Message("note_off", note=72), t + 0.25).rows
    rows += conv.advance(180.0).rows
    assert len(rows) == 21  # the held note entered after 4 beats, with the length it had
    out = conv.feed(mido.Message("note_off", note=40), 180.0)
    assert out.events[0][2] == 180 * 2 * 480  # its score event still gets its true length
    assert out.rows == []  # but it is not entered twice


def test_memory_stays_bounded_under_a_flood_of_note_ons():
    conv = LiveConverter(MIDITokenizer("v2", optimise=True), max_sounding=64)
    for i in range(10_000):
        conv.feed(mido.Message("note_on", note=i % 128, velocity=90, channel=i % 16), i * 0.0001)
    assert conv.held_notes <= 64
    assert len(conv._done) <= 64  # finished notes wait only behind held ones


def test_sustain_pedal_keeps_the_phrase_open():
    conv = LiveConverter(MIDITokenizer("v2", optimise=True))
    conv.feed(mido.Message("note_on", note=60, velocity=80), 0.0)
    conv.feed(mido.Message("control_change", control=64, value=127), 0.1)
    conv.feed(mido.Message("note_off", note=60), 0.5)
    assert not conv.quiet
    out = conv.feed(mido.Message("control_change", control=64, value=0), 1.0)
    assert conv.quiet
    assert [e[0] for e in out.events] == ["control_change"]


def test_session_tempo_changes_the_grid():
    conv = LiveConverter(MIDITokenizer("v2", optimise=True), bpm=60)
    conv.set_tempo(120, 2.0)  # two beats at 60 bpm, then 120 bpm
    conv.feed(mido.Message("note_on", note=60, velocity=80), 3.0)  # 2 + 2 beats = beat 4
    out = conv.flush(3.5)
    event = out.events[0]
    assert event[1] == 4 * 480 and event[2] == 480
    with pytest.raises(ValueError, match="outside"):
        conv.set_tempo(0, 4.0)
