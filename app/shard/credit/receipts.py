"""Receipts: what one node owes another, signed with the issuer's libp2p key (through its sidecar)
so that the other can prove it. An Oracle issues one for each scout draft it accepted tokens of
(kind "draft") and for each request it served to a remote asker (kind "served"). The holder checks
the signature against the issuer's peer id before the receipt counts in its ledger.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import asdict, dataclass
from typing import Any

from shard.network.sidecar import Sidecar, SidecarError

KINDS = ("draft", "served")


@dataclass(frozen=True)
class Receipt:
    kind: str
    issuer: str  # the signer's peer id (the Oracle)
    subject: str  # the peer it is about (the scout, or the asker)
    ref: str  # the work id or request id
    amount: float  # tokens accepted, or tokens served
    ts: int

    def payload(self) -> bytes:
        """The signed bytes: canonical JSON (sorted keys, no spaces)."""
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":")).encode()


async def issue(sidecar: Sidecar, kind: str, subject: str, ref: str, amount: float) -> dict[str, Any]:
    receipt = Receipt(kind, str(sidecar.info.get("peer_id", "")), subject, ref, float(amount), int(time.time()))
    signed = await sidecar.call("POST", "/sign", {"payload_b64": base64.b64encode(receipt.payload()).decode()})
    return {"receipt": asdict(receipt), "signature_b64": signed["signature_b64"]}


async def check(sidecar: Sidecar, signed: Any, *, kind: str, issuer: str, subject: str, ref: str) -> Receipt | None:
    """The receipt if it is well formed, about this exchange, and signed by `issuer`; else None."""
    try:
        r = Receipt(**signed["receipt"])
        sig = signed["signature_b64"]
    except (TypeError, KeyError):
        return None
    if (r.kind, r.issuer, r.subject, r.ref) != (kind, issuer, subject, ref) or r.kind not in KINDS or r.amount < 0:
        return None
    try:
        answer = await sidecar.call("POST", "/verify-signature", {"payload_b64": base64.b64encode(r.payload()).decode(),
                                                                  "signature_b64": str(sig), "peer_id": issuer})
    except SidecarError:
        return None
    return r if answer.get("valid") is True else None


def proof(signed: dict[str, Any]) -> str:
    return json.dumps(signed, sort_keys=True, separators=(",", ":"))
