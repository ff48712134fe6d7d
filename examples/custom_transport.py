"""A custom transport on the sans-IO core alone: a Unix-socket server and client built from
``selectors`` and one thread, without the ``transports`` package. A guide for adapter authors
(docs/adapters.md walks through it): it subscribes, opens, uploads, then idles on keepalive.

    python examples/custom_transport.py [--keepalive SECONDS]

Both ends run the same loop: read -> ``receive_data`` -> act on the events -> ``data_to_send``
-> write, with one timer from ``next_deadline()``. The server is a selector loop in a thread (a
listening socket, one ``Connection`` per accepted socket, all attached to one ``Hub``); the
client is blocking: each step runs its loop until what it waits for has happened.
"""

from __future__ import annotations

import argparse
import contextlib
import queue
import secrets
import selectors
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from streamproto import (
    Config,
    Connection,
    ConnectionTerminated,
    ConnState,
    DataReceived,
    Event,
    Hub,
    Peer,
    PingReceived,
    PongReceived,
    Producer,
    RequestAccepted,
    Role,
    StreamEnded,
    UploadReader,
)

READ, WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE


class Link:
    """A non-blocking socket and the bytes the kernel has not taken yet."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock, self.out = sock, bytearray()

    def flush(self, conn: Connection) -> None:
        # Take more from the core only once the kernel took the last batch. What stays in the
        # core is under its queue bounds and overflow policy, so a slow socket counts as a slow
        # consumer; bytes copied out early would be an unbounded buffer of our own.
        if not self.out:
            self.out += conn.data_to_send()
        if self.out:
            try:
                del self.out[: self.sock.send(self.out)]
            except BlockingIOError:  # the kernel's buffer is full: wait for WRITE
                pass
            except OSError:  # the peer is gone; reading will say so (b"")
                self.out.clear()

    def read(self) -> bytes:
        try:
            return self.sock.recv(65536)  # b"" is end of input: receive_data(b"") says so
        except ConnectionResetError:
            return b""


class Server:
    """One thread owns the hub and every server connection. Neither is thread-safe, so other
    threads hand work to the loop with :meth:`call` instead of touching them."""

    def __init__(self, hub: Hub, path: str, config: Config) -> None:
        self.hub, self.config, self.running = hub, config, True
        self.sel = selectors.DefaultSelector()
        self.listener = socket.socket(socket.AF_UNIX)
        self.listener.bind(path)
        self.listener.listen()
        self.listener.setblocking(False)
        self.wake_r, self.wake_w = socket.socketpair()  # a byte here interrupts select()
        self.calls: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]] = queue.SimpleQueue()
        # Each registration's data is what to do when its socket is ready.
        self.sel.register(self.listener, READ, lambda mask: self.accept())
        self.sel.register(self.wake_r, READ, lambda mask: self.run_calls())
        self.links: dict[socket.socket, tuple[Link, Peer]] = {}
        self.dirty: set[socket.socket] = set()  # connections that may have bytes to send
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` in the loop thread and return its result (call from other threads)."""
        future: Future[Any] = Future()
        self.calls.put((fn, future))
        self.wake_w.send(b"\0")
        return future.result(timeout=5)

    def run_calls(self) -> None:
        self.wake_r.recv(4096)
        while not self.calls.empty():
            fn, future = self.calls.get()
            future.set_result(fn())  # producer writes here wake peers: flush() follows

    def accept(self) -> None:
        sock, _ = self.listener.accept()
        conn = Connection(Role.SERVER, self.config, now=time.monotonic())
        # The hub calls wakeup when it queued bytes on this connection (a producer wrote, a
        # reader returned credit, a timer fired). It runs in this thread, inside hub calls, so
        # marking the socket is enough: flush() runs before the loop sleeps again.
        peer = self.hub.attach(conn, wakeup=lambda: self.dirty.add(sock))
        self.links[sock] = (Link(sock), peer)
        self.sel.register(sock, READ, lambda mask: self.on_ready(sock, mask))

    def on_ready(self, sock: socket.socket, mask: int) -> None:
        link, peer = self.links[sock]
        if mask & READ:
            # receive_data never raises for the peer's faults: they come back as events (and
            # a GOAWAY to send). The hub acts on every event: handshake, requests, uploads.
            peer.handle_events(peer.conn.receive_data(link.read()))
        self.dirty.add(sock)  # readable or writable: either way, try to send

    def run(self) -> None:
        try:
            while self.running or self.links:
                for key, mask in self.sel.select(self.timeout()):
                    key.data(mask)
                now = time.monotonic()
                for sock, (_, peer) in self.links.items():
                    deadline = peer.conn.next_deadline()
                    if deadline is not None and deadline <= now:  # handshake, keepalive
                        peer.handle_events(peer.conn.handle_timer(now))
                        self.dirty.add(sock)
                hub_deadline = self.hub.next_deadline()
                if hub_deadline is not None and hub_deadline <= now:
                    self.hub.handle_timer()  # session grace, stream retention; wakes peers
                self.flush()
        finally:
            self.sel.close()
            for sock in [self.listener, self.wake_r, self.wake_w, *self.links]:
                sock.close()

    def timeout(self) -> float | None:
        """Sleep until the soonest deadline: the connections' and the hub's."""
        deadlines = [peer.conn.next_deadline() for _, peer in self.links.values()]
        soonest = min(filter(None, [*deadlines, self.hub.next_deadline()]), default=None)
        return None if soonest is None else max(0.0, soonest - time.monotonic())

    def flush(self) -> None:
        while self.dirty:
            sock = self.dirty.pop()
            if sock not in self.links:
                continue
            link, peer = self.links[sock]
            link.flush(peer.conn)
            # Sending makes events too (Writable when a queue has room again, the end of a
            # drain): the hub must see them or a blocked producer waits forever. Only pass a
            # non-empty list: handle_events always wakes the peer, and we would spin.
            events = peer.conn.take_events()
            if events:
                peer.handle_events(events)
            if peer.conn.closed and not link.out:  # after a GOAWAY or the peer's close
                self.sel.unregister(sock)
                sock.close()
                del self.links[sock]
            else:  # ask for WRITE only while bytes wait: a writable socket is always ready
                mask = READ | (WRITE if link.out else 0)
                self.sel.modify(sock, mask, self.sel.get_key(sock).data)

    def stop(self) -> None:
        """Stop accepting; the loop ends once every connection is closed."""
        self.call(lambda: setattr(self, "running", False))
        self.thread.join(timeout=5)


class Client:
    """A blocking client with ``auto_credit=False``: credit goes back to the server only as
    the application takes chunks (:meth:`take`), so however slow the application, the client
    never holds more than its window. With auto credit, the core returns credit as soon as
    ``receive_data`` hands the events out: right only if they are consumed right then."""

    def __init__(self, path: str, config: Config) -> None:
        sock = socket.socket(socket.AF_UNIX)
        sock.connect(path)
        self.link = Link(sock)
        self.sel = selectors.DefaultSelector()
        self.sel.register(sock, READ)
        self.conn = Connection(Role.CLIENT, config, now=time.monotonic())  # HELLO is queued
        self.events: list[Event] = []
        self.chunks: dict[int, list[bytes]] = {}

    def pump(self, until: Callable[[], bool], timeout: float = 5.0) -> None:
        """Run the loop until ``until()`` is true."""
        give_up = time.monotonic() + timeout
        while True:
            self.link.flush(self.conn)
            self.route(self.conn.take_events())
            if until():
                return
            if self.conn.closed:
                raise ConnectionError(self.find(ConnectionTerminated))
            deadline = self.conn.next_deadline()
            # until() may depend on another thread, so look at it at least every 50 ms.
            wake = min(give_up, time.monotonic() + 0.05, deadline or give_up)
            self.sel.modify(self.link.sock, READ | (WRITE if self.link.out else 0))
            for _, mask in self.sel.select(max(0.0, wake - time.monotonic())):
                if mask & READ:
                    self.route(self.conn.receive_data(self.link.read()))
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                self.route(self.conn.handle_timer(now))  # then re-read next_deadline()
            if now >= give_up:
                raise TimeoutError(f"still waiting after {timeout}s")

    def route(self, events: list[Event]) -> None:
        for event in events:
            self.events.append(event)
            if isinstance(event, DataReceived):  # one event per run of consecutive chunks
                self.chunks.setdefault(event.handle, []).extend(event.chunks)

    def find(self, kind: type[Any], handle: int | None = None) -> Any:
        """The first event of type ``kind`` (for ``handle``), or None."""
        matches = (e for e in self.events if isinstance(e, kind))
        return next((e for e in matches if handle is None or e.handle == handle), None)

    def take(self, handle: int) -> list[bytes]:
        """The chunks received on ``handle``; taking them returns their credit."""
        chunks = self.chunks.pop(handle, [])
        self.conn.consume(handle, len(chunks), sum(map(len, chunks)))  # closed handle: no-op
        return chunks

    def close(self) -> None:
        with contextlib.suppress(ConnectionError, TimeoutError):
            self.conn.goaway()  # NO_ERROR: open handles drain, then the connection closes
            self.pump(lambda: self.conn.closed and not self.link.out)
        self.sel.close()
        self.link.sock.close()  # the server reads end of input and closes its side


def main(keepalive: float = 1.0, quiet: bool = False) -> dict[str, Any]:
    say = (lambda *a: None) if quiet else print
    # The core draws no randomness: inject the clock and an unguessable id source (128 bits).
    hub = Hub(clock=time.monotonic, ids=lambda: secrets.token_urlsafe(16))
    uploads: dict[str, bytes] = {}
    uploaded = threading.Event()

    def count(producer: Producer, args: bytes) -> None:  # runs in the loop thread
        for i in range(int(args)):
            producer.write(b"%d" % i)  # queued beyond the opener's credit, within bounds
        producer.close()

    def receive(reader: UploadReader) -> None:
        def drain() -> None:  # read_nowait() returns credit to the uploader as it reads
            while (chunk := reader.read_nowait()) is not None:
                uploads[reader.stream_id] = uploads.get(reader.stream_id, b"") + chunk
            if reader.outcome is not None:
                uploaded.set()

        reader.on_readable = drain

    hub.register("demo:count", on_open=count)
    hub.register("demo:files", on_upload=receive)
    log_channel = hub.register("demo:log")
    config = Config(keepalive=keepalive, auto_credit=False)  # the server reads uploads the same
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(hub, str(Path(tmp, "streamproto.sock")), config)
        client = Client(str(Path(tmp, "streamproto.sock")), config)
        try:
            client.pump(lambda: client.conn.state is ConnState.OPEN)
            say("handshake done")

            log = server.call(lambda: log_channel.start("boot"))
            server.call(lambda: [log.write(b"line %d" % i) for i in (1, 2, 3)])
            sub = client.conn.subscribe("demo:log", "boot", after_seq=1)  # replay from seq 2
            client.pump(lambda: len(client.chunks.get(sub, [])) == 2)
            server.call(lambda: (log.write(b"line 4"), log.close()))  # live, then END
            client.pump(lambda: client.find(StreamEnded, sub))
            subscribed = client.take(sub)
            say(f"subscribe after seq 1: {subscribed}")

            # A window of 8 chunks: the server sends 8, then waits for take() to return credit.
            opened = client.conn.open("demo:count", b"50", credit_chunks=8)
            counted: list[bytes] = []
            while not client.find(StreamEnded, opened):
                client.pump(lambda: opened in client.chunks or client.find(StreamEnded, opened))
                counted += client.take(opened)
            stream_id = client.find(RequestAccepted, opened).stream_id  # the server's choice
            say(f"open demo:count -> stream {stream_id}: {len(counted)} chunks, 8 at a time")

            up = client.conn.upload("demo:files", "notes")
            for part in (b"hello ", b"over a ", b"unix socket"):
                client.conn.send_data(up, part)  # queued until ACCEPT brings credit
            client.pump(lambda: client.find(RequestAccepted, up))  # END must wait for ACCEPT
            client.conn.send_end(up)
            client.pump(uploaded.is_set)
            say(f"upload 'notes': the server got {uploads['notes']!r}")

            start, idle_until = len(client.events), time.monotonic() + 3 * keepalive
            client.pump(lambda: time.monotonic() >= idle_until)  # no traffic: timers only
            pings = [e for e in client.events[start:] if isinstance(e, PingReceived | PongReceived)]
            say(f"idle {3 * keepalive:.1f}s with keepalive {keepalive}s: {len(pings)} pings/pongs")
        finally:
            client.close()
            server.stop()
    return {
        "subscribed": subscribed,
        "opened": counted,
        "uploaded": uploads["notes"],
        "keepalive_events": len(pings),
        "server_stopped": not server.thread.is_alive(),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keepalive", type=float, default=1.0)
    main(parser.parse_args().keepalive)
