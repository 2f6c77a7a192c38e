"""``musebot serve``: the daemon that wires input, listener, answerer, scheduler and outputs together.

Threads (each talks to the others through queues or locked objects):

* the input's poller thread: timestamps and enqueues (``io.inputs.RtMidiInput``);
* the listener: pulls the queue, runs :class:`~musebot.realtime.modes.call.Duet`, ticks its clock;
* the scheduler: sends timed messages (``scheduler.py``);
* the engine worker (model answers only, ``worker.py``);
* the health monitor: notices a JACK server that died, a named port that vanished, and reopens them;
* the main thread: waits for SIGINT/SIGTERM, then panics and closes everything.

Every way out (signal, exception, port loss, server death) goes through a panic, so no note is left hanging.
"""

from __future__ import annotations

import logging
import queue
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path

from musebot.realtime import heap
from musebot.realtime.clock import now
from musebot.realtime.config import ServeConfig
from musebot.realtime.errors import PortNotFoundError, RealtimeError
from musebot.realtime.io import system as ports
from musebot.realtime.io.inputs import RtMidiInput
from musebot.realtime.io.outputs import FluidSynthOutput, NetworkOutput, Output, RtMidiOutput
from musebot.realtime.io.recorder import SessionRecorder
from musebot.realtime.logs import LogLimiter, realtime_loggers
from musebot.realtime.modes import SERVE_MODES, Session, make_session
from musebot.realtime.modes.answers import AnswerSlot
from musebot.realtime.modes.band import BandConfig
from musebot.realtime.scheduler import Scheduler

__all__ = ["SERVE_MODES", "Daemon", "Observer", "ServeOptions"]

log = logging.getLogger(__name__)

CLIENT_NAME = "musebot"  # the input's client: "musebot:in"; the virtual output's: "musebot-out:out"
HEALTH_PERIOD_S = 0.5
LISTEN_BATCH = 256  # messages handled per pass of the listener (one tick per pass)
MAX_BACKLOG_S = 0.25  # a listener this far behind keeps only the newest this much of its input (a flood)
LOST_QUIET_S = 0.15  # after input was lost, this much quiet releases the keys the session thinks held


@dataclass
class ServeOptions:
    """Where notes come from and go to, and what answers (the non-musical half of ``musebot serve``)."""

    input: str = "virtual"  # "virtual", a port name, or "none"
    outputs: list[str] = field(default_factory=lambda: ["virtual"])  # "virtual", "fluidsynth", port names
    api: str | None = None
    mode: str = "call"
    answer: str | None = None  # "model" or "echo"; default: model when a model is given, else echo
    model: str | None = None
    soundfont: str | None = None
    fluidsynth_driver: str | None = None  # default: jack when JACK runs, else pulseaudio, alsa, then file
    fluidsynth_file: str = "musebot-fluidsynth.wav"
    record: str | None = None
    port: int | None = None  # the network API (musebot.server) on this TCP port; 0 picks a free one
    host: str = "127.0.0.1"
    allow_hosts: list[str] = field(default_factory=list)  # Host names the API answers besides loopback, host
    token: str | None = None  # required by the API when host is not loopback (generated if not given)
    osc_port: int | None = None  # OSC control on this UDP port
    band: BandConfig | None = None  # --mode accompany / looper: parts, clock, key (default: BandConfig())


class Observer:
    """One who watches the daemon (the network API, a benchmark, a test): what the listener receives,
    what the scheduler sends, and what it plans or withdraws. Called on the daemon's threads: be quick.
    Subclass it, or give the callables you need: ``Observer(on_sent=lambda due, sent, output, msg, tag: ...)``."""

    def __init__(self, on_input=None, on_sent=None, on_plan=None) -> None:
        self._input, self._sent, self._plan = on_input, on_sent, on_plan

    def on_input(self, t: float, data: object) -> None:
        """A message from the input (MIDI or network), as the listener receives it at ``t``."""
        if self._input is not None:
            self._input(t, data)

    def on_sent(self, due: float, sent: float, output: Output, msg: tuple, tag: str | None) -> None:
        """A message the scheduler sent at ``sent`` (it was due at ``due``)."""
        if self._sent is not None:
            self._sent(due, sent, output, msg, tag)

    def on_plan(self, action: str, items: list, tag: str | None) -> None:
        """The scheduler's plan changed: ``action`` "add", "cancel" or "clear" of ``(due, output, msg)``."""
        if self._plan is not None:
            self._plan(action, items, tag)


class Daemon:
    """All parts built from a ServeConfig and ServeOptions; ``run()`` serves until stopped."""

    def __init__(self, config: ServeConfig, options: ServeOptions) -> None:
        config.validate()
        self.config = config
        self.options = options
        self.stop_event = threading.Event()
        self.api = ports.choose_api(options.api)
        self.midi_up = self.api is not None
        self.recorder = SessionRecorder(config.bpm) if options.record else None
        self.scheduler = Scheduler(
            late_s=config.late_ms / 1000, drop_late_s=config.drop_late_ms / 1000, on_send=self._on_send
        )
        self.outputs: list[Output] = []
        self.input: RtMidiInput | None = None
        self._input_connected = True
        self._output_down: set[int] = set()
        self._probe = ports.PortProbe(self.api) if self.api is not None else None  # lists named outputs
        self._threads: list[threading.Thread] = []
        self._idle_queue: queue.Queue = queue.Queue(maxsize=config.input_queue)
        # Who watches input, sends and the plan (the network API, benchmarks): one list, quick, any thread.
        self.observers: list[Observer] = []
        self.stale_dropped = 0  # input dropped because the listener reached it too late (a flood)
        self._input_lost = False  # messages were dropped since the session last heard all of them
        self._overflows_seen = 0
        self.scheduler.on_plan = self._on_plan
        # The session belongs to the listener thread; the API, the health monitor and shutdown take this lock.
        self._session_lock = threading.Lock()
        self.session: Session | None = None
        self.started_at = now()
        self.log_limiter: LogLimiter | None = None  # on the real-time loggers while serving
        self._heap_frozen = False  # whether start() froze the heap (``heap.freeze``) and close() must release it
        try:
            self._open_outputs()
            self._open_input()
            self.slot = AnswerSlot(self.scheduler, self.outputs, config.answer_channel)
            self.session = make_session(options.mode, config, self.scheduler, self.outputs, self.slot,
                                        self.recorder, options.model, options.answer, options.band, self.api)
        except BaseException:
            self.close()
            raise

    # ---- construction ---------------------------------------------------------------------------------
    def _open_outputs(self) -> None:
        for spec in self.options.outputs:
            if spec == "none":
                if self.options.port is None:
                    raise RealtimeError("--output none needs --port N: the browser page then plays the sound")
                self.outputs.append(NetworkOutput("network (the page plays)"))
            elif spec == "fluidsynth":
                self.outputs.append(self._fluidsynth())
            elif self.api is None:
                log.warning("output %r skipped: no MIDI system", spec)
            elif spec == "virtual":
                self.outputs.append(RtMidiOutput(self.api, f"{CLIENT_NAME}-out", "out", virtual=True))
            else:
                client = f"{CLIENT_NAME}-to-{len(self.outputs)}"
                self.outputs.append(RtMidiOutput(self.api, client, spec, virtual=False))
        if self.api is None:
            log.warning(ports.NO_MIDI_SYSTEM)
        if not self.outputs:
            raise RealtimeError(
                "no output left: " + ("add --output fluidsynth" if self.api is None else "give an --output")
            )
        for output in self.outputs:
            log.info("output: %s", output.name)

    def _fluidsynth(self) -> FluidSynthOutput:
        driver = self.options.fluidsynth_driver
        candidates = [driver] if driver else ["jack"] * ports.jack_running() + ["pulseaudio", "alsa"]
        for name in candidates:
            try:
                return FluidSynthOutput(
                    self.options.soundfont, driver=name, file_name=self.options.fluidsynth_file
                )
            except RealtimeError as exc:
                if driver:
                    raise
                log.info("FluidSynth audio driver %s unavailable (%s)", name, exc)
        log.warning("no audio device: FluidSynth writes its audio to %s", self.options.fluidsynth_file)
        return FluidSynthOutput(self.options.soundfont, driver="file", file_name=self.options.fluidsynth_file)

    def _open_input(self) -> None:
        spec = self.options.input
        if spec == "none" or self.api is None:
            return
        self.input = RtMidiInput(
            self.api, CLIENT_NAME, None if spec == "virtual" else spec, self.config.input_queue
        )
        log.info("input: %s", self.input.connected_to or self.input.name)

    # ---- running --------------------------------------------------------------------------------------
    def start(self) -> Daemon:
        # A flood must not become a flood of log lines from the real-time path (counted in overflows()).
        self.log_limiter = LogLimiter(loggers=realtime_loggers())
        self.log_limiter.install()
        heap.freeze()  # what is alive now stays alive: no full collection walks it while the music plays
        self._heap_frozen = True
        self.scheduler.start()
        self.session.started()  # raises the scheduler thread's priority
        for target, name in ((self._listen, "musebot-listener"), (self._watch, "musebot-health")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info("serving in mode %r at %.0f bpm; Ctrl-C to stop", self.session.mode, self.config.bpm)
        return self

    def feed(self, data: object, t: float | None = None) -> bool:
        """Network input (``musebot.server``): queued exactly like a message from the MIDI input, so the
        listener handles both the same way. False when the queue is full (dropped, as MIDI input is)."""
        source = self.input.queue if self.input is not None else self._idle_queue
        try:
            source.put_nowait((now() if t is None else t, data))
            return True
        except queue.Full:
            return False

    def overflows(self) -> dict:
        """What was dropped, trimmed or forgotten to stay bounded (the status reports it): input messages
        beyond the input queue, the session's own counts (worker backlog, tracker), the recorder's dropped
        events and the log lines suppressed."""
        counts = {"input_overflows": self.input.overflows if self.input is not None else 0,
                  "input_stale_dropped": self.stale_dropped,
                  "input_sysex_cut": self.input.sysex_cuts if self.input is not None else 0}
        counts.update(self.session.overflows() if self.session is not None else {})
        counts["recorder_dropped"] = self.recorder.dropped if self.recorder is not None else 0
        counts["log_lines_suppressed"] = self.log_limiter.suppressed if self.log_limiter is not None else 0
        return counts

    @property
    def session_lock(self) -> threading.Lock:
        """Held while the session handles a message; take it to change the session from another thread."""
        return self._session_lock

    def run(self, start=None, close=None) -> int:
        """Serve until SIGINT or SIGTERM (main thread only), then shut down cleanly. ``start`` and
        ``close`` replace :meth:`start` and :meth:`close` (a composition that adds a network face)."""
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            (start or self.start)()
            while not self.stop_event.wait(0.2):
                pass
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            (close or self.close)()
        return 0

    def _on_signal(self, signum: int, _frame: object) -> None:
        log.info("signal %s: stopping", signal.Signals(signum).name)
        self.stop_event.set()

    def _listen(self) -> None:
        last_input = now()  # the arrival time of the latest message
        while not self.stop_event.is_set():
            batch = self._next_batch()
            t_now = now()
            if batch:
                last_input = max(last_input, batch[-1][0])
            elif self._input_lost and t_now - last_input > LOST_QUIET_S:
                # Messages were lost (a flood overflowed the input): a note-off among them would hold a key
                # for ever. Once the input is quiet, the musician holds nothing we can trust.
                self._input_lost = False
                with self._session_lock:
                    self.session.input_lost(t_now, last_input)
            for t, data in batch:
                for observer in self.observers:
                    observer.on_input(t, data)
            with self._session_lock:
                for t, data in batch:
                    self._guarded(self.session.handle, t, data)
                self._guarded(self.session.tick, now())

    def _guarded(self, step, *args: object) -> None:
        """One step of the session; a bug in it must not leave notes sounding, nor stop the daemon, nor
        lose the rest of the batch."""
        try:
            step(*args)
        except Exception:
            log.exception("listener: error while handling %r; panic", args[-1])
            self.session.panic(now(), "exception in the listener")

    def _next_batch(self) -> list[tuple[float, object]]:
        """The messages waiting (up to LISTEN_BATCH; waits a moment for the first). Under a flood the
        newest win: when the listener finds itself more than MAX_BACKLOG_S behind, it takes everything
        waiting (at most the input queue) and keeps only its newest messages, LISTEN_BATCH of them at most and
        none older than MAX_BACKLOG_S before the newest, counting the rest as dropped and marking the input
        lost (see ``_listen``). So it catches up at once, and the phrase played just after a flood is kept
        even when it, too, waited behind the flood."""
        source = self.input.queue if self.input is not None else self._idle_queue
        try:
            batch = [source.get(timeout=0.002)]
        except queue.Empty:
            return []
        while len(batch) < LISTEN_BATCH:
            try:
                batch.append(source.get_nowait())
            except queue.Empty:
                break
        overflows = self.input.overflows if self.input is not None else 0
        if batch[0][0] < now() - MAX_BACKLOG_S:
            while True:  # bounded: the queue holds at most ``input_queue`` messages
                try:
                    batch.append(source.get_nowait())
                except queue.Empty:
                    break
            oldest_kept = batch[-1][0] - MAX_BACKLOG_S
            kept = [item for item in batch[-LISTEN_BATCH:] if item[0] >= oldest_kept]
            self.stale_dropped += len(batch) - len(kept)
            batch = kept
            self._input_lost = True
        if overflows != self._overflows_seen:
            self._overflows_seen = overflows
            self._input_lost = True
        return batch

    def panic(self, reason: str) -> None:
        """Release every note now, from any thread (shutdown panics before anything stops)."""
        if self.session is not None:
            self._panic(reason)

    def _panic(self, reason: str) -> None:
        """Panic from any thread: the session is the listener's, so take its lock."""
        with self._session_lock:
            self.session.panic(now(), reason)

    def _on_send(self, due: float, sent: float, output: Output, msg: tuple, tag: str | None) -> None:
        ours = tag == "answer" or (tag is not None and tag.startswith("part:"))
        if self.recorder is not None and ours and output is self.outputs[0]:
            self.recorder.add(sent, "musebot", msg)
        for observer in self.observers:
            observer.on_sent(due, sent, output, msg, tag)

    def _on_plan(self, action: str, items: list, tag: str | None) -> None:
        for observer in self.observers:
            observer.on_plan(action, items, tag)

    # ---- health ---------------------------------------------------------------------------------------
    def _watch(self) -> None:
        while not self.stop_event.wait(HEALTH_PERIOD_S):
            try:
                self.check_health()
            except Exception:
                log.exception("health monitor: unexpected error")

    def check_health(self) -> None:
        """Notice a dead JACK server or a vanished named port; reopen them when they return."""
        if self.api is None:
            return
        if self.api == ports.api_id("jack"):
            alive = ports.jack_running()
            if self.midi_up and not alive:
                self.midi_up = False
                log.error("JACK server stopped: MIDI ports are gone; retrying every %.1f s", HEALTH_PERIOD_S)
                if self._probe is not None:
                    self._probe.close(server_died=True)
                self._panic("JACK server stopped")
                if self.input:
                    self.input.close(server_died=True)
                return
            if not self.midi_up:
                if alive:
                    self._reopen_all()
                return
        if self.input and self.input.port is not None:
            self._check_input()
        self._check_outputs()

    def _reopen_all(self) -> None:
        try:
            for output in self.outputs:
                if isinstance(output, RtMidiOutput):
                    output.reopen(server_died=True)
            if self.input:
                self.input.open()
        except (RealtimeError, OSError) as exc:
            log.warning("JACK server is back but ports cannot be reopened yet: %s", exc)
            return
        self.midi_up = True
        log.warning("JACK server is back: ports reopened")

    def _check_input(self) -> None:
        present = self.input.source_present()
        if self._input_connected and not present:
            self._input_connected = False
            log.warning("input port %r vanished; reconnecting when it returns", self.input.port)
            # Release what the musician was holding through thru, and any answer that was going on.
            self._panic("input port vanished")
        elif not self._input_connected and present:
            try:
                self.input.open()
            except (PortNotFoundError, OSError) as exc:
                log.debug("input not back yet: %s", exc)
                return
            self._input_connected = True
            log.warning("input port %r is back: reconnected", self.input.port)

    def _check_outputs(self) -> None:
        named = [o for o in self.outputs if isinstance(o, RtMidiOutput) and not o.virtual]
        if not named:
            return
        present = self._probe.ports("out") if self._probe is not None else None
        if present is None:
            return
        for output in named:
            here = ports.find_port(present, output.port_name) is not None
            if id(output) not in self._output_down and not here:
                self._output_down.add(id(output))
                output.panic()
                log.warning("output port %r vanished; reconnecting when it returns", output.port_name)
            elif id(output) in self._output_down and here:
                try:
                    output.reopen()
                except (PortNotFoundError, OSError) as exc:
                    log.debug("output not back yet: %s", exc)
                    continue
                self._output_down.discard(id(output))
                log.warning("output port %r is back: reconnected", output.port_name)

    # ---- shutdown -------------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the scheduler, panic every output, stop the threads, save the recording. Safe to call twice."""
        self.stop_event.set()
        # The scheduler stops first: a note-on it had already taken off its heap would otherwise be sent
        # just after the panic and sound until the output closes (heard once in CI).
        self.scheduler.stop()
        if self.session is not None:
            self._panic("shutdown")
        for thread in self._threads:
            thread.join(1.0)
        if self.session is not None:
            self.session.close()
        dead = not self.midi_up and self.api is not None  # JACK died and is not back: let go of its clients
        for output in self.outputs:
            if dead and isinstance(output, RtMidiOutput):
                output.abandon()
            output.close()
        if self.input:
            self.input.close(server_died=dead)
        if self._probe is not None:
            self._probe.close(server_died=dead)
        if self.log_limiter is not None:
            self.log_limiter.remove()
        if self._heap_frozen:
            self._heap_frozen = False
            heap.release()
        if self.recorder is not None and self.options.record and len(self.recorder):
            path = self.recorder.save(self.options.record, self.session_meta(), origin=self.started_at)
            log.info("session recorded to %s", path)
            self.recorder = None

    def session_meta(self) -> dict:
        meta = {"seed": self.config.seed, "config": self.config.to_dict(), "mode": self.options.mode}
        meta["answer"] = self.session.name if self.session is not None else None
        meta["model"] = str(Path(self.options.model).resolve()) if self.options.model else None
        return meta
