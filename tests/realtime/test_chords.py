"""Chord symbols, charts, per-part pitch constraints from the chord, and the looper moving bars over changes."""

from __future__ import annotations

import pytest

from musebot.realtime.chords import (
    MAX_BARS,
    ChartError,
    ChordSyntaxError,
    load_chart_file,
    make_chord,
    parse_chart,
    parse_chord,
    pitch_class_name,
)
from musebot.realtime.harmony_loops import move_over_changes, move_to_chord, root_motion
from musebot.realtime.harmony_parts import (
    allowed_pitch_classes,
    chart_tonic,
    next_change,
    pitch_classes_at,
    strong_beat,
)
from musebot.realtime.roles import BarNote

C, Db, D, Eb, E, F, Gb, G, Ab, A, Bb, B = range(12)
C_MAJOR = frozenset({C, D, E, F, G, A, B})


def pcs(*classes: int) -> frozenset[int]:
    return frozenset(classes)


# symbol, canonical symbol, root, chord tones, written extensions (pitch classes)
FAMILIES = [
    ("C", "C", C, pcs(C, E, G), pcs()), ("Cmaj", "C", C, pcs(C, E, G), pcs()),
    ("Am", "Am", A, pcs(A, C, E), pcs()), ("Amin", "Am", A, pcs(A, C, E), pcs()),
    ("A-", "Am", A, pcs(A, C, E), pcs()), ("G7", "G7", G, pcs(G, B, D, F), pcs()),
    ("Fmaj7", "Fmaj7", F, pcs(F, A, C, E), pcs()), ("FM7", "Fmaj7", F, pcs(F, A, C, E), pcs()),
    ("FΔ", "Fmaj7", F, pcs(F, A, C, E), pcs()), ("Dm7", "Dm7", D, pcs(D, F, A, C), pcs()),
    ("D-7", "Dm7", D, pcs(D, F, A, C), pcs()), ("Bm7b5", "Bm7b5", B, pcs(B, D, F, A), pcs()),
    ("Bø", "Bm7b5", B, pcs(B, D, F, A), pcs()), ("Bdim", "Bdim", B, pcs(B, D, F), pcs()),
    ("Bo", "Bdim", B, pcs(B, D, F), pcs()), ("C#dim7", "Dbdim7", Db, pcs(Db, E, G, Bb), pcs()),
    ("C#o7", "Dbdim7", Db, pcs(Db, E, G, Bb), pcs()), ("Eaug", "Eaug", E, pcs(E, Ab, C), pcs()),
    ("E+", "Eaug", E, pcs(E, Ab, C), pcs()), ("Dsus2", "Dsus2", D, pcs(D, E, A), pcs()),
    ("Dsus4", "Dsus4", D, pcs(D, G, A), pcs()), ("F6", "F6", F, pcs(F, A, C, D), pcs()),
    ("Gm6", "Gm6", G, pcs(G, Bb, D, E), pcs()), ("C9", "C9", C, pcs(C, E, G, Bb), pcs(D)),
    ("C11", "C11", C, pcs(C, E, G, Bb), pcs(D, F)), ("C13", "C13", C, pcs(C, E, G, Bb), pcs(D, A)),
    ("Dm9", "Dm9", D, pcs(D, F, A, C), pcs(E)), ("Ebmaj9", "Ebmaj9", Eb, pcs(Eb, G, Bb, D), pcs(F)),
    ("G7sus4", "G7sus4", G, pcs(G, C, D, F), pcs()), ("Cadd9", "Cadd9", C, pcs(C, E, G), pcs(D)),
    ("G7b5", "G7b5", G, pcs(G, B, Db, F), pcs()), ("G7#5", "G7#5", G, pcs(G, B, Eb, F), pcs()),
    ("G7b9", "G7b9", G, pcs(G, B, D, F), pcs(Ab)), ("G7#9", "G7#9", G, pcs(G, B, D, F), pcs(Bb)),
    ("G7#11", "G7#11", G, pcs(G, B, D, F), pcs(Db)), ("G7b13", "G7b13", G, pcs(G, B, D, F), pcs(Eb)),
    ("G7(b9,#11)", "G7b9#11", G, pcs(G, B, D, F), pcs(Ab, Db)),
    ("G7(b9, b13)", "G7b9b13", G, pcs(G, B, D, F), pcs(Ab, Eb)),
    ("G7alt", "G7alt", G, pcs(G, B, D, F), pcs(Ab, Bb, Db, Eb)),
    ("C/E", "C/E", C, pcs(C, E, G), pcs()), ("Am7/G", "Am7/G", A, pcs(A, C, E, G), pcs()),
    ("D/F#", "D/F#", D, pcs(D, Gb, A), pcs()), ("C7/Bb", "C7/Bb", C, pcs(C, E, G, Bb), pcs()),
    ("Cm(maj7)", "Cmmaj7", C, pcs(C, Eb, G, B), pcs()), ("C6/9", "C69", C, pcs(C, E, G, A), pcs(D)),
    ("C5", "C5", C, pcs(C, G), pcs()), ("Bb13#11", "Bb13#11", Bb, pcs(Bb, D, F, Ab), pcs(C, E, G)),
    ("N.C.", "N.C.", None, pcs(), pcs()),
]


@pytest.mark.parametrize(("symbol", "canonical", "root", "tones", "extensions"), FAMILIES)
def test_every_symbol_family_parses_to_its_chord_tones_and_reads_back(symbol, canonical, root, tones,
                                                                         extensions):
    chord = parse_chord(symbol)
    assert chord.root == root
    assert chord.tones == tones
    assert chord.extension_classes == extensions
    assert chord.symbol == canonical
    assert parse_chord(chord.symbol) == chord  # the canonical form is a round trip
    assert chord.tones <= chord.scale or chord.is_no_chord
    assert chord.extension_classes <= chord.tensions


def test_the_slash_bass_is_the_chords_bass_and_the_root_stays():
    chord = parse_chord("Am7/G")
    assert (chord.root, chord.bass) == (A, G)
    assert parse_chord("C/E").bass == E and parse_chord("C").bass == C


@pytest.mark.parametrize(("symbol", "scale"), [
    ("Cmaj7", pcs(C, D, E, F, G, A, B)),  # ionian
    ("Dm7", pcs(D, E, F, G, A, B, C)),  # dorian
    ("G7", pcs(G, A, B, C, D, E, F)),  # mixolydian
    ("Bm7b5", pcs(B, C, D, E, F, G, A)),  # locrian
    ("E7b9", pcs(E, F, Ab, A, B, C, D)),  # phrygian dominant (V of A minor)
    ("G7alt", pcs(G, Ab, Bb, B, Db, Eb, F, D)),  # altered, keeping the written fifth
    ("F7#11", pcs(F, G, A, B, C, D, Eb)),  # lydian dominant
    ("Cdim7", pcs(C, D, Eb, F, Gb, Ab, A, B)),  # whole-half diminished
    ("Caug", pcs(C, D, E, Gb, Ab, Bb)),  # whole tone
])
def test_chord_scales_follow_chord_scale_theory(symbol, scale):
    assert parse_chord(symbol).scale == scale


def test_tensions_are_the_9ths_11ths_13ths_that_do_not_rub_a_semitone_above_a_chord_tone():
    assert parse_chord("Cmaj7").tensions == pcs(D, A)  # F, a semitone above E, is an avoid note
    assert parse_chord("Dm7").tensions == pcs(E, G, B)
    assert parse_chord("G7").tensions == pcs(A, E)
    assert parse_chord("Bm7b5").tensions == pcs(E, G)  # C rubs against B


def test_transposed_chords_move_root_bass_and_every_pitch_class():
    chord = parse_chord("Am7/G").transposed(3)
    assert chord.symbol == "Cm7/Bb" and chord.tones == parse_chord("Cm7/Bb").tones
    assert parse_chord("F#m7b5").transposed(-6) == parse_chord("Cm7b5")
    assert parse_chord("N.C.").transposed(5).is_no_chord
    assert make_chord(G, "7", B) == parse_chord("G7/B")


@pytest.mark.parametrize("symbol", ["H7", "Cxyz", "C7b10", "C/", "C/H", "Q", "Cmaj7/9"])
def test_an_unknown_symbol_is_an_error_naming_it(symbol):
    with pytest.raises(ChordSyntaxError, match=repr(symbol).replace("(", r"\(").replace("/", "/")):
        parse_chord(symbol)


def test_a_bad_chart_symbol_is_named_with_its_bar_and_position():
    with pytest.raises(ChordSyntaxError) as caught:
        parse_chart("Dm7 | G7 | Cmaj7 Xm7 | %")
    assert (caught.value.symbol, caught.value.bar, caught.value.position) == ("Xm7", 3, 2)
    assert "bar 3, chord 2" in str(caught.value)
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize(("text", "error"), [
    ("", ChartError), ("  |  | ", ChartError), ("% | C", ChordSyntaxError), ("C | | G", ChordSyntaxError),
    ("C / / | G", ChordSyntaxError), ("/ C | G", ChordSyntaxError),
])
def test_empty_and_malformed_charts_are_clear_errors(text, error):
    with pytest.raises(error):
        parse_chart(text)


def test_the_issue_chart_loops_with_its_repeat_and_split_bar():
    chart = parse_chart("Cm7 | F7 | Bbmaj7 | Ebmaj7 | Am7b5 D7 | Gm6 | %")
    assert chart.bar_count == 7 and chart.length_beats == 28
    assert chart.chord_at(0) == (parse_chord("Cm7"), 0.0, 4.0)
    assert chart.chord_at(16.5) == (parse_chord("Am7b5"), 16.0, 18.0)
    assert chart.chord_at(19.9) == (parse_chord("D7"), 18.0, 20.0)
    assert chart.chord_at(27) == (parse_chord("Gm6"), 20.0, 28.0)  # the repeated bar joins its span
    assert chart.chord_at(28 + 5) == (parse_chord("F7"), 32.0, 36.0)  # second pass
    assert chart.chord_at(-1) == (parse_chord("Gm6"), -8.0, 0.0)
    assert chart.bar_at(30) == 0 and chart.bar_at(17) == 4
    assert parse_chart(chart.text()) == chart
    assert chart.text() == "Cm7 | F7 | Bbmaj7 | Ebmaj7 | Am7b5 D7 | Gm6 | %"


def test_beat_marks_comments_line_breaks_and_other_meters():
    chart = parse_chart("# blues ending\n| C7 / A7 / | Dm7 G7 |\n| C7(b9, #11) / / F7 |  # turnaround")
    assert chart.bar_count == 3
    assert chart.chord_at(1.5)[0] == parse_chord("C7")
    assert chart.chord_at(2)[0] == parse_chord("A7")
    assert chart.chord_at(8)[1:] == (8.0, 11.0) and chart.chord_at(11)[0] == parse_chord("F7")
    assert parse_chart(chart.text()) == chart
    waltz = parse_chart("Cmaj7 | A7 | Dm7 G7", beats_per_bar=3)
    assert waltz.chord_at(7.5) == (parse_chord("G7"), 7.5, 9.0)
    assert waltz.chord_at(9)[0] == parse_chord("Cmaj7")


def test_a_transposed_chart_moves_every_chord():
    chart = parse_chart("Dm7 | G7 | Cmaj7 | %").transposed(-2)
    assert chart.text() == "Cm7 | F7 | Bbmaj7 | %"


def test_a_thousand_bar_chart_works_and_the_limit_is_an_error():
    chart = parse_chart(" | ".join(["Dm7 G7", "Cmaj7"] * 500))
    assert chart.bar_count == 1000
    assert chart.chord_at(3998.0) == (parse_chord("Cmaj7"), 3996.0, 4000.0)
    assert chart.chord_at(4000.0 + 2.5)[0] == parse_chord("G7")
    with pytest.raises(ChartError, match=str(MAX_BARS)):
        parse_chart(" | ".join(["C"] * (MAX_BARS + 1)))


def test_a_text_chart_file_and_a_missing_file(tmp_path):
    path = tmp_path / "tune.txt"
    path.write_text("# autumn\nCm7 | F7 | Bbmaj7 | Ebmaj7\nAm7b5 | D7b9 | Gm6 | %\n")
    chart = load_chart_file(path)
    assert chart.bar_count == 8 and chart.chord_at(20)[0] == parse_chord("D7b9")
    with pytest.raises(ChartError, match="no such chart file"):
        load_chart_file(tmp_path / "nothing.txt")


def test_a_musicxml_lead_sheet_gives_its_chord_symbols_per_measure(tmp_path):
    music21 = pytest.importorskip("music21")
    part = music21.stream.Part()
    for k, (figure, pitch) in enumerate([("Dm7", "F4"), ("G7", "B4"), ("Cmaj7", "E4"), (None, "G4")]):
        measure = music21.stream.Measure(number=k + 1)
        if k == 0:
            measure.insert(0, music21.meter.TimeSignature("4/4"))
        if figure:
            measure.insert(0, music21.harmony.ChordSymbol(figure))
        measure.append(music21.note.Note(pitch, quarterLength=4))
        part.append(measure)
    path = tmp_path / "sheet.musicxml"
    music21.stream.Score([part]).write("musicxml", fp=str(path))
    chart = load_chart_file(path)
    assert chart.bar_count == 4 and chart.beats_per_bar == 4
    assert [chart.chord_at(4 * k)[0].symbol for k in range(4)] == ["Dm7", "G7", "Cmaj7", "Cmaj7"]


# ---- per-part constraints ---------------------------------------------------------------------------
def test_each_part_gets_its_pitch_classes_from_the_chord():
    g7 = parse_chord("G7")
    assert allowed_pitch_classes(g7, "bass", strong=True) == pcs(G, B, D, F)
    assert allowed_pitch_classes(g7, "bass", strong=False) == g7.scale  # passing notes between
    assert allowed_pitch_classes(g7, "chords") == pcs(G, B, D, F, A, E)  # chord tones, 9th and 13th
    assert allowed_pitch_classes(g7, "melody") == g7.scale == allowed_pitch_classes(g7, "pad")
    assert allowed_pitch_classes(g7, "drums") is None
    assert allowed_pitch_classes(parse_chord("N.C."), "bass", key_scale=C_MAJOR) == C_MAJOR
    assert allowed_pitch_classes(None, "melody") is None
    with pytest.raises(ValueError, match="unknown role"):
        allowed_pitch_classes(g7, "kazoo")


def test_with_a_key_the_scale_stays_in_key_but_never_loses_a_chord_tone():
    a7 = parse_chord("A7")  # V of ii in C major: C# is the chord's, F# is neither the key's nor needed
    melody = allowed_pitch_classes(a7, "melody", key_scale=C_MAJOR)
    assert Db in melody and Gb not in melody and melody <= C_MAJOR | a7.tones
    assert allowed_pitch_classes(parse_chord("A7b9"), "chords", key_scale=C_MAJOR) >= {Bb}  # written b9


def test_strong_beats_are_chord_changes_downbeats_and_the_middle_of_an_even_bar():
    assert strong_beat(0.0, span_start=0.0) and strong_beat(2.0, span_start=0.0)
    assert not strong_beat(1.0, span_start=0.0) and not strong_beat(2.5, span_start=0.0)
    assert strong_beat(3.0, span_start=3.0)  # a chord change on beat 4
    assert not strong_beat(1.5, span_start=0.0, beats_per_bar=3)


def test_over_a_chart_the_bass_lands_on_the_new_chord_at_each_change():
    chart = parse_chart("Dm7 | G7 | Cmaj7 | %")
    assert pitch_classes_at(chart, "bass", 4.0) == parse_chord("G7").tones
    assert pitch_classes_at(chart, "bass", 5.0) == parse_chord("G7").scale
    assert pitch_classes_at(chart, "bass", 16.0 + 8.0, bar_start=16.0) == parse_chord("Cmaj7").tones
    assert next_change(chart, 5.0) == 8.0 and next_change(chart, 9.0) == 16.0


# ---- the looper over changes -------------------------------------------------------------------------
def test_a_bar_moved_to_another_chord_keeps_its_rhythm_and_lands_strong_beats_on_chord_tones():
    # An arpeggio with passing notes over Cmaj7, replayed over A7b9 (root motion down a minor third).
    bar = [BarNote(0.0, 1.0, 60, 90), BarNote(1.0, 0.5, 64, 70), BarNote(1.5, 0.5, 65, 60),
           BarNote(2.0, 1.0, 67, 80), BarNote(3.0, 0.5, 71, 75), BarNote(3.5, 0.5, 74, 64)]
    target = parse_chord("A7b9")
    moved = move_to_chord(bar, parse_chord("Cmaj7"), target, "melody")
    assert [(n.onset, n.duration, n.velocity) for n in moved] == [(n.onset, n.duration, n.velocity) for n in bar]
    for note in moved:
        if strong_beat(note.onset, 0.0):
            assert note.pitch % 12 in target.tones
        assert note.pitch % 12 in target.scale
    assert [n.pitch for n in moved][:2] == [57, 61]  # root to root, third to third, 3 semitones down
    assert all(abs(a.pitch - b.pitch) <= 6 for a, b in zip(moved, bar))


def test_a_voicing_moves_by_chord_function_and_drums_stay():
    voicing = [BarNote(0.0, 4.0, p) for p in (60, 64, 67, 71)]  # Cmaj7
    moved = move_to_chord(voicing, parse_chord("Cmaj7"), parse_chord("Dm7"), "chords")
    assert sorted(n.pitch for n in moved) == [62, 65, 69, 72]  # D F A C, not D F# A C#
    drums = [BarNote(0.0, 0.25, 36), BarNote(1.0, 0.25, 38)]
    assert move_to_chord(drums, parse_chord("C"), parse_chord("F#"), "drums") == drums
    assert root_motion(parse_chord("C"), parse_chord("Bb")) == -2 and root_motion(parse_chord("C"),
                                                                                  parse_chord("F#")) == 6


def test_a_bass_line_takes_the_new_slash_bass_and_a_split_bar_follows_each_chord():
    line = [BarNote(0.0, 1.0, 36), BarNote(1.0, 1.0, 40), BarNote(2.0, 1.0, 43), BarNote(3.0, 1.0, 38)]
    moved = move_to_chord(line, parse_chord("C"), parse_chord("F/A"), "bass")
    assert moved[0].pitch % 12 == A and moved[2].pitch % 12 in parse_chord("F/A").tones
    two = move_over_changes(line, [(0.0, 4.0, parse_chord("C"))],
                            [(0.0, 2.0, parse_chord("Dm7")), (2.0, 4.0, parse_chord("G7"))], "bass")
    assert two[0].pitch % 12 == D  # the bass note C was the root: D, the root of Dm7
    assert two[2].pitch % 12 == D  # G was the fifth of C: D, the fifth of G7
    assert [n.onset for n in two] == [n.onset for n in line]


@pytest.mark.parametrize("text, key", [
    ("C7 | F7 | C7 | % | F7 | % | C7 | % | G7 | F7 | C7 | G7", "C"),  # ends on its turnaround's V
    ("F7 | Bb7 | F7 | % | Bb7 | % | F7 | D7 | Gm7 | C7 | F7 D7 | Gm7 C7", "F"),
    ("Dm7 | G7 | Cmaj7 | %", "C"),
    ("Cm7 F7 | Bbmaj7 G7 | Cm7 F7 | Bbmaj7", "Bb"),
    ("Cm7 | F7 | Bbmaj7 | Ebmaj7 | Am7b5 D7 | Gm6 | %", "Bb"),  # G minor: its relative major
    ("Am | Dm | E7 | Am", "C"),
    ("Dm7b5 | G7alt | Cm6 | % | Fm7 | Bb7 | Ebmaj7 | Dm7b5 G7b9", "Eb"),  # C minor, altered dominants
    ("G | D | Em | C", "G"),
    ("Bbmaj7 G7 | Cm7 F7 | Dm7 G7 | Cm7 F7 | Fm7 Bb7 | Ebmaj7 Ab7 | Dm7 G7 | Cm7 F7", "Bb"),
])
def test_a_chart_s_key_comes_from_all_its_chords_by_time_not_from_its_last_chord(text, key):
    # A key-normalised model hears the chart moved from this key to C: a blues in C must not be heard in G.
    assert pitch_class_name(chart_tonic(parse_chart(text))) == key
