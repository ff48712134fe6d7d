"""transports.redis against a real redis-server: the ReplayStore contract shared with
MemoryStore, what another process sees in Redis, generation fencing between processes, and
hypothesis interleavings of several writers.

Each "process" is a hub with its own RedisStore and driver, in one asyncio loop; clients are
the in-memory connections of hub_helpers, pumped by the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.cluster
from hub_helpers import Client, HubHarness
from hypothesis import given, settings
from hypothesis import strategies as st
from redis_helpers import (
    RedisCluster,
    RedisServer,
    prefix,
    redis_cluster,
    redis_server,
    running_redis,
)

from streamproto import (
    DataReceived,
    ErrorCode,
    GapReason,
    GapReceived,
    LocalProtocolError,
    MemoryStore,
    Outcome,
    ReplayStore,
    RequestAccepted,
    RequestRejected,
    StreamEnded,
    StreamFailed,
    StreamStatus,
    Window,
)
from transports.redis import RedisStore, open_asyncio_driver

__all__ = ["prefix", "redis_cluster", "redis_server"]  # fixtures

CH = "demo:tokens"
KEY = (CH, "s1")
TIMEOUT = 30.0


class _FakeServer:
    """What open_asyncio_driver needs of a server: its hub and a re-arm hook."""

    def __init__(self, hub: Any) -> None:
        self.hub = hub

    def _rearm_hub(self) -> None:
        pass


class Process:
    """One server process: a hub over a RedisStore, its driver, and in-memory clients."""

    def __init__(self, url: str, prefix: str, **options: Any) -> None:
        self.store = RedisStore(url, prefix=prefix, **options)
        self.h = HubHarness(store=self.store)
        self.hub = self.h.hub
        self.hub.register(CH, on_open=lambda _p, _a: None)
        self._driver: Any = None

    async def start(self) -> None:
        self._driver = open_asyncio_driver(self.store, _FakeServer(self.hub))
        await self._driver.__aenter__()

    async def stop(self) -> None:
        if self._driver is not None:
            await self._driver.__aexit__(None, None, None)
            self._driver = None

    def follows(self, key: tuple[str, str]) -> list[str]:
        """The processes registered in Redis as following ``key``."""
        if self.store.cluster:
            client: Any = redis.cluster.RedisCluster.from_url(self.store.url)
        else:
            client = redis.Redis.from_url(self.store.url)
        try:
            return sorted(p.decode() for p in client.hkeys(self.store.keys(key)[3]))
        finally:
            client.close()

    async def settle(self) -> None:
        """Until every queued write reached Redis."""
        await until(lambda: self.store.flushed)
        await asyncio.sleep(0.02)


#: A lease short enough to wait out in a test, long enough to be renewed under load.
LEASE = 1.5


async def until(predicate: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.01)


async def pumped(proc: Process, predicate: Callable[[], bool]) -> None:
    def step() -> bool:
        proc.h.pump()
        return predicate()

    await until(step)


def flat(events: list[Any]) -> list[Any]:
    out: list[Any] = []
    for e in events:
        if isinstance(e, DataReceived):
            out += [(e.seq + i, c) for i, c in enumerate(e.chunks)]
        else:
            out.append(e)
    return out


def terminal(client: Client, handle: int) -> bool:
    return any(
        isinstance(e, StreamEnded | StreamFailed | RequestRejected) for e in client.of(handle)
    )


async def read_remote(proc: Process, stream_id: str, *, wait_end: bool = True) -> list[Any]:
    """Everything a client of ``proc`` gets from the start of ``stream_id``."""
    client = proc.h.connect()
    handle = client.conn.subscribe(CH, stream_id)
    if wait_end:
        await pumped(proc, lambda: terminal(client, handle))
    else:
        await pumped(proc, lambda: bool(client.of(handle)))
    return flat(client.of(handle))


def run(coro: Any) -> Any:
    return asyncio.run(coro)


@pytest.fixture
def redis_procs(redis_server: RedisServer, prefix: str) -> Iterator[Callable[..., Process]]:
    def make(**options: Any) -> Process:
        return Process(redis_server.url, prefix, **options)

    yield make
    client = redis.Redis.from_url(redis_server.url)
    for key in client.scan_iter(f"{prefix}:*"):
        client.delete(key)
    client.close()


@pytest.fixture
def cluster_procs(redis_cluster: RedisCluster, prefix: str) -> Callable[..., Process]:
    """Processes on the local 3-master Cluster (each test's prefix is its own)."""

    def make(**options: Any) -> Process:
        return Process(redis_cluster.store_url, prefix, **options)

    return make


@pytest.fixture(params=["redis", "cluster"])
def procs(request: pytest.FixtureRequest) -> Callable[..., Process]:
    """Processes on one redis-server, then on a Redis Cluster: the same tests for both."""
    return request.getfixturevalue(f"{request.param}_procs")  # type: ignore[no-any-return]


# -- the ReplayStore contract, shared with MemoryStore -----------------------------------------

Factory = Callable[[], AsyncIterator[ReplayStore]]


@pytest.fixture(params=["memory", "redis", "cluster"])
def subject(request: pytest.FixtureRequest) -> Any:
    """(store, check): ``check`` awaits Redis and compares what another process reads."""
    if request.param == "memory":

        async def check_memory(store: ReplayStore) -> None:
            pass

        return lambda: (MemoryStore(), check_memory, None)
    make = request.getfixturevalue(f"{request.param}_procs")

    def factory() -> Any:
        a, b = make(), make()

        async def check(store: ReplayStore) -> None:
            await a.settle()
            info = store.status(KEY)
            assert info is not None
            events = await read_remote(b, KEY[1], wait_end=info.outcome is not None)
            accepted = events[0]
            assert isinstance(accepted, RequestAccepted)
            assert (accepted.first_seq, accepted.last_seq) == (info.first_seq, info.last_seq)
            if info.outcome is None:
                await pumped(b, lambda: True)
                return
            replay = store.read(KEY, 0, 1 << 20)
            chunks = [e for e in events if isinstance(e, tuple)]
            assert chunks == [(replay.first_seq + i, c) for i, c in enumerate(replay.chunks)]

        return a.store, check, (a, b)

    return factory


async def _with(subject: Any, body: Callable[[ReplayStore, Any], Any]) -> None:
    store, check, procs = subject()
    if procs:
        for p in procs:
            await p.start()
    try:
        await body(store, check)
    finally:
        if procs:
            for p in procs:
                await p.stop()


def test_contract_window_by_count(subject: Any) -> None:
    async def body(store: ReplayStore, check: Any) -> None:
        gen = store.acquire(KEY, Window(chunks=3, nbytes=1000))
        for i in range(1, 6):
            assert store.append(KEY, gen, bytes([i])) == i
        info = store.status(KEY)
        assert (info.first_seq, info.last_seq, info.generation) == (3, 5, gen)  # type: ignore[union-attr]
        assert store.read(KEY, 0, 10).first_seq == 3
        assert store.read(KEY, 3, 1).chunks == (b"\x04",)
        store.finish(KEY, gen, Outcome(StreamStatus.ENDED))
        await check(store)

    run(_with(subject, body))


def test_contract_window_by_bytes_and_failure(subject: Any) -> None:
    async def body(store: ReplayStore, check: Any) -> None:
        gen = store.acquire(KEY, Window(chunks=100, nbytes=25))
        for i in range(1, 6):
            store.append(KEY, gen, bytes([i]) * 10)
        info = store.status(KEY)
        assert (info.first_seq, info.last_seq) == (4, 5)  # type: ignore[union-attr]
        store.finish(KEY, gen, Outcome(StreamStatus.FAILED, 1234, "broke"))
        assert store.status(KEY).outcome == Outcome(StreamStatus.FAILED, 1234, "broke")  # type: ignore[union-attr]
        await check(store)

    run(_with(subject, body))


def test_contract_generations_fence_and_finish_closes(subject: Any) -> None:
    async def body(store: ReplayStore, check: Any) -> None:
        gen = store.acquire(KEY, Window())
        with pytest.raises(LocalProtocolError, match=r"\[STREAM_EXISTS\]"):
            store.acquire(KEY, Window())
        store.append(KEY, gen, b"a")
        with pytest.raises(LocalProtocolError, match=r"\[STALE_GENERATION\]"):
            store.append(KEY, gen + 1, b"x")
        extend = getattr(store, "extend", None)
        assert extend is not None
        assert extend(KEY, gen, [b"b", b"c"]) == 3
        store.finish(KEY, gen, Outcome(StreamStatus.ENDED))
        with pytest.raises(LocalProtocolError, match=r"\[STREAM_CLOSED\]"):
            store.append(KEY, gen, b"d")
        await check(store)
        new = store.acquire(KEY, Window())  # a finished stream's id may be reused
        assert new != gen
        with pytest.raises(LocalProtocolError, match=r"\[STALE_GENERATION\]"):
            store.append(KEY, gen, b"x")
        store.release(KEY, gen)  # another generation: nothing happens
        assert store.status(KEY).generation == new  # type: ignore[union-attr]
        store.release(KEY, new)
        assert store.status(KEY) is None
        with pytest.raises(LocalProtocolError, match=r"\[UNKNOWN_STREAM\]"):
            store.read(KEY, 0, 1)

    run(_with(subject, body))


def test_contract_an_empty_window_keeps_nothing(subject: Any) -> None:
    async def body(store: ReplayStore, check: Any) -> None:
        gen = store.acquire(KEY, Window(chunks=0))
        for _ in range(4):
            store.append(KEY, gen, b"x")
        info = store.status(KEY)
        assert (info.first_seq, info.last_seq) == (5, 4)  # type: ignore[union-attr]
        assert store.read(KEY, 0, 10).chunks == ()
        store.finish(KEY, gen, Outcome(StreamStatus.ENDED))
        await check(store)

    run(_with(subject, body))


# -- across processes ---------------------------------------------------------------------------


async def _started(*processes: Process) -> None:
    for p in processes:
        await p.start()


async def _stopped(*processes: Process) -> None:
    for p in processes:
        await p.stop()


async def _in_redis(proc: Process, chunk: bytes) -> Any:
    """A producer of stream s1 on ``proc`` that wrote ``chunk``, in Redis already."""
    producer = proc.hub.channel(CH).start("s1")
    producer.write(chunk)
    await proc.settle()
    return producer


@contextlib.asynccontextmanager
async def running(*processes: Process) -> AsyncIterator[None]:
    """The processes' drivers run in the block (stopped at its end, however it ends)."""
    await _started(*processes)
    try:
        yield
    finally:
        await _stopped(*processes)


def test_b_replays_then_tails_a_with_the_same_seqs_and_gaps(procs: Any) -> None:
    async def main() -> None:
        a, b = procs(), procs()
        async with running(a, b):
            channel = a.hub.channel(CH)
            channel.options = type(channel.options)(replay=Window(chunks=3))
            producer = channel.start("s1")
            for i in range(1, 6):
                producer.write(b"%d" % i)
            await a.settle()
            client = b.h.connect()
            handle = client.conn.subscribe(CH, "s1")
            await pumped(b, lambda: len(client.of(handle)) >= 3)
            producer.write_many([b"6", b"7"])
            producer.close()
            await pumped(b, lambda: terminal(client, handle))
            assert flat(client.of(handle)) == [
                RequestAccepted(handle, "s1", 3, 5),
                GapReceived(handle, 1, 2, GapReason.EVICTED),
                (3, b"3"),
                (4, b"4"),
                (5, b"5"),
                (6, b"6"),
                (7, b"7"),
                StreamEnded(handle, 7),
            ]

    run(main())


def test_an_open_is_accepted_only_once_redis_holds_it_so_b_finds_it_at_once(
    procs: Any,
) -> None:
    async def main() -> None:
        a, b, c = procs(), procs(), procs()
        await _started(b, c)  # A's driver is not running yet: nothing of A reaches Redis
        try:
            opener = a.h.connect()
            handle = opener.conn.open(CH, stream_id="s1")
            for _ in range(20):
                a.h.pump()
                await asyncio.sleep(0.01)
            assert opener.of(handle) == []  # no ACCEPT while Redis does not hold the stream
            await a.start()
            await pumped(a, lambda: bool(opener.of(handle)))
            assert opener.of(handle) == [RequestAccepted(handle, "s1", 1, 0)]
            reader = b.h.connect()  # at once: no waiting for A's queued writes
            sub = reader.conn.subscribe(CH, "s1")
            await pumped(b, lambda: bool(reader.of(sub)))
            assert reader.of(sub) == [RequestAccepted(sub, "s1", 1, 0)]
            other = c.h.connect()  # C's claim of the same id: refused by Redis, not locally
            again = other.conn.open(CH, stream_id="s1")
            await pumped(c, lambda: bool(other.of(again)))
            [rejected] = other.of(again)
            assert isinstance(rejected, RequestRejected)
            assert rejected.code == ErrorCode.STREAM_EXISTS
            assert c.store.status(KEY) is None  # C keeps nothing of its refused attempt
        finally:
            await _stopped(a, b, c)

    run(main())


def test_leaving_and_subscribing_again_at_once_keeps_following(procs: Any) -> None:
    """B lets go of a stream (its unfollow is queued) and looks it up again before the
    driver flushed that unfollow: the older unfollow must not undo the newer follow."""

    async def main() -> None:
        a, b = procs(), procs()
        async with running(a, b):
            producer = await _in_redis(a, b"1")
            client = b.h.connect()
            first = client.conn.subscribe(CH, "s1")
            await pumped(b, lambda: len(flat(client.of(first))) >= 2)
            client.conn.unsubscribe(first)
            b.h.pump()  # B lets go: its unfollow is queued...
            again = client.conn.subscribe(CH, "s1", after_seq=1)
            b.h.pump()  # ...and its lookup asked for, before the driver ran
            await pumped(b, lambda: bool(client.of(again)))
            producer.write(b"2")
            producer.close()
            await pumped(b, lambda: terminal(client, again))
            assert flat(client.of(again))[1:] == [(2, b"2"), StreamEnded(again, 2)]
            # B is still registered as a follower (a cancel of A's listeners counts it).
            follows = b.follows(KEY)
            assert follows == [b.store.process_id]

    run(main())


def test_a_second_process_cannot_open_an_open_id(procs: Any) -> None:
    async def main() -> None:
        a, b = procs(), procs()
        async with running(a, b):
            first = await _in_redis(a, b"a")
            second = b.hub.channel(CH).start("s1")  # fenced when its claim reaches Redis
            await until(lambda: second.closed)
            with pytest.raises(LocalProtocolError, match=r"\[STREAM_EXISTS\]"):
                second.write(b"b")
            first.write(b"c")
            first.close()
            c = procs()  # (B keeps its own failed attempt under the id for its retention)
            await c.start()
            try:
                events = await read_remote(c, "s1")
            finally:
                await c.stop()
            assert [e for e in events if isinstance(e, tuple)] == [(1, b"a"), (2, b"c")]

    run(main())


def test_a_stale_producer_never_writes_into_its_successor(procs: Any) -> None:
    async def main() -> None:
        # The lease is long enough that A renews it in time on a loaded machine until it
        # stalls on purpose; the sleep then outlasts it.
        a, b = procs(lease=LEASE), procs(lease=LEASE)
        async with running(a, b):
            old = await _in_redis(a, b"old-1")
            await a.stop()  # A stalls: no renewals, no writes reach Redis
            old.write(b"old-2")
            await asyncio.sleep(LEASE * 2.5)  # A's lease expires
            new = await _in_redis(b, b"new-1")
            await a.start()  # A wakes up and flushes its old generation's write
            await until(lambda: old.closed)
            with pytest.raises(LocalProtocolError, match=r"\[STALE_GENERATION\]"):
                old.write(b"old-3")
            new.close()
            c = procs()
            await c.start()
            try:
                events = await read_remote(c, "s1")
            finally:
                await c.stop()
            assert [e for e in events if isinstance(e, tuple)] == [(1, b"new-1")]

    run(main())


def test_a_cancel_on_b_reaches_the_producer_on_a(procs: Any) -> None:
    async def main() -> None:
        a, b = procs(), procs()
        async with running(a, b):
            producer = a.hub.channel(CH).start("s1")
            aborted: list[bool] = []
            producer.on_abort = lambda: aborted.append(True)
            producer.write(b"x")
            await a.settle()  # visible to other processes once its claim reached Redis
            client = b.h.connect()
            handle = client.conn.subscribe(CH, "s1")
            await pumped(b, lambda: len(client.of(handle)) >= 2)
            client.conn.cancel(handle)
            b.h.pump()
            await until(lambda: bool(aborted))
            late = await read_remote(b, "s1")
            assert isinstance(late[-1], StreamFailed)
            assert late[-1].code == ErrorCode.CANCELLED

    run(main())


def test_a_lost_producer_fails_its_stream_after_the_lease(procs: Any) -> None:
    async def main() -> None:
        a, b = procs(lease=LEASE), procs(lease=LEASE)
        async with running(a, b):
            await _in_redis(a, b"x")
            client = b.h.connect()
            handle = client.conn.subscribe(CH, "s1")
            await pumped(b, lambda: len(client.of(handle)) >= 2)
            await a.stop()  # as if killed: nothing renews its lease any more
            await pumped(b, lambda: terminal(client, handle))
            failed = client.of(handle)[-1]
            assert isinstance(failed, StreamFailed)
            assert failed.code == ErrorCode.PRODUCER_LOST
            assert failed.last_seq == 1

    run(main())


def test_on_a_cluster_b_tails_streams_on_every_node_with_one_listener_per_node(
    cluster_procs: Any, redis_cluster: RedisCluster
) -> None:
    """Rule 5 of transports.redis: the streams B follows spread over the three nodes; B
    holds one sharded pub/sub connection per node, and live chunks reach it through the
    notices (the housekeeping read that would also find them runs only every 20 s here)."""

    async def main() -> None:
        a, b = cluster_procs(lease=60.0), cluster_procs(lease=60.0)
        async with running(a, b):
            ids = [f"s{i}" for i in range(12)]
            producers = [a.hub.channel(CH).start(i) for i in ids]
            for p in producers:
                p.write(b"first")
            await a.settle()
            readers = [b.h.connect() for _ in ids]
            handles = [r.conn.subscribe(CH, i) for r, i in zip(readers, ids, strict=True)]

            def seen(n: int) -> bool:
                return all(len(flat(r.of(h))) >= n for r, h in zip(readers, handles, strict=True))

            await pumped(b, lambda: seen(2))  # accepted, chunk 1
            nodes = [redis.Redis(port=node.port) for node in redis_cluster.nodes]

            def listeners() -> list[list[dict[str, Any]]]:
                return [[c for c in n.client_list() if int(c.get("ssub", 0))] for n in nodes]

            def subscribed() -> int:  # (the tail subscribes after the lookups answered)
                return sum(int(c["ssub"]) for each in listeners() for c in each)

            try:
                await until(lambda: subscribed() == len(ids))
                assert [len(each) for each in listeners()] == [1, 1, 1]  # one on each node
            finally:
                for node in nodes:
                    node.close()
            for p in producers:
                p.write(b"second")
                p.close()
            await until(lambda: b.h.pump() or seen(4), timeout=10.0)  # notices, not polling
            for r, h in zip(readers, handles, strict=True):
                assert flat(r.of(h))[1:] == [(1, b"first"), (2, b"second"), StreamEnded(h, 2)]

    run(main())


# -- several writers, interleaved ---------------------------------------------------------------

_ops = st.lists(
    st.tuples(
        st.sampled_from(["acquire", "write", "finish", "flush", "stall", "read"]),
        st.integers(0, 2),
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=30, deadline=None)
@given(ops=_ops)
def test_interleaved_writers_never_mix_generations(redis_server: RedisServer, ops: Any) -> None:
    """Three processes race for one id while a fourth reads it: whatever the interleaving of
    claims, writes, finishes, flushes, stalls and subscribes, Redis holds exactly the chunks of
    one generation, with contiguous seqs, each written by the producer that holds that
    generation; and every reader got, from seq 1 without a hole, a prefix of one generation's
    chunks (all of them when it got END)."""
    tag = f"h{time.monotonic_ns()}"

    async def main() -> None:
        writers = [Process(redis_server.url, tag, lease=60.0) for _ in range(3)]
        reader = Process(redis_server.url, tag, lease=60.0)
        await _started(*writers, reader)
        readers: list[tuple[Client, int]] = []
        producers: list[Any] = [None, None, None]
        written: dict[int, list[bytes]] = {}  # generation -> chunks accepted locally
        try:
            for op, who in ops:
                w = writers[who]
                p = producers[who]
                if op == "acquire" and (p is None or p.closed):
                    with contextlib.suppress(LocalProtocolError):
                        producers[who] = p = w.hub.channel(CH).start("s1")
                        written[p.generation] = []
                elif op == "write" and p is not None and not p.closed:
                    chunk = b"%d:%d" % (who, len(written[p.generation]))
                    p.write(chunk)
                    written[p.generation].append(chunk)
                elif op == "finish" and p is not None and not p.closed:
                    p.close()
                elif op == "flush":
                    await w.settle()
                elif op == "stall":
                    await asyncio.sleep(0.01)
                elif op == "read":
                    client = reader.h.connect()
                    readers.append((client, client.conn.subscribe(CH, "s1")))
                    reader.h.pump()
            for p in producers:
                if p is not None and not p.closed:
                    p.close()
            for w in writers:
                await w.settle()
            for client, handle in readers:
                await pumped(reader, lambda c=client, h=handle: terminal(c, h))
                events = flat(client.of(handle))
                if isinstance(events[0], RequestRejected):
                    assert events[0].code == ErrorCode.UNKNOWN_STREAM
                    continue
                got = [e for e in events if isinstance(e, tuple)]
                assert [seq for seq, _ in got] == list(range(1, len(got) + 1)), events
                chunks = [c for _, c in got]
                assert any(w[: len(chunks)] == chunks for w in written.values()), events
                if isinstance(events[-1], StreamEnded):
                    assert chunks in written.values(), events
            client = redis.Redis.from_url(redis_server.url)
            m, s, _, _ = writers[0].store.keys(KEY)
            meta = client.hgetall(m)
            entries = client.xrange(s)
            client.close()
            if not meta:
                assert not entries
                return
            generation = int(meta[b"gen"])
            chunks = [f[b"d"] for i, f in entries if i.endswith(b"-0")]
            seqs = [int(i.split(b"-")[0]) for i, _ in entries if i.endswith(b"-0")]
            assert seqs == list(range(1, len(seqs) + 1))
            assert chunks == written[generation][: len(chunks)]
            assert int(meta[b"last"]) == len(chunks)
        finally:
            await _stopped(*writers, reader)

    run(main())


# -- Redis going away ---------------------------------------------------------------------------


def test_a_redis_restart_with_aof_loses_and_repeats_nothing(tmp_path: Any) -> None:
    async def main(server: RedisServer) -> None:
        a, b = Process(server.url, "r"), Process(server.url, "r")
        async with running(a, b):
            producer = a.hub.channel(CH).start("s1")
            for i in range(1, 51):
                producer.write(b"%d" % i)
            await a.settle()
            client = b.h.connect()
            handle = client.conn.subscribe(CH, "s1")
            await pumped(b, lambda: len(client.of(handle)) >= 2)
            await asyncio.to_thread(server.restart)
            for i in range(51, 101):  # accepted while Redis restarts: buffered, then written
                producer.write(b"%d" % i)
            producer.close()
            await pumped(b, lambda: terminal(client, handle))
            events = flat(client.of(handle))
            assert events[0] == RequestAccepted(handle, "s1", 1, 50)
            assert events[1:-1] == [(i, b"%d" % i) for i in range(1, 101)]
            assert events[-1] == StreamEnded(handle, 100)

    with running_redis(tmp_path, aof=True) as server:
        run(main(server))


def test_an_unreachable_redis_bounds_buffering_and_fails_streams_clearly(tmp_path: Any) -> None:
    async def main(server: RedisServer) -> None:
        options = {"unavailable_after": 1.0, "max_pending_bytes": 1000}
        a, b = Process(server.url, "u", **options), Process(server.url, "u", **options)
        async with running(a, b):
            producer = await _in_redis(a, b"x")
            local = a.h.connect()
            here = local.conn.subscribe(CH, "s1")
            remote = b.h.connect()
            there = remote.conn.subscribe(CH, "s1")
            await pumped(b, lambda: len(remote.of(there)) >= 2)
            await asyncio.to_thread(server.stop)
            opener = a.h.connect()  # an OPEN while Redis is away: rejected, not left waiting
            opening = opener.conn.open(CH, stream_id="s2")
            for _ in range(9):  # 100 B each: ten fit in max_pending_bytes
                producer.write(b"y" * 100)
            with pytest.raises(LocalProtocolError, match=r"\[STORE_UNAVAILABLE\]"):
                producer.write(b"y" * 101)
            await pumped(a, lambda: terminal(local, here))
            await pumped(b, lambda: terminal(remote, there))
            for client, handle in ((local, here), (remote, there)):
                failed = client.of(handle)[-1]
                assert isinstance(failed, StreamFailed), client.of(handle)
                assert failed.code == ErrorCode.STORE_UNAVAILABLE
            with pytest.raises(LocalProtocolError, match=r"\[STORE_UNAVAILABLE\]"):
                producer.write(b"z")
            await pumped(a, lambda: bool(opener.of(opening)))
            [rejected] = opener.of(opening)
            assert isinstance(rejected, RequestRejected)
            assert rejected.code == ErrorCode.STORE_UNAVAILABLE
            assert a.store.pending_bytes == 0  # nothing held for a Redis that is gone

    with running_redis(tmp_path) as server:
        run(main(server))


def test_the_deployment_page_block_runs(redis_server: RedisServer) -> None:
    """docs/deployment.md's example, against the test's Redis: the chunk it writes is there."""
    page = (Path(__file__).resolve().parent.parent / "docs" / "deployment.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", page, flags=re.DOTALL)
    exec(compile(blocks[0], "docs/deployment.md", "exec"), {})  # one process
    block = next(b for b in blocks if "RedisStore(REDIS)" in b)
    block = block.replace("redis://127.0.0.1:6379/0", redis_server.url)
    exec(compile(block, "docs/deployment.md", "exec"), {})
    client = redis.Redis.from_url(redis_server.url)
    try:
        entries = client.xrange("sp:{demo:count/c1}:s")
        assert list(entries[0]) == [b"1-0", {b"d": b"one"}]
        assert client.hget("sp:{demo:count/c1}:m", "status") == b"ended"
    finally:
        client.delete("sp:{demo:count/c1}:s", "sp:{demo:count/c1}:m")
        client.close()
