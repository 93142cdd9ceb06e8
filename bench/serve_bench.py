"""Serving benchmark: `shard serve` against llama.cpp's own C++ `llama-server`, in one run.

    .venv/bin/python bench/serve_bench.py [--model PATH] [--tokens 128] [--concurrency 4] [--rounds 3]

Rows: llama-server (built once from the llama.cpp sources that the pinned llama-cpp-python sdist
vendors, with scripts/setup's CPU flags, cached in ~/.cache/shard/llama-server), shard serve with its
defaults (prompt lookup on), shard serve --no-lookup. Two workloads through /v1/chat/completions
(streamed): chat (open questions) and edit (repeat a given text: where lookup shines); 1 stream and
N concurrent streams. Same model, greedy, the same max_tokens, decode threads, batch threads, slots
and context per slot everywhere. Prints tokens/s, time to first token, peak resident memory of each
server's whole process tree (sampled every 50 ms), streams cut off, and ratios to llama-server.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tarfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness import free_port, stop, tree_rss

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("SHARD_LLAMA_SERVER_DIR", Path.home() / ".cache/shard/llama-server"))

CHAT = [
    "Tell me a short story about a lighthouse keeper.",
    "Explain how a rainbow forms.",
    "What are three good habits for a healthy life?",
    "Describe the city of Paris to a child.",
    "Why do cats purr?",
    "Give me some tips for learning to play the guitar.",
]
EDIT_TEXTS = [
    "The old lighthouse stood at the edge of the cliff. Every night its keeper climbed the narrow stairs, "
    "lit the great lamp, and watched the ships pass safely through the dark water below.",
    "To make bread, mix flour, water, salt and yeast. Knead the dough for ten minutes, let it rise for an "
    "hour, shape it into a loaf, and bake it in a hot oven until the crust is golden brown.",
    "The meeting is moved to Thursday at three o'clock. Please bring the quarterly report, the budget "
    "figures for next year, and your ideas for the new office layout.",
    "Rivers begin as small streams in the mountains. They grow as they flow downhill, joining other "
    "streams, until they become wide rivers that carry water all the way to the sea.",
    "Our team won the game last night. The score was tied until the final minute, when our captain "
    "kicked the ball past the goalkeeper and the whole stadium cheered.",
    "Remember to water the plants on Monday and Friday, feed the cat twice a day, and take out the "
    "recycling on Wednesday morning before eight.",
]
EDIT = [f"Repeat this text exactly, word for word:\n\n{t}" for t in EDIT_TEXTS]
WORKLOADS = {"chat": CHAT, "edit": EDIT}


@dataclass
class Stream:
    ttft_s: float
    tokens: int
    decode_s: float
    finished: bool


@dataclass
class Result:
    server: str
    workload: str
    concurrency: int
    streams: list[Stream] = field(default_factory=list)
    wall_s: float = 0.0
    peak_mb: float = 0.0

    def tok_s_stream(self) -> float:
        rates = [(s.tokens - 1) / s.decode_s for s in self.streams if s.decode_s > 0 and s.tokens > 1]
        return statistics.median(rates) if rates else 0.0

    def tok_s_total(self) -> float:
        return sum(s.tokens for s in self.streams) / self.wall_s if self.wall_s else 0.0

    def ttft_ms(self, p: float) -> float:
        return 1000 * _pct(sorted(s.ttft_s for s in self.streams), p)

    def cut(self) -> int:
        return sum(1 for s in self.streams if not s.finished)


def _pct(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    k = (len(values) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


class RssSampler:
    """Peak resident memory of a process and all its children."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self._stop = pid, 0, threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, tree_rss(self.pid))
            time.sleep(0.05)

    def __enter__(self) -> RssSampler:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()


# -- llama-server, built once ------------------------------------------------------------------------


def _pinned_version() -> str:
    return re.search(r"llama-cpp-python==([0-9.]+)", (ROOT / "pyproject.toml").read_text()).group(1)


def _cpu_flags() -> list[str]:
    """The CPU flags scripts/setup builds llama-cpp-python with (one place for them)."""
    return re.search(r'^CPU_FLAGS="([^"]*)"', (ROOT / "scripts/setup").read_text(), re.M).group(1).split()


def llama_server() -> Path:
    """The llama-server binary from the llama.cpp that the pinned llama-cpp-python vendors: built
    the first time (several minutes on 2 cores), then reused while version and flags are the same."""
    version = _pinned_version()
    flags = [
        *_cpu_flags(),
        "-DCMAKE_BUILD_TYPE=Release",
        "-DLLAMA_CURL=OFF",
        "-DLLAMA_BUILD_TESTS=OFF",
        "-DLLAMA_BUILD_EXAMPLES=OFF",
    ]
    build = CACHE / "build"
    binary = build / "bin" / "llama-server"
    want = hashlib.sha256(json.dumps([version, flags]).encode()).hexdigest()[:16]
    stamp = build / ".shard-stamp"
    if binary.exists() and stamp.exists() and stamp.read_text() == want:
        return binary
    CACHE.mkdir(parents=True, exist_ok=True)
    sdist = CACHE / f"llama_cpp_python-{version}.tar.gz"
    if not sdist.exists():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-binary",
                ":all:",
                "--no-deps",
                f"llama-cpp-python=={version}",
                "-d",
                str(CACHE),
            ],
            check=True,
        )
    src = CACHE / f"llama_cpp_python-{version}" / "vendor" / "llama.cpp"
    if not src.exists():
        with tarfile.open(sdist) as tar:
            tar.extractall(CACHE, filter="data")
    print(
        f"building llama-server from llama-cpp-python {version}'s vendored llama.cpp (once; several minutes)",
        flush=True,
    )
    subprocess.run(["cmake", "-S", str(src), "-B", str(build), *flags], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(
        ["cmake", "--build", str(build), "--target", "llama-server", "-j", str(os.cpu_count() or 2)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    stamp.write_text(want)
    return binary


# -- driving a server ---------------------------------------------------------------------------------


async def one_stream(base: str, model: str, prompt: str, tokens: int) -> Stream:
    import aiohttp

    body = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    t0 = time.perf_counter()
    first = last = 0.0
    chunks = 0
    usage_tokens = None
    finished = False
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as s:
        try:
            async with s.post(base + "/v1/chat/completions", json=body) as r:
                async for raw in r.content:
                    line = raw.decode().strip()
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    chunk = json.loads(line[6:])
                    if chunk.get("usage"):
                        usage_tokens = chunk["usage"].get("completion_tokens")
                    if not chunk.get("choices"):
                        continue
                    now = time.perf_counter()
                    if chunk["choices"][0].get("delta", {}).get("content"):
                        chunks += 1
                        first = first or now
                        last = now
                    finished = finished or chunk["choices"][0].get("finish_reason") is not None
        except aiohttp.ClientPayloadError:
            pass  # the server dropped the stream mid-way: counted as cut off
    # A server may send several tokens in one chunk (shard does, when drafts are accepted): count
    # tokens from the usage chunk.
    n = usage_tokens if usage_tokens is not None else chunks
    return Stream(first - t0, n, last - first, finished)


async def drive(
    base: str, model: str, prompts: list[str], tokens: int, rounds: int, concurrency: int
) -> tuple[list[Stream], float]:
    streams: list[Stream] = []
    wall = 0.0
    for r in range(rounds):
        batch = [prompts[(r * concurrency + i) % len(prompts)] for i in range(max(concurrency, 2))]
        t0 = time.perf_counter()
        if concurrency == 1:  # two requests one after the other
            for p in batch:
                streams.append(await one_stream(base, model, p, tokens))
        else:
            streams += await asyncio.gather(*(one_stream(base, model, p, tokens) for p in batch))
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


def run_server(
    name: str,
    argv: list[str],
    port: int,
    health: str,
    model_id: str,
    args: argparse.Namespace,
    env: dict[str, str] | None = None,
) -> tuple[list[Result], float]:
    """All workloads and concurrencies on one server process; also its peak memory overall."""
    log = open(ROOT / "bench" / f".{name.replace(' ', '_')}.log", "w")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    results = []
    try:
        with RssSampler(proc.pid) as overall:
            wait_http(f"http://127.0.0.1:{port}{health}", proc)
            base = f"http://127.0.0.1:{port}"
            asyncio.run(drive(base, model_id, CHAT, 8, 1, 1))  # warm-up
            for workload, prompts in WORKLOADS.items():
                for c in (1, args.concurrency):
                    with RssSampler(proc.pid) as rss:
                        streams, wall = asyncio.run(drive(base, model_id, prompts, args.tokens, args.rounds, c))
                    results.append(Result(name, workload, c, streams, wall, rss.peak / 2**20))
                    r = results[-1]
                    print(f"  {name}, {workload}, {c} stream(s): {r.tok_s_total():.1f} tok/s total", flush=True)
    finally:
        stop(proc, 20)
    return results, overall.peak / 2**20


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--model", default=str(Path.home() / ".cache/shard/test-data/models/SmolLM2-135M-Instruct.Q4_1.gguf")
    )
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=4, help="streams at once, and slots on every server")
    ap.add_argument("--ctx-size", type=int, default=2048, help="context tokens per slot")
    ap.add_argument("--threads", type=int, default=1, help="decode threads (batches use every CPU, as shard does)")
    ap.add_argument("--only", default="", help="comma-separated subset of: llama-server, shard, shard-no-lookup")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the servers started here are stopped too
    cpus = os.cpu_count() or 1
    only = set(filter(None, args.only.split(",")))
    results: list[Result] = []
    peaks: dict[str, float] = {}

    def add(name: str, got: tuple[list[Result], float]) -> None:
        results.extend(got[0])
        peaks[name] = got[1]

    if not only or "llama-server" in only:
        binary = llama_server()
        port = free_port()
        add(
            "llama-server",
            run_server(
                "llama-server",
                [
                    str(binary),
                    "-m",
                    args.model,
                    "--port",
                    str(port),
                    "--host",
                    "127.0.0.1",
                    "-np",
                    str(args.concurrency),
                    "-c",
                    str(args.ctx_size * args.concurrency),
                    "-t",
                    str(args.threads),
                    "-tb",
                    str(cpus),
                    "--no-webui",
                ],
                port,
                "/health",
                "default",
                args,
            ),
        )
    for name, extra in (("shard", []), ("shard --no-lookup", ["--no-lookup"])):
        if only and name.replace(" --", "-") not in only:
            continue
        port = free_port()
        add(
            name,
            run_server(
                name,
                [
                    sys.executable,
                    "-m",
                    "shard",
                    "serve",
                    "--model",
                    args.model,
                    "--port",
                    str(port),
                    "--no-sidecar",
                    "--ctx-size",
                    str(args.ctx_size),
                    "--parallel",
                    str(args.concurrency),
                    "--threads",
                    str(args.threads),
                    "--data-dir",
                    str(ROOT / "bench" / ".data"),
                    *extra,
                ],
                port,
                "/health",
                "default",
                args,
                env={"SHARD_RATE_LIMIT_PER_MINUTE": "100000", "SHARD_CONFIG": "/nonexistent"},
            ),
        )

    print(
        f"\nmodel {Path(args.model).name}, chat completions, {args.tokens} max tokens per stream, greedy, "
        f"{args.threads} decode "
        f"thread(s), {cpus} batch threads, {args.concurrency} slots x {args.ctx_size} context, {cpus} CPUs, rounds "
        f"{args.rounds}\n"
    )
    ref = {(r.workload, r.concurrency): r for r in results if r.server == "llama-server"}
    hdr = (
        f"{'server':<20}{'work':<6}{'streams':>8}{'tok/s/stream':>14}{'tok/s total':>13}{'vs llama-server':>17}"
        f"{'TTFT p50 ms':>13}{'peak MB':>9}{'vs':>7}{'cut off':>9}"
    )
    print(hdr)
    print("-" * len(hdr))
    for r in results:
        peer = ref.get((r.workload, r.concurrency))
        ratio = f"{r.tok_s_total() / peer.tok_s_total():.2f}x" if peer and peer.tok_s_total() else "-"
        mem = f"{r.peak_mb / peer.peak_mb:.2f}x" if peer and peer.peak_mb else "-"
        print(
            f"{r.server:<20}{r.workload:<6}{r.concurrency:>8}{r.tok_s_stream():>14.1f}{r.tok_s_total():>13.1f}{ratio:>17}"
            f"{r.ttft_ms(50):>13.1f}{r.peak_mb:>9.0f}{mem:>7}{r.cut():>9}"
        )
    print("\npeak MB over the whole run: " + ", ".join(f"{k} {v:.0f}" for k, v in peaks.items()))
    if "llama-server" in peaks:
        print("goals: defaults >= 1.0x llama-server on chat (1 and N streams), >= 1.3x on edit; peak memory <= 1.15x")


if __name__ == "__main__":
    main()
