"""The model that ships with musebot (musebot/assets/model): it is there, it is what its card says, its ONNX
graphs are its weights, and a newcomer can continue a MIDI file with it with no model argument."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from musebot.engine.generate import DEFAULT_MODEL_DIR
from musebot.tokenizers import load_score

MAX_FILE_BYTES = 50 * 1024 * 1024


def test_the_shipped_model_folder_holds_weights_graphs_config_and_card():
    names = {p.name for p in DEFAULT_MODEL_DIR.iterdir()}
    assert {"config.json", "model.safetensors", "int8", "README.md"} <= names
    assert {p.name for p in (DEFAULT_MODEL_DIR / "int8").iterdir()} == {"model_base.onnx", "model_token.onnx", "lm_head.npy"}
    assert all(p.stat().st_size < MAX_FILE_BYTES for p in DEFAULT_MODEL_DIR.rglob("*") if p.is_file())
    config = json.loads((DEFAULT_MODEL_DIR / "config.json").read_text())
    card = (DEFAULT_MODEL_DIR / "README.md").read_text()
    assert config["config_name"] in card and "music21:bach" in card
    # Shipped in the precision its accuracy figures chose; fp32 is rebuilt from the weights on demand.
    assert config["onnx"]["precisions"] == {"int8": "int8"} and "int8" in card


@pytest.fixture(scope="module")
def fp32_from_weights(tmp_path_factory) -> Path:
    pytest.importorskip("torch")
    from musebot.export import export_onnx

    out = tmp_path_factory.mktemp("shipped_fp32")
    export_onnx(DEFAULT_MODEL_DIR, out)
    return out


def test_the_committed_graphs_are_the_committed_weights(reference_midis, fp32_from_weights):
    """model.safetensors exported again gives fp32 graphs equal to torch, and the committed int8 graphs say
    what those say about real music: the same most likely token nearly everywhere."""
    import torch

    from musebot.engine import Engine
    from musebot.engine.generate import prompt_rows
    from musebot.export import OnnxPair
    from musebot.models import load_model
    from musebot.tokenizers import MIDITokenizer

    model = load_model(DEFAULT_MODEL_DIR).eval()
    tokenizer = MIDITokenizer.from_dict(model.config.tokenizer)
    prompt = prompt_rows(tokenizer, load_score(reference_midis[0]), 64)[None]
    pair = OnnxPair(fp32_from_weights)
    hidden_onnx, _ = pair.base_step(prompt)
    logits_onnx, _ = pair.token_step(hidden_onnx[:, -1:], prompt[:, -1, :7])
    with torch.no_grad():
        hidden_torch = model.forward(torch.from_numpy(prompt))
        logits_torch = model.forward_token(hidden_torch[:, -1:].reshape(1, 1, -1),
                                           torch.from_numpy(prompt[:, -1, :7]))
    assert np.abs(hidden_onnx - hidden_torch.numpy()).max() < 1e-4
    assert np.abs(logits_onnx - logits_torch.numpy()).max() < 1e-3

    shipped = Engine.load(DEFAULT_MODEL_DIR, provider="cpu")
    assert shipped.precision == "int8"
    hidden = shipped.hidden_uncached(prompt)[0, :-1]
    logits = shipped.token_logits_uncached(hidden, prompt[0, 1:, :7])
    expected = pair.token_step(hidden_onnx[0, :-1, None], prompt[0, 1:, :7])[0]
    used = prompt[0, 1:] != tokenizer.vocab.pad_id
    assert (logits.argmax(-1) == expected.argmax(-1))[used].mean() > 0.98


def test_generate_with_no_model_argument_continues_a_piece(reference_midis, tmp_path: Path, capsys):
    from musebot.cli import main

    out = tmp_path / "out.mid"
    assert main(["generate", "--prompt", str(reference_midis[0]), "--events", "256", "--out", str(out),
                 "--seed", "1"]) == 0
    score = load_score(out)
    notes = [e for track in score[1:] for e in track if e[0] == "note"]
    prompt_notes = [e for track in load_score(reference_midis[0])[1:] for e in track if e[0] == "note"]
    assert len(notes) > min(len(prompt_notes), 128)  # the prompt's opening plus a continuation of notes
