"""MIDI systems and ports: which system to use, listing ports, the input port, server liveness.

rtmidi is the backend (ALSA sequencer and JACK on Linux, CoreMIDI on macOS, WinMM on Windows). With JACK
every rtmidi object is its own JACK client, so each needs a unique client name. JACK's liveness is
checked by connecting to the server's socket (no JACK client is made, so a dead server costs nothing and
prints nothing); libjack is told never to start a server on its own (``JACK_NO_START_SERVER``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

from musebot.realtime.clock import now
from musebot.realtime.io.poller import MidiPoller
from musebot.realtime.errors import NoMidiSystemError, PortNotFoundError
from musebot.realtime.outputs import find_port

log = logging.getLogger(__name__)

API_CHOICES = ("alsa", "jack", "coremidi", "winmm")
NO_MIDI_SYSTEM = (
    "No MIDI system found: start JACK (jackd -d dummy) or install ALSA; serving through FluidSynth only"
)


def _rtmidi():  # imported lazily: `musebot --help` must not load native MIDI libraries
    os.environ.setdefault("JACK_NO_START_SERVER", "1")
    import rtmidi

    return rtmidi


def api_id(name: str) -> int:
    rtmidi = _rtmidi()
    ids = {
        "alsa": rtmidi.API_LINUX_ALSA, "jack": rtmidi.API_UNIX_JACK,
        "coremidi": rtmidi.API_MACOSX_CORE, "winmm": rtmidi.API_WINDOWS_MM,
    }
    if name not in ids:
        raise ValueError(f"--api must be one of {', '.join(API_CHOICES)}, got {name!r}")
    return ids[name]


def api_name(api: int) -> str:
    return _rtmidi().get_api_name(api)


def jack_server_name() -> str:
    return os.environ.get("JACK_DEFAULT_SERVER", "default")


def jack_running(server: str | None = None) -> bool:
    """Whether JACK server ``server`` (default: ``$JACK_DEFAULT_SERVER`` or "default") answers on its socket
    (JACK2 keeps it in /dev/shm, JACK1 in /tmp)."""
    uid = os.getuid() if hasattr(os, "getuid") else 0
    name = f"jack_{server or jack_server_name()}_{uid}_0"
    for folder in ("/dev/shm", "/tmp", os.environ.get("JACK_PROMISCUOUS_SERVER_DIR", "/dev/shm")):
        path = Path(folder) / name
        if not path.exists():
            continue
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.2)
            try:
                sock.connect(str(path))
                return True
            except OSError:
                continue  # a stale socket left by a killed server
    return False


def _die_with_parent() -> None:
    """In the child: ask Linux to SIGTERM it when its parent dies (a killed test run leaks no server)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, 15)  # PR_SET_PDEATHSIG, SIGTERM
    except (OSError, AttributeError):
        pass


def start_dummy_jack(server: str, rate: int = 48000, period: int = 64, timeout: float = 10.0):
    """Start ``jackd -n server -d dummy`` (no sound card needed) and wait until it answers; returns the
    ``subprocess.Popen``. Raises NoMidiSystemError when jackd is missing or does not come up."""
    import shutil
    import subprocess
    import time

    jackd = shutil.which("jackd")
    if jackd is None:
        raise NoMidiSystemError("jackd is not installed (apt install jackd2)")
    process = subprocess.Popen(
        [jackd, "-n", server, "-d", "dummy", "-r", str(rate), "-p", str(period)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env=dict(os.environ, JACK_NO_START_SERVER="1"),
        preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,  # noqa: PLW1509
    )
    end = time.monotonic() + timeout
    while not jack_running(server):
        if process.poll() is not None or time.monotonic() > end:
            process.kill()
            raise NoMidiSystemError(f"jackd -n {server} -d dummy did not start")
        time.sleep(0.05)
    return process


@contextlib.contextmanager
def benchmark_jack(server: str | None, prefix: str):
    """The JACK server a benchmark talks to: ``server`` when given (already running), else a private dummy
    one named ``prefix-PID`` for the duration. JACK clients made inside connect to it alone (the
    environment names it and forbids starting another); the environment is restored on the way out."""
    saved = {k: os.environ.get(k) for k in ("JACK_DEFAULT_SERVER", "JACK_NO_START_SERVER")}
    os.environ["JACK_NO_START_SERVER"] = "1"
    process = None
    try:
        if server is None:
            server = f"{prefix}-{os.getpid()}"
            process = start_dummy_jack(server)
        os.environ["JACK_DEFAULT_SERVER"] = server
        yield server
    finally:
        if process is not None:
            process.terminate()
            process.wait(5)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def alsa_seq_available() -> bool:
    return Path("/dev/snd/seq").exists()


def usable(name: str) -> tuple[bool, str]:
    """Whether MIDI system ``name`` can be used now, and why not."""
    rtmidi = _rtmidi()
    if api_id(name) not in rtmidi.get_compiled_api():
        return False, "not compiled into this python-rtmidi"
    if name == "jack" and not jack_running():
        return False, f"no JACK server running (name {jack_server_name()!r}); start one: jackd -d dummy"
    if name == "alsa" and not alsa_seq_available():
        return False, "no ALSA sequencer (/dev/snd/seq is missing: modprobe snd-seq, or use JACK)"
    return True, ""


def choose_api(requested: str | None) -> int | None:
    """The rtmidi API to use: ``requested`` (which must work), else the first usable; None when none is.

    Preference: JACK when a server runs (it is what a Linux audio setup uses), then ALSA, CoreMIDI, WinMM.
    """
    if requested:
        ok, why = usable(requested)
        if not ok:
            raise NoMidiSystemError(f"MIDI system {requested!r} cannot be used: {why}")
        return api_id(requested)
    order = {"darwin": ("coremidi", "jack"), "win32": ("winmm",)}.get(sys.platform, ("jack", "alsa"))
    for name in order:
        if usable(name)[0]:
            return api_id(name)
    return None


@dataclass
class PortList:
    system: str
    inputs: list[str]
    outputs: list[str]
    error: str = ""


def list_ports(names: tuple[str, ...] = API_CHOICES) -> list[PortList]:
    """Inputs and outputs of each MIDI system in ``names`` (with the reason when one cannot be used)."""
    rtmidi = _rtmidi()
    found = []
    for name in names:
        ok, why = usable(name)
        if not ok:
            found.append(PortList(name, [], [], why))
            continue
        try:
            midi_in = rtmidi.MidiIn(api_id(name), name="musebot-ports")
            midi_out = rtmidi.MidiOut(api_id(name), name="musebot-ports")
            found.append(PortList(name, midi_in.get_ports(), midi_out.get_ports()))
            midi_in.delete()
            midi_out.delete()
        except rtmidi.RtMidiError as exc:
            found.append(PortList(name, [], [], str(exc)))
    return found


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
        rtmidi = _rtmidi()
        self.close()
        midi_in = rtmidi.MidiIn(self.api, name=self.client_name, queue_size_limit=4096)
        # Sysex, MIDI clock and active sensing never reach the listener (they carry nothing it uses).
        midi_in.ignore_types(sysex=True, timing=True, active_sense=True)
        if self.port is None:
            midi_in.open_virtual_port("in")
        else:
            names = midi_in.get_ports()
            index = find_port(names, self.port)
            if index is None:
                midi_in.delete()
                raise PortNotFoundError(
                    f"no MIDI input named {self.port!r}; inputs are: {', '.join(names) or 'none'}"
                    " (list them with `musebot ports`)"
                )
            midi_in.open_port(index, "in")
            self.connected_to = names[index]
        self._midi_in = midi_in
        self._poller = MidiPoller(midi_in, self._enqueue, self.name)

    def source_present(self) -> bool:
        """For a named port: whether the port it reads from still exists (always True for virtual)."""
        if self.port is None or self._midi_in is None:
            return True
        try:
            return find_port(self._midi_in.get_ports(), self.port) is not None
        except _rtmidi().RtMidiError:
            return False

    def close(self) -> None:
        if self._poller is not None:
            self._poller.stop()
            self._poller = None
        if self._midi_in is not None:
            try:
                self._midi_in.close_port()
                self._midi_in.delete()
            except Exception as exc:  # noqa: BLE001 - a client of a dead server cannot be closed cleanly
                log.debug("closing input %s: %s", self.name, exc)
            self._midi_in = None


def present_ports(api: int, direction: str) -> list[str] | None:
    """Current port names (``direction`` "in" lists inputs); None when the system cannot be asked."""
    rtmidi = _rtmidi()
    try:
        probe = rtmidi.MidiIn(api, name="musebot-probe") if direction == "in" else rtmidi.MidiOut(
            api, name="musebot-probe"
        )
        names = probe.get_ports()
        probe.delete()
        return names
    except rtmidi.RtMidiError:
        return None
