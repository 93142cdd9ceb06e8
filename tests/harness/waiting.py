"""Polling until a condition holds: the one wait loop of the tests and benches (and its twin for
code on a running asyncio loop)."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Callable
from typing import TypeVar

import psutil
import requests

T = TypeVar("T")

# A check that raises one of these has simply not come true yet (a server still starting, a key
# not yet in a JSON body, a process that just exited).
NOT_YET: tuple[type[BaseException], ...] = (
    requests.RequestException,
    OSError,
    KeyError,
    IndexError,
    ValueError,
    TypeError,
    psutil.Error,
)


def wait_for(
    check: Callable[[], T],
    timeout: float = 60.0,
    what: str = "condition",
    *,
    interval: float = 0.2,
    alive: subprocess.Popen[bytes] | subprocess.Popen[str] | None = None,
    log: Callable[[], str] | None = None,
) -> T:
    """Poll `check` until it returns something true and return that; a check that raises one of
    NOT_YET counts as 'not yet'. `alive`: give up at once if that process exits (`log` says why).
    Raises AssertionError on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        if alive is not None and alive.poll() is not None:
            detail = f":\n{log()}" if log else ""
            raise AssertionError(f"exited with {alive.returncode} while waiting for {what}{detail}")
        if value := _try(check):
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


async def until(check: Callable[[], T], timeout: float = 60.0, what: str = "condition", *, interval: float = 0.05) -> T:
    """`wait_for` on a running asyncio loop: it awaits between checks, so the loop's own work goes on."""
    deadline = time.monotonic() + timeout
    while not (value := _try(check)):
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(interval)
    return value


def _try(check: Callable[[], T]) -> T | None:
    try:
        return check()
    except NOT_YET:
        return None
