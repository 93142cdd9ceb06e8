"""Cooperative generation: one request decoded by the verifier, with drafts from scouts.

The verifier decodes at full speed on its own (with its prompt-lookup drafter); this module only
adds to it. When the privacy setting admits some connected scouts, it publishes work for the
request (its text so far and the token position: once at the start, then again when the position
has moved on by REPUBLISH_TOKENS, for scouts that draft once per work), and streams the tokens it decides to
the scouts as `Progress` messages (coalesced: one send in flight per request). That makes each
request a drafting session: a scout drafts continuously ahead of the Oracle from its own guess and
sends its draft again as it grows (each draft numbered: `seq`). This module takes the drafts that
come back, checks who sent them and whether they belong to live work at a position the request
has reached, and hands them to the verifier, which checks the part beyond its position in its next
batched step (reconciling a draft made for an older position with what was generated since), as
many tokens as policy.py finds pay for that scout. Nothing here ever waits for the network: with no
drafts, it is plain decoding.

A draft's verdict is credited to its sender (the signed libp2p source the sidecar reports) in the
ledger, once per work id and sender.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import secrets
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from shard.coop.golden import GoldenTickets
from shard.coop.local_gate import LocalGate
from shard.credit import receipts
from shard.credit.ledger import LedgerError
from shard.credit.scheduler import Scheduler
from shard.errors import NoModel, ShardError
from shard.network import messages
from shard.network.messages import Draft, MessageError, Progress, Verdict, Work
from shard.network.peers import PeerTable
from shard.network.sidecar import SidecarError
from shard.ports import LedgerProvider, LocalModel, NetworkProvider, SettingsReader
from shard.verifier.client import VerifierUnavailable
from shard.verifier.protocol import DraftRequest, GenerateRequest

if TYPE_CHECKING:
    from shard.api.metrics import Metrics

log = logging.getLogger("shard.coop")

REPUBLISH_TOKENS = 8  # publish fresh work once the generation moved this far past the last one
MAX_DRAFT = 16
DEADLINE_MS = 2000
LIVE_WORKS = 8  # work ids of a request that still take drafts (older ones are dropped)
MAX_HEARD = 4096  # drafts remembered per request for the duplicate and replay rules (oldest forgotten)


@dataclass
class _Session:
    """One request's cooperative state."""

    key: str
    job: int
    model: str
    vocab: str
    context: str
    tokens: list[int]  # the context's token ids, kept in step with `position`
    generated: list[str] = field(default_factory=list)
    events: list[tuple[list[int], str]] = field(default_factory=list)  # (ids, text) of each token event
    seq: int = 0
    published_position: int = -1  # position of the newest published work
    works: dict[str, tuple[int, float]] = field(default_factory=dict)  # live work id -> (position, published at)
    senders: dict[tuple[str, str, int], None] = field(default_factory=dict)  # (work id, sender, seq) already heard
    contents: dict[tuple[str, int, Any], str] = field(
        default_factory=dict
    )  # (work id, position, draft) -> first sender
    publishing: bool = False
    draft_model: str = ""  # sha256 of the node's draft model, named in each work
    progress_event: int = 0  # token events already streamed to the scouts
    exclude_local: bool = False  # scouts on this machine sit this request out (coop/local_gate.py)
    progressing: bool = False  # a progress message is on its way
    golden: bool = False  # a golden ticket (the Oracle's own request): its verdicts are honesty scores

    def __post_init__(self) -> None:
        self.prompt_len = len(self.tokens)
        self.progress_position = len(self.tokens)  # where the next progress message starts

    def next_progress(self) -> Progress | None:
        """The tokens decided since the last progress message (at most MAX_PROGRESS_TOKENS)."""
        if not self.works or self.progress_event >= len(self.events):
            return None
        ids: list[int] = []
        text = ""
        i = self.progress_event
        while i < len(self.events):
            e_ids, e_text = self.events[i]
            if ids and (
                len(ids) + len(e_ids) > messages.MAX_PROGRESS_TOKENS
                or len(text) + len(e_text) > messages.MAX_PROGRESS_CHARS
            ):
                break
            ids += e_ids
            text += e_text
            i += 1
        position = self.progress_position
        self.progress_event, self.progress_position = i, position + len(ids)
        if not ids or len(ids) > messages.MAX_PROGRESS_TOKENS or len(text) > messages.MAX_PROGRESS_CHARS:
            return None  # an event with no new ids (a stop string's tail), or one too big to say
        return Progress(work_id=next(reversed(self.works)), position=position, tokens=ids, text=text, model=self.model)

    def heard(self, key: tuple[str, str, int], content: tuple[str, int, Any], sender: str) -> str:
        """'' for a new draft (remembered), else why it is ignored: 'duplicate' or 'replay'."""
        first = self.contents.get(content)
        if key in self.senders or first == sender:
            return "duplicate"
        if first is not None:
            return "replay"  # another sender's draft, copied: only the first earns
        self.senders[key] = None
        self.contents[content] = sender
        _forget_oldest(self.senders, MAX_HEARD)
        _forget_oldest(self.contents, MAX_HEARD)
        return ""

    @property
    def position(self) -> int:
        return len(self.tokens)

    def next_work(self, model_max: int) -> Work:
        self.seq += 1
        work_id = f"{self.key}.{self.seq}"
        self.works[work_id] = (self.position, time.monotonic())
        while len(self.works) > LIVE_WORKS:
            self.works.pop(next(iter(self.works)))
        self.published_position = self.position
        return Work(
            work_id=work_id,
            model=self.model,
            context=self.context + "".join(self.generated),
            position=self.position,
            max_draft=model_max,
            deadline_ms=int(time.time() * 1000) + DEADLINE_MS,
            vocab=self.vocab,
            tokens=list(self.tokens),
            draft_model=self.draft_model,
        )


def _forget_oldest(d: dict[Any, Any], limit: int) -> None:
    """Drop the oldest entries of d (insertion order) until it holds at most limit."""
    while len(d) > limit:
        del d[next(iter(d))]


def _size(value: Any) -> int:
    return len(value) if isinstance(value, (str, list)) else 0


@dataclass
class _Pace:
    """How much of a scout's drafts is worth checking: on a CPU each checked token costs nearly a
    decode step, so a scout's draft length follows its acceptance (as the lookup drafter's does),
    and after drafts with nothing accepted its next drafts rest unchecked (0, 1, 2, 4 ... 64: a
    scout's first miss after a hit is forgiven, since the draft it sends next is its corrected guess,
    and resting that one cost a 95% scout a step after each of its misses)."""

    limit: int = 4
    rest: int = 0
    backoff: int = 0

    def update(self, proposed: int, accepted: int) -> None:
        if proposed == 0:  # not checked (the policy found it would not pay): no news about the scout (a
            # short draft from a good scout is declined too; resting it then cost the exact twin its drafts)
            return
        # A partial verdict halves the length (no lower than what was kept, plus one): cutting it to what
        # was kept starved a 70% scout, whose runs vary from 0 to 10 (policy.py weighs each token anyway).
        self.limit = min(self.limit * 2, MAX_DRAFT) if accepted == proposed else max(accepted + 1, self.limit // 2)
        if accepted == 0:
            self.missed()
        else:
            self.backoff = 0

    def missed(self) -> None:
        """A miss (checked with nothing kept, or late and wrong): the next drafts rest unchecked."""
        self.rest, self.backoff = self.backoff, min(max(1, self.backoff * 2), 64)


class Ignored(Exception):
    """A draft that is not checked; the text is the reason (a metrics label)."""


class CoopGenerator:
    def __init__(
        self,
        *,
        settings: SettingsReader,
        network: NetworkProvider,
        ledger: LedgerProvider,
        peers: PeerTable,
        local: LocalModel,
        scheduler: Scheduler,
        metrics: Metrics,
    ) -> None:
        self._settings, self._network, self._ledger = settings, network, ledger
        self._peers, self._local, self._metrics = peers, local, metrics
        self._scheduler = scheduler
        self._sessions: dict[str, _Session] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.golden = GoldenTickets(rate=settings().golden_rate, on_score=self._keep_golden_score)
        self._pace: dict[str, _Pace] = {}  # per scout (bounded by the peer table's size)
        self.local_gate = LocalGate()

    def _is_local(self, peer_id: str) -> bool:
        peer = self._peers.peers.get(peer_id)
        return peer is not None and peer.local

    def _targets(self, session: _Session) -> tuple[list[str], list[str] | None]:
        """The scouts that get this request's work, and the `peers` to send it to (None: gossip)."""
        scouts = self.admitted_scouts()
        if session.exclude_local:
            scouts = [p for p in scouts if not self._is_local(p)]
            return scouts, scouts
        return scouts, None if self._settings().prompt_privacy == "anyone" else scouts

    def _keep_golden_score(self, sender: str, proposed: int, accepted: int) -> None:
        ledger = self._ledger()
        if ledger is None:
            return
        try:
            ledger.record_golden(sender, proposed, accepted)
        except LedgerError as exc:
            log.error("%s", exc)

    def admitted_scouts(self) -> list[str]:
        """Connected scouts that may receive this user's prompts (none while the sidecar is down)."""
        network, s = self._network(), self._settings()
        if network is None or not network.ready:
            return []
        return self._peers.scouts(s.prompt_privacy, s.trusted_peers)

    # -- a request ------------------------------------------------------------------------------

    async def generate(
        self, request: GenerateRequest, share_allowed: bool = True, golden: bool = False
    ) -> AsyncGenerator[dict[str, Any], None]:
        """The verifier's event stream for `request`, with scouts' drafts fed in when admitted
        (`share_allowed` False keeps the prompt on this machine, e.g. a remote asker's; `golden`:
        a golden ticket, see coop/golden.py)."""
        verifier = self._local.verifier
        if verifier is None:
            raise NoModel("no model is loaded on this node")
        scouts = self.admitted_scouts() if share_allowed else []
        gated = self._settings().local_scout_gate and any(self._is_local(p) for p in scouts)
        use_local = self.local_gate.use_local() if gated else True
        share = any(use_local or not self._is_local(p) for p in scouts)
        first_token_at = 0.0
        drafter = "lookup" if self._settings().draft_lookup else "none"
        request = dataclasses.replace(request, share_context=share, drafter=drafter)
        session: _Session | None = None
        try:
            async with contextlib.aclosing(verifier.generate(request)) as events:
                async for event in events:
                    kind = event["type"]
                    if kind == "token" and not first_token_at:
                        first_token_at = time.monotonic()
                    elif kind == "end" and gated and first_token_at:  # how fast it was, with or without
                        done = int((event.get("usage") or {}).get("completion_tokens", 0))
                        self.local_gate.record(use_local, done, time.monotonic() - first_token_at)
                    if kind == "start" and share and event.get("context_text"):
                        session = _Session(
                            secrets.token_hex(8),
                            event["job"],
                            self._local.model_id() or "",
                            verifier.model_info.get("vocab", ""),
                            event["context_text"],
                            list(event["context_tokens"]),
                            draft_model=draft.sha256 if (draft := self._local.draft_model) else "",
                            golden=golden,
                        )
                        session.exclude_local = not use_local
                        self._sessions[session.key] = session
                        self._publish(session)
                        self._follow_with_ticket(session)
                    elif kind == "token" and session is not None:
                        session.generated.append(event["text"])
                        session.events.append((event["ids"], event["text"]))
                        session.tokens += event["ids"]
                        if session.position - session.published_position >= REPUBLISH_TOKENS:
                            self._publish(session)
                        self._progress(session)
                    elif kind == "end" and session is not None and not golden:
                        self.golden.request_ended(request.messages is not None, len(session.events))
                    yield event
        finally:
            if session is not None:
                self._sessions.pop(session.key, None)

    def _follow_with_ticket(self, session: _Session) -> None:
        """Now and then, a golden ticket at a random time after a real request (never its text)."""
        if session.golden:
            log.debug("golden ticket %s", session.key)
            return
        wait_s = self.golden.request_started()
        if wait_s is not None:
            self._spawn(
                self.golden.run(
                    self._local, self._scheduler, self.admitted_scouts, lambda r: self.generate(r, golden=True), wait_s
                )
            )

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _publish(self, session: _Session) -> None:
        if session.publishing:  # one publish at a time per request; the next picks up the newest text
            return
        scouts, peers = self._targets(session)
        sidecar = self._network()
        if not scouts or sidecar is None:
            return
        work = session.next_work(MAX_DRAFT)
        session.publishing = True

        async def send() -> None:
            try:
                await sidecar.call(
                    "POST", "/broadcast-work", {"work": work.to_dict(), **({"peers": peers} if peers else {})}
                )
            except SidecarError as exc:
                log.debug("publishing work %s failed: %s", work.work_id, exc)
            finally:
                session.publishing = False

        self._spawn(send())

    def _progress(self, session: _Session) -> None:
        """Stream the newly decided tokens to the request's scouts (one message in flight; the
        next carries everything decided meanwhile). Never awaited by the generation."""
        if session.progressing:
            return
        scouts, peers = self._targets(session)
        sidecar = self._network()
        if not scouts or sidecar is None:
            return
        session.progressing = True

        async def send() -> None:
            try:
                while self._sessions.get(session.key) is session:
                    progress = session.next_progress()
                    if progress is None:
                        break
                    await sidecar.call(
                        "POST",
                        "/broadcast-work",
                        {"work": progress.to_dict(), **({"peers": peers} if peers else {})},
                    )
            except SidecarError as exc:
                log.debug("progress for %s not sent: %s", session.key, exc)
            finally:
                session.progressing = False

        self._spawn(send())

    # -- drafts from scouts ---------------------------------------------------------------------

    async def on_draft(self, sender: str, payload: Any, gossip: bool = False) -> Verdict:
        """Check one draft from `sender` (the sidecar's authenticated source), have the verifier
        check it, credit the sender. Never raises for bad input: it is ignored and counted.
        `gossip`: it came on the open result topic, where every subscriber reads it and could send
        it first over the direct protocol to be paid for it: such drafts are never checked or paid
        (drafts go direct only), so publishing one earns nothing and copying one is worth nothing."""
        work_id = payload.get("work_id", "") if isinstance(payload, dict) else ""
        metrics = self._metrics
        try:
            session, draft = self._admit(sender, payload)
            if gossip:
                raise Ignored("gossip")
        except Ignored as why:
            metrics.drafts_ignored.labels(str(why)).inc()
            log.debug("draft from %s ignored: %s", sender, why)
            return Verdict(work_id=str(work_id)[: messages.MAX_WORK_ID], outcome="ignored", reason=str(why))
        # A shadow-paused scout's drafts are checked too: its verdicts must look (and take as long) as anyone's.
        pace = self._pace.setdefault(sender, _Pace())
        if pace.rest > 0:  # its last drafts got nothing accepted: this one is not worth a check
            pace.rest -= 1
            metrics.drafts_ignored.labels("resting").inc()
            return Verdict(work_id=draft.work_id, outcome="ignored", reason="resting")
        verifier = self._local.verifier
        try:
            if verifier is None:
                raise VerifierUnavailable("no verifier")
            result = await verifier.draft(
                DraftRequest(
                    job=session.job,
                    position=draft.position,
                    text=draft.text,
                    tokens=draft.tokens,
                    # A draft that states its tokens' confidence is cut by the engine, token by token
                    # (policy.Calibration); the pace's length cut it short where the scout was sure.
                    limit=pace.limit if draft.confidence is None else 0,
                    source=sender,
                    confidence=draft.confidence,
                )
            )
        except ShardError as exc:
            log.debug("draft %s not checked: %s", draft.work_id, exc)
            return Verdict(work_id=draft.work_id, outcome="finished", reason="the generation is no longer running")
        # A "missed" draft (late, and its start guessed what was generated wrong) does not rest the
        # scout here: the engine counts it against the scout's acceptance, so its next drafts are
        # not checked while it keeps missing; resting it would also leave golden tickets unscored.
        if result.outcome != "verified" or result.proposed == 0:  # stale, ended, or not worth a check
            if session.golden and result.outcome in ("stale", "missed"):  # a greedy ticket's: wrong, if it disagrees
                self._late_for_ticket(sender, session, draft, pace.limit)
            metrics.drafts_ignored.labels(result.outcome if result.outcome != "verified" else "unpaid").inc()
            if result.outcome == "missed":  # a wrong guess: the scout is told so (and rests), not just "late"
                return Verdict(work_id=draft.work_id, outcome="ignored", reason="missed")
            return Verdict(work_id=draft.work_id, outcome=result.outcome)
        proposed, accepted = result.proposed, result.accepted
        if session.golden:  # a golden ticket: checked like any work, and kept as the sender's honesty score
            self.golden.record(sender, proposed, accepted)
        pace.update(proposed, accepted)
        metrics.draft_proposed.labels("scout").inc(proposed)
        metrics.draft_accepted.labels("scout").inc(accepted)
        receipt = None
        paused = self.golden.paused(sender)
        if paused:
            metrics.drafts_ignored.labels("shadow_paused").inc()  # checked, answered as usual, never credited here
        if proposed:
            ledger, network = self._ledger(), self._network()
            try:
                if not paused and ledger is not None:
                    ledger.record_draft(sender, f"{draft.ref}:{sender}", proposed, accepted)
            except LedgerError as exc:
                log.error("%s", exc)
            if accepted and network is not None:
                try:
                    receipt = await receipts.issue(network, "draft", sender, draft.ref, accepted)
                except SidecarError as exc:
                    log.debug("cannot sign a receipt: %s", exc)
        return Verdict(work_id=draft.work_id, outcome="verified", proposed=proposed, accepted=accepted, receipt=receipt)

    def _late_for_ticket(self, sender: str, session: _Session, draft: Draft, limit: int) -> None:
        offset = draft.position - session.prompt_len
        score = self.golden.record_late(sender, draft, session.events, offset, limit)
        ledger = self._ledger()
        if score is not None and ledger is not None and not self.golden.paused(sender):
            with contextlib.suppress(LedgerError):  # booked as a draft with nothing accepted: no credit
                ledger.record_draft(sender, f"{draft.work_id}:{sender}", score[0], 0)

    def _admit(self, sender: str, payload: Any) -> tuple[_Session, Draft]:
        """The draft's live session, or Ignored with the reason."""
        if isinstance(payload, dict) and (
            _size(payload.get("text")) > messages.MAX_DRAFT_CHARS
            or _size(payload.get("tokens")) > messages.MAX_SESSION_DRAFT_TOKENS
        ):
            raise Ignored("oversize")  # a peer's junk of any other type (5, true, {}) is "invalid" below
        try:
            draft = Draft.from_dict(payload)
        except MessageError:
            raise Ignored("invalid") from None
        s = self._settings()
        session = self._sessions.get(draft.work_id.split(".", 1)[0])
        if session is None or draft.work_id not in session.works:
            raise Ignored("unknown_work")  # another node's work, or work that ended or was superseded
        if self._peers.peers.get(sender) is None or not self._peers.admitted(sender, s.prompt_privacy, s.trusted_peers):
            raise Ignored("not_admitted")
        if session.exclude_local and self._is_local(sender):
            raise Ignored("not_admitted")  # a scout on this machine, sitting this request out
        position, published = session.works[draft.work_id]
        # One draft per work at its position, or (a drafting session: seq > 0) drafts from any
        # position the generation has reached since, as the scout follows the progress messages.
        if draft.position != position and not (draft.seq and position < draft.position <= session.position):
            raise Ignored("wrong_position")
        why = session.heard(
            (draft.work_id, sender, draft.seq),
            (draft.work_id, draft.position, draft.text or tuple(draft.tokens or ())),
            sender,
        )
        if why:
            raise Ignored(why)
        if draft.seq <= 1:  # the first answer to the work: how long the scout took
            self._metrics.draft_round_trip.observe(time.monotonic() - published)
        return session, draft

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
