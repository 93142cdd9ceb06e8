"""Credit proven by receipts from others: an asker shows an Oracle the signed receipts other
Oracles gave it for accepted drafts, and the Oracle counts part of them towards the asker's place
in its queue, as if the asker had earned a little credit here.

What keeps this from being forged or farmed (identities are free, so rings of them are assumed):
- each receipt is typed and bounded (a draft receipt holds at most one draft's tokens), checked
  against its issuer's key (the sidecar), and must name the asker (the authenticated sender of the
  request) as its subject, so receipts cannot be lent or stolen;
- an issuer counts only if it has done verified work for this Oracle itself (drafts accepted here,
  or tokens it served here with a receipt), and only up to its own standing here: what a voucher
  is worth is taken from the issuer's standing (ledger `vouched`), so vouching for puppets costs
  the voucher exactly what it gives them, and no ring can lift anyone above its best member;
- a voucher is spent where it is shown: counted once by each Oracle, ever (not once per request);
- vouchers expire (TTL_S after they were signed; one dated in the future is void);
- vouched credit weighs half of credit earned here and is capped, so it lifts a newcomer above
  consumers without outranking the peers that work for this Oracle directly.
"""

from __future__ import annotations

import json
import time
from typing import Any

from shard.credit import receipts
from shard.credit.ledger import Ledger, LedgerError
from shard.limits import MAX_VOUCHERS
from shard.ports import Signer

WEIGHT = 0.5  # one vouched token counts as half a token earned here
CAP = 256.0  # at most this much vouched credit per request
TTL_S = 7 * 24 * 3600  # a voucher older than this is worth nothing
CLOCK_SKEW_S = 300


def fresh(receipt: receipts.Receipt, now: float | None = None) -> bool:
    now = time.time() if now is None else now
    return now - TTL_S <= receipt.ts <= now + CLOCK_SKEW_S


def gather(ledger: Ledger, oracle: str) -> list[dict[str, Any]]:
    """The asker's side: its largest unexpired draft receipts from Oracles other than `oracle`."""
    found = []
    for proof in ledger.proofs("earned", MAX_VOUCHERS * 4, exclude=oracle):
        parsed = receipts.parse_signed(json.loads(proof))
        if parsed is not None and parsed[0].kind == "draft" and fresh(parsed[0]):
            found.append(receipts.canonical(*parsed))
    return found[:MAX_VOUCHERS]


async def vouched_credit(signer: Signer, ledger: Ledger, asker: str, vouchers: list[dict[str, Any]]) -> float:
    """The Oracle's side: what `vouchers` are worth for `asker` here (0 for any that fails), each
    spent: counted once here, and taken from its issuer's standing."""
    me = signer.peer_id
    total = 0.0
    for signed in vouchers[:MAX_VOUCHERS]:
        if WEIGHT * total >= CAP:
            break
        parsed = receipts.parse_signed(signed)
        if parsed is None:
            continue
        r, _ = parsed
        if r.issuer in (asker, me) or r.kind != "draft" or not fresh(r):
            continue  # its own word, this node's own receipts (its credit here counts them), or stale
        known = ledger.peer(r.issuer)
        budget = ledger.standing(r.issuer)
        if (known.accepted <= 0 and known.spent <= 0) or budget <= 0:
            continue  # an issuer that never did verified work here, or has vouched away its standing
        checked = await receipts.check(signer, signed, kind="draft", issuer=r.issuer, subject=asker, ref=r.ref)
        if checked is None:
            continue
        worth = min(checked.amount, budget)
        try:
            if ledger.spend_voucher(r.issuer, f"{r.ref}:{asker}", asker, worth):
                total += worth
        except LedgerError:
            continue
    return min(CAP, WEIGHT * total)
