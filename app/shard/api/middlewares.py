"""Middlewares, outermost first: errors, Host/Origin (DNS rebinding, CORS), API keys, rate limit."""

from __future__ import annotations

import collections
import hmac
import ipaddress
import logging
import re
import time
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.typedefs import Middleware

from shard.api.errors import ApiError, error_response, http_error
from shard.api.key_guesses import KeyGuesses
from shard.config import Settings
from shard.errors import ShardError

log = logging.getLogger("shard.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
OPEN_PATHS = frozenset(
    {"/", "/health", "/openapi.json"}
)  # answered without an API key (the web app page, liveness checks, the tray, API docs)
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
BASE_ALLOWED_HEADERS = "Authorization, Content-Type, X-API-Key"
# A header name as RFC 9110 spells it (a token); a preflight asking for anything else gets the base list.
_HEADER_LIST = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+(\s*,\s*[!#$%&'*+.^_`|~0-9A-Za-z-]+)*$")


def error_middleware(settings: Settings) -> Middleware:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as err:
            return error_response(err)
        except ShardError as exc:
            return error_response(http_error(exc))
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            message = {
                404: f"no such endpoint: {request.method} {request.path}",
                405: f"method {request.method} is not allowed on {request.path}",
                413: f"the request body is larger than the limit of {settings.max_body_bytes} bytes",
            }.get(exc.status, exc.reason)
            return error_response(
                ApiError(
                    exc.status,
                    message,
                    code={404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}.get(exc.status),
                )
            )
        except (ConnectionResetError, OSError) as exc:
            # The client went away; nothing to answer. Handlers already cancelled their work.
            log.debug("client connection lost on %s: %s", request.path, exc)
            raise
        except Exception:
            log.exception("unhandled error on %s %s", request.method, request.path)
            return error_response(ApiError(500, "internal error in the node; see its log", "internal_error"))

    return middleware


def _host_name(value: str) -> str:
    """'127.0.0.1:8000' -> '127.0.0.1', '[::1]:8000' -> '::1', 'LocalHost' -> 'localhost'."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:].split("]", 1)[0]
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def _is_loopback(name: str) -> bool:
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def host_origin_middleware(settings: Settings) -> Middleware:
    """A web page on a foreign site must not reach the API, by rebinding DNS (foreign Host header)
    or by cross-origin requests (foreign Origin). Loopback hosts and origins of any port are ours."""
    allowed_hosts = {h.lower() for h in settings.allowed_hosts} | (
        {settings.host.lower()} if settings.host not in ("0.0.0.0", "::") else set()
    )
    allowed_origins = {o.rstrip("/").lower() for o in settings.allowed_origins}

    def origin_ok(origin: str) -> bool:
        if origin.rstrip("/").lower() in allowed_origins:
            return True
        parts = urlsplit(origin)
        return parts.scheme in ("http", "https") and _is_loopback((parts.hostname or "").lower())

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        host = _host_name(request.headers.get("Host", ""))
        if not (_is_loopback(host) or host in allowed_hosts):
            raise ApiError(
                403,
                f"Host header {request.headers.get('Host', '')!r} is not allowed (DNS rebinding protection); "
                "add it to allowed_hosts to serve it",
                "host_not_allowed",
            )
        origin = request.headers.get("Origin")
        if origin is not None and origin != "null" and not origin_ok(origin):
            raise ApiError(403, f"Origin {origin!r} is not allowed; add it to allowed_origins", "origin_not_allowed")
        if origin == "null":
            raise ApiError(403, "requests from opaque origins are not allowed", "origin_not_allowed")
        cors = {"Access-Control-Allow-Origin": origin, "Vary": "Origin"} if origin else {}
        if request.method == "OPTIONS" and origin:
            # The origin is allowed: so are the headers its client sends (the openai JS SDK's
            # x-stainless-*, OpenRouter's HTTP-Referer...). Only well-formed header names echo back.
            asked = request.headers.get("Access-Control-Request-Headers", "").strip()
            headers = (
                f"{BASE_ALLOWED_HEADERS}, {asked}"
                if asked and len(asked) <= 2048 and _HEADER_LIST.match(asked)
                else BASE_ALLOWED_HEADERS
            )
            return web.Response(
                status=204,
                headers={
                    **cors,
                    "Access-Control-Allow-Methods": "GET, POST, DELETE, OPTIONS",
                    "Access-Control-Allow-Headers": headers,
                    "Access-Control-Max-Age": "600",
                    "Vary": "Origin, Access-Control-Request-Headers",
                },
            )
        response = await handler(request)
        if cors and not response.prepared:
            response.headers.update(cors)
        return response

    return middleware


def _is_scout_path(path: str) -> bool:
    """The web scout's page, assets and models (api/scout_routes.py): open on this machine's origin."""
    return path == "/scout" or path.startswith("/scout/")


def presented_key(request: web.Request) -> str:
    auth = request.headers.get("Authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return request.headers.get("X-API-Key", "").strip()


def auth_middleware(current_keys: Callable[[], list[str]]) -> Middleware:
    """`current_keys` is read per request: keys changed in the UI apply at once. Wrong keys are
    throttled per address (api/key_guesses.py)."""
    guesses = KeyGuesses()

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        keys = [k.encode() for k in current_keys() if k]
        if keys and request.path not in OPEN_PATHS and not _is_scout_path(request.path):
            wait = guesses.retry_after(request.remote or "")
            if wait > 0:
                retry = max(1, int(wait + 0.999))
                raise ApiError(
                    429,
                    f"too many wrong API keys from this address; retry in {retry}s",
                    "too_many_wrong_keys",
                    headers={"Retry-After": str(retry)},
                )
            # Header bytes that are not UTF-8 arrive as surrogates: back to the bytes sent, never a 500.
            given = presented_key(request).encode("utf-8", "surrogateescape")
            # Compare with every key, always: the time taken says nothing about which one is close.
            matched = False
            for key in keys:
                matched |= hmac.compare_digest(given, key)
            if not given:
                raise ApiError(
                    401,
                    "an API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
                    "missing_api_key",
                )
            if not matched:
                guesses.wrong(request.remote or "")
                raise ApiError(401, "the API key is not valid", "invalid_api_key")
        return await handler(request)

    return middleware


class RateLimiter:
    """A sliding window of request times per client (API key, else address); bounded in clients."""

    def __init__(self, per_minute: int, max_clients: int = 10000) -> None:
        self.per_minute = per_minute
        self.max_clients = max_clients
        self._hits: collections.OrderedDict[str, collections.deque[float]] = collections.OrderedDict()

    def check(self, client: str, now: float | None = None) -> float:
        """Record a request; 0 if allowed, else the seconds until the client may try again."""
        now = time.monotonic() if now is None else now
        hits = self._hits.pop(client, None) or collections.deque()
        while hits and now - hits[0] >= 60.0:
            hits.popleft()
        self._hits[client] = hits
        if len(self._hits) > self.max_clients:
            self._hits.popitem(last=False)
        if len(hits) >= self.per_minute:
            return 60.0 - (now - hits[0])
        hits.append(now)
        return 0.0


def rate_limit_middleware(settings: Settings, current_keys: Callable[[], list[str]] = lambda: []) -> Middleware:
    """Per API key when keys are set (this runs after auth: only valid keys get here); with no keys,
    per address, and loopback is not limited unless rate_limit_loopback says so. The key a client
    sends counts only when it is a configured one, so a new dummy key never resets the limit."""
    limiter = RateLimiter(settings.rate_limit_per_minute)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method == "POST" and not _is_scout_path(request.path):
            keyed = any(current_keys())
            if not keyed and not settings.rate_limit_loopback and _is_loopback(request.remote or ""):
                return await handler(request)
            client = "key:" + presented_key(request) if keyed else "addr:" + (request.remote or "")
            wait = limiter.check(client)
            if wait > 0:
                retry = max(1, int(wait + 0.999))
                raise ApiError(
                    429,
                    f"rate limit of {settings.rate_limit_per_minute} requests per minute reached; retry in {retry}s",
                    "rate_limit_exceeded",
                    headers={"Retry-After": str(retry)},
                )
        return await handler(request)

    return middleware
