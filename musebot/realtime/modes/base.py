"""The Session: what every mode (call, listen, accompany, looper) is to the daemon and the network API.

The daemon runs one session on its listener thread (``handle`` for each input message, ``tick`` between
them); the network API reads and changes it through the same methods, under the daemon's session lock.
:class:`Session` also holds what every mode does to an input message before its own logic (the front of
``handle``: validate, musebot's controllers, thru, record) and the panic every mode shares. A mode
overrides ``hear`` (a musical message of the musician), ``control`` (its controllers) and what it reports.

:class:`ModelThread` is the one way a mode runs its model: a named daemon thread that repeats a step
(which waits on the mode's inbox), survives a failed step, and is stopped and joined on close.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable, Sequence

from musebot.realtime import midi
from musebot.realtime.config import ServeConfig
from musebot.realtime.io.outputs import Output
from musebot.realtime.io.recorder import SessionRecorder
from musebot.realtime.scheduler import Scheduler

log = logging.getLogger(__name__)

SCHEDULER_RT_PRIORITY = 20  # well below JACK's own threads (its server's and its clients')
THREAD_NICE = -5  # the session's other threads, which hold the interpreter lock in turns with the scheduler
SWITCH_INTERVAL_S = 0.0005  # the interpreter passes its lock on at least this often (default 5 ms)


class SessionError(ValueError):
    """A change this session cannot make (the network API answers 409 with the message)."""


class Session:
    """Base of every mode: the shared front of ``handle``, panic, and the reporting the API reads."""

    mode = "session"
    state = "playing"  # what the page shows; a mode keeps its own (call: idle, listening, waiting...)

    def __init__(self, config: ServeConfig, scheduler: Scheduler, outputs: Sequence[Output],
                 recorder: SessionRecorder | None = None) -> None:
        self.config = config
        self.scheduler = scheduler
        self.outputs = list(outputs)
        self.recorder = recorder
        self.counts = {"received": 0, "invalid": 0, "panics": 0}
        self.realtime_priority = False  # whether started() got SCHED_FIFO for the scheduler thread
        self._reniced: list[tuple[int, int]] = []  # (thread id, nice before started())

    # ---- the listener's interface --------------------------------------------------------------------
    def handle(self, t: float, data: object) -> None:
        """One message from the input, received at ``t``; invalid data is dropped and counted."""
        msg = midi.channel_message(data)
        if msg is None:
            self.counts["invalid"] += 1
            return
        self.counts["received"] += 1
        if midi.kind_of(msg) == midi.CONTROL_CHANGE and self.control(t, msg[1], msg[2]):
            if "controls" in self.counts:  # a mode that counts its controllers (the band modes)
                self.counts["controls"] += 1
            return
        if self.config.thru:
            for output in self.outputs:
                output.send(msg)
        if self.recorder is not None:
            self.recorder.add(t, "musician", msg)
        self.hear(t, msg)

    def control(self, t: float, controller: int, value: int) -> bool:
        """Handle one of musebot's controllers; True when it was one (it is then not played thru)."""
        return False

    def hear(self, t: float, msg: midi.Message) -> None:
        """A musical message of the musician (after thru and recording)."""

    def tick(self, t: float) -> None:
        """Advance to time ``t`` (called by the listener between messages)."""

    def input_lost(self, t: float, last: float) -> None:
        """Input messages were dropped (a flood) and the input has been quiet since ``last`` (the time of
        its latest message; ``t`` is now): whatever the session thinks the musician holds may have been
        released unheard."""

    def panic(self, t: float, reason: str, all_channels: bool = False) -> None:
        """Drop everything scheduled and silence every output (see ``io/ledger.py``)."""
        self.counts["panics"] += 1
        self.scheduler.clear()
        for output in self.outputs:
            output.panic(all_channels=all_channels)
        log.warning("panic (%s): every note released on %d output(s)", reason, len(self.outputs))

    # ---- what the API changes ------------------------------------------------------------------------
    def set_mode(self, t: float, mode: str) -> None:
        raise SessionError(f"a {self.mode} session does not switch mode live")

    def set_tempo(self, bpm: float) -> None:
        """The tempo from now on (the config already holds it)."""

    def set_temperature(self, temperature: float) -> None:
        self.config.temperature = temperature

    def constraints(self):
        """The model's pitch constraints (``engine.masks.Constraints``), or None when nothing is masked."""
        return

    def set_constraints(self, **kwargs: object) -> None:
        raise SessionError(f"constraints shape the model's answers; the {self.name!r} answerer has none "
                           "(serve with --model DIR)")

    def part_settings(self):
        """The live part settings (``constraints.LiveSettings``) of a band session, else None."""
        return

    def set_harmony(self, t: float, chart=None, mode: str | None = None, clear_chart: bool = False) -> None:
        """A chord chart (``chords.Chart``) and/or harmony mode (chart, follow, key) for the parts."""
        raise SessionError("chord charts are for the band: serve with --mode accompany or --mode looper")

    def harmony_status(self) -> dict | None:
        """The band's harmony (mode, chart, bar and chord now, tracked chord, beats a bar), else None."""
        return

    # ---- what the API reads --------------------------------------------------------------------------
    @property
    def name(self) -> str:
        """What makes the music (the answerer's name in call mode, the mode otherwise)."""
        return self.mode

    def generation(self) -> dict | None:
        """The model's generation figures (events, headroom...), when a model generates."""
        return None

    def tempo(self) -> dict:
        """The tempo in use: ``bpm``, ``source`` (fixed: the configured bpm; follow: tracked from the
        musician) and the tracker's ``confidence`` (None when fixed)."""
        return {"bpm": round(self.config.bpm, 2), "source": "fixed", "confidence": None}

    def band_status(self) -> dict | None:
        """Clock, key, parts and telemetry of a band session (None in call and listen mode)."""
        return None

    def overflows(self) -> dict:
        """What this session dropped or forgot to stay bounded (a flood, a lost release): name -> count."""
        return {}

    # ---- life ----------------------------------------------------------------------------------------
    def started(self) -> None:
        """The daemon has started the scheduler: ask the OS to run its thread before ordinary work
        (SCHED_FIFO, as JACK runs its own), so a busy machine does not make a note late, in every mode (an
        answer's notes as much as a part's). Without the right (not root, no rtprio limit) the thread keeps
        its normal priority, and the log says so."""
        if sys.getswitchinterval() > SWITCH_INTERVAL_S:
            # The scheduler thread must get the GIL within a fraction of a ms of its deadline, not 5 ms.
            sys.setswitchinterval(SWITCH_INTERVAL_S)
        thread_id = self.scheduler.native_id
        if thread_id is None or not hasattr(os, "sched_setscheduler"):
            return
        try:
            os.sched_setscheduler(thread_id, os.SCHED_FIFO, os.sched_param(SCHEDULER_RT_PRIORITY))
            self.realtime_priority = True
            log.info("scheduler thread runs at real-time priority %d", SCHEDULER_RT_PRIORITY)
        except (PermissionError, OSError) as exc:
            log.info("scheduler thread keeps normal priority (%s); timing may suffer on a busy machine", exc)
            return
        # The scheduler also needs the interpreter lock, which musebot's other threads hold in turns: they
        # get a nice of -5 (and so do the threads they start), so other work on the machine does not stall
        # one of them while it holds it.
        for task in os.listdir("/proc/self/task") if os.path.isdir("/proc/self/task") else []:
            try:
                if int(task) != thread_id:
                    previous = os.getpriority(os.PRIO_PROCESS, int(task))
                    os.setpriority(os.PRIO_PROCESS, int(task), min(previous, THREAD_NICE))
                    self._reniced.append((int(task), previous))
            except (PermissionError, OSError):
                break

    def close(self) -> None:
        """Stop the session's own threads (after the daemon's last panic); a mode that has threads of its
        own stops them and then calls this."""
        for task, previous in self._reniced:  # the process's threads as they were (a test process goes on)
            try:
                os.setpriority(os.PRIO_PROCESS, task, previous)
            except OSError:
                pass
        self._reniced = []


def load_engine(model_dir: str, precision: str | None = None):
    """Open an exported model folder (``musebot export``) for a mode: on CUDA when onnxruntime has it,
    else the CPU with one thread, at ``precision`` (None: the best precision the folder holds for it)."""
    from musebot.engine.engine import Engine, ModelLoadError
    from musebot.realtime.errors import RealtimeError

    try:
        engine = Engine.load(model_dir, provider="auto", threads=1, precision=precision)
    except ModelLoadError as exc:
        raise RealtimeError(str(exc)) from exc
    log.info("model %s loaded (%s, %s)", model_dir, engine.provider, getattr(engine, "precision", "fp32"))
    return engine


class ModelThread:
    """A mode's model thread: calls ``step()`` over and over until stopped. ``step`` waits on the mode's
    own inbox (with a timeout) and does one unit of work. An exception in a step is logged, ``on_error``
    is called (to drop what was half done) and the thread goes on: a model error must not leave the
    musician without a partner. :meth:`stop` ends the loop, ``wake()`` unblocks a waiting step, and the
    thread is joined with a timeout."""

    def __init__(self, name: str, step: Callable[[], None], wake: Callable[[], None],
                 on_error: Callable[[], None] | None = None) -> None:
        self._step = step
        self._wake = wake
        self._on_error = on_error
        self.running = True
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> ModelThread:
        self.thread.start()
        return self

    def _run(self) -> None:
        while self.running:
            try:
                self._step()
            except Exception:
                log.exception("%s: error in a model step", self.thread.name)
                if self._on_error is not None:
                    self._on_error()

    def stop(self, timeout: float = 2.0) -> None:
        self.running = False
        self._wake()
        if self.thread.is_alive() and self.thread is not threading.current_thread():
            self.thread.join(timeout)
