"""Peers: the live table of connected peers, sortable by any column (reputation and accepted tokens
come from the credit ledger, by peer id)."""

from __future__ import annotations

import time
from typing import Any

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, QSortFilterProxyModel, Qt
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QLabel, QLineEdit, QTableView, QVBoxLayout, QWidget

from shard.ui import data

COLUMNS = ("Name", "Role", "Model", "Latency (ms)", "Reputation", "Accepted tokens", "Connected", "Addresses")
SORT_ROLE = Qt.ItemDataRole.UserRole
FILTER_ROLE = Qt.ItemDataRole.UserRole + 1
ROLES_HELP = (
    "<b>Oracle</b>: serves a model and checks drafts. <b>Scout</b>: drafts tokens ahead for Oracles "
    "(it earns credit for each accepted token). <b>Consumer</b>: uses the network's Oracles, serves nothing. "
    "<b>Reputation</b>: how often a scout's drafts are accepted here (— before its first draft)."
)


def peer_rows(snap: data.Snapshot) -> list[tuple[Any, ...]]:
    """One row per remote peer: (display values..., sort values...)."""
    credit = snap.credit_by_peer()
    rows = []
    now = time.time()
    for p in snap.peer_list:
        pid = str(p.get("peer_id", ""))
        c = credit.get(pid, {})
        roles = p.get("roles") or ([p["role"]] if p.get("role") else [])
        latency = p.get("latency_ms")
        drafted = bool(c.get("proposed") or p.get("accepted"))
        rate = p.get("reputation", c.get("reputation", c.get("acceptance_rate"))) if drafted else None
        since = p.get("connected_since")
        role = ", ".join(map(str, roles)) or "not told yet"  # the handshake has not arrived
        if p.get("local"):
            role += " (this machine)"
        accepted = p.get("accepted", c.get("accepted")) if drafted else None
        rows.append(
            (
                pid,
                role,
                ", ".join(map(str, p.get("models") or [])) or "—",
                latency,
                rate,
                accepted,
                (now - since) if since else None,
                ", ".join(map(str, p.get("addrs") or [])) or "—",
            )
        )
    return rows


class PeersModel(QAbstractTableModel):
    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[Any, ...]] = []

    def set_rows(self, rows: list[tuple[Any, ...]]) -> None:
        if rows == self.rows:
            return
        if len(rows) == len(self.rows) and [r[0] for r in rows] == [r[0] for r in self.rows]:
            self.rows = rows  # same peers: update in place, so the selection and scroll stay
            self.dataChanged.emit(self.index(0, 0), self.index(len(rows) - 1, len(COLUMNS) - 1))
            return
        self.beginResetModel()
        self.rows = rows
        self.endResetModel()

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section]
        return None

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        value = self.rows[index.row()][index.column()]
        col = index.column()
        if role == SORT_ROLE:
            if 3 <= col <= 6:
                return -1.0 if value is None else float(value)
            return str(value).lower()
        if role == FILTER_ROLE:  # the filter matches the whole peer id, not only its short name
            return str(value) if col == 0 else self.data(index, Qt.ItemDataRole.DisplayRole)
        if role == Qt.ItemDataRole.DisplayRole:
            if value is None:
                return "—"
            if col == 0:
                return data.short_name(str(value))
            if col == 3:
                return f"{value:.0f}"
            if col == 4:
                return f"{value * 100:.0f}%"
            if col == 5:
                return f"{int(value):,}"
            if col == 6:
                mins = int(value // 60)
                return f"{mins // 60} h {mins % 60} min" if mins >= 60 else f"{mins} min"
            return str(value)
        if role == Qt.ItemDataRole.TextAlignmentRole and 3 <= col <= 6:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role == Qt.ItemDataRole.ToolTipRole and col == 0:
            return f"Peer id {value}"
        if role == Qt.ItemDataRole.ToolTipRole and col == 4 and value is None:
            return "No drafts from this peer yet"
        if role == Qt.ItemDataRole.ToolTipRole and col in (2, 7):
            return str(value)
        return None


class PeersPage(QWidget):
    needs_peers = True
    needs_credit = True

    def __init__(self) -> None:  # all it shows comes with refresh(snapshot)
        super().__init__()
        layout = QVBoxLayout(self)
        self.message = QLabel()
        self.message.setWordWrap(True)
        layout.addWidget(self.message)
        self.filter = QLineEdit()
        self.filter.setPlaceholderText("Filter by peer id, role, model or address")
        layout.addWidget(self.filter)
        self.roles_help = QLabel(ROLES_HELP)
        self.roles_help.setWordWrap(True)
        self.roles_help.setStyleSheet("color: palette(mid);")
        layout.addWidget(self.roles_help)
        self.model = PeersModel()
        self.proxy = QSortFilterProxyModel(self)
        self.proxy.setSourceModel(self.model)
        self.proxy.setSortRole(SORT_ROLE)
        self.proxy.setFilterKeyColumn(-1)
        self.proxy.setFilterRole(FILTER_ROLE)
        self.proxy.setFilterCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        self.proxy.setDynamicSortFilter(True)
        self.filter.textChanged.connect(self.proxy.setFilterFixedString)
        self.table = QTableView()
        self.table.setModel(self.proxy)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(5, Qt.SortOrder.DescendingOrder)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setAlternatingRowColors(True)
        self.table.verticalHeader().setVisible(False)
        self.table.setWordWrap(False)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(7, QHeaderView.ResizeMode.Stretch)  # addresses last: the rest stays in view
        layout.addWidget(self.table, 1)

    def refresh(self, snap: data.Snapshot) -> None:
        rows = peer_rows(snap)
        self.model.set_rows(rows)
        note = snap.peers.get("unavailable") or snap.peers.get("message") or ""
        self.message.setText(
            f"{len(rows)} peer{'s' if len(rows) != 1 else ''} connected" + (f" — {note}" if note else "")
        )
