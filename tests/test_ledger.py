"""The credit ledger: append-only, nothing counted twice, reputation as a moving acceptance rate,
everything back after a SIGKILL, a damaged file set aside instead of stopping the node."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from shard.credit.ledger import Ledger, LedgerError


def test_drafts_credit_the_scout_once_per_ref(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.db")
    assert ledger.record_draft("scoutA", "w1.1:scoutA", proposed=8, accepted=6)
    assert not ledger.record_draft("scoutA", "w1.1:scoutA", proposed=8, accepted=6)  # replayed: ignored
    assert ledger.record_draft("scoutA", "w1.2:scoutA", proposed=4, accepted=0)
    a = ledger.peer("scoutA")
    assert (a.drafts, a.proposed, a.accepted, a.credit) == (2, 12, 6, 6.0)
    assert a.acceptance_rate == pytest.approx(0.5)
    assert a.reputation == pytest.approx(0.9 * 0.75 + 0.1 * 0.0)  # the newest draft moves it by 10%
    ledger.close()


def test_balance_from_earned_and_spent_and_history(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.db")
    ledger.record("earned", "oracle1", "e1", amount=10)
    ledger.record("spent", "oracle2", "s1", amount=3)
    s = ledger.summary()
    assert (s["balance"], s["earned"], s["spent"]) == (7.0, 10.0, 3.0)
    assert [h["balance"] for h in s["history"]] == [10.0, 7.0]
    assert {p["peer_id"] for p in s["peers"]} == {"oracle1", "oracle2"}
    with pytest.raises(ValueError):
        ledger.record("draft", "x", "bad", proposed=1, accepted=2)
    with pytest.raises(ValueError):
        ledger.record("gift", "x", "bad2")
    ledger.close()


def test_the_journal_is_append_only(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.db")
    ledger.record_draft("s", "r1", 2, 1)
    ledger.close()
    db = sqlite3.connect(tmp_path / "ledger.db")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("UPDATE journal SET accepted = 100")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("DELETE FROM journal")
    db.close()


def test_everything_acknowledged_survives_a_sigkill(tmp_path: Path) -> None:
    """A process records entries, says how many, and is killed outright: all of them are there."""
    path = tmp_path / "ledger.db"
    code = f"""
import sys, time
from pathlib import Path
from shard.credit.ledger import Ledger
l = Ledger(Path({str(path)!r}))
for i in range(500):
    l.record_draft("scout", f"w{{i}}", 4, i % 5)
    print(i, flush=True)
time.sleep(60)
"""
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    last = -1
    for line in proc.stdout:
        last = int(line)
        if last == 499:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    ledger = Ledger(path)
    s = ledger.peer("scout")
    assert s.drafts == 500 and s.accepted == sum(i % 5 for i in range(500))
    ledger.close()


def test_a_damaged_ledger_is_set_aside_not_fatal(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    path.write_bytes(b"this is not an sqlite database" * 100)
    ledger = Ledger(path)
    assert ledger.record_draft("s", "r", 1, 1)
    assert list(tmp_path.glob("ledger.db.corrupt-*"))
    ledger.close()


def test_a_ledger_that_refuses_writes_gives_a_clear_error(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.db")
    # What a read-only or full disk does to SQLite, caused here without one (root ignores file
    # modes): the connection refuses every write.
    ledger._db.execute("PRAGMA query_only = ON")
    with pytest.raises(LedgerError, match="cannot write the credit ledger"):
        ledger.record_draft("s", "r", 1, 1)
    assert ledger.peer("s").drafts == 0  # nothing half-counted
    ledger.close()
