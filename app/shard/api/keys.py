"""Typed keys for what the aiohttp application holds: one per resource (as aiohttp-demos), each
typed by what the handlers use of it, so the API never imports the node that wires it."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web

from shard.ports import SettingsReader

if TYPE_CHECKING:
    from shard.api.metrics import Metrics
    from shard.config import Settings
    from shard.coop.draft_model import DraftModel
    from shard.credit.scheduler import Scheduler
    from shard.events import GenerationEvent
    from shard.network.peers import PeerTable
    from shard.verifier.client import VerifierClient
    from shard.verifier.protocol import GenerateRequest
    from shard.views import NetworkViews


class NodeView(Protocol):
    """What the handlers ask of the core: the served model, a generation, and the status (the same
    one the tray shows). Domain errors (shard.errors) come out of these and become HTTP in
    api/errors.py."""

    settings: Settings
    started_at: int
    model_path: Path | None
    draft_model: DraftModel | None
    peer_table: PeerTable

    @property
    def verifier(self) -> VerifierClient | None: ...

    def model_ids(self) -> list[str]: ...

    def resolve_model(self, name: str, allow_default: bool = True) -> str: ...

    def require_verifier(self) -> VerifierClient: ...

    async def look_up_model(self, name: str) -> None: ...

    def generation(self, request: GenerateRequest, model: str) -> AsyncGenerator[GenerationEvent, None]: ...

    def status(self, detail: bool = False) -> dict[str, Any]: ...

    def api_keys(self) -> list[str]: ...  # the scout page hands out the pairing key only without keys


NODE: web.AppKey[NodeView] = web.AppKey("node")
VIEWS: web.AppKey[NetworkViews] = web.AppKey("views")
SETTINGS: web.AppKey[SettingsReader] = web.AppKey(
    "settings"
)  # the node's Settings now (a change makes a new one)  # topology, peers, credit: the tray reads the same
METRICS: web.AppKey[Metrics] = web.AppKey("metrics")
SCHEDULER: web.AppKey[Scheduler] = web.AppKey("scheduler")
