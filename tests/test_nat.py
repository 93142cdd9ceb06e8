"""The mesh across NATs, in network namespaces on this machine (root; no traffic leaves them):
a public namespace with a bootstrap node that AutoNAT finds public and that serves as a relay,
and two namespaces each behind its own NAT (a router namespace with iptables MASQUERADE).
Shown: the NATed daemons reserve a slot on the relay, connect to each other through it, and then
directly after DCUtR hole punching; a model-less NATed node is served by a NATed Oracle, and fails
over to another when that Oracle is killed.

    pub (10.99.1.1, 10.99.2.1; forwards between its two links, no NAT)
     |-- r1 (10.99.1.2 | 192.168.1.1, MASQUERADE) -- a (192.168.1.2)
     |-- r2 (10.99.2.2 | 192.168.2.1, MASQUERADE) -- b (192.168.2.2)
     |-- r3 (10.99.3.2 | 192.168.3.1, MASQUERADE) -- c (192.168.3.2)
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from harness import Daemon, wait_for

TOKEN = "nat-test-token-0123456789"
NAMESPACES = ("pub", "r1", "r2", "r3", "a", "b", "c")
TAG = f"s{os.getpid() % 100000}"  # unique names: namespaces n<TAG><x>, veths <x><TAG>


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), check=check, capture_output=True, text=True)


def ns(name: str) -> str:
    return f"n{TAG}{name}"


def in_ns(name: str, *cmd: str) -> list[str]:
    return ["ip", "netns", "exec", ns(name), *cmd]


def build_network() -> None:
    for n in NAMESPACES:
        sh("ip", "netns", "add", ns(n))
        sh(*in_ns(n, "ip", "link", "set", "lo", "up"))

    def link(x: str, xname: str, xaddr: str, y: str, yname: str, yaddr: str) -> None:
        sh("ip", "link", "add", xname, "netns", ns(x), "type", "veth", "peer", "name", yname, "netns", ns(y))
        sh(*in_ns(x, "ip", "addr", "add", xaddr, "dev", xname))
        sh(*in_ns(y, "ip", "addr", "add", yaddr, "dev", yname))
        sh(*in_ns(x, "ip", "link", "set", xname, "up"))
        sh(*in_ns(y, "ip", "link", "set", yname, "up"))

    for host, i in (("a", "1"), ("b", "2"), ("c", "3")):
        link("pub", f"p{i}{TAG}", f"10.99.{i}.1/24", f"r{i}", f"w{i}{TAG}", f"10.99.{i}.2/24")
        link(f"r{i}", f"l{i}{TAG}", f"192.168.{i}.1/24", host, f"e{i}{TAG}", f"192.168.{i}.2/24")
        sh(*in_ns(host, "ip", "route", "add", "default", "via", f"192.168.{i}.1"))
    for r, i in (("r1", "1"), ("r2", "2"), ("r3", "3")):
        sh(*in_ns(r, "ip", "route", "add", "default", "via", f"10.99.{i}.1"))
        sh(*in_ns(r, "sysctl", "-qw", "net.ipv4.ip_forward=1"))
        sh(*in_ns(r, "iptables", "-t", "nat", "-A", "POSTROUTING", "-o", f"w{i}{TAG}", "-j", "MASQUERADE"))
        # a NAT: nothing from outside enters the private side unless it belongs to a connection
        # opened from inside
        sh(
            *in_ns(
                r,
                "iptables",
                "-A",
                "FORWARD",
                "-i",
                f"w{i}{TAG}",
                "-m",
                "conntrack",
                "--ctstate",
                "ESTABLISHED,RELATED",
                "-j",
                "ACCEPT",
            )
        )
        sh(*in_ns(r, "iptables", "-A", "FORWARD", "-i", f"w{i}{TAG}", "-j", "DROP"))
        # like a home router, unsolicited packets to the NAT's own address are dropped, not
        # refused (a refusal would end a hole punch whose other half is a moment late)
        sh(
            *in_ns(
                r, "iptables", "-A", "INPUT", "-i", f"w{i}{TAG}", "-m", "conntrack", "--ctstate", "NEW", "-j", "DROP"
            )
        )
    sh(*in_ns("pub", "sysctl", "-qw", "net.ipv4.ip_forward=1"))


def reaches(name: str, ip: str) -> bool:
    """Whether a TCP SYN from the namespace gets an answer from `ip` (a refusal counts)."""
    code = (
        "import socket,sys\ns=socket.socket();s.settimeout(1)\n"
        "try:\n  s.connect((sys.argv[1],9))\nexcept ConnectionRefusedError: pass\n"
        "except OSError: sys.exit(1)\n"
    )
    return sh(*in_ns(name, sys.executable, "-c", code, ip), check=False).returncode == 0


def tear_down() -> None:
    for n in NAMESPACES:
        sh("ip", "netns", "del", ns(n), check=False)  # deleting a namespace removes its veths


@pytest.fixture(scope="module")
def network() -> Iterator[None]:
    if os.geteuid() != 0 or not shutil.which("iptables") or not shutil.which("ip"):
        pytest.fail("the NAT tests need root, iproute2 and iptables (CI installs them: .ci/run)")
    try:
        build_network()
        # the NAT holds: a's private address is unreachable from b, pub reachable from both
        assert reaches("a", "10.99.2.1") and reaches("b", "10.99.1.1")
        assert not reaches("b", "192.168.1.2") and not reaches("pub", "192.168.1.2")
        yield
    finally:
        tear_down()


def ns_http(
    name: str, method: str, url: str, body: Any = None, token: str | None = TOKEN, timeout: float = 30
) -> tuple[int, Any]:
    """An HTTP call made from inside a namespace (the APIs listen on that namespace's loopback)."""
    code = (
        "import json,sys,urllib.request as u\n"
        "m,url,body,tok,t=sys.argv[1:6]\n"
        "h={'Content-Type':'application/json'}\n"
        "if tok: h['Authorization']='Bearer '+tok\n"
        "r=u.Request(url,data=body.encode() if body else None,method=m,headers=h)\n"
        "try:\n  resp=u.urlopen(r,timeout=float(t)); print(resp.status); print(resp.read().decode())\n"
        "except u.HTTPError as e:\n  print(e.code); print(e.read().decode())\n"
    )
    out = subprocess.run(
        in_ns(
            name,
            sys.executable,
            "-c",
            code,
            method,
            url,
            json.dumps(body) if body is not None else "",
            token or "",
            str(timeout),
        ),
        capture_output=True,
        text=True,
        timeout=timeout + 10,
    )
    if out.returncode != 0:
        raise ValueError(out.stderr[-500:])
    status, _, text = out.stdout.partition("\n")
    return int(status), json.loads(text) if text.strip() else None


@dataclass
class NsDaemon:
    """A shard-daemon in a namespace: its control API answers on that namespace's loopback."""

    where: str
    daemon: Daemon

    @property
    def ready(self) -> dict[str, Any]:
        return self.daemon.info

    def get(self, path: str) -> Any:
        status, body = ns_http(self.where, "GET", f"http://127.0.0.1:{self.daemon.control_port}{path}")
        assert status == 200, body
        return body

    def peers(self) -> dict[str, dict[str, Any]]:
        return {p["peer_id"]: p for p in self.get("/peers")["peers"]}

    def stop(self) -> None:
        self.daemon.stop()


def start_daemon(where: str, tmp: Path, *extra: str) -> NsDaemon:
    log = tmp / f"daemon-{where}-{time.monotonic_ns()}.log"
    flags = ("--reach-private-addrs", "--log-level", "info", *extra)
    daemon = Daemon(None, log, *flags, host="0.0.0.0", tcp_port=4001, prefix=tuple(in_ns(where)), token=TOKEN)
    return NsDaemon(where, daemon)


def test_nated_daemons_meet_through_the_relay_then_directly(network: None, tmp_path: Path) -> None:
    relay = start_daemon("pub", tmp_path)
    p = relay.ready["peer_id"]
    a = start_daemon("a", tmp_path, "--bootstrap", f"/ip4/10.99.1.1/tcp/4001/p2p/{p}")
    b = start_daemon("b", tmp_path, "--bootstrap", f"/ip4/10.99.2.1/tcp/4001/p2p/{p}")
    try:
        aid, bid = a.ready["peer_id"], b.ready["peer_id"]
        # AutoNAT: the public node is public (and relays); the others are behind NATs
        wait_for(lambda: relay.get("/topology")["reachability"]["nat"] == "public", what="the relay to be found public")
        for d in (a, b):
            wait_for(
                lambda: d.get("/topology")["reachability"]["nat"] == "private", what=f"{d.where} to be found private"
            )
        # each reserves a slot on the relay: reachable through it
        for d in (a, b):
            wait_for(lambda: d.get("/topology")["reachability"]["relay_addrs"], what=f"{d.where}'s relay reservation")
        # they find each other through the relay (Kademlia hands out the circuit address), and
        # DCUtR upgrades the relayed connection to a direct one through both NATs
        wait_for(lambda: aid in b.peers() or bid in a.peers(), timeout=90, what="a and b to connect")
        ok = wait_for(
            lambda: (
                (t := a.get("/topology")["reachability"])["hole_punch_ok"]
                + b.get("/topology")["reachability"]["hole_punch_ok"]
                > 0
                and t
            ),
            timeout=90,
            what="a hole punch",
        )
        assert ok
        peer_b = wait_for(
            lambda: (pb := a.peers().get(bid)) and pb["path"] == "hole-punched" and pb, what="a direct path a->b"
        )
        assert all("p2p-circuit" not in x for x in peer_b["addrs"]) or len(peer_b["addrs"]) > 1
        assert a.get("/topology")["reachability"]["mode"] == "hole-punched"
    finally:
        for d in (a, b, relay):
            d.stop()


@dataclass
class NsNode:
    where: str
    proc: subprocess.Popen[bytes]
    port: int

    def api(self, method: str, path: str, body: Any = None, timeout: float = 60) -> tuple[int, Any]:
        return ns_http(self.where, method, f"http://127.0.0.1:{self.port}{path}", body, token=None, timeout=timeout)

    def kill(self) -> None:
        """SIGKILL the node and its children (its sidecar): an Oracle that vanishes."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()


def start_ns_node(where: str, tmp: Path, tcp_port: int, bootstrap: str, model: Path | None, *extra: str) -> NsNode:
    port = 8000 + tcp_port % 1000
    data = tmp / f"node-{where}-{tcp_port}"
    args = [
        sys.executable,
        "-m",
        "shard",
        "serve",
        "--port",
        str(port),
        "--data-dir",
        str(data),
        "--control-port",
        "0",
        "--tcp-port",
        str(tcp_port),
        "--p2p-host",
        "0.0.0.0",
        "--no-mdns",
        "--bootstrap",
        bootstrap,
    ]
    if model is not None:
        args += ["--model", str(model), "--parallel", "2"]
    args += extra
    # no spot checks: one would send the same request to the other Oracle too (the failover test
    # tells which Oracle served it by whom the consumer paid)
    env = {
        **os.environ,
        "SHARD_REACH_PRIVATE_ADDRS": "1",
        "SHARD_RATE_LIMIT_PER_MINUTE": "100000",
        "SHARD_SPOT_CHECK_RATE": "0",
        "SHARD_CONFIG": str(tmp / "none.toml"),
    }
    proc = subprocess.Popen(
        in_ns(where, *args),
        stdout=(tmp / f"serve-{where}-{tcp_port}.log").open("wb"),
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    return NsNode(where, proc, port)


def test_a_nated_consumer_is_served_by_a_nated_oracle_and_fails_over(
    network: None, tmp_path: Path, tiny_model: Path
) -> None:
    relay = start_daemon("pub", tmp_path)
    p = relay.ready["peer_id"]
    via_a, via_b = f"/ip4/10.99.1.1/tcp/4001/p2p/{p}", f"/ip4/10.99.2.1/tcp/4001/p2p/{p}"
    via_c = f"/ip4/10.99.3.1/tcp/4001/p2p/{p}"
    oracles = [
        start_ns_node("a", tmp_path, 4001, via_a, tiny_model),
        start_ns_node("c", tmp_path, 4001, via_c, tiny_model),
    ]
    consumer = start_ns_node(
        "b", tmp_path, 4001, via_b, None, "--privacy", "anyone"
    )  # its prompts may leave the machine
    nodes = [*oracles, consumer]
    try:
        ids = [
            wait_for(
                lambda o=o: o.api("GET", "/v1/system/topology")[1].get("peer_id"),
                timeout=90,
                what="an Oracle's sidecar",
            )
            for o in oracles
        ]
        ask = {"model": "tiny", "messages": [{"role": "user", "content": "tell me"}], "max_tokens": 8, "temperature": 0}

        def served() -> tuple[int, Any]:
            status, body = consumer.api("POST", "/v1/chat/completions", ask)
            return (status, body) if status == 200 else None  # type: ignore[return-value]

        _, first = wait_for(served, timeout=120, what="the NATed consumer to be served")
        assert first["choices"][0]["message"]["content"]

        def spent_with() -> set[str]:
            return {x["peer_id"] for x in consumer.api("GET", "/v1/system/credit")[1]["peers"] if x.get("spent")}

        used = spent_with()
        assert len(used & set(ids)) == 1, used
        first_oracle = ids.index(next(iter(used & set(ids))))
        oracles[first_oracle].kill()
        _, second = wait_for(served, timeout=90, what="the consumer to fail over")
        assert second["choices"][0]["message"]["content"]
        assert ids[1 - first_oracle] in spent_with()
    finally:
        for n in nodes:
            n.kill()
        relay.stop()


def test_a_consumer_sends_prompts_only_to_oracles_its_privacy_admits(
    network: None, tmp_path: Path, tiny_model: Path
) -> None:
    """Issue 19, item 6: a node without a model, with the default privacy (`local`), never sends a
    prompt to an Oracle on another machine, although it sees one; it answers 503 instead."""
    relay = start_daemon("pub", tmp_path)
    p = relay.ready["peer_id"]
    oracle = start_ns_node("a", tmp_path, 4001, f"/ip4/10.99.1.1/tcp/4001/p2p/{p}", tiny_model)
    consumer = start_ns_node("b", tmp_path, 4001, f"/ip4/10.99.2.1/tcp/4001/p2p/{p}", None)
    try:
        oracle_id = wait_for(
            lambda: oracle.api("GET", "/v1/system/topology")[1].get("peer_id"), timeout=90, what="the Oracle's sidecar"
        )
        wait_for(
            lambda: any(
                x["peer_id"] == oracle_id and "oracle" in x["roles"]
                for x in consumer.api("GET", "/v1/system/peers")[1]["peers"]
            ),
            timeout=120,
            what="the consumer to see the Oracle",
        )
        ask = {"model": "tiny", "messages": [{"role": "user", "content": "My bank PIN is 4921"}], "max_tokens": 8}
        status, body = consumer.api("POST", "/v1/chat/completions", ask)
        assert status == 503, body
        status, stats = oracle.api("GET", "/v1/system/status")
        assert stats["queue"]["in_flight"] == 0 and not consumer.api("GET", "/v1/system/credit")[1]["peers"], (
            "the prompt left"
        )
        text = (tmp_path / "serve-a-4001.log").read_text(errors="replace")
        assert "serving a request from" not in text, "the Oracle was asked"
    finally:
        oracle.kill()
        consumer.kill()
        relay.stop()
