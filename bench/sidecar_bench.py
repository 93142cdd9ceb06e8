#!/usr/bin/env python3
"""Benchmark of the shard-daemon sidecar over loopback (the daemons: tests/harness/daemons.py).

Measures, driving the daemons through their control API:
  * work -> result round trip: daemon 0 publishes work on gossipsub (`POST /broadcast-work`),
    the last daemon sees it on its `/events` stream and answers with `POST /publish-result`,
    and daemon 0 sees the result on its own `/events`. The latency is taken on daemon 0's side
    (from just before the publish call to the result event), p50/p99, with 2, 5 and 10 daemons;
  * resident memory (VmRSS) of an idle daemon and of one with 10 connected peers;
  * the release binary's size.

Usage: .venv/bin/python bench/sidecar_bench.py [--rounds 200] [--sizes 2,5,10]
The binary is the one a node would run ($CARGO_TARGET_DIR/release/shard-daemon, default
~/.cache/shard/cargo-target), or --binary PATH. Build it first: (cd sidecar && cargo build --release).
"""

import argparse
import os
import queue
import statistics
import sys
import threading
import time
from pathlib import Path

from harness import Daemon, daemon_binary, tree_rss, wait_for

TOKEN = "bench-token-0123456789abcdef"
# one round every 10 ms at most (100 work items/s): under the per-peer rate limit
PACE_S = 0.010


def daemon(binary, *extra):
    return Daemon(Path(binary), None, "--log-level", "warn", *extra, token=TOKEN)


def start_mesh(binary, n):
    first = daemon(binary)
    rest = [daemon(binary, "--bootstrap", first.tcp_addr()) for _ in range(n - 1)]
    nodes = [first] + rest
    wait_for(lambda: len(first.peers()) >= n - 1, 30, f"{n - 1} peers on daemon 0")
    return nodes


def responder(node, stop):
    """Answers every work event with a result carrying the same work_id."""
    q = node.events()
    while not stop.is_set():
        try:
            _, ev = q.get(timeout=0.2)
        except queue.Empty:
            continue
        if ev.get("type") != "work":
            continue
        node.call("POST", "/publish-result", {"result": {"work_id": ev["work"]["work_id"], "tokens": [1, 2, 3]}})


def round_trips(nodes, rounds, warmup=20):
    sender, answerer = nodes[0], nodes[-1]
    results = sender.events()
    stop = threading.Event()
    t = threading.Thread(target=responder, args=(answerer, stop), daemon=True)
    t.start()
    time.sleep(0.3)
    # wait until gossip flows end to end
    for i in range(100):
        wid = f"probe-{i}"
        st, out = sender.call("POST", "/broadcast-work", {"work": {"work_id": wid}})
        if out.get("published") and wait_result(results, wid, 1.0) is not None:
            break
        time.sleep(0.2)
    else:
        raise RuntimeError("gossip never made a round trip")
    lat = []
    next_at = time.perf_counter()
    for i in range(warmup + rounds):
        # pace at most one round per PACE_S: the daemons rate-limit each peer (default 200/s)
        now = time.perf_counter()
        if now < next_at:
            time.sleep(next_at - now)
        next_at = max(now, next_at) + PACE_S
        wid = f"w-{len(nodes)}-{i}"
        t0 = time.perf_counter()
        st, out = sender.call("POST", "/broadcast-work", {"work": {"work_id": wid, "prompt": "x" * 200, "position": i}})
        t1 = wait_result(results, wid, 5.0)
        if t1 is None:
            raise RuntimeError(f"no result for {wid}; stats: {sender.call('GET', '/stats')[1]}")
        if i >= warmup:
            lat.append((t1 - t0) * 1000.0)
        sender.call("GET", f"/pop-result?work_id={wid}")
    stop.set()
    return lat


def wait_result(q, wid, timeout):
    end = time.perf_counter() + timeout
    while True:
        left = end - time.perf_counter()
        if left <= 0:
            return None
        try:
            at, ev = q.get(timeout=left)
        except queue.Empty:
            return None
        if ev.get("type") == "result" and ev.get("work_id") == wid:
            return at


def pct(values, p):
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(p / 100.0 * (len(s) - 1)))))
    return s[k]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", default=str(daemon_binary()))
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--sizes", default="2,5,10")
    args = ap.parse_args()
    if not os.path.exists(args.binary):
        sys.exit(f"no binary at {args.binary}: run `cargo build --release` in sidecar/ first")

    rows = []
    size_mb = os.path.getsize(args.binary) / 1e6

    idle = daemon(args.binary)
    time.sleep(2.0)
    idle_rss = tree_rss(idle.proc.pid) // 1024
    idle.stop()

    busy_rss = None
    for n in [int(x) for x in args.sizes.split(",") if x]:
        nodes = start_mesh(args.binary, n)
        try:
            lat = round_trips(nodes, args.rounds)
            rows.append((n, statistics.median(lat), pct(lat, 99), statistics.mean(lat), len(lat)))
            if n == 10:
                extra = daemon(args.binary, "--bootstrap", nodes[0].tcp_addr())
                nodes.append(extra)
                wait_for(lambda: len(nodes[0].peers()) >= 10, 30, "10 peers")
                time.sleep(1.0)
                busy_rss = (tree_rss(nodes[0].proc.pid) // 1024, len(nodes[0].peers()))
        finally:
            for d in nodes:
                d.stop()

    print("| measure | value | goal |")
    print("|---|---|---|")
    for n, p50, p99, _mean, count in rows:
        print(f"| round trip p50, {n} daemons ({count} rounds) | {p50:.2f} ms | < 5 ms |")
        print(f"| round trip p99, {n} daemons | {p99:.2f} ms | |")
    print(f"| RSS idle daemon | {idle_rss / 1024:.1f} MiB | < 30 MiB |")
    if busy_rss:
        print(f"| RSS daemon with {busy_rss[1]} peers (after the 10-daemon run) | {busy_rss[0] / 1024:.1f} MiB | |")
    print(f"| release binary size | {size_mb:.1f} MB | |")


if __name__ == "__main__":
    main()
