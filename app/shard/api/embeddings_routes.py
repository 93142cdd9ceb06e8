"""POST /v1/embeddings (OpenAI's shape; float or base64; dimensions) and Ollama's /api/embed, both
from the verifier's /embed (the served model's embeddings, or the embedding_model setting)."""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

from aiohttp import web

from shard.api.errors import ApiError, http_error
from shard.api.keys import NODE, SETTINGS
from shard.api.openai_routes import read_json
from shard.errors import InvalidRequest, ShardError
from shard.verifier.protocol import MAX_EMBED_INPUTS, EmbedRequest

if TYPE_CHECKING:
    import numpy as np


def _inputs(value: Any, max_chars: int) -> EmbedRequest:
    """OpenAI's input: a string, a list of strings, a token list, or a list of token lists."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or len(value) > MAX_EMBED_INPUTS:
        raise ApiError(
            400,
            f"'input' must be a string or a non-empty list of at most {MAX_EMBED_INPUTS} inputs",
            "invalid_request",
            "input",
        )
    if all(isinstance(x, str) for x in value):
        if sum(map(len, value)) > max_chars * 8:
            raise ApiError(400, "the inputs are too long in total", "context_length_exceeded", "input")
        if any(not x for x in value):
            raise ApiError(400, "'input' must not contain empty strings", "invalid_request", "input")
        return EmbedRequest(inputs=value)

    def ints(xs: Any) -> bool:
        return isinstance(xs, list) and bool(xs) and all(isinstance(t, int) and not isinstance(t, bool) for t in xs)

    if ints(value):
        return EmbedRequest(tokens=[value])
    if all(ints(x) for x in value):
        return EmbedRequest(tokens=value)
    raise ApiError(
        400,
        "'input' must be a string, a list of strings, a list of token ids or a list of such lists",
        "invalid_request",
        "input",
    )


async def embed(request: web.Request, req: EmbedRequest, dimensions: int | None) -> tuple[list[np.ndarray], int]:
    node = request.app[NODE]
    verifier = node.require_verifier()
    try:
        out = await verifier.embed(req)
    except InvalidRequest as exc:
        exc.param = exc.param or "input"
        raise
    import numpy as np  # here, not at the top: the node loads numpy only when it serves embeddings

    vectors = [np.asarray(v, dtype=np.float32) for v in out["embeddings"]]
    if dimensions is not None:
        if not 1 <= dimensions <= int(out["dimensions"]):
            raise ApiError(
                400,
                f"'dimensions' must be between 1 and {out['dimensions']} for this model",
                "invalid_request",
                "dimensions",
            )
        # Shortened as OpenAI's text-embedding-3 are: the first d values, normalized again.
        vectors = [v[:dimensions] / (np.linalg.norm(v[:dimensions]) or 1.0) for v in vectors]
    return vectors, int(out["prompt_tokens"])


def _dimensions(body: dict[str, Any]) -> int | None:
    d = body.get("dimensions")
    if d is not None and (isinstance(d, bool) or not isinstance(d, int)):
        raise ApiError(400, "'dimensions' must be an integer", "invalid_request", "dimensions")
    return d


async def embeddings(request: web.Request) -> web.Response:
    node = request.app[NODE]
    body = await read_json(request)
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    fmt = body.get("encoding_format") or "float"
    if fmt not in ("float", "base64"):
        raise ApiError(400, "'encoding_format' must be 'float' or 'base64'", "invalid_request", "encoding_format")
    model = node.resolve_model(name if isinstance(name := body.get("model"), str) else "")
    vectors, n_tokens = await embed(
        request, _inputs(body.get("input"), request.app[SETTINGS]().max_prompt_chars), _dimensions(body)
    )
    data = [
        {
            "object": "embedding",
            "index": i,
            "embedding": base64.b64encode(v.astype("<f4").tobytes()).decode()
            if fmt == "base64"
            else [float(x) for x in v],
        }
        for i, v in enumerate(vectors)
    ]
    return web.json_response(
        {"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens}}
    )


async def ollama_embed(request: web.Request) -> web.Response:
    node = request.app[NODE]
    body = await read_json(request)
    if not isinstance(body, dict):
        return web.json_response({"error": "the request body must be a JSON object"}, status=400)
    try:
        name = given if isinstance(given := body.get("model"), str) else ""
        model = node.resolve_model(name.removesuffix(":latest"))
        vectors, n_tokens = await embed(
            request, _inputs(body.get("input"), request.app[SETTINGS]().max_prompt_chars), _dimensions(body)
        )
    except (ApiError, ShardError) as exc:
        err = http_error(exc)
        return web.json_response({"error": err.message}, status=err.status)
    return web.json_response(
        {
            "model": model if ":" in model else model + ":latest",
            "embeddings": [[float(x) for x in v] for v in vectors],
            "total_duration": 0,
            "load_duration": 0,
            "prompt_eval_count": n_tokens,
        }
    )


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/embeddings", embeddings, name="embeddings")
    app.router.add_post("/embeddings", embeddings, name="embeddings_unprefixed")
    app.router.add_post("/api/embed", ollama_embed, name="ollama_embed")
