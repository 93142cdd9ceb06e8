"""Receipts signed by a real sidecar hold only for their issuer and their exact content, and vouch
for an asker at other Oracles only under their rules; golden tickets (the Oracle's own requests on
made-up prompts) copy real requests' shape, score late drafts that disagree with them, and
shadow-pause scouts that fail them, across restarts."""

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
from shard.coop.golden import MIN_GOLDEN, GoldenTickets
from shard.credit import receipts, vouchers
from shard.credit.ledger import Ledger
from shard.network.messages import Draft
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


EVENTS = [([10 + i], f" t{i}") for i in range(20)]  # a ticket's token events: ids and text


def test_golden_tickets_copy_the_shape_of_real_requests_never_their_text() -> None:
    golden = GoldenTickets(rate=1.0, rng=random.Random(3))
    golden.request_ended(chat=True, tokens=57)  # a real request: only its kind and length are kept
    ticket = golden.ticket_request("what do bees eat?")
    assert ticket.messages == [{"role": "user", "content": "what do bees eat?"}] and ticket.max_tokens == 57
    assert ticket.sampling.temperature == 0  # greedy: a late draft that disagrees with it is wrong
    made_up = golden.prompt_request()  # the prompt is sampled with a seed no peer knows
    assert made_up.sampling.temperature > 0 and made_up.sampling.seed is not None
    assert made_up.sampling.seed != golden.prompt_request().sampling.seed
    # At random times, never "right after": every wait is at least a second, and they differ.
    waits = [golden.request_started() for _ in range(50)]
    assert all(w is not None and 1.0 <= w <= 120 for w in waits) and len(set(waits)) == 50
    assert GoldenTickets(rate=0.0).request_started() is None


def test_a_late_draft_for_a_ticket_is_wrong_only_if_it_disagrees() -> None:
    golden = GoldenTickets()
    # Made for the ticket's position 4 tokens past its prompt; the verifier found it stale.
    golden.record_late("late", Draft("k.2", 7, tokens=[14, 15, 16]), EVENTS, 4, 16)  # agrees: only late
    golden.record_late("late", Draft("k.2", 7, text=" t4 t5 t"), EVENTS, 4, 16)
    assert "late" not in golden.stats
    golden.record_late("junk", Draft("k.2", 7, tokens=[14, 99, 98]), EVENTS, 4, 16)
    golden.record_late("junk", Draft("k.2", 7, text=" t4 nonsense, and more nonsense"), EVENTS, 4, 16)
    junk = golden.stats["junk"]
    assert (junk.drafts, junk.accepted) == (2, 2) and junk.proposed == 3 + 7
    golden.record_late("long", Draft("k.2", 7, tokens=[14] + [99] * 300), EVENTS, 4, 16)
    assert golden.stats["long"].proposed == 16  # the cap of real work
    golden.record_late("x", Draft("k.2", 30, tokens=[1]), EVENTS, 27, 16)  # not a position it went through
    assert "x" not in golden.stats


def test_a_scout_that_fails_golden_tickets_is_shadow_paused() -> None:
    golden = GoldenTickets(rate=1.0, rng=random.Random(5))
    for _ in range(MIN_GOLDEN):
        assert not golden.paused("cheater")
        golden.record("cheater", 8, 0)  # the verifier's verdicts on its ticket drafts
        golden.record("honest", 8, 6)
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
    for _ in range(MIN_GOLDEN):
        golden.record("cheater", 8, 0)
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
