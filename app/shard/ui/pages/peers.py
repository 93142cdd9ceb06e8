"""Peers: the live table of connected peers, sortable by any column (reputation and accepted tokens
come from the credit ledger, by peer id)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, QSortFilterProxyModel, Qt
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QLabel, QLineEdit, QTableView, QVBoxLayout, QWidget

from shard.ui import data

if TYPE_CHECKING:
    from shard.ui.app import ShardApp

COLUMNS = ("Peer ID", "Role", "Addresses", "Latency (ms)", "Reputation", "Accepted tokens", "Connected")
SORT_ROLE = Qt.ItemDataRole.UserRole


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
        rate = p.get("reputation", c.get("reputation", c.get("acceptance_rate")))
        since = p.get("connected_since")
        role = ", ".join(map(str, roles)) or "—"
        if p.get("local"):
            role += " (this machine)"
        rows.append((pid, role, ", ".join(map(str, p.get("addrs") or [])) or "—",
                     latency, rate, p.get("accepted", c.get("accepted")), (now - since) if since else None))
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
            if col >= 3:
                return -1.0 if value is None else float(value)
            return str(value).lower()
        if role == Qt.ItemDataRole.DisplayRole:
            if value is None:
                return "—"
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
        if role == Qt.ItemDataRole.TextAlignmentRole and col >= 3:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role == Qt.ItemDataRole.ToolTipRole and col in (0, 2):
            return str(value)
        return None


class PeersPage(QWidget):
    needs_peers = True
    needs_credit = True

    def __init__(self, shell: "ShardApp") -> None:
        super().__init__()
        self.shell = shell
        layout = QVBoxLayout(self)
        self.message = QLabel()
        self.message.setWordWrap(True)
        layout.addWidget(self.message)
        self.filter = QLineEdit()
        self.filter.setPlaceholderText("Filter by peer id, role or address")
        layout.addWidget(self.filter)
        self.model = PeersModel()
        self.proxy = QSortFilterProxyModel(self)
        self.proxy.setSourceModel(self.model)
        self.proxy.setSortRole(SORT_ROLE)
        self.proxy.setFilterKeyColumn(-1)
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
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Interactive)
        header.setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)
        self.table.setColumnWidth(0, 200)
        layout.addWidget(self.table, 1)

    def refresh(self, snap: data.Snapshot) -> None:
        rows = peer_rows(snap)
        self.model.set_rows(rows)
        note = snap.peers.get("unavailable") or snap.peers.get("message") or ""
        self.message.setText(f"{len(rows)} peer{'s' if len(rows) != 1 else ''} connected" + (f" — {note}" if note else ""))
