"""Shared test fixtures: paths to the reference data copied from shared/reference."""

from __future__ import annotations

from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
REFERENCE = DATA / "reference"


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    return REFERENCE


@pytest.fixture(scope="session")
def reference_midis() -> list[Path]:
    return sorted((REFERENCE / "midi").glob("*.mid"))
