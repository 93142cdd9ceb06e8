"""Tray app benchmark: how fast `shard` (the tray app) comes up, and what it costs when idle.

    .venv/bin/python bench/ui_bench.py [--model PATH] [--runs 3] [--idle-seconds 60]

Launch: `shard --no-sidecar` as a subprocess (QT_QPA_PLATFORM=offscreen unless a DISPLAY is set,
e.g. under xvfb-run), timed from just before the spawn to
  - the window shown (the app logs "window shown at <time> (<s> s after launch)"; offscreen has no tray, so the
    dashboard opens at launch),
  - the API answering /health at all (503 while the model loads),
  - /health 200 (the model loaded and the verifier healthy; with --model only).
Idle: the app with no model (--model unset, an empty data dir), sampled with psutil over the whole
process tree for --idle-seconds: mean CPU % (of one core) and peak RSS; once with the dashboard
visible (no tray: it polls the core once a second), and, under X with Debian's `trayer` installed,
once in a real system tray (the window hidden, as on a desktop):

    xvfb-run -a -s "-screen 0 1280x800x24" .venv/bin/python bench/ui_bench.py
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import requests

from harness import free_port, stop, tree

ROOT = Path(__file__).resolve().parent.parent
SHOWN = re.compile(rb"window shown at \S+ \((\d+\.\d+) s after launch\)")  # launch: the process's start


def default_model() -> Path | None:
    from shard import models

    path = models.default_model_path(Path(os.environ.get("SHARD_TEST_DATA", Path.home() / ".cache/shard/test-data")))
    return path if path.exists() else None


class App:
    def __init__(self, tmp: Path, model: Path | None, extra_env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        env = {**os.environ, "SHARD_CONFIG": str(tmp / "none.toml"), **(extra_env or {})}
        if not env.get("DISPLAY"):
            env["QT_QPA_PLATFORM"] = "offscreen"
        args = [
            sys.executable,
            "-m",
            "shard",
            "--no-sidecar",
            "--port",
            str(self.port),
            "--data-dir",
            str(tmp / f"data-{self.port}"),
        ]
        if model is not None:
            args += ["--model", str(model)]
        self.output = bytearray()
        self.t0 = time.time()
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output += line

    def shown_at(self) -> float | None:
        m = SHOWN.search(bytes(self.output))
        return float(m.group(1)) if m else None

    def wait(self, timeout: float, want_ok: bool) -> tuple[float | None, float | None, float | None]:
        """Seconds from launch to: window shown, API answering, /health 200."""
        api = ok = None
        deadline = time.time() + timeout
        while time.time() < deadline and self.proc.poll() is None:
            if api is None or (want_ok and ok is None):
                try:
                    r = requests.get(f"http://127.0.0.1:{self.port}/health", timeout=1)
                    api = api or time.time() - self.t0
                    if r.status_code == 200:
                        ok = ok or time.time() - self.t0
                except requests.RequestException:
                    pass
            shown = self.shown_at()
            if shown and api and (ok or not want_ok):
                return shown, api, ok
            time.sleep(0.02)
        raise RuntimeError(f"the app did not come up within {timeout}s:\n{self.output.decode(errors='replace')}")

    def tree(self) -> list[psutil.Process]:
        return tree(self.proc.pid)

    def stop(self) -> int | None:
        return stop(self.proc, 30)


def idle(app: App, seconds: float) -> tuple[float, float]:
    """Mean CPU % of one core and peak RSS (MB) of the app's process tree."""
    procs = app.tree()
    cpu0 = sum(sum(p.cpu_times()[:2]) for p in procs)
    t0 = time.monotonic()
    peak = 0
    while time.monotonic() - t0 < seconds:
        peak = max(peak, sum(p.memory_info().rss for p in app.tree()))
        time.sleep(0.5)
    cpu1 = sum(sum(p.cpu_times()[:2]) for p in app.tree())
    return 100 * (cpu1 - cpu0) / (time.monotonic() - t0), peak / 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--model", type=Path, help="GGUF to load in the launch runs (default: SmolLM2 from the test data dir)"
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--idle-seconds", type=float, default=60)
    args = parser.parse_args()
    model = args.model or default_model()
    rows = []
    with tempfile.TemporaryDirectory(prefix="shard-ui-bench-") as tmp_s:
        tmp = Path(tmp_s)
        for label, m in (("no model", None), (f"model {model.name}" if model else "", model)):
            if not label:
                continue
            shown, api, ok = [], [], []
            for _ in range(args.runs):
                app = App(tmp, m)
                try:
                    s, a, o = app.wait(300, want_ok=m is not None)
                finally:
                    app.stop()
                shown.append(s)
                api.append(a)
                if o is not None:
                    ok.append(o)
            rows.append(
                (label, statistics.median(shown), statistics.median(api), statistics.median(ok) if ok else None)
            )
        platform = "xcb (DISPLAY " + os.environ["DISPLAY"] + ")" if os.environ.get("DISPLAY") else "offscreen"
        print(f"\nLaunch to ready, `shard --no-sidecar`, Qt platform {platform}, median of {args.runs} runs\n")
        print("| launch | window shown s | API answers s | /health 200 s |")
        print("|---|---|---|---|")
        for label, s, a, o in rows:
            print(f"| {label} | {s:.2f} | {a:.2f} | {'—' if o is None else f'{o:.2f}'} |")

        idle_rows = []
        cases = [("dashboard visible, no tray (polls 1/s)", False)]
        if os.environ.get("DISPLAY") and shutil.which("trayer"):
            cases.append(("in the system tray (trayer), window hidden", True))
        for label, tray in cases:
            panel = (
                subprocess.Popen(
                    ["trayer", "--edge", "top", "--align", "right", "--widthtype", "pixel", "--width", "120"],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                if tray
                else None
            )
            try:
                time.sleep(1 if tray else 0)
                app = App(tmp, None)
                try:
                    if tray:
                        _wait_api(app)
                        time.sleep(1)
                        assert app.shown_at() is None, "with a tray the window must stay hidden"
                        assert b"no system tray" not in app.output, app.output.decode(errors="replace")
                    else:
                        app.wait(60, want_ok=False)
                    time.sleep(2)  # let start-up settle
                    cpu, rss = idle(app, args.idle_seconds)
                finally:
                    app.stop()
            finally:
                if panel is not None:
                    panel.terminate()
                    panel.wait()
            idle_rows.append((label, cpu, rss))
        if len(cases) == 1:
            print("\n(no X display with `trayer`: the in-tray idle case is skipped; run under xvfb-run to get it)")
        print(f"\nIdle, no model, empty data dir, {args.idle_seconds:.0f} s (CPU % of one core; whole process tree)\n")
        print("| state | CPU % | peak RSS MB |")
        print("|---|---|---|")
        for label, cpu, rss in idle_rows:
            print(f"| {label} | {cpu:.2f} | {rss:.0f} |")
    return 0


def _wait_api(app: App) -> None:
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            requests.get(f"http://127.0.0.1:{app.port}/health", timeout=1)
            return
        except requests.RequestException:
            time.sleep(0.05)
    raise RuntimeError(app.output.decode(errors="replace"))


if __name__ == "__main__":
    sys.exit(main())
