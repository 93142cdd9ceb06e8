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
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any

from shard.coop.remote_request import RemoteRequestError, bounded
from shard.credit import receipts, vouchers
from shard.credit.ledger import LedgerError
from shard.credit.scheduler import Priority, QueueFull
from shard.network.messages import InferRequest, MessageError
from shard.network.sidecar import SidecarError
from shard.verifier.client import VerifierRequestError, VerifierUnavailable
from shard.verifier.protocol import ProtocolError

if TYPE_CHECKING:
    from shard.node import Node

log = logging.getLogger("shard.infer")

QUEUE_REPORT_S = 1.0  # how often a waiting asker hears its place in the queue


class InferServer:
    def __init__(self, node: Node) -> None:
        self.node = node

    async def handle(self, event: dict[str, Any]) -> None:
        """Answer one `infer_request` event from the sidecar."""
        sidecar = self.node.sidecar
        if sidecar is None:
            return
        asker = str(event.get("from"))
        lines = self._lines(asker, event.get("request"))
        try:
            await sidecar.send_stream(f"/infer-response?request_id={event.get('request_id')}", lines)
        except SidecarError as exc:
            log.info("remote request from %s ended: %s", asker, exc)
        finally:
            await lines.aclose()  # an asker that went away: stop generating for it

    def _refusal(self, req: InferRequest) -> str:
        node = self.node
        if not node.contributing:
            return "this node has paused sharing its compute"
        if node.verifier is None or not node.verifier.supervisor.ready:
            return "this node has no model ready"
        if req.model not in ("", "default", *node.model_ids()):
            return f"this node serves {node.model_ids()}, not {req.model!r}"
        return ""

    async def _lines(self, asker: str, payload: Any) -> AsyncGenerator[dict[str, Any], None]:
        node = self.node
        try:
            req = InferRequest.from_dict(payload)
            request = bounded(req, node.settings)
        except (MessageError, ProtocolError, RemoteRequestError) as exc:
            yield {"type": "error", "message": f"bad request: {exc}"}
            return
        refusal = self._refusal(req)
        if refusal:
            yield {"type": "error", "message": refusal}
            return
        credit = node.ledger.standing(asker) if node.ledger else 0.0  # less what it vouched for others
        vouched = 0.0
        if req.vouchers and node.ledger is not None and node.sidecar is not None:
            vouched = await vouchers.vouched_credit(node.sidecar, node.ledger, asker, req.vouchers)
        standing = credit + vouched
        priority = Priority.PEER if standing > 0 else Priority.CONSUMER
        served_id = secrets.token_hex(8)
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(maxsize=256)
        tag = object()

        preempted = False

        def preempt() -> None:  # the owner needs the slot: this job ends, the asker may go elsewhere
            nonlocal preempted
            preempted = True
            task.cancel()

        async def run() -> None:
            try:
                async with node.scheduler.admit(priority, standing, tag, on_preempt=preempt):
                    async with contextlib.aclosing(node.coop.generate(request, share_allowed=False)) as events:
                        async for e in events:
                            await queue.put(e)
            except asyncio.CancelledError:
                if not preempted:
                    raise
                log.info("a request from %s was preempted: this node's owner needs the slot", asker)
                with contextlib.suppress(asyncio.QueueFull):
                    queue.put_nowait({"type": "error", "message": "preempted: the Oracle's owner needs the slot"})
            except QueueFull as exc:
                await queue.put({"type": "error", "message": str(exc)})
            except (VerifierUnavailable, VerifierRequestError) as exc:
                await queue.put({"type": "error", "message": str(exc)})
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
                    place = node.scheduler.position(tag)
                    if place:
                        yield {"type": "queued", "position": place, "eta_s": node.scheduler.retry_after()}
                    continue
                if e is None:
                    return
                kind = e["type"]
                if kind == "start":
                    yield {"type": "start", "prompt_tokens": e.get("prompt_tokens", 0)}
                elif kind == "token":
                    yield {"type": "token", "text": e["text"], "n": len(e.get("ids", ()))}
                elif kind == "error":
                    yield {"type": "error", "message": e.get("message", "the generation failed")}
                    return
                elif kind == "end":
                    usage = e.get("usage", {})
                    yield {
                        "type": "end",
                        "finish_reason": e.get("finish_reason"),
                        "usage": usage,
                        "receipt": await self._settle(asker, served_id, int(usage.get("completion_tokens") or 0)),
                    }
                    return
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _settle(self, asker: str, served_id: str, tokens: int) -> dict[str, Any] | None:
        """Record the tokens served to `asker` and sign a receipt for them."""
        node = self.node
        if not tokens or node.sidecar is None:
            return None
        try:
            if node.ledger is not None:
                node.ledger.record("earned", asker, f"served:{served_id}", amount=float(tokens))
            return {"id": served_id, **await receipts.issue(node.sidecar, "served", asker, served_id, tokens)}
        except (LedgerError, SidecarError) as exc:
            log.error("cannot settle %d tokens served to %s: %s", tokens, asker, exc)
            return None
