"""Notices GGUF files appearing in, or leaving, the models folder while the node runs, so a model
pulled in a terminal or copied in with a file manager is served without a restart.

Polling (about once a second: one directory listing) rather than an inotify dependency: it works
the same on every OS and on network folders. A change is reported only once two polls agree, so a
file still being copied (its size still growing) is not handed to llama.cpp half-written.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("shard.models")

Listing = dict[str, tuple[int, int]]  # file name: (size, mtime in ns)


def listing(folder: Path) -> Listing:
    out: Listing = {}
    try:
        for path in folder.glob("*.gguf"):
            try:
                st = path.stat()
            except OSError:  # removed between the listing and the stat
                continue
            if path.is_file():
                out[path.name] = (st.st_size, st.st_mtime_ns)
    except OSError:
        pass
    return out


class ModelFolderWatch:
    def __init__(self, folder: Path, on_change: Callable[[list[Path]], None], interval_s: float = 1.0) -> None:
        self.folder = folder
        self.on_change = on_change
        self.interval_s = interval_s
        self._wake = asyncio.Event()

    def poke(self) -> None:
        """Look again now (a download just finished)."""
        self._wake.set()

    async def run(self) -> None:
        reported = previous = listing(self.folder)
        settling = False
        while True:
            try:  # right after a change, look again soon to see whether it has settled
                await asyncio.wait_for(self._wake.wait(), 0.3 if settling else self.interval_s)
            except TimeoutError:
                pass
            self._wake.clear()
            now = listing(self.folder)
            settling = now != previous
            previous = now
            if settling or now == reported:
                continue
            reported = now
            log.info("models folder changed: %s", ", ".join(sorted(now)) or "no models")
            try:
                self.on_change(sorted(self.folder / name for name in now))
            except Exception:
                log.exception("a models folder listener failed")
