"""The asker's side of remote inference: a node with no model of its own has an Oracle peer
generate, over `/shard/infer/1.0.0` through the sidecar, and passes the stream on as if the local
verifier had produced it. If the Oracle fails mid-stream, another one continues from the text
produced so far; when none is left, the stream ends with a clear error. Tokens served are paid
for only with the Oracle's signed receipt. The request shows the Oracle this node's receipts from
other Oracles (credit/vouchers.py), which may lift it in that Oracle's queue.

An Oracle is a peer, so what it says is checked: only Oracles that the privacy setting admits
get the prompt (the same rule as for scouts); its stream has deadlines (a first token within
`remote_timeout_s`, however many "queued" lines it sends, and no silence longer than that after);
it may not send more tokens than asked or claim a token count its text cannot hold; its receipt
may not claim more than it delivered. An Oracle caught breaking these is dropped for good (this
run) and reported in the log and in `shard_oracles_dropped_total{reason}`.

Spot checks: a share (`spot_check_rate`) of answers served whole by one Oracle is checked, in one
place (`_spot_check`) whoever checks. A node that has the Oracle's model checks the answer itself
before it ends (remote/check.py: its verifier scores the Oracle's tokens under the request's
sampling; any sampling), and a liar's answer ends with an error instead of passing as good. A node
without it asks another Oracle the same greedy request in the background and compares (greedy
output is the model's, so honest Oracles with the model agree): on a mismatch a third one decides
and the one outvoted is dropped; with no third, both are dropped (this node cannot tell which lied,
and trusts neither). Either way a liar is dropped and reported as above (reason "spot_check").
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from shard import events
from shard.credit import receipts, vouchers
from shard.credit.ledger import LedgerError
from shard.errors import PeerUnavailable
from shard.events import Failed, Finished, GenerationEvent, Queued, Started, Token
from shard.network.messages import InferRequest
from shard.network.peers import Peer, PeerTable
from shard.network.sidecar import SidecarError
from shard.ports import LedgerProvider, LocalModel, NetworkProvider, SettingsReader, Spawn
from shard.remote import check
from shard.verifier.protocol import GenerateRequest

if TYPE_CHECKING:
    from shard.api.metrics import Metrics

log = logging.getLogger("shard.infer")

MAX_ORACLES = 3  # Oracles tried for one request before giving up
HANDSHAKE_WAIT_S = 5.0  # after a provider lookup, how long to wait for the Oracles' handshakes


class OracleLied(Exception):
    """The Oracle broke the protocol in a way only a dishonest one would; the text says how, the
    reason is the metrics label ("bad_line", "overrun")."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class InferClient:
    def __init__(
        self,
        *,
        settings: SettingsReader,
        network: NetworkProvider,
        ledger: LedgerProvider,
        peers: PeerTable,
        metrics: Metrics,
        spawn: Spawn,
        local: LocalModel | None = None,
    ) -> None:
        self._settings, self._network, self._ledger = settings, network, ledger
        self._peers, self._metrics, self._spawn = peers, metrics, spawn
        self._local = local  # this node's own model, if any: it checks Oracles' answers
        self.failures: dict[str, int] = {}  # per Oracle: streams it broke off (bounded by the peers seen)
        self.dropped = peers.dropped  # Oracles caught lying -> why (never asked again; in the peer listing)

    def oracles(self, model: str = "") -> list[Peer]:
        """Connected Oracles serving `model` (any model for "" or "default"): those that failed
        this node least often first, then the least loaded (from their handshakes), then the
        nearest."""
        network = self._network()
        if network is None or not network.ready:
            return []
        s, table = self._settings(), self._peers
        found = [
            p
            for p in table.peers.values()
            if "oracle" in p.roles
            and p.models
            and (model in ("", "default") or model in p.models)
            and p.peer_id not in self.dropped
            and table.admits(p, s.prompt_privacy, s.trusted_peers, paired_only=False)
        ]
        return sorted(
            found,
            key=lambda p: (
                self.failures.get(p.peer_id, 0),
                p.load / max(p.capacity, 1),
                p.latency_ms if p.latency_ms is not None else 1e9,
            ),
        )

    async def discover(self, model: str) -> None:
        """Look the model's Oracles up in the DHT (Kademlia provider records: beyond this node's
        peers) and wait until those reached have sent their handshakes, so `oracles(model)`
        lists them."""
        sidecar = self._network()
        if sidecar is None or not sidecar.ready or model in ("", "default"):
            return
        try:
            found = await sidecar.call("POST", "/find-providers", {"model": model}, timeout=20.0)
        except SidecarError as exc:
            log.info("provider lookup for %s failed: %s", model, exc)
            return
        reached = {p for p in found.get("connected") or [] if isinstance(p, str)}
        log.info(
            "provider lookup for %s: %d Oracle(s) found, %d reached",
            model,
            len(found.get("providers") or []),
            len(reached),
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + HANDSHAKE_WAIT_S
        while reached and loop.time() < deadline and not any(p.peer_id in reached for p in self.oracles(model)):
            await asyncio.sleep(0.1)

    def models(self) -> list[str]:
        return sorted({m for p in self.oracles() for m in p.models})

    async def generate(self, request: GenerateRequest, model: str) -> AsyncIterator[GenerationEvent]:
        """The request's events, each line parsed and checked once (events.from_remote); token
        events carry their count, not ids (an Oracle's token ids are not this node's to know).
        PeerUnavailable when no Oracle could finish it."""
        sidecar = self._network()
        settings = self._settings()
        produced: list[str] = []
        n_done, started, tried, last_error = 0, False, set(), "no Oracle on the network serves this model"
        for _ in range(MAX_ORACLES):
            candidates = [p for p in self.oracles(model) if p.peer_id not in tried]
            if not candidates:
                await self.discover(model)
                candidates = [p for p in self.oracles(model) if p.peer_id not in tried]
            if not candidates or sidecar is None:
                break
            oracle = candidates[0].peer_id
            tried.add(oracle)
            left = max(request.max_tokens - n_done, 1) if request.max_tokens else 0
            # Peers never get a raw grammar: the schema it came from, which the Oracle compiles itself.
            generate = dataclasses.replace(
                request, max_tokens=left, sampling=dataclasses.replace(request.sampling, grammar=None)
            )
            ask = InferRequest(
                generate=generate.to_dict(),
                model=model,
                continuation="".join(produced),
                vouchers=vouchers.gather(ledger, oracle) if (ledger := self._ledger()) else [],
            )
            wait_s = settings.remote_timeout_s
            deadline = time.monotonic() + wait_s  # for the first token: "queued" lines do not extend it
            lines = sidecar.stream("/infer", {"peer_id": oracle, "request": ask.to_dict()})
            try:
                while True:
                    try:
                        async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                            line = await anext(lines)
                    except StopAsyncIteration:
                        break
                    except TimeoutError:
                        raise SidecarError(f"no token within {wait_s:g} s") from None
                    try:
                        event = events.from_remote(line)
                    except events.BadEvent as exc:
                        raise OracleLied(str(exc), "bad_line") from None
                    if not isinstance(event, Queued):
                        deadline = time.monotonic() + wait_s  # then: no silence longer than that
                    if isinstance(event, Queued):
                        log.info("queued at %s: place %s, about %ss", oracle, event.position, event.eta_s)
                        yield dataclasses.replace(event, oracle=oracle)
                    elif isinstance(event, Started) and not started:
                        started = True
                        yield dataclasses.replace(event, oracle=oracle)
                    elif isinstance(event, Token):
                        if left and n_done + event.n > request.max_tokens:
                            raise OracleLied(f"more tokens than the {request.max_tokens} asked for", "overrun")
                        produced.append(event.text)
                        n_done += event.n
                        yield event
                    elif isinstance(event, Finished):
                        await self._pay(oracle, line.get("receipt"), n_done)
                        if (
                            len(tried) == 1
                            and random.random() < settings.spot_check_rate
                            and await self._spot_check(request, model, oracle, "".join(produced))
                        ):
                            raise PeerUnavailable(
                                f"Oracle {oracle[-8:]} answered text the model would not write (checked here): "
                                "it was dropped; ask again"
                            )
                        yield Finished(event.reason, {**event.usage, "completion_tokens": n_done}, oracle)
                        return
                    elif isinstance(event, Failed):
                        raise SidecarError(event.message)
                raise SidecarError("the Oracle closed the stream before the end")
            except OracleLied as exc:
                self._drop(oracle, str(exc), exc.reason)
                last_error = f"Oracle {oracle[-8:]}: {exc}"
            except SidecarError as exc:
                last_error = f"Oracle {oracle[-8:]}: {exc}"
                self.failures[oracle] = self.failures.get(oracle, 0) + 1
                while len(self.failures) > 1024:
                    self.failures.pop(next(iter(self.failures)))
                self._metrics.remote_failovers.inc()
                log.warning(
                    "remote inference: %s; %s",
                    last_error,
                    "trying another Oracle" if len(tried) < MAX_ORACLES else "giving up",
                )
            finally:
                await lines.aclose()
        raise PeerUnavailable(f"no local model, and the network could not serve the request: {last_error}")

    async def _spot_check(self, request: GenerateRequest, model: str, oracle: str, text: str) -> bool:
        """Check `oracle`'s answer `text`: with this node's own model now (True: it lied, and is
        dropped), else, for a greedy request, against other Oracles in the background."""
        agrees = await check.by_local_model(self._local, request, model, text) if self._local else None
        if agrees is None:
            if request.sampling.temperature == 0:
                self._spawn(self._second_opinion(request, model, oracle, text))
            return False
        if agrees:
            log.info("spot check: Oracle %s's answer is the model's (checked here)", oracle)
            return False
        self._drop(oracle, "its answer is not one the model would write (checked with this node's model)", "spot_check")
        return True

    async def _second_opinion(self, request: GenerateRequest, model: str, first: str, text: str) -> None:
        """Ask other Oracles the same greedy request; drop whoever disagrees with the rest."""
        answers = {first: text}
        for other in [p.peer_id for p in self.oracles(model) if p.peer_id != first][:2]:
            got = await self._answer_of(other, request, model)
            if got is None:
                continue  # no answer is no evidence
            answers[other] = got
            if got == text and len(answers) == 2:
                return  # the second agrees with the first: checked
            if len(answers) == 3:
                break
        if len(answers) < 2:
            return
        for oracle, said in answers.items():
            agree = sum(1 for a in answers.values() if a == said)
            if agree * 2 <= len(answers):  # not in a majority (with two that disagree: both)
                self._drop(
                    oracle, f"its greedy answer differs from another Oracle's ({len(answers)} asked)", "spot_check"
                )

    async def _answer_of(self, oracle: str, request: GenerateRequest, model: str) -> str | None:
        """`oracle`'s whole text for the request (the same checks as a served stream), or None."""
        sidecar = self._network()
        if sidecar is None:
            return None
        generate = dataclasses.replace(request, sampling=dataclasses.replace(request.sampling, grammar=None))
        ask = InferRequest(generate=generate.to_dict(), model=model, continuation="", vouchers=[])
        parts: list[str] = []
        n_done = 0
        lines = sidecar.stream("/infer", {"peer_id": oracle, "request": ask.to_dict()})
        try:
            async with asyncio.timeout(self._settings().remote_timeout_s):
                async for line in lines:
                    try:
                        event = events.from_remote(line)
                    except events.BadEvent:
                        continue  # a line that proves nothing; the text is compared without it
                    if isinstance(event, Token):
                        parts.append(event.text)
                        n_done += event.n
                    elif isinstance(event, Finished):
                        await self._pay(oracle, line.get("receipt"), n_done)
                        return "".join(parts)
                    elif isinstance(event, Failed):
                        return None
        except (TimeoutError, SidecarError):
            return None
        finally:
            await lines.aclose()
        return None

    def _drop(self, oracle: str, why: str, reason: str) -> None:
        """An Oracle caught lying: never asked again, and said so."""
        self.dropped[oracle] = why
        while len(self.dropped) > 4096:
            self.dropped.pop(next(iter(self.dropped)))
        self._metrics.oracles_dropped.labels(reason).inc()
        log.warning("Oracle %s dropped: %s (reported; it is not asked again)", oracle, why)

    async def _pay(self, oracle: str, signed: Any, tokens: int) -> None:
        """Record what the Oracle served, if its receipt checks out and claims no more than the
        `tokens` it delivered (counted here from its stream)."""
        network, ledger = self._network(), self._ledger()
        if not tokens or network is None or ledger is None:
            return
        ref = signed.get("id", "") if isinstance(signed, dict) else ""
        receipt = await receipts.check(
            network,
            signed,
            kind="served",
            issuer=oracle,
            ref=ref if isinstance(ref, str) else "",
            subject=network.peer_id,
            max_amount=float(tokens),
        )
        if receipt is None:
            log.warning("Oracle %s sent no valid receipt for the %d tokens it delivered: not recorded", oracle, tokens)
            return
        try:
            ledger.record("spent", oracle, f"infer:{oracle}:{ref}", amount=receipt.amount, proof=receipts.proof(signed))
        except LedgerError as exc:
            log.error("%s", exc)
