"""``musebot serve --mode looper``: the reflexive looper (Pachet et al. 2013; spec ``realtime-field.md`` §1.2,
§5 item 1). musebot plays the roles the musician is not playing.

Per bar, on the listener thread:

* shortly before the bar ends (``decide_beats`` before the next downbeat, so the next bar's first notes can
  be scheduled ahead), the notes the musician has played in this bar are classified by role
  (:mod:`roles`: bass, chords or melody, two at once when a wide bar splits into a low and a high layer);
* the parts whose role the musician is not playing get the next bar: **replayed** from the musician's own
  recorded bars of that role (transposed to the current key of the musician, kept in the part's register),
  or **generated** by the model in that role's register and channel (:class:`BarGenerator`, its own thread);
  ``looper_source`` auto replays a role that has recordings and generates the others;
* which recorded bar is replayed follows the interplay setting: ``mirror`` takes the one closest to the
  musician's current density and energy, ``contrast`` the farthest (RL's "feature-based interaction");
* when the bar is over, its notes are classified once more, whole, and remembered per role (the last
  ``loop_bars`` bars of each).

Controllers (defaults, any channel): clear a role's recordings (CC 85 bass, 86 chords, 87 melody; value
>= 64), freeze the loops (CC 88: nothing new is recorded and the replayed bars cycle in order), the source
(CC 89: 0..42 replay, 43..85 auto, 86..127 generate) and the interplay (CC 90: < 64 mirror, >= 64 contrast).
"""

from __future__ import annotations

import logging
import queue
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from musebot.realtime import midi
from musebot.realtime.clock import now
from musebot.realtime.config import ServeConfig
from musebot.realtime.constraints import LiveSettings, PartConfig, PartMasks, shift_to_c
from musebot.realtime.harmony_loops import move_over_changes
from musebot.realtime.io.outputs import Output
from musebot.realtime.modes.band import MUSICIAN_TRACK, Band, BandConfig
from musebot.realtime.modes.base import ModelThread
from musebot.realtime.roles import ROLES, BarNote, RoleClassifier, split_roles
from musebot.realtime.scheduler import Scheduler
from musebot.tokenizers.vocab import STEPS_PER_BEAT

if TYPE_CHECKING:
    from musebot.engine.engine import Engine

log = logging.getLogger(__name__)

LOOPER_CONTROLS = {"looper.clear_bass": 85, "looper.clear_chords": 86, "looper.clear_melody": 87,
                   "looper.freeze": 88, "looper.source": 89, "looper.interplay": 90}
DECIDE_BEATS = 0.5  # the next bar is chosen this long before it starts
TIE = 0.05  # interplay distances closer than this count as equal
CONTEXT_BARS = 4  # bars of the session the generator's context holds
# The engine's reservation: BOS, CONTEXT_BARS bars of the musician and the parts, and a bar being generated
# (at most 64 events a part); a busier context grows the cache past it, as before.
RESERVED_EVENTS = 768


@dataclass
class RecordedBar:
    """One bar the musician played in one role: its notes (onsets from the bar start), the key it was in."""

    notes: list[BarNote]
    tonic: int | None
    density: float  # notes per beat
    energy: float  # mean velocity / 127
    spans: tuple = ()  # (start, end, chord) in beats from the bar start, when chords were known (harmony_live)


def bar_character(notes: Sequence[BarNote], beats: float) -> tuple[float, float]:
    """Density (notes per beat) and energy (mean velocity, 0..1) of a bar, the interplay's two features."""
    if not notes:
        return 0.0, 0.0
    return len(notes) / beats, float(np.mean([n.velocity for n in notes])) / 127


def fit_register(pitch: int, part: PartConfig) -> int:
    """Move ``pitch`` by octaves into the part's register (the nearest octave when it cannot fit)."""
    while pitch < part.low and pitch + 12 <= 127:
        pitch += 12
    while pitch > part.high and pitch - 12 >= 0:
        pitch -= 12
    return pitch


def transposition(recorded: int | None, current: int | None) -> int:
    """Semitones from a recorded key to the current one, the smaller way round (-5..6); 0 when unknown."""
    if recorded is None or current is None:
        return 0
    shift = (current - recorded) % 12
    return shift - 12 if shift > 6 else shift


class Looper(Band):
    """The reflexive looper (module docstring); handle/tick/panic run on the daemon's listener thread."""

    mode = "looper"

    def __init__(self, config: ServeConfig, band: BandConfig, scheduler: Scheduler, outputs: Sequence[Output],
                 settings: LiveSettings, engine: Engine | None = None, api: int | None = None,
                 classifier: RoleClassifier | None = None) -> None:
        settings.controls = {**LOOPER_CONTROLS, **settings.controls}
        super().__init__(config, band, scheduler, outputs, settings, api)
        self.classifier = classifier or RoleClassifier.load()
        self.source = band.looper_source
        self.interplay = band.interplay
        self.frozen = False
        self.memory: dict[str, deque[RecordedBar]] = {r: deque(maxlen=band.loop_bars) for r in ROLES}
        self._cycle = dict.fromkeys(ROLES, 0)  # next bar to replay of a frozen loop
        self._held: dict[int, tuple[float, int]] = {}  # pitch -> (onset beat, velocity)
        self._notes: list[tuple[float, float, int, int]] = []  # (onset, end, pitch, velocity) in beats
        self._bar: int | None = None  # bar whose notes are being collected
        self._decided: int | None = None  # latest bar planned
        self.playing: set[str] = set()  # the musician's roles in the current bar
        # (bar, musician's roles, musebot's) of the latest bars: bounded, a gig has thousands of bars
        self.history: deque[tuple[int, tuple[str, ...], tuple[str, ...]]] = deque(maxlen=1024)
        self.generator = BarGenerator(engine, self) if engine is not None else None
        self.counts.update({"bars": 0, "replayed": 0, "generated": 0, "multi_role_bars": 0})

    # ---- input ---------------------------------------------------------------------------------------
    def play(self, t: float, msg: midi.Message) -> None:
        beat = self.timebase.beat_at(t)
        if midi.is_note_on(msg):
            self._release(msg[1], beat)
            self._held[msg[1]] = (beat, msg[2])
        elif midi.is_note_off(msg):
            self._release(msg[1], beat)

    def _release(self, pitch: int, beat: float) -> None:
        if pitch in self._held:
            onset, velocity = self._held.pop(pitch)
            self._notes.append((onset, max(beat, onset + 1 / STEPS_PER_BEAT), pitch, velocity))

    def control(self, t: float, controller: int, value: int) -> bool:
        for key, number in self.settings.controls.items():
            if number != controller or not key.startswith("looper."):
                continue
            action = key.split(".", 1)[1]
            if action.startswith("clear_") and value >= 64:
                role = action.removeprefix("clear_")
                self.memory[role].clear()
                log.info("looper: %s recordings cleared", role)
            elif action == "freeze":
                self.frozen = value >= 64
                log.info("looper: loops %s", "frozen" if self.frozen else "recording again")
            elif action == "source":
                self.source = ("replay", "auto", "generate")[min(value * 3 // 128, 2)]
                log.info("looper: source %s", self.source)
            elif action == "interplay":
                self.interplay = "contrast" if value >= 64 else "mirror"
                log.info("looper: interplay %s", self.interplay)
            return True
        return super().control(t, controller, value)

    # ---- bars ----------------------------------------------------------------------------------------
    def tick(self, t: float) -> None:
        super().tick(t)
        tb = self.timebase
        if not tb.running:
            return
        beat = tb.beat_at(t)
        bar = tb.bar_of(beat)
        if self._bar is None:
            self._bar = bar
        elif bar != self._bar:
            self._close_bar(self._bar, beat)
            self._bar = bar
        upcoming = tb.bar_of(beat + DECIDE_BEATS)
        if upcoming != bar and self._decided != upcoming and upcoming >= 0:
            self._decided = upcoming
            self._plan_bar(upcoming, beat)

    def _bar_notes(self, bar: int, until: float) -> list[BarNote]:
        """The musician's notes with onsets in ``bar`` before ``until`` (still-held ones end at ``until``)."""
        start = self.timebase.bar_start(bar)
        end = min(until, start + self.timebase.meter.bar_beats)
        notes = [(on, off, p, v) for on, off, p, v in self._notes if start <= on < end]
        notes += [(on, until, p, v) for p, (on, v) in self._held.items() if start <= on < end]
        return [BarNote(on - start, min(off, end) - on, p, v) for on, off, p, v in sorted(notes)]

    def _roles_of(self, notes: list[BarNote], beats: float) -> dict[str, list[BarNote]]:
        roles = split_roles(self.classifier, notes, beats) if notes else {}
        if len(roles) > 1:
            self.counts["multi_role_bars"] += 1
        return roles

    def _close_bar(self, bar: int, beat: float) -> None:
        """The bar is over: remember what the musician played in it, per role."""
        bar_beats = self.timebase.meter.bar_beats
        notes = self._bar_notes(bar, beat)
        start = self.timebase.bar_start(bar)
        # The model's context reaches back CONTEXT_BARS bars; older notes go.
        self._notes = [n for n in self._notes if n[0] >= start + bar_beats * (1 - CONTEXT_BARS)]
        self.counts["bars"] += 1
        if self.frozen or not notes:
            return
        for role, role_notes in self._roles_of(notes, bar_beats).items():
            density, energy = bar_character(role_notes, bar_beats)
            spans = self.harmony.bar_spans(start, bar_beats) if self.harmony.active else ()
            self.memory[role].append(RecordedBar(role_notes, self.key_tracker.tonic, density, energy, spans))

    def _plan_bar(self, bar: int, beat: float) -> None:
        """Choose and schedule what musebot plays in ``bar`` (module docstring)."""
        tb = self.timebase
        current = tb.bar_of(beat)
        heard = beat - tb.bar_start(current)
        roles = self._roles_of(self._bar_notes(current, beat), max(heard, 1.0))
        # A silent bar says nothing new: the musician is still in the roles of the bar before.
        if roles:
            if len(roles) > 1:
                log.info("looper: bar %d: the musician plays %s at once", current + 1, " and ".join(roles))
            self.playing = set(roles)
        density, energy = bar_character([n for ns in roles.values() for n in ns], max(heard, 1.0))
        ours, generate = [], []
        for part in self.settings.parts.values():
            if part.role in self.playing or part.role not in ROLES:
                continue
            recorded = self.memory[part.role]
            if self.source != "generate" and recorded:
                self._replay(part, bar, self._choose(part.role, density, energy))
                ours.append(part.name)
            elif self.source != "replay" and self.generator is not None:
                generate.append(part)
                ours.append(part.name)
        if generate:
            self.generator.request(bar, generate)
        self.history.append((bar, tuple(sorted(self.playing)), tuple(ours)))
        log.debug("looper: bar %d: musician %s; musebot %s", bar + 1, sorted(self.playing), ours)

    def _choose(self, role: str, density: float, energy: float) -> RecordedBar:
        recorded = list(self.memory[role])
        if self.frozen:
            bar = recorded[self._cycle[role] % len(recorded)]
            self._cycle[role] += 1
            return bar
        # Distance in (density / 4 notes a beat, energy). Bars about as close as the best (or as far as the
        # farthest) take turns, so a recorded two-bar line comes back as a two-bar loop.
        distance = np.array([abs(r.density - density) / 4 + abs(r.energy - energy) for r in recorded])
        target = distance.min() if self.interplay == "mirror" else distance.max()
        candidates = [r for r, d in zip(recorded, distance) if abs(d - target) <= TIE]
        bar = candidates[self._cycle[role] % len(candidates)]
        self._cycle[role] += 1
        return bar

    def _replay(self, part: PartConfig, bar: int, recorded: RecordedBar) -> None:
        """A recorded bar in ``bar``: over changes (a chart or tracked chords, then and now) each note moves
        from the chord it was played over to the chord in force now (harmony_loops); else by the key."""
        tb = self.timebase
        shift = transposition(recorded.tonic, self.key_tracker.tonic)
        start = tb.bar_start(bar)
        notes = recorded.notes
        target = self.harmony.bar_spans(start, tb.meter.bar_beats) if self.harmony.active else ()
        if recorded.spans and target:
            notes = move_over_changes(notes, recorded.spans, target, part.role, tb.meter.bar_beats)
            shift = 0
        for note in notes:
            due, end = tb.time_at(start + note.onset), tb.time_at(start + note.onset + note.duration)
            if due is None or end is None:
                return
            pitch = fit_register(note.pitch + shift, part)
            self.play_note(part, due, end, pitch, note.velocity)
        self.counts["replayed"] += 1

    # ---- the rest of the Band interface ---------------------------------------------------------------
    def panic(self, t: float, reason: str, all_channels: bool = False) -> None:
        if self.generator is not None:
            self.generator.cancel()
        self._decided = None  # the next bar is planned afresh
        super().panic(t, reason, all_channels)

    def close(self) -> None:
        if self.generator is not None:
            self.generator.close()
        super().close()

    def settings_dict(self) -> dict:
        return {**super().settings_dict(), "source": self.source, "interplay": self.interplay,
                "frozen": self.frozen, "playing": sorted(self.playing),
                "recorded_bars": {r: len(m) for r, m in self.memory.items()}}


class BarGenerator:
    """The looper's model player: one thread that owns the engine and writes whole bars of the parts asked
    for, conditioned on the session's last bars (the musician's notes on track 1, musebot's on the parts'
    tracks). Notes that are ready too late for their time are dropped, never sent late."""

    def __init__(self, engine: Engine, looper: Looper) -> None:
        from musebot.engine.sampling import SamplerSettings
        from musebot.tokenizers import MIDITokenizer

        self.engine = engine
        self.looper = looper
        # Sized once for the longest bar's context (and ONNX Runtime's arena warmed): each bar then resets
        # and refills the same cache instead of growing a new one by doubling.
        engine.reserve(RESERVED_EVENTS)
        self.tokenizer = MIDITokenizer.from_dict(engine.config["tokenizer"])
        cfg = looper.config
        self.sampler = SamplerSettings(temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k)
        parts = list(looper.settings.parts.values())
        self.track_of = {p.name: MUSICIAN_TRACK + 1 + i for i, p in enumerate(parts)}
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._generation = 0  # bumped by cancel: requests older than it are dropped
        self._step_s = 0.005  # running mean of a model step
        # The parts' generated notes: (onset beat, track, channel, pitch, velocity, length in beats).
        self.played: deque[tuple[float, int, int, int, int, float]] = deque(maxlen=512)
        self._model = ModelThread("musebot-looper-model", self._step, lambda: self._inbox.put(("quit",)))
        self._model.start()

    def request(self, bar: int, parts: list[PartConfig]) -> None:
        self._inbox.put(("bar", self._generation, bar, parts))

    def cancel(self) -> None:
        self._generation += 1

    def close(self) -> None:
        self._model.stop()

    def _step(self) -> None:
        command = self._inbox.get()
        if command[0] == "quit":
            self._model.running = False
            return
        _, generation, bar, parts = command
        if generation != self._generation:
            return
        try:
            self._bar(bar, parts, generation)
        except Exception:  # a model error must not stop the looper: this bar stays empty
            log.exception("looper: generating bar %d failed", bar + 1)

    def _context(self, start_beat: float) -> list[list[int]]:
        """Rows of the last CONTEXT_BARS bars before ``start_beat``: the musician's and the parts' notes."""
        tb = self.looper.timebase
        since = start_beat - CONTEXT_BARS * tb.meter.bar_beats
        notes = [(on, MUSICIAN_TRACK, 0, p, v, off - on) for on, off, p, v in list(self.looper._notes)
                 if since <= on < start_beat]
        notes += [n for n in list(self.played) if since <= n[0] < start_beat]
        notes.sort()
        # With nothing to hear, the first generated event is counted from the bar's own start.
        rows, beat = [], int(since) if notes else int(start_beat)
        for on, track, channel, pitch, velocity, duration in notes:
            step = round(on * STEPS_PER_BEAT)
            b, t2 = divmod(step, STEPS_PER_BEAT)
            b = max(b, beat)
            row = self.tokenizer.event_to_row(["note", min(b - beat, 127), t2, track, channel, pitch,
                                               velocity, max(1, min(round(duration * STEPS_PER_BEAT), 2047))])
            if row is not None:
                rows.append(row)
                beat = b
        self._last_beat = beat
        return rows

    def _bar(self, bar: int, parts: list[PartConfig], generation: int) -> None:
        looper = self.looper
        tb = looper.timebase
        start = tb.bar_start(bar)
        end = start + tb.meter.bar_beats
        engine = self.engine
        # A model trained in C major / A minor ("key_normalised") hears the bar moved to C, and plays back.
        tonic = looper.key_tracker.tonic
        shift = shift_to_c(tonic) if engine.config.get("key_normalised") else 0
        rows = engine.vocab.transpose_rows(np.asarray(self._context(start), np.int64), shift)
        engine.reset()
        engine.append(np.concatenate([[engine.vocab.special_row(engine.vocab.bos_id)], rows]))
        tracks = {self.track_of[p.name]: p.channel for p in parts}
        classes = looper.pitch_classes()
        harmony, key_scale = looper.harmony, looper.key_scale()
        roles = {p.channel: p.role for p in parts}

        def chord_classes(channel: int, beat: float) -> frozenset[int] | None:
            pcs = harmony.classes(roles.get(channel, "melody"), beat, key_scale)
            return pcs and frozenset((c + shift) % 12 for c in pcs)

        masks = PartMasks(engine.vocab, tracks,
                          {p.channel: (max(0, p.low + shift), min(127, p.high + shift)) for p in parts},
                          classes and frozenset((c + shift) % 12 for c in classes),
                          max_time_gap=2 * STEPS_PER_BEAT, max_duration=4 * STEPS_PER_BEAT,
                          classes_at=chord_classes if harmony.active else None)
        part_of = {p.channel: p for p in parts}
        rng = np.random.default_rng([looper.config.seed, bar])
        beat = self._last_beat
        step = beat * STEPS_PER_BEAT
        for _ in range(64 * len(parts)):  # at most 64 events a part in a bar
            if generation != self._generation:
                return
            looper.wait_for_quiet(self._step_s * 1.5)
            started = now()
            masks.origin_step = step  # the chord at each event's own onset
            row = engine.step(self.sampler, masks, rng)[0].tolist()
            self._step_s += 0.1 * (now() - started - self._step_s)
            event = self.tokenizer.row_to_event(row)
            if event is None or event[0] != "note":
                engine.rollback(engine.n_events - 1)
                continue
            _, time1, time2, _track, channel, pitch, velocity, duration = event
            pitch -= shift
            beat += time1
            step = max(beat * STEPS_PER_BEAT + time2, step)
            onset = step / STEPS_PER_BEAT
            if onset >= end:
                break
            if onset < start:
                continue  # the model is still catching up to the bar: not played
            due, off = tb.time_at(onset), tb.time_at(min(onset + duration / STEPS_PER_BEAT, end))
            part = part_of[channel]
            if due is None or off is None:
                return
            if looper.play_note(part, due, off, pitch, velocity):
                self.played.append((onset, self.track_of[part.name], channel, pitch, velocity, duration / STEPS_PER_BEAT))
        looper.counts["generated"] += 1
