"""A gossip work topic per model, with real shard-daemons on loopback: a scout that drafts for
model A (PUT /work-topics) receives A's work and never B's; a node that said nothing stays on
the shared `shard-work` topic and receives both (older nodes, the web scout)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from shard.config import Settings
from shard.network.messages import Progress
from shard.network.sidecar import find_daemon

TOKEN = "topics-test-token-0123456789"
H = {"Authorization": f"Bearer {TOKEN}"}


class Daemon:
    def __init__(self, binary: Path, log: Path, bootstrap: str | None) -> None:
        self.log = log.open("wb")
        self.proc = subprocess.Popen(
            [str(binary), "--control-port", "0", "--tcp-port", "0", "--listen-host", "127.0.0.1", "--no-mdns"]
            + (["--bootstrap", bootstrap] if bootstrap else [])
            + ["--exit-with-stdin", "--log-level", "warn"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            env={**os.environ, "SHARD_CONTROL_TOKEN": TOKEN},
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        assert line.startswith("SHARD_SIDECAR_READY "), line
        self.info = json.loads(line.split(" ", 1)[1])
        self.url = f"http://127.0.0.1:{self.info['control_port']}"
        self.tcp = next(a for a in self.info["listen_addrs"] if "/tcp/" in a and "/ws" not in a)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self.log.close()


@pytest.fixture()
def daemons(tmp_path: Path) -> Iterator[list[Daemon]]:
    binary = find_daemon(Settings(data_dir=tmp_path))
    assert binary is not None, "build the sidecar first (cargo build --release in sidecar/)"
    out: list[Daemon] = []
    try:
        out.append(Daemon(binary, tmp_path / "p.log", None))
        for name in ("a", "b", "shared"):
            out.append(Daemon(binary, tmp_path / f"{name}.log", out[0].tcp))
        yield out
    finally:
        for d in out:
            d.stop()


async def _scenario(publisher: Daemon, scout_a: Daemon, scout_b: Daemon, shared: Daemon) -> None:
    async with aiohttp.ClientSession(headers=H, timeout=aiohttp.ClientTimeout(total=20)) as s:
        # bad input: a clear 400, nothing subscribed
        for body in ({"models": [""]}, {"models": ["m"] * 9}, {"models": "A"}, {"models": ["a\nb"]}):
            async with s.put(scout_a.url + "/work-topics", json=body) as r:
                assert r.status == 400, body
        for d, m in ((scout_a, "A"), (scout_b, "B")):
            async with s.put(d.url + "/work-topics", json={"models": [m]}) as r:
                assert r.status == 200
                assert (await r.json())["work_topics"] == [f"shard-work/{m}"]
        async with s.get(shared.url + "/topology") as r:
            assert (await r.json())["work_topics"] == ["shard-work"]

        got: dict[str, list[tuple[str, str]]] = {"a": [], "b": [], "shared": []}

        async def listen(name: str, d: Daemon) -> None:
            async with s.get(d.url + "/events", timeout=aiohttp.ClientTimeout(total=None)) as r:
                async for raw in r.content:
                    line = raw.decode().strip()
                    if line.startswith("data:"):
                        ev = json.loads(line[5:])
                        if ev.get("type") == "work":
                            got[name].append((ev["work"]["work_id"], ev["work"]["model"]))

        tasks = [asyncio.create_task(listen(n, d)) for n, d in (("a", scout_a), ("b", scout_b), ("shared", shared))]
        try:
            n = 0

            async def publish(model: str) -> dict:
                nonlocal n
                n += 1
                work = {"work_id": f"w{n}-{model}", "model": model, "context": "x", "position": 1}
                async with s.post(publisher.url + "/broadcast-work", json={"work": work}) as r:
                    assert r.status == 200
                    return await r.json()

            # wait until the subscriptions reached the publisher and every scout has heard some work
            deadline = time.monotonic() + 60
            while not (
                any(m == "A" for _, m in got["a"])
                and any(m == "B" for _, m in got["b"])
                and {m for _, m in got["shared"]} == {"A", "B"}
            ):
                assert time.monotonic() < deadline, f"the work topics never formed: {got}"
                await publish("A")
                await publish("B")
                await asyncio.sleep(0.5)
            sent = {"A": [], "B": []}
            for _ in range(5):
                for m in ("A", "B"):
                    out = await publish(m)
                    sent[m].append(f"w{n}-{m}")
                    to = set(out["delivered_to"])
                    assert out["published"] and shared.info["peer_id"] in to
                    this, other = (scout_a, scout_b) if m == "A" else (scout_b, scout_a)
                    assert this.info["peer_id"] in to and other.info["peer_id"] not in to, out
            await asyncio.sleep(3)
        finally:
            for t in tasks:
                t.cancel()
        ids = {k: {w for w, _ in v} for k, v in got.items()}
        # the scout of A never received B's work, nor the scout of B A's
        assert all(m == "A" for _, m in got["a"]), got["a"]
        assert all(m == "B" for _, m in got["b"]), got["b"]
        assert set(sent["A"]) <= ids["a"] and set(sent["B"]) <= ids["b"]
        assert set(sent["A"]) | set(sent["B"]) <= ids["shared"]
        # no copy twice to a node on both routes
        assert len(got["shared"]) == len(ids["shared"])


def test_a_scout_of_model_a_does_not_receive_model_b_work(daemons: list[Daemon]) -> None:
    asyncio.run(_scenario(*daemons))


async def _scout_scenario(oracle: Daemon, data: Path) -> None:
    from shard.scout.headless import Scout

    settings = Settings(
        data_dir=str(data),
        control_port=0,
        tcp_port=0,
        p2p_host="127.0.0.1",
        bootstrap=[oracle.tcp],
        mdns=False,
        log_level="warning",
    )
    scout = Scout(settings, None)  # no draft model: the topics come from the Oracles it meets
    stop = asyncio.Event()
    run = asyncio.create_task(scout.run(stop))
    async with aiohttp.ClientSession(headers=H, timeout=aiohttp.ClientTimeout(total=20)) as s:
        try:

            async def scout_topics() -> list[str]:
                if not scout.sidecar.ready:
                    return []
                return (await scout.sidecar.call("GET", "/topology"))["work_topics"]

            deadline = time.monotonic() + 30
            while await scout_topics() != ["shard-work"]:
                assert time.monotonic() < deadline, "the scout's sidecar never came up"
                await asyncio.sleep(0.2)
            # the Oracle says what it serves: the scout moves to that model's topic by itself
            info = {"roles": ["oracle"], "models": ["A"], "capacity": 1, "load": 0, "agent": "shard/test"}
            async with s.put(oracle.url + "/local-info", json=info) as r:
                assert r.status == 200
            while await scout_topics() != ["shard-work/A"]:
                assert time.monotonic() < deadline, await scout_topics()
                await asyncio.sleep(0.2)
            scout_id = scout.sidecar.info["peer_id"]

            async def delivered(work: dict) -> list[str]:
                async with s.post(oracle.url + "/broadcast-work", json={"work": work}) as r:
                    assert r.status == 200
                    return (await r.json())["delivered_to"]

            # the Oracle's work and its progress messages (which name the model) reach the scout on
            # A's topic once the subscription arrived; model B's work does not
            progress = Progress(work_id="w1.0", position=3, tokens=[1, 2], text="ab", model="A").to_dict()
            while scout_id not in await delivered(progress):
                assert time.monotonic() < deadline, "the scout never joined A's topic"
                await asyncio.sleep(0.3)
            assert scout_id in await delivered({"work_id": "w2.0", "model": "A", "context": "x", "position": 1})
            assert scout_id not in await delivered({"work_id": "w3.0", "model": "B", "context": "x", "position": 1})
        finally:
            stop.set()
            await asyncio.wait_for(run, 15)


def test_the_headless_scout_takes_the_work_topic_of_the_oracle_it_drafts_for(tmp_path: Path) -> None:
    """The Python scout calls PUT /work-topics with the models of the Oracles it meets: it then gets
    their work and progress on the model's topic, and not another model's work."""
    binary = find_daemon(Settings(data_dir=tmp_path))
    assert binary is not None, "build the sidecar first (cargo build --release in sidecar/)"
    oracle = Daemon(binary, tmp_path / "oracle.log", None)
    try:
        asyncio.run(_scout_scenario(oracle, tmp_path / "scout"))
    finally:
        oracle.stop()
