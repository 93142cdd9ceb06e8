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

Spot checks: a share (`spot_check_rate`) of greedy answers, served whole by one Oracle, is asked
again of another Oracle in the background and compared (greedy output is the model's, so honest
Oracles with the model agree). On a mismatch a third one decides and the one outvoted is dropped;
with no third, both are dropped (this node cannot tell which lied, and trusts neither).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any

from shard.credit import receipts, vouchers
from shard.credit.ledger import LedgerError
from shard.network.messages import InferRequest
from shard.network.peers import Peer
from shard.network.sidecar import SidecarError
from shard.verifier.protocol import GenerateRequest

if TYPE_CHECKING:
    from shard.node import Node

log = logging.getLogger("shard.infer")

MAX_ORACLES = 3  # Oracles tried for one request before giving up
HANDSHAKE_WAIT_S = 5.0  # after a provider lookup, how long to wait for the Oracles' handshakes
MAX_CHARS_PER_TOKEN = 64  # no tokenizer's piece is longer: a claimed token count must cover the text


class OracleLied(Exception):
    """The Oracle broke the protocol in a way only a dishonest one would; the text says how."""


class RemoteUnavailable(Exception):
    """No Oracle on the network can serve the request; the text says why."""


class InferClient:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.failures: dict[str, int] = {}  # per Oracle: streams it broke off (bounded by the peers seen)
        self.dropped: dict[str, str] = {}  # Oracles caught lying -> why (never asked again)

    def oracles(self, model: str = "") -> list[Peer]:
        """Connected Oracles serving `model` (any model for "" or "default"): those that failed
        this node least often first, then the least loaded (from their handshakes), then the
        nearest."""
        if self.node.sidecar is None or not self.node.sidecar.ready:
            return []
        s, table = self.node.settings, self.node.peer_table
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
        sidecar = self.node.sidecar
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

    async def generate(self, request: GenerateRequest, model: str) -> AsyncGenerator[dict[str, Any], None]:
        sidecar = self.node.sidecar
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
                vouchers=vouchers.gather(self.node.ledger, oracle) if self.node.ledger else [],
            )
            wait_s = self.node.settings.remote_timeout_s
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
                    kind = line.get("type")
                    if kind != "queued":
                        deadline = time.monotonic() + wait_s  # then: no silence longer than that
                    if kind == "queued":
                        log.info("queued at %s: place %s, about %ss", oracle, line.get("position"), line.get("eta_s"))
                        yield {
                            "type": "queued",
                            "oracle": oracle,
                            "position": line.get("position"),
                            "eta_s": line.get("eta_s"),
                        }
                    elif kind == "start" and not started:
                        started = True
                        yield {
                            "type": "start",
                            "prompt_tokens": line.get("prompt_tokens", 0),
                            "cached_tokens": 0,
                            "oracle": oracle,
                        }
                    elif kind == "token":
                        text, n = line.get("text"), line.get("n")
                        if (
                            not isinstance(text, str)
                            or isinstance(n, bool)
                            or not isinstance(n, int)
                            or n < 0
                            or len(text) > MAX_CHARS_PER_TOKEN * max(n, 1)
                        ):
                            raise OracleLied("a token line whose count does not match its text")
                        if left and n_done + n > request.max_tokens:
                            raise OracleLied(f"more tokens than the {request.max_tokens} asked for")
                        produced.append(text)
                        n_done += n
                        yield {"type": "token", "text": text, "ids": []}
                    elif kind == "end":
                        usage = dict(line.get("usage") or {})
                        usage["completion_tokens"] = n_done
                        await self._pay(oracle, line.get("receipt"), n_done)
                        if (
                            len(tried) == 1
                            and request.sampling.temperature == 0
                            and random.random() < self.node.settings.spot_check_rate
                        ):
                            self.node._spawn(self._spot_check(request, model, oracle, "".join(produced)))
                        yield {
                            "type": "end",
                            "finish_reason": line.get("finish_reason", "stop"),
                            "usage": usage,
                            "oracle": oracle,
                        }
                        return
                    elif kind == "error":
                        raise SidecarError(str(line.get("message", "the Oracle failed")))
                raise SidecarError("the Oracle closed the stream before the end")
            except OracleLied as exc:
                self._drop(oracle, str(exc), "overrun" if "more tokens" in str(exc) else "bad_line")
                last_error = f"Oracle {oracle[-8:]}: {exc}"
            except SidecarError as exc:
                last_error = f"Oracle {oracle[-8:]}: {exc}"
                self.failures[oracle] = self.failures.get(oracle, 0) + 1
                while len(self.failures) > 1024:
                    self.failures.pop(next(iter(self.failures)))
                self.node.metrics.remote_failovers.inc()
                log.warning(
                    "remote inference: %s; %s",
                    last_error,
                    "trying another Oracle" if len(tried) < MAX_ORACLES else "giving up",
                )
            finally:
                await lines.aclose()
        raise RemoteUnavailable(last_error)

    async def _spot_check(self, request: GenerateRequest, model: str, first: str, text: str) -> None:
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
        sidecar = self.node.sidecar
        if sidecar is None:
            return None
        generate = dataclasses.replace(request, sampling=dataclasses.replace(request.sampling, grammar=None))
        ask = InferRequest(generate=generate.to_dict(), model=model, continuation="", vouchers=[])
        parts: list[str] = []
        n_done = 0
        lines = sidecar.stream("/infer", {"peer_id": oracle, "request": ask.to_dict()})
        try:
            async with asyncio.timeout(self.node.settings.remote_timeout_s):
                async for line in lines:
                    kind = line.get("type")
                    if kind == "token" and isinstance(line.get("text"), str) and isinstance(line.get("n"), int):
                        parts.append(line["text"])
                        n_done += line["n"]
                    elif kind == "end":
                        await self._pay(oracle, line.get("receipt"), n_done)
                        return "".join(parts)
                    elif kind == "error":
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
        self.node.metrics.oracles_dropped.labels(reason).inc()
        log.warning("Oracle %s dropped: %s (reported; it is not asked again)", oracle, why)

    async def _pay(self, oracle: str, signed: Any, tokens: int) -> None:
        """Record what the Oracle served, if its receipt checks out and claims no more than the
        `tokens` it delivered (counted here from its stream)."""
        node = self.node
        if not tokens or node.sidecar is None or node.ledger is None:
            return
        ref = signed.get("id", "") if isinstance(signed, dict) else ""
        receipt = await receipts.check(
            node.sidecar,
            signed,
            kind="served",
            issuer=oracle,
            ref=ref if isinstance(ref, str) else "",
            subject=str(node.sidecar.info.get("peer_id")),
            max_amount=float(tokens),
        )
        if receipt is None:
            log.warning("Oracle %s sent no valid receipt for the %d tokens it delivered: not recorded", oracle, tokens)
            return
        try:
            node.ledger.record(
                "spent", oracle, f"infer:{oracle}:{ref}", amount=receipt.amount, proof=receipts.proof(signed)
            )
        except LedgerError as exc:
            log.error("%s", exc)
