"""The torch side of musebot: the SkyTNT-compatible model, its configs and checkpoint I/O (imports torch)."""

from musebot.models.checkpoint import (
    CheckpointError,
    ShapeMismatchError,
    load_model,
    read_state_dict,
    save_pretrained,
)
from musebot.models.config import CONFIG_NAMES, ConfigError, MIDIModelConfig
from musebot.models.model import MIDIModel

__all__ = [
    "CONFIG_NAMES",
    "CheckpointError",
    "ConfigError",
    "MIDIModel",
    "MIDIModelConfig",
    "ShapeMismatchError",
    "load_model",
    "read_state_dict",
    "save_pretrained",
]
