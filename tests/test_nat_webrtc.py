"""A browser on another machine reaches a node over WebRTC-direct (issue 15), in the network
namespaces of tests/test_nat.py (root; no traffic leaves them): a node in the public namespace
`pub` (10.99.1.1), a headless Chromium in `a` behind its NAT (192.168.1.2, masqueraded by r1).
The router also refuses TCP to the node's WebSocket port, as a network that lets no plain ws
through would: the page, served by the node, tries its WebSocket, falls back to WebRTC-direct
(UDP, the certificate pinned by the certhash in the address: no TLS certificate of a CA), completes
the handshake, takes work and sends drafts (prompt lookup) that the node, with SmolLM2, judges.

Only Chromium's network is in `a`: playwright-core (outside) drives it over a pipe."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from harness import wait_for
from harness.browser import CHROMIUM, BrowserScout
from test_nat import in_ns, network, sh, start_daemon, start_ns_node  # noqa: F401 (network: the fixture)
from test_web_scout import EDIT_PROMPT, need_node_tools

NODE_TCP = 4002  # the node's libp2p TCP port; its WebSocket is NODE_TCP + 100, WebRTC-direct the same on UDP
WS_PORT = NODE_TCP + 100


def chromium_in(where: str, tmp: Path) -> Path:
    """A wrapper that starts Chromium inside the namespace `where` (playwright-core launches it)."""
    script = tmp / f"chromium-in-{where}"
    script.write_text(f'#!/bin/sh\nexec {" ".join(in_ns(where, CHROMIUM))} "$@"\n')
    script.chmod(0o755)
    return script


def test_a_tab_behind_a_nat_reaches_a_public_node_over_webrtc_direct(
    network: None,  # noqa: F811
    tmp_path: Path,
    smollm2: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    need_node_tools(browser=True)
    origin = f"http://10.99.1.1:{8000 + NODE_TCP % 1000}"  # the node's API port, as start_ns_node picks it
    # the node serves its page to the other machine: its address is an allowed Host and Origin
    monkeypatch.setenv("SHARD_ALLOWED_HOSTS", "10.99.1.1")
    monkeypatch.setenv("SHARD_ALLOWED_ORIGINS", origin)
    # the NAT of `a` lets no TCP reach the node's WebSocket port (refused at once, as a firewall would)
    sh(*in_ns("r1", "iptables", "-I", "FORWARD", "-p", "tcp", "--dport", str(WS_PORT), "-j", "REJECT",
              "--reject-with", "tcp-reset"))  # fmt: skip
    # a bootstrap daemon beside it, as in the other namespace tests (the node needs one to start)
    boot = start_daemon("pub", tmp_path)
    node = start_ns_node(
        "pub",
        tmp_path,
        NODE_TCP,
        f"/ip4/10.99.1.1/tcp/4001/p2p/{boot.ready['peer_id']}",
        smollm2,
        "--no-lookup",  # the tab's drafts, not the node's own prompt lookup
        "--host",
        "0.0.0.0",
        # its listeners on the address the tab reaches (libp2p-webrtc 0.9 offers one local ICE
        # candidate, the first address of the machine: on 0.0.0.0 with several links, maybe not this one)
        "--p2p-host",
        "10.99.1.1",
        "--privacy",
        "anyone",  # a tab on another machine may draft for it
    )
    browser = None
    try:
        info: dict[str, Any] = wait_for(
            lambda: (i := node.api("GET", "/scout/node.json")[1]) and i.get("webrtc_addrs") and i,
            timeout=90,
            what="the node's sidecar and its WebRTC-direct address",
        )
        # by default on the WebSocket port's number, on UDP
        assert any(a.startswith(f"/ip4/10.99.1.1/udp/{WS_PORT}/") for a in info["webrtc_addrs"]), info["webrtc_addrs"]
        assert any(f"/tcp/{WS_PORT}/ws/" in a for a in info["ws_addrs"])
        browser = BrowserScout(
            f"{origin}/scout/?drafter=lookup",
            tmp_path / "chromium.log",
            600,
            "--chromium",
            str(chromium_in("a", tmp_path)),
            # a page from another machine is not a secure context over plain http (no WebCrypto,
            # which libp2p needs): Chromium is told to treat this origin as it would an https one
            "--secure-origin",
            origin,
        )
        try:
            state = wait_for(lambda: browser.state.get("connected") and browser.state, 120, "the tab to connect")
        except AssertionError as e:
            raise AssertionError(
                json.dumps({k: browser.state.get(k) for k in ("status", "nodeAddr", "log", "error")})
            ) from e
        assert state["nodeAddr"].startswith("/ip4/10.99.1.1/udp/"), state["nodeAddr"]
        assert "/webrtc-direct/certhash/" in state["nodeAddr"]
        assert any("/ws/" in line and "failed" in line for line in state["log"]), state["log"]  # it tried ws first
        me = state["peerId"]
        peer = wait_for(
            lambda: [p for p in node.api("GET", "/v1/system/peers")[1]["peers"] if p["peer_id"] == me],
            what="the tab's handshake at the node",
        )[0]
        assert peer["roles"] == ["scout"] and peer["local"] is False
        # the tab's address as the node sees it: r1's public side (the NAT), over WebRTC-direct
        assert any(a.startswith("/ip4/10.99.1.2/udp/") and "/webrtc-direct" in a for a in peer["addrs"]), peer

        # the tab may connect before the node's model has loaded (503 "the model is loading")
        wait_for(lambda: node.api("GET", "/health")[0] == 200, 120, "the node's model to load")
        ask = {"model": "default", "messages": [{"role": "user", "content": EDIT_PROMPT}], "max_tokens": 48}
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline and not browser.state["drafts"]["sent"]:
            status, body = node.api("POST", "/v1/chat/completions", ask)
            assert status == 200, body
        final = wait_for(
            lambda: browser.state["work"]["received"] > 0 and browser.state["verdicts"] and browser.state,
            15,
            what="work received and a draft judged over WebRTC-direct",
        )
        assert final["drafts"]["sent"] > 0 and final["connected"], json.dumps(final)[:2000]
    finally:
        if browser is not None:
            browser.stop()
        node.kill()
        boot.stop()
