"""Verify, don't trust, for drafts from outside the verifier (scouts): whatever drafts arrive while a
generation runs (right, stale, random, adversarial, for old positions), greedy output is exactly
the plain output, and sampled output keeps the target model's distribution."""

from __future__ import annotations

import asyncio
import contextlib
import math
import queue
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policy_helpers import CPU, FreeChecks, curve
from shard.scout.headless import LlamaDrafter
from shard.verifier.engine import EXTERNAL_PRIOR, Engine, ExternalDraft, Job
from shard.verifier.model import Model, ModelOptions
from shard.verifier.protocol import Sampling

GREEDY = Sampling(temperature=0.0)
N = 24


@pytest.fixture(scope="module")
def engine(tiny_model: Path) -> Iterator[Engine]:
    eng = Engine(Model(ModelOptions(str(tiny_model), n_ctx=512, parallel=2)))
    eng.curve = FreeChecks()  # these tests are about what checking does: let every draft be checked
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def reference(engine: Engine) -> tuple[list[int], list[int]]:
    prompt = engine.model.tokenize("one two three four")
    return prompt, _run(engine, Job(prompt=prompt, params=GREEDY, emit=lambda e: None, max_tokens=N))["tokens"]


def _run(engine: Engine, job: Job, on_token: Any = None) -> dict[str, Any]:
    events: queue.Queue[dict[str, Any]] = queue.Queue()

    def emit(e: dict[str, Any]) -> None:
        if e["type"] == "token" and on_token is not None:
            on_token(job)  # runs on the engine thread, before its next step: a draft "arriving" mid-run
        events.put(e)

    job.emit = emit
    engine.submit(job)
    while True:
        e = events.get(timeout=60)
        if e["type"] == "error":
            raise AssertionError(e["message"])
        if e["type"] == "end":
            return {"tokens": e["tokens"], "usage": e["usage"]}


@contextlib.contextmanager
def flat_cost_curve(engine: Engine) -> Iterator[None]:
    """A fixed, GPU-like cost curve (each draft token 10% of a step), this machine's timings aside."""
    saved = engine.curve
    engine.curve = fixed = curve({n: 0.010 * (1 + 0.1 * (n - 1)) for n in CPU})
    fixed.observe = lambda n, seconds: None  # type: ignore[method-assign]
    try:
        yield
    finally:
        engine.curve = saved


class Verdicts:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seen: list[tuple[int, int, str]] = []

    def done(self, proposed: int, accepted: int, outcome: str) -> None:
        with self.lock:
            self.seen.append((proposed, accepted, outcome))


# A draft "kind" and where it starts relative to the generation's current end (0: now, -k: k back).
draft_kinds = st.tuples(
    st.sampled_from(["right", "random", "adversarial", "garbage_prefix"]),
    st.integers(min_value=-6, max_value=0),
    st.integers(min_value=1, max_value=10),
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=st.lists(draft_kinds, min_size=1, max_size=12), seed=st.integers(0, 2**16))
def test_any_external_drafts_leave_greedy_output_unchanged(
    engine: Engine, reference: tuple[list[int], list[int]], plan: list[tuple[str, int, int]], seed: int
) -> None:
    prompt, ref = reference
    answer = prompt + ref
    rng = np.random.default_rng(seed)
    verdicts = Verdicts()
    steps = iter(plan)
    handed = [1]

    def make(kind: str, back: int, length: int, have: int) -> ExternalDraft:
        pos = max(len(prompt), have + back)
        truth = answer[pos : pos + length]
        if kind == "right":
            tokens = truth or [1]
        elif kind == "random":
            tokens = [int(t) for t in rng.integers(0, engine.model.n_vocab, length)]
        elif kind == "adversarial":  # right but for one token: the most tempting lie
            tokens = list(truth) or [1]
            tokens[len(tokens) // 2] = (tokens[len(tokens) // 2] + 1) % engine.model.n_vocab
        else:  # disagrees with what was generated before its start: must be dropped as stale
            tokens = [(answer[pos - 1] + 1) % engine.model.n_vocab] + list(truth)
            pos -= 1
        return ExternalDraft(pos, tokens, verdicts.done)

    def arrive(job: Job) -> None:
        step = next(steps, None)
        if step is not None:
            handed[0] += 1
            job.inbox.append(make(*step, have=len(job.tokens)))

    job = Job(prompt=prompt, params=GREEDY, emit=lambda e: None, max_tokens=N)
    job.inbox.append(make(*plan[0], have=len(prompt)))
    out = _run(engine, job, on_token=arrive)
    assert out["tokens"] == ref
    # Every draft got exactly one verdict, and a verdict never claims more than was proposed.
    assert len(verdicts.seen) == handed[0]
    assert all(0 <= a <= p for p, a, _ in verdicts.seen)
    assert {o for *_, o in verdicts.seen} <= {"verified", "stale", "missed", "finished"}


def test_right_external_drafts_are_accepted_and_counted(engine: Engine, reference: tuple[list[int], list[int]]) -> None:
    prompt, ref = reference
    verdicts = Verdicts()
    job = Job(prompt=prompt, params=GREEDY, emit=lambda e: None, max_tokens=N)
    job.inbox.append(ExternalDraft(len(prompt), ref[:10], verdicts.done))
    out = _run(engine, job)
    assert out["tokens"] == ref
    assert verdicts.seen == [(10, 10, "verified")]
    # Scouts' drafts are not the verifier's own (lookup) drafts: usage does not count them.
    assert out["usage"]["draft_proposed"] == 0


def test_a_draft_for_an_older_position_is_reconciled(engine: Engine, reference: tuple[list[int], list[int]]) -> None:
    """A draft made when the generation was 3 tokens back still helps with what is new in it."""
    prompt, ref = reference
    verdicts = Verdicts()
    sent = []

    def arrive(job: Job) -> None:
        have = len(job.tokens) - len(prompt)
        if not sent and have >= 4:
            sent.append(have)
            job.inbox.append(ExternalDraft(len(prompt) + have - 3, ref[have - 3 : have + 6], verdicts.done))

    out = _run(engine, Job(prompt=prompt, params=GREEDY, emit=lambda e: None, max_tokens=N), on_token=arrive)
    assert out["tokens"] == ref
    proposed, accepted, outcome = verdicts.seen[0]
    assert outcome == "verified" and proposed == 6 and accepted == 6  # the 3 old tokens were skipped


def test_a_drafting_session_ahead_of_the_generation(engine: Engine, reference: tuple[list[int], list[int]]) -> None:
    """A scout drafting ahead: after every step it sends its guess again as it grew (from a position
    one token behind, as a progress message would have left it, then longer from the same place),
    several drafts waiting at once. The newest that fits is checked, the others answered stale; the
    output is the plain output, in fewer steps than tokens."""
    prompt, ref = reference
    answer = prompt + ref
    verdicts = Verdicts()
    handed = [0]

    def send(job: Job, start: int, length: int) -> None:
        handed[0] += 1
        job.inbox.append(ExternalDraft(start, answer[start : start + length], verdicts.done, source="session"))

    def arrive(job: Job) -> None:
        start = max(len(prompt), len(job.tokens) - 1)  # the scout heard of the last token late
        for length in (2, 4, 8):  # the guess growing while the Oracle decodes
            send(job, start, length)

    job = Job(prompt=prompt, params=GREEDY, emit=lambda e: None, max_tokens=N)
    send(job, len(prompt), 4)
    out = _run(engine, job, on_token=arrive)
    assert out["tokens"] == ref
    assert len(verdicts.seen) == handed[0]
    checked = [(p, a) for p, a, o in verdicts.seen if o == "verified" and p]
    assert checked and all(a == p for p, a in checked)  # the guess was right: all of it kept
    assert any(o == "stale" for *_, o in verdicts.seen)  # superseded by the grown guess, never checked
    assert out["usage"]["completion_tokens"] == N and len(checked) < N // 2  # many tokens per step


def test_a_scout_whose_drafts_all_miss_stops_being_checked(
    engine: Engine, reference: tuple[list[int], list[int]]
) -> None:
    """The double-dip rule's floor: a scout that is always wrong costs a few checks, then none. The
    engine keeps each source's acceptance across jobs, so the next requests do not check it again
    (with a flat, GPU-like cost curve, where even a fair guess would pay)."""
    prompt, ref = reference
    answer = prompt + ref
    with flat_cost_curve(engine):
        checked: list[int] = []
        for _ in range(4):
            verdicts = Verdicts()

            def wrong(job: Job) -> None:
                have = len(job.tokens)
                bad = [(t + 1) % engine.model.n_vocab for t in answer[have : have + 4]] or [1]
                job.inbox.append(ExternalDraft(have, bad, verdicts.done, source="always-wrong"))

            job = Job(prompt=prompt, params=GREEDY, emit=lambda e: None, max_tokens=N)
            wrong(job)
            assert _run(engine, job, on_token=wrong)["tokens"] == ref
            checked.append(sum(1 for p, *_ in verdicts.seen if p))
        assert checked[0] <= 10, checked  # a handful of misses, then its drafts are not admitted
        assert sum(checked[1:]) <= 1, checked  # the next jobs remember it (one exploration check at most)


def test_a_late_draft_that_guessed_the_past_wrong_is_a_miss(
    engine: Engine, reference: tuple[list[int], list[int]]
) -> None:
    """A scout's draft that arrives after the generation passed its start, and disagrees with
    what was generated, was a wrong guess: answered "missed" (not a mere "stale"), and counted
    against its sender's acceptance as a checked miss would be, so that the drafts of a scout whose
    guesses are always wrong are not checked when one does come in time (measured: an all-wrong
    scout's drafts were all "stale", ~1.5 per token, and never counted against it)."""
    prompt, ref = reference
    verdicts = Verdicts()
    before = engine.acceptance.get("external:late-and-wrong")
    assert before is None
    sent = [False]

    def late_wrong(job: Job) -> None:
        have = len(job.tokens)
        if not sent[0] and have >= len(prompt) + 3:  # made for 3 tokens back, first guess wrong
            sent[0] = True
            bad = [(ref[0] + 1) % engine.model.n_vocab, *ref[1:6]]
            job.inbox.append(ExternalDraft(len(prompt), bad, verdicts.done, source="late-and-wrong"))

    job = Job(prompt=prompt, params=GREEDY, emit=lambda e: None, max_tokens=N)
    assert _run(engine, job, on_token=late_wrong)["tokens"] == ref
    assert verdicts.seen == [(0, 0, "missed")]
    assert engine.acceptance["external:late-and-wrong"].rate < EXTERNAL_PRIOR  # lowered from where a new scout starts


def test_sampling_with_drafts_keeps_the_target_distribution(engine: Engine) -> None:
    """Temperature 0.4, no truncation: over many seeds, the first sampled token with an adversarial
    draft follows the target's softmax (chi-square test), and equals the draw without drafts."""
    prompt = engine.model.tokenize("seven eight")
    temperature = 0.4  # sharp enough that several tokens carry real mass
    params = dict(temperature=temperature, top_k=0, top_p=1.0, min_p=0.0)
    logits = _first_logits(engine, prompt)
    p = np.exp((logits - logits.max()) / temperature)
    p /= p.sum()
    mode = int(p.argmax())  # the adversary always proposes the likeliest token: a claimed q = p
    n = 800
    counts: Counter[int] = Counter()
    for seed in range(n):
        sampling = Sampling(**params, seed=seed)
        drafted = Job(prompt=prompt, params=sampling, emit=lambda e: None, max_tokens=1)
        drafted.inbox.append(ExternalDraft(len(prompt), [mode, mode], lambda *a: None))
        if seed % 2:  # a drafting session: the guess sent again as it grew, the newest checked
            drafted.inbox.append(ExternalDraft(len(prompt), [mode, mode, mode], lambda *a: None, source="session"))
        tok = _run(engine, drafted)["tokens"][0]
        counts[tok] += 1
        if seed < 40:  # the draw is the same as without the draft
            assert (
                _run(engine, Job(prompt=prompt, params=sampling, emit=lambda e: None, max_tokens=1))["tokens"][0] == tok
            )
    # Chi-square over bins with expected count >= 5 (the rest pooled).
    order = np.argsort(-p)
    bins, rest_p, rest_c = [], 0.0, 0
    for t in order:
        if p[t] * n >= 5:
            bins.append((p[t] * n, counts[int(t)]))
        else:
            rest_p += p[t]
            rest_c += counts[int(t)]
    bins.append((rest_p * n, rest_c))
    chi2 = sum((obs - exp) ** 2 / exp for exp, obs in bins if exp > 0)
    df = len(bins) - 1
    assert df >= 3, "the test distribution is too flat to test anything"
    critical = df + 3.1 * math.sqrt(2 * df)  # about the 0.1% upper tail for these df
    assert chi2 < critical, f"chi2 {chi2:.1f} over {df} df: the drafted samples do not follow the target"
    assert counts[mode] < n * (p[mode] + 0.1)  # the adversary did not pull the mass its way


def _first_logits(engine: Engine, prompt: list[int]) -> np.ndarray:
    """The target's logits after the prompt, from llama.cpp directly (a separate context)."""
    from llama_cpp import Llama

    llm = Llama(model_path=engine.model.options.path, n_ctx=128, logits_all=True, verbose=False)
    llm.eval(prompt)
    out = np.array(llm.scores[len(prompt) - 1], dtype=np.float64)
    llm.close()
    return out


def test_a_paced_draft_is_checked_only_up_to_its_limit(engine: Engine, reference: tuple[list[int], list[int]]) -> None:
    prompt, ref = reference
    verdicts = Verdicts()
    job = Job(prompt=prompt, params=GREEDY, emit=lambda e: None, max_tokens=N)
    job.inbox.append(ExternalDraft(len(prompt), ref[:10], verdicts.done, limit=3))
    assert _run(engine, job)["tokens"] == ref
    assert verdicts.seen == [(3, 3, "verified")]


def test_scout_pace_follows_acceptance_and_rests_after_misses() -> None:
    from shard.coop.generator import MAX_DRAFT, _Pace

    p = _Pace()
    p.update(4, 4)
    assert p.limit == 8 and p.rest == 0
    p.update(8, 8)
    p.update(16, 16)
    assert p.limit == MAX_DRAFT
    p.update(16, 2)  # a partial verdict halves the length (a 70% scout's runs vary from 0 to 10)
    assert p.limit == 8
    p.update(8, 5)
    assert p.limit == 6  # never below what was kept, plus one
    p.update(6, 0)  # nothing accepted after a hit: forgiven (its next draft is its corrected guess)
    assert (p.limit, p.rest) == (3, 0)
    p.update(3, 0)  # again: the next draft rests, then 2, then 4 ...
    assert (p.limit, p.rest) == (1, 1)
    p.rest = 0
    p.update(1, 0)
    assert p.rest == 2
    p.rest = 0
    p.update(1, 1)  # one hit: forgiven
    assert p.backoff == 0 and p.limit == 2
    p.missed()  # a miss (late and wrong): forgiven once, its length kept
    assert (p.limit, p.rest) == (2, 0)
    p.missed()
    assert (p.limit, p.rest, p.backoff) == (2, 1, 2)


def test_local_scouts_draft_only_while_measured_to_pay() -> None:
    """No double-dip: with scouts on this machine, requests are tried with and without them; the
    faster way is kept, the other probed one request in PROBE_EVERY."""
    from shard.coop.local_gate import PROBE_EVERY, LocalGate

    gate = LocalGate()
    assert gate.use_local() is True  # first tried with them
    gate.record(True, 65, 8.0)  # 8 tokens/s with the local scout (it takes the Oracle's cores)
    assert gate.use_local() is False  # then measured without
    gate.record(False, 65, 6.4)  # 10 tokens/s on its own: the scout does not pay
    ways = [gate.use_local() for _ in range(2 * PROBE_EVERY)]
    assert ways.count(True) == 2  # only the probes use it
    for _ in range(10):  # the workload changes: now its drafts are mostly accepted
        gate.record(True, 65, 3.2)
    assert [gate.use_local() for _ in range(PROBE_EVERY)].count(True) == PROBE_EVERY - 1


async def test_the_verifier_hands_a_scouts_drafts_to_the_engine_under_its_name(
    engine: Engine, reference: tuple[list[int], list[int]], aiohttp_client: Any
) -> None:
    """The engine learns each scout's acceptance across jobs by its name (`ExternalDraft.source`):
    a draft posted to the verifier's /draft must keep the sender the node named, else every scout
    is one anonymous "external" source that starts each request trusted again (an all-wrong scout
    then gets checked at the start of every request)."""
    from shard.verifier.model import ModelOptions
    from shard.verifier.server import VerifierState, create_app

    state = VerifierState(ModelOptions("unused"), token="t")
    state.engine, state.model, state.status = engine, engine.model, "ready"
    prompt, ref = reference
    job = Job(prompt=prompt, params=GREEDY, emit=lambda e: None, max_tokens=N)
    job.tokens = list(prompt)
    state.jobs[job.id] = job  # a running generation, as far as /draft can tell
    client = await aiohttp_client(create_app(state))
    body = {"job": job.id, "position": len(prompt), "tokens": ref[:3], "source": "12D3KooWscout"}
    posted = asyncio.ensure_future(client.post("/draft", json=body, headers={"Authorization": "Bearer t"}))
    for _ in range(200):
        if job.inbox:
            break
        await asyncio.sleep(0.01)
    ext = job.inbox.popleft()
    assert (ext.tokens, ext.source, ext.key) == (ref[:3], "12D3KooWscout", "external:12D3KooWscout")
    ext.done(3, 3, "verified")
    assert (await (await posted).json())["accepted"] == 3


def test_a_resting_scout_session_does_not_draft_until_the_oracle_moved_on() -> None:
    """A scout told its drafts are of no use rests: it neither sends nor runs its model for the
    next `rest` steps of the Oracle (progress messages), so a useless scout stops costing CPU
    (measured: an all-wrong scout kept drafting flat out on its core, and on a shared machine
    that load lands on the Oracle's core: 0.80x plain in the paired bench)."""
    from shard.network.messages import Work
    from shard.scout.headless import DraftSession

    work = Work(work_id="k.1", model="m", context="a b", position=2, max_draft=16, deadline_ms=0, tokens=[5, 6])
    s = DraftSession(oracle="o", work=work, exact=True, confirmed=[5, 6], position=2)
    assert s.drafting()
    s.standing.rest = 2
    assert not s.drafting()
    s.advance([7], "", None)
    assert not s.drafting()
    s.advance([8], "", None)
    assert s.drafting() and s.rest == 0


def test_one_wrong_guess_counts_once_however_many_late_drafts_carry_it(
    engine: Engine, reference: tuple[list[int], list[int]]
) -> None:
    """A scout drafting ahead sends its guess again as it grows: every draft sent before it heard of
    the token its guess got wrong carries that same mistake, at the same place. It is one miss
    (measured: counted once per late draft, a noisy twin's 70% scout read far lower and was never
    checked again: "unpaid" after two proposed tokens in a whole run)."""
    from shard.verifier.policy import Acceptance

    prompt, ref = reference
    verdicts = Verdicts()
    sent = [False]

    def late_and_wrong_three_times(job: Job) -> None:
        if not sent[0] and len(job.tokens) >= len(prompt) + 5:
            sent[0] = True
            wrong = (ref[2] + 1) % engine.model.n_vocab
            for length in (3, 4, 5):  # right twice, then wrong at the same place, growing
                draft = [*ref[:2], wrong, *ref[3:length]]
                job.inbox.append(ExternalDraft(len(prompt), draft, verdicts.done, source="wrong-once"))

    job = Job(prompt=prompt, params=GREEDY, emit=lambda e: None, max_tokens=N)
    assert _run(engine, job, on_token=late_and_wrong_three_times)["tokens"] == ref
    assert verdicts.seen == [(0, 0, "missed")] * 3
    once = Acceptance(EXTERNAL_PRIOR)
    once.record(2, True)
    assert engine.acceptance["external:wrong-once"].rate == pytest.approx(once.rate)


def test_a_draft_that_states_its_confidence_is_checked_up_to_its_unsure_token(
    engine: Engine, reference: tuple[list[int], list[int]]
) -> None:
    """A scout's draft with each token's confidence: where the source's tokens stated that unsure
    have been measured to miss, the check stops before the first of them, however sure the rest;
    the same draft without confidence is checked whole (measured: one rate for all tokens cut a 77%
    scout's drafts to 3 tokens through runs of 30 sure ones, and checked its unsure ones as far)."""
    from shard.verifier.policy import Calibration

    prompt, ref = reference
    learned = engine.calibration["external:states"] = Calibration(EXTERNAL_PRIOR)
    for _ in range(20):  # what its unsure tokens (stated 10%) did so far: missed; its sure ones (99%): kept
        learned.record([99, 99, 10], 2, True)
    verdicts = Verdicts()
    job = Job(prompt=prompt, params=GREEDY, emit=lambda e: None, max_tokens=N)
    job.inbox.append(
        ExternalDraft(len(prompt), ref[:8], verdicts.done, source="states", confidence=[99, 99, 99, 10, 99, 99, 99, 99])
    )
    assert _run(engine, job)["tokens"] == ref
    assert verdicts.seen == [(3, 3, "verified")]  # the three sure tokens, not the unsure one nor past it
    verdicts = Verdicts()
    job = Job(prompt=prompt, params=GREEDY, emit=lambda e: None, max_tokens=N)
    job.inbox.append(ExternalDraft(len(prompt), ref[:8], verdicts.done, source="states"))
    assert _run(engine, job)["tokens"] == ref
    assert verdicts.seen == [(8, 8, "verified")]


def test_a_scout_that_claims_certainty_for_wrong_guesses_gets_them_checked_no_further(
    engine: Engine, reference: tuple[list[int], list[int]]
) -> None:
    """A liar states 100% for every token of its wrong guesses, to have long drafts checked: its
    100% is read at what it measured, so after a couple of misses none of its tokens is worth a
    check beyond one now and then (on a curve where a trusted 100% has all 4 checked at every step)."""
    prompt, ref = reference
    answer = prompt + ref
    with flat_cost_curve(engine):
        verdicts = Verdicts()

        def lie(job: Job) -> None:
            have = len(job.tokens)
            bad = [(t + 1) % engine.model.n_vocab for t in answer[have : have + 4]] or [1]
            job.inbox.append(ExternalDraft(have, bad, verdicts.done, source="liar", confidence=[100] * len(bad)))

        job = Job(prompt=prompt, params=GREEDY, emit=lambda e: None, max_tokens=N)
        lie(job)
        assert _run(engine, job, on_token=lie)["tokens"] == ref
        checked = [p for p, *_ in verdicts.seen if p]
        assert len(verdicts.seen) >= N // 2 and sum(checked) <= 16, verdicts.seen  # trusted: 4 a step, 80 or more


def test_a_scout_with_the_oracles_own_model_drafts_the_verifiers_greedy_text(smollm2: Path) -> None:
    """The scout computes attention as the verifier does (flash attention): computed the other way,
    SmolLM2's greedy text from the drafter parted from the verifier's within 0-24 tokens on these
    prompts, and an exact pair (the twins of bench/coop_bench.py) disagreed where tokens nearly tie."""
    engine = Engine(Model(ModelOptions(str(smollm2), n_ctx=512, parallel=1, n_threads=1)))
    drafter = LlamaDrafter(smollm2, n_ctx=512, n_threads=1)
    try:
        for text in ("What are three good habits for staying healthy?", "Explain how a bicycle works in simple terms."):
            prompt = engine.model.tokenize(engine.model.render_chat([{"role": "user", "content": text}]))
            done = _run(engine, Job(prompt=prompt, params=GREEDY, emit=lambda e: None, max_tokens=48))
            guess, _ = drafter.extend(prompt, 48)
            assert guess == done["tokens"], f"{text!r}: the drafter's text parts from the verifier's"
    finally:
        engine.close()
