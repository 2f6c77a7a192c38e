"""The six music metrics on hand-made pieces whose values can be worked out on paper."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from musebot.data.build import BuildOptions, build_dataset
from musebot.data.dataset import TokenDataset, row_onsets
from musebot.eval.evaluate import notes_from_rows, split_prompt
from musebot.eval.markov import MarkovChain
from musebot.eval.metrics import (
    NoteList,
    compute_all,
    groove_consistency,
    grooving_pattern_similarity,
    notes_from_score,
    pitch_class_entropy,
    pitch_class_histogram_entropy,
    scale_consistency,
)
from musebot.tokenizers import MIDITokenizer

BAR = 64  # 4/4 on the 16-steps-per-beat grid


def notes(*events: tuple[int, int], bar_steps: int = BAR) -> NoteList:
    """Build a NoteList from (onset step, pitch) pairs."""
    onsets = np.array([e[0] for e in events], dtype=np.int64)
    pitches = np.array([e[1] for e in events], dtype=np.int64)
    return NoteList(onsets, pitches, bar_steps)


def test_h1_is_the_mean_entropy_of_each_bars_pitch_classes():
    # Bar 0: a C major triad (3 equally likely classes); bar 1: a lone C (entropy 0).
    piece = notes((0, 60), (16, 64), (32, 67), (BAR, 72))
    assert pitch_class_histogram_entropy(piece, 1) == pytest.approx((math.log2(3) + 0.0) / 2)


def test_h4_on_a_two_bar_piece_uses_one_window_of_all_bars():
    # w > n_bars -> w = n_bars = 2: histogram C:2 E:1 G:1 -> entropy of (1/2, 1/4, 1/4) = 1.5 bits.
    piece = notes((0, 60), (16, 64), (32, 67), (BAR, 48))
    assert pitch_class_histogram_entropy(piece, 4) == pytest.approx(1.5)


def test_empty_bars_are_skipped_in_h1():
    # Bar 0: C (0 bits); bar 1 silent (skipped); bar 2: C and D (1 bit) -> mean 0.5.
    piece = notes((0, 60), (2 * BAR, 60), (2 * BAR + 16, 62))
    assert pitch_class_histogram_entropy(piece, 1) == pytest.approx(0.5)


def test_h4_slides_one_bar_at_a_time():
    # Five bars, each one note: C C C C D. Windows: CCCC (0 bits), CCCD (entropy of 3/4, 1/4).
    piece = notes(*[(i * BAR, 60) for i in range(4)], (4 * BAR, 62))
    quarter = -(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25))
    assert pitch_class_histogram_entropy(piece, 4) == pytest.approx(quarter / 2)


def test_gs_divides_by_the_64_positions_of_the_real_grid():
    # Quarter notes in bar 0, half notes in bar 1: onsets differ at steps 16 and 48 -> 1 - 2/64.
    piece = notes((0, 60), (16, 60), (32, 60), (48, 60), (BAR, 60), (BAR + 32, 60))
    assert grooving_pattern_similarity(piece) == pytest.approx(1 - 2 / 64)


def test_gs_averages_all_pairs_of_bars():
    # Bars A, A, B where A and B differ at 4 positions: pairs (A,A)=1, (A,B)=(A,B)=1-4/64.
    a = [0, 16, 32, 48]
    b = [8, 24, 40, 56]
    piece = notes(*[(s, 60) for s in a], *[(BAR + s, 60) for s in a], *[(2 * BAR + s, 60) for s in b])
    expected = (1 + 2 * (1 - 8 / 64)) / 3
    assert grooving_pattern_similarity(piece) == pytest.approx(expected)


def test_gs_subsamples_pairs_but_stays_in_range():
    rng = np.random.default_rng(1)
    piece = notes(*[(int(s), 60) for s in rng.integers(0, 100 * BAR, 600)])
    value = grooving_pattern_similarity(piece, max_pairs=1000)
    assert 0.0 <= value <= 1.0
    # 100 bars -> 4950 pairs; a different sample of 1,000 moves the mean only a little.
    assert value == pytest.approx(grooving_pattern_similarity(piece, max_pairs=1000, seed=7), abs=0.01)


def test_pitch_class_entropy_of_a_chromatic_scale_is_log2_12():
    piece = notes(*[(i * 4, 60 + i) for i in range(12)])
    assert pitch_class_entropy(piece) == pytest.approx(math.log2(12))


def test_pitch_class_entropy_ignores_octaves():
    piece = notes((0, 48), (4, 60), (8, 72), (12, 84))
    assert pitch_class_entropy(piece) == pytest.approx(0.0)


def test_scale_consistency_counts_the_notes_of_the_best_scale():
    # A C major scale plus one F#: no major or minor scale holds all 8, C major (or G major) holds 7.
    c_major = [60, 62, 64, 65, 67, 69, 71]
    piece = notes(*[(i * 16, p) for i, p in enumerate(c_major + [66])])
    assert scale_consistency(piece) == pytest.approx(7 / 8)


def test_scale_consistency_of_a_minor_melody_is_one():
    a_harmonic_minor_without_g_sharp = [57, 59, 60, 62, 64, 65, 67]
    piece = notes(*[(i * 16, p) for i, p in enumerate(a_harmonic_minor_without_g_sharp)])
    assert scale_consistency(piece) == 1.0


def test_groove_consistency_compares_adjacent_bars_only():
    # Bars A, A, B: distances 0 and 8/64 -> 1 - mean = 1 - 4/64.
    a = [0, 16, 32, 48]
    b = [8, 24, 40, 56]
    piece = notes(*[(s, 60) for s in a], *[(BAR + s, 60) for s in a], *[(2 * BAR + s, 60) for s in b])
    assert groove_consistency(piece) == pytest.approx(1 - 4 / 64)


def test_short_pieces_give_nan_not_an_error():
    one_bar = notes((0, 60), (16, 62))
    assert math.isnan(grooving_pattern_similarity(one_bar))
    assert math.isnan(groove_consistency(one_bar))
    empty = notes()
    assert all(math.isnan(v) for v in compute_all(empty).values())


def test_score_reading_uses_the_time_signature_and_leaves_drums_out():
    # 480 ticks per beat, 3/4: a bar is 3 beats = 48 steps; the drum note on channel 9 is not a pitch.
    score = [
        480,
        [["time_signature", 0, 3, 2, 24, 8]],
        [["note", 0, 480, 0, 60, 90], ["note", 1440, 480, 0, 62, 90], ["note", 0, 120, 9, 36, 100]],
    ]
    piece = notes_from_score(score)
    assert piece.bar_steps == 48
    assert piece.onsets.tolist() == [0, 48]
    assert piece.pitches.tolist() == [60, 62]
    assert piece.n_bars == 2


def test_window_shifts_onsets_to_the_window_start():
    piece = notes((0, 60), (BAR, 62), (2 * BAR + 3, 64))
    tail = piece.window(BAR)
    assert tail.onsets.tolist() == [0, BAR + 3]
    assert tail.pitches.tolist() == [62, 64]


# ---- the Markov baseline and the evaluation protocol -------------------------------------------------------


def _note_row(vocab, time1: int, time2: int, pitch: int, channel: int = 0) -> list[int]:
    return vocab.event_to_row(["note", time1, time2, 1, channel, pitch, 90, 8])


def test_markov_chain_replays_the_only_transition_it_has_seen():
    vocab = MIDITokenizer("v2", True).vocab
    c, e, g = (np.array(_note_row(vocab, 1, 0, p)) for p in (60, 64, 67))
    chain = MarkovChain.fit([np.stack([c, e, g, c, e, g])], vocab.eos_id)
    assert chain.n_states == 3
    rng = np.random.default_rng(0)
    out = chain.continue_rows(np.stack([c]), 5, rng)
    # C is always followed by E, E by G, G by C: the chain walks the arpeggio.
    assert [int(r[5]) - vocab.parameter_offsets["pitch"] for r in out] == [64, 67, 60, 64, 67]


def test_markov_chain_samples_in_proportion_to_counts_and_backs_off_for_unseen_rows():
    vocab = MIDITokenizer("v2", True).vocab
    c, d, e = (np.array(_note_row(vocab, 1, 0, p)) for p in (60, 62, 64))
    # After C: D three times, E once.
    chain = MarkovChain.fit([np.stack([c, d, c, d, c, d, c, e])], vocab.eos_id)
    rng = np.random.default_rng(1)
    draws = [int(chain.next_row(c, rng)[5]) - vocab.parameter_offsets["pitch"] for _ in range(2000)]
    assert draws.count(62) / len(draws) == pytest.approx(0.75, abs=0.04)
    unseen = np.array(_note_row(vocab, 1, 0, 100))
    assert chain.next_row(unseen, rng).tolist() in [c.tolist(), d.tolist(), e.tolist()]


def test_rows_become_notes_on_the_grid_without_drums():
    vocab = MIDITokenizer("v2", True).vocab
    rows = np.array([vocab.special_row(vocab.bos_id), _note_row(vocab, 0, 0, 60), _note_row(vocab, 1, 8, 62),
                     _note_row(vocab, 0, 8, 36, channel=9)])
    notes = notes_from_rows(rows, vocab, 64)
    assert notes.onsets.tolist() == [0, 24]
    assert notes.pitches.tolist() == [60, 62]


def test_the_prompt_is_every_event_before_the_prompt_bars(tmp_path):
    build_dataset([str(Path(__file__).parent / "data" / "reference" / "midi" / "bach_bwv29.8.mid")],
                  tmp_path / "ds", BuildOptions(workers=1), progress=False)
    rows = TokenDataset(tmp_path / "ds").piece(0)
    vocab = MIDITokenizer("v2", True).vocab
    n_prompt, bar_steps = split_prompt(rows, vocab, 2)
    onsets = row_onsets(rows, vocab)
    assert bar_steps == 48  # this chorale is in 3/4
    assert onsets[n_prompt - 1] < 2 * bar_steps <= onsets[n_prompt]


@pytest.fixture(scope="module")
def eval_setup(tmp_path_factory):
    """A dataset of the reference pieces with a large test split, and an untrained tiny model in ONNX."""
    import torch

    from musebot.export import export_onnx
    from musebot.models import MIDIModel, MIDIModelConfig

    root = tmp_path_factory.mktemp("eval")
    build_dataset([str(Path(__file__).parent / "data" / "reference" / "midi")], root / "data",
                  BuildOptions(workers=1, test_fraction=0.4), progress=False)
    torch.manual_seed(0)
    export_onnx(MIDIModel(MIDIModelConfig.from_name("tv2o-tiny")).eval(), root / "model")
    return root


def test_eval_command_scores_real_model_and_markov_continuations(eval_setup, capsys):
    import json

    from musebot.cli import main

    root = eval_setup
    rc = main(["eval", "--model", str(root / "model"), "--data", str(root / "data"), "--prompt-bars", "2",
               "--bars", "2", "--n-pieces", "3", "--json", "--plot", str(root / "eval.png"), "--no-loss"])
    assert rc == 0
    result = json.loads(capsys.readouterr().out)
    assert len(result["pieces"]) == 3
    assert set(result["mean"]) == {"real", "model", "markov"}
    assert "16 steps per beat" in result["grid"]
    # The real column is the metrics of the pieces' own bars 3-4, recomputed here from the dataset.
    data = TokenDataset(root / "data")
    vocab = MIDITokenizer("v2", True).vocab
    names = {p["name"]: i for i, p in enumerate(data.pieces)}
    h1 = []
    for name in result["pieces"]:
        rows = data.piece(names[name])
        _, bar_steps = split_prompt(rows, vocab, 2)
        notes = notes_from_rows(rows, vocab, bar_steps).window(2 * bar_steps, 4 * bar_steps)
        h1.append(pitch_class_histogram_entropy(notes, 1))
    assert result["mean"]["real"]["H1"] == pytest.approx(float(np.nanmean(h1)))
    assert (root / "eval.png").stat().st_size > 10_000


def test_eval_without_a_dataset_is_a_clear_error(eval_setup, tmp_path, capsys):
    from musebot.cli import main

    assert main(["eval", "--model", str(eval_setup / "model"), "--data", str(tmp_path)]) == 2
    assert "not a musebot dataset" in capsys.readouterr().err
