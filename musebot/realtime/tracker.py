"""Held keys, sustain pedal and finished notes of the musician's live performance.

A note is finished at its key release (its token row carries the duration, spec ``skytnt-format.md`` §5
"live input caveat", so it can join the model's context only then). Finished notes are released in onset
order, and only once no earlier-started note is still held, so rows reach the model time-ordered as the
tokenizer sorts them (spec §2.5 step 5).

Bounded against a lost message: a key or sustain pedal held longer than ``held_timeout_s`` is forgotten
(its note ends there), and All Sound Off / All Notes Off (CC 120/123) from the musician release every key
and the pedal of their channel at once, so one lost note-off or pedal-up never leaves musebot listening
forever. The finished notes waiting behind a held key are capped at ``max_finished`` (oldest dropped and
counted in ``trimmed``; the list may reach twice that before it is cut).
"""

from __future__ import annotations

from dataclasses import dataclass

from musebot.realtime import midi

EXPIRY_CHECK_S = 0.05  # how often held keys are checked against the timeout


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

    def __init__(self, held_timeout_s: float = 30.0, max_finished: int = 1024) -> None:
        self.held_timeout_s = held_timeout_s  # 0: keys and pedal are never forgotten
        self.max_finished = max_finished
        self._held: dict[tuple[int, int], tuple[float, int]] = {}
        self._pedal: dict[int, float] = {}  # channel -> time its sustain pedal went down
        self._finished: list[PlayedNote] = []
        self._earliest = float("inf")  # the earliest onset among the finished notes
        self.orphan_note_offs = 0
        self.held_timeouts = 0  # keys and pedals forgotten after held_timeout_s
        self.trimmed = 0  # finished notes dropped because too many waited behind a held key
        self._next_expiry_check = float("-inf")

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
                self._pedal.setdefault(midi.channel_of(msg), t)
            else:
                self._pedal.pop(midi.channel_of(msg), None)
        elif midi.kind_of(msg) == midi.CONTROL_CHANGE and msg[1] in (midi.CC_ALL_SOUND_OFF, midi.CC_ALL_NOTES_OFF):
            channel = midi.channel_of(msg)
            for key in [key for key in self._held if key[0] == channel]:
                self._finish(key, t)
            self._pedal.pop(channel, None)

    def expire(self, t: float) -> bool:
        """Forget keys and pedals held longer than ``held_timeout_s`` at ``t`` (their note-off or pedal-up
        was lost); True when something was forgotten."""
        if self.held_timeout_s <= 0 or t < self._next_expiry_check:
            return False
        # A few checks a second are plenty for a timeout of seconds (the listener ticks thousands of times).
        self._next_expiry_check = t + min(EXPIRY_CHECK_S, self.held_timeout_s / 4)
        limit = t - self.held_timeout_s
        old_keys = [key for key, (onset, _) in self._held.items() if onset <= limit]
        old_pedals = [channel for channel, down in self._pedal.items() if down <= limit]
        for key in old_keys:
            self._finish(key, t)
        for channel in old_pedals:
            del self._pedal[channel]
        self.held_timeouts += len(old_keys) + len(old_pedals)
        return bool(old_keys or old_pedals)

    def _finish(self, key: tuple[int, int], t: float) -> None:
        onset, velocity = self._held.pop(key)
        self._finished.append(PlayedNote(onset, max(t, onset), key[0], key[1], velocity))
        self._earliest = min(self._earliest, onset)
        if len(self._finished) > 2 * self.max_finished:  # a key held while thousands are played (amortised)
            excess = len(self._finished) - self.max_finished
            del self._finished[:excess]
            self.trimmed += excess
            self._earliest = min(n.onset for n in self._finished)

    @property
    def anything_held(self) -> bool:
        """A key or a sustain pedal is down: the phrase cannot have ended."""
        return bool(self._held) or bool(self._pedal)

    @property
    def held_keys(self) -> int:
        return len(self._held)

    @property
    def waiting(self) -> int:
        """Finished notes waiting for an earlier-started held key (at most ``max_finished``)."""
        return len(self._finished)

    def release_ready(self) -> list[PlayedNote]:
        """Finished notes that can join the context now, in onset order (see module docstring)."""
        if not self._finished:
            return []
        # Fast refusal, one check a message in a flood: a key held since before every finished note (the
        # dict iterates in insertion order, so the oldest held keys come first).
        if any(onset < self._earliest for onset, _ in self._held.values()):
            return []
        horizon = min((onset for onset, _ in self._held.values()), default=float("inf"))
        ready = sorted((n for n in self._finished if n.onset <= horizon), key=lambda n: (n.onset, n.pitch))
        if ready:
            kept = set(map(id, ready))
            self._finished = [n for n in self._finished if id(n) not in kept]
            self._earliest = min((n.onset for n in self._finished), default=float("inf"))
        return ready

    def release_all(self, t: float) -> list[PlayedNote]:
        """End every held note at ``t`` (panic, shutdown) and return all finished notes."""
        for key in list(self._held):
            self._finish(key, t)
        self._pedal.clear()
        return self.release_ready()
