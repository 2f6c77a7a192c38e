"""``musebot serve --mode accompany|looper`` from the command line: a session with clock out and metronome
over JACK that stops cleanly on SIGTERM, and bad band arguments that get one clear line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from musebot.cli import main
from tests._jack import Musician, hanging_notes, jack_server, note_ons, requires_jackd
from tests._realtime_fixtures import exported_reference_model

NO_JACK = {"JACK_DEFAULT_SERVER": "musebot-no-such-server", "JACK_NO_START_SERVER": "1"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--mode", "accompany", "--model", "/nonexistent"], "no config.json here"),
        (["--mode", "accompany", "--parts", "bass,tuba", "--model", "x"], "unknown part 'tuba'"),
        (["--mode", "looper", "--parts", "drums"], "may name only those"),
        (["--mode", "looper", "--meter", "4/5"], "--meter 4/5"),
        (["--mode", "looper", "--count-in", "20"], "--count-in must be 0..8"),
        (["--mode", "looper", "--parts-config", "/nonexistent.toml"], "no such parts configuration"),
        (["--mode", "accompany", "--commit-beats", "0", "--model", "x"], "--commit-beats must be"),
        (["--mode", "looper", "--key", "H dur"], "use off, auto, or e.g. 'Eb major'"),
    ],
)
def test_bad_band_arguments_get_a_clear_error(args, message, capsys, monkeypatch):
    for key, value in NO_JACK.items():
        monkeypatch.setenv(key, value)
    assert main(["serve", "--output", "fluidsynth", "--fluidsynth-driver", "file", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


@requires_jackd
@pytest.mark.jack
def test_an_accompany_session_sends_clock_and_clicks_and_lets_go_of_everything_on_sigterm(reference_dir):
    model = exported_reference_model(reference_dir)
    with jack_server("-acli") as server:
        env = dict(os.environ, JACK_DEFAULT_SERVER=server.name, JACK_NO_START_SERVER="1")
        process = subprocess.Popen(
            [sys.executable, "-m", "musebot", "serve", "--mode", "accompany", "--model", str(model),
             "--parts", "bass,chords,drums", "--bpm", "150", "--clock-out", "--metronome", "--count-in", "1"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        )
        musician = None
        try:
            lines = []
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                line = process.stdout.readline()
                lines.append(line)
                if "serving in mode" in line or not line:
                    break
            musician = Musician()
            for pitch in (60, 64, 67, 72, 67, 64):
                musician.send(0x90, pitch, 90)
                time.sleep(0.2)
                musician.send(0x80, pitch, 0)
            time.sleep(1.0)
            process.send_signal(signal.SIGTERM)
            rest, _ = process.communicate(timeout=15)
            time.sleep(0.1)
            heard = musician.snapshot()
        finally:
            if process.poll() is None:
                process.kill()
            if musician is not None:
                musician.close()
    output = "".join(lines) + rest
    assert process.returncode == 0, output
    assert "serving in mode 'accompany' at 150 bpm" in output and "1 bar(s) count-in" in output
    assert "panic (shutdown)" in output and "Traceback" not in output
    messages = [m for _, m in heard]
    assert (0xFA,) in messages and messages.count((0xF8,)) >= 24  # start, then a beat's worth of clock
    assert (0xFC,) in messages or messages[-1][0] & 0xF0 == 0xB0  # stopped, or silenced by the panic
    clicks = [m for _, m in note_ons(heard) if m[0] == 0x99 and m[1] in (76, 77)]
    assert len(clicks) >= 4  # the count-in bar and the beats after it
    assert hanging_notes(heard) == set()
