"""The adapter scenario suite: every backend-transport pair, and clients against servers of
other backends. Each scenario is written once against the blocking proxies in ``harness``."""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Iterator

import pytest
from harness import BACKENDS, TRANSPORTS, pair

from streamproto import ErrorCode, WriteResult
from streamproto._frames import FrameDecoder, Goaway
from transports import Backoff, GapError, StreamError
from transports._common import Gap as ItemGap

PAIRS = [(b, b, t) for b in BACKENDS for t in TRANSPORTS]
CROSS = [
    ("asyncio", "trio", "tcp"),
    ("asyncio", "sync", "ws"),
    ("trio", "asyncio", "ws"),
    ("trio", "sync", "tcp"),
    ("sync", "asyncio", "tcp"),
    ("sync", "trio", "ws"),
]
ALL = PAIRS + CROSS
NO_RETRY = Backoff(attempts=0)


def ids(case: tuple[str, str, str]) -> str:
    server, client, transport = case
    return f"{server}-server/{client}-client/{transport}"


@pytest.fixture(params=ALL, ids=ids)
def case(request: pytest.FixtureRequest) -> tuple[str, str, str]:
    result: tuple[str, str, str] = request.param
    return result


@pytest.fixture(params=PAIRS, ids=ids)
def same(request: pytest.FixtureRequest) -> tuple[str, str, str]:
    result: tuple[str, str, str] = request.param
    return result


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """A thread census around every scenario: each backend's threads (the sync backend's
    readers, writers, timers and handler threads; the harness's loop threads) are gone once
    the client and server are closed."""
    before = {t.ident for t in threading.enumerate()}
    yield
    deadline = time.monotonic() + 5
    while True:
        extra = [t.name for t in threading.enumerate() if t.ident not in before]
        if not extra or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert extra == []


def test_subscribe_and_receive(case: tuple[str, str, str]) -> None:
    with pair(*case) as (server, client):
        server.start("test:streams", "s1")
        server.write("s1", b"a", b"b", b"c")
        sub = client.subscribe("test:streams", "s1")
        assert sub.take(3) == [b"a", b"b", b"c"]
        server.write("s1", b"d")
        server.close_stream("s1")
        assert sub.rest() == [b"d"]
        assert sub.error is None
        assert sub.seqs == [1, 2, 3, 4]


def test_replay_and_resume_after_the_socket_is_killed(case: tuple[str, str, str]) -> None:
    with pair(*case, reconnect=Backoff(initial=0.02, attempts=20)) as (_server, client):
        sub = client.open("test:open", b"300:1")
        first = sub.take(40)
        client.abort_transport()
        rest = sub.rest()
        assert sub.error is None
        assert first + rest == [b"%d" % i for i in range(300)]  # nothing lost, nothing twice
        assert sub.seqs == list(range(1, 301))
        stats = client.statistics()
        assert stats["reconnects"] >= 1
        assert stats["resumed"] >= 1


def test_cancel_reaches_the_producers_abort_signal(case: tuple[str, str, str]) -> None:
    with pair(*case) as (server, client):
        sub = client.open("test:open", b"1000000:1")
        assert len(sub.take(5)) == 5
        sub.close()
        server.record.wait(lambda: len(server.record.aborted) == 1)


def test_breaking_out_of_the_loop_sends_cancel(same: tuple[str, str, str]) -> None:
    with pair(*same) as (server, client):
        sub = client.open("test:open", b"1000000:1")
        sub.stop_after_next()
        sub.rest()
        server.record.wait(lambda: len(server.record.aborted) == 1)


def test_upload_and_upload_cancel(case: tuple[str, str, str]) -> None:
    with pair(*case) as (server, client):
        assert client.upload("test:upload", "u1", iter([b"x" * 1000] * 100)) is None
        server.record.wait(lambda: "u1" in server.record.uploads)
        assert server.record.uploads["u1"] == (100_000, 0, "")
        error = client.upload("test:upload", "u2", iter([b"y" * 1000] * 100_000), args=b"20000")
        assert isinstance(error, StreamError)
        assert error.code == 1007
        server.record.wait(lambda: "u2" in server.record.uploads)
        assert server.record.uploads["u2"][1:] == (1007, "enough")


def test_uploader_disconnect_fails_the_reader(same: tuple[str, str, str]) -> None:
    with pair(*same, reconnect=NO_RETRY) as (server, client):

        def chunks():  # type: ignore[no-untyped-def]
            for i in range(1000):
                if i == 50:
                    client.client.abort_transport()  # we are in the client's thread here
                yield b"z" * 100

        error = client.upload("test:upload", "u3", chunks())
        assert isinstance(error, StreamError)
        server.record.wait(lambda: "u3" in server.record.uploads)
        assert server.record.uploads["u3"][1] == ErrorCode.UPLOAD_DISCONNECTED


def _slow_client_config() -> dict[str, object]:
    from streamproto import Config

    return {"config": Config(window_chunks=16, window_bytes=1 << 20)}


def test_slow_consumer_drop_oldest(same: tuple[str, str, str]) -> None:
    with pair(*same, **_slow_client_config()) as (server, client):
        server.start("test:drop", "d1")
        sub = client.raw_subscribe("test:drop", "d1", on_gap="item")
        client.wait_accepted(sub)
        peak = 0
        for i in range(50):
            server.write("d1", *[b"%06d" % (i * 100 + j) + b"." * 994 for j in range(100)])
            peak = max(peak, server.queued_bytes())
        server.close_stream("d1")
        # Bounded: 16 credited + 8 queued chunks of 1000 bytes per subscription.
        assert peak <= (16 + 8) * 1000
        items, error = client.collect(sub)
        assert error is None
        chunks = [i for i in items if isinstance(i, bytes)]
        gaps = [i for i in items if isinstance(i, ItemGap)]
        assert gaps
        assert len(chunks) + sum(g.to_seq - g.from_seq + 1 for g in gaps) == 5000
        assert chunks[-1].startswith(b"004999")  # the newest survive


def test_slow_consumer_block(same: tuple[str, str, str]) -> None:
    with pair(*same, **_slow_client_config()) as (server, client):
        server.start("test:block", "b1")
        sub = client.raw_subscribe("test:block", "b1")
        client.wait_accepted(sub)
        results = server.try_write("b1", *[b"%06d" % i for i in range(1000)])
        accepted = [i for i, r in enumerate(results) if r is WriteResult.ACCEPTED]
        assert WriteResult.BLOCKED in results
        assert server.queued_bytes() <= (16 + 8) * 6
        assert accepted == list(range(len(accepted)))  # nothing after the first BLOCKED
        server.close_stream("b1")
        items, error = client.collect(sub)
        assert error is None
        assert items == [b"%06d" % i for i in accepted]


def test_slow_consumer_error(same: tuple[str, str, str]) -> None:
    with pair(*same, **_slow_client_config()) as (server, client):
        server.start("test:error", "e1")
        sub = client.raw_subscribe("test:error", "e1")
        client.wait_accepted(sub)
        server.write("e1", *[b"%06d" % i for i in range(200)])
        assert server.queued_bytes() <= (16 + 8) * 6
        items, error = client.collect(sub)
        assert isinstance(error, StreamError)
        assert error.code == ErrorCode.RESOURCE_EXHAUSTED
        assert items == [b"%06d" % i for i in range(len(items))]


def test_gap_raises_by_default(same: tuple[str, str, str]) -> None:
    with pair(*same) as (server, client):
        server.start("test:small", "g1")
        server.write("g1", *[b"%d" % i for i in range(40)])  # the window keeps the last 16
        server.close_stream("g1")
        items, error = client.collect(client.raw_subscribe("test:small", "g1"))
        assert items == []
        assert isinstance(error, GapError)
        assert (error.from_seq, error.to_seq) == (1, 24)


def test_a_thousand_streams_on_one_connection(same: tuple[str, str, str]) -> None:
    with pair(*same) as (server, client):
        for i in range(1000):
            server.start("test:streams", f"m{i}")
            server.write(f"m{i}", b"%d-a" % i, b"%d-b" % i)
        subs = [client.raw_subscribe("test:streams", f"m{i}") for i in range(1000)]
        for i in range(1000):
            server.close_stream(f"m{i}")
        for i, sub in enumerate(subs):
            items, error = client.collect(sub)
            assert error is None
            assert items == [b"%d-a" % i, b"%d-b" % i]


def test_chunks_larger_than_the_frame_size(case: tuple[str, str, str]) -> None:
    with pair(*case) as (server, client):
        big = bytes(range(256)) * 1000  # 256,000 bytes, frames carry at most 65,536
        server.start("test:streams", "big")
        server.write("big", big, b"small", big[::-1])
        server.close_stream("big")
        sub = client.subscribe("test:streams", "big")
        assert sub.rest() == [big, b"small", big[::-1]]


def test_server_shutdown_sends_goaway(same: tuple[str, str, str]) -> None:
    with pair(*same, reconnect=NO_RETRY) as (server, client):
        server.start("test:streams", "long")
        server.write("long", b"1")
        sub = client.subscribe("test:streams", "long")
        assert sub.take(1) == [b"1"]
        server.shutdown(timeout=0.3)
        sub.rest()
        assert isinstance(sub.error, StreamError)
        assert sub.error.code in (ErrorCode.SERVER_SHUTDOWN, ErrorCode.CONNECTION_LOST)


def test_malformed_frame_is_answered_with_its_code(same: tuple[str, str, str]) -> None:
    backend, _, transport = same
    with pair(backend, backend, transport) as (server, _client):
        oversize = struct.pack(">IBBI", 1 << 30, 0x01, 0, 0)
        frames = FrameDecoder().feed(_raw_exchange(server.url, oversize))
        assert len(frames) == 1
        assert isinstance(frames[0], Goaway)
        assert frames[0].code == ErrorCode.FRAME_TOO_LARGE


def _raw_exchange(url: str, data: bytes) -> bytes:
    """Send raw bytes (inside a binary message for ws://) and return what comes back."""
    hostport = url.split("://", 1)[1].split("/", 1)[0]
    host, port = hostport.rsplit(":", 1)
    if url.startswith("tcp://"):
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            sock.sendall(data)
            chunks = []
            while True:
                piece = sock.recv(65536)
                if not piece:
                    break
                chunks.append(piece)
            return b"".join(chunks)
    from websockets.sync.client import connect

    with connect(url, subprotocols=["streamproto.v1"], open_timeout=5) as ws:
        ws.send(data)
        message = ws.recv(timeout=5)
        assert isinstance(message, bytes)
        return message


def test_buffered_chunks_survive_a_reconnect(same: tuple[str, str, str]) -> None:
    """Chunks still buffered when the socket dies are handed out after the resume; the credit
    they carried died with the old connection, so taking them must not count against the
    new one (it once did, and the consumer failed with INVALID_ARGUMENT)."""
    with pair(*same, reconnect=Backoff(initial=0.02, attempts=20), **_slow_client_config()) as (
        server,
        client,
    ):
        server.start("test:streams", "r1")
        server.write("r1", *[b"%03d" % i for i in range(100)])
        server.close_stream("r1")
        sub = client.raw_subscribe("test:streams", "r1")
        time.sleep(0.3)  # the window (16 chunks) fills the client's buffer; nobody reads
        client.abort_transport()
        deadline = time.monotonic() + 10
        while client.statistics()["resumed"] < 1 and time.monotonic() < deadline:
            time.sleep(0.02)  # take the old chunks only once the new subscription runs
        time.sleep(0.2)
        items, error = client.collect(sub)
        assert error is None
        assert items == [b"%03d" % i for i in range(100)]
