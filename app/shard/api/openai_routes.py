"""POST /v1/chat/completions, POST /v1/completions, GET /v1/models (OpenAI's shapes, streaming as SSE)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from typing import Any, AsyncIterator

from aiohttp import web

from shard.api.errors import ApiError, error_body
from shard.api.keys import NODE
from shard.api.schemas import ParsedRequest, parse_chat, parse_completion
from shard.credit.scheduler import Priority, QueueFull
from shard.verifier.client import VerifierRequestError, VerifierUnavailable

log = logging.getLogger("shard.api")


async def read_json(request: web.Request) -> Any:
    raw = await request.read()  # bounded by client_max_size: 413 beyond it
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"the request body is not valid JSON: {exc}", "invalid_json") from None


def _usage(u: dict[str, Any]) -> dict[str, Any]:
    return {
        "prompt_tokens": u.get("prompt_tokens", 0),
        "completion_tokens": u.get("completion_tokens", 0),
        "total_tokens": u.get("total_tokens", 0),
        "prompt_tokens_details": {"cached_tokens": u.get("cached_tokens", 0)},
    }


class _Shape:
    """What differs between chat and text completions: object names and where the text goes."""

    def __init__(self, chat: bool, model: str) -> None:
        self.chat = chat
        self.model = model
        self.id = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
        self.created = int(time.time())

    def _envelope(self, obj: str, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model,
                "system_fingerprint": None, "choices": choices}

    def chunk(self, text: str | None, finish: str | None, first: bool = False) -> dict[str, Any]:
        if self.chat:
            delta: dict[str, Any] = {}
            if first:
                delta["role"] = "assistant"
            if text is not None:
                delta["content"] = text
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return self._envelope("chat.completion.chunk", [choice])
        return self._envelope("text_completion", [{"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}])

    def usage_chunk(self, usage: dict[str, Any]) -> dict[str, Any]:
        return {**self._envelope("chat.completion.chunk" if self.chat else "text_completion", []), "usage": _usage(usage)}

    def whole(self, text: str, finish: str, usage: dict[str, Any]) -> dict[str, Any]:
        if self.chat:
            choice = {"index": 0, "message": {"role": "assistant", "content": text, "refusal": None}, "logprobs": None, "finish_reason": finish}
            body = self._envelope("chat.completion", [choice])
        else:
            body = self._envelope("text_completion", [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}])
        return {**body, "usage": _usage(usage)}


def _finish_reason(reason: str) -> str:
    return "length" if reason == "length" else "stop"


async def _events(request: web.Request, parsed: ParsedRequest, model: str) -> AsyncIterator[dict[str, Any]]:
    node = request.app[NODE]
    try:
        async with node.scheduler.admit(Priority.OWNER):
            async with contextlib.aclosing(node.generation(parsed.generate, model)) as events:
                async for event in events:
                    if event["type"] == "error":
                        raise VerifierUnavailable(event["message"])
                    if event["type"] == "end":
                        usage = event["usage"]
                        node.metrics.record_usage(usage)
                        log.info("%s: %d prompt + %d completion tokens, %s tok/s, finish %s", request.path, usage.get("prompt_tokens", 0),
                                 usage.get("completion_tokens", 0), usage.get("tokens_per_s") or "-", event["finish_reason"])
                        yield event
                        return
                    yield event
            raise VerifierUnavailable("the verifier ended the stream early")
    except QueueFull as exc:
        raise ApiError(503, str(exc), "queue_full", headers={"Retry-After": str(exc.retry_after_s)}) from None
    except VerifierRequestError as exc:
        code = "context_length_exceeded" if "context" in str(exc) else "invalid_request"
        raise ApiError(400, str(exc), code) from None
    except VerifierUnavailable as exc:
        raise ApiError(503, str(exc), "verifier_unavailable", headers={"Retry-After": "2"}) from None


async def _complete(request: web.Request, parsed: ParsedRequest, chat: bool) -> web.StreamResponse:
    node = request.app[NODE]
    await node.look_up_model(parsed.model)
    shape = _Shape(chat, node.resolve_model(parsed.model))
    started = time.monotonic()
    events = _events(request, parsed, shape.model)
    try:
        first = await anext(events)  # errors before any output become a plain HTTP error
        if not parsed.stream:
            text: list[str] = []
            async for event in events:
                if event["type"] == "token":
                    text.append(event["text"])
                elif event["type"] == "end":
                    return web.json_response(shape.whole("".join(text), _finish_reason(event["finish_reason"]), event["usage"]))
            raise ApiError(503, "the verifier ended the stream early", "verifier_unavailable")
        return await _stream(request, shape, first, events, parsed.include_usage)
    except (ConnectionResetError, asyncio.CancelledError):
        node.metrics.client_disconnects.inc()  # the finally below closes the verifier stream: it frees the slot
        raise
    finally:
        await events.aclose()
        node.metrics.duration.observe(time.monotonic() - started)


async def _stream(request: web.Request, shape: _Shape, first: dict[str, Any], events: AsyncIterator[dict[str, Any]],
                  include_usage: bool) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    cors = request.headers.get("Origin")
    if cors:  # the Host/Origin middleware admitted it; a prepared response can no longer be changed there
        resp.headers.update({"Access-Control-Allow-Origin": cors, "Vary": "Origin"})
    await resp.prepare(request)

    stall_s = request.app[NODE].settings.stall_timeout_s

    async def write(data: bytes) -> None:
        try:  # a client that stops reading fills the socket; past the limit it counts as gone
            await asyncio.wait_for(resp.write(data), stall_s)
        except asyncio.TimeoutError:
            log.warning("stream %s: the client read nothing for %.0fs; ending it", shape.id, stall_s)
            raise ConnectionResetError("client stalled") from None

    async def send(obj: dict[str, Any]) -> None:
        await write(b"data: " + json.dumps(obj, ensure_ascii=False).encode() + b"\n\n")

    async def note(event: dict[str, Any]) -> None:
        # An SSE comment (clients skip it): where a request waiting at an Oracle stands.
        await write(f": queued at Oracle {event.get('oracle')}: place {event.get('position')}, about {event.get('eta_s')} s\n\n".encode())

    await send(shape.chunk("", None, first=True))
    if first["type"] == "queued":
        await note(first)
    try:
        async for event in events:
            if event["type"] == "queued":
                await note(event)
            elif event["type"] == "token" and event["text"]:
                await send(shape.chunk(event["text"], None))
            elif event["type"] == "end":
                await send(shape.chunk(None if shape.chat else "", _finish_reason(event["finish_reason"])))
                if include_usage:
                    await send(shape.usage_chunk(event["usage"]))
                await resp.write(b"data: [DONE]\n\n")
                break
    except ApiError as err:  # the verifier failed mid-stream: say so in the stream, then end it
        log.warning("stream %s ended with an error: %s", shape.id, err.message)
        await send(error_body(err.status, err.message, err.code))
    await resp.write_eof()
    return resp


async def chat_completions(request: web.Request) -> web.StreamResponse:
    node = request.app[NODE]
    return await _complete(request, parse_chat(await read_json(request), node.settings.max_prompt_chars), chat=True)


async def completions(request: web.Request) -> web.StreamResponse:
    node = request.app[NODE]
    return await _complete(request, parse_completion(await read_json(request), node.settings.max_prompt_chars), chat=False)


async def models(request: web.Request) -> web.Response:
    node = request.app[NODE]
    data = [{"id": m, "object": "model", "created": node.started_at, "owned_by": "shard"} for m in node.model_ids()]
    return web.json_response({"object": "list", "data": data})


async def model(request: web.Request) -> web.Response:
    node = request.app[NODE]
    name = node.resolve_model(request.match_info["model"], allow_default=False)
    return web.json_response({"id": name, "object": "model", "created": node.started_at, "owned_by": "shard"})


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/chat/completions", chat_completions, name="chat_completions")
    app.router.add_post("/v1/completions", completions, name="completions")
    app.router.add_get("/v1/models", models, name="models")
    app.router.add_get("/v1/models/{model:.+}", model, name="model")
