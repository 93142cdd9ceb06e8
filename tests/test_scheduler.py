"""The priority scheduler: bounded, ordered by class then credit, aging, cancellation-safe."""

import asyncio

import pytest

from shard.credit.scheduler import Priority, QueueFull, Scheduler


async def test_owner_overtakes_consumer_and_queue_is_bounded() -> None:
    sched = Scheduler(concurrency=1, max_waiting=2, aging_s=1000)
    order: list[str] = []
    release = asyncio.Event()

    async def run(name: str, prio: Priority) -> None:
        async with sched.admit(prio):
            order.append(name)
            await release.wait()

    first = asyncio.create_task(run("first", Priority.CONSUMER))
    await asyncio.sleep(0)
    consumer = asyncio.create_task(run("consumer", Priority.CONSUMER))
    await asyncio.sleep(0)
    owner = asyncio.create_task(run("owner", Priority.OWNER))
    await asyncio.sleep(0)
    assert sched.depth == 2
    with pytest.raises(QueueFull) as info:
        async with sched.admit(Priority.OWNER):
            pass
    assert info.value.retry_after_s >= 1
    release.set()
    await asyncio.gather(first, consumer, owner)
    assert order == ["first", "owner", "consumer"]
    assert sched.in_flight == 0 and sched.depth == 0


async def test_aging_lets_a_long_waiting_consumer_through() -> None:
    sched = Scheduler(concurrency=1, max_waiting=10, aging_s=0.05)
    order: list[str] = []
    gate = asyncio.Event()

    async def run(name: str, prio: Priority) -> None:
        async with sched.admit(prio):
            order.append(name)
            await gate.wait()

    holder = asyncio.create_task(run("holder", Priority.OWNER))
    await asyncio.sleep(0)
    consumer = asyncio.create_task(run("consumer", Priority.CONSUMER))
    await asyncio.sleep(0.2)  # four aging periods: the consumer now ranks above a fresh owner
    owner = asyncio.create_task(run("owner", Priority.OWNER))
    await asyncio.sleep(0)
    gate.set()
    await asyncio.gather(holder, consumer, owner)
    assert order == ["holder", "consumer", "owner"]


async def test_cancelled_waiter_leaves_no_trace() -> None:
    sched = Scheduler(concurrency=1, max_waiting=4)
    gate = asyncio.Event()

    async def hold() -> None:
        async with sched.admit():
            await gate.wait()

    holder = asyncio.create_task(hold())
    await asyncio.sleep(0)
    waiter = asyncio.create_task(hold())
    await asyncio.sleep(0)
    assert sched.depth == 1
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert sched.depth == 0
    gate.set()
    await holder
    assert sched.in_flight == 0


def test_an_asker_prefers_oracles_that_served_it_well_then_the_least_loaded_then_the_nearest() -> None:
    from types import SimpleNamespace

    from shard.config import Settings
    from shard.network.peers import PeerTable
    from shard.remote.client import InferClient

    table = PeerTable()
    for pid, load, latency in (("busy", 3, 1.0), ("far", 0, 50.0), ("near", 0, 2.0), ("flaky", 0, 1.0)):
        table.upsert(
            {"peer_id": pid, "roles": ["oracle"], "models": ["m"], "capacity": 4, "load": load, "latency_ms": latency}
        )
    table.upsert({"peer_id": "scout", "roles": ["scout"], "models": ["m"]})
    settings = [Settings(prompt_privacy="anyone")]
    network = SimpleNamespace(ready=True)
    client = InferClient(  # only what it uses: the settings now, the network, the peers
        settings=lambda: settings[0],
        network=lambda: network,  # type: ignore[arg-type,return-value]
        ledger=lambda: None,
        peers=table,
        metrics=None,  # type: ignore[arg-type]
        spawn=lambda coro: None,
    )
    client.failures["flaky"] = 1  # it broke a stream off before
    assert [p.peer_id for p in client.oracles("m")] == ["near", "far", "busy", "flaky"]
    assert client.oracles("other") == []
    settings[0] = Settings(prompt_privacy="local")  # none of them is on this machine: none gets a prompt
    assert client.oracles("m") == []
