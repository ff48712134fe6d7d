"""An ASGI 3 application serving a hub: HTTP/SSE (spec/HTTP.md) and the binary protocol over
WebSocket, mountable in Starlette or FastAPI and run by uvicorn or hypercorn (asyncio).

    from transports.asgi import StreamApp

    app = StreamApp()                       # or StreamApp(hub, http=HttpOptions(...))
    app.channel("chat:answers", on_open=answer)   # async handlers, as transports.asyncio

    # Starlette: routes=[Mount("/streams", app=app), ...]

Rules for this file:

1. The ASGI server parses HTTP; :class:`streamproto.HttpExchange` decides everything else,
   exactly as for the h11 listeners of the backends. This module moves ASGI messages.
2. A WebSocket scope is a binary-protocol connection: each binary message in is streamproto
   bytes, each batch out one binary message (spec R-TR-2), driven by the same
   :class:`ServerDriver` as the backends'.
3. The application owns the hub's timer (session expiry, retention, ``call_later``) on the
   loop it runs on; handlers run as tasks of that loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import quote

from streamproto import (
    Config,
    ErrorCode,
    HttpExchange,
    HttpOptions,
    HttpRequest,
    Hub,
    Producer,
    RouteKind,
    UploadReader,
    route,
)
from streamproto._http import cors_headers, error_body, preflight_headers

from ._common import ServerBase, ServerDriver
from ._framing import SUBPROTOCOL, RawFraming, close_code_for
from .asyncio import ServerProducer, ServerUpload, _guard

__all__ = ["StreamApp"]

log = logging.getLogger("transports.asgi")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class _MessageFraming(RawFraming):
    """WebSocket framing done by the ASGI server: bytes pass through as on raw TCP; a text
    message is a violation (spec R-TR-4)."""

    def __init__(self) -> None:
        super().__init__()
        self.violation = None


class StreamApp(ServerBase[ServerProducer[Any], ServerUpload]):
    """An ASGI 3 application serving ``hub`` (None: :func:`transports.new_hub`).

    Register channels with :meth:`channel` (``on_open``/``on_upload`` are coroutine
    functions, as with :mod:`transports.asyncio`). HTTP requests are served as spec/HTTP.md
    says, with ``http`` options; WebSocket connections (any path under the mount: the ASGI
    server routes them here) speak the binary protocol.
    """

    def __init__(
        self,
        hub: Hub | None = None,
        *,
        config: Config | None = None,
        http: HttpOptions | None = None,
    ) -> None:
        super().__init__(hub, "http://asgi:0/", config, http)
        self.tasks: set[asyncio.Task[None]] = set()
        self._hub_timer: asyncio.TimerHandle | None = None
        self._hub_at: float | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._exchanges: set[HttpExchange] = set()
        self._drivers: set[ServerDriver] = set()
        self._stopping = False

    # -- ServerBase -----------------------------------------------------------------------------

    def _producer(self, producer: Producer) -> ServerProducer[Any]:
        return ServerProducer(producer, server=self)

    def _upload(self, reader: UploadReader) -> ServerUpload:
        return ServerUpload(self, reader)

    def _start(
        self, fn: Callable[..., Awaitable[None]], target: Producer | UploadReader | None, *args: Any
    ) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(_guard(fn(*args), target))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _rearm_hub(self) -> None:
        loop = self._loop
        deadline = self.hub.next_deadline()
        if loop is None or deadline == self._hub_at:
            return
        if self._hub_timer is not None:
            self._hub_timer.cancel()
        self._hub_at = deadline
        self._hub_timer = None if deadline is None else loop.call_at(deadline, self._on_hub_timer)

    def _on_hub_timer(self) -> None:
        self._hub_timer = None
        self._hub_at = None
        self.hub.handle_timer()
        self._rearm_hub()

    # -- ASGI -----------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI 3 entry point."""
        self._loop = asyncio.get_running_loop()
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "websocket":
            await self._websocket(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        self._rearm_hub()

    async def shutdown(self) -> None:
        """Stop: new requests get 503, open event streams end, WebSockets get GOAWAY."""
        self._stopping = True
        for exchange in list(self._exchanges):
            exchange.shutdown(ErrorCode.SERVER_SHUTDOWN)
        for driver in list(self._drivers):
            driver.shutdown(ErrorCode.SERVER_SHUTDOWN)
        for task in list(self.tasks):
            task.cancel()
        if self._hub_timer is not None:
            self._hub_timer.cancel()
            self._hub_timer = None

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :] or "/"
        headers = tuple(
            (name.decode("latin-1").lower(), value.decode("latin-1"))
            for name, value in scope["headers"]
        )
        request = HttpRequest(
            scope["method"].upper(),
            quote(path, safe="/:~"),
            scope.get("query_string", b"").decode("latin-1"),
            headers,
        )
        if self._stopping:
            await _simple(send, 503, (), error_body(ErrorCode.SERVER_SHUTDOWN, "shutting down"))
            return
        decision = route(request, self.http)
        origin = request.header("origin")
        cors = cors_headers(origin, self.http) if origin else ()
        if decision.kind is RouteKind.PREFLIGHT:
            await _simple(send, 204, preflight_headers(request, self.http), b"", json=False)
            return
        if decision.kind is RouteKind.REFUSE or decision.kind is RouteKind.WEBSOCKET:
            code, status = decision.code, decision.status
            if decision.kind is RouteKind.WEBSOCKET:  # the ASGI server did not upgrade it
                code, status = ErrorCode.PROTOCOL_ERROR, 400
            extra = (("allow", decision.allow),) if decision.allow else ()
            await _simple(send, status, cors + extra, error_body(code, decision.message))
            return
        loop = asyncio.get_running_loop()
        wake, readable = asyncio.Event(), asyncio.Event()

        def wakeup() -> None:
            wake.set()
            readable.set()

        exchange = HttpExchange(
            self.hub, request, decision, self.config, self.http, clock=loop.time, wakeup=wakeup
        )
        self._exchanges.add(exchange)
        reader = asyncio.ensure_future(_read_body(exchange, receive, wake, readable))
        try:
            await _respond(exchange, send, wake, self._rearm_hub)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            if not exchange.done:
                exchange.disconnected()
            self._exchanges.discard(exchange)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        if SUBPROTOCOL not in scope.get("subprotocols", ()) or self._stopping:
            await send({"type": "websocket.close", "code": 1002})  # refused before the upgrade
            return
        await send({"type": "websocket.accept", "subprotocol": SUBPROTOCOL})
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()
        framing = _MessageFraming()
        driver = self._admit(framing, loop.time, wake.set)
        self._drivers.add(driver)
        reader = asyncio.ensure_future(_read_ws(driver, framing, receive, wake))
        try:
            while True:
                wake.clear()
                data = driver.step()
                self._rearm_hub()
                if data:
                    await send({"type": "websocket.send", "bytes": data})
                    continue
                if driver.finished:
                    if not reader.done():
                        await send({"type": "websocket.close", "code": _close(driver)})
                    return
                await _wait(wake, driver.deadline(), loop)
        except OSError:  # the client went away while we sent
            return
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            driver.connection_lost()
            self._gone(driver)
            self._drivers.discard(driver)


def _close(driver: ServerDriver) -> int:
    violation = driver.framing.violation
    return 1003 if violation is not None else close_code_for(driver.close_code)


async def _read_ws(
    driver: ServerDriver, framing: _MessageFraming, receive: Receive, wake: asyncio.Event
) -> None:
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            driver.receive(b"")
            wake.set()
            return
        data = message.get("bytes")
        if data is None:  # a text message (R-TR-4)
            framing.violation = "text messages are not part of streamproto"
            driver.receive(b"")
            wake.set()
            return
        driver.receive(data)
        wake.set()


async def _wait(
    wake: asyncio.Event, deadline: float | None, loop: asyncio.AbstractEventLoop
) -> None:
    if deadline is None:
        await wake.wait()
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(wake.wait(), max(0.0, deadline - loop.time()))


async def _simple(
    send: Send,
    status: int,
    headers: tuple[tuple[str, str], ...],
    body: bytes,
    *,
    json: bool = True,
) -> None:
    fields = [(k.encode(), v.encode()) for k, v in headers]
    if json:
        fields.append((b"content-type", b"application/json"))
    fields.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": fields})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _read_body(
    exchange: HttpExchange, receive: Receive, wake: asyncio.Event, readable: asyncio.Event
) -> None:
    """Feed the request body as the exchange wants it (an upload's credit), then watch for
    the client going away."""
    more = True
    while more and not exchange.done:
        readable.clear()
        if not exchange.wants_body:
            await readable.wait()
            continue
        message = await receive()
        if message["type"] == "http.disconnect":
            exchange.disconnected()
            wake.set()
            return
        exchange.receive_body(message.get("body", b""))
        more = message.get("more_body", False)
        if not more:
            exchange.end_body()
        wake.set()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            if not exchange.done:
                exchange.disconnected()
            wake.set()
            return


async def _respond(
    exchange: HttpExchange, send: Send, wake: asyncio.Event, after: Callable[[], None]
) -> None:
    loop = asyncio.get_running_loop()
    started = False
    while True:
        wake.clear()
        exchange.pump()
        after()
        if exchange.head is not None:
            if not started:
                started = True
                status, headers = exchange.head
                fields = [(k.encode(), v.encode()) for k, v in headers]
                await send({"type": "http.response.start", "status": status, "headers": fields})
            body = exchange.take_body()
            if body:
                await send({"type": "http.response.body", "body": body, "more_body": True})
                continue
            if exchange.complete:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
        deadline = exchange.next_deadline()
        await _wait(wake, deadline, loop)
        if deadline is not None and loop.time() >= deadline:
            exchange.handle_timer()
