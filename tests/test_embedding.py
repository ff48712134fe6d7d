"""Embedding: one hub behind several listeners, shut down as one (``Hub.shutdown`` through
``transports.embedding.shutdown_hub``), its connections listed and closed one by one."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import pytest
import trio
from test_asgi import Running
from test_docs_snippets import blocks

from streamproto import ErrorCode, HttpOptions, LocalProtocolError
from transports import Backoff, StreamError, new_hub, sync
from transports import asyncio as aio
from transports import trio as tri
from transports.asgi import StreamApp
from transports.embedding import shutdown_hub, shutdown_hub_blocking

CH = "demo:tokens"
NO_RETRY = Backoff(attempts=0)
DEADLINE = 20.0  # generous: a loaded 2-core machine


@pytest.fixture
def socket_path() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="sp-")
    try:
        yield os.path.join(path, "hub.sock")
    finally:
        shutil.rmtree(path, ignore_errors=True)


async def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {DEADLINE} s for {what}")
        await asyncio.sleep(0.01)


def test_one_hub_two_listeners_shut_down_as_one(socket_path: str) -> None:
    async def main() -> None:
        hub = new_hub()
        tcp = await aio.serve(hub, "tcp://127.0.0.1:0")
        unix = await aio.serve(hub, f"unix://{socket_path}")
        tcp.channel(CH)
        producer = tcp.producer(CH, "s1")
        watcher = await aio.connect(tcp.address, reconnect=NO_RETRY)
        idle = await aio.connect(unix.address, reconnect=NO_RETRY)
        sub = watcher.subscribe(CH, "s1")
        await sub.accepted()
        # The registry lists both, whichever listener attached them, with the ids the
        # servers' statistics and logs use.
        ids = {c.id for s in (tcp, unix) for c in s.statistics().connections}
        assert {p.id for p in hub.peers()} == ids
        assert hub.peer_count == 2

        loop = asyncio.get_running_loop()
        stopping = asyncio.ensure_future(
            shutdown_hub(hub, DEADLINE, sleep=asyncio.sleep, clock=loop.time)
        )
        # The idle connection has nothing to drain: it ends; the watcher's stream goes on.
        await _until(lambda: hub.peer_count == 1, "the idle connection to end")
        assert not stopping.done()
        await producer.write(b"after the goaway")
        producer.close()
        assert [chunk async for chunk in sub] == [b"after the goaway"]
        assert await stopping == 0  # everyone drained in time
        assert hub.peers() == ()
        # New connections are refused while the hub is shutting down (on either listener).
        with pytest.raises(StreamError) as refused:
            await aio.connect(unix.address, reconnect=NO_RETRY)
        assert refused.value.code == ErrorCode.SERVER_SHUTDOWN
        for client in (watcher, idle):
            await client.close()
        for server in (tcp, unix):
            await server.shutdown(1.0)

    asyncio.run(main())


def test_connections_that_do_not_drain_in_time_are_closed() -> None:
    async def main() -> None:
        hub = new_hub()
        server = await aio.serve(hub, "tcp://127.0.0.1:0")
        server.channel(CH)
        server.producer(CH, "forever")
        client = await aio.connect(server.address, reconnect=NO_RETRY)
        sub = client.subscribe(CH, "forever")
        await sub.accepted()
        loop = asyncio.get_running_loop()
        started = loop.time()
        forced = await shutdown_hub(hub, 0.2, sleep=asyncio.sleep, clock=loop.time)
        assert forced == 1
        assert loop.time() - started >= 0.2
        with pytest.raises(StreamError) as ended:
            async for _ in sub:
                pass
        assert ended.value.code == ErrorCode.SERVER_SHUTDOWN
        await _until(lambda: hub.peer_count == 0, "the forced connection to end")
        await client.close()
        await server.shutdown(1.0)

    asyncio.run(main())


def test_one_connection_is_found_by_id_and_closed() -> None:
    async def main() -> None:
        hub = new_hub()
        server = await aio.serve(hub, "tcp://127.0.0.1:0")
        first = await aio.connect(server.address, reconnect=NO_RETRY)
        second = await aio.connect(server.address, reconnect=NO_RETRY)
        await _until(lambda: hub.peer_count == 2, "two connections")
        target = hub.peers()[0]
        peer = hub.peer(target.id)
        assert peer is target
        peer.close(ErrorCode.EXCESSIVE_LOAD, "you, out")
        await _until(lambda: hub.peer(target.id) is None, "the connection to close")
        assert hub.peer_count == 1
        assert [c.id for c in server.statistics().connections] == [hub.peers()[0].id]
        for client in (first, second):
            await client.close()
        await server.shutdown(1.0)

    asyncio.run(main())


def test_shutdown_hub_runs_under_trio_and_checks_its_timeout(socket_path: str) -> None:
    async def main() -> None:
        hub = new_hub()
        async with (
            tri.serve(hub, f"unix://{socket_path}") as server,
            tri.connect(server.address, reconnect=NO_RETRY),
        ):
            with trio.fail_after(DEADLINE):
                while hub.peer_count < 1:
                    await trio.sleep(0.01)
            forced = await shutdown_hub(hub, DEADLINE, sleep=trio.sleep, clock=trio.current_time)
            assert forced == 0
            assert hub.peers() == ()

    trio.run(main)

    async def bad(timeout: float) -> None:
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep
        await shutdown_hub(new_hub(), timeout, sleep=sleep, clock=time.monotonic)

    for timeout in (-1.0, float("nan"), float("inf")):
        with pytest.raises(LocalProtocolError, match="timeout must be"):
            asyncio.run(bad(timeout))


def _until_blocking(
    condition: Callable[[], bool], what: str, lock: AbstractContextManager[object]
) -> None:
    deadline = time.monotonic() + DEADLINE
    while True:
        with lock:  # the hub is called under its server's lock only
            if condition():
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {DEADLINE} s for {what}")
        time.sleep(0.01)


def test_shutdown_hub_blocking_drains_a_thread_backend_embedding() -> None:
    hub = new_hub()
    with sync.serve(hub, "tcp://127.0.0.1:0") as server:
        server.channel(CH)
        producer = server.producer(CH, "s1")
        watcher = sync.connect(server.address, reconnect=NO_RETRY)
        idle = sync.connect(server.address, reconnect=NO_RETRY)
        sub = watcher.subscribe(CH, "s1")
        sub.accepted(DEADLINE)
        with server.lock:
            assert hub.peer_count == 2
        result: list[int] = []
        stopping = threading.Thread(
            target=lambda: result.append(shutdown_hub_blocking(hub, DEADLINE, lock=server.lock))
        )
        stopping.start()
        # The idle connection ends at once; the watcher's stream drains, so the call waits.
        _until_blocking(lambda: hub.peer_count == 1, "the idle connection to end", server.lock)
        assert stopping.is_alive()
        producer.write(b"after the goaway")
        producer.close()
        assert list(sub) == [b"after the goaway"]
        stopping.join(DEADLINE)
        assert result == [0]  # drained in time
        assert hub.peers() == ()
        with pytest.raises(StreamError) as refused:
            sync.connect(server.address, reconnect=NO_RETRY)
        assert refused.value.code == ErrorCode.SERVER_SHUTDOWN
        for client in (watcher, idle):
            client.close()


def test_shutdown_hub_blocking_closes_what_does_not_drain() -> None:
    hub = new_hub()
    with sync.serve(hub, "tcp://127.0.0.1:0") as server:
        server.channel(CH)
        server.producer(CH, "forever")
        client = sync.connect(server.address, reconnect=NO_RETRY)
        sub = client.subscribe(CH, "forever")
        sub.accepted(DEADLINE)
        started = time.monotonic()
        assert shutdown_hub_blocking(hub, 0.2, lock=server.lock) == 1
        assert time.monotonic() - started >= 0.2
        with pytest.raises(StreamError) as ended:
            list(sub)
        assert ended.value.code == ErrorCode.SERVER_SHUTDOWN
        _until_blocking(lambda: hub.peer_count == 0, "the forced connection to end", server.lock)
        client.close()
        with pytest.raises(LocalProtocolError, match="timeout must be"):
            shutdown_hub_blocking(hub, -1.0, lock=server.lock)


GET = b"GET /demo:tokens/%s HTTP/1.1\r\nHost: x\r\n\r\n"


async def _sse(port: int, stream_id: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """An SSE request on a raw connection, its response head read."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(GET % stream_id.encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), DEADLINE)
    assert b" 200 " in head.split(b"\r\n")[0]
    return reader, writer


async def _rest(reader: asyncio.StreamReader) -> bytes:
    """Everything until the server closes the connection."""
    return await asyncio.wait_for(reader.read(), DEADLINE)


def test_a_hub_shutdown_ends_the_sse_responses_of_an_asyncio_server() -> None:
    async def main() -> None:
        hub = new_hub()
        # An idle keep-alive connection is not closed for a minute: only the shutdown does it.
        options = HttpOptions(header_timeout=3 * DEADLINE)
        server = await aio.serve(hub, "http://127.0.0.1:0", http=options)
        server.channel(CH)
        producer = server.producer(CH, "drains")
        server.producer(CH, "forever")
        port = server.port
        drains, drains_w = await _sse(port, "drains")
        cut, cut_w = await _sse(port, "forever")
        await _until(lambda: hub.peer_count == 2, "both exchanges attached")
        loop = asyncio.get_running_loop()
        stopping = asyncio.ensure_future(
            shutdown_hub(hub, 1.0, sleep=asyncio.sleep, clock=loop.time)
        )
        await producer.write(b"last")
        producer.close()
        # The draining response runs to its end, then the HTTP connection closes (no
        # keep-alive after a shutdown, R-HTTP-53); the one that never ends is cut at the timeout.
        drained = await _rest(drains)
        assert b"data: last" in drained
        assert b"event: end" in drained
        assert await stopping == 1
        rest = await _rest(cut)
        assert b"event: end" not in rest  # cut, so an EventSource reconnects elsewhere
        assert hub.peer_count == 0
        # A request after the shutdown: 503, and the connection closes.
        late, late_w = await asyncio.open_connection("127.0.0.1", port)
        late_w.write(GET % b"drains")
        answer = await _rest(late)
        assert b" 503 " in answer.split(b"\r\n")[0]
        for w in (drains_w, cut_w, late_w):
            w.close()
        await server.shutdown(1.0)

    asyncio.run(main())


def test_a_hub_shutdown_drains_an_sse_response_of_a_thread_backend_server() -> None:
    hub = new_hub()
    options = HttpOptions(header_timeout=3 * DEADLINE)  # idle keep-alive is not closed early
    with sync.serve(hub, "http://127.0.0.1:0", http=options) as server:
        server.channel(CH)
        producer = server.producer(CH, "drains")
        with socket.create_connection(("127.0.0.1", server.port), timeout=DEADLINE) as sock:
            sock.sendall(GET % b"drains")
            assert b" 200 " in sock.recv(65536)
            _until_blocking(lambda: hub.peer_count == 1, "the exchange", server.lock)
            result: list[int] = []
            stopping = threading.Thread(
                target=lambda: result.append(shutdown_hub_blocking(hub, DEADLINE, lock=server.lock))
            )
            stopping.start()
            producer.write(b"last")
            producer.close()
            rest = b""
            while part := sock.recv(65536):  # until the server closes the connection
                rest += part
        stopping.join(DEADLINE)
        assert b"data: last" in rest
        assert b"event: end" in rest
        assert result == [0]


def test_a_hub_shutdown_ends_the_sse_responses_of_the_asgi_app() -> None:
    app = StreamApp()
    app.channel(CH)
    running = Running("uvicorn", app)
    try:

        async def start() -> Any:
            return app.hub.channel(CH).start("forever")

        running.call(start)
        with socket.create_connection(("127.0.0.1", running.port), timeout=DEADLINE) as sock:
            sock.sendall(GET % b"forever")
            assert b" 200 " in sock.recv(65536)

            async def count() -> int:
                return app.hub.peer_count  # read on the app's loop

            _until_blocking(lambda: running.call(count) == 1, "the exchange", nullcontext())

            async def stop() -> int:
                loop = asyncio.get_running_loop()
                return await shutdown_hub(app.hub, 0.2, sleep=asyncio.sleep, clock=loop.time)

            assert running.call(stop) == 1
            rest = b""
            while not rest.endswith(b"0\r\n\r\n"):  # the chunked body's end
                part = sock.recv(65536)
                assert part, "the connection closed before the response ended"
                rest += part
        assert b"event: end" not in rest
        assert running.call(count) == 0
    finally:
        running.close()


def test_the_embedding_page_runs() -> None:
    found = blocks("embedding.md")
    assert len(found) == 1
    exec(compile(found[0], "docs/embedding.md block 0", "exec"), {"__name__": "embedding_doc"})
