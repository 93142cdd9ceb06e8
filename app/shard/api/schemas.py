"""OpenAI request bodies -> the verifier's GenerateRequest, with a clear 400 for anything wrong.

Parsing is strict about what would change the answer (n > 1, logprobs, tools are refused, not
ignored) and lenient about what does not (user, metadata, store).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from shard.api.errors import ApiError
from shard.api.wire.openai import (
    MAX_N,
    ROLES,
    UNSUPPORTED,
    ChatCompletionRequest,
    ChatMessage,
    CompletionRequest,
    GenerationRequest,
    JsonObjectFormat,
    JsonSchemaFormat,
)
from shard.verifier.jsonschema import SchemaError, check_schema, json_object_grammar, schema_to_gbnf
from shard.verifier.protocol import (
    GenerateRequest,
    ProtocolError,
    Sampling,
    check_tool_choice,
    check_tools,
    error_text,
)

__all__ = ["MAX_N", "ROLES", "UNSUPPORTED", "ParsedRequest", "parse_chat", "parse_completion"]

M = TypeVar("M", bound=BaseModel)
# Every problem with the tool declarations is reported against 'tools' (what clients look at).
PARAM_OF = {"tool_choice": "tools", "functions": "tools", "function_call": "tools"}


@dataclass
class ParsedRequest:
    model: str
    generate: GenerateRequest
    stream: bool
    include_usage: bool
    prompt_chars: int
    tool_names: frozenset[str] = frozenset()  # declared tools whose calls the output is parsed for
    tool_forced: bool = False  # 'required' or a named function: the whole output is a call
    parallel_tool_calls: bool = True
    n: int = 1


def _bad(message: str, param: str | None = None, code: str = "invalid_request") -> ApiError:
    return ApiError(400, message, code, param)


def _validated(model: type[M], body: Any) -> M:
    """`body` checked against the request model; the first problem as a 400 naming its field."""
    if not isinstance(body, dict):
        raise _bad("the request body must be a JSON object")
    for key, why in UNSUPPORTED.items():
        if body.get(key) not in (None, False, [], {}):
            raise _bad(why, key, "unsupported_parameter")
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        message, param = error_text(exc)
        raise _bad(message, PARAM_OF.get(param or "", param)) from None


def _grammar(req: GenerationRequest) -> str | None:
    fmt = req.response_format
    if isinstance(fmt, JsonObjectFormat):
        return json_object_grammar()
    if not isinstance(fmt, JsonSchemaFormat):
        return None
    try:
        return schema_to_gbnf(fmt.json_schema.schema_)
    except SchemaError as exc:
        raise _bad(f"the JSON schema cannot be turned into a grammar: {exc}", "response_format") from None


def _json_schema(req: GenerationRequest) -> dict[str, Any] | None:
    """The schema behind the grammar ({} for any JSON object), sent to remote Oracles instead of it."""
    fmt = req.response_format
    if isinstance(fmt, JsonSchemaFormat):
        return fmt.json_schema.schema_
    return {} if isinstance(fmt, JsonObjectFormat) else None


def _common(req: GenerationRequest) -> tuple[Sampling, int, list[str]]:
    """Sampling, token budget (0: none given) and stop strings."""
    stop = [req.stop] if isinstance(req.stop, str) else req.stop or []
    max_tokens = req.max_completion_tokens or req.max_tokens or 0
    return Sampling.from_params(req, _grammar(req)), max_tokens, [s for s in stop if s]


def _include_usage(req: GenerationRequest) -> bool:
    return bool(req.stream_options and req.stream_options.include_usage)


def _message_text(m: ChatMessage) -> str:
    if m.content is None:
        return ""
    return m.content if isinstance(m.content, str) else "".join(part.text for part in m.content)


def _check_size(chars: int, limit: int) -> None:
    if chars > limit:
        raise ApiError(
            400,
            f"the prompt is {chars} characters; this node accepts at most {limit} (max_prompt_chars)",
            "context_length_exceeded",
            "messages",
        )


def _tool_calls(m: ChatMessage) -> list[dict[str, Any]]:
    """An assistant message's tool calls (or legacy function_call), in OpenAI's shape, arguments as text."""
    if m.tool_calls is not None:
        calls = [(c.id, c.function.name, c.function.arguments) for c in m.tool_calls]
    elif isinstance(m.function_call, dict):
        fn = m.function_call
        if not isinstance(fn.get("name"), str) or not isinstance(fn.get("arguments", ""), str):
            raise _bad("messages: function_call must be {'name', 'arguments'}", "messages")
        calls = [("call_0", fn["name"], fn.get("arguments", ""))]
    else:
        return []
    return [
        {
            "id": str(cid if cid is not None else "")[:64],
            "type": "function",
            "function": {"name": name, "arguments": args or "{}"},
        }
        for cid, name, args in calls
    ]


def _clean_message(m: ChatMessage) -> dict[str, Any]:
    # Templates know 'system'; 'developer' is OpenAI's newer name for it; 'function' the old 'tool'.
    role = {"developer": "system", "function": "tool"}.get(m.role, m.role)
    out: dict[str, Any] = {"role": role, "content": _message_text(m)}
    if role == "assistant":
        calls = _tool_calls(m)
        if calls:
            out["tool_calls"] = calls
    elif role == "tool":
        out["tool_call_id"] = str(m.tool_call_id or m.name or "")[:64]
        if isinstance(m.name, str):
            out["name"] = m.name[:64]
    return out


def _tool_params(body: dict[str, Any]) -> tuple[list[dict[str, Any]] | None, Any]:
    """tools and tool_choice (legacy functions/function_call mapped onto them), checked beyond their
    types: unique names, bounded size, a tool_choice naming a declared tool, compilable schemas."""
    spec = {"tools": body.get("tools"), "tool_choice": body.get("tool_choice")}
    if spec["tools"] is None and body.get("functions") is not None:
        spec["tools"] = [{"type": "function", "function": f} for f in body["functions"]]
        fc = body.get("function_call")
        spec["tool_choice"] = {"type": "function", "function": fc} if isinstance(fc, dict) else fc
    try:
        tools = check_tools(spec) or None
        choice = check_tool_choice(spec, tools)
        for t in tools or ():
            if t["function"].get("parameters") is not None:
                check_schema(t["function"]["parameters"])
    except (ProtocolError, SchemaError) as exc:
        raise _bad(str(exc), "tools") from None
    return tools, choice


def parse_chat(body: Any, max_prompt_chars: int) -> ParsedRequest:
    req = _validated(ChatCompletionRequest, body)
    sampling, max_tokens, stop = _common(req)
    clean = [_clean_message(m) for m in req.messages]
    tools, choice = _tool_params(body)
    chars = sum(
        len(m["content"]) + sum(len(c["function"]["arguments"]) for c in m.get("tool_calls", ())) for m in clean
    )
    _check_size(chars + (len(json.dumps(tools)) if tools else 0), max_prompt_chars)
    if req.top_logprobs is not None and not req.logprobs:
        raise _bad("'top_logprobs' needs 'logprobs': true", "top_logprobs")
    gen = GenerateRequest(
        messages=clean,
        max_tokens=max_tokens,
        stop=stop,
        sampling=sampling,
        tools=tools,
        tool_choice=choice,
        parallel_tool_calls=req.parallel_tool_calls,
        logprobs=(req.top_logprobs or 0) if req.logprobs else -1,
        json_schema=_json_schema(req),
    )
    names = frozenset(t["function"]["name"] for t in tools or ()) if choice != "none" else frozenset()
    forced = bool(names) and choice != "auto"
    return ParsedRequest(
        req.model, gen, req.stream, _include_usage(req), chars, names, forced, req.parallel_tool_calls, req.n or 1
    )


def parse_completion(body: Any, max_prompt_chars: int) -> ParsedRequest:
    req = _validated(CompletionRequest, body)
    sampling, max_tokens, stop = _common(req)
    prompt = req.prompt if isinstance(req.prompt, str) else req.prompt[0]
    if req.echo or (req.best_of or 1) not in (1, req.n or 1):
        raise _bad("echo and best_of are not supported", None, "unsupported_parameter")
    suffix = req.suffix or ""
    _check_size(len(prompt) + len(suffix), max_prompt_chars)
    gen = GenerateRequest(
        prompt=prompt,
        max_tokens=max_tokens or 16,
        stop=stop,
        sampling=sampling,
        suffix=suffix,
        logprobs=-1 if req.logprobs is None else req.logprobs,  # the legacy API: a count of alternatives
        json_schema=_json_schema(req),
    )
    return ParsedRequest(req.model, gen, req.stream, _include_usage(req), len(prompt), n=req.n or 1)
