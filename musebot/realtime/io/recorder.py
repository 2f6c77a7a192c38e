"""Session recording: both sides of the duet to a Standard MIDI File, with the seed and settings.

Track 0 holds the tempo and a text meta event with the session's JSON (seed, settings, model); track 1 is
the musician, track 2 musebot. The same JSON is written beside the file (``FILE.mid.json``) so a session
can be replayed offline with the same seed (``musebot demo --replay FILE.mid``).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import mido

from musebot.realtime import midi

TICKS_PER_BEAT = 480
PARTS = ("musician", "musebot")


class SessionRecorder:
    """Collects ``(time, part, message)`` from any thread; :meth:`save` writes the MIDI file."""

    def __init__(self, bpm: float) -> None:
        self.bpm = bpm
        self._events: list[tuple[float, int, midi.Message]] = []
        self._lock = threading.Lock()

    def add(self, t: float, part: str, msg: midi.Message) -> None:
        with self._lock:
            self._events.append((t, PARTS.index(part), msg))

    def events(self, part: str | None = None) -> list[tuple[float, midi.Message]]:
        with self._lock:
            return [(t, m) for t, p, m in self._events if part is None or PARTS[p] == part]

    def __len__(self) -> int:
        return len(self._events)

    def save(self, path: str | Path, meta: dict, origin: float | None = None) -> Path:
        """Write the session; times are counted from ``origin`` (default: the first event)."""
        path = Path(path)
        with self._lock:
            events = sorted(self._events, key=lambda e: e[0])
        if origin is None:
            origin = events[0][0] if events else 0.0
        ticks_per_second = TICKS_PER_BEAT * self.bpm / 60.0
        midi_file = mido.MidiFile(type=1, ticks_per_beat=TICKS_PER_BEAT)
        meta_track = mido.MidiTrack()
        meta_track.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(self.bpm), time=0))
        text = "musebot session " + json.dumps(meta, sort_keys=True)
        meta_track.append(mido.MetaMessage("text", text=text))
        midi_file.tracks.append(meta_track)
        for index, name in enumerate(PARTS):
            track = mido.MidiTrack()
            track.append(mido.MetaMessage("track_name", name=name, time=0))
            last = 0
            for t, part, msg in events:
                if part != index:
                    continue
                tick = max(0, round((t - origin) * ticks_per_second))
                track.append(mido.Message.from_bytes(list(msg), time=tick - last))
                last = tick
            midi_file.tracks.append(track)
        path.parent.mkdir(parents=True, exist_ok=True)
        midi_file.save(path)
        Path(str(path) + ".json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        return path


def read_session_meta(path: str | Path) -> dict:
    """The JSON a :class:`SessionRecorder` stored in the file's text meta event (``{}`` if none)."""
    for track in mido.MidiFile(path).tracks:
        for msg in track:
            if msg.type == "text" and msg.text.startswith("musebot session "):
                return json.loads(msg.text[len("musebot session "):])
    return {}
