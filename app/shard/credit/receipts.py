"""Receipts: what one node owes another, signed with the issuer's libp2p key (through its sidecar)
so that the other can prove it. An Oracle issues one for each scout draft it accepted tokens of
(kind "draft") and for each request it served to a remote asker (kind "served"). The holder checks
the signature against the issuer's peer id before the receipt counts in its ledger.

A receipt comes from a peer, so it is hostile until checked: its body must have exactly the six
fields below with their types and bounds (an amount is a number, never a string; at most what one
draft or one request can hold), the whole thing is small, and what is kept (the ledger's proof) is
the canonical form rebuilt from the checked fields, never the bytes as sent (no padding is stored).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, fields
from typing import Any

from shard.limits import MAX_DRAFT_TOKENS
from shard.ports import Signer
from shard.verifier.protocol import MAX_TOKENS_PER_REQUEST

KINDS = ("draft", "served")
MAX_AMOUNT = {"draft": float(MAX_DRAFT_TOKENS), "served": float(MAX_TOKENS_PER_REQUEST)}
MAX_ID_CHARS = 128  # peer ids are about 52 characters
MAX_REF_CHARS = 160
MAX_SIGNATURE_CHARS = 256  # an ed25519 signature is 88 characters of base64


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

    @classmethod
    def parse(cls, body: Any) -> Receipt | None:
        """The typed receipt, or None for anything else (extra or missing fields, wrong types,
        an amount that is not a finite number within its kind's bound)."""
        if not isinstance(body, dict) or set(body) != {f.name for f in fields(cls)}:
            return None
        kind, amount, ts = body["kind"], body["amount"], body["ts"]
        strings_ok = all(
            isinstance(body[k], str) and 0 < len(body[k]) <= limit
            for k, limit in (("issuer", MAX_ID_CHARS), ("subject", MAX_ID_CHARS), ("ref", MAX_REF_CHARS))
        )
        if kind not in KINDS or not strings_ok:
            return None
        if isinstance(amount, bool) or not isinstance(amount, (int, float)) or not math.isfinite(amount):
            return None
        if (
            not 0 <= amount <= MAX_AMOUNT[kind]
            or isinstance(ts, bool)
            or not isinstance(ts, int)
            or not 0 <= ts < 1 << 40
        ):
            return None
        return cls(kind, body["issuer"], body["subject"], body["ref"], float(amount), ts)


async def issue(signer: Signer, kind: str, subject: str, ref: str, amount: float) -> dict[str, Any]:
    receipt = Receipt(kind, signer.peer_id, subject, ref, float(amount), int(time.time()))
    return {"receipt": asdict(receipt), "signature_b64": await signer.sign(receipt.payload())}


def canonical(receipt: Receipt, signature_b64: str) -> dict[str, Any]:
    """The signed receipt as it is kept and shown: the checked fields and the signature, nothing else."""
    return {"receipt": asdict(receipt), "signature_b64": signature_b64}


def parse_signed(signed: Any) -> tuple[Receipt, str] | None:
    """(receipt, signature) from a peer's `{"receipt": {...}, "signature_b64", "id"?}`, or None.
    Other fields next to these are not signed and are dropped (never stored: see `proof`)."""
    if not isinstance(signed, dict):
        return None
    sig = signed.get("signature_b64")
    receipt = Receipt.parse(signed.get("receipt"))
    if receipt is None or not isinstance(sig, str) or not 0 < len(sig) <= MAX_SIGNATURE_CHARS:
        return None
    return receipt, sig


async def check(
    signer: Signer, signed: Any, *, kind: str, issuer: str, subject: str, ref: str, max_amount: float | None = None
) -> Receipt | None:
    """The receipt if it is well formed, about this exchange, for at most `max_amount` (what was
    really delivered), and signed by `issuer`; else None."""
    parsed = parse_signed(signed)
    if parsed is None:
        return None
    r, sig = parsed
    if (r.kind, r.issuer, r.subject, r.ref) != (kind, issuer, subject, ref):
        return None
    if max_amount is not None and r.amount > max_amount:
        return None
    return r if await signer.verify(r.payload(), sig, issuer) else None


def proof(signed: dict[str, Any]) -> str:
    """What the ledger keeps of a checked receipt: its canonical form (padding a peer added is dropped)."""
    parsed = parse_signed(signed)
    kept = canonical(*parsed) if parsed is not None else signed
    return json.dumps(kept, sort_keys=True, separators=(",", ":"))
