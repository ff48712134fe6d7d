"""Hub tests of a request's own stream: the lossless default of OPEN (issue 15 point 7),
run-or-join, stream status and listing, idle TTL and delete."""

from __future__ import annotations

from typing import Any

import pytest
from hub_helpers import Client, HubHarness

from streamproto import (
    AccessRequest,
    ChannelOptions,
    Config,
    DataReceived,
    ErrorCode,
    Feature,
    GapReceived,
    HState,
    LocalProtocolError,
    OverflowPolicy,
    Producer,
    Refuse,
    RequestAccepted,
    RequestKind,
    RequestRejected,
    StreamEnded,
    StreamEntry,
    StreamFailed,
    StreamsReceived,
    StreamState,
    WriteResult,
)
from streamproto._hub import MAX_PAGE

CH = "demo:answers"
N = 20_000


class Burst:
    """An open handler that writes ``n`` chunks as fast as the stream takes them (retrying
    on ``on_writable`` when a write blocks), then ends the stream."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.written = 0
        self.blocked = 0
        self.producers: list[Producer] = []

    def __call__(self, producer: Producer, args: bytes) -> None:
        self.producers.append(producer)
        producer.on_writable = lambda: self.pump(producer)
        self.pump(producer)

    def pump(self, producer: Producer) -> None:
        while self.written < self.n:
            if producer.write(b"c%d" % (self.written + 1)) is WriteResult.BLOCKED:
                self.blocked += 1
                return
            self.written += 1
        producer.close()


def received(client: Client, handle: int) -> tuple[list[int], list[tuple[int, int]]]:
    """The seqs delivered on ``handle`` and the gaps, in order."""
    seqs: list[int] = []
    gaps: list[tuple[int, int]] = []
    for e in client.of(handle):
        if isinstance(e, DataReceived):
            seqs += range(e.seq, e.seq + len(e.chunks))
        elif isinstance(e, GapReceived):
            gaps.append((e.from_seq, e.to_seq))
    return seqs, gaps


def ended(client: Client, handle: int) -> list[Any]:
    return [e for e in client.of(handle) if isinstance(e, StreamEnded)]


# -- the lossless default of OPEN ---------------------------------------------------------------


def test_the_finding_a_drop_oldest_requester_loses_all_but_a_window_before_its_first_read() -> None:
    # The finding of issue 15: a producer that writes 20,000 chunks before its requester reads
    # once. Under drop_oldest (the old default) the requester got 512 (its credit window and the
    # queue) and one overflow gap of the other 19,488.
    h = HubHarness()
    burst = Burst(N)
    h.hub.register(CH, on_open=burst)
    c = h.connect()
    handle = c.conn.open(CH, policy=OverflowPolicy.DROP_OLDEST)
    h.pump()
    seqs, gaps = received(c, handle)
    assert gaps == [(1, N - 512)]
    assert seqs == list(range(N - 511, N + 1))
    assert burst.blocked == 0


def test_open_defaults_to_block_and_the_requester_gets_every_chunk() -> None:
    h = HubHarness()
    burst = Burst(N)
    h.hub.register(CH, on_open=burst)
    c = h.connect()
    handle = c.conn.open(CH)  # policy DEFAULT
    h.pump()
    seqs, gaps = received(c, handle)
    assert gaps == []
    assert seqs == list(range(1, N + 1))
    assert ended(c, handle) == [StreamEnded(handle, N)]
    assert burst.blocked > 0  # the producer was held back instead


def test_a_channel_may_choose_another_open_policy_and_subscribe_keeps_drop_oldest() -> None:
    h = HubHarness()
    burst = Burst(2000)
    ch = h.hub.register(CH, ChannelOptions(open_policy=OverflowPolicy.DROP_OLDEST), on_open=burst)
    c = h.connect()
    handle = c.conn.open(CH)
    h.pump()
    assert received(c, handle)[1] == [(1, 2000 - 512)]
    # A tail subscription with DEFAULT gets the channel's default_policy: drop_oldest.
    p = ch.start("t")
    tail = c.conn.subscribe(CH, "t", tail=True)
    h.pump()
    for i in range(2000):
        assert p.write(b"t%d" % i) is WriteResult.ACCEPTED
    h.pump()
    assert received(c, tail)[1] == [(1, 2000 - 512)]


def test_a_reconnect_of_an_open_requester_loses_nothing() -> None:
    h = HubHarness()
    burst = Burst(3000)
    h.hub.register(CH, on_open=burst)
    client_config = Config(auto_credit=False)
    server_config = Config(session_grace=10)
    a = h.connect(client_config, server_config)
    handle = a.conn.open(CH)
    h.pump()
    seqs, _ = received(a, handle)
    assert seqs == list(range(1, 257))  # its credit window; the rest waits in the producer
    a.conn.consume(handle, 100, sum(len(b"c%d" % s) for s in range(1, 101)))
    h.pump()
    delivered = 100  # the application read 100 chunks, then the transport died
    a.disconnect()
    written = burst.written
    h.advance(5)  # within the grace period the parked requester holds the producer
    assert burst.written == written
    assert burst.producers[0].write(b"more") is WriteResult.BLOCKED
    b = h.connect(client_config, server_config, resume_token=a.handshake.resume_token)
    assert b.handshake.resumed
    again = b.conn.subscribe(CH, burst.producers[0].stream_id, after_seq=delivered)
    for _ in range(200):  # read as the application would, one window at a time
        h.pump()
        got = [e for e in b.take() if isinstance(e, DataReceived)]
        n = sum(len(e.chunks) for e in got)
        if not n:
            break
        b.conn.consume(again, n, sum(len(c) for e in got for c in e.chunks))
    seqs, gaps = received(b, again)
    assert gaps == []
    assert seqs == list(range(delivered + 1, 3001))
    assert ended(b, again) == [StreamEnded(again, 3000)]


def test_a_parked_requester_that_never_comes_back_releases_the_producer() -> None:
    h = HubHarness()
    burst = Burst(3000)
    h.hub.register(CH, on_open=burst)
    a = h.connect(Config(auto_credit=False), Config(session_grace=10))
    a.conn.open(CH)
    h.pump()
    a.disconnect()
    written = burst.written
    h.advance(9)
    assert burst.written == written
    h.advance(1)  # the session expired: its subscription counts as leaving
    assert burst.written == 3000
    assert burst.producers[0].closed


def test_a_block_subscriber_catching_up_holds_the_producer_until_it_is_live() -> None:
    h = HubHarness()
    ch = h.hub.register(CH)
    p = ch.start("s")
    for i in range(600):
        p.write(b"h%d" % i)
    writable: list[int] = []
    p.on_writable = lambda: writable.append(p.last_seq)
    c = h.connect(Config(auto_credit=False))
    handle = c.conn.subscribe(CH, "s", policy=OverflowPolicy.BLOCK)
    h.pump()
    assert received(c, handle)[0] == list(range(1, 257))
    assert p.write(b"live") is WriteResult.BLOCKED  # it would evict what the subscriber needs
    c.conn.consume(handle, 256, sum(len(b"h%d" % i) for i in range(256)))
    h.pump()
    c.conn.consume(handle, 256, sum(len(b"h%d" % i) for i in range(256, 512)))
    h.pump()
    assert writable == [600]  # caught up: live, and the producer may go on
    assert p.write(b"live") is WriteResult.ACCEPTED
    h.pump()
    assert received(c, handle) == (list(range(1, 602)), [])


# -- run or join --------------------------------------------------------------------------------


def chunks_of(client: Client, handle: int) -> list[bytes]:
    return [c for e in client.of(handle) if isinstance(e, DataReceived) for c in e.chunks]


def accepted(client: Client, handle: int) -> RequestAccepted:
    (event,) = [e for e in client.of(handle) if isinstance(e, RequestAccepted)]
    return event


def test_two_requesters_of_one_answer_share_one_producer() -> None:
    h = HubHarness()
    calls: list[bytes] = []
    producers: list[Producer] = []

    def on_open(producer: Producer, args: bytes) -> None:
        calls.append(args)
        producers.append(producer)
        producer.write(b"one")

    h.hub.register(CH, on_open=on_open)
    a, b = h.connect(), h.connect()
    first = a.conn.open(CH, b"q", stream_id="answer-7", join=True)
    h.pump()
    second = b.conn.open(CH, b"q again", stream_id="answer-7", join=True)
    h.pump()
    assert calls == [b"q"]  # the handler ran once
    assert accepted(a, first) == RequestAccepted(first, "answer-7", 1, 0, False)
    assert accepted(b, second) == RequestAccepted(second, "answer-7", 1, 1, True)
    producers[0].write(b"two")
    producers[0].close()
    h.pump()
    for client, handle in ((a, first), (b, second)):
        assert chunks_of(client, handle) == [b"one", b"two"]  # the joiner from seq 1
        assert ended(client, handle) == [StreamEnded(handle, 2)]


def test_without_join_a_running_id_is_refused_and_a_finished_one_runs_again() -> None:
    h = HubHarness()
    calls: list[str] = []

    def on_open(producer: Producer, args: bytes) -> None:
        calls.append(producer.stream_id)
        if args == b"end":
            producer.close()

    h.hub.register(CH, on_open=on_open)
    c = h.connect()
    c.conn.open(CH, stream_id="x")
    refused = c.conn.open(CH, stream_id="x")
    ran = c.conn.open(CH, b"end", stream_id="y")
    h.pump()
    again = c.conn.open(CH, stream_id="y", join=True)  # y finished: a join runs it again
    picked = c.conn.open(CH, join=True)  # no id: nothing to join
    h.pump()
    assert [e.code for e in c.of(refused) if isinstance(e, RequestRejected)] == [
        ErrorCode.STREAM_EXISTS
    ]
    assert ended(c, ran) == [StreamEnded(ran, 0)]
    assert not accepted(c, again).joined
    assert not accepted(c, picked).joined
    assert calls == ["x", "y", "y", h.ids.issued[-1]]


def test_a_channel_may_join_every_open_of_a_running_id() -> None:
    h = HubHarness()
    burst = Burst(2000)
    h.hub.register(CH, ChannelOptions(join_running=True), on_open=burst)
    a, b = h.connect(), h.connect()
    first = a.conn.open(CH, stream_id="s")
    second = b.conn.open(CH, stream_id="s")  # no JOIN flag: the channel joins it
    h.pump()
    assert len(burst.producers) == 1
    assert accepted(b, second).joined
    for client, handle in ((a, first), (b, second)):  # both lossless, from seq 1
        assert received(client, handle) == (list(range(1, 2001)), [])


def test_a_join_is_authorized_as_an_open() -> None:
    seen: list[RequestKind] = []

    def authorize(request: AccessRequest) -> bool | Refuse:
        seen.append(request.kind)
        return request.args != b"intruder" or Refuse(ErrorCode.FORBIDDEN, "no")

    h = HubHarness(authorize=authorize)
    h.hub.register(CH, on_open=lambda p, a: None)
    c = h.connect()
    c.conn.open(CH, stream_id="s")
    refused = c.conn.open(CH, b"intruder", stream_id="s", join=True)
    h.pump()
    assert seen == [RequestKind.OPEN, RequestKind.OPEN]
    assert c.of(refused) == [RequestRejected(refused, ErrorCode.FORBIDDEN, "no")]


# -- status and discovery -----------------------------------------------------------------------


def answer(client: Client, handle: int) -> StreamsReceived:
    (event,) = [e for e in client.of(handle) if isinstance(e, StreamsReceived | RequestRejected)]
    assert isinstance(event, StreamsReceived), event
    return event


def status(client: Client, stream_id: str, channel: str = CH) -> StreamEntry:
    handle = client.conn.status(channel, stream_id)
    client.harness.pump()
    (entry,) = answer(client, handle).entries
    return entry


def test_status_says_missing_open_ended_failed_or_aborted() -> None:
    h = HubHarness()
    ch = h.hub.register(CH)
    c = h.connect()
    assert c.conn.peer_features & Feature.QUERIES
    p = ch.start("open")
    p.write(b"a")
    p.write(b"b")
    ch.start("ended").close()
    ch.start("failed").fail(1042, "model down")
    aborted = ch.start("aborted")
    handle = c.conn.subscribe(CH, "aborted")
    h.pump()
    c.conn.cancel(handle)
    h.pump()
    assert aborted.aborted
    assert status(c, "nothing") == StreamEntry("nothing", StreamState.MISSING)
    assert status(c, "open") == StreamEntry("open", StreamState.OPEN, 0, 1, 2)
    assert status(c, "ended") == StreamEntry("ended", StreamState.ENDED, 0, 1, 0)
    assert status(c, "failed") == StreamEntry("failed", StreamState.FAILED, 1042, 1, 0)
    assert status(c, "aborted") == StreamEntry(
        "aborted", StreamState.ABORTED, ErrorCode.CANCELLED, 1, 0
    )
    assert ch.status("open") == status(c, "open")  # the server's view is the same
    assert c.conn.handle_state(c.conn.status(CH, "open")) is HState.REQUESTED
    h.pump()


def test_a_listing_is_paged_in_id_order_and_filtered_by_state() -> None:
    h = HubHarness()
    ch = h.hub.register(CH)
    for i in range(7):
        p = ch.start(f"s{i}")
        if i % 2:
            p.close()
    c = h.connect()

    def page(after: str = "", states: int = 0, limit: int = 3) -> tuple[list[str], str]:
        handle = c.conn.list_streams(CH, after=after, states=states, limit=limit)
        h.pump()
        got = answer(c, handle)
        return [e.stream_id for e in got.entries], got.next

    assert page() == (["s0", "s1", "s2"], "s2")
    assert page("s2") == (["s3", "s4", "s5"], "s5")
    assert page("s5") == (["s6"], "")
    only_open = 1 << StreamState.OPEN
    assert page(states=only_open, limit=10) == (["s0", "s2", "s4", "s6"], "")
    ended = 1 << StreamState.ENDED
    assert page(states=ended, limit=2) == (["s1", "s3"], "s3")
    assert ch.list_streams(after="s3", states=ended) == (
        (StreamEntry("s5", StreamState.ENDED), StreamEntry("s7", StreamState.ENDED))[:1],
        "",
    )


def test_a_listing_page_is_capped_and_fits_the_smallest_frame() -> None:
    h = HubHarness()
    ch = h.hub.register(CH)
    for i in range(MAX_PAGE + 5):
        ch.start("x" * 120 + f"{i:05d}")
    c = h.connect(Config(max_frame_size=16_384))
    handle = c.conn.list_streams(CH, limit=1000)
    h.pump()
    got = answer(c, handle)
    assert len(got.entries) == MAX_PAGE
    assert got.next == got.entries[-1].stream_id


def test_queries_are_authorized_and_concealed_like_requests() -> None:
    seen: list[tuple[RequestKind, str]] = []

    def authorize(request: AccessRequest) -> bool | Refuse:
        seen.append((request.kind, request.stream_id))
        return request.channel != "demo:secret" or Refuse(ErrorCode.FORBIDDEN, "no")

    h = HubHarness(authorize=authorize)
    h.hub.register(CH)
    h.hub.register("demo:secret", ChannelOptions(conceal=True))
    c = h.connect()
    c.conn.status(CH, "s")
    c.conn.list_streams(CH, after="a")
    c.conn.delete(CH, "s")
    hidden = c.conn.status("demo:secret", "s")
    unknown = c.conn.status("demo:nothing", "s")
    hidden_list = c.conn.list_streams("demo:secret")
    h.pump()
    assert seen[:3] == [
        (RequestKind.STATUS, "s"),
        (RequestKind.LIST, "a"),
        (RequestKind.DELETE, "s"),
    ]
    refusals = [e for e in c.events if isinstance(e, RequestRejected)]
    assert [r.code for r in refusals] == [
        ErrorCode.NOT_ALLOWED,  # delete: the channel does not allow it
        ErrorCode.UNKNOWN_CHANNEL,
        ErrorCode.UNKNOWN_CHANNEL,
        ErrorCode.UNKNOWN_CHANNEL,
    ]
    assert refusals[1].message == refusals[2].message.replace("nothing", "secret")
    assert [r.handle for r in refusals[1:]] == [hidden, unknown, hidden_list]


# -- lifetime: delete and idle TTL --------------------------------------------------------------


def read_all(client: Client, handle: int) -> None:
    """Consume what arrived on ``handle`` until nothing more comes (manual credit)."""
    consumed = (0, 0)
    for _ in range(100):
        got = [e for e in client.of(handle) if isinstance(e, DataReceived)]
        total = (sum(len(e.chunks) for e in got), sum(len(c) for e in got for c in e.chunks))
        if total == consumed:
            return
        if client.conn.handle_state(handle) is not HState.CLOSED:
            client.conn.consume(handle, total[0] - consumed[0], total[1] - consumed[1])
        consumed = total
        client.harness.pump()


def test_delete_ends_the_readers_and_the_producer_and_forgets_the_stream() -> None:
    h = HubHarness()
    ch = h.hub.register(CH, ChannelOptions(allow_delete=True))
    p = ch.start("s")
    aborts: list[bool] = []
    p.on_abort = lambda: aborts.append(True)
    for i in range(5):
        p.write(b"%d" % i)
    c = h.connect(Config(auto_credit=False), Config(max_queued_chunks=1))
    live = c.conn.subscribe(CH, "s", credit_chunks=2)
    h.pump()
    handle = c.conn.delete(CH, "s")
    h.pump()
    assert answer(c, handle).entries == (StreamEntry("s", StreamState.OPEN, 0, 1, 5),)
    assert aborts == [True]
    read_all(c, live)
    # Seq 3 was queued when the stream was deleted: it still comes, then the error.
    assert received(c, live) == ([1, 2, 3], [])
    failed = [e for e in c.of(live) if isinstance(e, StreamFailed)]
    assert failed == [StreamFailed(live, ErrorCode.STREAM_DELETED, "the stream was deleted", 3)]
    with pytest.raises(LocalProtocolError) as err:
        p.write(b"late")
    assert err.value.code == ErrorCode.STREAM_DELETED
    assert status(c, "s") == StreamEntry("s", StreamState.MISSING)
    again = c.conn.subscribe(CH, "s")
    gone = c.conn.delete(CH, "s")
    h.pump()
    assert [e.code for e in c.of(again)] == [ErrorCode.UNKNOWN_STREAM]
    assert answer(c, gone).entries == (StreamEntry("s", StreamState.MISSING),)


def test_deleting_a_finished_stream_ends_its_replaying_readers() -> None:
    h = HubHarness()
    ch = h.hub.register(CH)
    p = ch.start("done")
    for i in range(10):
        p.write(b"%d" % i)
    p.close()
    c = h.connect(Config(auto_credit=False), Config(max_queued_chunks=1))
    reader = c.conn.subscribe(CH, "done", credit_chunks=3)
    h.pump()
    assert ch.delete("done") == StreamEntry("done", StreamState.ENDED, 0, 1, 10)
    h.pump()
    read_all(c, reader)
    assert received(c, reader) == ([1, 2, 3, 4], [])
    assert [e for e in c.of(reader) if isinstance(e, StreamFailed)] == [
        StreamFailed(reader, ErrorCode.STREAM_DELETED, "the stream was deleted", 4)
    ]
    assert ch.status("done").state is StreamState.MISSING
    assert ch.delete("never") == StreamEntry("never", StreamState.MISSING)


def test_an_idle_stream_expires_and_each_write_refreshes_its_ttl() -> None:
    h = HubHarness()
    ch = h.hub.register(CH, ChannelOptions(idle_ttl=10))
    p = ch.start("s")
    aborts: list[bool] = []
    p.on_abort = lambda: aborts.append(True)
    c = h.connect()
    reader = c.conn.subscribe(CH, "s")
    h.pump()
    for _ in range(3):
        h.advance(8)
        p.write(b"tick")  # refreshed: 24 s in all, never 10 without a write
    p.write_many([b"a", b"b"])
    h.advance(9.5)
    assert not p.closed
    h.advance(0.5)
    assert aborts == [True]
    assert ch.status("s") == StreamEntry("s", StreamState.FAILED, ErrorCode.STREAM_EXPIRED, 1, 5)
    assert [e for e in c.of(reader) if isinstance(e, StreamFailed)] == [
        StreamFailed(reader, ErrorCode.STREAM_EXPIRED, "no write for 10 s (idle TTL)", 5)
    ]
    with pytest.raises(LocalProtocolError) as err:
        p.write(b"late")
    assert err.value.code == ErrorCode.STREAM_EXPIRED
    q = ch.start("closed-in-time")
    q.close()
    h.advance(20)  # its timer finds it closed: nothing happens
    assert ch.status("closed-in-time").state is StreamState.ENDED


def test_a_block_subscriber_parked_while_catching_up_keeps_holding_and_loses_nothing() -> None:
    h = HubHarness()
    ch = h.hub.register(CH)
    p = ch.start("s")
    for i in range(600):
        p.write(b"h%d" % i)
    client, server = Config(auto_credit=False), Config(session_grace=10)
    a = h.connect(client, server)
    handle = a.conn.subscribe(CH, "s", policy=OverflowPolicy.BLOCK)
    h.pump()
    assert received(a, handle)[0] == list(range(1, 257))  # catching up: 257.. wait for credit
    a.disconnect()  # parked while catching up: still holding
    assert p.write(b"live") is WriteResult.BLOCKED
    assert p.write_many([b"a", b"b"]) == (0, WriteResult.BLOCKED)
    b = h.connect(client, server, resume_token=a.handshake.resume_token)
    again = b.conn.subscribe(CH, "s", after_seq=256)  # DEFAULT: keeps BLOCK
    h.pump()
    read_all(b, again)
    assert received(b, again) == (list(range(257, 601)), [])
    assert p.write(b"live") is WriteResult.ACCEPTED
    h.pump()
    assert received(b, again)[0][-1] == 601
