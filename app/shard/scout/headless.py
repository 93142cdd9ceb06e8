"""The headless scout (`shard scout`): a node in scout role that drafts for Oracles.

It runs its own sidecar, announces the role "scout" in the handshake, takes work from the network
(gossip or direct), drafts a continuation with a small llama.cpp model, and hands the draft straight
to the Oracle that sent the work over `/shard/oracle/verify/1.0.0`, which answers with the verdict.
Only the newest work of each request is drafted: older positions would be stale on arrival.
Without a model of its own (`shard scout --bootstrap ADDR`), it fetches the draft model that the
first Oracle it meets announces in its handshake (coop/model_transfer.py), cached in its data dir.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from pathlib import Path
from typing import Any

from shard import __version__
from shard.config import Settings
from shard.coop import model_transfer
from shard.credit import receipts
from shard.credit.ledger import Ledger, LedgerError
from shard.network import pairing
from shard.network.messages import MAX_DRAFT_CHARS, Draft, MessageError, Verdict, Work
from shard.network.peers import PEER_EVENTS, PeerTable, reconcile
from shard.network.sidecar import Sidecar, SidecarError, find_daemon
from shard.supervisor import ChildState, SupervisorEvent
from shard.verifier.model import vocab_fingerprint

log = logging.getLogger("shard.scout")


class LlamaDrafter:
    """Greedy continuation with llama-cpp-python; its prompt cache makes a repeated prefix cheap.
    With the Oracle's tokenizer it drafts in token ids (exact); otherwise in text."""

    def __init__(self, model_path: Path, n_ctx: int = 4096, n_threads: int = 0, name: str = "") -> None:
        from llama_cpp import Llama

        self.llm = Llama(model_path=str(model_path), n_ctx=n_ctx, n_threads=n_threads or None, verbose=False)
        self.name = name or model_path.name
        self.vocab = vocab_fingerprint(self.llm._model.vocab, self.llm.n_vocab())

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


class Scout:
    def __init__(self, settings: Settings, drafter: LlamaDrafter | None) -> None:
        self.settings = settings
        self.drafter = drafter  # None: the draft model is fetched from the first Oracle that offers one
        self.ledger = Ledger(settings.data_path / "ledger.db")
        self.latest: dict[str, tuple[str, Work]] = {}  # request key -> (oracle peer id, newest work)
        self.peers = PeerTable()
        self._fetching: asyncio.Task[None] | None = None
        self._refused: set[str] = set()  # sha256 of draft models that failed their checks
        self._wake = asyncio.Event()
        self.stats = {"work": 0, "drafts": 0, "proposed": 0, "accepted": 0, "stale": 0}
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
        elif kind in ("subscribed", "lagged"):
            asyncio.get_running_loop().create_task(self._reconcile())
        if kind != "work":
            return
        try:
            work = Work.from_dict(event.get("work"))
        except MessageError as exc:
            log.debug("bad work from %s: %s", event.get("from"), exc)
            return
        self.stats["work"] += 1
        if self.drafter is None:
            return
        self.latest[work.work_id.split(".", 1)[0]] = (str(event.get("from")), work)
        while len(self.latest) > 64:  # bounded: the oldest requests go first
            self.latest.pop(next(iter(self.latest)))
        self._wake.set()

    async def _reconcile(self) -> None:
        await reconcile(self.peers, self.sidecar)
        self._maybe_fetch()

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
        log.info("drafting with %s (fetched from %s)", drafter.name, oracle)
        await self._announce()

    async def run(self, stop: asyncio.Event) -> None:
        self.sidecar.start()
        waiter = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                wake = asyncio.ensure_future(self._wake.wait())
                await asyncio.wait([wake, waiter], return_when=asyncio.FIRST_COMPLETED)
                wake.cancel()
                self._wake.clear()
                while self.latest and not stop.is_set():
                    oracle, work = self.latest.pop(next(iter(self.latest)))
                    try:
                        await self._draft_and_send(oracle, work)
                    except Exception:  # a peer's work or verdict must never stop the scout
                        log.exception("work %s from %s failed", work.work_id, oracle)
        finally:
            waiter.cancel()
            if self._fetching is not None:
                self._fetching.cancel()
            await self.sidecar.stop()
            self.ledger.close()

    async def _draft_and_send(self, oracle: str, work: Work) -> None:
        if work.deadline_ms < time.time() * 1000:
            self.stats["stale"] += 1
            return
        assert self.drafter is not None
        try:
            draft = await asyncio.get_running_loop().run_in_executor(None, self.drafter.draft, work)
        except (ValueError, RuntimeError) as exc:  # llama.cpp refusing what a peer sent
            log.warning("cannot draft work %s from %s: %s", work.work_id, oracle, exc)
            return
        if draft is None:
            return
        self.stats["drafts"] += 1
        try:
            answer = await self.sidecar.call("POST", "/send-verify", {"peer_id": oracle, "request": draft.to_dict()})
            verdict = Verdict.from_dict(answer.get("response"))
        except (SidecarError, MessageError) as exc:
            log.debug("draft for %s not delivered: %s", work.work_id, exc)
            return
        self.stats["proposed"] += verdict.proposed
        self.stats["accepted"] += verdict.accepted
        if verdict.accepted:  # counted only with the Oracle's signed receipt for it
            offered = len(draft.tokens) if draft.tokens is not None else work.max_draft  # no receipt may claim more
            receipt = await receipts.check(
                self.sidecar,
                verdict.receipt,
                kind="draft",
                issuer=oracle,
                subject=str(self.sidecar.info.get("peer_id")),
                ref=work.work_id,
                max_amount=float(offered),
            )
            if receipt is None:
                log.warning("the verdict for %s from %s has no valid receipt: not counted", work.work_id, oracle)
            else:
                try:
                    self.ledger.record(
                        "earned",
                        oracle,
                        f"draft:{work.work_id}",
                        amount=receipt.amount,
                        proof=receipts.proof(verdict.receipt or {}),
                    )
                except LedgerError as exc:
                    log.error("%s", exc)
        log.debug("draft %s: %s, %d of %d accepted", work.work_id, verdict.outcome, verdict.accepted, verdict.proposed)


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
