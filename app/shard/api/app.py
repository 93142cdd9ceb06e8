"""The aiohttp application factory: middlewares and routes, nothing else."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

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
from shard.api.keys import METRICS, NODE, SCHEDULER, SETTINGS, VIEWS, NodeView
from shard.api.metrics import Metrics
from shard.config import Settings
from shard.credit.scheduler import Scheduler
from shard.views import NetworkViews


def metrics_middleware(metrics: Metrics) -> Middleware:
    @web.middleware
    async def middleware(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        route = request.match_info.route.name or "unmatched"
        try:
            response = await handler(request)
        except (ConnectionResetError, asyncio.CancelledError):
            metrics.requests.labels(route, "499").inc()  # the client went away
            raise
        metrics.requests.labels(route, str(response.status)).inc()
        return response

    return middleware


def create_app(
    node: NodeView,
    views: NetworkViews,
    settings: Settings,
    metrics: Metrics,
    scheduler: Scheduler,
    api_keys: Callable[[], list[str]],
) -> web.Application:
    s = settings
    app = web.Application(
        client_max_size=s.max_body_bytes,
        middlewares=[
            metrics_middleware(metrics),
            middlewares.error_middleware(s),
            middlewares.host_origin_middleware(s),
            middlewares.auth_middleware(api_keys),
            middlewares.rate_limit_middleware(s, api_keys),
        ],
    )
    app[NODE] = node
    app[SETTINGS] = lambda: node.settings
    app[VIEWS] = views
    app[METRICS] = metrics
    app[SCHEDULER] = scheduler
    openai_routes.add_routes(app)
    ollama_routes.add_routes(app)
    embeddings_routes.add_routes(app)
    responses_routes.add_routes(app)
    system_routes.add_routes(app)
    scout_routes.add_routes(app)
    webapp_routes.add_routes(app)
    openapi.add_routes(app)
    return app
