"""The aiohttp application factory: middlewares and routes, nothing else."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import web
from aiohttp.typedefs import Middleware

from shard.api import (
    embeddings_routes,
    middlewares,
    ollama_routes,
    openai_routes,
    openapi,
    responses_routes,
    scout_routes,
    system_routes,
    webapp_routes,
)
from shard.api.keys import NODE

if TYPE_CHECKING:
    from shard.node import Node


def metrics_middleware(node: Node) -> Middleware:
    @web.middleware
    async def middleware(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        route = request.match_info.route.name or "unmatched"
        try:
            response = await handler(request)
        except (ConnectionResetError, asyncio.CancelledError):
            node.metrics.requests.labels(route, "499").inc()  # the client went away
            raise
        node.metrics.requests.labels(route, str(response.status)).inc()
        return response

    return middleware


def create_app(node: Node) -> web.Application:
    s = node.settings
    app = web.Application(
        client_max_size=s.max_body_bytes,
        middlewares=[
            metrics_middleware(node),
            middlewares.error_middleware(s),
            middlewares.host_origin_middleware(s),
            middlewares.auth_middleware(node.api_keys),
            middlewares.rate_limit_middleware(s, node.api_keys),
        ],
    )
    app[NODE] = node
    openai_routes.add_routes(app)
    ollama_routes.add_routes(app)
    embeddings_routes.add_routes(app)
    responses_routes.add_routes(app)
    system_routes.add_routes(app)
    scout_routes.add_routes(app)
    webapp_routes.add_routes(app)
    openapi.add_routes(app)
    return app
