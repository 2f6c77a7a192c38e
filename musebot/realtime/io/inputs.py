"""MIDI inputs: the note input and the clock input, each read by a poller thread of ours.

No input installs an rtmidi callback (see :mod:`musebot.realtime.io.poller`): closing an input is safe
at any moment. :class:`MemoryInput` takes the same place in tests and for network input.
"""

from __future__ import annotations

import logging
import queue
import threading

from musebot.realtime.io import system
from musebot.realtime.io.poller import MidiPoller
from musebot.realtime.timebase import ClockFollower

log = logging.getLogger(__name__)

RTMIDI_QUEUE = 65536  # messages RtMidi itself buffers for the poller (see RtMidiInput.open)


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
        self.open()

    @property
    def name(self) -> str:
        return f"{self.client_name}:in" if self.port is None else self.port

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
        self._poller = MidiPoller(midi_in, self._enqueue, self.name)

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
        self._poller = MidiPoller(self._midi_in, self._handle, self.name)

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
