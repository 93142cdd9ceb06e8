#!/usr/bin/env python3
"""N real shard-daemons on loopback (no mDNS; each bootstrapped to node 0 and one other), for
N = 10, 50, 100: time until every node has >= 4 gossip mesh peers, gossip delivery latency
p50/p99 to all nodes, the publish rate held, peers per node, resident memory per daemon and idle
CPU per daemon. Goals (issue 15): 100 daemons on 2 cores, p99 delivery < 1 s, < 20 MB resident
each, idle CPU < 0.5% each.

Usage: CARGO_TARGET_DIR=... python3 bench/mesh_scale.py [--sizes 10,50,100] [--messages 20] [--rate 10]
Timings on a shared machine are noisy: run it alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import time
from pathlib import Path

import aiohttp
import psutil

from shard.config import Settings
from shard.network.sidecar import find_daemon

TOKEN = "mesh-scale-token-0123456789"
H = {"Authorization": f"Bearer {TOKEN}"}


def pct(v: list[float], q: float) -> float:
    v = sorted(v)
    return v[min(len(v) - 1, int(q * len(v)))] if v else float("nan")


def start(binary: Path, bootstrap: list[str], extra: list[str]) -> tuple[subprocess.Popen[str], dict]:
    args = [
        str(binary),
        "--control-port",
        "0",
        "--tcp-port",
        "0",
        "--listen-host",
        "127.0.0.1",
        "--no-mdns",
        "--log-level",
        "warn",
        "--reconnect-seconds",
        "5",
        # every daemon here dials from 127.0.0.1: the default 32 inbound connections per IP
        # address would leave late joiners with no bootstrap peer that accepts them
        "--max-conns-per-ip",
        "1000",
    ]
    for b in bootstrap:
        args += ["--bootstrap", b]
    args += extra
    p = subprocess.Popen(
        args,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "SHARD_CONTROL_TOKEN": TOKEN},
    )
    assert p.stdout is not None
    line = p.stdout.readline()
    assert line.startswith("SHARD_SIDECAR_READY"), line
    return p, json.loads(line.split(" ", 1)[1])


async def run(n: int, binary: Path, messages: int, rate: float, extra: list[str], settle: float) -> dict[str, float]:
    procs: list[subprocess.Popen[str]] = []
    infos: list[dict] = []
    try:
        t0 = time.monotonic()
        for i in range(n):
            boot = [] if i == 0 else [infos[0]["listen_addrs"][1 if "/ws" in infos[0]["listen_addrs"][0] else 0]]
            if i > 1:
                other = random.choice(infos[1:])
                boot.append(next(a for a in other["listen_addrs"] if "/tcp/" in a and "/ws" not in a))
            p, info = start(binary, boot, extra)
            procs.append(p)
            infos.append(info)
        urls = [f"http://127.0.0.1:{i['control_port']}" for i in infos]
        # no connection limit: aiohttp's default of 100 is all taken by the /events streams at
        # N=100, and every publish then waited for a free connection until it timed out
        conn = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(headers=H, timeout=aiohttp.ClientTimeout(total=120), connector=conn) as s:

            async def topo(u: str) -> dict:
                try:  # a daemon too busy to answer within its 5 s counts as not there yet
                    async with s.get(u + "/topology") as r:
                        return await r.json() if r.status == 200 else {"gossip_mesh_peers": 0}
                except (TimeoutError, aiohttp.ClientError):
                    return {"gossip_mesh_peers": 0}

            while True:
                tops = await asyncio.gather(*(topo(u) for u in urls))
                if all(t["gossip_mesh_peers"] >= min(4, n - 1) for t in tops):
                    break
                if time.monotonic() - t0 > 300:
                    break
                await asyncio.sleep(0.5)
            mesh_s = time.monotonic() - t0
            await asyncio.sleep(settle)  # let the start-up dials and pruning settle before measuring
            # delivery: every node's /events; publish from random nodes
            got: dict[str, list[float]] = {}
            churn = [0]  # connections opened or closed while the messages flow (and after)

            async def listen(u: str) -> None:
                async with s.get(u + "/events", timeout=aiohttp.ClientTimeout(total=None)) as r:
                    async for raw in r.content:
                        line = raw.decode().strip()
                        if line.startswith("data:"):
                            ev = json.loads(line[5:])
                            if ev.get("type") == "work":
                                got.setdefault(ev["work"]["work_id"], []).append(time.time() * 1000)
                            elif ev.get("type") in ("peer_connected", "peer_disconnected"):
                                churn[0] += 1

            tasks = [asyncio.create_task(listen(u)) for u in urls]
            await asyncio.sleep(1.0)
            sent: dict[str, float] = {}
            api_ms: list[float] = []  # how long each publisher's control API took to answer
            errors = 0
            tp = time.monotonic()
            for k in range(messages):
                wid = f"m{n}-{k}"
                src = random.randrange(n)
                sent[wid] = time.time() * 1000
                ta = time.monotonic()
                try:  # a publisher too starved to answer in 10 s counts as a lost message
                    async with s.post(
                        urls[src] + "/broadcast-work",
                        json={"work": {"work_id": wid, "prompt": "x" * 200, "position": 1}},
                        timeout=aiohttp.ClientTimeout(total=10),
                    ) as r:
                        await r.json()
                    api_ms.append((time.monotonic() - ta) * 1000)
                except (TimeoutError, aiohttp.ClientError):
                    errors += 1
                    api_ms.append((time.monotonic() - ta) * 1000)
                got.setdefault(wid, []).append(sent[wid])  # the publisher itself (no self-delivery)
                await asyncio.sleep(max(0.0, tp + (k + 1) / rate - time.monotonic()))
            await asyncio.sleep(3.0)
            churn_s = time.monotonic() - tp
            for t in tasks:
                t.cancel()
            lat = [t - sent[w] for w in sent for t in got.get(w, [])[1:]]
            delivered = sum(len(got.get(w, [])) for w in sent) / (len(sent) * n)
            held = messages / (time.monotonic() - tp - 3.0)

            async def npeers(u: str) -> int:
                for _ in range(5):
                    try:
                        async with s.get(u + "/peers") as r:
                            if r.status == 200:
                                return len((await r.json())["peers"])
                    except (TimeoutError, aiohttp.ClientError):
                        pass
                    await asyncio.sleep(1)
                return -1

            peer_counts = await asyncio.gather(*(npeers(u) for u in urls))

            async def stats(u: str) -> dict:
                try:
                    async with s.get(u + "/stats") as r:
                        return await r.json() if r.status == 200 else {}
                except (TimeoutError, aiohttp.ClientError):
                    return {}

            # where the connections and the event loops' time went, summed over the nodes since start
            conn: dict[str, int] = {}
            busy = events = 0
            for st in await asyncio.gather(*(stats(u) for u in urls)):
                for k, v in st.get("connections", {}).items():
                    conn[k] = conn.get(k, 0) + v
                busy += st.get("loop_busy_ms", 0)
                events += st.get("swarm_events", 0)
            up_s = time.monotonic() - t0
        ps = [psutil.Process(p.pid) for p in procs]
        # RSS counts the binary's code in every process; PSS shares it out (the sum of PSS is
        # what the N daemons cost together); USS is each one's private memory (heap, stacks)
        mem = [x.memory_full_info() for x in ps]
        rss = [m.rss / 2**20 for m in mem]
        pss = [m.pss / 2**20 for m in mem]
        uss = [m.uss / 2**20 for m in mem]
        c0 = [x.cpu_times() for x in ps]
        await asyncio.sleep(10)
        c1 = [x.cpu_times() for x in ps]
        idle = [((b.user + b.system) - (a.user + a.system)) / 10 * 100 for a, b in zip(c0, c1)]
        return {
            "errors": errors,
            "n": n,
            "mesh_s": mesh_s,
            "p50": pct(lat, 0.5),
            "p99": pct(lat, 0.99),
            "delivered": delivered,
            "held": held,
            "peers": statistics.mean(peer_counts),
            "peers_max": max(peer_counts),
            "rss": statistics.mean(rss),
            "rss_max": max(rss),
            "pss": statistics.mean(pss),
            "uss": statistics.mean(uss),
            "churn": churn[0] / 2 / n / churn_s * 60,
            "idle_cpu": statistics.mean(idle),
            "api_p50": pct(api_ms, 0.5),
            "api_p99": pct(api_ms, 0.99),
            "conn": {k: round(v / n, 1) for k, v in conn.items()},
            "loop_busy_pct": busy / 1000 / up_s / n * 100,
            "events_per_s": events / up_s / n,
        }
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10,50,100")
    ap.add_argument("--messages", type=int, default=20)
    ap.add_argument("--rate", type=float, default=10.0, help="publishes per second")
    ap.add_argument("--settle", type=float, default=30.0, help="seconds between mesh>=4 and the messages")
    ap.add_argument("--daemon", type=Path, help="shard-daemon binary (default: the one the node finds)")
    ap.add_argument("--daemon-args", default="", help="extra daemon flags, e.g. '--target-peers 16'")
    a = ap.parse_args()
    binary = a.daemon or find_daemon(Settings(data_dir="/tmp"))
    assert binary is not None, "build the sidecar first"
    random.seed(1)
    print(
        f"{'N':>4} {'mesh>=4 s':>9} {'p50 ms':>7} {'p99 ms':>7} {'delivered':>9} {'msg/s':>6} {'peers':>6} {'max':>4} "
        f"{'RSS MB':>7} {'max':>5} {'PSS MB':>6} {'USS MB':>6} {'churn':>5} {'idle CPU %':>10}"
    )
    for n in [int(x) for x in a.sizes.split(",")]:
        r = asyncio.run(run(n, binary, a.messages, a.rate, a.daemon_args.split(), a.settle))
        print(
            f"{r['n']:>4} {r['mesh_s']:>9.1f} {r['p50']:>7.0f} {r['p99']:>7.0f} {r['delivered']:>9.3f} "
            f"{r['held']:>6.1f} "
            f"{r['peers']:>6.1f} {r['peers_max']:>4} {r['rss']:>7.1f} {r['rss_max']:>5.1f} {r['pss']:>6.1f} "
            f"{r['uss']:>6.1f} {r['churn']:>5.1f} {r['idle_cpu']:>10.2f}"
            f"  (publish errors: {r['errors']}; control API p50/p99 {r['api_p50']:.0f}/{r['api_p99']:.0f} ms)",
            flush=True,
        )
        print(
            f"     per node since start: {r['events_per_s']:.1f} swarm events/s, event loop busy "
            f"{r['loop_busy_pct']:.2f}% of the time; connections {r['conn']}",
            flush=True,
        )
    print(
        "goals: 100 daemons on 2 cores, p99 < 1000 ms, RSS < 20 MB each, idle CPU < 0.5% each "
        "(before issue 15, N=100: 99 peers each, 85 MB, p50 278 / p99 531 ms)"
    )


if __name__ == "__main__":
    main()
