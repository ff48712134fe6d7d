"""The thread backend: threads for code without an event loop.

A server's sockets are non-blocking and share one I/O thread (``_Loop``: a selector and a
heap of deadlines) that reads them, feeds the sans-IO sides and writes what the kernel did
not take at once; output goes out in the thread that made it when the socket is idle (see
``_Pump``). So an idle connection costs no thread: a server runs its I/O thread, an acceptor,
the hub's timer and the handlers' threads. A client runs one thread, which does its socket's
I/O the same way and reconnects. Every call into the hub, a driver or the client core is made
under one lock (the server's, the client's), so the core needs no locking of its own; only
the lock's holder sends, so frames keep their order. Every thread is joined by ``close()`` /
``shutdown()``.

Clocks: connections run on ``time.monotonic``; the hub's deadlines are taken to be in the same
clock (the Hub's documented ``clock=time.monotonic``).
"""

from __future__ import annotations

import collections
import contextlib
import heapq
import random
import selectors
import socket
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from types import TracebackType
from typing import Any, TypeVar, cast, overload

from streamproto import (
    Config,
    ErrorCode,
    HttpOptions,
    Hub,
    Producer,
    StreamEntry,
    StreamState,
    UploadReader,
    WriteResult,
)
from streamproto._codec import Codec
from streamproto._frames import QueryOp
from streamproto._hub import AbortReason

from ._common import (
    _V,
    FLUSH_SLICE,
    Backoff,
    BidiBase,
    Bidis,
    ClientBase,
    ClientCore,
    Gap,
    ProducerBase,
    QueryCore,
    QueryRequest,
    ServerBase,
    ServerUploadBase,
    Side,
    StreamError,
    StreamPage,
    SubscriptionBase,
    SubscriptionCore,
    UploadBase,
    UploadCore,
    Uploads,
    Url,
    always_reads,
    handler_failed,
    log,
    parse_url,
    read_upload,
    state_mask,
)
from ._schemes import (
    HTTP,
    TCP,
    UNIX,
    WS,
    bound_port,
    endpoint,
    register_scheme,
    unix_listener,
)
from .trace import Tracer

#: What a subscription hands out: ``bytes``, or ``bytes | Gap`` with ``on_gap="item"``.
_T = TypeVar("_T")
#: What a codec decodes payloads into.
_W = TypeVar("_W")

__all__ = [
    "Bidi",
    "Client",
    "Server",
    "ServerProducer",
    "ServerUpload",
    "Subscription",
    "Upload",
    "connect",
    "serve",
]

_RECEIVE = 65536
#: How long a closing socket gets to write its goodbye before it is shut down anyway.
_LINGER = 1.0
#: How long a handler thread waits for the next handler before it ends.
_HANDLER_IDLE = 5.0


#: Inline flushes allowed per input read: replies go out at once, in the thread that made
#: them; a producer writing on its own gets this many, then the I/O thread takes over and
#: sends what piles up in batches.
_INLINE_BUDGET = 4


class _Pump:
    """One socket's I/O, driven by a :class:`_Loop` (never a thread of its own). Every method
    runs with the lock held.

    The socket is non-blocking. Input is read by the loop's thread when the selector says so.
    Output goes out at once in the thread that woke the side when the pump is idle (a
    ``send`` that cannot block: a reply or a chunk leaves without a hand-off to another
    thread, which costs more than the send itself under the GIL); what the kernel does not
    take waits in ``_pending`` for the loop, which sends it when the socket is writable.
    Inline flushes are rationed (``_INLINE_BUDGET`` per input read): one ``send`` per chunk
    would cost a producer that writes in a loop its throughput, which the loop's batched
    sends keep. ``on_closed`` runs once the socket is closed."""

    __slots__ = (
        "_after",
        "_blocked",
        "_gate",
        "_loop",
        "_pending",
        "armed",
        "budget",
        "closed",
        "closing",
        "dirty",
        "events",
        "linger",
        "on_closed",
        "side",
        "sock",
    )

    def __init__(
        self,
        loop: _Loop,
        sock: socket.socket,
        side: Side,
        on_closed: Callable[[], None],
        after: Callable[[], None] = lambda: None,
    ) -> None:
        sock.setblocking(False)
        self._loop = loop
        self.sock = sock
        self.side = side
        self.on_closed = on_closed
        self._after = after
        self._pending = b""  # taken from the side, not yet written
        self._blocked = False  # the kernel refused output (the side was told)
        self._gate = not always_reads(side)  # only an HTTP side may stop reading
        self.budget = _INLINE_BUDGET
        self.armed: float | None = None  # the deadline the loop waits for
        self.events = 0  # what the selector watches for
        self.dirty = False  # the loop has it to look at
        self.closing = False  # no more input: write what is left, then close
        self.linger = 0.0  # closing: when to close even if the peer took nothing
        self.closed = False

    def wake(self) -> None:
        """The side may have output (or a new deadline, or stopped or resumed reading)."""
        if self.closed:
            return
        loop = self._loop
        if self.budget and not self._pending and not self.closing and not loop.in_thread():
            self.budget -= 1
            side = self.side
            data = side.step(FLUSH_SLICE)
            self._after()
            if data:
                self._send(data)
            if (
                not self._pending
                and len(data) < FLUSH_SLICE  # a whole slice: the side may hold more
                and not side.finished
                and not self.closing
                and self.armed_for(side.deadline())
                and (not self._gate or side.reading == bool(self.events & selectors.EVENT_READ))
            ):
                return  # written: the loop has nothing new to do
        loop.look_at(self)

    def armed_for(self, deadline: float | None) -> bool:
        """Whether the loop wakes up by ``deadline`` already."""
        return deadline is None or (self.armed is not None and self.armed <= deadline)

    def readable(self) -> None:
        try:
            data = self.sock.recv(_RECEIVE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        self.side.receive(data)
        self.budget = _INLINE_BUDGET  # answers to input leave at once
        if not data:
            self.closing = True

    def flush(self) -> None:
        """Write what the kernel takes: what is pending, then what the side has."""
        side = self.side
        if self._pending:
            deadline = side.deadline()
            if deadline is not None and time.monotonic() >= deadline:
                # Its timers are due (the end of a stall among them): step runs them; what
                # it has to say goes behind what is pending.
                self._pending += side.step(0)
                self._after()
        while True:
            data = self._pending
            if data:
                self._pending = b""
            else:
                data = side.step(FLUSH_SLICE)
                self._after()
                if not data:
                    return
            if not self._send(data):
                return

    def _send(self, data: bytes) -> bool:
        """Send ``data`` without blocking; keep what the kernel did not take. True when all
        was taken."""
        try:
            sent = self.sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:  # the peer is gone: nothing more will be written
            self.closing = True
            self.linger = 0.0
            return False
        if sent < len(data):
            self._pending = data[sent:]
            if not self._blocked:
                self._blocked = True
                self.side.output_blocked(True)  # the side's stall timer runs (R-LIM-20)
            return False
        if self._blocked:
            self._blocked = False
            self.side.output_blocked(False)
        return True

    def settle(self, now: float) -> None:
        """After the loop flushed it: close it when it is done, else watch what it waits for."""
        side = self.side
        if side.finished and not self.closing:
            self.closing = True
            self.linger = now + _LINGER
        elif self.closing and not self.linger:
            self.linger = now + _LINGER
        if self.closing and (
            not self._pending or now >= self.linger or getattr(side, "stalled", False)
        ):
            self.close()
            return
        events = 0
        if not self.closing and side.reading:
            events |= selectors.EVENT_READ
        if self._pending:
            events |= selectors.EVENT_WRITE
        self._loop.watch(self, events)
        deadline = self.linger if self.closing else side.deadline()
        if not self.armed_for(deadline):
            # Only an earlier deadline needs a new entry: a later one is met when the entry
            # armed before fires (early, harmlessly), so the heap stays small.
            self.armed = deadline
            self._loop.arm(cast(float, deadline), self)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._loop.pumps -= 1
        self._loop.watch(self, 0)
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.on_closed()


class _Loop:
    """One thread that does the I/O of many sockets (:class:`_Pump`): a selector, a socket
    pair to wake it, and a heap of deadlines. It holds the lock except while it waits in
    ``select``, so the core is called under the lock as everywhere else. Other threads only
    mark a pump for it to look at (``look_at``) and wake it; the selector is touched by the
    loop's thread alone."""

    def __init__(self, lock: threading.RLock, before: Callable[[], None] = lambda: None) -> None:
        self._lock = lock
        self._before = before  # runs when ``hold`` asked for it, before the pumps are stepped
        self._held = False
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._poked = False
        self._dirty: list[_Pump] = []
        self._timers: list[tuple[float, int, _Pump]] = []
        self._timer_seq = 0
        self.pumps = 0  # pumps not yet closed
        self.stopping = False
        self._ident: int | None = None

    def in_thread(self) -> bool:
        return threading.get_ident() == self._ident

    def add(self, pump: _Pump) -> None:
        self.pumps += 1
        self.look_at(pump)

    def look_at(self, pump: _Pump) -> None:
        if not pump.dirty:
            pump.dirty = True
            self._dirty.append(pump)
        self.poke()

    def poke(self) -> None:
        if not self._poked and not self.in_thread():
            self._poked = True
            with contextlib.suppress(OSError):  # full: a wake is pending anyway
                self._wake_w.send(b"\0")

    def hold(self) -> None:
        """Have the loop call ``before`` when it next wakes (and wake it, once per burst)."""
        self._held = True
        self.poke()

    def stop(self) -> None:
        self.stopping = True
        self.poke()

    def watch(self, pump: _Pump, events: int) -> None:
        if events == pump.events:
            return
        if not events:
            self._selector.unregister(pump.sock)
        elif not pump.events:
            self._selector.register(pump.sock, events, pump)
        else:
            self._selector.modify(pump.sock, events, pump)
        pump.events = events

    def arm(self, deadline: float, pump: _Pump) -> None:
        self._timer_seq += 1
        heapq.heappush(self._timers, (deadline, self._timer_seq, pump))

    def run(self) -> None:
        """Serve the pumps in this thread until ``stopping`` is set and every pump closed."""
        self._ident = threading.get_ident()
        lock, selector, timers, dirty = self._lock, self._selector, self._timers, self._dirty
        wake_r = self._wake_r
        with lock:
            try:
                while True:
                    if self._held:
                        self._held = False
                        self._before()
                    now = time.monotonic()
                    while timers and (timers[0][0] <= now or timers[0][2].closed):
                        at, _, pump = heapq.heappop(timers)
                        if not pump.closed and pump.armed == at:
                            pump.armed = None
                            self._look(pump)
                    while dirty:
                        pump = dirty.pop()
                        pump.dirty = False
                        if not pump.closed:
                            self._step(pump)
                    if dirty or self._held:
                        continue
                    if self.stopping and not self.pumps:
                        break
                    timeout = None if not timers else max(0.0, timers[0][0] - time.monotonic())
                    lock.release()
                    try:
                        ready = selector.select(timeout)
                    finally:
                        lock.acquire()
                    for key, mask in ready:
                        pump = key.data
                        if pump is None:
                            with contextlib.suppress(OSError):
                                while wake_r.recv(4096):
                                    pass
                            self._poked = False
                            continue
                        if pump.closed:
                            continue
                        if mask & selectors.EVENT_READ:
                            try:
                                pump.readable()
                            except Exception:
                                self._failed(pump)
                                continue
                        self._look(pump)
            finally:
                selector.close()
                self._wake_r.close()
                self._wake_w.close()

    def _look(self, pump: _Pump) -> None:
        if not pump.dirty:
            pump.dirty = True
            self._dirty.append(pump)

    def _step(self, pump: _Pump) -> None:
        try:
            pump.flush()
            if not pump.dirty:  # else it woke itself: flushed again first
                pump.settle(time.monotonic())
        except Exception:
            self._failed(pump)

    @staticmethod
    def _failed(pump: _Pump) -> None:
        # A bug must cost one connection, not every connection of the thread.
        log.exception("connection failed")
        if not pump.closed:
            with contextlib.suppress(Exception):
                pump.close()


# -- urls ---------------------------------------------------------------------------------------

#: This backend's name in the scheme registry (:func:`transports.adapter.register_scheme`).
BACKEND = "sync"


def _listen_tcp(url: Url, backlog: int) -> socket.socket:
    return socket.create_server((url.host, url.port), backlog=backlog)


def _connect_tcp(url: Url, timeout: float) -> socket.socket:
    return socket.create_connection((url.host, url.port), timeout=timeout)


def _listen_unix(url: Url, backlog: int) -> socket.socket:
    return unix_listener(url.path, backlog)


def _connect_unix(url: Url, timeout: float) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(url.path)
    except BaseException:
        sock.close()
        raise
    return sock


for _scheme in (TCP, WS, HTTP):
    register_scheme(BACKEND, _scheme, listen=_listen_tcp, connect=_connect_tcp)
register_scheme(BACKEND, UNIX, listen=_listen_unix, connect=_connect_unix)


def _ready(sock: socket.socket) -> socket.socket:
    """A connected socket as the reader and writer threads want it: blocking, and over TCP
    without Nagle's delay (our writes are whole batches already)."""
    sock.settimeout(None)
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _dial(url: Url, timeout: float) -> socket.socket:
    sock: socket.socket = endpoint(BACKEND, url).connect(url, timeout)
    return _ready(sock)


# -- producer side ------------------------------------------------------------------------------


class ServerProducer(ProducerBase[_V]):
    """A stream's writing end for threads: ``write`` blocks under the BLOCK policy;
    ``aborted`` is set when the last subscriber cancelled (``abort_reason`` says why), and
    when the server shuts down (threads cannot be cancelled: handlers should watch it).
    ``pipe(source)`` writes an iterable and ends the stream. Values are ``bytes``, or what
    the channel's codec encodes (``ServerProducer[T]``).

    Outside our servers (a hub run by another framework), wrap a hub producer yourself,
    with the lock every call into that hub is made under: ``ServerProducer(channel.start(),
    codec=JSON, lock=hub_lock)`` (a ``threading.RLock``)."""

    def __init__(
        self,
        producer: Producer,
        *,
        codec: Codec[_V] | None = None,
        server: Server | None = None,
        lock: threading.RLock | None = None,
    ) -> None:
        lock = lock if lock is not None else server._lock if server is not None else None
        lock = lock if lock is not None else threading.RLock()
        super().__init__(producer, codec=codec, server=server, lock=lock)
        self.aborted = threading.Event()
        self._cond = threading.Condition(lock)
        self._writable = False
        self._stopped = server is not None and server._closed
        producer.on_abort = self.aborted.set
        producer.on_writable = self._on_writable
        if server is not None:
            server._waiters.add(self)

    def _on_writable(self) -> None:
        self._writable = True
        self._cond.notify_all()

    def _shutdown(self) -> None:
        self._stopped = True
        self.aborted.set()
        self._cond.notify_all()

    @property
    def abort_reason(self) -> AbortReason | None:
        """Why ``aborted`` was set (None until it is): the hub's reason (see
        :attr:`ProducerBase.abort_reason`), or SERVER_SHUTDOWN when the server shut down."""
        reason = self.producer.abort_reason
        if reason is None and self._stopped:
            return AbortReason(ErrorCode.SERVER_SHUTDOWN, "the server shut down")
        return reason

    def write(self, value: _V) -> None:
        """Write ``value``; blocks while a BLOCK subscriber has no room. Raises
        SERVER_SHUTDOWN if the server shuts down meanwhile, and, once the stream is over,
        also while the write waits: STREAM_CLOSED, or the code the hub ended it with
        (STREAM_DELETED, STREAM_EXPIRED, a store's)."""
        codec = self.codec  # (inline: this is the per-chunk path)
        chunk: bytes = value if codec is None else codec.encode(value)  # type: ignore[assignment]
        with self._cond:
            while True:
                self._writable = False
                if self.producer.write(chunk) is WriteResult.ACCEPTED:
                    return
                self._wait_writable()

    def write_many(self, values: Sequence[_V]) -> None:
        """Write ``values`` in order, as that many ``write`` calls would, for much less per
        chunk; blocks while a BLOCK subscriber has no room for the next one. Raises
        SERVER_SHUTDOWN if the server shuts down meanwhile."""
        rest = self._encode_many(values)
        with self._cond:
            while rest:
                self._writable = False
                written, result = self.producer.write_many(rest)
                if result is WriteResult.ACCEPTED:
                    return
                rest = rest[written:]
                self._wait_writable()

    def _wait_writable(self) -> None:
        while not self._writable:
            if self._stopped:
                raise StreamError(ErrorCode.SERVER_SHUTDOWN, "the server shut down")
            self._cond.wait()

    def pipe(self, source: Iterable[_V], *, end: bool = True) -> int:
        """Write every item of ``source`` with back-pressure, then end the stream (unless
        ``end`` is False). Returns how many were written.

        Stops early, quietly, when the stream is aborted (the last subscriber cancelled, or
        the server shuts down): the source is closed (a generator's ``close``, so its
        ``finally`` runs) and :attr:`abort_reason` says why. If the source or a write
        raises, the stream fails with the exception's code (:class:`StreamError` carries
        one; anything else gives HANDLER_FAILED) and the exception propagates."""
        written = 0
        items = iter(source)
        try:
            for item in items:
                if self.aborted.is_set():
                    break
                self.write(item)
                written += 1
        except Exception as exc:
            if not (self._piped(exc) or self._stopped):
                raise
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()
        if end and not self.aborted.is_set():
            self.close()
        return written

    def _serve(self, handler: Callable[..., Any], args: bytes) -> None:
        """Run an open handler; pipe the iterator (a generator) it returns, if any."""
        result = handler(self, args)
        if isinstance(result, Iterator):
            self.pipe(result)


class ServerUpload(ServerUploadBase):
    """The server's end of an upload: ``for chunk in upload``. Raises :class:`StreamError`
    (UPLOAD_DISCONNECTED, the uploader's code, ...) if it did not end well."""

    _server: Server

    def __init__(self, server: Server, reader: UploadReader) -> None:
        super().__init__(server, reader)
        self._cond = threading.Condition(server._lock)
        reader.on_readable = self._cond.notify_all
        server._waiters.add(self)

    def _shutdown(self) -> None:
        self._cond.notify_all()

    def _serve(self, handler: Callable[[ServerUpload], object]) -> None:
        self._returned(handler(self))

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        with self._cond:
            while True:
                chunk = read_upload(self.reader)
                if chunk is not None:
                    return chunk
                if self.reader.outcome is not None:
                    raise StopIteration
                if self._server._closed:
                    raise StreamError(ErrorCode.SERVER_SHUTDOWN, "the server shut down")
                self._cond.wait()


# -- server -------------------------------------------------------------------------------------


class _Handlers:
    """The server's handler threads, reused: a thread whose handler returned waits up to
    ``_HANDLER_IDLE`` seconds for the next one before it ends, so a server answering many
    short OPENs does not start a thread for each. A handler never waits for a free thread:
    when none is idle, a new one starts."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._tasks: collections.deque[Callable[[], None]] = collections.deque()
        self._idle = 0
        self._closed = False
        self.threads: set[threading.Thread] = set()

    def submit(self, task: Callable[[], None]) -> None:
        with self._cond:
            if self._idle > len(self._tasks):
                self._tasks.append(task)
                self._cond.notify()
                return
            thread = threading.Thread(
                target=self._work, args=(task,), name="streamproto-handler", daemon=True
            )
            self.threads.add(thread)
        thread.start()

    def _work(self, task: Callable[[], None] | None) -> None:
        try:
            while task is not None:
                task()
                with self._cond:
                    self._idle += 1
                    self._cond.wait_for(lambda: self._tasks or self._closed, _HANDLER_IDLE)
                    self._idle -= 1
                    task = self._tasks.popleft() if self._tasks else None
        finally:
            with self._cond:
                self.threads.discard(threading.current_thread())

    def close(self) -> list[threading.Thread]:
        """No new handlers; idle threads end. Returns the threads to join."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            return list(self.threads)


class _Connection:
    """One accepted socket: its driver, and its pump on the server's I/O thread. Made with
    the server's lock held."""

    def __init__(self, server: Server, sock: socket.socket) -> None:
        self.server = server
        self.driver = server._driver(None, time.monotonic, self.wake)
        self.pump = _Pump(server._io, sock, self.driver, self._closed, server._rearm_hub)

    def wake(self) -> None:
        self.pump.wake()

    def _closed(self) -> None:
        server = self.server
        self.driver.connection_lost()
        server._gone(self.driver)
        server.drivers.discard(self)
        server._changed.notify_all()
        server._rearm_hub()


class Server(ServerBase[ServerProducer[Any], ServerUpload]):
    """A running server (from :func:`serve`); ``with`` shuts it down on exit."""

    _lock: threading.RLock  # the one lock around every call into the core

    def __init__(
        self,
        hub: Hub | None,
        url: str,
        config: Config | None,
        http: HttpOptions | None = None,
        trace: Tracer | None = None,
    ) -> None:
        super().__init__(hub, url, config, http, trace)
        self._lock = threading.RLock()
        self.drivers: set[_Connection] = set()
        self._changed = threading.Condition(self._lock)  # connections gone, hub deadline moved
        self._waiters: weakref.WeakSet[ServerProducer[Any] | ServerUpload] = weakref.WeakSet()
        self._handlers = _Handlers()
        self._hub_at: float | None = None
        self._closed = False
        listen = endpoint(BACKEND, self.url).listen
        self._listener: socket.socket = listen(self.url, self.config.listen_backlog)
        self.port = bound_port(self._listener.getsockname())
        self._log_listening()
        self._stop_r, self._stop_w = socket.socketpair()
        # Producer writes are held by the hub and delivered as runs (Hub.flush_writes) by
        # the I/O thread when it next wakes: a handler writing in a loop wakes it once per
        # run, and the chunks written meanwhile join the run.
        self._io = _Loop(self._lock, before=self.hub.flush_writes)
        self.hub.on_writes_held = self._io.hold
        self._io_thread = threading.Thread(target=self._io.run, name="streamproto-io", daemon=True)
        self._acceptor = threading.Thread(target=self._accept, name="streamproto-accept")
        self._timer = threading.Thread(target=self._hub_timer, name="streamproto-hub-timer")
        self._acceptor.daemon = self._timer.daemon = True
        self._io_thread.start()
        self._acceptor.start()
        self._timer.start()

    @property
    def lock(self) -> threading.RLock:
        """The lock every call into :attr:`hub` is made under: hold it to call the hub from
        a thread of your own (``hub.shutdown``, ``hub.peers()``; see
        :func:`transports.embedding.shutdown_hub_blocking`)."""
        return self._lock

    def _producer(self, producer: Producer) -> ServerProducer[Any]:
        return ServerProducer(producer, server=self)

    def _upload(self, reader: UploadReader) -> ServerUpload:
        return ServerUpload(self, reader)

    def spawn(self, fn: Callable[..., object], *args: Any) -> None:
        """Run ``fn(*args)`` in a thread of the server (joined at shutdown; errors logged)."""
        self._start(fn, None, *args)

    def _start(
        self, fn: Callable[..., object], target: Producer | UploadReader | None, *args: Any
    ) -> None:
        def run() -> None:
            try:
                fn(*args)
            except Exception as exc:
                if target is None:
                    log.exception("thread %r failed", fn)
                else:
                    with self._lock:
                        handler_failed(target, exc)

        with self._lock:
            if self._closed:
                raise StreamError(ErrorCode.INVALID_STATE, "the server is shut down")
            self._handlers.submit(run)

    def _accept(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self._listener, selectors.EVENT_READ)
            selector.register(self._stop_r, selectors.EVENT_READ)
            while not any(key.fileobj is self._stop_r for key, _ in selector.select()):
                try:
                    sock, _ = self._listener.accept()
                except OSError:
                    log.exception("accept failed")
                    time.sleep(0.05)  # out of descriptors, say: let some close
                    continue
                _ready(sock)
                with self._lock:
                    conn = _Connection(self, sock)
                    self.drivers.add(conn)
                    self._io.add(conn.pump)

    def _rearm_hub(self) -> None:
        if self.hub.next_deadline() != self._hub_at:
            self._changed.notify_all()

    def _hub_timer(self) -> None:
        hub = self.hub
        with self._changed:
            while not self._closed:
                at = self._hub_at = hub.next_deadline()
                if at is not None and time.monotonic() >= at:
                    hub.handle_timer()
                    continue
                self._changed.wait(None if at is None else at - time.monotonic())

    def _goaway(self, code: int) -> None:
        for conn in self.drivers:
            conn.driver.shutdown(code)
            conn.wake()

    def shutdown(self, timeout: float = 5.0) -> None:
        """Stop listening, GOAWAY to every connection, let open streams drain for up to
        ``timeout`` seconds, then close what is left (GOAWAY SERVER_SHUTDOWN), stop the
        handlers (``aborted`` is set, blocked writes raise) and join every thread."""
        with self._lock:
            if self._closed:
                return
            self._log_shutdown(timeout)
            self._goaway(ErrorCode.NO_ERROR)
        self._stop_w.send(b"x")
        self._acceptor.join()
        self._listener.close()
        self.url.unbind()
        with self._changed:
            self._changed.wait_for(lambda: not self.drivers, timeout)
            self._closed = True
            self._goaway(ErrorCode.SERVER_SHUTDOWN)
            for waiter in list(self._waiters):
                waiter._shutdown()
            self._changed.notify_all()
            # Each socket closes once its goodbye is out, or after _LINGER.
            self._changed.wait_for(lambda: not self.drivers)
            if self.hub.on_writes_held == self._io.hold:  # the hub may outlive this server
                self.hub.on_writes_held = None
                self.hub.flush_writes()
            self._io.stop()
        for thread in [self._io_thread, self._timer]:
            thread.join()
        deadline = time.monotonic() + max(timeout, _LINGER)
        for thread in self._handlers.close():
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                log.warning("a handler thread ignored the shutdown: %r", thread)
        self._stop_r.close()
        self._stop_w.close()

    def __enter__(self) -> Server:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.shutdown(timeout=1.0)


def serve(
    hub: Hub | None,
    url: str,
    *,
    config: Config | None = None,
    http: HttpOptions | None = None,
    trace: Tracer | None = None,
) -> Server:
    """Serve ``hub`` at ``url`` (``tcp://host:port``, ``ws://host:port/path``,
    ``http://host:port``: SSE and HTTP as spec/HTTP.md says, with ``http`` options, and
    WebSocket upgrades, ``unix:///path``, or a scheme registered with
    :func:`transports.adapter.register_scheme`; port 0 picks a free one, see
    :attr:`Server.address`) from threads of its own. ``hub`` None serves a
    :func:`transports.new_hub` (128-bit random ids), as :attr:`Server.hub`. ``trace`` gets a
    record per frame of every connection (see :mod:`transports.trace`)."""
    return Server(hub, url, config, http, trace)


# -- client -------------------------------------------------------------------------------------


class Subscription(SubscriptionBase[_T]):
    """A client subscription: ``for chunk in sub`` yields chunk payloads in order;
    ``sub.seq`` is the seq of the last one. Gaps raise :class:`GapError` (the subscription stays
    open: a new loop goes on after the gap) or arrive as :class:`Gap` items, as chosen at
    subscribe time. Breaking out of the loop or closing the iterator sends CANCEL."""

    def __init__(self, client: Client, core: SubscriptionCore) -> None:
        super().__init__(client, core)
        self._cond = threading.Condition(client._lock)
        core.notify = self._cond.notify_all

    @overload
    def decoded(self: Subscription[bytes], codec: Codec[_W]) -> Subscription[_W]: ...

    @overload
    def decoded(self: Subscription[bytes | Gap], codec: Codec[_W]) -> Subscription[_W | Gap]: ...

    def decoded(self, codec: Codec[Any]) -> Subscription[Any]:
        """This subscription, handing out the values ``codec`` decodes (e.g.
        :data:`streamproto.JSON`, or ``JsonCodec[T]()`` for values typed ``T``) instead of
        payloads: ``for value in client.open(...).decoded(JSON)``. Call it before
        iterating. A payload the codec cannot decode raises
        :class:`streamproto.DecodeError` (DECODE_FAILED, with its ``seq`` and ``data``) out
        of the loop once the values before it were handed out; the loop ends there, as for
        any error."""
        self._use(codec)
        return self

    def accepted(self, timeout: float | None = None) -> str:
        """Wait until the server accepted the request; returns the stream id."""
        with self._cond:
            if not self._cond.wait_for(self._core.check_accepted, timeout):
                raise TimeoutError("the request was not answered in time")
            return self._core.stream_id

    def __iter__(self) -> Iterator[_T]:
        return self._iterate(self._core.poller, slices=True)

    def batches(self, max_chunks: int | None = None) -> Iterator[list[_T]]:
        """``for batch in sub.batches()``: lists of the payloads that have arrived (at most
        ``max_chunks`` each), in order, with no wait between chunks that are already here;
        ``sub.seq`` is the seq of the last chunk of the last batch. Gaps, errors, credit and
        CANCEL on leaving are as for ``for chunk in sub``; a gap under ``on_gap="raise"``
        ends the batch before it and raises on the next one."""
        return self._iterate(self._batch_poll(max_chunks))

    def _iterate(self, poll: Callable[[], Any], *, slices: bool = False) -> Iterator[Any]:
        core = self._core
        cond = self._cond
        take = core.take_slice if slices else lambda: None
        with self._iterating():
            while True:
                with cond:
                    while (part := take()) is None and (item := poll()) is None:
                        if core.finished:
                            return
                        cond.wait()
                    if core.reported:  # the credit it returned goes out
                        core.reported = False
                        self._client._wake()
                if part is None:
                    yield item
                    continue
                # What has arrived is handed out from a slice: no lock and no poll per chunk
                # (a cancel in another thread stops it at the next chunk).
                yield from self._hand_out(part)


class Upload(UploadBase):
    """A client upload: ``with client.upload(...) as up: up.write(b"...")``. Leaving the
    block ends the upload (or fails it with the exception's code)."""

    _client: Client

    def _made(self) -> None:
        self._cond = threading.Condition(self._client._lock)

    def __enter__(self) -> Upload:
        self._client._wait_ready(self._client._timeout)
        core = self._begin(self._cond.notify_all)
        with self._cond:
            self._cond.wait_for(core.check_accepted)
        return self

    def write(self, chunk: bytes) -> None:
        """Send a chunk; blocks for credit."""
        core = self._started()
        with self._cond:
            while core.write(chunk) is not WriteResult.ACCEPTED:
                self._client._wake()
                self._cond.wait()
            self._client._wake()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._finish(exc)
        if exc is None:  # wait until it is all out, so a cancel meanwhile is not missed
            core = self._drained()
            if core.error is not None:
                raise core.error

    def _drained(self) -> UploadCore:
        """Wait until the upload is over (drained after END, cancelled or lost)."""
        core = self._started()
        with self._cond:
            while not core.settled:
                self._client._wake()
                self._cond.wait()
        return core

    def result(self) -> bytes:
        """The server's answer to the upload, once it is complete: what the handler returned
        (with ``result=True``; b"" otherwise). Raises the upload's error. Call it after the
        ``with`` block, which ends the upload."""
        self._drained()
        return self._result()


class Bidi(BidiBase, Upload):
    """A bidirectional stream: ``with client.bidi(channel, args) as stream``, then
    ``stream.write(chunk)`` sends on the client's direction and ``for chunk in stream`` reads
    the server's, on one handle (spec section 6.4). ``stream.end()`` ends the client's
    direction while the server's runs on. Leaving the block ends the client's direction if it
    is still open (or fails it with the exception's code) and cancels the server's unless it
    ended. Writes raise once the server cancelled the client's direction or the connection
    was lost; iteration raises the server's error. A lost connection fails the client's
    direction and resumes the server's, as for ``open``. Iterate it once (one iterator):
    dropping an iterator before the end cancels the server's direction."""

    _client: Client

    def __enter__(self) -> Bidi:
        Upload.__enter__(self)
        return self

    def __iter__(self) -> Iterator[bytes]:
        return iter(cast(Subscription[bytes], self._incoming()))

    def batches(self, max_chunks: int | None = None) -> Iterator[list[bytes]]:
        """The server's direction in batches, as :meth:`Subscription.batches`."""
        return cast(Subscription[bytes], self._incoming()).batches(max_chunks)

    def end(self) -> None:
        """End the client's direction; the server's runs on."""
        self._end()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._close(exc)
        if exc is None:  # the client's direction goes out in full (or was cut: no raise)
            self._drained()


class Client(
    ClientBase[Subscription[bytes], Subscription[bytes | Gap]], Uploads[Upload], Bidis[Bidi]
):
    """A connection to a streamproto server that reconnects and resumes (from :func:`connect`).
    One thread does the socket's I/O and reconnects; ``close()`` joins it."""

    _upload_type = Upload
    _bidi_type = Bidi

    _lock: threading.RLock  # the one lock around every call into the core

    def __init__(self, core: ClientCore, timeout: float) -> None:
        super().__init__(core)
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)  # ready, failed or closing
        self._timeout = timeout
        self._sock: socket.socket | None = None
        self._pump: _Pump | None = None
        self._closing = False
        self._thread: threading.Thread | None = None
        core.on_ready = self._changed.notify_all

    def _start(self, sock: socket.socket) -> None:
        self._thread = threading.Thread(
            target=self._run, args=(sock,), name="streamproto-client", daemon=True
        )
        self._thread.start()

    def _run(self, sock: socket.socket | None) -> None:
        core = self.core
        while sock is not None:
            with self._lock:
                if self._closing:
                    sock.close()
                    return
                core.new_connection()
                self._sock = sock
                loop = _Loop(self._lock)
                loop.stopping = True  # run() returns once the socket is closed
                self._pump = _Pump(loop, sock, core, self._lost)
                loop.add(self._pump)
            loop.run()
            sock = self._reconnect()

    def _lost(self) -> None:
        self._sock = self._pump = None
        self.core.lost()

    def _reconnect(self) -> socket.socket | None:
        core = self.core
        while True:
            with self._changed:
                delay = None if self._closing else core.reconnect_delay()
                if delay is None:
                    if not self._closing:
                        core.give_up()
                    return None
                if self._changed.wait_for(lambda: self._closing, delay):
                    return None
            try:
                return _dial(core.url, self._timeout)
            except OSError:
                continue

    def status(self, channel: str, stream_id: str) -> StreamEntry:
        """As the async clients' ``status``, blocking (at most the client's timeout)."""
        return self._ask(QueryRequest(QueryOp.STATUS, channel, stream_id)).entry()

    def list_streams(
        self,
        channel: str,
        *,
        status: StreamState | Iterable[StreamState] | None = None,
        after: str = "",
        limit: int = 100,
    ) -> StreamPage:
        """As the async clients' ``list_streams``, blocking."""
        return self._ask(
            QueryRequest(QueryOp.LIST, channel, after, state_mask(status), limit)
        ).page()

    def delete(self, channel: str, stream_id: str) -> StreamEntry:
        """As the async clients' ``delete``, blocking."""
        return self._ask(QueryRequest(QueryOp.DELETE, channel, stream_id)).entry()

    def _ask(self, request: QueryRequest) -> QueryCore:
        self._wait_ready(self._timeout)
        cond = threading.Condition(self._lock)
        q = self._query(request, cond.notify_all)
        with cond:
            if not cond.wait_for(lambda: q.done, self._timeout):
                raise TimeoutError("no answer in time")
        return q

    def _wait_ready(self, timeout: float | None = None) -> None:
        core = self.core
        with self._changed:
            if not self._changed.wait_for(lambda: core.ready or core.failure, timeout):
                raise TimeoutError("no handshake in time")
            if core.failure is not None:
                raise core.failure

    def _wake(self) -> None:
        if self._pump is not None:
            self._pump.wake()

    def _subscription(self, core: SubscriptionCore) -> Subscription[Any]:
        return Subscription(self, core)

    def abort_transport(self) -> None:
        """Kill the socket without a goodbye (tests and demos of resume)."""
        with self._lock:
            sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        """Say GOAWAY and close; no reconnect. Open subscriptions and uploads fail, and the
        client's threads are joined."""
        with self._lock:
            if not self._closing:
                self._closing = True
                self.core.close()
                self._wake()
                self._changed.notify_all()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def connect(
    url: str,
    *,
    config: Config | None = None,
    auth: bytes = b"",
    reconnect: Backoff | None = None,
    rng: random.Random | None = None,
    timeout: float = 10.0,
    trace: Tracer | None = None,
) -> Client:
    """Connect to ``url`` and complete the handshake. ``reconnect`` (default: a
    :class:`Backoff`) reconnects and resumes after a lost connection; pass
    ``Backoff(attempts=0)`` to disable it. ``trace`` gets a record per frame (see
    :mod:`transports.trace`)."""
    target = parse_url(url)
    endpoint(BACKEND, target)  # an unknown scheme fails here, not in the reconnect loop
    core = ClientCore(
        target,
        config=config,
        auth=auth,
        clock=time.monotonic,
        backoff=reconnect if reconnect is not None else Backoff(),
        rng=rng,
        trace=trace,
    )
    client = Client(core, timeout)
    client._start(_dial(core.url, timeout))
    try:
        client._wait_ready(timeout)
    except BaseException:
        client.close()
        raise
    return client
