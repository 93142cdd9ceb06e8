"""About: version, licence, where Shard keeps its files, links, and the update check ("Check now").

Narrow inputs: the settings (read only), the config file's path, the update checker (core) and a
callback that opens a URL (it says so when no browser opens), and the node's origin (its port can differ
from the configured one)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFormLayout, QGroupBox, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from shard import __version__, paths
from shard.config import Settings
from shard.ui import data
from shard.updates import UpdateChecker, UpdateResult

LICENCE = "Apache-2.0"


class AboutPage(QWidget):
    needs_peers = False
    needs_credit = False

    def __init__(
        self,
        settings: Settings,
        config_file: Path,
        updates: UpdateChecker,
        open_url: Callable[[str], bool],
        node_origin: Callable[[], str],
    ) -> None:
        super().__init__()
        self.settings = settings
        self.node_origin = node_origin
        self.updates = updates
        self.open_url = open_url
        self._task: asyncio.Task[Any] | None = None
        layout = QVBoxLayout(self)
        box = QGroupBox("Shard")
        form = QFormLayout(box)
        self.version = QLabel(__version__)
        form.addRow("Version", self.version)
        form.addRow("Licence", QLabel(f"{LICENCE} (the default model, SmolLM2-135M-Instruct: Apache-2.0)"))
        for label, value in (
            ("Data folder", str(settings.data_path)),
            ("Models folder", str(paths.models_dir(settings.data_path))),
            ("Logs folder", str(paths.log_dir(settings.data_path))),
            ("Settings file", str(config_file)),
        ):
            shown = QLabel(value)
            shown.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            form.addRow(label, shown)
        layout.addWidget(box)

        box = QGroupBox("Links")
        links = QVBoxLayout(box)
        self.link_buttons: dict[str, QPushButton] = {}
        for key, text in (
            ("home", "This node's start page"),
            ("openapi", "API description (OpenAPI)"),
            ("scout", "Web Scout"),
        ):
            button = QPushButton(text)
            button.clicked.connect(lambda _c=False, k=key: self.open_url(self.link(k)))
            links.addWidget(button)
            self.link_buttons[key] = button
        layout.addWidget(box)

        box = QGroupBox("Updates")
        form = QFormLayout(box)
        self.update_state = QLabel()
        self.update_state.setWordWrap(True)
        form.addRow("Status", self.update_state)
        row = QHBoxLayout()
        self.check_now = QPushButton("Check now")
        self.check_now.clicked.connect(self.start_check)
        self.open_release = QPushButton("Open the release page")
        self.open_release.clicked.connect(lambda: self.open_url(self.updates.last.url if self.updates.last else ""))
        self.open_release.hide()
        row.addWidget(self.check_now)
        row.addWidget(self.open_release)
        row.addStretch(1)
        form.addRow("", row)
        note = QLabel(
            "Shard only tells you about a new version (from a feed signed with the release key); "
            "it never installs or restarts by itself. Turn the check off in Settings."
        )
        note.setWordWrap(True)
        form.addRow("", note)
        layout.addWidget(box)
        layout.addStretch(1)
        self.show_result(updates.last)

    def link(self, key: str) -> str:
        base = self.node_origin()
        return {"home": base + "/", "openapi": base + "/openapi.json", "scout": base + "/scout/"}[key]

    def start_check(self) -> None:
        if self._task is not None and not self._task.done():
            return
        self.check_now.setEnabled(False)
        self.update_state.setText(f"Checking {self.updates.feed_url}…")
        self._task = asyncio.ensure_future(self._check())

    async def _check(self) -> None:
        try:
            self.show_result(await self.updates.check())
        finally:
            self.check_now.setEnabled(True)

    def show_result(self, result: UpdateResult | None) -> None:
        if result is None:
            self.update_state.setText(
                "Not checked yet" + ("" if self.updates.enabled else " (automatic checks are off)")
            )
            return
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(result.checked_at))
        text = result.message + (f" — {result.notes}" if result.notes and result.state == "available" else "")
        self.update_state.setText(f"{text} (checked {when})")
        self.update_state.setStyleSheet("color: #b02a37;" if result.state == "error" else "")
        self.open_release.setVisible(result.state == "available" and bool(result.url))

    def refresh(self, _snap: data.Snapshot | None = None) -> None:
        pass
