"""A model thread's inbox: commands in order, with a bounded backlog of the musician's messages.

The listener only enqueues; the model thread takes. A flood of input (a MIDI loop, a stuck controller)
must not become minutes of prefill behind it nor grow memory: the musician's messages are *sheddable*,
and when more than ``limit`` of them wait, the oldest are dropped (the newest notes win) and counted in
``dropped``. Commands (an answer, a stop, a setting, quit) are never dropped and keep their order.

Shedding is amortised: the backlog may reach ``2 * limit`` before it is cut back to ``limit``, so a
flood costs O(1) per message rather than a scan per message.
"""

from __future__ import annotations

import queue
import threading
from collections import deque

DEFAULT_LIMIT = 256  # musician messages waiting: seconds of dense playing, a fraction of a second of prefill


class Inbox:
    """FIFO of commands for one consumer thread; ``put(item, sheddable=True)`` marks a droppable one."""

    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        self.limit = max(1, limit)
        self.dropped = 0
        self._items: deque[tuple[bool, object]] = deque()
        self._sheddable = 0
        self._cond = threading.Condition()

    def put(self, item: object, sheddable: bool = False) -> None:
        with self._cond:
            self._items.append((sheddable, item))
            if sheddable:
                self._sheddable += 1
                if self._sheddable > 2 * self.limit:
                    self._shed()
            self._cond.notify()

    def _shed(self) -> None:
        """Drop the oldest sheddable items until ``limit`` are left (lock held)."""
        excess = self._sheddable - self.limit
        kept: deque[tuple[bool, object]] = deque()
        for sheddable, item in self._items:
            if sheddable and excess > 0:
                excess -= 1
                continue
            kept.append((sheddable, item))
        self.dropped += self._sheddable - self.limit
        self._sheddable = self.limit
        self._items = kept

    def get(self, timeout: float | None = None) -> object:
        """The oldest item; waits up to ``timeout`` seconds (None: for ever), else raises ``queue.Empty``."""
        with self._cond:
            if not self._items and not self._cond.wait_for(lambda: self._items, timeout):
                raise queue.Empty
            sheddable, item = self._items.popleft()
            self._sheddable -= sheddable
            return item

    def get_nowait(self) -> object:
        return self.get(timeout=0)

    def wait(self, timeout: float) -> bool:
        """Wait until something is waiting (without taking it); False after ``timeout`` seconds."""
        with self._cond:
            return bool(self._cond.wait_for(lambda: self._items, timeout))

    def __len__(self) -> int:
        return len(self._items)
