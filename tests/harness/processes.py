"""Stopping processes and measuring process trees (a node and its verifier and sidecar)."""

from __future__ import annotations

import signal
import subprocess

import psutil

Proc = subprocess.Popen[bytes] | subprocess.Popen[str] | psutil.Popen


def tree(pid: int) -> list[psutil.Process]:
    """The process and all its descendants (empty when it is gone)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def tree_rss(pid: int) -> int:
    """Resident bytes of the process and its descendants (0 when it is gone)."""
    total = 0
    for p in tree(pid):
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def stop(
    proc: Proc, timeout: float = 30.0, *, sig: int | None = signal.SIGTERM, reap: float | None = None
) -> int | None:
    """Stop `proc` as a user would: `sig` (SIGTERM; None: none, it was asked another way) to it
    alone, so that it shuts its own children down; after `timeout` seconds, SIGKILL to it and to
    every descendant it had. `reap`: then wait that long for the descendants to exit by themselves
    and kill any left (a bench's clean-up; a test that checks the process's own clean-up passes
    None and looks for itself). Returns the exit code."""
    family = tree(proc.pid)[1:] if proc.poll() is None else []
    if proc.poll() is None:
        if sig is not None:
            proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            kill_all([*family, *tree(proc.pid)[1:]])
            proc.kill()
            proc.wait()
    if reap is not None:
        _, alive = psutil.wait_procs(family, timeout=reap)
        kill_all(alive)
    return proc.returncode


def kill_all(procs: list[psutil.Process]) -> None:
    """SIGKILL each process still there and wait for it."""
    for p in procs:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=10)
