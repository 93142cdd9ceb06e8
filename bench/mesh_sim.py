#!/usr/bin/env python3
"""A discrete-event model of the Shard mesh at internet scale (stdlib only; deterministic seed).

It answers the questions of docs/scale.md with numbers instead of guesses:
  1. gossip: how fast a message published on a gossipsub topic reaches every subscriber, and what
     each subscriber pays (copies received per publish), for topics of 100 to 10,000 Oracles with
     mesh degree D; and the same with every node connected to every other (today's loopback mesh);
  2. Kademlia: how many sequential rounds, messages and milliseconds a provider lookup (find the
     Oracles of a model) costs among 10,000 DHT servers (k=20, alpha=3);
  3. load per node for 10,000 Oracles and 1,000,000 scouts under the chosen traffic split
     (presence on gossip per model, drafting sessions direct, scouts' lookups on the DHT).

Link latencies are one-way delays drawn from a log-normal fitted to wide-area RTTs (median RTT
60 ms, p99 about 400 ms); each hop also pays 1 ms of processing and the message's serialisation
time on a 10 Mbit/s uplink. Events (a message arriving at a node) are processed in time order from
a heap: the first arrival forwards to the node's mesh peers, later copies are duplicates.

Usage: python3 bench/mesh_sim.py [--seed 1] [--quick]
"""

from __future__ import annotations

import argparse
import heapq
import math
import random
import statistics
from dataclasses import dataclass

UPLINK_BPS = 10e6 / 8  # bytes/s
PROC_S = 0.001


def one_way_delay(rng: random.Random) -> float:
    """Half a wide-area RTT: log-normal, median 60 ms RTT, sigma 0.8 (p99 RTT ~ 390 ms)."""
    return rng.lognormvariate(math.log(0.060), 0.8) / 2


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


# -- 1. gossip --------------------------------------------------------------------------------------


def mesh_graph(n: int, degree: int, rng: random.Random) -> list[list[int]]:
    """A random graph where each node grafts `degree` mesh peers (links are symmetric, so degrees
    end between D and about 2D, as gossipsub's D..D_hi)."""
    peers: list[set[int]] = [set() for _ in range(n)]
    if degree >= n - 1:
        return [[j for j in range(n) if j != i] for i in range(n)]
    for i in range(n):
        while len(peers[i]) < degree:
            j = rng.randrange(n)
            if j != i:
                peers[i].add(j)
                peers[j].add(i)
    return [sorted(p) for p in peers]


@dataclass
class GossipResult:
    nodes: int
    degree: float
    p50_ms: float
    p99_ms: float
    max_hops: int
    copies_per_node: float


def simulate_gossip(n: int, degree: int, size: int, rng: random.Random, publishes: int) -> GossipResult:
    graph = mesh_graph(n, degree, rng)
    # fixed link delays per edge (a path's latency does not change between messages)
    delay: dict[tuple[int, int], float] = {}
    lat_all: list[float] = []
    hops_max = 0
    copies = 0
    ser = size / UPLINK_BPS
    for _ in range(publishes):
        src = rng.randrange(n)
        first: dict[int, float] = {}
        hops: dict[int, int] = {}
        heap: list[tuple[float, int, int, int]] = [(0.0, src, -1, 0)]
        while heap:
            t, node, sender, h = heapq.heappop(heap)
            copies += 1
            if node in first:
                continue
            first[node] = t
            hops[node] = h
            # forward to every mesh peer but the sender; the uplink sends them one after another
            out = [p for p in graph[node] if p != sender]
            for k, p in enumerate(out):
                key = (min(node, p), max(node, p))
                if key not in delay:
                    delay[key] = one_way_delay(rng)
                heapq.heappush(heap, (t + PROC_S + ser * (k + 1) + delay[key], p, node, h + 1))
        lat_all.extend(v for k, v in first.items() if k != src)
        hops_max = max(hops_max, max(hops.values()))
    mean_degree = statistics.mean(len(p) for p in graph)
    return GossipResult(
        n, mean_degree, pct(lat_all, 0.5) * 1000, pct(lat_all, 0.99) * 1000, hops_max, copies / publishes / n
    )


# -- 2. Kademlia ------------------------------------------------------------------------------------

BITS = 64


def build_dht(n: int, k: int, rng: random.Random) -> tuple[list[int], list[list[int]]]:
    """n node ids and, for each, a routing table: up to k random nodes per bucket (as a table fills
    from the nodes it meets), stored flat."""
    ids = sorted(rng.getrandbits(BITS) for _ in range(n))
    import bisect

    tables: list[list[int]] = []
    for x in ids:
        table: list[int] = []
        for i in range(BITS):
            # bucket i: ids sharing x's top i bits and differing at bit i (a contiguous id range)
            shift = BITS - i - 1
            prefix = ((x >> shift) ^ 1) << shift
            lo = prefix & ~((1 << shift) - 1)
            hi = lo + (1 << shift)
            a, b = bisect.bisect_left(ids, lo), bisect.bisect_left(ids, hi)
            if b > a:
                span = ids[a:b]
                table.extend(span if len(span) <= k else rng.sample(span, k))
            if (1 << shift) < (1 << BITS) // (n * 4):
                break  # deeper buckets are empty at this network size
        tables.append(table)
    return ids, tables


@dataclass
class LookupResult:
    rounds_p50: float
    rounds_p99: float
    messages_mean: float
    ms_p50: float
    ms_p99: float


def simulate_lookups(n: int, k: int, alpha: int, lookups: int, rng: random.Random) -> LookupResult:
    ids, tables = build_dht(n, k, rng)
    index = {v: i for i, v in enumerate(ids)}
    rounds_all, msgs_all, ms_all = [], [], []
    for _ in range(lookups):
        target = rng.getrandbits(BITS)
        closest_true = sorted(ids, key=lambda v: v ^ target)[:k]
        start = ids[rng.randrange(n)]
        shortlist = sorted(set(tables[index[start]]), key=lambda v: v ^ target)[:k]
        queried: set[int] = set()
        rounds = msgs = 0
        elapsed = 0.0
        while True:
            batch = [v for v in shortlist if v not in queried][:alpha]
            if not batch:
                break
            rounds += 1
            msgs += len(batch)
            # a round lasts as long as its slowest answer (round trip)
            elapsed += max(2 * one_way_delay(rng) + PROC_S for _ in batch)
            queried.update(batch)
            learned = set(shortlist)
            for v in batch:
                learned.update(sorted(tables[index[v]], key=lambda u: u ^ target)[:k])
            new = sorted(learned, key=lambda v: v ^ target)[:k]
            if new == shortlist and all(v in queried for v in new[:alpha]):
                break
            shortlist = new
        # a provider record sits on the k closest: found once any of them answered
        assert set(shortlist[:1]) & set(closest_true), "lookup missed the closest node"
        rounds_all.append(rounds)
        msgs_all.append(msgs)
        ms_all.append(elapsed * 1000)
    return LookupResult(
        pct(rounds_all, 0.5), pct(rounds_all, 0.99), statistics.mean(msgs_all), pct(ms_all, 0.5), pct(ms_all, 0.99)
    )


# -- 3. load per node at 10,000 Oracles and 1,000,000 scouts ----------------------------------------


def load_table(
    oracles: int, scouts: int, models: int, copies_per_node: float, lookup_msgs: float
) -> list[tuple[str, str]]:
    presence_s = 30.0  # an Oracle re-announces its load at most this often on its model's topic
    presence_bytes = 300
    per_topic = oracles / models
    gossip_msgs = per_topic / presence_s * copies_per_node  # copies each topic member receives per second
    one_topic_msgs = oracles / presence_s * copies_per_node
    scout_session_min = 10.0  # a browser tab's median stay
    joins_s = scouts / (scout_session_min * 60)
    dht_msgs_per_server = joins_s * lookup_msgs / oracles
    sessions_per_oracle = 4 * 2  # 4 busy slots, 2 scouts drafting for each
    token_frame = 60  # bytes: a drafting session's frame per decided token (ids, position, framing)
    tok_s = 30.0
    return [
        ("topic members per model", f"{per_topic:,.0f}"),
        (
            "presence copies received per Oracle per s (topic per model)",
            f"{gossip_msgs:.1f} ({gossip_msgs * presence_bytes / 1000:.1f} kB/s)",
        ),
        (
            "... with one topic for all models",
            f"{one_topic_msgs:.0f} ({one_topic_msgs * presence_bytes / 1000:.0f} kB/s)",
        ),
        ("scout joins per s, network-wide (10 min stays)", f"{joins_s:,.0f}"),
        ("DHT messages per Oracle per s from scouts' provider lookups", f"{dht_msgs_per_server:.1f}"),
        ("scouts per Oracle (attached, one Oracle each)", f"{scouts / oracles:.0f}"),
        (
            "drafting-session traffic per Oracle (8 sessions, 30 tok/s)",
            f"{sessions_per_oracle * token_frame * tok_s / 1000:.1f} kB/s",
        ),
        ("connections per Oracle (25 mesh + DHT, 8 drafting scouts)", "about 40"),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="fewer publishes and lookups (a smoke run)")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    publishes = 5 if args.quick else 20
    print("1. Gossip delivery (300-byte message; one-way link delay median 30 ms; 10 Mbit/s uplinks)")
    print(
        f"{'topic size':>10} {'mesh D':>7} {'mean deg':>9} {'p50 ms':>8} {'p99 ms':>8} {'max hops':>9} "
        f"{'copies/node':>12}"
    )
    rows = [(100, 99), (100, 6), (1000, 6), (10000, 6), (10000, 8)]
    copies_d6 = 0.0
    for n, d in rows:
        if args.quick and n > 1000:
            continue
        r = simulate_gossip(n, d, 300, rng, publishes if n < 10000 else max(3, publishes // 4))
        if n == 1000 and d == 6:
            copies_d6 = r.copies_per_node
        label = "all" if d >= n - 1 else str(d)
        print(
            f"{n:>10} {label:>7} {r.degree:>9.1f} {r.p50_ms:>8.0f} {r.p99_ms:>8.0f} {r.max_hops:>9} "
            f"{r.copies_per_node:>12.1f}"
        )
    print()
    print("2. Kademlia provider lookup (k=20, alpha=3, 64-bit ids, RTT per round = slowest of alpha)")
    print(f"{'DHT servers':>11} {'rounds p50':>11} {'rounds p99':>11} {'messages':>9} {'ms p50':>8} {'ms p99':>8}")
    lookup_msgs = 0.0
    for n in [1000] if args.quick else [1000, 10000]:
        r2 = simulate_lookups(n, 20, 3, 50 if args.quick else 200, rng)
        lookup_msgs = r2.messages_mean
        print(
            f"{n:>11} {r2.rounds_p50:>11.0f} {r2.rounds_p99:>11.0f} {r2.messages_mean:>9.1f} {r2.ms_p50:>8.0f} "
            f"{r2.ms_p99:>8.0f}"
        )
    print()
    print("3. Load per Oracle: 10,000 Oracles over 20 model topics, 1,000,000 scouts")
    for name, value in load_table(10_000, 1_000_000, 20, copies_d6 or 6.0, lookup_msgs):
        print(f"  {name:<62} {value}")


if __name__ == "__main__":
    main()
