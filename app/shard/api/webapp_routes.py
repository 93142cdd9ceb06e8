"""The Shard web app at `/`: chat, the network sidebar and the tab's scout (built from
`web-scout/app.html` into the same `web-scout/dist` as the scout page; its assets are the scout
page's, under `/scout/assets/`). The page is static and holds no data: conversations stay in the
browser, and what it asks of the node goes through the API (with the user's key when the node
requires one). Also at `/scout/app`, which, like all of `/scout/`, is open without an API key
on a node that requires one (the page then asks for the key)."""

from __future__ import annotations

import html
from pathlib import Path

from aiohttp import web

from shard.api.keys import NODE
from shard.api.scout_routes import ISOLATION, dist_dir


def page() -> Path | None:
    """The built web app, or None when web-scout has not been built."""
    path = dist_dir() / "app.html"
    return path if path.is_file() else None


def _home(request: web.Request, folder: Path) -> web.Response:
    """Where the web app is not built: a person who opens the API port learns what answers there."""
    status = request.app[NODE].status()
    state = html.escape(f"{status['status']}: {status['message']}")
    body = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>Shard</title></head><body>"
        f"<h1>Shard is running</h1><p>Version {html.escape(status['version'])}. State: {state}.</p>"
        "<p>Point OpenAI-compatible apps at <code>/v1</code> on this address.</p><ul>"
        "<li><a href='/v1/models'>/v1/models</a>: the models served</li>"
        "<li><a href='/health'>/health</a> and <a href='/v1/system/status'>/v1/system/status</a></li>"
        "<li><a href='/openapi.json'>/openapi.json</a>: the API's description</li>"
        "<li><a href='/scout/'>/scout/</a>: the Web Scout (drafts in your browser)</li>"
        "<li><a href='/metrics'>/metrics</a>: Prometheus metrics</li></ul>"
        f"<p>The web app (chat in the browser) is not built: no build at <code>{html.escape(str(folder))}</code>. "
        "Build it with <code>bash scripts/setup</code> (needs Node.js and npm), or "
        "<code>cd web-scout &amp;&amp; npm ci &amp;&amp; npm run build</code>.</p></body></html>"
    )
    return web.Response(text=body, content_type="text/html")


async def index(request: web.Request) -> web.StreamResponse:
    path = page()
    if path is None:
        return _home(request, dist_dir())
    return web.FileResponse(
        path, headers={**ISOLATION, "Cache-Control": "no-cache", "Content-Type": "text/html; charset=utf-8"}
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", index, name="webapp")
    app.router.add_get("/scout/app", index, name="webapp_open")
