"""ONNX export of the SkyTNT-compatible model (imports torch; the real-time path never imports this).

``from musebot.export import export_onnx`` works lazily so that ``musebot.export.cli`` stays light.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name in ("export_onnx", "ExportError", "OnnxPair"):
        from musebot.export import onnx_export

        return getattr(onnx_export, name)
    raise AttributeError(f"module 'musebot.export' has no attribute {name!r}")
