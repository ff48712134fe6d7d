"""One socket of an ``http://`` listener: HTTP/1.1 framing (h11) around the pure mapping.

Rules for this file:

1. h11 moves bytes: it parses request heads and bodies and frames responses. What a request
   means, its status, headers and body are decided in :mod:`streamproto._http`, which the ASGI
   app drives as well.
2. The driver has the interface the backends drive a :class:`ServerDriver` with (``receive``,
   ``outgoing``, ``deadline``, ``timer``, ``finished``...), so the three backends serve HTTP
   with their loops unchanged, and ``reading`` says when to stop reading the socket (an upload
   beyond its credit, a pipelining client).
3. ``Upgrade: websocket`` on the configured path hands the socket to a :class:`ServerDriver`
   over :class:`WsFraming` with the request h11 parsed and the bytes after it.
4. Bounded: a request head of at most ``max_header_bytes`` (431 past it), within
   ``header_timeout`` seconds of the connection or of the previous response (408), one request
   at a time (a pipelined request is not answered: the connection closes after the current
   response, RFC 9112 section 9.3.2).
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Callable
from typing import Final

import h11

from streamproto import Config, ErrorCode, Hub
from streamproto._http import (
    HttpExchange,
    HttpOptions,
    HttpRequest,
    RouteKind,
    cors_headers,
    error_body,
    preflight_headers,
    route,
)

from ._common import OutputGuard, ServerDriver, Stepping
from ._framing import Framing, WsFraming

__all__ = ["HttpDriver", "HttpOptions"]

log = logging.getLogger("transports.http")

#: Bytes of a pipelined request kept while the current response runs; past it, reading stops.
_PIPELINE_LIMIT: Final = 64 << 10

#: The fields h11 frames a message by: they go through h11, which decides the framing.
_FRAMING: Final = frozenset({"content-length", "transfer-encoding", "connection"})
#: Field lines as RFC 9110 allows them: a token, a colon, a value of visible ASCII or
#: obs-text with inner spaces and tabs (the leading and trailing whitespace is checked apart).
_FIELD_LINES: Final = re.compile(r"(?:[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[\t\x20-\x7e\x80-\xff]*\n)*")


def _split_head(fields: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], bytes] | None:
    """The framing fields for h11 and the other fields' lines, or None if a field is not
    valid (then h11 gets them all, and its validation raises).

    h11 validates every field of a response again for each framing field it sets (three
    times more for a streamed response), and a response's head is on the path of the first
    event: the fields h11 does not frame by are checked here once, in one match, and go
    into the head h11 wrote for the rest."""
    framing = [field for field in fields if field[0] in _FRAMING]
    others = [field for field in fields if field[0] not in _FRAMING]
    text = "".join(f"{name}:{value}\n" for name, value in others)
    if not _FIELD_LINES.fullmatch(text) or any(v != v.strip(" \t") for _, v in others):
        return None
    lines = "".join(f"{name}: {value}\r\n" for name, value in others)
    return framing, lines.encode("latin-1")


class HttpDriver(Stepping):
    """One accepted socket on an ``http://`` listener (see the module's rules)."""

    def __init__(
        self,
        hub: Hub,
        config: Config,
        options: HttpOptions,
        clock: Callable[[], float],
        wakeup: Callable[[], None],
        *,
        websocket: Callable[[Framing], ServerDriver],
        busy: bool = False,
    ) -> None:
        self.hub = hub
        self.config = config
        self.options = options
        self.clock = clock
        self._wakeup = wakeup
        self._receiving = False
        self._websocket = websocket
        self._h11 = h11.Connection(
            h11.SERVER, max_incomplete_event_size=self.options.max_header_bytes
        )
        self.exchange: HttpExchange | None = None
        #: After an upgrade: the WebSocket connection's driver, which gets everything.
        self.ws: ServerDriver | None = None
        self._out: list[bytes] = []
        self._head_sent = False
        self._closing = False  # the connection ends after what is queued
        self._done = False
        self._flushing = False
        self._again = False
        self._eof = False
        self._pipelined = False
        self._shutdown: int | None = None
        self._head_deadline: float | None = clock() + self.options.header_timeout
        self.guard = OutputGuard(config.output_stall_timeout)
        self.stalled = False
        self.close_code = int(ErrorCode.NO_ERROR)
        #: Over the server's ``max_connections``: every request is answered 503 SERVER_BUSY.
        self.busy = busy

    # -- the backend's calls (ServerDriver's interface) -----------------------------------------

    def wakeup(self) -> None:
        """Ask the backend for a flush; not while ``receive`` runs, after which every backend
        flushes anyway. (A wakeup from inside would flush before a handler the request started
        has run: the head would leave alone, and its first event in a second write.)"""
        if not self._receiving:
            self._wakeup()

    @property
    def handshaking(self) -> bool:
        """Counted against ``max_pending_handshakes`` only after an upgrade, as a WebSocket."""
        return self.ws is not None and self.ws.handshaking

    @property
    def finished(self) -> bool:
        """True when the socket should be closed (after writing ``outgoing()``)."""
        if self.ws is not None:
            return self.ws.finished
        return self._done

    @property
    def reading(self) -> bool:
        """Whether the backend should read the socket now."""
        if self.ws is not None:
            return True
        if self._done or self._closing:
            return not self._done
        exchange = self.exchange
        if exchange is None:
            return True
        if self._h11.their_state is h11.SEND_BODY:
            return exchange.wants_body
        # The request is complete: read on to see the client go, unless it pipelines.
        return len(self._h11.trailing_data[0]) < _PIPELINE_LIMIT

    def output_blocked(self, flag: bool) -> None:
        """The transport stopped (True) or resumed (False) taking output."""
        if self.ws is not None:
            self.ws.output_blocked(flag)
        self.guard.blocked(flag, self.clock())

    def receive(self, data: bytes) -> None:
        """Socket bytes in; ``b""`` for end of input."""
        if self.ws is not None:
            self.ws.receive(data)
            return
        if self._done:
            return
        if not data:
            self._eof = True
            if self.exchange is not None and not self.exchange.done:
                self.exchange.disconnected()
            self._done = True
            return
        try:
            self._h11.receive_data(data)
        except h11.RemoteProtocolError:  # pragma: no cover - data after the client closed
            self._done = True
            return
        self._receiving = True
        try:
            self._process()
        finally:
            self._receiving = False

    def outgoing(self, max_bytes: int | None = None) -> bytes:
        """Socket bytes to write now."""
        if self.ws is not None:
            return b"".join(self._drain()) + self.ws.outgoing(max_bytes)
        if self._flushing:
            # Re-entered by a wakeup while the exchange runs (the thread backend flushes
            # inline): the outer call goes round again, so the order holds and nothing waits.
            self._again = True
            return b""
        self._flushing = True
        parts: list[bytes] = []
        try:
            while True:
                self._again = False
                exchange = self.exchange
                if exchange is not None:
                    if self._h11.their_state is h11.SEND_BODY and exchange.wants_body:
                        self._process()  # body bytes held while the upload had no credit
                    self._respond_from(exchange)
                parts += self._drain()
                if not self._again or self.ws is not None:
                    break
        finally:
            self._flushing = False
        if self.ws is not None:
            parts.append(self.ws.outgoing(max_bytes))
        return b"".join(parts)

    def deadline(self) -> float | None:
        """When ``timer`` must run next."""
        if self.ws is not None:
            return self.ws.deadline()
        times = [self._head_deadline, self.guard.deadline()]
        if self.exchange is not None:
            times.append(self.exchange.next_deadline())
        present = [t for t in times if t is not None]
        return min(present) if present else None

    def timer(self) -> None:
        """Run the timers that are due."""
        if self.ws is not None:
            self.ws.timer()
            return
        now = self.clock()
        stall = self.guard.deadline()
        if stall is not None and now >= stall:
            self.stalled = True
            self.close_code = int(ErrorCode.EXCESSIVE_LOAD)
            if self.exchange is not None:
                self.exchange.disconnected()
            self._done = True
            return
        if self._head_deadline is not None and now >= self._head_deadline:
            self._head_deadline = None
            if self._h11.their_state is h11.IDLE and not self._h11.trailing_data[0]:
                self._done = True  # an idle keep-alive connection: just close
            else:
                self._error(408, ErrorCode.HANDSHAKE_TIMEOUT, "request head too slow")
            return
        if self.exchange is not None:
            self.exchange.handle_timer()

    def connection_lost(self) -> None:
        """The socket is closed."""
        if self.ws is not None:
            self.ws.connection_lost()
        elif self.exchange is not None and not self.exchange.done:
            self.exchange.disconnected()
        self._done = True

    def shutdown(self, code: int = ErrorCode.NO_ERROR) -> None:
        """The server stops: an event stream runs to its end under NO_ERROR (then the
        connection closes), another code ends it now; an idle connection closes."""
        if self.ws is not None:
            self.ws.shutdown(code)
            return
        self._shutdown = code
        exchange = self.exchange
        if exchange is not None and not exchange.done:
            exchange.shutdown(code)
            self._closing = True
        elif self._h11.their_state is h11.IDLE and not self._h11.trailing_data[0]:
            self._done = True
        self.wakeup()

    # -- internals ------------------------------------------------------------------------------

    def _drain(self) -> list[bytes]:
        out, self._out = self._out, []
        return out

    def _send(self, event: h11.Event) -> None:
        data = self._h11.send(event)
        if data:
            self._out.append(data)

    def _process(self) -> None:
        """Take the h11 events the buffered bytes make, as far as the current request allows."""
        conn = self._h11
        while not self._done and self.ws is None:
            exchange = self.exchange
            if exchange is not None and conn.their_state is h11.SEND_BODY:
                if not exchange.wants_body:
                    return
            elif exchange is not None or conn.our_state is not h11.IDLE:
                # Our response is not over: anything more is a pipelined request.
                if conn.trailing_data[0]:
                    self._pipelined = True
                return
            if conn.their_state is h11.IDLE and self._head_too_large():
                self._error(431, ErrorCode.LIMIT_EXCEEDED, "request head too large")
                return
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                status = exc.error_status_hint
                if status == 431:
                    self._error(431, ErrorCode.LIMIT_EXCEEDED, "request head too large")
                else:
                    self._error(status, ErrorCode.PROTOCOL_ERROR, f"malformed request: {exc}")
                return
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return
            if isinstance(event, h11.Request):
                self._on_request(event)
            elif isinstance(event, h11.Data):
                if exchange is not None:
                    exchange.receive_body(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                if exchange is not None:
                    exchange.end_body()
                    self.wakeup()
            elif isinstance(event, h11.ConnectionClosed):  # pragma: no cover - EOF is ours
                self._done = True

    def _head_too_large(self) -> bool:
        # h11 bounds a head that is still incomplete; one that arrived whole in one read is
        # measured here, so the limit does not depend on how the bytes were cut.
        buffered = self._h11.trailing_data[0]
        end = buffered.find(b"\r\n\r\n")
        limit = self.options.max_header_bytes
        return end > limit or (end < 0 and len(buffered) > limit)

    @property
    def queued_bytes(self) -> int:
        """Bytes held for the client: the exchange's SSE text and its stream's queue."""
        return 0 if self.exchange is None else self.exchange.buffered

    def _on_request(self, event: h11.Request) -> None:
        self._head_deadline = None
        target = event.target.decode("latin-1")
        path, _, query = target.partition("?")
        headers = tuple(
            (name.decode("latin-1").lower(), value.decode("latin-1"))
            for name, value in event.headers
        )
        request = HttpRequest(event.method.decode("latin-1").upper(), path, query, headers)
        if self._shutdown is not None:
            self._error(503, ErrorCode.SERVER_SHUTDOWN, "server shutting down")
            return
        if self.busy:
            self._error(503, ErrorCode.SERVER_BUSY, "the server is busy")
            return
        decision = route(request, self.options)
        kind = decision.kind
        if kind is RouteKind.WEBSOCKET:
            self._upgrade(event, target)
        elif kind is RouteKind.PREFLIGHT:
            self._simple(204, preflight_headers(request, self.options), b"")
        elif kind is RouteKind.REFUSE:
            origin = request.header("origin")
            cors = cors_headers(origin, self.options) if origin else ()
            if decision.allow:
                cors = (*cors, ("allow", decision.allow))
            self._simple(
                decision.status, cors, error_body(decision.code, decision.message), json=True
            )
        else:
            self._head_sent = False
            self.exchange = HttpExchange(
                self.hub,
                request,
                decision,
                self.config,
                self.options,
                clock=self.clock,
                wakeup=self.wakeup,
            )
        self.wakeup()

    def _upgrade(self, event: h11.Request, target: str) -> None:
        framing = WsFraming(False, path=self.options.ws_path)
        framing.take_upgrade(list(event.headers), target)
        trailing, _ = self._h11.trailing_data
        self.ws = self._websocket(framing)
        if trailing:
            self.ws.receive(bytes(trailing))

    def _simple(
        self, status: int, headers: tuple[tuple[str, str], ...], body: bytes, *, json: bool = False
    ) -> None:
        """A whole response that needs no hub: preflights and refusals."""
        fields = list(headers)
        if json:
            fields.append(("content-type", "application/json"))
        fields.append(("content-length", str(len(body))))
        self._skip_body()
        self._check_pipelined()
        if self._h11.their_state is not h11.DONE or self._pipelined:
            fields.append(("connection", "close"))  # a body not read, or a pipelined request
        self._send(h11.Response(status_code=status, headers=fields))
        if body:
            self._send(h11.Data(data=body))
        self._send(h11.EndOfMessage())
        self._next_cycle()

    def _skip_body(self) -> None:
        """Read past the body of a request answered without it, as far as it has arrived (an
        empty body always has), so that the connection can serve the next request."""
        conn = self._h11
        with contextlib.suppress(h11.RemoteProtocolError):
            while conn.their_state is h11.SEND_BODY:
                event = conn.next_event()
                if event is h11.NEED_DATA or event is h11.PAUSED:
                    return

    def _check_pipelined(self) -> None:
        # Bytes after a whole request, before its answer: the client pipelines (R-HTTP-72).
        conn = self._h11
        if conn.their_state is h11.DONE and conn.trailing_data[0]:
            self._pipelined = True

    def _error(self, status: int, code: int, message: str) -> None:
        """An error answered outside an exchange (malformed HTTP, a slow head): then close."""
        self._closing = True
        if self._h11.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            body = error_body(code, message)
            fields = [
                ("content-type", "application/json"),
                ("content-length", str(len(body))),
                ("connection", "close"),
            ]
            try:
                self._send(h11.Response(status_code=status, headers=fields))
                self._send(h11.Data(data=body))
                self._send(h11.EndOfMessage())
            except h11.LocalProtocolError:  # pragma: no cover - h11 refuses to answer
                pass
        self._done = True
        self.wakeup()

    def _respond_from(self, exchange: HttpExchange) -> None:
        if exchange.head is None:
            exchange.pump()  # the hub woke it: an upload's reader read, say (credit back)
            if exchange.head is None:
                return
        if not self._head_sent:
            self._head_sent = True
            if exchange.done:  # answered at once (a refusal, 204): past its (empty) body
                self._skip_body()
            self._check_pipelined()
            status, headers = exchange.head
            fields = list(headers)
            if (
                not exchange.keep_alive
                or self._shutdown is not None
                or self._pipelined
                or (exchange.done and self._h11.their_state is not h11.DONE)
            ):
                fields.append(("connection", "close"))
            split = _split_head(fields)
            if split is None:
                self._send(h11.Response(status_code=status, headers=fields))
            else:
                head = self._h11.send(h11.Response(status_code=status, headers=split[0]))
                at = head.index(b"\r\n") + 2  # after the status line (h11 always writes one)
                self._out.append(head[:at] + split[1] + head[at:])
        body = exchange.take_body()
        if body and self._h11.our_state is h11.SEND_BODY:
            self._send(h11.Data(data=body))
        if exchange.complete and self._h11.our_state is h11.SEND_BODY:
            self._send(h11.EndOfMessage())
            self._next_cycle()

    def _next_cycle(self) -> None:
        """The response is over: the next request, or the end of the connection."""
        conn = self._h11
        kept = self.exchange is None or self.exchange.keep_alive  # False after Hub.shutdown
        self.exchange = None
        self._check_pipelined()
        if (
            conn.our_state is h11.DONE
            and conn.their_state is h11.DONE
            and kept
            and not self._pipelined
            and not self._closing
            and self._shutdown is None
        ):
            conn.start_next_cycle()
            self._head_deadline = self.clock() + self.options.header_timeout
            self.wakeup()
            return
        self._done = True
