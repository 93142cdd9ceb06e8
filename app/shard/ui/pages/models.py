"""Models: the GGUF files in the models folder (use one, remove one) and the built-in catalog of
recommended models, downloaded with progress and cancel, as `shard models pull` does.

Narrow inputs: the downloads (core), the models folder, what model is in use, and a callback to use
another; the page never reaches into the app or the node.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtWidgets import (
    QAbstractItemView,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from shard import catalog, models
from shard.downloads import DownloadError, Downloads
from shard.model_watch import listing
from shard.ui import data
from shard.ui.pages.first_run import size_text

INSTALLED_COLUMNS = ("Name", "Size", "Added", "")
CATALOG_COLUMNS = ("Name", "Size", "Licence", "Good for", "Download")


class ModelsPage(QWidget):
    needs_peers = False
    needs_credit = False

    def __init__(
        self, downloads: Downloads, data_dir: Path, in_use: Callable[[], Path | None], use_model: Callable[[Path], None]
    ) -> None:
        super().__init__()
        self.downloads = downloads
        self.data_dir = data_dir
        self.in_use = in_use
        self.use_model = use_model
        layout = QVBoxLayout(self)
        box = QGroupBox(f"On this computer ({data_dir / 'models'})")
        inner = QVBoxLayout(box)
        self.installed = QTableWidget(0, len(INSTALLED_COLUMNS))
        self.installed.setHorizontalHeaderLabels(INSTALLED_COLUMNS)
        self._table_style(self.installed)
        inner.addWidget(self.installed)
        row = QHBoxLayout()
        self.use_button = QPushButton("Use this model")
        self.use_button.clicked.connect(self._use_selected)
        self.remove_button = QPushButton("Remove…")
        self.remove_button.clicked.connect(self._remove_selected)
        self.message = QLabel()
        self.message.setWordWrap(True)
        row.addWidget(self.message, 1)
        row.addWidget(self.use_button)
        row.addWidget(self.remove_button)
        inner.addLayout(row)
        layout.addWidget(box, 1)

        box = QGroupBox("Recommended models (downloads resume where they stopped; checked by sha256)")
        inner = QVBoxLayout(box)
        self.catalog = QTableWidget(len(catalog.CATALOG), len(CATALOG_COLUMNS))
        self.catalog.setHorizontalHeaderLabels(CATALOG_COLUMNS)
        self._table_style(self.catalog)
        self.catalog.horizontalHeader().setSectionResizeMode(3, QHeaderView.ResizeMode.Stretch)
        self.catalog.horizontalHeader().setSectionResizeMode(4, QHeaderView.ResizeMode.Fixed)
        self.catalog.setColumnWidth(4, 230)
        self.bars: dict[str, QProgressBar] = {}
        self.pull_buttons: dict[str, QPushButton] = {}
        for r, e in enumerate(catalog.CATALOG):
            for c, text in enumerate((e.name, f"{e.size_mb:,} MB", e.licence, e.good_for)):
                item = QTableWidgetItem(text)
                item.setToolTip(e.url or f"{e.wheel} on the Python package index")
                self.catalog.setItem(r, c, item)
            cell = QWidget()
            h = QHBoxLayout(cell)
            h.setContentsMargins(2, 0, 2, 0)
            bar = QProgressBar()
            bar.setRange(0, 100)
            bar.hide()
            button = QPushButton("Download")
            button.clicked.connect(lambda _c=False, name=e.name: self.pull_or_cancel(name))
            h.addWidget(bar, 1)
            h.addWidget(button)
            self.bars[e.name] = bar
            self.pull_buttons[e.name] = button
            self.catalog.setCellWidget(r, 4, cell)
        for col, width in ((0, 120), (1, 80), (2, 120)):
            self.catalog.horizontalHeader().setSectionResizeMode(col, QHeaderView.ResizeMode.Interactive)
            self.catalog.setColumnWidth(col, width)
        inner.addWidget(self.catalog)
        layout.addWidget(box, 1)
        self._listing: Any = None
        self.refresh()

    @staticmethod
    def _table_style(table: QTableWidget) -> None:
        table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        table.verticalHeader().setVisible(False)
        table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)

    # -- installed --------------------------------------------------------------------------------

    def installed_names(self) -> list[str]:
        return [
            item.text() for r in range(self.installed.rowCount()) if (item := self.installed.item(r, 0)) is not None
        ]

    def _render_installed(self) -> None:
        folder = self.data_dir / "models"
        now = listing(folder)
        in_use = self.in_use()
        key = (now, in_use)
        if key == self._listing:
            return
        self._listing = key
        names = sorted(now)
        self.installed.setRowCount(len(names))
        for r, name in enumerate(names):
            size, mtime = now[name]
            used = in_use is not None and in_use.name == name
            cells = (
                Path(name).stem,
                f"{size / 1e6:,.0f} MB",
                time.strftime("%Y-%m-%d %H:%M", time.localtime(mtime / 1e9)),
                "in use" if used else "",
            )
            for c, text in enumerate(cells):
                self.installed.setItem(r, c, QTableWidgetItem(text))
        installed = set(names)
        for e in catalog.CATALOG:
            progress = self.downloads.progress.get(e.name)
            if e.file in installed and (progress is None or progress.finished):
                self.pull_buttons[e.name].setText("Installed")
                self.pull_buttons[e.name].setEnabled(False)
            elif progress is None or progress.finished:
                self.pull_buttons[e.name].setEnabled(True)
                self.pull_buttons[e.name].setText(
                    "Resume" if progress is not None and progress.state == "cancelled" else "Download"
                )
        if in_use is not None and in_use.name not in now:
            self.message.setText(f"In use: {in_use} (outside the models folder).")
        elif not names:
            self.message.setText(
                "No models yet: download one below, or copy a .gguf file into the folder above "
                "(it is noticed within seconds)."
            )

    def _selected(self) -> Path | None:
        rows = self.installed.selectionModel().selectedRows()
        if not rows:
            self.message.setText("Select a model first.")
            return None
        item = self.installed.item(rows[0].row(), 0)
        return models.model_file(self.data_dir, item.text()) if item is not None else None

    def _use_selected(self) -> None:
        path = self._selected()
        if path is not None:
            self.use_model(path)
            self.message.setText(f"Loading {path.stem}…")

    def _remove_selected(self, confirm: bool = True) -> None:
        path = self._selected()
        if path is None:
            return
        in_use = self.in_use()
        if in_use is not None and in_use.resolve() == path.resolve():
            self.message.setText(f"{path.stem} is in use: use another model first.")
            return
        if (
            confirm
            and QMessageBox.question(self, "Remove model", f"Delete {path.name} ({path.stat().st_size / 1e6:,.0f} MB)?")
            != QMessageBox.StandardButton.Yes
        ):
            return
        models.remove_model(self.data_dir, path.name)
        self.message.setText(f"Removed {path.stem}.")
        self.refresh()

    # -- catalog ----------------------------------------------------------------------------------

    def pull_or_cancel(self, name: str) -> None:
        progress = self.downloads.progress.get(name)
        if progress is not None and not progress.finished:
            self.downloads.cancel(name)
            return
        try:
            self.downloads.start(name)
        except DownloadError as exc:
            self.message.setText(str(exc))
            return
        self.on_download(self.downloads.progress[name].as_dict())

    def on_download(self, p: dict[str, Any]) -> None:
        name = str(p.get("name"))
        bar, button = self.bars.get(name), self.pull_buttons.get(name)
        if bar is None or button is None:
            return
        state = p.get("state")
        busy = state in ("queued", "downloading", "verifying")
        bar.setVisible(busy)
        fraction = p.get("fraction")
        bar.setRange(0, 100 if fraction is not None or state != "downloading" else 0)
        bar.setValue(int((fraction or 0) * 100) if state != "verifying" else 100)
        bar.setFormat(size_text(int(p.get("done") or 0), p.get("total")) if state == "downloading" else "checking…")
        bar.setTextVisible(True)
        button.setText("Cancel" if busy else "Download")
        button.setEnabled(True)
        if state == "failed":
            self.message.setText(f"{name}: {p.get('error')}")
        elif state == "cancelled":
            button.setText("Resume")
            self.message.setText(f"{name}: cancelled; the part downloaded is kept and the download resumes from it.")
        elif state == "done":
            self.message.setText(f"{name}: downloaded.")
            self._listing = None
            self._render_installed()

    def refresh(self, _snap: data.Snapshot | None = None) -> None:
        self._render_installed()
        self.catalog.resizeRowsToContents()  # "good for" wraps: rows as tall as their text
