"""The headless scout (`shard scout`): a node in scout role that drafts for Oracles.

It runs its own sidecar, announces the role "scout" in the handshake, takes work from the network
(gossip or direct) and keeps a drafting session per request: the Oracle streams the tokens it
decides (`Progress`), and the scout drafts continuously ahead of them from its own latest guess
with a small llama.cpp model, sending the guess again as it grows (at most MAX_IN_FLIGHT drafts on
their way) straight to the Oracle over `/shard/oracle/verify/1.0.0`, which answers with the verdict.
A progress message that agrees with the guess moves the guess's start on; one that disagrees drops
it. How far ahead it drafts follows the verdicts (how much of its drafts the Oracle keeps).
Without a model of its own (`shard scout --bootstrap ADDR`), it fetches the draft model that the
first Oracle it meets announces in its handshake (coop/model_transfer.py), cached in its data dir.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from shard import __version__
from shard.config import Settings
from shard.coop import model_transfer
from shard.credit import receipts
from shard.credit.ledger import Ledger, LedgerError
from shard.network import pairing
from shard.network.messages import (
    MAX_DRAFT_CHARS,
    MAX_SESSION_DRAFT_TOKENS,
    Draft,
    MessageError,
    Progress,
    Verdict,
    Work,
)
from shard.network.peers import PEER_EVENTS, PeerTable, reconcile
from shard.network.sidecar import Sidecar, SidecarError, find_daemon
from shard.supervisor import ChildState, SupervisorEvent
from shard.verifier.model import vocab_fingerprint
from shard.verifier.policy import Acceptance

log = logging.getLogger("shard.scout")

# Drafts of one session on their way: one is checked while the newer ones wait in the Oracle's inbox
# (where each newer one supersedes the older). With 2, a scout's grown guess waited for a verdict
# and the Oracle's next step took the older, shorter draft (measured: 3-5 tokens checked of 16).
# With 3, a draft waited for the verdict of one sent a step earlier: at 20 ms, 6 gave the 4x twins
# 1.82-1.90x (exact) and 1.33-1.35x (noisy) against 1.64-1.80x and 1.26-1.29x with 3; 10 gave no more.
MAX_IN_FLIGHT = 6
CHUNK = 2  # tokens drafted per model call: progress and verdicts are read between calls
SESSION_IDLE_S = 10.0  # a session with no news for this long has ended (or its Oracle went away)
MAX_SESSIONS = 64
MAX_WORK_TOPICS = 8  # the sidecar's limit on `PUT /work-topics`
REST_BELOW = 0.4  # a scout whose guesses agree less often than this with its Oracle rests after a useless draft
SKILL_DECAY = 0.95  # per scored guess token
SURE = 0.9  # agreement at which a scout keeps MAX_IN_FLIGHT drafts on their way (else one fewer)
MAX_STANDINGS = 64  # Oracles whose standing (agreement, rest) the scout remembers across requests


def work_models(peers: PeerTable, draft_sha256: str = "") -> list[str]:
    """The models whose work a scout takes (`PUT /work-topics`): those of the Oracles it is
    connected to that offer its draft model (one it fetched, by sha256), else of every Oracle it is
    connected to (a scout with a model of its own drafts for any). Empty, no Oracle yet: the shared
    work topic. Sorted and bounded, so an unchanged set is not sent again."""
    oracles = [p for p in peers.peers.values() if "oracle" in p.roles]
    if draft_sha256:
        offering = [
            p for p in oracles if isinstance(p.draft_model, dict) and p.draft_model.get("sha256") == draft_sha256
        ]
        oracles = offering or oracles
    return sorted({m for p in oracles for m in p.models if isinstance(m, str) and m})[:MAX_WORK_TOPICS]


class LlamaDrafter:
    """Greedy continuation with llama-cpp-python; its prompt cache makes a repeated prefix cheap.
    With the Oracle's tokenizer it drafts in token ids (exact); otherwise in text."""

    def __init__(self, model_path: Path, n_ctx: int = 4096, n_threads: int = 0, name: str = "") -> None:
        from llama_cpp import Llama, llama_get_logits_ith

        self._logits_ith = llama_get_logits_ith
        # Flash attention, as the verifier's context has it (llama.cpp's default; llama-cpp-python's
        # Llama turns it off unless asked). Attention computed the other way rounds differently: a
        # scout with the Oracle's own model then disagreed with it where two tokens nearly tie (SmolLM2:
        # its greedy text parted from the verifier's within 0-24 tokens; the same after 64 with it on).
        self.llm = Llama(
            model_path=str(model_path), n_ctx=n_ctx, n_threads=n_threads or None, flash_attn=True, verbose=False
        )
        self.name = name or model_path.name
        self.vocab = vocab_fingerprint(self.llm._model.vocab, self.llm.n_vocab())

    def extend(
        self, context: list[int], n: int, wanted: Callable[[], bool] = lambda: True
    ) -> tuple[list[int], list[int]]:
        """Up to n greedy tokens after `context` (this model's ids), and each one's probability
        under this model in percent (the draft's `confidence`); the prompt cache makes a context
        that grew by a few tokens cost only those tokens. It stops early once `wanted()` is false
        (the Oracle decided otherwise meanwhile: the next token would cost a decode for nothing)."""
        context = context[-(self.llm.n_ctx() - n - 1) :]
        out: list[int] = []
        confidence: list[int] = []
        if not context or n <= 0:
            return out, confidence
        n_vocab = self.llm.n_vocab()
        for tok in self.llm.generate(context, top_k=1, temp=0.0, reset=True):
            if self.llm.token_eos() == tok:
                break
            # the logits the token was drawn from (those of the batch's last row, until the next eval)
            logits = np.ctypeslib.as_array(self._logits_ith(self.llm._ctx.ctx, -1), shape=(n_vocab,))
            out.append(int(tok))
            confidence.append(int(100 / float(np.exp(logits - logits[tok]).sum())))
            if len(out) >= n or not wanted():
                break
        return out, confidence

    def exact(self, work: Work) -> bool:
        """Whether this model shares the work's tokenizer (drafts in the Oracle's token ids)."""
        return work.tokens is not None and work.vocab == self.vocab

    def tokenize(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode(), special=True)

    def text(self, tokens: list[int]) -> str:
        return self.llm.detokenize(tokens).decode("utf-8", "ignore")

    def draft(self, work: Work) -> Draft | None:
        # A peer chooses the context's length: only its tail that fits this model's window is read
        # (a draft continues the end of the context, so the tail is what matters).
        room = self.llm.n_ctx() - work.max_draft - 1
        exact = work.tokens is not None and work.vocab == self.vocab
        context = (
            work.tokens if exact and work.tokens is not None else self.llm.tokenize(work.context.encode(), special=True)
        )
        context = context[-room:]
        if not context:
            return None
        tokens: list[int] = []
        for tok in self.llm.generate(context, top_k=1, temp=0.0, reset=True):
            if self.llm.token_eos() == tok or len(tokens) >= work.max_draft:
                break
            tokens.append(int(tok))
        if not tokens:
            return None
        if exact:
            return Draft(work.work_id, work.position, tokens=tokens)
        text = self.llm.detokenize(tokens).decode("utf-8", "ignore")[:MAX_DRAFT_CHARS]
        return Draft(work.work_id, work.position, text=text) if text else None


@dataclass
class Standing:
    """How this scout fares with one Oracle, across its requests: how often its guesses agree with the
    tokens the Oracle decides (scored from progress messages, like the Oracle's shadow scoring:
    tokens of the guess kept are successes, the first disagreement a failure), and its rest. Kept
    per Oracle, so a scout resting at the end of one request still rests at the start of the next
    (an all-wrong scout is not tried afresh at each request), and a good scout starts its next
    request drafting far ahead instead of ramping up again."""

    # how often its guesses agree: a prior worth 2 scored tokens at 90% (a new scout is tried), then
    # about the last 20 scored tokens
    agreement: Acceptance = field(default_factory=lambda: Acceptance(0.9, 2.0, SKILL_DECAY))
    rest: int = 0  # Oracle steps to sit out (no drafting, no sending): after a useless draft (1, 2, 4 ... 32)
    backoff: int = 1

    @property
    def rate(self) -> float:
        return self.agreement.rate

    def record(self, kept: int, missed: bool) -> None:
        self.agreement.record(kept, missed)

    def ahead(self) -> int:
        """How far ahead of the Oracle's known position to guess: about the run of tokens its drafts
        keep (1 / (1 - rate)) twice over, since by the time a draft arrives the Oracle has moved on
        by about one such run; plus a few. A good scout drafts the most one draft holds."""
        run = 1 / max(1e-3, 1 - self.rate)
        return max(4, min(MAX_SESSION_DRAFT_TOKENS, round(2 * run) + 2))

    def useless_draft(self) -> None:
        """A draft of which nothing was kept (checked or not): rest, if its guesses are mostly wrong
        (a fair scout's misses are part of drafting; an all-wrong one's cost the Oracle a check or a
        read each, and its own core)."""
        if self.rate < REST_BELOW:
            self.rest, self.backoff = self.backoff, min(self.backoff * 2, 32)

    def useful_draft(self) -> None:
        self.backoff = 1


def standing_for(standings: dict[str, Standing], oracle: str) -> Standing:
    """The scout's standing with `oracle`, from `standings` (bounded: the least recently used are forgotten)."""
    standing = standings.pop(oracle, None) or Standing()
    standings[oracle] = standing
    while len(standings) > MAX_STANDINGS:
        del standings[next(iter(standings))]
    return standing


@dataclass
class DraftSession:
    """A request the scout drafts for: what the Oracle has decided (`confirmed`, the Oracle's token
    ids, or `text` for a scout with another tokenizer) and the scout's own guess beyond it."""

    oracle: str
    work: Work  # the newest work of the request (drafts name it)
    exact: bool
    confirmed: list[int]  # exact: the Oracle's tokens; else this model's tokens of `text`
    position: int  # the Oracle's position (its token count) at the end of `confirmed`
    text: str = ""
    guess: list[int] = field(default_factory=list)
    confidence: list[int] = field(default_factory=list)  # the guess's tokens' probabilities (percent), as drafted
    epoch: int = 0  # bumped whenever the guess is dropped: a model call made before is discarded
    seq: int = 0
    sent: tuple[int, int] = (-1, 0)  # (epoch, where its guess ended) of the last draft sent
    # Drafts on their way, by the epoch of the guess they carry: those of a dropped guess will be
    # answered "missed" at the Oracle's next step, and must not hold back the corrected guess
    # (measured: after each disagreement the corrected draft waited a step for them, so a 75% scout's
    # drafts were checked in 12-22% of the Oracle's steps).
    in_flight: dict[int, int] = field(default_factory=dict)
    cap: int = (
        MAX_SESSION_DRAFT_TOKENS  # how far ahead at most: 0 once the request ended, less where the model ends its text
    )
    standing: Standing = field(default_factory=Standing)  # shared by the sessions of one Oracle
    heard_at: float = field(default_factory=time.monotonic)
    started_at: float = field(default_factory=time.monotonic)

    def ms(self) -> float:
        """Milliseconds since the session began (the debug log's timeline of a session)."""
        return (time.monotonic() - self.started_at) * 1000

    @property
    def ahead(self) -> int:
        """How far ahead to draft: follows the scout's agreement with this Oracle."""
        return min(self.cap, self.standing.ahead())

    @property
    def rest(self) -> int:
        return self.standing.rest

    def max_in_flight(self) -> int:
        """Drafts on their way at once: a scout that often disagrees with the Oracle keeps one fewer,
        since every draft on its way when the Oracle decides otherwise is read and answered "missed"
        (measured: a 70% scout's drafts were missed 44 times in two 64-token runs, 3 in flight)."""
        return MAX_IN_FLIGHT if self.standing.rate >= SURE else MAX_IN_FLIGHT - 1

    def may_send(self) -> bool:
        """Whether another draft may go: fewer than max_in_flight() of this guess on their way, and
        at most twice that in all (a text scout's guess changes at every progress message)."""
        flying = self.in_flight.get(self.epoch, 0)
        return flying < self.max_in_flight() and sum(self.in_flight.values()) < 2 * MAX_IN_FLIGHT

    def drafting(self) -> bool:
        """Whether the model should grow the guess now: not while resting, nor once far enough ahead."""
        return self.rest == 0 and len(self.guess) < self.ahead

    def advance(self, tokens: list[int], text: str, tokenize: Any) -> None:
        """The Oracle decided `tokens` (spelling `text`) after `confirmed` (one of its steps went by:
        one less to rest). In token ids, the guess is scored against them first."""
        self.heard_at = time.monotonic()
        self.standing.rest = max(0, self.standing.rest - 1)
        self.position += len(tokens)
        if self.exact:
            new = tokens
        else:
            self.text += text
            new = tokenize(self.text)
            self.confirmed, new = new, []
            self.drop_guess()  # another tokenizer: redraft from the new text
            return
        n = min(len(new), len(self.guess))
        if n:
            kept = _common_prefix(self.guess[:n], new[:n])
            self.standing.record(kept, kept < n)
        if self.guess[: len(new)] == new:  # the guess was right so far: it stays ahead
            self.guess, self.confidence = self.guess[len(new) :], self.confidence[len(new) :]
        else:
            self.drop_guess()
        self.confirmed = self.confirmed + new

    def on_verdict(self, verdict: Verdict) -> bool:
        """Take the Oracle's answer to a draft; True if nothing of it was kept (missed, checked and
        wrong, or not worth a check). How far ahead it drafts follows its agreement with the
        Oracle's tokens (scored in advance()), not single verdicts: a fair scout's drafts are often
        declined or cut short, and resting it then (as every useless draft did) starved a 70% scout."""
        if verdict.outcome == "finished":
            self.cap = 0  # the request ended: draft no more for it
        if verdict.accepted:
            self.standing.useful_draft()
            return False
        if verdict.outcome in ("verified", "ignored"):
            self.standing.useless_draft()
            return True
        return False

    def resync(self, work: Work, tokenize: Any) -> None:
        """A fresh work for the request: adopt it, keeping the guess if it still fits."""
        self.heard_at = time.monotonic()
        if work.position < self.work.position:
            return  # an older work, late
        if self.exact and work.tokens is not None:  # in token ids, position == len(confirmed)
            n = min(len(work.tokens), len(self.confirmed))
            if work.tokens[:n] == self.confirmed[:n]:
                self.work = work  # drafts name the newest work
                if len(work.tokens) > n:
                    self.advance(work.tokens[n:], "", tokenize)
                return
            self.confirmed = list(work.tokens)
        elif work.position <= self.position:
            self.work = work
            return
        else:
            self.text = work.context
            self.confirmed = tokenize(work.context)
        self.work, self.position = work, work.position
        self.drop_guess()

    def drop_guess(self) -> None:
        self.guess, self.confidence, self.epoch = [], [], self.epoch + 1


class Scout:
    def __init__(self, settings: Settings, drafter: LlamaDrafter | None) -> None:
        self.settings = settings
        self.drafter = drafter  # None: the draft model is fetched from the first Oracle that offers one
        self.ledger = Ledger(settings.data_path / "ledger.db")
        self.sessions: dict[str, DraftSession] = {}  # request key -> its drafting session
        self.standings: dict[str, Standing] = {}  # per Oracle, across its requests
        self.peers = PeerTable()
        self._fetching: asyncio.Task[None] | None = None
        self._refused: set[str] = set()  # sha256 of draft models that failed their checks
        self._draft_sha256 = ""  # of the draft model fetched from an Oracle ('' for one of our own)
        self._topics: list[str] | None = None  # the models of the work topics the sidecar is on (None: unknown)
        self._topics_lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self.stats = {"work": 0, "progress": 0, "drafts": 0, "proposed": 0, "accepted": 0, "stale": 0, "useless": 0}
        self._tasks: set[asyncio.Task[None]] = set()
        binary = find_daemon(settings)
        if binary is None:
            raise RuntimeError(
                "the shard-daemon sidecar was not found: build it (`cargo build --release "
                "--manifest-path sidecar/Cargo.toml`) or set SHARD_DAEMON"
            )
        self.sidecar = Sidecar(settings, binary, self._on_child, self._on_event)

    def _on_child(self, event: SupervisorEvent) -> None:
        log.info("sidecar: %s%s", event.state.value, f" ({event.message})" if event.message else "")
        if event.state is ChildState.RUNNING:
            info = self.sidecar.info
            log.info(
                "scout ready: peer id %s, control port %s, p2p %s",
                info.get("peer_id"),
                info.get("control_port"),
                " ".join(info.get("listen_addrs", [])),
            )
            asyncio.get_running_loop().create_task(self._announce())
            self._topics = []  # a new sidecar starts on the shared work topic
            self._sync_topics()

    async def _announce(self) -> None:
        try:
            await self.sidecar.call(
                "PUT",
                "/local-info",
                {
                    "roles": ["scout"],
                    "models": [self.drafter.name] if self.drafter else [],
                    "capacity": 1,
                    "load": 0,
                    "agent": f"shard-scout/{__version__}",
                    **self._pairing(),
                },
            )
        except SidecarError as exc:
            log.warning("sidecar: %s", exc)

    def _pairing(self) -> dict[str, str]:
        """The node's pairing key, for the sidecar to prove to each Oracle that this scout is the user's."""
        key = self.settings.pair_key.strip() or pairing.read_key(self.settings.data_path)
        return {"pair_key": key} if key else {}

    def _on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind in PEER_EVENTS:
            self.peers.apply(event)
            self._maybe_fetch()
            self._sync_topics()
        elif kind in ("subscribed", "lagged"):
            asyncio.get_running_loop().create_task(self._reconcile())
        if kind != "work":
            return
        payload, sender = event.get("work"), str(event.get("from"))
        if Progress.is_progress(payload):
            self._on_progress(sender, payload)
            return
        try:
            work = Work.from_dict(payload)
        except MessageError as exc:
            log.debug("bad work from %s: %s", sender, exc)
            return
        self.stats["work"] += 1
        if self.drafter is None:
            return
        key = work.work_id.split(".", 1)[0]
        session = self.sessions.get(key)
        if session is not None and session.oracle == sender:
            session.resync(work, self.drafter.tokenize)
        elif work.deadline_ms < time.time() * 1000:
            self.stats["stale"] += 1  # late on arrival: the Oracle has moved on
            return
        else:
            exact = self.drafter.exact(work)
            self.sessions[key] = DraftSession(
                sender,
                work,
                exact,
                list(work.tokens or []) if exact else self.drafter.tokenize(work.context),
                work.position,
                text=work.context,
                standing=self._standing(sender),
            )
            while len(self.sessions) > MAX_SESSIONS:  # bounded: the oldest requests go first
                self.sessions.pop(next(iter(self.sessions)))
        self._wake.set()

    def _standing(self, oracle: str) -> Standing:
        return standing_for(self.standings, oracle)

    def _on_progress(self, sender: str, payload: Any) -> None:
        try:
            progress = Progress.from_dict(payload)
        except MessageError as exc:
            log.debug("bad progress from %s: %s", sender, exc)
            return
        self.stats["progress"] += 1
        session = self.sessions.get(progress.work_id.split(".", 1)[0])
        if session is None or session.oracle != sender or self.drafter is None:
            return
        skip = session.position - progress.position
        if skip < 0 or skip > len(progress.tokens):
            return  # a message was missed: the next work brings the whole context again
        if skip < len(progress.tokens):
            session.advance(progress.tokens[skip:], progress.text if skip == 0 else "", self.drafter.tokenize)
        log.debug(
            "%s +%.0f ms: progress to %d, guess %d ahead, agreement %.2f, rest %d",
            progress.work_id,
            session.ms(),
            session.position,
            len(session.guess),
            session.standing.rate,
            session.rest,
        )
        self._wake.set()

    async def _reconcile(self) -> None:
        await reconcile(self.peers, self.sidecar)
        self._maybe_fetch()
        self._sync_topics()

    def _sync_topics(self) -> None:
        """Puts the sidecar on the work topics of the models this scout drafts for, when they changed:
        it then receives, checks and forwards only those models' work (issue 15)."""
        if self._topics is not None and work_models(self.peers, self._draft_sha256) != self._topics:
            task = asyncio.get_running_loop().create_task(self._put_topics())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _put_topics(self) -> None:
        async with self._topics_lock:  # one at a time, each with the newest set
            models = work_models(self.peers, self._draft_sha256)
            if self._topics is None or models == self._topics:
                return
            try:
                await self.sidecar.call("PUT", "/work-topics", {"models": models})
            except SidecarError as exc:
                log.warning("sidecar: work topics %s: %s", models, exc)
                return
            self._topics = models
            log.info("taking the work of %s", ", ".join(models) if models else "every model (shared topic)")

    def _maybe_fetch(self) -> None:
        """No model yet: fetch the draft model of the first Oracle that announces one."""
        if self.drafter is not None or (self._fetching is not None and not self._fetching.done()):
            return
        for peer in self.peers.peers.values():
            d = peer.draft_model
            if "oracle" in peer.roles and isinstance(d, dict) and d.get("sha256") not in self._refused:
                self._fetching = asyncio.get_running_loop().create_task(self._fetch(peer.peer_id, d))
                return

    async def _fetch(self, oracle: str, description: dict[str, Any]) -> None:
        log.info(
            "fetching the draft model %s (%s bytes) from %s", description.get("name"), description.get("size"), oracle
        )
        try:
            path = await model_transfer.fetch(
                self.sidecar, oracle, description, self.settings.data_path / "draft-models"
            )
            drafter = await asyncio.get_running_loop().run_in_executor(
                None, lambda: LlamaDrafter(path, n_threads=self.settings.n_threads, name=str(description.get("name")))
            )
        except (model_transfer.TransferError, ValueError, OSError) as exc:
            log.error("draft model from %s: %s", oracle, exc)
            self._refused.add(str(description.get("sha256")))
            self._maybe_fetch()
            return
        self.drafter = drafter
        self._draft_sha256 = str(description.get("sha256", ""))
        self._sync_topics()
        log.info("drafting with %s (fetched from %s)", drafter.name, oracle)
        await self._announce()

    async def run(self, stop: asyncio.Event) -> None:
        self.sidecar.start()
        waiter = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                session = self._next_session()
                if session is None:
                    wake = asyncio.ensure_future(self._wake.wait())
                    await asyncio.wait([wake, waiter], return_when=asyncio.FIRST_COMPLETED)
                    wake.cancel()
                    self._wake.clear()
                    continue
                try:
                    await self._draft_more(session)
                except Exception:  # a peer's work or verdict must never stop the scout
                    log.exception("drafting for %s from %s failed", session.work.work_id, session.oracle)
                    self.sessions.pop(session.work.work_id.split(".", 1)[0], None)
        finally:
            waiter.cancel()
            for task in list(self._tasks):
                task.cancel()
            if self._fetching is not None:
                self._fetching.cancel()
            await self.sidecar.stop()
            self.ledger.close()

    def _next_session(self) -> DraftSession | None:
        """The newest live session whose guess is shorter than it should be, or that has a grown
        guess to send; sessions with no news for SESSION_IDLE_S are dropped."""
        now = time.monotonic()
        for key, s in list(self.sessions.items()):
            if now - s.heard_at > SESSION_IDLE_S:
                del self.sessions[key]
        for s in reversed(self.sessions.values()):
            if s.drafting() or (s.rest == 0 and self._sendable(s)):
                return s
        return None

    @staticmethod
    def _sendable(s: DraftSession) -> bool:
        # Only a guess that reaches further than the last one sent (or replaces it) is news to the Oracle.
        epoch, end = s.sent
        return bool(s.guess) and s.may_send() and (s.epoch != epoch or s.position + len(s.guess) > end)

    async def _draft_more(self, session: DraftSession) -> None:
        """One model call that grows the session's guess by up to CHUNK tokens, then a draft of the
        guess if one may go (model calls run in a worker thread: progress is read meanwhile)."""
        assert self.drafter is not None
        want = min(CHUNK, session.ahead - len(session.guess))
        if want > 0:
            epoch, context = session.epoch, session.confirmed + session.guess
            try:
                new, confidence = await asyncio.get_running_loop().run_in_executor(
                    None, self.drafter.extend, context, want, lambda: session.epoch == epoch
                )
            except (ValueError, RuntimeError) as exc:  # llama.cpp refusing what a peer sent
                log.warning("cannot draft for %s: %s", session.work.work_id, exc)
                session.cap = 0
                return
            if session.epoch == epoch:  # the guess was not dropped meanwhile (it may have moved on)
                session.guess += new
                session.confidence += confidence
            if not new and session.epoch == epoch:
                session.cap = len(session.guess)  # the model ended its text here: nothing further to guess
        if self._sendable(session):
            self._send(session)

    def _send(self, session: DraftSession) -> None:
        assert self.drafter is not None
        guess = session.guess[:MAX_SESSION_DRAFT_TOKENS]
        session.sent = (session.epoch, session.position + len(guess))
        if session.rest > 0:  # its last drafts were of no use: spare the Oracle (progress counts the rest down)
            return
        session.seq += 1
        if session.exact:
            confidence = session.confidence[: len(guess)]
            draft = Draft(
                session.work.work_id,
                session.position,
                tokens=guess,
                seq=session.seq,
                confidence=confidence if len(confidence) == len(guess) else None,
            )
        else:
            text = self.drafter.text(guess)[:MAX_DRAFT_CHARS]
            if not text:
                return
            draft = Draft(session.work.work_id, session.position, text=text, seq=session.seq)
        session.in_flight[session.epoch] = session.in_flight.get(session.epoch, 0) + 1
        log.debug(
            "%s +%.0f ms: draft %d sent, %d tokens from %d",
            draft.work_id,
            session.ms(),
            draft.seq,
            len(guess),
            draft.position,
        )
        task = asyncio.get_running_loop().create_task(self._deliver(session, draft, session.epoch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, session: DraftSession, draft: Draft, epoch: int) -> None:
        try:
            await self._send_draft(session.oracle, session.work, draft, session)
        except Exception:  # a peer's verdict must never stop the scout
            log.exception("draft %s for %s failed", draft.seq, draft.work_id)
        finally:
            left = session.in_flight.pop(epoch, 1) - 1
            if left > 0:
                session.in_flight[epoch] = left
            self._wake.set()

    async def _send_draft(self, oracle: str, work: Work, draft: Draft, session: DraftSession) -> None:
        self.stats["drafts"] += 1
        try:
            answer = await self.sidecar.call("POST", "/send-verify", {"peer_id": oracle, "request": draft.to_dict()})
            verdict = Verdict.from_dict(answer.get("response"))
        except (SidecarError, MessageError) as exc:
            log.debug("draft for %s not delivered: %s", work.work_id, exc)
            return
        self.stats["proposed"] += verdict.proposed
        self.stats["accepted"] += verdict.accepted
        if verdict.outcome == "stale":
            self.stats["stale"] += 1
        if session.on_verdict(verdict):
            self.stats["useless"] += 1
        if verdict.accepted:  # counted only with the Oracle's signed receipt for it
            offered = len(draft.tokens) if draft.tokens is not None else work.max_draft  # no receipt may claim more
            receipt = await receipts.check(
                self.sidecar,
                verdict.receipt,
                kind="draft",
                issuer=oracle,
                subject=str(self.sidecar.info.get("peer_id")),
                ref=draft.ref,
                max_amount=float(offered),
            )
            if receipt is None:
                log.warning("the verdict for %s from %s has no valid receipt: not counted", work.work_id, oracle)
            else:
                try:
                    self.ledger.record(
                        "earned",
                        oracle,
                        f"draft:{draft.ref}",
                        amount=receipt.amount,
                        proof=receipts.proof(verdict.receipt or {}),
                    )
                except LedgerError as exc:
                    log.error("%s", exc)
        log.debug(
            "%s +%.0f ms: draft %d %s%s, %d of %d accepted",
            work.work_id,
            session.ms(),
            draft.seq,
            verdict.outcome,
            f" ({verdict.reason})" if verdict.reason else "",
            verdict.accepted,
            verdict.proposed,
        )


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


async def run_scout(settings: Settings, model_path: Path | None) -> int:
    loop = asyncio.get_running_loop()
    drafter = None
    if model_path is not None:
        log.info("loading the draft model %s", model_path)
        drafter = await loop.run_in_executor(None, lambda: LlamaDrafter(model_path, n_threads=settings.n_threads))
    else:
        log.info("no --model: the draft model comes from the first Oracle that offers one")
    scout = Scout(settings, drafter)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    await scout.run(stop)
    log.info("scout stopped: %s", scout.stats)
    return 0
