"""A band that knows the changes, over a real JACK server (``jackd -d dummy``): a drum machine in its own process
sends MIDI clock into ``musebot-clock:in`` (``--clock external``), a musician plays a melody over a chord chart
into ``musebot:in``, and musebot accompanies with bass and chords from the shipped model (a real ONNX engine; the reference
model's random weights play too few notes to measure).

The measure of issue 14: of the bass notes that start a chord's span (within a 32nd of the change), the share
that are chord tones of it; of the chords part's notes, the share that are chord tones or 9ths/13ths (b9, 9,
#9, b13, 13 above the root). Each chart is played with ``--harmony chart`` and its figures are asserted; with
``MUSEBOT_HARMONY_BASELINE=1`` it is played again with ``--harmony key`` (the parts follow only the key, the
baseline of the issue's figures) and both are printed. The baseline asserts nothing, and it doubled these
tests' time (three minutes of the JACK files' nine).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import mido
import pytest

from musebot.engine.generate import DEFAULT_MODEL_DIR
from musebot.realtime.chords import parse_chart
from musebot.realtime.clock import now, sleep_until
from musebot.realtime.config import ServeConfig
from musebot.realtime.daemon import Daemon, Observer, ServeOptions
from musebot.realtime.harmony_parts import ONSET_TOLERANCE
from musebot.realtime.modes.band import BandConfig
from tests._jack import Musician, hanging_notes, jack_server, requires_jackd
from tests.realtime.modes.test_accompany_jack import DRUM_MACHINE, play_at_beats

pytestmark = [pytest.mark.jack, requires_jackd]

BPM = 160  # (at 200 the planner of a loaded machine fell behind and some runs had 1 bass note on a change)
CHARTS = {  # name: (chart, passes)
    "blues": ("F7 | Bb7 | F7 | F7 | Bb7 | Bb7 | F7 | D7b9 | Gm7 | C7 | F7 D7 | Gm7 C7", 2),
    "ii-V-I": ("Dm7 | G7 | Cmaj7 | A7b9", 6),  # 24 changes: loaded machines left 1 bass note on 8 and on 16
    "minor": ("Am7b5 | D7b9 | Gm7 | Eb7#11 | Cm7 | F7 | Am7b5 D7alt | Gm6", 2),
}
NINTHS_THIRTEENTHS = {1, 2, 3, 8, 9}  # semitones above the root: b9 9 #9 b13 13


@pytest.fixture(scope="module")
def jack():
    with jack_server("-harmony") as server:
        yield server


@pytest.fixture(scope="module")
def model_dir():
    """The shipped model (int8 graphs, key-normalised: the chart is moved to C with the musician's key)."""
    if not (DEFAULT_MODEL_DIR / "config.json").is_file():
        pytest.fail("the shipped model is missing from musebot/assets/model")
    return str(DEFAULT_MODEL_DIR)


def serve(model: str | None, mode: str = "accompany", record: str | None = None, **band) -> Daemon:
    daemon = Daemon(ServeConfig(bpm=BPM, seed=5), ServeOptions(mode=mode, model=model, record=record,
                                                               band=BandConfig.for_mode(mode, **band)))
    daemon.part_notes = []  # (beat, part, pitch) of each part note-on sent

    def sent(due, _sent, _output, msg, tag) -> None:
        if tag and tag.startswith("part:") and msg[0] & 0xF0 == 0x90 and msg[2] > 0:
            daemon.part_notes.append((daemon.session.timebase.beat_at(due), tag[5:], msg[1]))

    daemon.observers.append(Observer(on_sent=sent))
    return daemon.start()


def arpeggios(chart, first_beat: float, last_beat: float) -> list:
    """The musician's melody: two eighths a beat on the chord tones in force (C4..C6), from ``first_beat``."""
    events, beat, k = [], first_beat, 0
    while beat < last_beat:
        chord, _, _ = chart.chord_at(beat)
        tones = sorted(chord.tones)
        pc = tones[k % len(tones)]
        pitch = 60 + (pc - 60) % 12 + 12 * (k // len(tones) % 2)
        events += [(beat, (0x90, pitch, 84)), (beat + 0.45, (0x80, pitch, 0))]
        beat += 0.5
        k += 1
    return events


def accompany_over(model_dir: str, chart_text: str, passes: int, harmony: str) -> tuple[Daemon, list]:
    chart = parse_chart(chart_text)
    beats = int(chart.length_beats * passes)
    daemon = serve(model_dir, parts=["bass", "chords"], clock="external", chords=chart_text, harmony=harmony)
    musician = Musician()
    try:
        drums = subprocess.Popen([sys.executable, "-c", DRUM_MACHINE, str(now() + 1.0), str(beats + 1), str(BPM),
                                  str(BPM)], stdout=subprocess.PIPE, text=True)
        play_at_beats(musician, daemon.session.timebase, arpeggios(chart, 1.0, beats))
        drums.communicate(timeout=beats * 60 / BPM + 15)
        time.sleep(0.2)
    finally:
        daemon.close()
        time.sleep(0.1)
        musician.close()
    return daemon, musician.snapshot()


def measure(chart, notes) -> dict:
    """The bass note that starts each chord's span (the first of the span, within its first beat: what a
    listener hears as the bass of that chord) and whether it is a chord tone; chords-part notes that are
    chord tones or 9/13ths."""
    bass_hits = bass_n = chord_hits = chord_n = 0
    spans_seen = set()
    for beat, part, pitch in sorted(notes):
        chord, start, _ = chart.chord_at(beat)
        interval = (pitch - chord.root) % 12
        if part == "bass" and start - ONSET_TOLERANCE <= beat < start + 1 - ONSET_TOLERANCE and start not in spans_seen:
            spans_seen.add(start)
            bass_n += 1
            bass_hits += pitch % 12 in chord.tones
        elif part == "chords":
            chord_n += 1
            chord_hits += pitch % 12 in chord.tones or interval in NINTHS_THIRTEENTHS
    return {"bass_on_change": bass_hits / max(bass_n, 1), "bass_n": bass_n,
            "chords_fit": chord_hits / max(chord_n, 1), "chords_n": chord_n}


@pytest.mark.parametrize("name", list(CHARTS))
def test_over_a_chart_the_bass_lands_on_chord_tones_at_each_change_and_the_chords_part_voices_the_chord(
        jack, model_dir, name):
    chart_text, passes = CHARTS[name]
    chart = parse_chart(chart_text)
    figures = {}
    for harmony in ("chart", "key") if os.environ.get("MUSEBOT_HARMONY_BASELINE") == "1" else ("chart",):
        daemon, heard = accompany_over(model_dir, chart_text, passes, harmony)
        figures[harmony] = measure(chart, daemon.part_notes)
        assert hanging_notes(heard) == set()  # a chord change mid-note never leaves a note sounding
    print(f"\n{name}: " + "; ".join(
        f"--harmony {h}: bass on a change {f['bass_on_change']:.0%} of {f['bass_n']}, chords part "
        f"{f['chords_fit']:.0%} of {f['chords_n']}" for h, f in figures.items()))
    got = figures["chart"]
    assert got["bass_n"] >= 2 and got["chords_n"] >= 8, got  # enough notes to measure
    assert got["bass_on_change"] >= 0.85, figures
    assert got["chords_fit"] >= 0.85, figures


def follow_the_chords(model_dir, record) -> tuple[Daemon, list, float]:
    """The musician plays a chord progression over a drum machine's clock, musebot following the chords;
    returns the daemon (closed), what the band status said at the end and how late the latest chord left."""
    daemon = serve(model_dir, parts=["bass"], clock="external", harmony="follow", record=str(record))
    musician = Musician()
    # Both hands: a left-hand root and a right-hand voicing held for a bar each: Dm7, G7, Cmaj7, A7.
    voicings = [(38, (53, 57, 60, 65)), (43, (53, 59, 62, 65)), (36, (52, 55, 59, 64)), (45, (55, 61, 64, 67))]
    events = []
    for bar, (root, upper) in enumerate(voicings * 3):  # three passes: 5-8 bass notes on measured beats
        start = 1 + 4 * bar
        for pitch in (root, *upper):
            events += [(start, (0x90, pitch, 80)), (start + 3.8, (0x80, pitch, 0))]
    seen = []
    try:
        drums = subprocess.Popen([sys.executable, "-c", DRUM_MACHINE, str(now() + 1.0), "51", str(BPM), str(BPM)],
                                 stdout=subprocess.PIPE, text=True)
        late = play_at_beats(musician, daemon.session.timebase, events)
        seen.append(daemon.session.band_status())
        drums.communicate(timeout=25)
        time.sleep(0.2)
    finally:
        daemon.close()
        time.sleep(0.1)
        musician.close()
    return daemon, seen, late


def test_following_the_chords_played_the_parts_take_them_from_the_next_beat_and_the_recording_marks_them(
        jack, model_dir, tmp_path):
    # Played again (twice at most) when the test's musician could not play as written: a chord more than a
    # tenth of a beat late, its thread caught in a freeze of the machine (tests/_stalls.py) or starved on a
    # loaded one (a loop run once heard a bar of Cmaj7 go by without it being named).
    for attempt in range(3):
        record = tmp_path / f"follow-{attempt}.mid"
        daemon, seen, late = follow_the_chords(model_dir, record)
        if late <= 0.1 * 60 / BPM:
            break
        print(f"\nthe latest chord left {late * 1e3:.0f} ms late: played again")
    harmony = daemon.session.harmony
    named = [chord.symbol for _, chord in harmony.tracked]
    assert named[:4] == ["Dm7", "G7", "Cmaj7", "A7"], named
    assert seen[0]["harmony"]["mode"] == "follow" and seen[0]["harmony"]["tracked_chord"] == "A7"
    # The bass from the beat after each chord was heard: chord tones on the span starts and strong beats.
    on_time = [(beat, pitch) for beat, part, pitch in daemon.part_notes if part == "bass"]
    # A note on the first beat a chord is known was committed (a beat ahead) before it was heard: the parts
    # take a heard chord from the next beat, so those notes are measured from the beat after.
    starts = [start for start, _ in harmony.tracked]
    # A strong beat's note may read a little early as well as late (the beat map follows the drum machine's
    # clock, which a loaded machine jitters): within ONSET_TOLERANCE either side.
    strong = [(beat, pitch) for beat, pitch in on_time
              if min(beat % 2, 2 - beat % 2) < ONSET_TOLERANCE and beat >= 6 - ONSET_TOLERANCE
              and not any(start - ONSET_TOLERANCE <= beat < start + 1 - ONSET_TOLERANCE for start in starts)]
    fits = [pitch % 12 in harmony.chord_at(beat)[0].tones for beat, pitch in strong]
    print(f"\nfollow: chords named {named}; bass on strong beats {sum(fits)}/{len(fits)} chord tones")
    # (A loop run once judged no bass note at all: the message says what the bass played and the band's state.)
    assert fits and sum(fits) / len(fits) >= 0.85, (on_time, seen[0].get("telemetry"))
    markers = [m.text for track in mido.MidiFile(record).tracks for m in track if m.type == "marker"]
    assert markers[:4] == ["chord Dm7", "chord G7", "chord Cmaj7", "chord A7"], markers


def test_the_looper_moves_a_recorded_bass_bar_over_the_next_chord(jack):
    daemon = serve(None, mode="looper", looper_source="replay", chords="C | F | G | F")
    musician = Musician()
    line = [36, 40, 43, 40]  # C E G E over C
    try:
        tb = daemon.session.timebase
        bar = tb.bar_of(tb.beat_at(now())) + 1
        while bar % 4:  # start on a C bar of the chart
            bar += 1
        first = bar * 4
        events = [e for i, p in enumerate(line) for e in ((first + i, (0x90, p, 80)), (first + i + 0.9, (0x80, p, 0)))]
        events += [(first + 4 + i * 0.5, (0x90, 72 + i % 3, 70)) for i in range(8)]  # melody: bass left to musebot
        events += [(first + 4.4 + i * 0.5, (0x80, 72 + i % 3, 0)) for i in range(8)]
        events += [(first + 8 + i * 0.5, (0x90, 76, 70)) for i in range(8)]
        events += [(first + 8.4 + i * 0.5, (0x80, 76, 0)) for i in range(8)]
        play_at_beats(musician, tb, events)
        sleep_until(tb.time_at(first + 16) + 0.05)  # the last replayed bar is over
    finally:
        daemon.close()
        time.sleep(0.1)
        musician.close()
    replayed = sorted((beat, pitch) for beat, part, pitch in daemon.part_notes if part == "bass")
    # The bar after the first melody bar is the first musebot plays bass in (it was chosen while the musician
    # still played bass): the recorded C-major line comes back over G, then over F.
    over_g = [p for b, p in replayed if first + 8 <= b < first + 12]
    over_f = [p for b, p in replayed if first + 12 <= b < first + 16]
    # C E G E moves to G B D B and F A C A (each chord tone to the same tone of the new chord). On a loaded
    # machine a note of the recorded bar can land in the next bar: the replayed bar may then be a part of it.
    assert len(over_g) >= 2 and {p % 12 for p in over_g} <= {7, 11, 2} and 11 in {p % 12 for p in over_g}, replayed
    assert len(over_f) >= 2 and {p % 12 for p in over_f} <= {5, 9, 0} and 9 in {p % 12 for p in over_f}, replayed
    assert not [b for b, _ in replayed if b < first + 8]  # not while the musician played bass
    low, high = daemon.session.settings.parts["bass"].low, daemon.session.settings.parts["bass"].high
    assert all(low <= p <= high for _, p in replayed)  # then kept in the part's register
