"""POST /v1/chat/completions, POST /v1/completions, GET /v1/models (OpenAI's shapes, streaming as SSE)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from typing import Any

from aiohttp import web

from shard.api.errors import ApiError, error_body, http_error
from shard.api.keys import METRICS, NODE, SCHEDULER, SETTINGS
from shard.api.schemas import ParsedRequest, parse_chat, parse_completion
from shard.api.tools import ToolCall, ToolStream
from shard.api.tools import parse as tool_parse
from shard.credit.scheduler import Priority
from shard.errors import ModelUnavailable, ShardError
from shard.events import Finished, GenerationEvent, Queued, Token
from shard.verifier.protocol import GenerateRequest

log = logging.getLogger("shard.api")


async def read_json(request: web.Request) -> Any:
    raw = await request.read()  # bounded by client_max_size: 413 beyond it
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"the request body is not valid JSON: {exc}", "invalid_json") from None
    except RecursionError:  # "[[[[..." 100,000 deep: Python's parser gives up; a client's error, not ours
        raise ApiError(400, "the request body is nested too deeply", "invalid_json") from None


def _usage(u: dict[str, Any]) -> dict[str, Any]:
    return {
        "prompt_tokens": u.get("prompt_tokens", 0),
        "completion_tokens": u.get("completion_tokens", 0),
        "total_tokens": u.get("total_tokens", 0),
        "prompt_tokens_details": {"cached_tokens": u.get("cached_tokens", 0)},
    }


class _Shape:
    """What differs between chat and text completions: object names, where the text and the
    log-probabilities go."""

    def __init__(self, chat: bool, model: str) -> None:
        self.chat = chat
        self.model = model
        self.id = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
        self.created = int(time.time())

    def _envelope(self, obj: str, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": obj,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "choices": choices,
        }

    def logprobs(self, entries: list[dict[str, Any]] | None, offset: int = 0) -> dict[str, Any] | None:
        if entries is None:
            return None
        if self.chat:
            return {"content": entries, "refusal": None}
        offsets, at = [], offset  # the legacy shape: parallel lists
        for e in entries:
            offsets.append(at)
            at += len(e["token"])
        return {
            "tokens": [e["token"] for e in entries],
            "token_logprobs": [e["logprob"] for e in entries],
            "top_logprobs": [{t["token"]: t["logprob"] for t in e["top_logprobs"]} for e in entries],
            "text_offset": offsets,
        }

    def chunk(
        self,
        text: str | None,
        finish: str | None,
        first: bool = False,
        index: int = 0,
        logprobs: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        if self.chat:
            delta: dict[str, Any] = {}
            if first:
                delta["role"] = "assistant"
            if text is not None:
                delta["content"] = text
            choice = {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
            return self._envelope("chat.completion.chunk", [choice])
        return self._envelope(
            "text_completion", [{"index": index, "text": text or "", "logprobs": logprobs, "finish_reason": finish}]
        )

    def tool_chunk(self, calls: list[ToolCall], index: int = 0) -> dict[str, Any]:
        delta = {"tool_calls": [c.openai(i) for i, c in enumerate(calls)]}
        return self._envelope(
            "chat.completion.chunk", [{"index": index, "delta": delta, "logprobs": None, "finish_reason": None}]
        )

    def usage_chunk(self, usage: dict[str, Any]) -> dict[str, Any]:
        return {
            **self._envelope("chat.completion.chunk" if self.chat else "text_completion", []),
            "usage": _usage(usage),
        }

    def choice(
        self, index: int, text: str, finish: str, calls: list[ToolCall], logprobs: dict[str, Any] | None
    ) -> dict[str, Any]:
        if not self.chat:
            return {"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish}
        message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
        if calls:
            message.update(content=text or None, tool_calls=[c.openai() for c in calls])
            finish = "tool_calls"
        return {"index": index, "message": message, "logprobs": logprobs, "finish_reason": finish}

    def whole(self, choices: list[dict[str, Any]], usage: dict[str, Any]) -> dict[str, Any]:
        return {
            **self._envelope("chat.completion" if self.chat else "text_completion", choices),
            "usage": _usage(usage),
        }


def _sum_usage(usages: list[dict[str, Any]]) -> dict[str, Any]:
    """n choices of one prompt: the prompt counted once, the completions added up."""
    if len(usages) == 1:
        return usages[0]
    completion = sum(u.get("completion_tokens", 0) for u in usages)
    prompt = usages[0].get("prompt_tokens", 0)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "cached_tokens": usages[0].get("cached_tokens", 0),
    }


def _nth(generate: GenerateRequest, i: int) -> GenerateRequest:
    """Choice i of n: the same request with its own seed (a given seed + i), so the choices differ."""
    if i == 0 or generate.sampling.seed is None:
        return dataclasses.replace(generate) if i else generate
    return dataclasses.replace(
        generate,
        sampling=dataclasses.replace(generate.sampling, seed=(generate.sampling.seed + i) & 0xFFFFFFFFFFFFFFFF),
    )


def _finish_reason(reason: str) -> str:
    return "length" if reason == "length" else "stop"


async def events_for(
    request: web.Request, generate: GenerateRequest, model: str
) -> AsyncGenerator[GenerationEvent, None]:
    """One request's typed events, after its turn in the scheduler; domain errors become ApiError
    here (the streaming code below tells them mid-stream too)."""
    node = request.app[NODE]
    try:
        async with request.app[SCHEDULER].admit(Priority.OWNER):
            async with contextlib.aclosing(node.generation(generate, model)) as events:
                async for event in events:
                    if isinstance(event, Finished):
                        usage = event.usage
                        request.app[METRICS].record_usage(usage)
                        log.info(
                            "%s: %d prompt + %d completion tokens, %s tok/s, finish %s",
                            request.path,
                            usage.get("prompt_tokens", 0),
                            usage.get("completion_tokens", 0),
                            usage.get("tokens_per_s") or "-",
                            event.reason,
                        )
                        yield event
                        return
                    yield event
            raise ModelUnavailable("the verifier ended the stream early")
    except ShardError as exc:  # raised as HTTP here: the streaming code below says it mid-stream too
        raise http_error(exc) from None


async def _complete(request: web.Request, parsed: ParsedRequest, chat: bool) -> web.StreamResponse:
    node = request.app[NODE]
    if not parsed.generate.max_tokens:  # a request without a cap: the node's default, not the whole context
        parsed.generate.max_tokens = request.app[SETTINGS]().default_max_tokens
    if parsed.n > max(request.app[SETTINGS]().parallel, 1):
        raise ApiError(
            400,
            f"'n' is at most {request.app[SETTINGS]().parallel} here "
            "(the choices are generated side by side, one per slot)",
            "invalid_request",
            "n",
        )
    await node.look_up_model(parsed.model)  # checks first: a lookup may take seconds
    shape = _Shape(chat, node.resolve_model(parsed.model))
    started = time.monotonic()
    streams = [events_for(request, _nth(parsed.generate, i), shape.model) for i in range(parsed.n)]
    try:
        # Errors before any output become a plain HTTP error. One after another: each choice holds a slot.
        firsts = [await anext(s) for s in streams]
        if not parsed.stream:
            results = (
                [await _collect(s, f) for s, f in zip(streams, firsts)]
                if parsed.n == 1
                else await asyncio.gather(*(_collect(s, f) for s, f in zip(streams, firsts)))
            )
            choices = []
            for i, (text, event, lps) in enumerate(results):
                calls: list[ToolCall] = []
                if parsed.tool_names:
                    text, calls = tool_parse(text, set(parsed.tool_names))
                    calls = calls if parsed.parallel_tool_calls else calls[:1]
                choices.append(shape.choice(i, text, _finish_reason(event.reason), calls, shape.logprobs(lps)))
            return web.json_response(shape.whole(choices, _sum_usage([e.usage for _, e, _ in results])))
        return await _stream(request, shape, _merged(streams, firsts), parsed)
    except (ConnectionResetError, asyncio.CancelledError):
        request.app[
            METRICS
        ].client_disconnects.inc()  # the finally below closes the verifier streams: it frees the slots
        raise
    finally:
        for s in streams:
            await s.aclose()
        request.app[METRICS].duration.observe(time.monotonic() - started)


async def _collect(
    events: AsyncIterator[GenerationEvent], first: GenerationEvent
) -> tuple[str, Finished, list[dict[str, Any]] | None]:
    """One choice's whole text, its end event and its log-probabilities (None if not asked for)."""
    text: list[str] = []
    lps: list[dict[str, Any]] | None = None
    event = first
    while True:
        if isinstance(event, Token):
            text.append(event.text)
            if event.logprobs is not None:
                lps = (lps or []) + event.logprobs
        elif isinstance(event, Finished):
            return "".join(text), event, lps
        try:
            event = await anext(events)
        except StopAsyncIteration:
            raise ApiError(503, "the verifier ended the stream early", "verifier_unavailable") from None


async def _merged(
    streams: Sequence[AsyncIterator[GenerationEvent]], firsts: list[GenerationEvent]
) -> AsyncIterator[tuple[int, GenerationEvent]]:
    """The events of n choices as they come, tagged with the choice's index."""
    for i, first in enumerate(firsts):
        yield i, first
    if len(streams) == 1:  # the common case: no tasks, no queue
        async for event in streams[0]:
            yield 0, event
        return
    queue: asyncio.Queue[tuple[int, GenerationEvent | BaseException | None]] = asyncio.Queue()

    async def pump(i: int) -> None:
        try:
            async for event in streams[i]:
                await queue.put((i, event))
        except Exception as exc:
            await queue.put((i, exc))
        finally:
            await queue.put((i, None))

    tasks = [asyncio.get_running_loop().create_task(pump(i)) for i in range(len(streams))]
    try:
        done = 0
        while done < len(streams):
            i, item = await queue.get()
            if item is None:
                done += 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield i, item
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _stream(
    request: web.Request, shape: _Shape, events: AsyncIterator[tuple[int, GenerationEvent]], parsed: ParsedRequest
) -> web.StreamResponse:
    resp = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
    cors = request.headers.get("Origin")
    if cors:  # the Host/Origin middleware admitted it; a prepared response can no longer be changed there
        resp.headers.update({"Access-Control-Allow-Origin": cors, "Vary": "Origin"})
    await resp.prepare(request)

    stall_s = request.app[SETTINGS]().stall_timeout_s

    async def write(data: bytes) -> None:
        try:  # a client that stops reading fills the socket; past the limit it counts as gone
            await asyncio.wait_for(resp.write(data), stall_s)
        except TimeoutError:
            log.warning("stream %s: the client read nothing for %.0fs; ending it", shape.id, stall_s)
            raise ConnectionResetError("client stalled") from None

    async def send(obj: dict[str, Any]) -> None:
        await write(b"data: " + json.dumps(obj, ensure_ascii=False).encode() + b"\n\n")

    async def note(event: Queued) -> None:
        # An SSE comment (clients skip it): where a request waiting at an Oracle stands.
        await write(f": queued at Oracle {event.oracle}: place {event.position}, about {event.eta_s} s\n\n".encode())

    n = parsed.n
    tools = [ToolStream(set(parsed.tool_names), parsed.tool_forced) if parsed.tool_names else None for _ in range(n)]
    offsets = [0] * n  # text sent per choice (the legacy logprobs' text_offset)
    usages: list[dict[str, Any]] = []
    for i in range(n):
        await send(shape.chunk("", None, first=True, index=i))
    try:
        async for i, event in events:
            if isinstance(event, Queued):
                await note(event)
            elif isinstance(event, Token) and (event.text or event.logprobs is not None):
                tool = tools[i]
                text = tool.push(event.text) if tool is not None else event.text
                lps = shape.logprobs(event.logprobs, offsets[i])
                offsets[i] += len(text)
                if text or lps:
                    await send(shape.chunk(text, None, index=i, logprobs=lps))
            elif isinstance(event, Finished):
                finish = _finish_reason(event.reason)
                tool = tools[i]
                if tool is not None:  # the held tail: a tool call, or content after all
                    rest, calls = tool.finish()
                    if rest:
                        await send(shape.chunk(rest, None, index=i))
                    if calls:
                        await send(shape.tool_chunk(calls if parsed.parallel_tool_calls else calls[:1], i))
                        finish = "tool_calls"
                await send(shape.chunk(None if shape.chat else "", finish, index=i))
                usages.append(event.usage)
                if len(usages) == n:
                    if parsed.include_usage:
                        await send(shape.usage_chunk(_sum_usage(usages)))
                    await resp.write(b"data: [DONE]\n\n")
                    break
    except ApiError as err:  # the verifier failed mid-stream: say so in the stream, then end it
        log.warning("stream %s ended with an error: %s", shape.id, err.message)
        await send(error_body(err.status, err.message, err.code))
    await resp.write_eof()
    return resp


async def chat_completions(request: web.Request) -> web.StreamResponse:
    limit = request.app[SETTINGS]().max_prompt_chars
    return await _complete(request, parse_chat(await read_json(request), limit), chat=True)


async def completions(request: web.Request) -> web.StreamResponse:
    limit = request.app[SETTINGS]().max_prompt_chars
    return await _complete(request, parse_completion(await read_json(request), limit), chat=False)


async def models(request: web.Request) -> web.Response:
    node = request.app[NODE]
    data = [{"id": m, "object": "model", "created": node.started_at, "owned_by": "shard"} for m in node.model_ids()]
    return web.json_response({"object": "list", "data": data})


async def model(request: web.Request) -> web.Response:
    node = request.app[NODE]
    name = node.resolve_model(request.match_info["model"], allow_default=False)
    return web.json_response({"id": name, "object": "model", "created": node.started_at, "owned_by": "shard"})


def add_routes(app: web.Application) -> None:
    # Each path also without /v1: clients given a base_url without it still work.
    for prefix, suffix in (("/v1", ""), ("", "_unprefixed")):
        app.router.add_post(prefix + "/chat/completions", chat_completions, name="chat_completions" + suffix)
        app.router.add_post(prefix + "/completions", completions, name="completions" + suffix)
        app.router.add_get(prefix + "/models", models, name="models" + suffix)
        app.router.add_get(prefix + "/models/{model:.+}", model, name="model" + suffix)
