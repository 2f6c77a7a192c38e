"""Bad MIDI input: a clear error naming the file and the problem, or a documented clamp; never a traceback."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import mido
import pytest

from musebot.tokenizers import MidiFileError, MIDITokenizer, load_score

GOOD = Path(__file__).parent / "data" / "reference" / "midi" / "folk_lot.mid"


def write(path: Path, *tracks: list, tpb: int = 480) -> Path:
    midi = mido.MidiFile(ticks_per_beat=tpb)
    for messages in tracks:
        midi.tracks.append(mido.MidiTrack(messages))
    midi.save(str(path))
    return path


def notes(rows, tok) -> list:
    return [tok.row_to_event(r) for r in rows if tok.row_to_event(r) and tok.row_to_event(r)[0] == "note"]


@pytest.mark.parametrize("content,problem", [
    (b"", "empty file"),
    (b"RIFF....WAVEfmt ", "not a MIDI file"),
    (GOOD.read_bytes()[:60], "truncated"),
    (b"MThd\x00\x00\x00\x06\x00\x01\x00\x01\x00\x00MTrk\x00\x00\x00\x04\x00\xff\x2f\x00", "ticks per beat is 0"),
])
def test_unreadable_files_get_a_clear_error(tmp_path: Path, content: bytes, problem: str):
    path = tmp_path / "bad.mid"
    path.write_bytes(content)
    with pytest.raises(MidiFileError, match=problem) as info:
        load_score(path)
    assert str(path) in str(info.value)


def test_the_cli_says_which_file_is_bad_and_goes_on_with_the_others(tmp_path: Path):
    bad = tmp_path / "broken.mid"
    bad.write_bytes(GOOD.read_bytes()[:60])
    result = subprocess.run([sys.executable, "-m", "musebot", "tokenize", str(bad), str(GOOD)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1
    assert "broken.mid: truncated" in result.stderr and "Traceback" not in result.stderr
    assert "folk_lot.mid: 47 rows" in result.stdout


def test_running_status_is_read(tmp_path: Path):
    # One note-on status byte followed by data pairs only: note on 60, note on 64 (running), offs by vel 0.
    track = bytes([0x00, 0x90, 60, 100, 0x00, 64, 100, 0x83, 0x60, 60, 0, 0x00, 64, 0, 0x00, 0xFF, 0x2F, 0x00])
    data = b"MThd" + (6).to_bytes(4, "big") + b"\x00\x00\x00\x01\x01\xe0" + b"MTrk" + \
        len(track).to_bytes(4, "big") + track
    path = tmp_path / "running.mid"
    path.write_bytes(data)
    score = load_score(path)
    assert sorted(e[4] for e in score[1] if e[0] == "note") == [60, 64]
    assert all(e[2] == 480 for e in score[1] if e[0] == "note")


def test_300_tracks_are_read_and_the_first_128_tokenized(tmp_path: Path):
    tracks = [[mido.Message("note_on", note=60 + i % 12, velocity=80, channel=i % 16, time=i * 10),
               mido.Message("note_off", note=60 + i % 12, channel=i % 16, time=240)] for i in range(300)]
    score = load_score(write(tmp_path / "many.mid", *tracks))
    assert len(score) == 301
    tok = MIDITokenizer("v2", optimise=False)
    rows = tok.tokenize(score)
    tracks_seen = {e[3] for e in (tok.row_to_event(r) for r in rows) if e and e[0] == "note"}
    assert max(tracks_seen) == 127  # documented clamp: tracks past the 128th are not tokenized


@pytest.mark.parametrize("tempo", [0, 1, 16_777_215])
def test_absurd_tempos_are_skipped_or_clamped(tmp_path: Path, tempo: int):
    path = write(tmp_path / "tempo.mid", [mido.MetaMessage("set_tempo", tempo=tempo),
                                          mido.Message("note_on", note=60, velocity=90),
                                          mido.Message("note_off", note=60, time=480)])
    tok = MIDITokenizer("v2", optimise=True)
    events = [tok.row_to_event(r) for r in tok.tokenize(load_score(path))]
    tempos = [e[4] for e in events if e and e[0] == "set_tempo"]
    assert tempos == {0: [], 1: [383], 16_777_215: []}[tempo]  # 0 skipped; 60e6 bpm clamped; 3.6 bpm -> 3 < eps
    assert len([e for e in events if e and e[0] == "note"]) == 1


def test_zero_length_notes_and_orphan_note_offs(tmp_path: Path):
    path = write(tmp_path / "odd.mid", [
        mido.Message("note_off", note=50, time=0),  # a note-off without a note-on: ignored
        mido.Message("note_on", note=60, velocity=90, time=0),
        mido.Message("note_off", note=60, time=0),  # zero length: kept as the shortest note (1/16 beat)
        mido.Message("note_on", note=62, velocity=90, time=480),
        mido.Message("note_off", note=62, time=480),
        mido.Message("note_on", note=64, velocity=90, time=0),  # never ended: ends at the track's end
        mido.MetaMessage("end_of_track", time=960),
    ])
    score = load_score(path)
    assert sorted((e[4], e[2]) for e in score[1] if e[0] == "note") == [(60, 0), (62, 480), (64, 960)]
    tok = MIDITokenizer("v2", optimise=True)
    durations = {e[5]: e[7] for e in notes(tok.tokenize(score), tok)}
    assert durations == {60: 1, 62: 16, 64: 32}


def test_a_two_hour_gap_is_reported_not_hung(tmp_path: Path):
    gap_ticks = 480 * 120 * 120  # two hours at 120 bpm
    path = write(tmp_path / "gap.mid", [
        mido.Message("note_on", note=60, velocity=90), mido.Message("note_off", note=60, time=480),
        mido.Message("note_on", note=62, velocity=90, time=gap_ticks),
        mido.Message("note_off", note=62, time=480),
    ])
    tok = MIDITokenizer("v2", optimise=True)
    started = time.monotonic()
    rows = tok.tokenize(load_score(path))
    assert time.monotonic() - started < 5
    # Reference behaviour: an event more than 127 beats after the previous one cannot be expressed; it is
    # dropped and counted, and the command line warns about it.
    assert [e[5] for e in notes(rows, tok)] == [60]
    assert tok.dropped_events == 1
    result = subprocess.run([sys.executable, "-m", "musebot", "tokenize", str(path)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0 and "1 events dropped" in result.stderr


def test_detokenize_skips_garbage_rows():
    tok = MIDITokenizer("v2", optimise=True)
    rows = [[1, 0, 0, 0, 0, 0, 0, 0], [3, 9, 141, 2202, 2329, 2405, 2573, 161], [3, 5000, 0, 0, 0, 0, 0, 0],
            [9999, 1, 2, 3, 4, 5, 6, 7], [3, 9, 141], [2, 0, 0, 0, 0, 0, 0, 0]]
    score = tok.detokenize(rows)
    assert [e for tr in score[1:] for e in tr] == [["note", 120, 240, 0, 60, 100]]


def test_detokenize_cli_rejects_malformed_json(tmp_path: Path):
    rows = tmp_path / "rows.json"
    rows.write_text('{"a": [[1, "x"]]}')
    result = subprocess.run([sys.executable, "-m", "musebot", "detokenize", str(rows), "--out",
                             str(tmp_path / "o.mid")], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2 and "expected a list of rows of integers" in result.stderr
