"""The node's own endpoints (api/system_routes.py): /health, /v1/system/{status,topology,peers,credit}."""

from __future__ import annotations

from typing import Any, Literal

from shard.api.wire.openai import Answer


class Health(Answer):
    status: Literal["ok", "loading", "no_model", "error", "stopped"]
    message: str
    model: str | None
    version: str
    contributing: bool | None = None


class ChildState(Answer):
    """A supervised child process (the verifier, the sidecar)."""

    state: str | None = None
    pid: int | None = None
    restarts: int | None = None
    last_error: str | None = None


class SidecarState(ChildState):
    state: str
    message: str | None = None
    peer_id: str | None = None
    peers: int | None = None


class Queue(Answer):
    in_flight: int
    waiting: int


class SystemStatus(Health):
    api_url: str
    model_path: str | None
    model_info: dict[str, Any]
    verifier: ChildState | None
    sidecar: SidecarState
    queue: Queue


class Reachability(Answer):
    mode: Literal["public", "relayed", "hole-punched", "private", "unknown"] | None = None
    nat: str | None = None
    relay_addrs: list[str] | None = None
    relay_server: bool | None = None
    hole_punched_peers: int | None = None


class Topology(Answer):
    """`sidecar` says whether it runs; addresses end in /p2p/<peer id>."""

    sidecar: Literal["running", "not running", "error"]
    message: str | None = None
    peer_id: str | None
    listen_addrs: list[str]
    ws_addrs: list[str]
    tcp_addrs: list[str] | None = None
    quic_addrs: list[str] | None = None
    webrtc_addrs: list[str] | None = None
    tcp_port: int | None = None
    ws_port: int | None = None
    quic_port: int | None = None
    webrtc_port: int | None = None
    reachability: Reachability | None = None
    provided_models: list[str] | None = None
    target_peers: int | None = None
    remembered_peers: int | None = None
    gossip_mesh_peers: int | None = None


class Peer(Answer):
    peer_id: str
    addrs: list[str] | None = None
    roles: list[str] | None = None
    models: list[str] | None = None
    capacity: int | None = None
    load: int | None = None
    agent: str | None = None
    latency_ms: float | None = None
    connected_since: float | None = None
    local: bool | None = None
    reputation: float | None = None
    accepted: int | None = None
    credit: float | None = None


class Peers(Answer):
    sidecar: Literal["running", "not running"]
    message: str | None = None
    peer_id: str | None = None
    peers: list[Peer]


class CreditPeer(Answer):
    peer_id: str
    drafts: int
    proposed: int
    accepted: int
    acceptance_rate: float
    reputation: float
    credit: float
    earned: float
    spent: float
    last_seen: float


class BalancePoint(Answer):
    t: float
    balance: float


class Credit(Answer):
    balance: float
    earned: float
    spent: float
    peers: list[CreditPeer]
    history: list[BalancePoint]
