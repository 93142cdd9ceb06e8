"""A remote asker's request, bounded before it reaches this node's verifier.

Everything in it comes from a peer, so every parameter has a limit here, whatever the sender's own
API allowed: no raw grammar (llama.cpp's GBNF parser recurses per nesting level and a deep one
crashes the verifier), only a JSON schema that this node compiles itself after checking its depth
and size; at most as many stop strings as the local API takes, each short (every stop string is
checked on every token in the engine thread); a prompt no longer than the local API's limit; and
a token budget no larger than this node's context.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from shard.config import Settings
from shard.network.messages import InferRequest
from shard.verifier.jsonschema import SchemaError, depth, json_object_grammar, schema_to_gbnf
from shard.verifier.protocol import GenerateRequest

MAX_STOP = 4  # what the local API accepts
MAX_STOP_CHARS = 128
MAX_MESSAGES = 256
MAX_SCHEMA_BYTES = 16 * 1024
MAX_SCHEMA_DEPTH = 16
ROLES = ("system", "user", "assistant", "tool")
MESSAGE_KEYS = {"role", "content", "tool_calls", "tool_call_id", "name"}  # GenerateRequest types each


class RemoteRequestError(ValueError):
    """The request exceeds a limit or uses what peers may not send; the text says which."""


def compile_schema(schema: dict[str, Any]) -> str:
    """A GBNF grammar for `schema` ({} means any JSON object), compiled here within limits tighter
    than a local client's (a peer's schema is smaller and shallower than any real output format)."""
    if not schema:
        return json_object_grammar()
    if len(json.dumps(schema).encode()) > MAX_SCHEMA_BYTES:
        raise RemoteRequestError(f"'json_schema' is larger than {MAX_SCHEMA_BYTES} bytes")
    if depth(schema, MAX_SCHEMA_DEPTH) > MAX_SCHEMA_DEPTH:
        raise RemoteRequestError(f"'json_schema' is nested deeper than {MAX_SCHEMA_DEPTH} levels")
    try:
        return schema_to_gbnf(schema)
    except SchemaError as exc:
        raise RemoteRequestError(f"'json_schema' cannot be compiled: {exc}") from None


def bounded(req: InferRequest, settings: Settings) -> GenerateRequest:
    """The verifier request for a peer's `req`, every parameter within this node's limits."""
    raw = req.generate
    sampling = raw.get("sampling")
    if isinstance(sampling, dict) and sampling.get("grammar"):
        raise RemoteRequestError("peers may not send grammars: send 'json_schema' and this node compiles it")
    if raw.get("tokens") is not None:
        raise RemoteRequestError("peers send 'prompt' or 'messages', not token ids")
    stop = raw.get("stop") or []
    if (
        not isinstance(stop, list)
        or len(stop) > MAX_STOP
        or not all(isinstance(s, str) and len(s) <= MAX_STOP_CHARS for s in stop)
    ):
        raise RemoteRequestError(f"'stop' must be at most {MAX_STOP} strings of at most {MAX_STOP_CHARS} characters")
    messages = raw.get("messages")
    if messages is not None and (
        not isinstance(messages, list)
        or len(messages) > MAX_MESSAGES
        or not all(
            isinstance(m, dict)
            and set(m) <= MESSAGE_KEYS
            and m.get("role") in ROLES
            and isinstance(m.get("content"), str)
            for m in messages
        )
    ):
        raise RemoteRequestError(f"'messages' must be at most {MAX_MESSAGES} objects with a role and a string content")
    schema = raw.get("json_schema")
    if schema is not None and not isinstance(schema, dict):
        raise RemoteRequestError("'json_schema' must be an object")
    request = GenerateRequest.from_dict(raw)  # types and ranges (ProtocolError)
    chars = len(request.prompt or "") + sum(len(m["content"]) for m in request.messages or [])
    if chars > settings.max_prompt_chars:
        raise RemoteRequestError(
            f"the prompt is {chars} characters; this node accepts at most {settings.max_prompt_chars}"
        )
    budget = settings.n_ctx  # 0 ("until the context is full") and anything larger end at the context anyway
    max_tokens = min(request.max_tokens or budget, budget)
    checked = dataclasses.replace(request.sampling, grammar=compile_schema(schema) if schema is not None else None)
    return dataclasses.replace(
        request,
        max_tokens=max_tokens,
        sampling=checked,
        continuation=req.continuation,
        json_schema=schema,
        share_context=False,
        drafter="none",
    )
