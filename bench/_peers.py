"""The peers of the ``e2e`` workload: the same three measurements with other stacks.

``raw``
    The floor for any asyncio transport written in Python: a 4-byte length prefix over an
    asyncio Protocol. The server frames each chunk (one ``pack`` and one concatenation) and
    writes them in batches of :data:`RAW_BATCH` (one ``transport.write`` per batch, pausing
    while asyncio says the socket buffer is full); the client's Protocol parses the prefixes
    and slices out every chunk.
``websockets``
    The ``websockets`` library's asyncio implementation (``websockets.asyncio``), one binary
    message per chunk, per-message compression off (streamproto's WebSocket framing does not
    compress either).
``grpc``
    grpcio's asyncio API (``grpc.aio``), a unary-stream method registered with a generic
    handler and bytes in and out (no protobuf, no codegen): one message per chunk.

A request is one message: ``b"S" + count (u32) + size (u32)`` asks for ``count`` chunks of
``size`` bytes; ``b"E" + payload`` asks for ``payload`` back. Clients count the chunks they
expect (the peers have no end-of-stream frame of the same cost as ours; for grpc the call's
end is awaited too).
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
from collections.abc import AsyncIterator
from typing import Any

__all__ = ["PEERS", "REQUEST", "Plan", "SessionResult", "peer_available", "serve_peer", "session"]

#: count (u32) and size (u32) of a stream request.
REQUEST = struct.Struct(">II")
_LENGTH = struct.Struct(">I")
#: Chunks per ``transport.write`` on the raw server.
RAW_BATCH = 256
#: The grpc service and its methods.
GRPC_SERVICE = "bench.Bench"

#: Peer name -> the transport it runs on (the label of its column).
PEERS = {"raw": "tcp", "websockets": "ws", "grpc": "h2"}


def peer_available(name: str) -> str | None:
    """None if peer ``name`` can run here, else why not."""
    try:
        if name == "websockets":
            import websockets.asyncio.client  # noqa: F401, PLC0415
        elif name == "grpc":
            import grpc.aio  # noqa: F401, PLC0415
    except ImportError as exc:
        return f"not installed ({exc})"
    return None


Plan = tuple[int, int, int, int, int]
"""``(small_count, small_size, large_count, large_size, round_trips)`` of one client session."""

SessionResult = dict[str, Any]
"""``small_s``, ``large_s`` (seconds from request to the last chunk) and ``rtt_s`` (list)."""


def _stream_request(count: int, size: int) -> bytes:
    return b"S" + REQUEST.pack(count, size)


# -- raw ----------------------------------------------------------------------------------------


class _RawServer(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.writable = asyncio.Event()
        self.writable.set()
        self.tasks: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.writable.set()
        for task in self.tasks:
            task.cancel()

    def data_received(self, data: bytes) -> None:
        buf = self.buffer + data if self.buffer else data
        off = 0
        while len(buf) - off >= 4:
            (size,) = _LENGTH.unpack_from(buf, off)
            if len(buf) - off - 4 < size:
                break
            body = buf[off + 4 : off + 4 + size]
            off += 4 + size
            if body[:1] == b"E":
                payload = body[1:]
                assert self.transport is not None
                self.transport.write(_LENGTH.pack(len(payload)) + payload)
            else:
                count, chunk_size = REQUEST.unpack_from(body, 1)
                task = asyncio.ensure_future(self._stream(count, chunk_size))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)
        self.buffer = buf[off:]

    async def _stream(self, count: int, size: int) -> None:
        transport = self.transport
        assert transport is not None
        chunk = b"x" * size
        pack = _LENGTH.pack
        join = b"".join
        sent = 0
        while sent < count:
            n = min(RAW_BATCH, count - sent)
            transport.write(join([pack(len(chunk)) + chunk for _ in range(n)]))
            sent += n
            if not self.writable.is_set():
                await self.writable.wait()
                if transport.is_closing():
                    return


class _RawClient(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.expected = 0
        self.received = 0
        self.last = b""
        self.done: asyncio.Future[None] | None = None
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_exception(ConnectionError("the raw server closed the connection"))

    def expect(self, count: int) -> asyncio.Future[None]:
        self.expected = count
        self.received = 0
        self.done = asyncio.get_running_loop().create_future()
        return self.done

    def data_received(self, data: bytes) -> None:
        buf = self.buffer + data if self.buffer else data
        unpack_from = _LENGTH.unpack_from
        off = 0
        end = len(buf)
        received = self.received
        chunk = b""
        while end - off >= 4:
            (size,) = unpack_from(buf, off)
            if end - off - 4 < size:
                break
            chunk = buf[off + 4 : off + 4 + size]
            off += 4 + size
            received += 1
        self.last = chunk or self.last
        self.buffer = buf[off:]
        self.received = received
        if received >= self.expected and self.done is not None and not self.done.done():
            self.done.set_result(None)


async def _raw_session(port: int, plan: Plan) -> SessionResult:
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_connection(_RawClient, "127.0.0.1", port)
    try:

        async def stream(count: int, size: int) -> float:
            started = time.perf_counter()
            done = proto.expect(count)
            body = _stream_request(count, size)
            transport.write(_LENGTH.pack(len(body)) + body)
            await done
            return time.perf_counter() - started

        small_count, small_size, large_count, large_size, round_trips = plan
        result: SessionResult = {
            "small_s": await stream(small_count, small_size),
            "large_s": await stream(large_count, large_size),
        }
        payload = b"E" + b"x" * small_size
        message = _LENGTH.pack(len(payload)) + payload
        rtts = []
        for _ in range(round_trips):
            started = time.perf_counter()
            done = proto.expect(1)
            transport.write(message)
            await done
            rtts.append(time.perf_counter() - started)
        result["rtt_s"] = rtts
        return result
    finally:
        transport.close()


@contextlib.asynccontextmanager
async def _serve_raw() -> AsyncIterator[int]:
    server = await asyncio.get_running_loop().create_server(_RawServer, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()


# -- websockets ---------------------------------------------------------------------------------


async def _ws_handler(ws: Any) -> None:
    async for message in ws:
        if message[:1] == b"E":
            await ws.send(message[1:])
        else:
            count, size = REQUEST.unpack_from(message, 1)
            chunk = b"x" * size
            send = ws.send
            for _ in range(count):
                await send(chunk)


@contextlib.asynccontextmanager
async def _serve_websockets() -> AsyncIterator[int]:
    from websockets.asyncio.server import serve  # noqa: PLC0415

    async with serve(_ws_handler, "127.0.0.1", 0, compression=None, max_size=None) as server:
        yield int(next(iter(server.sockets)).getsockname()[1])


async def _websockets_session(port: int, plan: Plan) -> SessionResult:
    from websockets.asyncio.client import connect  # noqa: PLC0415

    small_count, small_size, large_count, large_size, round_trips = plan
    async with connect(f"ws://127.0.0.1:{port}/", compression=None, max_size=None) as ws:

        async def stream(count: int, size: int) -> float:
            started = time.perf_counter()
            await ws.send(_stream_request(count, size))
            recv = ws.recv
            for _ in range(count):
                await recv()
            return time.perf_counter() - started

        result: SessionResult = {
            "small_s": await stream(small_count, small_size),
            "large_s": await stream(large_count, large_size),
        }
        payload = b"E" + b"x" * small_size
        rtts = []
        for _ in range(round_trips):
            started = time.perf_counter()
            await ws.send(payload)
            await ws.recv()
            rtts.append(time.perf_counter() - started)
        result["rtt_s"] = rtts
        return result


# -- grpc ---------------------------------------------------------------------------------------


async def _grpc_stream(request: bytes, context: Any) -> AsyncIterator[bytes]:
    count, size = REQUEST.unpack(request)
    chunk = b"x" * size
    for _ in range(count):
        yield chunk


async def _grpc_echo(request: bytes, context: Any) -> AsyncIterator[bytes]:
    yield request


@contextlib.asynccontextmanager
async def _serve_grpc() -> AsyncIterator[int]:
    import grpc  # noqa: PLC0415
    import grpc.aio  # noqa: PLC0415

    handler = grpc.method_handlers_generic_handler(
        GRPC_SERVICE,
        {
            "Stream": grpc.unary_stream_rpc_method_handler(_grpc_stream),
            "Echo": grpc.unary_stream_rpc_method_handler(_grpc_echo),
        },
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield port
    finally:
        await server.stop(None)


async def _grpc_session(port: int, plan: Plan) -> SessionResult:
    import grpc.aio  # noqa: PLC0415

    small_count, small_size, large_count, large_size, round_trips = plan
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        await channel.channel_ready()
        stream_call = channel.unary_stream(f"/{GRPC_SERVICE}/Stream")
        echo_call = channel.unary_stream(f"/{GRPC_SERVICE}/Echo")

        async def stream(count: int, size: int) -> float:
            started = time.perf_counter()
            received = 0
            async for _ in stream_call(REQUEST.pack(count, size)):
                received += 1
            if received != count:
                raise RuntimeError(f"grpc: {received} of {count} chunks")
            return time.perf_counter() - started

        result: SessionResult = {
            "small_s": await stream(small_count, small_size),
            "large_s": await stream(large_count, large_size),
        }
        payload = b"x" * small_size
        rtts = []
        for _ in range(round_trips):
            started = time.perf_counter()
            call = echo_call(payload)
            first = None
            async for chunk in call:
                if first is None:
                    first = time.perf_counter()
                    if chunk != payload:
                        raise RuntimeError("grpc echo mismatch")
            assert first is not None
            rtts.append(first - started)
        result["rtt_s"] = rtts
        return result


_SERVERS = {"raw": _serve_raw, "websockets": _serve_websockets, "grpc": _serve_grpc}
_SESSIONS = {"raw": _raw_session, "websockets": _websockets_session, "grpc": _grpc_session}


async def serve_peer(name: str, ready: Any, stop: asyncio.Event) -> None:
    """Serve peer ``name`` on 127.0.0.1 until ``stop`` is set; ``ready(port)`` once listening."""
    async with _SERVERS[name]() as port:
        ready(port)
        await stop.wait()


def session(name: str, port: int, plan: Plan) -> SessionResult:
    """One client session of peer ``name`` against its server on ``port``."""
    return asyncio.run(_SESSIONS[name](port, plan))
