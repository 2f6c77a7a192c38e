"""Where musebot's notes go: one small family of outputs with a common base class.

Modelled on mido's ports: the public ``send``/``panic``/``close`` live in :class:`Output` (which keeps the
:class:`~musebot.realtime.io.ledger.NoteLedger` of sounding notes), subclasses implement only ``_send`` and
``_close``. :class:`MemoryOutput` records what it is sent, so logic above the port is testable without
any MIDI system.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np

from musebot import audio
from musebot.realtime import midi
from musebot.realtime.clock import now
from musebot.realtime.errors import RealtimeError, SoundfontNotFoundError
from musebot.realtime.io import system
from musebot.realtime.io.ledger import NoteLedger

log = logging.getLogger(__name__)


class Output:
    """Base of every output: ledger, panic, close; subclasses provide ``_send(msg)`` and ``_close()``."""

    kind = "output"

    def __init__(self, name: str) -> None:
        self.name = name
        self.ledger = NoteLedger()
        self.closed = False
        self.failures = 0
        # One lock per output: the scheduler thread and a panic from another thread must not interleave
        # bytes on the wire, and the ledger must match what was actually sent.
        self._lock = threading.Lock()

    def send(self, msg: midi.Message) -> bool:
        """Send one channel message; True when the backend took it. Never raises for a backend failure."""
        with self._lock:
            if self.closed:
                return False
            self.ledger.update(msg)
            return self._send_guarded(msg)

    def panic(self, all_channels: bool = False) -> int:
        """Silence all this output sounds (see :mod:`musebot.realtime.io.ledger`); returns the messages sent."""
        with self._lock:
            if self.closed:
                return 0
            messages = self.ledger.panic_messages(all_channels=all_channels)
            for msg in messages:
                self._send_guarded(msg)
            return len(messages)

    def close(self) -> None:
        """Panic, then release the backend. Idempotent."""
        self.panic()
        with self._lock:
            if self.closed:
                return
            self.closed = True
            try:
                self._close()
            except Exception as exc:  # noqa: BLE001 - a backend already gone cannot be closed twice
                log.debug("closing %s: %s", self.name, exc)

    def is_alive(self) -> bool:
        """Whether the backend can still deliver (overridden by ports that can vanish)."""
        return not self.closed

    def _send_guarded(self, msg: midi.Message) -> bool:
        try:
            self._send(msg)
            return True
        except Exception as exc:  # noqa: BLE001
            # A vanished port must not kill the scheduler thread; the health monitor reports and reopens.
            self.failures += 1
            if self.failures in (1, 10, 100) or self.failures % 1000 == 0:
                log.warning("output %s failed to send (%d failures): %s", self.name, self.failures, exc)
            return False

    def _send(self, msg: midi.Message) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


class MemoryOutput(Output):
    """Keeps ``(time, message)`` for every message sent; the port used by unit tests and the demo."""

    kind = "memory"

    def __init__(self, name: str = "memory") -> None:
        super().__init__(name)
        self.sent: list[tuple[float, midi.Message]] = []

    def _send(self, msg: midi.Message) -> None:
        self.sent.append((now(), msg))

    def messages(self) -> list[midi.Message]:
        return [msg for _, msg in self.sent]


class NetworkOutput(Output):
    """``--output none`` with ``--port``: nothing plays here; the API reports every message to the page."""

    kind = "network"

    def _send(self, msg: tuple) -> None:
        pass


class RtMidiOutput(Output):
    """An rtmidi output: a virtual port others connect to, or a connection to an existing named port.

    With JACK every rtmidi object is its own JACK client, so ``client_name`` must be unique per process
    (JACK renames a duplicate to ``name-01``).
    """

    kind = "rtmidi"

    def __init__(self, api: int, client_name: str, port_name: str, virtual: bool) -> None:
        super().__init__(f"{client_name}:{port_name}" if virtual else port_name)
        self.api = api
        self.client_name = client_name
        self.port_name = port_name
        self.virtual = virtual
        self._port = self._open()

    def _open(self):  # rtmidi.MidiOut has no stub types
        import rtmidi

        port = rtmidi.MidiOut(self.api, name=self.client_name)
        if self.virtual:
            port.open_virtual_port(self.port_name)
            system.graph_changed()
            return port
        self.name = system.open_named_port(port, self.port_name, "MIDI output", "out")
        return port

    def reopen(self, server_died: bool = False) -> None:
        """Make a fresh client: after a named port came back, or (``server_died``) after the MIDI system did,
        when the old client is let go of unclosed (``system.abandon_client``)."""
        with self._lock:
            try:
                system.close_client(self._port, server_died=server_died)
            except Exception as exc:  # noqa: BLE001 - a dead client may refuse; a new one replaces it
                log.debug("deleting dead client %s: %s", self.name, exc)
            self._port = self._open()
            self.closed = False

    def abandon(self) -> None:
        """The MIDI system died and is not back: close without touching the client (``abandon_client``)."""
        with self._lock:
            if not self.closed:
                self.closed = True
                system.abandon_client(self._port)

    def _send(self, msg: midi.Message) -> None:
        self._port.send_message(msg)

    def _close(self) -> None:
        system.close_client(self._port)


class FluidSynthOutput(Output):
    """A FluidSynth synthesiser (pyfluidsynth) playing the messages through a SoundFont.

    ``driver=None`` starts no audio driver: audio is pulled with :meth:`render` (faster than real time;
    offline tests and the demo). Otherwise ``driver`` names a FluidSynth audio driver ("jack",
    "pulseaudio", "alsa", or "file" which writes ``file_name``). FluidSynth's own MIDI driver is never
    started: musebot feeds the synth directly.
    """

    kind = "fluidsynth"

    def __init__(
        self,
        soundfont: str | Path | None = None,
        driver: str | None = None,
        file_name: str | Path | None = None,
        sample_rate: int = 44100,
        gain: float = 0.4,
    ) -> None:
        super().__init__(f"fluidsynth({driver or 'offline'})")
        try:
            self._fs = audio.import_fluidsynth()
            self._gm = audio.GMSynth(soundfont, sample_rate, gain)
        except audio.SoundfontNotFoundError as exc:
            raise SoundfontNotFoundError(str(exc)) from exc
        except audio.AudioError as exc:
            raise RealtimeError(str(exc)) from exc
        self.soundfont = self._gm.soundfont
        self.sample_rate = sample_rate
        self.synth = self._gm.synth
        self._driver = None
        if driver:
            self.synth.setting("audio.driver", driver)
            if driver == "file" and file_name:
                self.synth.setting("audio.file.name", str(file_name))
            if driver == "jack":
                # Without autoconnect FluidSynth's JACK ports stay unconnected and nothing is heard.
                self.synth.setting("audio.jack.autoconnect", 1)
                self.synth.setting("audio.jack.id", "musebot-fluidsynth")
            # Start only the audio driver: Synth.start() would also open a FluidSynth MIDI driver.
            self._driver = self._fs.new_fluid_audio_driver(self.synth.settings, self.synth.synth)
            if not self._driver:
                self.synth.delete()
                raise RealtimeError(f"FluidSynth could not start audio driver {driver!r}")

    def render(self, seconds: float) -> np.ndarray:
        """Synthesise ``seconds`` of audio now: int16 array of shape ``(frames, 2)`` (offline use only)."""
        frames = round(seconds * self.sample_rate)
        with self._lock:
            return self._gm.samples(frames)

    def _send(self, msg: midi.Message) -> None:
        self._gm.apply(msg)

    def _close(self) -> None:
        if self._driver:
            self._fs.delete_fluid_audio_driver(self._driver)
            self._driver = None
        self.synth.delete()
