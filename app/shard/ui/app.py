"""The tray application: PySide6 + qasync around the same asyncio core as `shard serve`.

One asyncio loop runs on Qt's loop (qasync). The core (`shard.node.Node`) never imports Qt: this
module observes it through `node.subscribe` and commands it through its coroutines, each started as
a task that is kept referenced until it ends. Nothing here blocks the loop.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import PySide6  # noqa: F401  (PySide6 before qasync, so qasync binds to it)
from PySide6.QtCore import QObject, QTimer, QUrl, Signal
from PySide6.QtGui import QAction, QDesktopServices, QGuiApplication
from PySide6.QtWidgets import QApplication, QMenu, QSystemTrayIcon

from shard import __version__, autostart, models, paths
from shard.config import ConfigError, Settings
from shard.node import Node, NodeEvent, NodeStartError
from shard.ui import data, icons
from shard.ui.log_capture import RingHandler
from shard.updates import UpdateChecker, UpdateResult

log = logging.getLogger("shard.ui")

CREDIT_MILESTONES = (10, 100, 1_000, 10_000, 100_000, 1_000_000)
NOTIFICATION_KINDS = {
    "peer_joined": "A peer joined",
    "credit": "Credit milestones",
    "model_downloaded": "A model was downloaded",
    "update": "A new version is available",
}

NO_TRAY_REASON = (
    "No system tray is available on this desktop (headless, or a Linux desktop without a "
    "StatusNotifier host), so Shard shows this window instead. Closing it quits Shard."
)


class ShardApp(QObject):
    """Owns the node, the actions (shared by the tray menu and the window) and the tray icon."""

    state_changed = Signal(str, str)  # tray state, status line
    node_event = Signal(object)  # every NodeEvent, re-emitted for the pages
    notified = Signal(str, str)  # title, message
    flashed = Signal(str)  # a short confirmation ("Copied …") for the window's status bar

    def __init__(
        self,
        settings: Settings,
        config_file: Path,
        ring: RingHandler | None = None,
        tray_available: bool | None = None,
        launch_args: list[str] | None = None,
    ) -> None:
        super().__init__()
        # A tray app: closing its window (Quit closes it before the node has stopped) must not end
        # Qt's loop, and with it the asyncio loop that still has the node to stop.
        QGuiApplication.setQuitOnLastWindowClosed(False)
        self.config_file = config_file
        # What start at login passes to `shard`, so that it starts this same node (see autostart).
        self.launch_args = (
            launch_args if launch_args is not None else autostart.node_args(settings.data_path, config_file)
        )
        self.ring = ring or RingHandler()
        self.node = Node(settings, config_file)  # it saves and applies settings changes (apply_settings)
        self.node.subscribe(self._on_node_event)
        self.tray_available = QSystemTrayIcon.isSystemTrayAvailable() if tray_available is None else tray_available
        self.tray_state = "starting"
        self.status_line = "Starting"
        self.notifications: list[tuple[str, str]] = []
        self.start_error = ""
        self._tasks: set[asyncio.Task[Any]] = set()
        self._done = asyncio.Event()
        self._last_status = ""
        self._busy = False  # a start or stop is under way
        self.updates = UpdateChecker(
            settings.update_feed_url, __version__, settings.update_check, on_result=self._on_update
        )
        self._credit_seen: float | None = None  # lifetime credit at the last milestone check
        self.milestones = QTimer(self)
        self.milestones.setInterval(15_000)
        self.milestones.timeout.connect(self.check_milestones)

        from shard.ui.dashboard import Dashboard  # after the QApplication exists

        self._build_actions()
        self.window = Dashboard(self)
        self.tray = QSystemTrayIcon(icons.tray_icon("starting"), self)
        self.tray.setToolTip("Shard")
        self.tray.setContextMenu(self.menu)
        self.tray.activated.connect(self._on_tray_activated)
        self.tray_icon_state = "starting"

    # -- actions ----------------------------------------------------------------------------------

    def _build_actions(self) -> None:
        self.menu = QMenu()
        self.actions: dict[str, QAction] = {}
        a = self.actions

        def add(key: str, text: str, slot: Callable[[], Any] | None = None, enabled: bool = True) -> QAction:
            act = QAction(text, self)
            act.setEnabled(enabled)
            if slot is not None:
                act.triggered.connect(lambda _checked=False: slot())
            a[key] = act
            self.menu.addAction(act)
            return act

        add("status", "Starting", enabled=False)
        self.menu.addSeparator()
        add("dashboard", "Open Dashboard", lambda: self.show_window("overview"))
        add("copy_url", "Copy API URL", self.copy_api_url)
        add("pause", "Pause contributing", self.toggle_contributing)
        add("start_stop", "Stop node", self.toggle_running)
        add("scout", "Open Web Scout", self.open_scout)
        add("logs", "Open logs folder", self.open_logs_folder)
        add("models", "Models…", lambda: self.show_window("models"))
        add("settings", "Settings…", lambda: self.show_window("settings"))
        add("about", "About Shard", lambda: self.show_window("about"))
        self.menu.addSeparator()
        add("quit", "Quit Shard", self.quit)

    def copy_api_url(self) -> None:
        self.copy_text(self.node.api_url, "the API URL")

    def copy_text(self, text: str, what: str) -> None:
        QGuiApplication.clipboard().setText(text)
        log.info("copied %s to the clipboard", what)
        self.flash(f"Copied {what} to the clipboard: {text}" if len(text) < 80 else f"Copied {what} to the clipboard")

    def flash(self, text: str) -> None:
        self.flashed.emit(text)

    def open_url(self, url: str) -> bool:
        """Open a URL in the browser (or a folder in the file manager); say so, with the URL, when nothing opens."""
        qurl = QUrl(url) if "://" in url else QUrl.fromLocalFile(url)
        if url and QDesktopServices.openUrl(qurl):
            return True
        log.error("could not open %s: no browser or file manager answered; open it yourself", url or "(no URL)")
        self.notify("Could not open a browser", f"Open this address yourself: {url}", critical=True)
        return False

    def toggle_contributing(self) -> None:
        self.node.set_contributing(not self.node.contributing)

    def toggle_running(self) -> None:
        if self._busy:
            return
        self.spawn(self.stop_node() if self.node.running else self.start_node(), "start/stop the node")

    @property
    def scout_url(self) -> str:
        return f"http://127.0.0.1:{self.node.port}/scout"

    def open_scout(self) -> None:
        self.open_url(self.scout_url)

    def open_logs_folder(self) -> None:
        folder = paths.log_dir(self.settings.data_path)
        folder.mkdir(parents=True, exist_ok=True)
        self.open_url(str(folder))

    # -- models and the first run -----------------------------------------------------------------

    def first_run_needed(self) -> bool:
        """No model anywhere and no choice made yet: the window opens on the first-run view."""
        return (
            self.node.model_path is None
            and not self.settings.model
            and not self.settings.network_only
            and not models.list_models(self.settings.data_path)
        )

    @property
    def settings(self) -> Settings:
        """The node's settings now (immutable: a change makes a new one, through the node)."""
        return self.node.settings

    def _save(self, changes: dict[str, Any]) -> bool:
        try:
            self.node.change_settings(changes)
        except (ConfigError, OSError) as exc:
            log.error("cannot save %s to %s: %s", ", ".join(changes), self.config_file, exc)
            return False
        return True

    def use_model_file(self, path: Path) -> None:
        """Serve this GGUF from now on (checked first: a wrong file leaves the current model serving)."""
        self.spawn(self._use_model_file(path), f"use {path}")

    async def _use_model_file(self, path: Path) -> None:
        if self.node.running:
            try:
                await self.node.switch_model(path)
            except NodeStartError as exc:
                self.notify("Model not changed", str(exc), critical=True)
                return
        in_folder = path.resolve().parent == paths.models_dir(self.settings.data_path).resolve()
        self._save({"model": path.stem if in_folder else str(path)})

    def use_network_only(self) -> None:
        self._save({"network_only": True})
        self.window.show_page("overview")
        self.refresh_state()

    def show_window(self, page: str | None = None) -> None:
        if page:
            self.window.show_page(page)
        self.window.bring_forward()

    def _on_tray_activated(self, reason: QSystemTrayIcon.ActivationReason) -> None:
        if reason in (QSystemTrayIcon.ActivationReason.Trigger, QSystemTrayIcon.ActivationReason.DoubleClick):
            self.show_window()

    # -- tasks ------------------------------------------------------------------------------------

    def spawn(self, coro: Awaitable[Any], what: str) -> asyncio.Task[Any]:
        """Run a coroutine from a slot; the task stays referenced until done, and its failure is logged."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)

        def done(t: asyncio.Task[Any]) -> None:
            self._tasks.discard(t)
            if not t.cancelled() and t.exception() is not None:
                log.error("could not %s: %s", what, t.exception())

        task.add_done_callback(done)
        return task

    # -- the node ---------------------------------------------------------------------------------

    async def start_node(self) -> bool:
        self._busy = True
        self.start_error = ""
        self._set_state("starting", "Starting")
        try:
            await self.node.start()
            return True
        except NodeStartError as exc:
            self.start_error = str(exc)
            log.error("the node cannot start: %s", exc)
            self.notify("Shard cannot start", str(exc), critical=True)
            self._set_state("error", f"Error: {exc}")
            return False
        finally:
            self._busy = False
            self.refresh_state()

    async def stop_node(self) -> None:
        self._busy = True
        try:
            await self.node.stop()
        finally:
            self._busy = False
            self.refresh_state()

    def quit(self) -> None:
        """Stop the node (verifier and sidecar, cleanly), then end the app."""
        self.spawn(self._quit(), "quit")

    async def _quit(self) -> None:
        log.info("quitting: stopping the node")
        self.window.stop_polling()
        self.tray.hide()
        try:
            await self.node.downloads.close()
            await self.node.stop()
        finally:
            self.window.close_for_good()
            self._done.set()

    def _on_node_event(self, event: NodeEvent) -> None:
        # Called on the loop's thread (the Qt thread under qasync): safe to touch widgets.
        if event.kind == "settings":  # what the tray itself reads of them
            self.updates.enabled = self.settings.update_check
            self.updates.feed_url = self.settings.update_feed_url
            self.node_event.emit(event)
            return
        if event.kind == "download":
            d = event.data
            if d.get("state") == "done" and d.get("done"):
                self.notify("Model downloaded", f"{d.get('name')} is in the models folder", kind="model_downloaded")
            elif d.get("state") == "failed":
                self.notify("The download failed", str(d.get("error")), critical=True)
            self.node_event.emit(event)
            return
        if event.kind == "peer_joined":
            d = event.data
            where = " on this machine" if d.get("local") else ""
            self.notify(
                "A peer joined", f"{data.short_name(str(d.get('peer_id')))}{where} is connected", kind="peer_joined"
            )
            self.node_event.emit(event)
            return
        if event.kind == "child":
            d = event.data
            name, state, message = d.get("name"), d.get("state"), d.get("message") or ""
            if name == "verifier" and state == "failed":
                self.notify("The model failed to load", message, critical=True)
            elif state == "restarting":
                what = "network sidecar" if name == "sidecar" else str(name)
                self.notify(f"The {what} is restarting", message)
        self.refresh_state()
        self.node_event.emit(event)

    def refresh_state(self) -> None:
        status = self.node.status(detail=True)
        if self.start_error and not self.node.running:
            state, line = "error", f"Error: {self.start_error}"
        else:
            state, line = data.tray_state(status)
        if status["status"] == "ok" and self._last_status != "ok":
            self.notify("Shard is ready", f"Serving {status.get('model')} at {self.node.api_url}")
        self._last_status = status["status"]
        self._set_state(state, line)

    def _set_state(self, state: str, line: str) -> None:
        running = self.node.running
        self.actions["status"].setText(line if len(line) < 80 else line[:77] + "…")
        self.actions["pause"].setText("Pause contributing" if self.node.contributing else "Resume contributing")
        self.actions["start_stop"].setText("Stop node" if running else "Start node")
        for key in ("copy_url", "scout"):
            self.actions[key].setEnabled(running)
        if state != self.tray_icon_state:
            self.tray.setIcon(icons.tray_icon(state))
            self.tray_icon_state = state
        self.tray.setToolTip(f"Shard — {line}")
        if (state, line) != (self.tray_state, self.status_line):
            self.tray_state, self.status_line = state, line
            self.state_changed.emit(state, line)

    def _on_update(self, result: UpdateResult) -> None:
        if result.state == "available":
            self.notify("A new version of Shard", f"{result.message}: {result.url}", kind="update")

    def check_milestones(self) -> None:
        """A notification when lifetime credit passes 10, 100, 1,000, …"""
        if not self.node.running:
            return
        earned = float(self.node.counts()["lifetime"]["credit_earned"])
        seen, self._credit_seen = self._credit_seen, earned
        if seen is None:
            return
        passed = [m for m in CREDIT_MILESTONES if seen < m <= earned]
        if passed:
            self.notify(
                "Credit milestone",
                f"This node has earned {passed[-1]:,} credits (one per accepted draft token "
                "or per token served to a peer)",
                kind="credit",
            )

    def notify(self, title: str, message: str, critical: bool = False, kind: str = "") -> None:
        """Tell the user (tray balloon, status bar); `kind` names a notification the user may turn off."""
        if kind and kind not in self.settings.notifications:
            log.info("%s: %s", title, message)
            return
        self.notifications.append((title, message))
        log.log(logging.WARNING if critical else logging.INFO, "notification: %s: %s", title, message)
        if self.tray_available and self.tray.isVisible() and self.tray.supportsMessages():
            icon = QSystemTrayIcon.MessageIcon.Critical if critical else QSystemTrayIcon.MessageIcon.Information
            self.tray.showMessage(title, message, icon, 8000)
        self.notified.emit(title, message)

    # -- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Show the tray (or the window where there is no tray), then start the node."""
        if self.tray_available:
            self.tray.show()
        else:
            log.warning("no system tray is available here: showing the dashboard window instead")
            self.window.set_banner(NO_TRAY_REASON)
            self.window.bring_forward()
        ok = await self.start_node()
        if ok and self.first_run_needed():
            self.window.show_page("welcome")
            self.window.bring_forward()
        self.milestones.start()
        self.spawn(self.updates.run(), "check for updates")  # it reads the on/off setting before each check

    async def run(self) -> int:
        app = QApplication.instance()
        assert app is not None
        app.aboutToQuit.connect(self._done.set)  # a session logout, say: end main() so the loop can stop
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, self.quit)
            except (NotImplementedError, RuntimeError, ValueError):  # Windows
                pass
        await self.start()
        await self._done.wait()
        await self.node.downloads.close()  # their partial files stay: the next pull resumes
        if self.node.running:
            await self.node.stop()
        await self._cancel_tasks()
        return 0

    async def _cancel_tasks(self) -> None:
        tasks = [t for t in self._tasks if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def shutdown(self) -> None:
        """Stop everything (tests, and the end of run())."""
        self.window.stop_polling()
        self.milestones.stop()
        await self.node.downloads.close()
        await self.node.stop()
        await self._cancel_tasks()
        self.tray.hide()
        self.window.close_for_good()

    @property
    def done(self) -> asyncio.Event:
        return self._done


def run(settings: Settings, config_file: Path, launch_args: list[str] | None = None) -> int:
    """`shard` with no subcommand: the tray app, or bring the running one forward."""
    import psutil

    launched = psutil.Process().create_time()  # the process's start, not this function's
    running = QApplication.instance()
    app = running if isinstance(running, QApplication) else QApplication(sys.argv[:1])
    app.setApplicationName("Shard")
    app.setApplicationDisplayName("Shard")
    app.setDesktopFileName("shard")
    app.setWindowIcon(icons.app_icon())

    from shard.ui.single_instance import SingleInstance

    single = SingleInstance(settings.data_path)
    if not single.acquire():
        if single.notify_running():
            log.info("Shard is already running for %s: brought its window forward", settings.data_path)
            return 0
        log.error("another Shard holds %s but does not answer; quit it first", settings.data_path)
        return 1

    ring = RingHandler()
    logging.getLogger().addHandler(ring)

    import qasync

    shell: ShardApp | None = None

    async def main() -> int:
        nonlocal shell
        shell = ShardApp(settings, config_file, ring, launch_args=launch_args)
        shell.window.launched_at = launched
        single.activated.connect(lambda: shell.show_window() if shell else None)
        return await shell.run()

    try:
        return qasync.run(main())
    except (KeyboardInterrupt, asyncio.CancelledError):
        return 0
    except RuntimeError as exc:  # Qt's loop ended under us (the session is ending): children exit with our pipes
        log.warning("the event loop ended early: %s", exc)
        return 0
    finally:
        single.release()
