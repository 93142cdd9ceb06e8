"""The node's core: wires settings, the verifier, the scheduler and the API, and publishes state
events that a UI observes. Plain asyncio; it never imports Qt (the tray runs this same core)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import logging
import signal
import sys
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from shard import __version__, events, models, paths
from shard.access_log import FailedRequestLog
from shard.api.app import create_app
from shard.api.metrics import Metrics
from shard.config import Settings, save_settings
from shard.coop import model_transfer
from shard.coop.draft_model import DraftModel, DraftModelError, check_draft_model, find_draft_model
from shard.coop.generator import CoopGenerator
from shard.counters import Counters
from shard.credit.ledger import Ledger, LedgerError
from shard.credit.scheduler import Scheduler
from shard.downloads import DownloadProgress, Downloads
from shard.errors import ModelNotFound, ModelUnavailable, NoModel
from shard.events import GenerationEvent
from shard.model_watch import ModelFolderWatch
from shard.network import pairing
from shard.network.peers import PeerTable, reconcile
from shard.network.sidecar import Sidecar, SidecarError, find_daemon
from shard.remote.client import InferClient
from shard.remote.server import InferServer
from shard.secrets import SecretStore
from shard.supervisor import ChildState, SupervisorEvent
from shard.verifier.client import VerifierClient
from shard.verifier.model_file import ModelLoadError, check_gguf_file
from shard.verifier.protocol import GenerateRequest
from shard.views import NetworkViews

log = logging.getLogger("shard.node")

HEADER_TIMEOUT_S = 15.0  # a connection idle this long, or still sending its headers, is closed
LOAD_ANNOUNCE_S = 2.0  # how often a change of load is told to peers (a handshake to each)


class NodeStartError(Exception):
    """The node cannot start as configured; the message says what to change."""


# Read only when the node starts (its API, scheduler, sidecar): saved, in use from the next start of Shard.
RESTART_SETTINGS = frozenset(
    {
        *("port", "tcp_port", "ws_port", "control_port", "host", "p2p_host", "data_dir", "sidecar", "mdns"),
        *("allowed_hosts", "allowed_origins", "rate_limit_per_minute", "rate_limit_loopback", "max_body_bytes"),
        *("parallel", "max_queue"),
    }
)


@dataclass(frozen=True)
class Applied:
    """What `Node.apply_settings` did: settings in use now, settings saved for the next start,
    and changes refused (setting -> why; the rest still applied)."""

    now: list[str] = field(default_factory=list)
    needs_restart: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)
    reloaded: str = ""  # "model" (a new one is loading) or "n_gpu_layers" (reloading with them)


@dataclass(frozen=True)
class ModelLoad:
    """Where loading the local model stands, for views (the tray's pages read this, not the supervisor)."""

    state: str  # "none" (no model), "loading", "loaded", "failed", or another step ("backoff"...)
    name: str = ""  # the model file's name
    progress: float = 0.0  # 0..1 while loading
    message: str = ""  # in words, when not loaded


@dataclass(frozen=True)
class NodeEvent:
    kind: str  # "state", "child"
    data: dict[str, Any] = field(default_factory=dict)


class Node:
    def __init__(self, settings: Settings, config_file: Path | None = None) -> None:
        self.settings = settings  # immutable; apply_settings replaces it
        self.config_file = config_file  # where apply_settings saves changes (None: not saved)
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
        self._tasks: set[asyncio.Task[Any]] = set()
        # The parts get what they use (ports.py), read when they use it: the sidecar restarts, the
        # ledger opens at start, a settings change makes a new Settings.
        settings_now, network, ledger = (lambda: self.settings), (lambda: self.sidecar), (lambda: self.ledger)
        self.coop = CoopGenerator(
            settings=settings_now,
            network=network,
            ledger=ledger,
            peers=self.peer_table,
            local=self,
            scheduler=self.scheduler,
            metrics=self.metrics,
        )
        self.infer_server = InferServer(
            settings=settings_now,
            network=network,
            ledger=ledger,
            local=self,
            scheduler=self.scheduler,
            generate=self.coop.generate,
        )
        self.infer_client = InferClient(
            settings=settings_now,
            network=network,
            ledger=ledger,
            peers=self.peer_table,
            metrics=self.metrics,
            spawn=self._spawn,
            local=self,
        )
        self._announced: dict[str, Any] | None = None  # the local info peers have now
        self.views = NetworkViews(
            sidecar=lambda: self.sidecar,
            sidecar_note=lambda: self.sidecar_note,
            peers=self.peer_table,
            ledger=ledger,
            shadow_paused=self.coop.golden.paused,
        )
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

    def _on_network_event(self, raw: dict[str, Any]) -> None:
        event = events.from_sidecar(raw)  # the daemon's event stream, typed once
        if isinstance(event, events.PeerEvent):
            joined = event.kind == "peer_connected" and event.peer_id not in self.peer_table.peers
            self.peer_table.apply(event.payload)
            if joined:
                self._publish(
                    NodeEvent("peer_joined", {"peer_id": event.peer_id, "local": bool(event.payload.get("local"))})
                )
        elif isinstance(event, (events.Subscribed, events.Lagged)):
            # What the stream did not carry (before it opened, or dropped while this node read too
            # slowly: a lost peer_disconnected would leave a ghost peer): read it from the daemon.
            if isinstance(event, events.Lagged):
                log.info("sidecar: %d events were dropped; reading its peers again", event.missed)
            if self.sidecar is not None:
                self._spawn(reconcile(self.peer_table, self.sidecar))
        elif isinstance(event, events.Request):
            if event.kind == "result":
                self._spawn(self.coop.on_draft(event.sender, event.payload, gossip=True))
            elif event.kind == "verify_request":
                self._spawn(self._answer_verify(event))
            elif model_transfer.is_fetch(event.payload):
                self._spawn(self._send_draft_model(event))
            else:
                self._spawn(self._serve_peer(event))

    async def _serve_peer(self, event: events.Request) -> None:
        self.counters.add("requests_for_peers")
        await self.infer_server.handle(event.sender, event.payload, event.request_id)

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

    async def _send_draft_model(self, event: events.Request) -> None:
        """A scout fetches the draft model this node announced (and nothing else)."""
        if self.sidecar is None:
            return
        lines = model_transfer.serve(self.draft_model, event.payload)
        try:
            await self.sidecar.send_stream(f"/infer-response?request_id={event.request_id}", lines)
        except SidecarError as exc:
            log.info("sending the draft model to %s ended: %s", event.sender, exc)
        finally:
            await lines.aclose()

    async def _answer_verify(self, event: events.Request) -> None:
        verdict = await self.coop.on_draft(event.sender, event.payload)
        if self.sidecar is not None:
            try:
                await self.sidecar.call(
                    "POST", "/verify-response", {"request_id": event.request_id, "response": verdict.to_dict()}
                )
            except SidecarError as exc:
                log.debug("sidecar: cannot answer a verify request: %s", exc)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)  # a strong reference: the loop keeps only weak ones
        task.add_done_callback(self._tasks.discard)

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

    async def apply_settings(self, changes: dict[str, Any]) -> Applied:
        """Apply and save a change of settings: a new model is loaded (checked first: a file that
        cannot be served is refused, the rest still applies, and the current model keeps serving),
        a new GPU layer count reloads the model; the rest as `change_settings`. ConfigError or
        OSError when the change cannot be saved (nothing is applied then)."""
        changes = {k: v for k, v in changes.items() if getattr(self.settings, k, None) != v}
        self.settings.changed(**changes)  # checked before anything is applied
        refused: dict[str, str] = {}
        switch: Path | None = None
        if changes.get("model") and self.running:
            switch = Path(changes["model"]).expanduser()
            if not switch.exists():  # a name in the models folder, as `--model NAME`
                switch = models.model_file(self.settings.data_path, changes["model"]) or switch
            switch = switch.resolve() if switch.exists() else switch
            try:
                check_gguf_file(switch)
            except ModelLoadError as exc:
                refused["model"] = str(exc)
                del changes["model"]
                switch = None
            if switch == self.model_path:
                switch = None  # already serving it (the Models page switched first)
        applied = dataclasses.replace(self.change_settings(changes), refused=refused)
        if switch is not None:
            await self.switch_model(switch)
            return dataclasses.replace(applied, reloaded="model")
        if "n_gpu_layers" in changes and self.running and self.model_path is not None:
            await self.switch_model(self.model_path)  # the verifier reads the layer count when it starts
            return dataclasses.replace(applied, reloaded="n_gpu_layers")
        return applied

    def change_settings(self, changes: dict[str, Any]) -> Applied:
        """Save `changes` and put them in use: settings read only at start (RESTART_SETTINGS) are
        saved for the next start, the rest replace the node's Settings at once (the core's parts
        read the current one). Published as a "settings" event. No model is (re)loaded here."""
        changes = {k: v for k, v in changes.items() if getattr(self.settings, k, None) != v}
        if not changes:
            return Applied()
        new = self.settings.changed(**{k: v for k, v in changes.items() if k not in RESTART_SETTINGS})
        if self.config_file is not None:
            save_settings(changes, self.config_file)
        self.settings = new
        now = sorted(k for k in changes if k not in RESTART_SETTINGS)
        later = sorted(k for k in changes if k in RESTART_SETTINGS)
        log.info("settings changed: %s", ", ".join(sorted(changes)))
        self._publish(NodeEvent("settings", {"now": now, "needs_restart": later}))
        return Applied(now=now, needs_restart=later)

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
            create_app(self, self.views, s, self.metrics, self.scheduler, self.api_keys),
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
            raise NoModel(
                "no model is loaded on this node and no Oracle on the network serves one: start it with "
                "--model PATH, run `shard models install-default`, or join a network with --bootstrap"
            )
        accepted = set(ids) | set(self.settings.model_aliases) | ({self.model_path.name} if self.model_path else set())
        if allow_default:
            accepted |= {"", "default"}
        if name not in accepted:
            raise ModelNotFound(
                f"the model {name!r} does not exist on this node; it serves {', '.join(map(repr, ids))}", param="model"
            )
        return name if name in ids else ids[0]

    def require_verifier(self) -> VerifierClient:
        if self.verifier is None:
            raise NoModel("no model is loaded on this node")
        return self.verifier

    async def generation(self, request: GenerateRequest, model: str) -> AsyncGenerator[GenerationEvent, None]:
        """One request's typed events: on the local model (with scouts), or, with none (or with
        `prefer_network` and an Oracle of the model connected), on an Oracle peer (PeerUnavailable
        when none could serve it; the local model then spot-checks its answer). A failure
        mid-stream is ModelUnavailable."""
        self.counters.add("requests_local")
        if self.verifier is None or (self.settings.prefer_network and self.infer_client.oracles(model)):
            async for event in self.infer_client.generate(request, model):
                yield event
            return
        async with contextlib.aclosing(self.coop.generate(request)) as lines:
            async for line in lines:
                event = events.from_verifier(line)  # the verifier's stream, typed once
                if isinstance(event, events.Failed):
                    raise ModelUnavailable(event.message)
                yield event

    def model_load(self) -> ModelLoad:
        v = self.verifier
        if v is None:
            return ModelLoad("none")
        state = v.supervisor.state
        if state is ChildState.RUNNING:
            return ModelLoad("loaded", v.model_path.name, 1.0)
        progress = float(v.last_status.get("progress", 0.0)) if state is ChildState.STARTING else 0.0
        name = {ChildState.STARTING: "loading", ChildState.FAILED: "failed"}.get(state, state.value)
        return ModelLoad(name, v.model_path.name, progress, v.describe_state())

    def ports_in_use(self) -> dict[str, int | None]:
        """The ports the node and its sidecar listen on now (None: not in use)."""
        sc = self.sidecar
        info = sc.info if sc is not None and sc.ready else {}
        return {
            "port": self.port if self.running else None,
            "tcp_port": info.get("tcp_port"),
            "ws_port": info.get("ws_port"),
            "control_port": info.get("control_port"),
        }

    def child_lines(self, name: str) -> Sequence[str] | None:
        """The recent output of the "verifier" or "sidecar" child (None when it does not run)."""
        part = self.verifier if name == "verifier" else self.sidecar if name == "sidecar" else None
        return part.supervisor.lines if part is not None else None

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
                    "sidecar": self.views.sidecar_status(),
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
