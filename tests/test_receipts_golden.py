"""Receipts signed by a real sidecar hold only for their issuer and their exact content, and vouch
for an asker at other Oracles only under their rules; golden tickets score drafts against a known
continuation and shadow-pause scouts that fail them, across restarts."""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shard.config import Settings
from shard.coop.golden import MIN_GOLDEN, Finished, GoldenTickets
from shard.credit import receipts, vouchers
from shard.credit.ledger import Ledger
from shard.network.messages import Draft, Work
from shard.network.sidecar import Sidecar, find_daemon


async def _sidecar(tmp: Path, name: str) -> Sidecar:
    settings = Settings(data_dir=str(tmp / name), control_port=0, tcp_port=0, p2p_host="127.0.0.1", mdns=False)
    binary = find_daemon(settings)
    assert binary is not None, "build the sidecar first (bash scripts/setup)"
    sc = Sidecar(settings, binary, lambda e: None, lambda e: None)
    sc.start()
    assert await sc.supervisor.wait_ready(30)
    return sc


@pytest.fixture
async def two_sidecars(tmp_path: Path) -> AsyncIterator[tuple[Sidecar, Sidecar]]:
    a, b = await asyncio.gather(_sidecar(tmp_path, "a"), _sidecar(tmp_path, "b"))
    yield a, b
    await asyncio.gather(a.stop(), b.stop())


async def test_a_receipt_holds_only_for_its_issuer_and_content(two_sidecars: tuple[Sidecar, Sidecar]) -> None:
    oracle, scout = two_sidecars
    oracle_id, scout_id = oracle.info["peer_id"], scout.info["peer_id"]
    signed = await receipts.issue(oracle, "draft", scout_id, "w1.3", 7)
    # The scout checks it through its own sidecar: valid, and the amount is what was signed.
    r = await receipts.check(scout, signed, kind="draft", issuer=oracle_id, subject=scout_id, ref="w1.3")
    assert r is not None and r.amount == 7.0
    # Claimed as another node's receipt (a forged issuer): refused.
    assert await receipts.check(scout, signed, kind="draft", issuer=scout_id, subject=scout_id, ref="w1.3") is None
    # Inflated amount: the signature no longer matches.
    inflated = copy.deepcopy(signed)
    inflated["receipt"]["amount"] = 700.0
    assert await receipts.check(scout, inflated, kind="draft", issuer=oracle_id, subject=scout_id, ref="w1.3") is None
    # Someone else's receipt (another subject, another work): refused.
    assert (
        await receipts.check(scout, signed, kind="draft", issuer=oracle_id, subject="12D3KooWsomeoneelse", ref="w1.3")
        is None
    )
    assert await receipts.check(scout, signed, kind="draft", issuer=oracle_id, subject=scout_id, ref="w1.4") is None
    assert (
        await receipts.check(scout, {"junk": 1}, kind="draft", issuer=oracle_id, subject=scout_id, ref="w1.3") is None
    )


def _finished() -> Finished:
    events = [([10 + i], f" t{i}") for i in range(20)]
    return Finished(model="m", vocab="v", context="ctx", prompt=[1, 2, 3], events=events)


def test_golden_tickets_look_like_work_and_score_drafts() -> None:
    golden = GoldenTickets(rate=1.0, rng=random.Random(3))
    assert golden.maybe_ticket(8, 0) is None  # nothing remembered yet
    golden.remember(_finished())
    ticket = golden.maybe_ticket(8, 123)
    assert isinstance(ticket, Work)
    assert Work.from_dict(ticket.to_dict()) == ticket  # the same shape as real work
    first_key = ticket.work_id.split(".")[0]
    assert len(first_key) == 16 and ticket.tokens is not None and ticket.position == len(ticket.tokens)
    expected = golden.tickets[ticket.work_id].expected
    # An honest scout: the known continuation, accepted in full.
    assert golden.score("honest", Draft(ticket.work_id, ticket.position, tokens=expected[:6])) == (6, 6)
    # A second answer by the same scout to the same ticket earns nothing.
    assert golden.score("honest", Draft(ticket.work_id, ticket.position, tokens=expected[:6])) == (0, 0)
    # A text draft is scored by the token texts it spells out.
    text = "".join(golden.tickets[ticket.work_id].expected_text[:3]) + " nonsense"
    assert golden.score("texty", Draft(ticket.work_id, ticket.position, text=text))[1] == 3
    # Not a golden ticket: None (the draft goes to the verifier as usual).
    assert golden.score("x", Draft("other.1", 4, tokens=[1])) is None
    # Never reused: every ticket has its own id.
    ids = {golden.maybe_ticket(8, 0).work_id for _ in range(50)}  # type: ignore[union-attr]
    assert len(ids) == 50


def test_a_scout_that_fails_golden_tickets_is_shadow_paused() -> None:
    golden = GoldenTickets(rate=1.0, rng=random.Random(5))
    golden.remember(_finished())
    for _ in range(MIN_GOLDEN):
        t = golden.maybe_ticket(8, 0)
        assert t is not None
        assert not golden.paused("cheater")
        golden.score("cheater", Draft(t.work_id, t.position, tokens=[999] * 8))  # random junk
        t2 = golden.maybe_ticket(8, 0)
        golden.score("honest", Draft(t2.work_id, t2.position, tokens=golden.tickets[t2.work_id].expected[:8]))
    assert golden.paused("cheater")
    assert not golden.paused("honest")


async def test_receipts_from_other_oracles_vouch_for_an_asker(tmp_path: Path) -> None:
    """Oracle X signed draft receipts for asker P; Oracle Y counts them for P only once X has done
    verified work for Y itself, only for P, once each, at half weight and under a cap."""
    x, y, p = await asyncio.gather(*(_sidecar(tmp_path, n) for n in ("x", "y", "p")))
    try:
        xid, yid, pid = (s.info["peer_id"] for s in (x, y, p))
        books = Ledger(tmp_path / "y.db")
        signed = [await receipts.issue(x, "draft", pid, f"w{i}.1", 10) for i in range(3)]
        assert (
            await vouchers.vouched_credit(y, books, pid, signed) == 0
        )  # X never worked for Y: its word is nothing here
        for i in range(4):
            books.record_draft(xid, f"wx{i}.1:{xid}", 16, 16)  # X's drafts were accepted at Y: standing 64 there
        assert await vouchers.vouched_credit(y, books, "12D3KooWsomeoneelse", signed) == 0  # not theirs to show
        inflated = copy.deepcopy(signed[0])
        inflated["receipt"]["amount"] = 16.0
        assert await vouchers.vouched_credit(y, books, pid, [inflated]) == 0
        assert await vouchers.vouched_credit(y, books, pid, signed + signed) == 15.0  # each receipt counts once
        assert (
            await vouchers.vouched_credit(y, books, pid, signed) == 0
        )  # ...and is spent: shown again, it is worth nothing
        assert books.standing(xid) == 64 - 30  # what X vouched for is taken from its own standing at Y
        own = await receipts.issue(p, "draft", pid, "w9.1", 16)  # P vouching for itself
        assert await vouchers.vouched_credit(y, books, pid, [own, {"receipt": 5}, {}]) == 0
        # The asker's side: what it shows Y are its draft receipts from others, not Y's own.
        mine = Ledger(tmp_path / "p.db")
        for i, s in enumerate(signed):
            mine.record("earned", xid, f"draft:w{i}.1", amount=10, proof=receipts.proof(s))
        mine.record(
            "earned",
            yid,
            "draft:wy.1",
            amount=9,
            proof=receipts.proof(await receipts.issue(y, "draft", pid, "wy.1", 9)),
        )
        shown = vouchers.gather(mine, yid)
        assert sorted(v["receipt"]["ref"] for v in shown) == ["w0.1", "w1.1", "w2.1"]
        assert len(vouchers.gather(mine, xid)) == 1
        assert books.standing(xid) > 0
        books.close()
        mine.close()
    finally:
        await asyncio.gather(x.stop(), y.stop(), p.stop())


def test_a_shadow_pause_survives_a_restart(tmp_path: Path) -> None:
    books = Ledger(tmp_path / "ledger.db")
    golden = GoldenTickets(rate=1.0, rng=random.Random(7), on_score=books.record_golden)
    golden.remember(_finished())
    for _ in range(MIN_GOLDEN):
        t = golden.maybe_ticket(8, 0)
        assert t is not None
        golden.score("cheater", Draft(t.work_id, t.position, tokens=[999] * 8))
    assert golden.paused("cheater")
    books.close()
    reopened = GoldenTickets()
    reopened.load(Ledger(tmp_path / "ledger.db").golden_scores())
    assert reopened.paused("cheater") and not reopened.paused("someone")


async def test_3_a_vouching_ring_lifts_no_one_above_its_issuers_standing(tmp_path: Path) -> None:
    """Item 3 of issue 19: an identity with a little credit at Oracle Y signs huge draft receipts
    for fresh identities. Refused: amounts over one draft's tokens, vouchers older than the TTL,
    and anything beyond the issuer's own standing at Y, which pays for what it vouched."""
    y, ring, *sybils = await asyncio.gather(*(_sidecar(tmp_path, n) for n in ("y", "ring", "s1", "s2", "s3")))
    try:
        ring_id = ring.info["peer_id"]
        books = Ledger(tmp_path / "y.db")
        books.record_draft(ring_id, f"wr.1:{ring_id}", 8, 8)  # the issuer earned 8 at Y (say, from golden tickets)
        huge = await _raw_receipt(
            ring,
            {
                "kind": "draft",
                "issuer": ring_id,
                "subject": sybils[0].info["peer_id"],
                "ref": "h.1",
                "amount": 1e9,
                "ts": int(time.time()),
            },
        )
        assert await vouchers.vouched_credit(y, books, sybils[0].info["peer_id"], [huge]) == 0  # was 256
        old = await _raw_receipt(
            ring,
            {
                "kind": "draft",
                "issuer": ring_id,
                "subject": sybils[0].info["peer_id"],
                "ref": "o.1",
                "amount": 16.0,
                "ts": int(time.time()) - vouchers.TTL_S - 60,
            },
        )
        assert await vouchers.vouched_credit(y, books, sybils[0].info["peer_id"], [old]) == 0  # expired
        lifted = 0.0
        for s in sybils:  # each Sybil shows 16 full receipts from the ring
            sid = s.info["peer_id"]
            shown = [await receipts.issue(ring, "draft", sid, f"r{i}.1", 16) for i in range(16)]
            lifted += await vouchers.vouched_credit(y, books, sid, shown)
        assert lifted <= vouchers.WEIGHT * 8  # all of them together: no more than the issuer's own standing
        assert books.standing(ring_id) <= 0  # ...which they used up
        books.close()
    finally:
        await asyncio.gather(y.stop(), ring.stop(), *(s.stop() for s in sybils))


async def _raw_receipt(sidecar: Sidecar, body: dict) -> dict:
    """A receipt signed over exactly `body` (what a hostile issuer can sign)."""
    payload = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    signed = await sidecar.call("POST", "/sign", {"payload_b64": base64.b64encode(payload).decode()})
    return {"receipt": body, "signature_b64": signed["signature_b64"]}
