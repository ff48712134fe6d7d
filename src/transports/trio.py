"""The trio backend: a server that serves a hub, and a client, over TCP or WebSocket.

Each socket gets two tasks: a reader that feeds ``receive_some`` to the sans-IO side, and a
writer that sleeps until something wakes it (the reader, the hub, the application) or its
deadline passes, then writes ``step()``. Only the writer writes, so there is no send lock.
:func:`serve` and :func:`connect` are async context managers: their tasks need a nursery.
Everything else is decided in ``_common`` and the core.

Clocks: each connection runs on ``trio.current_time`` (its deadlines are only ever compared
with its own clock, and trio's MockClock then drives keepalive in tests). The hub's deadlines
are in the clock its creator injected, ``time.monotonic`` by convention (the asyncio backend
assumes the same), so the hub timer waits their distance from ``time.monotonic()`` in trio time.
"""

from __future__ import annotations

import contextlib
import functools
import math
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from types import TracebackType
from typing import Any, Generic, TypeVar, cast, overload

import trio

from streamproto import (
    Config,
    ErrorCode,
    HttpOptions,
    Hub,
    Producer,
    UploadReader,
    WriteResult,
)
from streamproto._codec import Codec

from ._common import (
    _V,
    FLUSH_SLICE,
    AsyncBidiBase,
    AsyncProducerBase,
    AsyncQueries,
    Backoff,
    Bidis,
    ClientBase,
    ClientCore,
    Gap,
    Pacer,
    QueryCore,
    QueryRequest,
    ServerBase,
    ServerDriver,
    ServerUploadBase,
    Side,
    StreamError,
    SubscriptionBase,
    SubscriptionCore,
    UploadBase,
    UploadCore,
    Uploads,
    always_reads,
    handler_failed,
    log,
    parse_url,
    read_upload,
)
from ._schemes import (
    HTTP,
    TCP,
    UNIX,
    WS,
    Url,
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
#: What a ``_Chunks`` iterator yields: an item, or a batch (a list) of them.
_I = TypeVar("_I")

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
#: How long a closing socket gets to write its goodbye.
_LINGER = 1.0


# -- urls ---------------------------------------------------------------------------------------

#: This backend's name in the scheme registry (:func:`transports.adapter.register_scheme`).
BACKEND = "trio"


async def _listen_tcp(url: Url, backlog: int) -> list[trio.abc.Listener[trio.abc.Stream]]:
    return list(await trio.open_tcp_listeners(url.port, host=url.host, backlog=backlog))


async def _connect_tcp(url: Url) -> trio.abc.Stream:
    return await trio.open_tcp_stream(url.host, url.port)


async def _listen_unix(url: Url, backlog: int) -> list[trio.abc.Listener[trio.abc.Stream]]:
    return [trio.SocketListener(trio.socket.from_stdlib_socket(unix_listener(url.path, backlog)))]


async def _connect_unix(url: Url) -> trio.abc.Stream:
    return await trio.open_unix_socket(url.path)


for _scheme in (TCP, WS, HTTP):
    register_scheme(BACKEND, _scheme, listen=_listen_tcp, connect=_connect_tcp)
register_scheme(BACKEND, UNIX, listen=_listen_unix, connect=_connect_unix)


async def _tick(pacer: Pacer, chunks: int, nbytes: int) -> None:
    """After a write: a checkpoint, a full one when the pacer says so (every write stays a
    cancel point)."""
    if pacer.due(chunks, nbytes):
        await trio.lowlevel.checkpoint()
    else:
        await trio.lowlevel.checkpoint_if_cancelled()


class _Wake:
    """A level-triggered wakeup: ``wait()`` returns once ``set()`` was called since the last
    ``wait()`` returned, or at ``deadline`` (trio time). Waiters re-check their state."""

    def __init__(self) -> None:
        self._event = trio.Event()

    def set(self) -> None:
        self._event.set()

    async def wait(self, deadline: float = math.inf) -> None:
        if deadline == math.inf:  # a cancel scope per wait costs more than the rest
            await self._event.wait()
        else:
            with trio.move_on_at(deadline):
                await self._event.wait()
        if self._event.is_set():
            self._event = trio.Event()


@contextlib.contextmanager
def _unwrap() -> Iterator[None]:
    # Strict nurseries wrap even the body's own exception in an ExceptionGroup; users of
    # ``async with serve(...)`` / ``connect(...)`` should see the exception they raised.
    try:
        yield
    except BaseExceptionGroup as group:
        if len(group.exceptions) != 1:
            raise
        exc = group.exceptions[0]
        raise exc from exc.__cause__


async def _read(
    stream: trio.abc.Stream,
    side: Side,
    wake: _Wake,
    cancel: Callable[[], None],
    *,
    readable: _Wake | None = None,
) -> None:
    while True:
        try:
            data = await stream.receive_some(_RECEIVE)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            data = b""
        side.receive(bytes(data))
        wake.set()
        if side.stalled:  # the writer is stuck in a send the peer never takes
            cancel()
        if not data:
            return
        while readable is not None and not side.reading and not side.finished:
            await readable.wait()  # an HTTP upload beyond its credit: the writer says when


async def _write(
    stream: trio.abc.Stream,
    side: Side,
    wake: _Wake,
    stall: float,
    *,
    before: Callable[[], None],
    after: Callable[[], None],
    readable: _Wake | None = None,
) -> None:
    while True:
        before()
        data = side.step(FLUSH_SLICE)
        after()
        if readable is not None and side.reading:
            readable.set()
        if data:
            side.output_blocked(True)
            try:
                with trio.move_on_after(stall) as sending:
                    await stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            if sending.cancelled_caught:  # stalled (R-LIM-20): the stream is unusable now
                side.step()  # the stall timer fires: the connection ends with EXCESSIVE_LOAD
                return
            side.output_blocked(False)
            continue  # the reader may have queued more (a GOAWAY, say) while this was sent
        if side.finished:
            return
        deadline = side.deadline()
        await wake.wait(math.inf if deadline is None else deadline)


async def _run_socket(
    stream: trio.abc.Stream,
    side: Side,
    wake: _Wake,
    scope: trio.CancelScope,
    *,
    before: Callable[[], None] = lambda: None,
    after: Callable[[], None] = lambda: None,
    stall: float = math.inf,
) -> None:
    """Drive one socket until its side is finished (or ``scope`` is cancelled), then close it.
    ``before`` and ``after`` run around each step of the side. A send that takes nothing
    for ``stall`` seconds ends it."""
    try:
        with scope:
            async with trio.open_nursery() as nursery:
                # Only a side that may stop reading (HTTP) needs the gate; the others always read.
                readable = None if always_reads(side) else _Wake()
                cancel = nursery.cancel_scope.cancel
                nursery.start_soon(
                    functools.partial(_read, stream, side, wake, cancel, readable=readable)
                )
                await _write(
                    stream, side, wake, stall, before=before, after=after, readable=readable
                )
                nursery.cancel_scope.cancel()
    finally:
        await trio.aclose_forcefully(stream)


async def _run_handler(
    fn: Callable[..., Awaitable[None]],
    target: Producer | UploadReader | None,
    args: tuple[Any, ...],
) -> None:
    try:
        await fn(*args)
    except Exception as exc:
        if target is None:
            log.exception("task %r failed", fn)
        else:
            handler_failed(target, exc)


# -- producer side ------------------------------------------------------------------------------


class ServerProducer(AsyncProducerBase[_V]):
    """A stream's writing end for trio code: ``await write`` waits under the BLOCK policy;
    ``aborted`` is set when the last subscriber cancelled (``abort_reason`` says why).
    ``await pipe(source)`` writes an async iterable and ends the stream. Values are
    ``bytes``, or what the channel's codec encodes (``ServerProducer[T]``).

    Outside our servers (a hub run by another framework in this trio run), wrap a hub
    producer yourself: ``ServerProducer(channel.start(), codec=JSON)``."""

    aborted: trio.Event

    def _signals(self) -> None:
        self.aborted = trio.Event()
        self._writable = _Wake()
        self.producer.on_writable = self._writable.set

    @contextlib.asynccontextmanager
    async def _interrupting(self) -> AsyncIterator[None]:
        with trio.CancelScope() as scope:  # a cancel of this scope ends at its exit
            self._interrupt = scope.cancel
            try:
                yield
            finally:
                self._interrupt = None

    async def write(self, value: _V) -> None:
        """Write ``value``; waits while a BLOCK subscriber has no room. Raises once the
        stream is over, also while the write waits: STREAM_CLOSED, or the code the hub ended
        it with (STREAM_DELETED, STREAM_EXPIRED, a store's)."""
        codec = self.codec  # (inline: this is the per-chunk path)
        chunk: bytes = value if codec is None else codec.encode(value)  # type: ignore[assignment]
        while self.producer.write(chunk) is not WriteResult.ACCEPTED:
            await self._writable.wait()
        await _tick(self._pacer, 1, len(chunk))

    async def write_many(self, values: Sequence[_V]) -> None:
        """Write ``values`` in order, as that many ``write`` calls would, for much less per
        chunk; waits while a BLOCK subscriber has no room for the next one."""
        chunks = self._encode_many(values)
        rest = chunks
        while rest:
            written, result = self.producer.write_many(rest)
            if result is WriteResult.ACCEPTED:
                break
            rest = rest[written:]
            await self._writable.wait()
        await _tick(self._pacer, len(chunks), sum(map(len, chunks)))


class ServerUpload(ServerUploadBase):
    """The server's end of an upload: ``async for chunk in upload``. Raises
    :class:`StreamError` (UPLOAD_DISCONNECTED, the uploader's code, ...) if it did not end well."""

    def __init__(self, server: Server, reader: UploadReader) -> None:
        super().__init__(server, reader)
        self._wake = _Wake()
        reader.on_readable = self._wake.set

    async def _serve(self, handler: Callable[[ServerUpload], Awaitable[object]]) -> None:
        self._returned(await handler(self))

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        while True:
            chunk = read_upload(self.reader)
            if chunk is not None:
                return chunk
            if self.reader.outcome is not None:
                raise StopAsyncIteration
            await self._wake.wait()


# -- server -------------------------------------------------------------------------------------


class _Connection:
    __slots__ = ("driver", "scope", "wake")

    def __init__(self, driver: ServerDriver, wake: _Wake) -> None:
        self.driver = driver
        self.wake = wake
        self.scope = trio.CancelScope()


class Server(ServerBase[ServerProducer[Any], ServerUpload]):
    """A running server (from :func:`serve`); its tasks live until :meth:`shutdown`."""

    def __init__(
        self,
        hub: Hub | None,
        url: str,
        config: Config | None,
        http: HttpOptions | None = None,
        trace: Tracer | None = None,
    ) -> None:
        super().__init__(hub, url, config, http, trace)
        self.drivers: set[_Connection] = set()
        self._tasks: trio.Nursery | None = None
        self._scope = trio.CancelScope()  # every task of the server
        self._listening = trio.CancelScope()
        self._hub_wake = _Wake()
        self._hub_at: float | None = None
        self._idle = _Wake()
        self._closed = False
        # Producer writes are held by the hub and delivered as runs (Hub.flush_writes) by
        # the _deliver_held task, which runs after the tasks runnable when the first was held.
        self._held = _Wake()

    def _producer(self, producer: Producer) -> ServerProducer[Any]:
        return ServerProducer(producer, server=self)

    def _upload(self, reader: UploadReader) -> ServerUpload:
        return ServerUpload(self, reader)

    def spawn(self, fn: Callable[..., Awaitable[None]], *args: Any) -> None:
        """Run ``fn(*args)`` as a task of the server (cancelled at shutdown; errors logged)."""
        self._start(fn, None, *args)

    def _start(
        self, fn: Callable[..., Awaitable[None]], target: Producer | UploadReader | None, *args: Any
    ) -> None:
        if self._tasks is None or self._closed:
            raise StreamError(ErrorCode.INVALID_STATE, "the server is not running")
        self._tasks.start_soon(_run_handler, fn, target, args)

    async def _run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with self._scope:
            async with trio.open_nursery() as nursery:
                self._tasks = nursery
                listen = endpoint(BACKEND, self.url).listen
                listeners = await listen(self.url, self.config.listen_backlog)
                sock = getattr(listeners[0], "socket", None)
                self.port = 0 if sock is None else bound_port(sock.getsockname())
                self._log_listening()
                nursery.start_soon(self._listen, listeners)
                nursery.start_soon(self._hub_timer)
                nursery.start_soon(self._deliver_held)
                task_status.started()

    async def _listen(self, listeners: list[trio.abc.Listener[trio.abc.Stream]]) -> None:
        with self._listening:
            await trio.serve_listeners(self._handle, listeners, handler_nursery=self._tasks)

    async def _handle(self, stream: trio.abc.Stream) -> None:
        wake = _Wake()
        driver = self._driver(None, trio.current_time, wake.set)
        conn = _Connection(driver, wake)
        self.drivers.add(conn)
        try:
            stall = self.config.output_stall_timeout
            await _run_socket(
                stream,
                driver,
                wake,
                conn.scope,
                # Writes held this turn first: a handler's first chunk goes with the ACCEPT.
                before=self.hub.flush_writes,
                after=self._rearm_hub,
                stall=stall,
            )
        except Exception:  # a bug must cost one connection, not the server
            log.exception("connection failed")
        finally:
            driver.connection_lost()
            self._gone(driver)
            self.drivers.discard(conn)
            self._idle.set()
            self._rearm_hub()

    def _rearm_hub(self) -> None:
        if self.hub.next_deadline() != self._hub_at:
            self._hub_wake.set()

    async def _hub_timer(self) -> None:
        hub = self.hub
        while True:
            at = self._hub_at = hub.next_deadline()
            if at is not None and time.monotonic() >= at:
                hub.handle_timer()
                continue
            until = math.inf if at is None else trio.current_time() + (at - time.monotonic())
            await self._hub_wake.wait(until)

    async def _deliver_held(self) -> None:
        # One wake per run of held writes: set() reschedules this task, which trio runs in
        # its next batch, after every task that was runnable (and writing) in this one.
        hub, held = self.hub, self._held
        hub.on_writes_held = held.set
        try:
            while True:
                await held.wait()
                hub.flush_writes()
        finally:
            if hub.on_writes_held == held.set:  # the hub may outlive this server
                hub.on_writes_held = None
                hub.flush_writes()

    def _goaway(self, code: int) -> None:
        for conn in list(self.drivers):
            conn.driver.shutdown(code)
            conn.wake.set()

    async def shutdown(self, timeout: float = 5.0) -> None:
        """Stop listening, GOAWAY to every connection, let open streams drain for up to
        ``timeout`` seconds, then close what is left (GOAWAY SERVER_SHUTDOWN) and cancel the
        server's tasks."""
        if self._closed:
            return
        self._closed = True
        self._log_shutdown(timeout)
        try:
            self._listening.cancel()
            self.url.unbind()
            self._goaway(ErrorCode.NO_ERROR)
            with trio.move_on_after(timeout):
                while self.drivers:
                    await self._idle.wait()
            self._goaway(ErrorCode.SERVER_SHUTDOWN)
            with trio.move_on_after(_LINGER):
                while self.drivers:
                    await self._idle.wait()
        finally:
            self._scope.cancel()


@contextlib.asynccontextmanager
async def serve(
    hub: Hub | None,
    url: str,
    *,
    config: Config | None = None,
    http: HttpOptions | None = None,
    trace: Tracer | None = None,
) -> AsyncIterator[Server]:
    """Serve ``hub`` at ``url`` (``tcp://host:port``, ``ws://host:port/path``,
    ``http://host:port``: SSE and HTTP as spec/HTTP.md says, with ``http`` options, and
    WebSocket upgrades, ``unix:///path``, or a scheme registered with
    :func:`transports.adapter.register_scheme`; port 0 picks a free one, see
    :attr:`Server.address`):
    ``async with serve(hub, url) as server``.
    Leaving the block shuts the server down. ``hub`` None serves a
    :func:`transports.new_hub` (128-bit random ids), as :attr:`Server.hub`."""
    server = Server(hub, url, config, http, trace)
    with _unwrap():
        async with trio.open_nursery() as nursery:
            await nursery.start(server._run)
            try:
                yield server
            finally:
                await server.shutdown(timeout=1.0)


# -- client -------------------------------------------------------------------------------------


class Subscription(SubscriptionBase[_T]):
    """A client subscription: ``async for chunk in sub`` yields chunk payloads in order;
    ``sub.seq`` is the seq of the last one. Gaps raise :class:`GapError` (the subscription stays
    open: a new loop goes on after the gap) or arrive as :class:`Gap` items, as chosen at
    subscribe time. Breaking out of the loop, ``aclose()`` or cancelling the task sends
    CANCEL."""

    def __init__(self, client: Client, core: SubscriptionCore) -> None:
        super().__init__(client, core)
        self._wake = _Wake()
        core.notify = self._wake.set

    @overload
    def decoded(self: Subscription[bytes], codec: Codec[_W]) -> Subscription[_W]: ...

    @overload
    def decoded(self: Subscription[bytes | Gap], codec: Codec[_W]) -> Subscription[_W | Gap]: ...

    def decoded(self, codec: Codec[Any]) -> Subscription[Any]:
        """This subscription, handing out the values ``codec`` decodes (e.g.
        :data:`streamproto.JSON`, or ``JsonCodec[T]()`` for values typed ``T``) instead of
        payloads: ``async for value in client.open(...).decoded(JSON)``. Call it before
        iterating. A payload the codec cannot decode raises
        :class:`streamproto.DecodeError` (DECODE_FAILED, with its ``seq`` and ``data``) out
        of the loop once the values before it were handed out; the loop ends there, as for
        any error."""
        self._use(codec)
        return self

    async def accepted(self) -> str:
        """Wait until the server accepted the request; returns the stream id."""
        while not self._core.check_accepted():
            await self._wake.wait()
        return self._core.stream_id

    def __aiter__(self) -> _Chunks[_T]:
        return _Chunks(self, self._core.poller, slices=True)

    def batches(self, max_chunks: int | None = None) -> _Chunks[list[_T]]:
        """``async for batch in sub.batches()``: lists of the payloads that have arrived (at
        most ``max_chunks`` each), in order, with no wait between chunks that are already
        here; ``sub.seq`` is the seq of the last chunk of the last batch. Gaps, errors,
        credit and CANCEL on leaving are as for ``async for chunk in sub``; a gap under
        ``on_gap="raise"`` ends the batch before it and raises on the next one."""
        return _Chunks(self, self._batch_poll(max_chunks))

    async def aclose(self) -> None:
        """Same as :meth:`close`."""
        self.close()


class _Chunks(Generic[_I]):
    # Not an async generator: trio warns when one is collected unfinished, which is exactly
    # what breaking out of ``async for`` does. This iterator sends CANCEL when it raises (an
    # error, the task's cancellation), when it is closed, and when it is dropped (a break).

    def __init__(
        self, sub: Subscription[Any], poll: Callable[[], Any], *, slices: bool = False
    ) -> None:
        self._sub = sub
        self._poll = poll
        self._take = sub._core.take_slice if slices else lambda: None
        self._part: Iterator[Any] | None = None  # a slice being handed out (_hand_out)
        self._kept = False  # its last step left the subscription open (a gap): dropped or not

    def __aiter__(self) -> _Chunks[_I]:
        return self

    async def __anext__(self) -> _I:
        self._kept = False
        part = self._part
        if part is not None:  # what has arrived, without a poll per chunk
            chunk: _I | None = next(part, None)
            if chunk is not None:
                return chunk
            self._part = None
        sub = self._sub
        core = sub._core
        poll = self._poll
        try:
            while True:
                taken = self._take()
                if taken is not None:
                    self._part = part = sub._hand_out(taken)
                    return next(part)  # type: ignore[return-value]
                item: _I | None = poll()
                if item is not None:
                    if core.reported:  # the credit it returned goes out
                        core.reported = False
                        sub._client._wake()
                    return item
                if core.finished:
                    raise StopAsyncIteration
                await sub._wake.wait()
        except BaseException as exc:
            self._kept = sub._stopped(exc)
            raise

    async def aclose(self) -> None:
        self._sub.close()

    def __del__(self) -> None:
        if self._kept:
            return
        with contextlib.suppress(Exception):  # dropped outside trio.run: nobody to wake
            self._sub.close()


class Upload(UploadBase):
    """A client upload: ``async with client.upload(...) as up: await up.write(b"...")``.
    Leaving the block ends the upload (or fails it with the exception's code)."""

    _client: Client

    def _made(self) -> None:
        self._wake = _Wake()
        self._pacer = Pacer()

    async def __aenter__(self) -> Upload:
        await self._client._wait_ready()
        core = self._begin(self._wake.set)
        while not core.check_accepted():
            await self._wake.wait()
        return self

    async def write(self, chunk: bytes) -> None:
        """Send a chunk; waits for credit."""
        core = self._started()
        while core.write(chunk) is not WriteResult.ACCEPTED:
            self._client._wake()
            await self._wake.wait()
        self._client._wake()
        await _tick(self._pacer, 1, len(chunk))

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._finish(exc)
        if exc is None:  # wait until it is all out, so a cancel meanwhile is not missed
            core = await self._drained()
            if core.error is not None:
                raise core.error

    async def _drained(self) -> UploadCore:
        """Wait until the upload is over (drained after END, cancelled or lost)."""
        core = self._started()
        while not core.settled:
            self._client._wake()
            await self._wake.wait()
        return core

    async def result(self) -> bytes:
        """The server's answer to the upload, once it is complete: what the handler returned
        (with ``result=True``; b"" otherwise). Raises the upload's error. Call it after the
        ``async with`` block, which ends the upload."""
        await self._drained()
        return self._result()


class Bidi(AsyncBidiBase, Upload):
    """A bidirectional stream: ``async with client.bidi(channel, args) as stream``, then
    ``await stream.write(chunk)`` sends on the client's direction and ``async for chunk in
    stream`` reads the server's, on one handle (spec section 6.4); see the asyncio
    :class:`transports.asyncio.Bidi`, which this mirrors."""

    _client: Client

    def __aiter__(self) -> _Chunks[bytes]:
        return cast(Subscription[bytes], self._incoming()).__aiter__()

    def batches(self, max_chunks: int | None = None) -> _Chunks[list[bytes]]:
        """The server's direction in batches, as :meth:`Subscription.batches`."""
        return cast(Subscription[bytes], self._incoming()).batches(max_chunks)


class Client(
    ClientBase[Subscription[bytes], Subscription[bytes | Gap]],
    Uploads[Upload],
    Bidis[Bidi],
    AsyncQueries,
):
    """A connection to a streamproto server that reconnects and resumes (from :func:`connect`)."""

    _upload_type = Upload
    _bidi_type = Bidi

    def __init__(self, core: ClientCore) -> None:
        super().__init__(core)
        self._writer = _Wake()  # the writer of the current socket
        self._ready = _Wake()
        self._socket = trio.CancelScope()  # the current socket's tasks
        self._task = trio.CancelScope()  # the connection task, reconnects included
        self._done = trio.Event()
        self._closing = False
        core.on_ready = self._ready.set

    async def _run(self, stream: trio.abc.Stream | None) -> None:
        core = self.core
        with self._task:
            try:
                while stream is not None:
                    core.new_connection()
                    self._socket = trio.CancelScope()
                    await _run_socket(stream, core, self._writer, self._socket)
                    core.lost()
                    stream = None if self._closing else await self._reconnect()
            finally:
                self._done.set()

    async def _reconnect(self) -> trio.abc.Stream | None:
        core = self.core
        while True:
            delay = core.reconnect_delay()
            if delay is None:
                core.give_up()
                return None
            await trio.sleep(delay)
            try:
                stream: trio.abc.Stream = await endpoint(BACKEND, core.url).connect(core.url)
            except OSError:
                continue
            return stream

    async def _ask(self, request: QueryRequest) -> QueryCore:
        await self._wait_ready()
        wake = _Wake()
        q = self._query(request, wake.set)
        while not q.done:
            await wake.wait()
        return q

    async def _wait_ready(self) -> None:
        while not self.core.ready:
            if self.core.failure is not None:
                raise self.core.failure
            await self._ready.wait()

    def _wake(self) -> None:
        self._writer.set()

    def _subscription(self, core: SubscriptionCore) -> Subscription[Any]:
        return Subscription(self, core)

    def abort_transport(self) -> None:
        """Kill the socket without a goodbye (tests and demos of resume)."""
        self._socket.cancel()

    async def close(self) -> None:
        """Say GOAWAY and close; no reconnect. Open subscriptions and uploads fail."""
        connected = self.core.conn is not None
        if not self._closing:
            self._closing = True
            self.core.close()
            self._wake()
        try:
            if connected:
                with trio.move_on_after(_LINGER):
                    await self._done.wait()
        finally:
            self._task.cancel()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


@contextlib.asynccontextmanager
async def connect(
    url: str,
    *,
    config: Config | None = None,
    auth: bytes = b"",
    reconnect: Backoff | None = None,
    rng: random.Random | None = None,
    timeout: float = 10.0,
    trace: Tracer | None = None,
) -> AsyncIterator[Client]:
    """Connect to ``url`` and complete the handshake: ``async with connect(url) as client``.
    ``reconnect`` (default: a :class:`Backoff`) reconnects and resumes after a lost
    connection; pass ``Backoff(attempts=0)`` to disable it. ``trace`` gets a record per frame
    (see :mod:`transports.trace`)."""
    target = parse_url(url)
    endpoint(BACKEND, target)  # an unknown scheme fails here, not in the reconnect loop
    core = ClientCore(
        target,
        config=config,
        auth=auth,
        clock=trio.current_time,
        backoff=reconnect if reconnect is not None else Backoff(),
        rng=rng,
        trace=trace,
    )
    client = Client(core)
    with _unwrap():
        async with trio.open_nursery() as nursery:
            try:
                with trio.move_on_after(timeout) as scope:
                    stream = await endpoint(BACKEND, core.url).connect(core.url)
                    nursery.start_soon(client._run, stream)
                    await client._wait_ready()
                if scope.cancelled_caught:
                    raise TimeoutError(f"no handshake with {url} within {timeout} s")
                yield client
            finally:
                await client.close()
