"""MIDI systems and ports: which system to use, listing ports, opening a port by name, server liveness.

rtmidi is the backend (ALSA sequencer and JACK on Linux, CoreMIDI on macOS, WinMM on Windows). With JACK
every rtmidi object is its own JACK client, so each needs a unique client name. JACK's liveness is
checked by connecting to the server's socket (no JACK client is made, so a dead server costs nothing and
prints nothing); libjack is told never to start a server on its own (``JACK_NO_START_SERVER``).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from musebot.realtime.errors import NoMidiSystemError, PortNotFoundError

log = logging.getLogger(__name__)

API_CHOICES = ("alsa", "jack", "coremidi", "winmm")
NO_MIDI_SYSTEM = (
    "No MIDI system found: start JACK (jackd -d dummy) or install ALSA; serving through FluidSynth only"
)


def rtmidi_module():  # imported lazily: `musebot --help` must not load native MIDI libraries
    os.environ.setdefault("JACK_NO_START_SERVER", "1")
    import rtmidi

    return rtmidi


def api_id(name: str) -> int:
    rtmidi = rtmidi_module()
    ids = {
        "alsa": rtmidi.API_LINUX_ALSA, "jack": rtmidi.API_UNIX_JACK,
        "coremidi": rtmidi.API_MACOSX_CORE, "winmm": rtmidi.API_WINDOWS_MM,
    }
    if name not in ids:
        raise ValueError(f"--api must be one of {', '.join(API_CHOICES)}, got {name!r}")
    return ids[name]


def api_name(api: int) -> str:
    return rtmidi_module().get_api_name(api)


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


SYNC_CLIENT_TIMEOUT_MS = 500  # a synchronous dummy server waits this long for a late client (start_dummy_jack)


def start_dummy_jack(server: str, rate: int = 48000, period: int = 64, timeout: float = 10.0,
                     sync: bool = False):
    """Start ``jackd -n server -d dummy`` (no sound card needed) and wait until it answers; returns the
    ``subprocess.Popen``. Raises NoMidiSystemError when jackd is missing or does not come up.

    ``sync`` starts it in synchronous mode (``jackd -S``): each cycle waits for every client to finish. In
    JACK's default (asynchronous) mode a client that has not finished a cycle when the next begins misses it,
    and the MIDI events of that cycle on its ports are lost. A dummy server has no sound card to keep time
    for, so tests and soaks, which count messages, run it synchronous, and with a client timeout of
    ``SYNC_CLIENT_TIMEOUT_MS`` (``-t``): by default JACK2 waits for a late client only 2 periods (10 times that
    for the graph's end, 27 ms at 64 frames), then goes on without it, and the client loses the MIDI of the
    cycles it missed. On a shared VM whose host takes a busy virtual CPU away for 100 ms (tests/_stalls.py),
    that lost 1, 22 and 41 of 3,000 messages at 200 a second in 3 of 4 runs; with ``-t 500``, 0 in 4 runs."""
    import shutil
    import subprocess
    import time

    jackd = shutil.which("jackd")
    if jackd is None:
        raise NoMidiSystemError("jackd is not installed (apt install jackd2)")
    forget_dead_jack_servers()
    process = subprocess.Popen(
        [jackd, *(["-S", "-t", str(SYNC_CLIENT_TIMEOUT_MS)] if sync else []), "-n", server, "-d", "dummy",
         "-r", str(rate), "-p", str(period)],
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


SHM_DIR = Path("/dev/shm")
_REGISTRY = SHM_DIR / "jack-shm-registry"
_REGISTRY_SEMAPHORE_KEY = 0x282929  # JACK2's System V semaphore that locks the registry (common/shm.c)
_MAX_SERVERS, _MAX_SHM_ID = 8, 256
_HEADER, _SERVER_ENTRY, _SHM_ENTRY = 24, 264, 268  # jack_shm_header_t fields, jack_shm_server_t, registry entry


def forget_jack_server(server: str, pid: int) -> list[str]:
    """Remove what the dead ``jackd -n server`` (process ``pid``) left in JACK2's shared memory: its slot in
    the registry's server table (8 slots: stale ones end in "Too many servers already active"), its
    registered segments (``/dev/shm/jack-UID-N``, often 100 MB), its socket and its clients' semaphores.
    Only that server's entries, and only once ``pid`` is gone. Returns what was removed."""
    import mmap
    import struct

    try:
        os.kill(pid, 0)
        return []  # still running (or the pid was reused): not ours to touch
    except ProcessLookupError:
        pass
    except PermissionError:
        return []
    uid = os.getuid()
    removed = []
    for path in [*SHM_DIR.glob(f"jack_{server}_{uid}_*"), *SHM_DIR.glob(f"jack_sem.{uid}_{server}_*")]:
        with contextlib.suppress(OSError):
            path.unlink()
            removed.append(path.name)
    prefix = f"jack-{uid}:{server}:".encode()
    try:
        fd = os.open(_REGISTRY, os.O_RDWR)
        if os.fstat(fd).st_size < _HEADER:
            os.close(fd)
            return removed
    except OSError:
        return removed
    with _registry_lock(), contextlib.closing(mmap.mmap(fd, 0)) as reg:
        os.close(fd)
        magic, _, _, _, hdr_len, entry_len = struct.unpack_from("=IHxxiiii", reg, 0)
        layout = (magic, hdr_len, entry_len, len(reg) >= hdr_len + _MAX_SHM_ID * entry_len)
        if layout != (0x4A41434B, _HEADER + _MAX_SERVERS * _SERVER_ENTRY, _SHM_ENTRY, True):
            log.debug("JACK shm registry of an unknown layout: left alone")
            return removed
        for i in range(_MAX_SERVERS):
            at = _HEADER + i * _SERVER_ENTRY
            slot_pid, name = struct.unpack_from("=i", reg, at)[0], reg[at + 4:at + 4 + 257].split(b"\0")[0]
            if slot_pid == pid and name == prefix:
                reg[at:at + _SERVER_ENTRY] = bytes(_SERVER_ENTRY)
                removed.append(f"registry server {server}")
        for i in range(_MAX_SHM_ID):
            at = hdr_len + i * entry_len
            allocator = struct.unpack_from("=i", reg, at + 4)[0]
            if allocator != pid:
                continue
            segment = reg[at + 12:at + 12 + 255].split(b"\0")[0].decode(errors="replace").lstrip("/")
            if segment.startswith(f"jack-{uid}-"):
                with contextlib.suppress(OSError):
                    (SHM_DIR / segment).unlink()
                    removed.append(segment)
            reg[at + 4:at + entry_len] = bytes(entry_len - 4)  # allocator, size, id; the index stays
    return removed


def forget_dead_jack_servers(prefix: str = "musebot-") -> list[str]:
    """:func:`forget_jack_server` for every server named ``prefix...`` whose process is gone: what runs
    killed without cleanup (SIGKILL, a killed test run or benchmark) left in the registry's eight slots.
    Another program's servers, and live ones, are left alone. Returns what was removed."""
    uid = os.getuid()
    removed = []
    for pid, entry in registered_jack_servers():
        if entry.startswith(f"jack-{uid}:{prefix}") and entry.endswith(":") and not Path(f"/proc/{pid}").exists():
            removed += forget_jack_server(entry[len(f"jack-{uid}:"):-1], pid)
    return removed


def registered_jack_servers() -> list[tuple[int, str]]:
    """``(pid, "jack-UID:NAME:")`` of every server in JACK2's shm registry, dead or alive (for checks)."""
    import struct

    try:
        data = _REGISTRY.read_bytes()
    except OSError:
        return []
    servers = []
    for i in range(_MAX_SERVERS):
        at = _HEADER + i * _SERVER_ENTRY
        if len(data) < at + _SERVER_ENTRY:
            break
        pid = struct.unpack_from("=i", data, at)[0]
        if pid:
            servers.append((pid, data[at + 4:at + 4 + 257].split(b"\0")[0].decode(errors="replace")))
    return servers


@contextlib.contextmanager
def _registry_lock(timeout: float = 2.0):
    """JACK2's registry lock (a System V semaphore, SEM_UNDO so a crash releases it); no lock if absent."""
    import ctypes
    import time

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        semid = libc.semget(_REGISTRY_SEMAPHORE_KEY, 0, 0)
    except (OSError, AttributeError):
        semid = -1
    if semid < 0:
        yield
        return

    class SemBuf(ctypes.Structure):
        _fields_ = [("num", ctypes.c_ushort), ("op", ctypes.c_short), ("flg", ctypes.c_short)]

    ipc_nowait, sem_undo = 0o4000, 0x1000
    end = time.monotonic() + timeout
    locked = False
    while not locked and time.monotonic() < end:
        locked = libc.semop(semid, ctypes.byref(SemBuf(0, -1, ipc_nowait | sem_undo)), 1) == 0
        if not locked:
            time.sleep(0.01)
    try:
        yield
    finally:
        if locked:
            libc.semop(semid, ctypes.byref(SemBuf(0, 1, sem_undo)), 1)


def stop_dummy_jack(process, server: str, timeout: float = 5.0) -> None:
    """Stop a server from :func:`start_dummy_jack` (SIGTERM, then SIGKILL) and remove what it left in
    shared memory (:func:`forget_jack_server`), whether it was stopped here or died before."""
    import subprocess

    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)
    forget_jack_server(server, process.pid)


@contextlib.contextmanager
def benchmark_jack(server: str | None, prefix: str):
    """The JACK server a benchmark talks to: ``server`` when given (already running), else a private dummy
    one named ``prefix-PID`` for the duration, synchronous (:func:`start_dummy_jack`: benchmarks count messages,
    and an asynchronous server drops those of a client a loaded machine held past a cycle). JACK clients made
    inside connect to it alone (the environment names it and forbids starting another); the
    environment is restored on the way out."""
    saved = {k: os.environ.get(k) for k in ("JACK_DEFAULT_SERVER", "JACK_NO_START_SERVER")}
    os.environ["JACK_NO_START_SERVER"] = "1"
    process = None
    try:
        if server is None:
            server = f"{prefix}-{os.getpid()}"
            process = start_dummy_jack(server, sync=True)
        os.environ["JACK_DEFAULT_SERVER"] = server
        yield server
    finally:
        if process is not None:
            stop_dummy_jack(process, server)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def alsa_seq_available() -> bool:
    return Path("/dev/snd/seq").exists()


def usable(name: str) -> tuple[bool, str]:
    """Whether MIDI system ``name`` can be used now, and why not."""
    rtmidi = rtmidi_module()
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
    rtmidi = rtmidi_module()
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


# libjack keeps a client's ports in a list that the client's notification thread walks on every latency
# callback; the server sends one to every client a cycle or more after each change of the graph (a port or a
# connection made or removed, by anyone), and jack_port_unregister erases from that list without a lock
# (jack2: JackClient::PortUnRegister against HandleLatencyCallback, issue #216; so in 1.9.21 and in master).
# A test process closing two clients one after the other died of it (SIGSEGV on a JACK thread, once in a 20x
# loop). So this process's own closes are spaced: a port is unregistered only GRAPH_SETTLE_S after this
# process last changed the graph, when the callbacks that change caused have run.
GRAPH_SETTLE_S = 0.05
_graph_lock = threading.Lock()
_graph_changed_at = 0.0


def graph_changed() -> None:
    """Note that this process just changed JACK's graph (a port or connection made)."""
    global _graph_changed_at
    _graph_changed_at = time.monotonic()


def close_client(client, close_port: bool = True, server_died: bool = False) -> None:
    """``close_port()`` and ``delete()`` an rtmidi client, spaced from this process's other graph changes
    (see ``GRAPH_SETTLE_S``); when its server died, let go of it unclosed (:func:`abandon_client`). Errors
    of a client whose server is gone are the caller's to handle."""
    if server_died:
        abandon_client(client)
        return
    with _graph_lock:
        wait = _graph_changed_at + GRAPH_SETTLE_S - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        try:
            if close_port:
                client.close_port()
            client.delete()
        finally:
            graph_changed()


def abandon_client(client) -> None:
    """Let go of an rtmidi client whose JACK server died, without closing it: unregistering a port of a dead
    server's client can crash the process (SIGSEGV in ``jack_port_unregister``, from ``delete()``, once in a
    20x loop). Its reference count is raised so that it is never freed, not even as the interpreter exits
    (freeing it would close it): a small object and a socket per server death, for the process's life."""
    ctypes.pythonapi.Py_IncRef(ctypes.py_object(client))


class PortProbe:
    """A client kept open to list the ports of one MIDI system, for a health check that runs twice a second.

    Opening a client is slow (JACK: a server round trip and a new thread, 40 ms here and 250 ms under load)
    and python-rtmidi holds the interpreter lock all that time, so every thread of the daemon, the
    scheduler's too, stalls. A client opened once lists the ports in about 0.1 ms. ``close`` when the system
    went away; the next ``ports`` opens a new client."""

    def __init__(self, api: int) -> None:
        self.api = api
        self._clients: dict[str, Any] = {}

    def ports(self, direction: str) -> list[str] | None:
        """Current port names (``direction`` "in" lists inputs); None when the system cannot be asked."""
        rtmidi = rtmidi_module()
        try:
            client = self._clients.get(direction)
            if client is None:
                kind = rtmidi.MidiIn if direction == "in" else rtmidi.MidiOut
                client = self._clients[direction] = kind(self.api, name="musebot-probe")
            return client.get_ports()
        except rtmidi.RtMidiError:
            self.close()
            return None

    def close(self, server_died: bool = False) -> None:
        for client in self._clients.values():
            try:
                close_client(client, close_port=False, server_died=server_died)
            except Exception as exc:  # noqa: BLE001
                log.debug("closing the port probe: %s", exc)
        self._clients.clear()


def find_port(names: list[str], wanted: str) -> int | None:
    """Index of the port called ``wanted``: exact name first, then a unique case-insensitive substring."""
    if wanted in names:
        return names.index(wanted)
    matches = [i for i, name in enumerate(names) if wanted.lower() in name.lower()]
    return matches[0] if len(matches) == 1 else None


def open_named_port(client, wanted: str, what: str, port_name: str) -> str:
    """Connect rtmidi ``client`` (a MidiIn or MidiOut) to the existing port called ``wanted``, as its own
    port ``port_name``; returns the full name found. ``what`` names the kind in the error ("MIDI input").
    The client is deleted and PortNotFoundError raised when no port matches."""
    names = client.get_ports()
    index = find_port(names, wanted)
    if index is None:
        client.delete()
        raise PortNotFoundError(
            f"no {what} named {wanted!r}; ports are: {', '.join(names) or 'none'} (list them with `musebot ports`)"
        )
    client.open_port(index, port_name)
    graph_changed()
    return names[index]


def wait_for_port(client, name: str, timeout: float = 5.0) -> int:
    """Index of port ``name`` among ``client``'s, waiting up to ``timeout`` s for it to appear (a JACK
    client registers its ports a moment after it is made); NoMidiSystemError when it never does."""
    end = time.monotonic() + timeout
    while True:
        names = client.get_ports()
        if name in names:
            return names.index(name)
        if time.monotonic() >= end:
            raise NoMidiSystemError(f"JACK port {name!r} did not appear within {timeout:.0f} s "
                                    f"(ports: {', '.join(names) or 'none'})")
        time.sleep(0.02)
