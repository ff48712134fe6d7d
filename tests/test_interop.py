"""Interop with an independent WebSocket implementation: the ``websockets`` library.

1. ``websockets`` as the client, speaking raw spec bytes (frames built by hand from the spec's
   layouts) to our server, for every server backend.
2. ``websockets`` as the server our client connects to: a relay that re-frames whole
   streamproto frames into binary messages and forwards them to our server over raw TCP.
"""

from __future__ import annotations

import asyncio
import struct
import threading
import time
from collections.abc import Iterator

import pytest
from harness import BACKENDS, ClientProxy, ServerProxy
from websockets.asyncio.client import connect as ws_connect
from websockets.asyncio.server import ServerConnection
from websockets.asyncio.server import serve as ws_serve
from websockets.exceptions import ConnectionClosed, InvalidStatus

from transports import Backoff, ConnectionLost

HEADER = struct.Struct(">IBBI")


def frame(ftype: int, handle: int, body: bytes, flags: int = 0) -> bytes:
    """A frame built from the spec's layout alone (spec section 3), not with our codec."""
    return HEADER.pack(len(body), ftype, flags, handle) + body


def s16(text: str) -> bytes:
    raw = text.encode()
    return struct.pack(">H", len(raw)) + raw


def split_frames(data: bytes) -> Iterator[tuple[int, int, int, bytes]]:
    offset = 0
    while offset < len(data):
        length, ftype, flags, handle = HEADER.unpack_from(data, offset)
        yield ftype, flags, handle, data[offset + 10 : offset + 10 + length]
        offset += 10 + length


@pytest.mark.parametrize("backend", BACKENDS)
def test_websockets_client_speaks_raw_spec_bytes(backend: str) -> None:
    server = ServerProxy(backend, "ws")
    try:
        server.start("test:streams", "interop")
        server.write("interop", b"one", b"two")
        server.close_stream("interop")
        asyncio.run(_raw_client(server.url))
    finally:
        server.stop()


async def _raw_client(url: str) -> None:
    async with ws_connect(url, subprotocols=["streamproto.v1"]) as ws:
        assert ws.subprotocol == "streamproto.v1"
        hello = b"STRP" + struct.pack(">HH", 1, 1) + struct.pack(">H", 0) + s16("")
        await ws.send(frame(0x01, 0, hello))
        welcome = list(split_frames(await _recv(ws)))
        assert welcome[0][0] == 0x02  # WELCOME
        (version,) = struct.unpack_from(">H", welcome[0][3])
        assert version == 1
        # SUBSCRIBE handle 1, after_seq 0, credit 10 chunks / 1000 bytes, DEFAULT, prio 0
        body = struct.pack(">QIIBB", 0, 10, 1000, 0, 0) + s16("test:streams") + s16("interop")
        await ws.send(frame(0x10, 1, body))
        got: list[tuple[int, int, int, bytes]] = []
        while not any(f[0] == 0x17 for f in got):  # until END
            got.extend(split_frames(await _recv(ws)))
        kinds = [f[0] for f in got]
        assert kinds[0] == 0x13  # ACCEPT
        first, last = struct.unpack_from(">QQ", got[0][3])
        assert (first, last) == (1, 2)
        data = [f for f in got if f[0] == 0x15]
        assert [(struct.unpack_from(">Q", f[3])[0], f[3][8:]) for f in data] == [
            (1, b"one"),
            (2, b"two"),
        ]
        end = next(f for f in got if f[0] == 0x17)
        assert struct.unpack(">Q", end[3]) == (2,)
        # PING is answered with PONG carrying the same payload.
        await ws.send(frame(0x03, 0, struct.pack(">Q", 77)))
        pong = list(split_frames(await _recv(ws)))
        assert pong[0][0] == 0x04
        assert struct.unpack(">Q", pong[0][3]) == (77,)


HELLO = frame(0x01, 0, b"STRP" + struct.pack(">HH", 1, 1) + struct.pack(">H", 0) + s16(""))


@pytest.mark.parametrize("backend", BACKENDS)
def test_websocket_subprotocol_text_and_close_codes(backend: str) -> None:
    """R-TR-5: a client offering no subprotocol is refused with HTTP 400. R-TR-4: a text
    message gets GOAWAY(PROTOCOL_ERROR), then close 1003. R-TR-6: the close code mirrors the
    GOAWAY (4000 + code, 1000 for NO_ERROR). R-GOAWAY-2: the server closes after the client's
    GOAWAY(0) once nothing is open."""
    server = ServerProxy(backend, "ws")
    try:
        asyncio.run(_close_codes(server.url))
    finally:
        server.stop()


async def _close_codes(url: str) -> None:
    with pytest.raises(InvalidStatus) as refused:
        async with ws_connect(url):
            pass
    assert refused.value.response.status_code == 400
    assert await _goodbye(url, ["hello"]) == ([], 1, 1003)
    ping_first = frame(0x03, 0, struct.pack(">Q", 1))
    assert await _goodbye(url, [ping_first], handshake=False) == ([], 1, 4001)
    graceful = frame(0x05, 0, struct.pack(">HI", 0, 0) + s16("bye"))
    assert await _goodbye(url, [graceful]) == ([], None, 1000)


async def _goodbye(
    url: str, messages: list[bytes | str], *, handshake: bool = True
) -> tuple[list[int], int | None, int]:
    """After HELLO and WELCOME (with ``handshake``), send ``messages``; return the types of
    the other frames received, the GOAWAY's code (None if none came) and the close code the
    server closed with."""
    kinds: list[int] = []
    code = None
    async with ws_connect(url, subprotocols=["streamproto.v1"]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "streamproto.v1"
        if handshake:
            await ws.send(HELLO)
            assert next(split_frames(await _recv(ws)))[0] == 0x02  # WELCOME
        for message in messages:
            await ws.send(message)
        while True:
            try:
                message = await _recv(ws)
            except ConnectionClosed as exc:
                rcvd = exc.rcvd
                break
            for ftype, _flags, _handle, body in split_frames(message):
                if ftype == 0x05:  # GOAWAY
                    code = struct.unpack_from(">H", body)[0]
                else:
                    kinds.append(ftype)
    assert rcvd is not None
    return kinds, code, rcvd.code


@pytest.mark.parametrize("backend", BACKENDS)
def test_our_client_sends_no_hello_without_the_subprotocol(backend: str) -> None:
    """R-TR-5: a server whose upgrade selects no subprotocol gets no HELLO and close 1002."""
    received: list[bytes | str] = []
    close_codes: list[int | None] = []
    ready = threading.Event()
    stop: list[asyncio.Event] = []
    port: list[int] = []

    async def handle(ws: ServerConnection) -> None:
        try:
            async for message in ws:
                received.append(message)
        finally:
            close_codes.append(ws.close_code)

    async def run() -> None:
        stop.append(asyncio.Event())
        async with ws_serve(handle, "127.0.0.1", 0) as server:  # selects no subprotocol
            port.append(next(iter(server.sockets)).getsockname()[1])
            ready.set()
            await stop[0].wait()

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(run(),))
    thread.start()
    try:
        assert ready.wait(5)
        url = f"ws://127.0.0.1:{port[0]}/"
        with pytest.raises(ConnectionLost):
            ClientProxy(backend, url, reconnect=Backoff(attempts=0))
        deadline = time.monotonic() + 5
        while not close_codes and time.monotonic() < deadline:
            time.sleep(0.01)
        assert (received, close_codes) == ([], [1002])
    finally:
        loop.call_soon_threadsafe(stop[0].set)
        thread.join(5)
        loop.close()


async def _recv(ws: object) -> bytes:
    message = await asyncio.wait_for(ws.recv(), 5)  # type: ignore[attr-defined]
    assert isinstance(message, bytes)
    return message


class Relay:
    """A ``websockets`` server that forwards each client's binary messages to a raw TCP
    streamproto server, and the server's bytes back as messages of whole frames."""

    def __init__(self, tcp_host: str, tcp_port: int) -> None:
        self.target = (tcp_host, tcp_port)
        self.ready = threading.Event()
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self.stop_event: asyncio.Event | None = None
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self._run(),))
        self.thread.start()
        self.ready.wait(5)

    async def _run(self) -> None:
        self.stop_event = asyncio.Event()
        async with ws_serve(
            self._handle,
            "127.0.0.1",
            0,
            subprotocols=["streamproto.v1"],  # type: ignore[list-item]
        ) as server:
            self.port = next(iter(server.sockets)).getsockname()[1]
            self.ready.set()
            await self.stop_event.wait()

    async def _handle(self, ws: ServerConnection) -> None:
        reader, writer = await asyncio.open_connection(*self.target)

        async def upstream() -> None:
            async for message in ws:
                writer.write(message if isinstance(message, bytes) else message.encode())
            writer.close()

        async def downstream() -> None:
            buffer = b""
            while data := await reader.read(65536):
                buffer += data
                whole = 0
                while len(buffer) - whole >= 10:
                    (length,) = struct.unpack_from(">I", buffer, whole)
                    if len(buffer) - whole < 10 + length:
                        break
                    whole += 10 + length
                if whole:
                    await ws.send(buffer[:whole])
                    buffer = buffer[whole:]
            await ws.close()

        await asyncio.gather(upstream(), downstream(), return_exceptions=True)

    def stop(self) -> None:
        assert self.stop_event is not None
        self.loop.call_soon_threadsafe(self.stop_event.set)
        self.thread.join(5)
        self.loop.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_our_client_through_a_websockets_server(backend: str) -> None:
    server = ServerProxy("asyncio", "tcp")
    host, port = server.url.split("://")[1].split(":")
    relay = Relay(host, int(port))
    try:
        server.start("test:streams", "relayed")
        server.write("relayed", *[b"chunk-%d" % i for i in range(100)])
        server.close_stream("relayed")
        client = ClientProxy(backend, f"ws://127.0.0.1:{relay.port}/")
        try:
            sub = client.subscribe("test:streams", "relayed")
            assert sub.rest() == [b"chunk-%d" % i for i in range(100)]
            assert sub.error is None
            error = client.upload("test:upload", "via-relay", iter([b"u" * 500] * 40))
            assert error is None
            server.record.wait(lambda: "via-relay" in server.record.uploads)
            assert server.record.uploads["via-relay"] == (20_000, 0, "")
        finally:
            client.close()
    finally:
        relay.stop()
        server.stop()
