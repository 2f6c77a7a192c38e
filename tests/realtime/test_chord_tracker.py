"""Live chord following: a musician plays changes, the tracker names the chord of each beat."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest

from musebot.realtime.chord_tracker import ChordTracker, TrackerConfig

SECONDS_PER_BEAT = 0.5  # 120 bpm


def play(tracker: ChordTracker, notes: list[tuple[float, float, int]], beats: int) -> list[str | None]:
    """Feed ``(onset beat, length in beats, pitch)`` notes as live note-ons/offs; the chord named at the end
    of each beat, as a symbol."""
    events = sorted([(on * SECONDS_PER_BEAT, 1, p) for on, _, p in notes]
                    + [((on + length) * SECONDS_PER_BEAT, 0, p) for on, length, p in notes])
    named, i = [], 0
    for beat in range(beats):
        start, end = beat * SECONDS_PER_BEAT, (beat + 1) * SECONDS_PER_BEAT
        while i < len(events) and events[i][0] < end:
            t, on, pitch = events[i]
            if on:
                tracker.note_on(t, pitch, 80)
            else:
                tracker.note_off(t, pitch)
            i += 1
        chord = tracker.chord_for_beat(start, end)
        named.append(None if chord is None else chord.symbol)
    return named


def test_a_two_five_one_with_bass_and_rootless_voicings_is_named_beat_by_beat():
    notes = [
        (0, 4, 38), (0, 4, 65), (0, 4, 69), (0, 4, 72), (0, 4, 76),  # D under F A C E (Dm9, no root on top)
        (4, 4, 43), (4, 4, 65), (4, 4, 69), (4, 4, 71), (4, 4, 76),  # G under F A B E (G13)
        (8, 8, 36), (8, 8, 64), (8, 8, 67), (8, 8, 71), (8, 8, 74),  # C under E G B D (Cmaj9)
    ]
    named = play(ChordTracker(), notes, 16)
    assert named == ["Dm7"] * 4 + ["G7"] * 4 + ["Cmaj7"] * 8


def test_a_walking_bass_under_a_held_chord_does_not_change_it():
    # C E G held for two bars; the bass walks C D E F, then C; a melody passing note on an off-beat.
    notes = [(0, 8, 60), (0, 8, 64), (0, 8, 67), (0, 1, 48), (1, 1, 50), (2, 1, 52), (3, 1, 53),
             (4, 4, 48), (5.5, 0.5, 74)]
    tracker = ChordTracker()
    named = play(tracker, notes, 8)
    assert {symbol.split("/")[0] for symbol in named} == {"C"}  # C, or C/E over its third
    assert tracker.changes == 0
    # Without hysteresis the passing bass notes are heard as chords of their own.
    jumpy = play(ChordTracker(replace(TrackerConfig(), stay=0.0, held_stay=0.0)), notes, 8)
    assert {symbol.split("/")[0] for symbol in jumpy} != {"C"}


def test_both_hands_make_one_chord_and_the_bass_names_its_root():
    left_and_right = [(0, 1, 36), (0, 1, 43), (0, 1, 64), (0, 1, 70)]  # C G | E Bb
    assert play(ChordTracker(), left_and_right, 1) == ["C7"]
    a_minor = [(0, 1, 33), (0, 1, 60), (0, 1, 64), (0, 1, 67)]  # A | C E G: Am7, not C6
    assert play(ChordTracker(), a_minor, 1) == ["Am7"]
    first_inversion = [(0, 1, 40), (0, 1, 60), (0, 1, 67), (0, 1, 72)]  # E | C G C
    assert play(ChordTracker(), first_inversion, 1) == ["C/E"]


def test_before_any_note_there_is_no_chord_and_silence_keeps_the_last_one():
    tracker = ChordTracker()
    assert tracker.chord_for_beat(0.0, 0.5) is None
    assert play(tracker, [(1, 1, 45), (1, 1, 60), (1, 1, 64)], 4) == [None, "Am", "Am", "Am"]


def test_a_release_without_a_press_and_a_zero_velocity_note_on_are_harmless():
    tracker = ChordTracker()
    tracker.note_off(0.0, 61)
    tracker.note_on(0.0, 48, 90)
    tracker.note_on(0.0, 55, 90)
    tracker.note_on(0.0, 63, 90)
    tracker.note_on(0.2, 63, 0)  # a note-on of velocity 0 releases the Eb
    chord = tracker.chord_for_beat(0.0, 0.5)
    assert chord is not None and chord.root == 0


def test_the_key_prior_picks_the_chord_of_the_key_when_the_notes_are_ambiguous():
    # B D F alone: Bdim in C major; a diminished triad is also the top of G7.
    tracker = ChordTracker(key_scale=frozenset({0, 2, 4, 5, 7, 9, 11}))
    assert play(tracker, [(0, 1, 47), (0, 1, 62), (0, 1, 65)], 1) == ["Bdim"]


def test_one_beat_costs_well_under_a_millisecond():
    tracker = ChordTracker()
    for k in range(16):  # a few held notes and a running melody
        tracker.note_on(k * 0.25, 60 + (k * 7) % 24, 80)
        tracker.note_off(k * 0.25 + 0.2, 60 + (k * 7) % 24)
    tracker.note_on(0.0, 36, 80)
    costs = []
    for beat in range(200):
        started = time.perf_counter()
        tracker.chord_for_beat(beat * 0.5, beat * 0.5 + 0.5)
        costs.append(time.perf_counter() - started)
    costs.sort()
    assert costs[len(costs) // 2] < 1e-3  # median; typically 50-100 µs


def test_a_small_benchmark_run_prints_its_table(capsys):
    pytest.importorskip("music21")
    from musebot.bench import chords as bench

    report = bench.run(pieces=2)
    print(bench.table(report))
    results = report["results"]
    tracker, baseline = results["musebot tracker"], results["template matching (baseline)"]
    assert tracker["scored"] == baseline["scored"] > 50
    assert tracker["root_acc"] >= baseline["root_acc"]
    assert tracker["quality_acc"] > baseline["quality_acc"]
    assert tracker["root_acc"] > 0.8
    out = capsys.readouterr().out
    assert "| musebot tracker |" in out and "| template matching (baseline) |" in out
    with capsys.disabled():
        print("\n" + bench.table(report))


def test_the_benchmark_command_line(capsys):
    pytest.importorskip("music21")
    from musebot.bench import chords as bench

    assert bench.main(["--pieces", "0"]) == 2
    assert bench.main(["--pieces", "1", "--json"]) == 0
    assert '"root_acc"' in capsys.readouterr().out
