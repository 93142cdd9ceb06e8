"""The network and credit views: one of each, served by the API (`/v1/system/{topology,peers,
credit}`, the scout page's `node.json`) and read by the tray's pages (`ui/data.py`) alike. Built
from the parts they show (the sidecar, the peer table, the ledger), not from the node."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from shard.network.peers import PeerTable
from shard.network.sidecar import Sidecar, SidecarError
from shard.ports import LedgerProvider

log = logging.getLogger("shard.node")


class NetworkViews:
    def __init__(
        self,
        *,
        sidecar: Callable[[], Sidecar | None],
        sidecar_note: Callable[[], str],
        peers: PeerTable,
        ledger: LedgerProvider,
        shadow_paused: Callable[[str], bool],
    ) -> None:
        self._sidecar, self._note, self._peers = sidecar, sidecar_note, peers
        self._ledger, self._shadow_paused = ledger, shadow_paused

    def sidecar_status(self) -> dict[str, Any]:
        sc = self._sidecar()
        if sc is None:
            return {"state": "disabled", "message": self._note()}
        return {**sc.supervisor.snapshot(), "peer_id": sc.info.get("peer_id"), "peers": len(self._peers.peers)}

    def no_network(self) -> dict[str, Any] | None:
        """Why there is no network now (None when the sidecar is ready)."""
        sc = self._sidecar()
        if sc is not None and sc.ready:
            return None
        why = self._note() if sc is None else f"the sidecar is {sc.supervisor.state.value}"
        return {
            "sidecar": "not running",
            "message": f"the libp2p sidecar is {why}: this node has no network "
            "addresses and no peers; it serves only local requests",
        }

    async def topology(self) -> dict[str, Any]:
        sc = self._sidecar()
        down = self.no_network()
        if down is not None or sc is None:
            return {**(down or {}), "peer_id": None, "listen_addrs": [], "ws_addrs": []}
        try:
            topo = await sc.call("GET", "/topology")
        except SidecarError as exc:
            return {"sidecar": "error", "message": str(exc), "peer_id": None, "listen_addrs": [], "ws_addrs": []}
        return {"sidecar": "running", **topo}

    async def peers(self) -> dict[str, Any]:
        down = self.no_network()
        if down is not None:
            return {**down, "peers": []}
        await self.fresh_latency()
        ledger = self._ledger()
        peers = []
        for p in self._peers.listing():
            credit = ledger.peer(p["peer_id"]) if ledger else None
            peers.append(
                {
                    **p,
                    "reputation": round(credit.reputation, 4) if credit else 0.0,
                    "accepted": credit.accepted if credit else 0,
                    "credit": credit.credit if credit else 0.0,
                    "shadow_paused": self._shadow_paused(p["peer_id"]),
                }
            )
        sc = self._sidecar()
        return {"sidecar": "running", "peer_id": sc.info.get("peer_id") if sc else None, "peers": peers}

    async def fresh_latency(self) -> None:
        """Round-trip times change after the handshake: read the sidecar's current ping figures."""
        sc = self._sidecar()
        if sc is None:
            return
        try:
            fresh = (await sc.call("GET", "/peers"))["peers"]
        except (SidecarError, KeyError, TypeError) as exc:
            log.debug("sidecar: cannot read peer latency: %s", exc)
            return
        for d in fresh if isinstance(fresh, list) else []:
            peer = self._peers.peers.get(str(d.get("peer_id"))) if isinstance(d, dict) else None
            latency = d.get("latency_ms") if peer is not None else None
            if peer is not None and isinstance(latency, (int, float)) and not isinstance(latency, bool):
                if 0 <= latency < 3_600_000:
                    peer.latency_ms = float(latency)

    def credit(self) -> dict[str, Any]:
        """Balance, earned, spent and per-peer figures from the ledger."""
        ledger = self._ledger()
        if ledger is None:
            return {"balance": 0.0, "earned": 0.0, "spent": 0.0, "peers": [], "history": []}
        summary = ledger.summary()
        for p in summary["peers"]:  # a scout failing golden tickets: its drafts earn nothing here
            p["shadow_paused"] = self._shadow_paused(p["peer_id"])
        return summary
