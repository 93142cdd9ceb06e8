"""The credit ledger: an append-only SQLite journal (WAL) in the data dir.

Every verified piece of work is one row, written in its own transaction before it counts, so a
SIGKILL loses nothing that was acknowledged. Each row has a unique `ref` (work id + sender), so the
same work is never counted twice. Per-peer figures (drafts, acceptance, reputation) are derived by
replaying the journal at open and then kept up to date in memory; nothing else is stored.

A peer's `credit` here is what it did for this node minus what this node did for it: it orders
this node's queue when that peer asks for inference. This node's `balance` is what it earned with
others minus what it spent with them.

Kinds of rows:
  draft    a scout's draft verified here: `proposed` tokens offered, `accepted` kept; the scout's
           credit here grows by `accepted`
  earned   this node earned `amount` with a peer (its drafts accepted there, tokens it served to
           the peer): its balance grows, the peer's credit here shrinks
  spent    this node spent `amount` with a peer (tokens the peer served to it): its balance
           shrinks, the peer's credit here grows
`proof` keeps the signed receipt that made an `earned` or `spent` row count (docs/protocol.md).

A table `vouched` keeps the vouchers (other Oracles' receipts shown by an asker, credit/vouchers.py)
this node has counted: each is counted once, and what it was worth is taken from its issuer's
standing here (`standing` = credit - what it vouched for).

An append-only table, `golden`, keeps each scout's scores on golden tickets, so that a
shadow-paused scout stays paused across a restart of the node.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("shard.credit")

KINDS = ("draft", "earned", "spent")
REPUTATION_ALPHA = 0.1  # weight of the newest draft in the moving acceptance rate
HISTORY_POINTS = 200

_SCHEMA = """
CREATE TABLE IF NOT EXISTS journal (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('draft', 'earned', 'spent')),
    peer TEXT NOT NULL,
    proposed INTEGER NOT NULL DEFAULT 0,
    accepted INTEGER NOT NULL DEFAULT 0,
    amount REAL NOT NULL DEFAULT 0,
    ref TEXT NOT NULL UNIQUE,
    proof TEXT NOT NULL DEFAULT ''
);
CREATE TRIGGER IF NOT EXISTS journal_append_only_update BEFORE UPDATE ON journal
BEGIN SELECT RAISE(ABORT, 'the credit journal is append-only'); END;
CREATE TRIGGER IF NOT EXISTS journal_append_only_delete BEFORE DELETE ON journal
BEGIN SELECT RAISE(ABORT, 'the credit journal is append-only'); END;
CREATE TABLE IF NOT EXISTS vouched (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    issuer TEXT NOT NULL,
    ref TEXT NOT NULL,
    asker TEXT NOT NULL,
    amount REAL NOT NULL,
    UNIQUE (issuer, ref)
);
CREATE TABLE IF NOT EXISTS golden (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    peer TEXT NOT NULL,
    proposed INTEGER NOT NULL,
    accepted INTEGER NOT NULL
);
"""


def _private(path: Path) -> None:
    """The journal and its WAL files readable by this user only (they list every peer dealt with
    and the receipts): created 0600 (SQLite gives the -wal and -shm files the database's mode),
    and an older world-readable set tightened."""
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.chmod(str(path) + suffix, 0o600)


class LedgerError(Exception):
    """The ledger cannot be written (full or read-only disk); the text says why."""


@dataclass
class PeerCredit:
    peer_id: str
    drafts: int = 0
    proposed: int = 0
    accepted: int = 0
    reputation: float = 0.0  # moving acceptance rate of its drafts, 0..1
    credit: float = 0.0  # what this peer did for this node minus what this node did for it (its priority here)
    earned: float = 0.0  # what this node earned with this peer
    spent: float = 0.0  # what this node spent with this peer
    last_seen: float = 0.0

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.proposed if self.proposed else 0.0


class Ledger:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()  # sqlite3 connections are not shared across threads safely
        self._peers: dict[str, PeerCredit] = {}
        self._history: list[tuple[float, float]] = []  # (ts, this node's balance)
        self._balance = 0.0
        self._db = self._open(path)
        self._vouched_out: dict[str, float] = dict(
            self._db.execute("SELECT issuer, sum(amount) FROM vouched GROUP BY issuer").fetchall()
        )
        for row in self._db.execute("SELECT ts, kind, peer, proposed, accepted, amount FROM journal ORDER BY id"):
            self._apply(*row)

    @staticmethod
    def _open(path: Path) -> sqlite3.Connection:
        db: sqlite3.Connection | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            _private(path)
            db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across a process crash
            db.executescript(_SCHEMA)
            db.execute("SELECT count(*) FROM journal").fetchone()
            return db
        except (OSError, sqlite3.OperationalError) as exc:
            # Locked by another process, a full or read-only disk: the journal itself may be sound,
            # so it stays where it is (setting it aside would hide its credit) and the node says why.
            if db is not None:
                db.close()
            raise LedgerError(
                f"cannot open the credit ledger {path}: {exc} (is another Shard node using this data dir, "
                "or is the disk full or read-only?)"
            ) from None
        except sqlite3.DatabaseError as exc:
            if db is not None:
                db.close()
            # A damaged file must not stop the node: keep it for inspection, start a new journal.
            aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
            log.error("the credit ledger %s is unreadable (%s); moved it to %s and started a new one", path, exc, aside)
            for suffix in ("", "-wal", "-shm"):
                src = Path(str(path) + suffix)
                if src.exists():
                    src.rename(Path(str(aside) + suffix))
            _private(path)
            db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)
            return db

    def _apply(self, ts: float, kind: str, peer: str, proposed: int, accepted: int, amount: float) -> None:
        p = self._peers.setdefault(peer, PeerCredit(peer))
        p.last_seen = max(p.last_seen, ts)
        if kind == "draft":
            p.drafts += 1
            p.proposed += proposed
            p.accepted += accepted
            p.credit += amount
            rate = accepted / proposed if proposed else 0.0
            p.reputation = rate if p.drafts == 1 else (1 - REPUTATION_ALPHA) * p.reputation + REPUTATION_ALPHA * rate
            return
        if kind == "earned":
            p.earned += amount
            p.credit -= amount
            self._balance += amount
        else:
            p.spent += amount
            p.credit += amount
            self._balance -= amount
        self._history.append((ts, self._balance))
        del self._history[:-HISTORY_POINTS]

    def record(
        self,
        kind: str,
        peer: str,
        ref: str,
        *,
        proposed: int = 0,
        accepted: int = 0,
        amount: float = 0.0,
        proof: str = "",
    ) -> bool:
        """Append one entry; False if an entry with this `ref` exists (it is never counted twice)."""
        if kind not in KINDS:
            raise ValueError(f"unknown ledger kind {kind!r}")
        if min(proposed, accepted, amount) < 0 or accepted > proposed:
            raise ValueError("ledger amounts must be non-negative and accepted <= proposed")
        ts = time.time()
        with self._lock:
            if not self._insert(
                "INSERT OR IGNORE INTO journal (ts, kind, peer, proposed, accepted, amount, ref, proof) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (ts, kind, peer, proposed, accepted, amount, ref, proof),
            ):
                return False
            self._apply(ts, kind, peer, proposed, accepted, amount)
            return True

    def _insert(self, sql: str, args: tuple[Any, ...]) -> int:
        """One INSERT (the caller holds the lock): the number of rows written."""
        try:
            return self._db.execute(sql, args).rowcount
        except sqlite3.OperationalError as exc:  # disk full, read-only, locked
            raise LedgerError(f"cannot write the credit ledger {self.path}: {exc}") from None

    def spend_voucher(self, issuer: str, ref: str, asker: str, amount: float) -> bool:
        """Count `issuer`'s receipt `ref`, shown by `asker`, for `amount`, taken from the issuer's
        standing; False if it was counted before (a voucher is spent once)."""
        with self._lock:
            if not self._insert(
                "INSERT OR IGNORE INTO vouched (ts, issuer, ref, asker, amount) VALUES (?, ?, ?, ?, ?)",
                (time.time(), issuer, ref, asker, amount),
            ):
                return False
            self._vouched_out[issuer] = self._vouched_out.get(issuer, 0.0) + amount
            return True

    def standing(self, peer_id: str) -> float:
        """A peer's place here: its credit, less what it vouched for others."""
        with self._lock:
            p = self._peers.get(peer_id)
            return (p.credit if p else 0.0) - self._vouched_out.get(peer_id, 0.0)

    def record_golden(self, peer: str, proposed: int, accepted: int) -> None:
        """A scout's score on one golden ticket (kept so that a shadow pause survives a restart)."""
        with self._lock:
            self._insert(
                "INSERT INTO golden (ts, peer, proposed, accepted) VALUES (?, ?, ?, ?)",
                (time.time(), peer, proposed, accepted),
            )

    def golden_scores(self) -> dict[str, tuple[int, int, int]]:
        """Per scout: (golden drafts, tokens proposed, tokens accepted), over its whole history."""
        with self._lock:
            rows = self._db.execute(
                "SELECT peer, count(*), sum(proposed), sum(accepted) FROM golden GROUP BY peer"
            ).fetchall()
        return {peer: (n, proposed, accepted) for peer, n, proposed, accepted in rows}

    def proofs(self, kind: str, limit: int, exclude: str = "") -> list[str]:
        """The signed receipts behind the largest `kind` rows (not with peer `exclude`), newest
        first among equals: what this node shows another as proof of its standing elsewhere."""
        with self._lock:
            rows = self._db.execute(
                "SELECT proof FROM journal WHERE kind = ? AND proof != '' AND peer != ? "
                "ORDER BY amount DESC, id DESC LIMIT ?",
                (kind, exclude, limit),
            ).fetchall()
        return [r[0] for r in rows]

    def record_draft(self, peer: str, ref: str, proposed: int, accepted: int) -> bool:
        """A scout's draft, verified: the scout earns one credit per accepted token."""
        return self.record("draft", peer, ref, proposed=proposed, accepted=accepted, amount=float(accepted))

    def peer(self, peer_id: str) -> PeerCredit:
        with self._lock:
            return self._peers.get(peer_id) or PeerCredit(peer_id)

    def summary(self) -> dict[str, Any]:
        """Balance, earned, spent, per-peer figures and a balance history (the Credit page's data)."""
        with self._lock:
            peers = sorted(self._peers.values(), key=lambda p: -p.last_seen)
            earned = sum(p.earned for p in peers)
            spent = sum(p.spent for p in peers)
            return {
                "balance": round(self._balance, 3),
                "earned": round(earned, 3),
                "spent": round(spent, 3),
                "peers": [
                    {**asdict(p), "acceptance_rate": round(p.acceptance_rate, 4), "reputation": round(p.reputation, 4)}
                    for p in peers
                ],
                "history": [{"t": t, "balance": b} for t, b in self._history],
            }

    def close(self) -> None:
        with self._lock:
            self._db.close()
