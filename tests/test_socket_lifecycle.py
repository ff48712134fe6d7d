"""Every socket an adapter opens is closed on every path: a connect that gets no handshake, a
client closed with output its server does not read, a shutdown that races a connection being
accepted, a shutdown facing a peer that never reads.

A socket left open is found by the peer (it never sees the connection end), by the server's
statistics (a connection still listed once ``shutdown`` returned) and, at the end of every case,
by the garbage collector (``no_unclosed_sockets`` in ``conftest.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import mini_backend
import pytest
import trio
from harness import BACKENDS, ServerProxy

from streamproto import ErrorCode
from streamproto._frames import (
    Accept,
    FrameDecoder,
    Goaway,
    Hello,
    Subscribe,
    Upload,
    Welcome,
    encode,
)
from transports import Backoff, sync
from transports import asyncio as aio
from transports import trio as trio_backend
from transports.testing import Adapter

WAIT = 10.0  # the bound on every wait

pytestmark = pytest.mark.usefixtures("no_unclosed_sockets")


def _ends(sock: socket.socket, timeout: float = WAIT) -> bytes:
    """Read ``sock`` until its peer closes it; everything read. Fails if it stays open."""
    sock.settimeout(0.05)
    data = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            piece = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return data
        if not piece:
            return data
        data += piece
    pytest.fail(f"the peer kept the connection open for {timeout} s")


@contextlib.contextmanager
def _silent_listener() -> Iterator[tuple[str, list[socket.socket]]]:
    """A TCP listener that accepts and never answers; yields its URL and what it accepted."""
    accepted: list[socket.socket] = []
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(0.05)
        stop = threading.Event()

        def accept() -> None:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    accepted.append(listener.accept()[0])

        thread = threading.Thread(target=accept, name="silent-listener", daemon=True)
        thread.start()
        try:
            yield f"tcp://127.0.0.1:{listener.getsockname()[1]}", accepted
        finally:
            stop.set()
            thread.join(WAIT)
            for sock in accepted:
                sock.close()


def _wait_until(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not predicate():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.01)


def _connections(server: ServerProxy) -> tuple[Any, ...]:
    """The connections the server still lists."""
    connections: tuple[Any, ...] = server.thread.call(server.server.statistics).connections
    return connections


def _connect_without_handshake(backend: str, url: str) -> None:
    """``connect`` with a short handshake timeout, in a loop (or thread) of its own."""
    if backend == "asyncio":
        asyncio.run(aio.connect(url, timeout=0.2))
    elif backend == "trio":

        async def attempt() -> None:
            async with trio_backend.connect(url, timeout=0.2):
                pass

        trio.run(attempt)
    else:
        sync.connect(url, timeout=0.2)


@pytest.mark.parametrize("backend", BACKENDS)
def test_connect_without_a_handshake_closes_its_socket(backend: str) -> None:
    """No WELCOME within ``timeout``: ``connect`` raises TimeoutError and closes the socket it
    opened (the peer sees the end)."""
    with _silent_listener() as (url, accepted):
        with pytest.raises(TimeoutError):
            _connect_without_handshake(backend, url)
        _wait_until(lambda: len(accepted) >= 1, "the listener accepted the connection")
        _ends(accepted[0])


CHUNK = b"u" * 65536
CHUNKS = 256  # 16 MiB: more than the socket buffers hold


class _Stop(Exception):
    """Leaves an upload block without waiting for the upload to settle."""


def _frames_until(sock: socket.socket, decoder: FrameDecoder, kind: type) -> Any:
    """Read ``sock`` until a frame of ``kind`` arrives; that frame."""
    while True:
        data = sock.recv(65536)
        assert data, f"closed before a {kind.__name__}"
        for frame in decoder.feed(data):
            if isinstance(frame, kind):
                return frame


def _deaf_server(listener: socket.socket, accepted: list[socket.socket]) -> None:
    """Welcome one client, accept its upload with 32 MiB of credit, then read nothing more."""
    listener.settimeout(WAIT)
    sock = listener.accept()[0]
    accepted.append(sock)
    sock.settimeout(WAIT)
    decoder = FrameDecoder(max_frame_size=1 << 24)
    _frames_until(sock, decoder, Hello)
    sock.sendall(encode(Welcome(session_id="s1", resume_token="t1")))
    upload = _frames_until(sock, decoder, Upload)
    sock.sendall(encode(Accept(upload.handle, "u", credit_chunks=1 << 20, credit_bytes=32 << 20)))


async def _upload_and_close(client: Any) -> None:
    """Write 16 MiB of upload with an asyncio or trio client, close it inside the block."""
    with contextlib.suppress(_Stop):
        async with client.upload("test:upload", "u") as up:
            for _ in range(CHUNKS):
                await up.write(CHUNK)
            await client.close()
            raise _Stop


def _upload_then_close(backend: str, url: str) -> None:
    """Connect, write 16 MiB of upload, close the client inside the upload block."""
    no_retry = Backoff(attempts=0)
    if backend == "asyncio":

        async def asyncio_run() -> None:
            await _upload_and_close(await aio.connect(url, timeout=WAIT, reconnect=no_retry))

        asyncio.run(asyncio_run())
    elif backend == "trio":

        async def trio_run() -> None:
            async with trio_backend.connect(url, timeout=WAIT, reconnect=no_retry) as client:
                await _upload_and_close(client)

        trio.run(trio_run)
    else:
        client = sync.connect(url, timeout=WAIT, reconnect=no_retry)
        with contextlib.suppress(_Stop), client.upload("test:upload", "u") as up:
            for _ in range(CHUNKS):
                up.write(CHUNK)
            client.close()
            raise _Stop


@pytest.mark.parametrize("backend", BACKENDS)
def test_client_close_closes_a_socket_its_server_does_not_read(backend: str) -> None:
    """A client closed with megabytes of upload its server does not read: ``close`` gives the
    goodbye its linger, then closes the socket (the peer sees the end) before it returns."""
    accepted: list[socket.socket] = []
    with socket.create_server(("127.0.0.1", 0)) as listener:
        server = threading.Thread(target=_deaf_server, args=(listener, accepted), daemon=True)
        server.start()
        try:
            _upload_then_close(backend, f"tcp://127.0.0.1:{listener.getsockname()[1]}")
            server.join(WAIT)
            assert len(accepted) == 1
            _ends(accepted[0])
        finally:
            server.join(WAIT)
            for sock in accepted:
                sock.close()


def test_asyncio_close_cancelled_in_its_linger_aborts_the_socket(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same, with the task that closes the client cancelled while the goodbye lingers:
    the socket is aborted at once, not left open."""
    monkeypatch.setattr(aio, "_LINGER", 60.0)  # the linger cannot end it first
    accepted: list[socket.socket] = []

    async def run(url: str) -> None:
        client = await aio.connect(url, timeout=WAIT, reconnect=Backoff(attempts=0))
        with contextlib.suppress(_Stop):
            async with client.upload("test:upload", "u") as up:
                for _ in range(CHUNKS):
                    await up.write(CHUNK)
                closing = asyncio.ensure_future(client.close())
                await asyncio.sleep(0)  # its first step runs first: close() waits in its linger
                assert not closing.done()
                closing.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await closing
                raise _Stop

    with socket.create_server(("127.0.0.1", 0)) as listener:
        server = threading.Thread(target=_deaf_server, args=(listener, accepted), daemon=True)
        server.start()
        try:
            asyncio.run(run(f"tcp://127.0.0.1:{listener.getsockname()[1]}"))
            server.join(WAIT)
            _ends(accepted[0])
        finally:
            server.join(WAIT)
            for sock in accepted:
                sock.close()


def _mini() -> Adapter:
    return Adapter("asyncio", serve=mini_backend.serve, connect=mini_backend.connect)


@pytest.mark.parametrize("backend", ["asyncio", "mini"])
def test_shutdown_closes_a_connection_accepted_as_it_begins(backend: str) -> None:
    """asyncio accepts a socket in one loop turn and makes its transport in a task's first
    step, a turn later. A shutdown that starts between the two used to close the listener
    under that step (CPython gh-109564): the socket was never closed, until the garbage
    collector warned about it in some later test. Now the connection is told GOAWAY and
    closed, by our asyncio backend and by the one on asyncio streams in tests/."""
    server = ServerProxy(_mini() if backend == "mini" else backend, "tcp")
    try:
        loop = server.thread.loop  # type: ignore[attr-defined]
        listening = server.server._listener if backend == "mini" else server.server._server
        listener = listening.sockets[0]
        gate = threading.Event()
        loop.call_soon_threadsafe(gate.wait, WAIT)  # the loop stands still from here
        with socket.create_connection(("127.0.0.1", server.server.port), timeout=WAIT) as peer:
            # The connection is in the listener's queue: the loop accepts it in its next turn,
            # the turn that also starts the shutdown, whose first step comes before the
            # transport's.
            assert select.select([listener], [], [], WAIT)[0]
            done = asyncio.run_coroutine_threadsafe(server.server.shutdown(0.5), loop)
            gate.set()
            done.result(WAIT)
            peer.sendall(encode(Hello()))
            frames = FrameDecoder().feed(_ends(peer))
        assert [type(f) for f in frames] == [Goaway]
        assert frames[0].code in (ErrorCode.NO_ERROR, ErrorCode.SERVER_SHUTDOWN)
        _wait_until(lambda: _connections(server) == (), "every connection closed")
    finally:
        server.thread.stop()


@pytest.mark.parametrize("backend", BACKENDS)
def test_shutdown_closes_a_peer_that_never_reads(backend: str) -> None:
    """A subscriber that stops reading with megabytes on their way: ``shutdown`` closes its
    socket all the same (the goodbye could not be delivered, so it was dropped)."""
    server = ServerProxy(backend, "tcp")
    try:
        server.start("test:streams", "big")
        server.write("big", *[b"x" * 65536] * 256)  # 16 MiB: more than the socket buffers
        with socket.socket() as peer:
            peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            peer.settimeout(WAIT)
            peer.connect(("127.0.0.1", server.server.port))
            peer.sendall(encode(Hello()))
            decoder = FrameDecoder(max_frame_size=1 << 24)
            while not any(isinstance(f, Welcome) for f in decoder.feed(peer.recv(65536))):
                pass
            credit = {"credit_chunks": 1 << 20, "credit_bytes": (1 << 31) - 1}
            peer.sendall(encode(Subscribe(1, "test:streams", "big", **credit)))
            _wait_until(lambda: server.queued_bytes() > 0, "the server holds output back")
            server.shutdown(0.1)
            # Closed by now on asyncio and thread servers; a trio server's cancelled tasks close
            # theirs as they unwind. Reading would let the goodbye out: not before they are.
            _wait_until(lambda: _connections(server) == (), "every connection closed")
            _ends(peer)
    finally:
        server.thread.stop()
