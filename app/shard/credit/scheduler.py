"""The priority scheduler: at most `concurrency` requests generate at once; the rest wait in a
bounded queue, served by class (the machine's owner first, then peers by credit, consumers last),
with aging so that nobody starves. A full queue refuses at once with a Retry-After estimate.

The machine's owner is never starved by the network: with two or more slots, one is kept for the
owner (remote jobs take at most `concurrency - 1`), and a job admitted with `on_preempt` (a remote
asker's) is preempted, newest first, when the owner would otherwise wait.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from shard.errors import QueueFull

__all__ = ["Priority", "QueueFull", "Scheduler"]


class Priority(enum.IntEnum):
    OWNER = 0
    PEER = 1
    CONSUMER = 2


@dataclass
class _Waiter:
    priority: Priority
    credit: float
    seq: int
    tag: object = None
    on_preempt: Callable[[], None] | None = None
    running: _Running | None = None  # set when it is given a slot
    since: float = field(default_factory=time.monotonic)
    future: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


@dataclass(eq=False)
class _Running:
    priority: Priority
    on_preempt: Callable[[], None] | None
    preempted: bool = False


class Scheduler:
    def __init__(self, concurrency: int, max_waiting: int, aging_s: float = 30.0) -> None:
        self.concurrency = concurrency
        self.max_waiting = max_waiting
        self.aging_s = aging_s  # waiting this long lifts a request by one class
        self.reserved = 1 if concurrency > 1 else 0  # slots only the owner may take
        self.in_flight = 0
        self._running: list[_Running] = []
        self._waiting: list[_Waiter] = []
        self._seq = itertools.count()
        self._avg_duration_s = 5.0

    @property
    def depth(self) -> int:
        return len(self._waiting)

    def _key(self, w: _Waiter, now: float) -> tuple[float, float, int]:
        return (w.priority - (now - w.since) / self.aging_s, -w.credit, w.seq)

    def _may_start(self, priority: Priority) -> bool:
        if self.in_flight >= self.concurrency:
            return False
        others = sum(1 for r in self._running if r.priority != Priority.OWNER)
        return priority == Priority.OWNER or others < self.concurrency - self.reserved

    def can_start_now(self, priority: Priority) -> bool:
        """Whether a job of `priority` would start at once (a free slot it may take, nobody waiting)."""
        return not self._waiting and self._may_start(priority)

    def _wake_next(self) -> None:
        while True:
            now = time.monotonic()
            eligible = [w for w in self._waiting if self._may_start(w.priority)]
            if not eligible:
                return
            best = min(eligible, key=lambda w: self._key(w, now))
            self._waiting.remove(best)
            if not best.future.done():
                best.running = self._start(best.priority, best.on_preempt)
                best.future.set_result(None)

    def _start(self, priority: Priority, on_preempt: Callable[[], None] | None) -> _Running:
        running = _Running(priority, on_preempt)
        self._running.append(running)
        self.in_flight += 1
        return running

    def _finish(self, running: _Running) -> None:
        self._running.remove(running)
        self.in_flight -= 1
        self._wake_next()

    def _preempt_for_owner(self) -> None:
        """The owner waits: stop the newest preemptible job not already stopping."""
        if self._may_start(Priority.OWNER):
            return
        waiting_owners = sum(1 for w in self._waiting if w.priority == Priority.OWNER)
        stopping = sum(1 for r in self._running if r.preempted)
        victims = [r for r in self._running if r.on_preempt is not None and not r.preempted]
        if victims and stopping < waiting_owners:
            victim = victims[-1]
            victim.preempted = True
            assert victim.on_preempt is not None
            victim.on_preempt()

    def position(self, tag: object) -> int:
        """1-based place in the queue of the request admitted with `tag` (0: not waiting)."""
        now = time.monotonic()
        order = sorted(self._waiting, key=lambda w: self._key(w, now))
        return next((i + 1 for i, w in enumerate(order) if w.tag is tag), 0)

    def retry_after(self) -> int:
        return max(1, round(self._avg_duration_s * (1 + len(self._waiting)) / self.concurrency))

    @asynccontextmanager
    async def admit(
        self,
        priority: Priority = Priority.OWNER,
        credit: float = 0.0,
        tag: object = None,
        on_preempt: Callable[[], None] | None = None,
    ) -> AsyncIterator[None]:
        """Hold a slot for the block. `on_preempt` (remote jobs) is called, once, when the owner
        needs this slot: the job should end soon after, which frees it."""
        if self._may_start(priority) and not any(self._may_start(w.priority) for w in self._waiting):
            running = self._start(priority, on_preempt)
        else:
            if len(self._waiting) >= self.max_waiting:
                raise QueueFull(self.retry_after())
            waiter = _Waiter(priority, credit, next(self._seq), tag, on_preempt)
            self._waiting.append(waiter)
            if priority == Priority.OWNER:
                self._preempt_for_owner()
            try:
                await waiter.future
            except asyncio.CancelledError:
                if waiter in self._waiting:
                    self._waiting.remove(waiter)
                elif waiter.running is not None:
                    self._finish(waiter.running)  # admitted and cancelled in the same instant
                raise
            assert waiter.running is not None
            running = waiter.running
        started = time.monotonic()
        try:
            yield
        finally:
            self._avg_duration_s = 0.8 * self._avg_duration_s + 0.2 * (time.monotonic() - started)
            self._finish(running)
