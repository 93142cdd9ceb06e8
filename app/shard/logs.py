"""Logging: readable lines on the console and in rotating files under the data dir."""

from __future__ import annotations

import io
import logging
import logging.handlers
import os
import sys
from pathlib import Path

from shard import paths

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
MAX_BYTES = 5 * 1024 * 1024
BACKUPS = 3


class _FileHandler(logging.handlers.RotatingFileHandler):
    """A log file that a full or read-only disk cannot turn into a traceback per log line: the first
    failed write says so once on stderr, later ones are dropped until a write succeeds again."""

    _failing = False
    _failed_now = False

    def _open(self) -> io.TextIOWrapper:
        """Only the user may read the logs (they name peers, models and prompts' sizes): 0600,
        also for a file left by an older version and for each rotated file."""
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.chmod(self.baseFilename, 0o600)
        return os.fdopen(fd, "a", encoding=self.encoding, errors=self.errors)

    def emit(self, record: logging.LogRecord) -> None:
        self._failed_now = False
        super().emit(record)  # calls handleError when the write fails
        if not self._failed_now:
            self._failing = False  # writing works (again)

    def handleError(self, record: logging.LogRecord) -> None:
        self._failed_now = True
        if not self._failing:
            self._failing = True
            exc = sys.exc_info()[1]
            try:
                sys.stderr.write(
                    f"shard: cannot write the log file {self.baseFilename}: {exc}; its lines are dropped until it "
                    "works again\n"
                )
            except (OSError, ValueError):
                pass


def rotating_file_handler(path: Path) -> logging.Handler:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    handler = _FileHandler(path, maxBytes=MAX_BYTES, backupCount=BACKUPS, encoding="utf-8")
    handler.setFormatter(logging.Formatter(FORMAT))
    return handler


def setup_logging(level: str, data_dir: Path | None, filename: str = "shard.log") -> None:
    root = logging.getLogger()
    root.setLevel(level.upper())
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    console = logging.StreamHandler()
    console.setFormatter(logging.Formatter(FORMAT, datefmt="%H:%M:%S"))
    root.addHandler(console)
    if data_dir is not None:
        try:
            root.addHandler(rotating_file_handler(paths.log_dir(data_dir) / filename))
        except OSError as exc:  # a read-only or full disk must not stop the node
            root.warning("cannot write log files in %s: %s; logging to the console only", data_dir, exc)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
