"""The web scout page at `/scout/` (built from `web-scout/` into `web-scout/dist`), the GGUF models
that its wllama drafter loads (`/scout/models/<file>`), and `/scout/node.json`, where the page finds
the sidecar's WebSocket address. All from the node's own origin, so a browser on this machine
needs no CORS and no Local Network Access prompt; no API key is asked for (`/scout` is an open path:
it serves only static files and public addresses, and the prompts reach a scout only over libp2p,
where the privacy setting decides). Every answer carries COOP/COEP/CORP headers: the page is
cross-origin isolated, which wllama needs for threads (SharedArrayBuffer)."""

from __future__ import annotations

import mimetypes
import os
import sys
from pathlib import Path

from aiohttp import web

from shard import models
from shard.api.keys import NODE, SETTINGS, VIEWS
from shard.coop.draft_model import TAB_MAX_BYTES

ISOLATION = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "Cross-Origin-Resource-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
}
MODEL_PREFIX = "/scout/models/"


def dist_dir() -> Path:
    """`SHARD_WEB_SCOUT_DIR`, else a frozen bundle's `web-scout/`, else the source checkout's build."""
    env = os.environ.get("SHARD_WEB_SCOUT_DIR")
    if env:
        return Path(env)
    bundle = getattr(sys, "_MEIPASS", None)
    if bundle:
        return Path(bundle) / "web-scout"
    return Path(__file__).resolve().parents[3] / "web-scout" / "dist"


def _served_models(request: web.Request) -> dict[str, Path]:
    """File name -> path: the node's draft model, and GGUFs a tab can load (the models folder and
    the model it runs, up to TAB_MAX_BYTES: a tab never downloads an Oracle's big model)."""
    node = request.app[NODE]
    found = {p.name: p for p in models.list_models(request.app[SETTINGS]().data_path) if _tab_sized(p)}
    if node.model_path is not None and node.model_path.suffix.lower() == ".gguf" and _tab_sized(node.model_path):
        found.setdefault(node.model_path.name, node.model_path)
    draft = getattr(node, "draft_model", None)
    if draft is not None:
        found[draft.name] = draft.path
    return found


def _tab_sized(path: Path) -> bool:
    try:
        return path.stat().st_size <= TAB_MAX_BYTES
    except OSError:
        return False


def _not_built(folder: Path) -> web.Response:
    body = (
        f"<!doctype html><meta charset=utf-8><title>Shard web scout</title><h1>The web scout is not built</h1>"
        f"<p>No build at <code>{folder}</code>. Build it with <code>bash scripts/setup</code> (needs Node.js and npm), "
        f"or <code>cd web-scout &amp;&amp; npm ci &amp;&amp; npm run build</code>.</p>"
    )
    return web.Response(status=503, text=body, content_type="text/html", headers=ISOLATION)


async def index(request: web.Request) -> web.StreamResponse:
    folder = dist_dir()
    page = folder / "index.html"
    if not page.is_file():
        return _not_built(folder)
    return web.FileResponse(
        page, headers={**ISOLATION, "Cache-Control": "no-cache", "Content-Type": "text/html; charset=utf-8"}
    )


async def redirect(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("/scout/" + (f"?{request.query_string}" if request.query_string else ""))


async def asset(request: web.Request) -> web.StreamResponse:
    folder = (dist_dir() / "assets").resolve()
    name = request.match_info["name"]
    path = (folder / name).resolve()
    if path.parent != folder or not path.is_file():  # one flat folder: no traversal, no subfolders
        raise web.HTTPNotFound()
    ctype = (
        "application/wasm"
        if path.suffix == ".wasm"
        else (mimetypes.guess_type(path.name)[0] or "application/octet-stream")
    )
    if path.suffix in (".js", ".mjs"):
        ctype = "text/javascript"
    # names carry a content hash: cache for good
    return web.FileResponse(
        path, headers={**ISOLATION, "Content-Type": ctype, "Cache-Control": "public, max-age=31536000, immutable"}
    )


async def model_file(request: web.Request) -> web.StreamResponse:
    path = _served_models(request).get(request.match_info["name"])
    if path is None or not path.is_file():
        raise web.HTTPNotFound()
    # FileResponse answers Range requests too (wllama may fetch a model in parts)
    return web.FileResponse(
        path, headers={**ISOLATION, "Content-Type": "application/octet-stream", "Cache-Control": "no-cache"}
    )


async def node_json(request: web.Request) -> web.Response:
    node = request.app[NODE]
    topo = await request.app[VIEWS].topology()
    served = [
        {"name": name, "url": MODEL_PREFIX + name, "bytes": p.stat().st_size}
        for name, p in sorted(_served_models(request).items())
        if p.is_file()
    ]
    body = {
        "sidecar": topo.get("sidecar"),
        "message": topo.get("message"),
        "peer_id": topo.get("peer_id"),
        "ws_addrs": topo.get("ws_addrs", []),
        # for a page that may not open ws:// (served over https, or by another machine's node)
        "webrtc_addrs": topo.get("webrtc_addrs", []),
        "model": node.model_path.name if node.model_path is not None else None,
        # what the tab drafts with: the draft model, else the node's own model only if a tab can load it
        "draft_model": node.draft_model.name
        if node.draft_model is not None
        else (
            node.model_path.name
            if node.model_path is not None and node.model_path.name in dict(_served_models(request))
            else None
        ),
        "models": served,
        "prompt_privacy": request.app[SETTINGS]().prompt_privacy,
        # The pairing key, so this page's scout is admitted as the user's own (network/pairing.py). Only a page
        # on this origin can read it (Host and Origin checked, no CORS); with API keys set, never here.
        "pair_key": node.peer_table.pair_key if _may_pair(request) else None,
    }
    return web.json_response(body, headers={**ISOLATION, "Cache-Control": "no-store"})


def _may_pair(request: web.Request) -> bool:
    """Without API keys every local program may use this node anyway; with keys, the pairing key
    is not handed to whoever asks: the user opens the page as /scout/#pair=KEY."""
    return not any(request.app[NODE].api_keys())


def add_routes(app: web.Application) -> None:
    app.router.add_get("/scout", redirect, name="scout_redirect")
    app.router.add_get("/scout/", index, name="scout_page")
    app.router.add_get("/scout/index.html", index, name="scout_index")
    app.router.add_get("/scout/node.json", node_json, name="scout_node")
    app.router.add_get("/scout/assets/{name}", asset, name="scout_asset")
    app.router.add_get(MODEL_PREFIX + "{name}", model_file, name="scout_model")
