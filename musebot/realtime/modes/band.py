"""What ``--mode accompany`` (:mod:`accompany`) and ``--mode looper`` (:mod:`looper`) share: the band.

:class:`Band` holds the timebase (internal clock, external MIDI clock, clock out, metronome and count-in),
the parts' programs, their scheduling with the live constraints (:mod:`constraints`), the telemetry of
planned against sent times, and panic. It offers the listener interface of
:class:`~musebot.realtime.modes.call.Duet` (``handle``, ``tick``, ``panic``, ``set_mode``), so the daemon runs it
in its listener thread, and the answerer's (``name``, ``set_tempo``, ``set_temperature``, ``close``), so
the network API can talk to it. :func:`musebot.realtime.modes.make_session` builds the one a serve session asks for.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from musebot.engine.masks import DRUM_CHANNEL
from musebot.realtime import midi
from musebot.realtime.clock import now
from musebot.realtime.config import ServeConfig
from musebot.realtime.constraints import NOTE_NAMES, KeyLock, KeyTracker, LiveSettings, PartConfig
from musebot.realtime.harmony_live import Harmony
from musebot.realtime.io.outputs import Output
from musebot.realtime.modes.base import Session, SessionError
from musebot.realtime.scheduler import Scheduler
from musebot.realtime.tempo_clock import MusicianClock
from musebot.realtime.timebase import ClockFollower, ClockSender, Meter, Metronome, Timebase

log = logging.getLogger(__name__)

BAND_MODES = ("accompany", "looper")
PART_TAG = "part:"
MUSICIAN_TRACK = 1
QUIET_BEFORE_S, QUIET_AFTER_S, QUIET_MAX_WAIT_S = 0.002, 0.0005, 0.015  # see Band.wait_for_quiet


@dataclass
class BandConfig:
    """Settings of ``--mode accompany`` and ``--mode looper`` (CLI flags map one to one)."""

    mode: str = "accompany"
    parts: list[str] = field(default_factory=lambda: ["bass", "chords"])
    parts_config: str | None = None  # JSON or TOML file (constraints.read_config)
    key: str = "auto"  # "auto", "off" or e.g. "Eb major"
    meter: str = "4/4"
    clock: str = "internal"  # "external": follow MIDI clock on the clock input; "follow": the musician (tempo_clock)
    clock_in: str = "virtual"  # "virtual" (musebot-clock:in) or an output port name to read clock from
    clock_out: bool = False
    metronome: bool = False
    count_in: int = 0  # bars of clicks before bar 1
    commit_beats: float = 1.0
    plan_beats: float = 3.0
    min_plan_beats: float = 1.25
    safety_ms: float = 4.0  # a note fixed less than this before its time is dropped
    max_context: int = 768  # events kept in the model's context (the oldest quarter leaves past it)
    looper_source: str = "auto"  # replay | generate | auto (replay what was recorded, else generate)
    interplay: str = "mirror"  # mirror | contrast (density and energy of the chosen loop)
    loop_bars: int = 4  # bars remembered per role
    chords: str | None = None  # a chord chart, e.g. "Cm7 | F7 | Bbmaj7 | %" (harmony_live)
    chords_file: str | None = None  # a chart file: text, or a MusicXML/ABC lead sheet through music21
    harmony: str | None = None  # chart | follow | key; default: chart with a chart, else key

    @classmethod
    def for_mode(cls, mode: str, **settings: object) -> BandConfig:
        """Defaults of ``mode``: the looper plays all three roles unless told otherwise."""
        if mode == "looper" and "parts" not in settings:
            settings["parts"] = ["bass", "chords", "melody"]
        return cls(mode=mode, **settings)

    def validate(self) -> None:
        if self.mode not in ("accompany", "looper"):
            raise ValueError(f"band mode must be accompany or looper, got {self.mode!r}")
        if self.clock not in ("internal", "external", "follow"):
            raise ValueError(f"--clock must be internal, external or follow, got {self.clock!r}")
        if not 0.25 <= self.commit_beats <= 8:
            raise ValueError(f"--commit-beats must be 0.25..8, got {self.commit_beats}")
        if self.plan_beats < self.commit_beats or self.min_plan_beats < self.commit_beats * 0.5:
            raise ValueError("--plan-beats must be at least the commit horizon (--commit-beats)")
        if self.looper_source not in ("replay", "generate", "auto"):
            raise ValueError(f"--looper-source must be replay, generate or auto, got {self.looper_source!r}")
        if self.interplay not in ("mirror", "contrast"):
            raise ValueError(f"--interplay must be mirror or contrast, got {self.interplay!r}")
        if not 0 <= self.count_in <= 8:
            raise ValueError(f"--count-in must be 0..8 bars, got {self.count_in}")
        if not 1 <= self.loop_bars <= 32:
            raise ValueError(f"--loop-bars must be 1..32, got {self.loop_bars}")
        if not self.parts:
            raise ValueError("--parts names no part")
        if len(set(self.parts)) != len(self.parts):
            raise ValueError(f"--parts names a part twice: {','.join(self.parts)}")
        if self.mode == "looper" and set(self.parts) - {"bass", "chords", "melody"}:
            raise ValueError("the looper plays the roles bass, chords and melody: --parts may name only those")
        Meter.parse(self.meter)
        self.chart()  # an unknown chord symbol is named with its bar and position before anything starts

    def chart(self):
        """The chart of ``chords``/``chords_file`` (None when neither), checked against ``harmony``."""
        from musebot.realtime.harmony_live import default_mode, read_chart

        chart = read_chart(self.chords, self.chords_file, Meter.parse(self.meter).bar_beats)
        default_mode(self.harmony, chart)
        return chart


@dataclass
class Telemetry:
    """Planned against sent times of the parts' note-ons, and what never sounded."""

    # sent - planned (seconds) of the latest part notes: a window, as the scheduler's, not the whole gig
    errors: deque = field(default_factory=lambda: deque(maxlen=20_000))
    dropped: int = 0  # fixed too late to send on time: not sent
    stale: int = 0  # planned for a time already past when generated (re-planned, never due)
    retracted: int = 0  # fixed, then withdrawn before sounding (key change, stop)

    def within(self, tolerance_s: float = 0.002) -> float:
        errors = np.abs(np.array(self.errors))
        return float(np.mean(errors <= tolerance_s)) if len(errors) else 1.0


class Band(Session):
    """What accompaniment and looper share (module docstring); subclasses add the musical logic."""

    mode = "band"

    def __init__(self, config: ServeConfig, band: BandConfig, scheduler: Scheduler,
                 outputs: Sequence[Output], settings: LiveSettings, api: int | None = None) -> None:
        band.validate()
        super().__init__(config, scheduler, outputs)
        self.band = band
        self.settings = settings
        self.timebase = Timebase(config.bpm, Meter.parse(band.meter))
        self.follower = ClockFollower(self.timebase) if band.clock == "external" else None
        self.musician_clock = MusicianClock(self.timebase, config.bpm) if band.clock == "follow" else None
        # Clock goes to MIDI ports only (a synthesiser has no use for it).
        ports = [o for o in self.outputs if o.kind != "fluidsynth"]
        self.clock_sender = ClockSender(self.timebase, scheduler, ports) if band.clock_out and ports else None
        self.metronome = Metronome(self.timebase, scheduler, outputs, band.metronome, band.count_in)
        self.telemetry = Telemetry()
        self.key_lock = KeyLock.parse(band.key)
        self.key_tracker = KeyTracker()
        self.harmony = Harmony(band.chart(), band.harmony, self.timebase.meter.bar_beats)
        self.counts.update(notes=0, controls=0)
        self.clock_input = None
        self._dues: list[float] = []  # heap of the part notes' planned times, for wait_for_quiet
        self._dues_lock = threading.Lock()
        channels = [p.channel for p in settings.parts.values()]
        if len(set(channels)) != len(channels):
            raise ValueError("two parts share a MIDI channel: give each its own in the parts config")
        self._chain_send_hook()
        self._send_programs()
        if self.follower is not None:
            if api is not None:
                from musebot.realtime.io.inputs import ClockInput

                self.clock_input = ClockInput(api, self.follower, None if band.clock_in == "virtual"
                                              else band.clock_in)
            log.info("waiting for MIDI clock start on %s", self.clock_input.name if self.clock_input
                     else "(no MIDI system)")
        elif self.musician_clock is not None:
            self.timebase.source = "follow"
            log.info("clock follows you: the band comes in after your first bar, at your tempo")
        else:
            start = now() + 0.05
            self.timebase.start(start, -band.count_in * self.timebase.meter.bar_beats)
            log.info("internal clock: %.1f bpm in %s%s", config.bpm, band.meter,
                     f", {band.count_in} bar(s) count-in" if band.count_in else "")

    # ---- plumbing shared by both modes --------------------------------------------------------------
    def _chain_send_hook(self) -> None:
        previous = self.scheduler.on_send

        def on_send(due: float, sent: float, output: Output, msg: midi.Message, tag: str | None) -> None:
            if previous is not None:
                previous(due, sent, output, msg, tag)
            if tag and tag.startswith(PART_TAG) and midi.is_note_on(msg) and output is self.outputs[0]:
                self.telemetry.errors.append(sent - due)

        self.scheduler.on_send = on_send

    def _send_programs(self) -> None:
        for part in self.settings.parts.values():
            for output in self.outputs:
                output.send((midi.PROGRAM_CHANGE | part.channel, part.program))

    def part_channels(self) -> set[int]:
        return {p.channel for p in self.settings.parts.values()}

    def play_note(self, part: PartConfig, due: float, end: float, pitch: int, velocity: int,
                  retimed: bool = False) -> bool:
        """Schedule one part note at ``due`` with the live settings, unless too late (then dropped) or
        muted; True when it was scheduled. A note ``retimed`` (already fixed, moved by the clock) is not
        dropped for coming close: the scheduler sends it, or drops it if it is past its lateness limit."""
        if not retimed and due < now() + self.band.safety_ms / 1000:
            self.telemetry.dropped += 1
            return False
        if not self.settings.audible(part.name):
            return False
        on = midi.note_on(part.channel, pitch, part.velocity(velocity))
        off = midi.note_off(part.channel, pitch)
        items = [(due, o, on) for o in self.outputs] + [(max(end, due + 0.01), o, off) for o in self.outputs]
        self.scheduler.schedule_many(items, PART_TAG + part.name)
        with self._dues_lock:
            heapq.heappush(self._dues, due)
        self.counts["notes"] += 1
        return True

    def wait_for_quiet(self, busy_s: float) -> None:
        """Before work of about ``busy_s`` (a model step), wait until no part note is due during it: on a
        machine with few cores the scheduler thread then has a core and the interpreter when its note is due.
        Waits at most ``QUIET_MAX_WAIT_S`` (dense parts must not starve the planner)."""
        give_up = now() + QUIET_MAX_WAIT_S
        while True:
            t = now()
            with self._dues_lock:
                while self._dues and self._dues[0] < t - QUIET_AFTER_S:
                    heapq.heappop(self._dues)
                due = self._dues[0] if self._dues else None
            if due is None or due - t > busy_s + QUIET_BEFORE_S or t >= give_up:
                return
            time.sleep(max(min(due + QUIET_AFTER_S, give_up) - t, 0.0001))

    def retract(self, name: str | None = None) -> int:
        """Withdraw every part note scheduled and not yet sent (``name``: one part), releasing sounding ones."""
        names = [name] if name else list(self.settings.parts)
        return sum(self.scheduler.cancel(PART_TAG + n, release=True) for n in names)

    # ---- the listener interface (after the Session's front: validated, controllers, thru, recorded) ---
    def hear(self, t: float, msg: midi.Message) -> None:
        if self.musician_clock is not None and midi.is_note_on(msg) and midi.channel_of(msg) != DRUM_CHANNEL:
            self.musician_clock.hear(t, msg[1], msg[2])
        auto_key = self.key_lock.mode == "auto" and midi.channel_of(msg) != DRUM_CHANNEL
        if midi.is_note_on(msg) and auto_key:
            tonic = self.key_tracker.tonic
            if self.key_tracker.hear(self.timebase.beat_at(t), msg[1]):
                if self.key_tracker.tonic != tonic:
                    log.info("key: %s major (or its relative minor) at beat %.2f",
                             NOTE_NAMES[self.key_tracker.tonic], self.timebase.beat_at(t))
                self.key_changed(t)
        if midi.channel_of(msg) != DRUM_CHANNEL and (midi.is_note_on(msg) or midi.is_note_off(msg)):
            self.harmony.hear(t, msg[1], msg[2] if midi.is_note_on(msg) else 0)
        self.play(t, msg)

    def control(self, t: float, controller: int, value: int) -> bool:
        controls = self.config.controls
        if controller == controls.panic:
            if value >= 64:
                self.panic(t, "panic controller", all_channels=True)
            return True
        if controller == controls.temperature:  # the same mapping as call mode (0.1..2.0)
            self.set_temperature(0.1 + 1.9 * value / 127)
            log.info("temperature %.2f", self.config.temperature)
            return True
        changed = self.settings.control(controller, value)
        if changed:
            log.info("part control: %s", changed)
            return True
        return False

    def tick(self, t: float) -> None:
        """Called by the listener between messages: clock watchdog, clock out, metronome."""
        if self.follower is not None:
            self.follower.check(t, None if self.clock_input is None else self.clock_input.heard_until)
        if self.clock_sender is not None:
            self.clock_sender.pump(t)
        self.metronome.pump(t)
        if self.timebase.running:
            tracked = self.harmony.tick(self.timebase.beat_at(t), self.timebase.time_at)
            if tracked is not None:
                beat, chord = tracked
                log.info("chord heard: %s from beat %g", chord.symbol, beat)
                if self.recorder is not None:
                    self.recorder.mark(self.timebase.time_at(beat) or t, f"chord {chord.symbol}")
                if self.harmony.mode == "follow":
                    self.harmony_changed(t)

    def key_scale(self) -> frozenset[int] | None:
        """The key a chord's scale tones are kept in: a key the musician set (``--key 'Eb major'``) only; a
        tracked key can be wrong for a beat or two, and the chord already says what fits."""
        return self.key_lock.pitch_classes() if self.key_lock.mode == "fixed" else None

    def set_harmony(self, t: float, chart=None, mode: str | None = None, clear_chart: bool = False) -> None:
        """A new chart and/or harmony mode, live (:meth:`Harmony.set`; a refusal changes nothing)."""
        self.harmony.set(chart, mode, clear_chart)
        log.info("harmony: %s%s", self.harmony.mode,
                 f", chart of {self.harmony.chart.bar_count} bar(s)" if self.harmony.chart else "")
        self.harmony_changed(t)

    def harmony_changed(self, t: float) -> None:
        """The chords the parts follow changed (subclasses re-plan)."""

    def harmony_status(self) -> dict:
        return {**self.harmony.status(self.timebase.beat_at(now())), "beats_per_bar": self.harmony.beats_per_bar}

    def pitch_classes(self) -> frozenset[int] | None:
        if self.key_lock.mode == "auto":
            return self.key_tracker.pitch_classes()
        return self.key_lock.pitch_classes()

    def play(self, t: float, msg: midi.Message) -> None:
        """A musical message of the musician, after key tracking (subclasses)."""

    def key_changed(self, t: float) -> None:
        """The musician's key moved (subclasses)."""

    def set_mode(self, t: float, mode: str) -> None:
        raise SessionError("accompany and looper sessions do not switch mode live; restart with --mode")

    def part_settings(self) -> LiveSettings:
        return self.settings

    def band_status(self) -> dict:
        return self.settings_dict()

    @property
    def state(self) -> str:
        return "playing" if self.timebase.running else "stopped"

    def busy(self) -> bool:
        return self.timebase.running

    def set_tempo(self, bpm: float) -> None:
        """The internal clock's tempo from now on (an external clock keeps its own)."""
        if self.follower is not None and self.follower.locked:
            log.warning("tempo %.1f ignored: the external MIDI clock sets the tempo", bpm)
            return
        self.timebase.set_tempo(bpm, now())
        log.info("tempo %.1f bpm", bpm)

    def set_temperature(self, temperature: float) -> None:
        """Sampling temperature of the parts the model plays (from the next event on)."""
        self.config.temperature = temperature
        for holder in (self, getattr(self, "generator", None)):
            sampler = getattr(holder, "sampler", None)
            if sampler is not None:
                holder.sampler = replace(sampler, temperature=temperature)  # one reference swap: thread-safe

    def settings_dict(self) -> dict:
        """The band's live state for the network API: clock, key and each part's settings."""
        tb = self.timebase
        with self.settings.lock:
            parts = {n: {k: v for k, v in vars(p).items() if k != "name"} for n, p in self.settings.parts.items()}
        return {
            "mode": self.mode, "bpm": round(tb.bpm, 2), "meter": str(tb.meter), "clock": tb.source,
            "running": tb.running, "beat": round(tb.beat_at(now()), 3), "key": str(self.key_lock),
            "tracked_key": None if self.key_tracker.tonic is None else NOTE_NAMES[self.key_tracker.tonic],
            "parts": parts, "controls": dict(self.settings.controls),
            "telemetry": {"notes": self.counts["notes"], "within_2ms": round(self.telemetry.within(), 5),
                          "dropped": self.telemetry.dropped, "stale": self.telemetry.stale,
                          "retracted": self.telemetry.retracted},
            "harmony": self.harmony.status(tb.beat_at(now())),
        }

    def close(self) -> None:
        if self.clock_input is not None:
            self.clock_input.close()
        super().close()
