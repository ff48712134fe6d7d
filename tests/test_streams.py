"""Hub tests of a request's own stream: the lossless default of OPEN (issue 15 point 7),
run-or-join, stream status and listing, idle TTL and delete."""

from __future__ import annotations

from typing import Any

from hub_helpers import Client, HubHarness

from streamproto import (
    ChannelOptions,
    Config,
    DataReceived,
    GapReceived,
    OverflowPolicy,
    Producer,
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
