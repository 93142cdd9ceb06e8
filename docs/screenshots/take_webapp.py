"""The web app's screenshots (desktop 1280x800 and phone 360x740, light and dark) from a real
node, and its load time and bundle size:

    .venv/bin/python docs/screenshots/take_webapp.py

Starts an Oracle (SmolLM2, with its sidecar) and a second node with the tiny test model joined to
it, opens the app in Debian's headless Chromium (playwright-core), asks a question, and saves
docs/screenshots/webapp-{desktop,phone}-{light,dark}.png (and webapp-phone-network-*.png, the
network drawer open). Then prints the page's load time (navigation timing: the first load in a
fresh profile, and the median of 5 warm loads) and the gzip size of what the page loads before it is usable, and
of the scout worker that it loads in the background. Needs web-scout built and /usr/bin/chromium.
"""

from __future__ import annotations

import gzip
import re
import statistics
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

import requests  # noqa: E402

from harness import MODEL_CACHE, start_node, wait_for  # noqa: E402
from shard import models  # noqa: E402
from harness.tiny_gguf import write_tiny_gguf  # noqa: E402
from harness.browser import WEB, Browser  # noqa: E402

QUESTION = "Write a hello world program in Python, in a code block, and say what it prints."
PHONE = (360, 740)
DESKTOP = (1280, 800)


def gz(path: Path) -> int:
    return len(gzip.compress(path.read_bytes(), 9))


def bundle_sizes() -> dict[str, int]:
    dist = WEB / "dist"
    html = (dist / "app.html").read_text()
    first = [dist / "app.html", *(dist / m.lstrip("/").removeprefix("scout/") for m in re.findall(r'(?:src|href)="(/scout/assets/[^"]+)"', html))]
    worker = sorted((dist / "assets").glob("scout-worker-*.js")) + sorted((dist / "assets").glob("drafter-worker-*.js"))
    return {"page_files": len(first), "page_gzip": sum(gz(p) for p in first), "page_raw": sum(p.stat().st_size for p in first),
            "worker_gzip": sum(gz(p) for p in worker), "worker_raw": sum(p.stat().st_size for p in worker)}


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="shard-webapp-shots-"))
    oracle = start_node(models.default_model_path(MODEL_CACHE), tmp / "oracle", "--parallel", "2", sidecar=True)
    tiny = write_tiny_gguf(tmp / "tiny.gguf", seed=1)
    other = None
    browser = Browser(tmp / "chromium.log")
    try:
        wait_for(lambda: oracle.status()["sidecar"]["state"] == "running", what="the sidecar")
        addr = next(a for a in requests.get(oracle.api + "/system/topology", timeout=5).json()["listen_addrs"] if "/tcp/" in a and "/ws" not in a)
        other = start_node(tiny, tmp / "other", "--ctx-size", "256", "--bootstrap", addr, sidecar=True)

        # load time: the first load in a fresh browser profile (cold HTTP cache), then 5 more (warm:
        # the hashed assets are cached for good, the page itself is revalidated)
        loads = []
        for _ in range(6):
            browser.do("goto", url="about:blank")
            browser.do("goto", url=oracle.url + "/?load=" + str(time.time()))
            browser.until("window.shardApp?.chat.state === 'ready'", what="the app")
            loads.append(browser.do("metrics"))
        browser.until("window.shardApp.scout.state.connected", 60, "the tab's scout")
        browser.until("document.getElementById('peers').innerText.includes('oracle')", 60, "the second node")
        browser.do("fill", selector="#prompt", text=QUESTION)
        browser.do("press", key="Enter")
        browser.until("document.getElementById('stop').hidden && document.querySelectorAll('#messages .msg.assistant').length > 0", 180, "the answer")
        time.sleep(3.5)  # one more sidebar refresh
        for scheme in ("light", "dark"):
            browser.do("scheme", value=scheme)
            browser.do("viewport", width=DESKTOP[0], height=DESKTOP[1])
            time.sleep(0.3)
            browser.do("screenshot", path=str(HERE / f"webapp-desktop-{scheme}.png"))
            browser.do("viewport", width=PHONE[0], height=PHONE[1])
            time.sleep(0.3)
            browser.do("screenshot", path=str(HERE / f"webapp-phone-{scheme}.png"))
            browser.do("click", selector="#net-toggle")
            time.sleep(0.4)
            browser.do("screenshot", path=str(HERE / f"webapp-phone-network-{scheme}.png"))
            browser.do("click", selector="#net-toggle")
        keys = ("firstContentfulPaintMs", "domContentLoadedMs", "loadMs")
        def ms(values: list[float | None]) -> int | None:  # first paint may be unrecorded on a busy machine
            seen = [v for v in values if v is not None]
            return round(statistics.median(seen)) if seen else None
        print("load, cold (ms):", {k: ms([loads[0][k]]) for k in keys}, "transfer bytes:", loads[0]["transferBytes"])
        print("load, warm (median of 5, ms):", {k: ms([m[k] for m in loads[1:]]) for k in keys})
        print("bundle:", bundle_sizes())
    finally:
        browser.close()
        if other is not None:
            other.stop()
        oracle.stop()


if __name__ == "__main__":
    main()
