"""The browser tab as the scout of a slower Oracle: issue 14's tab row of bench/coop_bench.py.

The Oracle is an exact twin of SmolLM2 about N times slower (bench/twin_gguf.py; default 8x), both
rewritten as Q8_0 as in coop_bench (--quant; "" keeps the file's own type), with SmolLM2 as its
draft model (`--draft-model`), and the scout is the web scout page (web-scout/) in
Debian's headless Chromium (playwright-core, e2e/scout.mjs): wllama drafting with the draft model
the node serves, in a drafting session per request (it follows the Oracle's progress messages and
drafts ahead of them). The Oracle runs on CPU 0, the browser on CPU 1 (the affinity the processes
inherit), each decoding with one thread. Rows, one run each (greedy, non-streamed, the texts checked
equal to plain's):
  plain                no drafting at all (--no-lookup, no sidecar)
  tab (wllama)         the tab drafts with the model on every request (`pace=0`), no Oracle lookup
  tab (page default)   the page as a user opens it (lookup first; the model while it keeps ahead)
  tab (wllama, no lookup)   only with --runs ...,model: the model's drafts alone (`lookup_first=0`)
Before the rows, SmolLM2 itself is timed natively (llama.cpp, 1 thread, CPU 0, the same requests
and timing as the rows) so the Oracle's slowdown is measured, not assumed; each tab row also prints
the tab's own drafting speed (model tokens / model-call time, in the page) against the Oracle's
plain speed, and where the page's time went (its model calls, what wllama read again, round trips).

    .venv/bin/python bench/coop_tab.py [--slowdown 8] [--workload chat] [--tokens 64] [--rounds 1]
        [--quant Q8_0] [--runs plain,wllama,default,model] [--page "chunk=2&follow_pace=1"]
        [--idle-type BF16] [--vs-tab 8 --tab-tps 7.4]     (an Oracle slower than the tab, not only native)
    .venv/bin/python bench/coop_bench.py --tab 8 ...     (the same rows in coop_bench's table)

Needs the sidecar, web-scout/dist and node_modules (bash scripts/setup) and /usr/bin/chromium.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests

from coop_bench import WORKLOADS
from harness import ServedNode, start_node, timed_chat, wait_for
from harness.browser import BrowserScout
from shard import models
from twin_gguf import write_twin

MAX_LAYERS = 512  # llama.cpp's LLAMA_MAX_LAYERS: a model with more aborts at load
NET = ("--privacy", "local")  # the tab is on this machine and paired by the page (node.json's pair_key)


@contextlib.contextmanager
def on_cpu(cpu: int) -> Iterator[None]:
    """Processes started inside run on `cpu` only (they inherit this process's affinity)."""
    cpus = os.sched_getaffinity(0)
    if len(cpus) < 2:
        yield
        return
    os.sched_setaffinity(0, {sorted(cpus)[cpu % len(cpus)]})
    try:
        yield
    finally:
        os.sched_setaffinity(0, cpus)


def counters(node: ServedNode) -> dict[str, float]:
    info = requests.get(node.url + "/v1/system/status", timeout=5).json().get("model_info") or {}
    return dict(info.get("counters") or {})


def measure(node: ServedNode, prompts: list[str], tokens: int, rounds: int) -> tuple[list[str], dict[str, Any]]:
    """The texts, and a coop_bench row's figures, over `rounds` of `prompts`."""
    timed_chat(node.url, prompts[0], 8)  # warm-up
    before = counters(node)
    speeds, texts = [], []
    for _ in range(rounds):
        for p in prompts:
            text, n, dt = timed_chat(node.url, p, tokens)
            speeds.append(n / dt)
            texts.append(text)
    after = counters(node)
    d = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    proposed = d.get("draft_proposed", 0) + d.get("external_proposed", 0)
    accepted = d.get("draft_accepted", 0) + d.get("external_accepted", 0)
    return texts, {
        "speed": statistics.mean(speeds),
        "acceptance": accepted / proposed if proposed else None,
        "tokens_per_step": d.get("tokens_generated", 0) / d["steps"] if d.get("steps") else None,
        "accepted": accepted,
        "scout_share": d.get("external_accepted", 0) / accepted if accepted else None,
        "steps_with_draft": d.get("draft_checks", 0) + d.get("external_checks", 0),
    }


def native_speed(model: Path, prompts: list[str], tokens: int) -> float:
    """`model` decoding natively (llama.cpp, 1 thread, on CPU 0 like the Oracle): tokens/s over `prompts`,
    timed as the rows are (completion tokens / wall time of a chat completion, prompt included)."""
    import time

    import llama_cpp

    with on_cpu(0):
        llm = llama_cpp.Llama(str(model), n_ctx=2048, n_threads=1, n_threads_batch=1, verbose=False)
        llm.create_chat_completion([{"role": "user", "content": prompts[0]}], max_tokens=8, temperature=0)  # warm-up
        speeds = []
        for p in prompts:
            llm.reset()
            t0 = time.perf_counter()
            out: Any = llm.create_chat_completion([{"role": "user", "content": p}], max_tokens=tokens, temperature=0)
            speeds.append(out["usage"]["completion_tokens"] / (time.perf_counter() - t0))
        llm.close()
    return statistics.mean(speeds)


def step_time(model: Path, steps: int = 12) -> float:
    """Seconds per single-token decode step of `model` (llama.cpp, 1 thread, CPU 0)."""
    import time

    import llama_cpp

    with on_cpu(0):
        llm = llama_cpp.Llama(str(model), n_ctx=256, n_threads=1, n_threads_batch=1, verbose=False)
        tokens = llm.tokenize(b"Once upon a time")
        llm.eval(tokens)
        t0 = time.perf_counter()
        for _ in range(steps):
            llm.eval(tokens[-1:])
        dt = (time.perf_counter() - t0) / steps
        llm.close()
    return dt


def layer_cost(model: Path, tmp: Path, idle_type: str, idle: int = 48) -> float:
    """What one idle layer of `idle_type` adds to a decode step, in steps of `model` itself (measured
    on a small twin, so the big one is sized for this machine's cores)."""
    probe = write_twin(model, tmp / f"probe-{idle_type}.gguf", idle, idle_type=idle_type)
    try:
        base = step_time(model)
        return max(1e-4, (step_time(probe) - base) / base / idle)
    finally:
        probe.unlink()


def page_timing(s: dict[str, Any]) -> str:
    """Where the page's time went (ScoutState.timing in web-scout/src/scout.ts), in one line."""
    t = s.get("timing") or {}
    calls = t.get("modelCalls", 0) or 1
    trips = t.get("roundTrips", 0) or 1
    return (
        f"{t.get('modelCalls', 0)} model calls, {t.get('modelMs', 0) / calls:.0f} ms each "
        f"(wllama read {t.get('promptTokens', 0)} prompt tokens in {t.get('promptMs', 0)} ms, predicted "
        f"{t.get('predictedTokens', 0)} in {t.get('predictedMs', 0)} ms), drafter idle {t.get('idleMs', 0)} ms, "
        f"draft round trip {t.get('roundTripMs', 0) / trips:.0f} ms"
    )


RUNS = {
    "plain": ("plain", None),
    "wllama": ("tab (wllama) @ 0 ms", "pace=0&threads=1"),
    "default": ("tab (page default) @ 0 ms", "threads=1"),
    "model": ("tab (wllama, no lookup) @ 0 ms", "pace=0&lookup_first=0&threads=1"),  # the model's drafts alone
}


def tab_rows(
    model: Path,
    tmp: Path,
    slowdown: float = 8.0,
    workload: str = "chat",
    tokens: int = 64,
    rounds: int = 1,
    runs: tuple[str, ...] = ("plain", "wllama", "default"),
    page_extra: str = "",
    idle_type: str = "",
) -> list[dict[str, Any]]:
    """coop_bench rows for an exact `slowdown`x twin of `model`: plain, and the tab as its scout
    (`runs`: which of RUNS; plain first, the others are compared with it). `page_extra`: more of
    the page's URL options (web-scout/src/main.ts), e.g. `chunk=4`. `idle_type` (e.g. BF16): the
    twin's idle layers are zero matrices of that type, each costing more than a copied layer (see
    layer_cost), so slowdowns past what 512 copied layers give (~7.6x) are reachable."""
    import gguf

    layers = int(gguf.GGUFReader(str(model)).fields["llama.block_count"].contents())
    if idle_type:
        per_layer = layer_cost(model, tmp, idle_type)
        print(f"an idle {idle_type} layer costs {per_layer:.4f} native steps (measured)", file=sys.stderr)
    else:
        per_layer = 0.0137  # as coop_bench: step time ~ 0.59 + 0.0137 x layers
    # llama.cpp refuses more than 512 layers
    idle = min(max(1, round((slowdown - 1) / per_layer)), MAX_LAYERS - layers)
    if idle == MAX_LAYERS - layers and 1 + per_layer * idle < slowdown:
        print(
            f"{slowdown:.1f}x is out of reach in {MAX_LAYERS} layers: about {1 + per_layer * idle:.1f}x",
            file=sys.stderr,
        )
    twin = write_twin(model, tmp / f"tab-exact-{slowdown:g}.gguf", idle, idle_type=idle_type)
    estimate = 1 + per_layer * idle if idle_type else 0.59 + 0.0137 * (layers + idle)
    oracle_name = f"exact {estimate:.1f}x{f' ({idle} idle {idle_type} layers)' if idle_type else ''}, browser tab"
    prompts = WORKLOADS[workload]
    rows: list[dict[str, Any]] = []
    reference: list[str] = []
    native = native_speed(model, prompts, tokens)
    print(f"SmolLM2 natively (llama.cpp, 1 thread, CPU 0): {native:.2f} tok/s", file=sys.stderr, flush=True)
    configs: list[tuple[str, list[str], str | None]] = []
    for run in ("plain", *[r for r in runs if r != "plain"]):
        name, page = RUNS[run]
        flags = ["--no-lookup"] if page is None else ["--no-lookup", "--draft-model", str(model), *NET]
        configs.append((name, flags, page if page is None or not page_extra else f"{page}&{page_extra}"))
    for name, flags, page in configs:
        run_tmp = tmp / name.split(" ")[0].replace("(", "") / str(len(rows))
        with on_cpu(0):
            node = start_node(
                twin, run_tmp, "--parallel", "1", "--threads", "1", *flags, sidecar=page is not None, ready_timeout=600
            )
        browser = None
        try:
            if page is not None:
                node.wait_sidecar(300)
                with on_cpu(1):
                    browser = BrowserScout(f"{node.url}/scout/?{page}", run_tmp / "chromium.log")
                wait_for(
                    lambda: (
                        browser is not None
                        and browser.state.get("connected")
                        and browser.state["drafter"]["loaded"]
                        and any("scout" in p["roles"] for p in node.get("/v1/system/peers")["peers"])
                    ),
                    300,
                    "the tab to connect, load its drafter and shake hands",
                )
                drafter = browser.state["drafter"]
                print(f"{name}: the tab drafts with {drafter['name']} ({drafter['kind']})", file=sys.stderr)
            texts, row = measure(node, prompts, tokens, rounds)
            if browser is not None:
                s = browser.state
                print(
                    f"{name}: page: work {s['work']['received']}, progress {s['sessions']['progress']}, "
                    f"drafts {s['drafts']['sent']} (highest seq {s['sessions']['maxSeq']}), "
                    f"accepted {s['accepted']} of {s['proposed']}, verdicts {s['verdicts']}, "
                    f"model {s['drafter']['tokensPerSecond']} tok/s, Oracle {s['oracleTokensPerSecond']} tok/s; "
                    f"{page_timing(s)}",
                    file=sys.stderr,
                )
                row["tab_tps"] = s["drafter"]["tokensPerSecond"]
                row["timeline"] = s.get("timeline") or []
        finally:
            if browser is not None:
                browser.stop()
            node.stop()
        if name == "plain":
            reference = texts
        rows.append({"oracle": oracle_name, "run": name, **row, "same": texts == reference, "native": native})
        print(f"{oracle_name} / {name}: {row['speed']:.2f} tok/s", file=sys.stderr, flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cache = Path(os.environ.get("SHARD_TEST_DATA", Path.home() / ".cache" / "shard" / "test-data"))
    ap.add_argument("--model", type=Path, default=models.default_model_path(cache), help="the draft model (SmolLM2)")
    ap.add_argument("--slowdown", type=float, default=8.0, help="the Oracle twin is about this many times slower")
    ap.add_argument(
        "--idle-type",
        default="",
        help="the twin's idle layers as zero matrices of this type (BF16: each ~2x a Q8_0 layer, 7 MB), "
        "for Oracles slower than 512 copied layers give; '' copies SmolLM2's layers",
    )
    ap.add_argument(
        "--vs-tab",
        type=float,
        default=0.0,
        help="aim the twin at this many times slower than the tab drafts (--tab-tps): overrides --slowdown",
    )
    ap.add_argument(
        "--tab-tps",
        type=float,
        default=0.0,
        help="the tab's drafting speed (tok/s; e2e/wllama-speed.mjs or a tab row's 'model' figure) for --vs-tab",
    )
    ap.add_argument("--workload", choices=sorted(WORKLOADS), default="chat")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--quant", default="Q8_0", help="rewrite SmolLM2 as this type first, as coop_bench does ('': keep)")
    ap.add_argument("--runs", default="plain,wllama,default", help=f"rows to run, of {','.join(RUNS)}")
    ap.add_argument("--page", default="", help="more of the tab page's URL options, e.g. 'chunk=4&follow_pace=0'")
    ap.add_argument("--timeline", type=Path, help="write each tab row's page timeline (JSON) here")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="shard-coop-tab-"))
    try:
        model = args.model
        if args.quant:
            from twin_gguf import requantize

            model = requantize(model, tmp / f"smollm2-{args.quant}.gguf", args.quant)
        runs = tuple(r for r in args.runs.split(",") if r)
        slowdown = args.slowdown
        if args.vs_tab:
            if args.tab_tps <= 0:
                ap.error("--vs-tab needs --tab-tps")
            # the Oracle at tab_tps / vs_tab; its slowdown vs native from SmolLM2's own speed here
            slowdown = native_speed(model, WORKLOADS[args.workload], args.tokens) * args.vs_tab / args.tab_tps
            print(f"aiming at {slowdown:.1f}x slower than native ({args.vs_tab:g}x the tab)", file=sys.stderr)
        rows = tab_rows(model, tmp, slowdown, args.workload, args.tokens, args.rounds, runs, args.page, args.idle_type)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.timeline:
        args.timeline.write_text(json.dumps({r["run"]: r.get("timeline", []) for r in rows}))
    plain, native = rows[0]["speed"], rows[0]["native"]
    print(
        f"\nOracle: {rows[0]['oracle'].split(',')[0]} twin of SmolLM2-135M {args.quant or 'Q4_1'} (1 thread, CPU 0); "
        f"scout: the web scout page in headless Chromium (CPU 1), wllama 1 thread with the Oracle's draft model "
        f"(SmolLM2); workload {args.workload}, {args.tokens} tokens x {args.rounds} round(s) x 3 prompts, greedy\n"
        f"Measured: SmolLM2 natively {native:.2f} tok/s; "
        f"the Oracle plain {plain:.2f} tok/s, {native / plain:.1f}x slower"
        + (f" ({args.tab_tps / plain:.1f}x slower than the tab's {args.tab_tps:g} tok/s given)" if args.tab_tps else "")
        + "".join(
            f"; {r['run']}: the tab drafted at {r['tab_tps']} tok/s, {r['tab_tps'] / plain:.2f}x the Oracle's plain "
            f"speed (the Oracle {r['tab_tps'] / plain:.1f}x slower than the tab), {native / r['tab_tps']:.1f}x "
            "slower than native"
            for r in rows[1:]
            if r.get("tab_tps")
        )
        + "\n"
    )
    print("| run | tok/s | vs plain | acceptance | tokens per step | scout's share of accepted | same text |")
    print("|---|---|---|---|---|---|---|")

    def pct(v: object) -> str:
        return f"{v:.0%}" if isinstance(v, float) else "-"

    for r in rows:
        tps = r["tokens_per_step"]
        print(
            f"| {r['run']} | {r['speed']:.2f} | {r['speed'] / plain:.2f}x | {pct(r['acceptance'])} | "
            f"{f'{tps:.2f}' if tps else '-'} | {pct(r['scout_share'])} | {'yes' if r['same'] else 'NO'} |"
        )


if __name__ == "__main__":
    main()
