"""The C heap (glibc's malloc) of a daemon that runs for a whole gig, kept from creeping.

ONNX Runtime, numpy, libjack and the interpreter's larger objects all come from the C library's ``malloc``, on
several threads (model, scheduler, listener, poller, web server). glibc gives a thread that meets another in
``malloc`` an arena of its own (up to eight per core), and an arena gives memory back to the system only from
its top: pages freed in its middle stay counted in the process's RSS. After everything that grew with use was
bounded, this was the growth left in the 60-minute soak (``musebot bench-soak``): 0.1-0.2 MB a minute, in the
arenas of worker threads (``/proc/PID/smaps``), enough to take accompaniment and looper past +5 % in an hour.

So a daemon, when it starts, caps the arenas at :data:`ARENAS` (``mallopt(M_ARENA_MAX)``; arenas made before
stay), and its health thread calls :class:`Trimmer`'s ``tick`` which, every :data:`TRIM_PERIOD_S`, runs
``malloc_trim(0)``: that returns the free pages in the middle of every arena too (glibc 2.8 and later), not
only the top of the main one. ctypes releases the interpreter lock around the call, so the scheduler thread
runs on; it waits only if it needs ``malloc`` from the arena being trimmed at that moment. ``Trimmer`` counts
the trims and keeps the longest one (the status reports both).

With another C library (musl, macOS) neither function is there and both steps do nothing.
"""

from __future__ import annotations

import ctypes
import logging
import threading
import time

log = logging.getLogger(__name__)

ARENAS = 2  # the model's thread and the rest: threads still rarely wait for one another in malloc
M_ARENA_MAX = -8  # glibc's <malloc.h>
TRIM_PERIOD_S = 10.0

_lock = threading.Lock()
_libc: ctypes.CDLL | None = None
_looked_up = False


def _glibc() -> ctypes.CDLL | None:
    """The process's C library when it has glibc's ``mallopt`` and ``malloc_trim``, else None."""
    global _libc, _looked_up
    with _lock:
        if not _looked_up:
            _looked_up = True
            try:
                libc = ctypes.CDLL(None)
                libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
                libc.mallopt.restype = ctypes.c_int
                libc.malloc_trim.argtypes = [ctypes.c_size_t]
                libc.malloc_trim.restype = ctypes.c_int
                _libc = libc
            except (OSError, AttributeError):
                _libc = None
        return _libc


def available() -> bool:
    """Whether this process's C library is glibc (the two steps do something)."""
    return _glibc() is not None


def cap_arenas(arenas: int = ARENAS) -> bool:
    """Let glibc make at most ``arenas`` malloc arenas from now on; True when it accepted."""
    libc = _glibc()
    if libc is None:
        return False
    return bool(libc.mallopt(M_ARENA_MAX, int(arenas)))


def trim() -> bool:
    """Give the free pages of every arena back to the system now; True when some memory was returned."""
    libc = _glibc()
    return bool(libc.malloc_trim(0)) if libc is not None else False


class Trimmer:
    """Runs :func:`trim` at most once every ``period_s``, from whichever thread calls :meth:`tick`."""

    def __init__(self, period_s: float = TRIM_PERIOD_S, clock=time.monotonic) -> None:
        if not period_s > 0:
            raise ValueError("period_s must be positive")
        self.period_s = period_s
        self._clock = clock
        self._next = clock() + period_s
        self.trims = 0
        self.longest_ms = 0.0

    def tick(self) -> bool:
        """Trim when the period has passed; True when it trimmed."""
        t = self._clock()
        if t < self._next or not available():
            return False
        started = time.perf_counter()
        trim()
        took_ms = (time.perf_counter() - started) * 1000.0
        self.trims += 1
        self.longest_ms = max(self.longest_ms, took_ms)
        self._next = self._clock() + self.period_s
        return True

    def figures(self) -> dict:
        """What the status reports: how many trims, and the longest in milliseconds."""
        return {"heap_trims": self.trims, "heap_trim_longest_ms": round(self.longest_ms, 2)}
