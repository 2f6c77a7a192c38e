"""Which graphs of a model folder the engine runs: the precision folders and the default per provider.

An export (``musebot export``) holds the reference pair (fp32, SkyTNT's interface) beside ``config.json`` and
musebot's engine pairs in one folder per precision (``int8/``, ``int4/``, ``fp16/``, same file names). A folder
may lack the reference pair (the shipped model carries only the precision it runs). Unless told, the engine
takes the best precision the folder has for its provider: on a CPU the 8-bit blocks (measured as accurate as
fp32 within sampling noise and about twice as fast, see the shipped model's card), on CUDA fp16.
"""

from __future__ import annotations

import json
from pathlib import Path

from musebot.engine.runners import ModelLoadError

BASE_GRAPH, TOKEN_GRAPH, CONFIG_FILE = "model_base.onnx", "model_token.onnx", "config.json"
PRECISIONS = ("fp32", "fp16", "int8", "int4")
# Preference when no precision is asked for: int4 is never a default (its accuracy is a choice to make).
DEFAULT_ORDER = {"cpu": ("int8", "fp32", "int4", "fp16"), "cuda": ("fp16", "fp32", "int8", "int4")}


def _has_pair(folder: Path) -> bool:
    return (folder / BASE_GRAPH).is_file() and (folder / TOKEN_GRAPH).is_file()


def model_root(model_dir: str | Path) -> Path:
    """The folder with config.json: ``model_dir`` itself (graphs beside it or in ``onnx/``)."""
    root = Path(model_dir)
    if not (root / CONFIG_FILE).is_file():
        raise ModelLoadError(f"{root}: no {CONFIG_FILE} here; point --model at an exported model folder")
    return root


def available_precisions(model_dir: str | Path) -> dict[str, Path]:
    """Every precision with a graph pair in the folder, and the folder holding that pair."""
    root = model_root(model_dir)
    try:
        onnx_section = json.loads((root / CONFIG_FILE).read_text()).get("onnx", {})
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{root / CONFIG_FILE}: cannot read it ({exc})") from exc
    found: dict[str, Path] = {}
    folders = (root, root / "onnx")  # the Hugging Face layout keeps the graphs in onnx/
    reference = next((graphs for graphs in folders if _has_pair(graphs)), None)
    if reference is not None:
        # The reference pair's precision is in config.json (SkyTNT's own exports are fp32).
        found[onnx_section.get("precision") or "fp32"] = reference
    for graphs in folders:
        for precision in PRECISIONS:
            if precision not in found and _has_pair(graphs / precision):
                found[precision] = graphs / precision
    return found


def choose_precision(model_dir: str | Path, provider: str, precision: str | None = None) -> tuple[str, Path]:
    """(precision, graph folder) for ``provider`` ("cpu"/"cuda"): ``precision`` if given, else the best one."""
    found = available_precisions(model_dir)
    if not found:
        raise ModelLoadError(
            f"{model_dir}: no {BASE_GRAPH} and {TOKEN_GRAPH}; export the checkpoint to ONNX first (musebot export)"
        )
    if precision in (None, "auto"):
        precision = next(p for p in DEFAULT_ORDER[provider] if p in found)
    elif precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)} or 'auto', got {precision!r}")
    elif precision not in found:
        raise ModelLoadError(
            f"{model_dir}: no {precision} graphs (it has {', '.join(sorted(found))}); write them with "
            f"`musebot export CHECKPOINT --out DIR --precision {precision}`"
        )
    return precision, found[precision]
