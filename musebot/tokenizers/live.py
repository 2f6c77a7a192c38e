"""Live conversion: a stream of timestamped MIDI messages -> score events and token rows, incrementally.

The live counterpart of ``load_score`` + ``MIDITokenizer.tokenize`` (spec section 1 and 2.5; section 5 explains
why it is needed): a note row carries its duration, so a played note can only enter the model's context once it
ends, and rows must enter in onset order because time1 counts beats from the previous row. The converter

* pairs note-on/note-off per (channel, pitch) first-in first-out, a note-on with velocity 0 being a note-off,
  and yields each note as a score event when it ends (as ``opus2score`` does);
* turns finished events into rows in onset order: a finished note waits while an earlier note is still held,
  but never longer than ``hold_limit_beats`` — then the held note enters the context with the length it has so
  far (a documented clamp, so that a key held for minutes does not freeze the context);
* keeps CC (with the tokenizer's ``cc_eps`` rule; CC64 is the sustain pedal) and program changes as events;
* works in ticks of the session's clock: seconds become ticks through the tempo the session gives
  (:meth:`set_tempo`), so feeding the messages of a file, with its tempo changes, gives the file's notes.

Memory is bounded: at most ``max_sounding`` notes are held open (the oldest is closed beyond that) and only
events not yet turned into rows are kept.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from dataclasses import dataclass, field

import mido

from musebot.tokenizers.tokenizer import MIDITokenizer
from musebot.tokenizers.vocab import STEPS_PER_BEAT

SUSTAIN_PEDAL = 64


@dataclass
class LiveOutput:
    """What one call produced: finished score events (ticks) and the rows that now extend the context."""

    events: list[list] = field(default_factory=list)
    rows: list[list[int]] = field(default_factory=list)

    def extend(self, other: LiveOutput) -> None:
        self.events += other.events
        self.rows += other.rows


class RowEncoder:
    """Absolute grid time <-> rows: keeps the beat of the last row of one token sequence.

    Both the musician's events and musebot's own generated rows go through one encoder, so that the context
    stays one time-ordered sequence. An event earlier than the last row's beat is moved to that beat (rows
    cannot go back in time; documented clamp)."""

    def __init__(self, tokenizer: MIDITokenizer) -> None:
        self.tokenizer = tokenizer
        self.beat = 0  # absolute beat (t1) of the last row

    def encode(self, name: str, step: int, track: int, *values: int) -> list[int] | None:
        """``step`` is the absolute 1/16-beat grid time; values as in the tokenizer (notes: c, p, v, d)."""
        beat, t2 = divmod(max(step, self.beat * 16), 16)
        row = self.tokenizer.event_to_row([name, beat - self.beat, t2, track, *values])
        if row is not None:
            self.beat = beat
        return row

    def advance(self, row: list[int]) -> int | None:
        """Account for a row appended from elsewhere (a generated one); returns its absolute grid step."""
        event = self.tokenizer.row_to_event(row)
        if event is None:
            return None
        self.beat += event[1]
        return self.beat * 16 + event[2]


class LiveConverter:
    """Incremental MIDI messages -> score events and token rows (see the module docstring)."""

    def __init__(self, tokenizer: MIDITokenizer | None = None, ticks_per_beat: int = 480, bpm: float = 120.0,
                 start_time: float = 0.0, channel_tracks: dict[int, int] | None = None, cc_eps: int = 4,
                 hold_limit_beats: float = 4.0, max_sounding: int = 256,
                 encoder: RowEncoder | None = None) -> None:
        self.tokenizer = tokenizer or MIDITokenizer("v2", optimise=True)
        self.encoder = encoder or RowEncoder(self.tokenizer)
        self.tpb = ticks_per_beat
        self.cc_eps = cc_eps
        self.hold_limit = int(hold_limit_beats * ticks_per_beat)
        self.max_sounding = max_sounding
        # Each input channel gets a track of its own, numbered by first use like the optimise remapping.
        self.channel_tracks: dict[int, int] = dict(channel_tracks or {})
        self._tempo_origin = (start_time, 0.0, bpm)  # (seconds, ticks, bpm) of the last tempo change
        self._sounding: dict[tuple[int, int], list[list]] = defaultdict(list)
        self._n_sounding = 0
        self._done: list[tuple[int, int, list]] = []  # heap of (onset tick, order, event) awaiting rows
        self._order = 0
        self._last_cc: dict[tuple[int, int], int] = {}
        self.pedal_down = [False] * 16
        self.now_tick = 0

    # ------------------------------------------------------------------------------------------------- time
    def tick_at(self, time_s: float) -> int:
        origin_s, origin_tick, bpm = self._tempo_origin
        return max(0, round(origin_tick + (time_s - origin_s) * bpm / 60.0 * self.tpb))

    def beat_at(self, time_s: float) -> float:
        """Beats since the converter's start at ``time_s`` on its grid (unrounded; negative before it)."""
        origin_s, origin_tick, bpm = self._tempo_origin
        return (origin_tick + (time_s - origin_s) * bpm / 60.0 * self.tpb) / self.tpb

    def set_tempo(self, bpm: float, time_s: float) -> None:
        """The session's tempo from ``time_s`` on (ticks before it keep their times)."""
        if not 1.0 <= bpm <= 1000.0:
            raise ValueError(f"tempo {bpm} bpm is outside 1..1000")
        origin_s, origin_tick, old_bpm = self._tempo_origin
        self._tempo_origin = (time_s, origin_tick + (time_s - origin_s) * old_bpm / 60.0 * self.tpb, bpm)

    def reanchor(self, time_s: float, beat: float, bpm: float | None = None) -> None:
        """From now on ``time_s`` is ``beat`` (beats since the converter's start) at ``bpm`` (default: the
        tempo in use): a tracked beat moves the grid onto the musician's pulse, an answer's end onto its
        last step. Ticks already written stay as they are."""
        self._tempo_origin = (time_s, beat * self.tpb, self.bpm if bpm is None else bpm)

    @property
    def bpm(self) -> float:
        return self._tempo_origin[2]

    @property
    def held_notes(self) -> int:
        return self._n_sounding

    @property
    def quiet(self) -> bool:
        """No key and no sustain pedal held: a phrase may end."""
        return self._n_sounding == 0 and not any(self.pedal_down)

    # ------------------------------------------------------------------------------------------------- input
    def feed(self, msg: mido.Message | mido.MetaMessage, time_s: float, source: int = 0) -> LiveOutput:
        """One message at ``time_s`` seconds (session clock). Unsupported messages are ignored.

        ``source`` tells apart independent streams (input ports, or the tracks of a file): note-offs pair
        with note-ons of the same source, channel and pitch."""
        tick = self.tick_at(time_s)
        self.now_tick = max(self.now_tick, tick)
        out = LiveOutput()
        kind = msg.type
        if kind == "note_off" or (kind == "note_on" and msg.velocity == 0):
            self._note_off((source, msg.channel, msg.note), tick, out)
        elif kind == "note_on":
            self._note_on((source, msg.channel, msg.note), msg.velocity, tick, out)
        elif kind == "control_change":
            if msg.control == SUSTAIN_PEDAL:
                self.pedal_down[msg.channel] = msg.value >= 64
            last = self._last_cc.get((msg.channel, msg.control), 0)
            if abs(last - msg.value) >= self.cc_eps:
                self._last_cc[(msg.channel, msg.control)] = msg.value
                self._finish(["control_change", tick, msg.channel, msg.control, msg.value], out)
        elif kind == "program_change":
            self._finish(["patch_change", tick, msg.channel, msg.program], out)
        elif kind == "set_tempo":
            self.set_tempo(min(1000.0, max(1.0, 60e6 / max(1, msg.tempo))), time_s)
        out.rows += self._release(tick)
        return out

    def advance(self, time_s: float) -> LiveOutput:
        """Let time pass with no message: releases rows held back by a note held past the hold limit."""
        tick = self.tick_at(time_s)
        self.now_tick = max(self.now_tick, tick)
        return LiveOutput(rows=self._release(tick))

    def flush(self, time_s: float) -> LiveOutput:
        """End every sounding note at ``time_s`` and turn everything left into rows."""
        tick = self.tick_at(time_s)
        out = LiveOutput()
        for waiting in list(self._sounding.values()):
            while waiting:
                self._close(waiting[0], tick, out)
        out.rows += self._release(None)
        return out

    def _note_on(self, key: tuple[int, int, int], velocity: int, tick: int, out: LiveOutput) -> None:
        if self._n_sounding >= self.max_sounding:  # bounded memory: close the oldest sounding note
            oldest = min((n for notes in self._sounding.values() for n in notes), key=lambda n: n[1])
            self._close(oldest, tick, out)
        self._sounding[key].append(["note", tick, 0, key[1], key[2], velocity, key])
        self._n_sounding += 1

    def _note_off(self, key: tuple[int, int, int], tick: int, out: LiveOutput) -> None:
        waiting = self._sounding.get(key)
        if waiting:  # a note-off without a note-on is ignored, as MIDI.py does
            self._close(waiting[0], tick, out)

    def _close(self, note: list, tick: int, out: LiveOutput) -> None:
        key = note[6]
        self._sounding[key].remove(note)
        if not self._sounding[key]:
            del self._sounding[key]
        self._n_sounding -= 1
        note[2] = tick - note[1]
        if len(note) == 7:
            self._finish(note[:6], out)
        else:  # its row already entered the context at the hold limit; the score event gets the true end
            out.events.append(note[:6])

    def _finish(self, event: list, out: LiveOutput) -> None:
        out.events.append(event)
        heapq.heappush(self._done, (event[1], self._order, event))
        self._order += 1

    # ------------------------------------------------------------------------------------------------- rows
    def _release(self, tick: int | None) -> list[list[int]]:
        """Rows for finished events that no held note precedes (or all, when ``tick`` is None)."""
        if tick is not None:
            for waiting in self._sounding.values():
                for note in waiting:
                    if len(note) == 7 and tick - note[1] >= self.hold_limit:
                        # Held past the limit: enters the context now with the length it has so far. The
                        # 8th field marks it as released; its score event still gets the true end.
                        note[2] = tick - note[1]
                        note.append("released")
                        heapq.heappush(self._done, (note[1], self._order, note[:6]))
                        self._order += 1
        blocking = min((n[1] for w in self._sounding.values() for n in w if len(n) == 7), default=None)
        rows = []
        while self._done and (tick is None or blocking is None or self._done[0][0] <= blocking):
            _, _, event = heapq.heappop(self._done)
            row = self._encode(event)
            if row is not None:
                rows.append(row)
        return rows

    def _track(self, channel: int) -> int:
        if channel not in self.channel_tracks:
            self.channel_tracks[channel] = len(self.channel_tracks) + 1
        return self.channel_tracks[channel]

    def _encode(self, event: list) -> list[int] | None:
        step = round(STEPS_PER_BEAT * event[1] / self.tpb)
        name = event[0]
        if name == "note":
            _, _, dur, c, p, v = event
            return self.encoder.encode("note", step, self._track(c), c, p, v, max(1, round(STEPS_PER_BEAT * dur / self.tpb)))
        if name == "control_change":
            return self.encoder.encode(name, step, self._track(event[2]), *event[2:5])
        return self.encoder.encode(name, step, self._track(event[2]), event[2], event[3])
