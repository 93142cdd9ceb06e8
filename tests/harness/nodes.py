"""Real `shard serve` (and `shard scout`) processes on loopback, for the tests and the benches."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from harness.ports import free_port
from harness.processes import stop
from harness.waiting import wait_for

# Where scripts/test puts the default model (outside the clone, so reruns are fast).
MODEL_CACHE = Path(os.environ.get("SHARD_TEST_DATA", Path.home() / ".cache" / "shard" / "test-data"))

# The sidecar on loopback only, on free ports, without mDNS: tests never reach past 127.0.0.1.
SIDECAR_FLAGS = ("--control-port", "0", "--tcp-port", "0", "--p2p-host", "127.0.0.1", "--no-mdns")


@dataclass
class ServedNode:
    proc: subprocess.Popen[bytes]
    port: int
    data_dir: Path
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api(self) -> str:
        return self.url + "/v1"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def get(self, path: str, timeout: float = 10) -> Any:
        """GET a JSON document from the node (`path` from its root, e.g. /v1/system/peers)."""
        return requests.get(self.url + path, timeout=timeout).json()

    def status(self) -> dict[str, Any]:
        status: dict[str, Any] = self.get("/v1/system/status", timeout=5)
        return status

    def wait_ready(self, timeout: float = 120.0, interval: float = 0.1) -> None:
        wait_for(
            lambda: requests.get(self.url + "/health", timeout=2).status_code == 200,
            timeout,
            "shard serve to answer /health",
            interval=interval,
            alive=self.proc,
            log=self.log,
        )

    def wait_sidecar(self, timeout: float = 120.0) -> dict[str, Any]:
        """The node's topology once its sidecar runs."""
        topology: dict[str, Any] = wait_for(
            lambda: (t := self.get("/v1/system/topology", timeout=5))["sidecar"] == "running" and t,
            timeout,
            "the sidecar",
            alive=self.proc,
            log=self.log,
        )
        return topology

    def tcp_addr(self) -> str:
        """The sidecar's plain TCP listen address (with its /p2p/ peer id), for --bootstrap."""
        return next(a for a in self.wait_sidecar()["listen_addrs"] if "/tcp/" in a and "/ws" not in a)

    def stop(self) -> int | None:
        return stop(self.proc, 30)


# How a node is started: `shard serve` from this checkout's Python.
SERVE = (sys.executable, "-m", "shard", "serve")


def start_node(
    model: Path | None,
    tmp: Path,
    *extra: str,
    env: dict[str, str] | None = None,
    wait: bool = True,
    sidecar: bool = False,
    sidecar_flags: tuple[str, ...] = SIDECAR_FLAGS,
    ready_timeout: float = 120.0,
    data_dir: Path | None = None,
    command: tuple[str, ...] = SERVE,
    cwd: Path | None = None,
) -> ServedNode:
    """`shard serve` on a free port with its own data dir (`data_dir`, else one under `tmp`) and
    its log under `tmp`, no config file, no rate limit; `sidecar`: with its libp2p sidecar on
    loopback, else --no-sidecar; `wait`: until it answers /health. `command`: another way to run
    it (a bundle's `Shard serve`, or the tray app `Shard`), run in `cwd`."""
    tmp.mkdir(parents=True, exist_ok=True)
    full_env = {
        **os.environ,
        "SHARD_RATE_LIMIT_PER_MINUTE": "100000",
        "SHARD_CONFIG": str(tmp / "none.toml"),
        # Scouts in tests run on this machine: let them draft on every request (whether that pays
        # here is coop/local_gate.py's call, tested on its own in test_coop_engine.py).
        "SHARD_LOCAL_SCOUT_GATE": "0",
        **(env or {}),
    }
    network = sidecar_flags if sidecar else ("--no-sidecar",)
    for attempt in range(3):
        port = free_port()
        node_dir = data_dir or tmp / f"data-{port}"
        log_path = tmp / f"serve-{port}.log"
        args = [*command, "--port", str(port), "--data-dir", str(node_dir), *network]
        args += [*extra, *(("--model", str(model)) if model is not None else ())]
        proc = subprocess.Popen(args, stdout=log_path.open("wb"), stderr=subprocess.STDOUT, env=full_env, cwd=cwd)
        node = ServedNode(proc, port, node_dir, log_path)
        if not wait:
            return node
        try:
            node.wait_ready(ready_timeout)
            return node
        except AssertionError:
            # another process on this machine took the port between free_port() and the node's bind
            if attempt < 2 and proc.poll() is not None and f"port {port} on 127.0.0.1 is in use" in node.log():
                continue
            node.stop()  # not left running when it never answered
            raise
    raise AssertionError("unreachable")


def timed_chat(url: str, prompt: str, tokens: int) -> tuple[str, int, float]:
    """One greedy, non-streamed chat completion from the node at `url`: (text, completion tokens,
    seconds), for the benches."""
    t0 = time.perf_counter()
    r = requests.post(
        url + "/v1/chat/completions",
        timeout=600,
        json={"messages": [{"role": "user", "content": prompt}], "max_tokens": tokens, "temperature": 0},
    )
    seconds = time.perf_counter() - t0
    body = r.json()
    return body["choices"][0]["message"]["content"], body["usage"]["completion_tokens"], seconds


def metric(node: ServedNode | str, name: str, labels: str = "") -> float:
    """One sample of a node's Prometheus metrics (0 when absent); `node`: a ServedNode or a base URL."""
    url = node if isinstance(node, str) else node.url
    text = requests.get(url + "/metrics", timeout=5).text
    m = re.search(rf"^{re.escape(name)}{re.escape(labels)} ([0-9.e+-]+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def pair_key(node: ServedNode) -> str:
    """The node's pairing key (network/pairing.py), from its data dir (`--data-dir` if it was given one)."""
    args = [str(a) for a in node.proc.args]  # type: ignore[union-attr]
    data_dir = Path(args[len(args) - 1 - args[::-1].index("--data-dir") + 1])  # the last one given wins
    return (data_dir / "pair.key").read_text().strip()


def start_scout(
    model: Path | None, bootstrap: str, tmp: Path, paired_with: ServedNode | None = None
) -> subprocess.Popen[bytes]:
    """A headless scout (with no model, it fetches its Oracle's draft model); `paired_with`: given
    that node's pairing key, as a user pairs one (else a `local` node does not admit it)."""
    tmp.mkdir(parents=True, exist_ok=True)
    log = (tmp / "scout.log").open("wb")
    pair = ("--pair", pair_key(paired_with)) if paired_with else ()
    drafter = ("--model", str(model)) if model else ()
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "shard",
            "scout",
            *drafter,
            "--bootstrap",
            bootstrap,
            "--data-dir",
            str(tmp / "scout-data"),
            *SIDECAR_FLAGS,
            "--log-level",
            "DEBUG",
            *pair,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "SHARD_CONFIG": str(tmp / "none.toml")},
    )
