"""Building a token dataset: real MIDI files in, a compact split dataset out; bad input gives clear errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from musebot.cli import main
from musebot.data.build import BuildOptions, build_dataset, key_shift
from musebot.data.dataset import DatasetError, TokenDataset, row_onsets
from musebot.tokenizers import MIDITokenizer, load_score

REFERENCE_MIDI = Path(__file__).parent / "data" / "reference" / "midi"


@pytest.fixture()
def midi_folder(tmp_path: Path) -> Path:
    """The 22 reference pieces, one duplicated under another name, plus two corrupt files."""
    folder = tmp_path / "midi"
    shutil.copytree(REFERENCE_MIDI, folder)
    shutil.copy(folder / "bach_bwv29.8.mid", folder / "copy_of_bwv29.8.mid")
    (folder / "truncated.mid").write_bytes((folder / "bach_bwv373.mid").read_bytes()[:40])
    (folder / "not_midi.mid").write_bytes(b"this is a text file")
    return folder


def test_build_keeps_good_pieces_and_counts_the_rest(midi_folder: Path, tmp_path: Path):
    out = tmp_path / "ds"
    report = build_dataset([str(midi_folder)], out, BuildOptions(workers=1), progress=False)
    assert report.files == 25
    assert report.corrupt == 2
    assert report.duplicates == 1
    # Two short folk songs fall under the 32-note minimum; everything else is kept once.
    assert report.rejected == {"total_min": 2}
    kept = report.kept
    assert kept == 25 - 2 - 1 - 2
    data = TokenDataset(out)
    assert len(data) == kept
    # Every piece starts with BOS and ends with EOS, ids within the v2 vocabulary.
    vocab = MIDITokenizer("v2", True).vocab
    for i in range(len(data)):
        rows = data.piece(i)
        assert rows.shape[1] == 8
        assert rows[0, 0] == vocab.bos_id and rows[-1, 0] == vocab.eos_id
        assert rows.max() < vocab.vocab_size
    # The rows equal a direct tokenization of the source file.
    first = data.pieces[0]
    direct = MIDITokenizer("v2", True).tokenize(load_score(first["file"]))
    assert data.piece(0).tolist() == direct


def test_split_is_by_piece_disjoint_and_reproducible(midi_folder: Path, tmp_path: Path):
    build_dataset([str(midi_folder)], tmp_path / "a", BuildOptions(workers=1, seed=3), progress=False)
    build_dataset([str(midi_folder)], tmp_path / "b", BuildOptions(workers=1, seed=3), progress=False)
    split_a = json.loads((tmp_path / "a" / "split.json").read_text())
    split_b = json.loads((tmp_path / "b" / "split.json").read_text())
    assert split_a == split_b
    sets = [set(split_a[k]) for k in ("train", "valid", "test")]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    assert len(sets[0] | sets[1] | sets[2]) == len(TokenDataset(tmp_path / "a"))
    assert split_a["valid"] and split_a["test"]


def test_storage_is_an_int16_memmap_with_offsets(midi_folder: Path, tmp_path: Path):
    build_dataset([str(midi_folder)], tmp_path / "ds", BuildOptions(workers=1), progress=False)
    data = TokenDataset(tmp_path / "ds")
    assert isinstance(data.rows, np.memmap) and data.rows.dtype == np.dtype("<i2")
    assert (tmp_path / "ds" / "tokens.bin").stat().st_size == int(data.offsets[-1]) * 8 * 2
    assert np.all(np.diff(data.offsets) > 0)


def test_transpose_moves_pieces_to_c_major_or_a_minor(tmp_path: Path):
    build_dataset([str(REFERENCE_MIDI)], tmp_path / "ds", BuildOptions(workers=1, transpose=True),
                  progress=False)
    data = TokenDataset(tmp_path / "ds")
    vocab = MIDITokenizer("v2", True).vocab
    shifts = [key_shift(data.piece(i).tolist(), vocab) for i in range(len(data))]
    # Most pieces now carry no sharps or flats (a few re-detect a neighbouring key, or none).
    assert sum(s == 0 for s in shifts) >= len(shifts) * 0.6


def test_max_len_and_quality_options(tmp_path: Path):
    opts = BuildOptions(workers=1, max_len=64)
    build_dataset([str(REFERENCE_MIDI)], tmp_path / "short", opts, progress=False)
    assert TokenDataset(tmp_path / "short").lengths("train").max() <= 64
    strict = BuildOptions(workers=1)
    strict.quality_thresholds["total_notes_min"] = 256  # the reference's default rejects short pieces
    report = build_dataset([str(REFERENCE_MIDI)], tmp_path / "strict", strict, progress=False)
    assert report.rejected.get("total_min", 0) > 2
    everything = build_dataset([str(REFERENCE_MIDI)], tmp_path / "all", BuildOptions(workers=1, quality=False),
                               progress=False)
    assert everything.kept == 22


def test_row_onsets_follow_time1_deltas_and_time2_positions():
    vocab = MIDITokenizer("v2", True).vocab
    t1, t2 = vocab.parameter_offsets["time1"], vocab.parameter_offsets["time2"]
    rows = np.array([
        vocab.special_row(vocab.bos_id),
        [3, t1 + 0, t2 + 4, 0, 0, 0, 0, 0],  # beat 0, step 4
        [3, t1 + 2, t2 + 0, 0, 0, 0, 0, 0],  # two beats later, step 0 -> 32
        [3, t1 + 0, t2 + 8, 0, 0, 0, 0, 0],  # same beat, step 8 -> 40
        vocab.special_row(vocab.eos_id),
    ])
    assert row_onsets(rows, vocab).tolist() == [0, 4, 32, 40, 40]


def test_music21_folk_songs_convert_with_one_channel_per_part(tmp_path: Path):
    report = build_dataset(["music21:folk"], tmp_path / "folk", BuildOptions(workers=1, quality=False),
                           cache_dir=tmp_path / "cache", progress=False, limit=4)
    assert report.kept >= 3
    cached = sorted((tmp_path / "cache" / "music21_folk").glob("*.mid"))
    assert len(cached) == report.files
    # Cached: a second build converts nothing and gives the same rows.
    again = build_dataset(["music21:folk"], tmp_path / "folk2", BuildOptions(workers=1, quality=False),
                          cache_dir=tmp_path / "cache", progress=False, limit=4)
    assert again.kept == report.kept


def test_music21_chorale_parts_get_their_own_channels(tmp_path: Path):
    build_dataset(["music21:bach"], tmp_path / "bach", BuildOptions(workers=1, quality=False),
                  cache_dir=tmp_path / "cache", progress=False, limit=1)
    midi = next((tmp_path / "cache" / "music21_bach").glob("*.mid"))
    score = load_score(midi)
    channels = {e[3] for track in score[1:] for e in track if e[0] == "note"}
    assert len(channels) >= 4 and 9 not in channels


def test_empty_folder_is_a_clear_error(tmp_path: Path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match="no MIDI files"):
        build_dataset([str(empty)], tmp_path / "ds", BuildOptions(workers=1), progress=False)
    assert main(["dataset", "build", str(empty), "--out", str(tmp_path / "ds")]) == 2
    assert "no MIDI files" in capsys.readouterr().err


def test_only_corrupt_files_is_a_clear_error(tmp_path: Path, capsys):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "a.mid").write_bytes(b"MThd garbage")
    assert main(["dataset", "build", str(folder), "--out", str(tmp_path / "ds")]) == 2
    assert "1 unreadable" in capsys.readouterr().err


def test_cli_builds_a_dataset(tmp_path: Path, capsys):
    rc = main(["dataset", "build", str(REFERENCE_MIDI), "--out", str(tmp_path / "ds"), "--workers", "1",
               "--min-notes", "16", "--seed", "1"])
    assert rc == 0
    assert "22 pieces read" in capsys.readouterr().out
    assert json.loads((tmp_path / "ds" / "split.json").read_text())["seed"] == 1
