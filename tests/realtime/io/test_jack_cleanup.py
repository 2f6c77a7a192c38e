"""A JACK server of the tests leaves nothing behind, even killed with SIGKILL or under a failing test.

JACK2 keeps a registry of servers in shared memory with eight slots; a server killed without its own
cleanup keeps its slot (and a 100 MB segment) until a server of the *same name* starts again. The tests
name every server uniquely, so without this cleanup a developer machine ends in "Too many servers
already active" after eight crashes.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from musebot.realtime.io.system import SHM_DIR, registered_jack_servers
from tests._jack import JackServer, jack_server, requires_jackd

pytestmark = requires_jackd


def leftovers(name: str, pid: int) -> dict:
    uid = os.getuid()
    return {
        "registry": [entry for entry in registered_jack_servers() if entry[1] == f"jack-{uid}:{name}:"],
        "files": sorted(p.name for p in [*SHM_DIR.glob(f"jack_{name}_{uid}_*"),
                                          *SHM_DIR.glob(f"jack_sem.{uid}_{name}_*")]),
        "pid_alive": Path(f"/proc/{pid}").exists(),
    }


def test_a_server_killed_with_sigkill_is_removed_from_the_registry_by_the_fixture():
    server = JackServer(f"musebot-test-{os.getpid()}-sigkill")
    server.start()
    pid = server.process.pid
    assert leftovers(server.name, pid)["registry"] == [(pid, f"jack-{os.getuid()}:{server.name}:")]
    os.kill(pid, signal.SIGKILL)  # a crash: JACK's own cleanup never runs
    server.process.wait(5)
    stale = leftovers(server.name, pid)
    assert stale["registry"] and stale["files"]  # what a crash leaves (the bug this cleanup is for)
    server.kill()  # the fixture's cleanup
    assert leftovers(server.name, pid) == {"registry": [], "files": [], "pid_alive": False}


def test_a_failing_test_inside_jack_server_leaves_no_server_and_no_entry():
    with pytest.raises(RuntimeError, match="the test failed"), jack_server("-failing") as server:
        pid = server.process.pid
        os.kill(pid, signal.SIGKILL)
        raise RuntimeError("the test failed")
    assert leftovers(server.name, pid) == {"registry": [], "files": [], "pid_alive": False}


def test_a_normal_stop_leaves_nothing_either():
    with jack_server("-normal") as server:
        pid = server.process.pid
    assert leftovers(server.name, pid) == {"registry": [], "files": [], "pid_alive": False}


def test_another_servers_entry_is_left_alone():
    with jack_server("-other") as other:
        mine = JackServer(f"musebot-test-{os.getpid()}-mine")
        mine.start()
        os.kill(mine.process.pid, signal.SIGKILL)
        mine.process.wait(5)
        mine.kill()
        assert leftovers(other.name, other.process.pid)["registry"]  # the live one keeps its slot


def test_starting_a_server_forgets_the_entries_of_musebot_servers_killed_earlier():
    # A killed test run or benchmark (SIGKILL to pytest: no fixture cleanup) leaves its servers' slots;
    # eight of them and no server starts. The next start clears those of dead musebot servers only.
    dead = JackServer(f"musebot-test-{os.getpid()}-dead")
    dead.start()
    pid = dead.process.pid
    os.kill(pid, signal.SIGKILL)
    dead.process.wait(5)
    assert leftovers(dead.name, pid)["registry"]
    with jack_server("-next") as server:
        assert leftovers(dead.name, pid) == {"registry": [], "files": [], "pid_alive": False}
        assert leftovers(server.name, server.process.pid)["registry"]
