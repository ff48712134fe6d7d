"""The hub over a shared store (``_store.py`` rule 5, ``_hub.py`` rule 6), pure: two hubs (two
"processes") share one backing store, and the test carries the hubs' effects the way a shared
store's adapter does (``transports.redis`` against a real Redis is tested in test_redis_*).

Together with test_hub.py this covers _hub.py 100% (branches included).
"""

from __future__ import annotations

from typing import Any

import pytest
from hub_helpers import HubHarness

from streamproto import (
    AbortRequested,
    CancelRemote,
    ChannelOptions,
    Claim,
    Config,
    DataReceived,
    DisconnectRule,
    Erase,
    ErrorCode,
    GapReason,
    GapReceived,
    LocalProtocolError,
    Lookup,
    MemoryStore,
    Outcome,
    Replay,
    RequestAccepted,
    RequestRejected,
    StoreFailed,
    StreamAppended,
    StreamClaimed,
    StreamEnded,
    StreamEntry,
    StreamFailed,
    StreamInfo,
    StreamLoaded,
    StreamsReceived,
    StreamState,
    StreamStatus,
    Window,
    WriteResult,
)

CH = "demo:tokens"


class SharedFake:
    """A shared store in memory: every process's facade reads and writes one backing
    MemoryStore (the "server"); releasing a stream another process produces forgets only
    this process's interest in it."""

    shared = True

    def __init__(self, backing: MemoryStore) -> None:
        self.backing = backing
        self.owned: set[tuple[str, str]] = set()
        self.released: list[tuple[str, str]] = []
        self.following: dict[tuple[str, str], int] = {}  # other processes, per stream

    def followers(self, key: tuple[str, str]) -> int:
        return self.following.get(key, 0)

    def acquire(self, key: tuple[str, str], window: Window) -> int:
        gen = self.backing.acquire(key, window)
        self.owned.add(key)
        return gen

    def append(self, key: tuple[str, str], generation: int, chunk: bytes) -> int:
        return self.backing.append(key, generation, chunk)

    def read(self, key: tuple[str, str], after_seq: int, limit: int) -> Replay:
        return self.backing.read(key, after_seq, limit)

    def finish(self, key: tuple[str, str], generation: int, outcome: Outcome) -> None:
        self.backing.finish(key, generation, outcome)

    def status(self, key: tuple[str, str]) -> StreamInfo | None:
        return self.backing.status(key)

    def release(self, key: tuple[str, str], generation: int) -> None:
        self.released.append(key)
        if key in self.owned:
            self.owned.discard(key)
            self.backing.release(key, generation)


class Deployment:
    """Processes A and B (hubs over one backing store) and the effects between them."""

    def __init__(self, options: ChannelOptions | None = None) -> None:
        self.backing = MemoryStore()
        self.stores = [SharedFake(self.backing), SharedFake(self.backing)]
        self.a, self.b = (HubHarness(store=s) for s in self.stores)
        self.kicks = 0
        for h in (self.a, self.b):
            h.hub.register(CH, options, on_open=lambda _p, _a: None)
            h.hub.on_store_request = self._kick
        self.cancels: list[CancelRemote] = []
        self.erased: list[Erase] = []

    def _kick(self) -> None:
        self.kicks += 1

    def carry(self, *, answer_lookups: bool = True) -> None:
        """Carry every hub's requests out, hand the answers back, and pump."""
        for _ in range(10):
            moved = False
            for h in (self.a, self.b):
                h.pump()
                for request in h.hub.store_requests():
                    moved = True
                    if isinstance(request, Lookup):
                        if answer_lookups:
                            h.hub.handle_store_event(StreamLoaded(request.key))
                    elif isinstance(request, Claim):  # the backing holds it at once
                        h.hub.handle_store_event(StreamClaimed(request.key, request.generation))
                    elif isinstance(request, Erase):  # (the backing released it already)
                        self.erased.append(request)
                    else:
                        self.cancels.append(request)
                        for other in (self.a, self.b):  # a control channel reaches all
                            other.hub.handle_store_event(
                                AbortRequested(request.key, request.generation, request.reason)
                            )
                h.pump()
            if not moved:
                return

    def appended(self, key: tuple[str, str], generation: int) -> None:
        """The follower (B) hears of new chunks or the outcome of ``key``."""
        self.b.hub.handle_store_event(StreamAppended(key, generation))
        self.b.pump()


def flat(events: list[Any]) -> list[Any]:
    out: list[Any] = []
    for e in events:
        if isinstance(e, DataReceived):
            out += [(e.seq + i, c) for i, c in enumerate(e.chunks)]
        else:
            out.append(e)
    return out


def test_b_replays_then_tails_what_a_produces_and_gets_its_end() -> None:
    d = Deployment(ChannelOptions(replay=Window(chunks=3)))
    producer = d.a.hub.channel(CH).start("s1")  # type: ignore[union-attr]
    for i in range(5):
        producer.write(b"%d" % i)
    reader = d.b.connect()
    handle = reader.conn.subscribe(CH, "s1", after_seq=0)
    d.b.pump()
    assert reader.of(handle) == []  # waiting for the lookup
    assert d.kicks == 1
    d.carry()
    assert reader.wakeups  # its accept was flushed
    producer.write(b"5")
    d.appended(("demo:tokens", "s1"), producer.generation)
    producer.close()
    d.appended(("demo:tokens", "s1"), producer.generation)
    assert flat(reader.of(handle)) == [
        RequestAccepted(handle, "s1", 3, 5),
        GapReceived(handle, 1, 2, GapReason.EVICTED),
        (3, b"2"),
        (4, b"3"),
        (5, b"4"),
        (6, b"5"),
        StreamEnded(handle, 6),
    ]
    assert d.b.hub.statistics().retained_streams == 1
    d.b.advance(120.0)  # retention: B lets its copy go, the backing keeps A's
    assert d.stores[1].released == [("demo:tokens", "s1")]
    assert d.b.hub.statistics().retained_streams == 0


def test_an_unknown_stream_is_asked_for_once_then_rejected() -> None:
    d = Deployment()
    one, two = d.b.connect(), d.b.connect()
    h1 = one.conn.subscribe(CH, "nope")
    h2 = two.conn.subscribe(CH, "nope")
    d.b.pump()
    requests = d.b.hub.store_requests()
    assert requests == [Lookup(("demo:tokens", "nope"), Window())]
    assert d.b.hub.store_requests() == []
    for request in requests:
        d.b.hub.handle_store_event(StreamLoaded(request.key))
    d.b.pump()
    assert [type(e) for e in one.of(h1)] == [RequestRejected]
    assert one.of(h1)[0].code == ErrorCode.UNKNOWN_STREAM
    assert two.of(h2)[0].code == ErrorCode.UNKNOWN_STREAM


def test_a_finished_stream_found_by_lookup_is_replayed_with_its_outcome() -> None:
    d = Deployment()
    producer = d.a.hub.channel(CH).start("s1")  # type: ignore[union-attr]
    producer.write(b"x")
    producer.fail(1234, "broke")
    reader = d.b.connect()
    handle = reader.conn.subscribe(CH, "s1")
    d.carry()
    assert flat(reader.of(handle)) == [
        RequestAccepted(handle, "s1", 1, 1),
        (1, b"x"),
        StreamFailed(handle, 1234, "broke", 1),
    ]
    again = reader.conn.subscribe(CH, "s1", after_seq=1)  # known here now: no lookup
    d.b.pump()
    assert d.b.hub.store_requests() == []
    assert flat(reader.of(again))[-1] == StreamFailed(again, 1234, "broke", 1)


def test_requesters_gone_before_the_answer_let_the_stream_go() -> None:
    d = Deployment()
    d.a.hub.channel(CH).start("s1")  # type: ignore[union-attr]
    reader = d.b.connect()
    reader.conn.subscribe(CH, "s1")
    d.b.pump()
    reader.disconnect()
    d.carry()
    assert d.stores[1].released == [("demo:tokens", "s1")]
    assert d.b.hub.statistics().open_streams == 0


def test_a_cancel_on_b_aborts_the_producer_on_a() -> None:
    d = Deployment()
    producer = d.a.hub.channel(CH).start("s1")  # type: ignore[union-attr]
    aborted: list[bool] = []
    producer.on_abort = lambda: aborted.append(True)
    producer.write(b"x")
    reader = d.b.connect()
    handle = reader.conn.subscribe(CH, "s1")
    d.carry()
    reader.conn.cancel(handle)
    d.b.pump()
    d.carry()
    gen = producer.generation
    assert d.cancels == [CancelRemote(("demo:tokens", "s1"), gen, "the last subscriber cancelled")]
    assert aborted == [True]
    assert d.backing.status(("demo:tokens", "s1")).outcome.code == ErrorCode.CANCELLED  # type: ignore[union-attr]
    assert d.stores[1].released == [("demo:tokens", "s1")]  # B stopped following at once


def test_a_producer_with_local_listeners_is_not_aborted_by_a_remote_cancel() -> None:
    d = Deployment()
    local = d.a.connect()
    handle = local.conn.open(CH)
    d.carry()
    stream_id = local.of(handle)[0].stream_id
    producer = d.a.hub.channel(CH).producer(stream_id)  # type: ignore[union-attr]
    assert producer is not None
    d.a.hub.handle_store_event(AbortRequested((CH, stream_id), producer.generation, "elsewhere"))
    assert not producer.aborted
    d.stores[0].following[(CH, stream_id)] = 1  # B follows it (as A last heard)
    local.conn.cancel(handle)  # A's last listener: a request, then the abort
    d.a.pump()
    assert not producer.aborted
    d.carry()
    assert producer.aborted
    d.a.hub.handle_store_event(AbortRequested((CH, stream_id), producer.generation, "again"))
    d.a.hub.handle_store_event(AbortRequested((CH, "other"), 1, "unknown"))
    d.a.hub.handle_store_event(AbortRequested(("no:channel", "x"), 1, "unknown"))


def test_leaving_a_remote_stream_stops_following_without_a_cancel() -> None:
    d = Deployment(ChannelOptions(on_disconnect=DisconnectRule.CANCEL))
    producer = d.a.hub.channel(CH).start("s1")  # type: ignore[union-attr]
    reader = d.b.connect()
    handle = reader.conn.subscribe(CH, "s1")
    d.carry()
    reader.conn.unsubscribe(handle)
    d.b.pump()
    d.carry()
    assert d.cancels == []
    assert d.stores[1].released == [("demo:tokens", "s1")]
    assert not producer.aborted
    # StreamAppended for a stream B no longer follows is ignored.
    d.appended(("demo:tokens", "s1"), producer.generation)


def test_a_cancel_of_a_finished_remote_stream_asks_nothing() -> None:
    d = Deployment()
    producer = d.a.hub.channel(CH).start("s1")  # type: ignore[union-attr]
    producer.close()
    reader = d.b.connect()
    handle = reader.conn.subscribe(CH, "s1", credit_chunks=1)
    d.carry()
    reader.conn.cancel(handle)
    d.b.pump()
    d.carry()
    assert d.cancels == []


def test_a_store_failure_fails_the_stream_and_stops_its_producer() -> None:
    d = Deployment()
    local = d.a.connect()
    handle = local.conn.open(CH)
    d.carry()
    stream_id = local.of(handle)[0].stream_id
    producer = d.a.hub.channel(CH).producer(stream_id)  # type: ignore[union-attr]
    assert producer is not None
    stopped: list[bool] = []
    producer.on_abort = lambda: stopped.append(True)
    producer.write(b"x")
    gen = producer.generation
    key = (CH, stream_id)
    d.a.hub.handle_store_event(StoreFailed(key, gen + 1, ErrorCode.STALE_GENERATION, "other"))
    assert not producer.closed
    d.a.hub.handle_store_event(StoreFailed(key, gen, ErrorCode.STALE_GENERATION, "fenced"))
    d.a.pump()
    assert stopped == [True]
    failed = StreamFailed(handle, ErrorCode.STALE_GENERATION, "fenced", 1)
    assert flat(local.of(handle))[-1] == failed
    with pytest.raises(LocalProtocolError, match=r"\[STALE_GENERATION\].*fenced"):
        producer.write(b"y")
    producer.close()  # a handler that ends as usual does no harm
    d.a.hub.handle_store_event(StoreFailed(key, gen, ErrorCode.STALE_GENERATION, "twice"))


def test_a_hub_without_a_request_callback_still_queues_requests() -> None:
    store = SharedFake(MemoryStore())
    h = HubHarness(store=store)
    h.hub.register(CH)
    producer = h.hub.channel(CH).start("s1")  # type: ignore[union-attr]
    reader = h.connect()
    handle = reader.conn.subscribe(CH, "s2")
    h.pump()
    assert h.hub.store_requests() == [Lookup((CH, "s2"), Window())]
    h.hub.handle_store_event(StoreFailed((CH, "s1"), producer.generation, 114, "gone"))
    with pytest.raises(LocalProtocolError, match=r"\[STORE_UNAVAILABLE\]"):
        producer.write(b"x")
    assert reader.of(handle) == []


def test_the_last_cancel_of_a_stream_nobody_else_follows_aborts_at_once() -> None:
    d = Deployment()
    local = d.a.connect()
    handle = local.conn.open(CH)
    d.carry()
    stream_id = local.of(handle)[0].stream_id
    producer = d.a.hub.channel(CH).producer(stream_id)  # type: ignore[union-attr]
    assert producer is not None
    local.conn.cancel(handle)
    d.a.pump()
    assert producer.aborted  # as in one process: no round trip
    assert d.a.hub.store_requests() == []


def test_a_lookup_answer_wakes_the_requesters_connection() -> None:
    d = Deployment()
    reader = d.b.connect()
    handle = reader.conn.subscribe(CH, "nope")
    d.b.pump()
    before = reader.wakeups
    for request in d.b.hub.store_requests():
        d.b.hub.handle_store_event(StreamLoaded(request.key))
    assert reader.wakeups > before  # the reject is flushed without other traffic
    d.b.pump()
    assert reader.of(handle)[0].code == ErrorCode.UNKNOWN_STREAM


def test_an_open_is_accepted_once_the_store_holds_its_claim() -> None:
    d = Deployment()
    opened: list[bytes] = []
    d.a.hub.register("demo:claims", on_open=lambda _p, args: opened.append(args))
    client = d.a.connect()
    handle = client.conn.open("demo:claims", args=b"go")
    d.a.pump()
    [claim] = d.a.hub.store_requests()
    assert isinstance(claim, Claim)
    assert client.of(handle) == []
    assert opened == []
    assert d.backing.status(claim.key) is not None  # (acquired: the id is taken here)
    before = client.wakeups
    d.a.hub.handle_store_event(StreamClaimed(claim.key, claim.generation + 1))  # not this one
    assert client.of(handle) == []
    d.a.hub.handle_store_event(StreamClaimed(claim.key, claim.generation))
    assert client.wakeups > before  # the accept is flushed without other traffic
    d.a.pump()
    assert client.of(handle) == [RequestAccepted(handle, claim.key[1], 1, 0)]
    assert opened == [b"go"]
    d.a.hub.handle_store_event(StreamClaimed(claim.key, claim.generation))  # twice: nothing


def test_a_refused_claim_rejects_the_open_with_the_stores_code() -> None:
    d = Deployment()
    opened: list[bool] = []
    d.a.hub.register("demo:claims", on_open=lambda _p, _a: opened.append(True))
    client = d.a.connect()
    handle = client.conn.open("demo:claims", stream_id="s1")
    d.a.pump()
    [claim] = d.a.hub.store_requests()
    refused = StoreFailed(claim.key, claim.generation, ErrorCode.STREAM_EXISTS, "elsewhere")
    d.a.hub.handle_store_event(refused)
    d.a.pump()
    [rejected] = client.of(handle)
    assert isinstance(rejected, RequestRejected)
    assert (rejected.code, rejected.message) == (ErrorCode.STREAM_EXISTS, "elsewhere")
    assert opened == []
    # The id was never this process's: nothing of it stays here, a subscribe looks it up.
    assert d.stores[0].released == [claim.key]
    reader = d.a.connect()
    reader.conn.subscribe("demo:claims", "s1")
    d.a.pump()
    assert d.a.hub.store_requests() == [Lookup(claim.key, Window())]


def test_an_opener_gone_before_the_claim_leaves_an_aborted_stream() -> None:
    d = Deployment()
    opened: list[bool] = []
    d.a.hub.register("demo:claims", on_open=lambda _p, _a: opened.append(True))
    gone, refused = d.a.connect(), d.a.connect()
    gone.conn.open("demo:claims", stream_id="s1")
    refused.conn.open("demo:claims", stream_id="s2")
    d.a.pump()
    first, second = d.a.hub.store_requests()
    gone.disconnect()
    refused.disconnect()
    d.a.pump()
    d.a.hub.handle_store_event(StreamClaimed(first.key, first.generation))
    info = d.backing.status(first.key)
    assert info is not None
    assert info.outcome is not None
    assert info.outcome.status.value == "aborted"
    assert info.outcome.code == ErrorCode.CANCELLED
    d.a.hub.handle_store_event(StoreFailed(second.key, second.generation, 114, "down"))
    assert d.backing.status(second.key) is None  # released; no reject to a closed peer
    assert opened == []


def test_a_memory_store_is_not_shared_and_counts_no_followers() -> None:
    store = MemoryStore()
    assert store.shared is False
    assert store.followers((CH, "s1")) == 0


def test_a_stream_another_process_produces_cannot_be_deleted_here() -> None:
    # Delete acts on this process's streams (spec §17): B follows A's stream, and refuses.
    d = Deployment(ChannelOptions(allow_delete=True))
    producer = d.a.hub.channel(CH).start("s1")  # type: ignore[union-attr]
    producer.write(b"x")
    reader = d.b.connect()
    reader.conn.subscribe(CH, "s1")
    d.carry()
    handle = reader.conn.delete(CH, "s1")
    d.b.pump()
    assert reader.of(handle) == [
        RequestRejected(handle, ErrorCode.NOT_ALLOWED, "the stream is another process's")
    ]
    assert not producer.closed


def test_a_delete_of_a_stream_this_process_does_not_follow_asks_the_store() -> None:
    # spec §17: B has no copy of A's stream; it looks it up, as a STATUS does, and refuses
    # (it answered MISSING once, for a stream that exists). Missing everywhere: MISSING.
    d = Deployment(ChannelOptions(allow_delete=True))
    producer = d.a.hub.channel(CH).start("s1")  # type: ignore[union-attr]
    producer.write(b"x")
    done = d.a.hub.channel(CH).start("s2")  # type: ignore[union-attr]
    done.close()
    asker = d.b.connect()
    handles = [asker.conn.delete(CH, sid) for sid in ("s1", "s2", "nope")]
    d.b.pump()
    assert [asker.of(h) for h in handles] == [[], [], []]  # waiting for the store
    d.carry()
    for handle in handles[:2]:  # the open stream and the finished one
        assert asker.of(handle) == [
            RequestRejected(handle, ErrorCode.NOT_ALLOWED, "the stream is another process's")
        ]
    (missing,) = asker.of(handles[2])
    assert missing.entries == (StreamEntry("nope", StreamState.MISSING),)
    assert not producer.closed
    assert producer.write(b"y") is WriteResult.ACCEPTED  # A's stream runs on
    assert d.backing.status((CH, "s1")) is not None
    assert d.b.hub.statistics().retained_streams == 1  # s2, finished: kept as a STATUS keeps it
    gone = d.b.connect()
    gone.conn.delete(CH, "s1")
    d.b.pump()
    gone.disconnect()  # its answer has nobody to go to
    d.carry()


def test_a_delete_here_erases_the_stream_from_the_shared_store() -> None:
    # R-QUERY-4 across processes: released here, and erased from the store (open or
    # finished), so that no process finds it afterwards.
    d = Deployment(ChannelOptions(allow_delete=True))
    channel = d.a.hub.channel(CH)
    assert channel is not None
    producer = channel.start("s1")
    producer.write(b"x")
    done = channel.start("s2")
    done.close()
    d.carry()
    assert channel.delete("s1").state is StreamState.OPEN
    assert channel.delete("s2").state is StreamState.ENDED
    assert channel.delete("nope").state is StreamState.MISSING  # nothing to erase
    d.carry()
    assert d.erased == [Erase((CH, "s1"), producer.generation), Erase((CH, "s2"), done.generation)]
    assert producer.closed


def test_a_followed_stream_deleted_in_its_producers_process_is_released_here() -> None:
    # B follows A's stream when A deletes it: B's readers end with STREAM_DELETED after the
    # last chunk each was sent, one still catching up (no room for the rest) without a gap,
    # and B keeps no copy, so it does not answer for a deleted stream (R-QUERY-4).
    d = Deployment()
    producer = d.a.hub.channel(CH).start("s1")  # type: ignore[union-attr]
    chunks = [b"%04d" % i * 1000 for i in range(1, 601)]  # more than a connection buffers
    for chunk in chunks:
        producer.write(chunk)
    fast, slow = d.b.connect(), d.b.connect(Config(auto_credit=False))
    h_fast = fast.conn.subscribe(CH, "s1", after_seq=0)
    h_slow = slow.conn.subscribe(CH, "s1", after_seq=0, credit_chunks=1)
    d.carry()
    key = (CH, "s1")
    # What A's DELETE leaves in the store for the readers tailing it (A's hub releases it).
    message = "the stream was deleted"
    deleted = Outcome(StreamStatus.FAILED, ErrorCode.STREAM_DELETED, message)
    d.backing.finish(key, producer.generation, deleted)
    d.appended(key, producer.generation)
    assert d.stores[1].released == [key]
    assert d.b.hub.statistics().retained_streams == 0
    assert flat(fast.of(h_fast))[1:] == [
        *enumerate(chunks, 1),
        StreamFailed(h_fast, ErrorCode.STREAM_DELETED, message, 600),
    ]
    assert flat(slow.of(h_slow))[1:] == [(1, chunks[0])]  # (one chunk of credit)
    for _ in range(600):
        slow.conn.consume(h_slow, 1, 4000)
        d.b.pump()
    *received, end = flat(slow.of(h_slow))[1:]
    sent = len(received)  # what its connection held when the outcome came: no more, no gap
    assert 1 < sent < 600
    assert received == [*enumerate(chunks[:sent], 1)]
    assert end == StreamFailed(h_slow, ErrorCode.STREAM_DELETED, message, sent)


def test_status_of_a_stream_another_process_produces_asks_the_store() -> None:
    # R-QUERY-2 across processes: B has no copy of A's streams; STATUS looks them up once.
    d = Deployment()
    producer = d.a.hub.channel(CH).start("s1")  # type: ignore[union-attr]
    producer.write(b"x")
    producer.write(b"y")
    done = d.a.hub.channel(CH).start("s2")  # type: ignore[union-attr]
    done.write(b"z")
    done.fail(1234, "broke")
    asker = d.b.connect()
    first = asker.conn.status(CH, "s1")
    second = asker.conn.status(CH, "s1")  # while the first waits: the same lookup
    d.b.pump()
    assert asker.of(first) == []  # waiting for the store
    assert d.b.hub.store_requests() == [Lookup((CH, "s1"), Window())]
    d.b.hub.handle_store_event(StreamLoaded((CH, "s1")))
    d.b.pump()
    for handle in (first, second):
        (answer,) = asker.of(handle)
        assert isinstance(answer, StreamsReceived)
        assert answer.entries == (StreamEntry("s1", StreamState.OPEN, 0, 1, 2),)
    assert d.b.hub.statistics().retained_streams == 0  # a status does not follow the stream
    failed = asker.conn.status(CH, "s2")
    missing = asker.conn.status(CH, "nope")
    d.carry()
    assert asker.of(failed)[0].entries == (StreamEntry("s2", StreamState.FAILED, 1234, 1, 1),)
    assert asker.of(missing)[0].entries == (StreamEntry("nope", StreamState.MISSING),)
    gone = d.b.connect()
    gone.conn.status(CH, "s1")
    d.b.pump()
    gone.disconnect()  # its answer has nobody to go to
    d.carry()
    assert d.b.hub.store_requests() == []
