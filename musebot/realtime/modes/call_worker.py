"""The engine worker: musebot's neural answers, with the model's KV cache kept in step with the performance.

One thread owns the :class:`~musebot.engine.engine.Engine` (ONNX Runtime, no torch) and does, in order of
priority:

1. **Keep the cache in step**: every musician message goes through the lead's live converter
   (:class:`~musebot.tokenizers.live.LiveConverter`); each finished note becomes a row and is prefilled at
   once (Aria's continuous prefill, spec ``realtime-field.md`` §1.3), so an answer costs no prompt pass.
2. **Play an answer** when one is due: rows already pre-generated are scheduled at once, more are generated
   one event at a time and scheduled as they come, until the answer is as long as asked.
3. **Speculate**: otherwise pre-generate the likely continuation (``speculate_events`` rows). A new note makes
   it stale: it is rolled back (``Engine.rollback``) before the note's row is appended.

Times: the first answer note sounds when due (the silence after the call), later ones in the model's rhythm;
the converter's clock is then re-anchored, placing the musician's next notes right after musebot's. Sampling
is seeded per context length (``[seed, n_events]``): the same performance and seed give the same answer.

Following the musician's tempo (``tempo="follow"``): the worker keeps the current call's messages; at its
end the Duet's beat tracker gives the tempo and a beat time (:meth:`follow`), the call is read again on that
grid (only the rows that change are rolled back and prefilled again, as on a key change), and the answer's
beats fall on the musician's: its first note keeps its place within the beat, in the beat that is due.

A flood (the inbox overflowed, dropping its oldest): the context no longer records the music, and the
flood's random notes would move the tracked key, each move a re-read of the context. So it is then cut to
its newest ``FLOOD_KEEP_EVENTS`` (and again at its end, ``FLOOD_QUIET_S`` without a drop: its tail is no music
either; never while an answer plays, which it would delay): the next phrase is answered at once.
"""

from __future__ import annotations

import logging
import math
import queue
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import mido
import numpy as np

from musebot.realtime.clock import now
from musebot.realtime.config import ServeConfig
from musebot.realtime.constraints import KeyFollower
from musebot.realtime.inbox import Inbox
from musebot.realtime.modes.answers import Answerer, AnswerSlot
from musebot.realtime.modes.base import ModelThread, load_engine
from musebot.tokenizers.vocab import STEPS_PER_BEAT

if TYPE_CHECKING:
    from musebot.engine.engine import Engine
    from musebot.tokenizers.live import LiveConverter

log = logging.getLogger(__name__)

ANSWER_TRACK = 1  # musebot's notes live on track 1 (with the musician's channel 0 when they share it)
MAX_GAP_STEPS = 32  # an answer never pauses more than 2 beats between onsets (spec 2.4: 16 steps a beat)
MAX_DURATION_STEPS = 64  # nor holds a note longer than 4 beats
PIANO_RANGE = (21, 108)  # A0..C8: answers stay on the keyboard the musician plays
MAX_CALL_MESSAGES = 2048  # a call longer than this is not read again on the tracked grid (bounded memory)
# Events of context the model keeps; past it the oldest quarter leaves (one prefill while the musician plays).
# Without a bound the session's whole history stayed in the cache: memory and step time grew for hours.
MAX_CONTEXT_EVENTS = 768
# The engine is sized (and ONNX Runtime's arena warmed) for this many events when the worker starts: the
# bounded context, a long call and an answer ahead of it. Memory is then flat from the first minute, not
# rising for the ten the context takes to fill (measured: +60 MB between minutes 5 and 9 of a soak).
RESERVED_EVENTS = MAX_CONTEXT_EVENTS + 256
FLOOD_KEEP_EVENTS = 64  # events of context kept when a flood overflowed the inbox (module docstring)
FLOOD_QUIET_S = 0.25  # ... and once more when no message was dropped for this long (its end)
# A model slower than the music plans its answers with this share of its measured rate (a step's time
# varies), and starts an answer at most this many beats late to have enough generated ahead.
RATE_SAFETY = 0.8
MAX_START_DELAY_BEATS = 1.0
MAX_COME_IN_BEATS = 4.0  # a held-up answer still comes in up to a bar late (at 0.5 s, calls went unanswered)
MAX_COME_IN_S = 1.0  # ... or a second at fast tempi (a bar is 0.6 s at 400 bpm): a rest, not a flat call
MIN_RATE_EVENTS = 16  # the rate is planned with once this many events were generated
LATE_MARGIN_S = 0.003  # a note whose onset is nearer than this when generated is dropped, never sent late


@dataclass
class _Answer:
    answer_id: int
    due: float
    length_s: float
    next_index: int = 0  # index in the worker's rows-ahead of the next row to schedule
    first_step: int | None = None
    done: bool = False
    onsets: list[float] = field(default_factory=list)  # real onset of each scheduled row (rows-ahead order)
    origin_step: int | None = None  # the grid step that sounds at ``due`` (follow: the first note's beat)


@dataclass
class _Call:
    """The musician's phrase since it began, to be read again on the tracked grid at its end."""

    committed: int  # context length before its first row
    encoder_beat: int  # the row encoder's beat then
    channel_tracks: dict[int, int]
    first_beat: float  # beat of its first message on the grid it was heard on
    messages: list[tuple[float, mido.Message]] = field(default_factory=list)
    overflow: bool = False


@dataclass
class WorkerStats:
    """Generation figures: events generated, their musical length and the compute they took."""

    events: int = 0
    music_s: float = 0.0
    compute_s: float = 0.0
    prefill_rows: int = 0
    rollbacks: int = 0
    answers: int = 0
    late_rows: int = 0  # answer rows generated after their onset had passed
    key_changes: int = 0  # times a key-normalised model's transposition followed the musician
    regrids: int = 0  # calls whose rows changed when read again on the tracked beat
    trims: int = 0  # times the oldest quarter of the context left it (MAX_CONTEXT_EVENTS)
    dropped: int = 0  # answer notes generated too late to sound on time: not sent
    delayed_answers: int = 0  # answers started late so that generation stays ahead of them
    shortened_answers: int = 0  # answers cut to what a slow model can generate before it is played
    cut_answers: int = 0  # answers ended early because a note came too late all the same

    @property
    def headroom(self) -> float:
        """Seconds of music generated per second of compute (> 1: faster than it is played)."""
        return self.music_s / self.compute_s if self.compute_s else float("inf")


class ModelAnswerer(Answerer):
    """Answers with a SkyTNT model through :class:`~musebot.engine.engine.Engine` (see module docstring)."""

    name = "model"

    def __init__(self, engine: Engine, slot: AnswerSlot, config: ServeConfig) -> None:
        from musebot.engine.masks import Constraints, MaskTable
        from musebot.engine.sampling import SamplerSettings
        from musebot.tokenizers import MIDITokenizer
        from musebot.tokenizers.live import LiveConverter

        self.engine = engine
        self.slot = slot
        self.config = config
        self.tokenizer = MIDITokenizer.from_dict(engine.config["tokenizer"])
        self._settings_class = SamplerSettings
        self.settings = SamplerSettings(
            temperature=config.temperature, top_p=config.top_p, top_k=config.top_k
        )
        self._converter_class = LiveConverter
        self.converter = self._new_converter(now())
        # ``masks`` are in the musician's pitches (what the API shows); ``_model_masks`` in the model's.
        self.masks = MaskTable(engine.vocab, Constraints(
            event_types=frozenset({"note"}), allow_eos=False, channels=frozenset({config.answer_channel}),
            tracks=frozenset({ANSWER_TRACK}), max_time_gap=MAX_GAP_STEPS, max_duration=MAX_DURATION_STEPS,
            pitch_range=PIANO_RANGE,
        ))
        self.key = KeyFollower() if engine.config.get("key_normalised") else None
        self.shift = 0  # semitones from the musician's pitches to the model's (key-normalised models)
        self._model_masks = self.masks
        self.stats = WorkerStats()
        self._steps_per_s = STEPS_PER_BEAT * config.bpm / 60.0
        # Bounded: in a flood the oldest waiting messages are dropped (newest notes win), never the commands.
        self._commands = Inbox()
        self._answer: _Answer | None = None
        self._requested = self._settled = 0  # ids: the last answer asked for / the last one over or dropped
        self._ahead: list[list[int]] = []  # rows generated beyond the committed context (in the cache)
        self._ahead_steps: list[int] = []  # their absolute grid steps
        self._rng = None
        self._first_message = True
        self._call: _Call | None = None
        self._call_begins = False  # a phrase began: the next message opens its _Call
        self._warned_slow = False  # "slower than the music" is logged once
        self._dropped_seen, self._flood_end = 0, 0.0  # the inbox's dropped count at the last cut; when it ends
        engine.reserve(RESERVED_EVENTS)
        engine.append([engine.vocab.special_row(engine.vocab.bos_id)])
        self._committed = engine.n_events
        # A model error drops the speculation and any answer in progress; the worker goes on.
        self._model = ModelThread("musebot-engine", self._step, lambda: self._commands.put(("quit",)),
                                  on_error=self._recover)
        self._model.start()  # after the assignment: the first step reads self._model

    @classmethod
    def load(cls, model_dir: str | Path, slot: AnswerSlot, config: ServeConfig) -> ModelAnswerer:
        """Open an exported model folder and answer with it."""
        return cls(load_engine(str(model_dir), config.precision), slot, config)

    def _new_converter(self, start_time: float) -> LiveConverter:
        return self._converter_class(
            self.tokenizer, bpm=self.config.bpm, start_time=start_time,
            channel_tracks={self.config.answer_channel: ANSWER_TRACK},
        )

    # ---- the Answerer interface (listener thread: only enqueue) --------------------------------------
    def hear(self, t: float, msg: tuple[int, ...]) -> None:
        self._commands.put(("msg", t, msg), sheddable=True)

    def start_answer(self, answer_id: int, due: float, length_s: float) -> None:
        self._requested = answer_id
        self._commands.put(("answer", answer_id, due, length_s))

    def begin_phrase(self, t: float) -> None:
        self._commands.put(("phrase", t))

    def follow(self, bpm: float, beat_time: float) -> None:
        self._commands.put(("follow", bpm, beat_time))

    def stop_answer(self, answer_id: int, t: float) -> None:
        self._commands.put(("stop", answer_id, t))

    def set_temperature(self, temperature: float) -> None:
        self._commands.put(("temperature", temperature))

    def set_tempo(self, bpm: float) -> None:
        """The musician's tempo from now on (the network API's setting): the model's beat grid follows."""
        self._commands.put(("tempo", bpm, now()))

    def set_constraints(self, **changes: object) -> None:
        """Change fields of the answers' :class:`~musebot.engine.masks.Constraints` (e.g. ``pitch_range``,
        ``pitch_classes``); raises ConstraintError at once for a set the vocabulary cannot satisfy."""
        from musebot.engine.masks import MaskTable

        self._commands.put(("masks", MaskTable(self.engine.vocab, replace(self.masks.constraints, **changes))))

    def constraints(self):
        return self.masks.constraints

    def generation(self) -> dict:
        stats = self.stats
        headroom = stats.headroom
        return {"events": stats.events, "answers": stats.answers, "late_rows": stats.late_rows,
                "rollbacks": stats.rollbacks, "headroom": round(headroom, 3) if math.isfinite(headroom) else None,
                "behind": headroom < 1.0, "dropped": stats.dropped, "delayed_answers": stats.delayed_answers,
                "shortened_answers": stats.shortened_answers, "cut_answers": stats.cut_answers,
                "context_trims": stats.trims}

    def busy(self) -> bool:
        return self._requested > self._settled

    def backlog_dropped(self) -> int:
        return self._commands.dropped

    def close(self) -> None:
        self._model.stop()

    # ---- the worker thread ---------------------------------------------------------------------------
    def _recover(self) -> None:
        self._drop_answer()
        self._rollback_ahead()

    def _step(self) -> None:
        # Commands first: a new note must reach the cache before more is guessed from a stale one.
        answer = self._answer
        if answer is None:
            idle = len(self._ahead) >= self.config.speculate_events
        else:  # an answer fully scheduled only waits for its end
            idle = answer.done
        try:
            command = self._commands.get(timeout=0.02 if idle else 0.0)
        except queue.Empty:
            command = None
        while command is not None:
            self._do(command)
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                command = None
        if self._answer is None and (self._commands.dropped != self._dropped_seen or 0 < self._flood_end <= now()):
            self._forget_flood()
        answer = self._answer
        if answer is not None and not answer.done:
            self._advance_answer(answer)
        elif answer is not None and now() >= answer.due + answer.length_s:
            self._finish_answer(now())  # played to its end: it joins the context
        elif answer is None:
            rows = self.converter.advance(now()).rows  # notes held past the converter's limit
            if rows:
                self._append_played(rows)
            elif len(self._ahead) < self.config.speculate_events:
                self._generate_one()

    def _do(self, command: tuple) -> None:
        kind = command[0]
        if kind == "msg":
            _, t, msg = command
            if self._first_message:
                # The session's grid starts at the musician's first message, so a replay of the same
                # performance gives the same rows whatever the wall-clock time.
                self._first_message = False
                self.converter = self._new_converter(t)
            message = mido.Message.from_bytes(list(msg))
            self._keep_for_call(t, message)
            if self.key is not None and message.type == "note_on" and message.velocity and message.channel != 9:
                self.key.hear(t * self.config.bpm / 60.0, message.note)
            rows = self.converter.feed(message, t).rows
            if rows:
                self._append_played(rows)
        elif kind == "answer":
            _, answer_id, due, length_s = command
            self._drop_answer()
            self._answer = _Answer(answer_id, due, length_s)
            self.stats.answers += 1
        elif kind == "phrase":
            self._call, self._call_begins = None, True
        elif kind == "follow":
            self._follow(command[1], command[2])
        elif kind == "stop":
            _, answer_id, t = command
            if self._answer is not None and self._answer.answer_id == answer_id:
                self._finish_answer(t)
        elif kind == "temperature":
            self.settings = self._settings_class(
                temperature=command[1], top_p=self.settings.top_p, top_k=self.settings.top_k
            )
        elif kind == "tempo":
            _, bpm, t = command
            self.converter.set_tempo(bpm, t)
            self._steps_per_s = STEPS_PER_BEAT * bpm / 60.0
            if self._answer is None:
                self._rollback_ahead()  # guessed at the old tempo (an answer under way keeps its rows)
        elif kind == "masks":
            self.masks = command[1]
            self._model_masks = self._shifted_masks()
            if self._answer is None:
                self._rollback_ahead()  # guessed under the old constraints
        elif kind == "quit":
            self._model.running = False

    # ---- the musician's tempo ------------------------------------------------------------------------
    def _keep_for_call(self, t: float, message: mido.Message) -> None:
        if self._call_begins:
            self._call_begins = False
            c = self.converter
            self._call = _Call(self._committed, c.encoder.beat, dict(c.channel_tracks), c.beat_at(t))
        call = self._call
        if call is not None and not call.overflow:
            call.messages.append((t, message))
            if len(call.messages) > MAX_CALL_MESSAGES:
                call.overflow, call.messages = True, []

    def _follow(self, bpm: float, beat_time: float) -> None:
        """The call was played at ``bpm`` with a beat at ``beat_time``: read it again on that grid (the
        rows that change replace theirs in the context) and generate from there at that tempo."""
        from musebot.tokenizers.live import RowEncoder

        old, call = self.converter, self._call
        self._steps_per_s = STEPS_PER_BEAT * bpm / 60.0
        if call is None or call.overflow or not call.messages or not old.quiet or self._answer is not None:
            # Nothing to read again: from here on the grid's beats are the musician's.
            old.reanchor(beat_time, round(old.beat_at(beat_time)), bpm)
            if self._answer is None:
                self._rollback_ahead()
            return
        encoder = RowEncoder(self.tokenizer)
        encoder.beat = call.encoder_beat
        new = self._converter_class(self.tokenizer, bpm=bpm, start_time=beat_time,
                                    channel_tracks=dict(call.channel_tracks), encoder=encoder)
        # Whole beats from the tracked beat: the call keeps its place in the timeline (never before the
        # last row before it), its notes now on the musician's beats.
        first = (call.messages[0][0] - beat_time) * bpm / 60.0
        new.reanchor(beat_time, max(round(call.first_beat - first), math.ceil(call.encoder_beat - first - 1e-9)))
        rows: list[list[int]] = []
        for t, message in call.messages:
            rows += new.feed(message, t).rows
        rows += new.flush(call.messages[-1][0]).rows  # (quiet: nothing is left)
        fresh = self.engine.vocab.transpose_rows(np.asarray(rows, np.int64), self.shift)
        heard = self.engine.rows[0, call.committed:self._committed]
        same = 0
        while same < min(len(heard), len(fresh)) and np.array_equal(heard[same], fresh[same]):
            same += 1
        self.converter = new
        if same == len(heard) == len(fresh):
            return  # the call was already on the musician's grid: the guess ahead still holds
        self._rollback_ahead()
        self.engine.rollback(call.committed + same)
        if same < len(fresh):
            self.engine.append(fresh[same:])
        self._committed = self.engine.n_events
        self.stats.regrids += 1

    # ---- context -------------------------------------------------------------------------------------
    def _append_played(self, rows: Sequence[Sequence[int]]) -> None:
        """The musician's finished notes enter the cache; what was guessed beyond them is stale."""
        if self._answer is not None:
            self._finish_answer(now())
        self._rollback_ahead()
        if self.key is not None and self.key.shift != self.shift:
            if self._commands.dropped != self._dropped_seen:
                # In a flood the context is cut before the key change re-reads it (the whole context's
                # re-read held the worker past the next answer's start on a loaded machine).
                self._trim_context(keep=FLOOD_KEEP_EVENTS, limit=FLOOD_KEEP_EVENTS)
            self._change_shift(self.key.shift)
        self.engine.append(self.engine.vocab.transpose_rows(np.asarray(rows, np.int64), self.shift))
        self._committed = self.engine.n_events
        self.stats.prefill_rows += len(rows)
        self._trim_context()

    def _trim_context(self, keep: int | None = None, limit: int | None = None) -> None:
        """Past ``limit`` events (``MAX_CONTEXT_EVENTS``) the context is cut to its newest ``keep`` (by default
        the oldest quarter leaves): the engine restarts from BOS and the newest rows (its history and cache
        are then bounded however long the session)."""
        limit = MAX_CONTEXT_EVENTS if limit is None else limit
        keep = limit * 3 // 4 if keep is None else keep
        if self._committed <= limit:
            return
        drop = self._committed - keep  # rows 1..drop-1 go; row 0 is BOS
        rows = self.engine.rows[0, drop:self._committed]
        self.engine.reset()
        self.engine.append(np.concatenate([[self.engine.vocab.special_row(self.engine.vocab.bos_id)], rows]))
        self._committed = self.engine.n_events
        self.stats.trims += 1
        call = self._call
        if call is not None:
            call.committed -= drop - 1
            if call.committed < 1:  # the call began before the kept rows: it is not read again
                call.overflow, call.messages = True, []

    def _forget_flood(self) -> None:
        """The inbox dropped messages (a flood, module docstring): only the newest ``FLOOD_KEEP_EVENTS``
        events of the context stay; once more at the flood's end (no drop for ``FLOOD_QUIET_S``)."""
        flooding, self._dropped_seen = self._commands.dropped != self._dropped_seen, self._commands.dropped
        self._flood_end = now() + FLOOD_QUIET_S if flooding else 0.0
        self._rollback_ahead()
        self._trim_context(keep=FLOOD_KEEP_EVENTS, limit=FLOOD_KEEP_EVENTS)

    def _change_shift(self, shift: int) -> None:
        """The musician moved to another key: the context is re-read in the new transposition (one prefill,
        while the musician plays, never when an answer is due) and the masks follow."""
        log.info("engine worker: the musician's key moved; the model now hears them %+d semitones", shift)
        rows = self.engine.vocab.transpose_rows(self.engine.rows[0, :self._committed], shift - self.shift)
        self.engine.reset()
        self.engine.append(rows)
        self.shift = shift
        self._model_masks = self._shifted_masks()
        self.stats.key_changes += 1

    def _shifted_masks(self):
        """The answer masks in the model's pitches: the musician's range and pitch classes moved by shift."""
        from musebot.engine.masks import MaskTable

        if not self.shift:
            return self.masks
        c = self.masks.constraints
        pitch_range = c.pitch_range and (max(0, c.pitch_range[0] + self.shift),
                                         min(127, c.pitch_range[1] + self.shift))
        classes = c.pitch_classes and frozenset((p + self.shift) % 12 for p in c.pitch_classes)
        return MaskTable(self.engine.vocab, replace(c, pitch_range=pitch_range, pitch_classes=classes))

    def _rollback_ahead(self) -> None:
        if self.engine.n_events > self._committed:
            self.engine.rollback(self._committed)
            self.stats.rollbacks += 1
        self._ahead.clear()
        self._ahead_steps.clear()
        self._rng = None

    def _generate_one(self) -> bool:
        """Sample one more event beyond the context (or the rows already ahead); False on a non-note."""
        if self._rng is None:
            # Seeded by the context length: the same performance and seed give the same continuation.
            self._rng = np.random.default_rng([self.config.seed, self._committed])
        start = now()
        row = self.engine.step(self.settings, self._model_masks, self._rng)[0].tolist()
        elapsed = now() - start
        event = self.tokenizer.row_to_event(row)
        if event is None or event[0] != "note":
            # The masks allow notes only, so this is a model/mask mismatch: forget the row, keep going.
            log.warning("engine worker: unusable row %s dropped", row)
            self.engine.rollback(self.engine.n_events - 1)
            return False
        previous_beat = self._ahead_steps[-1] // STEPS_PER_BEAT if self._ahead_steps else self.converter.encoder.beat
        beat = previous_beat + event[1]
        step = beat * STEPS_PER_BEAT + event[2]
        if self._ahead_steps:
            # time2 is absolute in the beat (spec 2.4), so time1 = 0 with a smaller time2 would go back in
            # time; a sampled row may do that, the played answer never does.
            step = max(step, self._ahead_steps[-1])
        gap = step - (self._ahead_steps[-1] if self._ahead_steps else step)
        self._ahead.append(row)
        self._ahead_steps.append(step)
        self.stats.events += 1
        self.stats.compute_s += elapsed
        self.stats.music_s += gap / self._steps_per_s
        return True

    # ---- answers -------------------------------------------------------------------------------------
    def _advance_answer(self, answer: _Answer) -> None:
        """Schedule the rows ahead that are not yet scheduled; generate one more when none is left."""
        if answer.next_index >= len(self._ahead) and not self._generate_one():
            return
        notes = []
        while answer.next_index < len(self._ahead):
            i = answer.next_index
            step = self._ahead_steps[i]
            if answer.first_step is None:
                answer.first_step = step
                self._fit_answer(answer, step)
                # Follow: the answer's beats are the musician's (its first note keeps its place in the beat).
                follow = self.config.tempo == "follow"
                answer.origin_step = step - step % STEPS_PER_BEAT if follow else step
            onset = answer.due + (step - answer.origin_step) / self._steps_per_s
            if onset - answer.due >= answer.length_s:
                answer.done = True
                break
            if not answer.onsets and onset < now() + LATE_MARGIN_S:
                self._come_in_later(answer, now() + LATE_MARGIN_S - onset)
                onset = answer.due + (step - answer.origin_step) / self._steps_per_s
            event = self.tokenizer.row_to_event(self._ahead[i])
            _, _, _, _, _channel, pitch, velocity, duration = event
            end = min(onset + duration / self._steps_per_s, answer.due + answer.length_s)
            if onset < now() + LATE_MARGIN_S:
                # Generated too late to sound on time: dropped (and counted), never sent late; generation has
                # fallen behind the answer, which ends here (shortened) rather than stall or go on late.
                self.stats.late_rows += 1
                self.stats.dropped += 1
                self.stats.cut_answers += 1
                answer.done = True
                break
            answer.onsets.append(onset)
            answer.next_index += 1
            notes.append((onset, end, min(127, max(0, pitch - self.shift)), velocity))
        if notes:
            self.slot.play(answer.answer_id, notes)

    def _come_in_later(self, answer: _Answer, late_s: float) -> None:
        """Nothing of the answer sounds yet and its first note is already due: the worker was held up (a
        flood's recovery, a key change re-read, a starved thread). The answer comes in later, on the next
        eighth of its grid, rather than not at all; more than ``MAX_COME_IN_BEATS`` (or ``MAX_COME_IN_S``,
        whichever is longer) late, it is dropped."""
        eighth_s = STEPS_PER_BEAT / 2 / self._steps_per_s
        delay = math.ceil(late_s / eighth_s) * eighth_s
        if delay <= max(MAX_COME_IN_BEATS * 2 * eighth_s, MAX_COME_IN_S) + 1e-9:
            answer.due += delay
            self.stats.delayed_answers += 1
            log.info("answer %d: the worker was held up; it comes in %.0f ms later", answer.answer_id, delay * 1e3)
        else:
            log.warning("answer %d: held up %.0f ms, too long to come in late", answer.answer_id, late_s * 1e3)

    def _fit_answer(self, answer: _Answer, first_step: int) -> None:
        """Plan the answer with the measured generation rate, so that it never stalls mid-phrase.

        ``rate`` is music seconds generated per second of compute (the headroom, with a safety share).
        Below 1, what is not yet generated when the answer starts is generated more slowly than it is
        played; the point ``x`` seconds into the answer is ready ``(x - ahead) / rate`` after now and due
        ``slack + delay + x`` after now. So the start is delayed (up to ``MAX_START_DELAY_BEATS``) and the
        answer cut to the length whose end is still ready in time."""
        stats = self.stats
        if stats.events < MIN_RATE_EVENTS:
            return  # too little measured yet to plan with
        headroom = stats.headroom
        if headroom * RATE_SAFETY >= 1.0:
            return
        if not self._warned_slow:
            self._warned_slow = True
            log.warning("engine worker: the model generates only %.2f s of music per s of compute, too little "
                        "to stay ahead of an answer: answers start later or are shorter so that none stalls",
                        headroom)
        rate = max(headroom * RATE_SAFETY, 1e-3)
        ahead_s = (self._ahead_steps[-1] - first_step) / self._steps_per_s if self._ahead_steps else 0.0
        length = answer.length_s
        slack = max(0.0, answer.due - now())
        delay = min(max(0.0, (length - ahead_s) / rate - length - slack),
                    MAX_START_DELAY_BEATS * STEPS_PER_BEAT / self._steps_per_s)
        if delay > 0:
            answer.due += delay
            self.stats.delayed_answers += 1
        fits = (delay + slack + ahead_s / rate) / (1.0 / rate - 1.0)
        if fits < length:
            answer.length_s = max(fits, ahead_s)
            self.stats.shortened_answers += 1
        log.debug("answer %d: %.2f s ahead, start %.0f ms later, %.2f of %.2f s", answer.answer_id, ahead_s,
                  delay * 1e3, answer.length_s, length)

    def _finish_answer(self, t: float) -> None:
        """The answer is over at ``t``: rows of notes that started before ``t`` join the context."""
        answer = self._answer
        self._answer = None
        if answer is None:
            return
        self._settled = max(self._settled, answer.answer_id)
        keep = sum(1 for onset in answer.onsets if onset < t)
        if keep == 0:
            self._rollback_ahead()
            return
        self.engine.rollback(self._committed + keep)
        for row in self._ahead[:keep]:
            self.converter.encoder.advance(row)
        self._committed = self.engine.n_events
        # Re-anchor the converter: grid step origin_step (fixed: the first note's) sounded at ``due``.
        self._reanchor(answer.due, answer.origin_step)
        self._ahead.clear()
        self._ahead_steps.clear()
        self._rng = None

    def _drop_answer(self) -> None:
        if self._answer is not None:
            self._settled = max(self._settled, self._answer.answer_id)
            self._answer = None

    def _reanchor(self, time_s: float, step: int) -> None:
        """Make ``time_s`` map to grid ``step`` in the converter, keeping its tempo."""
        self.converter.reanchor(time_s, step / STEPS_PER_BEAT)
