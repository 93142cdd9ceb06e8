"""Joining with default flags (mDNS on, as a new user runs it): whatever order mDNS, bootstrap dials
and the node's subscription to its sidecar's events happen in, every connected peer ends up
handshaken with its roles, its addresses carry one `/p2p/` suffix, and a peer on any of this
machine's interface addresses reads as on this machine. Real `shard serve` and `shard scout`
processes with their real sidecars; the peer table's reconciliation also on its own."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests

from harness import ServedNode, free_port, start_node, stop, until, wait_for
from shard.network.peers import PeerTable, local_ips, normalize_addr, on_this_machine

# Default network flags: mDNS on, listening on every interface; only the ports are left to the
# OS (other test runs share this machine) unless a test fixes one.
DEFAULT_FLAGS = ("--control-port", "0", "--tcp-port", "0")
# One redial interval of a bootstrap peer that was not up yet (30 s) plus start-up, for machines where
# mDNS finds nothing (no multicast interface); with mDNS it takes a few seconds.
JOIN_BOUND_S = 45.0


def peers_of(node: ServedNode) -> list[dict[str, Any]]:
    return requests.get(node.api + "/system/peers", timeout=5).json()["peers"]


def peer_id_of(node: ServedNode) -> str:
    return wait_for(
        lambda: requests.get(node.api + "/system/topology", timeout=5).json()["peer_id"], what="the peer id"
    )


def seen_with_role(node: ServedNode, peer_id: str, role: str) -> dict[str, Any] | None:
    return next((p for p in peers_of(node) if p["peer_id"] == peer_id and role in p["roles"]), None)


def check_addresses(peer: dict[str, Any]) -> None:
    suffix = f"/p2p/{peer['peer_id']}"
    assert peer["addrs"], peer
    for a in peer["addrs"]:
        assert a.endswith(suffix) and a.count("/p2p/") == 1, a
    assert peer["local"] is True, peer  # on this machine, whichever interface it came in on


def p2p_address(node: ServedNode) -> str:
    """The node's loopback TCP address with its /p2p/ id, as the issue's user gave it."""
    topo = wait_for(
        lambda: (t := requests.get(node.api + "/system/topology", timeout=5).json())["peer_id"] and t,
        what="the topology",
    )
    return next(a for a in topo["listen_addrs"] if a.startswith("/ip4/127.0.0.1/tcp/") and "/ws" not in a)  # type: ignore[index]


def start_default_scout(model: Path, tmp: Path, bootstrap: str) -> subprocess.Popen[bytes]:
    tmp.mkdir(parents=True, exist_ok=True)
    log = (tmp / "scout.log").open("wb")
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "shard",
            "scout",
            "--model",
            str(model),
            "--bootstrap",
            bootstrap,
            "--data-dir",
            str(tmp / "scout-data"),
            "--control-port",
            "0",
            "--log-level",
            "DEBUG",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "SHARD_CONFIG": str(tmp / "none.toml")},
    )


def scout_peer_id(tmp: Path) -> str:
    def read() -> str | None:
        for line in (tmp / "scout.log").read_text(errors="replace").splitlines():
            if "scout ready: peer id " in line:
                return line.split("scout ready: peer id ", 1)[1].split()[0].rstrip(",")
        return None

    return str(wait_for(read, what="the scout's peer id"))


@pytest.mark.parametrize("oracle_first", [True, False], ids=["oracle-first", "oracle-last"])
@pytest.mark.parametrize("round_", range(3))
def test_two_nodes_handshake_with_default_flags(
    tiny_model: Path, tmp_path: Path, oracle_first: bool, round_: int
) -> None:
    """An Oracle and a model-less node that bootstraps to it (with its /p2p/ address when the
    Oracle is up first; by address only when it starts later): each sees the other with its role,
    within the bound."""
    port = free_port()
    bootstrap = f"/ip4/127.0.0.1/tcp/{port}"
    oracle_flags = ("--control-port", "0", "--tcp-port", str(port))
    nodes: list[ServedNode] = []
    try:
        if oracle_first:
            nodes.append(
                oracle := start_node(
                    tiny_model, tmp_path / "a", "--ctx-size", "256", sidecar=True, sidecar_flags=oracle_flags
                )
            )
            nodes.append(
                other := start_node(
                    None,
                    tmp_path / "b",
                    "--bootstrap",
                    p2p_address(oracle),
                    sidecar=True,
                    sidecar_flags=DEFAULT_FLAGS,
                    wait=False,
                )
            )
        else:
            nodes.append(
                other := start_node(
                    None,
                    tmp_path / "b",
                    "--bootstrap",
                    bootstrap,
                    sidecar=True,
                    sidecar_flags=DEFAULT_FLAGS,
                    wait=False,
                )
            )
            wait_for(
                lambda: requests.get(other.api + "/system/topology", timeout=5).json()["peer_id"],
                what="the first node's sidecar",
            )
            nodes.append(
                oracle := start_node(
                    tiny_model,
                    tmp_path / "a",
                    "--ctx-size",
                    "256",
                    sidecar=True,
                    sidecar_flags=oracle_flags,
                    wait=False,
                )
            )
        oracle_id, other_id = peer_id_of(oracle), peer_id_of(other)
        seen = wait_for(
            lambda: seen_with_role(other, oracle_id, "oracle"), JOIN_BOUND_S, "the node to see the Oracle's role"
        )
        check_addresses(seen)  # type: ignore[arg-type]
        seen = wait_for(
            lambda: seen_with_role(oracle, other_id, "consumer"), JOIN_BOUND_S, "the Oracle to see the node's role"
        )
        check_addresses(seen)  # type: ignore[arg-type]
    finally:
        for n in nodes:
            n.stop()


@pytest.mark.parametrize("oracle_first", [True, False], ids=["oracle-first", "oracle-last"])
@pytest.mark.parametrize("round_", range(2))
def test_oracle_and_scout_handshake_with_default_flags(
    tiny_model: Path, tmp_path: Path, oracle_first: bool, round_: int
) -> None:
    """`shard serve` and `shard scout --bootstrap` with default flags: the Oracle lists the scout
    with the role "scout" (and so sends it work), whichever starts first."""
    port = free_port()
    bootstrap = f"/ip4/127.0.0.1/tcp/{port}"
    oracle_flags = ("--control-port", "0", "--tcp-port", str(port))
    oracle: ServedNode | None = None
    scout: subprocess.Popen[bytes] | None = None
    try:
        if oracle_first:
            oracle = start_node(
                tiny_model, tmp_path / "a", "--ctx-size", "256", sidecar=True, sidecar_flags=oracle_flags
            )
            scout = start_default_scout(tiny_model, tmp_path / "s", p2p_address(oracle))
        else:
            scout = start_default_scout(tiny_model, tmp_path / "s", bootstrap)
            scout_peer_id(tmp_path / "s")
            oracle = start_node(
                tiny_model, tmp_path / "a", "--ctx-size", "256", sidecar=True, sidecar_flags=oracle_flags
            )
        sid = scout_peer_id(tmp_path / "s")
        seen = wait_for(
            lambda: seen_with_role(oracle, sid, "scout"), JOIN_BOUND_S, "the Oracle to see the scout's role"
        )
        check_addresses(seen)  # type: ignore[arg-type]
    finally:
        if scout is not None:
            stop(scout)
        if oracle is not None:
            oracle.stop()


# -- the peer table on its own ------------------------------------------------------------------


def test_reconciliation_replays_events_that_raced_the_listing() -> None:
    table = PeerTable()
    table.apply({"type": "peer_connected", "peer_id": "ghost", "addr": "/ip4/127.0.0.1/tcp/1"})
    sync = table.begin_sync()
    # While GET /peers is on its way: a peer arrives, another leaves.
    table.apply({"type": "peer_connected", "peer_id": "new", "addr": "/ip4/127.0.0.1/tcp/2/p2p/new"})
    table.apply({"type": "handshake", "peer_id": "new", "info": {"roles": ["scout"]}})
    table.apply({"type": "peer_disconnected", "peer_id": "old"})
    assert "new" not in table.peers  # held until the listing is in
    # The listing was taken before those events: it has "old" with its handshake, no "ghost"
    # (its peer_disconnected was lost while nobody listened).
    table.end_sync(sync, [{"peer_id": "old", "addrs": ["/ip4/127.0.0.1/tcp/3"], "roles": ["oracle"]}])
    assert set(table.peers) == {"new"}
    assert table.peers["new"].roles == ["scout"]
    assert table.peers["new"].addrs == ["/ip4/127.0.0.1/tcp/2/p2p/new"]


def test_a_newer_reconciliation_supersedes_an_older_one() -> None:
    table = PeerTable()
    first = table.begin_sync()
    second = table.begin_sync()
    table.apply({"type": "handshake", "peer_id": "a", "info": {"roles": ["oracle"]}})
    table.end_sync(first, [{"peer_id": "stale"}])  # ignored: a newer listing is coming
    assert table.peers == {}
    table.end_sync(second, [{"peer_id": "a"}])
    assert table.peers["a"].roles == ["oracle"]


def test_addresses_and_this_machine() -> None:
    assert normalize_addr("/ip4/1.2.3.4/tcp/1/p2p/X/p2p/X", "X") == "/ip4/1.2.3.4/tcp/1/p2p/X"
    assert normalize_addr("/ip4/1.2.3.4/tcp/1", "X") == "/ip4/1.2.3.4/tcp/1/p2p/X"
    ips = local_ips()
    assert "127.0.0.1" in ips
    lan = [ip for ip in ips if ":" not in ip and not ip.startswith("127.")]
    for ip in lan:  # every interface address of this machine is "on this machine"
        assert on_this_machine([f"/ip4/{ip}/tcp/4001"])
    assert not on_this_machine(["/ip4/203.0.113.9/tcp/4001"])  # TEST-NET-3: never an interface here
    assert not on_this_machine([])
    table = PeerTable()
    peer = table.upsert({"peer_id": "p", "addrs": [f"/ip4/{lan[0] if lan else '127.0.0.1'}/tcp/9"], "local": False})
    assert peer is not None and peer.local
    assert psutil.net_if_addrs()  # the source of that list


async def test_on_lagged_the_node_reads_the_daemons_peers_again_so_no_ghost_stays(tmp_path: Path) -> None:
    """A daemon drops events a slow reader missed and says `lagged`: a peer_disconnected among
    them would leave a ghost in the node's table, unless the node reads the daemon's peers again."""

    from shard.config import Settings
    from shard.network.sidecar import Sidecar, find_daemon
    from shard.node import Node

    settings = Settings(data_dir=str(tmp_path), control_port=0, tcp_port=0, p2p_host="127.0.0.1", mdns=False)
    binary = find_daemon(settings)
    assert binary is not None, "build the sidecar first (bash scripts/setup)"
    node = Node(settings)
    sidecar = Sidecar(settings, binary, lambda e: None, lambda e: None)
    sidecar.start()
    try:
        assert await sidecar.supervisor.wait_ready(30)
        node.sidecar = sidecar  # the real daemon, which has no peers
        ghost = "12D3KooWghostghostghostghostghostghostghostghostgh"
        node._on_network_event({"type": "peer_connected", "peer_id": ghost, "addr": "/ip4/127.0.0.1/tcp/9"})
        assert ghost in node.peer_table.peers
        node._on_network_event({"type": "lagged", "missed": 3})  # its peer_disconnected was dropped
        with contextlib.suppress(AssertionError):  # the assert below says what stayed
            await until(lambda: ghost not in node.peer_table.peers, 30, "the ghost to go")
        assert node.peer_table.peers == {}, "the ghost stayed after lagged"
    finally:
        await sidecar.stop()
