"""The generation loop: slots over one llama.cpp context, continuous batching, batched verification.

Each slot owns one KV sequence. Every step packs into ONE batch, for every active job, the tokens
not yet in its KV cache (a prompt chunk, or the last sampled token) followed by its draft tokens,
decodes once, and then walks each job's rows: choose the target's token at each position, keep
drafts while they equal it, stop at the first mismatch. Accepted prefix plus one token goes out;
the KV cache is cut back to what was accepted. With no drafts this is plain decoding, so drafting
can only add tokens per step, never change which tokens come out (see sampling.py for the seed).
Which drafts go into a step is policy.py's call: only the tokens whose expected gain beats what they
add to the step's cost, given every stream in the batch (a full batch of missing drafts drafts nothing).

Generation without drafts and `verify(context, draft)` are the same step, so there is one code path.
A check of a peer's text (`Job.expect`) is that step too, with the text as the draft: each token is
kept if an honest sampler could have chosen it (sampling.py's `admissible`), not only if it is the
one this engine would draw.
Jobs are served side by side; none is cut off when another arrives (llama_cpp.server does that).
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import llama_cpp
import numpy as np
from llama_cpp import _internals

from shard import errors
from shard.verifier.memory import anonymous_mappings, release_zero_pages
from shard.verifier.model import Model, default_threads
from shard.verifier.policy import (
    EXPLORE_EVERY,
    GROW_EVERY,
    SIZES,
    Acceptance,
    Calibration,
    CostCurve,
    Shadow,
    allot,
    calibrate,
)
from shard.verifier.protocol import Sampling
from shard.verifier.sampling import GrammarMask, TokenChooser
from shard.verifier.textstream import TextStream

log = logging.getLogger("shard.verifier.engine")
T = TypeVar("T")

MAX_DRAFT = 16
EXTERNAL_PRIOR = 0.9  # a scout drafts with a model of the same family: usually right at first
MAX_SOURCES = 256  # scouts whose acceptance the engine remembers across jobs (the oldest are forgotten)
MAX_ALTERNATIVES = 64  # admissible tokens tried against a checked text where its own tokenization is not one


class DraftSource(Protocol):
    def propose(self, tokens: list[int], limit: int) -> list[int]: ...

    def feedback(self, proposed: int, accepted: int) -> None: ...


@dataclass
class ExternalDraft:
    """A draft from outside the verifier (a scout), for the tokens from `position` on. It may have
    been made for an older position: it is used only if its start agrees with what was generated
    since. `done(proposed, accepted, outcome)` is called exactly once, from the engine thread."""

    position: int
    tokens: list[int]
    done: Callable[[int, int, str], None]
    limit: int = 0  # check at most this many new tokens of it (0: as many as fit)
    source: str = ""  # who drafted it: its acceptance is learned per source, across jobs
    confidence: list[int] | None = None  # per token, its drafter's stated probability (percent): see Calibration

    @property
    def key(self) -> str:
        return f"external:{self.source}" if self.source else "external"


@dataclass
class JobStats:
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    draft_proposed: int = 0
    draft_accepted: int = 0
    steps: int = 0
    queued_at: float = field(default_factory=time.monotonic)
    started_at: float = 0.0
    first_token_at: float = 0.0
    finished_at: float = 0.0


@dataclass
class Job:
    prompt: list[int]
    params: Sampling
    emit: Callable[[dict[str, Any]], None]
    max_tokens: int = 0  # 0: until the context is full
    stop: list[str] = field(default_factory=list)
    draft: list[int] = field(default_factory=list)  # offered once, at the first decode step
    draft_source: DraftSource | None = None
    max_steps: int = 0  # 0: no limit; verify() uses 1
    logprobs: int = -1  # -1: none; else each token's log-probability and this many alternatives
    # A check (POST /check): the bytes of a peer's text still to follow. The job follows it token by
    # token while each is one an honest sampler could have chosen; it ends "checked" when it has
    # followed all of it (or max_tokens of it), "mismatch" where no admissible token spells it on.
    expect: bytes | None = None
    # Drafts handed in while the job runs (scouts); appended from other threads (deque is atomic).
    inbox: deque[ExternalDraft] = field(default_factory=deque)
    id: int = field(default_factory=itertools.count(1).__next__)
    cancelled: bool = False
    # engine-owned state
    tokens: list[int] = field(default_factory=list)
    n_past: int = 0
    stats: JobStats = field(default_factory=JobStats)
    chooser: TokenChooser | None = None
    text: TextStream | None = None
    external: ExternalDraft | None = None  # the external draft in the current step, if any
    acceptance: dict[str, Acceptance] = field(default_factory=dict)  # per draft source ("lookup", "external:<id>")
    shadows: dict[str, Shadow] = field(default_factory=dict)  # per source, a proposal awaiting its score
    missed_at: dict[str, int] = field(default_factory=dict)  # per source, the position of its last miss counted


@dataclass
class Slot:
    seq_id: int
    cached: list[int] = field(default_factory=list)
    job: Job | None = None
    last_used: float = 0.0

    def running(self) -> Job:
        """The job in this slot, for the steps that only touch slots holding one."""
        if self.job is None:
            raise EngineError(f"slot {self.seq_id} holds no job")
        return self.job


class EngineError(Exception):
    pass


class PromptTooLong(EngineError, errors.ContextTooLong):
    """The prompt does not fit the context (its code tells the node so, across the process boundary)."""


class Engine:
    def __init__(self, model: Model) -> None:
        self.model = model
        opts = model.options
        self.n_ctx = opts.n_ctx
        self.n_batch = opts.n_batch
        threads = opts.n_threads or default_threads()
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = opts.n_ctx * opts.parallel
        params.n_batch = opts.n_batch
        params.n_ubatch = opts.n_batch
        params.n_seq_max = opts.parallel
        params.kv_unified = False  # each slot gets its own n_ctx
        params.n_threads = threads
        params.n_threads_batch = max(threads, _usable_cpus())
        params.no_perf = True
        mappings_before = anonymous_mappings()
        self.ctx = _internals.LlamaContext(model=model.model, params=params, verbose=False)
        self.batch = _internals.LlamaBatch(n_tokens=opts.n_batch, embd=0, n_seq_max=1, verbose=False)
        self.slots = [Slot(seq_id=i) for i in range(opts.parallel)]
        self.drafts_supported = not model.recurrent
        self._waiting: deque[Job] = deque()
        self._cond = threading.Condition()
        self._running = True
        self._last_decode = time.perf_counter()  # when the last decode ended (the debug timeline)
        self._rr = 0  # round-robin start, so prompt chunks share the batch fairly
        # *_offered: draft tokens a source offered; *_proposed: those the policy had checked.
        self.counters = {
            "tokens_generated": 0,
            "prompt_tokens": 0,
            "draft_proposed": 0,
            "draft_accepted": 0,
            "external_proposed": 0,
            "external_accepted": 0,
            "steps": 0,
            "draft_offered": 0,
            "external_offered": 0,
            "draft_checks": 0,  # steps that checked some of a lookup draft
            "external_checks": 0,  # ... of a scout's draft
        }
        # Engine-wide acceptance per source: where a new job's estimate starts. Prompt lookup's depends
        # on the kind of work; each scout's is its own record (a scout first heard of starts at
        # EXTERNAL_PRIOR), so a scout whose drafts keep missing is not checked again in the next job.
        self.acceptance = {"lookup": Acceptance(0.5)}
        self.calibration: dict[str, Calibration] = {}  # per scout that states its confidence
        # The KV cache was allocated for every slot's full context, and cleared: keep only what is
        # used (in host memory: a GPU's buffers are not ours to scan). At once, so the peak is brief.
        self.released_bytes = 0 if model.gpu_offload else release_zero_pages(mappings_before)
        self.curve = self._calibrate() if self.drafts_supported else CostCurve()
        self._thread = threading.Thread(target=self._loop, name="shard-engine", daemon=True)
        self._thread.start()

    # -- API used from other threads ------------------------------------------------------------

    def submit(self, job: Job) -> None:
        if not job.prompt:
            raise EngineError("the prompt is empty")
        if len(job.prompt) >= self.n_ctx:
            raise PromptTooLong(f"the prompt is {len(job.prompt)} tokens; the context holds {self.n_ctx}")
        bad = [t for t in itertools.chain(job.prompt, job.draft) if not self.model.valid_token(t)]
        if bad:
            raise EngineError(f"token ids out of range 0..{self.model.n_vocab - 1}: {bad[:5]}")
        grammar = GrammarMask(self.model.model, job.params.grammar) if job.params.grammar else None
        job.chooser = TokenChooser(job.params, grammar)
        job.text = TextStream(job.stop)
        job.tokens = list(job.prompt)
        job.stats.prompt_tokens = len(job.prompt)
        with self._cond:
            self._waiting.append(job)
            self._cond.notify()

    def cancel(self, job: Job) -> None:
        job.cancelled = True
        with self._cond:
            self._cond.notify()

    def load(self) -> dict[str, int]:
        with self._cond:
            return {
                "active": sum(1 for s in self.slots if s.job),
                "waiting": len(self._waiting),
                "slots": len(self.slots),
            }

    def close(self) -> None:
        with self._cond:
            self._running = False
            self._cond.notify()
        self._thread.join(timeout=10)

    def _calibrate(self) -> CostCurve:
        """The verify-cost curve, measured on slot 0's empty sequence before any job runs."""
        b = self.batch.batch
        seq = self.slots[0].seq_id

        def decode(k: int) -> None:
            for i in range(k):
                b.token[i] = i % self.model.n_vocab
                b.pos[i] = i
                b.n_seq_id[i] = 1
                b.seq_id[i][0] = seq
                b.logits[i] = True
            b.n_tokens = k
            llama_cpp.llama_decode(self.ctx.ctx, b)
            llama_cpp.llama_synchronize(self.ctx.ctx)  # decoding is asynchronous on a GPU
            llama_cpp.llama_memory_seq_rm(self.ctx.memory, seq, 0, -1)

        curve = calibrate(decode, tuple(k for k in SIZES if k <= self.n_batch))
        log.info("verify cost (ms per step by batch tokens): %s", curve.table())
        return curve

    # -- the loop ---------------------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._cond:
                while self._running and not self._waiting and not any(s.job for s in self.slots):
                    self._cond.wait()
                if not self._running:
                    break
                self._admit()
            try:
                self._step()
            except Exception as exc:  # never let one bad step kill the loop silently
                log.exception("engine step failed")
                for slot in self.slots:
                    if slot.job is not None:
                        self._finish(slot, "error", error=f"internal error: {exc}")
        for slot in self.slots:
            if slot.job is not None:
                self._finish(slot, "error", error="the verifier is shutting down")

    def _admit(self) -> None:
        while self._waiting:
            job = self._waiting[0]
            if job.cancelled:
                self._waiting.popleft()
                job.emit({"type": "end", "finish_reason": "cancelled", "usage": self._usage(job)})
                continue
            free = [s for s in self.slots if s.job is None]
            if not free:
                return
            self._waiting.popleft()
            slot = max(free, key=lambda s: (_common_prefix(s.cached, job.prompt), -s.last_used))
            keep = min(_common_prefix(slot.cached, job.prompt), len(job.prompt) - 1)
            if not self._truncate(slot, keep):
                keep = 0
            job.n_past = keep
            job.stats.cached_tokens = keep
            job.stats.started_at = time.monotonic()
            slot.job = job
            job.emit({"type": "start", "job": job.id, "prompt_tokens": len(job.prompt), "cached_tokens": keep})

    def _truncate(self, slot: Slot, keep: int) -> bool:
        """Drop the slot's KV cells from position `keep` on; recurrent models can only drop all."""
        ok = llama_cpp.llama_memory_seq_rm(self.ctx.memory, slot.seq_id, keep, -1)
        if not ok:
            llama_cpp.llama_memory_seq_rm(self.ctx.memory, slot.seq_id, 0, -1)
            slot.cached = []
            return False
        del slot.cached[keep:]
        return True

    def _step(self) -> None:
        active = [s for s in self.slots if s.job is not None]
        for slot in active:
            if slot.running().cancelled:
                self._finish(slot, "cancelled")
        active = [s for s in active if s.job is not None]
        if not active:
            return
        self._rr = (self._rr + 1) % len(active)
        active = active[self._rr :] + active[: self._rr]
        n = 0
        # slot, pending tokens, draft (None: a prompt chunk, no logits needed yet), draft source
        rows: list[tuple[Slot, list[int], list[int] | None, str]] = []
        for slot in active:
            job = slot.running()
            pending = job.tokens[job.n_past :]
            room = self.n_batch - n
            if room <= 0:
                break
            if len(pending) > room:
                rows.append((slot, pending[:room], None, ""))
                n += room
                continue
            offer, source = self._offer(job, room - len(pending))
            n += len(pending) + (len(offer) if source == "given" else 0)
            rows.append((slot, pending, offer, source))
        self._choose_drafts(rows, n)
        b = self.batch.batch
        n = 0
        plan: list[tuple[Slot, int, int, list[int] | None]] = []  # slot, first batch row, pending count, draft
        for slot, pending, draft, _ in rows:
            first = n
            for i, tok in enumerate(itertools.chain(pending, draft or ())):
                b.token[n] = tok
                b.pos[n] = slot.running().n_past + i
                b.n_seq_id[n] = 1
                b.seq_id[n][0] = slot.seq_id
                b.logits[n] = draft is not None and i >= len(pending) - 1
                n += 1
            plan.append((slot, first, len(pending), draft))
        b.n_tokens = n
        t0 = time.perf_counter()
        rc = llama_cpp.llama_decode(self.ctx.ctx, b)
        if rc == 0:
            llama_cpp.llama_synchronize(self.ctx.ctx)  # decoding is asynchronous on a GPU
            t1 = time.perf_counter()
            self.curve.observe(n, t1 - t0)  # what a step of n tokens costs
            if log.isEnabledFor(logging.DEBUG):  # the bench's timeline: each decode, and the time since the last
                log.debug(
                    "step %d: %d tokens, decode %.1f ms, %.1f ms after the last",
                    self.counters["steps"] + 1,
                    n,
                    (t1 - t0) * 1000,
                    (t0 - self._last_decode) * 1000,
                )
            self._last_decode = t1
        if rc != 0:
            reason = "the KV cache is full" if rc == 1 else f"llama_decode failed with code {rc}"
            for slot, *_ in plan:
                self._truncate(slot, 0)
                self._finish(slot, "error", error=reason)
            return
        self.counters["steps"] += 1
        for slot, first, n_pending, draft in plan:
            job = slot.running()
            if draft is None:
                job.n_past += n_pending
                slot.cached = job.tokens[: job.n_past]
                continue
            self._accept(slot, first + n_pending - 1, n_pending, draft)

    def _offer(self, job: Job, room: int) -> tuple[list[int], str]:
        """The draft a job could check this step and its source: "given" (a verify request's own,
        always checked), "external" (a scout's) or "lookup"; each proposal is scored later (Shadow)."""
        if job.expect is not None:
            return self._expected(job, room), "given"
        limit = min(room, MAX_DRAFT, self.n_ctx - len(job.tokens) - 1)
        if job.max_tokens:
            limit = min(limit, job.max_tokens - job.stats.completion_tokens - 1)
        if limit <= 0 or not self.drafts_supported:
            return [], ""
        if job.draft:
            draft, job.draft = job.draft[:limit], []
            return draft, "given"
        draft, source = [], ""
        if job.inbox:
            draft, source = self._take_external(job, limit)
        if not draft and job.draft_source is not None and job.n_past >= len(job.prompt):
            draft, source = job.draft_source.propose(job.tokens, limit)[:limit], "lookup"
        if not draft:
            return [], ""
        if source not in job.shadows:
            job.shadows[source] = Shadow(len(job.tokens), list(draft), self._confidence(job, source, len(draft)))
        self.counters["draft_offered" if source == "lookup" else "external_offered"] += len(draft)
        return draft, source

    def _expected(self, job: Job, room: int) -> list[int]:
        """A check's draft: the rest of the text to follow, as this tokenizer would cut it (a guess:
        _follow also takes other cuts of it), as much as fits the batch."""
        limit = min(room, self.n_ctx - len(job.tokens) - 1)
        if job.max_tokens:
            limit = min(limit, job.max_tokens - job.stats.completion_tokens - 1)
        if limit <= 0 or not self.drafts_supported or not job.expect:
            return []
        text = job.expect[: limit * 16].decode("utf-8", "ignore")
        return self.model.tokenize_continuation(job.tokens[-4:], text)[:limit]

    def _rate(self, job: Job, source: str) -> float:
        acc = job.acceptance.get(source)
        if acc is None:
            prior = self.acceptance[source].rate if source in self.acceptance else EXTERNAL_PRIOR
            acc = job.acceptance[source] = Acceptance(prior)
        return acc.rate

    def _engine_acceptance(self, source: str) -> Acceptance:
        """The engine-wide record of `source`."""
        return _remembered(self.acceptance, source, lambda: Acceptance(EXTERNAL_PRIOR))

    def _calibration(self, source: str) -> Calibration:
        return _remembered(self.calibration, source, lambda: Calibration(EXTERNAL_PRIOR))

    def _confidence(self, job: Job, source: str, n: int) -> list[int] | None:
        """The stated confidence of the n tokens the job's current scout draft offers (None: it states none)."""
        ext = job.external
        if not source.startswith("external") or ext is None or ext.confidence is None:
            return None
        offset = len(job.tokens) - ext.position
        return ext.confidence[offset : offset + n]

    def _rates(self, job: Job, source: str, n: int) -> list[float]:
        """Each of the n offered tokens' chance to be kept if the ones before it were: by its stated
        confidence where the source states one, else the source's rate in this job."""
        confidence = self._confidence(job, source, n)
        if confidence:
            return self._calibration(source).rates(confidence)
        return [self._rate(job, source)] * n

    def _record(self, job: Job, source: str, kept: int, missed: bool, confidence: list[int] | None) -> None:
        """A proposal of `source` had `kept` tokens right, then (`missed`) one wrong."""
        self._rate(job, source)
        job.acceptance[source].record(kept, missed)
        if source != "external":  # a draft of no named source (a test's) is not remembered
            self._engine_acceptance(source).record(kept, missed)
            if confidence:
                self._calibration(source).record(confidence, kept, missed)

    def _choose_drafts(self, rows: list[tuple[Slot, list[int], list[int] | None, str]], n: int) -> None:
        """Cut each offered draft to what pays in a batch that holds n tokens without them (policy.py)."""
        offered = [i for i, r in enumerate(rows) if r[3] == "lookup" or r[3].startswith("external")]
        if not offered:
            return
        emitting = sum(1 for r in rows if r[2] is not None)
        take = allot(
            self.curve,
            n,
            emitting,
            [self._rates(rows[i][0].running(), rows[i][3], len(rows[i][2] or ())) for i in offered],
            self.n_batch - n,
            explore=self.counters["steps"] % EXPLORE_EVERY == 0,
            grow=self.counters["steps"] % GROW_EVERY == 0,
        )
        for i, k in zip(offered, take):
            slot, pending, draft, source = rows[i]
            rows[i] = (slot, pending, (draft or [])[:k], source)
            job = slot.running()
            if source.startswith("external") and k == 0 and job.external is not None:
                job.external.done(0, 0, "verified")  # not worth checking in this batch: nothing checked
                job.external = None

    def _learn(self, job: Job) -> None:
        """Score the job's waiting proposals against what the target produced: the acceptance
        each source would have had, whether the policy had it checked or not."""
        for source, shadow in list(job.shadows.items()):
            kept, missed, decided = shadow.advance(job.tokens)
            if decided:
                del job.shadows[source]
            if kept or missed:
                if missed:
                    job.missed_at[source] = shadow.position + shadow.scored
                confidence = shadow.confidence[shadow.scored - kept :] if shadow.confidence else None
                self._record(job, source, kept, missed, confidence)

    def _take_external(self, job: Job, limit: int) -> tuple[list[int], str]:
        """The newest draft in the inbox that still fits what was generated, cut to what is new (a
        scout drafting ahead sends its guess again as it grows: the newest reaches furthest); the
        older ones are answered "stale" without a check, and one whose start disagrees with what
        was generated "missed": a wrong guess, counted against its source as a checked miss would
        be (it cost no step, yet a source whose drafts always come late and wrong must be rested
        like one whose drafts are checked and wrong). Returns (tokens, source key)."""
        have = len(job.tokens)
        best: ExternalDraft | None = None
        while job.inbox:
            ext = job.inbox.popleft()
            offset = have - ext.position
            n = max(0, min(offset, len(ext.tokens)))
            kept = _common_prefix(ext.tokens[:n], job.tokens[ext.position : ext.position + n])
            if offset >= 0 and kept < n:
                # One wrong guess counts once: the drafts a scout sent before it heard of the token it
                # missed (up to one per token it drafted) all carry the same mistake at the same place.
                # Counted once per place, a 70% scout's acceptance read 20-30% and it was never checked.
                wrong_at = ext.position + kept
                if wrong_at > job.missed_at.get(ext.key, -1):
                    job.missed_at[ext.key] = wrong_at
                    self._record(job, ext.key, kept, True, ext.confidence)
                ext.done(0, 0, "missed")
                continue
            if offset < 0 or offset >= len(ext.tokens):
                ext.done(0, 0, "stale")  # made for a position not reached yet, or nothing new
                continue
            if best is not None:
                best.done(0, 0, "stale")  # superseded by a newer draft
            best = ext
        if best is None:
            return [], ""
        job.external = best
        offset = have - best.position
        return best.tokens[offset : offset + min(limit, best.limit or limit)], best.key

    def _accept(self, slot: Slot, row: int, n_pending: int, draft: list[int]) -> None:
        job = slot.running()
        if job.expect is not None:
            self._follow(slot, row, n_pending, draft)
            return
        chooser = job.chooser
        assert chooser is not None, "submit() gives every job its chooser"
        n_vocab = self.model.n_vocab
        accepted: list[int] = []
        lps: list[dict[str, Any]] = []
        for i in range(len(draft) + 1):
            ptr = llama_cpp.llama_get_logits_ith(self.ctx.ctx, row + i)
            logits = np.ctypeslib.as_array(ptr, shape=(n_vocab,))
            tok = chooser.choose(logits, len(job.tokens) + len(accepted))
            chooser.accept(tok)
            accepted.append(tok)
            if job.logprobs >= 0:
                lps.append(token_logprobs(self.model, logits, tok, job.logprobs))
            if i == len(draft) or tok != draft[i] or self.model.is_eog(tok):
                break
        n_draft_ok = len(accepted) - 1
        job.n_past += n_pending + n_draft_ok
        if len(draft) > n_draft_ok:
            llama_cpp.llama_memory_seq_rm(self.ctx.memory, slot.seq_id, job.n_past, -1)
        if job.external is not None:
            if log.isEnabledFor(logging.DEBUG):  # the bench's timeline (bench/coop_bench.py, COOP_BENCH_DEBUG)
                ext, at = job.external, len(job.tokens)
                log.debug(
                    "step %d at %d: a scout's draft offered %d, checked %d, kept %d; confidence %s",
                    self.counters["steps"],
                    at,
                    len(ext.tokens) - (at - ext.position),
                    len(draft),
                    n_draft_ok,
                    self._confidence(job, ext.key, len(ext.tokens)) or "-",
                )
            self.counters["external_checks"] += 1 if draft else 0
            self.counters["external_proposed"] += len(draft)
            self.counters["external_accepted"] += n_draft_ok
            job.external.done(len(draft), n_draft_ok, "verified")
            job.external = None
        elif draft:
            job.stats.draft_proposed += len(draft)
            job.stats.draft_accepted += n_draft_ok
            self.counters["draft_checks"] += 1
            self.counters["draft_proposed"] += len(draft)
            self.counters["draft_accepted"] += n_draft_ok
            if job.draft_source is not None:
                job.draft_source.feedback(len(draft), n_draft_ok)
        job.stats.steps += 1
        self._emit_tokens(slot, accepted, lps)
        if job.shadows:
            self._learn(job)

    def _follow(self, slot: Slot, row: int, n_pending: int, draft: list[int]) -> None:
        """A check's step: at each row, the token that spells the text on, if an honest sampler
        could have chosen it: the draft's, else (the peer's tokenizer cut the text otherwise) the
        likeliest admissible one that does. None does: the text is not this model's ("mismatch")."""
        job = slot.running()
        chooser, expect = job.chooser, job.expect
        assert chooser is not None and expect is not None, "a check job has both"
        taken: list[int] = []
        reason = ""
        for i in range(len(draft) + 1):
            ptr = llama_cpp.llama_get_logits_ith(self.ctx.ctx, row + i)
            allowed = chooser.admissible(np.ctypeslib.as_array(ptr, shape=(self.model.n_vocab,)))
            guess = draft[i] if i < len(draft) else -1
            candidates = ([guess] if guess in allowed else []) + [int(t) for t in allowed[:MAX_ALTERNATIVES]]
            tok = next((t for t in candidates if (p := self.model.piece(t)) and expect.startswith(p)), None)
            if tok is None:
                reason = "mismatch"
                break
            chooser.accept(tok)
            taken.append(tok)
            expect = expect[len(self.model.piece(tok)) :]
            if not expect or (job.max_tokens and job.stats.completion_tokens + len(taken) >= job.max_tokens):
                reason = "checked"
                break
            if tok != guess:
                break  # the rows after this one were computed for the draft's token
        kept = max(len(taken) - 1, 0) if reason != "mismatch" else len(taken)
        job.n_past += n_pending + kept
        if len(draft) > kept:
            llama_cpp.llama_memory_seq_rm(self.ctx.memory, slot.seq_id, job.n_past, -1)
        job.tokens.extend(taken)
        job.expect = expect
        job.stats.completion_tokens += len(taken)
        job.stats.steps += 1
        slot.cached = job.tokens[: job.n_past]
        if not reason and len(job.tokens) >= self.n_ctx:
            reason = "checked"  # as much as fits the context
        if reason:
            self._finish(slot, reason)

    def _emit_tokens(self, slot: Slot, tokens: list[int], lps: list[dict[str, Any]] | None = None) -> None:
        job = slot.running()
        stream = job.text
        assert stream is not None, "submit() gives every job its text stream"
        if not job.stats.first_token_at:
            job.stats.first_token_at = time.monotonic()
            self.counters["prompt_tokens"] += len(job.prompt) - job.stats.cached_tokens
        text, ids, reason = [], [], ""
        out_lps: list[dict[str, Any]] = []
        for tok in tokens:
            job.tokens.append(tok)
            if self.model.is_eog(tok):  # kept in tokens (verify reports it), never in text or counts
                reason = "stop"
                break
            ids.append(tok)
            if lps:
                out_lps.append(lps[len(ids) - 1])
            job.stats.completion_tokens += 1
            text.append(stream.push(self.model.piece(tok)))
            if stream.stopped:
                reason = "stop"
                break
            if job.max_tokens and job.stats.completion_tokens >= job.max_tokens:
                reason = "length"
                break
            if len(job.tokens) >= self.n_ctx:
                reason = "length"
                break
        if not reason and job.max_steps and job.stats.steps >= job.max_steps:
            reason = "verified"
        self.counters["tokens_generated"] += len(ids)
        if ids:
            event: dict[str, Any] = {"type": "token", "text": "".join(text), "ids": ids}
            if out_lps:
                event["logprobs"] = out_lps
            job.emit(event)
        slot.cached = job.tokens[: job.n_past]
        if reason:
            if reason != "stop" or not stream.stopped:
                tail = stream.flush()
                if tail:
                    job.emit({"type": "token", "text": tail, "ids": []})
            self._finish(slot, reason)

    def _finish(self, slot: Slot, reason: str, error: str = "") -> None:
        job = slot.job
        slot.job = None
        slot.last_used = time.monotonic()
        if job is None:
            return
        job.stats.finished_at = time.monotonic()
        if job.external is not None:  # taken for a step that never ran
            job.external.done(0, 0, "finished")
            job.external = None
        while job.inbox:  # drafts that arrived too late for this job
            job.inbox.popleft().done(0, 0, "finished")
        if job.chooser is not None:
            job.chooser.close()
        if error:
            job.emit({"type": "error", "message": error})
        job.emit(
            {"type": "end", "finish_reason": reason, "usage": self._usage(job), "tokens": job.tokens[len(job.prompt) :]}
        )

    @staticmethod
    def _usage(job: Job) -> dict[str, Any]:
        s = job.stats
        gen_s = (s.finished_at - s.first_token_at) if s.first_token_at and s.finished_at else 0.0
        return {
            "prompt_tokens": s.prompt_tokens,
            "completion_tokens": s.completion_tokens,
            "total_tokens": s.prompt_tokens + s.completion_tokens,
            "cached_tokens": s.cached_tokens,
            "draft_proposed": s.draft_proposed,
            "draft_accepted": s.draft_accepted,
            "queue_ms": round(((s.started_at or s.queued_at) - s.queued_at) * 1000, 2),
            "ttft_ms": round((s.first_token_at - s.queued_at) * 1000, 2) if s.first_token_at else None,
            "tokens_per_s": round((s.completion_tokens - 1) / gen_s, 2)
            if gen_s > 0 and s.completion_tokens > 1
            else None,
        }


def token_logprobs(model: Model, logits: np.ndarray, token: int, top: int) -> dict[str, Any]:
    """The chosen token's log-probability under the model (before sampling settings) and the `top`
    likeliest tokens, with their text and bytes (as OpenAI reports them)."""
    x = logits.astype(np.float64)
    m = float(x.max())
    lse = m + float(np.log(np.exp(x - m).sum()))

    def entry(t: int) -> dict[str, Any]:
        piece = model.piece(t)
        return {"token": piece.decode("utf-8", "replace"), "logprob": float(x[t] - lse), "bytes": list(piece)}

    out = entry(token)
    if top > 0:
        ids = np.argpartition(-x, top)[:top] if top < x.shape[0] else np.arange(x.shape[0])
        out["top_logprobs"] = [entry(int(t)) for t in ids[np.argsort(-x[ids])]]
    else:
        out["top_logprobs"] = []
    return out


def _usable_cpus() -> int:
    """The CPUs this process may run on (taskset, cgroups' cpusets), not all the machine's: more batch
    threads than that only wait on each other."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def _remembered(table: dict[str, T], key: str, make: Callable[[], T]) -> T:
    """table[key] (made if new), as the most recently used: beyond MAX_SOURCES, the least recently
    used are forgotten (prompt lookup's never)."""
    value = table.pop(key, None)
    table[key] = value = make() if value is None else value
    while len(table) > MAX_SOURCES:
        del table[next(k for k in table if k != "lookup")]
    return value


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i
