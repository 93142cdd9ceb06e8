"""The payloads that travel between nodes through the sidecar: work for scouts, their drafts, and
the Oracle's verdicts. One place for this wire format (docs/protocol.md, "Cooperative generation");
the sidecar carries them as opaque JSON and adds the authenticated sender (`from`) itself.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

VERSION = 1
MAX_WORK_ID = 128
MAX_CONTEXT_CHARS = 64_000
MAX_CONTEXT_TOKENS = 32_768
MAX_DRAFT_TOKENS = 16
MAX_DRAFT_CHARS = 512  # a draft of MAX_DRAFT_TOKENS tokens is far shorter than this
MAX_VOUCHERS = 16  # receipts from other Oracles an asker may show with a request
MAX_PROGRESS_TOKENS = 64  # accepted tokens in one progress message (the Oracle sends more messages if need be)
MAX_PROGRESS_CHARS = 2048
MAX_DRAFT_SEQ = 1 << 20  # drafts one scout may send for one work


class MessageError(ValueError):
    """A payload that does not follow this format; the text says which field and why."""


def _str(d: dict[str, Any], key: str, limit: int, allow_empty: bool = False) -> str:
    v = d.get(key)
    if not isinstance(v, str) or (not v and not allow_empty) or len(v) > limit:
        raise MessageError(
            f"'{key}' must be a {'' if allow_empty else 'non-empty '}string of at most {limit} characters"
        )
    return v


def _int(d: dict[str, Any], key: str, lo: int, hi: int) -> int:
    v = d.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise MessageError(f"'{key}' must be an integer between {lo} and {hi}")
    return v


def _token_list(d: dict[str, Any], key: str, limit: int) -> list[int] | None:
    v = d.get(key)
    if v is None:
        return None
    if (
        not isinstance(v, list)
        or not v
        or len(v) > limit
        or not all(isinstance(t, int) and not isinstance(t, bool) and 0 <= t < 1 << 24 for t in v)
    ):
        raise MessageError(f"'{key}' must be a non-empty list of at most {limit} token ids")
    return v


def _object(d: Any) -> dict[str, Any]:
    if not isinstance(d, dict):
        raise MessageError("the payload must be a JSON object")
    if d.get("v", VERSION) != VERSION:
        raise MessageError(f"unsupported message version {d.get('v')!r} (this node speaks {VERSION})")
    return d


@dataclass(frozen=True)
class Work:
    """Sent to scouts (gossip topic `shard-work`, or direct `/shard/work/1.0.0`): continue `context`,
    which is `position` tokens long, by up to `max_draft` tokens, before `deadline_ms`. `tokens` are
    the context's token ids and `vocab` the id of the tokenizer they belong to: a scout with the same
    tokenizer drafts in tokens (exact), any other in text. `draft_model` names (by sha256) the
    draft model the Oracle offers its scouts (in its handshake)."""

    work_id: str
    model: str
    context: str
    position: int
    max_draft: int
    deadline_ms: int
    vocab: str = ""
    tokens: list[int] | None = None
    draft_model: str = ""  # sha256 of the draft model the Oracle offers for this work ('' for none)
    v: int = VERSION

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Any) -> Work:
        d = _object(d)
        return cls(
            work_id=_str(d, "work_id", MAX_WORK_ID),
            model=_str(d, "model", 256, allow_empty=True),
            context=_str(d, "context", MAX_CONTEXT_CHARS),
            position=_int(d, "position", 1, 1 << 30),
            max_draft=_int(d, "max_draft", 1, MAX_DRAFT_TOKENS),
            deadline_ms=_int(d, "deadline_ms", 0, 1 << 53),
            vocab=_str(d, "vocab", 64, allow_empty=True) if "vocab" in d else "",
            tokens=_token_list(d, "tokens", MAX_CONTEXT_TOKENS),
            draft_model=_str(d, "draft_model", 64, allow_empty=True) if "draft_model" in d else "",
        )


@dataclass(frozen=True)
class Draft:
    """A scout's answer to a Work (gossip `shard-work-result`, or the request of
    `/shard/oracle/verify/1.0.0`): what continues the work's context at `position`, as `text` or,
    from a scout with the work's tokenizer, as `tokens` (exactly one of them).
    Who sent it is never a field: the sidecar reports the signed sender."""

    work_id: str
    position: int
    text: str | None = None
    tokens: list[int] | None = None
    seq: int = 0  # in a drafting session, the scout's number for this draft (1, 2, ...): its receipt's ref
    v: int = VERSION

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def ref(self) -> str:
        """What the draft's ledger entry and receipt are about: the work, and the draft within it."""
        return f"{self.work_id}#{self.seq}" if self.seq else self.work_id

    @classmethod
    def from_dict(cls, d: Any) -> Draft:
        d = _object(d)
        if (d.get("text") is None) == (d.get("tokens") is None):
            raise MessageError("give exactly one of 'text' or 'tokens'")
        return cls(
            work_id=_str(d, "work_id", MAX_WORK_ID),
            position=_int(d, "position", 1, 1 << 30),
            text=_str(d, "text", MAX_DRAFT_CHARS) if d.get("text") is not None else None,
            tokens=_token_list(d, "tokens", MAX_DRAFT_TOKENS),
            seq=_int(d, "seq", 0, MAX_DRAFT_SEQ) if "seq" in d else 0,
        )


@dataclass(frozen=True)
class Progress:
    """Sent to the scouts of a running request on the work channel, as its tokens are decided:
    the generation's tokens from `position` on are `tokens` (and spell `text`). `work_id` is the
    request's newest work (its request key is the part before the dot). A scout keeps a drafting
    session per request: it drafts ahead of the Oracle from its own guess and reconciles that
    guess with each progress message. `type` tells it apart from a Work on the same channel."""

    work_id: str
    position: int
    tokens: list[int]
    text: str = ""
    type: str = "progress"
    v: int = VERSION

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @staticmethod
    def is_progress(d: Any) -> bool:
        return isinstance(d, dict) and d.get("type") == "progress"

    @classmethod
    def from_dict(cls, d: Any) -> Progress:
        d = _object(d)
        if d.get("type") != "progress":
            raise MessageError("'type' must be 'progress'")
        return cls(
            work_id=_str(d, "work_id", MAX_WORK_ID),
            position=_int(d, "position", 1, 1 << 30),
            tokens=_token_list(d, "tokens", MAX_PROGRESS_TOKENS) or [],
            text=_str(d, "text", MAX_PROGRESS_CHARS, allow_empty=True) if "text" in d else "",
        )


@dataclass(frozen=True)
class Verdict:
    """The Oracle's answer to a draft sent over `/shard/oracle/verify/1.0.0`. `outcome` is
    "verified" (checked: `accepted` of `proposed` tokens kept), "stale", "finished", or "ignored"
    with `reason` (unknown work, not admitted, duplicate, replay, oversize, ...)."""

    work_id: str
    outcome: str
    proposed: int = 0
    accepted: int = 0
    reason: str = ""
    receipt: dict[str, Any] | None = None  # signed by the Oracle when tokens were accepted
    v: int = VERSION

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Any) -> Verdict:
        d = _object(d)
        return cls(
            work_id=_str(d, "work_id", MAX_WORK_ID),
            outcome=_str(d, "outcome", 32),
            proposed=_int(d, "proposed", 0, 1 << 20),
            accepted=_int(d, "accepted", 0, 1 << 20),
            reason=d.get("reason", "") if isinstance(d.get("reason", ""), str) else "",
            receipt=d.get("receipt") if isinstance(d.get("receipt"), dict) else None,
        )


@dataclass(frozen=True)
class InferRequest:
    """A node without the model asks an Oracle to generate (`/shard/infer/1.0.0`, one line).
    `generate` is the verifier's GenerateRequest (docs/protocol.md, "Verifier"); `continuation`
    is text another Oracle already produced for it (failover: the new Oracle goes on from there);
    `vouchers` are signed receipts other Oracles gave the asker for its accepted drafts (its
    standing elsewhere; the Oracle checks them, credit/vouchers.py). The Oracle answers with lines:
    `queued` {position, eta_s}, `start`, `token` {text, n}, `end` {finish_reason, usage, receipt},
    or `error` {message}."""

    generate: dict[str, Any]
    model: str = ""
    continuation: str = ""
    vouchers: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    v: int = VERSION

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Any) -> InferRequest:
        d = _object(d)
        if not isinstance(d.get("generate"), dict):
            raise MessageError("'generate' must be an object")
        vouchers = d.get("vouchers", [])
        if (
            not isinstance(vouchers, list)
            or len(vouchers) > MAX_VOUCHERS
            or not all(isinstance(x, dict) for x in vouchers)
        ):
            raise MessageError(f"'vouchers' must be a list of at most {MAX_VOUCHERS} objects")
        return cls(
            generate=d["generate"],
            model=_str(d, "model", 256, allow_empty=True) if "model" in d else "",
            continuation=_str(d, "continuation", MAX_CONTEXT_CHARS, allow_empty=True) if "continuation" in d else "",
            vouchers=vouchers,
        )
