"""``musebot eval --precision``: the model continues with the graphs asked for, exported from the weights when
the folder does not carry them (the shipped model ships int8 only)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from musebot.engine import Constraints, ModelLoadError
from musebot.eval.cli import open_engine

SHIPPED = Path(__file__).resolve().parents[1] / "musebot" / "assets" / "model"


def test_eval_opens_the_shipped_precision_and_exports_the_others(tmp_path):
    assert open_engine(SHIPPED, None, 1, tmp_path / "a").precision == "int8"
    int4 = open_engine(SHIPPED, "int4", 1, tmp_path / "b")
    assert int4.precision == "int4" and (tmp_path / "b" / "int4" / "model_token.onnx").is_file()
    fp32 = open_engine(SHIPPED, "fp32", 1, tmp_path / "c")
    assert fp32.precision == "fp32"
    # The exported graphs play: the same prompt gives a well-formed continuation at each precision.
    bos = np.array([fp32.vocab.special_row(fp32.vocab.bos_id)])
    for engine in (int4, fp32):
        engine.append(bos)
        rows = engine.generate(4, None, Constraints(allow_eos=False), np.random.default_rng(0))
        assert rows.shape == (1, 4, 8) and set(rows[0, :, 0]) <= set(engine.vocab.event_ids.values())


def test_eval_says_when_a_precision_cannot_be_made(tmp_path):
    folder = tmp_path / "graphs_only"
    folder.mkdir()
    (folder / "config.json").write_text((SHIPPED / "config.json").read_text())
    (folder / "int8").symlink_to(SHIPPED / "int8")
    with pytest.raises(ModelLoadError, match="no int4 graphs and no model.safetensors"):
        open_engine(folder, "int4", 1, tmp_path / "scratch")
