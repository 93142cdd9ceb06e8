"""The shard-daemon sidecar as the node sees it: where its binary is, the child process under the
core's supervisor, its control API (per-launch token), and its event stream (SSE), which the node
reads instead of polling. Described in docs/protocol.md, "Sidecar".
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import secrets
import shutil
import sys
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp

from shard.config import Settings
from shard.supervisor import ChildSpec, Supervisor, SupervisorEvent

log = logging.getLogger("shard.network")

READY_PREFIX = "SHARD_SIDECAR_READY "
TOKEN_ENV = "SHARD_CONTROL_TOKEN"
BINARY = "shard-daemon" + (".exe" if sys.platform == "win32" else "")
RESUBSCRIBE_S = 0.5  # after the event stream ended while the daemon still runs

EventHandler = Callable[[dict[str, Any]], None]  # must not block: slow work goes to a task


class SidecarError(Exception):
    """The sidecar refused or failed a call; the text says why."""


def find_daemon(settings: Settings) -> Path | None:
    """The shard-daemon binary: the setting or SHARD_DAEMON, next to the executable (a bundle),
    the cargo build output (a source checkout), or PATH."""
    candidates = [settings.daemon_path, os.environ.get("SHARD_DAEMON", "")]
    bundle = getattr(sys, "_MEIPASS", None)
    if bundle:
        candidates.append(str(Path(bundle) / BINARY))
    candidates.append(str(Path(sys.executable).parent / BINARY))
    repo = Path(__file__).resolve().parents[3]
    target = os.environ.get("CARGO_TARGET_DIR") or str(Path.home() / ".cache" / "shard" / "cargo-target")
    candidates += [str(Path(target) / "release" / BINARY), str(repo / "sidecar" / "target" / "release" / BINARY)]
    for c in candidates:
        if c and Path(c).is_file() and os.access(c, os.X_OK):
            return Path(c)
    found = shutil.which(BINARY)
    return Path(found) if found else None


def daemon_command(binary: Path, settings: Settings) -> list[str]:
    ws_port = settings.ws_port or (settings.tcp_port + 100 if settings.tcp_port else 0)
    argv = [
        str(binary),
        "--control-port",
        str(settings.control_port),
        "--tcp-port",
        str(settings.tcp_port),
        "--ws-port",
        str(ws_port),
        "--listen-host",
        settings.p2p_host,
        "--data-dir",
        str(settings.data_path / "sidecar"),
        "--log-level",
        settings.log_level.lower(),
        "--exit-with-stdin",
    ]
    for addr in settings.bootstrap:
        argv += ["--bootstrap", addr]
    if not settings.mdns:
        argv.append("--no-mdns")
    if not settings.webrtc:
        argv.append("--no-webrtc")
    elif settings.webrtc_port:
        argv += ["--webrtc-port", str(settings.webrtc_port)]
    argv += ["--target-peers", str(settings.target_peers)]
    if not settings.relay_server:
        argv.append("--no-relay-server")
    if settings.reach_private_addrs:
        argv.append("--reach-private-addrs")
    for origin in node_origins(settings):  # browsers may open the WebSocket listener from these only
        argv += ["--allowed-origin", origin]
    return argv


def node_origins(settings: Settings) -> list[str]:
    """The origins of the node's own pages (the web scout and app) and the configured extra ones."""
    own = [f"http://{host}:{settings.port}" for host in ("127.0.0.1", "localhost", "[::1]")]
    if settings.host not in ("127.0.0.1", "localhost", "::1", "0.0.0.0", "::"):
        own.append(f"http://{settings.host}:{settings.port}")
    return own + list(settings.allowed_origins)


class Sidecar:
    """The daemon under supervision, and a client of its control API."""

    def __init__(
        self, settings: Settings, binary: Path, on_child: Callable[[SupervisorEvent], None], on_event: EventHandler
    ) -> None:
        self.token = secrets.token_urlsafe(32)
        self._on_event = on_event
        self._session: aiohttp.ClientSession | None = None
        self._events_task: asyncio.Task[None] | None = None
        self.supervisor = Supervisor(
            ChildSpec(
                name="sidecar",
                argv=daemon_command(binary, settings),
                health=self._health,
                env={TOKEN_ENV: self.token, "RUST_LOG_STYLE": "never"},
                ready_prefix=READY_PREFIX,
                log_path=settings.data_path / "logs" / "sidecar.log",
                start_timeout_s=30.0,
                health_interval_s=2.0,
                stop_timeout_s=5.0,
                fatal_exit_codes=(2,),  # bad flags or a port taken with --strict-ports: a restart would fail alike
                max_start_failures=5,
            ),
            self._on_child_event(on_child),
        )

    def _on_child_event(self, forward: Callable[[SupervisorEvent], None]) -> Callable[[SupervisorEvent], None]:
        def handle(event: SupervisorEvent) -> None:
            if event.state.value == "running":  # a (re)started daemon: follow its new event stream
                self._follow_events()
            forward(event)

        return handle

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=3))
        self.supervisor.start()

    async def stop(self) -> None:
        if self._events_task is not None:
            self._events_task.cancel()
            self._events_task = None
        await self.supervisor.stop()
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def info(self) -> dict[str, Any]:
        """What the daemon announced at start: peer id, ports, listen addresses."""
        return self.supervisor.info

    @property
    def ready(self) -> bool:
        return self.supervisor.ready

    @property
    def peer_id(self) -> str:
        return str(self.info.get("peer_id", ""))

    # -- signing (ports.Signer): receipts are signed with this node's libp2p key ---------------

    async def sign(self, payload: bytes) -> str:
        signed = await self.call("POST", "/sign", {"payload_b64": base64.b64encode(payload).decode()})
        return str(signed["signature_b64"])

    async def verify(self, payload: bytes, signature_b64: str, peer_id: str) -> bool:
        body = {"payload_b64": base64.b64encode(payload).decode(), "signature_b64": signature_b64, "peer_id": peer_id}
        try:
            answer = await self.call("POST", "/verify-signature", body)
        except SidecarError:
            return False
        return answer.get("valid") is True

    def _url(self, path: str, info: dict[str, Any] | None = None) -> str:
        return f"http://127.0.0.1:{(info or self.info).get('control_port', 0)}{path}"

    async def _health(self, info: dict[str, Any]) -> bool:
        if self._session is None or "control_port" not in info:
            return False
        async with self._session.get(self._url("/health", info), timeout=aiohttp.ClientTimeout(total=3)) as r:
            return r.status == 200

    # -- control API ----------------------------------------------------------------------------

    @staticmethod
    async def _raise_for_status(r: aiohttp.ClientResponse, method: str, path: str) -> None:
        if r.status >= 400:
            data = await r.json(content_type=None)
            raise SidecarError(
                f"{method} {path}: {data.get('error', r.status) if isinstance(data, dict) else r.status}"
            )

    async def call(
        self, method: str, path: str, body: dict[str, Any] | None = None, timeout: float = 15.0
    ) -> dict[str, Any]:
        if not self.ready or self._session is None:
            raise SidecarError(f"the sidecar is {self.supervisor.state.value}")
        try:
            async with self._session.request(
                method,
                self._url(path),
                json=body,
                timeout=aiohttp.ClientTimeout(total=timeout),
                headers={"Authorization": f"Bearer {self.token}"},
            ) as r:
                await self._raise_for_status(r, method, path)
                return await r.json(content_type=None)
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            raise SidecarError(f"{method} {path} failed: {exc.__class__.__name__}: {exc}") from None

    async def stream(self, path: str, body: dict[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
        """POST `body`, then yield the NDJSON lines of the answer as they arrive (`/infer`)."""
        if not self.ready or self._session is None:
            raise SidecarError(f"the sidecar is {self.supervisor.state.value}")
        try:
            async with self._session.post(
                self._url(path),
                json=body,
                headers={"Authorization": f"Bearer {self.token}"},
                timeout=aiohttp.ClientTimeout(total=None, sock_read=180),
            ) as r:
                await self._raise_for_status(r, "POST", path)
                async for raw in r.content:
                    if raw.strip():
                        try:
                            line = json.loads(raw)
                        except json.JSONDecodeError:
                            raise SidecarError(f"POST {path}: an unreadable line from the peer") from None
                        if isinstance(line, dict):
                            yield line
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            raise SidecarError(f"POST {path} failed: {exc.__class__.__name__}: {exc}") from None

    async def send_stream(self, path: str, lines: AsyncIterator[dict[str, Any]]) -> None:
        """POST an NDJSON body written line by line as `lines` yields (`/infer-response`)."""
        if not self.ready or self._session is None:
            raise SidecarError(f"the sidecar is {self.supervisor.state.value}")

        async def body() -> AsyncIterator[bytes]:
            async for line in lines:
                yield json.dumps(line, ensure_ascii=False).encode() + b"\n"

        try:
            async with self._session.post(
                self._url(path),
                data=body(),
                timeout=aiohttp.ClientTimeout(total=None),
                headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/x-ndjson"},
            ) as r:
                await self._raise_for_status(r, "POST", path)
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            raise SidecarError(f"POST {path} failed: {exc.__class__.__name__}: {exc}") from None

    # -- events ---------------------------------------------------------------------------------

    def _follow_events(self) -> None:
        if self._events_task is not None:
            self._events_task.cancel()
        self._events_task = asyncio.get_running_loop().create_task(self._read_events(), name="sidecar-events")

    async def _read_events(self) -> None:
        """Read /events for as long as this daemon lives; its handler errors never end the stream.
        Once a subscription is open the handler gets `{"type": "subscribed"}` (the daemon's stream
        only carries what happens from then on: reconcile with its state now). A stream that ends
        while the same daemon still runs is opened again."""
        assert self._session is not None
        info, pid = dict(self.info), self.supervisor.pid
        while True:
            try:
                async with self._session.get(
                    self._url("/events", info), headers={"Authorization": f"Bearer {self.token}"}
                ) as r:
                    if r.status != 200:
                        log.error("sidecar: /events answered %d", r.status)
                        return
                    self._handle({"type": "subscribed"})
                    async for raw in r.content:
                        line = raw.decode("utf-8", "replace").strip()
                        if not line.startswith("data:"):
                            continue
                        try:
                            event = json.loads(line[5:])
                        except json.JSONDecodeError:
                            continue
                        if isinstance(event, dict):
                            self._handle(event)
            except (TimeoutError, aiohttp.ClientError) as exc:
                log.info("sidecar: event stream ended (%s)", exc.__class__.__name__)
            await asyncio.sleep(RESUBSCRIBE_S)
            if not self.ready or self.supervisor.pid != pid:
                return  # the daemon stopped; its restart starts a new reader

    def _handle(self, event: dict[str, Any]) -> None:
        try:
            self._on_event(event)
        except Exception:
            log.exception("sidecar: handling a %s event failed", event.get("type"))
