"""Hub tests of a request's own stream: the lossless default of OPEN (issue 15 point 7),
run-or-join, stream status and listing, idle TTL and delete."""

from __future__ import annotations

from typing import Any

from hub_helpers import Client, HubHarness

from streamproto import (
    AccessRequest,
    ChannelOptions,
    Config,
    DataReceived,
    ErrorCode,
    GapReceived,
    OverflowPolicy,
    Producer,
    Refuse,
    RequestAccepted,
    RequestKind,
    RequestRejected,
    StreamEnded,
    WriteResult,
)

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
