"""The real-time commands from the outside: ``musebot ports`` and ``musebot serve`` without a MIDI system,
with bad arguments, and ``musebot bench-realtime`` end to end over its own JACK server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from musebot.cli import main
from musebot.realtime.io.system import NO_MIDI_SYSTEM
from tests._jack import jack_server, requires_jackd

NO_JACK = {"JACK_DEFAULT_SERVER": "musebot-no-such-server", "JACK_NO_START_SERVER": "1"}


def musebot(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "musebot", *args]
    environment = dict(os.environ, **(env or {}))
    return subprocess.run(
        command, check=False, capture_output=True, text=True, env=environment, timeout=timeout
    )


def test_ports_without_a_midi_system_says_what_to_start():
    result = musebot("ports", env=NO_JACK)
    assert result.returncode == 0
    assert "jack: not available: no JACK server running" in result.stdout
    assert "No MIDI system found: start JACK (jackd -d dummy) or install ALSA" in result.stdout


@requires_jackd
def test_ports_lists_musebot_ports_with_their_midi_system():
    from musebot.realtime.io.outputs import RtMidiOutput
    from musebot.realtime.io.system import api_id

    with jack_server("-cli") as server:
        port = RtMidiOutput(api_id("jack"), "some-synth", "out", virtual=True)
        try:
            result = musebot("ports", "--api", "jack", env={"JACK_DEFAULT_SERVER": server.name})
        finally:
            port.close()
    assert result.returncode == 0
    assert result.stdout.splitlines()[0] == "jack:"
    assert "    some-synth:out" in result.stdout


def test_serve_without_a_midi_system_runs_through_fluidsynth_and_stops_on_sigterm(tmp_path):
    wav = tmp_path / "out.wav"
    process = subprocess.Popen(
        [sys.executable, "-m", "musebot", "serve", "--output", "fluidsynth", "--fluidsynth-driver", "file",
         "--fluidsynth-file", str(wav)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=dict(os.environ, **NO_JACK),
    )
    try:
        deadline = time.monotonic() + 30
        lines = []
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            lines.append(line)
            if "serving in mode" in line or not line:
                break
        process.send_signal(signal.SIGTERM)
        rest, _ = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
    output = "".join(lines) + rest
    assert NO_MIDI_SYSTEM in output
    assert "serving in mode 'call'" in output
    assert process.returncode == 0, output


def test_serve_without_any_usable_output_fails_with_one_clear_line():
    result = musebot("serve", env=NO_JACK)
    assert result.returncode == 2
    assert "add --output fluidsynth" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["serve", "--bpm", "5"], "--bpm must be between 20 and 400"),
        (["serve", "--api", "alsa"], "MIDI system 'alsa' cannot be used"),
        (["serve", "--model", "/nonexistent", "--output", "fluidsynth"], "no config.json here"),
        (["serve", "--output", "fluidsynth", "--soundfont", "/nonexistent.sf2"], "does not exist"),
        (["serve", "--cc-panic", "300"], "controller numbers are 0..127"),
    ],
)
def test_bad_serve_arguments_get_a_clear_error(args, message, capsys, monkeypatch):
    for key, value in NO_JACK.items():
        monkeypatch.setenv(key, value)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


@requires_jackd
def test_bench_realtime_measures_every_figure_over_its_own_jack_server():
    from argparse import Namespace

    from musebot.bench.realtime import run_realtime_bench

    figures = run_realtime_bench(Namespace(notes=1000, model=None, bpm=120.0, phrases=2, jack_server=None))
    assert figures["scheduling"]["messages_sent"] == 2000
    assert figures["scheduling"]["abs_sent_minus_due"]["n"] == 2000
    # What the probe client hears: on a loaded machine JACK may drop a few events at a slow client.
    assert figures["scheduling"]["arrivals"] >= 950
    assert figures["thru"]["received"] >= 0.95 * figures["thru"]["notes"]
    assert figures["answer"]["answerer"] == "echo" and figures["answer"]["missing"] == 0
    assert figures["answer"]["takeover_missing"] == 0
    assert "no --model" in figures["generation"]
