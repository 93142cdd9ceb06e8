"""The priority scheduler: at most `concurrency` requests generate at once; the rest wait in a
bounded queue, served by class (the machine's owner first, then peers by credit, consumers last),
with aging so that nobody starves. A full queue refuses at once with a Retry-After estimate.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import AsyncIterator


class Priority(enum.IntEnum):
    OWNER = 0
    PEER = 1
    CONSUMER = 2


class QueueFull(Exception):
    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"the node is busy: the request queue is full; retry in about {retry_after_s}s")
        self.retry_after_s = retry_after_s


@dataclass
class _Waiter:
    priority: Priority
    credit: float
    seq: int
    tag: object = None
    since: float = field(default_factory=time.monotonic)
    future: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class Scheduler:
    def __init__(self, concurrency: int, max_waiting: int, aging_s: float = 30.0) -> None:
        self.concurrency = concurrency
        self.max_waiting = max_waiting
        self.aging_s = aging_s  # waiting this long lifts a request by one class
        self.in_flight = 0
        self._waiting: list[_Waiter] = []
        self._seq = itertools.count()
        self._avg_duration_s = 5.0

    @property
    def depth(self) -> int:
        return len(self._waiting)

    def _key(self, w: _Waiter, now: float) -> tuple[float, float, int]:
        return (w.priority - (now - w.since) / self.aging_s, -w.credit, w.seq)

    def _wake_next(self) -> None:
        while self._waiting and self.in_flight < self.concurrency:
            now = time.monotonic()
            best = min(self._waiting, key=lambda w: self._key(w, now))
            self._waiting.remove(best)
            if not best.future.done():
                self.in_flight += 1
                best.future.set_result(None)

    def position(self, tag: object) -> int:
        """1-based place in the queue of the request admitted with `tag` (0: not waiting)."""
        now = time.monotonic()
        order = sorted(self._waiting, key=lambda w: self._key(w, now))
        return next((i + 1 for i, w in enumerate(order) if w.tag is tag), 0)

    def retry_after(self) -> int:
        return max(1, round(self._avg_duration_s * (1 + len(self._waiting)) / self.concurrency))

    @asynccontextmanager
    async def admit(self, priority: Priority = Priority.OWNER, credit: float = 0.0, tag: object = None) -> AsyncIterator[None]:
        if self.in_flight < self.concurrency and not self._waiting:
            self.in_flight += 1
        else:
            if len(self._waiting) >= self.max_waiting:
                raise QueueFull(self.retry_after())
            waiter = _Waiter(priority, credit, next(self._seq), tag)
            self._waiting.append(waiter)
            try:
                await waiter.future
            except asyncio.CancelledError:
                if waiter in self._waiting:
                    self._waiting.remove(waiter)
                elif waiter.future.done() and not waiter.future.cancelled():
                    self.in_flight -= 1  # admitted and cancelled in the same instant
                    self._wake_next()
                raise
        started = time.monotonic()
        try:
            yield
        finally:
            self.in_flight -= 1
            self._avg_duration_s = 0.8 * self._avg_duration_s + 0.2 * (time.monotonic() - started)
            self._wake_next()
