"""Headless Chromium (Debian's, driven by playwright-core) through the web scout's e2e drivers:
`Browser` runs web-scout/e2e/app.mjs (one JSON command per line in, one answer per line out; the
web app tests, docs/screenshots/take_webapp.py, bench/webapp_bench.py); `BrowserScout` runs
e2e/scout.mjs (the scout page, its newest window.shardScout state kept; tests/test_web_scout.py and
bench/web_scout_bench.py)."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from harness.processes import stop
from harness.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
WEB = ROOT / "web-scout"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
T = TypeVar("T")


class Driver:
    """`node e2e/<script>` in web-scout/, stdin and stdout piped as text, stderr to `log`; it
    closes its browser and exits when its stdin closes."""

    def __init__(self, script: str, log: Path, *args: str) -> None:
        self.log = log
        self.proc = subprocess.Popen(
            ["node", f"e2e/{script}", *args],
            cwd=WEB,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log.open("wb"),
            text=True,
        )

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        stop(self.proc, 20, sig=None)  # closing stdin asked it to go


class Browser(Driver):
    """e2e/app.mjs: commands (goto, click, eval...) answered one by one."""

    def __init__(self, log: Path) -> None:
        super().__init__("app.mjs", log, "--chromium", CHROMIUM)
        self._id = 0
        first = self._read()
        assert first.get("value") == "ready", first

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"the browser driver exited:\n{self.log.read_text(errors='replace')[-3000:]}")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def do(self, op: str, **kw: Any) -> Any:
        assert self.proc.stdin is not None
        self._id += 1
        self.proc.stdin.write(json.dumps({"id": self._id, "op": op, **kw}) + "\n")
        self.proc.stdin.flush()
        answer = self._read()
        if not answer["ok"]:
            raise AssertionError(f"{op} {kw}: {answer['error']}")
        return answer["value"]

    def js(self, expression: str) -> Any:
        return self.do("eval", js=expression)

    def text(self, selector: str) -> str:
        text: str = self.js(f"document.querySelector({json.dumps(selector)})?.innerText ?? ''")
        return text

    def until(self, expression: str, timeout: float = 60.0, what: str = "") -> Any:
        """Poll a page expression until it is truthy (the page's own state, read every 100 ms)."""
        return wait_for(lambda: self.js(expression), timeout, what or expression, interval=0.1)

    def poll(self, check: Callable[[], T], timeout: float = 60.0, what: str = "") -> T:
        return wait_for(check, timeout, what)


class BrowserScout(Driver):
    """e2e/scout.mjs on the scout page at `url` for at most `seconds`; `state`: the page's newest
    window.shardScout, read on a thread; `extra`: more of e2e/scout.mjs's flags."""

    def __init__(self, url: str, log: Path, seconds: int = 900, *extra: str) -> None:
        super().__init__("scout.mjs", log, "--url", url, "--seconds", str(seconds), *extra)
        self.state: dict[str, Any] = {}
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                self.state = json.loads(line)
            except ValueError:
                pass

    def stop(self) -> None:
        self.close()
