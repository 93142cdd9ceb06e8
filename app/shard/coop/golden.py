"""Golden tickets: requests the Oracle makes of itself, on prompts it has just made up, whose
drafts are scored apart. A scout's acceptance on them is its honesty score: scouts whose golden
drafts keep failing are shadow-paused (they still get work and verdicts, and earn nothing).

Why tickets are whole requests of the Oracle's own (issue 19, item 2): a ticket cut from a
generation already sent out as work could be answered from memory by a scout with no model, and
one sent with a fresh request key but a later sequence number, right after a real work, could be
told apart. So a ticket here is
- **from a source no peer has seen**: its prompt is sampled by the Oracle's own model, with a
  random seed, from a made-up topic, on this machine (that step is never shared), and no user's
  prompt or generation is ever kept for tickets, so widening the privacy setting later can send
  nothing of an earlier request to anyone;
- **shaped like real work by construction**: it runs through `CoopGenerator.generate` like any
  request (a fresh key, works numbered from 1, republished as it moves, the same 16-token cap, the
  same position, duplicate and replay checks, the same pacing), its length and kind (chat or plain
  prompt) drawn from recent real requests, and its drafts are checked by the verifier itself, so
  verdicts, receipts and their timing are those of real work;
- **sent at random times**: after a real request, with probability `rate`, one ticket follows
  after a random (exponential) wait of about the time between real requests, and only when a slot is
  free that nobody waits for (never the one kept for the owner; it is preempted like a remote job
  if the owner needs its slot).

Scores are kept in the node's ledger (`golden` table) through `on_score`, and read back at start,
so that a restart of the Oracle does not lift a pause.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shard.credit.scheduler import Priority, Scheduler
from shard.errors import ShardError
from shard.network.messages import Draft
from shard.verifier.protocol import GenerateRequest, Sampling

if TYPE_CHECKING:
    from shard.ports import LocalModel

log = logging.getLogger("shard.coop")

MIN_GOLDEN = 3  # golden drafts seen before a scout can be paused
PAUSE_BELOW = 0.1  # acceptance on golden tickets under which a scout is shadow-paused
KEEP_SHAPES = 16  # recent real requests whose shape (kind, length: never text) tickets copy
TRIES = 3  # a ticket that finds the node busy waits again, this many times, then is dropped
# Words a made-up prompt is about; the prompt itself is sampled by the model with a secret seed.
TOPICS = (
    "gardening", "rivers", "bread", "trains", "chess", "volcanoes", "bees", "music", "taxes", "winter",
    "bridges", "coffee", "whales", "maps", "paint", "football", "clocks", "deserts", "salt", "kites",
    "islands", "poetry", "engines", "forests", "markets", "stars", "cheese", "letters", "storms", "glass",
    "bicycles", "history", "medicine", "cooking", "birds", "mountains", "computers", "languages", "money", "sleep",
)  # fmt: skip


@dataclass
class GoldenStats:
    proposed: int = 0
    accepted: int = 0
    drafts: int = 0

    @property
    def paused(self) -> bool:
        return self.drafts >= MIN_GOLDEN and self.accepted < PAUSE_BELOW * max(self.proposed, 1)


@dataclass(frozen=True)
class Shape:
    """What a ticket copies from a real request: whether it was chat, and how long it ran."""

    chat: bool
    tokens: int


class GoldenTickets:
    def __init__(
        self,
        rate: float = 0.1,
        rng: random.Random | None = None,
        on_score: Callable[[str, int, int], None] | None = None,
    ) -> None:
        self.rate = rate  # share of real requests followed (later) by a golden ticket
        self.rng = rng or random.SystemRandom()  # unpredictable to peers: when tickets come, what they say
        self.on_score = on_score  # (sender, proposed, accepted): keeps each score (the ledger)
        self.stats: dict[str, GoldenStats] = {}
        self.shapes: deque[Shape] = deque(maxlen=KEEP_SHAPES)
        self._last_start: float | None = None
        self._gap_s = 10.0  # running mean of the time between real requests' starts

    def load(self, history: dict[str, tuple[int, int, int]]) -> None:
        """Scores kept from earlier runs: per sender (drafts, proposed, accepted)."""
        self.stats = {
            sender: GoldenStats(proposed=proposed, accepted=accepted, drafts=drafts)
            for sender, (drafts, proposed, accepted) in history.items()
        }

    # -- when and what ---------------------------------------------------------------------------

    def request_started(self) -> float | None:
        """A real request began sending work: the wait before a ticket should follow, or None."""
        now = time.monotonic()
        if self._last_start is not None:
            self._gap_s = 0.8 * self._gap_s + 0.2 * min(now - self._last_start, 300.0)
        self._last_start = now
        if self.rng.random() >= self.rate:
            return None
        return self.delay()

    def delay(self) -> float:
        """A random wait (exponential, about the time between real requests): never "right after"."""
        return min(1.0 + self.rng.expovariate(1.0 / max(self._gap_s, 2.0)), 120.0)

    def request_ended(self, chat: bool, tokens: int) -> None:
        if tokens >= 8:
            self.shapes.append(Shape(chat, tokens))

    def prompt_request(self) -> GenerateRequest:
        """The step that makes a ticket's prompt up: sampled with a secret seed, never shared."""
        topic = " and ".join(self.rng.sample(TOPICS, 2))
        return GenerateRequest(
            prompt=f"Here is a question someone asked about {topic}:\n",
            max_tokens=self.rng.randrange(12, 40),
            sampling=Sampling(temperature=1.0, seed=secrets.randbits(31)),
        )

    def ticket_request(self, question: str) -> GenerateRequest:
        """The ticket itself: `question` as a real request of a recent shape would send it."""
        shape = self.rng.choice(self.shapes) if self.shapes else Shape(False, 48)
        return GenerateRequest(
            **({"messages": [{"role": "user", "content": question}]} if shape.chat else {"prompt": question}),
            max_tokens=shape.tokens,
            sampling=Sampling(temperature=0.0),
        )

    # -- scores ----------------------------------------------------------------------------------

    def record(self, sender: str, proposed: int, accepted: int) -> None:
        """The verifier's verdict on `sender`'s draft for a ticket."""
        s = self.stats.setdefault(sender, GoldenStats())
        s.drafts += 1
        s.proposed += proposed
        s.accepted += accepted
        if self.on_score is not None:
            self.on_score(sender, proposed, accepted)

    def record_late(
        self, sender: str, draft: Draft, events: list[tuple[list[int], str]], offset: int, limit: int
    ) -> tuple[int, int] | None:
        """A draft the verifier found stale: a ticket is greedy, so one that disagrees with what the
        ticket generated after its position (`events`, the token events from `offset` tokens past the
        prompt on) was wrong, and fails like one: its (proposed, accepted), recorded; None for one
        that agrees with all of it (only late) or was not made for a position the ticket passed."""
        done = 0
        while events and done < offset:
            done += len(events[0][0])
            events = events[1:]
        if done != offset:
            return None  # not a position the ticket passed through (the verifier said as much)
        if draft.tokens is not None:
            expected = [t for ids, _ in events for t in ids]
            right = next((i for i, (a, b) in enumerate(zip(draft.tokens, expected)) if a != b), None)
            if right is None:
                return None
            score = min(len(draft.tokens), limit), min(right, limit)
        else:
            text, generated = draft.text or "", "".join(piece for _, piece in events)
            if generated.startswith(text) or text.startswith(generated):
                return None
            spelled, right = "", 0
            for _, piece in events:  # whole token events the draft's text spells out
                if not text.startswith(spelled + piece):
                    break
                spelled, right = spelled + piece, right + 1
            score = min(max(right + 1, len(text) // 4), limit), min(right, limit)
        self.record(sender, *score)
        return score

    def paused(self, sender: str) -> bool:
        s = self.stats.get(sender)
        return s is not None and s.paused

    # -- running one -----------------------------------------------------------------------------

    async def run(
        self,
        local: LocalModel,
        scheduler: Scheduler,
        admitted: Callable[[], list[str]],
        generate: Callable[[GenerateRequest], AsyncIterator[dict[str, Any]]],
        wait_s: float,
    ) -> None:
        """After `wait_s`, once the node is idle and scouts are admitted, make a prompt up and run it
        through `generate` (the cooperative path, marked golden) to its end, or until the owner
        needs the slot."""
        for _ in range(TRIES):
            await asyncio.sleep(wait_s)
            verifier = local.verifier
            if verifier is None or not admitted():
                return
            if scheduler.can_start_now(Priority.CONSUMER):  # a slot no one waits for (with 2+, never the owner's)
                break
            wait_s = self.delay()
        else:
            return
        task = asyncio.current_task()
        assert task is not None

        def preempt() -> None:  # the owner needs the slot: the ticket ends (its session with it)
            task.cancel()

        try:
            async with scheduler.admit(Priority.CONSUMER, on_preempt=preempt):
                question = ""
                async for event in verifier.generate(self.prompt_request()):
                    if event.get("type") == "token":
                        question += str(event.get("text", ""))
                question = question.strip().split("\n")[0] or self.rng.choice(TOPICS)
                async for _ in generate(self.ticket_request(question)):
                    pass
        except asyncio.CancelledError:
            log.debug("golden ticket preempted")
        except ShardError as exc:  # the queue is full, the model went away: never worth an error
            log.debug("golden ticket dropped: %s", exc)
