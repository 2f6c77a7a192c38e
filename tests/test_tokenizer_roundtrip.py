"""Round trips on real music and property tests: what goes in comes back, on the 1/16-beat grid."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from musebot.tokenizers import MIDITokenizer, load_score, save_score

REFERENCE_MIDI = sorted((Path(__file__).parent / "data" / "reference" / "midi").glob("*.mid"))


def expected_notes(score: list) -> Counter:
    """The input's notes as the tokenizer should keep them: (onset step, duration steps, channel, pitch,
    velocity), with the spec's quantisation, same-onset de-duplication and same-pitch overlap clipping."""
    tpb = score[0]
    kept: Counter = Counter()
    for track in score[1:129]:
        by_key: dict[tuple, dict[int, list]] = {}
        for e in track:
            if e[0] != "note":
                continue
            onset = round(16 * e[1] / tpb)
            duration = max(1, round(16 * e[2] / tpb))
            by_key.setdefault((e[3], e[4]), {})[onset] = [onset, duration, e[3], e[4], e[5]]
        for notes in by_key.values():
            ordered = sorted(notes.values())
            for note, following in zip(ordered, ordered[1:] + [None]):
                if following is not None:
                    note[1] = min(note[1], following[0] - note[0])
                if note[1] > 0:
                    kept[tuple(note)] += 1
    return kept


def decoded_notes(score: list, channel_map: dict[int, int] | None = None) -> Counter:
    back = {v: k for k, v in (channel_map or {}).items()}
    return Counter((e[1] // 30, e[2] // 30, back.get(e[3], e[3]), e[4], e[5])
                   for track in score[1:] for e in track if e[0] == "note")


def first_use_channel_map(score: list) -> dict[int, int]:
    """The optimise remapping: channels in order of first use -> 0..8, 10..15; drums stay 9."""
    order: list[int] = []
    for track in score[1:129]:
        for e in track:
            c = {"note": 3, "patch_change": 2, "control_change": 2}.get(e[0])
            if c is not None and e[c] not in order:
                order.append(e[c])
    with_notes = {e[3] for track in score[1:129] for e in track if e[0] == "note"}
    order.sort(key=lambda c: c not in with_notes)
    free = [c for c in range(16) if c != 9]
    mapping, i = {}, 0
    for c in order:
        if c == 9:
            mapping[9] = 9
        else:
            mapping[c] = free[i]
            i += 1
    return mapping


@pytest.mark.parametrize("path", REFERENCE_MIDI, ids=lambda p: p.stem)
@pytest.mark.parametrize("variant", ["v1", "v1o", "v2", "v2o"])
def test_round_trip_keeps_every_note(path: Path, variant: str):
    score = load_score(path)
    tok = MIDITokenizer.from_name(variant)
    back = tok.detokenize(tok.tokenize(score))
    mapping = first_use_channel_map(score) if tok.optimise else None
    got, want = decoded_notes(back, mapping), expected_notes(score)
    if tok.version == "v1":
        # Reference quirk (v1 only, reproduced for identical ids): in the setup at the start, chord notes of
        # one track with the same duration and channel collapse into one. Every other note must survive.
        first = min(n[0] for n in want)
        assert Counter({n: k for n, k in got.items() if n[0] != first}) == \
            Counter({n: k for n, k in want.items() if n[0] != first})
        assert {n[1:3] for n in got if n[0] == first} == {n[1:3] for n in want if n[0] == first}
    else:
        assert got == want


def test_music21_corpus_pieces_converted_now_round_trip(tmp_path: Path):
    """Music nobody here wrote, converted at test time: a Bach chorale and an Essen folk song."""
    music21 = pytest.importorskip("music21")
    for name in ("bach/bwv66.6", "bach/bwv269"):
        path = tmp_path / (name.replace("/", "_") + ".mid")
        music21.corpus.parse(name).write("midi", fp=str(path))
        score = load_score(path)
        assert sum(e[0] == "note" for tr in score[1:] for e in tr) > 100
        tok = MIDITokenizer("v2", optimise=True)
        rows = tok.tokenize(score)
        back = tok.detokenize(rows)
        assert decoded_notes(back, first_use_channel_map(score)) == expected_notes(score)
        # A chorale is diatonic: v2 writes a key signature on every part's track.
        assert any(r[0] == tok.vocab.event_ids["key_signature"] for r in rows)


def test_saved_scores_read_back_identically(tmp_path: Path):
    for path in REFERENCE_MIDI[:5]:
        tok = MIDITokenizer("v2", optimise=True)
        score = tok.detokenize(tok.tokenize(load_score(path)))
        save_score(score, tmp_path / "x.mid")
        again = load_score(tmp_path / "x.mid")
        assert tok.tokenize(again) == tok.tokenize(score)


# ------------------------------------------------------------------------------------------ property tests
notes_strategy = st.lists(
    st.tuples(
        st.integers(0, 480 * 120),  # onset tick (gaps over 127 beats are tested in test_bad_input)
        st.integers(0, 480 * 16),  # duration ticks (0: a zero-length note)
        st.sampled_from([0, 1, 2, 5, 9, 15]),  # channel
        st.integers(0, 127),  # pitch
        st.integers(1, 127),  # velocity
        st.integers(0, 2),  # track
    ),
    min_size=1, max_size=60,
)


def make_score(notes, tpb: int = 480) -> list:
    tracks: list[list] = [[["set_tempo", 0, 500000]], [], [], []]
    for onset, duration, channel, pitch, velocity, track in sorted(notes):
        tracks[track + 1].append(["note", onset, duration, channel, pitch, velocity])
    return [tpb, *tracks]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(notes=notes_strategy, variant=st.sampled_from(["v2", "v2o"]), tpb=st.sampled_from([96, 480, 1000]))
def test_property_rows_are_valid_time_ordered_and_round_trip(notes, variant, tpb):
    scale = tpb / 480
    score = make_score([(round(o * scale), round(d * scale), c, p, v, t) for o, d, c, p, v, t in notes], tpb)
    tok = MIDITokenizer.from_name(variant)
    rows = tok.tokenize(score)
    assert rows[0][0] == tok.vocab.bos_id and rows[-1][0] == tok.vocab.eos_id
    for row in rows[1:-1]:
        assert len(row) == 8 and all(0 <= x < tok.vocab_size for x in row)
        event = tok.row_to_event(row)
        assert event is not None and event[1] >= 0  # time1 is a forward delta
        assert tok.event_to_row(event) == row
    mapping = first_use_channel_map(score) if tok.optimise else None
    assert decoded_notes(tok.detokenize(rows), mapping) == expected_notes(score)


@settings(max_examples=40, deadline=None)
@given(notes=notes_strategy, variant=st.sampled_from(["v1o", "v2o"]))
def test_property_tokenize_is_stable_under_detokenize(notes, variant):
    """With optimise, tokenize(detokenize(rows)) == rows: the token form is a fixed point. (Without it, empty
    tracks collapse on the way back, so track numbers may change.)"""
    tok = MIDITokenizer.from_name(variant)
    rows = tok.tokenize(make_score(notes))
    assert tok.tokenize(tok.detokenize(rows)) == rows


@settings(max_examples=40, deadline=None)
@given(notes=notes_strategy, seed=st.integers(0, 2**32 - 1))
def test_property_augment_keeps_rows_valid_and_drums_in_place(notes, seed):
    import random

    tok = MIDITokenizer("v2", optimise=True)
    rows = tok.tokenize(make_score(notes))
    augmented = tok.augment(rows, rng=random.Random(seed))
    assert len(augmented) == len(rows)
    for before, after in zip(rows, augmented):
        a, b = tok.row_to_event(before), tok.row_to_event(after)
        assert (a is None) == (b is None)
        if a is not None and a[0] == "note":
            assert a[1:4] == b[1:4] and a[7] == b[7]  # timing and duration are never augmented
            assert (a[4] == 9) == (b[4] == 9)  # drums stay on channel 9, others never land there
            if a[4] == 9:
                assert a[5] == b[5]  # drum notes are not transposed


def test_transpose_rows_moves_melodic_notes_only_and_folds_off_range_pitches_by_octaves():
    tok = MIDITokenizer.from_name("v2o")
    score = [480, [["note", 0, 480, 0, 60, 90], ["note", 0, 480, 9, 36, 100], ["note", 480, 480, 1, 125, 80],
                   ["note", 960, 480, 1, 2, 80]]]
    rows = np.array(tok.tokenize(score))
    moved = tok.vocab.transpose_rows(rows, 5)
    notes = {(e[4], e[5]) for e in (tok.vocab.row_to_event(r) for r in moved) if e and e[0] == "note"}
    assert notes == {(0, 65), (9, 36), (1, 118), (1, 7)}  # 130 folds to 118; drums stay
    down = {(e[4], e[5]) for e in (tok.vocab.row_to_event(r) for r in tok.vocab.transpose_rows(rows, -5))
            if e and e[0] == "note"}
    assert down == {(0, 55), (9, 36), (1, 120), (1, 9)}  # -3 folds to 9
    assert (tok.vocab.transpose_rows(rows, 0) == rows).all() and rows is not moved
