"""Every backend lets single writes batch themselves (``Hub.on_writes_held``): a run of
``write`` calls made in one loop turn (asyncio, trio) or under the server's lock (threads)
reaches the hub's store as one ``extend``, not one ``append`` per chunk; a lone write still
goes out without a second write to push it; a BLOCK subscriber lets a run be held as long
as it has room for it.

The store counts the calls: without holding, every chunk is an ``append``.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest
import trio

from streamproto import ChannelOptions, Config, Hub, MemoryStore, OverflowPolicy
from transports import Backoff, sync
from transports import asyncio as aio
from transports import trio as tri

BACKENDS = ["asyncio", "trio", "sync"]
N = 40
CHUNKS = [b"chunk %d" % i for i in range(N)]
CHANNEL = "test:held"
TIMEOUT = 30.0


class CountingStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.appends = 0
        self.extends: list[int] = []

    def append(self, key: tuple[str, str], generation: int, chunk: bytes) -> int:
        self.appends += 1
        return super().append(key, generation, chunk)

    def extend(self, key: tuple[str, str], generation: int, chunks: Sequence[bytes]) -> int:
        self.extends.append(len(chunks))
        return super().extend(key, generation, chunks)


def _hub(store: MemoryStore) -> Hub:
    counter = itertools.count(1)
    return Hub(clock=time.monotonic, ids=lambda: f"id{next(counter)}", store=store)


def _client_config() -> Config:
    return Config(window_chunks=4 * N)


def _run(backend: str, policy: OverflowPolicy, chunks: list[bytes]) -> tuple[list[bytes], Any]:
    """Open CHANNEL on ``backend``, whose handler writes ``chunks`` with one ``write`` each in
    one turn, then waits until the client has them all before it ends the stream (so no
    other call into the hub delivers what is held). Returns what the client read and the
    store."""
    store = CountingStore()
    if backend == "asyncio":
        return asyncio.run(_asyncio(store, policy, chunks)), store
    if backend == "trio":
        return trio.run(_trio, store, policy, chunks), store
    return _sync(store, policy, chunks), store


async def _asyncio(
    store: CountingStore, policy: OverflowPolicy, chunks: list[bytes]
) -> list[bytes]:
    got_all = asyncio.Event()

    async def handler(producer: Any, args: bytes) -> None:
        for chunk in chunks:
            await producer.write(chunk)
        await asyncio.wait_for(got_all.wait(), TIMEOUT)
        producer.close()

    server = await aio.serve(_hub(store), "tcp://127.0.0.1:0")
    try:
        server.channel(CHANNEL, ChannelOptions(), on_open=handler)
        client = await aio.connect(
            server.address, config=_client_config(), reconnect=Backoff(attempts=0)
        )
        async with client:
            received = []
            async with asyncio.timeout(TIMEOUT):
                async for chunk in client.open(CHANNEL, policy=policy):
                    received.append(chunk)
                    if len(received) == len(chunks):
                        got_all.set()
            return received
    finally:
        await server.shutdown()


async def _trio(store: CountingStore, policy: OverflowPolicy, chunks: list[bytes]) -> list[bytes]:
    got_all = trio.Event()

    async def handler(producer: Any, args: bytes) -> None:
        for chunk in chunks:
            await producer.write(chunk)
        with trio.fail_after(TIMEOUT):
            await got_all.wait()
        producer.close()

    async with tri.serve(_hub(store), "tcp://127.0.0.1:0") as server:
        server.channel(CHANNEL, ChannelOptions(), on_open=handler)
        async with tri.connect(
            server.address, config=_client_config(), reconnect=Backoff(attempts=0)
        ) as client:
            received = []
            with trio.fail_after(TIMEOUT):
                async for chunk in client.open(CHANNEL, policy=policy):
                    received.append(chunk)
                    if len(received) == len(chunks):
                        got_all.set()
            return received


def _sync(store: CountingStore, policy: OverflowPolicy, chunks: list[bytes]) -> list[bytes]:
    got_all = threading.Event()
    server = sync.serve(_hub(store), "tcp://127.0.0.1:0")

    def handler(producer: Any, args: bytes) -> None:
        # A burst under the server's lock: the I/O thread cannot deliver part of it.
        with server.lock:
            for chunk in chunks:
                producer.write(chunk)
        got_all.wait(TIMEOUT)
        producer.close()

    with server:
        server.channel(CHANNEL, ChannelOptions(), on_open=handler)
        with sync.connect(
            server.address, config=_client_config(), reconnect=Backoff(attempts=0), timeout=TIMEOUT
        ) as client:
            received = []
            for chunk in client.open(CHANNEL, policy=policy):
                received.append(chunk)
                if len(received) == len(chunks):
                    got_all.set()
            return received


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_burst_of_writes_is_one_run(backend: str) -> None:
    received, store = _run(backend, OverflowPolicy.DROP_OLDEST, CHUNKS)
    assert received == CHUNKS
    assert store.appends == 0
    assert store.extends == [N]


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_lone_write_goes_out_by_itself(backend: str) -> None:
    # The handler waits for the client to have the chunk: nothing else pushes it out.
    # (A run of one is delivered as the write it is: one append.)
    received, store = _run(backend, OverflowPolicy.DROP_OLDEST, CHUNKS[:1])
    assert received == CHUNKS[:1]
    assert (store.appends, store.extends) == (1, [])


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_block_subscriber_with_room_lets_the_burst_be_one_run(backend: str) -> None:
    received, store = _run(backend, OverflowPolicy.BLOCK, CHUNKS)
    assert received == CHUNKS
    assert (store.appends, store.extends) == (0, [N])


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_burst_past_a_block_subscriber_s_room_waits_for_it(backend: str) -> None:
    # Room for 4 * N chunks of credit and the server's 256 queued beyond it: the run held
    # first is that long, the write after it waits for the client, and all arrive in order.
    room = 4 * N + Config().max_queued_chunks
    chunks = [b"%d" % i for i in range(room + 3 * N)]
    received, store = _run(backend, OverflowPolicy.BLOCK, chunks)
    assert received == chunks
    assert store.extends[0] == room
    assert store.appends + sum(store.extends) == len(chunks)
