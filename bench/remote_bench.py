"""Remote inference benchmark, two parts, in one run on loopback libp2p:

  1. direct vs remote: the same streamed requests to an Oracle (`shard serve --model ...`) called
     directly, and through a node without a model that asks it over `/shard/infer/1.0.0` (one
     request at a time, alternating): time to first token and tokens/s, with ratios.
  2. mixed load: an Oracle with one slot and N contributors (nodes with credit in its ledger) and
     N consumers (none), each sending requests back to back: time from request to first token
     (almost all of it queue wait) and requests served, per class.

    .venv/bin/python bench/remote_bench.py [--model PATH] [--tokens 64] [--rounds 2] [--mixed-s 90] [--askers 2]
        [--seed-credit 10000]

Contributors' credit is written into the Oracle's ledger before it starts (--seed-credit accepted
draft tokens each, as scouting for it would leave), so that part 2 measures the queue, not
scouting. Credit is spent as it buys service (each token served costs the asker one): with less
credit than the run consumes, contributors fall back to the consumers' class when it runs out.
Greedy decoding; the remote texts are checked equal to the direct ones.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

import requests

from harness import ServedNode, start_node
from serve_bench import CHAT as PROMPTS
from serve_bench import _pct, one_stream
from shard import models
from shard.credit.ledger import Ledger


def serve(name: str, tmp: Path, *flags: str) -> ServedNode:
    """`shard serve` with its sidecar, data in tmp/name; not waited for."""
    return start_node(None, tmp, *flags, sidecar=True, wait=False, data_dir=tmp / name)


def summarize(streams: list) -> dict[str, float]:  # type: ignore[type-arg]
    rates = [s.tokens / s.decode_s for s in streams if s.decode_s > 0]
    ttfts = sorted(s.ttft_s for s in streams)
    return {
        "tok_s": statistics.median(rates) if rates else 0.0,
        "ttft_p50": 1000 * _pct(ttfts, 50),
        "ttft_p99": 1000 * _pct(ttfts, 99),
        "cut": sum(not s.finished for s in streams),
    }


async def direct_vs_remote(model: Path, tmp: Path, tokens: int, rounds: int, threads: int) -> None:
    oracle = serve("oracle", tmp, "--model", str(model), "--threads", str(threads), "--parallel", "2")
    oracle.wait_ready(300)
    asker = serve("asker", tmp, "--bootstrap", oracle.tcp_addr())
    try:
        asker.wait_ready(300)
        await one_stream(oracle.url, "default", "warm up", 8)
        await one_stream(asker.url, "default", "warm up", 8)
        got: dict[str, list] = {"direct": [], "remote": []}  # type: ignore[type-arg]
        for r in range(rounds):
            for prompt in PROMPTS:
                for name, node in (
                    (("direct", oracle), ("remote", asker)) if r % 2 == 0 else (("remote", asker), ("direct", oracle))
                ):
                    stream, _ = await one_stream(node.url, "default", prompt, tokens)
                    got[name].append(stream)
        d, rm = summarize(got["direct"]), summarize(got["remote"])
        print(f"\n## direct vs remote ({len(got['direct'])} streams each, {tokens} tokens, model {model.name})\n")
        print("| path | tok/s per stream (median) | TTFT p50 ms | TTFT p99 ms | cut off |")
        print("|---|---|---|---|---|")
        for name, s in (("Oracle called directly", d), ("through a node without a model (libp2p)", rm)):
            print(f"| {name} | {s['tok_s']:.1f} | {s['ttft_p50']:.0f} | {s['ttft_p99']:.0f} | {s['cut']} |")
        print(
            f"\nremote / direct: tok/s {rm['tok_s'] / d['tok_s']:.3f}x, TTFT p50 +{rm['ttft_p50'] - d['ttft_p50']:.0f} "
            "ms "
            f"({rm['ttft_p50'] / d['ttft_p50']:.2f}x)"
        )
        body = {"prompt": PROMPTS[0], "max_tokens": tokens, "temperature": 0}
        texts = [
            requests.post(n.url + "/v1/completions", json=body, timeout=120).json()["choices"][0]["text"]
            for n in (oracle, asker)
        ]
        same = texts[0] == texts[1]
        print(f"remote text == direct text: {same}")
    finally:
        asker.stop()
        oracle.stop()


async def mixed_load(
    model: Path, tmp: Path, tokens: int, seconds: float, askers: int, threads: int, seed_credit: int
) -> None:
    # The askers first, without bootstrap (their identities are needed for the Oracle's ledger);
    # the Oracle then dials them.
    nodes = {f"{kind}{i}": serve(f"{kind}{i}", tmp) for kind in ("contributor", "consumer") for i in range(askers)}
    ids = {name: n.wait_sidecar(300)["peer_id"] for name, n in nodes.items()}
    ledger = Ledger(tmp / "oracle-mixed" / "ledger.db")
    for name, pid in ids.items():
        if name.startswith("contributor"):
            ledger.record_draft(pid, f"seed:{pid}", seed_credit, seed_credit)
    ledger.close()
    oracle = serve(
        "oracle-mixed",
        tmp,
        "--model",
        str(model),
        "--threads",
        str(threads),
        "--parallel",
        "1",
        *(x for n in nodes.values() for x in ("--bootstrap", n.tcp_addr())),
    )
    try:
        oracle.wait_ready(300)
        for n in nodes.values():
            n.wait_ready(300)
        waits: dict[str, list[float]] = {name: [] for name in nodes}
        until = time.monotonic() + seconds

        async def client(name: str) -> None:
            i = 0
            while time.monotonic() < until:
                stream, _ = await one_stream(nodes[name].url, "default", PROMPTS[i % len(PROMPTS)], tokens)
                if stream.finished:
                    waits[name].append(stream.ttft_s)
                i += 1

        await asyncio.gather(*(client(name) for name in nodes))
        print(
            f"\n## mixed load ({seconds:.0f} s, Oracle with 1 slot, {askers} contributors + {askers} consumers, "
            f"{tokens} tokens per request, back to back)\n"
        )
        print("| class | requests served | wait to first token p50 s | p95 s | max s |")
        print("|---|---|---|---|---|")
        row = {}
        for kind in ("contributor", "consumer"):
            w = sorted(x for name, v in waits.items() if name.startswith(kind) for x in v)
            row[kind] = (len(w), _pct(w, 50), _pct(w, 95), max(w) if w else 0.0)
            print(f"| {kind}s | {row[kind][0]} | {row[kind][1]:.2f} | {row[kind][2]:.2f} | {row[kind][3]:.2f} |")
        if row["contributor"][1]:
            print(
                f"\nconsumer / contributor wait p50: {row['consumer'][1] / row['contributor'][1]:.1f}x; "
                "share of requests served to contributors: "
                f"{row['contributor'][0] / max(1, row['contributor'][0] + row['consumer'][0]):.0%}"
            )
    finally:
        oracle.stop()
        for n in nodes.values():
            n.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--model",
        type=Path,
        default=models.default_model_path(
            Path(os.environ.get("SHARD_TEST_DATA", Path.home() / ".cache/shard/test-data"))
        ),
    )
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="the Oracle's decode threads")
    ap.add_argument("--mixed-s", type=float, default=90.0, help="length of the mixed-load part, seconds")
    ap.add_argument("--mixed-tokens", type=int, default=32)
    ap.add_argument("--askers", type=int, default=2, help="contributors, and as many consumers")
    ap.add_argument(
        "--seed-credit", type=int, default=10_000, help="each contributor's credit with the Oracle at the start"
    )
    args = ap.parse_args()
    if not args.model.exists():
        raise SystemExit(f"no model at {args.model}: run `bash scripts/setup` or pass --model")
    with tempfile.TemporaryDirectory(prefix="shard-remote-bench-") as d:
        asyncio.run(direct_vs_remote(args.model, Path(d), args.tokens, args.rounds, args.threads))
        asyncio.run(
            mixed_load(
                args.model, Path(d), args.mixed_tokens, args.mixed_s, args.askers, args.threads, args.seed_credit
            )
        )


if __name__ == "__main__":
    main()
