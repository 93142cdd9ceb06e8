"""The payloads that travel between nodes through the sidecar: work for scouts, their drafts, the
Oracle's verdicts, remote inference requests and the handshake. One place for this wire format
(docs/protocol.md, "Cooperative generation"); the sidecar carries most of them as opaque JSON and
adds the authenticated sender (`from`) itself.

Each message is a frozen dataclass whose field annotations are its schema (types and bounds, read
by pydantic): `from_dict` validates a peer's payload against them, while the node builds its own
messages directly. `protocol/fixtures/` holds valid and invalid examples of every message; the
Python, TypeScript (web-scout/src/messages.ts) and Rust (sidecar) tests all read them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, BeforeValidator, Field, Strict, TypeAdapter, ValidationError

from shard.limits import MAX_DRAFT_TOKENS, MAX_SESSION_DRAFT_TOKENS, MAX_VOUCHERS
from shard.verifier.protocol import error_text

__all__ = [
    "MAX_DRAFT_TOKENS",
    "MAX_SESSION_DRAFT_TOKENS",
    "MAX_VOUCHERS",
]  # bounds shared with credit, re-exported for the wire format's readers

VERSION = 1
MAX_WORK_ID = 128
MAX_CONTEXT_CHARS = 64_000
MAX_CONTEXT_TOKENS = 32_768
MAX_DRAFT_CHARS = 512  # a draft of MAX_DRAFT_TOKENS tokens is far shorter than this
MAX_ROLES = 16
MAX_MODELS = 64
MAX_NAME_CHARS = 256
MAX_U32 = 2**32 - 1
MAX_PROGRESS_TOKENS = 64  # accepted tokens in one progress message (the Oracle sends more messages if need be)
MAX_PROGRESS_CHARS = 2048
MAX_DRAFT_SEQ = 1 << 20  # drafts one scout may send for one work


class MessageError(ValueError):
    """A payload that does not follow this format; the text says which field and why."""


def _or_default(default: Any, kind: type) -> BeforeValidator:
    """Lenient fields: a value of another type reads as the default (never refuses the message)."""
    return BeforeValidator(lambda v: v if isinstance(v, kind) else default)


# The field types, with their bounds (strict: a string is not a number, a number is not a boolean).
TokenId = Annotated[int, Strict(), Field(ge=0, lt=1 << 24)]
WorkId = Annotated[str, Strict(), Field(min_length=1, max_length=MAX_WORK_ID)]
Position = Annotated[int, Strict(), Field(ge=1, le=1 << 30)]
Name = Annotated[str, Strict(), Field(max_length=MAX_NAME_CHARS)]
ShortName = Annotated[str, Strict(), Field(max_length=64)]
Context = Annotated[str, Strict(), Field(min_length=1, max_length=MAX_CONTEXT_CHARS)]
Continuation = Annotated[str, Strict(), Field(max_length=MAX_CONTEXT_CHARS)]
DraftText = Annotated[str, Strict(), Field(min_length=1, max_length=MAX_DRAFT_CHARS)]
MaxDraft = Annotated[int, Strict(), Field(ge=1, le=MAX_DRAFT_TOKENS)]
DeadlineMs = Annotated[int, Strict(), Field(ge=0, le=1 << 53)]
Count = Annotated[int, Strict(), Field(ge=0, le=1 << 20)]
Outcome = Annotated[str, Strict(), Field(min_length=1, max_length=32)]
U32 = Annotated[int, Strict(), Field(ge=0, le=MAX_U32)]
Role = Annotated[str, Strict(), Field(min_length=1, max_length=64)]
ModelId = Annotated[str, Strict(), Field(min_length=1, max_length=MAX_NAME_CHARS)]
Version = Annotated[int, Strict(), Field(ge=VERSION, le=VERSION, description="the message version")]
Hex64 = Annotated[str, Strict(), Field(pattern=r"^[0-9a-fA-F]{1,64}$")]
DraftSeq = Annotated[int, Strict(), Field(ge=0, le=MAX_DRAFT_SEQ)]
Percent = Annotated[int, Strict(), Field(ge=0, le=100)]
ProgressText = Annotated[str, Strict(), Field(max_length=MAX_PROGRESS_CHARS)]

T = TypeVar("T")
_ADAPTERS: dict[type, TypeAdapter[Any]] = {}


def parse(cls: type[T], d: Any) -> T:
    """`d` (a peer's payload) as a `cls`, or MessageError naming the field."""
    if not isinstance(d, dict):
        raise MessageError("the payload must be a JSON object")
    adapter = _ADAPTERS.get(cls) or _ADAPTERS.setdefault(cls, TypeAdapter(cls))
    try:
        return adapter.validate_python(d)
    except ValidationError as exc:
        message = error_text(exc)[0]
        if "'v'" in message:
            message = f"unsupported message version {d.get('v')!r} (this node speaks {VERSION}): {message}"
        raise MessageError(message) from None


def json_schema(cls: type) -> dict[str, Any]:
    """The JSON Schema of a message (docs/protocol.md points here)."""
    return TypeAdapter(cls).json_schema()


@dataclass(frozen=True)
class Work:
    """Sent to scouts (gossip topic `shard-work`, or direct `/shard/work/1.0.0`): continue `context`,
    which is `position` tokens long, by up to `max_draft` tokens, before `deadline_ms`. `tokens` are
    the context's token ids and `vocab` the id of the tokenizer they belong to: a scout with the same
    tokenizer drafts in tokens (exact), any other in text. `draft_model` names (by sha256) the
    draft model the Oracle offers its scouts (in its handshake)."""

    work_id: WorkId
    model: Name
    context: Context
    position: Position
    max_draft: MaxDraft
    deadline_ms: DeadlineMs
    vocab: ShortName = ""
    tokens: Annotated[list[TokenId], Field(min_length=1, max_length=MAX_CONTEXT_TOKENS)] | None = None
    draft_model: ShortName = ""  # sha256 of the draft model the Oracle offers for this work ('' for none)
    v: Version = VERSION

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Any) -> Work:
        return parse(cls, d)


@dataclass(frozen=True)
class Draft:
    """A scout's answer to a Work (gossip `shard-work-result`, or the request of
    `/shard/oracle/verify/1.0.0`): what continues the work's context at `position`, as `text` or,
    from a scout with the work's tokenizer, as `tokens` (exactly one of them).
    Who sent it is never a field: the sidecar reports the signed sender."""

    work_id: WorkId
    position: Position
    text: DraftText | None = None
    tokens: Annotated[list[TokenId], Field(min_length=1, max_length=MAX_SESSION_DRAFT_TOKENS)] | None = None
    seq: DraftSeq = 0  # in a drafting session, the scout's number for this draft (1, 2, ...): its receipt's ref
    # With `tokens`: each token's probability under the scout's model, in percent. The Oracle reads it
    # only as a bin, each bin's acceptance measured (verifier/policy.py Calibration): a lie gains nothing.
    confidence: Annotated[list[Percent], Field(max_length=MAX_SESSION_DRAFT_TOKENS)] | None = None
    v: Version = VERSION

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def ref(self) -> str:
        """What the draft's ledger entry and receipt are about: the work, and the draft within it."""
        return f"{self.work_id}#{self.seq}" if self.seq else self.work_id

    @classmethod
    def from_dict(cls, d: Any) -> Draft:
        if isinstance(d, dict) and (d.get("text") is None) == (d.get("tokens") is None):
            raise MessageError("give exactly one of 'text' or 'tokens'")
        draft = parse(cls, d)
        if draft.confidence is not None and (draft.tokens is None or len(draft.confidence) != len(draft.tokens)):
            raise MessageError("'confidence' must give each of the draft's 'tokens' one percent")
        return draft


@dataclass(frozen=True)
class Progress:
    """Sent to the scouts of a running request on the work channel, as its tokens are decided:
    the generation's tokens from `position` on are `tokens` (and spell `text`). `work_id` is the
    request's newest work (its request key is the part before the dot). A scout keeps a drafting
    session per request: it drafts ahead of the Oracle from its own guess and reconciles that
    guess with each progress message. `type` tells it apart from a Work on the same channel."""

    work_id: WorkId
    position: Position
    tokens: Annotated[list[TokenId], Field(min_length=1, max_length=MAX_PROGRESS_TOKENS)]
    text: ProgressText = ""
    model: Name = ""  # the Oracle's model, as in its works: the sidecar publishes it on that model's topic too
    type: Literal["progress"] = "progress"
    v: Version = VERSION

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @staticmethod
    def is_progress(d: Any) -> bool:
        return isinstance(d, dict) and d.get("type") == "progress"

    @classmethod
    def from_dict(cls, d: Any) -> Progress:
        if not Progress.is_progress(d):
            raise MessageError("'type' must be 'progress'")
        return parse(cls, d)


@dataclass(frozen=True)
class Verdict:
    """The Oracle's answer to a draft sent over `/shard/oracle/verify/1.0.0`. `outcome` is
    "verified" (checked: `accepted` of `proposed` tokens kept), "stale", "finished", or "ignored"
    with `reason` (unknown work, not admitted, duplicate, replay, oversize, ...). `receipt` is the
    signed receipt (credit/receipts.py) when tokens were accepted: only that counts as credit."""

    work_id: WorkId
    outcome: Outcome
    proposed: Count = 0  # required on the wire (from_dict)
    accepted: Count = 0
    reason: Annotated[str, _or_default("", str)] = ""
    receipt: Annotated[dict[str, Any] | None, _or_default(None, dict)] = None
    v: Version = VERSION

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Any) -> Verdict:
        for key in ("proposed", "accepted"):
            if isinstance(d, dict) and key not in d:
                raise MessageError(f"'{key}': Field required")
        return parse(cls, d)


@dataclass(frozen=True)
class InferRequest:
    """A node without the model asks an Oracle to generate (`/shard/infer/1.0.0`, one line).
    `generate` is the verifier's GenerateRequest (docs/protocol.md, "Verifier"); `continuation`
    is text another Oracle already produced for it (failover: the new Oracle goes on from there);
    `vouchers` are signed receipts other Oracles gave the asker for its accepted drafts (its
    standing elsewhere; the Oracle checks them, credit/vouchers.py). The Oracle answers with lines:
    `queued` {position, eta_s}, `start`, `token` {text, n}, `end` {finish_reason, usage, receipt},
    or `error` {message}."""

    generate: Annotated[dict[str, Any], Strict()]
    model: Name = ""
    continuation: Continuation = ""
    vouchers: Annotated[list[Annotated[dict[str, Any], Strict()]], Field(max_length=MAX_VOUCHERS)] = dataclasses.field(
        default_factory=list
    )
    v: Version = VERSION

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Any) -> InferRequest:
        return parse(cls, d)


def _file_name(name: str) -> str:
    if name in (".", ".."):
        raise ValueError("must be a file name")
    return name


@dataclass(frozen=True)
class DraftModelInfo:
    """A draft model as a handshake names it (docs/protocol.md, "Draft models")."""

    name: Annotated[
        str, Strict(), Field(min_length=1, max_length=MAX_NAME_CHARS, pattern=r"^[^/\\]+$"), AfterValidator(_file_name)
    ]
    size: Annotated[int, Strict(), Field(ge=0)]
    sha256: Annotated[str, Strict(), Field(pattern=r"^[0-9a-fA-F]{64}$")]
    vocab: Hex64


@dataclass(frozen=True)
class Handshake:
    """What a peer tells about itself when it connects (`/shard/handshake/1.0.0`), as the sidecar
    checks it (sidecar/src/util.rs, `LocalInfo::parse`) before reporting it in a `handshake` event.
    `pair` is a scout's pairing proof for the peer it is sent to (network/pairing.py)."""

    protocol_version: Annotated[int, Strict(), Field(ge=0, le=2**64 - 1)]
    roles: Annotated[list[Role], Field(max_length=MAX_ROLES)] = dataclasses.field(default_factory=list)
    models: Annotated[list[ModelId], Field(max_length=MAX_MODELS)] = dataclasses.field(default_factory=list)
    capacity: U32 = 0
    load: U32 = 0
    agent: Name = ""
    draft_model: DraftModelInfo | None = None
    pair: Hex64 | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, d: Any) -> Handshake:
        return parse(cls, d)


MESSAGES: dict[str, type] = {
    "work": Work,
    "draft": Draft,
    "verdict": Verdict,
    "infer_request": InferRequest,
    "handshake": Handshake,
    "progress": Progress,
}
