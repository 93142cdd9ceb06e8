"""Cooperative generation benchmark: the same requests, in one run, through `shard serve` as
  plain          no drafting at all (--no-lookup, no sidecar): plain local decoding
  coop, no scout the sidecar running and the cooperative path on, but no scout and no lookup
  lookup         the verifier's prompt-lookup drafter (the default), no sidecar
  scout          one headless scout (`shard scout`, same model) over loopback libp2p, no lookup
on two workloads: "chat" (open questions) and "edit" (rewrite or fix a given text, where the answer
repeats the prompt). Prints tokens/s per request (completion tokens / wall time, non-streamed),
the ratio to plain, and for drafting runs the acceptance rate and the scout's round trip.

    .venv/bin/python bench/coop_bench.py [--model PATH] [--scout-model PATH] [--tokens 128] [--rounds 2]
    .venv/bin/python bench/coop_bench.py --twin     # a slow Oracle and a fast scout that agree exactly

Greedy decoding everywhere; every run's texts are checked equal to plain's (drafts never change
the output). Needs the sidecar built (`bash scripts/setup`) for the two network runs.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import requests

from harness import free_port, stop, timed_chat, wait_for
from shard import models

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")

TEXT = (
    "The meeting is scheduled for tuesday at 10am in the main conference room. Please bring your laptop, "
    "the quarterly report and any questions you have about the new budget. Lunch will be provided after "
    "the meeting. If you cannot attend, let Sarah know by monday evening so she can share the notes."
)
WORKLOADS = {
    "chat": [
        "What are three good habits for staying healthy?",
        "Explain how a bicycle works in simple terms.",
        "Write a short story about a lighthouse keeper.",
    ],
    "edit": [
        f"Rewrite this text exactly, but capitalize the day names: {TEXT}",
        f"Fix any grammar mistakes in this text and return the full corrected text: {TEXT}",
        f"Repeat the following text word for word: {TEXT}",
    ],
}
NET = ("--control-port", "0", "--tcp-port", "0", "--p2p-host", "127.0.0.1", "--no-mdns")


def wait(check: Callable[[], T], timeout: float = 300.0, what: str = "") -> T:
    return wait_for(check, timeout, what)


def metric(base: str, name: str) -> float:
    text = requests.get(base + "/metrics", timeout=5).text
    total = 0.0
    for m in re.finditer(rf"^{re.escape(name)}(?:{{[^}}]*}})? ([0-9.e+-]+)$", text, re.M):
        total += float(m.group(1))
    return total


class Run:
    def __init__(self, name: str, model: Path, tmp: Path, threads: int, flags: list[str], scout: Path | None) -> None:
        self.name, self.port = name, free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        data = tmp / f"data-{name.replace(' ', '-').replace(',', '')}"
        self.log = (tmp / f"{data.name}.log").open("wb")
        env = {**os.environ, "SHARD_CONFIG": str(tmp / "none.toml"), "SHARD_RATE_LIMIT_PER_MINUTE": "100000"}
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "shard",
                "serve",
                "--model",
                str(model),
                "--port",
                str(self.port),
                "--data-dir",
                str(data),
                "--parallel",
                "1",
                "--threads",
                str(threads),
                *flags,
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        self.scout: subprocess.Popen[bytes] | None = None
        try:
            self._start(name, model, tmp, env, scout)
        except BaseException:
            self.stop()  # never leave a server behind
            raise

    def _start(self, name: str, model: Path, tmp: Path, env: dict[str, str], scout: Path | None) -> None:
        wait(lambda: requests.get(self.base + "/health", timeout=2).status_code == 200, what=f"{name} to load")
        if scout:
            wait(
                lambda: (
                    requests.get(self.base + "/v1/system/status", timeout=2).json()["sidecar"]["state"] == "running"
                ),
                what="the sidecar",
            )
            topo = requests.get(self.base + "/v1/system/topology", timeout=5).json()
            addr = next(a for a in topo["listen_addrs"] if "/tcp/" in a and "/ws" not in a)
            self.scout = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "shard",
                    "scout",
                    "--model",
                    str(scout),
                    "--bootstrap",
                    addr,
                    "--threads",
                    "1",
                    "--data-dir",
                    str(tmp / "scout"),
                    *NET,
                ],
                stdout=(tmp / "scout.log").open("wb"),
                stderr=subprocess.STDOUT,
                env=env,
            )
            wait(
                lambda: any(
                    "scout" in p["roles"]
                    for p in requests.get(self.base + "/v1/system/peers", timeout=2).json()["peers"]
                ),
                what="the scout's handshake",
            )

    def complete(self, prompt: str, tokens: int) -> tuple[str, int, float]:
        return timed_chat(self.base, prompt, tokens)

    def stop(self) -> None:
        for p in (self.scout, self.proc):
            if p is not None:
                stop(p, 30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cache = Path(os.environ.get("SHARD_TEST_DATA", Path.home() / ".cache" / "shard" / "test-data"))
    ap.add_argument("--model", type=Path, default=models.default_model_path(cache))
    ap.add_argument("--scout-model", type=Path, help="the scout's model (default: the Oracle's)")
    ap.add_argument(
        "--twin",
        action="store_true",
        help="the test models instead: a slow Oracle (the tiny model plus idle "
        "layers) and a scout running the tiny model, which agree exactly: a big model and its small drafter",
    )
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="the Oracle's decode threads (the scout gets 1 of its own)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="shard-coop-bench-"))
    if args.twin:
        from harness.tiny_gguf import write_tiny_gguf

        args.model = write_tiny_gguf(tmp / "slow-twin.gguf", seed=1, idle_layers=48)
        args.scout_model = write_tiny_gguf(tmp / "tiny.gguf", seed=1)
    scout_model = args.scout_model or args.model
    configs = [
        ("plain", ["--no-lookup", "--no-sidecar"], None),
        ("coop, no scout", ["--no-lookup", *NET], None),
        ("lookup", ["--no-sidecar"], None),
        ("scout", ["--no-lookup", *NET], scout_model),
    ]
    rows, reference = [], {}
    try:
        for name, flags, scout in configs:
            run = Run(name, args.model, tmp, args.threads, flags, scout)
            try:
                for wl, prompts in WORKLOADS.items():
                    run.complete(prompts[0], 8)  # warm-up
                    before = {k: metric(run.base, f"shard_draft_tokens_{k}_total") for k in ("proposed", "accepted")}
                    rtt_sum, rtt_n = (
                        metric(run.base, "shard_draft_round_trip_seconds_sum"),
                        metric(run.base, "shard_draft_round_trip_seconds_count"),
                    )
                    speeds, texts = [], []
                    for _ in range(args.rounds):
                        for p in prompts:
                            text, n, dt = run.complete(p, args.tokens)
                            speeds.append(n / dt)
                            texts.append(text)
                    if name == "plain":
                        reference[wl] = texts
                    same = texts == reference[wl]
                    proposed = metric(run.base, "shard_draft_tokens_proposed_total") - before["proposed"]
                    accepted = metric(run.base, "shard_draft_tokens_accepted_total") - before["accepted"]
                    rtt_n2 = metric(run.base, "shard_draft_round_trip_seconds_count") - rtt_n
                    rtt = (
                        (metric(run.base, "shard_draft_round_trip_seconds_sum") - rtt_sum) / rtt_n2 * 1000
                        if rtt_n2
                        else None
                    )
                    rows.append((name, wl, statistics.mean(speeds), proposed, accepted, rtt, same))
            finally:
                run.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    plain = {wl: s for n, wl, s, *_ in rows if n == "plain"}
    print(
        f"\nOracle {args.model.name}, scout {scout_model.name}, {args.tokens} tokens per request, {args.rounds} rounds "
        "x 3 prompts, "
        f"greedy, 1 slot, Oracle {args.threads} thread(s), scout 1 thread\n"
    )
    print(
        "| run | workload | tok/s | vs plain | drafts proposed | accepted | acceptance | scout round trip ms | same "
        "text as plain |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, wl, speed, proposed, accepted, rtt, same in rows:
        acc = f"{accepted / proposed:.0%}" if proposed else "-"
        print(
            f"| {name} | {wl} | {speed:.1f} | {speed / plain[wl]:.2f}x | {proposed:.0f} | {accepted:.0f} | {acc} | "
            f"{f'{rtt:.1f}' if rtt is not None else '-'} | {'yes' if same else 'NO'} |"
        )


if __name__ == "__main__":
    main()
