"""Shared test fixtures: paths to the reference data copied from shared/reference; no daemon outlives its test."""

from __future__ import annotations

import sys
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


@pytest.fixture(autouse=True)
def _no_daemon_outlives_its_test(monkeypatch):
    """Close every in-process daemon a test started and left running. A test that fails before its
    ``finally`` (its musician could not open a JACK client, say) would leave the daemon serving in this
    process, and its health check reopens the ports on whichever server ``JACK_DEFAULT_SERVER`` names next:
    every later JACK test of the run then meets a second "musebot" on its server (one failure became ten
    in a loop run)."""
    module = sys.modules.get("musebot.realtime.daemon")  # imported by every test that starts a daemon
    if module is None:
        yield
        return
    started = []
    start = module.Daemon.start

    def start_and_note(daemon):
        started.append(daemon)
        return start(daemon)

    monkeypatch.setattr(module.Daemon, "start", start_and_note)
    yield
    for daemon in started:
        if not daemon.stop_event.is_set():
            daemon.close()


@pytest.fixture
def freezes():
    """A witness of the machine's own freezes (``tests/_stalls.py``) for a test of live timing."""
    from tests._stalls import Freezes

    witness = Freezes()
    yield witness
    print(witness.summary())
    witness.close()
