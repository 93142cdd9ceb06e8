"""The Shard web app at `/`: chat, the network sidebar and the tab's scout (built from
`web-scout/app.html` into the same `web-scout/dist` as the scout page; its assets are the scout
page's, under `/scout/assets/`). The page is static and holds no data: conversations stay in the
browser, and what it asks of the node goes through the API (with the user's key when the node
requires one). Also at `/scout/app`, which, like all of `/scout/`, is open without an API key
on a node that requires one (the page then asks for the key)."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from shard.api.scout_routes import ISOLATION, dist_dir


def page() -> Path | None:
    """The built web app, or None when web-scout has not been built."""
    path = dist_dir() / "app.html"
    return path if path.is_file() else None


async def index(request: web.Request) -> web.StreamResponse:
    path = page()
    if path is None:
        folder = dist_dir()
        body = (f"<!doctype html><meta charset=utf-8><title>Shard</title><h1>The Shard web app is not built</h1>"
                f"<p>No build at <code>{folder}</code>. Build it with <code>bash scripts/setup</code> (needs Node.js and npm), "
                f"or <code>cd web-scout &amp;&amp; npm ci &amp;&amp; npm run build</code>. The API is at <code>/v1</code>.</p>")
        return web.Response(status=503, text=body, content_type="text/html", headers=ISOLATION)
    return web.FileResponse(path, headers={**ISOLATION, "Cache-Control": "no-cache", "Content-Type": "text/html; charset=utf-8"})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", index, name="webapp")
    app.router.add_get("/scout/app", index, name="webapp_open")
