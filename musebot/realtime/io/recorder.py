"""Session recording: both sides of the duet to a Standard MIDI File, with the seed and settings.

Track 0 holds the tempo (a ``set_tempo`` meta event at the start and one wherever :meth:`set_tempo` was
called: in call mode with a followed tempo, at each answer that changes it) and a text meta event with the session's JSON (seed, settings, model); track 1 is
the musician, track 2 musebot. The same JSON is written beside the file (``FILE.mid.json``) so a session
can be replayed offline with the same seed (``musebot demo --replay FILE.mid``).
"""

from __future__ import annotations

import bisect
import json
import threading
from pathlib import Path

import mido

from musebot.realtime import midi

TICKS_PER_BEAT = 480
PARTS = ("musician", "musebot")
# Events kept in memory: about 7 hours of dense two-handed playing (~100 MB). Later events are dropped and
# counted (``dropped``), except the note-offs of notes already kept, so what is kept has no hanging note and
# is always saved, with the count of what was dropped in the file's JSON.
MAX_EVENTS = 500_000


class SessionRecorder:
    """Collects ``(time, part, message)`` from any thread; :meth:`save` writes the MIDI file."""

    def __init__(self, bpm: float, max_events: int = MAX_EVENTS) -> None:
        self.bpm = bpm
        self.max_events = max_events
        self.dropped = 0
        self._sounding: set[tuple[int, int, int]] = set()  # (part, channel, pitch) of kept note-ons
        self._tempi: list[tuple[float, float]] = []  # (time, bpm) from then on; before the first: ``bpm``
        self._events: list[tuple[float, int, midi.Message]] = []
        self._markers: list[tuple[float, str]] = []  # (time, text): the band's tracked chord changes
        self._lock = threading.Lock()

    def add(self, t: float, part: str, msg: midi.Message) -> None:
        index = PARTS.index(part)
        with self._lock:
            full = len(self._events) >= self.max_events
            if midi.is_note_on(msg) or midi.is_note_off(msg):
                key = (index, midi.channel_of(msg), msg[1])
                if full and not (midi.is_note_off(msg) and key in self._sounding):
                    self.dropped += 1
                    return
                (self._sounding.add if midi.is_note_on(msg) else self._sounding.discard)(key)
            elif full:
                self.dropped += 1
                return
            self._events.append((t, index, msg))

    def mark(self, t: float, text: str) -> None:
        """A marker at ``t`` (a MIDI marker meta event on track 0 of the file, e.g. ``chord Dm7``)."""
        with self._lock:
            if len(self._markers) < 100_000:
                self._markers.append((t, text[:120]))

    def markers(self) -> list[tuple[float, str]]:
        with self._lock:
            return list(self._markers)

    def set_tempo(self, t: float, bpm: float) -> None:
        """The tempo in use from ``t`` on (written as a ``set_tempo`` meta event; ticks follow it)."""
        with self._lock:
            if not self._tempi or bpm != self._tempi[-1][1]:
                self._tempi.append((t, bpm))

    def tempi(self) -> list[tuple[float, float]]:
        with self._lock:
            return list(self._tempi)

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
            markers = sorted(self._markers)
        if origin is None:
            origin = events[0][0] if events else 0.0
        tick_of, changes = self._tempo_map(origin)
        midi_file = mido.MidiFile(type=1, ticks_per_beat=TICKS_PER_BEAT)
        meta_track = mido.MidiTrack()
        meta_track.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(self.bpm), time=0))
        if self.dropped:  # the file says it is not the whole session
            meta = {**meta, "recording_dropped_events": self.dropped, "recording_max_events": self.max_events}
        text = "musebot session " + json.dumps(meta, sort_keys=True)
        meta_track.append(mido.MetaMessage("text", text=text))
        # Tempo changes and markers (at the beat each chord change was heard) in one time order.
        timed = [(tick, 0, mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm))) for tick, bpm in changes]
        timed += [(tick_of(t), 1, mido.MetaMessage("marker", text=marker)) for t, marker in markers]
        last = 0
        for tick, _, message in sorted(timed, key=lambda item: item[:2]):
            meta_track.append(message.copy(time=tick - last))
            last = tick
        midi_file.tracks.append(meta_track)
        for index, name in enumerate(PARTS):
            track = mido.MidiTrack()
            track.append(mido.MetaMessage("track_name", name=name, time=0))
            last = 0
            for t, part, msg in events:
                if part != index:
                    continue
                tick = tick_of(t)
                track.append(mido.Message.from_bytes(list(msg), time=tick - last))
                last = tick
            midi_file.tracks.append(track)
        path.parent.mkdir(parents=True, exist_ok=True)
        midi_file.save(path)
        Path(str(path) + ".json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        return path

    def _tempo_map(self, origin: float):
        """Seconds -> ticks through the tempo changes (each at its tick), and the changes as (tick, bpm)."""
        with self._lock:
            tempi = sorted((max(t, origin), bpm) for t, bpm in self._tempi)
        segments = [(origin, 0.0, self.bpm)]  # (seconds, ticks, bpm) from each change on
        for t, bpm in tempi:
            start, ticks, old = segments[-1]
            segments.append((t, ticks + _ticks(t - start, old), bpm))
        starts = [s[0] for s in segments]

        def tick_of(t: float) -> int:
            start, ticks, bpm = segments[max(0, bisect.bisect_right(starts, t) - 1)]
            return max(0, round(ticks + _ticks(t - start, bpm)))

        return tick_of, [(round(ticks), bpm) for _, ticks, bpm in segments[1:]]


def _ticks(seconds: float, bpm: float) -> float:
    return seconds * TICKS_PER_BEAT * bpm / 60.0


def read_session_meta(path: str | Path) -> dict:
    """The JSON a :class:`SessionRecorder` stored in the file's text meta event (``{}`` if none)."""
    for track in mido.MidiFile(path).tracks:
        for msg in track:
            if msg.type == "text" and msg.text.startswith("musebot session "):
                return json.loads(msg.text[len("musebot session "):])
    return {}
