"""Counters the dashboard shows for this session and for the node's whole life: requests served for
apps on this machine and for peers. Session counts start at zero at each start; lifetime counts add
what earlier sessions saved in `<data dir>/counters.json` (written atomically, at stop and now and then)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

log = logging.getLogger("shard.node")

FILE = "counters.json"
NAMES = ("requests_local", "requests_for_peers")


class Counters:
    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / FILE
        self.session: dict[str, int] = dict.fromkeys(NAMES, 0)
        self.base: dict[str, int] = dict.fromkeys(NAMES, 0)

    def start(self) -> None:
        """A new session: zero the session counts, read the lifetime ones."""
        self.session = dict.fromkeys(NAMES, 0)
        self.base = dict.fromkeys(NAMES, 0)
        try:
            saved = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.warning("cannot read %s (%s); lifetime counters start again from zero", self.path, exc)
            return
        if isinstance(saved, dict):
            for name in NAMES:
                value = saved.get(name)
                if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                    self.base[name] = value

    def add(self, name: str, n: int = 1) -> None:
        self.session[name] = self.session.get(name, 0) + n

    def lifetime(self) -> dict[str, int]:
        return {name: self.base.get(name, 0) + self.session.get(name, 0) for name in NAMES}

    def save(self) -> None:
        tmp = self.path.with_name(FILE + ".tmp")
        try:
            tmp.write_text(json.dumps(self.lifetime()), encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError as exc:
            log.warning("cannot save the counters to %s: %s", self.path, exc)
