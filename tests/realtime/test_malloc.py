"""The daemon gives the C heap's free pages back to the system (``realtime/malloc.py``)."""

from __future__ import annotations

import ctypes
import platform
import threading
import time

import pytest

from musebot.realtime import malloc
from musebot.realtime.config import ServeConfig
from musebot.realtime.daemon import Daemon, ServeOptions

glibc_only = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt and malloc_trim are glibc's")


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


@glibc_only
def test_trim_returns_pages_freed_in_the_middle_of_a_threads_arena():
    """The case the soak met: a worker thread's arena, most of it freed, its top still in use. Without a
    trim those pages stay in RSS; ``malloc.trim`` gives them back."""
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    block, count = 16 * 1024, 6_000  # under the mmap threshold: from an arena; 94 MB in all
    kept: list[int] = []
    measured: dict[str, float] = {}

    def worker() -> None:
        blocks = [libc.malloc(block) for _ in range(count)]
        assert all(blocks)
        for address in blocks:
            ctypes.memset(address, 1, block)  # touched: in RSS
        kept.extend(blocks[49::50])  # every 50th stays allocated, the last one too: nothing free at the top
        for index, address in enumerate(blocks):
            if index % 50 != 49:
                libc.free(address)

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    try:
        measured["before"] = rss_mb()
        assert malloc.trim()
        measured["after"] = rss_mb()
    finally:
        for address in kept:
            libc.free(address)
    assert measured["before"] - measured["after"] > 50, measured


@glibc_only
def test_glibc_takes_the_arena_cap():
    assert malloc.available()
    assert malloc.cap_arenas(malloc.ARENAS)


def test_the_trimmer_trims_once_a_period():
    t = [100.0]
    trimmer = malloc.Trimmer(period_s=10.0, clock=lambda: t[0])
    assert not trimmer.tick()  # not before the first period has passed
    t[0] += 9.9
    assert not trimmer.tick()
    t[0] += 0.2
    assert trimmer.tick() is malloc.available()
    assert not trimmer.tick()  # the next one is a period later
    t[0] += 10.0
    assert trimmer.tick() is malloc.available()
    figures = trimmer.figures()
    assert figures["heap_trims"] == (2 if malloc.available() else 0)
    assert figures["heap_trim_longest_ms"] >= 0.0
    with pytest.raises(ValueError):
        malloc.Trimmer(period_s=0)


@glibc_only
def test_a_serving_daemon_trims_from_its_health_thread(tmp_path):
    options = ServeOptions(answer="echo", outputs=["fluidsynth"], fluidsynth_driver="file",
                           fluidsynth_file=str(tmp_path / "out.wav"), input="none")
    daemon = Daemon(ServeConfig(seed=1), options)
    daemon.trimmer = malloc.Trimmer(period_s=0.05)
    daemon.start()
    try:
        deadline = time.monotonic() + 10
        while daemon.trimmer.trims < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        daemon.close()
    assert daemon.trimmer.trims >= 3
    assert daemon.trimmer.figures()["heap_trim_longest_ms"] > 0
