"""The reference channels of spec/CONFORMANCE.md on a hub with a test clock: the live producers
write one chunk per millisecond of the hub's clock and stop only as their channel's rule says;
the upload channel cancels after three chunks. (The wire runner checks the same channels over
real sockets against every backend: test_conformance.py.)"""

from __future__ import annotations

from typing import Any

from hub_helpers import Client, HubHarness

from streamproto import (
    Config,
    DataReceived,
    ErrorCode,
    GapReason,
    GapReceived,
    OverflowPolicy,
    RequestAccepted,
    StreamEnded,
    StreamFailed,
    UploadCancelled,
)
from streamproto.testing.reference import (
    MANY,
    SLOW_INTERVAL,
    UPLOAD_CANCEL_AFTER,
    UPLOAD_CANCEL_MESSAGE,
    register_reference_channels,
    slow_chunk,
)


def harness() -> HubHarness:
    h = HubHarness()
    register_reference_channels(h.hub)
    return h


def items(client: Client, handle: int) -> list[Any]:
    """The handle's events after its ACCEPT: (seq, chunk) for data, the rest as they are."""
    out: list[Any] = []
    for e in client.of(handle)[1:]:
        if isinstance(e, DataReceived):
            out += [(e.seq + i, c) for i, c in enumerate(e.chunks)]
        else:
            out.append(e)
    return out


def slow(seqs: range) -> list[tuple[int, bytes]]:
    return [(s, slow_chunk(s)) for s in seqs]


def open_stream(h: HubHarness, c: Client, channel: str, args: bytes, **kw: Any) -> tuple[int, str]:
    handle = c.conn.open(channel, args, **kw)
    h.pump()
    accepted = c.of(handle)[0]
    assert isinstance(accepted, RequestAccepted)
    return handle, accepted.stream_id


def tick(h: HubHarness, n: int = 1) -> None:
    for _ in range(n):
        h.advance(SLOW_INTERVAL)


def test_slow_writes_one_chunk_per_millisecond_then_ends() -> None:
    h = harness()
    c = h.connect()
    handle, _ = open_stream(h, c, "conformance:slow", b"4")
    assert items(c, handle) == slow(range(1, 2))  # the first at once
    for n in range(2, 4):
        tick(h)
        assert items(c, handle) == slow(range(1, n + 1))
    tick(h)  # the last chunk, and the end with it
    assert items(c, handle) == [*slow(range(1, 5)), StreamEnded(handle, 4)]


def test_slow_defaults_to_three_chunks_and_may_write_none() -> None:
    h = harness()
    c = h.connect()
    three, _ = open_stream(h, c, "conformance:slow", b"")
    none, _ = open_stream(h, c, "conformance:slow", b"0")
    tick(h, 5)
    assert items(c, three) == [*slow(range(1, 4)), StreamEnded(three, 3)]
    assert items(c, none) == [StreamEnded(none, 0)]


def test_slow_runs_on_after_its_readers_cancel_or_vanish() -> None:
    h = harness()
    a, b = h.connect(), h.connect()
    ha, sid = open_stream(h, a, "conformance:slow", b"6")
    hb = b.conn.subscribe("conformance:slow", sid)
    h.pump()
    a.conn.cancel(ha)
    b.disconnect()
    h.advance(30)  # b's session expires as well
    tick(h, 6)
    late = h.connect()
    hl = late.conn.subscribe("conformance:slow", sid)
    h.pump()
    assert items(late, hl) == [*slow(range(1, 7)), StreamEnded(hl, 6)]
    assert items(a, ha) == slow(range(1, 2))
    assert items(b, hb) == slow(range(1, 2))


def test_abort_stops_at_the_last_cancel_and_replays_as_cancelled() -> None:
    h = harness()
    c = h.connect()
    handle, sid = open_stream(h, c, "conformance:abort", b"100")
    tick(h, 2)
    c.conn.cancel(handle)
    h.pump()
    tick(h, 5)  # the producer has stopped: nothing more is written
    again = c.conn.subscribe("conformance:abort", sid)
    h.pump()
    message = "aborted at seq 3: the last subscriber cancelled"
    assert items(c, again) == [
        *slow(range(1, 4)),
        StreamFailed(again, ErrorCode.CANCELLED, message, 3),
    ]
    assert h.hub.statistics().open_streams == 0


def test_a_blocked_slow_writer_waits_for_room_not_for_the_clock() -> None:
    h = harness()
    c = h.connect(Config(auto_credit=False), Config(max_queued_chunks=1, max_queued_bytes=100))
    handle, sid = open_stream(
        h, c, "conformance:slow", b"5", credit_chunks=1, policy=OverflowPolicy.BLOCK
    )
    tick(h, 5)  # s-1 sent, s-2 queued, s-3 blocked
    channel = h.hub.channel("conformance:slow")
    assert channel is not None
    producer = channel.producer(sid)
    assert producer is not None
    assert producer.last_seq == 2
    c.conn.consume(handle, 1, 3)  # room again: the writer goes on at once, then by the clock
    h.pump()
    assert producer.last_seq == 3
    for _ in range(4):
        c.conn.consume(handle, 1, 3)
        tick(h)
    assert items(c, handle) == [*slow(range(1, 6)), StreamEnded(handle, 5)]


def test_slow_window_keeps_four_chunks_for_a_late_reader() -> None:
    h = harness()
    c = h.connect()
    _, sid = open_stream(h, c, "conformance:slow-window", b"12")
    tick(h, 7)  # 8 written
    late = h.connect()
    hl = late.conn.subscribe("conformance:slow-window", sid)
    h.pump()
    tick(h, 4)
    accepted = late.of(hl)[0]
    assert (accepted.first_seq, accepted.last_seq) == (5, 8)
    gap = GapReceived(hl, 1, 4, GapReason.EVICTED)
    assert items(late, hl) == [gap, *slow(range(5, 13)), StreamEnded(hl, 12)]


def test_many_is_64_chunks_of_4_kib() -> None:
    h = harness()
    c = h.connect()
    handle = c.conn.subscribe("conformance:fixed", "many")
    h.pump()
    assert items(c, handle) == [*enumerate(MANY, 1), StreamEnded(handle, 64)]
    assert {len(chunk) for chunk in MANY} == {4096}


def test_upload_cancel_cancels_after_three_chunks() -> None:
    h = harness()
    c = h.connect()
    handle = c.conn.upload("conformance:upload-cancel", "u1")
    h.pump()
    for i in range(5):
        c.conn.send_data(handle, b"u-%d" % i)
    h.pump()
    cancelled = [e for e in c.of(handle) if isinstance(e, UploadCancelled)]
    assert cancelled == [UploadCancelled(handle, ErrorCode.UPLOAD_CANCELLED, UPLOAD_CANCEL_MESSAGE)]
    assert UPLOAD_CANCEL_AFTER == 3
    assert h.hub.statistics().uploads == 0


# -- conformance:bidi ---------------------------------------------------------------------------


def chunks(client: Client, handle: int) -> list[bytes]:
    return [c for e in client.of(handle) if isinstance(e, DataReceived) for c in e.chunks]


def test_bidi_echo_writes_back_each_chunk_and_ends_after_the_client() -> None:
    h = harness()
    c = h.connect()
    handle = c.conn.open("conformance:bidi", b"", bidi=True)
    h.pump()  # END needs the ACCEPT
    for i in range(1, 4):
        c.conn.send_data(handle, b"%d" % i)
    c.conn.send_end(handle)
    h.pump()
    assert chunks(c, handle) == [b"echo:1", b"echo:2", b"echo:3"]
    assert c.of(handle)[-1] == StreamEnded(handle, 3)


def test_bidi_echo_waits_for_a_block_subscriber_and_holds_the_client_back() -> None:
    h = harness()
    c = h.connect(Config(window_chunks=2), Config(max_queued_chunks=1))
    handle = c.conn.open("conformance:bidi", b"echo", bidi=True, credit_chunks=1)
    h.pump()
    for i in range(1, 9):
        c.conn.send_data(handle, b"%d" % i)
    c.conn.send_end(handle)
    h.pump()
    assert chunks(c, handle) == [b"echo:%d" % i for i in range(1, 9)]  # none lost
    assert c.of(handle)[-1] == StreamEnded(handle, 8)


def test_bidi_count_writes_after_the_client_ended() -> None:
    h = harness()
    c = h.connect()
    handle = c.conn.open("conformance:bidi", b"count", bidi=True)
    h.pump()
    for _ in range(5):
        c.conn.send_data(handle, b"x")
    c.conn.send_error(handle, 4000, "stop")  # a failed direction is over too
    h.pump()
    assert chunks(c, handle) == [b"read 5"]
    assert c.of(handle)[-1] == StreamEnded(handle, 1)


def test_bidi_first_ends_at_once_and_reads_on() -> None:
    h = harness()
    c = h.connect()
    handle = c.conn.open("conformance:bidi", b"first:2", bidi=True)
    h.pump()
    assert chunks(c, handle) == [b"f-1", b"f-2"]
    assert c.of(handle)[-1] == StreamEnded(handle, 2)
    for _ in range(100):  # beyond the window: credit keeps coming
        assert c.conn.send_data(handle, b"y" * 100) is not None
    c.conn.send_end(handle)
    h.pump()
    assert c.conn.statistics().open_handles == 0


def test_bidi_cancel_stops_the_client_after_n_chunks_and_reports() -> None:
    h = harness()
    c = h.connect()
    handle = c.conn.open("conformance:bidi", b"cancel:2", bidi=True)
    for _ in range(2):
        c.conn.send_data(handle, b"z")
    h.pump()
    assert UploadCancelled(handle, ErrorCode.UPLOAD_CANCELLED, "enough") in c.of(handle)
    assert chunks(c, handle) == [b"cancelled after 2"]
    assert c.of(handle)[-1] == StreamEnded(handle, 1)
