"""The hub, through the public API: channels, producers, fan-out, replay and gaps, retention,
open-with-request, sessions and resume, uploads, generations.

Clients are real client connections joined in memory to server connections the hub drives
(``hub_helpers.HubHarness``). This file alone covers _hub.py 100% (branches included);
test_store.py covers _store.py.
"""

from __future__ import annotations

import logging
import struct
import tracemalloc
from typing import Any

import pytest
from hub_helpers import Client, HubHarness

from streamproto import (
    AbortRule,
    CancelRequested,
    Channel,
    ChannelOptions,
    Config,
    ConnectionTerminated,
    DataReceived,
    DisconnectRule,
    ErrorCode,
    GapReason,
    GapReceived,
    HandshakeCompleted,
    HandshakeRefused,
    HubStatistics,
    LocalProtocolError,
    MemoryStore,
    Outcome,
    Overflow,
    OverflowPolicy,
    OverflowWarning,
    PingReceived,
    Producer,
    ProducerStatistics,
    RequestAccepted,
    RequestRejected,
    Role,
    StreamEnded,
    StreamFailed,
    StreamStatus,
    UploadCancelled,
    UploadReader,
    Window,
    WriteResult,
)
from streamproto import Connection as Conn

CH = "demo:tokens"


def raises(code: ErrorCode) -> Any:
    return pytest.raises(LocalProtocolError, match=rf"\[{code.name}\]")


def setup(
    options: ChannelOptions | None = None, *, seed: int | None = None, **handlers: Any
) -> tuple[HubHarness, Channel]:
    h = HubHarness(seed=seed)
    return h, h.hub.register(CH, options, **handlers)


def only(client: Client, handle: int) -> list[Any]:
    """The client's events for ``handle``, with DataReceived runs flattened to (seq, chunk)."""
    out: list[Any] = []
    for e in client.of(handle):
        if isinstance(e, DataReceived):
            out += [(e.seq + i, c) for i, c in enumerate(e.chunks)]
        else:
            out.append(e)
    return out


def data(seqs: range, prefix: bytes = b"c") -> list[tuple[int, bytes]]:
    return [(s, prefix + str(s).encode()) for s in seqs]


def write_n(producer: Producer, seqs: range, prefix: bytes = b"c") -> None:
    for s in seqs:
        assert producer.write(prefix + str(s).encode()) is WriteResult.ACCEPTED
        assert producer.last_seq == s


def subscribe(client: Client, stream_id: str, **kw: Any) -> int:
    handle = client.conn.subscribe(CH, stream_id, **kw)
    client.harness.pump()
    return handle


# -- 1. channels --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["tokens", ":x", "demo:", "Demo:x", "demo:x y", "demo::x", "a" * 64 + ":x", "demo:" + "x" * 65],
)
def test_register_rejects_invalid_names(name: str) -> None:
    h = HubHarness()
    with raises(ErrorCode.INVALID_NAME):
        h.hub.register(name)
    assert h.hub.channel(name) is None


def test_register_and_look_up() -> None:
    h = HubHarness()
    ch = h.hub.register("a-1.b_c:Name-2.x_y")
    assert h.hub.channel("a-1.b_c:Name-2.x_y") is ch
    assert ch.name == "a-1.b_c:Name-2.x_y"
    assert ch.options == ChannelOptions()
    assert h.hub.channel("a:b") is None


def test_register_twice_is_channel_exists() -> None:
    h, _ = setup()
    with raises(ErrorCode.CHANNEL_EXISTS):
        h.hub.register(CH, ChannelOptions(retention=1))


def test_channel_options_defaults_and_validation() -> None:
    options = ChannelOptions()
    assert options.replay == Window(1024, 4 << 20)
    assert options.retention == 60.0
    assert options.max_closed_streams == 1024
    assert options.default_policy is OverflowPolicy.DROP_OLDEST
    assert options.on_last_cancel is AbortRule.ABORT
    assert options.on_disconnect is DisconnectRule.LEAVE
    assert (options.max_streams, options.max_uploads) == (10_000, 1_000)
    for field in ("retention", "max_closed_streams", "max_streams", "max_uploads"):
        with raises(ErrorCode.INVALID_ARGUMENT):
            ChannelOptions(**{field: -1})


def test_attach_needs_a_server_connection() -> None:
    h = HubHarness()
    with raises(ErrorCode.INVALID_ARGUMENT):
        h.hub.attach(Conn(Role.CLIENT))


def test_max_streams() -> None:
    h, ch = setup(ChannelOptions(max_streams=2), on_open=lambda p, a: None)
    ch.start("a")
    b = ch.start("b")
    with raises(ErrorCode.LIMIT_EXCEEDED):
        ch.start("c")
    c = h.connect()
    handle = c.conn.open(CH)
    h.pump()
    assert only(c, handle) == [
        RequestRejected(
            handle, ErrorCode.LIMIT_EXCEEDED, "channel 'demo:tokens' has its maximum of streams"
        )
    ]
    b.close()  # finished streams do not count
    ch.start("c")


def test_channel_default_policy_applies_to_default_subscriptions() -> None:
    h, ch = setup(ChannelOptions(default_policy=OverflowPolicy.ERROR))
    p = ch.start("s")
    c = h.connect(Config(auto_credit=False), Config(max_queued_chunks=2))
    handle = subscribe(c, "s", credit_chunks=1)
    write_n(p, range(1, 2))
    h.pump()  # 1 sent: no credit left
    write_n(p, range(2, 5))  # 2 queued, the 4th overflows: ERROR fails the subscription
    h.pump()
    assert only(c, handle)[-1] == StreamFailed(
        handle, ErrorCode.RESOURCE_EXHAUSTED, "subscriber too slow", 1
    )
    assert h.hub.statistics().subscriptions == 0
    assert not p.aborted  # a failed subscription is no cancel
    write_n(p, range(5, 6))  # the producer goes on


# -- 2. producers -------------------------------------------------------------------------------


def test_start_without_id_takes_one_from_the_id_source() -> None:
    h, ch = setup()
    before = len(h.ids.issued)
    p = ch.start()
    assert p.stream_id == h.ids.issued[-1]
    assert len(h.ids.issued) == before + 1
    assert (p.channel, p.closed, p.last_seq, p.aborted) == (CH, False, 0, False)
    assert ch.producer(p.stream_id) is p
    assert ch.producer("other") is None


def test_start_validates_the_id_and_refuses_an_open_one() -> None:
    _, ch = setup()
    with raises(ErrorCode.INVALID_NAME):
        ch.start("not valid")
    ch.start("s")
    with raises(ErrorCode.STREAM_EXISTS):
        ch.start("s")


def test_write_close_fail_and_last_seq() -> None:
    _, ch = setup()
    p = ch.start("s")
    write_n(p, range(1, 4))
    assert p.write(bytearray(b"ba")) is WriteResult.ACCEPTED  # any bytes-like is copied once
    assert p.write(memoryview(b"mv")) is WriteResult.ACCEPTED
    assert p.last_seq == 5
    p.close()
    assert p.closed
    assert ch.producer("s") is None
    with raises(ErrorCode.STREAM_CLOSED):
        p.write(b"late")
    with raises(ErrorCode.STREAM_CLOSED):
        p.close()
    with raises(ErrorCode.STREAM_CLOSED):
        p.fail(1234)
    assert p.last_seq == 5

    q = ch.start("t")
    with raises(ErrorCode.INVALID_ARGUMENT):
        q.fail(0)
    with raises(ErrorCode.INVALID_ARGUMENT):
        q.fail(0x10000)
    assert not q.closed
    q.fail(1234, "boom")
    with raises(ErrorCode.STREAM_CLOSED):
        q.write(b"late")


def _abort_counter(p: Producer) -> list[int]:
    fired: list[int] = []
    p.on_abort = lambda: fired.append(p.last_seq)
    return fired


def test_abort_fires_when_the_last_subscriber_cancels() -> None:
    h, ch = setup()
    p = ch.start("s")
    fired = _abort_counter(p)
    a, b = h.connect(), h.connect()
    ha = subscribe(a, "s")
    hb1 = subscribe(b, "s")
    hb2 = subscribe(b, "s")
    a.conn.cancel(ha)
    h.pump()
    b.conn.cancel(hb1)
    h.pump()
    assert (p.aborted, fired) == (False, [])  # hb2 still listens
    b.conn.cancel(hb2)
    h.pump()
    assert (p.aborted, fired) == (True, [0])
    hc = subscribe(a, "s")  # a new subscriber, and its cancel: the signal fires once only
    a.conn.cancel(hc)
    h.pump()
    assert fired == [0]


def test_abort_without_callback_sets_the_flag() -> None:
    h, ch = setup()
    p = ch.start("s")
    a = h.connect()
    a.conn.cancel(subscribe(a, "s"))
    h.pump()
    assert p.aborted


def test_unsubscribe_never_aborts() -> None:
    h, ch = setup()
    p = ch.start("s")
    fired = _abort_counter(p)
    a, b = h.connect(), h.connect()
    ha, hb = subscribe(a, "s"), subscribe(b, "s")
    a.conn.cancel(ha)
    h.pump()
    b.conn.unsubscribe(hb)  # the last one leaves: the producer goes on
    h.pump()
    assert (p.aborted, fired) == (False, [])
    assert h.hub.statistics().subscriptions == 0


def test_cancel_after_another_left_aborts() -> None:
    h, ch = setup()
    p = ch.start("s")
    a, b = h.connect(), h.connect()
    ha, hb = subscribe(a, "s"), subscribe(b, "s")
    b.conn.unsubscribe(hb)
    h.pump()
    a.conn.cancel(ha)  # the last subscriber cancels
    h.pump()
    assert p.aborted


def test_continue_rule_never_aborts() -> None:
    h, ch = setup(ChannelOptions(on_last_cancel=AbortRule.CONTINUE))
    p = ch.start("s")
    a = h.connect()
    a.conn.cancel(subscribe(a, "s"))
    h.pump()
    assert not p.aborted


def test_cancel_of_a_closed_stream_does_not_abort() -> None:
    h, ch = setup(ChannelOptions(replay=Window(chunks=100)))
    p = ch.start("s")
    write_n(p, range(1, 51))
    a = h.connect(Config(auto_credit=False), Config(max_queued_chunks=1))
    handle = subscribe(a, "s", credit_chunks=1)  # catching up: 1 sent, 1 queued, 48 to go
    p.close()
    a.conn.cancel(handle)
    h.pump()
    assert not p.aborted


def test_parked_subscription_holds_off_the_abort() -> None:
    h, ch = setup(ChannelOptions(on_disconnect=DisconnectRule.CANCEL))
    p = ch.start("s")
    a, b = h.connect(), h.connect()
    subscribe(a, "s")
    hb = subscribe(b, "s")
    a.disconnect()  # a's subscription is parked in its session
    assert h.hub.statistics().parked_subscriptions == 1
    b.conn.cancel(hb)
    h.pump()
    assert not p.aborted  # the parked one may still come back
    h.advance(30)  # a's grace expires: under CANCEL its subscription counts as a cancel
    assert p.aborted


ABORTED_AT_3 = "aborted at seq 3: the last subscriber cancelled"


def test_an_aborted_stream_replays_as_cancelled_never_as_end() -> None:
    """R-SUB-50: the abort is the stream's outcome; late subscribers replay it as ERROR
    CANCELLED after the retained chunks, whatever the producer does afterwards."""
    store = MemoryStore()
    h = HubHarness(store=store)
    ch = h.hub.register(CH, ChannelOptions(retention=10))
    p = ch.start("s")
    seen: list[tuple[bool, bool]] = []
    p.on_abort = lambda: seen.append((p.closed, ch.producer("s") is None))
    write_n(p, range(1, 4))
    a = h.connect()
    a.conn.cancel(subscribe(a, "s"))
    h.pump()
    assert (p.aborted, p.closed) == (True, True)
    assert seen == [(True, True)]  # the stream was finished before the signal fired
    info = store.status((CH, "s"))
    assert info is not None
    assert info.outcome == Outcome(StreamStatus.ABORTED, ErrorCode.CANCELLED, ABORTED_AT_3)
    with raises(ErrorCode.STREAM_CLOSED) as caught:
        p.write(b"late")
    assert "was aborted at seq 3: the last subscriber cancelled" in str(caught.value)
    with raises(ErrorCode.STREAM_CLOSED):
        p.write_many([b"late"])
    p.close()  # what a handler does when it returns: nothing changes
    p.fail(1234, "too late")
    assert p.last_seq == 3
    b = h.connect()
    hb = subscribe(b, "s")
    assert only(b, hb)[1:] == [
        *data(range(1, 4)),
        StreamFailed(hb, ErrorCode.CANCELLED, ABORTED_AT_3, 3),
    ]
    ht = subscribe(b, "s", tail=True)  # from the end: only the outcome
    assert only(b, ht)[1:] == [StreamFailed(ht, ErrorCode.CANCELLED, ABORTED_AT_3, 3)]
    assert h.hub.statistics().open_streams == 0
    h.advance(10)  # retained like any finished stream, then released
    hz = subscribe(b, "s")
    assert only(b, hz)[0].code == ErrorCode.UNKNOWN_STREAM


def test_an_expired_session_aborts_with_its_own_reason() -> None:
    h, ch = setup(ChannelOptions(on_disconnect=DisconnectRule.CANCEL))
    p = ch.start("s")
    a = h.connect()
    subscribe(a, "s")
    write_n(p, range(1, 3))
    a.disconnect()
    h.advance(30)
    assert p.aborted
    b = h.connect()
    hb = subscribe(b, "s", after_seq=2)
    message = "aborted at seq 2: the last subscriber's session expired"
    assert only(b, hb)[1:] == [StreamFailed(hb, ErrorCode.CANCELLED, message, 2)]


def test_a_writer_blocked_at_the_abort_is_woken_and_its_retry_learns_it() -> None:
    h, ch = setup()
    p = ch.start("s")
    calls: list[str] = []
    p.on_abort = lambda: calls.append("abort")
    p.on_writable = lambda: calls.append("writable")
    c = h.connect(Config(auto_credit=False), Config(max_queued_chunks=1, max_queued_bytes=100))
    handle = subscribe(c, "s", credit_chunks=1, policy=OverflowPolicy.BLOCK)
    write_n(p, range(1, 3))
    assert p.write(b"c3") is WriteResult.BLOCKED
    c.conn.cancel(handle)  # the blocking subscriber leaves (writable), and it was the last
    h.pump()
    assert calls == ["writable", "abort"]
    with raises(ErrorCode.STREAM_CLOSED):  # the waiting writer's retry: the abort came first
        p.write(b"c3")


def test_a_writer_blocked_when_the_hub_deletes_the_stream_is_woken_and_learns_it() -> None:
    # The blocking subscriber is still there: only the hub's end can release the writer.
    h, ch = setup(ChannelOptions(allow_delete=True))
    p = ch.start("s")
    calls: list[str] = []
    p.on_abort = lambda: calls.append("abort")
    p.on_writable = lambda: calls.append("writable")
    c = h.connect(Config(auto_credit=False), Config(max_queued_chunks=1, max_queued_bytes=100))
    subscribe(c, "s", credit_chunks=1, policy=OverflowPolicy.BLOCK)
    write_n(p, range(1, 3))
    assert p.write(b"c3") is WriteResult.BLOCKED
    ch.delete("s")
    assert calls == ["writable", "abort"]
    with raises(ErrorCode.STREAM_DELETED):  # the waiting writer's retry
        p.write(b"c3")


def test_call_later_runs_callbacks_on_the_hub_clock(caplog: pytest.LogCaptureFixture) -> None:
    h = HubHarness()
    ran: list[tuple[str, float]] = []

    def later(name: str) -> Any:
        return lambda: ran.append((name, h.clock.now))

    def boom() -> None:
        raise RuntimeError("boom")

    h.hub.call_later(2.0, later("b"))
    h.hub.call_later(1.0, later("a"))
    h.clock.advance(0.25)
    h.hub.call_later(1.25, boom)  # due at 1.5: the delay counts from now
    assert h.hub.next_deadline() == 1.0
    h.advance(0.25)
    assert ran == []
    with caplog.at_level(logging.ERROR, "streamproto.hub"):
        h.advance(1.0)  # a, then the failing one: logged, and the others still run
    assert ran == [("a", 1.5)]
    assert "timer callback" in caplog.text
    assert h.hub.next_deadline() == 2.0
    h.advance(1.0)
    assert ran == [("a", 1.5), ("b", 2.5)]
    assert h.hub.next_deadline() is None


def test_block_policy_reports_blocked_and_calls_on_writable() -> None:
    h, ch = setup()
    p = ch.start("s")
    writable: list[int] = []
    p.on_writable = lambda: writable.append(p.last_seq)
    c = h.connect(Config(auto_credit=False), Config(max_queued_chunks=3, max_queued_bytes=100))
    handle = subscribe(c, "s", credit_chunks=2, policy=OverflowPolicy.BLOCK)
    write_n(p, range(1, 6))  # 2 within credit, 3 queued
    assert p.write(b"c6") is WriteResult.BLOCKED
    assert p.write(b"c6") is WriteResult.BLOCKED  # still: nothing was appended
    assert p.last_seq == 5
    h.pump()
    queued = c.server.statistics().queued_bytes
    assert queued == 3 * 2  # bounded by the queue, not by the producer
    assert only(c, handle)[1:] == data(range(1, 3))
    assert writable == []
    c.conn.consume(handle, 2, 4)  # the subscriber grants credit
    h.pump()
    assert writable == [5]
    write_n(p, range(6, 7))
    h.pump()
    assert only(c, handle)[1:] == data(range(1, 5))  # 2 more within the new credit


def test_block_policy_waits_for_every_blocking_subscriber() -> None:
    h, ch = setup(ChannelOptions(default_policy=OverflowPolicy.BLOCK))
    p = ch.start("s")
    writable: list[int] = []
    p.on_writable = lambda: writable.append(1)
    server = Config(max_queued_chunks=1)
    a = h.connect(Config(auto_credit=False), server)
    b = h.connect(Config(auto_credit=False), server)
    free = h.connect()  # a drop_oldest subscriber never blocks anyone
    ha = subscribe(a, "s", credit_chunks=2)
    hb = subscribe(b, "s", credit_chunks=2)
    subscribe(free, "s", policy=OverflowPolicy.DROP_OLDEST)
    write_n(p, range(1, 4))
    assert p.write(b"x") is WriteResult.BLOCKED
    h.pump()
    a.conn.consume(ha, 2, 4)
    h.pump()
    assert writable == []  # b still has no room
    b.conn.consume(hb, 2, 4)
    h.pump()
    assert writable == [1]


def test_block_released_when_the_blocking_subscriber_leaves() -> None:
    h, ch = setup()
    p = ch.start("s")
    writable: list[int] = []
    p.on_writable = lambda: writable.append(1)
    a = h.connect(Config(auto_credit=False), Config(max_queued_chunks=1))
    ha = subscribe(a, "s", credit_chunks=1, policy=OverflowPolicy.BLOCK)
    write_n(p, range(1, 3))
    assert p.write(b"x") is WriteResult.BLOCKED
    a.conn.unsubscribe(ha)
    h.pump()
    assert writable == [1]
    write_n(p, range(3, 4))


def test_block_without_on_writable_callback() -> None:
    h, ch = setup()
    p = ch.start("s")
    a = h.connect(Config(auto_credit=False), Config(max_queued_chunks=1))
    ha = subscribe(a, "s", credit_chunks=1, policy=OverflowPolicy.BLOCK)
    write_n(p, range(1, 3))
    assert p.write(b"x") is WriteResult.BLOCKED
    h.pump()
    a.conn.consume(ha, 1, 2)
    h.pump()
    write_n(p, range(3, 4))


def test_writable_after_the_stream_ended_is_ignored() -> None:
    h, ch = setup()
    p = ch.start("s")
    writable: list[int] = []
    p.on_writable = lambda: writable.append(1)
    a = h.connect(Config(auto_credit=False), Config(max_queued_chunks=1))
    ha = subscribe(a, "s", credit_chunks=1, policy=OverflowPolicy.BLOCK)
    write_n(p, range(1, 3))
    assert p.write(b"x") is WriteResult.BLOCKED
    p.close()  # END is queued behind chunk 2; the hub forgets the subscription
    h.pump()
    a.conn.consume(ha, 1, 2)  # the credit brings a Writable the hub has no subscription for
    h.pump()
    assert writable == []
    assert only(a, ha)[1:] == [*data(range(1, 3)), StreamEnded(ha, 2)]


# -- 3. fan-out ---------------------------------------------------------------------------------


def test_one_write_reaches_every_subscription_on_every_connection() -> None:
    h, ch = setup()
    p = ch.start("s")
    clients = [h.connect() for _ in range(10)]
    handles = [(c, subscribe(c, "s")) for c in clients for _ in range(3)]
    for c in clients:
        c.wakeups = 0
    write_n(p, range(1, 3))
    assert all(c.wakeups == 2 for c in clients)  # one wakeup per connection per write
    h.pump()
    for c, handle in handles:
        assert only(c, handle)[1:] == data(range(1, 3))


DATA_HEADER = struct.Struct(">IBBIQ")  # length, type, flags, handle, seq: 18 bytes


def test_fan_out_shares_the_payload_and_only_the_header_is_per_subscriber() -> None:
    """What is shared: the payload object. The producer's ``bytes`` is stored once in the
    replay store and the same object is queued on every subscriber's connection. What is per
    subscriber: the 18-byte DATA header carrying that subscriber's handle (and, for every
    connection, the copy ``data_to_send`` makes when it joins its output)."""
    store = MemoryStore()
    h = HubHarness(store=store)
    ch = h.hub.register(CH)
    p = ch.start("s")
    clients = [h.connect() for _ in range(8)]
    for c in clients:
        for _ in range(3):
            c.conn.subscribe(CH, "s")
    h.pump()
    chunk = bytes(60_000)  # one DATA frame
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        p.write(chunk)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # A copy per subscription would be 24 x 60 kB; this is less than one copy.
    assert grown < len(chunk), f"{grown} bytes allocated by one write to 24 subscriptions"
    assert store.read((CH, "s"), 0, 1).chunks[0] is chunk
    sent = [c.server.data_to_send() for c in clients[:2]]
    assert [len(b) for b in sent] == [3 * (18 + len(chunk))] * 2
    headers = []
    for out in sent:
        for i in range(3):
            frame = out[i * (18 + len(chunk)) : (i + 1) * (18 + len(chunk))]
            assert frame[18:] == chunk
            headers.append(DATA_HEADER.unpack(frame[:18]))
    assert {(n, t, f, seq) for n, t, f, _, seq in headers} == {(8 + len(chunk), 0x15, 0, 1)}
    assert [handle for *_, handle, _ in headers] == [1, 2, 3, 1, 2, 3]


# -- 4. replay and gaps -------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [None, 1, 2])  # whole transfers, and cut at random points
def test_resubscribe_replays_what_is_retained_then_live(seed: int | None) -> None:
    h, ch = setup(ChannelOptions(replay=Window(chunks=5)), seed=seed)
    p = ch.start("s")
    write_n(p, range(1, 9))
    c = h.connect()
    handle = subscribe(c, "s", after_seq=0)
    write_n(p, range(9, 11))
    h.pump()
    assert only(c, handle) == [
        RequestAccepted(handle, "s", 4, 8),
        GapReceived(handle, 1, 3, GapReason.EVICTED),
        *data(range(4, 11)),
    ]


def test_resubscribe_after_seq_inside_the_window() -> None:
    h, ch = setup(ChannelOptions(replay=Window(chunks=5)))
    p = ch.start("s")
    write_n(p, range(1, 9))
    c = h.connect()
    handle = subscribe(c, "s", after_seq=5)
    write_n(p, range(9, 10))
    h.pump()
    assert only(c, handle) == [RequestAccepted(handle, "s", 4, 8), *data(range(6, 10))]


def test_resubscribe_gap_has_exact_bounds() -> None:
    h, ch = setup(ChannelOptions(replay=Window(chunks=3, nbytes=1000)))
    p = ch.start("s")
    write_n(p, range(1, 11))
    c = h.connect()
    handle = subscribe(c, "s", after_seq=4)
    assert only(c, handle) == [
        RequestAccepted(handle, "s", 8, 10),
        GapReceived(handle, 5, 7, GapReason.EVICTED),
        *data(range(8, 11)),
    ]


def test_window_by_bytes_bounds_the_replay() -> None:
    h, ch = setup(ChannelOptions(replay=Window(chunks=100, nbytes=10)))
    p = ch.start("s")
    write_n(p, range(1, 11))  # c1..c9 are 2 bytes, c10 is 3
    c = h.connect()
    handle = subscribe(c, "s")
    assert only(c, handle) == [
        RequestAccepted(handle, "s", 7, 10),
        GapReceived(handle, 1, 6, GapReason.EVICTED),
        *data(range(7, 11)),
    ]


def test_after_seq_beyond_the_end_skips_up_to_it() -> None:
    h, ch = setup()
    p = ch.start("s")
    write_n(p, range(1, 3))
    c = h.connect()
    handle = subscribe(c, "s", after_seq=4)  # the client says it has seen up to 4
    write_n(p, range(3, 7))
    h.pump()
    assert only(c, handle) == [RequestAccepted(handle, "s", 1, 2), *data(range(5, 7))]


def test_unknown_stream_and_unknown_channel_are_rejected() -> None:
    h, _ = setup(on_open=lambda p, a: None, on_upload=lambda r: None)
    c = h.connect()
    s1 = c.conn.subscribe(CH, "nope")
    s2 = c.conn.subscribe("demo:nope", "s")
    o = c.conn.open("demo:nope")
    u = c.conn.upload("demo:nope")
    h.pump()
    assert [(e.code, e.message) for h_ in (s1, s2, o, u) for e in c.of(h_)] == [
        (ErrorCode.UNKNOWN_STREAM, "no stream 'nope'"),
        (ErrorCode.UNKNOWN_CHANNEL, "no channel 'demo:nope'"),
        (ErrorCode.UNKNOWN_CHANNEL, "no channel 'demo:nope'"),
        (ErrorCode.UNKNOWN_CHANNEL, "no channel 'demo:nope'"),
    ]


def test_late_subscriber_to_an_ended_stream() -> None:
    h, ch = setup()
    p = ch.start("s")
    write_n(p, range(1, 4))
    p.close()
    c = h.connect()
    handle = subscribe(c, "s")
    tail = subscribe(c, "s", tail=True)
    assert only(c, handle) == [
        RequestAccepted(handle, "s", 1, 3),
        *data(range(1, 4)),
        StreamEnded(handle, 3),
    ]
    assert only(c, tail) == [RequestAccepted(tail, "s", 1, 3), StreamEnded(tail, 3)]


def test_late_subscriber_to_a_failed_stream_gets_the_same_error() -> None:
    h, ch = setup()
    p = ch.start("s")
    write_n(p, range(1, 3))
    p.fail(4321, "model overloaded")
    c = h.connect()
    handle = subscribe(c, "s")
    assert only(c, handle) == [
        RequestAccepted(handle, "s", 1, 2),
        *data(range(1, 3)),
        StreamFailed(handle, 4321, "model overloaded", 2),
    ]


def test_live_subscribers_get_the_outcome_after_the_last_chunk() -> None:
    h, ch = setup()
    p, q = ch.start("p"), ch.start("q")
    c = h.connect()
    hp, hq = subscribe(c, "p"), subscribe(c, "q")
    write_n(p, range(1, 3))
    write_n(q, range(1, 2))
    p.close()
    q.fail(1001, "bad")
    h.pump()
    assert only(c, hp)[1:] == [*data(range(1, 3)), StreamEnded(hp, 2)]
    assert only(c, hq)[1:] == [*data(range(1, 2)), StreamFailed(hq, 1001, "bad", 1)]
    assert h.hub.statistics().subscriptions == 0


def test_tail_subscription_gets_only_live_data() -> None:
    h, ch = setup()
    p = ch.start("s")
    write_n(p, range(1, 6))
    c = h.connect()
    handle = subscribe(c, "s", tail=True)
    write_n(p, range(6, 8))
    h.pump()
    assert only(c, handle) == [RequestAccepted(handle, "s", 1, 5), *data(range(6, 8))]


@pytest.mark.parametrize("seed", [None, 3])
def test_catch_up_with_a_small_window_follows_the_credit(seed: int | None) -> None:
    n = 1000
    h, ch = setup(ChannelOptions(replay=Window(chunks=n)), seed=seed)
    p = ch.start("s")
    write_n(p, range(1, n + 1))
    c = h.connect(Config(auto_credit=False), Config(max_queued_chunks=4))
    handle = subscribe(c, "s", credit_chunks=8)
    assert len(c.chunks(handle)) == 8  # one window's worth, and 4 queued on the server
    assert c.server.statistics().queued_bytes <= 4 * 5
    consumed = 0
    while consumed < n:
        new = c.chunks(handle)[consumed:]
        assert new  # each credit brings more
        c.conn.consume(handle, len(new), sum(len(chunk) for _, chunk in new))
        consumed += len(new)
        h.pump()
    assert c.chunks(handle) == data(range(1, n + 1))
    assert not any(isinstance(e, GapReceived | OverflowWarning) for e in c.events)
    assert c.server.statistics().chunks_dropped == 0
    write_n(p, range(n + 1, n + 2))  # live now
    h.pump()
    assert c.chunks(handle)[-1] == (n + 1, b"c1001")


def test_catch_up_with_auto_credit_replays_everything() -> None:
    n = 2000  # more than one batch read from the store
    h, ch = setup(ChannelOptions(replay=Window(chunks=n)))
    p = ch.start("s")
    write_n(p, range(1, n + 1))
    c = h.connect(Config(window_chunks=16), Config(max_queued_chunks=2))
    handle = subscribe(c, "s")
    assert c.chunks(handle) == data(range(1, n + 1))
    assert c.server.statistics().chunks_dropped == 0


def test_history_evicted_while_catching_up_is_a_gap() -> None:
    h, ch = setup(ChannelOptions(replay=Window(chunks=10)))
    p = ch.start("s")
    write_n(p, range(1, 11))
    c = h.connect(Config(auto_credit=False), Config(max_queued_chunks=1))
    handle = subscribe(c, "s", credit_chunks=2)  # 1, 2 sent; 3 queued; cursor at 3
    write_n(p, range(11, 21))  # evicts 1..10
    c.conn.consume(handle, 2, 4)
    h.pump()
    assert only(c, handle)[1:] == [
        *data(range(1, 4)),
        GapReceived(handle, 4, 10, GapReason.EVICTED),
        (11, b"c11"),
    ]


def test_zero_chunk_window_reports_everything_as_a_gap() -> None:
    h, ch = setup(ChannelOptions(replay=Window(chunks=0)))
    p = ch.start("s")
    write_n(p, range(1, 4))
    c = h.connect()
    handle = subscribe(c, "s")
    write_n(p, range(4, 5))
    h.pump()
    assert only(c, handle) == [
        RequestAccepted(handle, "s", 4, 3),
        GapReceived(handle, 1, 3, GapReason.EVICTED),
        (4, b"c4"),
    ]


# -- 5. retention -------------------------------------------------------------------------------


def test_finished_stream_is_retained_then_released() -> None:
    h, ch = setup(ChannelOptions(retention=10))
    assert h.hub.next_deadline() is None
    p = ch.start("s")
    write_n(p, range(1, 3))
    h.clock.advance(5 - h.clock())
    p.close()
    assert h.hub.next_deadline() == 15
    c = h.connect()
    h.advance(9.5)  # t = 14.5
    handle = subscribe(c, "s")
    assert only(c, handle)[-1] == StreamEnded(handle, 2)
    assert h.hub.statistics().retained_streams == 1
    h.advance(0.5)  # t = 15: released
    assert h.hub.next_deadline() is None
    assert h.hub.statistics().retained_streams == 0
    handle = subscribe(c, "s")
    assert only(c, handle) == [RequestRejected(handle, ErrorCode.UNKNOWN_STREAM, "no stream 's'")]


def test_max_closed_streams_releases_the_oldest_first() -> None:
    h, ch = setup(ChannelOptions(max_closed_streams=2))
    for sid in ("a", "b", "c"):
        ch.start(sid).close()
    c = h.connect()
    codes = {}
    for sid in ("a", "b", "c"):
        handle = subscribe(c, sid)
        codes[sid] = type(c.of(handle)[-1])
    assert codes == {"a": RequestRejected, "b": StreamEnded, "c": StreamEnded}
    assert h.hub.statistics().retained_streams == 2


def test_zero_retention_and_zero_max_closed() -> None:
    h, ch = setup(ChannelOptions(max_closed_streams=0))
    ch.start("s").close()
    assert h.hub.statistics().retained_streams == 0
    assert h.hub.next_deadline() is None  # the released stream's timer is skipped
    h2, ch2 = setup(ChannelOptions(retention=0))
    ch2.start("s").close()
    assert h2.hub.next_deadline() == 0
    h2.hub.handle_timer()
    assert h2.hub.statistics().retained_streams == 0


def test_next_deadline_is_the_earliest_valid_timer() -> None:
    h, ch = setup(ChannelOptions(retention=10))
    c = h.connect(server_config=Config(session_grace=30))
    ch.start("s").close()  # released at 10
    c.disconnect()  # the session expires at 30
    assert h.hub.next_deadline() == 10
    h.clock.advance(5 - h.clock())
    ch.start("s")  # reusing the id releases the retained stream early: its timer is void
    h.hub.handle_timer()
    assert h.hub.next_deadline() == 30
    h.advance(25)
    assert h.hub.next_deadline() is None
    assert h.hub.statistics().sessions == 0


def test_catching_up_subscriber_of_a_released_stream_gets_a_gap_and_the_outcome() -> None:
    h, ch = setup(ChannelOptions(retention=10))
    p = ch.start("s")
    write_n(p, range(1, 11))
    p.fail(1234, "boom")
    c = h.connect(Config(auto_credit=False), Config(max_queued_chunks=2))
    handle = subscribe(c, "s", credit_chunks=2)  # 1, 2 sent; 3, 4 queued
    h.advance(10)  # released while the subscriber is still catching up
    c.conn.consume(handle, 2, 4)
    h.pump()
    assert only(c, handle)[1:] == [
        *data(range(1, 5)),
        GapReceived(handle, 5, 10, GapReason.EVICTED),
        StreamFailed(handle, 1234, "boom", 10),
    ]
    assert h.hub.statistics().subscriptions == 0


def test_catching_up_subscriber_of_a_reused_id_gets_the_old_outcome() -> None:
    h, ch = setup()
    p = ch.start("s")
    write_n(p, range(1, 4))
    p.close()
    c = h.connect(Config(auto_credit=False), Config(max_queued_chunks=1))
    handle = subscribe(c, "s", credit_chunks=3)  # everything sent: at the end already
    h.pump()
    assert only(c, handle)[-1] == StreamEnded(handle, 3)
    other = subscribe(c, "s", credit_chunks=1)  # 1 sent, 2 queued: catching up at 2
    new = ch.start("s")  # the id is reused
    c.conn.consume(other, 1, 2)
    h.pump()
    assert only(c, other)[1:] == [  # chunk 3 went with the old generation's history
        *data(range(1, 3)),
        GapReceived(other, 3, 3, GapReason.EVICTED),
        StreamEnded(other, 3),
    ]
    assert new.last_seq == 0


# -- 6. open with the request -------------------------------------------------------------------


def test_open_handler_gets_the_args_and_its_writes_reach_the_requester() -> None:
    seen: list[tuple[str, bytes]] = []

    def on_open(producer: Producer, args: bytes) -> None:
        seen.append((producer.stream_id, args))
        producer.write(b"first")  # before the handler returns: the requester already listens
        producer.write(b"second")

    h, ch = setup(on_open=on_open)
    c = h.connect()
    picked = c.conn.open(CH, b"prompt")
    named = c.conn.open(CH, b"again", stream_id="mine")
    h.pump()
    sid = h.ids.issued[-1]
    assert seen == [(sid, b"prompt"), ("mine", b"again")]
    assert only(c, picked) == [
        RequestAccepted(picked, sid, 1, 0),
        (1, b"first"),
        (2, b"second"),
    ]
    assert only(c, named)[0] == RequestAccepted(named, "mine", 1, 0)
    producer = ch.producer(sid)
    assert producer is not None
    producer.close()
    h.pump()
    assert only(c, picked)[-1] == StreamEnded(picked, 2)
    other = h.connect()
    late = subscribe(other, sid)
    assert only(other, late)[1:] == [(1, b"first"), (2, b"second"), StreamEnded(late, 2)]


def test_open_handler_raising_fails_the_stream(caplog: pytest.LogCaptureFixture) -> None:
    def on_open(producer: Producer, args: bytes) -> None:
        producer.write(b"partial")
        raise RuntimeError("no model")

    h, _ = setup(on_open=on_open)
    c = h.connect()
    handle = c.conn.open(CH)
    with caplog.at_level(logging.ERROR, "streamproto.hub"):
        h.pump()
    assert only(c, handle)[1:] == [
        (1, b"partial"),
        StreamFailed(handle, ErrorCode.HANDLER_FAILED, "RuntimeError: no model", 1),
    ]
    assert "open handler of demo:tokens failed" in caplog.text


def test_open_handler_raising_after_close_keeps_the_end(caplog: pytest.LogCaptureFixture) -> None:
    def on_open(producer: Producer, args: bytes) -> None:
        producer.close()
        raise RuntimeError("late")

    h, _ = setup(on_open=on_open)
    c = h.connect()
    handle = c.conn.open(CH)
    with caplog.at_level(logging.CRITICAL, "streamproto.hub"):
        h.pump()
    assert only(c, handle)[1:] == [StreamEnded(handle, 0)]


def test_open_without_handler_and_open_of_an_open_id() -> None:
    h, ch = setup()
    h.hub.register("demo:open", on_open=lambda p, a: None)
    ch.start("s")
    c = h.connect()
    no_handler = c.conn.open(CH)
    exists = c.conn.open("demo:open", stream_id="x")
    again = c.conn.open("demo:open", stream_id="x")
    h.pump()
    assert only(c, no_handler) == [
        RequestRejected(no_handler, ErrorCode.NOT_ALLOWED, "this channel does not open streams")
    ]
    assert isinstance(only(c, exists)[0], RequestAccepted)
    assert only(c, again) == [RequestRejected(again, ErrorCode.STREAM_EXISTS, "stream 'x' is open")]


def test_open_then_cancel_in_one_read_aborts_the_producer() -> None:
    started: list[Producer] = []

    def on_open(producer: Producer, args: bytes) -> None:
        started.append(producer)
        producer.write(b"x")  # the handle is closed already: the CANCEL follows

    h, _ = setup(on_open=on_open)
    c = h.connect()
    handle = c.conn.open(CH)
    c.conn.cancel(handle)  # OPEN and CANCEL reach the server together
    h.pump()
    assert [p.aborted for p in started] == [True]
    assert h.hub.statistics().subscriptions == 0


def test_subscribe_then_cancel_in_one_read() -> None:
    h, ch = setup()
    p = ch.start("s")
    write_n(p, range(1, 3))
    c = h.connect()
    handle = c.conn.subscribe(CH, "s")
    c.conn.cancel(handle)
    h.pump()
    assert c.of(handle) == []
    assert p.aborted
    assert h.hub.statistics().subscriptions == 0


# -- 7. sessions --------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [None, 4])
def test_resume_within_grace_continues_without_duplicates(seed: int | None) -> None:
    h, ch = setup(ChannelOptions(replay=Window(chunks=4)), seed=seed)
    p = ch.start("s")
    a = h.connect()
    first = a.handshake
    assert (first.resumed, first.session_id, first.resume_token) == (False, "id1", "id2")
    handle = subscribe(a, "s")
    write_n(p, range(1, 4))
    h.pump()
    last = a.chunks(handle)[-1][0]
    a.disconnect()
    assert h.hub.statistics().parked_subscriptions == 1
    write_n(p, range(4, 6))
    h.clock.advance(29 - h.clock())
    b = h.connect(resume_token=first.resume_token)
    second = b.handshake
    assert (second.resumed, second.session_id) == (True, first.session_id)
    assert second.resume_token not in (first.resume_token, "")
    assert second.resume_token == h.ids.issued[-1]  # from the injected id source
    again = subscribe(b, "s", after_seq=last)
    assert h.hub.statistics().parked_subscriptions == 0  # taken back
    write_n(p, range(6, 8))
    h.pump()
    assert only(b, again) == [RequestAccepted(again, "s", 2, 5), *data(range(4, 8))]
    old = h.connect(resume_token=first.resume_token)  # the old token is spent
    assert not old.handshake.resumed
    assert old.handshake.session_id != first.session_id


def test_resume_after_eviction_reports_the_gap() -> None:
    h, ch = setup(ChannelOptions(replay=Window(chunks=3)))
    p = ch.start("s")
    a = h.connect()
    handle = subscribe(a, "s")
    write_n(p, range(1, 3))
    h.pump()
    a.disconnect()
    write_n(p, range(3, 10))
    b = h.connect(resume_token=a.handshake.resume_token)
    again = subscribe(b, "s", after_seq=a.chunks(handle)[-1][0])
    assert only(b, again) == [
        RequestAccepted(again, "s", 7, 9),
        GapReceived(again, 3, 6, GapReason.EVICTED),
        *data(range(7, 10)),
    ]


@pytest.mark.parametrize(
    ("rule", "on_cancel", "aborted"),
    [
        (DisconnectRule.LEAVE, AbortRule.ABORT, False),
        (DisconnectRule.CANCEL, AbortRule.ABORT, True),
        (DisconnectRule.CANCEL, AbortRule.CONTINUE, False),
    ],
)
def test_grace_expiry_releases_the_session_by_the_disconnect_rule(
    rule: DisconnectRule, on_cancel: AbortRule, aborted: bool
) -> None:
    h, ch = setup(ChannelOptions(on_disconnect=rule, on_last_cancel=on_cancel))
    p = ch.start("s")
    a = h.connect(server_config=Config(session_grace=5))
    subscribe(a, "s")
    subscribe(a, "s")
    token = a.handshake.resume_token
    a.disconnect()
    assert h.hub.next_deadline() == 5
    h.advance(4)
    assert (p.aborted, h.hub.statistics().parked_subscriptions) == (False, 2)
    h.advance(1)
    assert p.aborted is aborted
    stats = h.hub.statistics()
    assert (stats.parked_subscriptions, stats.sessions) == (0, 0)
    late = h.connect(resume_token=token)
    assert not late.handshake.resumed


def test_zero_grace_releases_at_once() -> None:
    h, ch = setup(ChannelOptions(on_disconnect=DisconnectRule.CANCEL))
    p = ch.start("s")
    a = h.connect(server_config=Config(session_grace=0))
    subscribe(a, "s")
    a.disconnect()
    assert p.aborted
    assert h.hub.statistics().sessions == 0


def test_parked_subscriptions_not_taken_back_are_released_after_another_grace() -> None:
    h, ch = setup(ChannelOptions(on_disconnect=DisconnectRule.CANCEL))
    kept, dropped = ch.start("kept"), ch.start("dropped")
    server = Config(session_grace=10)
    a = h.connect(server_config=server)
    hk = subscribe(a, "kept")
    subscribe(a, "dropped")
    a.disconnect()
    h.advance(5)
    b = h.connect(server_config=server, resume_token=a.handshake.resume_token)
    assert b.handshake.resumed
    again = subscribe(b, "kept", after_seq=0)
    assert h.hub.next_deadline() == 15  # the resumed session's leftovers
    h.advance(9)
    assert not dropped.aborted
    h.advance(1)
    assert dropped.aborted
    assert not kept.aborted
    assert h.hub.statistics().sessions == 1  # the session itself lives on with b
    write_n(kept, range(1, 2))
    h.pump()
    assert b.chunks(again) == [(1, b"c1")]
    assert a.of(hk)[-1] == RequestAccepted(hk, "kept", 1, 0)


def test_resumed_session_that_disconnects_again() -> None:
    h, ch = setup(ChannelOptions(on_disconnect=DisconnectRule.CANCEL))
    p, q = ch.start("p"), ch.start("q")
    server = Config(session_grace=10)
    a = h.connect(server_config=server)
    subscribe(a, "p")
    subscribe(a, "q")
    a.disconnect()
    b = h.connect(server_config=server, resume_token=a.handshake.resume_token)
    subscribe(b, "p")  # takes p back; q stays parked
    h.advance(5)
    b.disconnect()  # parks p again; both expire 10 s from now
    h.advance(9)
    assert (p.aborted, q.aborted) == (False, False)
    h.advance(1)
    assert (p.aborted, q.aborted) == (True, True)
    assert h.hub.statistics().sessions == 0


def test_takeover_when_the_old_connection_is_still_attached() -> None:
    h, ch = setup(ChannelOptions(on_disconnect=DisconnectRule.CANCEL))
    p = ch.start("s")
    a = h.connect()
    handle = subscribe(a, "s")
    write_n(p, range(1, 3))
    h.pump()
    b = h.connect(resume_token=a.handshake.resume_token)
    assert b.handshake.resumed
    assert b.handshake.session_id == a.handshake.session_id
    assert isinstance(a.events[-1], ConnectionTerminated)
    assert a.events[-1].code == ErrorCode.CONNECTION_LOST
    assert h.hub.statistics().parked_subscriptions == 1
    again = subscribe(b, "s", after_seq=2)
    write_n(p, range(3, 4))
    a.disconnect()  # the old transport finally closes: nothing changes
    h.pump()
    assert only(b, again)[1:] == [(3, b"c3")]
    assert a.chunks(handle) == data(range(1, 3))
    assert h.hub.statistics().parked_subscriptions == 0
    assert not p.aborted


def test_tokens_are_bound_to_one_session() -> None:
    h, _ = setup()
    a, b = h.connect(), h.connect()
    ta, tb = a.handshake, b.handshake
    assert len({ta.session_id, ta.resume_token, tb.session_id, tb.resume_token}) == 4
    assert set(h.ids.issued) == {ta.session_id, ta.resume_token, tb.session_id, tb.resume_token}
    a.disconnect()
    b.disconnect()
    a2 = h.connect(resume_token=tb.resume_token)
    assert (a2.handshake.resumed, a2.handshake.session_id) == (True, tb.session_id)
    b2 = h.connect(resume_token=ta.resume_token)
    assert (b2.handshake.resumed, b2.handshake.session_id) == (True, ta.session_id)
    nobody = h.connect(resume_token="made-up")
    assert not nobody.handshake.resumed
    assert h.hub.statistics().sessions == 3


def test_authenticate_refusal_and_acceptance() -> None:
    seen: list[bytes] = []

    def authenticate(auth: bytes) -> int | None:
        seen.append(auth)
        return None if auth == b"secret" else ErrorCode.AUTH_FAILED

    h = HubHarness(authenticate=authenticate)
    h.hub.register(CH)
    bad = h.connect(auth=b"wrong")
    assert bad.events == [HandshakeRefused(ErrorCode.AUTH_FAILED, "authentication failed")]
    good = h.connect(auth=b"secret")
    assert isinstance(good.events[0], HandshakeCompleted)
    assert seen == [b"wrong", b"secret"]
    assert h.hub.statistics().sessions == 1
    bad.disconnect()  # the refused peer is closed: its end is ignored
    bad.peer.handle_events([PingReceived(1)])
    assert h.hub.statistics().sessions == 1


def test_application_code_refusal() -> None:
    h = HubHarness(authenticate=lambda auth: 4001)
    c = h.connect()
    assert c.events == [HandshakeRefused(4001, "authentication failed")]


def test_disconnect_before_the_handshake() -> None:
    h, _ = setup()
    c = h.connect(pump=False)
    c.disconnect()
    assert h.hub.statistics().sessions == 0


# -- 8. uploads ---------------------------------------------------------------------------------


class Uploads:
    """An on_upload handler that keeps the readers and counts their notifications."""

    def __init__(self) -> None:
        self.readers: list[UploadReader] = []
        self.notified = 0

    def __call__(self, reader: UploadReader) -> None:
        reader.on_readable = self.notify
        self.readers.append(reader)

    def notify(self) -> None:
        self.notified += 1


def read_all(reader: UploadReader) -> list[bytes]:
    out = []
    while (chunk := reader.read_nowait()) is not None:
        out.append(chunk)
    return out


def test_upload_data_in_order_then_end() -> None:
    uploads = Uploads()
    h, _ = setup(on_upload=uploads)
    c = h.connect()
    handle = c.conn.upload(CH, "file-1", b"meta")
    for i in range(5):
        c.conn.send_data(handle, b"u%d" % i)
    h.pump()
    (reader,) = uploads.readers
    assert (reader.channel, reader.stream_id, reader.args) == (CH, "file-1", b"meta")
    assert reader.attached
    assert h.hub.statistics().uploads == 1
    assert read_all(reader) == [b"u%d" % i for i in range(5)]
    c.conn.send_data(handle, b"u5")
    c.conn.send_end(handle)
    h.pump()
    assert read_all(reader) == [b"u5"]
    assert reader.outcome == (0, "")
    assert not reader.attached
    assert uploads.notified >= 2
    assert h.hub.statistics().uploads == 0


def test_upload_naming_an_open_upload_is_rejected() -> None:
    """R-REQ-8: an id names one open upload at a time; uploads and outbound streams have
    separate namespaces, and an upload's id is free again once it is closed (no retention)."""
    uploads = Uploads()
    h, ch = setup(on_upload=uploads, on_open=lambda producer, args: None)
    c = h.connect()
    first = c.conn.upload(CH, "file-1")
    h.pump()
    second = c.conn.upload(CH, "file-1")
    h.pump()
    assert only(c, second) == [
        RequestRejected(second, ErrorCode.STREAM_EXISTS, "upload 'file-1' is open")
    ]
    with raises(ErrorCode.STREAM_EXISTS):
        ch.expect_upload("file-1")
    # An outbound stream of the same id is another namespace.
    opened = c.conn.open(CH, stream_id="file-1")
    h.pump()
    assert isinstance(only(c, opened)[0], RequestAccepted)
    assert len(uploads.readers) == 1
    c.conn.send_end(first)
    h.pump()
    assert uploads.readers[0].outcome == (0, "")
    third = c.conn.upload(CH, "file-1")
    h.pump()
    assert isinstance(only(c, third)[0], RequestAccepted)
    assert [r.stream_id for r in uploads.readers] == ["file-1", "file-1"]


def test_upload_chunks_are_read_in_order() -> None:
    uploads = Uploads()
    h, _ = setup(seed=7, on_upload=uploads)
    c = h.connect()
    handle = c.conn.upload(CH)
    h.pump()  # END needs the ACCEPT
    sent = [b"chunk-%d" % i for i in range(50)]
    for chunk in sent:
        c.conn.send_data(handle, chunk)
    c.conn.send_end(handle)
    h.pump()
    (reader,) = uploads.readers
    assert reader.stream_id == h.ids.issued[-1]  # server-picked id
    assert read_all(reader) == sent
    assert reader.read_nowait() is None
    assert reader.outcome == (0, "")


def test_upload_error_reaches_the_reader() -> None:
    uploads = Uploads()
    h, _ = setup(on_upload=uploads)
    c = h.connect()
    handle = c.conn.upload(CH)
    h.pump()
    c.conn.send_data(handle, b"part")
    c.conn.send_error(handle, 2001, "disk full")
    h.pump()
    (reader,) = uploads.readers
    assert read_all(reader) == [b"part"]
    assert reader.outcome == (2001, "disk full")


def test_reader_cancel_reaches_the_uploader() -> None:
    uploads = Uploads()
    h, _ = setup(on_upload=uploads)
    c = h.connect()
    first, second = c.conn.upload(CH), c.conn.upload(CH)
    h.pump()
    r1, r2 = uploads.readers
    r1.cancel()
    r2.cancel(3001, "too big")
    r2.cancel()  # a no-op once finished
    h.pump()
    assert c.of(first) == [
        RequestAccepted(first, r1.stream_id, 1, 0),
        UploadCancelled(first, ErrorCode.UPLOAD_CANCELLED, ""),
    ]
    assert c.of(second)[-1] == UploadCancelled(second, 3001, "too big")
    assert (r1.outcome, r2.outcome) == ((ErrorCode.UPLOAD_CANCELLED, ""), (3001, "too big"))
    assert h.hub.statistics().uploads == 0


def test_uploader_disconnect_fails_the_reader() -> None:
    uploads = Uploads()
    h, _ = setup(on_upload=uploads)
    c = h.connect()
    handle = c.conn.upload(CH)
    c.conn.send_data(handle, b"half")
    h.pump()
    c.disconnect()
    (reader,) = uploads.readers
    assert reader.outcome == (ErrorCode.UPLOAD_DISCONNECTED, "the uploader disconnected")
    assert read_all(reader) == [b"half"]  # what arrived stays readable
    assert h.hub.statistics().uploads == 0


def test_expected_upload_gets_the_client_upload() -> None:
    uploads = Uploads()
    h, ch = setup(on_upload=uploads)
    reader = ch.expect_upload()
    assert reader.stream_id == h.ids.issued[-1]
    assert not reader.attached
    named = ch.expect_upload("named")
    with raises(ErrorCode.STREAM_EXISTS):
        ch.expect_upload("named")
    with raises(ErrorCode.INVALID_NAME):
        ch.expect_upload("not valid")
    c = h.connect()
    handle = c.conn.upload(CH, reader.stream_id, b"args")
    c.conn.send_data(handle, b"x")
    h.pump()
    c.conn.send_end(handle)
    h.pump()
    assert uploads.readers == []  # not passed to on_upload
    assert (reader.args, read_all(reader), reader.outcome) == (b"args", [b"x"], (0, ""))
    again = c.conn.upload(CH, reader.stream_id)  # no longer expected: goes to on_upload
    h.pump()
    assert len(uploads.readers) == 1
    assert isinstance(c.of(again)[0], RequestAccepted)
    assert named.outcome is None


def test_cancelled_expected_upload_is_no_longer_expected() -> None:
    h, ch = setup()
    reader = ch.expect_upload("up")
    reader.cancel()
    assert reader.outcome == (ErrorCode.UPLOAD_CANCELLED, "")
    other = ch.expect_upload("up")  # the id is free again
    other.cancel()
    reader.cancel()  # a no-op
    c = h.connect()
    handle = c.conn.upload(CH, "up")
    h.pump()
    assert c.of(handle) == [
        RequestRejected(handle, ErrorCode.NOT_ALLOWED, "this channel takes no uploads")
    ]


def test_upload_limits_and_handler_failure(caplog: pytest.LogCaptureFixture) -> None:
    uploads = Uploads()
    h, _ = setup(ChannelOptions(max_uploads=1), on_upload=uploads)
    h.hub.register("demo:none")

    def broken(reader: UploadReader) -> None:
        raise ValueError("no space")

    h.hub.register("demo:broken", on_upload=broken)
    c = h.connect()
    ok = c.conn.upload(CH)
    over = c.conn.upload(CH)
    none = c.conn.upload("demo:none")
    with caplog.at_level(logging.CRITICAL, "streamproto.hub"):
        fails = c.conn.upload("demo:broken")
        h.pump()
    assert isinstance(c.of(ok)[0], RequestAccepted)
    assert c.of(over) == [RequestRejected(over, ErrorCode.LIMIT_EXCEEDED, "too many uploads")]
    assert c.of(none) == [
        RequestRejected(none, ErrorCode.NOT_ALLOWED, "this channel takes no uploads")
    ]
    assert c.of(fails)[-1] == UploadCancelled(
        fails, ErrorCode.HANDLER_FAILED, "ValueError: no space"
    )
    uploads.readers[0].cancel()
    h.pump()
    again = c.conn.upload(CH)  # the slot is free again
    h.pump()
    assert isinstance(c.of(again)[0], RequestAccepted)


def test_reading_returns_credit_so_an_unread_upload_stalls_at_its_window() -> None:
    uploads = Uploads()
    h, _ = setup(on_upload=uploads)
    c = h.connect(server_config=Config(auto_credit=False, window_chunks=4, window_bytes=1000))
    handle = c.conn.upload(CH)
    h.pump()
    results = [c.conn.send_data(handle, b"%03d" % i) for i in range(20)]
    assert results == [WriteResult.ACCEPTED] * 20
    c.conn.send_end(handle)
    h.pump()
    (reader,) = uploads.readers
    got = read_all(reader)
    assert got == [b"000", b"001", b"002", b"003"]  # the window, and no more
    h.pump()  # the reads returned credit: 4 more arrive
    for _ in range(10):
        more = read_all(reader)
        got += more
        h.pump()
    assert got == [b"%03d" % i for i in range(20)]
    assert reader.outcome == (0, "")


def test_reader_without_callback_and_unread_upload_is_bounded() -> None:
    h, _ = setup(on_upload=lambda reader: None)
    c = h.connect(server_config=Config(auto_credit=False, window_chunks=2, window_bytes=1000))
    handle = c.conn.upload(CH)
    h.pump()
    for i in range(10):
        c.conn.send_data(handle, b"%d" % i)
    h.pump()
    h.pump()
    assert c.server.statistics().chunks_received == 2


def test_an_unread_upload_on_an_auto_credit_connection_is_cut_off_at_its_window() -> None:
    h, _ = setup(on_upload=lambda reader: None)
    c = h.connect(server_config=Config(window_chunks=3, window_bytes=1000))  # auto credit
    handle = c.conn.upload(CH)
    h.pump()
    for i in range(12):
        c.conn.send_data(handle, b"%d" % i)
    h.pump()
    h.pump()
    cancelled = [e for e in c.events if isinstance(e, UploadCancelled)]
    assert [(e.handle, e.code) for e in cancelled] == [(handle, ErrorCode.RESOURCE_EXHAUSTED)]
    assert c.server.statistics().chunks_received <= 3 + 3  # a window, then the cut


# -- 9. generations -----------------------------------------------------------------------------


def test_reusing_an_id_gives_a_new_generation() -> None:
    h, ch = setup()
    old = ch.start("s")
    write_n(old, range(1, 4))
    old.close()
    new = ch.start("s")
    assert new.generation > old.generation
    assert new.last_seq == 0
    with raises(ErrorCode.STREAM_CLOSED):
        old.write(b"stale")
    c = h.connect()
    handle = subscribe(c, "s")
    write_n(new, range(1, 2), b"n")
    h.pump()
    assert only(c, handle) == [RequestAccepted(handle, "s", 1, 0), (1, b"n1")]


def test_stale_producer_cannot_write_into_its_successor() -> None:
    """Two hubs over one store, as two processes over a shared store (Redis): the store
    released hub A's stream (a TTL, an operator), hub B started one with the same id. A's
    producer is not closed, but its generation is stale."""
    store = MemoryStore()
    a, b = HubHarness(store=store), HubHarness(store=store)
    stale = a.hub.register(CH).start("s")
    write_n(stale, range(1, 3))
    store.finish((CH, "s"), stale.generation, Outcome(StreamStatus.ENDED))
    store.release((CH, "s"), stale.generation)
    fresh = b.hub.register(CH).start("s")
    write_n(fresh, range(1, 2), b"fresh")
    with raises(ErrorCode.STALE_GENERATION):
        stale.write(b"stale")
    assert stale.last_seq == 0  # its generation is gone
    assert store.read((CH, "s"), 0, 10).chunks == (b"fresh1",)


# -- statistics and event plumbing ---------------------------------------------------------------


def test_statistics() -> None:
    h, ch = setup(on_upload=lambda r: None)
    h.hub.register("demo:other")
    p = ch.start("s")
    ch.start("t").close()
    a, b = h.connect(), h.connect()
    subscribe(a, "s")
    subscribe(b, "s")
    subscribe(b, "t")  # ends at once
    a.conn.upload(CH)
    h.pump()
    b.disconnect()
    assert h.hub.statistics() == HubStatistics(
        channels=2,
        open_streams=1,
        retained_streams=1,
        subscriptions=1,
        parked_subscriptions=1,
        sessions=2,
        uploads=1,
    )
    assert p.last_seq == 0


def test_events_the_hub_has_nothing_to_decide_on() -> None:
    h, _ = setup()
    c = h.connect()
    c.peer.handle_events([PingReceived(7), CancelRequested(99)])  # unknown handle: ignored
    c.conn.ping()
    h.pump()
    assert h.hub.statistics().subscriptions == 0


def test_open_with_an_explicit_policy() -> None:
    results: list[WriteResult] = []

    def on_open(producer: Producer, args: bytes) -> None:
        results.extend(producer.write(b"%d" % i) for i in range(3))

    h, _ = setup(on_open=on_open)
    c = h.connect(Config(auto_credit=False), Config(max_queued_chunks=1))
    handle = c.conn.open(CH, credit_chunks=1, policy=OverflowPolicy.BLOCK)
    h.pump()
    # BLOCK: the third write was refused rather than dropping the second
    assert results == [WriteResult.ACCEPTED, WriteResult.ACCEPTED, WriteResult.BLOCKED]
    assert only(c, handle)[1:] == [(1, b"0")]
    c.conn.consume(handle, 1, 1)
    h.pump()
    assert only(c, handle)[1:] == [(1, b"0"), (2, b"1")]


def test_two_parked_subscriptions_of_one_stream_are_taken_back_one_by_one() -> None:
    h, ch = setup(ChannelOptions(on_disconnect=DisconnectRule.CANCEL))
    p = ch.start("s")
    server = Config(session_grace=10)
    a = h.connect(server_config=server)
    subscribe(a, "s")
    subscribe(a, "s")
    a.disconnect()
    b = h.connect(server_config=server, resume_token=a.handshake.resume_token)
    handle = subscribe(b, "s")
    assert h.hub.statistics().parked_subscriptions == 1
    b.conn.cancel(handle)
    h.pump()
    assert not p.aborted  # one is still parked
    h.advance(10)
    assert p.aborted


def test_upload_failed_before_its_accept() -> None:
    uploads = Uploads()
    h, _ = setup(on_upload=uploads)
    c = h.connect()
    handle = c.conn.upload(CH)
    c.conn.send_error(handle, 2002, "changed my mind")  # UPLOAD and ERROR arrive together
    h.pump()
    assert [r.outcome for r in uploads.readers] == [(2002, "changed my mind")]
    assert h.hub.statistics().uploads == 0


def test_a_chunk_too_large_for_one_subscriber_fails_only_that_subscription() -> None:
    h, ch = setup()
    small = h.connect(Config(max_chunk_size=100))  # this client accepts chunks of 100 B at most
    large = h.connect()
    producer = ch.start("s")
    producer.write(b"x" * 10)
    a = subscribe(small, "s")
    b = subscribe(large, "s")
    assert producer.write(b"y" * 500) is WriteResult.ACCEPTED
    producer.write(b"z")
    producer.close()
    h.pump()
    failed = [e for e in only(small, a) if isinstance(e, StreamFailed)]
    assert [(e.code, e.last_seq) for e in failed] == [(ErrorCode.CHUNK_TOO_LARGE, 1)]
    assert [x for x in only(large, b) if isinstance(x, tuple)] == [
        (1, b"x" * 10),
        (2, b"y" * 500),
        (3, b"z"),
    ]


def test_a_chunk_too_large_during_catch_up_fails_that_subscription() -> None:
    h, ch = setup()
    producer = ch.start("s")
    producer.write(b"y" * 500)
    producer.write(b"z")
    c = h.connect(Config(max_chunk_size=100))
    handle = subscribe(c, "s")
    h.pump()
    failed = [e for e in only(c, handle) if isinstance(e, StreamFailed)]
    assert [(e.code, e.last_seq) for e in failed] == [(ErrorCode.CHUNK_TOO_LARGE, 0)]


# -- overflow warnings reach the producer -------------------------------------------------------


def stalled_subscriber(h: HubHarness, stream_id: str = "s") -> tuple[Client, int]:
    """A drop_oldest subscriber with 2 chunks of credit that consumes only when told."""
    c = h.connect(Config(auto_credit=False), Config(max_queued_chunks=2))
    handle = subscribe(c, stream_id, credit_chunks=2, policy=OverflowPolicy.DROP_OLDEST)
    return c, handle


def consume_all(c: Client, handle: int) -> None:
    """The subscriber reads what arrived since it last did: its credit goes back."""
    chunks = [
        chunk
        for e in c.take()
        if isinstance(e, DataReceived) and e.handle == handle
        for chunk in e.chunks
    ]
    c.conn.consume(handle, len(chunks), sum(map(len, chunks)))
    c.harness.pump()


def test_overflow_reaches_the_producer_with_the_subscribers_range(
    caplog: pytest.LogCaptureFixture,
) -> None:
    h, ch = setup()
    p = ch.start("s")
    seen: list[Overflow] = []
    p.on_overflow = seen.append
    c, handle = stalled_subscriber(h)
    write_n(p, range(1, 3))
    h.pump()  # 1 and 2 sent: no credit left
    with caplog.at_level(logging.WARNING, logger="streamproto.hub"):
        write_n(p, range(3, 11))  # 3..8 dropped, 9 and 10 queued behind the held gap
        h.pump()
        assert seen == []  # the gap waits for credit; so does its warning
        consume_all(c, handle)
    session = c.handshake.session_id
    assert seen == [Overflow(CH, "s", session, handle, 6, 3, 8)]
    gap = GapReceived(handle, 3, 8, GapReason.OVERFLOW)
    assert only(c, handle)[1:] == [
        *data(range(1, 3)),
        gap,
        OverflowWarning(handle, 6, 3, 8),
        *data(range(9, 11)),
    ]
    assert p.statistics() == ProducerStatistics(overflows=1, dropped=6)
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert record.getMessage() == (
        f"{CH}/s: seqs 3..8 (6) dropped for session {session} (handle {handle}), which fell behind"
    )


def test_overflow_log_is_rate_limited_per_stream(caplog: pytest.LogCaptureFixture) -> None:
    h, ch = setup()
    p = ch.start("s")
    seen: list[Overflow] = []
    p.on_overflow = seen.append
    c, handle = stalled_subscriber(h)
    seq = 0
    with caplog.at_level(logging.WARNING, logger="streamproto.hub"):
        for _ in range(20):  # a subscriber that reads, but slower than the producer writes
            write_n(p, range(seq + 1, seq + 11))
            seq += 10
            h.pump()
            consume_all(c, handle)
            h.clock.advance(1.0)
        assert len(seen) == 20  # one callback per gap
        assert [s.dropped for s in seen[1:]] == [8] * 19  # 10 written, 2 fit, per round
        # 20 gaps in 20 s: one record at the first, one 10 s later summing the 9 between.
        assert len(caplog.records) == 2
        assert (
            caplog.records[1]
            .getMessage()
            .endswith("(and 9 earlier overflows, 72 seqs, not logged one by one)")
        )
    assert p.statistics().overflows == 20


def test_overflow_after_the_stream_ended_still_reaches_the_producer() -> None:
    h, ch = setup()
    p = ch.start("s")
    seen: list[Overflow] = []
    p.on_overflow = seen.append
    c, handle = stalled_subscriber(h)
    write_n(p, range(1, 3))
    h.pump()
    write_n(p, range(3, 8))
    p.close()  # the hub is done with the subscription; its connection drains the gap
    h.pump()
    assert seen == []
    assert c.peer._ending
    consume_all(c, handle)
    assert seen == [Overflow(CH, "s", c.handshake.session_id, handle, 3, 3, 5)]
    assert isinstance(only(c, handle)[-1], StreamEnded)
    assert not c.peer._ending  # forgotten with its last warning


def test_a_cancelled_subscriber_with_a_held_gap_is_no_overflow() -> None:
    h, ch = setup()
    p = ch.start("s")
    seen: list[Overflow] = []
    p.on_overflow = seen.append
    c, handle = stalled_subscriber(h)
    write_n(p, range(1, 3))
    h.pump()
    write_n(p, range(3, 8))
    p.close()
    h.pump()
    assert c.peer._ending
    c.conn.cancel(handle)  # the held gap is discarded with the queue
    h.pump()
    assert seen == []
    assert not c.peer._ending
    assert p.statistics() == ProducerStatistics(overflows=0, dropped=0)


def test_overflow_without_a_callback_and_for_a_handle_the_hub_does_not_know() -> None:
    h, ch = setup()
    p = ch.start("s")
    c, handle = stalled_subscriber(h)
    write_n(p, range(1, 6))
    h.pump()
    consume_all(c, handle)
    assert p.statistics() == ProducerStatistics(overflows=1, dropped=1)
    c.peer.handle_events([OverflowWarning(handle + 7, 1, 1, 1)])  # ignored
    assert p.statistics().overflows == 1


def test_overflow_record_is_short_in_logs() -> None:
    record = Overflow(CH, "s", "x" * 40, 3, 6, 3, 8)
    assert str(record) == f"Overflow({CH}/s session={'x' * 16} h=3 dropped=6 3..8)"


def test_block_counts_the_copies_other_subscriptions_on_its_connection_queue_first() -> None:
    """Two subscriptions of one stream on one connection share its connection-wide cap. A
    write whose copy for the BLOCK one would fit alone, but not after the other's copy, is
    BLOCKED as a whole: before, it was stored and queued for the other only, and the BLOCK
    subscriber silently lost it."""
    h, ch = setup()
    p = ch.start("s")
    writable: list[int] = []
    p.on_writable = lambda: writable.append(p.last_seq)
    c = h.connect(Config(auto_credit=False), Config(max_connection_queued_bytes=100))
    tail = subscribe(c, "s", credit_chunks=8, policy=OverflowPolicy.DROP_OLDEST)
    block = subscribe(c, "s", credit_chunks=8, policy=OverflowPolicy.BLOCK)
    chunk = b"x" * 30
    assert p.write(chunk) is WriteResult.ACCEPTED  # 60 of 100 queued until the next flush
    assert p.write(chunk) is WriteResult.BLOCKED  # 60 + 30 + 30 > 100: for both, not one
    assert p.last_seq == 1
    h.pump()  # the flush empties the queue: writable again
    assert writable == [1]
    assert p.write(chunk) is WriteResult.ACCEPTED
    h.pump()
    assert only(c, block)[1:] == [(1, chunk), (2, chunk)]
    assert only(c, tail)[1:] == [(1, chunk), (2, chunk)]
