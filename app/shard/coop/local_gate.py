"""No double-dip: scouts on the Oracle's own machine draft only while that is measured to pay.

A scout on this machine runs its model on the same cores (or GPU) as the verifier: its drafts may
be accepted and still cost more decode time than they save. So requests are served either with the
local scouts (they get work and progress) or without them (the verifier's own prompt lookup only),
and the tokens per second of each way is kept (a moving average over requests). The better way is
used; every PROBE_EVERY-th request goes the other way so that both stay measured (what pays
changes with the workload and with what else runs). Remote scouts are never affected: their cores
are their own, and the verifier's policy already checks only the drafts that pay.
"""

from __future__ import annotations

PROBE_EVERY = 8  # requests: one in this many goes the way that measured slower
WEIGHT = 0.3  # how much one request moves a way's average


class LocalGate:
    def __init__(self) -> None:
        self.speed: dict[bool, float | None] = {True: None, False: None}  # with local scouts -> tokens/s
        self.requests = 0

    def use_local(self) -> bool:
        """Whether the next request (one with local scouts connected) may use them."""
        self.requests += 1
        with_, without = self.speed[True], self.speed[False]
        if with_ is None:
            return True  # first, try them
        if without is None:
            return False  # then measure without
        better = with_ > without
        return better != (self.requests % PROBE_EVERY == 0)

    def record(self, used_local: bool, tokens: int, seconds: float) -> None:
        """A finished request's decoding speed (tokens after the first, over the time they took)."""
        if tokens < 2 or seconds <= 0:
            return
        speed = (tokens - 1) / seconds
        old = self.speed[used_local]
        self.speed[used_local] = speed if old is None else old + WEIGHT * (speed - old)

    def snapshot(self) -> dict[str, float | None]:
        return {"with_local_scouts": self.speed[True], "without": self.speed[False]}
