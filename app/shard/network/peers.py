"""The node's view of its peers, kept current from the sidecar's events, and the privacy rule:
which peers may receive this user's prompts as draft work."""

from __future__ import annotations

import ipaddress
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from shard.network import pairing

PRIVACY_HELP = {
    "local": "scouts on this machine only",
    "lan": "scouts on this machine and the local network",
    "peers": "the trusted peers named in settings",
    "anyone": "any scout on the network",
}


@dataclass
class Peer:
    peer_id: str
    addrs: list[str] = field(default_factory=list)
    roles: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    capacity: int = 0
    load: int = 0
    agent: str = ""
    latency_ms: float | None = None
    connected_since: float = field(default_factory=time.time)
    local: bool = False
    pair: str | None = None  # the pairing proof from its handshake (network/pairing.py)

    def update(self, d: dict[str, Any]) -> None:
        for key in ("addrs", "roles", "models", "capacity", "load", "agent", "latency_ms", "connected_since", "local", "pair"):
            if d.get(key) is not None:
                setattr(self, key, d[key])


def _ip(addr: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    parts = addr.split("/")
    for proto, value in zip(parts, parts[1:]):
        if proto in ("ip4", "ip6"):
            try:
                return ipaddress.ip_address(value)
            except ValueError:
                return None
    return None


class PeerTable:
    def __init__(self) -> None:
        self.peers: dict[str, Peer] = {}
        self.pair_key = ""  # this node's pairing key, and its peer id: what a local scout's proof is checked with
        self.me = ""

    def replace(self, listing: list[dict[str, Any]]) -> None:
        self.peers = {}
        for d in listing:
            self.upsert(d)

    def upsert(self, d: dict[str, Any]) -> Peer | None:
        peer_id = d.get("peer_id")
        if not isinstance(peer_id, str) or not peer_id:
            return None
        peer = self.peers.setdefault(peer_id, Peer(peer_id))
        peer.update(d)
        return peer

    def remove(self, peer_id: str) -> None:
        self.peers.pop(peer_id, None)

    def listing(self) -> list[dict[str, Any]]:
        return [asdict(p) for p in self.peers.values()]

    def admits(self, peer: Peer, privacy: str, trusted: list[str], paired_only: bool = True) -> bool:
        """May this peer receive the user's prompts under the privacy setting? Under `local`, a
        scout must have proven the pairing key; `paired_only=False` (Oracles asked by a consumer,
        which send no proof) goes by the address alone."""
        if privacy == "anyone":
            return True
        if privacy == "peers":
            return peer.peer_id in trusted
        if peer.local and (not paired_only or pairing.proven(self.pair_key, peer.peer_id, self.me, peer.pair)):
            return True  # on this machine *and* paired: an address alone proves nothing
        if privacy == "lan":
            ips = [ip for ip in map(_ip, peer.addrs) if ip is not None]
            return bool(ips) and all(ip.is_private or ip.is_loopback or ip.is_link_local for ip in ips)
        return False

    def scouts(self, privacy: str, trusted: list[str]) -> list[str]:
        """Connected scouts that the setting admits."""
        return [p.peer_id for p in self.peers.values() if "scout" in p.roles and self.admits(p, privacy, trusted)]

    def admitted(self, peer_id: str, privacy: str, trusted: list[str]) -> bool:
        peer = self.peers.get(peer_id)
        return peer is not None and self.admits(peer, privacy, trusted)
