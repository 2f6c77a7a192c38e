"""The one clock of the real-time path.

Every timestamp (input callback, scheduler deadline, lateness) is read from :func:`now`, a monotonic
clock with sub-microsecond resolution (``time.perf_counter``, CLOCK_MONOTONIC on Linux), so times taken in
different threads can be compared and subtracted.
"""

from __future__ import annotations

import time

now = time.perf_counter


def sleep_until(deadline: float, spin_s: float = 0.001) -> float:
    """Sleep until ``deadline`` (seconds on :func:`now`), spinning for the last ``spin_s``.

    ``time.sleep`` oversleeps by up to a scheduler tick, so it is used only up to ``spin_s`` before the
    deadline and the rest is a busy wait. Returns the time at wake-up.
    """
    remaining = deadline - now()
    if remaining > spin_s:
        time.sleep(remaining - spin_s)
    t = now()
    while t < deadline:
        t = now()
    return t
