"""The daemon keeps the garbage collector's full walks off what was alive at its start (``realtime/heap.py``)."""

from __future__ import annotations

import gc
import weakref

from musebot.realtime import heap
from musebot.realtime.config import ServeConfig
from musebot.realtime.daemon import Daemon, ServeOptions


class Node:
    def __init__(self) -> None:
        self.other = self  # a reference cycle: only the cyclic collector frees it


def test_while_frozen_the_oldest_generation_holds_only_what_was_made_since():
    alive = [[i] for i in range(100_000)]  # a loaded model's worth of container objects
    gc.collect()
    assert len(gc.get_objects(generation=2)) > len(alive)
    heap.freeze()
    try:
        assert heap.frozen() > len(alive)
        made_since = [[i] for i in range(1_000)]
        gc.collect()
        # A full collection now walks what was made since the freeze (and what the interpreter made
        # meanwhile), not the 100,000 lists from before it.
        assert len(made_since) <= len(gc.get_objects(generation=2)) < len(alive) // 10
    finally:
        heap.release()
    assert heap.frozen() == 0
    gc.collect()
    assert len(gc.get_objects(generation=2)) > len(alive)


def test_a_cycle_dropped_while_frozen_is_freed_after_the_last_release():
    node = Node()
    ref = weakref.ref(node)
    heap.freeze()
    heap.freeze()  # a second daemon in the same process
    try:
        del node
        gc.collect()
        assert ref() is not None  # frozen: the collector does not look at it
        heap.release()
        assert heap.frozen() > 0  # the other daemon still runs
        gc.collect()
        assert ref() is not None
    finally:
        heap.release()
    gc.collect()
    assert ref() is None
    heap.release()  # one release too many is harmless
    assert heap.frozen() == 0


def test_a_daemon_freezes_the_heap_while_it_serves_and_releases_it_when_it_stops(tmp_path):
    options = ServeOptions(answer="echo", outputs=["fluidsynth"], fluidsynth_driver="file",
                           fluidsynth_file=str(tmp_path / "out.wav"), input="none")
    daemon = Daemon(ServeConfig(seed=1), options)
    assert heap.frozen() == 0
    daemon.start()
    try:
        assert heap.frozen() > 10_000  # the modules, the synth, the session
    finally:
        daemon.close()
    assert heap.frozen() == 0
    daemon.close()  # safe twice: nothing released twice
    assert heap.frozen() == 0
