"""HTTP as another face of the hub: requests to hub operations, hub events to SSE bytes.

Rules for this file (spec/HTTP.md is the normative text; the R-HTTP numbers are its rules):

1. Pure: no I/O, no clock of its own, no HTTP parser. A request arrives already parsed
   (:class:`HttpRequest`: method, path, query, headers), so the h11 listeners of the three
   backends and the ASGI app drive the same object; what it answers is a status, headers and
   body bytes (:class:`HttpExchange`).
2. Every decision is made here, once: the route (:func:`route`), the resume point, the status
   of every refusal (:func:`status_for`), 204 after the end, CORS, the auth material.
3. An exchange reaches the hub exactly as a binary connection does: it owns a server
   :class:`Connection` attached to the hub and a client :class:`Connection` it talks to in
   memory, so credit, overflow policies, replay, gaps, outcomes, authentication and
   authorization are the hub's own, not re-implemented. The client side returns credit only
   as the transport takes the SSE bytes (:meth:`HttpExchange.take_body`): a client that never
   reads holds at most one window of text here, and its subscription's overflow policy
   decides the rest.
4. Exchanges are state tables: :data:`TRANSITIONS` lists every (state, input) pair allowed;
   the rest is a local misuse (INVALID_STATE).
"""

from __future__ import annotations

import enum
import functools
import json
from collections import deque
from collections.abc import Callable
from typing import Final
from urllib.parse import parse_qsl, unquote

import attrs

from . import _sse
from ._config import Config
from ._connection import Connection, WriteResult
from ._errors import ErrorCode, LocalProtocolError, code_name
from ._events import (
    ConnectionTerminated,
    DataReceived,
    Event,
    GapReceived,
    GoawayReceived,
    HandshakeRefused,
    RequestAccepted,
    RequestRejected,
    StreamEnded,
    StreamFailed,
    StreamsReceived,
    UploadCancelled,
    Writable,
)
from ._frames import StreamEntry, StreamState
from ._hub import Hub, Peer
from ._names import valid_channel, valid_stream_id
from ._state import HState

__all__ = [
    "ExchangeState",
    "HttpExchange",
    "HttpOptions",
    "HttpRequest",
    "Route",
    "RouteKind",
    "default_auth",
    "entry_json",
    "route",
    "status_for",
]

U64: Final = (1 << 64) - 1

#: Stream codes as HTTP statuses (R-HTTP-50); application codes are 403 (a refusal by the
#: application's hooks), codes not listed 500.
_STATUS: Final[dict[int, int]] = {
    ErrorCode.UNKNOWN_CHANNEL: 404,
    ErrorCode.UNKNOWN_STREAM: 404,
    ErrorCode.INVALID_NAME: 400,
    ErrorCode.INVALID_ARGUMENT: 400,
    ErrorCode.AUTH_FAILED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.NOT_ALLOWED: 403,
    ErrorCode.STREAM_EXISTS: 409,
    ErrorCode.UPLOAD_CANCELLED: 409,
    ErrorCode.LIMIT_EXCEEDED: 429,
    ErrorCode.RESOURCE_EXHAUSTED: 503,
    ErrorCode.SERVER_BUSY: 503,
    ErrorCode.SERVER_SHUTDOWN: 503,
    ErrorCode.CONNECTION_LOST: 503,
    ErrorCode.CHUNK_TOO_LARGE: 413,
    ErrorCode.FRAME_TOO_LARGE: 413,
    ErrorCode.HANDLER_FAILED: 500,
}


def status_for(code: int) -> int:
    """The HTTP status of an error ``code`` (R-HTTP-50)."""
    if code >= 1000:
        return 403
    return _STATUS.get(code, 500)


def error_body(code: int, message: str) -> bytes:
    """The JSON body of every error response (R-HTTP-51)."""
    return json.dumps({"code": code, "name": code_name(code), "message": message}).encode()


Headers = tuple[tuple[str, str], ...]


@attrs.frozen
class HttpRequest:
    """A parsed request head: ``method`` upper-case, ``path`` as sent (percent-encoded, no
    query), ``query`` the raw query string, ``headers`` with lower-case names."""

    method: str
    path: str
    query: str = ""
    headers: Headers = ()

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (lower-case), if any."""
        for key, value in self.headers:
            if key == name:
                return value
        return None


def default_auth(request: HttpRequest) -> bytes:
    """The auth material an HTTP request presents to the hub's ``authenticate`` hook in place
    of HELLO's ``auth``: its ``Authorization`` header, UTF-8, or nothing (R-HTTP-61)."""
    value = request.header("authorization")
    return b"" if value is None else value.encode()


@attrs.frozen(kw_only=True)
class HttpOptions:
    """How a listener maps HTTP onto its hub.

    ``ws_path``: the path whose ``Upgrade: websocket`` requests become WebSocket connections.
    ``allow_origins``: origins whose browser pages may call (CORS; ``"*"`` allows any).
    ``retry_ms``: the ``retry:`` advice opening every event stream. ``max_body``: the largest
    POST body taken as ``args`` (bigger: 413). ``auth``: the request's auth material for
    ``authenticate`` (default :func:`default_auth`). ``max_header_bytes`` and
    ``header_timeout`` bound a request head (431, 408) where this side parses HTTP itself.
    """

    ws_path: str = "/"
    allow_origins: tuple[str, ...] = ()
    retry_ms: int = attrs.field(default=1000, validator=attrs.validators.ge(0))
    max_body: int = attrs.field(default=64 << 10, validator=attrs.validators.ge(0))
    auth: Callable[[HttpRequest], bytes] = default_auth
    max_header_bytes: int = attrs.field(default=16 << 10, validator=attrs.validators.ge(256))
    header_timeout: float = attrs.field(default=10.0, validator=attrs.validators.gt(0))


class RouteKind(enum.Enum):
    """What a request asks for (R-HTTP-1..9)."""

    SUBSCRIBE = "subscribe"
    OPEN = "open"
    UPLOAD = "upload"
    STATUS = "status"
    LIST = "list"
    DELETE = "delete"
    PREFLIGHT = "preflight"
    WEBSOCKET = "websocket"
    REFUSE = "refuse"


@attrs.frozen
class Route:
    """The decision on a request head: its kind and what it names. A REFUSE carries
    ``code``/``message`` (and ``status``: 405 and CORS refusals have no code of their own)."""

    kind: RouteKind
    channel: str = ""
    stream_id: str = ""
    after_seq: int | None = None
    #: The resume point is the id of an ``end`` event (``<seq>:end``): the client saw the end.
    end_seen: bool = False
    args: bytes = b""
    status: int = 0
    code: int = 0
    message: str = ""
    #: A 405's ``Allow`` header.
    allow: str = ""
    #: LIST: the mask of states asked for (``1 << StreamState``; 0: any) and the page size;
    #: its cursor is ``stream_id``.
    states: int = 0
    limit: int = 0
    #: OPEN: run-or-join, join the running stream ``stream_id`` if there is one (R-HTTP-33).
    join: bool = False


def _refuse(code: int, message: str, status: int = 0, allow: str = "") -> Route:
    status = status or status_for(code)
    return Route(RouteKind.REFUSE, status=status, code=code, message=message, allow=allow)


def _decimal(text: str, high: int) -> int | None:
    """``text`` as a decimal in 0..``high``, else None. The length is checked first: Python
    refuses to convert a string of more than 4,300 digits (ValueError), and a query may hold
    one."""
    if not (text.isascii() and text.isdigit()) or len(text.lstrip("0")) > len(str(high)):
        return None
    value = int(text)
    return value if value <= high else None


def _seq(text: str, what: str) -> int | Route:
    value = _decimal(text, U64)
    if value is None:
        return _refuse(ErrorCode.INVALID_ARGUMENT, f"{what} must be a seq (0..2^64-1): {text!r}")
    return value


def _origin_refused(request: HttpRequest, options: HttpOptions) -> bool:
    origin = request.header("origin")
    if origin is None or origin in options.allow_origins or "*" in options.allow_origins:
        return False
    host = request.header("host")
    return origin not in (f"http://{host}", f"https://{host}")


def route(request: HttpRequest, options: HttpOptions) -> Route:
    """Decide what ``request`` asks of the hub (R-HTTP-1..9), or how it is refused."""
    method = request.method
    upgrade = (request.header("upgrade") or "").lower()
    if upgrade == "websocket" and method == "GET" and request.path == options.ws_path:
        return Route(RouteKind.WEBSOCKET)
    if _origin_refused(request, options):
        return _refuse(ErrorCode.FORBIDDEN, "origin not allowed")
    if method == "OPTIONS":
        return Route(RouteKind.PREFLIGHT)
    parts = [unquote(part) for part in request.path.split("/")[1:]]
    if not parts or not parts[0]:
        return _refuse(ErrorCode.UNKNOWN_CHANNEL, "no channel in the path", 404)
    channel = parts[0]
    if not valid_channel(channel):
        return _refuse(ErrorCode.INVALID_NAME, f"invalid channel name {channel!r}")
    key = (len(parts), parts[2] if len(parts) == 3 else "")
    methods = _ROUTES.get(key)
    if methods is None:
        return _refuse(ErrorCode.UNKNOWN_STREAM, "no such resource", 404)
    kind = methods.get(method)
    if kind is None:
        allowed = ", ".join([*methods, "OPTIONS"])
        return _refuse(ErrorCode.NOT_ALLOWED, f"allowed: {allowed}", 405, allowed)
    query = dict(parse_qsl(request.query, keep_blank_values=True))
    if kind is RouteKind.OPEN:
        return _open_route(channel, query)
    if kind is RouteKind.LIST:
        return _list_route(channel, query)
    stream_id = parts[1]
    if not valid_stream_id(stream_id):
        return _refuse(ErrorCode.INVALID_NAME, f"invalid stream id {stream_id!r}")
    if kind is RouteKind.UPLOAD:
        return Route(RouteKind.UPLOAD, channel, stream_id, args=query.get("args", "").encode())
    if kind is RouteKind.STATUS or kind is RouteKind.DELETE:
        return Route(kind, channel, stream_id)
    # R-HTTP-11: Last-Event-ID wins over after_seq, because EventSource reconnects to the same
    # URL (after_seq included) and only its Last-Event-ID says where it stopped.
    last_id = (request.header("last-event-id") or "").strip()
    after: int | Route | None = None
    end_seen = False
    if last_id:
        # R-HTTP-13: the end event's id is ``<last seq>:end``, so a reconnect says whether the
        # end itself arrived (then 204, R-HTTP-14) or only the last chunk (then the end again).
        seq, colon, mark = last_id.partition(":")
        end_seen = bool(colon) and mark == "end"
        after = _seq(seq if end_seen else last_id, "Last-Event-ID")
    elif "after_seq" in query:
        after = _seq(query["after_seq"], "after_seq")
    if isinstance(after, Route):
        return after
    return Route(RouteKind.SUBSCRIBE, channel, stream_id, after_seq=after, end_seen=end_seen)


#: The route table (R-HTTP-3): (segments, third segment) -> {method: what it asks}. A shape
#: missing is 404; a method missing from its row is 405 with the row's methods as ``Allow``.
_ROUTES: Final[dict[tuple[int, str], dict[str, RouteKind]]] = {
    (1, ""): {"GET": RouteKind.LIST, "POST": RouteKind.OPEN},
    (2, ""): {"GET": RouteKind.SUBSCRIBE, "DELETE": RouteKind.DELETE},
    (3, "upload"): {"POST": RouteKind.UPLOAD},
    (3, "status"): {"GET": RouteKind.STATUS},
}

#: The ``state`` filter of a listing (R-HTTP-91): names as in a status answer.
_STATE_NAMES: Final = {state.name.lower(): state for state in StreamState}
#: The largest ``limit`` of a listing page (a hub answers at most its own page size).
MAX_LIMIT: Final = 1000


def _list_route(channel: str, query: dict[str, str]) -> Route:
    # R-HTTP-91: every parameter is checked here, so the client side of the pair is never
    # handed a value it would refuse with a local error.
    states = 0
    for name in filter(None, query.get("state", "").split(",")):
        state = _STATE_NAMES.get(name)
        if state is None or state is StreamState.MISSING:
            names = ", ".join(n for n in _STATE_NAMES if n != "missing")
            return _refuse(ErrorCode.INVALID_ARGUMENT, f"state must be among {names}: {name!r}")
        states |= 1 << state
    after = query.get("after", "")
    if after and not valid_stream_id(after):
        return _refuse(ErrorCode.INVALID_NAME, f"invalid stream id {after!r}")
    text = query.get("limit", "100")
    limit = _decimal(text, MAX_LIMIT)
    if not limit:  # None or 0
        return _refuse(ErrorCode.INVALID_ARGUMENT, f"limit must be in 1..{MAX_LIMIT}: {text!r}")
    return Route(RouteKind.LIST, channel, after, states=states, limit=limit)


def _open_route(channel: str, query: dict[str, str]) -> Route:
    # R-HTTP-33: the stream id is optional (the server picks one); ``join`` needs one to name.
    stream_id = query.get("stream_id", "")
    if stream_id and not valid_stream_id(stream_id):
        return _refuse(ErrorCode.INVALID_NAME, f"invalid stream id {stream_id!r}")
    join = query.get("join", "0")
    if join not in ("0", "1"):
        return _refuse(ErrorCode.INVALID_ARGUMENT, f"join must be 0 or 1: {join!r}")
    if join == "1" and not stream_id:
        return _refuse(ErrorCode.INVALID_ARGUMENT, "join=1 needs a stream_id to join")
    return Route(RouteKind.OPEN, channel, stream_id, join=join == "1")


def entry_json(entry: StreamEntry) -> dict[str, object]:
    """A stream's status as JSON (R-HTTP-90): its id, state (lower case), code and seqs."""
    return {
        "stream_id": entry.stream_id,
        "state": entry.state.name.lower(),
        "code": entry.code,
        "first_seq": entry.first_seq,
        "last_seq": entry.last_seq,
    }


class ExchangeState(enum.Enum):
    """Where an exchange is (see :data:`TRANSITIONS`)."""

    #: Waiting for the hub's answer, or for the request body (POST open, upload).
    PENDING = "pending"
    #: The head is decided and the body (SSE events) goes out.
    STREAMING = "streaming"
    #: The response is complete (all of it handed to ``take_body``'s caller, or about to be).
    DONE = "done"


class Input(enum.Enum):
    """What moves an exchange."""

    RESPOND = "respond"  # the head is decided (with a body to follow)
    FINISH = "finish"  # the last body bytes are queued


#: (state, input) -> next state; a pair missing is a bug or a misuse (INVALID_STATE).
TRANSITIONS: Final[dict[tuple[ExchangeState, Input], ExchangeState]] = {
    (ExchangeState.PENDING, Input.RESPOND): ExchangeState.STREAMING,
    (ExchangeState.PENDING, Input.FINISH): ExchangeState.DONE,
    (ExchangeState.STREAMING, Input.FINISH): ExchangeState.DONE,
}

#: The routes an exchange serves: those that reach the hub.
_EXCHANGES: Final = frozenset(
    {
        RouteKind.SUBSCRIBE,
        RouteKind.OPEN,
        RouteKind.UPLOAD,
        RouteKind.STATUS,
        RouteKind.LIST,
        RouteKind.DELETE,
    }
)

#: Headers of every event-stream response (R-HTTP-10).
_SSE_HEADERS: Final = (
    ("content-type", "text/event-stream"),
    ("cache-control", "no-cache"),
    ("x-accel-buffering", "no"),
)
_JSON: Final = (("content-type", "application/json"),)
#: Response headers a page from another origin may read (R-HTTP-31, 33, 60).
_EXPOSED: Final = "Stream-Id, Stream-Joined"


@functools.lru_cache(maxsize=16)
def _pair_config(config: Config) -> Config:
    # The pair is in memory: no keepalive, no session to resume, credit as the text is taken.
    # (A listener has one config: derived once, not on every request.)
    return attrs.evolve(config, keepalive=0, session_grace=0, auto_credit=False)


class HttpExchange:
    """One HTTP request to the hub, sans-IO.

    Create it with the parsed request and the listener's config; then the driver:

    - feeds the request body with :meth:`receive_body` while :attr:`wants_body` is true (never
      faster: that is the upload's flow control, R-HTTP-41) and calls :meth:`end_body` at its
      end; a request without a body needs neither;
    - once :attr:`head` is set, sends it, then writes :meth:`take_body` whenever woken
      (``wakeup``) and at :meth:`next_deadline` (after :meth:`handle_timer`), until
      :attr:`done` and ``take_body()`` is empty;
    - calls :meth:`disconnected` if the client went away, :meth:`shutdown` when the server
      stops.

    ``keep_alive`` says whether the connection may serve another request afterwards.
    """

    def __init__(
        self,
        hub: Hub,
        request: HttpRequest,
        decision: Route,
        config: Config,
        options: HttpOptions,
        *,
        clock: Callable[[], float],
        wakeup: Callable[[], None] | None = None,
    ) -> None:
        if decision.kind not in _EXCHANGES:
            raise LocalProtocolError(
                ErrorCode.INVALID_ARGUMENT, f"an exchange serves hub requests, not {decision.kind}"
            )
        self.request = request
        self.route = decision
        self.options = options
        self._clock = clock
        self._wakeup = wakeup or (lambda: None)
        self.state = ExchangeState.PENDING
        #: Status and headers, once decided.
        self.head: tuple[int, Headers] | None = None
        self.keep_alive = True
        self._out: list[bytes] = []
        self._unconsumed = [0, 0]  # chunks, bytes handed out as text not yet taken
        self._heartbeat = config.keepalive
        self._ping_at: float | None = None
        self._stream_id = ""
        self._accepted = False
        self._args: list[bytes] = []  # POST open: the body so far
        self._body: deque[bytes] = deque()  # upload: pieces not yet queued on the pair
        self._body_size = 0
        self._body_ended = False
        self._sent = [0, 0]  # upload: chunks, bytes
        self._pumping = False
        self._deciding = False  # a subscribe was accepted; its head is decided after the pump
        self._delivered = False  # a subscribe got a chunk or a gap
        self._ended = self._failed = False
        self._close_after = False
        self._upload_ending = False  # END is queued behind the upload's last chunks
        self._stopping = False  # shutdown() was called
        self._server, self._client = Connection.pair(
            _pair_config(config), now=clock(), auth=options.auth(request)
        )
        self._hub = hub
        self._peer: Peer = hub.attach(self._server, self._wakeup)
        kind = decision.kind
        self._handle = 0
        if kind is RouteKind.OPEN:  # opened once the body (the args) is complete
            length = request.header("content-length")
            if length is not None and length.isdigit() and int(length) > options.max_body:
                self._fail_request(ErrorCode.LIMIT_EXCEEDED, "body too large", 413)
                return
        self._pump()  # the handshake: authentication decides here, synchronously
        if self.done:
            return
        if kind is RouteKind.SUBSCRIBE:
            self._handle = self._client.subscribe(
                decision.channel, decision.stream_id, after_seq=decision.after_seq or 0
            )
        elif kind is RouteKind.UPLOAD:
            self._handle = self._client.upload(decision.channel, decision.stream_id, decision.args)
        elif kind is RouteKind.STATUS:
            self._handle = self._client.status(decision.channel, decision.stream_id)
        elif kind is RouteKind.DELETE:
            self._handle = self._client.delete(decision.channel, decision.stream_id)
        elif kind is RouteKind.LIST:
            self._handle = self._client.list_streams(
                decision.channel,
                after=decision.stream_id,
                states=decision.states,
                limit=decision.limit,
            )
        self._pump()

    # -- the driver's calls ---------------------------------------------------------------------

    @property
    def done(self) -> bool:
        """True once the response is decided to its end (write what ``take_body`` still
        returns: see :attr:`complete`)."""
        return self.state is ExchangeState.DONE

    @property
    def complete(self) -> bool:
        """True once the response is over and ``take_body`` has handed out all of it: the
        driver ends the message now. (Taking text returns credit, and the pair may then
        finish the stream with more text queued, the last chunks and the end: ``done`` but
        not yet ``complete``; the exchange wakes its driver for that text.)"""
        return self.state is ExchangeState.DONE and not self._out

    @property
    def wants_body(self) -> bool:
        """Whether the driver should read and feed more of the request body now."""
        if self.done or self._body_ended:
            return False
        if self.route.kind is not RouteKind.UPLOAD:
            return True  # the args of an open (bounded by max_body), a GET's (ignored) body
        return self._accepted and not self._body and self._client.has_room(self._handle, 0)

    def receive_body(self, data: bytes) -> None:
        """A piece of the request body."""
        if self.done or not data:
            return
        if self.route.kind is RouteKind.OPEN:
            self._body_size += len(data)
            if self._body_size > self.options.max_body:
                self._fail_request(ErrorCode.LIMIT_EXCEEDED, "body too large", 413)
            else:
                self._args.append(data)
            return
        if self.route.kind is RouteKind.UPLOAD:
            limit = self._client.peer_max_chunk_size
            for i in range(0, len(data), limit):
                self._body.append(data[i : i + limit])
            self._feed_upload()
            self._pump()

    def end_body(self) -> None:
        """The request body is complete."""
        if self.done or self._body_ended:
            return
        self._body_ended = True
        kind = self.route.kind
        if kind is RouteKind.OPEN:
            args, self._args = b"".join(self._args), []
            if self._stopping:  # the server stopped while the body came
                self._fail_request(ErrorCode.SERVER_SHUTDOWN, "server shutting down")
                return
            decision = self.route
            self._handle = self._client.open(
                decision.channel, args, stream_id=decision.stream_id, join=decision.join
            )
            self._pump()
        elif kind is RouteKind.UPLOAD:
            self._feed_upload()
            self._pump()

    def pump(self) -> None:
        """Move what the hub queued since the last call (call it when woken, even before a
        head is decided: an upload's credit comes back this way)."""
        self._pump()

    def take_body(self) -> bytes:
        """Response body bytes to write now. Taking them is what returns credit to the
        stream: call it when the transport has room, not before."""
        self._pump()
        if not self._out:
            return b""
        data = b"".join(self._out)
        self._out.clear()
        chunks, nbytes = self._unconsumed
        if chunks and not self._client.closed:  # a no-op once the handle closed
            self._client.consume(self._handle, chunks, nbytes)
        self._unconsumed = [0, 0]
        if self._heartbeat and self.state is ExchangeState.STREAMING:
            self._ping_at = self._clock() + self._heartbeat
        self._pump()
        return data

    @property
    def buffered(self) -> int:
        """Bytes held for the client: SSE text not yet taken, and the stream's queue on the
        hub's side of the pair (bounded by the subscription's overflow policy)."""
        return sum(map(len, self._out)) + self._server.statistics().queued_bytes

    def next_deadline(self) -> float | None:
        """When :meth:`handle_timer` must run next (the heartbeat), if ever."""
        return self._ping_at if self.state is ExchangeState.STREAMING else None

    def handle_timer(self) -> None:
        """Send a heartbeat comment if the event stream was quiet for a keepalive interval."""
        at, now = self.next_deadline(), self._clock()
        if at is not None and now >= at:
            self._out.append(_sse.PING)
            self._ping_at = now + self._heartbeat
            self._wakeup()

    def disconnected(self) -> None:
        """The client went away: its subscription or upload ends as a disconnect does (an
        upload's reader fails with UPLOAD_DISCONNECTED)."""
        self._close_pair()
        if not self.done:
            self._move(Input.FINISH)
        self.keep_alive = False
        self._out.clear()

    def shutdown(self, code: int = ErrorCode.NO_ERROR) -> None:
        """The server is stopping: NO_ERROR lets an event stream run to its end, another code
        ends the response now (R-HTTP-53)."""
        self.keep_alive = False
        self._stopping = True
        if not self._server.closed:
            self._server.goaway(code, "server shutting down")
            self._peer.handle_events(self._server.take_events())
            self._pump()

    # -- internals ------------------------------------------------------------------------------

    def _move(self, what: Input) -> None:
        try:
            self.state = TRANSITIONS[self.state, what]
        except KeyError:
            raise LocalProtocolError(
                ErrorCode.INVALID_STATE, f"exchange: {what.value} in {self.state.value}"
            ) from None

    def _respond(self, status: int, headers: Headers) -> None:
        self.head = (status, headers + self._cors())
        self._move(Input.RESPOND)

    def _cors(self) -> Headers:
        origin = self.request.header("origin")
        if origin is None:
            return ()
        return cors_headers(origin, self.options)

    def _fail_request(self, code: int, message: str, status: int = 0) -> None:
        """An error response (before the head): JSON, then the end."""
        body = error_body(code, message)
        self._respond(status or status_for(code), (*_JSON, ("content-length", str(len(body)))))
        self._out.append(body)
        self._finish()
        if self.route.kind is not RouteKind.SUBSCRIBE and not self._body_ended:
            self.keep_alive = False  # the rest of the body is not read: the connection ends
        self._close_pair()

    def _finish(self) -> None:
        self._move(Input.FINISH)
        self._wakeup()

    def _close_pair(self) -> None:
        # The hub's side of the pair ends as a dropped connection does; one the server's
        # GOAWAY closed has told the hub already (ConnectionTerminated).
        if not self._server.closed:
            self._peer.handle_events(self._server.receive_data(b""))

    def _start_stream(self, extra: Headers = ()) -> None:
        self._respond(200, _SSE_HEADERS + extra)
        self._out.insert(0, _sse.encode_retry(self.options.retry_ms))
        if self._heartbeat:
            self._ping_at = self._clock() + self._heartbeat

    def _feed_upload(self) -> None:
        client, handle, body = self._client, self._handle, self._body
        while body:
            piece = body[0]
            if client.send_data(handle, piece) is not WriteResult.ACCEPTED:
                break  # BLOCKED: Writable brings it back (CLOSED: the cancel is on its way)
            body.popleft()
            self._sent[0] += 1
            self._sent[1] += len(piece)
        if not body and self._body_ended and not self._upload_ending:
            # R-HTTP-42: END follows the last chunk; the answer waits until every chunk is
            # out of the pair (the handle closes then), as far as the reader's credit goes.
            self._upload_ending = True
            client.send_end(handle)

    def _upload_done(self) -> None:
        self._answer(
            {"stream_id": self._stream_id, "chunks": self._sent[0], "bytes": self._sent[1]}
        )

    def _answer(self, result: dict[str, object]) -> None:
        """A whole 200 JSON response (an upload's result, a status, a listing)."""
        body = json.dumps(result).encode()
        self._respond(200, (*_JSON, ("content-length", str(len(body)))))
        self._out.append(body)
        self._finish()
        self._close_after = True

    def _on_streams(self, event: StreamsReceived) -> None:
        if self.route.kind is not RouteKind.LIST:
            # R-HTTP-90, 93: one entry, always (a delete's is the stream as it was)
            self._answer(entry_json(event.entries[0]))
        else:
            streams = [entry_json(entry) for entry in event.entries]
            self._answer({"streams": streams, "next": event.next})  # R-HTTP-91

    def _pump(self) -> None:
        """Move frames between the in-memory pair until neither side has more to say."""
        if self._pumping:
            return
        self._pumping = True
        try:
            server, client, peer = self._server, self._client, self._peer
            while True:
                moved = False
                down = server.data_to_send()
                if down:
                    moved = True
                    self._on_client(client.receive_data(down))
                up = client.data_to_send()
                if up:
                    moved = True
                    peer.handle_events(server.receive_data(up))
                if events := server.take_events():
                    moved = True
                    peer.handle_events(events)
                if not moved:
                    break
            if self._deciding:
                self._decide_subscribe_head()
            if (
                self._upload_ending
                and self.head is None
                and client.handle_state(self._handle) is HState.CLOSED
            ):
                self._upload_done()
            if self._close_after:
                self._close_after = False
                self._close_pair()
        finally:
            self._pumping = False

    def _decide_subscribe_head(self) -> None:
        # R-HTTP-14: a resume from the end event's id of an ended stream that has nothing more
        # to deliver is answered 204, so EventSource stops instead of replaying the end
        # forever. The hub answers such a subscribe with ACCEPT and END in one step, so both
        # are known by now.
        self._deciding = False
        if self._ended and not self._delivered and self.route.end_seen:
            self._out.clear()
            self.head = (204, self._cors())
            self._finish()
            self._close_after = True
            return
        self._start_stream()
        if self._ended or self._failed:
            self._finish()
            self._close_after = True
        self._wakeup()

    def _on_client(self, events: list[Event]) -> None:
        out = self._out
        for event in events:
            if self.done:  # answered: what the pair still says (its goodbye) changes nothing
                break
            if isinstance(event, DataReceived):
                self._delivered = True
                chunks = event.chunks
                out.append(_sse.encode_chunks(event.seq, chunks))
                self._unconsumed[0] += len(chunks)
                self._unconsumed[1] += sum(map(len, chunks))
                self._wakeup()
            elif isinstance(event, GapReceived):
                self._delivered = True
                out.append(_sse.encode_gap(event.from_seq, event.to_seq, event.reason))
                self._wakeup()
            elif isinstance(event, StreamEnded):
                out.append(_sse.encode_end(event.last_seq))
                self._terminal(ended=True)
            elif isinstance(event, StreamFailed):
                out.append(_sse.encode_error(event.code, event.message, event.last_seq))
                self._terminal(ended=False)
            elif isinstance(event, RequestAccepted):
                self._on_accepted(event)
            elif isinstance(event, StreamsReceived):
                self._on_streams(event)
            elif isinstance(event, RequestRejected):
                self._fail_request(event.code, event.message)
            elif isinstance(event, UploadCancelled):
                self._body.clear()
                # R-HTTP-43: 409 for the application's own codes too (not a refusal of access).
                status = 409 if event.code >= 1000 else status_for(event.code)
                self._fail_request(event.code, event.message or "upload cancelled", status)
            elif isinstance(event, HandshakeRefused):
                self._fail_request(event.code, event.message)
                self._hub_stopping()
            elif isinstance(event, Writable):
                self._feed_upload()
                self._wakeup()
            elif isinstance(event, GoawayReceived | ConnectionTerminated):
                self._on_goaway(event.code, event.message)

    def _on_accepted(self, event: RequestAccepted) -> None:
        self._accepted = True
        self._stream_id = event.stream_id
        kind = self.route.kind
        if kind is RouteKind.SUBSCRIBE:
            self._deciding = True  # the head waits for the end of this pump
        elif kind is RouteKind.OPEN:
            # R-HTTP-31, 33: the stream's id, and whether this request joined a running one.
            joined = "true" if event.joined else "false"
            self._start_stream(
                (
                    ("stream-id", event.stream_id),
                    ("stream-joined", joined),
                    ("access-control-expose-headers", _EXPOSED),
                )
            )
        else:
            self._feed_upload()
        self._wakeup()

    def _terminal(self, *, ended: bool) -> None:
        self._ended, self._failed = ended, not ended
        if self._deciding:  # the head of a subscribe is decided at the end of the pump
            return
        self._finish()
        self._close_after = True

    def _hub_stopping(self) -> None:
        """A :meth:`Hub.shutdown` ends the exchange as the server's own shutdown does
        (R-HTTP-53): the HTTP connection closes after this response, and a POST whose body is
        still coming is answered 503 SERVER_SHUTDOWN at its end."""
        if self._hub.shutting_down:
            self.keep_alive = False
            self._stopping = True

    def _on_goaway(self, code: int, message: str) -> None:
        self._hub_stopping()  # _on_client stops at done: this exchange is not done
        if code == ErrorCode.NO_ERROR:
            return  # draining: the stream runs to its end
        if self.head is None:
            self._fail_request(code, message or "server shutting down")
            return
        # An event stream cut by the server: no terminal event, so the client reconnects.
        self._finish()
        self._close_after = True


def cors_headers(origin: str, options: HttpOptions) -> Headers:
    """The CORS response headers for a request from an allowed ``origin`` (R-HTTP-60)."""
    if origin not in options.allow_origins and "*" not in options.allow_origins:
        return ()
    return (
        ("access-control-allow-origin", origin),
        ("access-control-allow-credentials", "true"),
        ("access-control-expose-headers", _EXPOSED),
        ("vary", "Origin"),
    )


def preflight_headers(request: HttpRequest, options: HttpOptions) -> Headers:
    """The answer to an allowed ``OPTIONS`` preflight (R-HTTP-60), status 204."""
    origin = request.header("origin") or ""
    asked = request.header("access-control-request-headers")
    return (
        *cors_headers(origin, options),
        ("access-control-allow-methods", "GET, POST, DELETE, OPTIONS"),
        ("access-control-allow-headers", asked or "Authorization, Content-Type, Last-Event-ID"),
        ("access-control-max-age", "600"),
    )
