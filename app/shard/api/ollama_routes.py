"""Ollama's API on the same port (/api/chat, /api/generate, /api/tags, /api/show, /api/ps, /api/embed,
/api/version), in the shapes the `ollama` Python package parses, for apps that speak only Ollama.

A request is translated into the OpenAI body the rest of the API already checks (so both are bounded
and refused alike), and the events are written back as Ollama's NDJSON lines: `message.content` or
`response` per line, then a last line with `done: true`, `done_reason` and the counts and durations.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from shard.api.errors import ApiError, http_error
from shard.api.keys import NODE, SETTINGS
from shard.api.openai_routes import events_for, read_json
from shard.api.schemas import ParsedRequest, parse_chat, parse_completion
from shard.api.tools import parse as tool_parse
from shard.errors import ShardError
from shard.events import Finished, GenerationEvent, Token

OLLAMA_VERSION = "0.12.0"  # the API shape followed; clients compare it for features
# Each handler registers itself (aiohttp's route table): one place per route, no second list.
routes = web.RouteTableDef()

# Ollama option -> OpenAI field; the others (num_ctx, repeat_penalty, mirostat...) change nothing here.
OPTIONS = {
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "min_p": "min_p",
    "seed": "seed",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
    "stop": "stop",
}


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)  # Ollama's error shape


def _openai_body(body: Any, chat: bool) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    out: dict[str, Any] = {"model": _model_name(body.get("model")), "stream": body.get("stream", True)}
    options = body.get("options") or {}
    if not isinstance(options, dict):
        raise ApiError(400, "'options' must be an object", param="options")
    for key, target in OPTIONS.items():
        if options.get(key) is not None:
            out[target] = options[key]
    predict = options.get("num_predict")
    if isinstance(predict, int) and not isinstance(predict, bool) and predict > 0:
        out["max_tokens"] = predict
    fmt = body.get("format")
    if fmt == "json":
        out["response_format"] = {"type": "json_object"}
    elif isinstance(fmt, dict):
        out["response_format"] = {"type": "json_schema", "json_schema": {"name": "format", "schema": fmt}}
    elif fmt not in (None, ""):
        raise ApiError(400, "'format' must be \"json\" or a JSON schema", param="format")
    if chat:
        messages = body.get("messages")
        if not isinstance(messages, list):
            raise ApiError(400, "'messages' must be a list", param="messages")
        out["messages"] = [_message(m, i) for i, m in enumerate(messages)]
        if body.get("tools") is not None:
            out["tools"] = body["tools"]
    else:
        if body.get("suffix"):
            out["suffix"] = body["suffix"]
        prompt = body.get("prompt", "")
        if not isinstance(prompt, str):
            raise ApiError(400, "'prompt' must be a string", param="prompt")
        system = body.get("system")
        if body.get("raw"):
            out["prompt"] = prompt
        else:  # not raw: the model's chat template applies, as Ollama's own template would
            out["messages"] = (
                [{"role": "system", "content": system}] if isinstance(system, str) and system else []
            ) + [{"role": "user", "content": prompt}]
    return out


def _message(m: Any, i: int) -> dict[str, Any]:
    if not isinstance(m, dict):
        raise ApiError(400, f"messages[{i}] must be an object", param="messages")
    if m.get("images"):
        raise ApiError(400, "images are not supported by this node's model", param="messages")
    out = {k: m[k] for k in ("role", "content", "tool_name") if k in m}
    if m.get("tool_calls"):  # Ollama sends arguments as objects; OpenAI as text
        calls = m["tool_calls"] if isinstance(m["tool_calls"], list) else []
        out["tool_calls"] = [
            {
                "id": f"call_{j}",
                "type": "function",
                "function": {
                    "name": (c.get("function") or {}).get("name"),
                    "arguments": json.dumps((c.get("function") or {}).get("arguments") or {}),
                },
            }
            for j, c in enumerate(calls)
            if isinstance(c, dict)
        ]
    if m.get("role") == "tool" and "tool_name" in m:
        out["name"] = m["tool_name"]
    return out


def _model_name(name: Any) -> str:
    """'tiny:latest' is Ollama's name for 'tiny'."""
    if not isinstance(name, str):
        return ""
    return name[: -len(":latest")] if name.endswith(":latest") else name


def _tag(name: str) -> str:
    return name if ":" in name else name + ":latest"


def _counts(usage: dict[str, Any], started: float) -> dict[str, Any]:
    total_ns = int((time.monotonic() - started) * 1e9)
    ttft_ns = int((usage.get("ttft_ms") or 0) * 1e6)
    return {
        "total_duration": total_ns,
        "load_duration": 0,
        "prompt_eval_count": usage.get("prompt_tokens", 0),
        "prompt_eval_duration": ttft_ns,
        "eval_count": usage.get("completion_tokens", 0),
        "eval_duration": max(total_ns - ttft_ns, 0),
    }


async def _run(request: web.Request, chat: bool) -> web.StreamResponse:
    node = request.app[NODE]
    try:
        body = await read_json(request)
        oa = _openai_body(body, chat)
        if not chat and not oa.get("prompt") and not any(m.get("content") for m in oa.get("messages", [])):
            # An empty prompt loads the model in Ollama; here it is loaded already.
            model = node.resolve_model(oa["model"])
            return web.json_response(
                {"model": _tag(model), "created_at": _now(), "response": "", "done": True, "done_reason": "load"}
            )
        parse = parse_chat if "messages" in oa else parse_completion
        parsed: ParsedRequest = parse(oa, request.app[SETTINGS]().max_prompt_chars)
        if not parsed.generate.max_tokens:
            parsed.generate.max_tokens = request.app[SETTINGS]().default_max_tokens
        model = node.resolve_model(parsed.model)
    except (ApiError, ShardError) as exc:
        err = http_error(exc)
        return _error(err.status, err.message)
    started = time.monotonic()
    events = events_for(request, parsed.generate, model)
    head = {"model": _tag(model)}

    def line(text: str, done: bool = False) -> dict[str, Any]:
        if chat:
            return {**head, "created_at": _now(), "message": {"role": "assistant", "content": text}, "done": done}
        return {**head, "created_at": _now(), "response": text, "done": done}

    def last(text: str, event: Finished) -> dict[str, Any]:
        out = line(text, True)
        if chat and parsed.tool_names:
            content, calls = tool_parse(text, set(parsed.tool_names))
            if calls:
                out["message"] = {
                    "role": "assistant",
                    "content": content,
                    "tool_calls": [{"function": {"name": c.name, "arguments": json.loads(c.arguments)}} for c in calls],
                }
        reason = "length" if event.reason == "length" else "stop"
        return {**out, "done_reason": reason, **_counts(event.usage, started)}

    try:
        try:
            first = await anext(events)
        except ApiError as err:
            return _error(err.status, err.message)
        if not parsed.stream:
            text = [first.text] if isinstance(first, Token) else []
            async for event in events:
                if isinstance(event, Token):
                    text.append(event.text)
                elif isinstance(event, Finished):
                    return web.json_response(last("".join(text), event))
            return _error(503, "the model ended the stream early")
        return await _stream(request, events, first, line, last, bool(chat and parsed.tool_names))
    finally:
        await events.aclose()


async def _stream(
    request: web.Request,
    events: AsyncIterator[GenerationEvent],
    first: GenerationEvent,
    line: Any,
    last: Any,
    hold: bool,
) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    origin = request.headers.get("Origin")
    if origin:
        resp.headers.update({"Access-Control-Allow-Origin": origin, "Vary": "Origin"})
    await resp.prepare(request)

    async def send(obj: dict[str, Any]) -> None:
        await resp.write(json.dumps(obj, ensure_ascii=False).encode() + b"\n")

    held: list[str] = []  # with tools, the text goes out whole in the last line (it may be a call)
    try:
        async for event in _achain(first, events):
            if isinstance(event, Token) and event.text:
                if hold:
                    held.append(event.text)
                else:
                    await send(line(event.text))
            elif isinstance(event, Finished):
                await send(last("".join(held), event))
                break
    except ApiError as err:
        await send({"error": err.message})
    await resp.write_eof()
    return resp


async def _achain(first: GenerationEvent, rest: AsyncIterator[GenerationEvent]) -> AsyncIterator[GenerationEvent]:
    yield first
    async for e in rest:
        yield e


@routes.post("/api/chat", name="ollama_chat")
async def chat(request: web.Request) -> web.StreamResponse:
    return await _run(request, chat=True)


@routes.post("/api/generate", name="ollama_generate")
async def generate(request: web.Request) -> web.StreamResponse:
    return await _run(request, chat=False)


def _details(info: dict[str, Any]) -> dict[str, Any]:
    desc = str(info.get("description", ""))  # llama.cpp's "llama 135M Q4_1"
    parts = desc.split()
    n = int(info.get("n_params") or 0)
    size = f"{n / 1e9:.1f}B" if n >= 1e9 else f"{n / 1e6:.0f}M"
    return {
        "parent_model": "",
        "format": "gguf",
        "family": parts[0] if parts else "",
        "families": parts[:1],
        "parameter_size": size,
        "quantization_level": parts[-1] if len(parts) >= 3 else "",
    }


def _listing(request: web.Request) -> list[dict[str, Any]]:
    node = request.app[NODE]
    info = node.verifier.model_info if node.verifier is not None else {}
    out = []
    for name in node.model_ids():
        size = int(info.get("size_bytes") or 0)
        digest = hashlib.sha256(f"{name}:{info.get('path', '')}:{size}".encode()).hexdigest()
        modified = datetime.fromtimestamp(node.started_at, UTC).isoformat().replace("+00:00", "Z")
        out.append(
            {
                "name": _tag(name),
                "model": _tag(name),
                "modified_at": modified,
                "size": size,
                "digest": digest,
                "details": _details(info),
            }
        )
    return out


@routes.get("/api/tags", name="ollama_tags")
async def tags(request: web.Request) -> web.Response:
    return web.json_response({"models": _listing(request)})


@routes.get("/api/ps", name="ollama_ps")
async def ps(request: web.Request) -> web.Response:
    node = request.app[NODE]
    running = node.verifier is not None and node.verifier.supervisor.ready
    models = [
        {**m, "expires_at": "2999-01-01T00:00:00Z", "size_vram": 0, "context_length": request.app[SETTINGS]().n_ctx}
        for m in (_listing(request) if running else [])
    ]
    return web.json_response({"models": models})


@routes.post("/api/show", name="ollama_show")
async def show(request: web.Request) -> web.Response:
    node = request.app[NODE]
    body = await read_json(request)
    name = _model_name((body or {}).get("model") or (body or {}).get("name")) if isinstance(body, dict) else ""
    try:
        model = node.resolve_model(name, allow_default=False)
    except (ApiError, ShardError) as exc:
        err = http_error(exc)
        return _error(err.status, err.message)
    info = node.verifier.model_info if node.verifier is not None else {}
    details = _details(info)
    caps = ["completion", "tools"] + (["embedding"] if node.verifier is not None else [])
    return web.json_response(
        {
            "modelfile": f"FROM {info.get('path', model)}\n",
            "parameters": "",
            "template": "",
            "license": "",
            "details": details,
            "capabilities": caps,
            "model_info": {
                "general.architecture": details["family"],
                "general.parameter_count": info.get("n_params", 0),
                f"{details['family'] or 'model'}.context_length": info.get("n_ctx_train", 0),
            },
            "modified_at": datetime.fromtimestamp(node.started_at, UTC).isoformat().replace("+00:00", "Z"),
        }
    )


@routes.get("/api/version", name="ollama_version")
async def version(request: web.Request) -> web.Response:
    return web.json_response({"version": OLLAMA_VERSION})


def add_routes(app: web.Application) -> None:
    app.add_routes(routes)
