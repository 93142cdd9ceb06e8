"""The node's side of the verifier API: the child process under the supervisor, and calls to it."""

from __future__ import annotations

import json
import secrets
import sys
from collections.abc import AsyncGenerator, Callable
from pathlib import Path
from typing import Any

import aiohttp

from shard import errors
from shard.config import Settings
from shard.supervisor import ChildSpec, ChildState, Supervisor, SupervisorEvent
from shard.verifier import protocol


class VerifierUnavailable(errors.ModelUnavailable):
    """The verifier cannot take requests now (loading, restarting, failed); the text says which."""


def verifier_command(settings: Settings, model_path: Path) -> list[str]:
    # Same executable: `python -m shard` from source, the bundle's own binary when frozen.
    base = [sys.executable] if getattr(sys, "frozen", False) else [sys.executable, "-m", "shard"]
    return (
        base
        + [
            "verifier",
            "--model",
            str(model_path),
            "--ctx-size",
            str(settings.n_ctx),
            "--parallel",
            str(settings.parallel),
            "--gpu-layers",
            str(settings.n_gpu_layers),
            "--threads",
            str(settings.n_threads),
            "--log-level",
            settings.log_level,
        ]
        + (["--embedding-model", settings.embedding_model] if settings.embedding_model else [])
    )


class VerifierClient:
    def __init__(
        self, settings: Settings, model_path: Path, on_event: Callable[[SupervisorEvent], None] | None = None
    ) -> None:
        self.model_path = model_path
        self.token = secrets.token_urlsafe(32)
        self._session: aiohttp.ClientSession | None = None
        self.last_status: dict[str, Any] = {"status": "stopped"}
        self.model_info: dict[str, Any] = {}
        spec = ChildSpec(
            name="verifier",
            argv=verifier_command(settings, model_path),
            health=self._health,
            env={protocol.TOKEN_ENV: self.token},
            ready_prefix=protocol.READY_PREFIX,
            log_path=settings.data_path / "logs" / "verifier.log",
            start_timeout_s=settings.verifier_start_timeout_s,
            fatal_exit_codes=(protocol.EXIT_MODEL_UNUSABLE,),
            max_start_failures=3,
        )
        self.supervisor = Supervisor(spec, on_event)

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        if self._session is None:
            # No total timeout: a generation may stream for minutes. Connect timeouts stay short.
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=5))
        self.supervisor.start()

    async def stop(self) -> None:
        await self.supervisor.stop()
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.supervisor.info.get('port', 0)}"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def _health(self, info: dict[str, Any]) -> bool:
        if self._session is None or "port" not in info:
            return False
        async with self._session.get(
            f"http://127.0.0.1:{info['port']}/health", timeout=aiohttp.ClientTimeout(total=3)
        ) as r:
            self.last_status = await r.json()
        if self.last_status.get("status") == "ok" and not self.model_info:
            self.model_info = await self._get_json("/info", info)
        return self.last_status.get("status") == "ok"

    async def _get_json(self, path: str, info: dict[str, Any]) -> dict[str, Any]:
        assert self._session is not None
        async with self._session.get(f"http://127.0.0.1:{info['port']}{path}", headers=self.headers) as r:
            return await r.json()

    async def live_info(self) -> dict[str, Any]:
        """The verifier's model info with its current counters and slot load (empty if not ready)."""
        if not self.supervisor.ready:
            return {}
        try:
            self.model_info = await self._get_json("/info", self.supervisor.info)
        except (aiohttp.ClientError, ValueError):
            pass
        return self.model_info

    def describe_state(self) -> str:
        """Why requests cannot be served now, in words for an error message."""
        sup = self.supervisor
        if sup.state is ChildState.FAILED:
            return f"the model could not be loaded from {self.model_path.name}: {sup.last_error}"
        if sup.state is ChildState.STARTING:
            pct = float(self.last_status.get("progress", 0.0)) * 100
            return f"the model is loading ({pct:.0f}%)"
        if sup.state is ChildState.BACKOFF:
            return f"the verifier is restarting after a failure ({sup.last_error})"
        return f"the verifier is {sup.state.value}"

    def _require_ready(self) -> aiohttp.ClientSession:
        if not self.supervisor.ready or self._session is None:
            raise VerifierUnavailable(self.describe_state())
        return self._session

    # -- calls --------------------------------------------------------------------------------

    async def generate(self, request: protocol.GenerateRequest) -> AsyncGenerator[dict[str, Any], None]:
        """Stream the verifier's events for one generation. Closing the iterator early (a client
        that went away) closes the connection, and the verifier frees the slot at once."""
        session = self._require_ready()
        try:
            async with session.post(f"{self.base_url}/generate", json=request.to_dict(), headers=self.headers) as r:
                if r.status != 200:
                    raise await _request_error(r)
                async for line in r.content:
                    if line.strip():
                        yield json.loads(line)
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
            raise VerifierUnavailable(
                f"the verifier stopped during the request ({exc.__class__.__name__}); it is being restarted"
            ) from None

    async def _post(self, path: str, body: dict[str, Any]) -> Any:
        session = self._require_ready()
        try:
            async with session.post(f"{self.base_url}{path}", json=body, headers=self.headers) as r:
                if r.status != 200:
                    raise await _request_error(r)
                return await r.json()
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
            raise VerifierUnavailable(f"the verifier stopped during the request ({exc.__class__.__name__})") from None

    async def verify(self, request: protocol.VerifyRequest) -> protocol.VerifyResult:
        return protocol.VerifyResult(**await self._post("/verify", request.to_dict()))

    async def check(self, request: protocol.CheckRequest) -> protocol.CheckResult:
        """Whether a peer's text is one this model could have written for the request."""
        return protocol.CheckResult(**await self._post("/check", request.to_dict()))

    async def draft(self, request: protocol.DraftRequest) -> protocol.DraftVerdict:
        """Hand a draft to a running generation; returns once a step has checked it (or the job ended)."""
        return protocol.DraftVerdict(**await self._post("/draft", request.to_dict()))

    async def embed(self, request: protocol.EmbedRequest) -> dict[str, Any]:
        """{"embeddings": [[float]], "prompt_tokens": n, "dimensions": d}"""
        return await self._post("/embed", request.to_dict())

    async def tokenize(self, text: str, special: bool = False) -> list[int]:
        return (await self._post("/tokenize", {"text": text, "special": special}))["tokens"]


async def _request_error(r: aiohttp.ClientResponse) -> errors.ShardError:
    """The domain error the verifier's refusal names by its code (InvalidRequest for a 4xx it does not name)."""
    code = "invalid_request"
    try:
        error = (await r.json())["error"]
        message = str(error["message"])
        code = str(error.get("code") or code)
    except Exception:
        message = f"verifier answered HTTP {r.status}"
    if r.status == 503:
        return VerifierUnavailable(message)
    return errors.from_code(code, message)
