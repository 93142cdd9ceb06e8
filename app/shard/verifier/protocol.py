"""The verifier's wire format (node <-> verifier child, 127.0.0.1, per-launch bearer token).

One place for it: the child parses with these classes and the node's client builds them.
Described in docs/protocol.md ("Verifier").
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

READY_PREFIX = "SHARD_VERIFIER_READY "
TOKEN_ENV = "SHARD_VERIFIER_TOKEN"
EXIT_MODEL_UNUSABLE = 3  # the model cannot be loaded: restarting will not help
MAX_TOKENS_PER_REQUEST = 65536


class ProtocolError(ValueError):
    """A message that does not follow this format; the text says which field and why."""


def _num(d: dict[str, Any], key: str, default: float, lo: float, hi: float) -> float:
    v = d.get(key, default)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ProtocolError(f"'{key}' must be a number")
    if not lo <= v <= hi:
        raise ProtocolError(f"'{key}' must be between {lo} and {hi}, got {v}")
    return float(v)


def _int(d: dict[str, Any], key: str, default: int, lo: int, hi: int) -> int:
    v = d.get(key, default)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, int):
        raise ProtocolError(f"'{key}' must be an integer")
    if not lo <= v <= hi:
        raise ProtocolError(f"'{key}' must be between {lo} and {hi}, got {v}")
    return v


def _tokens(d: dict[str, Any], key: str) -> list[int]:
    v = d.get(key) or []
    if not isinstance(v, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in v):
        raise ProtocolError(f"'{key}' must be a list of token ids")
    if len(v) > MAX_TOKENS_PER_REQUEST:
        raise ProtocolError(f"'{key}' has more than {MAX_TOKENS_PER_REQUEST} tokens")
    return v


@dataclass
class Sampling:
    temperature: float = 0.8
    top_p: float = 0.95
    top_k: int = 40
    min_p: float = 0.05
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None
    grammar: str | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Sampling":
        grammar = d.get("grammar")
        if grammar is not None and not isinstance(grammar, str):
            raise ProtocolError("'grammar' must be a GBNF string")
        seed = d.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ProtocolError("'seed' must be an integer")
        return cls(
            temperature=_num(d, "temperature", cls.temperature, 0.0, 2.0),
            top_p=_num(d, "top_p", cls.top_p, 0.0, 1.0),
            top_k=_int(d, "top_k", cls.top_k, 0, 1 << 20),
            min_p=_num(d, "min_p", cls.min_p, 0.0, 1.0),
            presence_penalty=_num(d, "presence_penalty", 0.0, -2.0, 2.0),
            frequency_penalty=_num(d, "frequency_penalty", 0.0, -2.0, 2.0),
            seed=None if seed is None else seed & 0xFFFFFFFFFFFFFFFF,
            grammar=grammar or None,
        )


def _continuation(d: dict[str, Any]) -> str:
    v = d.get("continuation") or ""
    if not isinstance(v, str) or len(v) > 1_000_000:
        raise ProtocolError("'continuation' must be a string")
    return v


@dataclass
class GenerateRequest:
    """POST /generate. Exactly one of prompt (text), messages (chat) or tokens is given."""

    prompt: str | None = None
    messages: list[dict[str, Any]] | None = None
    tokens: list[int] | None = None
    max_tokens: int = 0
    stop: list[str] = field(default_factory=list)
    sampling: Sampling = field(default_factory=Sampling)
    drafter: str = "none"  # "none" or "lookup" (prompt lookup inside the verifier)
    share_context: bool = False  # put the prompt as text in the "start" event (work for scouts)
    continuation: str = ""  # text already generated for this request elsewhere: go on after it
    # The JSON schema `sampling.grammar` was compiled from ({} for any JSON object): what a remote
    # Oracle is sent instead of the grammar (it compiles the schema itself, within its limits).
    json_schema: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Any) -> "GenerateRequest":
        if not isinstance(d, dict):
            raise ProtocolError("the body must be a JSON object")
        given = [k for k in ("prompt", "messages", "tokens") if d.get(k) is not None]
        if len(given) != 1:
            raise ProtocolError("give exactly one of 'prompt', 'messages' or 'tokens'")
        prompt, messages = d.get("prompt"), d.get("messages")
        if prompt is not None and not isinstance(prompt, str):
            raise ProtocolError("'prompt' must be a string")
        if messages is not None and (not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages)):
            raise ProtocolError("'messages' must be a list of objects")
        stop = d.get("stop") or []
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise ProtocolError("'stop' must be a list of strings")
        drafter = d.get("drafter", "none")
        if drafter not in ("none", "lookup"):
            raise ProtocolError("'drafter' must be 'none' or 'lookup'")
        return cls(
            prompt=prompt,
            messages=messages,
            tokens=_tokens(d, "tokens") if d.get("tokens") is not None else None,
            max_tokens=_int(d, "max_tokens", 0, 0, MAX_TOKENS_PER_REQUEST),
            stop=stop,
            sampling=Sampling.from_dict(d.get("sampling") or {}),
            drafter=drafter,
            share_context=bool(d.get("share_context", False)),
            continuation=_continuation(d),
            json_schema=d.get("json_schema") if isinstance(d.get("json_schema"), dict) else None,
        )


@dataclass
class VerifyRequest:
    """POST /verify: evaluate context + draft in one batched pass; keep the longest accepted prefix + 1."""

    context: list[int]
    draft: list[int]
    sampling: Sampling = field(default_factory=lambda: Sampling(temperature=0.0))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Any) -> "VerifyRequest":
        if not isinstance(d, dict):
            raise ProtocolError("the body must be a JSON object")
        context = _tokens(d, "context")
        if not context:
            raise ProtocolError("'context' must hold at least one token")
        return cls(context=context, draft=_tokens(d, "draft"), sampling=Sampling.from_dict(d.get("sampling") or {"temperature": 0.0}))


MAX_DRAFT_CHARS = 4096


@dataclass
class DraftRequest:
    """POST /draft: a draft for a running generation (`job` from its "start" event), for the tokens
    from `position` on, as text (the verifier tokenizes it) or token ids. Answered when checked."""

    job: int
    position: int
    text: str | None = None
    tokens: list[int] | None = None
    limit: int = 0  # check at most this many of its tokens (0: no limit); the node paces each scout

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Any) -> "DraftRequest":
        if not isinstance(d, dict):
            raise ProtocolError("the body must be a JSON object")
        text = d.get("text")
        if (text is None) == (d.get("tokens") is None):
            raise ProtocolError("give exactly one of 'text' or 'tokens'")
        if text is not None and (not isinstance(text, str) or not text or len(text) > MAX_DRAFT_CHARS):
            raise ProtocolError(f"'text' must be a non-empty string of at most {MAX_DRAFT_CHARS} characters")
        return cls(job=_int(d, "job", 0, 1, 1 << 62), position=_int(d, "position", 0, 0, 1 << 30), text=text,
                   tokens=_tokens(d, "tokens") if d.get("tokens") is not None else None, limit=_int(d, "limit", 0, 0, 1 << 16))


@dataclass
class DraftVerdict:
    proposed: int  # draft tokens that were checked (0 if the draft was not used)
    accepted: int  # of those, how many the target model kept
    outcome: str  # "verified", "stale" (did not fit what was generated), "finished" (too late), "invalid"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class VerifyResult:
    accepted: list[int]  # the accepted draft prefix followed by the target's own next token
    n_draft_accepted: int

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
