"""The machine's own freezes, measured beside a test of live timing.

On the shared virtual machines these tests run on, a virtual CPU kept busy is now and then taken away by the
host for 50-100 ms (CPU steal): every thread on it stops, whatever its priority. Measured with a SCHED_FIFO
thread that sleeps 1 ms at a time (a cyclictest, 2026-12-04): idle, the longest wake-up was 2.2 ms
late; beside two busy processes, 24 wake-ups in 60 s were more than 50 ms late (the longest 101 ms). No
program inside the machine can be punctual across such a freeze, musebot included.

A test of musebot's timing therefore runs a :class:`Freezes` witness: one process per CPU, pinned to it and
at real-time priority where the system allows, that records every wake-up more than ``threshold_s`` late as a
window ``(start, end)`` on musebot's clock (``time.perf_counter``, CLOCK_MONOTONIC). The test then holds
musebot to its bounds everywhere a freeze did not touch, and says what it left out; a fault of musebot's own
shows outside the windows, where the bounds stay as tight as before.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading

from musebot.realtime.clock import now

WATCHER = """
import os, sys, time
cpu, threshold, parent = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
try:
    os.sched_setaffinity(0, {cpu})
    os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(30))
except OSError:
    pass  # no right to real-time priority: a normal process sees the freezes too, and some delays of its own
print("ready", flush=True)
last = time.perf_counter()
while os.getppid() == parent:  # a test process killed without its teardown must not leave a watcher behind
    for _ in range(1000):
        time.sleep(0.001)
        t = time.perf_counter()
        if t - last > threshold:
            print(f"{last!r} {t!r}", flush=True)
        last = t
"""


class Freezes:
    """Windows in which some CPU of the machine stopped for more than ``threshold_s`` (module docstring)."""

    def __init__(self, threshold_s: float = 0.010) -> None:
        self.threshold_s = threshold_s
        self.windows: list[tuple[float, float]] = []
        self._lock = threading.Lock()
        cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [0]
        self._watchers = [subprocess.Popen([sys.executable, "-c", WATCHER, str(cpu), str(1e-3 + threshold_s),
                                            str(os.getpid())], stdout=subprocess.PIPE, text=True) for cpu in cpus]
        for watcher in self._watchers:
            assert watcher.stdout.readline().strip() == "ready"
            threading.Thread(target=self._read, args=(watcher,), daemon=True).start()
        self.began = now()

    def _read(self, watcher: subprocess.Popen) -> None:
        for line in watcher.stdout:
            start, end = (float(x) for x in line.split())
            with self._lock:
                self.windows.append((start, end))

    def touched(self, t0: float, t1: float | None = None, before_s: float = 0.0, after_s: float = 0.005) -> bool:
        """Whether a freeze overlapped ``[t0 - before_s, t1 + after_s]`` (``t1`` defaults to ``t0``)."""
        t1 = t0 if t1 is None else t1
        with self._lock:
            return any(start <= t1 + after_s and end >= t0 - before_s for start, end in self.windows)

    def between(self, t0: float, t1: float) -> list[tuple[float, float]]:
        """The freezes that overlapped ``[t0, t1]``."""
        with self._lock:
            return [(s, e) for s, e in self.windows if s <= t1 and e >= t0]

    def stolen(self, t0: float, t1: float) -> float:
        """Seconds of ``[t0, t1]`` inside some freeze (the union of the windows, clipped): time the machine
        took from every program, which a bound on musebot's own time leaves out."""
        total, reach = 0.0, t0
        for start, end in sorted(self.between(t0, t1)):
            start, end = max(start, reach), min(end, t1)
            if end > start:
                total += end - start
                reach = end
        return total

    def summary(self) -> str:
        with self._lock:
            longest = max((e - s for s, e in self.windows), default=0.0)
            return f"{len(self.windows)} machine freeze(s) over {self.threshold_s * 1e3:.0f} ms, longest " \
                   f"{longest * 1e3:.0f} ms, in {now() - self.began:.1f} s"

    def close(self) -> None:
        for watcher in self._watchers:
            watcher.kill()
            watcher.wait()
            watcher.stdout.close()
