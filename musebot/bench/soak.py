"""``musebot bench-soak``: a long session against the daemon as a separate process, for memory and stuck notes.

A private JACK server (``jackd -d dummy``); ``python -m musebot serve --mode MODE`` in its own process, so
its resident memory is its own (``VmRSS`` of ``/proc/PID/status``, read every minute) and the network API
on a loopback port for its own telemetry; in this process a synthetic musician and an ear, each a JACK
client polled from a thread of ours:

* ``call``: a phrase of 4 to 8 varied notes (random pitches of a random major scale, random lengths) every
  ``--phrase-s`` seconds; the ear counts the note-ons of each answer (between the end of a phrase and the
  start of the next) and when the first one arrived after the phrase's last release;
* ``accompany`` / ``looper``: an endless eighth-note melody on musebot's tempo, a new key every 8 bars (the
  looper's musician moves between a melody and a bass register every 8 bars, so the roles it leaves to
  musebot change); the ear counts part note-ons per minute.

Lateness is the daemon's own ``sent - due`` of its scheduled messages (``/api/status``: the latest sent
messages, and counts of late and dropped notes); the ear adds the answer latency in call mode. At the end
the musician releases its keys, the daemon gets SIGTERM, and every note-on heard must have had its note-off
(or an all-notes-off on its channel): ``hanging_notes``. ``growth_pct`` is the RSS growth from minute 5 (or
the first reading of a shorter run) to the end.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

from musebot.bench.accompany import KEYS
from musebot.realtime.clock import now, sleep_until
from musebot.realtime.constraints import SCALES
from musebot.realtime.io import system as ports
from musebot.realtime.io.poller import MidiPoller

log = logging.getLogger(__name__)

MODES = ("call", "accompany", "looper")
IN_PORT, OUT_PORT = "musebot:in", "musebot-out:out"
BASELINE_MINUTE = 5  # growth is measured from here: the first minutes fill caches that then stay


def rss_mb(pid: int) -> float | None:
    """Resident memory of process ``pid`` in MB (``VmRSS``), None when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def hanging_notes(heard: list[tuple[float, tuple[int, ...]]]) -> list[tuple[int, int]]:
    """``(channel, pitch)`` still sounding at the end of ``heard``: a note-on with no later note-off,
    all-notes-off (CC 123) or all-sound-off (CC 120) on its channel."""
    sounding: set[tuple[int, int]] = set()
    for _, msg in heard:
        kind, channel = msg[0] & 0xF0, msg[0] & 0x0F
        if kind == 0x90 and len(msg) > 2 and msg[2] > 0:
            sounding.add((channel, msg[1]))
        elif kind == 0x80 or (kind == 0x90 and len(msg) > 2 and msg[2] == 0):
            sounding.discard((channel, msg[1]))
        elif kind == 0xB0 and msg[1] in (120, 123):
            sounding = {key for key in sounding if key[0] != channel}
    return sorted(sounding)


class Ear:
    """A JACK client that hears ``port`` and keeps ``(arrival, message)``, polled from a thread of ours."""

    def __init__(self, rtmidi, port: str) -> None:
        self.heard: list[tuple[float, tuple[int, ...]]] = []
        self._lock = threading.Lock()
        self._in = _jack_client(rtmidi.MidiIn, "soak-ear")
        self._in.ignore_types(sysex=True, timing=True, active_sense=True)
        self._in.open_port(ports.wait_for_port(self._in, port, timeout=30.0), "in")
        self._poller = MidiPoller(self._in, self._hear, "soak-ear")

    def _hear(self, t: float, message: list[int]) -> None:
        with self._lock:
            self.heard.append((t, tuple(message)))

    def snapshot(self) -> list[tuple[float, tuple[int, ...]]]:
        with self._lock:
            return list(self.heard)

    def close(self) -> None:
        self._poller.stop()
        ports.close_client(self._in)


class Musician:
    """The synthetic musician: plays into ``musebot:in`` on a thread until :meth:`stop`."""

    def __init__(self, rtmidi, mode: str, bpm: float, phrase_s: float, seed: int) -> None:
        self.mode, self.bpm, self.phrase_s = mode, bpm, phrase_s
        self.rng = random.Random(seed)
        self.phrases: list[tuple[float, float]] = []  # (first note-on, last note-off) of each call
        self.notes = 0
        self._out = _jack_client(rtmidi.MidiOut, "soak-musician")
        self._out.open_port(ports.wait_for_port(self._out, IN_PORT, timeout=30.0), "out")
        self._stop = threading.Event()
        self._held: set[int] = set()
        self._thread = threading.Thread(target=self._run, name="soak-musician", daemon=True)

    def start(self) -> Musician:
        self._thread.start()
        return self

    def _send(self, *msg: int) -> float:
        t = now()
        self._out.send_message(list(msg))
        return t

    def _note(self, pitch: int, at: float, length_s: float) -> float:
        """Play ``pitch`` from ``at`` for ``length_s``; returns the release time."""
        sleep_until(at)
        self._send(0x90, pitch, self.rng.randint(60, 110))
        self._held.add(pitch)
        self.notes += 1
        sleep_until(at + length_s)
        released = self._send(0x80, pitch, 0)
        self._held.discard(pitch)
        return released

    def _run(self) -> None:
        try:
            (self._calls if self.mode == "call" else self._melody)()
        finally:
            for pitch in list(self._held):
                self._send(0x80, pitch, 0)

    def _calls(self) -> None:
        start = now() + 0.5
        k = 0
        while not self._stop.is_set():
            at = start + k * self.phrase_s
            tonic = self.rng.choice(KEYS)
            t, first, last = at, None, at
            for _ in range(self.rng.randint(4, 8)):
                length = self.rng.uniform(0.12, 0.4)
                pitch = 55 + tonic + SCALES["major"][self.rng.randrange(7)] + 12 * self.rng.randrange(2)
                last = self._note(pitch, t, length)
                first = first or t
                t += length + self.rng.uniform(0.0, 0.12)
                if self._stop.is_set():
                    break
            self.phrases.append((first, last))
            k += 1
            self._stop.wait(max(0.0, start + k * self.phrase_s - now()))

    def _melody(self) -> None:
        spb = 60.0 / self.bpm
        start = now() + 0.5
        degree, i = 7, 0
        while not self._stop.is_set():
            bar = i // 8
            tonic = KEYS[(bar // 8) % len(KEYS)]
            degree = max(0, min(13, degree + self.rng.choice((-2, -1, 1, 2))))
            octave, step = divmod(degree, 7)
            pitch = 60 + tonic % 12 + 12 * octave + SCALES["major"][step] - (12 if tonic > 6 else 0)
            if self.mode == "looper" and (bar // 8) % 2:
                pitch -= 24  # a bass line for 8 bars: the looper hands the melody back to musebot
            at = start + i * spb / 2
            self._note(pitch, at, 0.45 * spb)
            i += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        ports.close_client(self._out)


def _jack_client(kind, name: str, tries: int = 5):
    """A JACK client of rtmidi's ``kind``; a busy machine sometimes refuses the first attempt ("JACK server
    not running?" while it runs), so it is tried again a few times."""
    import rtmidi

    for _ in range(tries - 1):
        try:
            return kind(rtmidi.API_UNIX_JACK, name=name)
        except rtmidi.SystemError:
            time.sleep(1.0)
    return kind(rtmidi.API_UNIX_JACK, name=name)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _status(port: int) -> dict | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=5) as reply:
            return json.loads(reply.read())
    except (OSError, ValueError):
        return None


def _daemon_command(args: argparse.Namespace, port: int) -> list[str]:
    command = [sys.executable, "-m", "musebot", "serve", "--mode", args.mode, "--api", "jack",
               "--port", str(port), "--bpm", str(args.bpm), "--seed", str(args.seed)]
    if args.model:
        command += ["--model", args.model]
    return command


def run_soak(args: argparse.Namespace) -> dict:
    """The whole soak (module docstring); returns the figures."""
    if args.mode not in MODES:
        raise ValueError(f"--mode must be one of {', '.join(MODES)}")
    if not 0.1 <= args.minutes <= 24 * 60:
        raise ValueError("--minutes must be 0.1..1440")
    # Synchronous: the soak counts answers, and an asynchronous dummy JACK on a shared VM drops the MIDI of
    # cycles its clients miss (a lost note-off held a key, so calls went unanswered for the held-key timeout).
    with ports.benchmark_jack(None, f"musebot-soak-{args.mode}") as server:
        return _soak(args, server)


def _soak(args: argparse.Namespace, server: str) -> dict:
    rtmidi = ports.rtmidi_module()
    api_port = _free_port()
    log_path = Path(args.daemon_log) if args.daemon_log else None
    log_file = open(log_path, "w") if log_path else subprocess.DEVNULL  # noqa: SIM115 - closed below
    daemon = subprocess.Popen(_daemon_command(args, api_port), stdout=log_file, stderr=subprocess.STDOUT,
                              env=dict(os.environ))
    ear = musician = None
    minutes: list[dict] = []
    try:
        ear = Ear(rtmidi, OUT_PORT)
        musician = Musician(rtmidi, args.mode, args.bpm, args.phrase_s, args.seed)
        # The input port opens before the model loads; notes played before the daemon serves would wait in
        # its queue past its backlog limit and be dropped (the first phrase was, at each run). So the
        # musician starts once the status answers.
        ready_by = now() + 60
        while _status(api_port) is None and daemon.poll() is None and now() < ready_by:
            time.sleep(0.1)
        started_rss = rss_mb(daemon.pid)
        start = now()
        musician.start()
        end = start + args.minutes * 60
        k = 1
        while True:
            at = min(start + 60 * k, end)
            while now() < at and daemon.poll() is None:
                time.sleep(min(1.0, max(0.0, at - now())))
            if daemon.poll() is not None:
                break
            minutes.append(_minute(daemon.pid, api_port, ear, start, at, (at - start) / 60))
            print(f"soak {args.mode}: minute {minutes[-1]['minute']:.1f} rss {minutes[-1]['rss_mb']} MB",
                  file=sys.stderr, flush=True)
            if at >= end:
                break
            k += 1
        musician.stop()
        musician_done = musician
        musician = None
        time.sleep(max(2.0, 4 * 60 / args.bpm))  # the last answer or bar plays out
        crashed = daemon.poll()
        daemon.send_signal(signal.SIGTERM)
        try:
            exit_code = daemon.wait(30)
        except subprocess.TimeoutExpired:
            daemon.kill()
            exit_code = "killed after 30 s"
        time.sleep(0.5)  # the last note-offs reach the ear
        heard = ear.snapshot()
        return _figures(args, server, started_rss, minutes, musician_done, heard, crashed, exit_code)
    finally:
        if musician is not None:
            musician.stop()
        if ear is not None:
            ear.close()
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait(10)
        if log_path:
            log_file.close()


def _minute(pid: int, api_port: int, ear: Ear, start: float, at: float, minute: float) -> dict:
    status = _status(api_port) or {}
    telemetry = status.get("telemetry", {})
    heard = ear.snapshot()
    ons = sum(1 for t, m in heard if m[0] & 0xF0 == 0x90 and m[2] > 0 and at - 60 <= t < at)
    generation = telemetry.get("generation") or {}
    return {
        "minute": round(minute, 2), "rss_mb": round(rss_mb(pid) or 0.0, 1), "note_ons_last_60s": ons,
        "state": status.get("state"), "sent": telemetry.get("sent"), "late": telemetry.get("late"),
        "dropped_late": telemetry.get("dropped_late"),
        "scheduling_error_ms": telemetry.get("scheduling_error_ms"),
        "headroom": generation.get("headroom"),
    }


def _percentiles(values: list[float]) -> dict:
    if not values:
        return {"n": 0, "p50": None, "p99": None}
    p50, p99 = np.percentile(np.asarray(values), [50, 99])
    return {"n": len(values), "p50": round(float(p50), 2), "p99": round(float(p99), 2)}


def _figures(args, server, started_rss, minutes, musician, heard, crashed, exit_code) -> dict:
    ons = [(t, m) for t, m in heard if m[0] & 0xF0 == 0x90 and m[2] > 0]
    rss = [m["rss_mb"] for m in minutes]
    # Minute 5, or in a shorter run the first reading (so that a 3-minute run still measures 2 minutes).
    base_index = min(BASELINE_MINUTE - 1, max(0, len(rss) - 2)) if len(rss) > 1 else 0
    growth = (round(100.0 * (rss[-1] - rss[base_index]) / rss[base_index], 2)
              if len(rss) > 1 and rss[base_index] else None)
    last = minutes[-1] if minutes else {}
    figures = {
        "mode": args.mode, "minutes": args.minutes, "bpm": args.bpm, "model": args.model or "shipped",
        "jack": {"server": server, "driver": "dummy", "rate": 48000, "period": 64},
        "machine": {"cpus": os.cpu_count(), "load_average_1min": round(os.getloadavg()[0], 2)},
        "daemon": {"crashed_during_run": crashed is not None, "exit_code": exit_code},
        "rss_mb": {"start": round(started_rss or 0.0, 1), "per_minute": rss,
                   "baseline_minute": base_index + 1 if rss else None, "growth_pct": growth},
        "growth_pct": growth,
        "musician_notes": musician.notes,
        "note_ons_heard": len(ons),
        "lateness_ms": {
            "scheduler_sent_minus_due": last.get("scheduling_error_ms"),
            "late": last.get("late"), "dropped_late": last.get("dropped_late"), "sent": last.get("sent"),
        },
        "headroom": last.get("headroom"),
        "hanging_notes": [list(key) for key in hanging_notes(heard)],
        "per_minute": minutes,
    }
    if args.mode == "call":
        figures["answers"] = _answers(musician.phrases, ons)
    return figures


def _answers(phrases: list[tuple[float, float]], ons: list) -> dict:
    """Per call: note-ons heard between its last release and the next call, and when the first came (with each
    call's own figures: which call went unanswered, and whether its answer had run into the next call)."""
    counts, latency, per_call = [], [], []
    origin = phrases[0][0] if phrases else 0.0
    for i, (first, last) in enumerate(phrases):
        until = phrases[i + 1][0] if i + 1 < len(phrases) else float("inf")
        times = [t for t, _ in ons if last <= t < until]
        counts.append(len(times))
        if times:
            latency.append((times[0] - last) * 1e3)
        per_call.append({"at_s": round(first - origin, 3), "length_s": round(last - first, 3), "notes": len(times),
                         "first_note_ms": round((times[0] - last) * 1e3, 1) if times else None,
                         "notes_during_call": sum(1 for t, _ in ons if first <= t < last)})
    return {
        "phrases": len(phrases), "answered": sum(c > 0 for c in counts),
        "notes_per_answer": _percentiles([float(c) for c in counts]),
        "first_note_after_call_ms": _percentiles(latency),
        "per_call": per_call,
    }
