"""Shared fixtures: real models (the tiny random GGUF written here, SmolLM2 from its PyPI wheel)
and real `shard serve` processes on loopback."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import requests

from shard import models

sys.path.insert(0, str(Path(__file__).parent))
from tiny_gguf import write_tiny_gguf  # noqa: E402

# Where scripts/test puts the default model (outside the clone, so reruns are fast).
MODEL_CACHE = Path(os.environ.get("SHARD_TEST_DATA", Path.home() / ".cache" / "shard" / "test-data"))


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_gguf(tmp_path_factory.mktemp("models") / "tiny.gguf", seed=1)


@pytest.fixture(scope="session")
def slow_twin_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with idle layers: the same logits, several times slower (a target that its
    scouts, running the tiny model, can draft ahead of)."""
    return write_tiny_gguf(tmp_path_factory.mktemp("models") / "tiny-slow.gguf", seed=1, idle_layers=48)


@pytest.fixture(scope="session")
def smollm2() -> Path:
    path = models.default_model_path(MODEL_CACHE)
    if not path.exists():
        pytest.fail(
            f"SmolLM2 is not at {path}: run `bash scripts/test` (it installs it), or "
            f"`shard models install-default --data-dir {MODEL_CACHE}`"
        )
    return path


def wait_for(check: Callable[[], object], timeout: float = 60.0, what: str = "condition") -> object:
    """Poll `check` until it returns something true; a request or lookup that fails counts as 'not yet'."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except (requests.RequestException, KeyError, ValueError, TypeError, psutil.Error):
            pass
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def metric(node: ServedNode, name: str, labels: str = "") -> float:
    """One sample of the node's Prometheus metrics (0 when absent)."""
    text = requests.get(node.url + "/metrics", timeout=5).text
    m = re.search(rf"^{re.escape(name)}{re.escape(labels)} ([0-9.e+]+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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

    def status(self) -> dict:
        return requests.get(self.url + "/v1/system/status", timeout=5).json()

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"shard serve exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if requests.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise AssertionError(f"shard serve not ready after {timeout}s:\n{self.log()}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


# The sidecar on loopback only, on free ports, without mDNS: tests never reach past 127.0.0.1.
SIDECAR_FLAGS = ("--control-port", "0", "--tcp-port", "0", "--p2p-host", "127.0.0.1", "--no-mdns")


def start_node(
    model: Path | None,
    tmp: Path,
    *extra: str,
    env: dict[str, str] | None = None,
    wait: bool = True,
    sidecar: bool = False,
    sidecar_flags: tuple[str, ...] = SIDECAR_FLAGS,
) -> ServedNode:
    tmp.mkdir(parents=True, exist_ok=True)
    port = free_port()
    data_dir = tmp / f"data-{port}"
    log_path = tmp / f"serve-{port}.log"
    network = sidecar_flags if sidecar else ("--no-sidecar",)
    args = [sys.executable, "-m", "shard", "serve", "--port", str(port), "--data-dir", str(data_dir), *network, *extra]
    if model is not None:
        args += ["--model", str(model)]
    full_env = {
        **os.environ,
        "SHARD_RATE_LIMIT_PER_MINUTE": "100000",
        "SHARD_CONFIG": str(tmp / "none.toml"),
        # Scouts in tests run on this machine: let them draft on every request (whether that pays
        # here is coop/local_gate.py's call, tested on its own in test_coop_engine.py).
        "SHARD_LOCAL_SCOUT_GATE": "0",
        **(env or {}),
    }
    proc = subprocess.Popen(args, stdout=log_path.open("wb"), stderr=subprocess.STDOUT, env=full_env)
    node = ServedNode(proc, port, data_dir, log_path)
    if wait:
        node.wait_ready()
    return node


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


@pytest.fixture(scope="module")
def tiny_node(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedNode]:
    node = start_node(tiny_model, tmp_path_factory.mktemp("tiny-node"), "--parallel", "2", "--ctx-size", "512")
    yield node
    node.stop()
