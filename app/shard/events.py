"""Typed events, parsed once where they cross a process boundary and rendered only at the edge.

Generation events (one request's stream): the verifier child's NDJSON lines (`from_verifier`), an
Oracle's lines over `/shard/infer/1.0.0` (`from_remote`: a peer's, so bounded and checked, a bad
line is `BadEvent`), and the lines this node sends as an Oracle (`to_remote`). The API turns them
into OpenAI's (or Ollama's) JSON; nothing between the boundary and the API rebuilds them.

Sidecar events (`from_sidecar`): what the daemon's event stream says about peers and the stream
itself. Peer events keep their payload for the peer table, which checks every field itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

MAX_CHARS_PER_TOKEN = 64  # no tokenizer's piece is longer: a claimed token count must cover the text
MAX_REMOTE_TEXT = 1 << 16  # one line's text from a peer
MAX_REASON = 32
MAX_MESSAGE = 1000
MAX_USAGE_KEYS = 16


class BadEvent(ValueError):
    """A line that is not a generation event of this protocol; the text says what is wrong."""


# -- generation ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Started:
    prompt_tokens: int
    cached_tokens: int = 0
    job: int | None = None  # the verifier's job id (drafts for this request name it)
    context_text: str | None = None  # with share_context: the prompt as scouts see it
    context_tokens: tuple[int, ...] | None = None
    oracle: str | None = None  # served by this Oracle peer (remote inference)


@dataclass(frozen=True)
class Token:
    text: str
    n: int  # tokens this event stands for (a step may accept several)
    ids: tuple[int, ...] | None = None  # None when unknown: an Oracle's token ids are not this node's
    logprobs: list[dict[str, Any]] | None = None  # as the verifier computed them, when asked for


@dataclass(frozen=True)
class Queued:
    """The request waits in an Oracle's queue."""

    position: int
    eta_s: float | None = None
    oracle: str | None = None


@dataclass(frozen=True)
class Finished:
    reason: str  # "stop", "length", "cancelled"...
    usage: dict[str, Any] = field(default_factory=dict)
    oracle: str | None = None


@dataclass(frozen=True)
class Failed:
    code: str
    message: str


GenerationEvent = Started | Token | Queued | Finished | Failed


def _int(value: Any, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _ids(value: Any) -> tuple[int, ...] | None:
    if not isinstance(value, list):
        return None
    return tuple(v for v in value if isinstance(v, int) and not isinstance(v, bool))


def from_verifier(d: dict[str, Any]) -> GenerationEvent:
    """One line of the verifier child's generation stream (this node's own process: trusted for
    content, still typed once here)."""
    kind = d.get("type")
    if kind == "start":
        return Started(
            prompt_tokens=_int(d.get("prompt_tokens")),
            cached_tokens=_int(d.get("cached_tokens")),
            job=_int(d.get("job"), -1) if "job" in d else None,
            context_text=d.get("context_text") if isinstance(d.get("context_text"), str) else None,
            context_tokens=_ids(d.get("context_tokens")),
            oracle=d.get("oracle") if isinstance(d.get("oracle"), str) else None,
        )
    if kind == "token":
        ids = _ids(d.get("ids"))
        n = _int(d.get("n"), len(ids) if ids is not None else 0)
        lps = d.get("logprobs")
        return Token(str(d.get("text", "")), n, ids, lps if isinstance(lps, list) else None)
    if kind == "queued":
        eta = d.get("eta_s")
        return Queued(_int(d.get("position")), _amount(eta), d.get("oracle"))
    if kind == "end":
        usage = d.get("usage")
        return Finished(
            str(d.get("finish_reason") or "stop"), usage if isinstance(usage, dict) else {}, d.get("oracle")
        )
    if kind == "error":
        return Failed(str(d.get("code") or "generation_failed"), str(d.get("message") or "the generation failed"))
    raise BadEvent(f"unknown event type {kind!r}")


def _amount(value: Any) -> float | None:
    """A finite, non-negative number as a float; None for anything else (bools included)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        return None
    return float(value)


def _usage(value: Any) -> dict[str, Any]:
    """A peer's usage figures: at most MAX_USAGE_KEYS named non-negative numbers."""
    if not isinstance(value, dict):
        return {}
    return {k[:64]: v for k, v in list(value.items())[:MAX_USAGE_KEYS] if isinstance(k, str) and _amount(v) is not None}


def from_remote(line: Any) -> GenerationEvent | None:
    """One line from an Oracle peer: every field typed and bounded, or BadEvent; None for a line
    type this node does not know (a newer peer's: skipped). A token line's count must cover its
    text (no piece is longer than MAX_CHARS_PER_TOKEN characters)."""
    if not isinstance(line, dict):
        raise BadEvent("a line that is not an object")
    kind = line.get("type")
    if kind == "queued":
        position, eta = line.get("position"), line.get("eta_s")
        return Queued(_int(position), _amount(eta))
    if kind == "start":
        return Started(prompt_tokens=max(_int(line.get("prompt_tokens")), 0))
    if kind == "token":
        text, n = line.get("text"), line.get("n")
        if (
            not isinstance(text, str)
            or isinstance(n, bool)
            or not isinstance(n, int)
            or n < 0
            or len(text) > min(MAX_CHARS_PER_TOKEN * max(n, 1), MAX_REMOTE_TEXT)
        ):
            raise BadEvent("a token line whose count does not match its text")
        return Token(text, n)
    if kind == "end":
        usage, reason = line.get("usage"), line.get("finish_reason", "stop")
        return Finished(reason[:MAX_REASON] if isinstance(reason, str) else "stop", _usage(usage))
    if kind == "error":
        message = line.get("message", "the Oracle failed")
        return Failed("peer_error", str(message)[:MAX_MESSAGE])
    return None


def to_remote(event: GenerationEvent) -> dict[str, Any]:
    """The line this node, as an Oracle, sends an asker for an event (the server adds the receipt
    to the end line)."""
    if isinstance(event, Started):
        return {"type": "start", "prompt_tokens": event.prompt_tokens}
    if isinstance(event, Token):
        return {"type": "token", "text": event.text, "n": event.n}
    if isinstance(event, Queued):
        return {"type": "queued", "position": event.position, "eta_s": event.eta_s}
    if isinstance(event, Finished):
        return {"type": "end", "finish_reason": event.reason, "usage": event.usage}
    return {"type": "error", "message": event.message}


# -- the sidecar's event stream -----------------------------------------------------------------


@dataclass(frozen=True)
class PeerEvent:
    """peer_connected, handshake or peer_disconnected: the payload goes to the peer table as is."""

    kind: str
    peer_id: str
    payload: dict[str, Any]


@dataclass(frozen=True)
class Subscribed:
    """The event stream (re)opened: what happened before it is read from the daemon."""


@dataclass(frozen=True)
class Lagged:
    """The node read the stream too slowly and `missed` events were dropped: read the peers again."""

    missed: int


@dataclass(frozen=True)
class Request:
    """A peer's request through the daemon: a draft (`result`), a verify or an infer request."""

    kind: str  # "result", "verify_request", "infer_request"
    sender: str
    payload: Any  # the peer's JSON, checked by whoever handles it
    request_id: Any = None
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Other:
    kind: str
    raw: dict[str, Any]


SidecarEvent = PeerEvent | Subscribed | Lagged | Request | Other

PEER_KINDS = ("peer_connected", "handshake", "peer_disconnected")


def from_sidecar(d: dict[str, Any]) -> SidecarEvent:
    """One event from the daemon's stream (GET /events)."""
    kind = str(d.get("type"))
    if kind in PEER_KINDS:
        return PeerEvent(kind, str(d.get("peer_id") or ""), d)
    if kind == "subscribed":
        return Subscribed()
    if kind == "lagged":
        return Lagged(_int(d.get("missed")))
    if kind in ("result", "verify_request", "infer_request"):
        payload = d.get("result") if kind == "result" else d.get("request")
        return Request(kind, str(d.get("from")), payload, d.get("request_id"), d)
    return Other(kind, d)
