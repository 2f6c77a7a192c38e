"""The exported ONNX pair behaves like SkyTNT's own graphs (spec section 4.1) on the reference checkpoint.

The numbers come from the reference implementation run on ``sky_shared`` (tests/data/reference/README.md):
fed the same 96 events of a Bach chorale, our ONNX graphs must give the same hidden states and the same
next-event logits, whether the prompt arrives in one call or event by event through the KV cache.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from musebot.export.onnx_export import BASE_FILE, TOKEN_FILE, OnnxPair, export_onnx
from musebot.models import MIDIModelConfig, load_model


def rel_err(got: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(got - ref).max() / np.abs(ref).max())


@pytest.fixture(scope="module")
def reference(reference_dir: Path) -> dict:
    with gzip.open(reference_dir / "sky_shared_ref.json.gz", "rt") as f:
        data = json.load(f)
    return {k: np.asarray(v) for k, v in data.items()}


@pytest.fixture(scope="module")
def sky_dir(reference_dir: Path) -> Path:
    return reference_dir / "sky_shared"


@pytest.fixture(scope="module")
def exported(reference_dir: Path, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("onnx_fp32")
    figures = export_onnx(reference_dir / "sky_shared", out)
    return out, figures


def test_export_reports_torch_agreement(exported):
    _, figures = exported
    assert figures["verified"] is True
    assert figures["base_max_abs_diff"] < 1e-4
    assert figures["token_max_abs_diff"] < 1e-4


def test_graphs_have_the_reference_interface(exported):
    out, _ = exported
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "midi_model"
    assert config["tokenizer"]["vocab_size"] == 3406
    assert config["onnx"]["base"]["n_layer"] == 4 and config["onnx"]["base"]["head_dim"] == 16
    assert config["onnx"]["token"]["n_layer"] == 1 and config["onnx"]["token"]["head_dim"] == 64

    def io(path: Path) -> tuple[dict, dict, dict]:
        graph = onnx.load(str(path))

        def describe(values):
            return {
                v.name: (
                    onnx.TensorProto.DataType.Name(v.type.tensor_type.elem_type),
                    [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim],
                )
                for v in values
            }

        return (
            describe(graph.graph.input),
            describe(graph.graph.output),
            {p.key: p.value for p in graph.metadata_props},
        )

    inputs, outputs, meta = io(out / BASE_FILE)
    assert list(inputs) == ["x"] + [f"past_key_values.{i}.{k}" for i in range(4) for k in ("key", "value")]
    assert list(outputs) == ["hidden"] + [f"present.{i}.{k}" for i in range(4) for k in ("key", "value")]
    assert inputs["x"] == ("INT64", ["batch", "mid_seq", "token_seq"])
    assert inputs["past_key_values.3.value"] == ("FLOAT", ["batch", 4, "past_seq", 16])
    assert outputs["hidden"] == ("FLOAT", ["batch", "mid_seq", 64])
    assert outputs["present.0.key"] == ("FLOAT", ["batch", 4, "present_seq", 16])
    assert set(meta) == {"config_name", "config"}
    assert set(json.loads(meta["config"])) == {"net", "net_token"}

    inputs, outputs, _ = io(out / TOKEN_FILE)
    assert list(inputs) == ["hidden", "x", "past_key_values.0.key", "past_key_values.0.value"]
    assert list(outputs) == ["y", "present.0.key", "present.0.value"]
    assert inputs["hidden"] == ("FLOAT", ["batch", "states", 64])
    assert inputs["x"] == ("INT64", ["batch", "token_seq"])
    assert inputs["past_key_values.0.key"] == ("FLOAT", ["batch", 1, "past_seq", 64])
    assert outputs["y"] == ("FLOAT", ["batch", "token_seq1", 3406])


def test_chorale_prompt_in_one_call_matches_reference(exported, reference):
    out, _ = exported
    pair = OnnxPair(out)
    hidden, present = pair.base_step(reference["prompt"][None])
    assert hidden.shape == (1, 96, 64)
    assert present[0].shape == (1, 4, 96, 16)
    assert rel_err(hidden[0, 0], reference["hidden_first"]) < 1e-4
    assert rel_err(hidden[0, 95], reference["hidden_last"]) < 1e-4


def test_chorale_prompt_event_by_event_matches_reference(exported, reference):
    out, _ = exported
    pair = OnnxPair(out)
    past = None
    first = None
    # An uneven split: 5 events from an empty cache, then one event per call.
    hidden, past = pair.base_step(reference["prompt"][None, :5], past)
    first = hidden[0, 0]
    for t in range(5, 96):
        hidden, past = pair.base_step(reference["prompt"][None, t : t + 1], past)
    assert past[0].shape[2] == 96
    assert rel_err(first, reference["hidden_first"]) < 1e-4
    assert rel_err(hidden[0, -1], reference["hidden_last"]) < 1e-4


def test_next_event_logits_teacher_forced_match_reference(exported, reference):
    out, _ = exported
    pair = OnnxPair(out)
    hidden, _ = pair.base_step(reference["prompt"][None])
    tokens = reference["next_event"][None, :7]
    # Reference decoding order: the event state alone first, then one token per call with the cache.
    logits, past = pair.token_step(hidden[:, -1:], np.zeros((1, 0), np.int64))
    rows = [logits]
    for i in range(7):
        logits, past = pair.token_step(np.zeros((1, 0, 64), np.float32), tokens[:, i : i + 1], past)
        rows.append(logits)
    got = np.concatenate(rows, axis=1)[0]
    assert got.shape == reference["logits"].shape == (8, 3406)
    assert rel_err(got, reference["logits"]) < 1e-4
    # The event state plus all 7 tokens in one uncached call gives the same 8 rows.
    whole, _ = pair.token_step(hidden[:, -1:], tokens)
    assert rel_err(whole[0], reference["logits"]) < 1e-4


def test_batch_of_two_matches_torch(exported, reference_dir, reference):
    out, _ = exported
    model = load_model(reference_dir / "sky_shared")
    prompts = np.stack([reference["prompt"][:40], reference["prompt"][40:80]])
    with torch.no_grad():
        expected = model(torch.from_numpy(prompts)).numpy()
    hidden, _ = OnnxPair(out).base_step(prompts)
    assert np.abs(hidden - expected).max() < 1e-4


def test_int8_export_stays_close_to_reference(reference_dir, reference, tmp_path):
    figures = export_onnx(reference_dir / "sky_shared", tmp_path, int8=True)
    assert figures["precision"] == "int8" and figures["verified"] is True
    assert figures["base_mb"] < 1.5  # quantised weights: smaller than the 1.9 MB fp32 graph
    pair = OnnxPair(tmp_path)
    hidden, _ = pair.base_step(reference["prompt"][None])
    assert rel_err(hidden[0, 95], reference["hidden_last"]) < 0.1
    logits, _ = pair.token_step(hidden[:, -1:], reference["next_event"][None, :7])
    assert rel_err(logits[0], reference["logits"]) < 0.1
    config = MIDIModelConfig.load(tmp_path)
    assert config.vocab_size == 3406


def test_fp16_export_runs_and_is_close(reference_dir, reference, tmp_path):
    figures = export_onnx(reference_dir / "sky_shared", tmp_path, fp16=True)
    assert figures["precision"] == "fp16"
    assert json.loads((tmp_path / "config.json").read_text())["onnx"]["dtype"] == "float16"
    if figures["verified"] is not True:
        pytest.skip(f"ONNX Runtime CPU cannot run these fp16 graphs: {figures['verified']}")
    pair = OnnxPair(tmp_path)
    hidden, _ = pair.base_step(reference["prompt"][None])
    assert hidden.dtype == np.float16
    assert rel_err(hidden[0, 95].astype(np.float32), reference["hidden_last"]) < 2e-2


def test_cli_exports_and_reports_bad_input_in_one_line(sky_dir, tmp_path, capsys):
    from musebot.cli import main

    assert main(["export", str(sky_dir), "--out", str(tmp_path / "out"), "--precision", "int8,fp16"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["int8"]["precision"] == "int8" and figures["fp16"]["precision"] == "fp16"
    assert figures["int8"]["verified"] is True
    assert (tmp_path / "out" / "int8" / BASE_FILE).is_file() and (tmp_path / "out" / "fp16" / TOKEN_FILE).is_file()
    assert not (tmp_path / "out" / BASE_FILE).exists()  # no fp32 asked for: no reference pair

    assert main(["export", str(sky_dir), "--out", str(tmp_path / "y"), "--precision", "int3"]) == 2
    assert "--precision" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "missing"), "--out", str(tmp_path / "x")]) == 2
    assert "no model at" in capsys.readouterr().err
    assert main(["export", str(sky_dir), "--out", str(tmp_path / "x"), "--config", "tv2o-small"]) == 2
    err = capsys.readouterr().err
    assert "net.embed_tokens.weight" in err and len(err.strip().splitlines()) == 1
