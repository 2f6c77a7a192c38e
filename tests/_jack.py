"""A real JACK server for tests (``jackd -d dummy``, no sound card needed) and a test musician on it.

Each server gets a unique name (``JACK_DEFAULT_SERVER``) so tests of other modules running at the same
time never share it. JACK adds one period per hop: 64 frames at 48 kHz is 1.3 ms.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from musebot.realtime.clock import now
from musebot.realtime.errors import NoMidiSystemError
from musebot.realtime.io import system
from musebot.realtime.io.poller import MidiPoller
from musebot.realtime.io.system import forget_jack_server, start_dummy_jack, stop_dummy_jack

JACKD = shutil.which("jackd")
requires_jackd = pytest.mark.skipif(JACKD is None, reason="jackd is not installed (apt install jackd2)")


# The tests' servers run synchronous (``jackd -S``): asynchronous, this shared 2-core VM's dummy JACK ran
# hundreds of cycles late in ten seconds even unloaded ("JackEngine::XRun: client = rx was not finished"),
# and a client that misses a cycle loses the MIDI events of its ports: 3 of 2,000 messages in a loopback, a
# note-off in 1 of 12 call-mode soaks (a key held for the 30 s timeout, calls unanswered), a chord tone in CI.
# Synchronous, at the same 64 frames: 0 lost. And with a client timeout of 500 ms (``jackd -t``, see
# ``start_dummy_jack``): JACK2's default gives a late client 27 ms, and this VM's host freezes a busy virtual
# CPU for 100 ms (tests/_stalls.py), after which a frozen client had lost the MIDI of the cycles it missed.
class JackServer:
    """One ``jackd -d dummy`` process under a unique name; ``kill``/``start`` simulate a crash and return."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = start_dummy_jack(self.name, sync=True)

    def kill(self) -> None:
        """SIGKILL (a crash): nothing of JACK's own cleanup runs, so ours removes its shared-memory entries."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)
        self.forget()

    def stop(self) -> None:
        if self.process:
            stop_dummy_jack(self.process, self.name)

    def forget(self) -> list[str]:
        """Remove this (dead) server's socket, semaphores and JACK shm registry entries, by name and pid."""
        return forget_jack_server(self.name, self.process.pid) if self.process else []


@contextmanager
def jack_server(suffix: str = "") -> Iterator[JackServer]:
    """Start a server, point this process at it (env), and stop it afterwards."""
    server = JackServer(f"musebot-test-{os.getpid()}{suffix}")
    server.start()
    saved = {k: os.environ.get(k) for k in ("JACK_DEFAULT_SERVER", "JACK_NO_START_SERVER")}
    os.environ["JACK_DEFAULT_SERVER"] = server.name
    os.environ["JACK_NO_START_SERVER"] = "1"
    try:
        yield server
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class Musician:
    """A test client on JACK: a keyboard port that plays into musebot and a port that hears musebot.

    ``heard`` holds ``(arrival time, message)`` for everything that arrives from musebot's output.
    """

    def __init__(self, play_to: str | None = "musebot:in", listen_to: str | None = "musebot-out:out",
                 keyboard_name: str = "tester-kbd") -> None:
        import rtmidi

        self._rtmidi = rtmidi
        self.keyboard_name = keyboard_name
        self.keyboard = None
        self.heard: list[tuple[float, tuple[int, ...]]] = []
        self._lock = threading.Lock()
        self.ear = None
        self._poller = None
        if listen_to:
            self.listen(listen_to)
        if play_to:
            self.connect_keyboard(play_to)

    def listen(self, port: str) -> None:
        self.ear = self._rtmidi.MidiIn(self._rtmidi.API_UNIX_JACK, name="tester-ear")
        self.ear.ignore_types(sysex=False, timing=False, active_sense=False)
        self.ear.open_port(wait_for_port(self.ear, port), "in")
        system.graph_changed()
        # Polled from a thread of ours: a callback would run on JACK's thread, which closing cancels.
        self._poller = MidiPoller(self.ear, self._hear, "tester-ear")

    def _hear(self, t: float, message: list[int]) -> None:
        with self._lock:
            self.heard.append((t, tuple(message)))

    def connect_keyboard(self, port: str) -> None:
        self.keyboard = self._rtmidi.MidiOut(self._rtmidi.API_UNIX_JACK, name="tester-play")
        self.keyboard.open_port(wait_for_port(self.keyboard, port), "out")
        system.graph_changed()

    def virtual_keyboard(self) -> None:
        """A keyboard that is itself a port (``tester-kbd:out``) musebot connects to by name."""
        self.keyboard = self._rtmidi.MidiOut(self._rtmidi.API_UNIX_JACK, name=self.keyboard_name)
        self.keyboard.open_virtual_port("out")
        system.graph_changed()

    def unplug(self) -> None:
        if self.keyboard is not None:
            system.close_client(self.keyboard)
            self.keyboard = None

    def send(self, *msg: int) -> float:
        t = now()
        self.keyboard.send_message(list(msg))
        return t

    def play(self, notes: list[tuple[int, float]], velocity: int = 90) -> float:
        """Play ``(pitch, seconds)`` one after another, legato-free; returns the time of the last release."""
        release = now()
        for pitch, seconds in notes:
            self.send(0x90, pitch, velocity)
            time.sleep(seconds)
            release = self.send(0x80, pitch, 0)
        return release

    def snapshot(self) -> list[tuple[float, tuple[int, ...]]]:
        with self._lock:
            return list(self.heard)

    def wait_for(self, predicate, timeout: float = 3.0) -> list[tuple[float, tuple[int, ...]]]:
        end = now() + timeout
        while now() < end:
            heard = self.snapshot()
            if predicate(heard):
                return heard
            time.sleep(0.005)
        return self.snapshot()

    def close(self) -> None:
        self.unplug()
        if self._poller is not None:
            self._poller.stop()
            self._poller = None
        if self.ear is not None:
            system.close_client(self.ear)
            self.ear = None


def wait_for_port(client, name: str, timeout: float = 5.0) -> int:
    try:
        return system.wait_for_port(client, name, timeout)
    except NoMidiSystemError as exc:
        raise AssertionError(str(exc)) from exc


def note_ons(heard) -> list[tuple[float, tuple[int, ...]]]:
    return [(t, m) for t, m in heard if m[0] & 0xF0 == 0x90 and m[2] > 0]


def hanging_notes(heard) -> set[tuple[int, int]]:
    """``(channel, pitch)`` still sounding at the end of ``heard``: a note-on with no later note-off,
    all-notes-off (CC123) or all-sound-off (CC120) on its channel."""
    sounding: set[tuple[int, int]] = set()
    for _, msg in heard:
        kind, channel = msg[0] & 0xF0, msg[0] & 0x0F
        if kind == 0x90 and msg[2] > 0:
            sounding.add((channel, msg[1]))
        elif kind == 0x80 or (kind == 0x90 and msg[2] == 0):
            sounding.discard((channel, msg[1]))
        elif kind == 0xB0 and msg[1] in (120, 123):
            sounding = {key for key in sounding if key[0] != channel}
    return sounding
