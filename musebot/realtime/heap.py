"""Python's cyclic garbage collector, kept from stalling the real-time path.

A full (generation 2) collection walks every container object in the process while it holds the interpreter
lock, so every thread of the daemon, the scheduler's too, waits for it. A process that has loaded a model
and its libraries holds hundreds of thousands of such objects: with 400,000 (a test process, with torch),
full collections took 190-750 ms on this 2-core machine under load, and one of them held the scheduler 1.5 s
and the clock follower long enough to declare a dropout that never happened.

What was alive when the daemon started (modules, the model's session, tables) stays alive until it stops,
so while it runs :func:`gc.freeze` keeps those objects out of every collection: a collection then walks only
what was made since the start, which the daemon keeps bounded. Reference counting frees objects as before;
only cycles made unreachable while frozen wait for :func:`release`, which hands them back to the collector.
Daemons started in one process (the tests) share the freeze; the last to stop ends it.
"""

from __future__ import annotations

import gc
import threading

_lock = threading.Lock()
_holders = 0


def freeze() -> None:
    """Keep every object alive now out of the collector's walks, until the matching :func:`release`."""
    global _holders
    with _lock:
        _holders += 1
        gc.freeze()  # also takes in what was made since an earlier holder froze


def release() -> None:
    """The end of one :func:`freeze`; the last one hands every frozen object back to the collector."""
    global _holders
    with _lock:
        if _holders == 0:
            return
        _holders -= 1
        if _holders == 0:
            gc.unfreeze()


def frozen() -> int:
    """How many objects the collector leaves alone now (``gc.get_freeze_count``)."""
    return gc.get_freeze_count()
