"""The node's view of its peers, kept current from the sidecar's events, and the privacy rule:
which peers may receive this user's prompts as draft work.

Events alone cannot keep the table right: the daemon's event stream only carries what happens
after a subscription, and drops what a slow reader missed (`lagged`). So on every (re)subscription
and every `lagged` event the node reconciles with the daemon's own peer list (`GET /peers`):
events that arrive while that listing is on its way are held and replayed over it, in order, so
neither a peer that connected during the call nor one that left is lost or left as a ghost."""

from __future__ import annotations

import ipaddress
import logging
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import psutil

from shard.network import pairing

if TYPE_CHECKING:
    from shard.network.sidecar import Sidecar

log = logging.getLogger("shard.network")

LOCAL_IPS_TTL_S = 30.0  # interfaces change rarely (a new DHCP lease, a VPN): re-read this often
PEER_EVENTS = ("peer_connected", "handshake", "peer_disconnected")

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
    draft_model: dict[str, Any] | None = None  # an Oracle's draft model for scouts (name, size, sha256, vocab)
    pair: str | None = None  # the pairing proof from its handshake (network/pairing.py)

    def update(self, d: dict[str, Any]) -> None:
        for key in (
            "addrs",
            "roles",
            "models",
            "capacity",
            "load",
            "agent",
            "latency_ms",
            "connected_since",
            "local",
            "draft_model",
            "pair",
        ):
            if d.get(key) is not None:
                setattr(self, key, d[key])


def normalize_addr(addr: str, peer_id: str) -> str:
    """`addr` ending in exactly one `/p2p/<peer_id>` (a dialed address may already carry one)."""
    suffix = f"/p2p/{peer_id}"
    while addr.endswith(suffix):
        addr = addr[: -len(suffix)]
    return addr + suffix if addr else addr


_local_ips: tuple[float, frozenset[str]] = (0.0, frozenset())


def local_ips() -> frozenset[str]:
    """Every address of every interface of this machine (loopback, LAN, VPN, IPv6)."""
    global _local_ips
    at, ips = _local_ips
    if time.monotonic() - at > LOCAL_IPS_TTL_S or not ips:
        found = set()
        for addrs in psutil.net_if_addrs().values():
            for a in addrs:
                if a.family.name in ("AF_INET", "AF_INET6"):
                    found.add(a.address.split("%", 1)[0])  # fe80::1%eth0: the zone is not part of the address
        ips = frozenset(found)
        _local_ips = (time.monotonic(), ips)
    return ips


def on_this_machine(addrs: list[str]) -> bool:
    """Is a peer with these (remote) addresses on this machine: loopback, or one of its interfaces?"""
    ips = [ip for ip in map(_ip, addrs) if ip is not None]
    return bool(ips) and all(ip.is_loopback or str(ip) in local_ips() for ip in ips)


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
        self._held: list[dict[str, Any]] | None = None  # events during a reconciliation, replayed after it
        self._syncs = 0
        self.pair_key = ""  # this node's pairing key, and its peer id: what a local scout's proof is checked with
        self.me = ""
        self.dropped: dict[str, str] = {}  # Oracles caught lying -> why (remote/client.py; shown in the listing)

    def replace(self, listing: list[dict[str, Any]]) -> None:
        self.peers = {}
        for d in listing:
            if isinstance(d, dict):
                self.upsert(d)

    def upsert(self, d: dict[str, Any]) -> Peer | None:
        peer_id = d.get("peer_id")
        if not isinstance(peer_id, str) or not peer_id:
            return None
        peer = self.peers.setdefault(peer_id, Peer(peer_id))
        peer.update(d)
        peer.addrs = [normalize_addr(a, peer_id) for a in peer.addrs if isinstance(a, str)]
        # Loopback, or this machine's LAN or VPN address (mDNS finds peers there): every address
        # counts, so a peer is not local for one loopback connection beside a remote one.
        peer.local = on_this_machine(peer.addrs)
        return peer

    def apply(self, event: dict[str, Any]) -> None:
        """One of the daemon's peer events (PEER_EVENTS); held while a reconciliation runs."""
        if self._held is not None:
            self._held.append(event)
            return
        kind = event.get("type")
        if kind == "peer_connected":
            addr = event.get("addr")
            self.upsert(
                {
                    "peer_id": event.get("peer_id"),
                    "addrs": [addr] if isinstance(addr, str) else None,
                    "local": event.get("local"),
                }
            )
        elif kind == "handshake":
            info = event.get("info")
            self.upsert({**(info if isinstance(info, dict) else {}), "peer_id": event.get("peer_id")})
        elif kind == "peer_disconnected":
            self.remove(str(event.get("peer_id")))

    def begin_sync(self) -> int:
        """Start a reconciliation: from now until end_sync, peer events are held."""
        self._syncs += 1
        if self._held is None:
            self._held = []
        return self._syncs

    def end_sync(self, sync: int, listing: list[dict[str, Any]] | None) -> None:
        """The daemon's listing (read after begin_sync), or None when it could not be read; then
        the held events, in order. A newer reconciliation supersedes this one's listing."""
        if sync != self._syncs or self._held is None:
            return
        held, self._held = self._held, None
        if listing is not None:
            self.replace(listing)
        for event in held:
            self.apply(event)

    def remove(self, peer_id: str) -> None:
        self.peers.pop(peer_id, None)

    def listing(self) -> list[dict[str, Any]]:
        return [{**asdict(p), "dropped": self.dropped.get(p.peer_id)} for p in self.peers.values()]

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


async def reconcile(table: PeerTable, sidecar: Sidecar) -> None:
    """Bring `table` in line with the daemon's peer list (after the event stream (re)opened or
    lagged): what the stream did not carry (a handshake, a disconnect) is in the listing; events
    during the call are replayed over it."""
    from shard.network.sidecar import SidecarError

    sync = table.begin_sync()
    listing = None
    try:
        listing = (await sidecar.call("GET", "/peers"))["peers"]
    except (SidecarError, KeyError, TypeError) as exc:
        log.warning("sidecar: cannot read its peers: %s", exc)
    table.end_sync(sync, listing if isinstance(listing, list) else None)
