"""The node's HTTP API as an OpenAPI 3.1 document, served at GET /openapi.json (open, like /health).

One description of every route the node serves. Every body (OpenAI's requests, answers, stream
chunks and errors; Responses, Ollama and the system endpoints) is generated from the pydantic
models in `shard.api.wire`, the same ones that validate the chat and completion requests, so the
document cannot disagree with the checks. Written here: the paths, their statuses and error
answers. The schemathesis test (tests/test_reliability.py) holds the routes to it: a status,
content type or body that this document does not describe is a failing test; tests/test_wire.py
checks that every registered route is in it.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from shard import __version__
from shard.api.wire import ollama, openai, responses, system

# The request and answer bodies the paths name, generated into components/schemas under their
# class names (with every model they use).
MODELS: tuple[type[BaseModel], ...] = (
    openai.ChatCompletionRequest,
    openai.CompletionRequest,
    openai.EmbeddingRequest,
    openai.Error,
    openai.ChatCompletion,
    openai.ChatCompletionChunk,
    openai.TextCompletion,
    openai.Model,
    openai.ModelList,
    openai.Embeddings,
    responses.ResponseRequest,
    responses.Response,
    responses.ResponseDeleted,
    ollama.OllamaError,
    ollama.OllamaChatRequest,
    ollama.OllamaGenerateRequest,
    ollama.OllamaShowRequest,
    ollama.OllamaAnswer,
    ollama.OllamaModels,
    ollama.OllamaShow,
    ollama.OllamaEmbedRequest,
    ollama.OllamaEmbed,
    system.Health,
    system.SystemStatus,
    system.Topology,
    system.Peers,
    system.Credit,
)

JSON = "application/json"
SSE = "text/event-stream"
NDJSON = "application/x-ndjson"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _error(description: str, retry_after: bool = False) -> dict[str, Any]:
    out = _json(_ref("Error"), description)
    if retry_after:
        out["headers"] = {
            "Retry-After": {
                "description": "seconds to wait before trying again",
                "schema": {"type": "string", "pattern": "^[0-9]+$"},
            }
        }
    return out


# Errors any route can give: the Host/Origin check, API keys, an unknown path or method.
_COMMON_ERRORS = {
    "401": _error("no API key, or a wrong one (`missing_api_key`, `invalid_api_key`); only when keys are configured"),
    "403": _error(
        "a Host header that is not loopback nor in `allowed_hosts` (`host_not_allowed`), or a foreign Origin "
        "(`origin_not_allowed`)"
    ),
    "404": _error("no such endpoint (`not_found`)"),
    "405": _error("method not allowed on this path (`method_not_allowed`)"),
}
_POST_ERRORS = {
    "400": _error(
        "the body is not JSON (`invalid_json`), a field has the wrong type or range (`invalid_request`, `param` "
        "names it), an unsupported parameter (`unsupported_parameter`), or a prompt over the limits "
        "(`context_length_exceeded`)"
    ),
    "404": _error("the model is not served here (`model_not_found`), or no such endpoint (`not_found`)"),
    "413": _error("the body is larger than `max_body_bytes` (`body_too_large`)"),
    "429": _error(
        "over `rate_limit_per_minute` POSTs in 60 s from one key or address (`rate_limit_exceeded`)", retry_after=True
    ),
    "503": _error(
        "no model (`no_model`), the model loading or failed, the verifier restarting (`verifier_unavailable`), "
        "or `max_queue` requests waiting already (`queue_full`)",
        retry_after=True,
    ),
}

_STR = {"type": "string"}
_INT = {"type": "integer"}
_OBJ = {"type": "object"}


def _generated() -> dict[str, Any]:
    """The pydantic models' JSON Schemas, their references pointing into components/schemas."""
    _, top = models_json_schema([(m, "validation") for m in MODELS], ref_template="#/components/schemas/{model}")
    return dict(top["$defs"])


def _post(op: str, summary: str, request: str, ok: dict[str, Any], ollama: bool = False) -> dict[str, Any]:
    errors = {**_COMMON_ERRORS, **_POST_ERRORS}
    if ollama:  # Ollama's own error shape from the route; OpenAI's from the checks before it (keys, size, rate)
        either = {"anyOf": [_ref("OllamaError"), _ref("Error")]}
        errors = {code: {**e, "content": {JSON: {"schema": either}}} for code, e in errors.items()}
    return {
        "post": {
            "operationId": op,
            "summary": summary,
            "requestBody": {"required": True, "content": {JSON: {"schema": _ref(request)}}},
            "responses": {"200": ok, **errors},
        }
    }


def _sse_event(chunk: str) -> dict[str, Any]:
    """One Server-Sent Event (OpenAPI 3.1 and 3.2's reading of `schema` under text/event-stream):
    its `data` is JSON text, a chunk (or an error body), or `[DONE]` last."""
    extra = {"event": _STR, "id": _STR, "retry": _INT}
    return {
        "anyOf": [
            {"type": "object", "required": ["data"], "properties": {"data": {"const": "[DONE]"}, **extra}},
            {
                "type": "object",
                "required": ["data"],
                "properties": {
                    "data": {
                        "type": "string",
                        "contentMediaType": JSON,
                        "contentSchema": {"anyOf": [_ref(chunk), _ref("Error")]},
                    },
                    **extra,
                },
            },
        ]
    }


def _generation(summary: str, request: str, whole: str, chunk: str) -> dict[str, Any]:
    return {
        "post": {
            "operationId": request[0].lower() + request[1:].replace("Request", ""),
            "summary": summary,
            "requestBody": {"required": True, "content": {JSON: {"schema": _ref(request)}}},
            "responses": {
                "200": {
                    "description": "the whole answer, or with `stream: true` Server-Sent Events: "
                    f"`data: <{chunk}>` lines, "
                    "a last chunk with `usage` and empty `choices` when `stream_options.include_usage`, then "
                    '`data: [DONE]`; an error mid-stream arrives as `data: {"error": {...}}` and ends it',
                    "content": {JSON: {"schema": _ref(whole)}, SSE: {"schema": _sse_event(chunk)}},
                },
                **_COMMON_ERRORS,
                **_POST_ERRORS,
            },
        }
    }


def _get(op: str, summary: str, responses: dict[str, Any], open_: bool = False, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"operationId": op, "summary": summary, "responses": {**_COMMON_ERRORS, **responses}, **extra}
    if open_:
        out["security"] = []  # no API key needed
        out["responses"].pop("401")
    return {"get": out}


def _pages() -> dict[str, Any]:
    """The web app and the web scout: pages and files for a browser (docs/protocol.md, "Web scout")."""
    html = {"200": {"description": "the page", "content": {"text/html": {"schema": _STR}}}}
    name = [{"name": "name", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}]
    return {
        "/": _get("webApp", "The web app (chat, with drafting in the tab)", html, open_=True),
        "/scout/app": _get("webAppOpen", "The web app, under /scout", html, open_=True),
        "/scout": _get("scoutRedirect", "Redirects to /scout/", {"302": {"description": "to /scout/"}}, open_=True),
        "/scout/": _get("scoutPage", "The web scout page", html, open_=True),
        "/scout/index.html": _get("scoutIndex", "The web scout page", html, open_=True),
        "/scout/node.json": _get(
            "scoutNode",
            "What the web scout needs to join: peer id, WebSocket addresses, models",
            {"200": _json(_OBJ, "")},
            open_=True,
        ),
        "/scout/assets/{name}": _get(
            "scoutAsset",
            "The web scout's scripts and WASM",
            {"200": {"description": "the file"}},
            open_=True,
            parameters=name,
        ),
        "/scout/models/{name}": _get(
            "scoutModel",
            "A draft model file for the web scout (Range requests too)",
            {"200": {"description": "the file"}},
            open_=True,
            parameters=name,
        ),
    }


def build_spec() -> dict[str, Any]:
    """The OpenAPI document (a fresh dict each call: callers may change it)."""
    paths: dict[str, Any] = {
        "/v1/chat/completions": _generation(
            "Chat completion (OpenAI's shape)", "ChatCompletionRequest", "ChatCompletion", "ChatCompletionChunk"
        ),
        "/v1/completions": _generation(
            "Text completion (OpenAI's legacy shape)", "CompletionRequest", "TextCompletion", "TextCompletion"
        ),
        "/v1/models": _get(
            "listModels",
            "The served model (an empty list without one)",
            {"200": _json(_ref("ModelList"), "the served models")},
        ),
        "/v1/models/{model}": _get(
            "getModel",
            "One model",
            {
                "200": _json(_ref("Model"), "the model"),
                "404": _error("not served here (`model_not_found`)"),
                "503": _error("no model loaded (`no_model`)"),
            },
            parameters=[
                {"name": "model", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
            ],
        ),
        "/v1/embeddings": _post(
            "createEmbeddings",
            "Embeddings from the served model (its GGUF's pooling) or `embedding_model`",
            "EmbeddingRequest",
            _json(_ref("Embeddings"), "one L2-normalized vector per input, float or base64"),
        ),
        "/v1/responses": _post(
            "createResponse",
            "OpenAI's Responses API: text or items in, message and function_call items out",
            "ResponseRequest",
            {
                "description": "the response, or with `stream: true` Responses events "
                "(`event: response.created` ... `response.completed`/`response.incomplete`)",
                "content": {JSON: {"schema": _ref("Response")}, SSE: {"schema": _OBJ}},
            },
        ),
        "/v1/responses/{response_id}": {
            **_get(
                "getResponse",
                "A stored response",
                {"200": _json(_ref("Response"), "the response"), "404": _error("not stored (`not_found`)")},
                parameters=[{"name": "response_id", "in": "path", "required": True, "schema": _STR}],
            ),
            "delete": {
                "operationId": "deleteResponse",
                "summary": "Forget a stored response",
                "parameters": [{"name": "response_id", "in": "path", "required": True, "schema": _STR}],
                "responses": {
                    **_COMMON_ERRORS,
                    "200": _json(_ref("ResponseDeleted"), "deleted"),
                    "404": _error("not stored (`not_found`)"),
                },
            },
        },
        "/api/chat": _post(
            "ollamaChat",
            "Ollama's chat (NDJSON stream by default)",
            "OllamaChatRequest",
            {
                "description": "the answer; streamed as NDJSON lines, the last with `done: true`",
                "content": {JSON: {"schema": _ref("OllamaAnswer")}, NDJSON: {"schema": _STR}},
            },
            ollama=True,
        ),
        "/api/generate": _post(
            "ollamaGenerate",
            "Ollama's generate (NDJSON stream by default)",
            "OllamaGenerateRequest",
            {
                "description": "the answer; streamed as NDJSON lines, the last with `done: true`",
                "content": {JSON: {"schema": _ref("OllamaAnswer")}, NDJSON: {"schema": _STR}},
            },
            ollama=True,
        ),
        "/api/embed": _post(
            "ollamaEmbed",
            "Ollama's embeddings",
            "OllamaEmbedRequest",
            _json(_ref("OllamaEmbed"), "the vectors"),
            ollama=True,
        ),
        "/api/show": _post(
            "ollamaShow",
            "Ollama's model details",
            "OllamaShowRequest",
            _json(_ref("OllamaShow"), "the model"),
            ollama=True,
        ),
        "/api/tags": _get(
            "ollamaTags", "Ollama's model list", {"200": _json(_ref("OllamaModels"), "the served model")}
        ),
        "/api/ps": _get("ollamaPs", "Ollama's loaded models", {"200": _json(_ref("OllamaModels"), "the loaded model")}),
        "/api/version": _get(
            "ollamaVersion",
            "The Ollama API version followed",
            {"200": _json({"type": "object", "required": ["version"], "properties": {"version": _STR}}, "the version")},
        ),
        "/health": _get(
            "health",
            "Liveness and readiness (open: no API key)",
            {
                "200": _json(_ref("Health"), "ready: `status` is `ok`"),
                "503": _json(
                    _ref("Health"),
                    "not ready: `status` is `loading`, `no_model`, `error` or `stopped`; `message` says why",
                ),
            },
            open_=True,
        ),
        "/metrics": _get(
            "metrics",
            "Prometheus text, every name prefixed `shard_`",
            {"200": {"description": "Prometheus exposition format 0.0.4", "content": {"text/plain": {"schema": _STR}}}},
        ),
        "/openapi.json": _get(
            "openapi", "This document (open: no API key)", {"200": _json(_OBJ, "OpenAPI 3.1")}, open_=True
        ),
        **_pages(),
        "/v1/system/status": _get(
            "systemStatus",
            "Health plus the node's parts: verifier, sidecar, queue",
            {"200": _json(_ref("SystemStatus"), "the node's state")},
        ),
        "/v1/system/topology": _get(
            "systemTopology",
            "The sidecar's libp2p addresses",
            {"200": _json(_ref("Topology"), "`sidecar` says whether it runs; addresses end in /p2p/<peer id>")},
        ),
        "/v1/system/peers": _get(
            "systemPeers", "Connected peers, with their credit here", {"200": _json(_ref("Peers"), "the peers")}
        ),
        "/v1/system/credit": _get(
            "systemCredit", "The credit ledger", {"200": _json(_ref("Credit"), "balance, per-peer figures, history")}
        ),
    }
    # The same operations without /v1, for clients given a base URL without it.
    for path in (
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/models",
        "/v1/models/{model}",
        "/v1/embeddings",
        "/v1/responses",
        "/v1/responses/{response_id}",
    ):
        paths[path.removeprefix("/v1")] = {
            m: {**op, "operationId": op["operationId"] + "Unprefixed"} for m, op in paths[path].items()
        }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Shard node API",
            "version": __version__,
            "description": "The OpenAI-compatible endpoint of a Shard node and its system endpoints "
            "(docs/protocol.md). "
            "Bound to 127.0.0.1 by default; API keys apply only when configured.",
        },
        "paths": paths,
        "components": {
            "schemas": _generated(),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
        },
        # Keys are optional: a node without configured keys takes requests without one ({}).
        "security": [{"bearer": []}, {"apiKey": []}, {}],
    }


async def openapi_json(request: web.Request) -> web.Response:
    return web.json_response(request.app[_SPEC])


_SPEC: web.AppKey[dict[str, Any]] = web.AppKey("openapi_spec")


def add_routes(app: web.Application) -> None:
    app[_SPEC] = build_spec()
    app.router.add_get("/openapi.json", openapi_json, name="openapi")
