"""Blocking proxies over asyncio, trio and thread adapters, for the conformance check.

:func:`streamproto.testing.check_adapter` is pure: it drives a server/client pair through
blocking interfaces. This module implements them for any adapter shaped like those of this
package (``serve(hub, url, config=...)`` and ``connect(url, ...)``, with the server's
``channel`` and ``producer`` and the client's ``subscribe``, ``open`` and ``upload``).

Each server runs in its own thread (its own event loop for asyncio and trio); each client too.
The proxies turn every call into a call on the adapter's real API, run in the adapter's thread,
so a scenario written once in blocking style exercises the asyncio, trio and thread adapters
alike, and any client against any server::

    from streamproto.testing import check_adapter
    from transports.testing import Adapter, pair_factory

    check_adapter(pair_factory("asyncio", "trio", "ws"))        # our own adapters
    mine = Adapter("asyncio", serve=myproto.serve, connect=myproto.connect,
                   urls={"tcp": "mine://127.0.0.1:0"})
    check_adapter(pair_factory(mine, mine, "tcp"))               # yours
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import queue
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from typing import Any, Literal, Protocol, cast

import attrs

from streamproto import ChannelOptions, Config, Hub, LocalProtocolError, OverflowPolicy, Window
from streamproto.testing import (
    CONFORMANCE_SERVER_CONFIG,
    PairFactory,
    PairOptions,
    upload_digest,
)
from streamproto.testing.reference import register_reference_channels

from ._common import Backoff, StreamError

__all__ = [
    "BACKENDS",
    "TIMEOUT",
    "TRANSPORTS",
    "Adapter",
    "ClientProxy",
    "ServerProxy",
    "SubProxy",
    "adapter",
    "pair",
    "pair_factory",
    "threads_left",
    "upload_digest",
]

#: The adapters of this package, by name.
BACKENDS = ("asyncio", "trio", "sync")
TRANSPORTS = ("tcp", "ws")
#: The longest any proxy call waits before it raises ``TimeoutError`` (seconds).
TIMEOUT = 20.0

Flavour = Literal["asyncio", "trio", "thread"]
_DEFAULT_URLS = {
    "tcp": "tcp://127.0.0.1:0",
    "ws": "ws://127.0.0.1:0/sp",
    "http": "http://127.0.0.1:0/sp",
}


@attrs.frozen
class Adapter:
    """An adapter to drive: how it runs (``flavour``) and its two entry points.

    - ``"asyncio"``: ``await serve(hub, url, config=...)`` returns the server and
      ``await connect(url, **options)`` the client; both live on one event loop.
    - ``"trio"``: ``serve`` and ``connect`` are async context managers.
    - ``"thread"``: plain blocking calls; the adapter runs its own threads.

    ``urls`` maps a transport name to the URL the server listens on (port 0: any free port);
    the server's ``address`` is what the client connects to.
    """

    flavour: Flavour
    serve: Callable[..., Any]
    connect: Callable[..., Any]
    urls: Mapping[str, str] = attrs.field(factory=lambda: dict(_DEFAULT_URLS))


def adapter(name: str) -> Adapter:
    """One of this package's adapters: ``"asyncio"``, ``"trio"`` or ``"sync"``."""
    if name == "asyncio":
        from . import asyncio as aio  # noqa: PLC0415 - load only the adapter asked for

        return Adapter("asyncio", aio.serve, aio.connect)
    if name == "trio":
        from . import trio as tri  # noqa: PLC0415 - trio is an optional extra

        return Adapter("trio", tri.serve, tri.connect)
    if name == "sync":
        from . import sync  # noqa: PLC0415 - load only the adapter asked for

        return Adapter("thread", sync.serve, sync.connect)
    raise ValueError(f"unknown backend {name!r}: expected one of {BACKENDS}")


def _adapter(backend: str | Adapter) -> Adapter:
    return backend if isinstance(backend, Adapter) else adapter(backend)


def _ids() -> Callable[[], str]:
    counter = itertools.count(1)
    return lambda: f"id{next(counter)}x{threading.get_ident() % 9973}"


class Record:
    """What the server-side application saw, for scenarios to assert on."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.aborted: set[str] = set()
        self.uploads: dict[str, tuple[int, int, str]] = {}  # id -> (bytes, code, message)
        self.changed = threading.Condition(self.lock)

    def note_abort(self, stream_id: str) -> None:
        with self.changed:
            self.aborted.add(stream_id)
            self.changed.notify_all()

    def note_upload(self, stream_id: str, nbytes: int, code: int, message: str) -> None:
        with self.changed:
            self.uploads[stream_id] = (nbytes, code, message)
            self.changed.notify_all()

    def wait(
        self, predicate: Callable[[], bool], timeout: float = TIMEOUT, what: str = "the server"
    ) -> None:
        with self.changed:
            if not self.changed.wait_for(predicate, timeout):
                raise TimeoutError(f"waited {timeout:g} s for {what}")


def threads_left(before: set[int | None], timeout: float = 5.0) -> list[str]:
    """The names of threads alive now that were not in ``before`` (a set of thread idents
    taken earlier), after giving them up to ``timeout`` seconds to end: a thread census."""
    deadline = time.monotonic() + timeout
    while True:
        extra = [t.name for t in threading.enumerate() if t.ident not in before]
        if not extra or time.monotonic() > deadline:
            return extra
        time.sleep(0.02)


# -- loop threads -------------------------------------------------------------------------------


class LoopThread(Protocol):
    """Runs calls (and coroutines) of one backend in that backend's thread."""

    def call(self, fn: Callable[..., Any], *args: Any) -> Any: ...

    def stop(self) -> None: ...


class AsyncioThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        async def run() -> Any:
            result = fn(*args)
            if asyncio.iscoroutine(result):
                result = await result
            return result

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(TIMEOUT)

    def stop(self) -> None:
        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(cancel_all(), self.loop).result(TIMEOUT)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(TIMEOUT)
        self.loop.close()


class TrioThread:
    def __init__(self) -> None:
        import trio  # noqa: PLC0415 - trio is an optional extra

        self.trio = trio
        self.ready = threading.Event()
        self.token: Any = None
        self.nursery: Any = None
        self.thread = threading.Thread(target=lambda: trio.run(self._main), daemon=True)
        self.thread.start()
        self.ready.wait(TIMEOUT)

    async def _main(self) -> None:
        trio = self.trio
        self.token = trio.lowlevel.current_trio_token()
        self.done = trio.Event()
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            self.ready.set()
            await self.done.wait()
            nursery.cancel_scope.cancel()

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        async def run() -> Any:
            result = fn(*args)
            if hasattr(result, "__await__"):
                result = await result
            return result

        return self.trio.from_thread.run(run, trio_token=self.token)

    def start_soon(self, fn: Callable[..., Awaitable[None]], *args: Any) -> None:
        self.trio.from_thread.run_sync(self.nursery.start_soon, fn, *args, trio_token=self.token)

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.trio.from_thread.run_sync(self.done.set, trio_token=self.token)
        self.thread.join(TIMEOUT)


class SyncThread:
    """The thread backend needs no loop: calls run in the caller's thread."""

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return fn(*args)

    def stop(self) -> None:
        pass


def loop_thread(flavour: str) -> LoopThread:
    """A thread running calls for an adapter of this flavour (``"sync"`` means ``"thread"``)."""
    threads: dict[str, Callable[[], LoopThread]] = {
        "asyncio": AsyncioThread,
        "trio": TrioThread,
        "thread": SyncThread,
        "sync": SyncThread,
    }
    return threads[flavour]()


# -- server -------------------------------------------------------------------------------------

TEST_CHANNELS = {
    "test:open": ChannelOptions(replay=Window(chunks=100_000, nbytes=64 << 20)),
    "test:streams": ChannelOptions(
        replay=Window(chunks=100_000, nbytes=64 << 20), allow_delete=True
    ),
    "test:small": ChannelOptions(replay=Window(chunks=16, nbytes=1 << 20)),
    "test:drop": ChannelOptions(default_policy=OverflowPolicy.DROP_OLDEST),
    "test:block": ChannelOptions(default_policy=OverflowPolicy.BLOCK),
    "test:error": ChannelOptions(default_policy=OverflowPolicy.ERROR),
    "test:upload": ChannelOptions(),
    "test:bidi": ChannelOptions(replay=Window(chunks=100_000, nbytes=64 << 20)),
}


class ServerProxy:
    """A server of one adapter serving a hub (``hub``, or one with counter ids), plus the
    conformance application: the channels that :class:`streamproto.testing.ServerUnderTest`
    describes, and the reference channels (``spec/CONFORMANCE.md``)."""

    def __init__(
        self,
        backend: str | Adapter,
        transport: str,
        config: Config | None = None,
        *,
        hub: Hub | None = None,
        timeout: float = TIMEOUT,
        http: Any = None,
    ) -> None:
        self.adapter = _adapter(backend)
        self.timeout = timeout
        #: An ``http`` transport's :class:`streamproto._http.HttpOptions` (CORS, auth).
        self.http = http
        self.flavour = self.adapter.flavour
        self.backend = backend if isinstance(backend, str) else self.flavour
        self.record = Record()
        self.thread = loop_thread(self.flavour)
        self.hub = hub if hub is not None else Hub(clock=time.monotonic, ids=_ids())
        self.producers: dict[str, Any] = {}
        self.config = config or CONFORMANCE_SERVER_CONFIG
        self.server = self._start(self.adapter.urls[transport])
        self.url: str = self.server.address

    def _start(self, url: str) -> Any:
        serve, hub, config = self.adapter.serve, self.hub, self.config
        extra = {} if self.http is None else {"http": self.http}
        if self.flavour == "trio":
            server = self.thread.call(self._trio_serve, url)
        elif self.flavour == "asyncio":
            server = self.thread.call(lambda: serve(hub, url, config=config, **extra))
        else:
            server = serve(hub, url, config=config, **extra)
        self.thread.call(self._register, server)
        self.thread.call(register_reference_channels, self.hub)
        return server

    async def _trio_serve(self, url: str) -> Any:
        thread = cast(TrioThread, self.thread)

        async def run(task_status: Any) -> None:
            extra = {} if self.http is None else {"http": self.http}
            async with self.adapter.serve(self.hub, url, config=self.config, **extra) as server:
                task_status.started(server)
                await thread.trio.sleep_forever()

        return await thread.nursery.start(run)

    def _register(self, server: Any) -> None:
        record = self.record
        is_async = self.flavour != "thread"
        sleep = self._sleep()
        for name, options in TEST_CHANNELS.items():
            if name == "test:open":
                handler = _open_async(record, sleep) if is_async else _open_sync(record)
                server.channel(name, options, on_open=handler)
            elif name == "test:upload":
                handler = _upload_async(record) if is_async else _upload_sync(record)
                server.channel(name, options, on_upload=handler)
            elif name == "test:bidi":
                handler = _bidi_async(record, sleep) if is_async else _bidi_sync(record)
                server.channel(name, options, on_bidi=handler)
            else:
                server.channel(name, options)

    def _sleep(self) -> Callable[[float], Awaitable[None]]:
        if self.flavour == "trio":
            import trio  # noqa: PLC0415 - trio is an optional extra

            return trio.sleep
        return asyncio.sleep

    # Producers driven by the scenario, from the server's thread.

    def start(self, channel: str, stream_id: str) -> None:
        self.producers[stream_id] = self.thread.call(self.server.producer, channel, stream_id)

    def write(self, stream_id: str, *chunks: bytes) -> None:
        producer = self.producers[stream_id]

        def write_all() -> None:
            for chunk in chunks:
                producer.write_nowait(chunk)

        self.thread.call(write_all)

    def try_write(self, stream_id: str, *chunks: bytes) -> list[Any]:
        """``write_nowait`` each chunk; returns the WriteResults."""
        producer = self.producers[stream_id]
        results: list[Any] = self.thread.call(lambda: [producer.write_nowait(c) for c in chunks])
        return results

    def write_blocking(self, stream_id: str, chunk: bytes) -> None:
        """``await producer.write`` (waits under the BLOCK policy)."""
        self.thread.call(self.producers[stream_id].write, chunk)

    def close_stream(self, stream_id: str) -> None:
        self.thread.call(self.producers[stream_id].close)

    def fail_stream(self, stream_id: str, code: int, message: str) -> None:
        self.thread.call(self.producers[stream_id].fail, code, message)

    def aborted(self, stream_id: str) -> bool:
        event = self.producers[stream_id].aborted
        return bool(self.thread.call(event.is_set))

    def statistics(self) -> Any:
        return self.thread.call(self.hub.statistics)

    def queued_bytes(self) -> int:
        def total() -> int:
            return sum(_queued(p.driver) for p in self._drivers())

        return int(self.thread.call(total))

    def _drivers(self) -> list[Any]:
        protocols = getattr(self.server, "protocols", None) or getattr(self.server, "drivers", ())
        return [p for p in protocols or () if getattr(p, "driver", None) is not None]

    def wait_aborted(self, count: int) -> None:
        """Block until ``count`` OPEN handlers of ``test:open`` saw their producer aborted."""
        self.record.wait(
            lambda: len(self.record.aborted) >= count,
            self.timeout,
            f"{count} aborted producer(s) of test:open (saw {len(self.record.aborted)})",
        )

    def wait_upload(self, stream_id: str) -> tuple[int, int, str]:
        """Block until the upload handler for ``stream_id`` finished: (bytes, code, message)."""
        self.record.wait(
            lambda: stream_id in self.record.uploads,
            self.timeout,
            f"the upload handler of {stream_id!r} to finish",
        )
        return self.record.uploads[stream_id]

    def shutdown(self, timeout: float = 2.0) -> None:
        self.thread.call(self.server.shutdown, timeout)

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.shutdown(0.5)
        self.thread.stop()


def _queued(driver: Any) -> int:
    if hasattr(driver, "queued_bytes"):  # an HTTP socket
        return int(driver.queued_bytes)
    return int(driver.conn.statistics().queued_bytes)


def _open_async(record: Record, sleep: Callable[[float], Awaitable[None]]) -> Any:
    async def handler(producer: Any, args: bytes) -> None:
        count, delay = (int(x) for x in args.split(b":"))
        for i in range(count):
            if producer.aborted.is_set():
                record.note_abort(producer.stream_id)
                return
            try:
                await producer.write(b"%d" % i)
            except LocalProtocolError:  # aborted while the write waited for room
                if not producer.aborted.is_set():
                    raise
                continue
            if delay:
                await sleep(delay / 1000)
        if producer.aborted.is_set():
            record.note_abort(producer.stream_id)
            return
        producer.close()

    return handler


def _open_sync(record: Record) -> Any:
    def handler(producer: Any, args: bytes) -> None:
        count, delay = (int(x) for x in args.split(b":"))
        for i in range(count):
            if producer.aborted.is_set():
                record.note_abort(producer.stream_id)
                return
            try:
                producer.write(b"%d" % i)
            except LocalProtocolError:  # aborted after the check (another thread) or meanwhile
                if not producer.aborted.is_set():
                    raise
                continue
            if delay:
                time.sleep(delay / 1000)
        if producer.aborted.is_set():
            record.note_abort(producer.stream_id)
            return
        producer.close()

    return handler


def _upload_async(record: Record) -> Any:
    async def handler(upload: Any) -> bytes | None:
        total = 0
        chunks: list[bytes] = []
        limit = int(upload.args or b"0")
        try:
            async for chunk in upload:
                total += len(chunk)
                chunks.append(chunk)
                if limit and total >= limit:
                    upload.cancel(1007, "enough")
                    record.note_upload(upload.stream_id, total, 1007, "enough")
                    return None
        except Exception as exc:  # the scenario checks the code
            record.note_upload(upload.stream_id, total, getattr(exc, "code", -1), str(exc))
            return None
        record.note_upload(upload.stream_id, total, 0, "")
        return upload_digest(chunks)

    return handler


def _upload_sync(record: Record) -> Any:
    def handler(upload: Any) -> bytes | None:
        total = 0
        chunks: list[bytes] = []
        limit = int(upload.args or b"0")
        try:
            for chunk in upload:
                total += len(chunk)
                chunks.append(chunk)
                if limit and total >= limit:
                    upload.cancel(1007, "enough")
                    record.note_upload(upload.stream_id, total, 1007, "enough")
                    return None
        except Exception as exc:
            record.note_upload(upload.stream_id, total, getattr(exc, "code", -1), str(exc))
            return None
        record.note_upload(upload.stream_id, total, 0, "")
        return upload_digest(chunks)

    return handler


def _bidi_async(record: Record, sleep: Callable[[float], Awaitable[None]]) -> Any:
    async def handler(producer: Any, upload: Any) -> None:
        mode, _, count = upload.args.partition(b":")
        total = 0
        try:
            if mode in (b"first", b"slow"):  # the server's direction ends first; it reads on
                for i in range(int(count)):
                    await producer.write(b"%d" % i)
                    if mode == b"slow":
                        await sleep(0.001)
                producer.close()
            async for chunk in upload:
                total += len(chunk)
                if mode == b"echo":
                    await producer.write(chunk)
        except Exception as exc:
            record.note_upload(upload.stream_id, total, getattr(exc, "code", -1), str(exc))
            return
        if mode == b"echo":
            producer.close()
        record.note_upload(upload.stream_id, total, 0, "")

    return handler


def _bidi_sync(record: Record) -> Any:
    def handler(producer: Any, upload: Any) -> None:
        mode, _, count = upload.args.partition(b":")
        total = 0
        try:
            if mode in (b"first", b"slow"):
                for i in range(int(count)):
                    producer.write(b"%d" % i)
                    if mode == b"slow":
                        time.sleep(0.001)
                producer.close()
            for chunk in upload:
                total += len(chunk)
                if mode == b"echo":
                    producer.write(chunk)
        except Exception as exc:
            record.note_upload(upload.stream_id, total, getattr(exc, "code", -1), str(exc))
            return
        if mode == b"echo":
            producer.close()
        record.note_upload(upload.stream_id, total, 0, "")

    return handler


# -- client -------------------------------------------------------------------------------------

_END = object()


def _call(name: str, args: tuple[Any, ...]) -> str:
    """``subscribe('test:streams', 's1')``: what a proxy subscription was made by."""
    return f"{name}({', '.join(map(repr, args))})"


class SubProxy:
    """A subscription iterated in the client's thread; items arrive on a queue."""

    def __init__(self, client: ClientProxy, make: Callable[[], Any], what: str = "") -> None:
        self.client = client
        self.what = what or "the subscription"
        self.items: queue.Queue[Any] = queue.Queue()
        self.sub: Any = None
        self.seqs: list[int] = []
        self.done = threading.Event()
        self.error: BaseException | None = None
        self._stop = False
        flavour = client.flavour
        if flavour == "thread":
            self.sub = make()
            self.worker = threading.Thread(target=self._run_sync, daemon=True)
            self.worker.start()
        elif flavour == "asyncio":
            self.sub = client.thread.call(make)
            self.future = asyncio.run_coroutine_threadsafe(
                self._run_async(),
                client.thread.loop,  # type: ignore[attr-defined]
            )
        else:
            self.sub = client.thread.call(make)
            client.thread.start_soon(self._run_async)  # type: ignore[attr-defined]

    def _put(self, item: Any) -> bool:
        self.items.put(item)
        self.seqs.append(self.sub.seq)
        return self._stop

    async def _run_async(self) -> None:
        try:
            async for item in self.sub:
                if self._put(item):
                    break
        except BaseException as exc:
            self.error = exc
            if not isinstance(exc, Exception):
                raise
        finally:
            self.items.put(_END)
            self.done.set()

    def _run_sync(self) -> None:
        try:
            for item in self.sub:
                if self._put(item):
                    break
        except Exception as exc:
            self.error = exc
        finally:
            self.items.put(_END)
            self.done.set()

    def take(self, n: int, timeout: float | None = None) -> list[Any]:
        """The next ``n`` items (fewer if the stream ends first)."""
        timeout = self.client.timeout if timeout is None else timeout
        out: list[Any] = []
        deadline = time.monotonic() + timeout
        while len(out) < n:
            try:
                item = self.items.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(
                    f"waited {timeout:g} s for {n} items of {self.what}; "
                    f"{len(out)} came: {out[:4]!r}{' ...' if len(out) > 4 else ''}"
                ) from None
            if item is _END:
                self.items.put(_END)
                break
            out.append(item)
        return out

    def rest(self, timeout: float | None = None) -> list[Any]:
        """Every item until the stream ends; then ``error`` holds how it ended."""
        timeout = self.client.timeout if timeout is None else timeout
        if not self.done.wait(timeout):
            raise TimeoutError(
                f"waited {timeout:g} s for {self.what} to end; "
                f"{self.items.qsize()} items came, the last seq {self.sub.seq}"
            )
        return self.take(1 << 30, timeout=0.5)

    def stop_after_next(self) -> None:
        """Break out of the loop after the next item (which sends CANCEL)."""
        self._stop = True

    def close(self) -> None:
        self.client.thread.call(self.sub.close)


class ClientProxy:
    """A client of one adapter, connected to ``url`` (``kwargs`` go to its ``connect``)."""

    def __init__(
        self, backend: str | Adapter, url: str, *, timeout: float = TIMEOUT, **kwargs: Any
    ) -> None:
        self.adapter = _adapter(backend)
        self.timeout = timeout
        self.flavour = self.adapter.flavour
        self.backend = backend if isinstance(backend, str) else self.flavour
        self.thread = loop_thread(self.flavour)
        connect = self.adapter.connect
        try:
            if self.flavour == "trio":
                self.client = self.thread.call(self._trio_connect, url, kwargs)
            elif self.flavour == "asyncio":
                self.client = self.thread.call(lambda: connect(url, **kwargs))
            else:
                self.client = connect(url, **kwargs)
        except BaseException:
            self.thread.stop()  # a client that could not connect leaves no thread behind
            raise

    async def _trio_connect(self, url: str, kwargs: dict[str, Any]) -> Any:
        thread = cast(TrioThread, self.thread)

        async def run(task_status: Any) -> None:
            async with self.adapter.connect(url, **kwargs) as client:
                task_status.started(client)
                await thread.trio.sleep_forever()

        return await thread.nursery.start(run)

    def subscribe(self, *args: Any, **kwargs: Any) -> SubProxy:
        return SubProxy(
            self, lambda: self.client.subscribe(*args, **kwargs), _call("subscribe", args)
        )

    def open(self, *args: Any, **kwargs: Any) -> SubProxy:
        return SubProxy(self, lambda: self.client.open(*args, **kwargs), _call("open", args))

    def upload(
        self,
        channel: str,
        stream_id: str,
        chunks: Iterable[bytes],
        args: bytes = b"",
        *,
        abort_after: int | None = None,
    ) -> BaseException | None:
        """Upload every chunk; returns the exception the upload ended with, if any. With
        ``abort_after``, the transport is killed after that many chunks were written."""
        outcome = self.upload_result(channel, stream_id, chunks, args, abort_after=abort_after)
        return outcome if isinstance(outcome, BaseException) else None

    def upload_result(
        self,
        channel: str,
        stream_id: str,
        chunks: Iterable[bytes],
        args: bytes = b"",
        *,
        abort_after: int | None = None,
        resumable: bool = False,
        result: bool = False,
    ) -> bytes | BaseException:
        """Upload every chunk (``resumable``, asking for a ``result`` if told) and return the
        upload's result (b"" without one), or the exception it ended with."""
        client = self.client

        def each() -> Iterator[bytes]:
            for i, chunk in enumerate(chunks):
                if i == abort_after:
                    client.abort_transport()  # in the client's thread: call it directly
                yield chunk

        # Only what is asked for, so that a backend without section 9.1 runs plain uploads.
        flags = {name: True for name, on in (("resumable", resumable), ("result", result)) if on}
        if self.flavour == "thread":
            try:
                with client.upload(channel, stream_id, args, **flags) as up:
                    for chunk in each():
                        up.write(chunk)
                answer: bytes = up.result() if flags else b""
            except Exception as exc:
                return exc
            return answer

        async def run() -> bytes | BaseException:
            try:
                async with client.upload(channel, stream_id, args, **flags) as up:
                    for chunk in each():
                        await up.write(chunk)
                answer: bytes = await up.result() if flags else b""
            except Exception as exc:
                return exc
            return answer

        outcome: bytes | BaseException = self.thread.call(run)
        return outcome

    def bidi(
        self,
        channel: str,
        chunks: Iterable[bytes],
        args: bytes = b"",
        *,
        lockstep: bool = False,
        abort_after: int | None = None,
    ) -> tuple[str, list[bytes], BaseException | None]:
        """Open a bidirectional stream with ``args``, write every chunk (with ``lockstep``,
        reading one chunk of the server's direction after each), end the client's direction,
        and read the server's to its end: (stream id, chunks read, the exception, if any).
        With ``abort_after``, the transport is killed after that many chunks; the first write
        that raises ends the writing (its exception is the one returned), and the server's
        direction is read on to its end across the reconnect."""
        client = self.client
        got: list[bytes] = []
        sid = ""
        failed: list[BaseException] = []

        def each() -> Iterator[bytes]:
            for i, chunk in enumerate(chunks):
                if i == abort_after:
                    client.abort_transport()  # in the client's thread: call it directly
                yield chunk

        if self.flavour == "thread":
            try:
                with client.bidi(channel, args) as stream:
                    sid = stream.stream_id
                    incoming = iter(stream)
                    for chunk in each():
                        try:
                            stream.write(chunk)
                        except StreamError as exc:
                            if abort_after is None:
                                raise
                            failed.append(exc)
                            break
                        if lockstep:
                            got.append(next(incoming))
                    else:
                        stream.end()
                    got.extend(incoming)
            except Exception as exc:
                return sid, got, exc
            return sid, got, failed[0] if failed else None

        async def run() -> tuple[str, list[bytes], BaseException | None]:
            sid = ""
            try:
                async with client.bidi(channel, args) as stream:
                    sid = stream.stream_id
                    incoming = aiter(stream)
                    for chunk in each():
                        try:
                            await stream.write(chunk)
                        except StreamError as exc:
                            if abort_after is None:
                                raise
                            failed.append(exc)
                            break
                        if lockstep:
                            got.append(await anext(incoming))
                    else:
                        await stream.end()
                    got.extend([chunk async for chunk in incoming])
            except Exception as exc:
                return sid, got, exc
            return sid, got, failed[0] if failed else None

        result: tuple[str, list[bytes], BaseException | None] = self.thread.call(run)
        return result

    def raw_subscribe(self, *args: Any, **kwargs: Any) -> Any:
        """The backend's own subscription object, not iterated yet."""
        return self.thread.call(lambda: self.client.subscribe(*args, **kwargs))

    def status(self, channel: str, stream_id: str) -> Any:
        """The client's ``status``."""
        return self.thread.call(lambda: self.client.status(channel, stream_id))

    def list_streams(self, channel: str, **kwargs: Any) -> Any:
        """The client's ``list_streams``."""
        return self.thread.call(lambda: self.client.list_streams(channel, **kwargs))

    def delete(self, channel: str, stream_id: str) -> Any:
        """The client's ``delete``."""
        return self.thread.call(lambda: self.client.delete(channel, stream_id))

    def raw_open(self, *args: Any, **kwargs: Any) -> Any:
        """The backend's own subscription object of an OPEN, not iterated yet."""
        return self.thread.call(lambda: self.client.open(*args, **kwargs))

    def wait_accepted(self, sub: Any) -> str:
        """Block until the server accepted ``sub`` (a backend subscription object)."""
        if self.flavour == "thread":
            return str(sub.accepted(self.timeout))
        return str(self.thread.call(sub.accepted))

    def collect(self, sub: Any) -> tuple[list[Any], BaseException | None]:
        """Iterate ``sub`` to its end in the client's thread: (items, error)."""
        if self.flavour == "thread":
            items = []
            try:
                for item in sub:
                    items.append(item)
            except Exception as exc:
                return items, exc
            return items, None

        async def run() -> tuple[list[Any], BaseException | None]:
            items = []
            try:
                async for item in sub:
                    items.append(item)
            except Exception as exc:
                return items, exc
            return items, None

        result: tuple[list[Any], BaseException | None] = self.thread.call(run)
        return result

    def abort_transport(self) -> None:
        self.thread.call(self.client.abort_transport)

    def statistics(self) -> dict[str, int]:
        """The client's counters as a mapping (the conformance kit's ``statistics()``)."""
        stats: dict[str, int] = attrs.asdict(self.thread.call(self.client.statistics))
        return stats

    def wait_resumed(self, count: int) -> None:
        """Block until the client resumed its session ``count`` times."""
        deadline = time.monotonic() + self.timeout
        while (resumed := self.statistics()["resumed"]) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"waited {self.timeout:g} s for {count} session resume(s); saw {resumed}"
                )
            time.sleep(0.02)

    def pause(self, seconds: float) -> None:
        """Let time pass; the adapter runs on in its own thread."""
        time.sleep(seconds)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.thread.call(self.client.close)
        self.thread.stop()


@contextlib.contextmanager
def pair(
    server_backend: str | Adapter,
    client_backend: str | Adapter,
    transport: str,
    *,
    timeout: float = TIMEOUT,
    **client_kwargs: Any,
) -> Iterator[tuple[ServerProxy, ClientProxy]]:
    """A server and a client connected to it; both closed on exit. ``timeout``: the longest
    one call of either proxy waits before it raises ``TimeoutError`` saying for what."""
    server = ServerProxy(server_backend, transport, timeout=timeout)
    try:
        client = ClientProxy(client_backend, server.url, timeout=timeout, **client_kwargs)
        try:
            yield server, client
        finally:
            client.close()
    finally:
        server.stop()


def pair_factory(server: str | Adapter, client: str | Adapter, transport: str) -> PairFactory:
    """The ``make_pair`` that :func:`streamproto.testing.check_adapter` takes, for a server
    adapter and a client adapter (names of this package's adapters, or :class:`Adapter`) over
    ``transport`` (a key of the adapters' ``urls``: ``"tcp"`` or ``"ws"`` for ours)."""

    def make_pair(options: PairOptions) -> contextlib.AbstractContextManager[Any]:
        kwargs: dict[str, Any] = {
            "reconnect": Backoff(initial=0.02, attempts=20)
            if options.reconnect
            else Backoff(attempts=0)
        }
        if options.client_config is not None:
            kwargs["config"] = options.client_config
        return pair(server, client, transport, timeout=options.timeout, **kwargs)

    return make_pair
