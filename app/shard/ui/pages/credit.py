"""Credit: balance, earned and spent, per-peer work, and the balance over time (drawn with QPainter;
QtCharts is not in PySide6-Essentials)."""

from __future__ import annotations

import time
from typing import Any

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QFont, QPainter, QPainterPath, QPen
from PySide6.QtWidgets import (
    QAbstractItemView,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from shard.ui import data

PEER_COLUMNS = ("Peer", "Drafts proposed", "Accepted", "Acceptance", "You earned from them", "You spent with them")
UNITS = (
    "1 credit = 1 token: a node earns one for each token it generates for a peer, and a scout one for each "
    "of its draft tokens an Oracle accepts. <b>Earned</b>: what this node got from peers; <b>Spent</b>: what its "
    "requests to Oracles cost; <b>Balance</b>: earned minus spent."
)


def time_format(span: float) -> str:
    """Labels that differ across the span: seconds for minutes, hours for a day, dates beyond."""
    return "%H:%M:%S" if span < 1200 else "%H:%M" if span < 86400 else "%b %d %H:%M"


class BalanceChart(QWidget):
    """A line of the balance over time, with its range on the left and its time span below."""

    def __init__(self) -> None:
        super().__init__()
        self.points: list[tuple[float, float]] = []
        self.time_labels: list[str] = []
        self.axis = (0.0, 0.0)
        self.setMinimumHeight(160)

    def set_history(self, history: list[dict[str, Any]]) -> None:
        points = [(float(h["t"]), float(h["balance"])) for h in history if "t" in h and "balance" in h]
        points.sort()
        if points != self.points:
            self.points = points
            self.update()

    def paintEvent(self, _event: Any) -> None:  # noqa: N802 (Qt's name)
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        pal = self.palette()
        p.fillRect(self.rect(), pal.base())
        font = QFont(self.font())
        font.setPointSizeF(max(7.0, font.pointSizeF() * 0.85))
        p.setFont(font)
        fm = p.fontMetrics()
        text_color = pal.text().color()
        if len(self.points) < 2:
            p.setPen(text_color)
            p.drawText(
                self.rect(),
                Qt.AlignmentFlag.AlignCenter,
                "No credit history yet: it grows as this node serves peers or its scouts' drafts are accepted",
            )
            return
        lo = min(0.0, min(b for _, b in self.points))  # from 0: a small change must not look like a big one
        hi = max(0.0, max(b for _, b in self.points))
        if hi - lo < 1e-9:
            hi = lo + 1
        self.axis = (lo, hi)
        labels = (f"{hi:,.0f}", f"{lo:,.0f}")
        left = max(fm.horizontalAdvance(s) for s in labels) + 10
        plot = QRectF(left, 8, self.width() - left - 10, self.height() - 16 - fm.height() - 4)
        t0, t1 = self.points[0][0], self.points[-1][0]
        span = max(t1 - t0, 1e-9)

        def at(t: float, b: float) -> QPointF:
            return QPointF(
                plot.left() + (t - t0) / span * plot.width(), plot.bottom() - (b - lo) / (hi - lo) * plot.height()
            )

        grid = QColor(text_color)
        grid.setAlpha(50)
        p.setPen(QPen(grid, 1))
        for i in range(5):
            y = plot.top() + plot.height() * i / 4
            p.drawLine(QPointF(plot.left(), y), QPointF(plot.right(), y))
        if lo < 0 < hi:  # the zero line, where a balance turns into a debt
            zero = QColor(text_color)
            zero.setAlpha(120)
            p.setPen(QPen(zero, 1, Qt.PenStyle.DashLine))
            y = at(t0, 0).y()
            p.drawLine(QPointF(plot.left(), y), QPointF(plot.right(), y))
        path = QPainterPath(at(*self.points[0]))
        for t, b in self.points[1:]:
            path.lineTo(at(t, b))
        fill = QPainterPath(path)
        fill.lineTo(QPointF(plot.right(), plot.bottom()))
        fill.lineTo(QPointF(plot.left(), plot.bottom()))
        fill.closeSubpath()
        accent = pal.highlight().color()
        shade = QColor(accent)
        shade.setAlpha(45)
        p.fillPath(fill, shade)
        p.setPen(QPen(accent, 2))
        p.drawPath(path)
        p.setPen(text_color)
        p.drawText(
            QRectF(0, plot.top() - fm.height() / 2, left - 6, fm.height()), Qt.AlignmentFlag.AlignRight, labels[0]
        )
        p.drawText(
            QRectF(0, plot.bottom() - fm.height() / 2, left - 6, fm.height()), Qt.AlignmentFlag.AlignRight, labels[1]
        )
        fmt = time_format(span)
        y = plot.bottom() + 4
        self.time_labels = [time.strftime(fmt, time.localtime(t)) for t in (t0, t0 + span / 2, t1)]
        p.drawText(QRectF(plot.left(), y, 200, fm.height()), Qt.AlignmentFlag.AlignLeft, self.time_labels[0])
        p.drawText(
            QRectF(plot.center().x() - 100, y, 200, fm.height()), Qt.AlignmentFlag.AlignHCenter, self.time_labels[1]
        )
        p.drawText(QRectF(plot.right() - 200, y, 200, fm.height()), Qt.AlignmentFlag.AlignRight, self.time_labels[2])


class CreditPage(QWidget):
    needs_peers = False
    needs_credit = True

    def __init__(self) -> None:  # all it shows comes with refresh(snapshot)
        super().__init__()
        layout = QVBoxLayout(self)
        totals = QHBoxLayout()
        self.values: dict[str, QLabel] = {}
        for key, title in (("balance", "Balance"), ("earned", "Earned"), ("spent", "Spent")):
            box = QGroupBox(title)
            inner = QVBoxLayout(box)
            value = QLabel("—")
            font = value.font()
            font.setPointSizeF(font.pointSizeF() * 1.8)
            font.setBold(True)
            value.setFont(font)
            inner.addWidget(value)
            self.values[key] = value
            totals.addWidget(box)
        layout.addLayout(totals)
        self.units = QLabel(UNITS)
        self.units.setWordWrap(True)
        self.units.setStyleSheet("color: palette(mid);")
        layout.addWidget(self.units)
        chart_box = QGroupBox("Balance over time (credits)")
        chart_layout = QVBoxLayout(chart_box)
        self.chart = BalanceChart()
        chart_layout.addWidget(self.chart)
        layout.addWidget(chart_box, 1)
        peers_box = QGroupBox("By peer: the drafts they sent you, what you earned from them and spent with them")
        peers_layout = QVBoxLayout(peers_box)
        self.table = QTableWidget(0, len(PEER_COLUMNS))
        self.table.setHorizontalHeaderLabels(PEER_COLUMNS)
        self.table.setSortingEnabled(True)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        peers_layout.addWidget(self.table)
        layout.addWidget(peers_box, 1)
        self._last_peers: list[Any] | None = None

    def refresh(self, snap: data.Snapshot) -> None:
        c = snap.credit
        for key, label in self.values.items():
            value = c.get(key)
            label.setText("—" if value is None else f"{float(value):,.2f}")
        self.chart.set_history(list(c.get("history") or []))
        peers = list(c.get("peers") or [])
        if peers == self._last_peers:
            return
        self._last_peers = peers
        self.table.setSortingEnabled(False)
        self.table.setRowCount(len(peers))
        for row, p in enumerate(peers):
            rate = p.get("acceptance_rate")
            peer_id = str(p.get("peer_id", ""))
            who = data.short_name(peer_id) + (
                "  (shadow-paused: failed golden tickets)" if p.get("shadow_paused") else ""
            )
            drafted = bool(p.get("proposed"))
            cells = [
                (who, None),
                (f"{int(p.get('proposed') or 0):,}", p.get("proposed") or 0),
                (f"{int(p.get('accepted') or 0):,}", p.get("accepted") or 0),
                (
                    "—" if rate is None or not drafted else f"{rate * 100:.0f}%",
                    -1 if rate is None or not drafted else rate,
                ),
                (f"{float(p.get('earned') or 0):,.2f}", p.get("earned") or 0),
                (f"{float(p.get('spent') or 0):,.2f}", p.get("spent") or 0),
            ]
            for col, (text, number) in enumerate(cells):
                item = _NumberItem(text, number) if number is not None else QTableWidgetItem(text)
                if col == 0:
                    item.setToolTip(f"Peer id {peer_id}")
                if number is not None:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.table.setItem(row, col, item)
        self.table.setSortingEnabled(True)


class _NumberItem(QTableWidgetItem):
    def __init__(self, text: str, number: float) -> None:
        super().__init__(text)
        self.number = float(number)

    def __lt__(self, other: QTableWidgetItem) -> bool:
        return self.number < getattr(other, "number", 0.0)
