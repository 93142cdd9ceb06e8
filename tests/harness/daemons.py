"""A bare shard-daemon (the Rust sidecar) driven through its control API: a hostile peer in the
tests, a mesh member in the benches."""

from __future__ import annotations

import http.client
import json
import os
import queue
import subprocess
import threading
import time
from pathlib import Path
from typing import IO, Any

import requests

from harness.processes import stop

READY = "SHARD_SIDECAR_READY "


def daemon_binary() -> Path:
    """The shard-daemon that a node would run (SHARD_DAEMON, the cargo build under CARGO_TARGET_DIR, PATH)."""
    from shard.config import Settings
    from shard.network.sidecar import find_daemon

    binary = find_daemon(Settings())
    if binary is None:
        raise AssertionError("shard-daemon is not built: cargo build --release --manifest-path sidecar/Cargo.toml")
    return binary


class Daemon:
    """shard-daemon on loopback, free ports, no mDNS; it exits when we close its stdin or stop it.
    `log`: where its stderr goes (else nowhere); `bootstrap`: a multiaddr to dial first; `prefix`:
    what runs it (`ip netns exec NAME` puts it in a network namespace), `tcp_port` its libp2p port."""

    def __init__(
        self,
        binary: Path | None = None,
        log: Path | None = None,
        *extra: str,
        bootstrap: str | None = None,
        host: str = "127.0.0.1",
        token: str | None = None,
        ready_timeout: float = 30.0,
        tcp_port: int = 0,
        prefix: tuple[str, ...] = (),
    ) -> None:
        self.token = token or "harness-token-" + os.urandom(8).hex()
        self.log: IO[bytes] | int = log.open("wb") if log else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            [
                *prefix,
                str(binary or daemon_binary()),
                "--control-port",
                "0",
                "--tcp-port",
                str(tcp_port),
                "--listen-host",
                host,
                "--no-mdns",
                *(("--bootstrap", bootstrap) if bootstrap else ()),
                "--exit-with-stdin",
                *extra,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            env={**os.environ, "SHARD_CONTROL_TOKEN": self.token},
        )
        self.info: dict[str, Any] = self._ready(ready_timeout)
        self.peer_id: str = self.info["peer_id"]
        self.control_port: int = self.info["control_port"]
        self.url = f"http://127.0.0.1:{self.control_port}"
        self.headers = {"Authorization": f"Bearer {self.token}"}
        self.session = requests.Session()
        self.session.headers.update(self.headers)
        self._conn: http.client.HTTPConnection | None = None

    def _ready(self, timeout: float) -> dict[str, Any]:
        """The READY line's JSON (ports, peer id, listen addresses), read from its stdout."""
        assert self.proc.stdout is not None
        out: queue.Queue[bytes] = queue.Queue()
        threading.Thread(target=lambda: out.put(self.proc.stdout.readline()), daemon=True).start()  # type: ignore[union-attr]
        try:
            line = out.get(timeout=timeout).decode()
        except queue.Empty:
            line = ""
        if not line.startswith(READY):
            self.stop()
            raise AssertionError(f"shard-daemon did not print its READY line: {line!r}")
        info: dict[str, Any] = json.loads(line[len(READY) :])
        return info

    def tcp_addr(self) -> str:
        """Its plain TCP listen address, for another daemon's --bootstrap."""
        return next(a for a in self.info["listen_addrs"] if "/tcp/" in a and "/ws" not in a)

    def post(self, path: str, body: Any, timeout: float = 20) -> requests.Response:
        return self.session.post(self.url + path, json=body, timeout=timeout)

    def get(self, path: str, timeout: float = 20) -> Any:
        return self.session.get(self.url + path, timeout=timeout).json()

    def peers(self) -> list[dict[str, Any]]:
        peers: list[dict[str, Any]] = self.get("/peers")["peers"]
        return peers

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """One request on a kept-alive http.client connection: the lowest-overhead path, for timing."""
        if self._conn is None:
            self._conn = http.client.HTTPConnection("127.0.0.1", self.control_port, timeout=30)
        headers = dict(self.headers)
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        self._conn.request(method, path, body=data, headers=headers)
        resp = self._conn.getresponse()
        return resp.status, json.loads(resp.read() or b"null")

    def events(self) -> queue.Queue[tuple[float, dict[str, Any]]]:
        """A queue of (perf_counter when read, event) fed by a thread reading its /events stream."""
        q: queue.Queue[tuple[float, dict[str, Any]]] = queue.Queue()
        conn = http.client.HTTPConnection("127.0.0.1", self.control_port, timeout=3600)
        conn.request("GET", "/events", headers=self.headers)
        resp = conn.getresponse()
        assert resp.status == 200, resp.status

        def pump() -> None:
            while line := resp.fp.readline():
                if line.startswith(b"data:"):
                    try:
                        q.put((time.perf_counter(), json.loads(line[5:].strip())))
                    except ValueError:
                        pass

        threading.Thread(target=pump, daemon=True).start()
        return q

    def stop(self) -> None:
        stop(self.proc, 10)
