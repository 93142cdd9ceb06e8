"""The dashboard window: a header with the node's state and controls, and the pages (Overview,
Models, Peers, Credit, Logs, Settings, About), plus the first-run view shown while there is no model.
It polls the core about once a second, only while it is visible."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QCloseEvent, QHideEvent, QShowEvent
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QListWidget,
    QMainWindow,
    QSizePolicy,
    QStackedWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from shard import catalog, paths
from shard.node import NodeEvent
from shard.ui import data, icons
from shard.ui.pages.about import AboutPage
from shard.ui.pages.credit import CreditPage
from shard.ui.pages.first_run import FirstRunPage
from shard.ui.pages.logs import LogsPage
from shard.ui.pages.models import ModelsPage
from shard.ui.pages.overview import OverviewPage
from shard.ui.pages.peers import PeersPage
from shard.ui.pages.settings import SettingsPage

if TYPE_CHECKING:
    from shard.ui.shell import Shell

log = logging.getLogger("shard.ui")

POLL_MS = 1000


def page_factories(shell: Shell) -> list[tuple[str, str, Callable[[], QWidget]]]:
    """(key, title, make) for each page in the navigation; the newer pages get narrow inputs."""
    node = shell.node
    return [
        ("overview", "Overview", lambda: OverviewPage(lambda: shell.status_line, shell.copy_api_url)),
        (
            "models",
            "Models",
            lambda: ModelsPage(node.downloads, shell.settings.data_path, lambda: node.model_path, shell.use_model_file),
        ),
        ("peers", "Peers", PeersPage),
        ("credit", "Credit", CreditPage),
        ("logs", "Logs", lambda: LogsPage(shell.ring, node.child_lines, shell.flash, shell.open_logs_folder)),
        ("settings", "Settings", lambda: SettingsPage(shell)),
        (
            "about",
            "About",
            lambda: AboutPage(
                shell.settings,
                shell.config_file,
                shell.updates,
                shell.open_url,
                lambda: f"http://127.0.0.1:{node.port}",
            ),
        ),
    ]


class Dashboard(QMainWindow):
    def __init__(self, shell: Shell) -> None:
        super().__init__()
        self.shell = shell
        self.launched_at: float | None = None
        self._shown_logged = False
        self._closing_for_good = False
        self._refreshing = False
        self.setWindowTitle("Shard")
        self.setWindowIcon(icons.app_icon())
        self.resize(980, 660)

        central = QWidget()
        outer = QVBoxLayout(central)
        self.banner = QLabel()
        self.banner.setWordWrap(True)
        self.banner.setStyleSheet(
            "background: #fff3cd; color: #664d03; border: 1px solid #e0c060; border-radius: 4px; padding: 8px;"
        )
        self.banner.hide()
        outer.addWidget(self.banner)

        header = QHBoxLayout()
        self.state_icon = QLabel()
        self.state_icon.setFixedSize(24, 24)
        self.state_text = QLabel(shell.status_line)
        # Ignored: a long state line is cut (its tooltip has it all) rather than widening the window.
        self.state_text.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.state_text.setMinimumWidth(120)
        font = self.state_text.font()
        font.setPointSizeF(font.pointSizeF() * 1.15)
        font.setBold(True)
        self.state_text.setFont(font)
        header.addWidget(self.state_icon)
        header.addWidget(self.state_text, 1)
        self.buttons: dict[str, QToolButton] = {}
        for key in ("pause", "start_stop", "copy_url", "scout"):
            button = QToolButton()
            button.setDefaultAction(shell.actions[key])
            button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
            header.addWidget(button)
            self.buttons[key] = button
        outer.addLayout(header)

        body = QHBoxLayout()
        self.nav = QListWidget()
        self.nav.setFixedWidth(150)
        self.nav.setStyleSheet("QListWidget { font-size: 11pt; } QListWidget::item { padding: 7px 10px; }")
        self.stack = QStackedWidget()
        self.pages: dict[str, Any] = {}
        self.keys: list[str] = []
        for key, title, make in page_factories(shell):
            page = make()
            self.pages[key] = page
            self.keys.append(key)
            self.stack.addWidget(page)
            self.nav.addItem(title)
        # The first-run view: in the stack, not in the navigation.
        self.pages["welcome"] = FirstRunPage(
            shell.node.downloads,
            catalog.DEFAULT,
            shell.use_model_file,
            shell.use_network_only,
            paths.models_dir(shell.settings.data_path),
        )
        self.stack.addWidget(self.pages["welcome"])
        self._current = "overview"
        self.nav.currentRowChanged.connect(self._on_page_changed)
        body.addWidget(self.nav)
        body.addWidget(self.stack, 1)
        outer.addLayout(body, 1)
        self.setCentralWidget(central)
        self.statusBar().showMessage("")

        self.timer = QTimer(self)
        self.timer.setInterval(POLL_MS)
        self.timer.timeout.connect(self._tick)
        shell.state_changed.connect(self._on_state)
        shell.notified.connect(lambda title, msg: self.statusBar().showMessage(f"{title}: {msg}", 15000))
        shell.flashed.connect(lambda text: self.statusBar().showMessage(text, 5000))
        shell.node_event.connect(self._on_node_event)
        self._on_state(shell.tray_state, shell.status_line)
        self.nav.setCurrentRow(0)

    # -- pages ------------------------------------------------------------------------------------

    @property
    def current_page(self) -> str:
        return self._current

    def show_page(self, key: str) -> None:
        if key == "welcome":
            self._current = key
            self.nav.blockSignals(True)
            self.nav.setCurrentRow(-1)
            self.nav.blockSignals(False)
            self.stack.setCurrentWidget(self.pages[key])
            return
        if self.nav.currentRow() == self.keys.index(key):
            self._on_page_changed(self.keys.index(key))
        self.nav.setCurrentRow(self.keys.index(key))

    def _on_page_changed(self, row: int) -> None:
        if row < 0:
            return
        self._current = self.keys[row]
        self.stack.setCurrentIndex(row)
        self._tick()

    def _on_node_event(self, event: NodeEvent) -> None:
        if event.kind == "download":
            self.pages["welcome"].on_download(event.data)
            self.pages["models"].on_download(event.data)
        elif event.kind == "models":
            self.pages["models"].refresh()
        if self._current == "welcome" and (self.shell.node.model_path is not None or self.shell.settings.network_only):
            self.show_page("overview")  # a model arrived (downloaded, chosen, or copied in): the first run is over
        if self.isVisible():
            self._tick()

    def _on_state(self, state: str, line: str) -> None:
        self.state_icon.setPixmap(icons.tray_icon(state).pixmap(24, 24))
        self.state_text.setText(line)
        self.state_text.setToolTip(line)

    def set_banner(self, text: str) -> None:
        self.banner.setText(text)
        self.banner.setVisible(bool(text))

    # -- polling ----------------------------------------------------------------------------------

    def _tick(self) -> None:
        if not self.isVisible() or self._refreshing:
            return
        self.shell.spawn(self.refresh(), "refresh the dashboard")

    async def refresh(self) -> data.Snapshot:
        """Read the core once and update the page on screen (the others update when shown)."""
        self._refreshing = True
        try:
            page = self.pages[self.current_page]
            snap = await data.snapshot(self.shell.node, peers=page.needs_peers, credit=page.needs_credit)
            page.refresh(snap)
            return snap
        finally:
            self._refreshing = False

    def stop_polling(self) -> None:
        self.timer.stop()

    # -- showing and hiding -----------------------------------------------------------------------

    def bring_forward(self) -> None:
        if self.isMinimized():
            self.showNormal()
        self.show()
        self.raise_()
        self.activateWindow()

    def showEvent(self, event: QShowEvent) -> None:  # noqa: N802
        super().showEvent(event)
        self.timer.start()
        self._tick()
        if not self._shown_logged:
            self._shown_logged = True
            QTimer.singleShot(0, self._log_shown)

    def _log_shown(self) -> None:
        now = time.time()
        after = f" ({now - self.launched_at:.2f} s after launch)" if self.launched_at else ""
        log.info(
            "window shown at %s.%03d%s", time.strftime("%H:%M:%S", time.localtime(now)), int(now * 1000) % 1000, after
        )

    def hideEvent(self, event: QHideEvent) -> None:  # noqa: N802
        super().hideEvent(event)
        self.timer.stop()  # idle CPU: nothing polls while nobody looks

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802
        if self._closing_for_good:
            event.accept()
            return
        if self.shell.tray_available:
            event.ignore()
            self.hide()  # the tray keeps running; Quit is in its menu
            return
        event.ignore()  # no tray: closing the only window quits, after the node has stopped
        self.shell.quit()

    def close_for_good(self) -> None:
        self._closing_for_good = True
        self.timer.stop()
        self.close()
