"""Logging: readable lines on the console and in rotating files under the data dir."""

from __future__ import annotations

import logging
import logging.handlers
from pathlib import Path

from shard import paths

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
MAX_BYTES = 5 * 1024 * 1024
BACKUPS = 3


def rotating_file_handler(path: Path) -> logging.Handler:
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.handlers.RotatingFileHandler(path, maxBytes=MAX_BYTES, backupCount=BACKUPS, encoding="utf-8")
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
