"""Logs that a flood cannot turn into a flood of lines: a filter with a count of what it suppressed.

At most ``lines`` records of one kind (logger and message template) per ``window_s`` pass; the first one let
through after a window with suppressed records says how many were suppressed, and ``suppressed`` counts
them all (the status reports it). The daemon puts one on every ``musebot.realtime`` logger (the real-time
path: a dropped note, a late message, a forgotten key), the network API one on its own loggers.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from musebot.realtime.clock import now


class LogLimiter(logging.Filter):
    """A :class:`logging.Filter` that rate-limits each kind of record (see module docstring)."""

    def __init__(self, lines: int = 10, window_s: float = 10.0, loggers: Iterable[str] = ()) -> None:
        super().__init__()
        self.lines, self.window_s = lines, window_s
        self.loggers = tuple(loggers)
        self.suppressed = 0
        self._kinds: dict[tuple[str, str], list] = {}  # kind -> [window start, passed, suppressed]

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg)[:200])
        t = now()
        state = self._kinds.get(key)
        if state is None:
            if len(self._kinds) > 4096:  # messages with varying text must not grow this without bound
                self._kinds.clear()
            state = self._kinds[key] = [t, 0, 0]
        if t - state[0] >= self.window_s:
            suppressed = state[2]
            state[:] = [t, 0, 0]
            if suppressed:
                record.msg = f"{record.msg} [{suppressed} similar lines suppressed]"
        if state[1] >= self.lines:
            state[2] += 1
            self.suppressed += 1
            return False
        state[1] += 1
        return True

    def install(self) -> None:
        for name in self.loggers:
            logging.getLogger(name).addFilter(self)

    def remove(self) -> None:
        for name in self.loggers:
            logging.getLogger(name).removeFilter(self)


def realtime_loggers() -> list[str]:
    """The loggers of the real-time path made so far (each module makes its own at import)."""
    names = [name for name in logging.root.manager.loggerDict if name.startswith("musebot.realtime")]
    return sorted(names)
