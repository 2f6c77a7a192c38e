"""``musebot demo``: the built-in performance through the real-time pipeline gives a duet on disk
(MIDI with both parts and the seed, non-silent WAV from FluidSynth, piano-roll PNG), and a recorded session
replays to the same answer."""

from __future__ import annotations

import wave
from pathlib import Path

import mido
import numpy as np
import pytest

from musebot.cli import main
from musebot.realtime.io.recorder import read_session_meta
from tests._realtime_fixtures import exported_reference_model


def part_notes(path: Path, name: str) -> list[tuple[int, int]]:
    """(tick, pitch) of the note-ons of one part of a session file."""
    for track in mido.MidiFile(path).tracks:
        if any(m.type == "track_name" and m.name == name for m in track):
            tick, notes = 0, []
            for msg in track:
                tick += msg.time
                if msg.type == "note_on" and msg.velocity:
                    notes.append((tick, msg.note))
            return notes
    raise AssertionError(f"no {name} track in {path}")


def test_demo_with_echo_writes_a_duet_midi_a_non_silent_wav_and_a_piano_roll(tmp_path):
    assert main(["demo", "--out", str(tmp_path), "--bpm", "240", "--silence-beats", "1", "--answer", "echo"]) == 0
    midi_path, wav_path, png_path = (tmp_path / f"duet.{ext}" for ext in ("mid", "wav", "png"))
    musician, musebot = part_notes(midi_path, "musician"), part_notes(midi_path, "musebot")
    assert len(musician) == 14
    assert [p for _, p in musebot] == [p for _, p in musician]  # echo: each call played back
    assert read_session_meta(midi_path)["seed"] == 0
    with wave.open(str(wav_path)) as handle:
        audio = np.frombuffer(handle.readframes(handle.getnframes()), np.int16)
    assert np.abs(audio).max() > 1000
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_demo_with_no_arguments_is_answered_by_the_shipped_model(tmp_path):
    from musebot.engine.generate import DEFAULT_MODEL_DIR

    assert main(["demo", "--out", str(tmp_path), "--bpm", "240"]) == 0
    meta = read_session_meta(tmp_path / "duet.mid")
    assert meta["answer"] == "model" and meta["model"] == str(DEFAULT_MODEL_DIR.resolve())
    answer = part_notes(tmp_path / "duet.mid", "musebot")
    assert answer and all(21 <= p <= 108 for _, p in answer)


@pytest.fixture(scope="module")
def model_dir(reference_dir) -> Path:
    return exported_reference_model(reference_dir)


def test_a_recorded_session_replays_to_the_same_answer(tmp_path, model_dir):
    first, second = tmp_path / "first", tmp_path / "second"
    common = ["--bpm", "240", "--model", str(model_dir)]
    assert main(["demo", "--out", str(first), "--seed", "11", *common]) == 0
    assert main(["demo", "--out", str(second), "--replay", str(first / "duet.mid"), *common]) == 0
    assert read_session_meta(second / "duet.mid")["seed"] == 11
    assert part_notes(second / "duet.mid", "musician") == part_notes(first / "duet.mid", "musician")
    answer = part_notes(first / "duet.mid", "musebot")
    assert answer
    replayed = part_notes(second / "duet.mid", "musebot")
    assert [p for _, p in replayed] == [p for _, p in answer]
    # Same notes at the same times, up to the scheduler's jitter (a few ms = a few ticks at 480 per beat).
    assert all(abs(a - b) <= 20 for (a, _), (b, _) in zip(answer, replayed))
