"""Cooperative generation benchmark on realistic pairs: an Oracle that is a slower twin of SmolLM2
(bench/twin_gguf.py: idle layers, so the same logits, N times slower: "exact"; or layers that add
a little, so its text drifts from SmolLM2's and a SmolLM2 scout's acceptance falls: "noisy"), and a
headless scout (`shard scout`) drafting with SmolLM2 itself. Per Oracle, through `shard serve`:
  plain            no drafting at all (--no-lookup, no sidecar)
  lookup           the verifier's own prompt-lookup drafter, no sidecar
  scout @ D ms     a drafting session with one scout (no lookup), D ms of added round trip
  scout+lookup     both (the default setup), at the first latency
  all-wrong scout  a scout whose model guesses wrong every time (SmolLM2 with scrambled embeddings,
                   same tokenizer), no lookup: what a useless scout costs
Latency comes from bench/delay_proxy.py between the scout and the Oracle (this kernel has no netem).
The Oracle is pinned to CPU 0 and the scout to CPU 1 (taskset), one decode thread each.
Models: SmolLM2 is first rewritten as Q8_0 (--quant; ggml checks a batch of draft tokens of a
Q8_0/Q4_0/Q4_K model with tiled kernels, as for a real Oracle's file, where Q4_1 costs nearly a
step per token), and the scout, the twins and the all-wrong scout are all made from that file.
Per row, each of --repeats runs (every prompt once) timed on its own: tokens/s (completion tokens /
wall time, non-streamed; the mean and each run), ratio to plain and to lookup, acceptance (accepted
/ checked draft tokens, all sources), mean accepted length (accepted tokens per verify step that
checked a draft), tokens per verify step, the share of steps that checked a scout's draft, the
scout drafts answered "stale" (made for a past the Oracle did not take, or with nothing new), and
the scout's share of accepted draft tokens; for plain rows, the measured ratio of the scout's
model's plain speed to the Oracle's (the twins' idle layers aim at the nominal slowdown, the table
says what it was). Each row's raw counters and the Oracle's verify-cost curve go to stderr.
The noisy twins' teacher-forced agreement with SmolLM2 (bench/twin_agreement.py) is 79% at the
default --noise 0.1 (4x twin: 71 / 75 / 92% on the three chat prompts), 76% at 0.2.

    .venv/bin/python bench/coop_bench.py --quick       # 2x/4x/8x, exact and noisy, 20 ms, 2 runs per row
    .venv/bin/python bench/coop_bench.py [--slowdowns 2,4,8] [--noise 0.1] [--latencies 0,20,50] [--tokens 64]
        [--repeats 2] [--quant Q8_0] [--tab 8]   (--tab: the browser tab's rows, bench/coop_tab.py)
    .venv/bin/python bench/coop_bench.py --quick --idle-type F32 ...   (twins whose idle layers are F32:
        one thread streams them from memory, so checking a batch of tokens costs less than on Q8_0 layers,
        as on a big Oracle)
    .venv/bin/python bench/coop_bench.py --quick --busy-core ...   (also: each row against plain timed while
        SmolLM2 decodes on the scout's CPU, bench/busy_core.py; on the plain row, plain idle over plain busy)
    COOP_BENCH_DEBUG=1 .venv/bin/python bench/coop_bench.py --quick --logs DIR ...
        (keeps each run's Oracle and scout logs; the scout's log has each drafting session's timeline:
        progress received, drafts sent, verdicts, in ms since the session began; the Oracle's, each
        decode's tokens and time and each check of a scout's draft: tokens offered, their confidence,
        tokens checked and kept)

Greedy decoding everywhere; every run's texts are checked equal to plain's (drafts never change
the output). Needs the sidecar built (`bash scripts/setup`).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

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
# An idle layer's share of SmolLM2's (Q8_0, 30 layers) one-token step, measured: 219 idle layers made
# plain decoding 6.46x slower (43.7 -> 6.8 tok/s, quiet machine), not the 4x that 0.0137 assumed.
# The table prints each twin's measured ratio to the scout's model; this only aims the twins at it.
# Constants, not measured per run: the number of idle layers sets a noisy twin's text (its noise is
# spread over them), so a twin measured afresh each run would be another pair each time.
IDLE_LAYER_COST = {"": 0.0249, "F32": 0.060}  # by idle layers' type ("": copies of SmolLM2's Q8_0 layers)
NET = ("--control-port", "0", "--tcp-port", "0", "--p2p-host", "127.0.0.1", "--no-mdns")


def wait(check: Callable[[], T], timeout: float = 300.0, what: str = "") -> T:
    return wait_for(check, timeout, what)


def pin(cpu: int) -> list[str]:
    """taskset onto one CPU, where there are two or more and taskset exists."""
    if shutil.which("taskset") and len(os.sched_getaffinity(0)) > 1:
        return ["taskset", "-c", str(cpu % len(os.sched_getaffinity(0)))]
    return []


def metric(base: str, name: str) -> float:
    text = requests.get(base + "/metrics", timeout=5).text
    total = 0.0
    for m in re.finditer(rf"^{re.escape(name)}(?:{{[^}}]*}})? ([0-9.e+-]+)$", text, re.M):
        total += float(m.group(1))
    return total


class Run:
    def __init__(
        self,
        name: str,
        model: Path,
        tmp: Path,
        threads: int,
        flags: list[str],
        scout: Path | None,
        latency_ms: float = 0.0,
    ) -> None:
        self.name, self.port, self.latency_ms = name, free_port(), latency_ms
        self.proxy: subprocess.Popen[bytes] | None = None
        self.base = f"http://127.0.0.1:{self.port}"
        data = self.data = tmp / f"data-{name.replace(' ', '-').replace(',', '').replace('@', 'at')}"
        self.log = (tmp / f"{model.stem}-{data.name}.log").open("wb")
        env = {
            **os.environ,
            "SHARD_CONFIG": str(tmp / "none.toml"),
            "SHARD_RATE_LIMIT_PER_MINUTE": "100000",
            "SHARD_LOCAL_SCOUT_GATE": "0",  # the scout stands for one on its own machine (its own core here)
            # Golden tickets (the Oracle's own check requests after a real one, coop/golden.py) would run
            # during the timed runs of the scout rows only (plain has no scouts): one was seen in a row's
            # counters (64 prompt tokens, 142 generated for 128 asked). They cost the Oracle, not drafting.
            "SHARD_GOLDEN_RATE": "0",
        }
        self.proc = subprocess.Popen(
            [
                *pin(0),
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
                *(["--log-level", "DEBUG"] if os.environ.get("COOP_BENCH_DEBUG") and scout else []),
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
        wait(
            lambda: requests.get(self.base + "/health", timeout=2).status_code == 200,
            900,  # an 8x twin is 2.3 GB (Q8_0): on a loaded machine, loading and calibrating took over 300 s
            f"{name} to load",
        )
        if scout:
            wait(
                lambda: (
                    requests.get(self.base + "/v1/system/status", timeout=2).json()["sidecar"]["state"] == "running"
                ),
                what="the sidecar",
            )
            topo = requests.get(self.base + "/v1/system/topology", timeout=5).json()
            addr = next(a for a in topo["listen_addrs"] if "/tcp/" in a and "/ws" not in a)
            if self.latency_ms:  # the scout reaches the Oracle through a delaying forwarder
                port, via = int(addr.split("/tcp/")[1].split("/")[0]), free_port()
                self.proxy = subprocess.Popen(
                    [
                        sys.executable,
                        str(ROOT / "bench" / "delay_proxy.py"),
                        str(via),
                        f"127.0.0.1:{port}",
                        str(self.latency_ms),
                    ]
                )
                addr = addr.replace(f"/tcp/{port}/", f"/tcp/{via}/")
                time.sleep(0.5)
            self.scout = subprocess.Popen(
                [
                    *pin(1),
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
                    *(["--log-level", "DEBUG"] if os.environ.get("COOP_BENCH_DEBUG") else []),
                    "--pair",  # paired with the Oracle, as a user pairs their scout (else "local" privacy refuses it)
                    (self.data / "pair.key").read_text().strip(),
                    *NET,
                ],
                stdout=(tmp / f"scout-{model.stem}-{self.data.name}.log").open("wb"),
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

    def counters(self) -> dict[str, float]:
        return dict(self.info().get("counters") or {})

    def info(self) -> dict[str, Any]:
        return dict(requests.get(self.base + "/v1/system/status", timeout=5).json().get("model_info") or {})

    def stop(self) -> None:
        for p in (self.scout, self.proc, self.proxy):
            if p is not None:
                stop(p, 30)


def ignored_by_reason(base: str) -> dict[str, float]:
    """The Oracle's scout drafts not checked, by reason (stale, resting, unpaid, ...)."""
    text = requests.get(base + "/metrics", timeout=5).text
    return {
        m.group(1): float(m.group(2))
        for m in re.finditer(r'^shard_drafts_ignored_total\{reason="([^"]*)"\} ([0-9.e+-]+)$', text, re.M)
    }


def oracles_for(
    model: Path, tmp: Path, slowdowns: list[float], noise: float, twins: set[str], idle_type: str = ""
) -> list[tuple[str, Path]]:
    """SmolLM2 itself (the scout's own speed), then per slowdown its exact twin and (noise > 0) its
    noisy one, those of `twins`; `idle_type`: their idle layers' type (twin_gguf.py, IDLE_LAYER_COST)."""
    from twin_gguf import write_twin  # beside this script (its folder is on sys.path when run)

    per_layer = IDLE_LAYER_COST[idle_type]
    oracles = [("SmolLM2 itself", model)]
    kind = f", {idle_type} idle layers" if idle_type else ""
    for x in slowdowns:
        idle = max(1, round((x - 1) / per_layer))
        if "exact" in twins:
            twin = write_twin(model, tmp / f"exact-{x:g}.gguf", idle, idle_type=idle_type)
            oracles.append((f"exact {x:g}x{kind}", twin))
        if noise and "noisy" in twins:
            # the same total drift for every slowdown: the noise is spread over the idle layers
            twin = write_twin(model, tmp / f"noisy-{x:g}.gguf", idle, noise=noise * 30 / idle, idle_type=idle_type)
            oracles.append((f"noisy {x:g}x{kind}", twin))
    return oracles


Config = tuple[str, list[str], "Path | None", float]


def configs_for(oracle: Path, args: argparse.Namespace, wrong: Path, latencies: list[float]) -> list[Config]:
    """The rows measured for one Oracle (only plain for SmolLM2 itself)."""
    configs: list[Config] = [("plain", ["--no-lookup", "--no-sidecar"], None, 0.0)]
    if oracle == args.model:
        return configs
    skip = set(args.skip.split(","))
    if "lookup" not in skip:
        configs.append(("lookup", ["--no-sidecar"], None, 0.0))
    if "scout" not in skip:
        configs += [(f"scout @ {d:g} ms", ["--no-lookup", *NET], args.model, d) for d in latencies]
    if "scout+lookup" not in skip:
        configs.append((f"scout+lookup @ {latencies[0]:g} ms", list(NET), args.model, latencies[0]))
    if "all-wrong" not in skip:
        configs.append((f"all-wrong scout @ {latencies[0]:g} ms", ["--no-lookup", *NET], wrong, latencies[0]))
    return configs


def speed_of(run: Run, prompts: list[str], tokens: int, texts: list[str]) -> float:
    """tok/s over every prompt once (texts appended)."""
    n_all, dt_all = 0, 0.0
    for p in prompts:
        text, n, dt = run.complete(p, tokens)
        texts.append(text)
        n_all, dt_all = n_all + n, dt_all + dt
    return n_all / dt_all


class BusyCore:
    """bench/busy_core.py on the scout's CPU, paused (SIGSTOP) except while plain is timed beside it."""

    def __init__(self, model: Path) -> None:
        self.proc = subprocess.Popen(
            [*pin(1), sys.executable, str(ROOT / "bench" / "busy_core.py"), str(model)], stdout=subprocess.PIPE
        )
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != b"ready":
            raise RuntimeError(f"bench/busy_core.py could not load {model}")
        self.proc.send_signal(signal.SIGSTOP)

    def speed_beside(self, run: Run, prompts: list[str], tokens: int) -> float:
        self.proc.send_signal(signal.SIGCONT)
        try:
            return speed_of(run, prompts, tokens, [])
        finally:
            self.proc.send_signal(signal.SIGSTOP)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGCONT)
        stop(self.proc, 10)


def measure(
    run: Run, prompts: list[str], tokens: int, repeats: int, partner: Run | None = None, busy: BusyCore | None = None
) -> dict[str, object]:
    """Each repeat runs every prompt once; tok/s per repeat, counters over all of them. With a
    `partner` (plain, on the same Oracle file and core, idle meanwhile), each repeat runs it
    right before: the ratio of the two is measured under the same load (this machine's load moves
    tok/s by tens of percent from one minute to the next). With `busy`, each repeat also times
    plain (the partner, or the plain row itself) while busy_core.py decodes on the scout's CPU."""
    run.complete(prompts[0], 8)  # warm-up (and the scout's first session)
    before, ignored_before = run.counters(), ignored_by_reason(run.base)
    speeds: list[float] = []
    ratios: list[float] = []
    busy_ratios: list[float] = []
    texts: list[str] = []
    for _ in range(repeats):
        base = speed_of(partner, prompts, tokens, []) if partner is not None else 0.0
        busy_base = busy.speed_beside(partner or run, prompts, tokens) if busy is not None else 0.0
        speeds.append(speed_of(run, prompts, tokens, texts))
        if base:
            ratios.append(speeds[-1] / base)
        if busy_base:
            busy_ratios.append(speeds[-1] / busy_base)
    after, ignored_after = run.counters(), ignored_by_reason(run.base)
    d = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    ignored = {k: v - ignored_before.get(k, 0) for k, v in ignored_after.items()}
    proposed = d.get("draft_proposed", 0) + d.get("external_proposed", 0)
    accepted = d.get("draft_accepted", 0) + d.get("external_accepted", 0)
    checks = d.get("draft_checks", 0) + d.get("external_checks", 0)
    steps = d.get("steps", 0)
    return {
        "speeds": speeds,
        "speed": statistics.mean(speeds),
        "texts": texts,
        "acceptance": accepted / proposed if proposed else None,
        "mean_accepted": accepted / checks if checks else None,
        "tokens_per_step": d.get("tokens_generated", 0) / steps if steps else None,
        "scout_share": d.get("external_accepted", 0) / accepted if accepted else None,
        "scout_steps": d.get("external_checks", 0) / steps if steps else None,
        "stale": ignored.get("stale", 0),
        "ratios": ratios,
        "busy_ratios": busy_ratios,
        "detail": {
            "ignored": {k: v for k, v in ignored.items() if v},
            **{k: v for k, v in d.items() if v},
            "verify_cost_ms": run.info().get("verify_cost_ms"),
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cache = Path(os.environ.get("SHARD_TEST_DATA", Path.home() / ".cache" / "shard" / "test-data"))
    ap.add_argument("--model", type=Path, default=models.default_model_path(cache), help="the scout's model (SmolLM2)")
    ap.add_argument("--slowdowns", default="2,4,8", help="comma list: idle layers for about this many times slower")
    ap.add_argument(
        "--noise",
        type=float,
        default=0.1,  # 0.3 made SmolLM2's twin repeat itself (lookup then accepted 98%): no real pair does that
        help="the noisy twin's output scale for 30 idle layers, spread over its idle layers (0: no noisy twin)",
    )
    ap.add_argument("--twins", default="exact,noisy", help="comma list: which twins to measure (exact, noisy)")
    ap.add_argument(
        "--idle-type",
        default="",
        choices=sorted(IDLE_LAYER_COST),
        help="the twins' idle layers in this type (F32: a memory-bound Oracle; '': copies of SmolLM2's, Q8_0)",
    )
    ap.add_argument("--latencies", default="0,20,50", help="comma list of added round-trip ms for the scout")
    ap.add_argument("--workload", choices=sorted(WORKLOADS), default="chat")
    ap.add_argument("--tokens", type=int, default=None, help="completion tokens per request (64; --quick: 32)")
    ap.add_argument("--prompts", type=int, default=3, help="how many of the workload's prompts each repeat runs")
    ap.add_argument("--repeats", type=int, default=2, help="measurements per row (each: every prompt once)")
    ap.add_argument("--threads", type=int, default=1, help="the Oracle's decode threads (the scout gets 1 of its own)")
    ap.add_argument(
        "--skip", default="", help="comma list of row kinds to leave out (lookup, scout, scout+lookup, all-wrong)"
    )
    ap.add_argument(
        "--quick",
        action="store_true",
        help="small enough for a shared 2-core machine: 32 tokens, 1 prompt, 20 ms only, no scout+lookup row",
    )
    ap.add_argument(
        "--quant",
        default="Q8_0",
        help="rewrite SmolLM2 (and so the scout, the twins and the all-wrong scout) in this llama.cpp type first "
        "(Q8_0: ggml checks a batch of draft tokens with tiled kernels, as for real Oracles' Q4_K/Q8_0 files; "
        "'' keeps the Q4_1 file, whose batches cost nearly a step per token)",
    )
    ap.add_argument("--logs", type=Path, help="keep each run's Oracle and scout logs in this folder")
    ap.add_argument("--tab", type=float, default=0, help="add the browser tab's rows for a twin this many times slower")
    ap.add_argument(
        "--paired",
        action="store_true",
        help="keep plain running beside each other row and time them in turn: ratios under the same load",
    )
    ap.add_argument(
        "--busy-core",
        action="store_true",
        help="(implies --paired) also time plain while SmolLM2 decodes on the scout's CPU (bench/busy_core.py), "
        "the load a scout puts on a shared 2-core machine; column 'vs plain beside a busy core'",
    )
    args = ap.parse_args()
    if args.quick:
        args.tokens, args.prompts = args.tokens or 32, 1
        args.latencies = "20" if args.latencies == ap.get_default("latencies") else args.latencies
        args.skip = ",".join(x for x in (args.skip, "scout+lookup") if x)
    args.tokens = args.tokens or 64
    args.paired = args.paired or args.busy_core  # the busy core's timings are of the paired plain

    tmp = Path(tempfile.mkdtemp(prefix="shard-coop-bench-"))
    latencies = [float(x) for x in args.latencies.split(",") if x]
    prompts = WORKLOADS[args.workload][: max(1, args.prompts)]
    rows: list[dict[str, object]] = []
    busy: BusyCore | None = None
    try:
        if args.quant:
            from twin_gguf import requantize

            args.model = requantize(args.model, tmp / f"smollm2-{args.quant}.gguf", args.quant)
        wrong = write_scrambled(args.model, tmp)
        busy = BusyCore(args.model) if args.busy_core else None
        slowdowns = [float(v) for v in args.slowdowns.split(",") if v]
        for oracle_name, oracle in oracles_for(
            args.model, tmp, slowdowns, args.noise, set(args.twins.split(",")), args.idle_type
        ):
            reference: list[str] = []
            partner: Run | None = None  # --paired: plain, kept running beside the other rows
            try:
                for name, flags, scout, latency in configs_for(oracle, args, wrong, latencies):
                    run = Run(name, oracle, tmp, args.threads, flags, scout, latency)
                    try:
                        row = measure(run, prompts, args.tokens, args.repeats, partner, busy)
                    finally:
                        if args.paired and name == "plain":
                            partner = run
                        else:
                            run.stop()
                    report(row, oracle_name, name, reference, rows)
            finally:
                if partner is not None:
                    partner.stop()
        if args.tab:  # the browser tab as the scout (bench/coop_tab.py): its own twin, plain and the tab
            from coop_tab import tab_rows

            rows += tab_rows(args.model, tmp, args.tab, args.workload, args.tokens, args.repeats)
    finally:
        if busy is not None:
            busy.stop()
        if args.logs:  # each run's Oracle and scout logs (the scout's debug timeline: COOP_BENCH_DEBUG=1)
            args.logs.mkdir(parents=True, exist_ok=True)
            for log_file in tmp.glob("*.log"):
                shutil.copy(log_file, args.logs / log_file.name)
        shutil.rmtree(tmp, ignore_errors=True)
    print_table(rows, args, len(prompts))


def report(
    row: dict[str, object], oracle_name: str, name: str, reference: list[str], rows: list[dict[str, object]]
) -> None:
    """Check the row's texts against plain's (the first row of an Oracle sets `reference`), keep it."""
    if name == "plain":
        reference[:] = list(row["texts"])  # type: ignore[call-overload]
    row.update(oracle=oracle_name, run=name, same=row.pop("texts") == reference)
    rows.append(row)
    runs = " / ".join(f"{v:.2f}" for v in row["speeds"])  # type: ignore[attr-defined]
    paired = " / ".join(f"{v:.2f}" for v in row["ratios"])  # type: ignore[attr-defined]
    busy = " / ".join(f"{v:.2f}" for v in row["busy_ratios"])  # type: ignore[attr-defined]
    print(
        f"{oracle_name} / {name}: {runs} tok/s, paired {paired}, beside a busy core {busy} {row.pop('detail')}",
        file=sys.stderr,
        flush=True,
    )


def write_scrambled(model: Path, tmp: Path) -> Path:
    from twin_gguf import write_twin

    return write_twin(model, tmp / "all-wrong.gguf", 0, scramble=True)


def print_table(rows: list[dict[str, object]], args: argparse.Namespace, n_prompts: int) -> None:
    print(
        f"\nScout SmolLM2-135M {args.quant or 'Q4_1'}; Oracles: its twins; workload {args.workload}, "
        f"{args.tokens} tokens x "
        f"{n_prompts} prompt(s) per run, {args.repeats} runs per row, greedy, 1 slot, "
        f"Oracle {args.threads} thread(s) on CPU 0, scout 1 on CPU 1\n"
    )
    print(
        "| Oracle | run | tok/s (mean) | each run | vs plain | vs lookup | acceptance | mean accepted per check "
        "| tokens per step | steps checking a scout draft | stale scout drafts | scout's share of accepted "
        "| same text | scout's model / Oracle, plain (measured) | vs plain beside a busy core |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    base = {(r["oracle"], r["run"]): r["speed"] for r in rows}
    scout_speed = base.get(("SmolLM2 itself", "plain"))

    def pct(v: object) -> str:
        return f"{v:.0%}" if isinstance(v, float) else "-"

    def num(v: object) -> str:
        return f"{v:.2f}" if isinstance(v, float) else "-"

    for r in rows:
        speed = float(r["speed"])  # type: ignore[arg-type]
        plain = float(base[(r["oracle"], "plain")])  # type: ignore[arg-type]
        lookup = base.get((r["oracle"], "lookup"))
        vs_lookup = f"{speed / float(lookup):.2f}x" if lookup else "-"  # type: ignore[arg-type]
        runs = " / ".join(f"{v:.2f}" for v in r.get("speeds", [speed]))  # type: ignore[attr-defined]
        ratios: list[float] = r.get("ratios", [])  # type: ignore[assignment]  # the tab's rows are unpaired
        if ratios:  # --paired: each run against plain right before it
            runs += " (paired: " + " / ".join(f"{v:.2f}x" for v in ratios) + ")"
            plain = speed / statistics.mean(ratios)
        scouted = "scout" in str(r["run"])
        stale = f"{float(r['stale']):g}" if scouted and "stale" in r else "-"  # type: ignore[arg-type]
        busy_ratios: list[float] = r.get("busy_ratios", [])  # type: ignore[assignment]
        vs_busy = f"{statistics.mean(busy_ratios):.2f}x" if busy_ratios else "-"
        print(
            f"| {r['oracle']} | {r['run']} | {speed:.2f} | {runs} | {speed / plain:.2f}x | {vs_lookup} | "
            f"{pct(r['acceptance'])} | {num(r.get('mean_accepted'))} | {num(r['tokens_per_step'])} | "
            f"{pct(r.get('scout_steps')) if scouted else '-'} | {stale} | "
            f"{pct(r['scout_share'])} | {'yes' if r['same'] else 'NO'} | "
            f"{f'{float(scout_speed) / speed:.2f}x' if scout_speed and r['run'] == 'plain' else '-'} | {vs_busy} |"  # type: ignore[arg-type]
        )


if __name__ == "__main__":
    main()
