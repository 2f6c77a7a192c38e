"""The torch model reads SkyTNT checkpoints in every published form and computes what the reference computes.

Spec: shared/spec/skytnt-format.md sections 3.1 (configs), 3.2 (architecture, training loss), 3.3 (generate)
and 3.5 (checkpoints). The reference numbers come from SkyTNT's code run on ``sky_shared``.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file, save_file

from musebot.models import (
    CheckpointError,
    ConfigError,
    MIDIModel,
    MIDIModelConfig,
    ShapeMismatchError,
    load_model,
    save_pretrained,
)


@pytest.fixture(scope="module")
def sky(reference_dir: Path) -> Path:
    return reference_dir / "sky_shared"


@pytest.fixture(scope="module")
def reference(reference_dir: Path) -> dict:
    with gzip.open(reference_dir / "sky_shared_ref.json.gz", "rt") as f:
        return {k: np.asarray(v) for k, v in json.load(f).items()}


@pytest.fixture(scope="module")
def model(sky: Path) -> MIDIModel:
    return load_model(sky)


def probe(model: MIDIModel, seed: int = 0) -> torch.Tensor:
    """Logits of a fixed random 12-event prompt: a fingerprint of the weights."""
    x = torch.randint(3, model.config.vocab_size, (1, 12, 8), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        hidden = model(x)
        return model.forward_token(hidden[:, -1:], x[:, -1, :7])


def test_named_configs_have_the_reference_sizes():
    medium = MIDIModelConfig.from_name("tv2o-medium")
    assert (medium.net.num_hidden_layers, medium.net.num_attention_heads) == (12, 16)
    assert (medium.net_token.num_hidden_layers, medium.net_token.num_attention_heads) == (3, 4)
    assert medium.net_token.intermediate_size == 1024 and medium.vocab_size == 3406
    assert medium.tokenizer["optimise_midi"] is True
    assert MIDIModelConfig.from_name("tv1-medium").vocab_size == 3239
    assert MIDIModelConfig.from_name("tv2-large").net.num_hidden_layers == 24
    assert MIDIModelConfig.from_name("tv2-large").tokenizer["optimise_midi"] is False
    with torch.device("meta"):
        params = sum(p.numel() for p in MIDIModel(medium).parameters())
    assert params == 233_842_688  # 233.8M, as on the HF model card
    with pytest.raises(ConfigError, match="tv2o-medium"):
        MIDIModelConfig.from_name("tv3-huge")


def test_config_json_round_trips_in_the_reference_layout(sky: Path, tmp_path: Path):
    config = MIDIModelConfig.load(sky)
    assert config.net.num_hidden_layers == 4 and config.net_token.num_attention_heads == 1
    data = json.loads(config.save(tmp_path).read_text())
    assert data["model_type"] == "midi_model"
    assert set(data) >= {"tokenizer", "net_config", "net_token_config"}
    again = MIDIModelConfig.load(tmp_path)
    assert again.tokenizer == config.tokenizer
    assert again.net.to_dict() == config.net.to_dict()
    tiny = MIDIModelConfig.from_name("tv2o-tiny")
    assert MIDIModelConfig.net_shape(tiny.net) == MIDIModelConfig.net_shape(config.net)


def test_reference_state_dict_loads_strictly_and_reproduces_reference_numbers(sky: Path, reference: dict):
    state = load_file(str(sky / "model.safetensors"))
    model = MIDIModel(MIDIModelConfig.load(sky))
    assert set(model.state_dict()) == set(state)
    model.load_state_dict(state, strict=True)
    model.eval()
    with torch.no_grad():
        hidden = model(torch.from_numpy(reference["prompt"])[None])
        logits = model.forward_token(hidden[:, -1:], torch.from_numpy(reference["next_event"][None, :7]))
    assert np.abs(hidden[0, 0].numpy() - reference["hidden_first"]).max() < 1e-4
    assert np.abs(hidden[0, 95].numpy() - reference["hidden_last"]).max() < 1e-4
    assert np.abs(logits[0].numpy() - reference["logits"]).max() < 1e-4


def test_cached_and_uncached_logits_agree(model: MIDIModel):
    torch.manual_seed(1)
    events = torch.randint(3, model.config.vocab_size, (2, 68, 8))
    with torch.no_grad():
        full = model(events)
        cache = model.new_cache()
        parts = [model(events[:, :64], cache)]  # a 64-event prompt, then one event per step
        parts += [model(events[:, t : t + 1], cache) for t in range(64, 68)]
        cached = torch.cat(parts, dim=1)
        assert (cached - full).abs().max() < 1e-4

        tokens = events[:, -1, :7]
        whole = model.forward_token(full[:, -2:-1], tokens)
        token_cache = model.new_cache(token_level=True)
        steps = [model.forward_token(full[:, -2:-1], None, token_cache)]
        steps += [model.forward_token(None, tokens[:, i : i + 1], token_cache) for i in range(7)]
        assert (torch.cat(steps, dim=1) - whole).abs().max() < 1e-4


def test_shape_mismatch_names_the_first_key(sky: Path):
    with pytest.raises(ShapeMismatchError, match=r"net\.embed_tokens\.weight.*\[3406, 64\].*\[3406, 256\]"):
        load_model(sky, config="tv2o-small")


def test_missing_and_unexpected_keys_are_reported(sky: Path, tmp_path: Path):
    state = load_file(str(sky / "model.safetensors"))
    del state["net_token.norm.weight"]
    state["value_head.weight"] = torch.zeros(3)
    save_file(state, str(tmp_path / "broken.safetensors"))
    with pytest.raises(
        CheckpointError, match=r"1 missing .*net_token\.norm\.weight.*1 unexpected.*value_head"
    ):
        load_model(tmp_path / "broken.safetensors", config=sky / "config.json")


def test_lightning_ckpt_loads_with_weights_only(sky: Path, model: MIDIModel, tmp_path: Path):
    state = load_file(str(sky / "model.safetensors"))
    # What Lightning writes: weights under state_dict beside training bookkeeping.
    ckpt = {"state_dict": state, "epoch": 3, "global_step": 1200, "optimizer_states": [{"lr": 1e-4}]}
    torch.save(ckpt, tmp_path / "model.ckpt")
    loaded = load_model(tmp_path / "model.ckpt", config="tv2o-tiny")
    assert torch.equal(probe(loaded), probe(model))


def test_ckpt_with_pickled_code_is_refused(tmp_path: Path):
    torch.save({"state_dict": {}, "callback": Path("/tmp")}, tmp_path / "evil.ckpt")
    with pytest.raises(CheckpointError, match="tensors-only"):
        load_model(tmp_path / "evil.ckpt", config="tv2o-tiny")


def test_bare_safetensors_with_guessed_config(sky: Path, model: MIDIModel, tmp_path: Path):
    (tmp_path / "weights.safetensors").write_bytes((sky / "model.safetensors").read_bytes())
    loaded = load_model(tmp_path / "weights.safetensors")  # no config.json: shapes match tv2o-tiny
    assert loaded.config.name == "tv2o-tiny"
    assert torch.equal(probe(loaded), probe(model))


def test_save_pretrained_folder_round_trip(model: MIDIModel, tmp_path: Path):
    folder = save_pretrained(model, tmp_path / "hf")
    assert {p.name for p in folder.iterdir()} == {"config.json", "model.safetensors"}
    loaded = load_model(folder)
    assert torch.equal(probe(loaded), probe(model))
    with pytest.raises(CheckpointError, match="no model"):
        load_model(tmp_path / "nowhere")


def test_lora_adapter_merges_like_the_unmerged_peft_model(sky: Path, tmp_path: Path):
    base = load_model(sky)
    before = probe(base)
    # The reference's LoRA targets (spec 3.5), with random B so the adapter changes the outputs.
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    lora_config = LoraConfig(r=4, lora_alpha=8, target_modules=targets, init_lora_weights=False)
    torch.manual_seed(0)
    peft_model = get_peft_model(base, lora_config)
    peft_model.save_pretrained(str(tmp_path / "lora"))
    unmerged = probe(peft_model.base_model.model)

    merged_model = load_model(sky, lora=tmp_path / "lora")
    merged = probe(merged_model)
    assert type(merged_model) is MIDIModel
    assert set(merged_model.state_dict()) == set(load_model(sky).state_dict())
    assert (merged - before).abs().max() > 1e-2  # the adapter does something
    assert (merged - unmerged).abs().max() < 1e-4
    with pytest.raises(CheckpointError, match="LoRA adapter"):
        load_model(tmp_path / "lora")


def test_training_loss_ignores_padding(model: MIDIModel, reference: dict):
    batch = torch.from_numpy(reference["prompt"][:32])[None]
    loss = model.loss(batch)
    value = float(loss.detach())
    # Random weights over 3406 ids: loss near ln(3406) = 8.1 on the real (non-pad) tokens.
    assert 6.0 < value < 10.0
    # Appending all-pad events adds no targets, so the loss is unchanged.
    padded = torch.cat([batch, torch.zeros(1, 5, 8, dtype=torch.long)], dim=1)
    assert abs(float(model.loss(padded).detach()) - value) < 1e-5
    loss.backward()
    assert model.net.layers[0].self_attn.q_proj.weight.grad is not None
    model.zero_grad()
    sampled = model.loss(batch, token_positions=8)
    assert torch.isfinite(sampled)


def test_generate_continues_a_prompt_with_well_formed_events(model: MIDIModel, reference: dict):
    vocab = model.config.vocab
    prompt = torch.from_numpy(reference["prompt"][:16])
    out = model.generate(prompt, batch_size=2, max_len=24, generator=torch.Generator().manual_seed(0))
    assert out.shape[0] == 2 and 17 <= out.shape[1] <= 24
    assert torch.equal(out[0, :16], prompt)
    for row in out[:, 16:].reshape(-1, 8).tolist():
        if row[0] in (vocab.eos_id, vocab.pad_id):
            continue
        event = vocab.row_to_event(row)
        assert event is not None, row
        assert row[1 + len(vocab.events[event[0]]) :] == [0] * (7 - len(vocab.events[event[0]]))


def test_bf16_upload_and_wrapped_keys_load(sky: Path, model: MIDIModel, tmp_path: Path):
    # HF uploads are bf16 (spec 3.5); our own Lightning wrapper may save the model under ``model.``.
    state = load_file(str(sky / "model.safetensors"))
    save_file({k: v.to(torch.bfloat16) for k, v in state.items()}, str(tmp_path / "bf16.safetensors"))
    loaded = load_model(tmp_path / "bf16.safetensors", config="tv2o-tiny")
    assert loaded.lm_head.weight.dtype == torch.float32
    assert (probe(loaded) - probe(model)).abs().max() < 0.1  # bf16 keeps ~3 significant digits
    torch.save({"state_dict": {f"model.{k}": v for k, v in state.items()}}, tmp_path / "wrapped.ckpt")
    assert torch.equal(probe(load_model(tmp_path / "wrapped.ckpt", config="tv2o-tiny")), probe(model))


def test_generate_without_eos_runs_to_max_len(model: MIDIModel):
    out = model.generate(None, max_len=12, generator=torch.Generator().manual_seed(1), allow_eos=False)
    assert out.shape == (1, 12, 8)
    assert out[0, 0, 0] == model.config.vocab.bos_id
    assert model.config.vocab.eos_id not in out[0, 1:, 0].tolist()


def test_transformers4_era_config_json_still_reads(sky: Path):
    # Configs published before transformers 5 carry rope_theta/rope_scaling and a two-key tokenizer dict.
    data = json.loads((sky / "config.json").read_text())
    for key in ("net_config", "net_token_config"):
        del data[key]["rope_parameters"], data[key]["head_dim"]
        data[key] |= {"rope_theta": 10000.0, "rope_scaling": None, "torch_dtype": "bfloat16"}
    data["tokenizer"] = {"version": "v2", "optimise_midi": True}
    config = MIDIModelConfig.from_dict(data)
    assert config.vocab_size == 3406 and config.tokenizer["events"]["note"][-1] == "duration"
    assert MIDIModelConfig.net_shape(config.net_token)["head_dim"] == 64
    assert config.named() == "tv2o-tiny"
    with pytest.raises(ConfigError, match="net_config"):
        MIDIModelConfig.from_dict({"tokenizer": data["tokenizer"]})


def test_key_normalised_flag_round_trips_and_is_absent_from_reference_configs(tmp_path):
    config = MIDIModelConfig.from_name("tv2o-tiny")
    assert "key_normalised" not in config.to_dict()  # the reference's layout stays as it is
    config.key_normalised = True
    config.save(tmp_path)
    assert MIDIModelConfig.load(tmp_path).key_normalised is True
