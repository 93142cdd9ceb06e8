"""Load and soak: many concurrent streaming clients against one `shard serve` on loopback, some of
them hanging up mid-stream, some reading slowly, some never reading at all, until the time is up.

What must hold: every request ends (a 200 stream that finishes, a clear 429/503 with Retry-After
when the node is full, or an error event), none hangs past its deadline, the node's queue and
slots drain to zero afterwards, and the memory of the node and its verifier stays flat.

    .venv/bin/python bench/load_soak.py                      # 48 clients, 60 s, the tiny test model
    .venv/bin/python bench/load_soak.py --clients 64 --duration 1800 \
        --model ~/.cache/shard/test-data/models/SmolLM2-135M-Instruct.Q4_1.gguf
    .venv/bin/python bench/load_soak.py --url http://127.0.0.1:8000   # a node that is already running

It prints the figures (clients, requests, duration, outcomes by kind, memory at start and end) and,
with --json FILE, writes them as JSON. Exit code 1 when a check fails. tests/test_reliability.py runs
a short version.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from harness import start_node, stop, tree_rss

ROOT = Path(__file__).resolve().parents[1]

# How each client behaves on a request (weights).
BEHAVIOURS = {"normal": 5, "non_stream": 2, "disconnect": 2, "slow_reader": 2, "stalled": 1}


@dataclass
class Figures:
    clients: int = 0
    requests: int = 0
    duration_s: float = 0.0
    outcomes: collections.Counter = field(default_factory=collections.Counter)
    rss_start_mb: float = 0.0
    rss_end_mb: float = 0.0
    rss_peak_mb: float = 0.0
    rss_samples: list[tuple[float, float]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "clients": self.clients,
            "requests": self.requests,
            "duration_s": round(self.duration_s, 1),
            "outcomes": dict(sorted(self.outcomes.items())),
            "rss_start_mb": round(self.rss_start_mb, 1),
            "rss_end_mb": round(self.rss_end_mb, 1),
            "rss_peak_mb": round(self.rss_peak_mb, 1),
            "problems": self.problems,
        }


def tree_rss_mb(pid: int) -> float:
    """RSS of a process and its children (the node and its verifier; the sidecar too when it runs)."""
    return tree_rss(pid) / 2**20


async def wait_ready(session: aiohttp.ClientSession, url: str, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            async with session.get(url + "/health", timeout=aiohttp.ClientTimeout(total=2)) as r:
                if r.status == 200:
                    return
        except (TimeoutError, aiohttp.ClientError):
            pass
        await asyncio.sleep(0.2)
    raise RuntimeError(f"{url} not ready after {timeout:.0f}s")


class Load:
    def __init__(
        self, url: str, clients: int, duration: float, max_tokens: int, deadline: float, seed: int, api_key: str | None
    ) -> None:
        self.url = url
        self.clients = clients
        self.duration = duration
        self.max_tokens = max_tokens
        self.deadline = deadline  # a request still running after this long is a hang
        self.rng = random.Random(seed)
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.outcomes: collections.Counter = collections.Counter()
        self.problems: list[str] = []
        self.requests = 0

    def _problem(self, text: str) -> None:
        if len(self.problems) < 20:
            self.problems.append(text)

    async def one(self, session: aiohttp.ClientSession, i: int) -> str:
        behaviour = self.rng.choices(list(BEHAVIOURS), weights=list(BEHAVIOURS.values()))[0]
        body = {
            "messages": [{"role": "user", "content": f"client {i} says hello {self.rng.random()}"}],
            "max_tokens": self.rng.randint(1, self.max_tokens),
            "temperature": self.rng.choice([0, 0.8]),
            "stream": behaviour != "non_stream",
        }
        async with session.post(self.url + "/v1/chat/completions", json=body, headers=self.headers) as r:
            if r.status in (429, 503):
                err = (await r.json()).get("error", {})
                if "Retry-After" not in r.headers:
                    self._problem(f"{r.status} {err.get('code')} without Retry-After")
                    return f"{r.status}_no_retry_after"
                return f"{r.status}_{err.get('code')}"
            if r.status != 200:
                self._problem(f"HTTP {r.status}: {(await r.text())[:200]}")
                return f"http_{r.status}"
            if behaviour == "non_stream":
                data = await r.json()
                return "ok" if data["choices"][0]["finish_reason"] in ("stop", "length") else "bad_body"
            if behaviour == "stalled":  # never read: the node must not be stuck on this one
                await asyncio.sleep(self.rng.uniform(1, 5))
                return "stalled_then_left"
            chunks = 0
            stop_after = self.rng.randint(1, 8) if behaviour == "disconnect" else None
            async for line in r.content:
                if behaviour == "slow_reader":
                    await asyncio.sleep(self.rng.uniform(0.01, 0.1))
                if not line.startswith(b"data: "):
                    continue
                if line.strip() == b"data: [DONE]":
                    return "ok"
                event = json.loads(line[6:])
                if "error" in event:
                    self._problem(f"error event: {event['error'].get('message')}")
                    return "stream_error"
                chunks += 1
                if stop_after is not None and chunks >= stop_after:
                    return "client_disconnected"  # leaving the block closes the connection mid-stream
            self._problem("stream ended without [DONE]")
            return "truncated"

    async def client(self, session: aiohttp.ClientSession, i: int, until: float) -> None:
        while time.monotonic() < until:
            self.requests += 1
            try:
                outcome = await asyncio.wait_for(self.one(session, i), self.deadline)
            except TimeoutError:
                outcome = "hung"
                self._problem(f"client {i}: a request took more than {self.deadline:.0f}s")
            except (aiohttp.ClientError, OSError, ValueError) as exc:
                outcome = f"client_error_{exc.__class__.__name__}"
                self._problem(f"client {i}: {exc.__class__.__name__}: {exc}")
            self.outcomes[outcome] += 1
            if outcome.startswith(("429", "503")):
                await asyncio.sleep(self.rng.uniform(0.05, 0.3))  # a polite client backs off a little

    async def run(self) -> None:
        until = time.monotonic() + self.duration
        # Plain connections (no keep-alive reuse): every client is its own socket, as separate apps are.
        conn = aiohttp.TCPConnector(limit=0, force_close=True)
        async with aiohttp.ClientSession(
            connector=conn, timeout=aiohttp.ClientTimeout(total=None, sock_connect=10)
        ) as session:
            await asyncio.gather(*(self.client(session, i, until) for i in range(self.clients)))


async def drained(url: str, timeout: float = 30.0) -> dict[str, Any]:
    """The node's queue and slots once the load is gone (they must reach zero)."""
    async with aiohttp.ClientSession() as session:
        deadline = time.monotonic() + timeout
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            async with session.get(url + "/v1/system/status") as r:
                status = await r.json()
            load = (status.get("model_info") or {}).get("load") or {}
            if status["queue"] == {"in_flight": 0, "waiting": 0} and load.get("active", 0) == 0:
                return status
            await asyncio.sleep(0.2)
        return status


async def soak(url: str, pid: int | None, args: argparse.Namespace) -> Figures:
    figs = Figures(clients=args.clients)
    async with aiohttp.ClientSession() as session:
        await wait_ready(session, url)
    if pid:
        # Warm up first (allocations that happen once: KV cache, first requests), then measure.
        await Load(
            url,
            min(args.clients, 8),
            min(5.0, args.duration / 4),
            args.max_tokens,
            args.deadline,
            args.seed + 1,
            args.api_key,
        ).run()
        figs.rss_start_mb = tree_rss_mb(pid)
    load = Load(url, args.clients, args.duration, args.max_tokens, args.deadline, args.seed, args.api_key)
    started = time.monotonic()

    async def sample() -> None:
        while True:
            if pid:
                rss = tree_rss_mb(pid)
                figs.rss_samples.append((round(time.monotonic() - started, 1), round(rss, 1)))
                figs.rss_peak_mb = max(figs.rss_peak_mb, rss)
            await asyncio.sleep(max(1.0, args.duration / 60))

    sampler = asyncio.create_task(sample())
    try:
        await load.run()
    finally:
        sampler.cancel()
    figs.duration_s = time.monotonic() - started
    figs.requests = load.requests
    figs.outcomes = load.outcomes
    figs.problems = load.problems
    status = await drained(url)
    if status.get("queue") != {"in_flight": 0, "waiting": 0}:
        figs.problems.append(f"the queue did not drain: {status.get('queue')}")
    if status.get("status") != "ok":
        figs.problems.append(f"the node is not ok after the load: {status.get('status')} {status.get('message')}")
    if pid:
        await asyncio.sleep(1.0)
        figs.rss_end_mb = tree_rss_mb(pid)
    bad = {
        k: v
        for k, v in figs.outcomes.items()
        if k in ("hung", "truncated", "bad_body")
        or k.startswith(("client_error", "http_5", "stream_error"))
        or k.endswith("no_retry_after")
    }
    if bad:
        figs.problems.append(f"bad outcomes: {bad}")
    if not figs.outcomes.get("ok"):
        figs.problems.append("no request succeeded")
    if pid and figs.rss_end_mb > figs.rss_start_mb * (1 + args.rss_growth) + 20:
        figs.problems.append(f"memory grew from {figs.rss_start_mb:.0f} MB to {figs.rss_end_mb:.0f} MB")
    return figs


def report(figs: Figures) -> str:
    lines = [
        f"clients {figs.clients}, requests {figs.requests}, duration {figs.duration_s:.1f} s "
        f"({figs.requests / max(figs.duration_s, 1e-9):.1f} req/s)",
        "outcomes: " + ", ".join(f"{k} {v}" for k, v in sorted(figs.outcomes.items())),
    ]
    if figs.rss_start_mb:
        lines.append(
            f"memory (node + verifier RSS): start {figs.rss_start_mb:.0f} MB, end {figs.rss_end_mb:.0f} MB, "
            f"peak {figs.rss_peak_mb:.0f} MB"
        )
    lines.append("problems: " + ("; ".join(figs.problems) if figs.problems else "none"))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", help="a running node (default: start one with --model)")
    ap.add_argument("--model", type=Path, help="GGUF for the node started here (default: the tiny random test model)")
    ap.add_argument("--clients", type=int, default=48)
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    ap.add_argument("--parallel", type=int, default=4, help="the node's slots")
    ap.add_argument("--max-queue", type=int, default=16, help="the node's queue bound (SHARD_MAX_QUEUE)")
    ap.add_argument("--ctx-size", type=int, default=512)
    ap.add_argument("--max-tokens", type=int, default=48, help="each request asks for 1..N tokens")
    ap.add_argument("--deadline", type=float, default=60.0, help="a request taking longer than this counts as hung")
    ap.add_argument("--rss-growth", type=float, default=0.15, help="allowed memory growth, as a fraction (plus 20 MB)")
    ap.add_argument("--api-key")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args(argv)

    proc = None
    tmp = tempfile.TemporaryDirectory(prefix="shard-soak-")
    url = args.url
    try:
        if url is None:
            model = args.model
            if model is None:
                from harness.tiny_gguf import write_tiny_gguf

                model = write_tiny_gguf(Path(tmp.name) / "tiny.gguf", seed=1)
            node = start_node(
                model,
                Path(tmp.name),
                "--parallel",
                str(args.parallel),
                "--ctx-size",
                str(args.ctx_size),
                env={
                    "SHARD_RATE_LIMIT_PER_MINUTE": "1000000",
                    "SHARD_MAX_QUEUE": str(args.max_queue),
                    "PYTHONPATH": str(ROOT / "app"),
                },
                ready_timeout=180,
            )
            proc, url = node.proc, node.url
        figs = asyncio.run(soak(url.rstrip("/"), proc.pid if proc else None, args))
        if proc is not None and proc.poll() is not None:
            figs.problems.append(f"the node exited with {proc.returncode}")
    finally:
        if proc is not None:
            stop(proc, 30)
        tmp.cleanup()
    print(report(figs))
    if args.json:
        args.json.write_text(json.dumps(figs.to_dict(), indent=2))
    return 1 if figs.problems else 0


if __name__ == "__main__":
    sys.exit(main())
