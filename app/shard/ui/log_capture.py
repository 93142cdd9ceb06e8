"""The app's own log records, kept in a ring for the Logs page (the children keep theirs in their
supervisor's ring)."""

from __future__ import annotations

import collections
import logging

from shard.logs import FORMAT


class RingHandler(logging.Handler):
    def __init__(self, capacity: int = 5000) -> None:
        super().__init__()
        self.records: collections.deque[tuple[int, str]] = collections.deque(maxlen=capacity)
        self.serial = 0  # grows with every record: the page re-renders only when it changed
        self.setFormatter(logging.Formatter(FORMAT, datefmt="%H:%M:%S"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.records.append((record.levelno, self.format(record)))
            self.serial += 1
        except Exception:
            self.handleError(record)
