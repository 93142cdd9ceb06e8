"""GET /health, GET /metrics, GET /v1/system/{status,topology,peers,credit}."""

from __future__ import annotations

from aiohttp import web

from shard.api.keys import METRICS, NODE, VIEWS
from shard.api.metrics import CONTENT_TYPE

# Each handler registers itself (aiohttp's route table): one place per route, no second list.
routes = web.RouteTableDef()


@routes.get("/health", name="health")
async def health(request: web.Request) -> web.Response:
    node = request.app[NODE]
    status = node.status()
    return web.json_response(status, status=200 if status["status"] == "ok" else 503)


@routes.get("/metrics", name="metrics")
async def metrics(request: web.Request) -> web.Response:
    body = request.app[METRICS].render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


@routes.get("/v1/system/status", name="system_status")
async def system_status(request: web.Request) -> web.Response:
    node = request.app[NODE]
    if node.verifier is not None:
        await node.verifier.live_info()  # fresh counters and slot load
    return web.json_response(node.status(detail=True))


@routes.get("/v1/system/topology", name="topology")
async def topology(request: web.Request) -> web.Response:
    return web.json_response(await request.app[VIEWS].topology())


@routes.get("/v1/system/peers", name="peers")
async def peers(request: web.Request) -> web.Response:
    return web.json_response(await request.app[VIEWS].peers())


@routes.get("/v1/system/credit", name="credit")
async def credit(request: web.Request) -> web.Response:
    return web.json_response(request.app[VIEWS].credit())


def add_routes(app: web.Application) -> None:
    app.add_routes(routes)
