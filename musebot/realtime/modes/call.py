"""Call and response: the musician's phrase, the phrase end, musebot's answer, barge-in, controls, panic.

The listener thread calls :meth:`Duet.handle` for every input message and :meth:`Duet.tick` a few hundred
times a second. A phrase ends when no key and no sustain pedal (CC64) is held and the silence since the
last release reaches the threshold (magenta_midi waits a bar, Continuator-py 1 s; spec
``realtime-field.md`` §3.3), or at once on the takeover controller. The answer is asked for at the release,
due at the end of the silence, so a pre-generated answer starts exactly on time; if the musician plays
before it is due or while it plays (barge-in), it is cancelled and its sounding notes released.

With ``tempo="follow"`` a :class:`~musebot.realtime.tempo.BeatTracker` hears the call's onsets: at the phrase
end the answerer is told the musician's tempo and beat (:meth:`Answerer.follow`), the silence and the answer's
length are counted in their beats, and the answer is due on their next beat (or downbeat, ``answer_on="bar"``)
after the silence, as a human partner would come in.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

from musebot.realtime import midi
from musebot.realtime.config import ServeConfig
from musebot.realtime.io.outputs import Output
from musebot.realtime.io.recorder import SessionRecorder
from musebot.realtime.modes.answers import Answerer, AnswerSlot
from musebot.realtime.modes.base import Session, SessionError
from musebot.realtime.scheduler import Scheduler
from musebot.realtime.tempo import BeatTracker
from musebot.realtime.tracker import NoteTracker

log = logging.getLogger(__name__)

MODES = ("call", "listen")  # listen: thru and recording only, no answers
BEATS_PER_BAR = 4  # answer_on="bar": the downbeat of a 4/4 bar (the tracker picks which beat is the one)


class Duet(Session):
    """The interaction logic above the ports (no threads of its own; fully testable with MemoryOutput)."""

    def __init__(
        self,
        config: ServeConfig,
        scheduler: Scheduler,
        outputs: Sequence[Output],
        slot: AnswerSlot,
        answerer: Answerer,
        recorder: SessionRecorder | None = None,
        mode: str = "call",
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"--mode must be one of {', '.join(MODES)}, got {mode!r}")
        super().__init__(config, scheduler, outputs, recorder)
        self.slot = slot
        self.answerer = answerer
        self.mode = mode
        self.tracker = NoteTracker(held_timeout_s=config.held_key_timeout_s)
        self.state = "idle"  # idle -> listening -> waiting (phrase over, answer due) -> answering -> idle
        self.phrase_start = 0.0
        self.due = 0.0
        self.answer_id = 0
        self.counts = {"received": 0, "invalid": 0, "answers": 0, "barge_ins": 0, "panics": 0, "phrases": 0}
        # The tempo in use: --bpm until the beat tracker (tempo="follow") has heard a call.
        self.beats = BeatTracker(config.bpm) if config.tempo == "follow" else None
        self.bpm = config.bpm
        self.tempo_confidence = 0.0
        self._recorded_bpm: float | None = None

    # ---- input (after the Session's front: validated, controllers, thru, recorded) -------------------
    def hear(self, t: float, msg: midi.Message) -> None:
        if midi.is_note_on(msg):
            self._note_on(t)
            if self.beats is not None:
                self.beats.add_onset(t, msg[1], msg[2])
        elif self.beats is not None and midi.is_note_off(msg):
            self.beats.add_note_off(t, msg[1])
        self.tracker.handle(t, msg)
        self.answerer.hear(t, msg)
        ready = self.tracker.release_ready()
        if ready:
            self.answerer.add_notes(ready)
        if self.state == "listening" and not self.tracker.anything_held:
            self._phrase_over(t, t + self.config.silence_s)

    def _note_on(self, t: float) -> None:
        if self.state in ("waiting", "answering"):
            # Before the answer is due the phrase simply goes on; during it, this is a barge-in.
            cancelled = self.slot.cancel()
            self.answerer.stop_answer(self.answer_id, t)
            if self.state == "answering":
                self.counts["barge_ins"] += 1
                log.info("barge-in: the musician plays again; answer stopped (%d cancelled)", cancelled)
        if self.state not in ("listening", "waiting"):
            self.phrase_start = t
            if self.beats is not None:
                self.beats.reset_call()  # the last call's tempo stays as the prior
            self.answerer.begin_phrase(t)
        self.state = "listening"

    def _phrase_over(self, release: float, due: float) -> None:
        """All released at ``release``: ask for an answer due at ``due`` (cancelled if they play again)."""
        self.counts["phrases"] += 1
        if self.mode != "call":
            self.state = "idle"
            return
        if self.beats is not None:
            due = self._follow(release, due)
        period = 60.0 / self.bpm
        beats = self.config.answer_beats
        if beats is None:  # as long as the call
            beats = (release - self.phrase_start) / period
        beats = min(max(beats, self.config.min_answer_beats), self.config.max_answer_beats)
        self.answer_id = self.slot.open()
        self.due = due
        self.state = "waiting"
        self.answerer.start_answer(self.answer_id, due, beats * period)

    def _follow(self, release: float, due: float) -> float:
        """The musician's tempo and beat from the call: tell the answerer, and move ``due`` (the end of the
        silence) to their next beat or downbeat. The silence counts their beats unless given in ms."""
        est = self.beats.estimate()
        self.bpm, self.tempo_confidence = est.bpm, est.confidence
        self.answerer.follow(est.bpm, est.beat_time)
        if self.config.silence_ms is None and due > release:  # not the takeover controller's lead
            due = release + self.config.silence_beats * est.period
        # A beat a hair before the silence's end is close enough (the musician hears it as "on the beat").
        on, bar = self.config.answer_on, BEATS_PER_BAR
        beat = self.beats.next_beat_time(due - 0.05 * est.period, on=on, beats_per_bar=bar)
        if not release < beat < release + 4 * bar * est.period:  # never before the call ends, never never
            beat = self.beats.next_beat_time(max(due, release + 0.005), on=on, beats_per_bar=bar)
        return beat if math.isfinite(beat) and beat > release else due

    def control(self, t: float, controller: int, value: int) -> bool:
        """Handle a musebot controller; True when the message was one (it is then not played thru)."""
        controls = self.config.controls
        if controller == controls.temperature:
            temperature = 0.1 + 1.9 * value / 127
            self.config.temperature = temperature
            self.answerer.set_temperature(temperature)
            log.info("temperature %.2f", temperature)
        elif controller == controls.answer_length:
            longest = self.config.max_answer_beats
            self.config.answer_beats = None if value == 0 else 1 + (longest - 1) * value / 127
            length = f"{self.config.answer_beats:.1f} beats" if value else "as long as the call"
            log.info("answer length %s", length)
        elif controller == controls.panic:
            if value >= 64:
                self.panic(t, "panic controller", all_channels=True)
        elif controller == controls.takeover:
            if value >= 64 and self.state in ("idle", "listening"):
                for note in self.tracker.release_all(t):
                    self.answerer.add_notes([note])
                if self.state == "idle":
                    self.phrase_start = t
                self._phrase_over(t, t + self.config.takeover_lead_ms / 1000.0)
        else:
            return False
        return True

    def input_lost(self, t: float, last: float) -> None:
        if not self.tracker.anything_held:
            return
        log.warning("input was lost in a flood: the keys it left held are released")
        ready = self.tracker.release_all(last)
        if ready:
            self.answerer.add_notes(ready)
        if self.state == "listening":
            # The silence counts from the musician's last message, as it would had nothing been lost.
            self._phrase_over(last, max(last + self.config.silence_s, t))

    # ---- time ----------------------------------------------------------------------------------------
    def tick(self, t: float) -> None:
        """Advance the state machine to time ``t`` (called by the listener between messages)."""
        if self.tracker.expire(t):  # a note-off or pedal-up was lost: answer rather than listen forever
            log.warning("a key or pedal held over %.0f s was forgotten (its release was lost)",
                        self.tracker.held_timeout_s)
            ready = self.tracker.release_ready()
            if ready:
                self.answerer.add_notes(ready)
            if self.state == "listening" and not self.tracker.anything_held:
                self._phrase_over(t, t + self.config.silence_s)
        if self.state == "waiting" and t >= self.due:
            self.state = "answering"
            self.counts["answers"] += 1
            if self.beats is not None and self.recorder is not None and self.bpm != self._recorded_bpm:
                self._recorded_bpm = self.bpm
                self.recorder.set_tempo(self.due, self.bpm)  # the answer's tempo, in the recording
        elif self.state == "answering" and not self.slot.is_playing() and not self.answerer.busy():
            self.state = "idle"

    # ---- panic ---------------------------------------------------------------------------------------
    def set_mode(self, t: float, mode: str) -> None:
        """Switch interaction mode; a mode change panics first (no note survives it)."""
        if mode not in MODES:
            raise SessionError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.panic(t, f"mode change to {mode}")
        self.mode = mode

    def panic(self, t: float, reason: str, all_channels: bool = False) -> None:
        """Stop the answer, drop everything scheduled, and silence every output (see ``ledger.py``)."""
        self.slot.cancel()
        if self.state in ("waiting", "answering"):
            self.answerer.stop_answer(self.answer_id, t)
        super().panic(t, reason, all_channels)
        self.state = "idle"

    # ---- the Session's interface to the network API -------------------------------------------------
    @property
    def name(self) -> str:
        return self.answerer.name

    def set_tempo(self, bpm: float) -> None:
        self.bpm = bpm
        if self.beats is not None:  # the musician (or their controller) says the tempo: the new first guess
            self.beats = BeatTracker(bpm)
        self.answerer.set_tempo(bpm)

    def tempo(self) -> dict:
        """The tempo in use: bpm, source (follow: tracked from the musician; fixed: --bpm), confidence."""
        follow = self.beats is not None
        return {"bpm": round(self.bpm, 2), "source": "follow" if follow else "fixed",
                "confidence": round(self.tempo_confidence, 3) if follow else None}

    def set_temperature(self, temperature: float) -> None:
        super().set_temperature(temperature)
        self.answerer.set_temperature(temperature)

    def constraints(self):
        return self.answerer.constraints()

    def set_constraints(self, **kwargs: object) -> None:
        if self.answerer.constraints() is None:
            super().set_constraints(**kwargs)
        self.answerer.set_constraints(**kwargs)

    def generation(self) -> dict | None:
        return self.answerer.generation()

    def overflows(self) -> dict:
        return {"backlog_dropped": self.answerer.backlog_dropped(), "tracker_trimmed": self.tracker.trimmed,
                "held_key_timeouts": self.tracker.held_timeouts}

    def close(self) -> None:
        self.answerer.close()
        super().close()
