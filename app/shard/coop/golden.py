"""Golden tickets: work whose continuation the Oracle already knows, sent to scouts as if it were
real (same shape, a fresh work id, never reused). A scout's drafts for them are scored against
the known continuation, without the verifier. Scouts whose golden drafts keep failing are
shadow-paused: they still get work and verdicts, and earn nothing.

Scores are kept in the node's ledger (`golden` table) through `on_score`, and read back at start,
so that a restart of the Oracle does not lift a pause.

Known continuations come from this node's own finished greedy generations (a sampled one would
fail honest greedy scouts), and go only to the scouts that the privacy setting admits now.
"""

from __future__ import annotations

import random
import secrets
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from shard.network.messages import Draft, Work

KEEP = 16  # finished generations kept as sources
MIN_GOLDEN = 3  # golden drafts seen before a scout can be paused
PAUSE_BELOW = 0.1  # acceptance on golden tickets under which a scout is shadow-paused


@dataclass
class Finished:
    """A finished greedy generation: token ids and the text of each token event, in order."""

    model: str
    vocab: str
    context: str
    prompt: list[int]
    events: list[tuple[list[int], str]]


@dataclass
class Ticket:
    expected: list[int]
    expected_text: list[str]  # the text of each expected token event
    max_draft: int = 16  # the work's cap: no draft scores more tokens than a real one could
    used: set[str] = field(default_factory=set)  # senders already scored
    contents: set[object] = field(default_factory=set)  # drafts already scored: a copy earns nothing (replay)


@dataclass
class GoldenStats:
    proposed: int = 0
    accepted: int = 0
    drafts: int = 0

    @property
    def paused(self) -> bool:
        return self.drafts >= MIN_GOLDEN and self.accepted < PAUSE_BELOW * max(self.proposed, 1)


class GoldenTickets:
    def __init__(
        self,
        rate: float = 0.1,
        rng: random.Random | None = None,
        on_score: Callable[[str, int, int], None] | None = None,
    ) -> None:
        self.rate = rate  # share of published works followed by a golden ticket
        self.rng = rng or random.Random()
        self.on_score = on_score  # (sender, proposed, accepted): keeps each score (the ledger)
        self.sources: deque[Finished] = deque(maxlen=KEEP)
        self.tickets: dict[str, Ticket] = {}  # work id -> ticket (bounded: oldest dropped)
        self.stats: dict[str, GoldenStats] = {}

    def load(self, history: dict[str, tuple[int, int, int]]) -> None:
        """Scores kept from earlier runs: per sender (drafts, proposed, accepted)."""
        self.stats = {
            sender: GoldenStats(proposed=proposed, accepted=accepted, drafts=drafts)
            for sender, (drafts, proposed, accepted) in history.items()
        }

    def remember(self, finished: Finished) -> None:
        if sum(len(ids) for ids, _ in finished.events) >= 8:
            self.sources.append(finished)

    def maybe_ticket(self, max_draft: int, deadline_ms: int) -> Work | None:
        """Now and then, a golden Work cut from a remembered generation at a random token event."""
        if not self.sources or self.rng.random() >= self.rate:
            return None
        src = self.rng.choice(self.sources)
        cut = self.rng.randrange(0, max(1, len(src.events) - 1))
        before, after = src.events[:cut], src.events[cut:]
        tokens = src.prompt + [t for ids, _ in before for t in ids]
        work_id = f"{secrets.token_hex(8)}.{self.rng.randrange(1, 40)}"  # like a real request's id
        self.tickets[work_id] = Ticket([t for ids, _ in after for t in ids], [text for _, text in after], max_draft)
        while len(self.tickets) > 256:
            self.tickets.pop(next(iter(self.tickets)))
        return Work(
            work_id=work_id,
            model=src.model,
            context=src.context + "".join(text for _, text in before),
            position=len(tokens),
            max_draft=max_draft,
            deadline_ms=deadline_ms,
            vocab=src.vocab,
            tokens=tokens,
        )

    def score(self, sender: str, draft: Draft) -> tuple[int, int] | None:
        """(proposed, accepted) for a draft answering a golden ticket; None if it answers none."""
        ticket = self.tickets.get(draft.work_id)
        if ticket is None:
            return None
        content = draft.text if draft.text is not None else tuple(draft.tokens or ())
        if sender in ticket.used or content in ticket.contents:
            return (0, 0)  # twice from one sender, or a copy of another's (the replay rule of real work)
        ticket.used.add(sender)
        ticket.contents.add(content)
        cap = ticket.max_draft  # the same cap as real work: the verifier checks at most this many
        if draft.tokens is not None:
            tokens = draft.tokens[:cap]
            proposed = len(tokens)
            accepted = next(
                (i for i, (a, b) in enumerate(zip(tokens, ticket.expected)) if a != b),
                min(proposed, len(ticket.expected)),
            )
        else:
            text, proposed, accepted, spelled = draft.text or "", 0, 0, ""
            for piece in ticket.expected_text:  # whole token events the draft's text spells out
                if accepted >= cap or not text.startswith(spelled + piece):
                    break
                spelled += piece
                accepted += 1
            proposed = min(max(accepted + 1, len(text) // 4), cap)
            accepted = min(accepted, proposed)
        s = self.stats.setdefault(sender, GoldenStats())
        s.drafts += 1
        s.proposed += proposed
        s.accepted += accepted
        if self.on_score is not None:
            self.on_score(sender, proposed, accepted)
        return proposed, accepted

    def paused(self, sender: str) -> bool:
        s = self.stats.get(sender)
        return s is not None and s.paused
