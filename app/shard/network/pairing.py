"""Pairing: how a scout proves it is this user's, not merely on this machine (issue 19, item 5).

The node keeps a random key in `<data dir>/pair.key` (0600). The scouts the user runs get it: a
`shard scout` with the same data dir reads that file, another one is given `--pair KEY`, and the
node's own web page reads it from `/scout/node.json`. A scout's sidecar sends, in its handshake to
each peer, an HMAC of "<scout id>/<that peer's id>" under the key, so the proof cannot be replayed
by another identity or shown to another Oracle. Under the `local` privacy setting only scouts whose
proof checks out receive prompts: a process that dials over loopback and says "scout" gets nothing."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

FILE = "pair.key"


def node_key(data_dir: Path) -> str:
    """The node's pairing key, made on first use (only this OS user can read it)."""
    path = data_dir / FILE
    existing = read_key(data_dir)
    if existing:
        return existing
    key = secrets.token_hex(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    return key


def read_key(data_dir: Path) -> str:
    """The key in `data_dir`, or "" when there is none (a scout never makes one)."""
    try:
        key = (data_dir / FILE).read_text().strip()
    except OSError:
        return ""
    return key if 0 < len(key) <= 256 and all(c in "0123456789abcdefABCDEF" for c in key) else ""


def proof(key: str, scout: str, oracle: str) -> str:
    """What the scout `scout` shows the Oracle `oracle` (the same computation as the sidecar's)."""
    return hmac.new(key.encode(), f"{scout}/{oracle}".encode(), hashlib.sha256).hexdigest()


def proven(key: str, scout: str, oracle: str, shown: object) -> bool:
    return (
        bool(key) and bool(oracle) and isinstance(shown, str) and hmac.compare_digest(proof(key, scout, oracle), shown)
    )
