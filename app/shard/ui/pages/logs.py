"""Logs: a live tail of the app's own log and of its children (verifier, sidecar), with a level
filter, a search box and copy."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from PySide6.QtGui import QFontDatabase, QGuiApplication
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from shard.ui import data

if TYPE_CHECKING:
    from shard.ui.log_capture import RingHandler

SOURCES = ("Shard", "Verifier", "Sidecar")
LEVELS = (
    ("All levels", logging.NOTSET),
    ("Info and above", logging.INFO),
    ("Warnings and errors", logging.WARNING),
    ("Errors only", logging.ERROR),
)
_LEVEL_RE = re.compile(r"\b(DEBUG|INFO|WARNING|WARN|ERROR|CRITICAL|FATAL|TRACE)\b")
_LEVEL_OF = {
    "TRACE": logging.DEBUG,
    "DEBUG": logging.DEBUG,
    "INFO": logging.INFO,
    "WARN": logging.WARNING,
    "WARNING": logging.WARNING,
    "ERROR": logging.ERROR,
    "CRITICAL": logging.CRITICAL,
    "FATAL": logging.CRITICAL,
}
MAX_LINES = 5000


def line_level(line: str) -> int:
    """A child's line has no record: its level is the first level word in it (INFO if none)."""
    m = _LEVEL_RE.search(line[:80])
    if m:
        return _LEVEL_OF[m.group(1)]
    return logging.ERROR if line.startswith(("error:", "Traceback")) else logging.INFO


class LogsPage(QWidget):
    needs_peers = False
    needs_credit = False

    def __init__(
        self,
        ring: RingHandler,
        child_lines: Callable[[str], Sequence[str] | None],
        flash: Callable[[str], None],
        open_logs_folder: Callable[[], None],
    ) -> None:
        super().__init__()
        self._ring, self._child_output, self._flash = ring, child_lines, flash
        layout = QVBoxLayout(self)
        bar = QHBoxLayout()
        self.source = QComboBox()
        self.source.addItems(SOURCES)
        self.level = QComboBox()
        for text, _ in LEVELS:
            self.level.addItem(text)
        self.level.setCurrentIndex(1)
        self.search = QLineEdit()
        self.search.setPlaceholderText("Search")
        self.search.setClearButtonEnabled(True)
        self.follow = QCheckBox("Follow")
        self.follow.setChecked(True)
        self.copy = QPushButton("Copy")
        self.copy.setToolTip("Copy the lines shown to the clipboard")
        self.open_folder = QPushButton("Open folder")
        self.open_folder.clicked.connect(open_logs_folder)
        for w in (self.source, self.level):
            bar.addWidget(w)
        bar.addWidget(self.search, 1)
        for button in (self.follow, self.copy, self.open_folder):
            bar.addWidget(button)
        layout.addLayout(bar)
        self.view = QPlainTextEdit()
        self.view.setReadOnly(True)
        self.view.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.view.setMaximumBlockCount(MAX_LINES)
        self.view.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        layout.addWidget(self.view, 1)
        self.count = QLabel()
        layout.addWidget(self.count)
        self._signature: Any = None
        self.source.currentIndexChanged.connect(self.render_lines)
        self.level.currentIndexChanged.connect(self.render_lines)
        self.search.textChanged.connect(self.render_lines)
        self.copy.clicked.connect(self.copy_shown)

    # -- the lines --------------------------------------------------------------------------------

    def _child_lines(self, name: str) -> tuple[Sequence[str], str]:
        lines = self._child_output("verifier" if name == "Verifier" else "sidecar")
        if lines is None:
            why = (
                "no model is loaded, so no verifier runs"
                if name == "Verifier"
                else "the sidecar is not running (disabled, or not built)"
            )
            return [], why
        return lines, ""

    def lines(self) -> tuple[list[str], str]:
        """The lines that pass the filters, and a note when the source has none to give."""
        name = self.source.currentText()
        min_level = LEVELS[self.level.currentIndex()][1]
        needle = self.search.text().strip().lower()
        if name == "Shard":
            records: Iterable[tuple[int, str]] = list(self._ring.records)
            note = ""
        else:
            raw, note = self._child_lines(name)
            records = [(line_level(line), line) for line in list(raw)]
        out = [text for level, text in records if level >= min_level and (not needle or needle in text.lower())]
        return out[-MAX_LINES:], note

    def _source_signature(self) -> Any:
        name = self.source.currentText()
        if name == "Shard":
            return (name, self._ring.serial)
        raw, _ = self._child_lines(name)
        return (name, id(raw), len(raw), raw[-1] if raw else None)

    def render_lines(self) -> None:
        signature = (self._source_signature(), self.level.currentIndex(), self.search.text())
        if signature == self._signature:
            return
        self._signature = signature
        lines, note = self.lines()
        bar = self.view.verticalScrollBar()
        at_end = bar.value() >= bar.maximum() - 2
        keep = bar.value()
        self.view.setPlainText("\n".join(lines))
        if self.follow.isChecked() or at_end:
            bar.setValue(bar.maximum())
        else:
            bar.setValue(min(keep, bar.maximum()))
        self.count.setText(note or f"{len(lines)} line{'s' if len(lines) != 1 else ''} shown")

    def refresh(self, _snap: data.Snapshot | None = None) -> None:
        self.render_lines()

    def copy_shown(self) -> None:
        lines = self.view.toPlainText()
        QGuiApplication.clipboard().setText(lines)
        n = len(lines.splitlines())
        self._flash(f"Copied {n} log line{'s' if n != 1 else ''} to the clipboard")
        self.count.setText(f"Copied {n} line{'s' if n != 1 else ''}")
