"""The asyncio backend bounds what it hands its transports when the peer does not read.

- A client uploading to a server that stops reading leaves what the transport cannot take in
  the core (whose queue limits make the writer wait), not in the transport's buffer, and
  writes on once the server reads again: the buffer stays near the high-water mark plus one
  ``FLUSH_SLICE``.
- A server connection that ends (GOAWAY) while its peer reads nothing is aborted once its
  output has been stalled for ``output_stall_timeout``, instead of waiting for a drain that
  never comes until the server shuts down.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import test_adapter_faults as faults
from test_adapter_faults import WAIT, thread_census  # noqa: F401 - an autouse fixture

from streamproto import Config, ErrorCode
from streamproto._frames import (
    Accept,
    Data,
    End,
    FrameDecoder,
    Hello,
    Ping,
    Upload,
    Welcome,
    encode,
)
from transports import Backoff
from transports import asyncio as aio
from transports._common import FLUSH_SLICE

pytestmark = pytest.mark.usefixtures("no_unclosed_sockets")

CHUNK = 64 << 10
CHUNKS = 256  # 16 MiB: far more than the socket buffers and the client's core hold
#: The client's core holds this much before its writer waits (``max_connection_queued_bytes``).
CORE_LIMIT = 2 << 20


def _chunk(i: int) -> bytes:
    return i.to_bytes(4, "big") * (CHUNK // 4)


class _DeafThenReading:
    """A raw server in a thread: welcomes one client, accepts its upload with more credit than
    the upload needs, then reads nothing until ``release`` is set; then it reads to the end
    and keeps every frame."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"tcp://127.0.0.1:{self.listener.getsockname()[1]}"
        self.release = threading.Event()
        self.frames: list[Any] = []
        self.error: BaseException | None = None
        self.sock: socket.socket | None = None
        self.thread = threading.Thread(target=self._run, name="deaf-server", daemon=True)
        self.thread.start()

    def _until(self, decoder: FrameDecoder, kind: type) -> Any:
        assert self.sock is not None
        while True:
            data = self.sock.recv(65536)
            assert data, f"closed before a {kind.__name__}"
            for frame in decoder.feed(data):
                self.frames.append(frame)
                if isinstance(frame, kind):
                    return frame

    def _run(self) -> None:
        try:
            self.listener.settimeout(WAIT)
            sock = self.sock = self.listener.accept()[0]
            sock.settimeout(WAIT)
            decoder = FrameDecoder(max_frame_size=1 << 24)
            self._until(decoder, Hello)
            sock.sendall(encode(Welcome(session_id="s1", resume_token="t1")))
            upload = self._until(decoder, Upload)
            credit = {"credit_chunks": 1 << 20, "credit_bytes": 64 << 20}
            sock.sendall(encode(Accept(upload.handle, "u", **credit)))
            if not self.release.wait(3 * WAIT):
                return
            while data := sock.recv(1 << 20):  # to the end: the client closes after the upload
                self.frames += decoder.feed(data)
        except BaseException as exc:
            self.error = exc

    def close(self) -> None:
        self.release.set()
        self.thread.join(3 * WAIT)
        if self.sock is not None:
            self.sock.close()
        self.listener.close()


@contextlib.contextmanager
def _deaf_then_reading() -> Iterator[_DeafThenReading]:
    server = _DeafThenReading()
    try:
        yield server
    finally:
        server.close()


async def _poll(predicate: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not predicate():
        assert time.monotonic() < deadline, f"never: {what}"
        await asyncio.sleep(0.01)


def test_client_upload_to_a_server_that_stops_reading_is_bounded() -> None:
    """16 MiB of upload with 64 MiB of credit to a server that reads nothing: the client's
    transport buffer never holds more than its high-water mark, one slice and one chunk; the
    rest waits in the core until it is full (the writer then waits). Once the server reads
    again the upload goes out whole, in order, and ends."""
    peak = 0
    limits: tuple[int, int] = (0, 0)
    stalled_at = CHUNKS

    async def run(server: _DeafThenReading) -> None:
        nonlocal peak, limits, stalled_at
        config = Config(max_connection_queued_bytes=CORE_LIMIT)
        client = await aio.connect(
            server.url, config=config, timeout=WAIT, reconnect=Backoff(attempts=0)
        )
        proto = client._proto
        assert proto is not None
        assert proto.transport is not None
        transport = proto.transport
        limits = transport.get_write_buffer_limits()
        write = transport.write

        def measured(data: Any) -> None:
            nonlocal peak
            write(data)
            peak = max(peak, transport.get_write_buffer_size())

        transport.write = measured  # type: ignore[method-assign]
        written = 0

        async def upload() -> None:
            nonlocal written
            async with client.upload("test:upload", "u") as up:
                for i in range(CHUNKS):
                    await up.write(_chunk(i))
                    written += 1

        task = asyncio.ensure_future(upload())
        conn = client.core.conn
        assert conn is not None

        def core_full() -> bool:
            return conn.statistics().queued_bytes + CHUNK > CORE_LIMIT

        # The old client never filled its core: it handed everything to the transport, and
        # the writer finished with the server still deaf.
        await _poll(lambda: task.done() or core_full(), "the writer waits")
        stalled_at = written
        server.release.set()
        await asyncio.wait_for(task, 3 * WAIT)
        await client.close()

    with _deaf_then_reading() as server:
        asyncio.run(run(server))
        server.thread.join(3 * WAIT)
        assert server.error is None
        frames = server.frames
    high = limits[1]
    assert high > 0
    assert peak <= high + FLUSH_SLICE + 2 * CHUNK, (peak, high)
    assert stalled_at < CHUNKS
    data = [f for f in frames if isinstance(f, Data)]
    received = b"".join(c for f in data for c in f.chunks)
    assert received == b"".join(_chunk(i) for i in range(CHUNKS))
    ends = [f for f in frames if isinstance(f, End)]
    assert [e.last_seq for e in ends] == [CHUNKS]


STALL = 2.0  # output_stall_timeout of the server below


@pytest.mark.parametrize("transport", ["tcp", "ws"])
def test_server_connection_ended_while_its_peer_does_not_read_is_aborted(transport: str) -> None:
    """A peer floods PINGs and reads nothing: the server's transport stops taking output, the
    PONGs pile up in the core, and the connection ends with GOAWAY EXCESSIVE_LOAD (R-LIM-4)
    while the transport is still paused. ``close()`` alone would wait for a drain that never
    comes (the socket stayed open until the server shut down); the server aborts it once the
    output has been stalled for ``output_stall_timeout`` (R-LIM-20), with the peer still not
    reading, and serves the next client."""
    config = Config(max_queued_control_frames=1000, output_stall_timeout=STALL, keepalive=0)
    with faults.counted("flood"), faults.rig("asyncio", transport, config=config) as r:
        with faults.raw(r.url) as peer:
            peer.hello()
            pings = encode(Ping(9)) * 100
            burst = (faults._ws_frame(pings, 0x2) if peer.ws else pings) * 40
            peer.sock.settimeout(0.2)
            deadline = time.monotonic() + 3 * WAIT
            while time.monotonic() < deadline and not faults.server_closed_all(r):
                with contextlib.suppress(TimeoutError):
                    peer.sock.sendall(burst)
            assert faults.server_closed_all(r), "the flood never ended the connection"

            def state() -> list[tuple[bool, bool, int]]:
                return [
                    (p.paused, p.driver.stalled, p.driver.close_code)
                    for p in r.server.server.protocols
                ]

            states = r.server.thread.call(state)
            # Ended by the flood, before its output stalled for long: the path under test.
            assert states == [(True, False, ErrorCode.EXCESSIVE_LOAD)], states
            faults.wait_for(lambda: not r.server._drivers(), "the socket is closed", STALL + WAIT)
            # The peer sees the end (a reset: the goodbye was dropped with the rest).
            peer.sock.settimeout(WAIT)
            with contextlib.suppress(ConnectionResetError):
                while peer.sock.recv(1 << 20):
                    pass
        faults.serves_next_client(r, "stalledgoodbye")


class _HeldTransport(asyncio.Transport):
    """A transport whose peer reads nothing: it keeps ``held`` bytes however long it waits,
    so ``close()`` never ends on its own; ``abort()`` ends it."""

    def __init__(self, held: int) -> None:
        super().__init__()
        self.held = held
        self.closing = False
        self.aborted: float | None = None
        self.protocol: asyncio.Protocol | None = None

    def write(self, data: Any) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return self.held

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True
        if not self.held and self.protocol is not None:
            self.protocol.connection_lost(None)
            self.protocol = None

    def abort(self) -> None:
        self.aborted = time.monotonic()
        self.closing = True
        if self.protocol is not None:
            self.protocol.connection_lost(None)
            self.protocol = None


@pytest.mark.parametrize("held", [0, 1000])
def test_server_connection_that_ends_with_output_held_is_aborted(held: int) -> None:
    """A connection told GOAWAY while its transport is below the high-water mark but still
    holds output its peer does not read: ``close()`` would wait for it forever, so the
    connection is aborted ``output_stall_timeout`` later. One whose output is all out just
    closes."""
    stall = 0.2

    async def run() -> tuple[float | None, float, int]:
        config = Config(output_stall_timeout=stall)
        server = await aio.serve(None, "tcp://127.0.0.1:0", config=config)
        try:
            transport = _HeldTransport(held)
            proto = aio._ServerProtocol(server)
            transport.protocol = proto
            proto.connection_made(transport)
            assert server.protocols == {proto}
            started = time.monotonic()
            assert proto.driver is not None
            proto.driver.shutdown(ErrorCode.SERVER_SHUTDOWN)
            proto.flush()
            assert transport.closing
            await _poll(lambda: not server.protocols, "the connection is gone")
            return transport.aborted, started, len(server.protocols)
        finally:
            await server.shutdown(0.1)

    aborted, started, left = asyncio.run(run())
    assert left == 0
    if held:
        assert aborted is not None
        assert aborted - started >= stall * 0.9
    else:
        assert aborted is None  # closed, not aborted: nothing was left to drop
