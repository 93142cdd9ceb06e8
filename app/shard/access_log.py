"""An aiohttp access logger that records only the requests that did not succeed (4xx, 5xx): a 401
for a missing key or a 503 with no model then shows in the logs and on the dashboard's Logs page,
without a line for every successful call."""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger


class FailedRequestLog(AbstractAccessLogger):
    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        if response.status < 400:
            return
        level = logging.ERROR if response.status >= 500 else logging.WARNING
        # The path only (no query string: it could carry a key); the client as the socket saw it.
        self.logger.log(
            level,
            "%s %s answered %d %s (%.0f ms, client %s)",
            request.method,
            request.path,
            response.status,
            response.reason or "",
            time * 1000,
            request.remote or "?",
        )
