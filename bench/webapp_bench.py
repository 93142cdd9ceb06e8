"""Web app benchmark: does an open web app tab slow the Oracle on its own machine? The Oracle
(`shard serve`, SmolLM2, its default settings, its sidecar) serves the coop_bench workloads
("chat", "edit"; greedy, non-streamed) through the OpenAI API, in alternating rounds: no browser,
then the web app open in Debian's headless Chromium (its sidebar polling, its scout in a Worker
drafting with prompt lookup only under the double-dip rule). Prints completion tokens/s per
workload and the ratio tab/none (the issue's target: at least 0.97), and checks that the texts are
equal (drafts never change greedy output).

    .venv/bin/python bench/webapp_bench.py [--model PATH] [--tokens 160] [--rounds 3]

Needs the sidecar, web-scout/dist and node_modules (bash scripts/setup) and /usr/bin/chromium.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import requests

from coop_bench import WORKLOADS
from harness import MODEL_CACHE, start_node, wait_for
from harness.browser import Browser
from shard import models


def run_workload(api: str, prompts: list[str], tokens: int) -> tuple[float, list[str]]:
    produced, spent, texts = 0, 0.0, []
    for prompt in prompts:
        t0 = time.monotonic()
        r = requests.post(
            api + "/chat/completions",
            timeout=600,
            json={"messages": [{"role": "user", "content": prompt}], "max_tokens": tokens, "temperature": 0},
        ).json()
        spent += time.monotonic() - t0
        produced += r["usage"]["completion_tokens"]
        texts.append(r["choices"][0]["message"]["content"])
    return produced / spent, texts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=models.default_model_path(MODEL_CACHE))
    ap.add_argument("--tokens", type=int, default=160)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="shard-webapp-bench-"))
    node = start_node(args.model, tmp, sidecar=True)
    rates: dict[tuple[str, str], list[float]] = {}
    texts: dict[str, set[tuple[str, ...]]] = {w: set() for w in WORKLOADS}
    accepted = 0
    try:
        wait_for(lambda: node.status()["sidecar"]["state"] == "running", what="the sidecar")
        run_workload(node.api, WORKLOADS["chat"][:1], 16)  # warm up
        for _ in range(args.rounds):
            for mode in ("none", "tab"):
                browser = None
                if mode == "tab":
                    browser = Browser(tmp / "chromium.log")
                    browser.do("goto", url=node.url + "/")
                    browser.until(
                        "window.shardApp?.scout.state.connected && window.shardApp.scout.state.drafter.loaded",
                        90,
                        "the tab's scout",
                    )
                try:
                    for name, prompts in WORKLOADS.items():
                        rate, out = run_workload(node.api, prompts, args.tokens)
                        rates.setdefault((name, mode), []).append(rate)
                        print(f"  {name} {mode}: {rate:.1f} tokens/s", flush=True)
                        texts[name].add(tuple(out))
                    if browser is not None:
                        accepted += browser.js("window.shardApp.scout.state.accepted")
                finally:
                    if browser is not None:
                        browser.close()
    finally:
        node.stop()
    print(
        f"model {args.model.name}, {args.tokens} tokens a request, {args.rounds} alternating rounds (medians, tokens/s)"
    )
    print(f"{'workload':10} {'no browser':>11} {'web app tab':>12} {'ratio':>7}")
    for name in WORKLOADS:
        none, tab = statistics.median(rates[(name, "none")]), statistics.median(rates[(name, "tab")])
        print(f"{name:10} {none:11.1f} {tab:12.1f} {tab / none:7.3f}")
    print(
        f"draft tokens the tab had accepted: {accepted}; texts equal across runs: "
        f"{all(len(v) == 1 for v in texts.values())}"
    )


if __name__ == "__main__":
    main()
