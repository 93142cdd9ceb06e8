"""Tray and window icons from assets/ (made by assets/make_icons.py)."""

from __future__ import annotations

import sys
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication, QIcon

TRAY_STATES = ("starting", "ready", "contributing", "paused", "warning", "error")


def assets_dir() -> Path:
    bundled = getattr(sys, "_MEIPASS", None)  # inside a PyInstaller bundle
    return Path(bundled) / "assets" if bundled else Path(__file__).resolve().parents[3] / "assets"


def app_icon() -> QIcon:
    return QIcon(str(assets_dir() / "icon.png"))


def tray_icon(state: str) -> QIcon:
    tray = assets_dir() / "tray"
    if sys.platform == "darwin":  # a template image: macOS draws it in the menu bar's own colour
        icon = QIcon(str(tray / "mask.png"))
        icon.setIsMask(True)
        return icon
    dark = QGuiApplication.styleHints().colorScheme() == Qt.ColorScheme.Dark
    return QIcon(str(tray / f"{state}-{'dark' if dark else 'light'}.png"))
