"""Producers of the async backends yield to their event loop every so many chunks or bytes.

A producer that is never blocked would otherwise hold the loop until it finished: the
connection's flush runs only when the loop gets control, so nothing would reach the socket
while it writes (the client idles, then gets everything at once). These tests count how often
another task ran while a producer wrote without ever being blocked.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio

from streamproto import ChannelOptions, Hub
from transports import asyncio as aio
from transports import trio as tri
from transports._common import YIELD_BYTES, YIELD_CHUNKS


def _hub() -> Hub:
    counter = itertools.count(1)
    return Hub(clock=time.monotonic, ids=lambda: f"id{next(counter)}")


# (what to write, how many times write is called, how often the producer must have yielded)
CASES = {
    "small chunks, one write each": ("write", [b"x" * 8] * (4 * YIELD_CHUNKS)),
    "small chunks, write_many bursts": ("write_many", [b"x" * 8] * (4 * YIELD_CHUNKS)),
    "large chunks, one write each": ("write", [b"x" * (YIELD_BYTES // 8)] * 32),
    "large chunks, write_many bursts": ("write_many", [b"x" * (YIELD_BYTES // 8)] * 32),
}


async def _write(producer: Any, how: str, chunks: list[bytes]) -> None:
    if how == "write":
        for chunk in chunks:
            await producer.write(chunk)
    else:
        for start in range(0, len(chunks), 16):
            await producer.write_many(chunks[start : start + 16])


def _expected(how: str, chunks: list[bytes], max_chunks: int, max_bytes: int) -> int:
    """How many yields the pacing rule makes for these writes, less one for slack."""
    calls = (
        [[c] for c in chunks]
        if how == "write"
        else [chunks[i : i + 16] for i in range(0, len(chunks), 16)]
    )
    yields = n = nbytes = 0
    for call in calls:
        n += len(call)
        nbytes += sum(map(len, call))
        if n >= max_chunks or nbytes >= max_bytes:
            yields += 1
            n = nbytes = 0
    return yields - 1


def _asyncio_ticks(write: Callable[[Any], Awaitable[None]]) -> int:
    """How often another task ran while ``write(producer)`` wrote to a stream nobody reads
    (so it is never blocked)."""

    async def main() -> int:
        server = await aio.serve(_hub(), "tcp://127.0.0.1:0")
        server.channel("test:p", ChannelOptions())
        producer = server.producer("test:p", "s")
        done = False
        ticks = 0

        async def other() -> None:
            nonlocal ticks
            while not done:
                ticks += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(other())
        await asyncio.sleep(0)
        ticks = 0
        await write(producer)
        done = True
        await task
        await server.shutdown()
        return ticks

    return asyncio.run(main())


@pytest.mark.parametrize("case", list(CASES))
def test_asyncio_producer_lets_the_loop_run(case: str) -> None:
    how, chunks = CASES[case]
    ticks = _asyncio_ticks(lambda producer: _write(producer, how, chunks))
    assert ticks >= _expected(how, chunks, YIELD_CHUNKS, YIELD_BYTES)


@pytest.mark.parametrize("case", list(CASES))
def test_trio_producer_lets_the_loop_run(case: str) -> None:
    how, chunks = CASES[case]

    async def main() -> int:
        ticks = 0
        async with tri.serve(_hub(), "tcp://127.0.0.1:0") as server:
            server.channel("test:p", ChannelOptions())
            producer = server.producer("test:p", "s")
            done = False

            async def other() -> None:
                nonlocal ticks
                while not done:
                    ticks += 1
                    await trio.lowlevel.checkpoint()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(other)
                await trio.lowlevel.checkpoint()
                ticks = 0
                await _write(producer, how, chunks)
                done = True
            await server.shutdown()
        return ticks

    assert trio.run(main) >= _expected(how, chunks, YIELD_CHUNKS, YIELD_BYTES)


def test_small_writes_yield_rarely() -> None:
    """Not after every write: one yield per few hundred small chunks is what keeps the flushes
    batched (a yield per write sent one chunk per syscall)."""

    async def write(producer: Any) -> None:
        for _ in range(YIELD_CHUNKS * 2):
            await producer.write(b"x")

    assert _asyncio_ticks(write) <= 3
