"""Cooperative generation: one request decoded by the verifier, with drafts from scouts.

The verifier decodes at full speed on its own (with its prompt-lookup drafter); this module only
adds to it. When the privacy setting admits some connected scouts, it publishes work for the
request (its text so far and the token position: once at the start, then again when the position
has moved on by REPUBLISH_TOKENS or a scout has answered), takes the drafts that come back, checks
who sent them and whether they belong to live work, and hands them to the verifier, which checks
them in its next batched step (reconciling a draft made for an older position with what was
generated since). Nothing here ever waits for the network: with no drafts, it is plain decoding.

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
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from shard.coop.golden import GoldenTickets
from shard.credit import receipts
from shard.credit.ledger import LedgerError
from shard.network import messages
from shard.network.messages import Draft, MessageError, Verdict, Work
from shard.network.sidecar import SidecarError
from shard.verifier.client import VerifierRequestError, VerifierUnavailable
from shard.verifier.protocol import DraftRequest, GenerateRequest

if TYPE_CHECKING:
    from shard.node import Node

log = logging.getLogger("shard.coop")

REPUBLISH_TOKENS = 8  # publish fresh work once the generation moved this far past the last one
MIN_MOVE = 4  # ...or this far, when a scout has just answered (not a publish per answer)
MAX_DRAFT = 16
DEADLINE_MS = 2000
LIVE_WORKS = 8  # work ids of a request that still take drafts (older ones are dropped)


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
    senders: set[tuple[str, str]] = field(default_factory=set)  # (work id, sender) already heard
    contents: set[tuple[str, Any]] = field(default_factory=set)  # (work id, draft text or tokens) already heard
    publishing: bool = False
    draft_model: str = ""  # sha256 of the node's draft model, named in each work
    golden: bool = False  # a golden ticket (the Oracle's own request): its verdicts are honesty scores

    def __post_init__(self) -> None:
        self.prompt_len = len(self.tokens)

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


def _size(value: Any) -> int:
    return len(value) if isinstance(value, (str, list)) else 0


@dataclass
class _Pace:
    """How much of a scout's drafts is worth checking: on a CPU each checked token costs nearly a
    decode step, so a scout's draft length follows its acceptance (as the lookup drafter's does),
    and after a draft with nothing accepted its next drafts rest unchecked (1, 2, 4 ... 64)."""

    limit: int = 4
    rest: int = 0
    backoff: int = 1

    def update(self, proposed: int, accepted: int) -> None:
        self.limit = min(self.limit * 2, MAX_DRAFT) if accepted == proposed else max(1, accepted + 1)
        if accepted == 0:
            self.rest, self.backoff = self.backoff, min(self.backoff * 2, 64)
        else:
            self.backoff = 1


class Ignored(Exception):
    """A draft that is not checked; the text is the reason (a metrics label)."""


class CoopGenerator:
    def __init__(self, node: Node) -> None:
        self.node = node
        self._sessions: dict[str, _Session] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.golden = GoldenTickets(rate=node.settings.golden_rate, on_score=self._keep_golden_score)
        self._pace: dict[str, _Pace] = {}  # per scout (bounded by the peer table's size)

    def _keep_golden_score(self, sender: str, proposed: int, accepted: int) -> None:
        if self.node.ledger is None:
            return
        try:
            self.node.ledger.record_golden(sender, proposed, accepted)
        except LedgerError as exc:
            log.error("%s", exc)

    # -- a request ------------------------------------------------------------------------------

    async def generate(
        self, request: GenerateRequest, share_allowed: bool = True, golden: bool = False
    ) -> AsyncIterator[dict[str, Any]]:
        """The verifier's event stream for `request`, with scouts' drafts fed in when admitted
        (`share_allowed` False keeps the prompt on this machine, e.g. a remote asker's; `golden`:
        a golden ticket, see coop/golden.py)."""
        verifier = self.node.require_verifier()
        share = share_allowed and bool(self.node.admitted_scouts())
        drafter = "lookup" if self.node.settings.draft_lookup else "none"
        request = dataclasses.replace(request, share_context=share, drafter=drafter)
        session: _Session | None = None
        try:
            async with contextlib.aclosing(verifier.generate(request)) as events:
                async for event in events:
                    kind = event["type"]
                    if kind == "start" and share and event.get("context_text"):
                        session = _Session(
                            secrets.token_hex(8),
                            event["job"],
                            self.node.model_id() or "",
                            verifier.model_info.get("vocab", ""),
                            event["context_text"],
                            list(event["context_tokens"]),
                            draft_model=self.node.draft_model.sha256 if self.node.draft_model else "",
                            golden=golden,
                        )
                        self._sessions[session.key] = session
                        self._publish(session)
                        self._follow_with_ticket(session)
                    elif kind == "token" and session is not None:
                        session.generated.append(event["text"])
                        session.events.append((event["ids"], event["text"]))
                        session.tokens += event["ids"]
                        if session.position - session.published_position >= REPUBLISH_TOKENS:
                            self._publish(session)
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
            self._spawn(self.golden.run(self.node, lambda r: self.generate(r, golden=True), wait_s))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _publish(self, session: _Session) -> None:
        if session.publishing:  # one publish at a time per request; the next picks up the newest text
            return
        scouts = self.node.admitted_scouts()
        sidecar = self.node.sidecar
        if not scouts or sidecar is None:
            return
        work = session.next_work(MAX_DRAFT)
        peers = None if self.node.settings.prompt_privacy == "anyone" else scouts
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

    # -- drafts from scouts ---------------------------------------------------------------------

    async def on_draft(self, sender: str, payload: Any, gossip: bool = False) -> Verdict:
        """Check one draft from `sender` (the sidecar's authenticated source), have the verifier
        check it, credit the sender. Never raises for bad input: it is ignored and counted.
        `gossip`: it came on the open result topic, where every subscriber reads it and could send
        it first over the direct protocol to be paid for it: such drafts are never checked or paid
        (drafts go direct only), so publishing one earns nothing and copying one is worth nothing."""
        work_id = payload.get("work_id", "") if isinstance(payload, dict) else ""
        metrics = self.node.metrics
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
        verifier = self.node.verifier
        try:
            if verifier is None:
                raise VerifierUnavailable("no verifier")
            result = await verifier.draft(
                DraftRequest(
                    job=session.job, position=draft.position, text=draft.text, tokens=draft.tokens, limit=pace.limit
                )
            )
        except (VerifierUnavailable, VerifierRequestError) as exc:
            log.debug("draft %s not checked: %s", draft.work_id, exc)
            return Verdict(work_id=draft.work_id, outcome="finished", reason="the generation is no longer running")
        if result.outcome != "verified":  # stale, or the generation ended: counted, not checked
            if session.golden and result.outcome == "stale":  # a greedy ticket's: wrong, if it disagrees
                self._late_for_ticket(sender, session, draft, pace.limit)
            metrics.drafts_ignored.labels(result.outcome).inc()
            return Verdict(work_id=draft.work_id, outcome=result.outcome)
        proposed, accepted = result.proposed, result.accepted
        if session.golden:  # a golden ticket: checked like any work, and kept as the sender's honesty score
            self.golden.record(sender, proposed, accepted)
        pace.update(proposed, accepted)
        metrics.draft_proposed.labels("scout").inc(proposed)
        metrics.draft_accepted.labels("scout").inc(accepted)
        if self._sessions.get(session.key) is session and session.position - session.published_position >= MIN_MOVE:
            self._publish(session)  # that scout is free again: give it the newest position
        receipt = None
        paused = self.golden.paused(sender)
        if paused:
            metrics.drafts_ignored.labels("shadow_paused").inc()  # checked, answered as usual, never credited here
        if proposed:
            try:
                if not paused:
                    self.node.ledger.record_draft(sender, f"{draft.work_id}:{sender}", proposed, accepted)
            except LedgerError as exc:
                log.error("%s", exc)
            if accepted and self.node.sidecar is not None:
                try:
                    receipt = await receipts.issue(self.node.sidecar, "draft", sender, draft.work_id, accepted)
                except SidecarError as exc:
                    log.debug("cannot sign a receipt: %s", exc)
        return Verdict(work_id=draft.work_id, outcome="verified", proposed=proposed, accepted=accepted, receipt=receipt)

    def _late_for_ticket(self, sender: str, session: _Session, draft: Draft, limit: int) -> None:
        offset = draft.position - session.prompt_len
        score = self.golden.record_late(sender, draft, session.events, offset, limit)
        ledger = self.node.ledger
        if score is not None and ledger is not None and not self.golden.paused(sender):
            with contextlib.suppress(LedgerError):  # booked as a draft with nothing accepted: no credit
                ledger.record_draft(sender, f"{draft.work_id}:{sender}", score[0], 0)

    def _admit(self, sender: str, payload: Any) -> tuple[_Session, Draft]:
        """The draft's live session, or Ignored with the reason."""
        if isinstance(payload, dict) and (
            _size(payload.get("text")) > messages.MAX_DRAFT_CHARS
            or _size(payload.get("tokens")) > messages.MAX_DRAFT_TOKENS
        ):
            raise Ignored("oversize")  # a peer's junk of any other type (5, true, {}) is "invalid" below
        try:
            draft = Draft.from_dict(payload)
        except MessageError:
            raise Ignored("invalid") from None
        s = self.node.settings
        session = self._sessions.get(draft.work_id.split(".", 1)[0])
        if session is None or draft.work_id not in session.works:
            raise Ignored("unknown_work")  # another node's work, or work that ended or was superseded
        if self.node.peer_table.peers.get(sender) is None or not self.node.peer_table.admitted(
            sender, s.prompt_privacy, s.trusted_peers
        ):
            raise Ignored("not_admitted")
        position, published = session.works[draft.work_id]
        if draft.position != position:
            raise Ignored("wrong_position")
        if (draft.work_id, sender) in session.senders:
            raise Ignored("duplicate")
        content = (draft.work_id, draft.text or tuple(draft.tokens or ()))
        if content in session.contents:
            raise Ignored("replay")  # another sender's draft, copied: only the first earns
        self.node.metrics.draft_round_trip.observe(time.monotonic() - published)
        session.senders.add((draft.work_id, sender))
        session.contents.add(content)
        return session, draft

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
