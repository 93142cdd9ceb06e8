"""Draws Shard's icons with Qt, so they can be remade without a design tool:

    QT_QPA_PLATFORM=offscreen .venv/bin/python assets/make_icons.py

app icon: icon.png (512 px), icon.ico (Windows), icon.icns (macOS);
tray: tray/<state>-light.png and -dark.png (for light and dark panels, 64 px, with a state dot),
tray/mask.png (black on transparent: a macOS template image, the state shown in the menu).
"""

from __future__ import annotations

import sys
from pathlib import Path

from PySide6.QtCore import QPointF, Qt
from PySide6.QtGui import QBrush, QColor, QGuiApplication, QImage, QPainter, QPen, QPolygonF

HERE = Path(__file__).parent
STATES = {  # state: colour of the dot
    "starting": "#f5a623",
    "ready": "#2ecc71",
    "contributing": "#3498db",
    "paused": "#95a5a6",
    "warning": "#e67e22",
    "error": "#e74c3c",
}


def shard_shape(size: int) -> list[QPolygonF]:
    """Three crystal shards leaning together: the logo."""
    s = size / 64.0
    shards = [
        [(22, 6), (34, 20), (28, 58), (14, 30)],
        [(38, 10), (50, 26), (42, 56), (32, 28)],
        [(8, 34), (16, 36), (22, 58), (10, 52)],
    ]
    return [QPolygonF([QPointF(x * s, y * s) for x, y in pts]) for pts in shards]


def draw(size: int, fill: str, dot: str | None) -> QImage:
    img = QImage(size, size, QImage.Format.Format_ARGB32)
    img.fill(Qt.GlobalColor.transparent)
    p = QPainter(img)
    p.setRenderHint(QPainter.RenderHint.Antialiasing)
    p.setPen(Qt.PenStyle.NoPen)
    shades = [QColor(fill), QColor(fill).darker(130), QColor(fill).lighter(130)] if fill != "#000000" else [QColor(fill)] * 3
    for poly, shade in zip(shard_shape(size), shades):
        p.setBrush(QBrush(shade))
        p.drawPolygon(poly)
    if dot:
        r = size * 0.2
        p.setBrush(QBrush(QColor(dot)))
        p.setPen(QPen(QColor("#ffffff"), size * 0.04))
        p.drawEllipse(QPointF(size - r - size * 0.03, size - r - size * 0.03), r, r)
    p.end()
    return img


def main() -> int:
    app = QGuiApplication(sys.argv)  # noqa: F841 (Qt needs an application for painting)
    (HERE / "tray").mkdir(exist_ok=True)
    icon = draw(512, "#6c5ce7", None)
    icon.save(str(HERE / "icon.png"))
    icon.scaled(256, 256, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation).save(str(HERE / "icon.ico"))
    icon.save(str(HERE / "icon.icns"))
    for state, colour in STATES.items():
        draw(64, "#2d3436", colour).save(str(HERE / "tray" / f"{state}-light.png"))  # dark glyph for light panels
        draw(64, "#dfe6e9", colour).save(str(HERE / "tray" / f"{state}-dark.png"))  # light glyph for dark panels
    draw(64, "#000000", None).save(str(HERE / "tray" / "mask.png"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
