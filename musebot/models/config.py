"""Model configuration: the tokenizer dict and the two Llama configs of a SkyTNT midi-model.

Implements shared/spec/skytnt-format.md section 3.1 (``MIDIModelConfig.get_config`` / ``from_name``) and the
Hugging Face ``config.json`` layout of section 3.5 (model_type "midi_model", ``tokenizer``, ``net_config``,
``net_token_config``). The event-level net has ``n_layer`` layers of ``n_head`` heads; the intra-event net
has a quarter of the layers, heads and MLP width.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import LlamaConfig

from musebot.tokenizers.vocab import Vocabulary

MODEL_TYPE = "midi_model"
CONFIG_FILE = "config.json"


class ConfigError(ValueError):
    """A model config that cannot be built or read (unknown name, malformed config.json)."""


@dataclass(frozen=True)
class ModelSize:
    """The four numbers that size both nets (reference ``get_config`` arguments)."""

    n_layer: int
    n_head: int
    n_embd: int
    n_inner: int


# The reference's sizes (spec 3.1) plus our own small presets for CPU real-time use.
SIZES: dict[str, ModelSize] = {
    "tiny": ModelSize(n_layer=4, n_head=4, n_embd=64, n_inner=256),
    "small": ModelSize(n_layer=8, n_head=4, n_embd=256, n_inner=1024),
    "base": ModelSize(n_layer=8, n_head=8, n_embd=512, n_inner=2048),
    "medium": ModelSize(n_layer=12, n_head=16, n_embd=1024, n_inner=4096),
    "large": ModelSize(n_layer=24, n_head=16, n_embd=1024, n_inner=4096),
}
# The reference's ``config_name_list``.
REFERENCE_CONFIG_NAMES = ["tv1-medium", "tv2-medium", "tv2o-medium", "tv2-large", "tv2o-large"]
CONFIG_NAMES = REFERENCE_CONFIG_NAMES + ["tv2o-tiny", "tv2o-small", "tv2o-base"]


def _llama_config(vocab: Vocabulary, n_layer: int, n_head: int, n_embd: int, n_inner: int) -> LlamaConfig:
    # Same arguments as the reference; everything else stays at the LlamaConfig defaults (spec 3.1).
    return LlamaConfig(
        vocab_size=vocab.vocab_size,
        hidden_size=n_embd,
        num_attention_heads=n_head,
        num_hidden_layers=n_layer,
        intermediate_size=n_inner,
        pad_token_id=vocab.pad_id,
        max_position_embeddings=4096,
        use_cache=False,
    )


@dataclass
class MIDIModelConfig:
    """Tokenizer dict plus the Llama configs of ``net`` (event level) and ``net_token`` (intra-event)."""

    tokenizer: dict[str, Any]
    net: LlamaConfig
    net_token: LlamaConfig
    name: str = ""
    # musebot's own key (absent from reference configs): trained only on pieces in C major / A minor, so
    # the real-time path moves the musician's key there and the model's answers back.
    key_normalised: bool = False

    # ---- construction -------------------------------------------------------------------------------
    @classmethod
    def from_sizes(
        cls,
        tokenizer_version: str = "v2",
        optimise_midi: bool = True,
        n_layer: int = 12,
        n_head: int = 16,
        n_embd: int = 1024,
        n_inner: int = 4096,
        name: str = "",
    ) -> MIDIModelConfig:
        """The reference's ``MIDIModelConfig.get_config`` (spec 3.1)."""
        if n_layer < 4 or n_head < 4 or n_layer % 4 or n_head % 4:
            raise ConfigError(
                f"n_layer={n_layer}, n_head={n_head}: both must be multiples of 4 (net_token uses a quarter)"
            )
        if n_embd % n_head:
            raise ConfigError(f"n_embd={n_embd} is not divisible by n_head={n_head}")
        vocab = Vocabulary.for_version(tokenizer_version)
        return cls(
            tokenizer=vocab.to_dict(optimise_midi),
            net=_llama_config(vocab, n_layer, n_head, n_embd, n_inner),
            net_token=_llama_config(vocab, n_layer // 4, n_head // 4, n_embd, n_inner // 4),
            name=name,
        )

    @classmethod
    def from_name(cls, name: str) -> MIDIModelConfig:
        """A named config ``t<v1|v2>[o]-<size>``, e.g. ``tv2o-medium`` (reference ``from_name``)."""
        try:
            tv, size = name.split("-")
            version = tv[1:].removesuffix("o")
            optimise = tv.endswith("o")
            dims = SIZES[size]
            if not tv.startswith("t") or version not in ("v1", "v2"):
                raise KeyError(tv)
        except (ValueError, KeyError):
            raise ConfigError(
                f"unknown model config {name!r}: use one of {', '.join(CONFIG_NAMES)}"
            ) from None
        return cls.from_sizes(
            version, optimise, dims.n_layer, dims.n_head, dims.n_embd, dims.n_inner, name=name
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MIDIModelConfig:
        """Read the reference's HF ``config.json`` dict."""
        missing = [k for k in ("tokenizer", "net_config", "net_token_config") if k not in data]
        if missing:
            raise ConfigError(f"model config lacks {missing}: expected a SkyTNT midi_model config.json")
        if data.get("model_type", MODEL_TYPE) != MODEL_TYPE:
            raise ConfigError(f"model_type is {data['model_type']!r}, expected {MODEL_TYPE!r}")
        tokenizer = dict(data["tokenizer"])
        # Old reference configs store only version/optimise_midi; rebuild the full dict from the vocabulary.
        full = Vocabulary.for_version(tokenizer["version"]).to_dict(
            bool(tokenizer.get("optimise_midi", False))
        )
        full.update(tokenizer)
        return cls(
            tokenizer=full,
            net=LlamaConfig(**data["net_config"]),
            net_token=LlamaConfig(**data["net_token_config"]),
            name=str(data.get("config_name", "")),
            key_normalised=bool(data.get("key_normalised", False)),
        )

    @classmethod
    def load(cls, path: str | Path) -> MIDIModelConfig:
        """Load ``config.json`` (or the folder holding it)."""
        path = Path(path)
        if path.is_dir():
            path = path / CONFIG_FILE
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"no model config at {path}") from None
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path} is not valid JSON: {exc}") from None
        return cls.from_dict(data)

    @classmethod
    def resolve(cls, config: MIDIModelConfig | str | Path) -> MIDIModelConfig:
        """A config object, a config name, or a path to a config.json / folder."""
        if isinstance(config, MIDIModelConfig):
            return config
        if isinstance(config, str) and config in CONFIG_NAMES:
            return cls.from_name(config)
        if Path(config).exists():
            return cls.load(config)
        return cls.from_name(str(config))

    def named(self) -> str:
        """The config's name, or the named config with the same tokenizer and sizes, or "custom"."""
        if self.name:
            return self.name
        for name in CONFIG_NAMES:
            other = MIDIModelConfig.from_name(name)
            same_tokenizer = all(
                self.tokenizer.get(k) == other.tokenizer[k] for k in ("version", "optimise_midi")
            )
            same_nets = all(
                MIDIModelConfig.net_shape(mine) == MIDIModelConfig.net_shape(theirs)
                and mine.intermediate_size == theirs.intermediate_size
                for mine, theirs in ((self.net, other.net), (self.net_token, other.net_token))
            )
            if same_tokenizer and same_nets:
                return name
        return "custom"

    # ---- serialisation ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The reference's HF ``config.json`` layout (also what PEFT reads as ``model.config``)."""
        data: dict[str, Any] = {
            "architectures": ["MIDIModel"],
            "model_type": MODEL_TYPE,
            "n_embd": self.n_embd,
            "tokenizer": dict(self.tokenizer),
            "net_config": self.net.to_dict(),
            "net_token_config": self.net_token.to_dict(),
        }
        if self.name:
            data["config_name"] = self.name
        if self.key_normalised:
            data["key_normalised"] = True
        return data

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / CONFIG_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
        return path

    def reference_str(self) -> str:
        """The reference's ``str(config)``: JSON of both Llama configs (stored as ONNX metadata ``config``)."""
        return json.dumps(
            {
                "net": self.net.to_json_string(use_diff=False),
                "net_token": self.net_token.to_json_string(use_diff=False),
            },
            indent=4,
        )

    # ---- derived sizes ------------------------------------------------------------------------------
    @property
    def n_embd(self) -> int:
        return int(self.net_token.hidden_size)

    @property
    def vocab_size(self) -> int:
        return int(self.tokenizer["vocab_size"])

    @property
    def vocab(self) -> Vocabulary:
        return Vocabulary.for_version(self.tokenizer["version"])

    @staticmethod
    def net_shape(net: LlamaConfig) -> dict[str, int]:
        """Layer count and KV-cache geometry of one net (what an ONNX runtime must allocate)."""
        head_dim = getattr(net, "head_dim", None) or net.hidden_size // net.num_attention_heads
        return {
            "n_layer": int(net.num_hidden_layers),
            "n_head": int(net.num_attention_heads),
            "n_kv_head": int(getattr(net, "num_key_value_heads", None) or net.num_attention_heads),
            "head_dim": int(head_dim),
            "hidden_size": int(net.hidden_size),
        }
