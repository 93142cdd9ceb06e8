"""Faults a user meets: the verifier killed mid-request, a model file that is not a model, a port in
use, a missing model, and a node stopped while working. Each ends in a clear error or a recovery."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import openai
import psutil
import pytest
import requests

from harness import start_node, wait_for


def verifier_pid(node) -> int:
    pid = node.status()["verifier"]["pid"]
    assert pid, node.status()
    return pid


def test_verifier_killed_mid_request_fails_cleanly_and_comes_back(tiny_model: Path, tmp_path: Path) -> None:
    node = start_node(tiny_model, tmp_path, "--ctx-size", "4096", "--parallel", "1")
    try:
        client = openai.OpenAI(base_url=node.api, api_key="x", max_retries=0, timeout=30)
        stream = client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "go"}], max_tokens=3000, temperature=0, stream=True
        )
        pid = verifier_pid(node)
        got = 0
        with pytest.raises(openai.APIError) as info:
            for _chunk in stream:
                got += 1
                if got == 5:
                    os.kill(pid, signal.SIGKILL)
        assert "verifier" in str(info.value.message)
        # While it restarts, requests get a 503 that says why (or succeed if it is already back).
        r = requests.post(
            node.api + "/chat/completions",
            json={"messages": [{"role": "user", "content": "x"}], "max_tokens": 1},
            timeout=30,
        )
        if r.status_code == 503:
            assert r.json()["error"]["code"] == "verifier_unavailable" and r.headers["Retry-After"]
        # Wait for the new verifier itself (right after the kill, /health may still be 200 for an
        # instant, before the supervisor has seen the child die).
        deadline = time.monotonic() + 60
        while not (node.status()["status"] == "ok" and node.status()["verifier"]["pid"] not in (None, pid)):
            assert time.monotonic() < deadline, node.status()
            time.sleep(0.1)
        assert node.status()["verifier"]["restarts"] == 1
        again = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "go"}], max_tokens=5)
        assert again.choices[0].message.content is not None
    finally:
        node.stop()


def test_non_streaming_request_during_kill_gets_503(tiny_model: Path, tmp_path: Path) -> None:
    node = start_node(tiny_model, tmp_path, "--ctx-size", "4096", "--parallel", "1")
    try:
        pid = verifier_pid(node)
        threading.Timer(0.5, os.kill, (pid, signal.SIGKILL)).start()
        r = requests.post(
            node.api + "/chat/completions",
            json={"messages": [{"role": "user", "content": "x"}], "max_tokens": 3000, "temperature": 0},
            timeout=60,
        )
        assert r.status_code == 503, r.text
        assert "verifier stopped during the request" in r.json()["error"]["message"]
        node.wait_ready(60)
    finally:
        node.stop()


def test_stop_leaves_no_child_behind(tiny_model: Path, tmp_path: Path) -> None:
    node = start_node(tiny_model, tmp_path, "--ctx-size", "256")
    pid = verifier_pid(node)
    assert node.stop() == 0
    time.sleep(0.2)
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_node_killed_outright_takes_its_verifier_along(tiny_model: Path, tmp_path: Path) -> None:
    node = start_node(tiny_model, tmp_path, "--ctx-size", "256")
    pid = verifier_pid(node)
    node.proc.kill()  # SIGKILL: no cleanup code runs in the node; the verifier sees its stdin close
    node.proc.wait()
    wait_for(
        lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE,
        60,
        "the verifier to exit",
    )


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shard", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "SHARD_CONFIG": "/nonexistent.toml"},
    )


def test_missing_or_junk_model_file_is_refused_at_start(tmp_path: Path) -> None:
    r = run_cli(
        "serve", "--no-sidecar", "--port", "0", "--data-dir", str(tmp_path), "--model", str(tmp_path / "nope.gguf")
    )
    assert r.returncode == 2 and "model file not found" in r.stderr
    junk = tmp_path / "notes.gguf"
    junk.write_text("just some text")
    r = run_cli("serve", "--no-sidecar", "--port", "0", "--data-dir", str(tmp_path), "--model", str(junk))
    assert r.returncode == 2 and "is not a GGUF model file" in r.stderr


def test_corrupt_gguf_fails_the_verifier_once_with_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "corrupt.gguf"
    bad.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + os.urandom(4096))
    node = start_node(None, tmp_path, "--model", str(bad), wait=False)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                health = requests.get(node.url + "/health", timeout=2)
                if health.json()["status"] == "error":
                    break
            except requests.RequestException:
                pass
            time.sleep(0.2)
        assert health.status_code == 503 and "could not be loaded" in health.json()["message"]
        r = requests.post(
            node.api + "/chat/completions", json={"messages": [{"role": "user", "content": "x"}]}, timeout=10
        )
        assert r.status_code == 503 and "could not be loaded" in r.json()["error"]["message"]
        time.sleep(1.5)
        # No restart loop on a file that will never load: llama.cpp either refuses it (one try) or
        # crashes on it natively (three tries, then the supervisor gives up).
        restarts = node.status()["verifier"]["restarts"]
        assert restarts in (0, 2), restarts
        time.sleep(1.5)
        assert node.status()["verifier"]["restarts"] == restarts
    finally:
        node.stop()


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = run_cli("serve", "--no-sidecar", "--port", str(port), "--data-dir", str(tmp_path))
    assert r.returncode == 2 and f"port {port} on 127.0.0.1 is in use" in r.stderr


def test_no_model_node_serves_clear_503(tmp_path: Path) -> None:
    node = start_node(None, tmp_path, wait=False)
    try:
        for _ in range(100):
            try:
                r = requests.get(node.url + "/health", timeout=2)
                break
            except requests.RequestException:
                time.sleep(0.1)
        assert r.status_code == 503 and r.json()["status"] == "no_model"
        c = requests.post(
            node.api + "/chat/completions", json={"messages": [{"role": "user", "content": "x"}]}, timeout=10
        )
        assert c.status_code == 503 and "install-default" in c.json()["error"]["message"]
        assert requests.get(node.api + "/models", timeout=10).json()["data"] == []
    finally:
        node.stop()


def test_help_explains_the_flags() -> None:
    r = run_cli("serve", "--help")
    assert r.returncode == 0
    for flag in (
        "--model",
        "--port",
        "--data-dir",
        "--no-sidecar",
        "--api-key",
        "SHARD_RATE_LIMIT_PER_MINUTE",
        "SHARD_MAX_PROMPT_CHARS",
    ):
        assert flag in r.stdout
