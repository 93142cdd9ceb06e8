"""What the pages show, read from the core in one place (no Qt here): status, counters, peers, credit.

Everything is read through the node's public methods; a sidecar that is down gives empty peers
with the node's own sentence saying why.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shard.node import Node

log = logging.getLogger("shard.ui")

GENERATION_ROUTES = ("chat_completions", "completions")


def metric_totals(node: Node) -> dict[str, float]:
    """The node's Prometheus counters, summed over labels, plus requests per route."""
    out: dict[str, float] = {"requests": 0.0, "errors": 0.0}
    for family in node.metrics.registry.collect():
        for s in family.samples:
            if s.name == "shard_requests_total":
                if s.labels.get("endpoint") in GENERATION_ROUTES:
                    out["requests"] += s.value
                    if not s.labels.get("status", "").startswith("2"):
                        out["errors"] += s.value
                continue
            out[s.name] = out.get(s.name, 0.0) + s.value
    return out


def device_text(status: dict[str, Any]) -> str:
    info = status.get("model_info") or {}
    if not info:
        return "—"
    if info.get("gpu_offload"):
        layers = info.get("n_gpu_layers", -1)
        return "GPU (all layers)" if layers is None or layers < 0 else f"GPU ({layers} layers)"
    return "CPU"


@dataclass
class Snapshot:
    """One poll of the core."""

    t: float = field(default_factory=time.time)
    status: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    peers: dict[str, Any] = field(default_factory=dict)
    credit: dict[str, Any] = field(default_factory=dict)
    counts: dict[str, Any] = field(default_factory=dict)  # requests and credit, this session and lifetime
    topology: dict[str, Any] = field(default_factory=dict)  # the sidecar's addresses and reachability

    @property
    def peer_list(self) -> list[dict[str, Any]]:
        return list(self.peers.get("peers", []))

    def credit_by_peer(self) -> dict[str, dict[str, Any]]:
        return {p.get("peer_id", ""): p for p in self.credit.get("peers", [])}


async def _read(view: Coroutine[Any, Any, dict[str, Any]], what: str) -> dict[str, Any] | str:
    """A network view, or why it could not be read: a sidecar that went away must not stop the
    dashboard refreshing."""
    try:
        return await asyncio.wait_for(view, 5.0)
    except Exception as exc:
        log.debug("reading %s failed: %s", what, exc)
        return f"cannot read {what}: {exc}"


async def _peers(node: Node) -> dict[str, Any]:
    got = await _read(node.views.peers(), "peers")
    return got if isinstance(got, dict) else {"unavailable": got}


async def _topology(node: Node) -> dict[str, Any]:
    got = await _read(node.views.topology(), "topology")
    return got if isinstance(got, dict) else {}


def reachability_text(topology: dict[str, Any]) -> str:
    """How peers reach this node, from the sidecar's AutoNAT/relay/DCUtR state (`reachability.mode`)."""
    r = topology.get("reachability")
    if not isinstance(r, dict):
        return "— (no network)" if topology.get("sidecar") != "running" else "—"
    mode = r.get("mode")
    relays = len(r.get("relay_addrs") or [])
    punched = int(r.get("hole_punched_peers") or 0)
    if mode == "public":
        return "public: peers connect directly" + (
            " (serves as a relay for NATed peers)" if r.get("relay_server") else ""
        )
    if mode == "hole-punched":
        return f"behind NAT, direct after hole punching ({punched} peer{'s' if punched != 1 else ''})"
    if mode == "relayed":
        return f"behind NAT, reachable via relay ({relays} relay{'s' if relays != 1 else ''})"
    if mode == "private":
        return "behind NAT, no relay yet: only outgoing connections"
    return "not known yet (AutoNAT asks peers to dial back)"


async def snapshot(node: Node, *, peers: bool = True, credit: bool = True) -> Snapshot:
    snap = Snapshot(status=node.status(detail=True), metrics=metric_totals(node), counts=node.counts())
    if peers:
        snap.peers = await _peers(node)
        snap.topology = await _topology(node)
    if credit:
        snap.credit = node.views.credit()
    return snap


def since_text(started: float, now: float | None = None) -> str:
    """'14:05 (2 h 10 min ago)': when, and how long, in words people read at a glance."""
    now = time.time() if now is None else now
    mins = max(0, int((now - started) // 60))
    ago = (
        f"{mins // 1440} d {mins // 60 % 24} h"
        if mins >= 1440
        else f"{mins // 60} h {mins % 60} min"
        if mins >= 60
        else f"{mins} min"
    )
    day = "%Y-%m-%d %H:%M" if now - started >= 86400 else "%H:%M"
    return f"{time.strftime(day, time.localtime(started))} ({ago})"


def tray_state(status: dict[str, Any]) -> tuple[str, str]:
    """The tray icon's state (one of icons.TRAY_STATES) and a status line for the menu."""
    s = status.get("status")
    model = status.get("model") or "no model"
    sidecar = (status.get("sidecar") or {}).get("state", "disabled")
    networked = sidecar in ("running", "ok", "ready", "connected")
    if s == "error":
        return "error", "Error: " + str(status.get("message", "the model could not be loaded"))
    if s == "stopped":
        return "paused", "Node stopped"
    if s == "loading":
        return "starting", "Starting: " + str(status.get("message", "loading the model"))
    if not status.get("contributing", True) and s == "ok":
        return "paused", f"Paused: serving {model} locally, not sharing"
    if s == "ok" and status.get("model"):
        return ("contributing", f"Contributing: serving {model}") if networked else ("ready", f"Ready: serving {model}")
    if s == "ok":  # no model here, but Oracles on the network answer
        return "ready", "Ready: " + str(status.get("message", "requests go to Oracles on the network"))
    # No model and no Oracle: requests would fail. A warning, never a green "Ready".
    return "warning", (
        "No model: download one (Models) or wait for an Oracle on the network"
        if networked
        else "No model: download one in the dashboard (Models), or choose a GGUF file"
    )


def short_name(peer_id: str) -> str:
    """A short, readable name for a peer id: its last six characters, as people quote ids aloud
    (libp2p ids share the prefix 12D3KooW, so the start says nothing)."""
    return f"…{peer_id[-6:]}" if len(peer_id) > 8 else peer_id
