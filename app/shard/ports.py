"""The narrow interfaces the core's parts are given, instead of the node: each part names what it
uses (a signer, the network, the ledger, the current settings, the local model) and nothing else.
The node wires them (`node.py`); tests can hand a part small stand-ins.

Providers are callables because what they give changes while the node runs: the sidecar restarts,
the ledger opens at start, a settings change makes a new Settings."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from shard.config import Settings
    from shard.coop.draft_model import DraftModel
    from shard.credit.ledger import Ledger
    from shard.verifier.client import VerifierClient


class Signer(Protocol):
    """Signs and checks with a libp2p identity (receipts are signed by the issuer's peer key)."""

    @property
    def peer_id(self) -> str: ...

    async def sign(self, payload: bytes) -> str:
        """The base64 ed25519 signature of `payload` by this node's key."""
        ...

    async def verify(self, payload: bytes, signature_b64: str, peer_id: str) -> bool:
        """Whether `peer_id`'s key signed `payload` (False when it cannot be checked)."""
        ...


class Network(Signer, Protocol):
    """The sidecar's control API as the core's parts use it."""

    @property
    def ready(self) -> bool: ...

    async def call(
        self, method: str, path: str, body: dict[str, Any] | None = None, timeout: float = 15.0
    ) -> dict[str, Any]: ...

    def stream(self, path: str, body: dict[str, Any]) -> AsyncGenerator[dict[str, Any], None]: ...

    async def send_stream(self, path: str, lines: AsyncIterator[dict[str, Any]]) -> None: ...


class LocalModel(Protocol):
    """What this node serves itself: the model the verifier runs, and whether peers may use it."""

    @property
    def verifier(self) -> VerifierClient | None: ...

    @property
    def draft_model(self) -> DraftModel | None: ...

    @property
    def contributing(self) -> bool: ...

    def model_id(self) -> str | None: ...

    def model_ids(self) -> list[str]: ...


SettingsReader = Callable[[], "Settings"]  # the settings now (a change makes a new Settings)
NetworkProvider = Callable[[], "Network | None"]  # the sidecar, None while there is none
LedgerProvider = Callable[[], "Ledger | None"]  # the ledger, None before start and after stop
Spawn = Callable[[Any], None]  # run a coroutine in the background, kept until it ends
