"""The thread backend: blocking sockets and threads, for code without an event loop.

Per socket, a reader thread feeds ``recv`` to the sans-IO side, and a writer thread sleeps on
a condition until something wakes it (the reader, the hub, the application) or its deadline
passes, then writes ``step()``. Every call into the hub, a driver or the client core is made
under one lock (the server's, the client's), so the core needs no locking of its own; the
writer lets go of the lock while it sends, and is the only thread that sends, so frames keep
their order. Every thread is joined by ``close()`` / ``shutdown()``.

Clocks: connections run on ``time.monotonic``; the hub's deadlines are taken to be in the same
clock (the Hub's documented ``clock=time.monotonic``).
"""

from __future__ import annotations

import collections
import contextlib
import random
import selectors
import socket
import struct
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from types import TracebackType
from typing import Any, TypeVar, overload

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


#: Non-blocking send for the inline write path (absent on Windows: the writer thread does it).
_DONTWAIT: int | None = getattr(socket, "MSG_DONTWAIT", None)
#: Inline writes allowed per input read: replies go out at once; a producer writing on its
#: own gets this many, then the writer thread takes over and sends in batches.
_INLINE_BUDGET = 4


class _Writer:
    """The writer of one socket: a thread, plus an inline path. ``wake`` and ``stop`` are
    called with the lock held.

    When the thread is idle, ``wake`` takes what the core has to send and writes it at once,
    in the caller's thread, with a non-blocking send: a reply or a chunk then leaves without
    a hand-off to another thread (which costs more than the send itself under the GIL). What
    the kernel does not take waits in ``_pending`` for the thread, which is woken only when it
    has something to do: bytes left over, a new deadline, the end. Inline sends are rationed
    (``_INLINE_BUDGET`` per input read): one send per chunk would cost a producer that writes
    in a loop its throughput, which the thread's batched ``sendall`` keeps."""

    def __init__(
        self,
        lock: threading.RLock,
        sock: socket.socket,
        side: Side,
        after: Callable[[], None] = lambda: None,
    ) -> None:
        self._lock = lock
        self._cond = threading.Condition(lock)
        self._sock = sock
        self._side = side
        self._after = after
        self._woken = False
        self._stopping = False
        self._idle = False  # the thread waits on the condition, with the lock free
        self._waiting_for: float | None = None  # the deadline the idle thread waits for
        self._pending = b""  # taken from the core, not yet written
        self.budget = _INLINE_BUDGET  # inline sends left until the next input
        #: Notified whenever the core may have changed (the reader waits on it while the
        #: side is not ``reading``).
        self.readable = threading.Condition(lock)
        self.stopping = False
        # Only a side that may stop reading (HTTP) needs the reader woken; the others always read.
        self._gate = not always_reads(side)
        self.thread = threading.Thread(target=self._run, name="streamproto-writer", daemon=True)

    def wake(self) -> None:
        if self._gate:
            self.readable.notify_all()
        if self._idle and self.budget and not self._pending and _DONTWAIT is not None:
            self.budget -= 1
            side = self._side
            data = side.step(FLUSH_SLICE)
            self._after()
            if data:
                try:
                    sent = self._sock.send(data, _DONTWAIT)
                except BlockingIOError:
                    sent = 0
                except OSError:
                    sent = 0  # the thread's sendall meets the error and ends the writer
                self._pending = data[sent:]
            if (
                not self._pending
                and len(data) < FLUSH_SLICE  # a whole slice: the core may hold more
                and not side.finished
                and side.deadline() == self._waiting_for
            ):
                return  # written: the thread has nothing new to do
        self._woken = True
        self._cond.notify()

    def stop(self) -> None:
        """Write what is left, then shut the socket down."""
        self._stopping = self.stopping = True
        self.readable.notify_all()
        self._cond.notify()

    def _run(self) -> None:
        side, sock, lock = self._side, self._sock, self._lock
        with self._cond:
            while True:
                self._woken = False
                data, self._pending = self._pending, b""
                if not data:
                    data = side.step(FLUSH_SLICE)
                    self._after()
                if data:
                    side.output_blocked(True)
                    lock.release()
                    try:
                        sock.sendall(data)
                    except OSError:
                        stalled = True
                    else:
                        stalled = False
                    finally:
                        lock.acquire()
                    if stalled:  # the peer is gone, or took nothing for the stall timeout
                        side.step()  # past the stall deadline: ends with EXCESSIVE_LOAD
                        break
                    side.output_blocked(False)
                    continue  # more may have been queued while the lock was free
                if side.finished or self._stopping:
                    break
                deadline = self._waiting_for = side.deadline()
                self._idle = True
                try:
                    while not self._woken and not self._stopping:
                        timeout = None if deadline is None else deadline - time.monotonic()
                        if timeout is not None and timeout <= 0:
                            break
                        self._cond.wait(timeout)
                finally:
                    self._idle = False
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)  # the reader's recv returns


def _read(sock: socket.socket, lock: threading.RLock, side: Side, writer: _Writer) -> None:
    """The reader loop of one socket; then stop and join the writer, and close the socket."""
    writer.thread.start()
    try:
        while True:
            try:
                data = sock.recv(_RECEIVE)
            except OSError:
                data = b""
            with lock:
                side.receive(data)
                writer.budget = _INLINE_BUDGET  # answers to input leave at once
                writer.wake()
                if not data or side.finished:
                    return
                while not side.reading and not side.finished and not writer.stopping:
                    writer.readable.wait()  # an HTTP upload beyond its credit
    finally:
        with lock:
            writer.stop()
        writer.thread.join(_LINGER)
        if writer.thread.is_alive():  # stuck sending to a peer that does not read
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            writer.thread.join()
        sock.close()


def _send_timeout(sock: socket.socket, seconds: float) -> None:
    """A send that takes no byte for ``seconds`` fails (R-LIM-20): the writer thread is the
    one that would notice a stall, and it is the one blocked in the send."""
    if sys.platform != "win32":  # a timeval here; Windows takes milliseconds (not set there)
        whole = int(seconds)
        timeval = struct.pack("ll", whole, int((seconds - whole) * 1e6))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)


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
        SERVER_SHUTDOWN if the server shuts down meanwhile."""
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
    """One accepted socket: its driver and its reader and writer threads."""

    def __init__(self, server: Server, sock: socket.socket) -> None:
        self.server = server
        self.sock = sock
        framing = server.url.framing(client=False)
        self.driver = server._driver(framing, time.monotonic, self.wake)
        _send_timeout(sock, server.config.output_stall_timeout)
        self.writer = _Writer(server._lock, sock, self.driver, server._rearm_hub)
        self.reader = threading.Thread(target=self._run, name="streamproto-reader", daemon=True)

    def wake(self) -> None:
        self.writer.wake()

    def _run(self) -> None:
        server = self.server
        try:
            _read(self.sock, server._lock, self.driver, self.writer)
        finally:
            with server._lock:
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
        self._acceptor = threading.Thread(target=self._accept, name="streamproto-accept")
        self._timer = threading.Thread(target=self._hub_timer, name="streamproto-hub-timer")
        self._acceptor.daemon = self._timer.daemon = True
        self._acceptor.start()
        self._timer.start()

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
                conn.reader.start()

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
            conn.writer.wake()

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
            readers = [conn.reader for conn in self.drivers]
        for thread in [*readers, self._timer]:
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
    ``sub.seq`` is the seq of the last one. Gaps raise :class:`GapError` (iteration may go
    on) or arrive as :class:`Gap` items, as chosen at subscribe time. Breaking out of the
    loop or closing the iterator sends CANCEL."""

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
        return self._iterate(self._core.poller)

    def batches(self, max_chunks: int | None = None) -> Iterator[list[_T]]:
        """``for batch in sub.batches()``: lists of the payloads that have arrived (at most
        ``max_chunks`` each), in order, with no wait between chunks that are already here;
        ``sub.seq`` is the seq of the last chunk of the last batch. Gaps, errors, credit and
        CANCEL on leaving are as for ``for chunk in sub``; a gap under ``on_gap="raise"``
        ends the batch before it and raises on the next one."""
        return self._iterate(self._batch_poll(max_chunks))

    def _iterate(self, poll: Callable[[], Any]) -> Iterator[Any]:
        core = self._core
        try:
            while True:
                with self._cond:
                    item = poll()
                    while item is None and not core.finished:
                        self._cond.wait()
                        item = poll()
                    if item is None:
                        return
                    if core.reported:  # the credit it returned goes out
                        core.reported = False
                        self._client._wake()
                yield item
        finally:
            self.close()


class Upload(UploadBase):
    """A client upload: ``with client.upload(...) as up: up.write(b"...")``. Leaving the
    block ends the upload (or fails it with the exception's code)."""

    _client: Client

    def __init__(self, client: Client, channel: str, stream_id: str, args: bytes) -> None:
        super().__init__(client, channel, stream_id, args)
        self._cond = threading.Condition(client._lock)

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
            core = self._started()
            with self._cond:
                while not core.settled:
                    self._client._wake()
                    self._cond.wait()
            if core.error is not None:
                raise core.error


class Client(ClientBase[Subscription[bytes], Subscription[bytes | Gap]]):
    """A connection to a streamproto server that reconnects and resumes (from :func:`connect`).
    One thread reads (and reconnects), one writes; ``close()`` joins both."""

    _lock: threading.RLock  # the one lock around every call into the core

    def __init__(self, core: ClientCore, timeout: float) -> None:
        super().__init__(core)
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)  # ready, failed or closing
        self._timeout = timeout
        self._sock: socket.socket | None = None
        self._writer: _Writer | None = None
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
                writer = self._writer = _Writer(self._lock, sock, core)
            try:
                _read(sock, self._lock, core, writer)
            finally:
                with self._lock:
                    self._sock = self._writer = None
                    core.lost()
            sock = self._reconnect()

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
        if self._writer is not None:
            self._writer.wake()

    def _subscription(self, core: SubscriptionCore) -> Subscription[Any]:
        return Subscription(self, core)

    def upload(self, channel: str, stream_id: str = "", args: bytes = b"") -> Upload:
        """An upload, used as ``with client.upload(...) as up``."""
        return Upload(self, channel, stream_id, args)

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
