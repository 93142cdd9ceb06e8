"""What the dashboard and its pages may use of the tray application (`ui/app.py: ShardApp`): typed
here, so the window and its pages depend on this interface and the app alone wires them together
(no import cycle between the app, the dashboard and the pages)."""

from __future__ import annotations

from collections.abc import Awaitable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import asyncio

    from PySide6.QtCore import SignalInstance
    from PySide6.QtGui import QAction

    from shard.config import Settings
    from shard.node import Node
    from shard.ui.log_capture import RingHandler
    from shard.updates import UpdateChecker


class Shell(Protocol):
    @property
    def settings(self) -> Settings: ...  # read-only here: a change goes through the app (apply_settings)

    config_file: Path
    launch_args: list[str]
    node: Node
    ring: RingHandler
    updates: UpdateChecker
    tray_available: bool
    tray_state: str
    status_line: str
    actions: dict[str, QAction]
    state_changed: SignalInstance  # (tray state, status line)
    node_event: SignalInstance  # every NodeEvent
    notified: SignalInstance  # (title, message)
    flashed: SignalInstance  # a short confirmation for the status bar

    def spawn(self, coro: Awaitable[Any], what: str) -> asyncio.Task[Any]: ...

    def flash(self, text: str) -> None: ...

    def open_url(self, url: str) -> bool: ...

    def open_logs_folder(self) -> None: ...

    def copy_api_url(self) -> None: ...

    def use_model_file(self, path: Path) -> None: ...

    def use_network_only(self) -> None: ...

    def quit(self) -> None: ...
