"""What plays the answer of call and response: the shared slot, the answerer interface, the echo answerer.

An answerer receives the musician's finished notes as they come, is told when an answer is due and how
long it may be, and schedules its notes (tag ``"answer"``) on the scheduler through an :class:`AnswerSlot`.
The slot makes barge-in race-free: the listener bumps the slot's id and cancels what is scheduled under
the same lock an answerer holds while scheduling, so a worker finishing a note just after the musician
came back in can never schedule it.

:class:`EchoAnswerer` is not a model: it plays the call back (Pachet's Continuator "standalone" reflex,
spec ``realtime-field.md`` §1.2), for use without a model and for testing the plumbing. It says so in the
log. :class:`musebot.realtime.modes.call_worker.ModelAnswerer` is the neural one.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Sequence

from musebot.realtime import midi
from musebot.realtime.io.outputs import Output
from musebot.realtime.scheduler import Scheduler
from musebot.realtime.tracker import PlayedNote

log = logging.getLogger(__name__)

ANSWER_TAG = "answer"


class AnswerSlot:
    """The one answer that may be scheduled now, identified by an increasing id."""

    def __init__(self, scheduler: Scheduler, outputs: Sequence[Output], channel: int = 0) -> None:
        self.scheduler = scheduler
        self.outputs = list(outputs)
        self.channel = channel
        self.current = 0
        self.lock = threading.Lock()
        self.notes_scheduled = 0
        self.first_due: dict[int, float] = {}  # answer id -> due time of its first note-on (benchmarks)

    def open(self) -> int:
        """Start a new answer (any older one becomes stale); returns its id."""
        with self.lock:
            self.current += 1
            return self.current

    def play(self, answer_id: int, notes: Sequence[tuple[float, float, int, int]]) -> bool:
        """Schedule ``(onset, end, pitch, velocity)`` notes (absolute times) if ``answer_id`` is current."""
        with self.lock:
            if answer_id != self.current:
                return False
            items = []
            for onset, end, pitch, velocity in notes:
                for output in self.outputs:
                    items.append((onset, output, midi.note_on(self.channel, pitch, velocity)))
                    items.append((max(end, onset + 0.005), output, midi.note_off(self.channel, pitch)))
                self.first_due.setdefault(answer_id, onset)
            self.scheduler.schedule_many(items, ANSWER_TAG)
            self.notes_scheduled += len(notes)
            return True

    def cancel(self) -> int:
        """Barge-in: make the current answer stale, drop its pending notes and release the sounding ones."""
        with self.lock:
            self.current += 1
            return self.scheduler.cancel(ANSWER_TAG, release=True)

    def is_playing(self) -> bool:
        return self.scheduler.pending(ANSWER_TAG) > 0


class Answerer:
    """Interface of answer makers; every method is called from the listener thread and must not block."""

    name = "answerer"

    def begin_phrase(self, t: float) -> None:
        """The musician starts a new phrase at ``t`` (after silence or after an answer)."""

    def add_notes(self, notes: Sequence[PlayedNote]) -> None:
        """The musician finished these notes (onset order)."""

    def hear(self, t: float, msg: tuple[int, ...]) -> None:
        """Every musical message of the musician (not musebot's controllers), as received at ``t``."""

    def start_answer(self, answer_id: int, due: float, length_s: float) -> None:
        """Play an answer whose first note sounds at ``due``, lasting about ``length_s`` seconds."""
        raise NotImplementedError

    def stop_answer(self, answer_id: int, t: float) -> None:
        """The musician came back in at ``t``: answer ``answer_id`` is over (its notes are cancelled)."""

    def set_temperature(self, temperature: float) -> None:
        pass

    def set_tempo(self, bpm: float) -> None:
        """The musician's tempo from now on (an answerer without a beat grid ignores it)."""

    def follow(self, bpm: float, beat_time: float) -> None:
        """The beat tracker heard the call at ``bpm`` with a beat at ``beat_time``: hear the call on that grid
        and answer on it (an answerer without a beat grid ignores it)."""

    def constraints(self):
        """The answers' pitch constraints (``engine.masks.Constraints``), or None when nothing masks them."""
        return

    def set_constraints(self, **changes: object) -> None:
        raise NotImplementedError(f"the {self.name!r} answerer has no constraints")

    def generation(self) -> dict | None:
        """Generation figures of a model answerer (events, answers, headroom...)."""
        return None

    def busy(self) -> bool:
        """Still producing notes of an answer."""
        return False

    def backlog_dropped(self) -> int:
        """The musician's messages dropped because too many waited for the answerer (a flood)."""
        return 0

    def close(self) -> None:
        pass


class EchoAnswerer(Answerer):
    """Plays the musician's last phrase back, same rhythm and pitches, starting at the due time.

    Deterministic and instant: the plumbing (ports, scheduler, barge-in, panic) can be exercised and
    measured without a model. Not a generator of new music, and never presented as one.
    """

    name = "echo"

    def __init__(self, slot: AnswerSlot, transpose: int = 0, max_notes: int = 512) -> None:
        self.slot = slot
        self.transpose = transpose
        # Bounded: a phrase that never pauses must not grow memory without end.
        self._phrase: deque[PlayedNote] = deque(maxlen=max_notes)

    def begin_phrase(self, t: float) -> None:
        self._phrase.clear()

    def add_notes(self, notes: Sequence[PlayedNote]) -> None:
        self._phrase.extend(notes)

    def start_answer(self, answer_id: int, due: float, length_s: float) -> None:
        if not self._phrase:
            return
        start = self._phrase[0].onset
        notes = []
        for note in self._phrase:
            offset = note.onset - start
            if offset >= length_s:
                break
            pitch = min(127, max(0, note.pitch + self.transpose))
            notes.append((due + offset, due + min(offset + note.duration, length_s), pitch, note.velocity))
        self.slot.play(answer_id, notes)
