"""musebot's tokenizers give exactly the ids of SkyTNT's reference code (spec 2.1 to 2.9)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from musebot.tokenizers import MIDITokenizer, load_score

REFERENCE = Path(__file__).parent / "data" / "reference"
with gzip.open(REFERENCE / "skytnt_tokens.json.gz") as _f:
    TOKENS = json.loads(_f.read())
CASES = [(entry["name"], variant) for entry in TOKENS["files"].values() for variant in ("v1", "v1o", "v2", "v2o")]


def _entry(name: str) -> dict:
    return next(e for e in TOKENS["files"].values() if e["name"] == name)


def test_vocabulary_sizes_match_the_reference():
    assert MIDITokenizer("v1").vocab_size == TOKENS["tokenizer"]["v1"] == 3239
    assert MIDITokenizer("v2").vocab_size == TOKENS["tokenizer"]["v2"] == 3406


def test_v2_id_ranges_are_those_of_the_spec():
    vocab = MIDITokenizer("v2").vocab
    assert vocab.event_ids == {"note": 3, "patch_change": 4, "control_change": 5, "set_tempo": 6,
                               "time_signature": 7, "key_signature": 8}
    spans = {kind: vocab.parameter_range(kind) for kind in vocab.event_parameters}
    assert spans["time1"] == (9, 137) and spans["duration"] == (153, 2201)
    assert spans["bpm"] == (2985, 3369) and spans["mi"] == (3404, 3406)
    v1 = MIDITokenizer("v1").vocab
    assert v1.parameter_range("time1") == (7, 135) and v1.parameter_range("bpm") == (2983, 3239)


def test_worked_examples_of_spec_2_3():
    tok = MIDITokenizer("v2")
    # note, time1=0, time2=4, track=1, channel=0, pitch=60, velocity=100, duration=8 (half a beat)
    assert tok.event_to_row(["note", 0, 4, 1, 0, 60, 100, 8]) == [3, 9, 141, 2202, 2329, 2405, 2573, 161]
    # set_tempo 120 bpm at the start on track 0
    assert tok.event_to_row(["set_tempo", 0, 0, 0, 120]) == [6, 9, 137, 2201, 3105, 0, 0, 0]
    assert tok.vocab.parameter_id("pitch", 60) == 2405
    assert tok.vocab.parameter_id("channel", 9) == 2338
    assert tok.vocab.parameter_id("time2", 0) == 137


def test_a_half_note_at_120_bpm_tokenizes_as_the_spec_says():
    """A one-note score: tempo, default piano, detected key C (one pitch class is not diatonic: no key)."""
    score = [480, [["set_tempo", 0, 500000]], [["note", 480 + 120, 240, 0, 60, 100]]]
    rows = MIDITokenizer("v2", optimise=True).tokenize(score)
    assert rows[0] == [1, 0, 0, 0, 0, 0, 0, 0] and rows[-1] == [2, 0, 0, 0, 0, 0, 0, 0]
    assert [6, 9, 137, 2201, 3105, 0, 0, 0] in rows
    assert [4, 9, 137, 2202, 2329, 2601, 0, 0] in rows  # default instrument: piano on channel 0, track 1
    assert rows[-2] == [3, 10, 141, 2202, 2329, 2405, 2573, 161]  # one beat later, step 4, half a beat long


@pytest.mark.parametrize("name,variant", CASES)
def test_ids_equal_the_reference(name: str, variant: str):
    entry = _entry(name)
    score = load_score(REFERENCE / "midi" / name)
    assert MIDITokenizer.from_name(variant).tokenize(score) == entry[variant]


@pytest.mark.parametrize("name,variant", CASES)
def test_detokenize_gives_the_reference_notes(name: str, variant: str):
    entry = _entry(name)
    score = MIDITokenizer.from_name(variant).detokenize(entry[variant])
    assert score[0] == 480
    notes = sorted([e[1], e[2], e[3], e[4], e[5], i] for i, track in enumerate(score[1:])
                   for e in track if e[0] == "note")
    assert notes == entry[f"{variant}_notes"]


def test_to_dict_is_the_reference_layout(reference_dir):
    config = json.loads((reference_dir / "sky_shared" / "config.json").read_text())
    assert MIDITokenizer("v2", optimise=True).to_dict() == config["tokenizer"]
    assert MIDITokenizer.from_dict(config["tokenizer"]).name == "v2o"
