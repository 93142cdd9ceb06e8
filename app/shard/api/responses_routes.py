"""POST /v1/responses (OpenAI's Responses API), GET and DELETE /v1/responses/{id}.

A request is turned into the chat body the rest of the API checks (input items -> messages,
instructions -> a system message, function tools, text.format -> response_format), generated the
same way, and answered as a response object with `message` and `function_call` output items;
streamed as Responses events (response.created ... response.completed). Responses are kept in the
data dir (responses/<id>.json, the conversation so far) unless `store` is false, so that
`previous_response_id` can continue one.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiohttp import web

from shard.api.errors import ApiError
from shard.api.keys import NODE, SETTINGS
from shard.api.openai_routes import _collect, _finish_reason, events_for, read_json
from shard.api.schemas import ParsedRequest, parse_chat
from shard.api.tools import ToolCall, ToolStream
from shard.api.tools import parse as tool_parse
from shard.events import Finished, GenerationEvent, Token

RESPONSE_ID = re.compile(r"^resp_[0-9a-f]{32}$")
MAX_STORED_BYTES = 4 * 1024 * 1024


def _bad(message: str, param: str | None = None) -> ApiError:
    return ApiError(400, message, "invalid_request", param)


def _text(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        out = []
        for part in content:
            if (
                not isinstance(part, dict)
                or part.get("type") not in ("input_text", "output_text", "text")
                or not isinstance(part.get("text"), str)
            ):
                raise _bad(f"{where}: only text parts (input_text, output_text) are supported", "input")
            out.append(part["text"])
        return "".join(out)
    raise _bad(f"{where}: content must be a string or a list of text parts", "input")


def _messages(items: Any) -> list[dict[str, Any]]:
    """Responses input items -> chat messages (calls and their outputs included, never dropped)."""
    if isinstance(items, str):
        return [{"role": "user", "content": items}]
    if not isinstance(items, list):
        raise _bad("'input' must be a string or a list of items", "input")
    out: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise _bad(f"input[{i}] must be an object", "input")
        kind = item.get("type", "message")
        if kind == "message":
            out.append({"role": item.get("role"), "content": _text(item.get("content"), f"input[{i}]")})
        elif kind == "function_call":
            call = {
                "id": str(item.get("call_id", ""))[:64],
                "type": "function",
                "function": {"name": item.get("name"), "arguments": item.get("arguments") or "{}"},
            }
            if out and out[-1]["role"] == "assistant" and out[-1].get("tool_calls") is not None:
                out[-1]["tool_calls"].append(call)  # parallel calls: one assistant turn
            else:
                out.append({"role": "assistant", "content": "", "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            out.append(
                {
                    "role": "tool",
                    "tool_call_id": str(item.get("call_id", ""))[:64],
                    "content": output if isinstance(output, str) else json.dumps(output),
                }
            )
        elif kind == "reasoning":
            continue  # no reasoning here to continue
        else:
            raise _bad(f"input[{i}]: items of type {str(kind)[:40]!r} are not supported", "input")
    return out


def _tools(body: dict[str, Any]) -> tuple[list[dict[str, Any]] | None, Any]:
    tools = body.get("tools")
    if tools is None:
        return None, body.get("tool_choice")
    if not isinstance(tools, list):
        raise _bad("'tools' must be a list", "tools")
    out = []
    for i, t in enumerate(tools):
        if not isinstance(t, dict) or t.get("type") != "function":
            raise _bad(f"tools[{i}]: only function tools are supported", "tools")
        out.append(
            {
                "type": "function",
                "function": {k: t[k] for k in ("name", "description", "parameters", "strict") if k in t},
            }
        )
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") == "function":
        choice = {"type": "function", "function": {"name": choice.get("name")}}
    return out or None, choice


def _response_format(body: dict[str, Any]) -> dict[str, Any] | None:
    text = body.get("text")
    if text is not None and not isinstance(text, dict):
        raise _bad("'text' must be an object", "text")
    fmt = (text or {}).get("format")
    if fmt is None:
        return None
    if not isinstance(fmt, dict):
        raise _bad("'text.format' must be an object", "text")
    if fmt.get("type") not in ("text", "json_object", "json_schema"):
        raise _bad("'text.format.type' must be 'text', 'json_object' or 'json_schema'", "text")
    if fmt.get("type") == "json_schema":
        return {"type": "json_schema", "json_schema": {"name": fmt.get("name", "output"), "schema": fmt.get("schema")}}
    return {"type": fmt["type"]}


class Store:
    """Responses kept as JSON files under the data dir, by id (checked: never a path)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, rid: str) -> Path:
        if not isinstance(rid, str) or not RESPONSE_ID.match(rid):
            raise ApiError(404, f"no stored response {str(rid)[:80]!r}", "not_found", "previous_response_id")
        return self.root / f"{rid}.json"

    def load(self, rid: str) -> dict[str, Any]:
        path = self._path(rid)
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise ApiError(
                404,
                f"no stored response {rid!r} (it was made with store: false, deleted, or never existed)",
                "not_found",
                "previous_response_id",
            ) from None

    def save(self, response: dict[str, Any], conversation: list[dict[str, Any]]) -> None:
        data = json.dumps({"response": response, "conversation": conversation}, ensure_ascii=False)
        if len(data) > MAX_STORED_BYTES:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        path = self._path(response["id"])
        tmp = path.with_suffix(".tmp")
        tmp.write_text(data, encoding="utf-8")
        tmp.replace(path)

    def delete(self, rid: str) -> bool:
        try:
            self._path(rid).unlink()
            return True
        except FileNotFoundError:
            return False


def _store(request: web.Request) -> Store:
    return Store(request.app[SETTINGS]().data_path / "responses")


def _output_items(text: str, calls: list[ToolCall]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    if text or not calls:
        items.append(_message_item("msg_" + uuid.uuid4().hex, text))
    items += [_call_item(c) for c in calls]
    return items


def _message_item(item_id: str, text: str, status: str = "completed") -> dict[str, Any]:
    return {
        "type": "message",
        "id": item_id,
        "status": status,
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]
        if status == "completed"
        else [],
    }


def _call_item(c: ToolCall) -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": "fc_" + c.id.removeprefix("call_"),
        "call_id": c.id,
        "name": c.name,
        "arguments": c.arguments,
        "status": "completed",
    }


def _conversation_after(messages: list[dict[str, Any]], output: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The chat so far plus this response's output, as messages (what previous_response_id continues)."""
    text = "".join(p["text"] for it in output if it["type"] == "message" for p in it["content"])
    calls = [
        {"id": it["call_id"], "type": "function", "function": {"name": it["name"], "arguments": it["arguments"]}}
        for it in output
        if it["type"] == "function_call"
    ]
    turn: dict[str, Any] = {"role": "assistant", "content": text}
    if calls:
        turn["tool_calls"] = calls
    return [*messages, turn]


async def create(request: web.Request) -> web.StreamResponse:
    node = request.app[NODE]
    body = await read_json(request)
    if not isinstance(body, dict):
        raise _bad("the request body must be a JSON object")
    store = body.get("store", True)
    if not isinstance(store, bool):
        raise _bad("'store' must be true or false", "store")
    messages = _messages(body.get("input", []))
    history: list[dict[str, Any]] = []
    previous = body.get("previous_response_id")
    if previous is not None:
        history = _store(request).load(previous)["conversation"]
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise _bad("'instructions' must be a string", "instructions")
    # Instructions apply to this turn only (they are not carried over by previous_response_id).
    chat_messages = ([{"role": "system", "content": instructions}] if instructions else []) + history + messages
    if not chat_messages:
        raise _bad("'input' is empty", "input")
    if body.get("metadata") is not None and not isinstance(body["metadata"], dict):
        raise _bad("'metadata' must be an object", "metadata")
    tools, choice = _tools(body)
    chat_body: dict[str, Any] = {
        k: body[k] for k in ("model", "temperature", "top_p", "stream", "parallel_tool_calls", "seed") if k in body
    }
    chat_body.update(messages=chat_messages, max_tokens=body.get("max_output_tokens"))
    if tools:
        chat_body["tools"] = tools
    if choice is not None:
        chat_body["tool_choice"] = choice
    fmt = _response_format(body)
    if fmt is not None:
        chat_body["response_format"] = fmt
    parsed = parse_chat(chat_body, request.app[SETTINGS]().max_prompt_chars)
    if not parsed.generate.max_tokens:
        parsed.generate.max_tokens = request.app[SETTINGS]().default_max_tokens
    model = node.resolve_model(parsed.model)
    base = {
        "id": "resp_" + uuid.uuid4().hex,
        "object": "response",
        "created_at": int(time.time()),
        "status": "in_progress",
        "error": None,
        "incomplete_details": None,
        "instructions": instructions,
        "model": model,
        "output": [],
        "parallel_tool_calls": parsed.parallel_tool_calls,
        "previous_response_id": previous,
        "store": store,
        "temperature": parsed.generate.sampling.temperature,
        "top_p": parsed.generate.sampling.top_p,
        "max_output_tokens": body.get("max_output_tokens"),
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [],
        "text": body.get("text") or {"format": {"type": "text"}},
        "metadata": body.get("metadata") or {},
        "usage": None,
    }
    history_messages = history + messages

    def finish(response: dict[str, Any], output: list[dict[str, Any]], event: Finished) -> dict[str, Any]:
        u = event.usage
        length = _finish_reason(event.reason) == "length"
        response.update(
            output=output,
            status="incomplete" if length else "completed",
            incomplete_details={"reason": "max_output_tokens"} if length else None,
            usage={
                "input_tokens": u.get("prompt_tokens", 0),
                "input_tokens_details": {"cached_tokens": u.get("cached_tokens", 0)},
                "output_tokens": u.get("completion_tokens", 0),
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": u.get("prompt_tokens", 0) + u.get("completion_tokens", 0),
            },
        )
        if store:
            _store(request).save(response, _conversation_after(history_messages, output))
        return response

    events = events_for(request, parsed.generate, model)
    try:
        first = await anext(events)
        if not parsed.stream:
            text, end, _ = await _collect(events, first)
            calls: list[ToolCall] = []
            if parsed.tool_names:
                text, calls = tool_parse(text, set(parsed.tool_names))
                calls = calls if parsed.parallel_tool_calls else calls[:1]
            return web.json_response(finish(base, _output_items(text, calls), end))
        return await _stream(request, base, parsed, first, events, finish)
    finally:
        await events.aclose()


async def _stream(
    request: web.Request,
    response: dict[str, Any],
    parsed: ParsedRequest,
    first: GenerationEvent,
    events: AsyncIterator[GenerationEvent],
    finish: Any,
) -> web.StreamResponse:
    resp = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
    origin = request.headers.get("Origin")
    if origin:
        resp.headers.update({"Access-Control-Allow-Origin": origin, "Vary": "Origin"})
    await resp.prepare(request)
    seq = 0
    stall_s = request.app[SETTINGS]().stall_timeout_s

    async def send(kind: str, **data: Any) -> None:
        nonlocal seq
        payload = json.dumps({"type": kind, "sequence_number": seq, **data}, ensure_ascii=False)
        seq += 1
        try:
            await asyncio.wait_for(resp.write(f"event: {kind}\ndata: {payload}\n\n".encode()), stall_s)
        except TimeoutError:
            raise ConnectionResetError("client stalled") from None

    await send("response.created", response=response)
    await send("response.in_progress", response=response)
    tools = ToolStream(set(parsed.tool_names), parsed.tool_forced) if parsed.tool_names else None
    msg_id, text, open_message = "msg_" + uuid.uuid4().hex, [], False

    async def emit_text(delta: str) -> None:
        nonlocal open_message
        if not open_message:
            open_message = True
            await send("response.output_item.added", output_index=0, item=_message_item(msg_id, "", "in_progress"))
            await send(
                "response.content_part.added",
                item_id=msg_id,
                output_index=0,
                content_index=0,
                part={"type": "output_text", "text": "", "annotations": [], "logprobs": []},
            )
        text.append(delta)
        await send(
            "response.output_text.delta", item_id=msg_id, output_index=0, content_index=0, delta=delta, logprobs=[]
        )

    try:
        event = first
        while True:
            if isinstance(event, Token) and event.text:
                delta = tools.push(event.text) if tools is not None else event.text
                if delta:
                    await emit_text(delta)
            elif isinstance(event, Finished):
                calls: list[ToolCall] = []
                if tools is not None:
                    rest, calls = tools.finish()
                    calls = calls if parsed.parallel_tool_calls else calls[:1]
                    if rest:
                        await emit_text(rest)
                output: list[dict[str, Any]] = []
                if open_message or not calls:
                    if not open_message:
                        await emit_text("")
                    whole = "".join(text)
                    part = {"type": "output_text", "text": whole, "annotations": [], "logprobs": []}
                    await send(
                        "response.output_text.done",
                        item_id=msg_id,
                        output_index=0,
                        content_index=0,
                        text=whole,
                        logprobs=[],
                    )
                    await send("response.content_part.done", item_id=msg_id, output_index=0, content_index=0, part=part)
                    output.append(_message_item(msg_id, whole))
                    await send("response.output_item.done", output_index=0, item=output[-1])
                for call in calls:
                    item = _call_item(call)
                    index = len(output)
                    await send(
                        "response.output_item.added",
                        output_index=index,
                        item={**item, "arguments": "", "status": "in_progress"},
                    )
                    await send(
                        "response.function_call_arguments.delta",
                        item_id=item["id"],
                        output_index=index,
                        delta=call.arguments,
                    )
                    await send(
                        "response.function_call_arguments.done",
                        item_id=item["id"],
                        output_index=index,
                        arguments=call.arguments,
                    )
                    await send("response.output_item.done", output_index=index, item=item)
                    output.append(item)
                done = finish(response, output, event)
                await send(
                    "response.completed" if done["status"] == "completed" else "response.incomplete", response=done
                )
                break
            event = await anext(events)
    except ApiError as err:
        response.update(status="failed", error={"code": err.code or "server_error", "message": err.message})
        await send("response.failed", response=response)
    await resp.write_eof()
    return resp


async def retrieve(request: web.Request) -> web.Response:
    return web.json_response(_store(request).load(request.match_info["id"])["response"])


async def delete(request: web.Request) -> web.Response:
    rid = request.match_info["id"]
    if not _store(request).delete(rid):
        raise ApiError(404, f"no stored response {rid[:80]!r}", "not_found")
    return web.json_response({"id": rid, "object": "response", "deleted": True})


def add_routes(app: web.Application) -> None:
    for prefix, suffix in (("/v1", ""), ("", "_unprefixed")):
        app.router.add_post(prefix + "/responses", create, name="responses" + suffix)
        app.router.add_get(prefix + "/responses/{id}", retrieve, name="response" + suffix)
        app.router.add_delete(prefix + "/responses/{id}", delete, name="response_delete" + suffix)
