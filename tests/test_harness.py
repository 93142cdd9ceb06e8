"""The shared harness (tests/harness/) itself: what the tests and the benches rely on."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from harness import nodes, start_node, stop, until, wait_for
from harness.ports import free_port


def test_start_node_takes_another_port_when_its_first_is_taken(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Six developers' tests share one machine: a port free a moment ago may be taken by the time
    the node binds it. The node exits with 'in use'; start_node starts it again on another port."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        picks = iter([taken])
        monkeypatch.setattr(nodes, "free_port", lambda: next(picks, None) or free_port())
        node = start_node(tiny_model, tmp_path, "--ctx-size", "256", "--parallel", "1")
        try:
            assert node.port != taken
            assert node.status()["status"] == "ok"
            assert "is in use" in (tmp_path / f"serve-{taken}.log").read_text()
        finally:
            node.stop()


def test_stop_kills_a_tree_that_ignores_sigterm(tmp_path: Path) -> None:
    script = (
        "import signal, subprocess, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "c = subprocess.Popen(['sleep', '120']); print(c.pid, flush=True); time.sleep(120)"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    child = int(proc.stdout.readline())
    assert stop(proc, 1) == -signal.SIGKILL
    wait_for(lambda: not psutil.pid_exists(child) or psutil.Process(child).status() == psutil.STATUS_ZOMBIE, 10)


def test_wait_for_gives_up_when_the_process_exits() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    with pytest.raises(AssertionError, match="exited with 3 while waiting for nothing"):
        wait_for(lambda: False, 30, "nothing", alive=proc, log=lambda: "")


async def test_until_lets_the_loop_run_and_counts_a_raising_check_as_not_yet() -> None:
    ready = asyncio.Event()
    asyncio.get_running_loop().call_later(0.2, ready.set)  # only runs if `until` awaits between checks
    answers = iter([KeyError("not yet"), None, "done"])

    def check() -> str | None:
        if not ready.is_set():
            return None
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert await until(check, 30, "the loop's timer") == "done"
    with pytest.raises(AssertionError, match="timed out waiting for never"):
        await until(lambda: False, 0.1, "never")
