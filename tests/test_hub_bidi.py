"""Bidirectional streams in the hub (spec section 6.4): ``on_bidi(producer, reader, args)``
gets the writer of the stream the requester is subscribed to and the reader of what the
requester sends on the same handle."""

from __future__ import annotations

import logging

import pytest
from hub_helpers import Client, HubHarness
from test_hub_shared import Deployment  # its shared-store fake

from streamproto import (
    AccessRequest,
    CancelRequested,
    ChannelOptions,
    DataReceived,
    ErrorCode,
    Producer,
    Refuse,
    RequestAccepted,
    RequestKind,
    RequestRejected,
    StoreFailed,
    StreamClaimed,
    StreamEnded,
    StreamFailed,
    UploadCancelled,
    UploadReader,
    WriteResult,
)

CH = "demo:bidi"


class Echo:
    """An on_bidi handler that echoes every chunk it reads, upper-cased, and ends its stream
    when the client ends its direction."""

    def __init__(self, *, close_on_end: bool = True) -> None:
        self.calls: list[tuple[Producer, UploadReader, bytes]] = []
        self.close_on_end = close_on_end

    def __call__(self, producer: Producer, reader: UploadReader, args: bytes) -> None:
        self.calls.append((producer, reader, args))

        def readable() -> None:
            while (chunk := reader.read_nowait()) is not None:
                if not producer.closed:
                    producer.write(chunk.upper())
            if reader.outcome == (0, "") and self.close_on_end and not producer.closed:
                producer.close()

        reader.on_readable = readable


def setup(**kwargs: object) -> tuple[HubHarness, Echo, Client]:
    h = HubHarness()
    echo = Echo()
    h.hub.register(CH, on_bidi=echo, **kwargs)  # type: ignore[arg-type]
    return h, echo, h.connect()


def received(c: Client, handle: int) -> list[bytes]:
    return [chunk for e in c.of(handle) if isinstance(e, DataReceived) for chunk in e.chunks]


def test_the_handler_reads_and_writes_the_same_stream() -> None:
    h, echo, c = setup()
    handle = c.conn.open(CH, b"hi", bidi=True)
    c.conn.send_data(handle, b"one")  # queued until ACCEPT brings credit
    h.pump()
    ((producer, reader, args),) = echo.calls
    assert args == b"hi"
    assert reader.stream_id == producer.stream_id == h.ids.issued[-1]
    assert c.of(handle)[0] == RequestAccepted(handle, producer.stream_id, 1, 0)
    assert h.hub.statistics().uploads == 1
    c.conn.send_data(handle, b"two")
    c.conn.send_end(handle)
    h.pump()
    assert received(c, handle) == [b"ONE", b"TWO"]
    assert c.of(handle)[-1] == StreamEnded(handle, 2)
    assert reader.outcome == (0, "")
    assert h.hub.statistics().uploads == 0
    assert c.conn.statistics().open_handles == 0


def test_the_server_ends_its_direction_and_keeps_reading() -> None:
    h = HubHarness()
    readers: list[UploadReader] = []

    def handler(producer: Producer, reader: UploadReader, args: bytes) -> None:
        producer.write(b"only")
        producer.close()
        readers.append(reader)

    h.hub.register(CH, on_bidi=handler)
    c = h.connect()
    handle = c.conn.open(CH, bidi=True)
    h.pump()
    assert c.of(handle)[-1] == StreamEnded(handle, 1)
    for i in range(3):
        c.conn.send_data(handle, b"%d" % i)
    c.conn.send_error(handle, 4001, "stopped")
    h.pump()
    (reader,) = readers
    assert [reader.read_nowait() for _ in range(3)] == [b"0", b"1", b"2"]
    assert reader.outcome == (4001, "stopped")


def test_a_cancel_aborts_the_producer_and_leaves_the_reader() -> None:
    h, echo, c = setup()
    handle = c.conn.open(CH, bidi=True)
    h.pump()
    ((producer, reader, _),) = echo.calls
    c.conn.cancel(handle)
    h.pump()
    assert CancelRequested(handle) in c.server_events
    assert producer.closed  # the last subscriber cancelled: the producer's abort fired
    c.conn.send_data(handle, b"still")
    h.pump()
    assert reader.buffered == 0  # the echo handler read it (and could not write it)
    assert reader.outcome is None
    c.conn.send_end(handle)
    h.pump()
    assert reader.outcome == (0, "")


def test_the_reader_cancels_the_clients_direction_only() -> None:
    h, echo, c = setup()
    handle = c.conn.open(CH, bidi=True)
    h.pump()
    ((producer, reader, _),) = echo.calls
    reader.cancel(4002, "enough")
    h.pump()
    assert UploadCancelled(handle, 4002, "enough") in c.of(handle)
    producer.write(b"more")
    producer.close()
    h.pump()
    assert received(c, handle) == [b"more"]
    assert c.of(handle)[-1] == StreamEnded(handle, 1)


def test_others_subscribe_to_the_servers_direction() -> None:
    h, echo, c = setup()
    handle = c.conn.open(CH, bidi=True)
    h.pump()
    other = h.connect()
    sub = other.conn.subscribe(CH, echo.calls[0][0].stream_id)
    c.conn.send_data(handle, b"a")
    c.conn.send_end(handle)
    h.pump()
    assert received(other, sub) == [b"A"]
    assert other.of(sub)[-1] == StreamEnded(sub, 1)


def test_a_disconnect_fails_the_reader_and_parks_the_subscription() -> None:
    h, echo, c = setup()
    echo.close_on_end = False
    handle = c.conn.open(CH, bidi=True)
    c.conn.send_data(handle, b"a")
    h.pump()
    ((producer, reader, _),) = echo.calls
    token = c.handshake.resume_token
    c.disconnect()
    assert reader.outcome == (ErrorCode.UPLOAD_DISCONNECTED, "the uploader disconnected")
    assert not producer.closed  # parked for the grace period, as a subscription is
    back = h.connect(resume_token=token)
    assert back.handshake.resumed
    sub = back.conn.subscribe(CH, producer.stream_id, after_seq=1)  # the downstream resumes
    h.pump()
    producer.write(b"b")
    producer.close()
    h.pump()
    assert received(back, sub) == [b"b"]
    assert back.of(sub)[-1] == StreamEnded(sub, 2)


ACCEPTED = [WriteResult.ACCEPTED] * 2


@pytest.mark.parametrize("held", [False, True])
def test_the_servers_direction_takes_runs_of_writes(held: bool) -> None:
    # write_many and held writes reach the sending direction of the handle the requester
    # writes on too.
    h, echo, c = setup()
    calls: list[None] = []
    if held:
        h.hub.on_writes_held = lambda: calls.append(None)
    handle = c.conn.open(CH, bidi=True)
    h.pump()
    ((producer, _, _),) = echo.calls
    assert producer.write_many([b"a", b"b"]) == (2, WriteResult.ACCEPTED)
    assert [producer.write(b"c"), producer.write(b"d")] == ACCEPTED
    assert len(calls) == held  # the two writes were held as one run
    h.hub.flush_writes()
    h.pump()
    assert received(c, handle) == [b"a", b"b", b"c", b"d"]


def test_a_held_run_is_kept_when_the_transport_ends_before_it_is_delivered() -> None:
    # The run took room on the requester's connection and was answered ACCEPTED; the
    # connection ends (receive_data) before the hub delivers it: the store keeps it for the
    # resumed subscription.
    h, echo, c = setup()
    echo.close_on_end = False
    h.hub.on_writes_held = lambda: None
    c.conn.open(CH, bidi=True)
    h.pump()
    ((producer, _, _),) = echo.calls
    assert [producer.write(b"a"), producer.write(b"b")] == ACCEPTED
    token = c.handshake.resume_token
    c.disconnect()  # the server's connection is over before the hub is told
    assert producer.last_seq == 2
    back = h.connect(resume_token=token)
    sub = back.conn.subscribe(CH, producer.stream_id, after_seq=0)
    h.pump()
    assert received(back, sub) == [b"a", b"b"]


def test_channels_without_the_handler_refuse() -> None:
    h = HubHarness()
    h.hub.register(CH, on_open=lambda producer, args: None)
    h.hub.register("demo:only-bidi", on_bidi=Echo())
    c = h.connect()
    bidi = c.conn.open(CH, bidi=True)
    plain = c.conn.open("demo:only-bidi")
    h.pump()
    assert c.of(bidi) == [
        RequestRejected(
            bidi, ErrorCode.NOT_ALLOWED, "this channel does not open bidirectional streams"
        )
    ]
    assert c.of(plain) == [
        RequestRejected(plain, ErrorCode.NOT_ALLOWED, "this channel does not open streams")
    ]


def test_authorization_is_asked_as_for_an_open() -> None:
    seen: list[AccessRequest] = []

    def authorize(request: AccessRequest) -> Refuse | None:
        seen.append(request)
        return Refuse(ErrorCode.FORBIDDEN, "no")

    h, echo, c = setup(authorize=authorize)
    handle = c.conn.open(CH, b"a", bidi=True)
    h.pump()
    assert c.of(handle) == [RequestRejected(handle, ErrorCode.FORBIDDEN, "no")]
    assert seen[0].kind is RequestKind.OPEN
    assert echo.calls == []


def test_the_channels_upload_limit_counts_bidi_streams() -> None:
    h, _, c = setup(options=ChannelOptions(max_uploads=1))
    first = c.conn.open(CH, bidi=True)
    second = c.conn.open(CH, bidi=True)
    h.pump()
    assert isinstance(c.of(first)[0], RequestAccepted)
    assert c.of(second) == [RequestRejected(second, ErrorCode.LIMIT_EXCEEDED, "too many uploads")]


def test_a_failing_handler_fails_both_directions(caplog: pytest.LogCaptureFixture) -> None:
    def handler(producer: Producer, reader: UploadReader, args: bytes) -> None:
        raise RuntimeError("boom")

    h = HubHarness()
    h.hub.register(CH, on_bidi=handler)
    c = h.connect()
    with caplog.at_level(logging.CRITICAL, "streamproto.hub"):
        handle = c.conn.open(CH, bidi=True)
        h.pump()
    events = c.of(handle)
    assert isinstance(events[-1], StreamFailed | UploadCancelled)
    assert {type(e) for e in events[1:]} == {StreamFailed, UploadCancelled}
    assert h.hub.statistics().uploads == 0


def test_the_client_fails_its_direction_before_the_accept() -> None:
    h, echo, c = setup()
    handle = c.conn.open(CH, bidi=True)
    c.conn.send_error(handle, 4003, "never mind")  # in the same bytes as the OPEN
    h.pump()
    ((producer, reader, _),) = echo.calls
    assert reader.outcome == (4003, "never mind")  # the client's own code
    assert not reader.attached
    assert h.hub.statistics().uploads == 0
    producer.write(b"x")
    producer.close()
    h.pump()
    assert received(c, handle) == [b"x"]


def test_with_a_shared_store_an_early_failure_waits_for_the_claim() -> None:
    """The OPEN waits for the store's claim; the client's ERROR on its direction arrives
    first. The handler, once called, gets a reader that has failed with the client's code."""
    d = Deployment()
    echo = Echo()
    d.a.hub.register("demo:bidi-claims", on_bidi=echo)
    c = d.a.connect()
    handle = c.conn.open("demo:bidi-claims", bidi=True)
    c.conn.send_error(handle, 4004, "too late")
    refused = c.conn.open("demo:bidi-claims", bidi=True)
    c.conn.send_error(refused, 4005, "never mind")
    d.a.pump()
    first, second = d.a.hub.store_requests()
    assert echo.calls == []
    d.a.hub.handle_store_event(StreamClaimed(first.key, first.generation))
    d.a.hub.handle_store_event(StoreFailed(second.key, second.generation, 114, "down"))
    d.a.pump()
    ((producer, reader, _),) = echo.calls
    assert reader.outcome == (4004, "too late")
    assert c.of(handle)[0] == RequestAccepted(handle, producer.stream_id, 1, 0)
    assert c.of(refused) == [RequestRejected(refused, 114, "down")]
    assert c.peer._failed_early == {}
