"""``musebot serve --precision``: the flag reaches the engine a mode loads, and a bad choice is a clear error."""

from __future__ import annotations

from pathlib import Path

import pytest

from musebot.cli import build_parser
from musebot.realtime.config import ServeConfig
from musebot.realtime.errors import RealtimeError
from musebot.realtime.modes.base import load_engine
from musebot.serve import config_from_args

SHIPPED = Path(__file__).resolve().parents[1] / "musebot" / "assets" / "model"


def test_serve_flag_sets_the_precision_of_the_session_config():
    args = build_parser().parse_args(["serve", "--precision", "int8"])
    assert config_from_args(args).precision == "int8"
    assert config_from_args(build_parser().parse_args(["serve"])).precision is None


def test_serve_refuses_an_unknown_precision(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--precision", "int9"])
    assert "--precision" in capsys.readouterr().err
    with pytest.raises(ValueError, match="--precision must be"):
        ServeConfig(precision="int9").validate()


def test_a_mode_loads_the_precision_asked_for_and_names_what_is_missing():
    assert load_engine(str(SHIPPED), "int8").precision == "int8"
    assert load_engine(str(SHIPPED)).precision == "int8"  # the CPU default
    # The shipped folder carries only int8 graphs: asking for int4 says how to make them.
    with pytest.raises(RealtimeError, match="no int4 graphs.*musebot export"):
        load_engine(str(SHIPPED), "int4")
