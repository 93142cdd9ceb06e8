"""Errors in OpenAI's shape: {"error": {"message", "type", "code", "param"}}, with the right status.
The core raises domain errors (`shard.errors`); `http_error` is the one place they become HTTP."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from shard import errors

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "service_unavailable",
}


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.headers = headers or {}


def http_error(exc: errors.ShardError | ApiError) -> ApiError:
    """The HTTP status, headers and OpenAI error for a domain error (an ApiError is one already)."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, errors.InvalidRequest):
        status = 400
    elif isinstance(exc, errors.ModelNotFound):
        status = 404
    elif isinstance(exc, errors.Unavailable):
        status = 503
    else:
        status = 500
    headers = {"Retry-After": str(exc.retry_after_s)} if exc.retry_after_s is not None else None
    return ApiError(status, exc.message, exc.code, exc.param, headers)


def error_body(status: int, message: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    return {
        "error": {"message": message, "type": _TYPES.get(status, "invalid_request_error"), "code": code, "param": param}
    }


def error_response(err: ApiError) -> web.Response:
    return web.json_response(
        error_body(err.status, err.message, err.code, err.param), status=err.status, headers=err.headers
    )
