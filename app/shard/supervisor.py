"""Supervision of one child process: start, wait until healthy, keep its output, restart with
exponential backoff when it dies or hangs, stop it gracefully (then kill), report state as events.

The verifier runs under it now, the sidecar next. A child announces that it is listening with one
line on stdout, `<READY_PREFIX> {json}`; the JSON (port, peer id, ...) becomes `Supervisor.info`.
Children also exit when their stdin closes, so none outlives a node that was killed outright.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shard.logs import rotating_file_handler

log = logging.getLogger("shard.supervisor")


class ChildState(str, enum.Enum):
    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    BACKOFF = "restarting"
    STOPPING = "stopping"
    FAILED = "failed"  # exited with a fatal code: restarting would fail the same way


@dataclass(frozen=True)
class SupervisorEvent:
    name: str
    state: ChildState
    pid: int | None
    restarts: int
    message: str = ""


HealthCheck = Callable[[dict[str, Any]], Awaitable[bool]]


@dataclass
class ChildSpec:
    name: str
    argv: list[str]
    health: HealthCheck
    env: dict[str, str] = field(default_factory=dict)
    ready_prefix: str = ""
    log_path: Path | None = None
    start_timeout_s: float = 60.0
    stop_timeout_s: float = 10.0
    health_interval_s: float = 5.0
    health_failures_before_kill: int = 3
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    # A child that stayed up this long is considered stable: the next crash starts backoff afresh.
    stable_after_s: float = 60.0
    ring_lines: int = 2000
    # Exit codes that mean "do not restart me" (a model file that is not a model, say).
    fatal_exit_codes: tuple[int, ...] = ()
    # Give up after this many incarnations in a row died before ever being healthy (0: never give
    # up). A native crash while loading a damaged file would otherwise loop forever.
    max_start_failures: int = 0


class Supervisor:
    def __init__(self, spec: ChildSpec, on_event: Callable[[SupervisorEvent], None] | None = None) -> None:
        self.spec = spec
        self._on_event = on_event
        self.state = ChildState.STOPPED
        self.info: dict[str, Any] = {}
        self.restarts = 0
        self.last_error = ""
        self.lines: collections.deque[str] = collections.deque(maxlen=spec.ring_lines)
        self._proc: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._was_healthy = False
        self._ready = asyncio.Event()
        self._file_log: logging.Logger | None = None
        if spec.log_path is not None:
            self._file_log = logging.getLogger(f"shard.child.{spec.name}")
            self._file_log.propagate = False
            self._file_log.setLevel(logging.DEBUG)
            if not self._file_log.handlers:
                try:
                    self._file_log.addHandler(rotating_file_handler(spec.log_path))
                except OSError as exc:
                    log.warning("%s: cannot write its log file %s: %s", spec.name, spec.log_path, exc)

    # -- public ---------------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.returncode is None else None

    @property
    def ready(self) -> bool:
        # The process can be gone a moment before the watch loop notices: not ready then.
        return self.state is ChildState.RUNNING and self.pid is not None

    def start(self) -> None:
        if self._task is not None and not self._task.done():
            return
        self._stopping = False
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"supervise-{self.spec.name}")

    async def wait_ready(self, timeout: float | None = None) -> bool:
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def stop(self) -> None:
        self._stopping = True
        if self._task is None:
            return
        self._set_state(ChildState.STOPPING, "stop requested")
        await self._terminate()
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        self._task = None
        self._set_state(ChildState.STOPPED, "stopped")

    def snapshot(self) -> dict[str, Any]:
        """State, pid, restarts and last error for a status report. A child that died a moment
        ago, before the watch loop noticed, reads as restarting rather than running without a pid."""
        state = self.state
        if state is ChildState.RUNNING and self.pid is None:
            state = ChildState.BACKOFF
        return {"state": state.value, "pid": self.pid, "restarts": self.restarts, "last_error": self.last_error}

    def tail(self, n: int = 50) -> list[str]:
        return list(self.lines)[-n:]

    # -- the loop ---------------------------------------------------------------------------------

    async def _run(self) -> None:
        backoff = self.spec.backoff_initial_s
        start_failures = 0
        while not self._stopping:
            started = time.monotonic()
            try:
                await self._run_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # failing to spawn at all (missing binary, bad argv)
                self.last_error = f"cannot start: {exc}"
                log.error("%s: %s", self.spec.name, self.last_error)
            if self._stopping:
                break
            if self._proc is not None and self._proc.returncode in self.spec.fatal_exit_codes:
                self._set_state(ChildState.FAILED, self.last_error)
                return
            start_failures = 0 if self._was_healthy else start_failures + 1
            if self.spec.max_start_failures and start_failures >= self.spec.max_start_failures:
                self.last_error = (
                    f"{self.last_error} ({start_failures} times in a row before it became healthy; not restarting)"
                )
                self._set_state(ChildState.FAILED, self.last_error)
                return
            if time.monotonic() - started >= self.spec.stable_after_s:
                backoff = self.spec.backoff_initial_s
            self.restarts += 1
            self._set_state(ChildState.BACKOFF, f"{self.last_error}; restarting in {backoff:.1f}s")
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.spec.backoff_max_s)

    async def _run_once(self) -> None:
        """Run one incarnation of the child, until it exits or is found unresponsive."""
        self.info = {}
        self._ready.clear()
        self._was_healthy = False
        self._set_state(ChildState.STARTING, "starting")
        env = {**os.environ, **self.spec.env, "PYTHONUNBUFFERED": "1"}
        kwargs: dict[str, Any] = {}
        if sys.platform != "win32":
            kwargs["start_new_session"] = True  # a Ctrl-C in the terminal reaches the node, not the child
        self._proc = proc = await asyncio.create_subprocess_exec(
            *self.spec.argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
            **kwargs,
        )
        log.info("%s: started (pid %d)", self.spec.name, proc.pid)
        reader = asyncio.create_task(self._read_output(proc))
        try:
            if await self._wait_healthy(proc):
                self._was_healthy = True
                self._ready.set()
                self._set_state(ChildState.RUNNING, "healthy")
                await self._watch(proc)
        finally:
            await self._kill(proc)
            await asyncio.wait([reader], timeout=2.0)
            reader.cancel()
        self._ready.clear()
        if not self._stopping:
            if proc.returncode in self.spec.fatal_exit_codes:
                # The child's own last "error:" line says why better than an exit code can.
                errors = [line for line in self.tail(50) if line.startswith("error: ")]
                self.last_error = errors[-1][len("error: ") :] if errors else f"exited with code {proc.returncode}"
            self.last_error = self.last_error or f"exited with code {proc.returncode}"
            log.error("%s: %s; last output:\n    %s", self.spec.name, self.last_error, "\n    ".join(self.tail(15)))

    async def _wait_healthy(self, proc: asyncio.subprocess.Process) -> bool:
        deadline = time.monotonic() + self.spec.start_timeout_s
        self.last_error = ""
        while time.monotonic() < deadline:
            if proc.returncode is not None or self._stopping:
                self.last_error = self.last_error or f"exited with code {proc.returncode} while starting"
                return False
            if (self.info or not self.spec.ready_prefix) and await self._check():
                return True
            await asyncio.sleep(0.1)
        self.last_error = f"not healthy after {self.spec.start_timeout_s:.0f}s"
        return False

    async def _watch(self, proc: asyncio.subprocess.Process) -> None:
        failures = 0
        while proc.returncode is None:
            try:
                await asyncio.wait_for(proc.wait(), self.spec.health_interval_s)
                return
            except TimeoutError:
                pass
            failures = 0 if await self._check() else failures + 1
            if failures >= self.spec.health_failures_before_kill:
                self.last_error = f"unresponsive ({failures} failed health checks)"
                return

    async def _check(self) -> bool:
        try:
            return await asyncio.wait_for(self.spec.health(self.info), 5.0)
        except Exception:
            return False

    async def _read_output(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        while True:
            try:
                raw = await proc.stdout.readline()
            except ValueError:  # a line longer than the stream limit: skip it
                continue
            if not raw:
                return
            line = raw.decode("utf-8", "replace").rstrip()
            if self.spec.ready_prefix and line.startswith(self.spec.ready_prefix):
                try:
                    self.info = json.loads(line[len(self.spec.ready_prefix) :])
                except json.JSONDecodeError:
                    log.warning("%s: unreadable ready line: %s", self.spec.name, line)
            self.lines.append(line)
            if self._file_log is not None:
                self._file_log.info(line)
            log.debug("[%s] %s", self.spec.name, line)

    # -- stopping ---------------------------------------------------------------------------------

    async def _terminate(self) -> None:
        """Graceful first (stdin closed, SIGTERM), then SIGKILL after the stop timeout."""
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        try:
            if proc.stdin is not None:
                proc.stdin.close()
            proc.terminate()
        except ProcessLookupError:
            return
        try:
            await asyncio.wait_for(proc.wait(), self.spec.stop_timeout_s)
        except TimeoutError:
            log.warning("%s: did not stop within %.0fs, killing it", self.spec.name, self.spec.stop_timeout_s)
            await self._kill(proc)

    async def _kill(self, proc: asyncio.subprocess.Process) -> None:
        try:
            if sys.platform != "win32":
                # Its whole group, even once it has exited: helpers it left would hold its output
                # open and live on. The group id cannot be reused while any member lives.
                os.killpg(proc.pid, signal.SIGKILL)
            elif proc.returncode is None:
                proc.kill()
        except (ProcessLookupError, PermissionError):
            pass
        await proc.wait()

    def _set_state(self, state: ChildState, message: str) -> None:
        self.state = state
        if self._on_event is not None:
            self._on_event(SupervisorEvent(self.spec.name, state, self.pid, self.restarts, message))
