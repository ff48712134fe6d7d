"""An aborted stream, end to end on every backend (R-SUB-50): the last subscriber's CANCEL
aborts the producer, the hub finishes the stream there, a later subscriber replays what was
written and then gets ERROR CANCELLED (never END), and the producer's handler stops quietly,
whether it watched the abort signal or wrote on until its write raised."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import pytest
import trio
from harness import BACKENDS, TIMEOUT, TRANSPORTS, pair

from streamproto import ChannelOptions, ErrorCode, LocalProtocolError, Window

RETAIN = ChannelOptions(replay=Window(chunks=100_000, nbytes=64 << 20))


def _late_subscriber_sees_the_abort(client: Any, channel: str, stream_id: str) -> int:
    """Subscribe from the start to the aborted stream: every chunk, then CANCELLED."""
    late = client.subscribe(channel, stream_id)
    items = late.rest()
    error = late.error
    assert getattr(error, "code", None) == ErrorCode.CANCELLED, repr(error)
    last = len(items)
    assert f"aborted at seq {last}: the last subscriber cancelled" in str(error)
    assert list(late.seqs) == list(range(1, last + 1))
    return last


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_handler_that_watches_the_abort(
    backend: str, transport: str, caplog: pytest.LogCaptureFixture
) -> None:
    """``test:open`` stops writing when ``aborted`` is set and returns without closing."""
    with caplog.at_level(logging.ERROR), pair(backend, backend, transport) as (server, client):
        sub = client.open("test:open", b"1000000:1")
        first = sub.take(5)
        stream_id = client.wait_accepted(sub.sub)
        sub.close()
        server.wait_aborted(1)
        last = _late_subscriber_sees_the_abort(client, "test:open", stream_id)
        assert last >= len(first) == 5
        assert server.statistics().open_streams == 0
    assert [r.getMessage() for r in caplog.records if "handler" in r.getMessage()] == []


def _stubborn(flavour: str, raised: list[BaseException], done: threading.Event) -> Any:
    """An open handler that never looks at ``aborted``: it writes until a write raises."""
    if flavour == "thread":

        def handler(producer: Any, _args: bytes) -> None:
            try:
                for i in range(1_000_000):
                    producer.write(b"%d" % i)
                    time.sleep(0.001)
            except BaseException as exc:
                raised.append(exc)
                done.set()
                raise

        return handler
    sleep: Any = trio.sleep if flavour == "trio" else asyncio.sleep

    async def async_handler(producer: Any, _args: bytes) -> None:
        try:
            for i in range(1_000_000):
                await producer.write(b"%d" % i)
                await sleep(0.001)
        except BaseException as exc:
            raised.append(exc)
            done.set()
            raise

    return async_handler


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_handler_that_writes_on_is_stopped_by_its_write(
    backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The handler's next write raises STREAM_CLOSED; the backend's handler wrapper says
    nothing about it and does not touch the stream's outcome."""
    raised: list[BaseException] = []
    done = threading.Event()
    with caplog.at_level(logging.ERROR), pair(backend, backend, "tcp") as (server, client):
        handler = _stubborn(server.flavour, raised, done)
        server.thread.call(lambda: server.server.channel("test:stubborn", RETAIN, on_open=handler))
        sub = client.open("test:stubborn", b"")
        assert len(sub.take(5)) == 5
        stream_id = client.wait_accepted(sub.sub)
        sub.close()
        assert done.wait(TIMEOUT)
        (exc,) = raised
        assert isinstance(exc, LocalProtocolError)
        assert exc.code == ErrorCode.STREAM_CLOSED
        assert "was aborted at seq" in str(exc)
        _late_subscriber_sees_the_abort(client, "test:stubborn", stream_id)
    assert [r.getMessage() for r in caplog.records if "handler" in r.getMessage()] == []


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_write_waiting_for_room_wakes_when_the_stream_is_aborted(backend: str) -> None:
    """Under BLOCK a write waits for the subscriber's credit; when that subscriber cancels
    and the stream is aborted, the waiting write wakes and raises STREAM_CLOSED (it used to
    wait for a room that never came), so ``test:open``'s handler sees the abort."""
    from harness import ServerProxy

    from streamproto._frames import Accept, Cancel, Data, Open
    from transports.conformance import RawPeer

    server = ServerProxy(backend, "tcp")
    try:
        peer = RawPeer(server.url, TIMEOUT)
        try:
            peer.handshake()
            # Credit for two chunks and no more: the handler's third write waits for room.
            peer.send(Open(1, "test:open", "", 2, 1 << 16, args=b"1000000:0"))
            peer.expect(Accept)
            assert [peer.expect(Data).seq for _ in range(2)] == [1, 2]
            peer.send(Cancel(1))
            server.wait_aborted(1)
        finally:
            peer.close()
    finally:
        server.stop()
