"""Serving benchmark: the same model and prompts, in one run, through
  raw      llama-cpp-python in-process (Llama.create_completion, streamed),
  llama_cpp.server  llama-cpp-python's own OpenAI server,
  shard    `shard serve` (this project),
with 1 stream and with N concurrent streams. Prints a table: tokens/s, time to first token
p50/p99, peak resident memory (the whole process tree), streams cut off, and ratios.

    .venv/bin/python bench/serve_bench.py [--model PATH] [--tokens 128] [--concurrency 4] [--rounds 3]

Greedy decoding, the same max_tokens and thread count everywhere. Each server runs in its own
process; memory is sampled from its process tree every 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
PROMPTS = [
    "Once upon a time, in a small village by the sea, there lived",
    "The history of the Roman Empire begins with",
    "Here is a detailed recipe for a chocolate cake. First,",
    "The three most important ideas in computer science are",
    "Dear diary, today was the strangest day of my life because",
    "In the year 2150, humanity finally reached Mars, and",
]


@dataclass
class Stream:
    ttft_s: float
    tokens: int
    decode_s: float
    finished: bool


@dataclass
class Result:
    name: str
    concurrency: int
    streams: list[Stream] = field(default_factory=list)
    wall_s: float = 0.0
    peak_rss_mb: float = 0.0

    def row(self) -> dict[str, float | str]:
        ttfts = sorted(s.ttft_s for s in self.streams)
        per_stream = [s.tokens / s.decode_s for s in self.streams if s.decode_s > 0]
        return {
            "name": self.name,
            "conc": self.concurrency,
            "tok_s_stream": statistics.median(per_stream) if per_stream else 0.0,
            "tok_s_total": sum(s.tokens for s in self.streams) / self.wall_s if self.wall_s else 0.0,
            "ttft_p50_ms": 1000 * _pct(ttfts, 50),
            "ttft_p99_ms": 1000 * _pct(ttfts, 99),
            "peak_mb": self.peak_rss_mb,
            "cut": sum(1 for s in self.streams if not s.finished),
        }


def _pct(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    k = (len(values) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RssSampler:
    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self._stop = pid, 0, threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                root = psutil.Process(self.pid)
                rss = sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])
                self.peak = max(self.peak, rss)
            except psutil.Error:
                pass
            time.sleep(0.05)

    def __enter__(self) -> "RssSampler":
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()


# -- raw llama-cpp-python, in a child process of its own -------------------------------------------

def raw_worker(model: str, tokens: int, rounds: int, threads: int) -> None:
    import llama_cpp
    import logging

    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
    llm = llama_cpp.Llama(model, n_ctx=2048, n_threads=threads, verbose=False)
    streams = []
    for r in range(rounds):
        for prompt in PROMPTS[:2]:
            t0 = time.perf_counter()
            first = last = 0.0
            n = 0
            finish = None
            for chunk in llm.create_completion(prompt, max_tokens=tokens, temperature=0, stream=True):
                now = time.perf_counter()
                if chunk["choices"][0]["text"]:
                    n += 1
                    first = first or now
                    last = now
                finish = chunk["choices"][0]["finish_reason"] or finish
            streams.append({"ttft_s": first - t0, "tokens": n - 1, "decode_s": last - first, "finished": finish is not None,
                            "wall_s": time.perf_counter() - t0})
    print(json.dumps(streams))


def run_raw(model: str, tokens: int, rounds: int, threads: int) -> Result:
    proc = subprocess.Popen([sys.executable, __file__, "--raw-worker", "--model", model, "--tokens", str(tokens),
                             "--rounds", str(rounds), "--threads", str(threads)], stdout=subprocess.PIPE, text=True)
    with RssSampler(proc.pid) as rss:
        out, _ = proc.communicate()
    streams = json.loads(out.strip().splitlines()[-1])
    res = Result("raw llama-cpp-python", 1, [Stream(s["ttft_s"], s["tokens"], s["decode_s"], s["finished"]) for s in streams])
    res.wall_s = sum(s["wall_s"] for s in streams)
    res.peak_rss_mb = rss.peak / 2**20
    return res


# -- servers ---------------------------------------------------------------------------------------

async def one_stream(base: str, model: str, prompt: str, tokens: int) -> tuple[Stream, float]:
    import aiohttp

    body = {"model": model, "prompt": prompt, "max_tokens": tokens, "temperature": 0, "stream": True}
    t0 = time.perf_counter()
    first = last = 0.0
    n = 0
    finished = False
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as s:
        try:
            async with s.post(base + "/v1/completions", json=body) as r:
                async for raw in r.content:
                    line = raw.decode().strip()
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    chunk = json.loads(line[6:])
                    if "error" in chunk or not chunk.get("choices"):
                        continue
                    now = time.perf_counter()
                    if chunk["choices"][0].get("text"):
                        n += 1
                        first = first or now
                        last = now
                    finished = finished or chunk["choices"][0].get("finish_reason") is not None
        except aiohttp.ClientPayloadError:
            pass  # the server dropped the stream mid-way: counted as cut off
    return Stream(first - t0, max(n - 1, 0), last - first, finished), time.perf_counter() - t0


async def drive(base: str, model: str, tokens: int, rounds: int, concurrency: int) -> tuple[list[Stream], float]:
    streams: list[Stream] = []
    wall = 0.0
    for r in range(rounds):
        prompts = [PROMPTS[(r + i) % len(PROMPTS)] for i in range(concurrency)] if concurrency > 1 else PROMPTS[:2]
        t0 = time.perf_counter()
        if concurrency == 1:
            for p in prompts:
                s, _ = await one_stream(base, model, p, tokens)
                streams.append(s)
        else:
            results = await asyncio.gather(*(one_stream(base, model, p, tokens) for p in prompts))
            streams += [s for s, _ in results]
        wall += time.perf_counter() - t0
    return streams, wall


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except Exception:
            time.sleep(0.2)
    raise RuntimeError(f"{url} not ready")


def run_server(name: str, argv: list[str], port: int, health: str, model_id: str, tokens: int, rounds: int,
               concurrencies: list[int], env: dict[str, str] | None = None) -> list[Result]:
    log = open(ROOT / "bench" / f".{name.split()[0]}.log", "w")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    results = []
    try:
        wait_http(f"http://127.0.0.1:{port}{health}", proc)
        base = f"http://127.0.0.1:{port}"
        asyncio.run(drive(base, model_id, 8, 1, 1))  # warm-up
        for c in concurrencies:
            with RssSampler(proc.pid) as rss:
                streams, wall = asyncio.run(drive(base, model_id, tokens, rounds, c))
            res = Result(name, c, streams, wall, rss.peak / 2**20)
            results.append(res)
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
    return results


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(Path.home() / ".cache/shard/test-data/models/SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--threads", type=int, default=max((os.cpu_count() or 2) // 2, 1))
    ap.add_argument("--raw-worker", action="store_true")
    args = ap.parse_args()
    if args.raw_worker:
        raw_worker(args.model, args.tokens, args.rounds, args.threads)
        return
    concs = [1, args.concurrency]
    results = [run_raw(args.model, args.tokens, args.rounds, args.threads)]
    p1 = free_port()
    results += run_server("llama_cpp.server", [sys.executable, "-m", "llama_cpp.server", "--model", args.model, "--port", str(p1),
                          "--n_ctx", "2048", "--n_threads", str(args.threads)], p1, "/v1/models", args.model, args.tokens, args.rounds, concs)
    p2 = free_port()
    results += run_server("shard serve", [sys.executable, "-m", "shard", "serve", "--model", args.model, "--port", str(p2), "--no-sidecar",
                          "--ctx-size", "2048", "--parallel", str(args.concurrency), "--threads", str(args.threads),
                          "--data-dir", str(ROOT / "bench" / ".data")], p2, "/health", "default", args.tokens, args.rounds, concs,
                          env={"SHARD_RATE_LIMIT_PER_MINUTE": "100000", "SHARD_CONFIG": "/nonexistent"})
    rows = [r.row() for r in results]
    print(f"\nmodel {Path(args.model).name}, {args.tokens} tokens per stream, greedy, {args.threads} decode thread(s), "
          f"{os.cpu_count()} CPUs, rounds {args.rounds}\n")
    hdr = f"{'server':<22}{'streams':>8}{'tok/s/stream':>14}{'tok/s total':>13}{'TTFT p50 ms':>13}{'TTFT p99 ms':>13}{'peak MB':>9}{'cut off':>9}"
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        print(f"{r['name']:<22}{r['conc']:>8}{r['tok_s_stream']:>14.1f}{r['tok_s_total']:>13.1f}{r['ttft_p50_ms']:>13.1f}"
              f"{r['ttft_p99_ms']:>13.1f}{r['peak_mb']:>9.0f}{r['cut']:>9}")
    by = {(r["name"], r["conc"]): r for r in rows}
    raw1 = by[("raw llama-cpp-python", 1)]["tok_s_stream"]
    sh1 = by[("shard serve", 1)]["tok_s_stream"]
    lc1 = by[("llama_cpp.server", 1)]["tok_s_stream"]
    shc = by[("shard serve", args.concurrency)]["tok_s_total"]
    lcc = by[("llama_cpp.server", args.concurrency)]["tok_s_total"]
    print(f"\nsingle stream: shard / raw in-process = {sh1 / raw1:.3f}x (goal >= 0.97); llama_cpp.server / raw = {lc1 / raw1:.3f}x")
    print(f"{args.concurrency} streams: shard total / llama_cpp.server total = {shc / lcc:.2f}x (goal >= 1.0); "
          f"streams cut off: shard {by[('shard serve', args.concurrency)]['cut']}, llama_cpp.server {by[('llama_cpp.server', args.concurrency)]['cut']}")


if __name__ == "__main__":
    main()
