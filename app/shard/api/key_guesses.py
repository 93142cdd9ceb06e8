"""Wrong API keys are throttled per address: after MAX_WRONG wrong keys within WINDOW_S, the
address gets 429 for every request that needs a key (the right key included: a guesser must not
learn from a 200 that it hit) until the window has moved past them. Missing keys are not guesses.

This is separate from the per-client rate limit (api/middlewares.py): that one counts requests
per presented key, so a guesser, who presents a new key each time, would never reach it.
"""

from __future__ import annotations

import collections
import time

MAX_WRONG = 50
WINDOW_S = 60.0
MAX_ADDRESSES = 4096


class KeyGuesses:
    def __init__(self, max_wrong: int = MAX_WRONG, window_s: float = WINDOW_S) -> None:
        self.max_wrong = max_wrong
        self.window_s = window_s
        self._wrong: collections.OrderedDict[str, collections.deque[float]] = collections.OrderedDict()

    def _recent(self, address: str, now: float) -> collections.deque[float]:
        times = self._wrong.pop(address, None) or collections.deque()
        while times and now - times[0] >= self.window_s:
            times.popleft()
        if times:
            self._wrong[address] = times  # most recent last; the oldest addresses go first
            while len(self._wrong) > MAX_ADDRESSES:
                self._wrong.popitem(last=False)
        return times

    def retry_after(self, address: str, now: float | None = None) -> float:
        """0 if `address` may try a key now, else the seconds until it may."""
        now = time.monotonic() if now is None else now
        times = self._recent(address, now)
        if len(times) < self.max_wrong:
            return 0.0
        return self.window_s - (now - times[-self.max_wrong])

    def wrong(self, address: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        times = self._recent(address, now)
        times.append(now)
        self._wrong[address] = times
