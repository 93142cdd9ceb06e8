"""The core's errors: what went wrong, in domain terms, each with a stable code. The core raises
these; only the API's edge (`api/errors.py: http_error`) turns them into an HTTP status and an
OpenAI error body, so nothing below the API knows about HTTP."""

from __future__ import annotations

from typing import ClassVar


class ShardError(Exception):
    """Base of the core's errors: `code` is stable (clients and tests match on it), the text is for people."""

    code: ClassVar[str] = "internal_error"

    retry_after_s: int | None = None  # for a condition that passes: when to try again

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class InvalidRequest(ShardError):
    """The request cannot be served as asked (a bad parameter, a grammar that does not compile...)."""

    code = "invalid_request"


class ContextTooLong(InvalidRequest):
    """The prompt (with what was asked to be generated) does not fit the model's context."""

    code = "context_length_exceeded"


class ModelNotFound(ShardError):
    """The request names a model this node does not serve (nor any Oracle it knows)."""

    code = "model_not_found"


class Unavailable(ShardError):
    """The request cannot be served now; retrying later may work."""

    code = "unavailable"


class NoModel(Unavailable):
    """No model is loaded here and no Oracle on the network serves one."""

    code = "no_model"


class ModelUnavailable(Unavailable):
    """The local model cannot take requests now (loading, restarting, failed); the text says which."""

    code = "verifier_unavailable"
    retry_after_s = 2


class PeerUnavailable(Unavailable):
    """No Oracle on the network could serve the request; the text says why."""

    code = "verifier_unavailable"  # the code clients saw before the network could serve: kept
    retry_after_s = 2


class QueueFull(Unavailable):
    """The node is busy: its request queue is full."""

    code = "queue_full"

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"the node is busy: the request queue is full; retry in about {retry_after_s}s")
        self.retry_after_s: int = retry_after_s


def from_code(code: str, message: str) -> ShardError:
    """The error a code names (as another process reported it), InvalidRequest for codes not known here."""
    for cls in (ContextTooLong, ModelNotFound, NoModel, ModelUnavailable, InvalidRequest):
        if cls.code == code:
            return cls(message)
    return InvalidRequest(message)
