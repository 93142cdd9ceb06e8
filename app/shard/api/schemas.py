"""OpenAI request bodies -> the verifier's GenerateRequest, with a clear 400 for anything wrong.

Parsing is strict about what would change the answer (n > 1, logprobs, tools are refused, not
ignored) and lenient about what does not (user, metadata, store).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from llama_cpp.llama_grammar import JSON_GBNF

from shard.api.errors import ApiError
from shard.verifier.jsonschema import SchemaError, check_schema, schema_to_gbnf
from shard.verifier.protocol import (
    MAX_TOKENS_PER_REQUEST,
    GenerateRequest,
    ProtocolError,
    Sampling,
    _tool_choice,
    _tools,
)

ROLES = ("system", "developer", "user", "assistant", "tool", "function")
UNSUPPORTED = {
    "logit_bias": "logit_bias is not supported",
}
MAX_N = 16  # choices per request (each takes a slot, side by side)


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


def _number(body: dict[str, Any], key: str, lo: float, hi: float) -> float | None:
    v = body.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise _bad(f"'{key}' must be a number", key)
    if not lo <= v <= hi:
        raise _bad(f"'{key}' must be between {lo:g} and {hi:g}, got {v}", key)
    return float(v)


def _integer(body: dict[str, Any], key: str, lo: int, hi: int) -> int | None:
    v = body.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise _bad(f"'{key}' must be an integer", key)
    if not lo <= v <= hi:
        raise _bad(f"'{key}' must be between {lo} and {hi}, got {v}", key)
    return v


def _stop(body: dict[str, Any]) -> list[str]:
    stop = body.get("stop")
    if stop is None:
        return []
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop) or len(stop) > 4:
        raise _bad("'stop' must be a string or a list of at most 4 strings", "stop")
    return [s for s in stop if s]


def _grammar(body: dict[str, Any]) -> str | None:
    fmt = body.get("response_format")
    if fmt is None:
        return None
    if not isinstance(fmt, dict) or fmt.get("type") not in ("text", "json_object", "json_schema"):
        raise _bad("'response_format.type' must be 'text', 'json_object' or 'json_schema'", "response_format")
    if fmt["type"] == "text":
        return None
    if fmt["type"] == "json_object":
        return JSON_GBNF
    spec = fmt.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, dict) else None
    if not isinstance(schema, dict):
        raise _bad("'response_format.json_schema.schema' must be a JSON Schema object", "response_format")
    try:
        return schema_to_gbnf(schema)
    except SchemaError as exc:
        raise _bad(f"the JSON schema cannot be turned into a grammar: {exc}", "response_format") from None


def _json_schema(body: dict[str, Any]) -> dict[str, Any] | None:
    """The schema behind the grammar ({} for any JSON object), sent to remote Oracles instead of it."""
    fmt = body.get("response_format")
    if not isinstance(fmt, dict) or fmt.get("type") not in ("json_object", "json_schema"):
        return None
    return fmt["json_schema"]["schema"] if fmt["type"] == "json_schema" else {}


def _common(body: Any, settings_max_chars: int) -> tuple[str, Sampling, bool, bool, int, list[str]]:
    if not isinstance(body, dict):
        raise _bad("the request body must be a JSON object")
    for key, why in UNSUPPORTED.items():
        if body.get(key) not in (None, False, [], {}):
            raise _bad(why, key, "unsupported_parameter")
    _integer(body, "n", 1, MAX_N)
    model = body.get("model", "")
    if not isinstance(model, str):
        raise _bad("'model' must be a string", "model")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise _bad("'stream' must be true or false", "stream")
    opts = body.get("stream_options") or {}
    if not isinstance(opts, dict):
        raise _bad("'stream_options' must be an object", "stream_options")
    seed = _integer(body, "seed", -(2**63), 2**64 - 1)
    defaults = Sampling()
    sampling = Sampling(
        temperature=_v(_number(body, "temperature", 0.0, 2.0), defaults.temperature),
        top_p=_v(_number(body, "top_p", 0.0, 1.0), defaults.top_p),
        top_k=_v(_integer(body, "top_k", 0, 1 << 20), defaults.top_k),
        min_p=_v(_number(body, "min_p", 0.0, 1.0), defaults.min_p),
        presence_penalty=_v(_number(body, "presence_penalty", -2.0, 2.0), 0.0),
        frequency_penalty=_v(_number(body, "frequency_penalty", -2.0, 2.0), 0.0),
        seed=None if seed is None else seed & 0xFFFFFFFFFFFFFFFF,
        grammar=_grammar(body),
    )
    max_tokens = _integer(body, "max_completion_tokens", 1, MAX_TOKENS_PER_REQUEST)
    if max_tokens is None:
        max_tokens = _integer(body, "max_tokens", 1, MAX_TOKENS_PER_REQUEST)
    return model, sampling, stream, bool(opts.get("include_usage")), max_tokens or 0, _stop(body)


def _v(value: Any, default: Any) -> Any:
    return default if value is None else value


def _message_text(content: Any, i: int) -> str:
    if isinstance(content, str):
        return content
    if content is None:
        return ""
    if isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise _bad(f"messages[{i}].content: only text parts are supported", "messages")
            parts.append(part["text"])
        return "".join(parts)
    raise _bad(f"messages[{i}].content must be a string or a list of text parts", "messages")


def _check_size(chars: int, limit: int) -> None:
    if chars > limit:
        raise ApiError(
            400,
            f"the prompt is {chars} characters; this node accepts at most {limit} (max_prompt_chars)",
            "context_length_exceeded",
            "messages",
        )


def _tool_calls(m: dict[str, Any], i: int) -> list[dict[str, Any]]:
    """An assistant message's tool calls (or legacy function_call), in OpenAI's shape, arguments as text."""
    calls = m.get("tool_calls")
    if calls is None and isinstance(m.get("function_call"), dict):
        calls = [{"id": "call_0", "type": "function", "function": m["function_call"]}]
    if calls is None:
        return []
    out = []
    for c in calls if isinstance(calls, list) else [None]:
        fn = c.get("function") if isinstance(c, dict) else None
        if (
            not isinstance(c, dict)
            or not isinstance(fn, dict)
            or not isinstance(fn.get("name"), str)
            or not isinstance(fn.get("arguments", ""), str)
        ):
            raise _bad(
                f"messages[{i}].tool_calls must be a list of {{'id', 'type': 'function', 'function': {{'name', "
                "'arguments'}}",
                "messages",
            )
        out.append(
            {
                "id": str(c.get("id", ""))[:64],
                "type": "function",
                "function": {"name": fn["name"], "arguments": fn.get("arguments") or "{}"},
            }
        )
    return out


def _clean_message(m: Any, i: int) -> dict[str, Any]:
    if not isinstance(m, dict):
        raise _bad(f"messages[{i}] must be an object", "messages")
    role = m.get("role")
    if role not in ROLES:
        raise _bad(f"messages[{i}].role must be one of {', '.join(ROLES)}", "messages")
    # Templates know 'system'; 'developer' is OpenAI's newer name for it; 'function' the old 'tool'.
    role = {"developer": "system", "function": "tool"}.get(role, role)
    out: dict[str, Any] = {"role": role, "content": _message_text(m.get("content"), i)}
    if role == "assistant":
        calls = _tool_calls(m, i)
        if calls:
            out["tool_calls"] = calls
    elif role == "tool":
        out["tool_call_id"] = str(m.get("tool_call_id") or m.get("name") or "")[:64]
        if isinstance(m.get("name"), str):
            out["name"] = m["name"][:64]
    return out


def _tool_params(body: dict[str, Any]) -> tuple[list[dict[str, Any]] | None, Any, bool]:
    """tools, tool_choice, parallel_tool_calls (legacy functions/function_call mapped onto them)."""
    spec = {"tools": body.get("tools"), "tool_choice": body.get("tool_choice")}
    if spec["tools"] is None and body.get("functions") is not None:
        fns = body["functions"]
        spec["tools"] = [{"type": "function", "function": f} for f in fns] if isinstance(fns, list) else fns
        fc = body.get("function_call")
        spec["tool_choice"] = {"type": "function", "function": fc} if isinstance(fc, dict) else fc
    parallel = body.get("parallel_tool_calls", True)
    if not isinstance(parallel, bool):
        raise _bad("'parallel_tool_calls' must be true or false", "parallel_tool_calls")
    try:
        tools = _tools(spec) or None
        choice = _tool_choice(spec, tools)
        for t in tools or ():
            if t["function"].get("parameters") is not None:
                check_schema(t["function"]["parameters"])
    except (ProtocolError, SchemaError) as exc:
        raise _bad(str(exc), "tools") from None
    return tools, choice, parallel


def parse_chat(body: Any, max_prompt_chars: int) -> ParsedRequest:
    model, sampling, stream, include_usage, max_tokens, stop = _common(body, max_prompt_chars)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _bad("'messages' must be a non-empty list", "messages")
    clean = [_clean_message(m, i) for i, m in enumerate(messages)]
    tools, choice, parallel = _tool_params(body)
    chars = sum(
        len(m["content"]) + sum(len(c["function"]["arguments"]) for c in m.get("tool_calls", ())) for m in clean
    )
    _check_size(chars + (len(json.dumps(tools)) if tools else 0), max_prompt_chars)
    logprobs = body.get("logprobs")
    if logprobs is not None and not isinstance(logprobs, bool):
        raise _bad("'logprobs' must be true or false", "logprobs")
    top = _integer(body, "top_logprobs", 0, 20)
    if top is not None and not logprobs:
        raise _bad("'top_logprobs' needs 'logprobs': true", "top_logprobs")
    gen = GenerateRequest(
        messages=clean,
        max_tokens=max_tokens,
        stop=stop,
        sampling=sampling,
        tools=tools,
        tool_choice=choice,
        parallel_tool_calls=parallel,
        logprobs=(top or 0) if logprobs else -1,
        json_schema=_json_schema(body),
    )
    names = frozenset(t["function"]["name"] for t in tools or ()) if choice != "none" else frozenset()
    return ParsedRequest(
        model, gen, stream, include_usage, chars, names, bool(names) and choice != "auto", parallel, body.get("n") or 1
    )


def parse_completion(body: Any, max_prompt_chars: int) -> ParsedRequest:
    model, sampling, stream, include_usage, max_tokens, stop = _common(body, max_prompt_chars)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise _bad("'prompt' must be a string (one prompt per request)", "prompt")
    if body.get("echo") or (body.get("best_of") or 1) not in (1, body.get("n") or 1):
        raise _bad("echo and best_of are not supported", None, "unsupported_parameter")
    suffix = body.get("suffix") or ""
    if not isinstance(suffix, str):
        raise _bad("'suffix' must be a string", "suffix")
    _check_size(len(prompt) + len(suffix), max_prompt_chars)
    top = _integer(body, "logprobs", 0, 20)  # the legacy API: a count of alternatives
    gen = GenerateRequest(
        prompt=prompt,
        max_tokens=max_tokens or 16,
        stop=stop,
        sampling=sampling,
        suffix=suffix,
        logprobs=-1 if top is None else top,
        json_schema=_json_schema(body),
    )
    return ParsedRequest(model, gen, stream, include_usage, len(prompt), n=body.get("n") or 1)
