"""A backend written the way an adapter author outside this repository would: asyncio
*streams* (not the Protocol level ``transports.asyncio`` uses), built from the public names of
``transports.adapter``, ``transports`` and ``streamproto`` only. ``test_adapter_api`` runs the
conformance kit against it.

Per byte stream, one task reads into the side (a :class:`ServerDriver` or the
:class:`ClientCore`) and one loop writes ``side.step()`` whenever it is woken or its deadline
passes: everything else is decided by the drivers and the bases.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import Any, TypeVar, cast

from streamproto import Config, ErrorCode, Hub, Producer, UploadReader, WriteResult
from transports import Backoff, Gap
from transports.adapter import (
    FLUSH_SLICE,
    AsyncBidiBase,
    AsyncQueries,
    Bidis,
    ClientBase,
    ClientCore,
    ProducerBase,
    QueryCore,
    QueryRequest,
    ServerBase,
    ServerDriver,
    ServerUploadBase,
    Side,
    SubscriptionBase,
    SubscriptionCore,
    UploadBase,
    UploadCore,
    Uploads,
    bound_port,
    handler_failed,
    parse_url,
    read_upload,
)

_T = TypeVar("_T")


async def _drive(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    side: Side,
    wake: asyncio.Event,
    after: Callable[[], None] = lambda: None,
) -> None:
    """Drive one byte stream until its side is finished or the stream is gone."""
    loop = asyncio.get_running_loop()

    async def read() -> None:
        while True:
            try:
                data = await reader.read(65536)
            except OSError:
                data = b""
            side.receive(data)
            wake.set()
            if not data or side.finished:
                return

    reading = asyncio.ensure_future(read())
    try:
        while True:
            wake.clear()
            data = side.step(FLUSH_SLICE)
            after()
            if data:
                writer.write(data)
                try:
                    await writer.drain()
                except OSError:
                    return
                continue  # the core may hold more
            if side.finished or reading.done():
                return
            deadline = side.deadline()
            timeout = None if deadline is None else max(0.0, deadline - loop.time())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout)
    finally:
        reading.cancel()
        writer.close()


# -- server -------------------------------------------------------------------------------------


class MiniProducer(ProducerBase):
    def __init__(self, server: ServerBase[Any, Any], producer: Producer) -> None:
        super().__init__(producer, server=server)
        self.aborted = asyncio.Event()
        self._writable = asyncio.Event()
        producer.on_abort = self.aborted.set
        producer.on_writable = self._writable.set

    async def _serve(self, handler: Callable[..., Awaitable[None]], args: bytes) -> None:
        await handler(self, args)

    async def write(self, chunk: bytes) -> None:
        while self.producer.write(chunk) is not WriteResult.ACCEPTED:
            self._writable.clear()
            await self._writable.wait()


class MiniServerUpload(ServerUploadBase):
    def __init__(self, server: ServerBase[Any, Any], reader: UploadReader) -> None:
        super().__init__(server, reader)
        self._readable = asyncio.Event()
        reader.on_readable = self._readable.set

    async def _serve(self, handler: Callable[..., Awaitable[object]]) -> None:
        self._returned(await handler(self))

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        while True:
            self._readable.clear()
            chunk = read_upload(self.reader)
            if chunk is not None:
                return chunk
            if self.reader.outcome is not None:
                raise StopAsyncIteration
            await self._readable.wait()


class _Stream:
    """An accepted stream: what the conformance kit's ``queued_bytes`` looks at."""

    def __init__(self, driver: ServerDriver, wake: asyncio.Event) -> None:
        self.driver = driver
        self.wake = wake


class MiniServer(ServerBase[MiniProducer, MiniServerUpload]):
    def __init__(self, hub: Hub | None, url: str, config: Config | None) -> None:
        super().__init__(hub, url, config)
        self.loop = asyncio.get_running_loop()
        self.drivers: set[_Stream] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self._listener: asyncio.AbstractServer | None = None
        self._hub_timer: asyncio.TimerHandle | None = None
        self._goodbye: int | None = None  # the GOAWAY code once shutting down

    def _producer(self, producer: Producer) -> MiniProducer:
        return MiniProducer(self, producer)

    def _upload(self, reader: UploadReader) -> MiniServerUpload:
        return MiniServerUpload(self, reader)

    def _start(
        self, fn: Callable[..., Awaitable[None]], target: Producer | UploadReader | None, *args: Any
    ) -> None:
        async def guarded() -> None:
            try:
                await fn(*args)
            except Exception as exc:
                if target is not None:
                    handler_failed(target, exc)

        task = asyncio.ensure_future(guarded())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _rearm_hub(self) -> None:
        if self._hub_timer is not None:
            self._hub_timer.cancel()
        deadline = self.hub.next_deadline()
        self._hub_timer = None if deadline is None else self.loop.call_at(deadline, self._tick)

    def _tick(self) -> None:
        self._hub_timer = None
        self.hub.handle_timer()
        self._rearm_hub()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        wake = asyncio.Event()
        driver = self._driver(None, self.loop.time, wake.set)
        if self._goodbye is not None:  # accepted as the server shut down: told so, closed
            driver.shutdown(self._goodbye)
        stream = _Stream(driver, wake)
        self.drivers.add(stream)
        try:
            await _drive(reader, writer, driver, wake, self._rearm_hub)
        finally:
            driver.connection_lost()
            self._gone(driver)
            self.drivers.discard(stream)
            self._rearm_hub()

    def _goaway(self, code: int) -> None:
        self._goodbye = code
        for stream in list(self.drivers):
            stream.driver.shutdown(code)
            stream.wake.set()

    async def _stop_listening(self, listener: asyncio.AbstractServer) -> None:
        # asyncio accepts a socket in one loop turn and makes its transport a turn later; a
        # close() in between loses the socket (CPython gh-109564). So stop reading the
        # listening sockets, let the accepts already taken make their transports, then close.
        for sock in listener.sockets:
            with contextlib.suppress(NotImplementedError):  # a loop without remove_reader
                self.loop.remove_reader(sock)
        await asyncio.sleep(0)
        listener.close()

    async def shutdown(self, timeout: float = 5.0) -> None:
        if self._listener is not None:
            await self._stop_listening(self._listener)
        self._goaway(ErrorCode.NO_ERROR)
        deadline = self.loop.time() + timeout
        while self.drivers and self.loop.time() < deadline:
            await asyncio.sleep(0.01)
        self._goaway(ErrorCode.SERVER_SHUTDOWN)
        for task in list(self.tasks):
            task.cancel()
        if self._hub_timer is not None:
            self._hub_timer.cancel()


async def serve(hub: Hub | None, url: str, *, config: Config | None = None) -> MiniServer:
    server = MiniServer(hub, url, config)
    listener = await asyncio.start_server(server._accept, server.url.host, server.url.port)
    server._listener = listener
    server.port = bound_port(listener.sockets[0].getsockname())
    return server


# -- client -------------------------------------------------------------------------------------


class MiniSubscription(SubscriptionBase[_T]):
    def __init__(self, client: MiniClient, core: SubscriptionCore) -> None:
        super().__init__(client, core)
        self._changed = asyncio.Event()
        core.notify = self._changed.set

    async def accepted(self) -> str:
        while not self._core.check_accepted():
            self._changed.clear()
            await self._changed.wait()
        return self._core.stream_id

    def __aiter__(self) -> AsyncIterator[_T]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Any]:
        core = self._core
        try:
            while True:
                item = core.poll()
                if item is not None:
                    if core.reported:  # credit to return
                        core.reported = False
                        self._client._wake()
                    yield item
                elif core.finished:
                    return
                else:
                    await self._changed.wait()
                    self._changed.clear()
        finally:
            self.close()


class MiniUpload(UploadBase):
    _client: MiniClient

    def _made(self) -> None:
        self._changed = asyncio.Event()

    async def __aenter__(self) -> MiniUpload:
        await self._client.ready()
        core = self._begin(self._changed.set)
        while not core.check_accepted():
            self._changed.clear()
            await self._changed.wait()
        return self

    async def write(self, chunk: bytes) -> None:
        core = self._started()
        while True:
            self._changed.clear()
            accepted = core.write(chunk) is WriteResult.ACCEPTED
            self._client._wake()
            if accepted:
                return
            await self._changed.wait()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._finish(exc)
        if exc is None:
            core = await self._drained()
            if core.error is not None:
                raise core.error

    async def _drained(self) -> UploadCore:
        core = self._started()
        while not core.settled:
            self._changed.clear()
            self._client._wake()
            await self._changed.wait()
        return core

    async def result(self) -> bytes:
        await self._drained()
        return self._result()


class MiniBidi(AsyncBidiBase, MiniUpload):
    """Writes as MiniUpload does; reads the server's direction as a MiniSubscription."""

    def __aiter__(self) -> AsyncIterator[bytes]:
        return cast(MiniSubscription[bytes], self._incoming()).__aiter__()


class MiniClient(
    AsyncQueries,
    ClientBase[MiniSubscription[bytes], MiniSubscription[bytes | Gap]],
    Uploads[MiniUpload],
    Bidis[MiniBidi],
):
    _upload_type = MiniUpload
    _bidi_type = MiniBidi

    def __init__(self, core: ClientCore) -> None:
        super().__init__(core)
        self._woken = asyncio.Event()
        self._ready = asyncio.Event()
        core.on_ready = self._ready.set
        self._writer: asyncio.StreamWriter | None = None
        self._closing = False
        self._task: asyncio.Task[None] | None = None

    def _wake(self) -> None:
        self._woken.set()

    def _subscription(self, core: SubscriptionCore) -> MiniSubscription[Any]:
        return MiniSubscription(self, core)

    async def ready(self) -> None:
        while not self.core.ready:
            if self.core.failure is not None:
                raise self.core.failure
            await self._ready.wait()
            self._ready.clear()

    async def _ask(self, request: QueryRequest) -> QueryCore:
        await self.ready()
        answered = asyncio.Event()
        query = self._query(request, answered.set)
        while not query.done:
            await answered.wait()
            answered.clear()
        return query

    async def _run(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        core = self.core
        while True:
            core.new_connection()
            self._writer = writer
            await _drive(reader, writer, core, self._woken)
            self._writer = None
            if self._closing:
                return
            core.lost()
            while True:
                delay = core.reconnect_delay()
                if delay is None:
                    core.give_up()
                    return
                await asyncio.sleep(delay)
                try:
                    reader, writer = await asyncio.open_connection(core.url.host, core.url.port)
                except OSError:
                    continue
                break

    def abort_transport(self) -> None:
        if self._writer is not None:
            self._writer.transport.abort()

    async def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self.core.close()
        self._wake()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), 1.0)
            except TimeoutError:
                self._task.cancel()


async def connect(
    url: str,
    *,
    config: Config | None = None,
    reconnect: Backoff | None = None,
    timeout: float = 10.0,
) -> MiniClient:
    loop = asyncio.get_running_loop()
    target = parse_url(url)
    core = ClientCore(target, config=config, clock=loop.time, backoff=reconnect or Backoff())
    client = MiniClient(core)
    reader, writer = await asyncio.open_connection(target.host, target.port)
    client._task = asyncio.ensure_future(client._run(reader, writer))
    await asyncio.wait_for(client.ready(), timeout)
    return client
