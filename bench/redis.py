"""The Redis store (``transports.redis``) against a real redis-server this workload starts.

``redis``
    - **store chunks/s**: a producer on a hub over ``RedisStore`` writes 64-byte chunks in
      bursts of ``BATCH`` with ``write_many``, yielding to the loop between bursts, until all
      of them are in Redis (the driver's queue is empty). **plain XADD chunks/s**: redis-py
      (``redis.asyncio``) appends the same chunks to a stream, one pipeline of ``BATCH``
      ``XADD`` per burst, each awaited. The ratio is store / plain (goal >= 0.7). The store
      is not held to one round trip per burst: its driver sends what has queued up, merged
      into one script call per stream, so it can beat the plain loop. **plain XADD, one
      pipeline** (info) sends all the chunks in a single pipeline: the ceiling of redis-py.
    - **live tail p50 / p99**: microseconds from a write on process A (a subprocess running
      its own hub, store and driver) to the chunk at a client of process B (this process: a
      hub with its own store and driver, an asyncio server, a TCP client), over one Redis.
      The chunk carries A's ``time.monotonic_ns()``; both processes read the same clock.
    - **memory per chunk**: Redis's ``used_memory`` grown by a finished stream of
      ``RETAINED`` 64-byte chunks, per chunk (stream entries, the meta hash, the outcome).
    - **open -> accept p50**: microseconds from a TCP client's OPEN to its ACCEPT, one open
      at a time, on an asyncio server over ``RedisStore`` (the ACCEPT waits until Redis holds
      the stream's claim, so any process finds it) and, in the same run, over the default
      ``MemoryStore`` (**open -> accept p50, memory store**); the difference is the claim's
      round trip to Redis.
    - **trio round trip p50, worker-thread bridge / coredis**: microseconds for a trio task to
      have one ``XADD`` done, one at a time: through the bridge ``open_trio_driver`` uses
      (``loop.call_soon_threadsafe`` into a worker thread's asyncio loop running
      ``redis.asyncio``, ``trio.from_thread.run_sync`` back), and with coredis, a client that
      runs on trio itself (anyio); measured when coredis is installed (the dev extra).

Needs ``redis-server`` on PATH (the Debian package) and the ``redis`` extra.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any

from bench import Config, Measurement, Report, workload

CHUNK = b"x" * 64
BATCH = 64
CHANNEL = "bench:redis"
RETAINED = 10_000
TAIL_CHUNKS = 300
OPENS = 300
ROUND_TRIPS = 2_000


@contextlib.contextmanager
def _redis_server() -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
    with tempfile.TemporaryDirectory() as directory, socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", directory]
        args += ["--save", "", "--appendonly", "no", "--loglevel", "warning"]
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=1):
                        break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            proc.terminate()
            proc.wait(30)


class _Server:
    """What ``open_asyncio_driver`` needs when no socket server runs."""

    def __init__(self, hub: Any) -> None:
        self.hub = hub

    def _rearm_hub(self) -> None:
        pass


def _hub(url: str, prefix: str) -> tuple[Any, Any]:
    from streamproto import ChannelOptions, Window  # noqa: PLC0415
    from transports import new_hub  # noqa: PLC0415
    from transports.redis import RedisStore  # noqa: PLC0415

    store = RedisStore(url, prefix=prefix)
    hub = new_hub(store=store)
    hub.register(CHANNEL, ChannelOptions(replay=Window(chunks=RETAINED, nbytes=64 << 20)))
    return hub, store


async def _drained(store: Any) -> None:
    while not store.flushed:
        await asyncio.sleep(0.0005)


async def _store_run(url: str, n: int, tag: str) -> float:
    from transports.redis import open_asyncio_driver  # noqa: PLC0415

    hub, store = _hub(url, tag)
    async with open_asyncio_driver(store, _Server(hub)):
        producer = hub.channel(CHANNEL).start("s")
        batch = [CHUNK] * BATCH
        start = time.perf_counter()
        for _ in range(n // BATCH):
            producer.write_many(batch)
            await asyncio.sleep(0)
        await _drained(store)
        elapsed = time.perf_counter() - start
        producer.close()
        await _drained(store)
    return n / elapsed


async def _plain_run(url: str, n: int, tag: str) -> float:
    import redis.asyncio as aredis  # noqa: PLC0415

    client = aredis.Redis.from_url(url)
    key = f"{tag}:{{plain}}:s"
    seq = 0
    start = time.perf_counter()
    for _ in range(n // BATCH):
        pipe = client.pipeline(transaction=False)
        for _ in range(BATCH):
            seq += 1
            pipe.xadd(key, {"d": CHUNK}, id=f"{seq}-0")
        await pipe.execute()
    elapsed = time.perf_counter() - start
    await client.aclose()
    return n / elapsed


async def _plain_one_pipeline(url: str, n: int, tag: str) -> float:
    import redis.asyncio as aredis  # noqa: PLC0415

    client = aredis.Redis.from_url(url)
    key = f"{tag}:{{plain1}}:s"
    start = time.perf_counter()
    pipe = client.pipeline(transaction=False)
    for seq in range(1, n + 1):
        pipe.xadd(key, {"d": CHUNK}, id=f"{seq}-0")
    await pipe.execute()
    elapsed = time.perf_counter() - start
    await client.aclose()
    return n / elapsed


async def _memory_per_chunk(url: str) -> float:
    import redis.asyncio as aredis  # noqa: PLC0415

    from transports.redis import open_asyncio_driver  # noqa: PLC0415

    client = aredis.Redis.from_url(url)
    await client.flushall()
    before = int((await client.info("memory"))["used_memory"])
    hub, store = _hub(url, "mem")
    async with open_asyncio_driver(store, _Server(hub)):
        producer = hub.channel(CHANNEL).start("m")
        for _ in range(RETAINED // BATCH + 1):
            producer.write_many([CHUNK] * BATCH)
            await asyncio.sleep(0)
        producer.close()
        await _drained(store)
    after = int((await client.info("memory"))["used_memory"])
    await client.aclose()
    return (after - before) / RETAINED


async def _produce(url: str) -> None:
    """Process A of the live-tail case: on "go" (stdin), write TAIL_CHUNKS timestamps."""
    from transports.redis import open_asyncio_driver  # noqa: PLC0415

    hub, store = _hub(url, "tail")
    async with open_asyncio_driver(store, _Server(hub)):
        producer = hub.channel(CHANNEL).start("t")
        await _drained(store)
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)
        for _ in range(TAIL_CHUNKS):
            producer.write(b"%d" % time.monotonic_ns())
            await asyncio.sleep(0.005)
        producer.close()
        await _drained(store)


async def _tail(url: str) -> list[float]:
    """Process B of the live-tail case: latencies (µs) at a client of this process."""
    from transports import asyncio as sp  # noqa: PLC0415
    from transports.redis import open_asyncio_driver  # noqa: PLC0415

    command = [sys.executable, "-m", "bench.redis", "produce", url]
    proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdin is not None
    assert proc.stdout is not None
    latencies: list[float] = []
    try:
        if await asyncio.to_thread(proc.stdout.readline) != "ready\n":
            raise RuntimeError("the producer process did not start")
        hub, store = _hub(url, "tail")
        server = await sp.serve(hub, "tcp://127.0.0.1:0")
        async with open_asyncio_driver(store, server):
            client = await sp.connect(server.address)
            sub = client.subscribe(CHANNEL, "t")
            await sub.accepted()
            proc.stdin.write("go\n")
            proc.stdin.flush()
            async for chunk in sub:
                latencies.append((time.monotonic_ns() - int(chunk)) / 1000)
            await client.close()
        await server.shutdown(timeout=1.0)
    finally:
        proc.stdin.close()
        proc.wait(30)
        proc.stdout.close()
    return latencies


async def _open_latencies(url: str | None, n: int) -> list[float]:
    """Microseconds from OPEN to ACCEPT at a TCP client, over Redis (``url``) or memory."""
    from transports import asyncio as sp  # noqa: PLC0415
    from transports import new_hub  # noqa: PLC0415
    from transports.redis import open_asyncio_driver  # noqa: PLC0415

    hub, store = _hub(url, "open") if url is not None else (new_hub(), None)
    hub.register("bench:open", on_open=lambda producer, _args: producer.close())
    server = await sp.serve(hub, "tcp://127.0.0.1:0")
    driver = open_asyncio_driver(store, server) if store is not None else contextlib.nullcontext()
    latencies: list[float] = []
    async with driver:
        client = await sp.connect(server.address)
        for _ in range(n):
            start = time.perf_counter_ns()
            sub = client.open("bench:open")
            await sub.accepted()
            latencies.append((time.perf_counter_ns() - start) / 1000)
            async for _chunk in sub:  # to its END
                pass
        await client.close()
    await server.shutdown(timeout=1.0)
    return latencies


def _trio_bridge_round_trips(port: int, n: int) -> list[float]:
    import redis.asyncio as aredis  # noqa: PLC0415
    import trio  # noqa: PLC0415

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    client = aredis.Redis(port=port)

    async def main() -> list[float]:
        token = trio.lowlevel.current_trio_token()
        latencies: list[float] = []
        for _ in range(n):
            done = trio.Event()

            async def op(done: trio.Event = done) -> None:
                await client.xadd("bridge:{s}", {"d": CHUNK})
                trio.from_thread.run_sync(done.set, trio_token=token)

            start = time.perf_counter_ns()
            asyncio.run_coroutine_threadsafe(op(), loop)  # (call_soon_threadsafe inside)
            await done.wait()
            latencies.append((time.perf_counter_ns() - start) / 1000)
        return latencies

    try:
        return trio.run(main)
    finally:
        asyncio.run_coroutine_threadsafe(client.aclose(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()


def _trio_coredis_round_trips(port: int, n: int) -> list[float]:
    import coredis  # noqa: PLC0415
    import trio  # noqa: PLC0415

    async def main() -> list[float]:
        latencies: list[float] = []
        async with coredis.Redis(port=port) as client:
            for _ in range(n):
                start = time.perf_counter_ns()
                await client.xadd("coredis:{s}", {"d": CHUNK})
                latencies.append((time.perf_counter_ns() - start) / 1000)
        return latencies

    return trio.run(main)


@workload("redis", "the Redis store: throughput vs plain XADD, cross-process tail, memory")
def run(config: Config) -> Report:
    n = 2_048 if config.quick else 20_480
    repeats = config.repeats
    store_rates: list[float] = []
    plain_rates: list[float] = []
    one_rates: list[float] = []
    with _redis_server() as url:
        for i in range(repeats):  # alternating, so drift hits both alike
            plain_rates.append(asyncio.run(_plain_run(url, n, f"p{i}")))
            store_rates.append(asyncio.run(_store_run(url, n, f"s{i}")))
            one_rates.append(asyncio.run(_plain_one_pipeline(url, n, f"o{i}")))
        latencies = asyncio.run(_tail(url))
        memory = asyncio.run(_memory_per_chunk(url))
        opens = n // 10 if config.quick else OPENS
        open_redis: list[float] = []
        open_memory: list[float] = []
        for _ in range(repeats):  # alternating, as above
            open_memory.append(statistics.median(asyncio.run(_open_latencies(None, opens))))
            open_redis.append(statistics.median(asyncio.run(_open_latencies(url, opens))))
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        trips = n // 10 if config.quick else ROUND_TRIPS
        bridge: list[float] = []
        native: list[float] = []
        for _ in range(repeats):
            bridge.append(statistics.median(_trio_bridge_round_trips(port, trips)))
            if importlib.util.find_spec("coredis") is not None:
                native.append(statistics.median(_trio_coredis_round_trips(port, trips)))
    p50 = statistics.median(latencies)
    p99 = statistics.quantiles(latencies, n=100)[98]
    return Report(
        [
            Measurement("store chunks/s", store_rates, "chunks/s"),
            Measurement("plain XADD chunks/s", plain_rates, "chunks/s"),
            Measurement("plain XADD, one pipeline", one_rates, "chunks/s", info=True),
            Measurement("live tail p50", [p50], "us"),
            Measurement("live tail p99", [p99], "us"),
            Measurement("memory per chunk", [memory], "B"),
            Measurement("open -> accept p50", open_redis, "us"),
            Measurement("open -> accept p50, memory store", open_memory, "us"),
            Measurement("trio round trip p50, worker-thread bridge", bridge, "us", info=True),
            *(
                [Measurement("trio round trip p50, coredis", native, "us", info=True)]
                if native
                else []
            ),
        ],
        derived={
            "store / plain XADD": statistics.median(store_rates) / statistics.median(plain_rates),
            "open -> accept, redis / memory": statistics.median(open_redis)
            / statistics.median(open_memory),
            **(
                {
                    "trio round trip, coredis / bridge": statistics.median(native)
                    / statistics.median(bridge)
                }
                if native
                else {}
            ),
        },
        params={
            "chunk": len(CHUNK),
            "batch": BATCH,
            "chunks": n,
            "tail chunks": TAIL_CHUNKS,
            "opens": opens,
        },
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["produce"]:
        asyncio.run(_produce(sys.argv[2]))
