"""A headless Chromium on the web app, driven through web-scout/e2e/app.mjs (playwright-core,
Debian's Chromium): one JSON command per line in, one answer per line out. Used by
tests/test_webapp.py and docs/screenshots/take_webapp.py."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
WEB = ROOT / "web-scout"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


class Browser:
    def __init__(self, log: Path) -> None:
        self.proc = subprocess.Popen(
            ["node", "e2e/app.mjs", "--chromium", CHROMIUM],
            cwd=WEB,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log.open("wb"),
            text=True,
        )
        self.log = log
        self._id = 0
        first = self._read()
        assert first.get("value") == "ready", first

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"the browser driver exited:\n{self.log.read_text(errors='replace')[-3000:]}")
        return json.loads(line)

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
        return self.js(f"document.querySelector({json.dumps(selector)})?.innerText ?? ''")

    def until(self, expression: str, timeout: float = 60.0, what: str = "") -> Any:
        """Poll a page expression until it is truthy (the page's own state, read every 100 ms)."""
        deadline = time.monotonic() + timeout
        value: Any = None
        while time.monotonic() < deadline:
            value = self.js(expression)
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what or expression} (last: {value!r})")

    def poll(self, check: Callable[[], Any], timeout: float = 60.0, what: str = "") -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = check()
            if value:
                return value
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}")

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
