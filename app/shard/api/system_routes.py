"""GET /health, GET /metrics, GET /v1/system/{status,topology,peers,credit}."""

from __future__ import annotations

from aiohttp import web

from shard.api.keys import METRICS, NODE, VIEWS
from shard.api.metrics import CONTENT_TYPE


async def health(request: web.Request) -> web.Response:
    node = request.app[NODE]
    status = node.status()
    return web.json_response(status, status=200 if status["status"] == "ok" else 503)


async def metrics(request: web.Request) -> web.Response:
    body = request.app[METRICS].render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


async def system_status(request: web.Request) -> web.Response:
    node = request.app[NODE]
    if node.verifier is not None:
        await node.verifier.live_info()  # fresh counters and slot load
    return web.json_response(node.status(detail=True))


async def topology(request: web.Request) -> web.Response:
    return web.json_response(await request.app[VIEWS].topology())


async def peers(request: web.Request) -> web.Response:
    return web.json_response(await request.app[VIEWS].peers())


async def credit(request: web.Request) -> web.Response:
    return web.json_response(request.app[VIEWS].credit())


def add_routes(app: web.Application) -> None:
    app.router.add_get("/health", health, name="health")
    app.router.add_get("/metrics", metrics, name="metrics")
    app.router.add_get("/v1/system/status", system_status, name="system_status")
    app.router.add_get("/v1/system/topology", topology, name="topology")
    app.router.add_get("/v1/system/peers", peers, name="peers")
    app.router.add_get("/v1/system/credit", credit, name="credit")
