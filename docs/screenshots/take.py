"""Regenerate the dashboard screenshots from the real app (real core, real model) under Xvfb:

    xvfb-run -a -s "-screen 0 1280x800x24" .venv/bin/python docs/screenshots/take.py [--model PATH]

It starts the tray app in-process on a free port with a throwaway data dir, waits for the model,
sends a few chat requests through the OpenAI API so the counters and logs have something to show,
then saves one PNG per page (and the tray menu) here. Without --model it uses the installed default
model (SmolLM2), else the tiny test model written by tests/tiny_gguf.py.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
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

from shard import models  # noqa: E402
from shard.config import load_settings  # noqa: E402
from shard.logs import setup_logging  # noqa: E402
from shard.ui.app import ShardApp  # noqa: E402
from shard.ui.log_capture import RingHandler  # noqa: E402

log = logging.getLogger("shard.screenshots")
PAGES = ("overview", "peers", "credit", "logs", "settings")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pick_model(arg: str | None, tmp: Path) -> Path:
    if arg:
        return Path(arg)
    for data_dir in (Path(os.environ.get("SHARD_TEST_DATA", Path.home() / ".cache/shard/test-data")),
                     Path(load_settings({}, environ={}).data_dir)):
        path = models.default_model_path(data_dir)
        if path.exists():
            return path
    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_gguf import write_tiny_gguf

    return write_tiny_gguf(tmp / "tiny.gguf", seed=1)


def save(widget: QWidget, name: str) -> Path:
    """A PNG of the widget as drawn, reduced to 256 colours when that keeps it well under 200 KB."""
    image = widget.grab().toImage()
    path = HERE / f"{name}.png"
    image.save(str(path), "PNG", 9)
    if path.stat().st_size > 150_000:
        image.convertToFormat(QImage.Format.Format_Indexed8).save(str(path), "PNG", 9)
    log.info("saved %s (%d KB)", path.relative_to(ROOT), path.stat().st_size // 1024)
    return path


async def chat(port: int, text: str) -> None:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        body = {"messages": [{"role": "user", "content": text}], "max_tokens": 48, "temperature": 0}
        async with session.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body) as r:
            await r.read()


async def take(model: Path, tmp: Path, sidecar: bool) -> None:
    app = QApplication.instance()
    port = free_port()
    settings = load_settings({"model": str(model), "port": port, "data_dir": str(tmp / "data"), "sidecar": sidecar},
                             config_file=tmp / "config.toml", environ={})
    ring = RingHandler()
    logging.getLogger().addHandler(ring)
    shell = ShardApp(settings, tmp / "config.toml", ring, tray_available=False)
    shell.window.resize(1000, 680)
    await shell.start()
    deadline = time.monotonic() + 300
    while shell.node.status()["status"] != "ok" and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    for text in ("What is the capital of France?", "Write a haiku about peers.", "Name three prime numbers."):
        await chat(port, text)
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
    await shell.shutdown()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="GGUF file to serve (default: SmolLM2 if installed, else the tiny test model)")
    parser.add_argument("--sidecar", action="store_true", help="start the libp2p sidecar too (when built)")
    args = parser.parse_args()
    setup_logging("INFO", None)
    app = QApplication(sys.argv[:1])
    app.setApplicationName("Shard")
    with tempfile.TemporaryDirectory(prefix="shard-shots-") as tmp:
        model = pick_model(args.model, Path(tmp))
        log.info("platform %s, model %s", app.platformName(), model)
        qasync.run(take(model, Path(tmp), args.sidecar))
    return 0


if __name__ == "__main__":
    sys.exit(main())
