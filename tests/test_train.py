"""Training end to end on a handful of real pieces: train, resume, fine-tune, export, generate; bad input."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest

from musebot.cli import main
from musebot.data.build import BuildOptions, build_dataset
from musebot.data.dataset import DatasetError
from musebot.train.run import TrainError, TrainOptions, train

REFERENCE_MIDI = Path(__file__).parent / "data" / "reference" / "midi"
PIECES = ["bach_bwv29.8.mid", "bach_bwv373.mid", "bach_bwv337.mid", "folk_han1.mid", "folk_lot.mid",
          "folk_kinder0.mid"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """Six real pieces plus two corrupt files, built into a dataset (the corrupt ones are skipped)."""
    root = tmp_path_factory.mktemp("train")
    midi = root / "midi"
    midi.mkdir()
    for name in PIECES:
        shutil.copy(REFERENCE_MIDI / name, midi / name)
    (midi / "broken.mid").write_bytes(b"MThd\x00\x00\x00\x06\x00\x01")
    (midi / "empty.mid").write_bytes(b"")
    report = build_dataset([str(midi)], root / "data", BuildOptions(workers=1, quality=False), progress=False)
    assert report.corrupt == 2 and report.kept == len(PIECES)
    return root / "data"


def tiny(data: Path, out: Path, **changes) -> TrainOptions:
    options = TrainOptions(data=str(data), preset="tv2o-tiny", out=str(out), max_steps=4, batch_size=2,
                           max_len=64, lr=1e-3, warmup_steps=1, val_every=2, threads=1, sample_events=24,
                           progress=False)
    for key, value in changes.items():
        setattr(options, key, value)
    return options


def test_train_resume_export_generate(dataset: Path, tmp_path: Path):
    run = tmp_path / "run"
    first = train(tiny(dataset, run))
    assert first["steps"] == 4 and not first["resumed"]
    # A few steps already move the loss below a uniform guess over the vocabulary (ln 3406 = 8.13).
    assert first["val_loss"] < 8.0
    assert 0.0 <= first["val_token_acc"] <= 1.0
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert list((run / "samples").glob("*.mid")), "a sample MIDI per validation"
    with open(run / "logs" / "version_0" / "metrics.csv") as f:
        assert any(row.get("val_loss") for row in csv.DictReader(f))

    # Same folder, more steps: it resumes from last.ckpt instead of starting again.
    second = train(tiny(dataset, run, max_steps=6))
    assert second["resumed"] and second["steps"] == 6

    # The saved model exports to ONNX and the engine continues a prompt with it.
    from musebot.engine.engine import Engine
    from musebot.engine.sampling import SamplerSettings
    from musebot.export import export_onnx
    from musebot.tokenizers import MIDITokenizer

    figures = export_onnx(run / "model", run / "onnx")
    assert figures["verified"]
    engine = Engine.load(run / "onnx", provider="cpu")
    tok = MIDITokenizer("v2", True)
    engine.append(np.array([tok.vocab.special_row(tok.vocab.bos_id)]))
    new = engine.generate(16, SamplerSettings(), rng=np.random.default_rng(0), stop_at_eos=False)[0]
    assert new.shape == (16, 8)
    assert all(row[0] in tok.vocab.id_events or row[0] == tok.vocab.eos_id for row in new)


def test_fine_tune_from_a_checkpoint_of_the_same_preset(dataset: Path, tmp_path: Path):
    base = train(tiny(dataset, tmp_path / "base", max_steps=2))
    tuned = train(tiny(dataset, tmp_path / "tuned", max_steps=2, init=base["model"]))
    assert tuned["steps"] == 2 and not tuned["resumed"]
    ckpt = tmp_path / "base" / "checkpoints" / "last.ckpt"
    from_ckpt = train(tiny(dataset, tmp_path / "tuned_ckpt", max_steps=2, init=str(ckpt)))
    assert from_ckpt["steps"] == 2


def test_lora_trains_adapters_and_saves_a_merged_model(dataset: Path, tmp_path: Path):
    from musebot.models import load_model

    summary = train(tiny(dataset, tmp_path / "lora", max_steps=2, lora=True, lora_rank=4, lora_alpha=8))
    model = load_model(summary["model"])
    assert not any("lora" in key for key in model.state_dict())


def test_init_checkpoint_of_another_preset_is_a_clear_error(dataset: Path, tmp_path: Path, capsys):
    base = train(tiny(dataset, tmp_path / "base", max_steps=1))
    with pytest.raises(TrainError, match="shape"):
        train(tiny(dataset, tmp_path / "other", preset="tv2o-small", init=base["model"]))
    rc = main(["train", "--data", str(dataset), "--preset", "tv2o-small", "--init", base["model"],
               "--out", str(tmp_path / "other_cli"), "--max-steps", "1"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "--init" in err and "shape" in err and "Traceback" not in err


def test_empty_data_folder_is_a_clear_error(tmp_path: Path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match="not a musebot dataset"):
        train(tiny(empty, tmp_path / "run"))
    assert main(["train", "--data", str(empty), "--preset", "tv2o-tiny", "--out", str(tmp_path / "run")]) == 2
    assert "musebot dataset build" in capsys.readouterr().err


def test_unknown_preset_is_a_clear_error(dataset: Path, tmp_path: Path):
    with pytest.raises(TrainError, match="unknown model config"):
        train(tiny(dataset, tmp_path / "run", preset="tv9-huge"))


def test_pitch_shift_zero_keeps_a_transposed_dataset_in_its_key(dataset: Path, tmp_path: Path):
    from musebot.data.dataset import TokenDataset
    from musebot.tokenizers import MIDITokenizer
    from musebot.train.data import CropDataset

    data = TokenDataset(dataset)
    tokenizer = MIDITokenizer.from_dict(data.tokenizer_config)
    pitch_lo, pitch_hi = tokenizer.vocab.parameter_range("pitch")

    def pitches(rows) -> list[int]:
        return [int(r[5]) for r in np.asarray(rows) if r[0] == tokenizer.vocab.event_ids["note"]]

    for shift, same in ((0, True), (4, False)):
        crops = CropDataset(data, "train", 10_000, True, tokenizer, seed=3, max_pitch_shift=shift)
        kept = [pitches(crops[i]) == pitches(data.piece(crops.indices[i])) for i in range(len(crops))]
        assert all(kept) if same else not all(kept)
    assert all(pitch_lo <= p < pitch_hi for p in pitches(crops[0]))
    with pytest.raises(TrainError, match="--max-pitch-shift"):
        train(tiny(dataset, tmp_path / "run", max_pitch_shift=13))


def test_ddp_on_two_cpu_processes_needs_no_code_change(dataset: Path, tmp_path: Path):
    import json
    import subprocess
    import sys

    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "musebot", "train", "--data", str(dataset), "--preset", "tv2o-tiny",
           "--out", str(run), "--max-steps", "2", "--batch-size", "2", "--max-len", "64", "--val-every", "2",
           "--threads", "1", "--accelerator", "cpu", "--devices", "2", "--strategy", "ddp", "--no-progress",
           "--sample-events", "16"]
    done = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["val_loss"] > 0
    assert done.stdout.count("trained 2 steps") == 1  # only rank 0 reports
