"""GET /, GET /health, GET /metrics, GET /v1/system/{status,topology,peers,credit}."""

from __future__ import annotations

import html

from aiohttp import web

from shard.api.keys import NODE
from shard.api.metrics import CONTENT_TYPE


async def home(request: web.Request) -> web.Response:
    """A person who opens the API port in a browser learns what answers there, and where to go."""
    status = request.app[NODE].status()
    state = html.escape(f"{status['status']}: {status['message']}")
    body = (f"<!doctype html><html><head><meta charset='utf-8'><title>Shard</title></head><body>"
            f"<h1>Shard is running</h1><p>Version {html.escape(status['version'])}. State: {state}.</p>"
            "<p>Point OpenAI-compatible apps at <code>/v1</code> on this address.</p><ul>"
            "<li><a href='/v1/models'>/v1/models</a>: the models served</li>"
            "<li><a href='/health'>/health</a> and <a href='/v1/system/status'>/v1/system/status</a></li>"
            "<li><a href='/openapi.json'>/openapi.json</a>: the API's description</li>"
            "<li><a href='/scout/'>/scout/</a>: the Web Scout (drafts in your browser)</li>"
            "<li><a href='/metrics'>/metrics</a>: Prometheus metrics</li></ul></body></html>")
    return web.Response(text=body, content_type="text/html")


async def health(request: web.Request) -> web.Response:
    node = request.app[NODE]
    status = node.status()
    return web.json_response(status, status=200 if status["status"] == "ok" else 503)


async def metrics(request: web.Request) -> web.Response:
    body = request.app[NODE].metrics.render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


async def system_status(request: web.Request) -> web.Response:
    node = request.app[NODE]
    if node.verifier is not None:
        await node.verifier.live_info()  # fresh counters and slot load
    return web.json_response(node.status(detail=True))


async def topology(request: web.Request) -> web.Response:
    return web.json_response(await request.app[NODE].topology())


async def peers(request: web.Request) -> web.Response:
    return web.json_response(await request.app[NODE].peers())


async def credit(request: web.Request) -> web.Response:
    return web.json_response(request.app[NODE].credit())


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", home, name="home")
    app.router.add_get("/health", health, name="health")
    app.router.add_get("/metrics", metrics, name="metrics")
    app.router.add_get("/v1/system/status", system_status, name="system_status")
    app.router.add_get("/v1/system/topology", topology, name="topology")
    app.router.add_get("/v1/system/peers", peers, name="peers")
    app.router.add_get("/v1/system/credit", credit, name="credit")
