"""The tiny reference checkpoint exported to ONNX once per test process (worker, demo and daemon tests)."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

_exported: dict[str, Path] = {}


def exported_reference_model(reference_dir: Path) -> Path:
    """``tests/data/reference/sky_shared`` exported with ``musebot.export`` (a real engine's input)."""
    if "dir" not in _exported:
        from musebot.export.onnx_export import export_onnx

        out = Path(tempfile.mkdtemp(prefix="musebot-sky-onnx-"))
        atexit.register(shutil.rmtree, out, True)
        export_onnx(reference_dir / "sky_shared", out)
        _exported["dir"] = out
    return _exported["dir"]
