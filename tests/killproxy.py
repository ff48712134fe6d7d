"""A TCP proxy that kills connections: "the server drops the connection mid-stream" in front of
any server (ours on any backend, uvicorn, hypercorn) without the server's cooperation.

It forwards every accepted connection to ``target`` byte for byte, in both directions. Armed
with :meth:`KillingProxy.kill_after`, it cuts the next connections whose server-to-client bytes
reach ``n``: exactly the first ``n`` bytes reach the client, then both sockets are shut down and
closed (a FIN mid-response; ``rst=True`` sends an RST instead). :meth:`KillingProxy.kill_all`
kills every live connection at once. Connections are counted, so a test can check that its
client did reconnect.

Threads only (one acceptor, two pumps per connection), all daemons; :meth:`KillingProxy.close`
stops and joins them.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Iterator

__all__ = ["KillingProxy", "open_killing_proxy"]

_JOIN = 10.0
#: How long the acceptor waits for the target to take a connection it accepted.
_CONNECT = 10.0


class _Link:
    """One proxied connection: the client's socket and ours to the server."""

    def __init__(self, client: socket.socket, server: socket.socket) -> None:
        self.client = client
        self.server = server
        self.to_client = 0  # server-to-client bytes forwarded
        self.to_server = 0
        self.dead = threading.Event()
        self._pumps_left = 2
        self._lock = threading.Lock()

    def pump_done(self) -> None:
        """One direction is finished; when both are, release the sockets."""
        with self._lock:
            self._pumps_left -= 1
            last = self._pumps_left == 0
        if last:
            self.kill()

    def kill(self, rst: bool = False) -> None:
        if self.dead.is_set():
            return
        self.dead.set()
        for sock in (self.client, self.server):
            if rst:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()


class KillingProxy:
    """Listens on ``127.0.0.1:port`` and forwards to ``target`` (host, port)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.5)  # where shutdown() does not wake accept(): poll
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._links: list[_Link] = []
        self._threads: list[threading.Thread] = []
        self._cut_at: int | None = None
        self._cuts_left = 0
        self._rst = False
        #: Connections accepted, and connections killed (by a cut or by kill_all).
        self.accepted = 0
        self.killed = 0
        self._closed = threading.Event()
        self._acceptor = self._spawn(self._accept, "killproxy-accept")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def kill_after(self, n: int, times: int = 1, *, rst: bool = False) -> None:
        """Cut the next ``times`` connections once ``n`` bytes went from server to client."""
        if n < 1 or times < 1:
            raise ValueError("n and times must be >= 1")
        with self._lock:
            self._cut_at, self._cuts_left, self._rst = n, times, rst

    def kill_all(self, *, rst: bool = False) -> int:
        """Kill every live connection now; returns how many were live."""
        with self._lock:
            live = [link for link in self._links if not link.dead.is_set()]
            self.killed += len(live)
        for link in live:
            link.kill(rst)
        return len(live)

    def live(self) -> int:
        with self._lock:
            return sum(not link.dead.is_set() for link in self._links)

    def close(self) -> None:
        """Stop accepting, then kill every connection and join every thread. A connection
        accepted while this runs is killed too: the acceptor is joined first (it finishes a
        connection it has taken, link and pumps), so every link exists before the kill."""
        self._closed.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept() on Linux
        with contextlib.suppress(OSError):
            self._listener.close()
        self._acceptor.join(_CONNECT + _JOIN)
        if self._acceptor.is_alive():
            raise RuntimeError("the killproxy acceptor did not stop")
        with self._lock:
            links = list(self._links)
        for link in links:
            link.kill()
        for thread in self._threads:  # no thread is added any more
            thread.join(_JOIN)
        stuck = [t.name for t in self._threads if t.is_alive()]
        if stuck:
            raise RuntimeError(f"killproxy threads did not stop: {stuck}")

    # -- internals ------------------------------------------------------------------------

    def _spawn(self, target: object, name: str, *args: object) -> threading.Thread:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)  # type: ignore[arg-type]
        self._threads.append(thread)
        thread.start()
        return thread

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            try:
                server = socket.create_connection(self.target, timeout=_CONNECT)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            for sock in (client, server):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            link = _Link(client, server)
            with self._lock:
                self.accepted += 1
                self._links.append(link)
                number = self.accepted
            self._spawn(self._pump_up, f"killproxy-{number}-c2s", link)
            self._spawn(self._pump_down, f"killproxy-{number}-s2c", link)

    def _pump_up(self, link: _Link) -> None:
        while True:
            try:
                data = link.client.recv(65536)
            except OSError:
                data = b""
            if not data:
                break
            try:
                link.server.sendall(data)
            except OSError:
                break
            link.to_server += len(data)
        with contextlib.suppress(OSError):
            link.server.shutdown(socket.SHUT_WR)
        link.pump_done()

    def _pump_down(self, link: _Link) -> None:
        while True:
            try:
                data = link.server.recv(65536)
            except OSError:
                data = b""
            if not data:
                break
            cut = False
            with self._lock:
                if (
                    self._cuts_left
                    and self._cut_at is not None
                    and link.to_client + len(data) >= self._cut_at
                ):
                    data = data[: self._cut_at - link.to_client]
                    self._cuts_left -= 1
                    self.killed += 1
                    cut = True
            try:
                link.client.sendall(data)
            except OSError:
                break
            link.to_client += len(data)
            if cut:
                link.kill(self._rst)
                return
        with contextlib.suppress(OSError):
            link.client.shutdown(socket.SHUT_WR)
        link.pump_done()


@contextlib.contextmanager
def open_killing_proxy(host: str, port: int) -> Iterator[KillingProxy]:
    """A :class:`KillingProxy` to ``host:port``, closed (every thread joined) on exit."""
    proxy = KillingProxy((host, port))
    try:
        yield proxy
    finally:
        proxy.close()
