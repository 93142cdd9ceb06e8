"""Credit proven by receipts from others: an asker shows an Oracle the signed receipts other
Oracles gave it for accepted drafts, and the Oracle counts part of them towards the asker's place
in its queue, as if the asker had earned a little credit here.

What keeps this from being forged or farmed:
- each receipt is checked against its issuer's key (the sidecar), and must name the asker (the
  authenticated sender of the request) as its subject, so receipts cannot be lent or stolen;
- an issuer counts only if it has done verified work for this Oracle itself (drafts accepted here,
  or tokens it served here with a receipt): a node cannot vouch for itself through puppets;
- vouched credit weighs half of credit earned here and is capped, so it lifts a newcomer above
  consumers without outranking the peers that work for this Oracle directly.
Vouchers are shown, not spent: the Oracle records nothing for them.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from shard.credit import receipts
from shard.credit.ledger import Ledger
from shard.network.messages import MAX_VOUCHERS
from shard.network.sidecar import Sidecar

WEIGHT = 0.5  # one vouched token counts as half a token earned here
CAP = 256.0  # at most this much vouched credit per request


def gather(ledger: Ledger, oracle: str) -> list[dict[str, Any]]:
    """The asker's side: its largest draft receipts from Oracles other than `oracle`."""
    found = []
    for proof in ledger.proofs("earned", MAX_VOUCHERS, exclude=oracle):
        signed = json.loads(proof)
        if isinstance(signed, dict) and (signed.get("receipt") or {}).get("kind") == "draft":
            found.append(signed)
    return found


async def vouched_credit(sidecar: Sidecar, ledger: Ledger, asker: str, vouchers: list[dict[str, Any]]) -> float:
    """The Oracle's side: what `vouchers` are worth for `asker` here (0 for any that fails)."""
    me = str(sidecar.info.get("peer_id", ""))
    seen: set[tuple[str, str]] = set()

    async def worth(signed: dict[str, Any]) -> float:
        r = signed.get("receipt")
        if not isinstance(r, dict) or not isinstance(r.get("issuer"), str) or not isinstance(r.get("ref"), str):
            return 0.0
        issuer, ref = r["issuer"], r["ref"]
        if issuer in (asker, me) or (issuer, ref) in seen:
            return 0.0  # its own word, this node's own receipts (its credit here counts them), or twice
        seen.add((issuer, ref))
        known = ledger.peer(issuer)
        if known.accepted <= 0 and known.spent <= 0:
            return 0.0  # an issuer that never did verified work here: its word is worth nothing here
        checked = await receipts.check(sidecar, signed, kind="draft", issuer=issuer, subject=asker, ref=ref)
        return checked.amount if checked is not None else 0.0

    total = sum(await asyncio.gather(*(worth(v) for v in vouchers[:MAX_VOUCHERS])))
    return min(CAP, WEIGHT * total)
