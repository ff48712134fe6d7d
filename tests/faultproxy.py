"""A cutting TCP proxy for fault injection between a streamproto client and server.

The proxy listens on a port of its own and forwards every accepted connection to the server.
Each direction of each connection is parsed as it flows, into *units*:

- ``tcp``: streamproto frames (10-byte header ``>IBBI``: body length, type, flags, handle);
- ``ws``: the HTTP upgrade request or response (up to ``\\r\\n\\r\\n``) is unit 0, then every
  WebSocket frame is a unit (2-byte header, 16- or 64-bit extended length, 4-byte mask key
  when masked, payload).

A :class:`Cut` planned for the n-th accepted connection (0-based) closes both of its sockets
at the end of unit ``unit`` of one direction, or ``offset`` bytes into it (``mid``: half of the
unit, ``1``: one byte in, inside the header): the bytes before the cut point are forwarded,
nothing after it. Bytes of the unit to cut are held back until the unit's length is known, so
the cut point is exact however the stream was segmented. Connections without a plan are passed
through untouched (and still parsed, so tests can see how many units flowed).

A :class:`Stall` holds back every byte of one direction from unit ``unit`` on until
:meth:`FaultProxy.release` (or the connection ends), to catch a peer in the middle of the
handshake. ``pause_accepting`` keeps new connections waiting, unanswered, until
``resume_accepting``.

Everything runs in daemon threads; :meth:`FaultProxy.close` stops and joins them all.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from typing import Literal

import attrs

Direction = Literal["c2s", "s2c"]
WAIT = 10.0


@attrs.frozen
class Cut:
    """Cut ``direction`` at the end of unit ``unit`` (``offset`` None), ``offset`` bytes into
    it (an int, clamped to the unit's length - 1), or in its middle (``"mid"``)."""

    direction: Direction
    unit: int
    offset: int | Literal["mid"] | None = None
    rst: bool = False  # close with SO_LINGER 0 (an RST) instead of a FIN

    def point(self, start: int, length: int) -> int:
        """The absolute stream offset to cut at, for a unit at ``start`` of ``length`` bytes."""
        if self.offset is None:
            return start + length
        k = length // 2 if self.offset == "mid" else self.offset
        return start + max(1, min(k, length - 1))


@attrs.frozen
class Stall:
    """Hold back ``direction`` from the start of unit ``unit`` until released."""

    direction: Direction
    unit: int


class UnitParser:
    """Incremental unit boundaries of one direction (see the module docstring)."""

    def __init__(self, kind: Literal["tcp", "ws"]) -> None:
        self.kind = kind
        self._in_head = kind == "ws"
        self._buf = bytearray()  # bytes of the current, incomplete unit
        self.start = 0  # absolute offset of the current unit
        self.units = 0  # completed units
        self.known: list[
            tuple[int, int]
        ] = []  # (start, length) of every unit whose length is known
        self.types: list[int] = []  # tcp: the type byte of each completed frame

    def _length(self) -> int | None:
        buf = self._buf
        if self._in_head:
            end = buf.find(b"\r\n\r\n")
            return None if end < 0 else end + 4
        if self.kind == "tcp":
            return None if len(buf) < 4 else 10 + int.from_bytes(buf[:4], "big")
        if len(buf) < 2:
            return None
        n, head = buf[1] & 0x7F, 2
        if n == 126:
            if len(buf) < 4:
                return None
            n, head = struct.unpack_from(">H", buf, 2)[0], 4
        elif n == 127:
            if len(buf) < 10:
                return None
            n, head = struct.unpack_from(">Q", buf, 2)[0], 10
        return head + (4 if buf[1] & 0x80 else 0) + n

    def feed(self, data: bytes) -> None:
        """Take the next bytes of the direction."""
        self._buf += data
        while True:
            if len(self.known) == self.units:
                length = self._length()
                if length is None:
                    return
                self.known.append((self.start, length))
            length = self.known[-1][1]
            if length > len(self._buf):
                return
            if self.kind == "tcp":
                self.types.append(self._buf[4])
            del self._buf[:length]
            self.start += length
            self.units += 1
            self._in_head = False

    def limit(self, unit: int) -> tuple[int, int] | int | None:
        """Where unit ``unit`` is: ``(start, length)`` once its length is known, its start (an
        int) while it has begun but its header is incomplete, None while it has not begun."""
        if unit < len(self.known):
            return self.known[unit]
        if unit == self.units:
            return self.start
        return None


class _Link:
    """One proxied connection: two pumps, two sockets."""

    def __init__(
        self,
        proxy: FaultProxy,
        index: int,
        client: socket.socket,
        server: socket.socket,
        plan: Cut | Stall | None,
    ) -> None:
        self.proxy = proxy
        self.index = index
        self.client = client
        self.server = server
        self.plan = plan
        self.parsers = {"c2s": UnitParser(proxy.kind), "s2c": UnitParser(proxy.kind)}
        self.cut_done = threading.Event()
        self.closed = False
        self._lock = threading.Lock()
        self._running = 2
        self.threads = [
            threading.Thread(target=self._pump, args=(d,), name=f"faultproxy-{d}", daemon=True)
            for d in ("c2s", "s2c")
        ]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def cut(self, rst: bool = False) -> None:
        """Close both sockets now (the pumps see it and end)."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            for sock in (self.client, self.server):
                with contextlib.suppress(OSError):
                    if rst:
                        linger = struct.pack("ii", 1, 0)
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
                        sock.shutdown(socket.SHUT_RD)
                    else:
                        sock.shutdown(socket.SHUT_RDWR)

    def _pump(self, direction: Direction) -> None:
        src, dst = (self.client, self.server) if direction == "c2s" else (self.server, self.client)
        parser = self.parsers[direction]
        plan = self.plan if self.plan is not None and self.plan.direction == direction else None
        held = bytearray()  # received, not forwarded
        sent = 0  # bytes forwarded so far
        try:
            while True:
                try:
                    data = src.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    if isinstance(plan, Stall) and held:
                        self.proxy.released.wait(WAIT)
                    dst.sendall(held)
                    dst.shutdown(socket.SHUT_WR)
                    return
                parser.feed(data)
                if plan is None:
                    dst.sendall(data)
                    continue
                held += data
                where = parser.limit(plan.unit)
                if where is None:
                    limit = sent + len(held)
                elif isinstance(where, int) or isinstance(plan, Stall):
                    limit = where if isinstance(where, int) else where[0]
                else:
                    limit = plan.point(*where)
                step = min(limit, sent + len(held)) - sent
                if step > 0:
                    dst.sendall(held[:step])
                    del held[:step]
                    sent += step
                if isinstance(plan, Cut) and isinstance(where, tuple) and sent == limit:
                    self.proxy.cuts += 1
                    self.cut_done.set()
                    self.cut(plan.rst)
                    return
                if isinstance(plan, Stall) and held:
                    self.proxy.stalled.set()
                    if not self.proxy.released.wait(WAIT):
                        return
                    plan = None
                    dst.sendall(held)
                    held.clear()
        except OSError:
            return
        finally:
            with self._lock:
                self._running -= 1
                last = self._running == 0
            if last:
                self.cut()
                self.client.close()
                self.server.close()


class FaultProxy:
    """A proxy to ``server_url`` (``tcp://`` or ``ws://``); ``url`` is the one to connect to."""

    def __init__(self, server_url: str) -> None:
        scheme, rest = server_url.split("://", 1)
        hostport, _, path = rest.partition("/")
        host, port = hostport.rsplit(":", 1)
        self.kind: Literal["tcp", "ws"] = "ws" if scheme == "ws" else "tcp"
        self.target = (host, int(port))
        self.plans: dict[int, Cut | Stall] = {}
        self.links: list[_Link] = []
        self.cuts = 0
        self.stalled = threading.Event()
        self.released = threading.Event()
        self._accepting = threading.Event()
        self._accepting.set()
        self._closing = False
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"{scheme}://127.0.0.1:{self._listener.getsockname()[1]}"
        if path:
            self.url += "/" + path
        self._thread = threading.Thread(target=self._accept, name="faultproxy-accept", daemon=True)
        self._thread.start()

    def plan(self, index: int, plan: Cut | Stall) -> None:
        """Apply ``plan`` to the ``index``-th connection (0-based)."""
        self.plans[index] = plan

    def pause_accepting(self) -> None:
        self._accepting.clear()

    def resume_accepting(self) -> None:
        self._accepting.set()

    def release(self) -> None:
        """Let stalled bytes flow."""
        self.released.set()

    def cut_all(self, rst: bool = False) -> None:
        """Cut every open connection now."""
        for link in list(self.links):
            link.cut(rst)

    def _accept(self) -> None:
        index = 0
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self._accepting.wait()  # paused: the client waits for its connection to go on
            if self._closing:
                client.close()
                return
            try:
                server = socket.create_connection(self.target, timeout=WAIT)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            for sock in (client, server):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            link = _Link(self, index, client, server, self.plans.get(index))
            self.links.append(link)
            index += 1
            link.start()

    def close(self) -> None:
        """Stop accepting, cut every connection and join every thread."""
        self._closing = True
        self.released.set()
        self._accepting.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes accept()
        self._thread.join(WAIT)
        self._listener.close()
        for link in list(self.links):
            link.cut()
            for thread in link.threads:
                thread.join(WAIT)

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
