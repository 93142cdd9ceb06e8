"""Overview: where to point apps, what is served, how fast, and the state of the node's parts."""

from __future__ import annotations

import time
from collections.abc import Callable

from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import (
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from shard.ui import data

FIELDS = {
    "Endpoint": [("status", "Status"), ("api_url", "API URL"), ("model", "Model"), ("device", "Runs on")],
    "Activity": [
        ("requests", "Requests from apps here"),
        ("peer_requests", "Requests served for peers"),
        ("credit_earned", "Credit earned"),
        ("completion_tokens", "Tokens generated"),
        ("prompt_tokens", "Prompt tokens"),
        ("tokens_per_s", "Tokens/s (last request)"),
        ("drafts", "Draft tokens accepted"),
        ("queue", "Queue"),
    ],
    "Network and processes": [
        ("verifier", "Verifier"),
        ("sidecar", "Sidecar"),
        ("peers", "Peers"),
        ("reachability", "Reachable"),
        ("uptime", "Up since"),
    ],
}


def _fmt_int(value: float) -> str:
    return f"{int(value):,}"


def sidecar_text(sc: dict) -> str:
    state = str(sc.get("state", "—"))
    if state == "disabled":
        message = str(sc.get("message") or "")
        return message if message.startswith("disabled") else "disabled" + (f" — {message}" if message else "")
    parts = [state]
    if sc.get("pid"):
        parts.append(f"pid {sc['pid']}")
    if sc.get("restarts"):
        parts.append(f"{sc['restarts']} restarts")
    if sc.get("peer_id"):
        parts.append(f"peer id {str(sc['peer_id'])[:16]}…")
    text = ", ".join(parts)
    if sc.get("last_error") and state != "running":
        text += f" — {sc['last_error']}"
    return text


class OverviewPage(QWidget):
    needs_peers = True
    needs_credit = False

    def __init__(self, status_line: Callable[[], str], copy_api_url: Callable[[], None]) -> None:
        super().__init__()
        self._status_line, self._copy_api_url = status_line, copy_api_url
        self.fields: dict[str, QLabel] = {}
        outer = QVBoxLayout(self)
        for title, rows in FIELDS.items():
            box = QGroupBox(title)
            form = QFormLayout(box)
            form.setLabelAlignment(Qt.AlignmentFlag.AlignRight)
            for key, label in rows:
                value = QLabel("—")
                value.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
                value.setWordWrap(True)  # long states wrap instead of widening the window
                value.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
                self.fields[key] = value
                if key == "api_url":
                    row = QHBoxLayout()
                    row.addWidget(value, 1)
                    copy = QPushButton("Copy")
                    copy.setToolTip("Copy the API URL to the clipboard")
                    copy.clicked.connect(lambda _c=False, b=copy: self._copied(b))
                    self.copy_button = copy
                    row.addWidget(copy)
                    form.addRow(label, row)
                else:
                    form.addRow(label, value)
            outer.addWidget(box)
        outer.addStretch(1)

    def _copied(self, button: QPushButton) -> None:
        self._copy_api_url()
        button.setText("Copied ✓")
        QTimer.singleShot(2000, lambda: button.setText("Copy"))

    def refresh(self, snap: data.Snapshot) -> None:
        st, m = snap.status, snap.metrics
        f = self.fields
        f["status"].setText(self._status_line())
        f["api_url"].setText(st.get("api_url", "—") if st.get("status") != "stopped" else "— (node stopped)")
        f["model"].setText(st.get("model") or "none loaded")
        f["device"].setText(data.device_text(st))
        session, life = snap.counts.get("session", {}), snap.counts.get("lifetime", {})
        f["requests"].setText(
            f"{_fmt_int(session.get('requests_local', 0))} this session · {_fmt_int(life.get('requests_local', 0))} in "
            "all" + (f"  ({int(m['errors'])} failed this session)" if m.get("errors") else "")
        )
        f["peer_requests"].setText(
            f"{_fmt_int(session.get('requests_for_peers', 0))} this session · "
            f"{_fmt_int(life.get('requests_for_peers', 0))} in all"
        )
        f["credit_earned"].setText(
            f"{session.get('credit_earned', 0):,.0f} this session · {life.get('credit_earned', 0):,.0f} in all "
            "(1 credit = 1 token served to a peer or drafted for one)"
        )
        f["completion_tokens"].setText(_fmt_int(m.get("shard_completion_tokens_total", 0)))
        f["prompt_tokens"].setText(_fmt_int(m.get("shard_prompt_tokens_total", 0)))
        f["tokens_per_s"].setText(f"{m.get('shard_tokens_per_second', 0):.1f}")
        proposed = m.get("shard_draft_tokens_proposed_total", 0)
        accepted = m.get("shard_draft_tokens_accepted_total", 0)
        f["drafts"].setText(
            f"{int(accepted):,} of {int(proposed):,}"
            + (f" ({accepted / proposed:.0%})" if proposed else "")
            + "  (prompt lookup and scouts)"
        )
        q = st.get("queue") or {}
        f["queue"].setText(f"{q.get('in_flight', 0)} generating, {q.get('waiting', 0)} waiting")
        v = st.get("verifier")
        stopped = st.get("status") == "stopped"
        if stopped:
            for key in ("verifier", "sidecar", "peers", "reachability", "uptime"):
                f[key].setText("— (node stopped)")
            f["queue"].setText("—")
            return
        if v:
            text = (
                v["state"]
                + (f", pid {v['pid']}" if v.get("pid") else "")
                + (f", {v['restarts']} restarts" if v.get("restarts") else "")
            )
            if v.get("last_error") and v["state"] != "running":
                text += f" — {v['last_error']}"
            f["verifier"].setText(text)
        else:
            f["verifier"].setText(
                "not running: no model on this computer (requests go to Oracles on the network)"
                if st.get("status") == "ok"
                else "not running: no model yet (see Models)"
            )
        f["sidecar"].setText(sidecar_text(st.get("sidecar") or {}))
        if snap.peers.get("unavailable") or (not snap.peer_list and snap.peers.get("message")):
            f["peers"].setText(f"{len(snap.peer_list)} ({snap.peers.get('message') or snap.peers.get('unavailable')})")
        else:
            f["peers"].setText(str(len(snap.peer_list)))
        f["reachability"].setText(data.reachability_text(snap.topology))
        f["uptime"].setText(data.since_text(float(snap.counts.get("started_at") or time.time())))
