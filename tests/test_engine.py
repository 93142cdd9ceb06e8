"""The verifier's engine on real llama.cpp models: batched verification never changes the output
(right, wrong and random drafts give exactly the greedy text), slots serve side by side, stops
and grammars hold, and bad input is refused before it reaches llama.cpp."""

from __future__ import annotations

import json
import queue
import random
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from policy_helpers import CPU, FreeChecks, curve
from shard.verifier.engine import Engine, EngineError, Job
from shard.verifier.lookup import PromptLookup
from shard.verifier.model import Model, ModelOptions
from shard.verifier.model_file import ModelLoadError
from shard.verifier.policy import Acceptance
from shard.verifier.protocol import Sampling

GREEDY = Sampling(temperature=0.0)


@pytest.fixture(scope="module")
def engine(tiny_model: Path) -> Iterator[Engine]:
    eng = Engine(Model(ModelOptions(str(tiny_model), n_ctx=512, parallel=3)))
    eng.curve = FreeChecks()  # these tests are about what checking does: let every draft be checked
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def smol_engine(smollm2: Path) -> Iterator[Engine]:
    eng = Engine(Model(ModelOptions(str(smollm2), n_ctx=1024, parallel=2)))
    eng.curve = FreeChecks()
    yield eng
    eng.close()


def run(engine: Engine, timeout: float = 60, **kw: Any) -> dict[str, Any]:
    events: queue.Queue[dict[str, Any]] = queue.Queue()
    job = Job(emit=events.put, **kw)
    engine.submit(job)
    text, ids = [], []
    while True:
        e = events.get(timeout=timeout)
        if e["type"] == "token":
            text.append(e["text"])
            ids += e["ids"]
        elif e["type"] == "error":
            raise AssertionError(e["message"])
        elif e["type"] == "end":
            return {
                "text": "".join(text),
                "ids": ids,
                "tokens": e["tokens"],
                "reason": e["finish_reason"],
                "usage": e["usage"],
            }


def verify(engine: Engine, context: list[int], draft: list[int], sampling: Sampling = GREEDY) -> list[int]:
    return run(engine, prompt=context, params=sampling, draft=draft, max_steps=1)["tokens"]


def greedy_reference(engine: Engine, prompt: list[int], n: int) -> list[int]:
    return run(engine, prompt=prompt, params=GREEDY, max_tokens=n)["tokens"]


def test_verify_keeps_longest_accepted_prefix_plus_one(engine: Engine) -> None:
    prompt = engine.model.tokenize("the quick brown fox")
    ref = greedy_reference(engine, prompt, 12)
    assert len(ref) == 12
    # A right draft: all accepted, plus the target's next token.
    assert verify(engine, prompt, ref[:5]) == ref[:6]
    # A draft wrong at position 2: the first two kept, then the target's own token.
    wrong = ref[:2] + [(ref[2] + 1) % engine.model.n_vocab] + ref[3:6]
    assert verify(engine, prompt, wrong) == ref[:3]
    # No draft is plain decoding of one token.
    assert verify(engine, prompt, []) == ref[:1]
    # After a rejected draft the KV cache was rolled back: continuing from the accepted text
    # gives the reference again.
    assert verify(engine, prompt + ref[:3], ref[3:8]) == ref[3:9]


@pytest.mark.parametrize("kind", ["right", "wrong", "random", "adversarial"])
def test_generation_through_verify_equals_plain_greedy(engine: Engine, kind: str) -> None:
    """Verify, don't trust: decode only through verify() calls with drafts of every kind."""
    rng = random.Random(kind)
    prompt = engine.model.tokenize("once upon a time there was a")
    ref = greedy_reference(engine, prompt, 40)
    out: list[int] = []
    while len(out) < len(ref):
        pos = len(out)
        k = rng.randint(1, 8)
        if kind == "right":
            draft = ref[pos : pos + k]
        elif kind == "wrong":
            draft = [(t + 1) % engine.model.n_vocab for t in ref[pos : pos + k]]
        elif kind == "random":
            draft = [rng.randrange(engine.model.n_vocab) for _ in range(k)]
        else:  # right for a while, then a trap: the token most likely to be confused
            draft = ref[pos : pos + k - 1] + [ref[min(pos + k, len(ref) - 1)]]
        out += verify(engine, prompt + out, draft)
    assert out[: len(ref)] == ref


def test_seeded_sampling_is_the_same_with_and_without_drafts(engine: Engine) -> None:
    """With temperature > 0 a draft is a fixed guess: the draw at each position depends only on the
    logits and the seed, so a seeded request comes out the same whether drafts were offered or not."""
    prompt = engine.model.tokenize("a b c")
    params = Sampling(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=1234)
    plain = run(engine, prompt=prompt, params=params, max_tokens=30)["tokens"]
    assert plain != greedy_reference(engine, prompt, 30)  # it really sampled
    drafted = run(
        engine, prompt=prompt, params=params, max_tokens=30, draft_source=_Oracle(len(prompt), plain, wrong_every=3)
    )
    assert drafted["tokens"] == plain
    assert drafted["usage"]["draft_accepted"] > 0


class _Oracle:
    """A drafter that knows the answer but lies now and then."""

    def __init__(self, prompt_len: int, answer: list[int], wrong_every: int) -> None:
        self.prompt_len, self.answer, self.wrong_every, self.calls = prompt_len, answer, wrong_every, 0

    def propose(self, tokens: list[int], limit: int) -> list[int]:
        self.calls += 1
        pos = len(tokens) - self.prompt_len
        draft = self.answer[pos : pos + min(limit, 4)]
        if draft and self.calls % self.wrong_every == 0:
            draft[len(draft) // 2] = (draft[len(draft) // 2] + 7) % 50
        return draft

    def feedback(self, proposed: int, accepted: int) -> None:
        pass


def test_parallel_jobs_all_complete_without_cutting_each_other(engine: Engine) -> None:
    prompts = [engine.model.tokenize(t) for t in ("alpha beta", "gamma delta epsilon", "zeta")]
    solo = [greedy_reference(engine, p, 30) for p in prompts]
    results: list[dict[str, Any]] = [{}] * 3

    def worker(i: int) -> None:
        results[i] = run(engine, prompt=prompts[i], params=GREEDY, max_tokens=30)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert [r["reason"] for r in results] == ["length"] * 3
    assert [len(r["tokens"]) for r in results] == [30] * 3
    matches = sum(r["tokens"] == s for r, s in zip(results, solo))
    assert matches >= 2, "batched decoding should give the solo result (up to float rounding in rare ties)"


def test_prompt_cache_reuses_a_shared_prefix(engine: Engine) -> None:
    prompt = engine.model.tokenize("the same long prefix " * 10)
    run(engine, prompt=prompt, params=GREEDY, max_tokens=2)
    again = run(engine, prompt=prompt + engine.model.tokenize(" and more"), params=GREEDY, max_tokens=2)
    assert again["usage"]["cached_tokens"] >= len(prompt) - 1


def test_stop_string_and_max_tokens(engine: Engine) -> None:
    prompt = engine.model.tokenize("hello")
    full = run(engine, prompt=prompt, params=GREEDY, max_tokens=30)
    assert full["reason"] == "length" and full["usage"]["completion_tokens"] == 30
    stop = full["text"][5:8]
    cut = run(engine, prompt=prompt, params=GREEDY, max_tokens=30, stop=[stop])
    assert cut["reason"] == "stop"
    assert cut["text"] == full["text"][: full["text"].index(stop)]


def test_bad_jobs_are_refused_before_llama_cpp(engine: Engine) -> None:
    with pytest.raises(EngineError, match="empty"):
        engine.submit(Job(prompt=[], params=GREEDY, emit=lambda e: None))
    with pytest.raises(EngineError, match="context holds 512"):
        engine.submit(Job(prompt=[5] * 600, params=GREEDY, emit=lambda e: None))
    with pytest.raises(EngineError, match="out of range"):
        engine.submit(Job(prompt=[1, 10**7], params=GREEDY, emit=lambda e: None))
    # the engine still works
    assert len(greedy_reference(engine, engine.model.tokenize("ok"), 3)) == 3


def test_cancel_frees_the_slot(engine: Engine) -> None:
    events: queue.Queue[dict[str, Any]] = queue.Queue()
    job = Job(prompt=engine.model.tokenize("x"), params=GREEDY, emit=events.put, max_tokens=400)
    engine.submit(job)
    while events.get(timeout=30)["type"] != "token":
        pass
    engine.cancel(job)
    while (e := events.get(timeout=30))["type"] != "end":
        pass
    assert e["finish_reason"] == "cancelled" and len(e["tokens"]) < 400
    assert engine.load()["active"] == 0


def test_not_a_model_is_a_clear_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"this is not a model at all" * 100)
    with pytest.raises(ModelLoadError, match="not a GGUF model file"):
        Model(ModelOptions(str(junk)))
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\x00" * 10)
    with pytest.raises(ModelLoadError, match="could not load"):
        Model(ModelOptions(str(truncated)))
    with pytest.raises(ModelLoadError, match="not found"):
        Model(ModelOptions(str(tmp_path / "missing.gguf")))


def test_smollm2_json_grammar_and_drafted_greedy_equality(smol_engine: Engine) -> None:
    model = smol_engine.model
    prompt = model.tokenize(
        model.render_chat([{"role": "user", "content": "Describe a cat as JSON with name and age."}])
    )
    from llama_cpp.llama_grammar import JSON_GBNF

    out = run(smol_engine, prompt=prompt, params=Sampling(temperature=0.0, grammar=JSON_GBNF), max_tokens=80)
    assert out["reason"] == "stop"
    assert isinstance(json.loads(out["text"]), dict)
    # Prompt lookup drafting on an edit task gives exactly the greedy text, with drafts accepted.
    text = "The cat sat on the mat. The dog sat on the log. The bird sat on the branch."
    edit = model.tokenize(model.render_chat([{"role": "user", "content": f"Repeat this text exactly: {text}"}]))
    plain = run(smol_engine, prompt=edit, params=GREEDY, max_tokens=40)
    drafted = run(smol_engine, prompt=edit, params=GREEDY, max_tokens=40, draft_source=PromptLookup())
    assert drafted["tokens"] == plain["tokens"]
    assert drafted["usage"]["draft_accepted"] > 0


class _Liar:
    """A drafter that always has a guess, and the guess is always wrong (a token never generated)."""

    def __init__(self, token: int) -> None:
        self.token, self.offered = token, 0

    def propose(self, tokens: list[int], limit: int) -> list[int]:
        self.offered += 1
        return [self.token] * min(limit, 8)

    def feedback(self, proposed: int, accepted: int) -> None:
        pass


@pytest.fixture(scope="module")
def smol4(smollm2: Path) -> Iterator[Engine]:
    eng = Engine(Model(ModelOptions(str(smollm2), n_ctx=256, parallel=4)))
    yield eng
    eng.close()


def _side_by_side(engine: Engine, jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = [{} for _ in jobs]

    def worker(i: int) -> None:
        results[i] = run(engine, **jobs[i])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return results


def test_a_full_batch_of_missing_drafts_stops_drafting(smol4: Engine) -> None:
    """Four streams whose drafter is always wrong: after a few steps nothing more is checked (the
    verifier's counters show the drafts offered but not checked), and the output is unchanged."""
    model = smol4.model
    prompts = [
        model.tokenize(model.render_chat([{"role": "user", "content": c}]))
        for c in ("Tell me about cats.", "Write a poem about rain.", "What is a CPU?", "Name three rivers.")
    ]
    plain = _side_by_side(smol4, [dict(prompt=p, params=GREEDY, max_tokens=48) for p in prompts])
    before = dict(smol4.counters)
    checked_midway: list[int] = []

    def watch(events: queue.Queue[dict[str, Any]]) -> Any:
        def emit(e: dict[str, Any]) -> None:
            if (
                e["type"] == "token"
                and not checked_midway
                and smol4.counters["tokens_generated"] - before["tokens_generated"] >= 4 * 16
            ):
                checked_midway.append(smol4.counters["draft_proposed"])
            events.put(e)

        return emit

    # This CPU's curve as measured on a quiet machine (STACK-NOTES), so that a busy machine does not
    # decide the test; and a history of good drafts, so the liars' first drafts are checked.
    smol4.curve = curve(CPU)
    smol4.acceptance["lookup"] = Acceptance(0.95)
    liars = [_Liar(model.n_vocab - 1) for _ in prompts]
    jobs = [dict(prompt=p, params=GREEDY, max_tokens=48, draft_source=d) for p, d in zip(prompts, liars)]
    results: list[dict[str, Any]] = [{} for _ in jobs]

    def worker(i: int) -> None:
        events: queue.Queue[dict[str, Any]] = queue.Queue()
        job = Job(emit=watch(events), **jobs[i])
        smol4.submit(job)
        while (e := events.get(timeout=120))["type"] != "end":
            assert e["type"] != "error", e
        results[i] = e

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert [r["tokens"] for r in results] == [p["tokens"] for p in plain]
    offered = smol4.counters["draft_offered"] - before["draft_offered"]
    checked = smol4.counters["draft_proposed"] - before["draft_proposed"]
    assert offered >= 4 * 8 * 30  # the drafter kept offering...
    assert (
        checked_midway and smol4.counters["draft_proposed"] == checked_midway[0]
    )  # ...nothing checked after a few steps
    assert 0 < checked <= 4 * 8 * 3  # checked at first, for a few steps at most
    assert smol4.counters["draft_accepted"] == before["draft_accepted"]


def test_a_single_stream_with_good_drafts_still_drafts(smol4: Engine) -> None:
    model = smol4.model
    text = "The cat sat on the mat. The dog sat on the log. The bird sat on the branch. The fish swam in the pond."
    prompt = model.tokenize(model.render_chat([{"role": "user", "content": f"Repeat this text exactly: {text}"}]))
    plain = run(smol4, prompt=prompt, params=GREEDY, max_tokens=40)
    smol4.curve = curve(CPU)
    drafted = run(smol4, prompt=prompt, params=GREEDY, max_tokens=40, draft_source=PromptLookup())
    assert drafted["tokens"] == plain["tokens"]
    assert drafted["usage"]["draft_accepted"] >= 10  # much of the answer came from checked drafts


def test_start_measures_the_cost_curve_and_keeps_only_used_kv_memory(smollm2: Path) -> None:
    """4 slots x 2048 tokens of SmolLM2 is 180 MiB of KV cache that llama.cpp allocates and clears
    at once: the engine gives back the pages nothing uses yet, and generation still works."""
    proc = psutil.Process()
    model = Model(ModelOptions(str(smollm2), n_ctx=2048, parallel=4))
    rss = proc.memory_info().rss
    eng = Engine(model)
    try:
        assert eng.curve.known() and eng.curve.cost(1) > 0
        assert eng.released_bytes > 170 * 2**20
        assert proc.memory_info().rss - rss < 60 * 2**20
        prompt = model.tokenize("The capital of France is")
        assert run(eng, prompt=prompt, params=GREEDY, max_tokens=8)["usage"]["completion_tokens"] == 8
    finally:
        eng.close()
