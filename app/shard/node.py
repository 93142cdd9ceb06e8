"""The node's core: wires settings, the verifier, the scheduler and the API, and publishes state
events that a UI observes. Plain asyncio; it never imports Qt (the tray runs this same core)."""

from __future__ import annotations

import asyncio
import errno
import logging
import signal
import sys
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from shard import __version__, models, paths
from shard.access_log import FailedRequestLog
from shard.api.app import create_app
from shard.api.errors import ApiError
from shard.api.metrics import Metrics
from shard.config import Settings
from shard.coop import model_transfer
from shard.coop.draft_model import DraftModel, DraftModelError, check_draft_model, find_draft_model
from shard.coop.generator import CoopGenerator
from shard.coop.infer_server import InferServer
from shard.counters import Counters
from shard.credit.ledger import Ledger, LedgerError
from shard.credit.scheduler import Scheduler
from shard.downloads import DownloadProgress, Downloads
from shard.model_watch import ModelFolderWatch
from shard.network import pairing
from shard.network.infer_client import InferClient, RemoteUnavailable
from shard.network.peers import PEER_EVENTS, PeerTable, reconcile
from shard.network.sidecar import Sidecar, SidecarError, find_daemon
from shard.secrets import SecretStore
from shard.supervisor import ChildState, SupervisorEvent
from shard.verifier.client import VerifierClient, VerifierUnavailable
from shard.verifier.model import ModelLoadError, check_gguf_file
from shard.verifier.protocol import GenerateRequest

log = logging.getLogger("shard.node")

HEADER_TIMEOUT_S = 15.0  # a connection idle this long, or still sending its headers, is closed
LOAD_ANNOUNCE_S = 2.0  # how often a change of load is told to peers (a handshake to each)


class NodeStartError(Exception):
    """The node cannot start as configured; the message says what to change."""


@dataclass(frozen=True)
class NodeEvent:
    kind: str  # "state", "child"
    data: dict[str, Any] = field(default_factory=dict)


class Node:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = Metrics(self._live_metrics)
        self.scheduler = Scheduler(settings.parallel, settings.max_queue)
        self.verifier: VerifierClient | None = None
        self.model_path: Path | None = None
        self.draft_model: DraftModel | None = None  # what scouts draft with (coop/draft_model.py)
        self.port = settings.port
        self.started_at = int(time.time())
        self._runner: web.AppRunner | None = None
        self._listeners: list[Callable[[NodeEvent], None]] = []
        self.secrets = SecretStore(settings.data_path)
        self.contributing = True  # the user may pause sharing compute with the network
        self.running = False
        self.ledger: Ledger | None = None
        self.sidecar: Sidecar | None = None
        self.sidecar_note = "disabled (--no-sidecar)" if not settings.sidecar else "not started"
        self.peer_table = PeerTable()
        self.coop = CoopGenerator(self)
        self.infer_server = InferServer(self)
        self.infer_client = InferClient(self)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._announced: dict[str, Any] | None = None  # the local info peers have now
        self.counters = Counters(settings.data_path)
        self._earned_at_start = 0.0
        self.downloads = Downloads(settings.data_path, self._on_download)
        self.model_watch = ModelFolderWatch(paths.models_dir(settings.data_path), self._on_models_changed)

    # -- events for observers (the tray, tests) ---------------------------------------------------

    def subscribe(self, listener: Callable[[NodeEvent], None]) -> None:
        self._listeners.append(listener)

    def _publish(self, event: NodeEvent) -> None:
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                log.exception("an event listener failed")

    def _on_child(self, event: SupervisorEvent) -> None:
        level = logging.WARNING if event.state in (ChildState.BACKOFF, ChildState.FAILED) else logging.INFO
        log.log(level, "%s: %s%s", event.name, event.state.value, f" ({event.message})" if event.message else "")
        self._publish(
            NodeEvent(
                "child",
                {
                    "name": event.name,
                    "state": event.state.value,
                    "pid": event.pid,
                    "restarts": event.restarts,
                    "message": event.message,
                },
            )
        )

    # -- lifecycle --------------------------------------------------------------------------------

    def _resolve_model_path(self) -> Path | None:
        if self.settings.model:
            path = Path(self.settings.model).expanduser()
            named = None if path.exists() else models.model_file(self.settings.data_path, self.settings.model)
            path = named or path  # `--model NAME`: a model in the models folder, as `shard models list` names it
            try:
                check_gguf_file(path)
            except ModelLoadError as exc:
                raise NodeStartError(str(exc)) from None
            return path.resolve()
        return models.pick_model(self.settings.data_path)

    def _resolve_draft_model(self) -> DraftModel | None:
        """The draft model: the setting, checked against the model's tokenizer (a clear error if it
        differs), else the smallest GGUF in the models folder with that tokenizer, else none."""
        s = self.settings
        draft: DraftModel | None
        if s.draft_model:
            if self.model_path is None:
                raise NodeStartError(
                    "a draft model (--draft-model) is for scouts of this node's model: give --model too"
                )
            try:
                draft = check_draft_model(self.model_path, Path(s.draft_model).expanduser())
            except DraftModelError as exc:
                raise NodeStartError(str(exc)) from None
        else:
            draft = find_draft_model(self.model_path, paths.models_dir(s.data_path)) if self.model_path else None
        if draft is not None:
            log.info("draft model for scouts: %s (%.1f MB)", draft.path, draft.size / 1e6)
        return draft

    async def start(self) -> None:
        s = self.settings
        try:
            s.data_path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise NodeStartError(f"cannot create the data dir {s.data_path}: {exc}") from None
        if self.secrets.warning:
            log.warning("%s", self.secrets.warning)
        self.model_path = self._resolve_model_path()
        self.draft_model = await asyncio.to_thread(self._resolve_draft_model)
        try:
            self.ledger = Ledger(s.data_path / "ledger.db")
        except LedgerError as exc:
            raise NodeStartError(str(exc)) from None
        try:
            self.peer_table.pair_key = pairing.node_key(s.data_path)
        except OSError as exc:  # a full disk, a read-only data dir
            self.ledger.close()
            raise NodeStartError(f"cannot write the pairing key in {s.data_path}: {exc}") from None
        self.coop.golden.load(self.ledger.golden_scores())
        await self._start_api()
        self.running = True
        self.started_at = int(time.time())
        self.counters.start()
        self._earned_at_start = float(self.ledger.summary().get("earned", 0.0))
        self._spawn(self.model_watch.run())
        self._spawn(self._save_counters())
        self._start_sidecar()
        if self.model_path is None:
            log.warning(
                "no model: pass --model PATH or NAME, run `shard models pull smollm2-135m`, or drop a GGUF "
                "into the models folder (it is served at once); "
                "requests get 503 until a model is loaded"
            )
        else:
            self._start_verifier(self.model_path)
        self._publish(NodeEvent("state", self.status()))

    def _start_sidecar(self) -> None:
        if not self.settings.sidecar:
            return
        binary = find_daemon(self.settings)
        if binary is None:
            self.sidecar_note = (
                "not found: build it with `cargo build --release --manifest-path sidecar/Cargo.toml` "
                "or set SHARD_DAEMON; the node serves local requests only"
            )
            log.warning("the shard-daemon sidecar is %s", self.sidecar_note)
            return
        self.sidecar = Sidecar(self.settings, binary, self._on_sidecar_child, self._on_network_event)
        self._spawn(self._announce_load())
        self.sidecar.start()

    def _on_sidecar_child(self, event: SupervisorEvent) -> None:
        self._on_child(event)
        if event.state is ChildState.RUNNING and self.sidecar is not None:
            info, st = self.sidecar.info, self.settings
            self.peer_table.me = str(info.get("peer_id") or "")
            log.info(
                "sidecar: peer id %s, control port %s, TCP/QUIC port %s, WebSocket port %s",
                info.get("peer_id"),
                info.get("control_port"),
                info.get("tcp_port"),
                info.get("ws_port"),
            )
            wanted = {
                "control": st.control_port,
                "TCP": st.tcp_port,
                "WebSocket": st.ws_port or (st.tcp_port + 100 if st.tcp_port else 0),
            }
            got = {"control": info.get("control_port"), "TCP": info.get("tcp_port"), "WebSocket": info.get("ws_port")}
            for name, port in wanted.items():
                if port and got[name] != port:
                    log.warning("sidecar: the %s port %d was taken; it uses %s instead", name, port, got[name])
            self._spawn(self._sync_network())
        elif event.state is not ChildState.RUNNING:
            self.peer_table.replace([])

    async def _sync_network(self) -> None:
        """After the daemon (re)starts: tell it what this node offers (its peers are read when the
        event stream opens: peers.reconcile)."""
        if self.sidecar is None:
            return
        try:
            await self._put_local_info(self.sidecar)
        except SidecarError as exc:
            log.warning("sidecar: %s", exc)

    async def _put_local_info(self, sidecar: Sidecar) -> None:
        info = self.local_info()
        await sidecar.call("PUT", "/local-info", info)  # the daemon sends it to every peer as a new handshake
        self._announced = info

    async def _announce_load(self) -> None:
        """Keep peers' view of this node's load current (askers pick the least loaded Oracle):
        a new handshake whenever it changed, at most one per LOAD_ANNOUNCE_S."""
        while True:
            await asyncio.sleep(LOAD_ANNOUNCE_S)
            sidecar = self.sidecar
            if sidecar is None or not sidecar.ready or self._announced is None or self.local_info() == self._announced:
                continue
            try:
                await self._put_local_info(sidecar)
            except SidecarError as exc:
                log.debug("sidecar: %s", exc)

    def local_info(self) -> dict[str, Any]:
        """What the handshake tells peers about this node."""
        oracle = self.model_path is not None and self.contributing
        info = {
            "roles": ["oracle"] if oracle else ["consumer"],
            "models": self.model_ids() if oracle else [],
            "capacity": self.settings.parallel if oracle else 0,
            "load": self.scheduler.in_flight + self.scheduler.depth,
            "agent": f"shard/{__version__}",
        }
        if oracle and self.draft_model is not None:
            info["draft_model"] = self.draft_model.describe()
        return info

    def _on_network_event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind in PEER_EVENTS:
            joined = kind == "peer_connected" and event.get("peer_id") not in self.peer_table.peers
            self.peer_table.apply(event)
            if joined:
                self._publish(
                    NodeEvent("peer_joined", {"peer_id": str(event.get("peer_id")), "local": bool(event.get("local"))})
                )
        elif kind in ("subscribed", "lagged"):  # what the stream did not carry: read it from the daemon
            if self.sidecar is not None:
                self._spawn(reconcile(self.peer_table, self.sidecar))
        elif kind == "result":
            self._spawn(self.coop.on_draft(str(event.get("from")), event.get("result"), gossip=True))
        elif kind == "verify_request":
            self._spawn(self._answer_verify(event))
        elif kind == "infer_request" and model_transfer.is_fetch(event.get("request")):
            self._spawn(self._send_draft_model(event))
        elif kind == "infer_request":
            self._spawn(self._serve_peer(event))

    async def _serve_peer(self, event: dict[str, Any]) -> None:
        self.counters.add("requests_for_peers")
        await self.infer_server.handle(event)

    # -- models: downloads and the models folder ---------------------------------------------------

    def _on_download(self, progress: DownloadProgress) -> None:
        if progress.state == "done":
            self.model_watch.poke()
        self._publish(NodeEvent("download", progress.as_dict()))

    def _on_models_changed(self, files: list[Path]) -> None:
        """A model appeared in (or left) the models folder: with none loaded, serve it now."""
        self._publish(NodeEvent("models", {"files": [str(f) for f in files]}))
        if not self.running or self.verifier is not None or self.settings.model:
            return
        path = models.pick_model(self.settings.data_path)
        if path is None:
            return
        log.info("a model appeared in the models folder: %s", path.name)
        self.model_path = path
        self._start_verifier(path)
        self._publish(NodeEvent("state", self.status()))

    async def _save_counters(self) -> None:
        while True:
            await asyncio.sleep(60)
            await asyncio.to_thread(self.counters.save)

    def counts(self) -> dict[str, Any]:
        """Requests served (for apps here, for peers) and credit earned: this session and lifetime."""
        earned = float(self.ledger.summary().get("earned", 0.0)) if self.ledger is not None else self._earned_at_start
        return {
            "session": {**self.counters.session, "credit_earned": round(earned - self._earned_at_start, 6)},
            "lifetime": {**self.counters.lifetime(), "credit_earned": round(earned, 6)},
            "started_at": self.started_at,
        }

    async def _send_draft_model(self, event: dict[str, Any]) -> None:
        """A scout fetches the draft model this node announced (and nothing else)."""
        if self.sidecar is None:
            return
        lines = model_transfer.serve(self.draft_model, event["request"])
        try:
            await self.sidecar.send_stream(f"/infer-response?request_id={event.get('request_id')}", lines)
        except SidecarError as exc:
            log.info("sending the draft model to %s ended: %s", event.get("from"), exc)
        finally:
            await lines.aclose()

    async def _answer_verify(self, event: dict[str, Any]) -> None:
        verdict = await self.coop.on_draft(str(event.get("from")), event.get("request"))
        if self.sidecar is not None:
            try:
                await self.sidecar.call(
                    "POST", "/verify-response", {"request_id": event.get("request_id"), "response": verdict.to_dict()}
                )
            except SidecarError as exc:
                log.debug("sidecar: cannot answer a verify request: %s", exc)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)  # a strong reference: the loop keeps only weak ones
        task.add_done_callback(self._tasks.discard)

    def admitted_scouts(self) -> list[str]:
        """Connected scouts that may receive this user's prompts (none while the sidecar is down)."""
        if self.sidecar is None or not self.sidecar.ready:
            return []
        return self.peer_table.scouts(self.settings.prompt_privacy, self.settings.trusted_peers)

    def _start_verifier(self, path: Path) -> None:
        self.verifier = VerifierClient(self.settings, path, self._on_child)
        self.verifier.start()
        log.info("loading %s", path)

    async def switch_model(self, path: Path) -> None:
        """Serve another GGUF: checked first, so a wrong pick leaves the current model serving."""
        try:
            check_gguf_file(path)
        except ModelLoadError as exc:
            raise NodeStartError(str(exc)) from None
        if self.verifier is not None:
            await self.verifier.stop()
        self.model_path = path.resolve()
        try:  # the draft model must share the new model's tokenizer
            self.draft_model = await asyncio.to_thread(self._resolve_draft_model)
        except NodeStartError as exc:
            log.warning("no draft model for %s: %s", path.name, exc)
            self.draft_model = None
        self._start_verifier(self.model_path)
        self._publish(NodeEvent("state", self.status()))

    def set_contributing(self, on: bool) -> None:
        self.contributing = on
        log.info("contributing to the network %s", "resumed" if on else "paused")
        self._publish(NodeEvent("state", self.status()))

    def api_keys(self) -> list[str]:
        """Keys from settings (file, environment, flags) and from the OS keyring, read per request
        so that keys changed in the UI take effect at once."""
        return [*self.settings.api_keys, *self.secrets.api_keys()]

    async def _start_api(self) -> None:
        s = self.settings
        # handler_cancellation: a client that disconnects cancels its handler, and so its generation.
        # The access log records only refused and failed requests (401, 429, 503...), so they reach the Logs page.
        # keepalive_timeout also bounds a connection that never finishes its request headers
        # (aiohttp arms it at connect): a flood of half-sent requests is closed, not kept an hour.
        self._runner = web.AppRunner(
            create_app(self),
            handler_cancellation=True,
            access_log=logging.getLogger("shard.api"),
            access_log_class=FailedRequestLog,
            keepalive_timeout=HEADER_TIMEOUT_S,
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, s.host, s.port, reuse_address=sys.platform != "win32")
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            self._runner = None
            if exc.errno == errno.EADDRINUSE:
                raise NodeStartError(
                    f"port {s.port} on {s.host} is in use (another Shard, Ollama or server?); "
                    f"choose another with --port or SHARD_PORT"
                ) from None
            raise NodeStartError(f"cannot listen on {s.host}:{s.port}: {exc}") from None
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        log.info("OpenAI-compatible API on %s", self.api_url)

    async def wait_ready(self, timeout: float | None = None) -> bool:
        return self.verifier is not None and await self.verifier.supervisor.wait_ready(timeout)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.coop.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.verifier is not None:
            await self.verifier.stop()
            self.verifier = None
        if self.sidecar is not None:
            await self.sidecar.stop()
            self.sidecar = None
            self.peer_table.replace([])
        if self.ledger is not None:
            self.ledger.close()
            self.ledger = None
        if self.running:
            self.counters.save()
        self.running = False
        self._publish(NodeEvent("state", self.status()))

    # -- what the API needs -----------------------------------------------------------------------

    @property
    def api_url(self) -> str:
        host = "127.0.0.1" if self.settings.host in ("0.0.0.0", "::") else self.settings.host
        return f"http://{host}:{self.port}/v1"

    def model_id(self) -> str | None:
        if self.model_path is None:
            return None
        return self.settings.model_alias or self.model_path.stem

    def model_ids(self) -> list[str]:
        """The local model, or, with none, the models Oracles on the network serve."""
        mid = self.model_id()
        return [mid] if mid else self.infer_client.models()

    async def look_up_model(self, name: str) -> None:
        """With no local model, a model that no connected Oracle serves is looked up in the DHT
        (Kademlia provider records), so Oracles beyond this node's peers can serve it."""
        if self.model_path is None and name not in ("", "default") and name not in self.model_ids():
            await self.infer_client.discover(name)

    def resolve_model(self, name: str, allow_default: bool = True) -> str:
        """The served model's id for a requested name; an empty name or 'default' means it."""
        ids = self.model_ids()
        if not ids:
            raise ApiError(
                503,
                "no model is loaded on this node and no Oracle on the network serves one: start it with "
                "--model PATH, run `shard models install-default`, or join a network with --bootstrap",
                "no_model",
            )
        accepted = set(ids) | set(self.settings.model_aliases) | ({self.model_path.name} if self.model_path else set())
        if allow_default:
            accepted |= {"", "default"}
        if name not in accepted:
            raise ApiError(
                404,
                f"the model {name!r} does not exist on this node; it serves {', '.join(map(repr, ids))}",
                "model_not_found",
                "model",
            )
        return name if name in ids else ids[0]

    def require_verifier(self) -> VerifierClient:
        if self.verifier is None:
            raise ApiError(503, "no model is loaded on this node", "no_model")
        return self.verifier

    async def generation(self, request: GenerateRequest, model: str) -> AsyncGenerator[dict[str, Any], None]:
        """One request's events: on the local model (with scouts), or, with none, on an Oracle peer."""
        self.counters.add("requests_local")
        if self.verifier is not None:
            async for event in self.coop.generate(request):
                yield event
            return
        try:
            async for event in self.infer_client.generate(request, model):
                yield event
        except RemoteUnavailable as exc:
            raise VerifierUnavailable(f"no local model, and the network could not serve the request: {exc}") from None

    def status(self, detail: bool = False) -> dict[str, Any]:
        v = self.verifier
        if not self.running:
            status, message = "stopped", "the node is stopped"
        elif v is None:
            oracles = len(self.infer_client.oracles())
            status, message = (
                ("ok", f"no local model: requests go to {oracles} Oracle(s) on the network")
                if oracles
                else ("no_model", "no model loaded, and no Oracle on the network yet")
            )
        elif v.supervisor.ready:
            status, message = "ok", "ready"
        elif v.supervisor.state is ChildState.FAILED:
            status, message = "error", v.describe_state()
        else:
            status, message = "loading", v.describe_state()
        out: dict[str, Any] = {
            "status": status,
            "message": message,
            "model": self.model_id(),
            "version": __version__,
            "contributing": self.contributing,
        }
        if detail:
            out.update(
                {
                    "api_url": self.api_url,
                    "model_path": str(self.model_path) if self.model_path else None,
                    "model_info": v.model_info if v else {},
                    "verifier": v.supervisor.snapshot() if v else None,
                    "sidecar": self._sidecar_status(),
                    "queue": {"in_flight": self.scheduler.in_flight, "waiting": self.scheduler.depth},
                }
            )
        return out

    def _live_metrics(self) -> dict[str, float]:
        v = self.verifier
        return {
            "queue_depth": self.scheduler.depth,
            "requests_in_flight": self.scheduler.in_flight,
            "verifier_up": 1.0 if v is not None and v.supervisor.ready else 0.0,
            "verifier_restarts": float(v.supervisor.restarts) if v else 0.0,
        }

    def _sidecar_status(self) -> dict[str, Any]:
        sc = self.sidecar
        if sc is None:
            return {"state": "disabled", "message": self.sidecar_note}
        return {**sc.supervisor.snapshot(), "peer_id": sc.info.get("peer_id"), "peers": len(self.peer_table.peers)}

    def _no_network(self) -> dict[str, Any] | None:
        if self.sidecar is not None and self.sidecar.ready:
            return None
        why = self.sidecar_note if self.sidecar is None else f"the sidecar is {self.sidecar.supervisor.state.value}"
        return {
            "sidecar": "not running",
            "message": f"the libp2p sidecar is {why}: this node has no network "
            "addresses and no peers; it serves only local requests",
        }

    async def topology(self) -> dict[str, Any]:
        down = self._no_network()
        if down is not None:
            return {**down, "peer_id": None, "listen_addrs": [], "ws_addrs": []}
        assert self.sidecar is not None
        try:
            topo = await self.sidecar.call("GET", "/topology")
        except SidecarError as exc:
            return {"sidecar": "error", "message": str(exc), "peer_id": None, "listen_addrs": [], "ws_addrs": []}
        return {"sidecar": "running", **topo}

    async def peers(self) -> dict[str, Any]:
        down = self._no_network()
        if down is not None:
            return {**down, "peers": []}
        await self._fresh_latency()
        ledger = self.ledger
        peers = []
        for p in self.peer_table.listing():
            credit = ledger.peer(p["peer_id"]) if ledger else None
            peers.append(
                {
                    **p,
                    "reputation": round(credit.reputation, 4) if credit else 0.0,
                    "accepted": credit.accepted if credit else 0,
                    "credit": credit.credit if credit else 0.0,
                    "shadow_paused": self.coop.golden.paused(p["peer_id"]),
                }
            )
        return {
            "sidecar": "running",
            "peer_id": self.sidecar.info.get("peer_id") if self.sidecar else None,
            "peers": peers,
        }

    async def _fresh_latency(self) -> None:
        """Round-trip times change after the handshake: read the sidecar's current ping figures."""
        if self.sidecar is None:
            return
        try:
            fresh = (await self.sidecar.call("GET", "/peers"))["peers"]
        except (SidecarError, KeyError, TypeError) as exc:
            log.debug("sidecar: cannot read peer latency: %s", exc)
            return
        for d in fresh if isinstance(fresh, list) else []:
            peer = self.peer_table.peers.get(str(d.get("peer_id"))) if isinstance(d, dict) else None
            latency = d.get("latency_ms") if peer is not None else None
            if (
                peer is not None
                and isinstance(latency, (int, float))
                and not isinstance(latency, bool)
                and 0 <= latency < 3_600_000
            ):
                peer.latency_ms = float(latency)

    def credit(self) -> dict[str, Any]:
        """Balance, earned, spent and per-peer figures from the ledger."""
        if self.ledger is None:
            return {"balance": 0.0, "earned": 0.0, "spent": 0.0, "peers": [], "history": []}
        summary = self.ledger.summary()
        for p in summary["peers"]:  # a scout failing golden tickets: its drafts earn nothing here
            p["shadow_paused"] = self.coop.golden.paused(p["peer_id"])
        return summary


async def run_headless(settings: Settings) -> int:
    """`shard serve`: start the node, run until SIGINT/SIGTERM, stop it cleanly."""
    node = Node(settings)
    await node.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # Windows: Ctrl-C raises KeyboardInterrupt instead
            pass

    async def announce() -> None:
        if await node.wait_ready(settings.verifier_start_timeout_s):
            log.info("ready: point your apps at %s (model %s)", node.api_url, node.model_id())

    announcer = asyncio.create_task(announce())
    try:
        await stop.wait()
    finally:
        announcer.cancel()
        log.info("stopping")
        await node.stop()
    return 0
