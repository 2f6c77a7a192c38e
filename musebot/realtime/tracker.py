"""Held keys, sustain pedal and finished notes of the musician's live performance.

A note is finished at its key release (its token row carries the duration, spec ``skytnt-format.md`` §5
"live input caveat", so it can join the model's context only then). Finished notes are released in onset
order, and only once no earlier-started note is still held, so rows reach the model time-ordered as the
tokenizer sorts them (spec §2.5 step 5).
"""

from __future__ import annotations

from dataclasses import dataclass

from musebot.realtime import midi


@dataclass(frozen=True)
class PlayedNote:
    """One note: onset and end in seconds on the one clock, MIDI channel, pitch and velocity."""

    onset: float
    end: float
    channel: int
    pitch: int
    velocity: int

    @property
    def duration(self) -> float:
        return self.end - self.onset


class NoteTracker:
    """Turns note-on/note-off/CC64 into finished :class:`PlayedNote` objects and knows what is held."""

    def __init__(self) -> None:
        self._held: dict[tuple[int, int], tuple[float, int]] = {}
        self._pedal: set[int] = set()  # channels whose sustain pedal is down
        self._finished: list[PlayedNote] = []
        self.orphan_note_offs = 0

    def handle(self, t: float, msg: midi.Message) -> None:
        """Account for one valid channel message received at ``t``."""
        if midi.is_note_on(msg):
            key = (midi.channel_of(msg), msg[1])
            if key in self._held:  # a re-strike without release: end the old note here
                self._finish(key, t)
            self._held[key] = (t, msg[2])
        elif midi.is_note_off(msg):
            key = (midi.channel_of(msg), msg[1])
            if key in self._held:
                self._finish(key, t)
            else:
                self.orphan_note_offs += 1  # a note-off without note-on: nothing to end
        elif midi.kind_of(msg) == midi.CONTROL_CHANGE and msg[1] == midi.CC_SUSTAIN:
            if msg[2] >= 64:
                self._pedal.add(midi.channel_of(msg))
            else:
                self._pedal.discard(midi.channel_of(msg))

    def _finish(self, key: tuple[int, int], t: float) -> None:
        onset, velocity = self._held.pop(key)
        self._finished.append(PlayedNote(onset, max(t, onset), key[0], key[1], velocity))

    @property
    def anything_held(self) -> bool:
        """A key or a sustain pedal is down: the phrase cannot have ended."""
        return bool(self._held) or bool(self._pedal)

    @property
    def held_keys(self) -> int:
        return len(self._held)

    def release_ready(self) -> list[PlayedNote]:
        """Finished notes that can join the context now, in onset order (see module docstring)."""
        if not self._finished:
            return []
        horizon = min((onset for onset, _ in self._held.values()), default=float("inf"))
        ready = sorted((n for n in self._finished if n.onset <= horizon), key=lambda n: (n.onset, n.pitch))
        if ready:
            kept = set(map(id, ready))
            self._finished = [n for n in self._finished if id(n) not in kept]
        return ready

    def release_all(self, t: float) -> list[PlayedNote]:
        """End every held note at ``t`` (panic, shutdown) and return all finished notes."""
        for key in list(self._held):
            self._finish(key, t)
        self._pedal.clear()
        return self.release_ready()
