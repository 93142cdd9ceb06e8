"""Web scout benchmark: the browser scout (web-scout/, in Debian's headless Chromium driven by
playwright-core) drafting for a real `shard serve` with SmolLM2 on this machine, in one run:

1. wllama's drafting speed in the browser (the page's own drafter worker, the node's GGUF):
   prefill and decode tokens/s from wllama's timings, and the cost of the scout's real pattern
   (the context grows by what was generated; 8-token drafts with `cache_prompt`).
2. End-to-end tokens/s of chat requests (completion tokens / wall time, greedy, non-streamed) on
   the coop_bench workloads "chat" and "edit", with no browser, then with one browser tab as scout
   using each drafter: wllama forced on every work (`pace=0`), prompt lookup only, and the page's
   default (lookup first; wllama only while it drafts faster than the Oracle decodes);
   with the acceptance the Oracle reports for the scout's drafts and the page's verdict counts.
   The Oracle runs with --no-lookup (so the scout's drafts are the only drafts), then with its
   own prompt lookup on (the default), where the scout competes with it.

    .venv/bin/python bench/web_scout_bench.py [--model PATH] [--tokens 160] [--rounds 1]

Needs the sidecar, web-scout/dist and node_modules (bash scripts/setup) and /usr/bin/chromium.
Every run's texts are checked equal to the no-browser run (drafts never change greedy output).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from coop_bench import WORKLOADS
from harness import ServedNode, metric, start_node, timed_chat, wait_for
from harness.browser import WEB, BrowserScout
from shard import models


def oracle(model: Path, tmp: Path, threads: int, flags: list[str]) -> ServedNode:
    """`shard serve` with one slot and its sidecar, loaded and running."""
    node = start_node(model, tmp, "--parallel", "1", "--threads", str(threads), *flags, sidecar=True, ready_timeout=300)
    node.wait_sidecar(300)
    return node


def scouts(node: ServedNode) -> list[dict[str, Any]]:
    return [p for p in node.get("/v1/system/peers")["peers"] if "scout" in p["roles"]]


def wllama_speed(node: ServedNode, threads: int) -> dict[str, Any]:
    out = subprocess.run(
        [
            "node",
            "e2e/wllama-speed.mjs",
            "--url",
            f"{node.url}/scout/?drafter=wllama&lookup_first=0&threads={threads}",
        ],
        cwd=WEB,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if out.returncode != 0:
        raise SystemExit(f"wllama-speed.mjs failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cache = Path(os.environ.get("SHARD_TEST_DATA", Path.home() / ".cache" / "shard" / "test-data"))
    ap.add_argument("--model", type=Path, default=models.default_model_path(cache))
    ap.add_argument("--tokens", type=int, default=160)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2, help="the Oracle's CPU threads")
    ap.add_argument("--browser-threads", type=int, default=1, help="wllama threads in the page for the end-to-end runs")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="shard-web-scout-bench-"))
    speed_rows: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    try:
        for oracle_lookup in (False, True):
            node = oracle(args.model, tmp, args.threads, [] if oracle_lookup else ["--no-lookup"])
            try:
                if not oracle_lookup:
                    for t in sorted({1, 2}):
                        speed_rows.append(wllama_speed(node, t))
                configs: list[tuple[str, str | None]] = [
                    ("no browser", None),
                    ("browser: wllama (forced)", "drafter=wllama&lookup_first=0&pace=0"),
                    ("browser: lookup", "drafter=lookup"),
                    ("browser: default (lookup + paced wllama)", ""),
                ]
                if oracle_lookup:
                    configs = [configs[0], configs[3]]
                reference: dict[str, list[str]] = {}
                for name, query in configs:
                    browser = None
                    if query is not None:
                        browser = BrowserScout(
                            f"{node.url}/scout/?threads={args.browser_threads}&{query}", tmp / "chromium.log", 3600
                        )
                        wait_for(
                            lambda: browser.state.get("connected") and browser.state["drafter"]["loaded"],
                            timeout=180,
                            what="the page to connect and load its drafter",
                        )
                        wait_for(lambda: scouts(node), 300, "the browser's handshake")
                    try:
                        for wl, prompts in WORKLOADS.items():
                            timed_chat(node.url, prompts[0], 8)  # warm-up
                            before = {
                                k: metric(node.url, f"shard_draft_tokens_{k}_total", '{source="scout"}')
                                for k in ("proposed", "accepted")
                            }
                            page_before = json.loads(json.dumps(browser.state)) if browser else {}
                            speeds, texts = [], []
                            for _ in range(args.rounds):
                                for p in prompts:
                                    text, n, dt = timed_chat(node.url, p, args.tokens)
                                    speeds.append(n / dt)
                                    texts.append(text)
                            reference.setdefault(wl, texts)
                            time.sleep(1.0)  # the last verdicts reach the page
                            proposed = (
                                metric(node.url, "shard_draft_tokens_proposed_total", '{source="scout"}')
                                - before["proposed"]
                            )
                            accepted = (
                                metric(node.url, "shard_draft_tokens_accepted_total", '{source="scout"}')
                                - before["accepted"]
                            )
                            page = browser.state if browser else {}
                            verdicts = {
                                k: v - page_before.get("verdicts", {}).get(k, 0)
                                for k, v in page.get("verdicts", {}).items()
                            }
                            sent = page.get("drafts", {}).get("sent", 0) - page_before.get("drafts", {}).get("sent", 0)
                            rows.append(
                                {
                                    "oracle": "lookup on" if oracle_lookup else "no lookup",
                                    "run": name,
                                    "workload": wl,
                                    "tok_s": statistics.median(speeds),
                                    "proposed": proposed,
                                    "accepted": accepted,
                                    "sent": sent,
                                    "verdicts": verdicts,
                                    "same": texts == reference[wl],
                                    "wllama_tok_s": page.get("drafter", {}).get("tokensPerSecond"),
                                }
                            )
                    finally:
                        if browser is not None:
                            browser.stop()
                            wait_for(lambda: not scouts(node), 300, "the browser to leave")
            finally:
                node.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"\n### wllama in headless Chromium ({args.model.name}, {os.cpu_count()} CPUs, node idle)\n")
    print(
        "| threads | load ms | prefill tok/s | decode tok/s | first draft (64 tok) ms | 8-token drafts on a growing "
        "context, ms each | tok/s there |"
    )
    print("|---|---|---|---|---|---|---|")
    for s in speed_rows:
        print(
            f"| {s['threads']} | {s['load_ms']} | {s['prefill_tok_s']:.1f} | {s['decode_tok_s']:.1f} | "
            f"{s['first_draft_ms']} | "
            f"{' '.join(str(x) for x in s['incremental_8_token_draft_ms'])} | {s['incremental_tok_s']} |"
        )
    print(
        f"\n### End to end ({args.tokens} tokens per request, {args.rounds} round(s) x 3 prompts, greedy, 1 slot, "
        f"Oracle {args.threads} "
        f"threads, wllama {args.browser_threads} thread(s))\n"
    )
    print(
        "| Oracle | run | workload | tok/s (median) | vs no browser | drafts sent | verdicts | scout tokens proposed | "
        "accepted | acceptance | same text |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    base = {(r["oracle"], r["workload"]): r["tok_s"] for r in rows if r["run"] == "no browser"}
    for r in rows:
        acc = f"{r['accepted'] / r['proposed']:.0%}" if r["proposed"] else "-"
        verdicts = ", ".join(f"{k} {v}" for k, v in sorted(r["verdicts"].items()) if v) or "-"
        print(
            f"| {r['oracle']} | {r['run']} | {r['workload']} | {r['tok_s']:.1f} | "
            f"{r['tok_s'] / base[(r['oracle'], r['workload'])]:.2f}x | "
            f"{r['sent'] if r['run'] != 'no browser' else '-'} | {verdicts} | {r['proposed']:.0f} | "
            f"{r['accepted']:.0f} | {acc} | "
            f"{'yes' if r['same'] else 'NO'} |"
        )


if __name__ == "__main__":
    main()
