"""The asyncio backend: a server that serves a hub, and a client, over TCP or WebSocket.

Built on asyncio's Protocol/transport level (no streams): ``data_received`` feeds the
sans-IO driver and writes its answer in the same callback, and hub wakeups coalesce into one
flush per loop iteration. Everything else is decided in ``_common`` and the core.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any, TypeVar, cast, overload

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
    QueryCore,
    QueryRequest,
    ServerBase,
    ServerDriver,
    ServerUploadBase,
    SubscriptionBase,
    SubscriptionCore,
    UploadBase,
    UploadCore,
    Uploads,
    handler_failed,
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


_ACCEPTED = WriteResult.ACCEPTED
#: How long a closing socket gets to write its goodbye before it is aborted.
_LINGER = 1.0


# -- urls ---------------------------------------------------------------------------------------

#: This backend's name in the scheme registry (:func:`transports.adapter.register_scheme`).
BACKEND = "asyncio"


async def _listen_tcp(
    url: Url, factory: Callable[[], asyncio.Protocol], backlog: int
) -> asyncio.AbstractServer:
    loop = asyncio.get_running_loop()
    return await loop.create_server(factory, url.host, url.port, backlog=backlog)


async def _connect_tcp(
    url: Url, factory: Callable[[], asyncio.Protocol]
) -> tuple[asyncio.BaseTransport, asyncio.Protocol]:
    return await asyncio.get_running_loop().create_connection(factory, url.host, url.port)


async def _listen_unix(
    url: Url, factory: Callable[[], asyncio.Protocol], backlog: int
) -> asyncio.AbstractServer:
    loop = asyncio.get_running_loop()
    return await loop.create_unix_server(factory, sock=unix_listener(url.path, backlog))


async def _connect_unix(
    url: Url, factory: Callable[[], asyncio.Protocol]
) -> tuple[asyncio.BaseTransport, asyncio.Protocol]:
    return await asyncio.get_running_loop().create_unix_connection(factory, url.path)


for _scheme in (TCP, WS, HTTP):
    register_scheme(BACKEND, _scheme, listen=_listen_tcp, connect=_connect_tcp)
register_scheme(BACKEND, UNIX, listen=_listen_unix, connect=_connect_unix)


def _write_slices(
    transport: asyncio.Transport,
    side: ServerDriver | ClientCore,
    writer: _ServerProtocol | _ClientProtocol,
) -> None:
    """Write ``side``'s output a slice at a time while the transport is below its high-water
    mark (``writer.paused`` is false), so that its buffer holds at most that mark and one
    slice. What is not written waits in the core, under its queue limits (a writer beyond them
    waits for room), which picks by priority when ``resume_writing`` flushes again."""
    while not writer.paused:
        data = side.outgoing(FLUSH_SLICE)
        if not data:
            return
        transport.write(data)
        if side.finished:
            return


# -- producer side ------------------------------------------------------------------------------


class ServerProducer(AsyncProducerBase[_V]):
    """A stream's writing end for asyncio code: ``await write`` waits under the BLOCK
    policy; ``aborted`` is set when the last subscriber cancelled (``abort_reason`` says
    why). ``await pipe(source)`` writes an async iterable and ends the stream. Values are
    ``bytes``, or what the channel's codec encodes (``ServerProducer[T]``).

    Outside our servers (a hub run by another framework on this loop), wrap a hub
    producer yourself: ``ServerProducer(channel.start(), codec=JSON)``."""

    aborted: asyncio.Event

    def _signals(self) -> None:
        self.aborted = asyncio.Event()
        self._writable = asyncio.Event()
        self.producer.on_writable = self._writable.set

    @contextlib.asynccontextmanager
    async def _interrupting(self) -> AsyncIterator[None]:
        task = asyncio.current_task()
        fired = False

        def interrupt() -> None:
            nonlocal fired
            fired = True
            cast(asyncio.Task[Any], task).cancel()

        self._interrupt = interrupt
        try:
            yield
        except asyncio.CancelledError:
            # Ours only if nobody else cancelled the task too (asyncio.timeout's rule).
            if not fired or cast(asyncio.Task[Any], task).uncancel() > 0:
                raise
        finally:
            self._interrupt = None

    async def write(self, value: _V) -> None:
        """Write ``value``; waits while a BLOCK subscriber has no room. Raises once the
        stream is over, also while the write waits: STREAM_CLOSED, or the code the hub ended
        it with (STREAM_DELETED, STREAM_EXPIRED, a store's)."""
        codec = self.codec  # (inline: this is the per-chunk path)
        chunk: bytes = value if codec is None else codec.encode(value)  # type: ignore[assignment]
        while self.producer.write(chunk) is not _ACCEPTED:
            self._writable.clear()  # (on_writable comes later than a BLOCKED answer)
            await self._writable.wait()
        if self._pacer.due(1, len(chunk)):
            await asyncio.sleep(0)

    async def write_many(self, values: Sequence[_V]) -> None:
        """Write ``values`` in order, as that many ``write`` calls would, for much less per
        chunk; waits while a BLOCK subscriber has no room for the next one."""
        chunks = self._encode_many(values)
        rest = chunks
        while rest:
            written, result = self.producer.write_many(rest)
            if result is _ACCEPTED:
                break
            rest = rest[written:]
            self._writable.clear()
            await self._writable.wait()
        if self._pacer.due(len(chunks), sum(map(len, chunks))):
            await asyncio.sleep(0)


class ServerUpload(ServerUploadBase):
    """The server's end of an upload: ``async for chunk in upload``. Raises
    :class:`StreamError` (UPLOAD_DISCONNECTED, the uploader's code, ...) if it did not end well."""

    def __init__(self, server: ServerBase[Any, Any], reader: UploadReader) -> None:
        super().__init__(server, reader)
        self._event = asyncio.Event()
        reader.on_readable = self._event.set

    async def _serve(self, handler: Callable[[ServerUpload], Awaitable[object]]) -> None:
        self._returned(await handler(self))

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        while True:
            self._event.clear()
            chunk = read_upload(self.reader)
            if chunk is not None:
                return chunk
            if self.reader.outcome is not None:
                raise StopAsyncIteration
            await self._event.wait()


# -- server -------------------------------------------------------------------------------------


class _ServerProtocol(asyncio.Protocol):
    def __init__(self, server: Server) -> None:
        self.server = server
        self.loop = server.loop
        self.transport: asyncio.Transport | None = None
        self.driver: ServerDriver | None = None
        self.scheduled = False
        self.paused = False
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at: float | None = None
        self.read_paused = False
        self.linger: asyncio.TimerHandle | None = None  # aborts a close that does not drain

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        server = self.server
        driver = server._driver(None, self.loop.time, self.wakeup)
        self.driver = driver
        server.protocols.add(self)
        if server._goodbye is not None:  # accepted as the server shut down: told so, closed
            driver.shutdown(server._goodbye)
        self.flush()

    def data_received(self, data: bytes) -> None:
        driver = self.driver
        if driver is not None:
            driver.receive(data)
            if not driver.reading and not self.read_paused and self.transport is not None:
                self.read_paused = True  # an HTTP upload beyond its credit
                self.transport.pause_reading()
            if data and not driver.finished:
                # Flushed soon, not now: a handler this input started (an OPEN) runs first,
                # so the ACCEPT leaves in one write with the handler's first chunks.
                self.wakeup()
            else:  # the end of input, or of the connection: out before the transport closes
                self.flush()

    def eof_received(self) -> bool | None:
        self.data_received(b"")
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        driver = self.driver
        self.server.protocols.discard(self)
        if self.timer is not None:
            self.timer.cancel()
        if self.linger is not None:
            self.linger.cancel()
        if driver is not None:
            driver.connection_lost()
            self.server._gone(driver)
        self.transport = None
        self.server._rearm_hub()

    def pause_writing(self) -> None:
        self.paused = True
        if self.driver is not None:
            self.driver.output_blocked(True)
            self._arm(self.driver)

    def resume_writing(self) -> None:
        self.paused = False
        if self.driver is not None:
            self.driver.output_blocked(False)
        self.flush()

    def wakeup(self) -> None:
        if not self.scheduled:
            self.scheduled = True
            woken = self.server._woken
            if woken is None:
                self.loop.call_soon(self.flush)
            else:  # Server._deliver_held flushes it once the hub is done
                woken.append(self)

    def flush(self) -> None:
        # Writes held this turn first (a handler's first chunk goes with the ACCEPT); while
        # ``scheduled`` is still set, delivering them does not schedule this flush again.
        self.server.hub.flush_writes()
        self.scheduled = False
        driver, transport = self.driver, self.transport
        if driver is None or transport is None:
            return
        if self.read_paused and driver.reading:
            self.read_paused = False
            transport.resume_reading()
        if self.paused:
            if driver.finished:
                # Over (a GOAWAY for a peer that floods and does not read, say): the goodbye
                # goes behind what the peer has not read, and reading stops now rather than
                # once it drains; stalled output is dropped (R-LIM-20), not kept for a peer
                # that may never read it.
                transport.write(driver.outgoing())
                self._close(driver, transport)
            return
        _write_slices(transport, driver, self)
        if driver.finished:
            self._close(driver, transport)
            return
        self._arm(driver)

    def _close(self, driver: ServerDriver, transport: asyncio.Transport) -> None:
        if driver.stalled:
            transport.abort()
            return
        transport.close()
        if self.linger is None and transport.get_write_buffer_size():
            # close() waits for the buffer to drain, which a peer that does not read never
            # lets happen: what it holds counts as stalled output (R-LIM-20), from the pause
            # if there was one, else from now, and is dropped when the stall timeout runs out.
            driver.output_blocked(True)
            deadline = cast(float, driver.guard.deadline())
            self.linger = self.loop.call_at(deadline, transport.abort)

    def _arm(self, driver: ServerDriver) -> None:
        deadline = driver.deadline()
        if deadline != self.timer_at:
            if self.timer is not None:
                self.timer.cancel()
            self.timer_at = deadline
            self.timer = None if deadline is None else self.loop.call_at(deadline, self.on_timer)
        self.server._rearm_hub()

    def on_timer(self) -> None:
        self.timer = None
        self.timer_at = None
        if self.driver is not None:
            self.driver.timer()
            self.flush()


async def _guard(handler: Awaitable[None], target: Producer | UploadReader | None) -> None:
    try:
        await handler
    except Exception as exc:
        if target is None:
            raise
        handler_failed(target, exc)


class Server(ServerBase[ServerProducer[Any], ServerUpload]):
    """A running server (from :func:`serve`). ``async with`` shuts it down on exit."""

    def __init__(
        self,
        hub: Hub | None,
        url: str,
        config: Config | None,
        http: HttpOptions | None = None,
        trace: Tracer | None = None,
    ) -> None:
        super().__init__(hub, url, config, http, trace)
        self.loop = asyncio.get_running_loop()
        self.protocols: set[_ServerProtocol] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.AbstractServer | None = None
        # The GOAWAY code of the shutdown under way (None: serving), for every connection.
        self._goodbye: ErrorCode | None = None
        self._hub_timer: asyncio.TimerHandle | None = None
        self._hub_at: float | None = None
        # Producer writes are held by the hub until the end of the loop turn and delivered
        # as runs (Hub.flush_writes); while they are, the connections it wakes gather here.
        self._woken: list[_ServerProtocol] | None = None
        self.hub.on_writes_held = self._writes_held

    def _producer(self, producer: Producer) -> ServerProducer[Any]:
        return ServerProducer(producer, server=self)

    def _upload(self, reader: UploadReader) -> ServerUpload:
        return ServerUpload(self, reader)

    def _start(
        self, fn: Callable[..., Awaitable[None]], target: Producer | UploadReader | None, *args: Any
    ) -> None:
        self.spawn(_guard(fn(*args), target))

    def spawn(self, coro: Awaitable[None]) -> None:
        """Run a coroutine as a task owned by the server (cancelled at shutdown)."""
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _writes_held(self) -> None:
        self.loop.call_soon(self._deliver_held)

    def _deliver_held(self) -> None:
        woken: list[_ServerProtocol] = []
        self._woken = woken
        try:
            self.hub.flush_writes()
        finally:
            self._woken = None
        for proto in woken:  # now, not a loop turn later: a lone write waits no longer
            proto.flush()

    def _rearm_hub(self) -> None:
        deadline = self.hub.next_deadline()
        if deadline == self._hub_at:
            return
        if self._hub_timer is not None:
            self._hub_timer.cancel()
        self._hub_at = deadline
        self._hub_timer = (
            None if deadline is None else self.loop.call_at(deadline, self._on_hub_timer)
        )

    def _on_hub_timer(self) -> None:
        self._hub_timer = None
        self._hub_at = None
        self.hub.handle_timer()
        self._rearm_hub()

    async def _listen(self) -> None:
        listen = endpoint(BACKEND, self.url).listen
        server = await listen(self.url, lambda: _ServerProtocol(self), self.config.listen_backlog)
        self._server = server
        sockets = getattr(server, "sockets", ())
        self.port = bound_port(sockets[0].getsockname()) if sockets else 0
        self._log_listening()

    async def _stop_listening(self, server: asyncio.AbstractServer) -> None:
        """Close the listener without losing a socket it has accepted. asyncio accepts in one
        loop turn and makes the socket's transport in a task's first step; ``close()`` in
        between fails that step and leaves the socket open until the garbage collector finds
        it (CPython gh-109564). So the listening sockets stop being read first, and the steps
        already scheduled run (each comes before this task's next step) before ``close()``."""
        for sock in getattr(server, "sockets", None) or ():
            # A loop without remove_reader (Windows' proactor) closes at once, as before.
            with contextlib.suppress(NotImplementedError):
                self.loop.remove_reader(sock)
        await asyncio.sleep(0)
        server.close()

    def _say_goodbye(self, code: ErrorCode) -> None:
        """GOAWAY ``code`` to every connection, and to any accepted from now on."""
        self._goodbye = code
        for proto in list(self.protocols):
            if proto.driver is not None:
                proto.driver.shutdown(code)
                proto.flush()

    async def _closed_within(self, seconds: float) -> bool:
        """Wait up to ``seconds`` until every connection is closed; whether they all are."""
        deadline = self.loop.time() + seconds
        while self.protocols and self.loop.time() < deadline:
            await asyncio.sleep(0.01)
        return not self.protocols

    async def shutdown(self, timeout: float = 5.0) -> None:
        """Stop listening, GOAWAY to every connection, let open streams drain for up to
        ``timeout`` seconds, then close what is left (GOAWAY SERVER_SHUTDOWN; a socket whose
        peer does not take its goodbye within a second is aborted). Every socket is closed
        when it returns."""
        self._log_shutdown(timeout)
        if self._server is not None:
            await self._stop_listening(self._server)
            self.url.unbind()
        self._say_goodbye(ErrorCode.NO_ERROR)
        await self._closed_within(timeout)
        self._say_goodbye(ErrorCode.SERVER_SHUTDOWN)
        for proto in list(self.protocols):
            if proto.transport is not None:
                proto.transport.close()
        if not await self._closed_within(_LINGER):
            for proto in list(self.protocols):  # the peer does not read: its goodbye is dropped
                if proto.transport is not None:
                    proto.transport.abort()
            await self._closed_within(_LINGER)  # abort() closes in the next loop turn
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)
        if self._hub_timer is not None:
            self._hub_timer.cancel()
        if self.hub.on_writes_held == self._writes_held:  # the hub may outlive this loop
            self.hub.on_writes_held = None
            self.hub.flush_writes()
        if self._server is not None:
            await self._server.wait_closed()

    async def __aenter__(self) -> Server:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.shutdown(timeout=1.0)


async def serve(
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
    :attr:`Server.address`). ``hub`` None
    serves a :func:`transports.new_hub` (128-bit random ids), as :attr:`Server.hub`.
    ``trace`` gets a record per frame of every connection (see :mod:`transports.trace`)."""
    server = Server(hub, url, config, http, trace)
    await server._listen()
    return server


# -- client -------------------------------------------------------------------------------------


class _ClientProtocol(asyncio.Protocol):
    def __init__(self, client: Client) -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None
        self.lost = asyncio.Event()  # the socket is closed
        self.paused = False  # the transport's buffer is above its high-water mark

    async def closed(self) -> None:
        """Wait until the socket (closing now) is closed: what is left of its output gets
        ``_LINGER`` seconds to go out, then the socket is aborted (at once if cancelled)."""
        try:
            for _ in range(2):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.lost.wait(), _LINGER)
                    return
                self._abort()  # a peer that does not read: the goodbye is dropped
        except asyncio.CancelledError:
            self._abort()
            raise

    def _abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.client._flush()

    def data_received(self, data: bytes) -> None:
        client = self.client
        if client._proto is self:
            client.core.receive(data)
            client._flush()

    def eof_received(self) -> bool | None:
        self.data_received(b"")
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set()
        client = self.client
        if client._proto is self:
            client._on_lost()

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        client = self.client
        if client._proto is self:
            client._flush()


class Subscription(SubscriptionBase[_T]):
    """A client subscription: ``async for chunk in sub`` yields chunk payloads in order;
    ``sub.seq`` is the seq of the last one. Gaps raise :class:`GapError` (the subscription stays
    open: a new loop goes on after the gap) or arrive as :class:`Gap` items, as chosen at
    subscribe time. Breaking out of the loop, ``aclose()`` or cancelling the task sends
    CANCEL."""

    def __init__(self, client: Client, core: SubscriptionCore) -> None:
        super().__init__(client, core)
        self._event = asyncio.Event()
        core.notify = self._event.set

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
            self._event.clear()
            await self._event.wait()
        return self._core.stream_id

    def __aiter__(self) -> AsyncIterator[_T]:
        return self._iterate(self._core.poller, slices=True)

    def batches(self, max_chunks: int | None = None) -> AsyncIterator[list[_T]]:
        """``async for batch in sub.batches()``: lists of the payloads that have arrived (at
        most ``max_chunks`` each), in order, with no wait between chunks that are already
        here; ``sub.seq`` is the seq of the last chunk of the last batch. Gaps, errors,
        credit and CANCEL on leaving are as for ``async for chunk in sub``; a gap under
        ``on_gap="raise"`` ends the batch before it and raises on the next one."""
        return self._iterate(self._batch_poll(max_chunks))

    async def _iterate(
        self, poll: Callable[[], Any], *, slices: bool = False
    ) -> AsyncIterator[Any]:
        core = self._core
        event = self._event
        take = core.take_slice if slices else lambda: None
        with self._iterating():
            while True:
                # What has arrived is handed out from a slice, without a poll per chunk.
                part = take()
                if part is not None:
                    for chunk in self._hand_out(part):
                        yield chunk
                    continue
                item = poll()
                if item is not None:
                    if core.reported:  # the credit it returned goes out
                        core.reported = False
                        self._client._wake()
                    yield item
                elif core.finished:
                    return
                else:
                    await event.wait()
                    event.clear()

    async def aclose(self) -> None:
        """Same as :meth:`close`."""
        self.close()


class Upload(UploadBase):
    """A client upload: ``async with client.upload(...) as up: await up.write(b"...")``.
    Leaving the block ends the upload (or fails it with the exception's code)."""

    _client: Client

    def _made(self) -> None:
        self._event = asyncio.Event()

    async def __aenter__(self) -> Upload:
        await self._client._ready()
        core = self._begin(self._event.set)
        while not core.check_accepted():
            self._event.clear()
            await self._event.wait()
        return self

    async def write(self, chunk: bytes) -> None:
        """Send a chunk; waits for credit."""
        core = self._started()
        while True:
            self._event.clear()
            if core.write(chunk) is WriteResult.ACCEPTED:
                self._client._wake()
                return
            self._client._flush()
            await self._event.wait()

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
            self._event.clear()
            self._client._flush()
            await self._event.wait()
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
    stream`` reads the server's, on one handle (spec section 6.4). ``await stream.end()``
    ends the client's direction while the server's runs on. Leaving the block ends the
    client's direction if it is still open (or fails it with the exception's code) and
    cancels the server's unless it ended. Writes raise once the server cancelled the client's
    direction or the connection was lost; iteration raises the server's error. A lost
    connection fails the client's direction and resumes the server's, as for ``open``."""

    _client: Client

    def __aiter__(self) -> AsyncIterator[bytes]:
        return cast(Subscription[bytes], self._incoming()).__aiter__()

    def batches(self, max_chunks: int | None = None) -> AsyncIterator[list[bytes]]:
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
        self.loop = asyncio.get_running_loop()
        self._proto: _ClientProtocol | None = None
        self._ready_event = asyncio.Event()
        self._closing = False
        self._scheduled = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._reconnect_task: asyncio.Task[None] | None = None
        core.on_ready = self._ready_event.set

    async def _connect_once(self) -> None:
        core = self.core
        core.new_connection()
        self._ready_event.clear()
        url = core.url
        _, proto = await endpoint(BACKEND, url).connect(url, lambda: _ClientProtocol(self))
        self._proto = cast(_ClientProtocol, proto)
        self._flush()

    async def _ready(self) -> None:
        while not self.core.ready:
            if self.core.failure is not None:
                raise self.core.failure
            await self._ready_event.wait()
            self._ready_event.clear()

    def _on_lost(self) -> None:
        self._proto = None
        self.core.lost()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = self._timer_at = None
        if self._closing:
            return
        self._reconnect_task = self.loop.create_task(self._reconnect())

    async def _reconnect(self) -> None:
        core = self.core
        while True:
            delay = core.reconnect_delay()
            if delay is None:
                core.give_up()
                return
            await asyncio.sleep(delay)
            if self._closing:
                return
            try:
                await self._connect_once()
                return
            except OSError:
                continue

    def _subscription(self, core: SubscriptionCore) -> Subscription[Any]:
        return Subscription(self, core)

    def _wake(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        proto = self._proto
        if proto is None or proto.transport is None:
            return
        core, transport = self.core, proto.transport
        _write_slices(transport, core, proto)
        if core.finished:
            transport.write(core.outgoing())  # the goodbye, behind what is not yet sent
            transport.close()
            return
        deadline = self.core.deadline()
        if deadline != self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = deadline
            self._timer = None if deadline is None else self.loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = self._timer_at = None
        self.core.timer()
        self._flush()

    async def _ask(self, request: QueryRequest) -> QueryCore:
        await self._ready()
        event = asyncio.Event()
        q = self._query(request, event.set)
        while not q.done:
            await event.wait()
            event.clear()
        return q

    def abort_transport(self) -> None:
        """Kill the socket without a goodbye (tests and demos of resume)."""
        proto = self._proto
        if proto is not None and proto.transport is not None:
            proto.transport.abort()

    async def close(self) -> None:
        """Say GOAWAY and close; no reconnect. Open subscriptions and uploads fail. Returns
        once the socket is closed (the goodbye gets a second to go out) and a reconnect under
        way is given up."""
        self._closing = True
        reconnect = self._reconnect_task
        if reconnect is not None:
            reconnect.cancel()
        proto = self._proto
        self.core.close()
        if proto is not None and proto.transport is not None:
            data = self.core.outgoing()
            if data:
                proto.transport.write(data)
            proto.transport.close()
        self._proto = None
        if self._timer is not None:
            self._timer.cancel()
        if proto is not None and proto.transport is not None:
            await proto.closed()
        if reconnect is not None:  # a connect it cancelled closes its socket as it unwinds
            await asyncio.gather(reconnect, return_exceptions=True)

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


async def connect(
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
    loop = asyncio.get_running_loop()
    target = parse_url(url)
    endpoint(BACKEND, target)  # an unknown scheme fails here, not in the reconnect loop
    core = ClientCore(
        target,
        config=config,
        auth=auth,
        clock=loop.time,
        backoff=reconnect if reconnect is not None else Backoff(),
        rng=rng,
        trace=trace,
    )
    client = Client(core)
    await client._connect_once()
    try:
        await asyncio.wait_for(client._ready(), timeout)
    except BaseException:  # no handshake: the socket (and any reconnect) goes too
        await client.close()
        raise
    return client
