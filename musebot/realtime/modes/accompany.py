"""``musebot serve --mode accompany``: while the musician plays, musebot plays the other parts.

The parts (``--parts bass,chords,...``, each on its own channel and program, :mod:`constraints`) come from
the model, conditioned on everything played so far: the musician's finished notes and the parts' own notes
share one context, each on its own track. Generation runs ahead of the playhead (spec ``realtime-field.md``
§5 item 2, speculation with a commit horizon and retraction):

* the model samples the next events of every track, **the musician's included**: its guess of what the
  musician will play is used for planning and never played;
* planned part notes that come within the commit horizon (``commit_beats``, about a beat) are fixed: they
  are scheduled and join the context;
* the rest of the plan is rolled back (``Engine.rollback``) and re-planned when the musician's actual notes
  differ from the guess (a different pitch, or no guessed note near the played one), or when the key
  changes (the key lock then also retracts fixed notes not yet sent that left the new key);
* guesses that keep missing (a model that rarely foresees the musician) pause guessing for a few bars: the
  plan then stands when she plays and is re-made every few beats to hear her (:mod:`accompany_plan`);
* when generation falls behind, the planner degrades: it stops guessing the musician's part and plans a
  shorter way ahead; a note it could not fix in time is dropped and counted, never sent late.

The clock, the parts' scheduling, telemetry and panic are the :class:`~musebot.realtime.modes.band.Band`'s.
"""

from __future__ import annotations

import logging
import queue
from collections import deque
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from musebot.engine.masks import DRUM_CHANNEL
from musebot.realtime import midi
from musebot.realtime.clock import now
from musebot.realtime.config import ServeConfig
from musebot.realtime.constraints import KeyFollower, LiveSettings, PartMasks, PartsConfigError, shift_to_c
from musebot.realtime.harmony_parts import chart_tonic
from musebot.realtime.inbox import Inbox
from musebot.realtime.io.outputs import Output
from musebot.realtime.modes.accompany_plan import Guessing, Item, Retiming, insert, to_retime
from musebot.realtime.modes.band import MUSICIAN_TRACK, PART_TAG, Band, BandConfig
from musebot.realtime.modes.base import ModelThread
from musebot.realtime.scheduler import Scheduler
from musebot.tokenizers.vocab import STEPS_PER_BEAT

if TYPE_CHECKING:
    from musebot.engine.engine import Engine

log = logging.getLogger(__name__)

RATE_WINDOW = 64  # the generation rate is measured over the latest this many events
MIN_RATE_EVENTS = 16  # and only once this many were generated
TEMPO_ROW_MAX_BPM = 383  # the vocabulary's bpm values are 0..383
RECOVER_HEADROOM = 1.5  # behind, full planning comes back once the model is this much faster than the music
PLAN_RESERVE_EVENTS = 256  # events reserved in the engine beyond max_context: a plan ahead, its guesses


class Accompanist(Band):
    """The accompaniment planner (module docstring): a thread that owns the engine."""

    mode = "accompany"
    # The longest silence the parts' next event may leave, in grid steps (smaller: denser parts, more
    # events per beat to generate).
    max_time_gap = 2 * STEPS_PER_BEAT

    def __init__(self, engine: Engine, config: ServeConfig, band: BandConfig, scheduler: Scheduler,
                 outputs: Sequence[Output], settings: LiveSettings, api: int | None = None) -> None:
        super().__init__(config, band, scheduler, outputs, settings, api)
        from musebot.engine.sampling import SamplerSettings
        from musebot.tokenizers import MIDITokenizer

        self.engine = engine
        self.tokenizer = MIDITokenizer.from_dict(engine.config["tokenizer"])
        self.sampler = SamplerSettings(temperature=config.temperature, top_p=config.top_p, top_k=config.top_k)
        self.parts = list(settings.parts.values())
        self.tracks = {MUSICIAN_TRACK: 0}
        for i, part in enumerate(self.parts):
            self.tracks[MUSICIAN_TRACK + 1 + i] = part.channel
        self.part_of_channel = {p.channel: p for p in self.parts}
        # Bounded: in a flood the oldest waiting notes are dropped (newest win), never the commands.
        self._inbox = Inbox()
        self._held: dict[int, Item] = {}  # the musician's sounding notes by pitch (planner thread)
        self.committed: list[Item] = []  # the musician's finished notes and the fixed part notes
        self._rows: list[list[int]] = []  # rows in the engine after BOS (context, then plan)
        self._plan: list[Item] = []  # planned, not fixed (part notes and guesses of the musician)
        self._plan_rows = 0  # how many of _rows are plan
        # A model trained in C major / A minor ("key_normalised") hears the session moved to C, and its notes
        # are moved back: ``shift`` semitones from the musician's pitches to the model's.
        self.key_follower = KeyFollower() if engine.config.get("key_normalised") else None
        self._guessed = False  # the latest planned event guessed the musician
        self.guessing = Guessing()  # whether the planner guesses the musician now (it pauses after misses)
        self.shift = 0
        self._mask_cache: dict[tuple, PartMasks] = {}  # by (pitch classes, tracks): key changes come back
        self.degraded = False
        self.plan_stats = {"replans": 0, "events": 0, "guess_hits": 0, "guess_misses": 0, "compute_s": 0.0,
                           "behind": 0, "capped": 0, "music_s": 0.0, "replayed_bars": 0, "leaps": 0}
        self._rate: deque[tuple[float, float]] = deque(maxlen=RATE_WINDOW)  # (compute s, music s) per event
        self._plan_began = 0.0  # the playhead (grid steps) when the current plan started
        self._last_step = 0  # grid step of the last row in the engine (context or plan)
        self._rng = np.random.default_rng(config.seed)
        self._stopped_seen = False
        self._retiming = Retiming()
        self._step_s = 0.005
        # Sized (and ONNX Runtime's arena warmed) for the bounded context and a plan ahead of it, so memory
        # is flat from the start (a soak grew 16 MB at minute 13, when the context first grew that long).
        engine.reserve(band.max_context + PLAN_RESERVE_EVENTS)
        engine.append([engine.vocab.special_row(engine.vocab.bos_id)])
        # A model error drops the plan; the band goes on.
        self._model = ModelThread("musebot-accompany", self._step, lambda: self._inbox.put(("quit",)),
                                  on_error=self._drop_plan)
        self._model.start()  # after the assignment: the first step reads self._model

    # ---- listener thread: only enqueue ---------------------------------------------------------------
    def play(self, t: float, msg: midi.Message) -> None:
        # The onset goes to the planner at once (it decides whether the plan still holds); the length
        # follows at the release. Both in beats, read from the timebase at the moment they were played.
        if midi.is_note_on(msg):
            self._inbox.put(("on", self.timebase.beat_at(t), msg[1], msg[2]), sheddable=True)
        elif midi.is_note_off(msg):
            self._inbox.put(("off", self.timebase.beat_at(t), msg[1]), sheddable=True)

    def key_changed(self, t: float) -> None:
        self._inbox.put(("key", t))

    def overflows(self) -> dict:
        return {"backlog_dropped": self._inbox.dropped}

    def harmony_changed(self, t: float) -> None:
        # Re-planned like a key change: fixed notes not yet sent that leave the new chords are withdrawn.
        self._inbox.put(("key", t))

    def panic(self, t: float, reason: str, all_channels: bool = False) -> None:
        self._inbox.put(("replan", t))
        super().panic(t, reason, all_channels)

    def close(self) -> None:
        self._model.stop()
        super().close()

    # ---- the planner thread --------------------------------------------------------------------------
    def _step(self) -> None:
        tb = self.timebase
        self._drain()
        if not self._model.running:
            return
        if not tb.running:
            if not self._stopped_seen:
                self._stopped_seen = True
                self.telemetry.retracted += self.retract()
                self._drop_plan()
                # Part notes fixed past the stop position never sounded: they leave the context.
                position = tb.beat_at(now()) * STEPS_PER_BEAT
                self.committed = [i for i in self.committed if i.part is None or i.step < position]
                log.info("clock stopped: the parts stop with it")
            self._wait(0.01)
            return
        self._stopped_seen = False
        playhead = tb.beat_at(now()) * STEPS_PER_BEAT
        self._follow_timebase(playhead)
        horizon = self.band.plan_beats * STEPS_PER_BEAT
        if self.degraded:
            # No guesses, so a short plan, but one that reaches past a replayed bar: a slow model then
            # generates the bar after the one being replayed, instead of idling until that one is over.
            horizon = max(self.band.min_plan_beats, self.band.commit_beats + tb.meter.bar_beats + 1) * STEPS_PER_BEAT
        self._missed_guesses(playhead)
        self._commit(playhead)
        # Not guessing: the notes fixed so far stand, the rest is re-made hearing hers (accompany_plan.py).
        every = max(self.band.commit_beats, self.band.plan_beats - self.band.commit_beats) * STEPS_PER_BEAT
        if not self.degraded and not self.guessing.active(playhead) and self.guessing.replan_to_hear(
                playhead, self._plan_began, every):
            self._drop_plan()
        end = self._last_step if self._plan_rows else self._context_end()
        if self.degraded and end < playhead + self.band.commit_beats * STEPS_PER_BEAT:
            if self._replay_bar(playhead):
                return
            self._leap_ahead(playhead)
        if end < playhead + horizon:
            self.wait_for_quiet(self._step_s * 1.5)
            self._generate_one()
            self._check_pace(playhead)
        else:
            self._wait(0.004)

    def _follow_timebase(self, playhead: float) -> None:
        """Keep the fixed notes on the beat when the clock changes: once it moved the furthest of them by
        more than a millisecond, the notes still waiting in the scheduler are timed again (the plan is in
        beats and stands; accompany_plan.py); a jump back (start from bar 1, song position) starts a new
        context."""
        tb = self.timebase
        ahead = (4 + self.band.commit_beats + self.timebase.meter.bar_beats) * STEPS_PER_BEAT  # a replayed bar
        if self.committed and playhead < self.committed[-1].step - ahead:
            log.info("accompany: the clock went back to beat %.1f; a new context starts", playhead / STEPS_PER_BEAT)
            self.retract()
            self.committed = []
            self._held.clear()
            self.guessing = Guessing()
            self._drop_plan()
        if self._retiming.moved(tb, playhead / STEPS_PER_BEAT + self.band.commit_beats + 1):
            withdrawn = []
            for name in self.settings.parts:
                self.scheduler.cancel(PART_TAG + name, release=False, withdrawn=withdrawn)
            parts = [i for i in self.committed if i.part is not None and self._kept(i)]
            channels = {name: part.channel for name, part in self.settings.parts.items()}
            for item, whole in to_retime(parts, withdrawn, channels):
                self._schedule(item, retimed=True) if whole else self._schedule_off(item)

    def _wait(self, seconds: float) -> None:
        self._inbox.wait(seconds)  # what came is handled in order by the next _drain

    def _drain(self) -> None:
        while True:
            try:
                command = self._inbox.get_nowait()
            except queue.Empty:
                return
            kind = command[0]
            if kind == "on":
                self._musician_on(*command[1:])
            elif kind == "off":
                self._musician_off(*command[1:])
            elif kind == "key":
                retracted = self._retract_out_of_key()
                self.telemetry.retracted += retracted
                self._drop_plan()
            elif kind == "replan":
                self._drop_plan()
                self.committed = [i for i in self.committed if i.part is None or i.step <= self._now_step()]
            elif kind == "quit":
                self._model.running = False
                return

    def _now_step(self) -> float:
        return self.timebase.beat_at(now()) * STEPS_PER_BEAT

    def _context_end(self) -> int:
        return self.committed[-1].step if self.committed else int(self._now_step())

    def _musician_on(self, beat: float, pitch: int, velocity: int) -> None:
        """A note of the musician enters the context at its onset, with a provisional length of a beat
        (corrected at its release; the next re-sync of the context writes the true one)."""
        step = max(0, round(beat * STEPS_PER_BEAT))
        if pitch in self._held:
            self._musician_off(beat, pitch)
        if self.key_follower is not None:
            self.key_follower.hear(beat, pitch)
            # Over a chart the key is the chart's (its last chord's), not a guess from the melody: a shift
            # that moved with the guess would move planned notes off the chords they were masked for.
            chart = self.harmony.chart if self.harmony.mode == "chart" else None
            wanted = shift_to_c(chart_tonic(chart)) if chart is not None else self.key_follower.shift
            if wanted != self.shift:
                # The whole context is re-read in the new transposition at the next sync (one prefill).
                log.info("accompany: the key moved; the model now hears %+d semitones", wanted)
                self.shift = wanted
                self._drop_plan()
        item = Item(step, MUSICIAN_TRACK, 0, pitch, velocity, STEPS_PER_BEAT)
        self._held[pitch] = item
        insert(self.committed, item)
        self.guessing.heard = True
        # Was it guessed? A guessed note of the same pitch within a sixteenth keeps the plan.
        for guess in self._plan:
            if guess.part is None and guess.pitch == pitch and abs(guess.step - step) <= 1:
                self.plan_stats["guess_hits"] += 1
                self.guessing.hit()
                self._plan.remove(guess)
                return
        if self.degraded or not self.guessing.active(self._now_step()):
            return  # no guesses (behind, or they kept missing): the plan stands (accompany_plan.py)
        self._guess_missed()

    def _guess_missed(self) -> None:
        self.plan_stats["guess_misses"] += 1
        self.guessing.miss(self._now_step(), self.timebase.meter.bar_beats * STEPS_PER_BEAT)
        self._drop_plan()

    def _musician_off(self, beat: float, pitch: int) -> None:
        item = self._held.pop(pitch, None)
        if item is not None:
            item.duration = max(1, round(beat * STEPS_PER_BEAT) - item.step)

    def _missed_guesses(self, playhead: float) -> None:
        """A guessed note of the musician whose moment has passed unplayed: the plan followed a wrong
        guess (the musician stopped, or plays elsewhere), so it is re-planned."""
        for item in self._plan:
            if item.part is None and item.step < playhead - 1:
                self._guess_missed()
                return

    def _drop_plan(self) -> None:
        if self._plan or self._plan_rows:
            self.plan_stats["replans"] += 1
        self._plan = []
        self._plan_rows = 0  # the engine rows past the context are re-synced before the next event

    def _fits(self, item: Item, classes: frozenset[int] | None) -> bool:
        """Whether a part note fits the key's ``classes``, or with chords the chord in force at its onset."""
        if item.channel == DRUM_CHANNEL:
            return True
        if self.harmony.active:
            role = self.settings.parts[item.part].role
            classes = self.harmony.classes(role, item.step / STEPS_PER_BEAT, self.key_scale())
        return classes is None or item.pitch % 12 in classes

    def _retract_out_of_key(self) -> int:
        """Fixed part notes not yet sent that fall outside the new key (or chords) leave the schedule and the
        context. A note already sounding when its chord changes is held to its end (it was chosen for the
        chord at its onset; its note-off is scheduled with it, so it never hangs)."""
        classes = self.pitch_classes()
        if classes is None and not self.harmony.active:
            return 0
        later = self._now_step() + self.band.safety_ms / 1000 * self.timebase.bpm / 60 * STEPS_PER_BEAT
        pending = [i for i in self.committed if i.part is not None and i.step > later]
        if all(self._fits(i, classes) for i in pending):
            return 0
        count = self.retract()
        gone = {id(i) for i in pending}
        self.committed = [i for i in self.committed if id(i) not in gone]
        # Those in key go back on the schedule (the retract took the whole part's queue).
        for item in pending:
            if self._fits(item, classes):
                self._schedule(item)
                insert(self.committed, item)
        return count

    # ---- model ---------------------------------------------------------------------------------------
    def _masks_now(self) -> PartMasks:
        classes = self.pitch_classes()
        tracks = dict(self.tracks)
        if self.degraded or self._guessed or not self.guessing.active(self._now_step()):
            # Degraded: no more guessing of the musician (half the events to sample). Otherwise a guess is
            # followed by a part note: a model that mostly saw one track would go on guessing the musician.
            del tracks[MUSICIAN_TRACK]
        harmony = self.harmony
        chords = harmony.active
        key = (classes, tuple(sorted(tracks)), self.shift, chords and (harmony.mode, harmony.version),
               self.max_time_gap)
        if key not in self._mask_cache:
            # In the model's frame: registers and pitch classes moved by the key-normalising shift.
            shift = self.shift
            registers = {p.channel: (min(127, max(0, p.low + shift)), min(127, max(0, p.high + shift)))
                         for p in self.parts}

            def moved(pcs: frozenset[int] | None) -> frozenset[int] | None:
                return pcs and frozenset((c + shift) % 12 for c in pcs)

            roles = {p.channel: p.role for p in self.parts}
            key_scale = self.key_scale()

            def chord_classes(channel: int, beat: float) -> frozenset[int] | None:
                # The musician's guessed notes (channel 0 unless a part's) keep to the chord scale too.
                return moved(harmony.classes(roles.get(channel, "melody"), beat, key_scale))

            at = chord_classes if chords else None
            try:
                masks = PartMasks(self.engine.vocab, tracks, registers, moved(classes),
                                  max_time_gap=self.max_time_gap, max_duration=4 * STEPS_PER_BEAT, classes_at=at)
            except PartsConfigError:
                # A narrow register holds none of the few classes a key change leaves: the whole key then.
                masks = PartMasks(self.engine.vocab, tracks, registers, moved(self.key_tracker.scale()),
                                  max_time_gap=self.max_time_gap, max_duration=4 * STEPS_PER_BEAT, classes_at=at)
            if len(self._mask_cache) > 256:
                self._mask_cache.clear()
            self._mask_cache[key] = masks
        return self._mask_cache[key]

    def _to_model(self, pitch: int, channel: int, back: bool = False) -> int:
        """A melodic pitch moved into the model's frame (or ``back`` out of it); drums stay."""
        if channel == DRUM_CHANNEL or not self.shift:
            return pitch
        moved = pitch - self.shift if back else pitch + self.shift
        # The shift is under an octave: a pitch pushed off the MIDI range comes back by one octave.
        return moved - 12 if moved > 127 else moved + 12 if moved < 0 else moved

    def _encode(self, items: Sequence[Item], beat: int) -> list[list[int]]:
        """Rows of ``items`` (step order) after a row at ``beat``; sets ``_last_step`` to the last row's step."""
        rows = []
        self._last_step = beat * STEPS_PER_BEAT
        for item in items:
            b, t2 = divmod(item.step, STEPS_PER_BEAT)
            b = max(b, beat)
            # time1 has 128 values: a longer silence is shortened to 127 beats (the model never sees more).
            row = self.tokenizer.event_to_row(["note", min(b - beat, 127), t2, item.track, item.channel,
                                               self._to_model(item.pitch, item.channel), item.velocity,
                                               min(item.duration, 2047)])
            if row is not None:
                rows.append(row)
                beat = b
                self._last_step = item.step
        return rows

    def _sync_context(self) -> None:
        """Make the engine hold BOS + the committed context exactly (rolling back to the common prefix)."""
        if len(self.committed) > self.band.max_context:
            self.committed = self.committed[len(self.committed) - self.band.max_context * 3 // 4:]
        rows = self._encode(self.committed, self.committed[0].step // STEPS_PER_BEAT if self.committed else 0)
        common = 0
        limit = min(len(rows), len(self._rows))
        while common < limit and rows[common] == self._rows[common]:
            common += 1
        self.engine.rollback(1 + common)
        if len(rows) > common:
            self.engine.append(np.asarray(rows[common:], np.int64))
        self._rows = rows
        self._plan_rows = 0
        self._guessed = False
        self.guessing.heard = False
        self._plan = []
        self._rng = np.random.default_rng([self.config.seed, len(self.committed)])
        self._plan_began = self._now_step()

    def _generate_one(self) -> None:
        if self._plan_rows == 0 and not self._plan:
            self._sync_context()
        start = now()
        masks = self._masks_now()
        masks.origin_step = self._last_step  # each event is masked by the chord at its own onset
        row = self.engine.step(self.sampler, masks, self._rng)[0].tolist()
        elapsed = now() - start
        self.plan_stats["compute_s"] += elapsed
        self._step_s += 0.1 * (elapsed - self._step_s)  # running mean of a step, for wait_for_quiet
        self.plan_stats["events"] += 1
        event = self.tokenizer.row_to_event(row)
        previous = self._last_step
        prev_beat = previous // STEPS_PER_BEAT
        if event is None or event[0] != "note":
            self.engine.rollback(self.engine.n_events - 1)
            self._rate.append((elapsed, 0.0))
            return
        _, time1, time2, track, channel, pitch, velocity, duration = event
        pitch = self._to_model(pitch, channel, back=True)
        step = max((prev_beat + time1) * STEPS_PER_BEAT + time2, previous)
        music_s = (step - previous) / STEPS_PER_BEAT * self.timebase.seconds_per_beat
        self.plan_stats["music_s"] += music_s
        self._rate.append((elapsed, music_s))
        part = self.part_of_channel.get(channel) if track != MUSICIAN_TRACK else None
        item = Item(step, track, channel, pitch, velocity, max(1, duration), part.name if part else None)
        self._rows.append(row)
        self._last_step = step
        self._plan_rows += 1
        self._guessed = part is None
        # Sampled for a moment already (nearly) past: a part note is stale, never fixed (so never dropped nor
        # late); a guess can neither match nor be missed. Both stay in the context until the next re-plan.
        late = step < self._now_step() + self.band.safety_ms / 1000 * self.timebase.bpm / 60 * STEPS_PER_BEAT
        if part is not None and self._crowded(item, part.polyphony):
            self.plan_stats["capped"] += 1  # the part's polyphony is full at that onset: not played
        elif not late:
            self._plan.append(item)
        elif part is not None:
            # Generated too late to play: never sent late. A note the plan had a whole commit horizon to
            # make was lost to the model's speed and is counted as dropped; one nearer the plan's start only
            # as stale (a re-plan starts from the latest fixed note, which may be a moment ago).
            self.telemetry.stale += 1
            if step >= self._plan_began + self.band.commit_beats * STEPS_PER_BEAT:
                self.telemetry.dropped += 1

    def _crowded(self, item: Item, polyphony: int) -> bool:
        """Whether the part already strikes ``polyphony`` notes, or this pitch, at the item's onset."""
        same = [i for i in self._plan if i.part == item.part and i.step == item.step]
        same += [i for i in self.committed[-16:] if i.part == item.part and i.step == item.step]
        return len(same) >= polyphony or any(i.pitch == item.pitch for i in same)

    def headroom(self) -> float | None:
        """Seconds of music generated per second of compute over the latest events (None: too few yet)."""
        rate = list(self._rate)  # one copy under the interpreter lock: the planner thread appends to it
        if len(rate) < MIN_RATE_EVENTS:
            return None
        compute = sum(c for c, _ in rate)
        return sum(m for _, m in rate) / compute if compute > 0 else None

    def _check_pace(self, playhead: float) -> None:
        """Degrade when the model is measured slower than the music or the plan does not reach past the
        commit horizon; recover when it is faster again and well ahead. The first time is logged as a
        warning, later ones at debug level (a slow model would otherwise log every few bars)."""
        end = self._last_step
        commit = playhead + self.band.commit_beats * STEPS_PER_BEAT
        headroom = self.headroom()
        slow = headroom is not None and headroom < 1.0
        # A plan short of the horizon after 8 rows says "slow" only while the rate is unknown or low: a fast
        # model's rows may all fall on one onset (a chord the part's polyphony caps), which is no lag.
        short = end < commit and self._plan_rows > 8 and (headroom is None or headroom < RECOVER_HEADROOM)
        if not self.degraded and (slow or short):
            self.degraded = True
            self.plan_stats["behind"] += 1
            level = logging.WARNING if self.plan_stats["behind"] == 1 else logging.DEBUG
            log.log(level, "accompany: generation behind the music (headroom %s); degraded: no guessing of the "
                    "musician, the last bar replayed (or the plan moved ahead) where nothing is ready",
                    "?" if headroom is None else f"{headroom:.2f}")
        elif (self.degraded and headroom is not None and headroom >= RECOVER_HEADROOM
              and end >= playhead + self.band.min_plan_beats * STEPS_PER_BEAT):
            # (the degraded plan reaches min_plan_beats only: waiting for plan_beats would never recover)
            self.degraded = False
            log.debug("accompany: generation ahead again; full planning")

    def _replay_bar(self, playhead: float) -> bool:
        """Behind, with nothing ready for the commit horizon: the part notes of the bar before it (or of
        the latest of the 4 bars before that held any) are played again a bar (or k bars) later, and the
        model goes on from their end, a bar ahead. Better than the parts falling silent; True when done."""
        bar = round(self.timebase.meter.bar_beats * STEPS_PER_BEAT)
        start = int(playhead + self.band.commit_beats * STEPS_PER_BEAT) + 1
        for k in range(1, 5):
            source = [i for i in self.committed
                      if i.part is not None and start - k * bar <= i.step < start - (k - 1) * bar]
            if source:
                break
        else:
            return False
        classes = self.pitch_classes()
        again = [replace(item, step=item.step + k * bar) for item in source]
        again = [item for item in again if self._fits(item, classes)]  # the key or chord may have moved on
        if not again:
            return False
        self._drop_plan()
        for item in again:
            self._schedule(item)
            insert(self.committed, item)
        self.plan_stats["replayed_bars"] += 1
        return True

    def _leap_ahead(self, playhead: float) -> None:
        """Behind with nothing to replay: the plan would go on from where it ends, already past, and the
        model spend its time on notes that can never sound. A tempo event restating the tempo, a beat past
        the commit horizon, moves the plan's start there (a plan row: it leaves with the next re-plan)."""
        if self._plan_rows == 0 and not self._plan:
            self._sync_context()
        target = int(playhead + (self.band.commit_beats + 1) * STEPS_PER_BEAT)
        beat, position = divmod(target, STEPS_PER_BEAT)
        row = self.tokenizer.event_to_row(["set_tempo", min(beat - self._last_step // STEPS_PER_BEAT, 127),
                                           position, 0, min(round(self.timebase.bpm), TEMPO_ROW_MAX_BPM)])
        if row is None or target <= self._last_step:
            return
        self.engine.append(np.asarray([row], np.int64))
        self._rows.append(row)
        self._plan_rows += 1
        self._last_step = target
        self.plan_stats["leaps"] += 1

    def generation(self) -> dict:
        """The model's figures for the status: events, headroom (recent), behind, dropped, bars replayed."""
        headroom = self.headroom()
        return {"events": self.plan_stats["events"], "headroom": None if headroom is None else round(headroom, 3),
                "behind": self.degraded or (headroom is not None and headroom < 1.0),
                "dropped": self.telemetry.dropped, "replayed_bars": self.plan_stats["replayed_bars"],
                "leaps": self.plan_stats["leaps"],
                "replans": self.plan_stats["replans"]}

    @property
    def state(self) -> str:
        """``behind`` while the model cannot keep up (the page and ``/api/status`` show it)."""
        if self.timebase.running and self.generation()["behind"]:
            return "behind"
        return "playing" if self.timebase.running else "stopped"

    # ---- fixing notes ---------------------------------------------------------------------------------
    def _commit(self, playhead: float) -> None:
        """Part notes of the plan inside the commit horizon are fixed and scheduled; guesses of the musician
        stay in the plan (never played) until the musician's notes confirm or contradict them."""
        limit = playhead + self.band.commit_beats * STEPS_PER_BEAT
        if not self._plan or self._plan[0].step > limit:
            return
        keep = []
        for item in self._plan:
            if item.step > limit or item.part is None:
                keep.append(item)
            elif item.step >= playhead:
                self._schedule(item)
                insert(self.committed, item)
            else:  # its moment passed before the planner came back to it: never sent late
                self.telemetry.stale += 1
        self._plan = keep

    def _schedule(self, item: Item, retimed: bool = False) -> None:
        tb = self.timebase
        due = tb.time_at(item.step / STEPS_PER_BEAT)
        end = tb.time_at((item.step + item.duration) / STEPS_PER_BEAT)
        if due is None or end is None:
            return
        if self._kept(item):
            self.play_note(self.settings.parts[item.part], due, end, item.pitch, item.velocity, retimed)

    def _kept(self, item: Item) -> bool:
        """Density thins a part deterministically per note (same seed, same notes kept)."""
        density = self.settings.parts[item.part].density
        return density >= 1.0 or np.random.default_rng([self.config.seed, item.step, item.pitch]).random() < density

    def _schedule_off(self, item: Item) -> None:
        end = self.timebase.time_at((item.step + item.duration) / STEPS_PER_BEAT)
        part = self.settings.parts[item.part]
        if end is not None:
            off = midi.note_off(part.channel, item.pitch)
            self.scheduler.schedule_many([(max(end, now()), o, off) for o in self.outputs], PART_TAG + part.name)
