"""A TCP forwarder that adds latency (this kernel has no netem): every chunk read on one side is
written to the other `delay_ms / 2` later, in order, in both directions, so a connection through it
sees `delay_ms` more round-trip time. For benchmarks only.

    .venv/bin/python bench/delay_proxy.py LISTEN_PORT TARGET_HOST:TARGET_PORT DELAY_MS
"""

from __future__ import annotations

import asyncio
import sys
import time


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, one_way_s: float) -> None:
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def deliver() -> None:
        while True:
            due, data = await queue.get()
            if not data:
                break
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()
        writer.close()

    task = asyncio.ensure_future(deliver())
    try:
        while data := await reader.read(65536):
            queue.put_nowait((time.monotonic() + one_way_s, data))
    except ConnectionError:
        pass
    queue.put_nowait((0.0, b""))
    try:
        await task
    except ConnectionError:
        pass


async def serve(listen_port: int, host: str, port: int, delay_ms: float) -> None:
    one_way = delay_ms / 2000

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            ur, uw = await asyncio.open_connection(host, port)
        except OSError:
            w.close()
            return
        await asyncio.gather(_pump(r, uw, one_way), _pump(ur, w, one_way))

    server = await asyncio.start_server(handle, "127.0.0.1", listen_port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    target_host, target_port = sys.argv[2].rsplit(":", 1)
    asyncio.run(serve(int(sys.argv[1]), target_host, int(target_port), float(sys.argv[3])))
