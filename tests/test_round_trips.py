"""A request to a peer costs one network round trip, not two. Every request (a scout's draft, its
verdict, a progress message) opens a new libp2p stream, and multistream-select's default dialer
waits for the peer to confirm the protocol's name before it sends the request; the sidecar sends
both at once (V1Lazy). Two real shard-daemons, the second reaching the first through
bench/delay_proxy.py (user-space latency: this kernel has no netem). Before the change a request
and its answer took two round trips (at 20 ms, a scout's draft reached the Oracle 45 ms after it
was sent)."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from harness.daemons import Daemon
from harness.ports import free_port
from harness.waiting import wait_for

ROOT = Path(__file__).resolve().parents[1]
RTT_S = 0.3  # large against this machine's own scheduling noise, so one and two trips cannot be confused


def _answer_every_verify_request(oracle: Daemon, stop: threading.Event) -> None:
    events = oracle.events()
    while not stop.is_set():
        try:
            _, event = events.get(timeout=0.2)
        except Exception:
            continue
        if event.get("type") == "verify_request":
            answer = {"outcome": "verified", "echo": event["request"]}
            oracle.call("POST", "/verify-response", {"request_id": event["request_id"], "response": answer})


def test_a_request_and_its_answer_take_one_round_trip(tmp_path: Path) -> None:
    oracle = Daemon(log=tmp_path / "oracle.log")
    addr = oracle.tcp_addr()
    port, via = int(addr.split("/tcp/")[1].split("/")[0]), free_port()
    proxy = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "delay_proxy.py"), str(via), f"127.0.0.1:{port}", str(RTT_S * 1000)]
    )
    stop = threading.Event()
    scout: Daemon | None = None
    try:
        wait_for(lambda: socket.create_connection(("127.0.0.1", via), timeout=1).close() is None, 10, "the proxy")
        scout = Daemon(log=tmp_path / "scout.log", bootstrap=addr.replace(f"/tcp/{port}/", f"/tcp/{via}/"))
        wait_for(lambda: any(p["peer_id"] == oracle.peer_id for p in scout.peers()), 30, "the scout to connect")
        threading.Thread(target=_answer_every_verify_request, args=(oracle, stop), daemon=True).start()
        took = []
        for i in range(4):
            started = time.perf_counter()
            r = scout.post("/send-verify", {"peer_id": oracle.peer_id, "request": {"seq": i}})
            took.append(time.perf_counter() - started)
            assert r.status_code == 200, r.text
            assert r.json()["response"] == {"outcome": "verified", "echo": {"seq": i}}
        # One round trip is the least it can take (the proxy delays both ways); two would be >= 0.6 s.
        assert RTT_S <= min(took) < 1.5 * RTT_S, took
    finally:
        stop.set()
        if scout is not None:
            scout.stop()
        oracle.stop()
        proxy.kill()
        proxy.wait()
