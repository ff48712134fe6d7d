"""``sub.batches()``: a client reads what has arrived as lists, on every backend.

The buffer of a subscription holds runs of chunks as they were decoded; ``take_many`` hands
out up to a limit of them at once with the same seqs, gaps and credit as ``take`` one at a
time would. The unit tests pin that against the one-at-a-time path; the end-to-end tests read
real streams with ``batches()`` from every backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from streamproto import (
    ChannelOptions,
    Config,
    DataReceived,
    ErrorCode,
    GapReason,
    GapReceived,
    Hub,
    LocalProtocolError,
    OverflowPolicy,
    Window,
)
from transports import Gap, GapError, StreamError, sync
from transports import asyncio as aio
from transports import trio as tri
from transports._common import _CREDIT_BATCH, SubscriptionCore, _Run

# -- the buffer, without a network --------------------------------------------------------------


class FakeCore:
    """What a SubscriptionCore reports its consumption to."""

    def __init__(self) -> None:
        self.consumed: list[tuple[int, int]] = []

    def _consume(self, sub: SubscriptionCore, chunks: int, nbytes: int) -> None:
        self.consumed.append((chunks, nbytes))


def make_sub(on_gap: Any = "raise") -> tuple[SubscriptionCore, FakeCore]:
    core = FakeCore()
    sub = SubscriptionCore(
        core,  # type: ignore[arg-type]
        "c",
        "s",
        after_seq=0,
        tail=False,
        open_args=None,
        policy=OverflowPolicy.DEFAULT,
        priority=0,
        on_gap=on_gap,
    )
    return sub, core


def feed(sub: SubscriptionCore, *items: DataReceived | GapReceived) -> None:
    """What ClientCore._route does with DataReceived and GapReceived for one subscription."""
    for item in items:
        if isinstance(item, DataReceived):
            sub.buffer.append(_Run(item.seq, item.chunks))
            sub.received_seq = item.last_seq
        else:
            sub.buffer.append(Gap(item.from_seq, item.to_seq, item.reason))
            sub.received_seq = item.to_seq


def chunks(first: int, n: int) -> DataReceived:
    return DataReceived(1, first, tuple(b"c%d" % seq for seq in range(first, first + n)))


def test_a_batch_is_everything_buffered_across_runs() -> None:
    sub, core = make_sub()
    feed(sub, chunks(1, 3), chunks(4, 2))
    assert sub.buffered == 5
    assert sub.poll_many(100) == [b"c1", b"c2", b"c3", b"c4", b"c5"]
    assert sub.seq == 5
    assert sub.buffered == 0
    assert core.consumed == [(5, 10)]  # the buffer emptied: all reported at once
    assert sub.poll_many(100) is None


def test_the_limit_splits_a_run_and_seq_follows() -> None:
    sub, core = make_sub()
    feed(sub, chunks(1, 5))
    assert sub.poll_many(2) == [b"c1", b"c2"]
    assert sub.seq == 2
    assert core.consumed == []  # not yet: the buffer is not empty and the batch is small
    assert sub.poll() == b"c3"  # the one-at-a-time path goes on from there
    assert sub.seq == 3
    assert sub.poll_many(10) == [b"c4", b"c5"]
    assert sub.seq == 5
    assert core.consumed == [(5, 10)]


def test_credit_is_reported_once_a_batch_is_large() -> None:
    sub, core = make_sub()
    feed(sub, chunks(1, _CREDIT_BATCH + 10))
    assert len(sub.poll_many(_CREDIT_BATCH)) == _CREDIT_BATCH
    assert core.consumed == [(_CREDIT_BATCH, sum(len(b"c%d" % i) for i in range(1, 33)))]


def test_gaps_as_items_come_in_the_batch() -> None:
    sub, _ = make_sub(on_gap="item")
    gap = GapReceived(1, 3, 4, GapReason.EVICTED)
    feed(sub, chunks(1, 2), gap, chunks(5, 1))
    assert sub.poll_many(100) == [b"c1", b"c2", Gap(3, 4, GapReason.EVICTED), b"c5"]
    assert sub.seq == 5


def test_a_gap_under_raise_ends_the_batch_then_raises() -> None:
    sub, core = make_sub()
    feed(sub, chunks(1, 2), GapReceived(1, 3, 4, GapReason.OVERFLOW), chunks(5, 1))
    assert sub.poll_many(100) == [b"c1", b"c2"]
    assert sub.seq == 2
    with pytest.raises(GapError) as caught:
        sub.poll_many(100)
    assert (caught.value.from_seq, caught.value.to_seq) == (3, 4)
    assert caught.value.code == ErrorCode.CHUNKS_MISSING
    assert sub.seq == 4
    assert sub.poll_many(100) == [b"c5"]
    assert sum(c for c, _ in core.consumed) == 3


def test_a_gap_counts_against_the_limit() -> None:
    sub, _ = make_sub(on_gap="item")
    feed(sub, GapReceived(1, 1, 2, GapReason.EVICTED), chunks(3, 2))
    assert sub.poll_many(2) == [Gap(1, 2, GapReason.EVICTED), b"c3"]


def test_chunks_from_a_lost_connection_return_no_credit() -> None:
    sub, core = make_sub()
    feed(sub, chunks(1, 4))
    sub.stale_seq = sub.received_seq  # what ClientCore.lost does
    feed(sub, chunks(5, 3))
    assert sub.poll_many(100) == [b"c%d" % i for i in range(1, 8)]
    assert core.consumed == [(3, 6)]  # only seqs 5..7 came over the live connection


def test_the_error_comes_after_the_chunks() -> None:
    sub, _ = make_sub()
    feed(sub, chunks(1, 2))
    sub._finish(StreamError(1234, "boom"))
    assert sub.poll_many(100) == [b"c1", b"c2"]
    with pytest.raises(StreamError) as caught:
        sub.poll_many(100)
    assert caught.value.code == 1234


events = st.lists(
    st.one_of(
        st.integers(1, 40).map(lambda n: ("data", n)),
        st.integers(1, 5).map(lambda n: ("gap", n)),
        st.just(("lost", 0)),
    ),
    max_size=20,
)


@given(
    events,
    st.lists(st.integers(1, 50), min_size=1, max_size=10),
    st.sampled_from(["item", "raise"]),
)
def test_batches_hand_out_what_take_would(
    script: list[tuple[str, int]], limits: list[int], on_gap: str
) -> None:
    """Any arrivals (runs, gaps, a lost connection), read in batches of any sizes: the same
    items, seqs and total credit as reading them one at a time."""
    one, one_core = make_sub(on_gap)
    many, many_core = make_sub(on_gap)
    seq = 1
    for kind, n in script:
        for sub in (one, many):
            if kind == "data":
                feed(sub, chunks(seq, n))
            elif kind == "gap":
                feed(sub, GapReceived(1, seq, seq + n - 1, GapReason.EVICTED))
            else:
                sub.stale_seq = sub.received_seq
        seq += n if kind != "lost" else 0

    singles: list[Any] = []
    while True:
        try:
            item = one.poll()
        except GapError as gap:
            singles.append(("gap", gap.from_seq, gap.to_seq))
            continue
        if item is None:
            break
        singles.append(("gap", item.from_seq, item.to_seq) if isinstance(item, Gap) else item)

    batched: list[Any] = []
    i = 0
    while True:
        limit = limits[i % len(limits)]
        i += 1
        try:
            batch = many.poll_many(limit)
        except GapError as gap:
            batched.append(("gap", gap.from_seq, gap.to_seq))
            continue
        if batch is None:
            break
        assert 0 < len(batch) <= limit
        batched += [("gap", b.from_seq, b.to_seq) if isinstance(b, Gap) else b for b in batch]

    assert batched == singles
    assert many.seq == one.seq
    total = (sum(c for c, _ in one_core.consumed), sum(b for _, b in one_core.consumed))
    assert (sum(c for c, _ in many_core.consumed), sum(b for _, b in many_core.consumed)) == total


# -- end to end, every backend ------------------------------------------------------------------

N = 2000
BURST = 50
PAYLOADS = [b"%05d" % i for i in range(N)]


def _hub() -> Hub:
    counter = itertools.count(1)
    return Hub(clock=time.monotonic, ids=lambda: f"id{next(counter)}")


def _options(window: int = N) -> ChannelOptions:
    return ChannelOptions(replay=Window(chunks=window))


def _check_batches(batches: list[list[bytes]], seqs: list[int], max_chunks: int | None) -> None:
    assert [c for b in batches for c in b] == PAYLOADS
    assert all(b for b in batches)
    if max_chunks is not None:
        assert max(map(len, batches)) <= max_chunks
    # sub.seq after each batch is the seq of its last chunk
    ends = []
    total = 0
    for b in batches:
        total += len(b)
        ends.append(total)
    assert seqs == ends


async def _read(sub: Any, max_chunks: int | None) -> tuple[list[list[bytes]], list[int]]:
    """Every batch of an async subscription, and ``sub.seq`` after each."""
    got: list[list[bytes]] = []
    seqs: list[int] = []
    async for batch in sub.batches(max_chunks):
        got.append(batch)
        seqs.append(sub.seq)
    return got, seqs


@pytest.mark.parametrize("max_chunks", [None, 7])
def test_asyncio_batches(max_chunks: int | None) -> None:
    async def main() -> tuple[list[list[bytes]], list[int]]:
        server = await aio.serve(_hub(), "tcp://127.0.0.1:0")
        producer = server.producer(server.channel("test:t", _options()).name, "s")
        for start in range(0, N, BURST):
            producer.write_many_nowait(PAYLOADS[start : start + BURST])
        producer.close()
        try:
            async with await aio.connect(server.address) as client:
                return await _read(client.subscribe("test:t", "s"), max_chunks)
        finally:
            await server.shutdown()

    got, seqs = asyncio.run(main())
    _check_batches(got, seqs, max_chunks)


@pytest.mark.parametrize("max_chunks", [None, 7])
def test_trio_batches(max_chunks: int | None) -> None:
    async def main() -> tuple[list[list[bytes]], list[int]]:
        async with tri.serve(_hub(), "tcp://127.0.0.1:0") as server:
            producer = server.producer(server.channel("test:t", _options()).name, "s")
            producer.write_many_nowait(PAYLOADS)
            producer.close()
            async with tri.connect(server.address) as client:
                result = await _read(client.subscribe("test:t", "s"), max_chunks)
            await server.shutdown()
            return result

    got, seqs = trio.run(main)
    _check_batches(got, seqs, max_chunks)


@contextlib.contextmanager
def sync_server() -> Iterator[Any]:
    server = sync.serve(_hub(), "tcp://127.0.0.1:0")
    try:
        yield server
    finally:
        server.shutdown()


@pytest.mark.parametrize("max_chunks", [None, 7])
def test_sync_batches(max_chunks: int | None) -> None:
    with sync_server() as server:
        producer = server.producer(server.channel("test:t", _options()).name, "s")
        producer.write_many_nowait(PAYLOADS)
        producer.close()
        with sync.connect(server.address) as client:
            sub = client.subscribe("test:t", "s")
            got: list[list[bytes]] = []
            seqs: list[int] = []
            for batch in sub.batches(max_chunks):
                got.append(batch)
                seqs.append(sub.seq)
    _check_batches(got, seqs, max_chunks)


def test_a_live_stream_read_in_batches_while_it_is_written() -> None:
    """The producer writes while the reader reads (BLOCK: it waits for the reader): batches
    wait for more and end with END."""
    with sync_server() as server:
        server.channel("test:t", _options())
        producer = server.producer("test:t", "s")
        with sync.connect(server.address) as client:
            sub = client.subscribe("test:t", "s", policy=OverflowPolicy.BLOCK)
            sub.accepted(10)
            got: list[bytes] = []

            def read() -> None:
                for batch in sub.batches():
                    got.extend(batch)

            reader = threading.Thread(target=read)
            reader.start()
            for payload in PAYLOADS:
                producer.write(payload)
            producer.close()
            reader.join(20)
            assert not reader.is_alive()
    assert got == PAYLOADS


def test_breaking_out_of_batches_cancels_the_stream() -> None:
    with sync_server() as server:
        server.channel("test:t", _options())
        producer = server.producer("test:t", "s")
        producer.write(b"first")
        with sync.connect(server.address) as client:
            sub = client.subscribe("test:t", "s")
            for batch in sub.batches():
                assert batch == [b"first"]
                break
            assert producer.aborted.wait(10)


def test_a_failed_stream_raises_after_its_batches() -> None:
    with sync_server() as server:
        server.channel("test:t", _options())
        producer = server.producer("test:t", "s")
        producer.write_many_nowait([b"a", b"b"])
        producer.fail(4321, "no more")
        with sync.connect(server.address) as client:
            sub = client.subscribe("test:t", "s")
            got: list[bytes] = []

            def read_all() -> None:
                for batch in sub.batches():
                    got.extend(batch)

            with pytest.raises(StreamError) as caught:
                read_all()
    assert got == [b"a", b"b"]
    assert caught.value.code == 4321


@pytest.mark.parametrize("bad", [0, -1, 1.5, "3"])
def test_max_chunks_must_be_a_positive_int(bad: Any) -> None:
    with sync_server() as server, sync.connect(server.address) as client:
        server.channel("test:t", _options())
        sub = client.subscribe("test:t", "s")
        with pytest.raises(LocalProtocolError) as caught:
            sub.batches(bad)
        assert caught.value.code == ErrorCode.INVALID_ARGUMENT
        sub.close()


# -- the waiting write_many of every backend, against a small window ----------------------------

SMALL_WINDOW = Config(window_chunks=16, window_bytes=1 << 20)


async def _write_all_async(producer: Any, args: bytes) -> None:
    for start in range(0, N, 300):  # bursts far larger than the window: write_many waits
        await producer.write_many(PAYLOADS[start : start + 300])
    producer.close()


def _write_all_sync(producer: Any, args: bytes) -> None:
    for start in range(0, N, 300):
        producer.write_many(PAYLOADS[start : start + 300])
    producer.close()


def test_asyncio_write_many_waits_for_a_block_subscriber() -> None:
    async def main() -> list[bytes]:
        server = await aio.serve(_hub(), "tcp://127.0.0.1:0")
        server.channel("test:w", _options(), on_open=_write_all_async)
        try:
            async with await aio.connect(server.address, config=SMALL_WINDOW) as client:
                got: list[bytes] = []
                async for batch in client.open(
                    "test:w", b"", policy=OverflowPolicy.BLOCK
                ).batches():
                    assert len(batch) <= 16
                    got += batch
                return got
        finally:
            await server.shutdown()

    assert asyncio.run(main()) == PAYLOADS


def test_trio_write_many_waits_for_a_block_subscriber() -> None:
    async def main() -> list[bytes]:
        async with tri.serve(_hub(), "tcp://127.0.0.1:0") as server:
            server.channel("test:w", _options(), on_open=_write_all_async)
            got: list[bytes] = []
            async with tri.connect(server.address, config=SMALL_WINDOW) as client:
                async for batch in client.open(
                    "test:w", b"", policy=OverflowPolicy.BLOCK
                ).batches():
                    assert len(batch) <= 16
                    got += batch
            await server.shutdown()
            return got

    assert trio.run(main) == PAYLOADS


def test_sync_write_many_waits_for_a_block_subscriber() -> None:
    with sync_server() as server:
        server.channel("test:w", _options(), on_open=_write_all_sync)
        got: list[bytes] = []
        with sync.connect(server.address, config=SMALL_WINDOW) as client:
            for batch in client.open("test:w", b"", policy=OverflowPolicy.BLOCK).batches():
                assert len(batch) <= 16
                got += batch
    assert got == PAYLOADS
