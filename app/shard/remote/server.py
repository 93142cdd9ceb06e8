"""The Oracle's side of remote inference (`/shard/infer/1.0.0`): another node's request, run on the
local model behind this node's own user, ordered by the asker's credit with this node plus what
receipts from other Oracles vouch for it (then by age), streamed back line by line through the
sidecar, and paid for with a signed receipt.

A remote asker's prompt is never shared with this node's scouts: it is not this user's to share.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncGenerator, Callable
from typing import Any

from shard.credit import receipts, vouchers
from shard.credit.ledger import LedgerError
from shard.credit.scheduler import Priority, Scheduler
from shard.errors import ShardError
from shard.events import Failed, Finished, GenerationEvent, Queued, from_verifier, to_remote
from shard.network.messages import InferRequest, MessageError
from shard.network.sidecar import SidecarError
from shard.ports import LedgerProvider, LocalModel, NetworkProvider, SettingsReader
from shard.remote.request import RemoteRequestError, bounded
from shard.verifier.protocol import GenerateRequest, ProtocolError

log = logging.getLogger("shard.infer")

QUEUE_REPORT_S = 1.0  # how often a waiting asker hears its place in the queue


Generate = Callable[..., AsyncGenerator[dict[str, Any], None]]  # CoopGenerator.generate (closable)


class InferServer:
    def __init__(
        self,
        *,
        settings: SettingsReader,
        network: NetworkProvider,
        ledger: LedgerProvider,
        local: LocalModel,
        scheduler: Scheduler,
        generate: Generate,
    ) -> None:
        self._settings, self._network, self._ledger = settings, network, ledger
        self._local, self._scheduler, self._generate = local, scheduler, generate

    async def handle(self, asker: str, payload: Any, request_id: Any) -> None:
        """Answer one `infer_request` from the sidecar: `asker` is its authenticated sender."""
        sidecar = self._network()
        if sidecar is None:
            return
        lines = self._lines(asker, payload)
        try:
            await sidecar.send_stream(f"/infer-response?request_id={request_id}", lines)
        except SidecarError as exc:
            log.info("remote request from %s ended: %s", asker, exc)
        finally:
            await lines.aclose()  # an asker that went away: stop generating for it

    def _refusal(self, req: InferRequest) -> str:
        local = self._local
        if not local.contributing:
            return "this node has paused sharing its compute"
        if local.verifier is None or not local.verifier.supervisor.ready:
            return "this node has no model ready"
        if req.model not in ("", "default", *local.model_ids()):
            return f"this node serves {local.model_ids()}, not {req.model!r}"
        return ""

    async def _lines(self, asker: str, payload: Any) -> AsyncGenerator[dict[str, Any], None]:
        try:
            req = InferRequest.from_dict(payload)
            request: GenerateRequest = bounded(req, self._settings())
        except (MessageError, ProtocolError, RemoteRequestError) as exc:
            yield {"type": "error", "message": f"bad request: {exc}"}
            return
        refusal = self._refusal(req)
        if refusal:
            yield {"type": "error", "message": refusal}
            return
        ledger, network, scheduler = self._ledger(), self._network(), self._scheduler
        credit = ledger.standing(asker) if ledger else 0.0  # less what it vouched for others
        vouched = 0.0
        if req.vouchers and ledger is not None and network is not None:
            vouched = await vouchers.vouched_credit(network, ledger, asker, req.vouchers)
        standing = credit + vouched
        priority = Priority.PEER if standing > 0 else Priority.CONSUMER
        served_id = secrets.token_hex(8)
        queue: asyncio.Queue[GenerationEvent | None] = asyncio.Queue(maxsize=256)
        tag = object()

        preempted = False

        def preempt() -> None:  # the owner needs the slot: this job ends, the asker may go elsewhere
            nonlocal preempted
            preempted = True
            task.cancel()

        async def run() -> None:
            try:
                async with scheduler.admit(priority, standing, tag, on_preempt=preempt):
                    async with contextlib.aclosing(self._generate(request, share_allowed=False)) as events:
                        async for e in events:
                            await queue.put(from_verifier(e))
            except asyncio.CancelledError:
                if not preempted:
                    raise
                log.info("a request from %s was preempted: this node's owner needs the slot", asker)
                with contextlib.suppress(asyncio.QueueFull):
                    queue.put_nowait(Failed("preempted", "preempted: the Oracle's owner needs the slot"))
            except ShardError as exc:  # the queue is full, the model is not ready, the request is refused
                await queue.put(Failed(exc.code, str(exc)))
            finally:
                await queue.put(None)

        task = asyncio.get_running_loop().create_task(run())
        log.info(
            "serving a request from %s (credit %.1f here, %.1f vouched by others: %s)",
            asker,
            credit,
            vouched,
            priority.name.lower(),
        )
        wait_s = 0.1  # the first report comes at once, then one a second
        try:
            while True:
                try:
                    e = await asyncio.wait_for(queue.get(), wait_s)
                except TimeoutError:
                    wait_s = QUEUE_REPORT_S
                    place = scheduler.position(tag)
                    if place:
                        yield to_remote(Queued(place, scheduler.retry_after()))
                    continue
                if e is None:
                    return
                if isinstance(e, Finished):  # the end line carries the receipt for what was served
                    tokens = int(e.usage.get("completion_tokens") or 0)
                    yield {**to_remote(e), "receipt": await self._settle(asker, served_id, tokens)}
                    return
                yield to_remote(e)
                if isinstance(e, Failed):
                    return
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _settle(self, asker: str, served_id: str, tokens: int) -> dict[str, Any] | None:
        """Record the tokens served to `asker` and sign a receipt for them."""
        network, ledger = self._network(), self._ledger()
        if not tokens or network is None:
            return None
        try:
            if ledger is not None:
                ledger.record("earned", asker, f"served:{served_id}", amount=float(tokens))
            return {"id": served_id, **await receipts.issue(network, "served", asker, served_id, tokens)}
        except (LedgerError, SidecarError) as exc:
            log.error("cannot settle %d tokens served to %s: %s", tokens, asker, exc)
            return None
