"""Standard MIDI files <-> the MIDI.score structure (shared/spec/skytnt-format.md section 1).

A score is ``[ticks_per_beat, track0, track1, ...]``; each track is a list of events with absolute times in
ticks, and notes carry a duration: ``['note', start, duration, channel, pitch, velocity]``. Files are parsed
with mido; the note pairing follows MIDI.py's ``opus2score`` exactly, because the order of events inside a
track decides the order of equal-time events in the token sequence:

* a note-on with velocity 0 counts as a note-off;
* a note-off closes the oldest pending note-on of the same (channel, pitch) (FIFO);
* a note enters the track when it ends, not when it starts; note-offs without a note-on are ignored;
* notes still sounding at the end of their track end at the track's last tick, in order of first use of
  their (channel, pitch).
"""

from __future__ import annotations

import io
import math
import os
from collections import defaultdict
from pathlib import Path

import mido

Score = list  # [ticks_per_beat, track, track, ...]

# Documented clamps for pathological files: a score keeps at most this many tracks (the tokenizer reads only
# the first 128 anyway) and this many events in all, so that a hostile file cannot exhaust memory.
MAX_TRACKS = 1024
MAX_EVENTS = 5_000_000

_TEXT_EVENTS = {
    "text": "text_event",
    "copyright": "copyright_text_event",
    "track_name": "track_name",
    "instrument_name": "instrument_name",
    "lyrics": "lyric",
    "marker": "marker",
    "cue_marker": "cue_point",
}


class MidiFileError(ValueError):
    """A file that cannot be read as a standard MIDI file; the message names the file and the problem."""


def load_score(source: str | os.PathLike | bytes) -> Score:
    """Read a standard MIDI file (a path or its bytes) into a score."""
    name = "<bytes>" if isinstance(source, (bytes, bytearray)) else str(source)
    try:
        data = bytes(source) if isinstance(source, (bytes, bytearray)) else Path(source).read_bytes()
    except OSError as exc:
        raise MidiFileError(f"{name}: cannot read file: {exc.strerror or exc}") from exc
    if len(data) == 0:
        raise MidiFileError(f"{name}: empty file, not a MIDI file")
    if not data.startswith(b"MThd"):
        raise MidiFileError(f"{name}: not a MIDI file (no MThd header)")
    try:
        # clip=True: data bytes above 127 in a corrupt file are clamped to 127 instead of failing the file.
        midi = mido.MidiFile(file=io.BytesIO(data), clip=True)
    except EOFError as exc:
        raise MidiFileError(f"{name}: truncated MIDI file ({exc or 'unexpected end of data'})") from exc
    except (OSError, ValueError, KeyError, IndexError, TypeError, mido.KeySignatureError) as exc:
        raise MidiFileError(f"{name}: malformed MIDI file: {exc}") from exc
    if midi.ticks_per_beat <= 0:
        raise MidiFileError(f"{name}: ticks per beat is {midi.ticks_per_beat}; it must be positive")
    if len(midi.tracks) > MAX_TRACKS:
        raise MidiFileError(f"{name}: {len(midi.tracks)} tracks, more than the {MAX_TRACKS} musebot reads")
    score: Score = [midi.ticks_per_beat]
    total = 0
    for track in midi.tracks:
        events = _track_to_events(track)
        total += len(events)
        if total > MAX_EVENTS:
            raise MidiFileError(f"{name}: more than {MAX_EVENTS} events, too large to read")
        score.append(events)
    return score


def _track_to_events(track: mido.MidiTrack) -> list[list]:
    events: list[list] = []
    pending: dict[tuple[int, int], list[list]] = defaultdict(list)
    now = 0
    for msg in track:
        now += msg.time
        kind = msg.type
        if kind == "note_off" or (kind == "note_on" and msg.velocity == 0):
            waiting = pending.get((msg.channel, msg.note))
            if waiting:
                note = waiting.pop(0)
                note[2] = now - note[1]
                events.append(note)
        elif kind == "note_on":
            pending[(msg.channel, msg.note)].append(["note", now, 0, msg.channel, msg.note, msg.velocity])
        else:
            event = _other_event(msg, now)
            if event is not None:
                events.append(event)
    for waiting in pending.values():
        for note in waiting:
            note[2] = now - note[1]
            events.append(note)
    return events


def _other_event(msg: mido.Message, now: int) -> list | None:
    kind = msg.type
    if kind == "control_change":
        return ["control_change", now, msg.channel, msg.control, msg.value]
    if kind == "program_change":
        return ["patch_change", now, msg.channel, msg.program]
    if kind == "pitchwheel":
        return ["pitch_wheel_change", now, msg.channel, msg.pitch]
    if kind == "aftertouch":
        return ["channel_after_touch", now, msg.channel, msg.value]
    if kind == "polytouch":
        return ["key_after_touch", now, msg.channel, msg.note, msg.value]
    if kind == "set_tempo":
        return ["set_tempo", now, msg.tempo]
    if kind == "time_signature":
        # MIDI stores the denominator as a power of two; mido gives the denominator itself.
        return ["time_signature", now, msg.numerator, int(math.log2(msg.denominator)),
                msg.clocks_per_click, msg.notated_32nd_notes_per_beat]
    if kind == "key_signature":
        sf, mi = _KEY_TO_SF_MI[msg.key]
        return ["key_signature", now, sf, mi]
    if kind in _TEXT_EVENTS:
        text = msg.name if kind in ("track_name", "instrument_name") else msg.text
        return [_TEXT_EVENTS[kind], now, text.encode("latin-1", "replace")]
    if kind == "sysex":
        return ["sysex_f0", now, bytes(msg.data)]
    return None


def _key_table() -> dict[str, tuple[int, int]]:
    from mido.midifiles.meta import _key_signature_decode

    return {name: (sf, mi) for (sf, mi), name in _key_signature_decode.items()}


_KEY_TO_SF_MI = _key_table()
_SF_MI_TO_KEY = {v: k for k, v in _KEY_TO_SF_MI.items()}


def score_to_midi(score: Score) -> mido.MidiFile:
    """Build a mido MidiFile from a score (MIDI.py ``score2midi``: a note-off carries the note's velocity)."""
    tpb = int(score[0])
    midi = mido.MidiFile(type=0 if len(score) == 2 else 1, ticks_per_beat=tpb)
    for events in score[1:]:
        timed: list[tuple[int, int, mido.Message | mido.MetaMessage]] = []
        for order, event in enumerate(events):
            for time, msg in _event_to_messages(event):
                timed.append((max(0, int(time)), order, msg))
        # Stable by time; within one tick the event order of the score is kept (MIDI.py buckets by time).
        timed.sort(key=lambda item: (item[0], item[1]))
        track = mido.MidiTrack()
        last = 0
        for time, _, msg in timed:
            track.append(msg.copy(time=time - last))
            last = time
        track.append(mido.MetaMessage("end_of_track", time=0))
        midi.tracks.append(track)
    return midi


def _event_to_messages(event: list) -> list[tuple[int, mido.Message | mido.MetaMessage]]:
    kind, t = event[0], event[1]
    if kind == "note":
        _, start, duration, channel, pitch, velocity = event
        return [
            (start, mido.Message("note_on", channel=channel, note=pitch, velocity=velocity)),
            (start + duration, mido.Message("note_off", channel=channel, note=pitch, velocity=velocity)),
        ]
    if kind == "patch_change":
        return [(t, mido.Message("program_change", channel=event[2], program=event[3]))]
    if kind == "control_change":
        return [(t, mido.Message("control_change", channel=event[2], control=event[3], value=event[4]))]
    if kind == "pitch_wheel_change":
        return [(t, mido.Message("pitchwheel", channel=event[2], pitch=event[3]))]
    if kind == "channel_after_touch":
        return [(t, mido.Message("aftertouch", channel=event[2], value=event[3]))]
    if kind == "key_after_touch":
        return [(t, mido.Message("polytouch", channel=event[2], note=event[3], value=event[4]))]
    if kind == "set_tempo":
        return [(t, mido.MetaMessage("set_tempo", tempo=max(1, min(int(event[2]), 0xFFFFFF))))]
    if kind == "time_signature":
        nn, dd = event[2], event[3]
        cc, bb = (event[4], event[5]) if len(event) > 5 else (24, 8)
        return [(t, mido.MetaMessage("time_signature", numerator=nn, denominator=2**dd,
                                     clocks_per_click=cc, notated_32nd_notes_per_beat=bb))]
    if kind == "key_signature":
        key = _SF_MI_TO_KEY.get((event[2], event[3]))
        return [(t, mido.MetaMessage("key_signature", key=key))] if key else []
    for mido_kind, score_kind in _TEXT_EVENTS.items():
        if kind == score_kind:
            text = event[2].decode("latin-1") if isinstance(event[2], bytes) else str(event[2])
            field = "name" if mido_kind in ("track_name", "instrument_name") else "text"
            return [(t, mido.MetaMessage(mido_kind, **{field: text}))]
    if kind == "sysex_f0":
        return [(t, mido.Message("sysex", data=list(event[2])))]
    return []


def save_score(score: Score, path: str | os.PathLike) -> None:
    """Write a score as a standard MIDI file."""
    score_to_midi(score).save(str(path))


def score_to_bytes(score: Score) -> bytes:
    buffer = io.BytesIO()
    score_to_midi(score).save(file=buffer)
    return buffer.getvalue()
