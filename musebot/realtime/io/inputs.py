"""MIDI inputs: the note input and the clock input, each read by a poller thread of ours.

No input installs an rtmidi callback (see :mod:`musebot.realtime.io.poller`): closing an input is safe
at any moment. :class:`MemoryInput` takes the same place in tests and for network input.
"""

from __future__ import annotations

import logging
import queue
import threading

from musebot.realtime.clock import now
from musebot.realtime.io import system
from musebot.realtime.io.poller import MidiPoller
from musebot.realtime.timebase import ClockFollower

log = logging.getLogger(__name__)

RTMIDI_QUEUE = 65536  # messages RtMidi itself buffers for the poller (see RtMidiInput.open)
SYSEX_END = [0xF7]
SYSEX_ECHO_S = 0.25  # an ender's F7 not back at the poller by then was taken by a sysex cut short


class SysexEnder:
    """Ends a sysex that RtMidi's JACK input is stuck in, so that one malformed message cannot deafen it.

    RtMidi (5.0 and its master of 2026) reads a JACK event that starts a sysex (F0) but does not end it (F7)
    as the first part of a longer one: every later event is taken for the rest of it and dropped, sysex being
    ignored, until an event ends in F7. One such message (a device unplugged mid-dump, a hostile sender)
    left the input deaf for good: three note-ons after ``F0 7D 01`` never reached the listener. ALSA reads
    each event on its own and is not affected.

    This companion output client of ours (``<input client>-sysex-end``, connected to the input's own port)
    sends a lone F7 whenever the input's poller has heard nothing for ``NUDGE_AFTER_S`` (its ``nudge``): it
    ends a stuck sysex (RtMidi drops the F7 with it), so the input is deaf for 50 ms at most; when nothing
    was stuck, the F7 reaches the poller, which drops it (:func:`poll_input`, telling the ender it came back).
    An F7 that never comes back ended a stuck sysex: the ender counts it (``cuts``; the note input's are
    ``input_sysex_cut`` in the status). What came in the moment between the sysex and the F7 is lost (a lost
    note-off: the held-key timeout lets go of it). Where the companion cannot be made, the input runs without
    it (logged)."""

    def __init__(self, api: int, client_name: str, port_name: str) -> None:
        rtmidi = system.rtmidi_module()
        self._out = rtmidi.MidiOut(api, name=f"{client_name}-sysex-end")
        try:
            self._out.open_port(system.wait_for_port(self._out, port_name, timeout=1.0), "out")
        except Exception:
            system.close_client(self._out, close_port=False)
            raise
        system.graph_changed()
        self.port_name = port_name
        self.cuts = 0  # sysexes cut short (no F7) that held the input deaf until an F7 of ours
        self._sent_at: float | None = None  # when our last F7 left, until it comes back

    @classmethod
    def for_input(cls, api: int, client_name: str) -> SysexEnder | None:
        """The ender of input client ``client_name`` (its port ``<client_name>:in``), on JACK only."""
        rtmidi = system.rtmidi_module()
        if api != rtmidi.API_UNIX_JACK:
            return None
        try:
            return cls(api, client_name, f"{client_name}:in")
        except Exception as exc:  # noqa: BLE001 - a renamed client, a dying server: run without it
            log.warning("input %s: no sysex ender (%s); a sysex cut short can leave it deaf", client_name, exc)
            return None

    def nudge(self) -> None:
        """The input heard nothing for a moment: send a lone F7; the last one not come back ended a sysex."""
        t = now()
        if self._sent_at is not None:
            if t - self._sent_at < SYSEX_ECHO_S:
                return  # the last F7 may still be on its way
            self.cuts += 1
            log.warning("input %s: a sysex was cut short (no F7): what followed it for a moment was lost",
                        self.port_name)
        self._sent_at = t
        self._out.send_message(SYSEX_END)

    def came_back(self) -> None:
        """Our F7 reached the input's poller: no sysex was stuck."""
        self._sent_at = None

    def close(self, server_died: bool = False) -> None:
        """Close the companion client: after its input's client, so that its port is connected to nothing when
        it is unregistered. JACK2's ``JackPort::Release`` marks a port an input before it marks it unused, and
        a process thread reading the port in that moment (RtMidi's ``jackProcessOut``, every cycle) follows its
        connection to the input and back, for ever: a stack overflow (SIGSEGV), once in nine loop runs of 200
        closes under a flood (a core dump, 2026-12-04; ``JackGraphManager::GetBuffer``). Unconnected, the
        moment reads as an input with no connection: an empty buffer."""
        try:
            system.close_client(self._out, server_died=server_died)
        except Exception as exc:  # noqa: BLE001 - a client of a dead server cannot be closed cleanly
            log.debug("closing sysex ender: %s", exc)


def poll_input(midi_in, handler, name: str, api: int, client_name: str) -> tuple[MidiPoller, SysexEnder | None]:
    """Start the poller of input client ``client_name`` (port ``name``), with its :class:`SysexEnder` on JACK.
    ``handler`` never sees a lone F7: the ender's come back (nothing was stuck), never a message of the
    musician's."""
    ender = SysexEnder.for_input(api, client_name)

    def handle(t: float, message: list[int]) -> None:
        if message == SYSEX_END:
            if ender is not None:
                ender.came_back()
            return
        handler(t, message)

    return MidiPoller(midi_in, handle, name, nudge=None if ender is None else ender.nudge), ender


class RtMidiInput:
    """An input port read by a :class:`~musebot.realtime.io.poller.MidiPoller` that only timestamps and
    enqueues (no callback runs on the MIDI system's thread, so closing is safe at any moment).

    ``port=None`` makes a virtual port others connect to; a name connects to that existing output port.
    When the bounded queue is full the message is dropped and counted: a flood must not grow memory or
    delay the messages behind it without bound.
    """

    def __init__(self, api: int, client_name: str, port: str | None, maxsize: int = 4096) -> None:
        self.api = api
        self.client_name = client_name
        self.port = port
        self.queue: queue.Queue = queue.Queue(maxsize=maxsize)
        self.overflows = 0
        self.connected_to: str | None = None
        self._midi_in = None
        self._poller: MidiPoller | None = None
        self._sysex_ender: SysexEnder | None = None
        self._closed_cuts = 0  # the sysex cuts of enders closed by a reopen
        self.open()

    @property
    def name(self) -> str:
        return f"{self.client_name}:in" if self.port is None else self.port

    @property
    def sysex_cuts(self) -> int:
        """Sysexes cut short (no F7) that held the input deaf until its ender's F7 (see :class:`SysexEnder`)."""
        return self._closed_cuts + (self._sysex_ender.cuts if self._sysex_ender is not None else 0)

    def _enqueue(self, t: float, message: list[int]) -> None:
        try:
            self.queue.put_nowait((t, message))
        except queue.Full:
            self.overflows += 1

    def open(self) -> None:
        """(Re)make the rtmidi client; raises PortNotFoundError when a named port is absent."""
        rtmidi = system.rtmidi_module()
        self.close()
        # RtMidi's own queue drops messages silently when full (it only prints "message queue limit
        # reached"): a note-off lost there holds a key until the held-key timeout, and nothing tells the
        # listener that input was lost. So it is large (6 s of a 10k msg/s flood, a few MB): the poller
        # drains it into our queue, where an overflow or a stale message is counted and handled.
        midi_in = rtmidi.MidiIn(self.api, name=self.client_name, queue_size_limit=RTMIDI_QUEUE)
        # Sysex, MIDI clock and active sensing never reach the listener (they carry nothing it uses).
        midi_in.ignore_types(sysex=True, timing=True, active_sense=True)
        if self.port is None:
            midi_in.open_virtual_port("in")
            system.graph_changed()
        else:
            self.connected_to = system.open_named_port(midi_in, self.port, "MIDI input", "in")
        self._midi_in = midi_in
        self._poller, self._sysex_ender = poll_input(midi_in, self._enqueue, self.name, self.api, self.client_name)

    def source_present(self) -> bool:
        """For a named port: whether the port it reads from still exists (always True for virtual)."""
        if self.port is None or self._midi_in is None:
            return True
        try:
            return system.find_port(self._midi_in.get_ports(), self.port) is not None
        except system.rtmidi_module().RtMidiError:
            return False

    def close(self, server_died: bool = False) -> None:
        """Stop reading and close the client; ``server_died``: let go of it unclosed (``abandon_client``)."""
        if self._poller is not None:
            self._poller.stop()
            self._poller = None
        if self._midi_in is not None:
            try:
                system.close_client(self._midi_in, server_died=server_died)
            except Exception as exc:  # noqa: BLE001 - a client of a dead server cannot be closed cleanly
                log.debug("closing input %s: %s", self.name, exc)
            self._midi_in = None
        if self._sysex_ender is not None:  # after the input (SysexEnder.close)
            self._sysex_ender.close(server_died=server_died)
            self._closed_cuts += self._sysex_ender.cuts
            self._sysex_ender = None


class ClockInput:
    """An input port that reads only MIDI clock into a :class:`ClockFollower` (``musebot-clock:in``, or a
    connection to a named output port). Read by a poller thread of ours (no callback on JACK's thread);
    the arrival times come from RtMidi's per-message deltas, so the follower measures the sender's spacing
    rather than the polling interval."""

    def __init__(self, api: int, follower: ClockFollower, port: str | None = None,
                 client_name: str = "musebot-clock") -> None:
        rtmidi = system.rtmidi_module()
        self.follower = follower
        self._lock = threading.Lock()
        self._midi_in = rtmidi.MidiIn(api, name=client_name, queue_size_limit=4096)
        self._midi_in.ignore_types(sysex=True, timing=False, active_sense=True)
        if port is None:
            self._midi_in.open_virtual_port("in")
            system.graph_changed()
            self.name = f"{client_name}:in"
        else:
            self.name = system.open_named_port(self._midi_in, port, "MIDI clock source", "in")
        self._poller, self._sysex_ender = poll_input(self._midi_in, self._handle, self.name, api, client_name)

    def _handle(self, t: float, message: list[int]) -> None:
        with self._lock:
            self.follower.handle(t, message)

    @property
    def heard_until(self) -> float:
        """Every tick that arrived before this moment has reached the follower (``MidiPoller``)."""
        return self._poller.heard_until

    def close(self) -> None:
        self._poller.stop()
        try:
            system.close_client(self._midi_in)
        except Exception as exc:  # noqa: BLE001
            log.debug("closing clock input: %s", exc)
        if self._sysex_ender is not None:  # after the input (SysexEnder.close)
            self._sysex_ender.close()
