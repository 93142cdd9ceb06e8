"""Settings: the model (with load progress), GPU layers, ports, bootstrap peers, who receives my
prompts, API keys (in the OS keyring) and start at login. Saved to the config file; applied at once
where the core allows it (model switch, privacy, keys), and said plainly where a restart is needed."""

from __future__ import annotations

import logging
import secrets as pysecrets
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QGuiApplication, QWheelEvent
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from shard import autostart
from shard.config import PRIVACY_LEVELS, ConfigError, Settings
from shard.node import NodeStartError
from shard.ui import data

if TYPE_CHECKING:
    from shard.ui.shell import Shell

log = logging.getLogger("shard.ui")

PRIVACY_TEXT = {
    "local": "Only scouts on this machine (my own browser tabs)",
    "lan": "Scouts on my local network",
    "peers": "Only the trusted peers listed below",
    "anyone": "Any scout on the network",
}
PORTS = (
    ("port", "OpenAI API port"),
    ("tcp_port", "Peer-to-peer TCP port"),
    ("ws_port", "WebSocket port (browser scouts; 0: auto)"),
    ("control_port", "Sidecar control port"),
)
RESTART_NOTE = "Port changes take effect when Shard restarts (Quit, then start it again)."


KEYRING_PLAIN = (
    "This computer has no password store (keyring) that Shard can use, so your API keys are "
    "saved in a private file that only your user account can read: {file}"
)
NOTIFICATIONS = (
    ("peer_joined", "A peer joins"),
    ("credit", "Credit passes a milestone (10, 100, 1,000, …)"),
    ("model_downloaded", "A model download finishes"),
    ("update", "A new version of Shard is available"),
)
MESSAGE_TTL_MS = 15_000  # a success message goes away after this; errors stay until the next change


class _WheelNeedsFocus:
    """The mouse wheel changes the value only once the widget has focus: scrolling the page over it
    scrolls the page (the wheel event goes up to the scroll area)."""

    def _setup_focus(self: Any) -> None:
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)

    def wheelEvent(self: Any, event: QWheelEvent) -> None:  # noqa: N802
        if self.hasFocus():
            super().wheelEvent(event)  # type: ignore[misc]
        else:
            event.ignore()


class SpinBox(_WheelNeedsFocus, QSpinBox):
    def __init__(self) -> None:
        super().__init__()
        self._setup_focus()


class ComboBox(_WheelNeedsFocus, QComboBox):
    def __init__(self) -> None:
        super().__init__()
        self._setup_focus()


def mask(key: str) -> str:
    return key if len(key) <= 8 else f"{key[:3]}…{key[-4:]}"


def _lines(edit: QPlainTextEdit) -> list[str]:
    return [line.strip() for line in edit.toPlainText().splitlines() if line.strip()]


class SettingsPage(QWidget):
    needs_peers = False
    needs_credit = False

    def __init__(self, shell: Shell) -> None:
        super().__init__()
        self.shell = shell
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        body = QWidget()
        scroll.setWidget(body)
        outer.addWidget(scroll, 1)
        layout = QVBoxLayout(body)

        # Model
        box = QGroupBox("Model")
        form = QFormLayout(box)
        row = QHBoxLayout()
        self.model_path = QLineEdit()
        self.model_path.setPlaceholderText("the installed default model")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self.browse_model)
        row.addWidget(self.model_path, 1)
        row.addWidget(browse)
        form.addRow("GGUF file", row)
        self.gpu_layers = SpinBox()
        self.gpu_layers.setRange(-1, 999)
        self.gpu_layers.setSpecialValueText("all layers")
        self.gpu_layers.setToolTip("Layers put on the GPU when the build can offload (-1: all); 0 runs on the CPU")
        form.addRow("GPU layers", self.gpu_layers)
        self.load_progress = QProgressBar()
        self.load_progress.setRange(0, 100)
        self.load_state = QLabel()
        self.load_state.setWordWrap(True)
        form.addRow("Load", self.load_progress)
        form.addRow("", self.load_state)
        layout.addWidget(box)

        # Network
        box = QGroupBox("Network")
        form = QFormLayout(box)
        self.ports: dict[str, SpinBox] = {}
        self.ports_in_use: dict[str, QLabel] = {}
        for key, label in PORTS:
            spin = SpinBox()
            spin.setRange(0, 65535)
            spin.setSpecialValueText("any free port")
            in_use = QLabel()
            in_use.setStyleSheet("color: palette(mid);")
            row = QHBoxLayout()
            row.addWidget(spin)
            row.addWidget(in_use, 1)
            self.ports[key] = spin
            self.ports_in_use[key] = in_use
            form.addRow(label, row)
        note = QLabel(RESTART_NOTE)
        note.setWordWrap(True)
        note.setStyleSheet("color: palette(mid);")
        form.addRow("", note)
        self.bootstrap = QPlainTextEdit()
        self.bootstrap.setPlaceholderText("/dns4/example.org/tcp/4001/p2p/12D3KooW…  (one multiaddr per line)")
        self.bootstrap.setFixedHeight(64)
        form.addRow("Bootstrap peers", self.bootstrap)
        layout.addWidget(box)

        # Privacy
        box = QGroupBox("Who receives my prompts (as draft work for scouts)")
        form = QFormLayout(box)
        self.privacy = ComboBox()
        for level in PRIVACY_LEVELS:
            self.privacy.addItem(PRIVACY_TEXT[level], level)
        form.addRow("Send to", self.privacy)
        self.trusted = QPlainTextEdit()
        self.trusted.setPlaceholderText("12D3KooW…  (one peer id per line)")
        self.trusted.setFixedHeight(56)
        form.addRow("Trusted peers", self.trusted)
        self.privacy.currentIndexChanged.connect(
            lambda _i: self.trusted.setEnabled(self.privacy.currentData() == "peers")
        )
        layout.addWidget(box)

        # API keys
        box = QGroupBox("API keys (needed by apps calling the endpoint; none: no key needed on localhost)")
        keys_layout = QVBoxLayout(box)
        self.keys_store = QLabel()
        self.keys_store.setWordWrap(True)
        keys_layout.addWidget(self.keys_store)
        self.keys = QListWidget()
        self.keys.setFixedHeight(72)
        keys_layout.addWidget(self.keys)
        row = QHBoxLayout()
        self.new_key = QLineEdit()
        self.new_key.setPlaceholderText("paste a key, or generate one")
        self.new_key.setEchoMode(QLineEdit.EchoMode.Password)
        add = QPushButton("Add")
        add.clicked.connect(lambda: self.add_key(self.new_key.text()))
        gen = QPushButton("Generate")
        gen.clicked.connect(lambda: self.add_key("sk-shard-" + pysecrets.token_urlsafe(24)))
        copy = QPushButton("Copy")
        copy.clicked.connect(self.copy_key)
        remove = QPushButton("Remove")
        remove.clicked.connect(lambda: [self.keys.takeItem(self.keys.row(i)) for i in self.keys.selectedItems()])
        row.addWidget(self.new_key, 1)
        for b in (add, gen, copy, remove):
            row.addWidget(b)
        keys_layout.addLayout(row)
        layout.addWidget(box)

        # System
        box = QGroupBox("System")
        form = QFormLayout(box)
        self.autostart = QCheckBox("Start Shard when I log in")
        self.autostart.setToolTip("Starts this same node: " + " ".join(shell.launch_args))
        form.addRow("", self.autostart)
        self.update_check = QCheckBox("Check for new versions once a day (a notification only; nothing is installed)")
        form.addRow("", self.update_check)
        self.feed_url = QLineEdit()
        form.addRow("Update feed", self.feed_url)
        layout.addWidget(box)

        box = QGroupBox("Notify me when")
        form = QFormLayout(box)
        self.notify: dict[str, QCheckBox] = {}
        for key, text in NOTIFICATIONS:
            self.notify[key] = QCheckBox(text)
            form.addRow("", self.notify[key])
        self.config_path = QLabel(str(shell.config_file))
        self.config_path.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        form.addRow("Settings file", self.config_path)
        layout.addWidget(box)
        layout.addStretch(1)

        bar = QHBoxLayout()
        self.result = QLabel()
        self.result.setWordWrap(True)
        bar.addWidget(self.result, 1)
        revert = QPushButton("Revert")
        revert.clicked.connect(self.load)
        self.save_button = QPushButton("Save and apply")
        self.save_button.setDefault(True)
        self.save_button.clicked.connect(lambda: shell.spawn(self.save(), "save the settings"))
        bar.addWidget(revert)
        bar.addWidget(self.save_button)
        outer.addLayout(bar)
        self._loading = False
        self._clear_timer = QTimer(self)
        self._clear_timer.setSingleShot(True)
        self._clear_timer.timeout.connect(self.result.clear)
        self._message_waits_for_load = False
        self.load()
        for spin in (self.gpu_layers, *self.ports.values()):
            spin.valueChanged.connect(self._changed)
        for edit in (self.model_path, self.feed_url):
            edit.textChanged.connect(self._changed)
        for plain in (self.bootstrap, self.trusted):
            plain.textChanged.connect(self._changed)
        self.privacy.currentIndexChanged.connect(self._changed)
        for box_ in (self.autostart, self.update_check, *self.notify.values()):
            box_.toggled.connect(self._changed)
        self.keys.model().rowsInserted.connect(self._changed)
        self.keys.model().rowsRemoved.connect(self._changed)

    # -- unsaved changes --------------------------------------------------------------------------

    def dirty(self) -> list[str]:
        """What differs from what is saved and applied (names of settings)."""
        out = [k for k, v in self.form_values().items() if v != self._baseline.get(k)]
        if self.key_values() != self.shell.node.secrets.api_keys():
            out.append("api_keys")
        if self.autostart.isChecked() != autostart.is_enabled():
            out.append("start_at_login")
        return out

    def _changed(self, *_args: Any) -> None:
        if self._loading:
            return
        changed = self.dirty()
        self.save_button.setText("Save and apply" + (" •" if changed else ""))
        if changed:
            self._clear_timer.stop()
            self._message_waits_for_load = False
            self._show(f"Unsaved changes: {', '.join(c.replace('_', ' ') for c in changed)}")
        elif self.result.text().startswith("Unsaved changes"):
            self.result.clear()

    # -- form <-> settings ------------------------------------------------------------------------

    def load(self) -> None:
        self._loading = True
        try:
            self._load(self.shell.settings)
        finally:
            self._loading = False
        self._baseline = self.form_values()  # what is saved: the form differs from it = unsaved changes
        self.save_button.setText("Save and apply")

    def _load(self, s: Settings) -> None:
        self.model_path.setText(s.model)
        self.model_path.setPlaceholderText(
            "a model in the models folder (Models page)"
            if s.network_only is False
            else "none: requests go to the network"
        )
        self.gpu_layers.setValue(s.n_gpu_layers)
        for key, spin in self.ports.items():
            spin.setValue(int(getattr(s, key)))
        self.bootstrap.setPlainText("\n".join(s.bootstrap))
        self.privacy.setCurrentIndex(max(0, self.privacy.findData(s.prompt_privacy)))
        self.trusted.setPlainText("\n".join(s.trusted_peers))
        self.trusted.setEnabled(s.prompt_privacy == "peers")
        store = self.shell.node.secrets
        self.keys.clear()
        for key in store.api_keys():
            self.add_key(key)
        if store.backend == "file":
            self.keys_store.setText("⚠ " + KEYRING_PLAIN.format(file=store.fallback_file))
            self.keys_store.setToolTip(store.warning)  # the technical reason, for whoever wants it
            self.keys_store.setStyleSheet(
                "background: #fff3cd; color: #664d03; border: 1px solid #e0c060; padding: 6px;"
            )
        else:
            import keyring

            self.keys_store.setText(
                f"Kept in the OS keyring ({type(keyring.get_keyring()).__name__}); changes apply to the next request."
            )
            self.keys_store.setStyleSheet("")
        self.autostart.setChecked(autostart.is_enabled())
        self.update_check.setChecked(s.update_check)
        self.feed_url.setText(s.update_feed_url)
        for key, box in self.notify.items():
            box.setChecked(key in s.notifications)
        self.result.clear()

    def add_key(self, key: str) -> None:
        key = key.strip()
        if not key or key in self.key_values():
            return
        item = QListWidgetItem(mask(key))
        item.setData(Qt.ItemDataRole.UserRole, key)
        self.keys.addItem(item)
        self.new_key.clear()

    def key_values(self) -> list[str]:
        return [self.keys.item(i).data(Qt.ItemDataRole.UserRole) for i in range(self.keys.count())]

    def copy_key(self) -> None:
        items = self.keys.selectedItems() or ([self.keys.item(self.keys.count() - 1)] if self.keys.count() else [])
        if items:
            QGuiApplication.clipboard().setText(items[0].data(Qt.ItemDataRole.UserRole))
            self.shell.flash(f"Copied the API key {items[0].text()} to the clipboard")
            self._show(f"Copied the API key {items[0].text()}.")

    def browse_model(self) -> None:
        start = self.model_path.text() or str(self.shell.settings.data_path / "models")
        path, _ = QFileDialog.getOpenFileName(self, "Choose a GGUF model", start, "GGUF models (*.gguf);;All files (*)")
        if path:
            self.model_path.setText(path)

    def form_values(self) -> dict[str, Any]:
        values: dict[str, Any] = {
            "model": self.model_path.text().strip(),
            "n_gpu_layers": self.gpu_layers.value(),
            "bootstrap": _lines(self.bootstrap),
            "prompt_privacy": self.privacy.currentData(),
            "trusted_peers": _lines(self.trusted),
            "update_check": self.update_check.isChecked(),
            "update_feed_url": self.feed_url.text().strip(),
            "notifications": [key for key, box in self.notify.items() if box.isChecked()],
        }
        values.update({key: spin.value() for key, spin in self.ports.items()})
        return values

    async def save(self) -> list[str]:
        """Save what changed, apply it, and say what happened (also returned, for tests)."""
        node = self.shell.node
        changes = {k: v for k, v in self.form_values().items() if v != getattr(node.settings, k)}
        notes: list[str] = []
        error = ""
        try:  # the core applies, saves and publishes them; this page only collects the values
            applied = await node.apply_settings(changes)
        except (ConfigError, OSError, NodeStartError) as exc:
            self._show(f"Not saved: {exc}", error=True)
            return [str(exc)]
        if "model" in applied.refused:
            error = f"Model not changed: {applied.refused['model']}"
            changes.pop("model")
        if applied.reloaded == "model":
            notes.append("loading the new model")
        elif applied.reloaded == "n_gpu_layers":
            notes.append("reloading the model with the new GPU layers")
        if applied.needs_restart:
            notes.append(RESTART_NOTE)
        keys = self.key_values()
        if keys != node.secrets.api_keys():
            node.secrets.set_api_keys(keys)
            notes.append(f"{len(keys)} API key{'s' if len(keys) != 1 else ''} in use from the next request")
            log.info(
                "API keys changed: %d key%s now (kept in the %s)",
                len(keys),
                "s" if len(keys) != 1 else "",
                "OS keyring" if node.secrets.backend == "keyring" else "private file",
            )
        if self.autostart.isChecked() != autostart.is_enabled():
            try:
                autostart.set_enabled(self.autostart.isChecked(), self.shell.launch_args)
                notes.append("start at login " + ("on" if self.autostart.isChecked() else "off"))
                log.info("start at login turned %s", "on" if self.autostart.isChecked() else "off")
            except OSError as exc:
                error = error or f"Start at login not changed: {exc}"
        if changes:
            log.info("settings saved to %s: %s", self.shell.config_file, ", ".join(sorted(changes)))
        message = ("Saved. " if changes or len(notes) else "Nothing changed. ") + " ".join(
            n[0].upper() + n[1:] + ("" if n.endswith(".") else ".") for n in notes
        )
        self._baseline = {**self._baseline, **changes}
        self._show((error + " " + message).strip() if error else message, error=bool(error))
        self.save_button.setText("Save and apply" + (" •" if self.dirty() else ""))
        # A message about a model that is loading goes when the load ends; others after a while.
        self._message_waits_for_load = any("model" in n for n in notes) and not error
        if not error and not self._message_waits_for_load:
            self._clear_timer.start(MESSAGE_TTL_MS)
        return [error, *notes] if error else notes

    def _show(self, text: str, error: bool = False) -> None:
        self.result.setText(text)
        self.result.setStyleSheet("color: #b02a37;" if error else "")

    def _ports_in_use(self) -> None:
        node = self.shell.node
        used = node.ports_in_use()
        for key, label in self.ports_in_use.items():
            port = used.get(key)
            if port is None:
                label.setText("not in use now" if node.running else "node stopped")
            else:
                differs = port != self.ports[key].value() and self.ports[key].value() != 0
                label.setText(f"in use now: {port}" + ("  (the configured port was taken)" if differs else ""))

    def refresh(self, _snap: data.Snapshot | None = None) -> None:
        self._ports_in_use()
        load = self.shell.node.model_load()
        if self._message_waits_for_load and load.state in ("loaded", "failed"):
            self._message_waits_for_load = False  # "Loading the new model" is stale now: say how it ended
            self._show(
                f"Saved. The model {load.name} is loaded."
                if load.state == "loaded"
                else f"Saved, but the model did not load: {load.message}",
                error=load.state == "failed",
            )
            self._clear_timer.start(MESSAGE_TTL_MS)
        if load.state == "none":
            self.load_progress.setValue(0)
            self.load_state.setText("No model loaded" if self.shell.node.running else "The node is stopped")
        elif load.state == "loaded":
            self.load_progress.setValue(100)
            self.load_state.setText(f"Loaded: {load.name}")
        else:
            self.load_progress.setValue(int(load.progress * 100))
            self.load_state.setText(load.message)
