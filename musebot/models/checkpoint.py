"""Loading and saving MIDIModel weights in every form the reference publishes.

Implements shared/spec/skytnt-format.md section 3.5: Lightning ``.ckpt`` (weights under ``state_dict``),
bare ``.safetensors`` / ``.pt`` state dicts, Hugging Face folders (``config.json`` + ``model.safetensors``)
and PEFT LoRA adapters merged at load. Unlike the reference (``strict=False``) keys are matched strictly, so a
wrong config fails loudly instead of leaving layers at random init. ``.ckpt`` files are read with
``weights_only=True``: tensors and plain containers only, never arbitrary pickled code.
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import torch

from musebot.models.config import CONFIG_FILE, CONFIG_NAMES, ConfigError, MIDIModelConfig
from musebot.models.model import MIDIModel

log = logging.getLogger(__name__)

WEIGHTS_FILE = "model.safetensors"
_TORCH_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model config."""


class ShapeMismatchError(CheckpointError):
    """A tensor in the checkpoint has another shape than the config's model expects."""

    def __init__(self, key: str, checkpoint_shape: tuple[int, ...], model_shape: tuple[int, ...]) -> None:
        self.key, self.checkpoint_shape, self.model_shape = key, checkpoint_shape, model_shape
        super().__init__(
            f"{key}: checkpoint has shape {list(checkpoint_shape)} but the config expects {list(model_shape)}; "
            "pass the config the checkpoint was trained with (--config NAME or a config.json)"
        )


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` file or a torch/Lightning checkpoint, keys as the reference names them."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint file at {path}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(str(path), device="cpu")
        except SafetensorError as exc:
            raise CheckpointError(f"{path} is not a readable safetensors file: {exc}") from None
    else:
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, TypeError) as exc:
            # weights_only refusals and corrupt files raise various types; all mean the same to the user
            raise CheckpointError(
                f"{path} could not be read as a tensors-only torch checkpoint ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else ''}); re-save it as .safetensors"
            ) from None
        if not isinstance(data, dict):
            raise CheckpointError(f"{path} holds a {type(data).__name__}, expected a state dict")
        state = data.get("state_dict", data)
    state = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    # A training wrapper that holds the model as ``self.model`` saves ``model.net...``; accept that too.
    wrapped = state and all(k.startswith("model.") for k in state)
    if wrapped and not any(k.startswith(("net.", "lm_head")) for k in state):
        state = {k.removeprefix("model."): v for k, v in state.items()}
    return state


def check_state_dict(model: MIDIModel, state: dict[str, torch.Tensor]) -> None:
    """Strict key and shape check; raises naming the first mismatching key."""
    expected = model.state_dict()
    for key, tensor in expected.items():  # model order, so the first layer's mismatch is named first
        if key in state and tuple(state[key].shape) != tuple(tensor.shape):
            raise ShapeMismatchError(key, tuple(state[key].shape), tuple(tensor.shape))
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (first: {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (first: {', '.join(unexpected[:3])})")
        raise CheckpointError(
            f"checkpoint keys do not match the model: {'; '.join(parts)}; "
            "is this a SkyTNT midi-model checkpoint of the given config?"
        )


def guess_config(state: dict[str, torch.Tensor]) -> MIDIModelConfig:
    """The named config whose tensor shapes all match ``state`` (tokenizer-optimised variants first).

    Shapes cannot tell ``tv2`` from ``tv2o``; published checkpoints are mostly ``tv2o``, so it is preferred.
    """
    names = sorted(CONFIG_NAMES, key=lambda n: not n.split("-")[0].endswith("o"))
    for name in names:
        config = MIDIModelConfig.from_name(name)
        with torch.device("meta"):
            expected = MIDIModel(config).state_dict()
        if expected.keys() == state.keys() and all(
            tuple(state[k].shape) == tuple(t.shape) for k, t in expected.items()
        ):
            log.warning("no config given: shapes match %s, using it (pass --config to choose)", name)
            return config
    raise CheckpointError(
        "no config given and the checkpoint's shapes match no named config: pass --config NAME "
        f"({', '.join(CONFIG_NAMES)}) or a config.json"
    )


def merge_lora(model: MIDIModel, adapter: str | Path) -> MIDIModel:
    """Merge a PEFT LoRA adapter folder (``adapter_config.json`` + weights) into the model's weights."""
    from peft import LoraConfig, LoraModel, load_peft_weights, set_peft_model_state_dict

    adapter = Path(adapter)
    if not (adapter / "adapter_config.json").is_file():
        raise CheckpointError(f"{adapter} is not a PEFT adapter folder (no adapter_config.json)")
    peft_config = LoraConfig.from_pretrained(str(adapter))
    lora = LoraModel(model, peft_config, adapter_name="default")
    weights = load_peft_weights(str(adapter), device="cpu")
    result = set_peft_model_state_dict(model, weights, adapter_name="default")
    if result.unexpected_keys:
        raise CheckpointError(
            f"LoRA adapter {adapter} does not fit the model: {len(result.unexpected_keys)} unexpected keys "
            f"(first: {result.unexpected_keys[0]})"
        )
    return lora.merge_and_unload()


def load_model(
    path: str | Path,
    config: MIDIModelConfig | str | Path | None = None,
    lora: str | Path | None = None,
) -> MIDIModel:
    """Load a MIDIModel (eval mode, CPU, float32) from a checkpoint file or an HF-style folder.

    ``config`` is a config object, a name such as ``tv2o-medium`` or a config.json path; when omitted it is
    read from ``config.json`` in (or beside) ``path``, else guessed from the tensor shapes.
    """
    path = Path(path)
    if path.is_dir():
        if (path / "adapter_config.json").is_file() and not (path / CONFIG_FILE).is_file():
            raise CheckpointError(
                f"{path} is a LoRA adapter: load the base model and pass the adapter as lora"
            )
        weights = path / WEIGHTS_FILE
        if not weights.is_file():
            candidates = sorted(p for p in path.iterdir() if p.suffix in (".safetensors", *_TORCH_SUFFIXES))
            if not candidates:
                raise CheckpointError(f"{path} holds no {WEIGHTS_FILE} or .ckpt file")
            weights = candidates[0]
        config_dir = path
    elif path.is_file():
        weights, config_dir = path, path.parent
    else:
        raise CheckpointError(f"no model at {path}")
    state = read_state_dict(weights)
    if config is not None:
        resolved = MIDIModelConfig.resolve(config)
    elif (config_dir / CONFIG_FILE).is_file():
        try:
            resolved = MIDIModelConfig.load(config_dir)
        except ConfigError:
            resolved = guess_config(state)
    else:
        resolved = guess_config(state)
    model = MIDIModel(resolved)
    check_state_dict(model, state)
    # Checkpoints may be bf16/fp16 (HF uploads are bf16); load_state_dict copies into the fp32 parameters.
    model.load_state_dict(state, strict=True)
    if lora is not None:
        model = merge_lora(model, lora)
    return model.float().eval()


def save_pretrained(model: MIDIModel, folder: str | Path) -> Path:
    """Write ``config.json`` + ``model.safetensors`` (the reference's HF layout); returns the folder."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.config.save(folder)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(folder / WEIGHTS_FILE), metadata={"format": "pt"})
    return folder
