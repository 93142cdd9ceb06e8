"""The drafting policy's ceiling, without the network: a real Oracle (a twin of SmolLM2, as in
bench/coop_bench.py) and a real scout model (SmolLM2) in one process, the scout's draft handed to
the engine after every step, and the time each step would take read off the Oracle's measured
verify-cost curve (frozen after calibration, so that the policy and the figure do not move with this
machine's load). It separates what the policy makes of a scout's drafts from what the network and
the processes cost: coop_bench.py's real runs reach a part of the ceiling printed here.

  --lag        the scout knows the Oracle's tokens one step late (its draft is made from where the
               Oracle stood before its last step): what a real scout's news costs it, at best
  --no-confidence  drafts state no confidence: each is checked as far as the scout's one rate pays

    .venv/bin/python bench/coop_model.py [--twin noisy|exact] [--slowdown 4] [--lag] [--no-confidence] [--idle-type F32]

Prints, per prompt: steps, draft tokens checked and kept, the modelled time and the modelled
speed-up against plain decoding (every token its own one-token step); then the confidence bins'
measured rates. Greedy; the scout drafts 16 tokens per step.
"""

from __future__ import annotations

import argparse
import os
import queue
import shutil
import tempfile
from pathlib import Path
from typing import Any

from coop_bench import IDLE_LAYER_COST, WORKLOADS, oracles_for
from shard import models
from shard.scout.headless import LlamaDrafter
from shard.verifier.engine import Engine, ExternalDraft, Job
from shard.verifier.model import Model, ModelOptions
from shard.verifier.protocol import Sampling

DRAFT_TOKENS = 16


def run(engine: Engine, drafter: LlamaDrafter, prompt: str, tokens: int, lag: bool, confidence: bool) -> dict[str, Any]:
    """One request with a scout drafting after every step; the modelled time from the step sizes."""
    ids = engine.model.tokenize(engine.model.render_chat([{"role": "user", "content": prompt}]))
    events: queue.Queue[dict[str, Any]] = queue.Queue()
    sizes: list[int] = []
    observe = engine.curve.observe
    engine.curve.observe = lambda n, seconds: sizes.append(n)  # type: ignore[method-assign]
    before: list[int] | None = None
    job: Job | None = None

    def emit(event: dict[str, Any]) -> None:
        nonlocal before
        if event["type"] == "token" and job is not None:  # runs on the engine thread, before its next step
            known = before if lag and before is not None else list(job.tokens)
            before = list(job.tokens)
            guess, stated = drafter.extend(known, DRAFT_TOKENS)
            draft = ExternalDraft(len(known), guess, lambda *a: None, source="model")
            draft.confidence = stated if confidence else None
            job.inbox.append(draft)
        events.put(event)

    job = Job(prompt=ids, params=Sampling(temperature=0.0), emit=emit, max_tokens=tokens)
    counters = dict(engine.counters)
    engine.submit(job)
    while events.get(timeout=600)["type"] != "end":
        pass
    engine.curve.observe = observe  # type: ignore[method-assign]
    done = {k: engine.counters[k] - counters[k] for k in counters}
    decode = sizes[1:]  # the first step is the prompt
    modelled = sum(engine.curve.cost(n) for n in decode)
    plain = done["tokens_generated"] * engine.curve.cost(1)
    return {**done, "modelled_s": modelled, "speedup": plain / modelled if modelled else 0.0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cache = Path(os.environ.get("SHARD_TEST_DATA", Path.home() / ".cache" / "shard" / "test-data"))
    ap.add_argument("--model", type=Path, default=models.default_model_path(cache), help="the scout's model (SmolLM2)")
    ap.add_argument("--twin", choices=("exact", "noisy"), default="noisy")
    ap.add_argument("--slowdown", type=float, default=4.0)
    ap.add_argument("--noise", type=float, default=0.1, help="as coop_bench.py's")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--lag", action="store_true")
    ap.add_argument("--no-confidence", action="store_true")
    ap.add_argument("--idle-type", default="", choices=sorted(IDLE_LAYER_COST), help="as coop_bench.py's")
    args = ap.parse_args()
    os.sched_setaffinity(0, {0})  # one core, as the Oracle's in coop_bench.py (the drafter waits its turn)
    tmp = Path(tempfile.mkdtemp(prefix="shard-coop-model-"))
    try:
        from twin_gguf import requantize

        model = requantize(args.model, tmp / "smollm2-Q8_0.gguf", "Q8_0")
        oracles = oracles_for(model, tmp, [args.slowdown], args.noise, {args.twin}, args.idle_type)
        twin = next(path for name, path in oracles if name.startswith(args.twin))
        engine = Engine(Model(ModelOptions(str(twin), n_ctx=1024, parallel=1, n_threads=1)))
        drafter = LlamaDrafter(model, n_ctx=1024, n_threads=1)
        print(f"{args.twin} {args.slowdown:g}x twin, lag {args.lag}, confidence {not args.no_confidence}")
        print(f"verify cost (ms): {engine.curve.table()}")
        print("| prompt | steps | checked | kept | modelled s | modelled speed-up |\n|---|---|---|---|---|---|")
        for prompt in WORKLOADS["chat"]:
            r = run(engine, drafter, prompt, args.tokens, args.lag, not args.no_confidence)
            print(
                f"| {prompt[:32]} | {r['steps']} | {r['external_proposed']} | {r['external_accepted']} | "
                f"{r['modelled_s']:.2f} | {r['speedup']:.2f}x |"
            )
        bins = {k: [round(b.rate, 2) for b in v.bins] for k, v in engine.calibration.items()}
        print(f"confidence bins (<40, 40-59, 60-79, 80-94, >=95): {bins}")
        engine.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
