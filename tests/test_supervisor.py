"""The supervisor against real child processes: readiness, output capture, restart with backoff,
graceful stop then kill, fatal exit codes, state events."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from harness import until
from shard.supervisor import ChildSpec, ChildState, Supervisor, SupervisorEvent

CHILD = textwrap.dedent(
    """
    import json, os, signal, sys, time
    from http.server import BaseHTTPRequestHandler, HTTPServer
    mode = sys.argv[1]
    if mode == "fatal":
        print("error: this model is not a model", flush=True)
        sys.exit(3)
    if mode == "stubborn":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if mode == "helper":  # a helper process that inherits (and so holds open) the child's output
        import subprocess
        print("HELPER %d" % subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]).pid, flush=True)
    class H(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200); self.end_headers(); self.wfile.write(b"ok")
        def log_message(self, *a): pass
    srv = HTTPServer(("127.0.0.1", 0), H)
    print("hello from the child", flush=True)
    print("READY " + json.dumps({"port": srv.server_address[1], "pid": os.getpid()}), flush=True)
    srv.serve_forever()
    """
)


async def http_health(info: dict[str, Any]) -> bool:
    async with aiohttp.ClientSession() as s:
        async with s.get(f"http://127.0.0.1:{info['port']}/") as r:
            return r.status == 200


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE  # killed, not yet reaped by init
    except psutil.NoSuchProcess:
        return True


def make(tmp_path: Path, mode: str, events: list[SupervisorEvent], **kw: Any) -> Supervisor:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    spec = ChildSpec(
        name=f"child-{mode}",
        argv=[sys.executable, str(script), mode],
        health=http_health,
        ready_prefix="READY ",
        log_path=tmp_path / "child.log",
        start_timeout_s=20,
        backoff_initial_s=0.2,
        **kw,
    )
    return Supervisor(spec, events.append)


async def test_start_capture_restart_and_stop(tmp_path: Path) -> None:
    events: list[SupervisorEvent] = []
    sup = make(tmp_path, "serve", events)
    sup.start()
    assert await sup.wait_ready(20)
    assert sup.state is ChildState.RUNNING and sup.info["port"] > 0
    assert "hello from the child" in sup.tail()
    first_pid = sup.pid
    os.kill(first_pid, signal.SIGKILL)  # a crash: it must come back by itself
    await until(lambda: sup.ready and sup.pid not in (None, first_pid), 60, "the restart")
    assert sup.ready and sup.pid != first_pid and sup.restarts == 1
    assert any("exited with code -9" in e.message for e in events if e.state is ChildState.BACKOFF)
    states = [e.state for e in events]
    assert states[:2] == [ChildState.STARTING, ChildState.RUNNING] and ChildState.BACKOFF in states
    await sup.stop()
    assert sup.state is ChildState.STOPPED and sup.pid is None
    assert "hello from the child" in (tmp_path / "child.log").read_text()


async def test_stubborn_child_is_killed_after_the_stop_timeout(tmp_path: Path) -> None:
    events: list[SupervisorEvent] = []
    sup = make(tmp_path, "stubborn", events, stop_timeout_s=0.5)
    sup.start()
    assert await sup.wait_ready(20)
    pid = sup.pid
    await asyncio.wait_for(sup.stop(), 10)
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()


async def test_fatal_exit_code_is_not_restarted(tmp_path: Path) -> None:
    events: list[SupervisorEvent] = []
    sup = make(tmp_path, "fatal", events, fatal_exit_codes=(3,))
    sup.start()
    await until(lambda: sup.state is ChildState.FAILED, 60, "the fatal exit")
    assert sup.last_error == "this model is not a model"
    assert sup.restarts == 0
    assert not await sup.wait_ready(0.3)
    await sup.stop()


async def test_backoff_grows_between_crashes(tmp_path: Path) -> None:
    events: list[SupervisorEvent] = []
    script = tmp_path / "crash.py"
    script.write_text("import sys; print('boom', flush=True); sys.exit(1)\n")

    async def never(info: dict[str, Any]) -> bool:
        return False

    sup = Supervisor(
        ChildSpec(
            name="crasher", argv=[sys.executable, str(script)], health=never, backoff_initial_s=0.1, backoff_max_s=0.4
        ),
        events.append,
    )
    sup.start()
    await until(lambda: sum(e.state is ChildState.BACKOFF for e in events) >= 4, 60, "four crashes")
    await sup.stop()
    delays = [float(e.message.rsplit("in ", 1)[1].rstrip("s")) for e in events if e.state is ChildState.BACKOFF]
    assert delays[:4] == [0.1, 0.2, 0.4, 0.4]
    assert "boom" in sup.tail()


async def test_gives_up_after_repeated_crashes_while_starting(tmp_path: Path) -> None:
    events: list[SupervisorEvent] = []
    script = tmp_path / "abort.py"
    script.write_text("import os; os.abort()\n")  # like a native crash while loading a damaged model

    async def never(info: dict[str, Any]) -> bool:
        return False

    sup = Supervisor(
        ChildSpec(
            name="aborter",
            argv=[sys.executable, str(script)],
            health=never,
            backoff_initial_s=0.05,
            max_start_failures=3,
        ),
        events.append,
    )
    sup.start()
    await until(lambda: sup.state is ChildState.FAILED, 60, "the supervisor to give up")
    assert sup.restarts == 2
    assert "3 times in a row" in sup.last_error and "-6" in sup.last_error
    await sup.stop()


async def test_a_child_gone_while_its_output_stays_open_is_not_reported_running(tmp_path: Path) -> None:
    """The child dies but a helper it left holds its output pipe, so the watch loop cannot see
    the exit yet: the report says restarting, not running without a pid, until the restart; the
    helper goes with the child's process group."""
    events: list[SupervisorEvent] = []
    sup = make(tmp_path, "helper", events, health_interval_s=0.2)
    sup.start()
    assert await sup.wait_ready(20)
    helper = int(next(line for line in sup.tail() if line.startswith("HELPER ")).split()[1])
    first_pid = sup.pid
    os.kill(first_pid, signal.SIGKILL)
    await until(lambda: sup.pid is None, 30, "the exit to be seen", interval=0.02)
    assert sup.state is ChildState.RUNNING  # the watch loop has not noticed
    assert sup.snapshot() == {"state": "restarting", "pid": None, "restarts": 0, "last_error": ""}
    assert not sup.ready
    await until(lambda: sup.ready and sup.pid not in (None, first_pid), 60, "the restart")
    assert sup.ready and sup.restarts == 1
    await until(lambda: gone(helper), 10, "the helper to go (it lives 60 s on its own)")  # killed with the group
    await sup.stop()
