"""Precision as a choice: one export writes the reference fp32 pair and musebot's 8- and 4-bit engine pairs,
each verified against torch; the engine runs the best one for its provider unless told, and the quantised
pairs say nearly what fp32 says about a real chorale (the reference checkpoint sky_shared)."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from musebot.engine import Constraints, Engine, ModelLoadError, SamplerSettings
from musebot.engine.precision import available_precisions


@pytest.fixture(scope="module")
def exported(reference_dir: Path, tmp_path_factory) -> tuple[Path, dict]:
    from musebot.export.onnx_export import export_onnx

    out = tmp_path_factory.mktemp("sky_precisions")
    figures = export_onnx(reference_dir / "sky_shared", out, precisions=["fp32", "int8", "int4"])
    return out, figures


@pytest.fixture(scope="module")
def chorale(reference_dir: Path) -> np.ndarray:
    with gzip.open(reference_dir / "sky_shared_ref.json.gz", "rt") as f:
        return np.array(json.load(f)["prompt"], np.int64)


def test_one_export_writes_every_cpu_precision_verified_and_smaller(exported):
    out, figures = exported
    from musebot.export.onnx_export import TOLERANCE

    assert set(figures) == {"fp32", "int8", "int4"}
    for precision, f in figures.items():
        assert f["verified"] is True
        assert max(f["base_rel_diff"], f["token_rel_diff"]) < TOLERANCE[precision]
    # 8-bit blocks sit near fp32, 4-bit further off: the measured error is ordered as the bits are.
    assert figures["fp32"]["base_rel_diff"] < figures["int8"]["base_rel_diff"] < figures["int4"]["base_rel_diff"]
    assert figures["int4"]["base_mb"] < figures["int8"]["base_mb"] < figures["fp32"]["base_mb"]
    config = json.loads((out / "config.json").read_text())
    assert config["onnx"]["precisions"] == {"fp32": ".", "int8": "int8", "int4": "int4"}
    assert set(available_precisions(out)) == {"fp32", "int8", "int4"}


def test_engine_takes_int8_on_cpu_unless_told(exported):
    out, _ = exported
    assert Engine.load(out, provider="cpu").precision == "int8"
    assert Engine.load(out, provider="cpu", precision="fp32").precision == "fp32"
    engine = Engine.load(out, provider="cpu", precision="int4")
    assert engine.precision == "int4" and engine.runner.sliced
    with pytest.raises(ModelLoadError, match="--precision fp16"):
        Engine.load(out, provider="cpu", precision="fp16")
    with pytest.raises(ValueError, match="precision"):
        Engine.load(out, provider="cpu", precision="int2")


def test_a_folder_with_only_the_quantised_pair_loads(exported, tmp_path, chorale):
    out, _ = exported
    shutil.copy(out / "config.json", tmp_path / "config.json")
    shutil.copytree(out / "int8", tmp_path / "int8")
    engine = Engine.load(tmp_path, provider="cpu")
    assert engine.precision == "int8"
    engine.append(chorale[:32])
    row = engine.step(SamplerSettings(), Constraints(allow_eos=False), np.random.default_rng(0))
    assert row.shape == (1, 8)
    with pytest.raises(ModelLoadError, match="no fp32 graphs"):
        Engine.load(tmp_path, provider="cpu", precision="fp32")


def test_the_sliced_head_scores_exactly_the_rows_asked_for(exported, chorale):
    out, _ = exported
    engine = Engine.load(out, provider="cpu", precision="int8")
    hidden = engine.append(chorale[:40])[:, None, :]
    runner = engine.runner
    ids = np.array([3, 4, 10, 500, 3405], np.int64)
    full, _ = runner.run_token(hidden, np.zeros((1, 0), np.int64), runner.empty(runner.token_shape, 1))
    some, _ = runner.run_token(hidden, np.zeros((1, 0), np.int64), runner.empty(runner.token_shape, 1), ids)
    assert full.shape == (1, 1, engine.vocab.vocab_size) and some.shape == (1, 1, len(ids))
    np.testing.assert_allclose(some[0, 0], full[0, 0, ids], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("precision,min_agreement", [("int8", 0.97), ("int4", 0.8)])
def test_quantised_engines_agree_with_fp32_on_a_chorale(exported, chorale, precision, min_agreement):
    """Teacher-forced over 95 events of the chorale, all 8 positions: the most likely token is the same."""
    out, _ = exported
    reference = Engine.load(out, provider="cpu", precision="fp32")
    quantised = Engine.load(out, provider="cpu", precision=precision)
    rows = chorale[None]
    hidden = {e.precision: e.hidden_uncached(rows)[0, :-1] for e in (reference, quantised)}
    tokens = rows[0, 1:, :7]
    logits = {p: reference.token_logits_uncached(h, tokens) if p == "fp32" else
              quantised.token_logits_uncached(h, tokens) for p, h in hidden.items()}
    used = rows[0, 1:] != reference.vocab.pad_id  # positions that predict a real token
    same = (logits["fp32"].argmax(-1) == logits[precision].argmax(-1))[used]
    assert same.mean() >= min_agreement


def test_a_seed_replays_the_same_events_at_int8(exported, chorale):
    out, _ = exported
    engine = Engine.load(out, provider="cpu", precision="int8")
    played = []
    for _ in range(2):
        engine.reset()
        engine.append(chorale[:32])
        played.append(engine.generate(24, SamplerSettings(), Constraints(allow_eos=False),
                                      np.random.default_rng(7)))
    np.testing.assert_array_equal(played[0], played[1])
    assert (played[0][0, :, 0] != engine.vocab.eos_id).all()


def test_bench_counts_fewer_weight_bytes_per_event_for_quantised_sliced_graphs(exported, capsys):
    from musebot.cli import main

    out, _ = exported
    assert main(["bench", "--model", str(out), "--context", "24", "--events", "3", "--generate", "0",
                 "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["default_precision"] == "int8"
    engines = figures["runs"][0]["engine"]
    reference = figures["runs"][0]["reference"]["weight_mb_per_event"]
    assert engines["int4"]["weight_mb_per_event"] < engines["int8"]["weight_mb_per_event"] < reference
    assert engines["int8"]["floor_ms"] < figures["runs"][0]["reference"]["floor_ms"]


def test_generate_and_bench_take_a_precision(exported, tmp_path, capsys):
    from musebot.cli import main

    out, _ = exported
    assert main(["generate", "--model", str(out), "--precision", "int4", "--events", "16", "--no-eos",
                 "--out", str(tmp_path / "x.mid"), "--seed", "1"]) == 0
    assert "16 generated events" in capsys.readouterr().out
    assert main(["generate", "--model", str(out), "--precision", "fp16", "--events", "4",
                 "--out", str(tmp_path / "y.mid")]) == 2
    assert "no fp16 graphs" in capsys.readouterr().err
