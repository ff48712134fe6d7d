"""An in-memory client/server pair that checks, on every call, that each side receives exactly
what the other sent (after h11's ``tests/helpers.py``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import attrs

from .._config import Config
from .._connection import Connection, Role, WriteResult
from .._errors import ErrorCode
from .._events import (
    CancelRequested,
    ConnectionTerminated,
    DataReceived,
    Event,
    GapReceived,
    GoawayReceived,
    HandshakeCompleted,
    HandshakeRefused,
    HandshakeRequested,
    OpenRequested,
    OverflowWarning,
    PingReceived,
    PongReceived,
    RequestAccepted,
    RequestRejected,
    StreamEnded,
    StreamFailed,
    SubscribeRequested,
    Unsubscribed,
    UploadCancelled,
    UploadCompleted,
    UploadData,
    UploadEnded,
    UploadFailed,
    UploadRequested,
    Writable,
)
from .._frames import (
    MAX_FRAME_SIZE_LIMIT,
    PROTOCOL_VERSION,
    Data,
    Feature,
    Frame,
    FrameDecoder,
    GapReason,
    Goaway,
    OverflowPolicy,
    Setting,
)

__all__ = [
    "ConnectionPair",
    "Transfer",
    "decode_frames",
    "expect_events",
    "expect_goaway",
    "expect_terminated",
]

_Request = SubscribeRequested | OpenRequested | UploadRequested
#: Events after which a handle is closed on the side that reports them.
_TERMINAL = (
    RequestRejected,
    StreamEnded,
    StreamFailed,
    UploadCancelled,
    UploadCompleted,
    CancelRequested,
    Unsubscribed,
    UploadEnded,
    UploadFailed,
)
#: On a bidirectional handle, the events of the direction this side receives and of the one it
#: sends (each closes on its own); the rest (the request's answer) concern both.
_RECEIVING_EVENTS = (
    DataReceived,
    GapReceived,
    OverflowWarning,
    StreamEnded,
    StreamFailed,
    UploadData,
    UploadEnded,
    UploadFailed,
)
_SENDING_EVENTS = (UploadCancelled, CancelRequested, Unsubscribed, Writable)
_RX, _TX = "receiving", "sending"


class RandomSource(Protocol):
    """What the pair needs of a random source (``random.Random`` has it): the core and its
    tools draw no randomness of their own, so tests pass a seeded one in."""

    def randrange(self, stop: int, /) -> int:
        """A random int in ``range(stop)``."""
        ...


@attrs.frozen
class Transfer:
    """The events each side reported while bytes moved between them, in order."""

    client: list[Event]
    server: list[Event]

    def __add__(self, other: Transfer) -> Transfer:
        return Transfer(self.client + other.client, self.server + other.server)


def expect_events(actual: Sequence[Event], expected: Sequence[Event], what: str = "") -> None:
    """Raise AssertionError unless ``actual`` equals ``expected``, item by item."""
    if list(actual) != list(expected):
        where = f" ({what})" if what else ""
        got = ", ".join(map(str, actual)) or "nothing"
        want = ", ".join(map(str, expected)) or "nothing"
        raise AssertionError(f"expected [{want}]{where}, got [{got}]")


def expect_terminated(
    events: Sequence[Event], code: int, *, by_peer: bool | None = None
) -> ConnectionTerminated:
    """Raise AssertionError unless the last of ``events`` is a :class:`ConnectionTerminated`
    with ``code`` (and ``by_peer``, when given); return it."""
    last = events[-1] if events else None
    if not isinstance(last, ConnectionTerminated) or last.code != code:
        raise AssertionError(f"expected ConnectionTerminated({code!r}) last, got {last}")
    if by_peer is not None and last.by_peer is not by_peer:
        raise AssertionError(f"expected by_peer={by_peer}, got {last}")
    return last


def decode_frames(data: bytes) -> list[Frame]:
    """The frames in ``data``, one per frame on the wire (the decoder's runs of DATA are
    split into one :class:`~streamproto._frames.Data` per chunk)."""
    frames: list[Frame] = []
    for frame in FrameDecoder(MAX_FRAME_SIZE_LIMIT).feed(data):
        if isinstance(frame, Data):
            for i, chunk in enumerate(frame.chunks):
                frames.append(Data(frame.handle, frame.seq + i, (chunk,), frame.more))
        else:
            frames.append(frame)
    return frames


def _settled(events: list[Event]) -> list[Event]:
    """``events`` without the ConnectionTerminated that ends a drain, when closing a handle
    was what finished it."""
    last = events[-1] if events else None
    if isinstance(last, ConnectionTerminated) and (last.code, last.message) == (0, "drained"):
        return events[:-1]
    return events


def expect_goaway(data: bytes, code: int) -> Goaway:
    """Raise AssertionError unless the last frame in ``data`` is a GOAWAY with ``code``;
    return it."""
    frames = decode_frames(data)
    last = frames[-1] if frames else None
    if not isinstance(last, Goaway) or last.code != code:
        raise AssertionError(f"expected GOAWAY code={code!r} last, got {last}")
    return last


class ConnectionPair:
    """A client and a server :class:`Connection` joined in memory, with a clock.

    Every wrapper performs one operation on the side that owns it, moves the bytes until both
    sides are quiet (see :meth:`transfer`) and raises AssertionError unless the peer reported
    exactly the event(s) that correspond to the operation. It returns the handle (requests) or
    the :class:`Transfer` (everything else) for further checks.

    Every transfer also checks the event stream itself, whatever produced it: per-handle seqs
    are contiguous (data and gaps continue exactly where the last ones ended, from the seq the
    request and its ACCEPT imply), an ended stream was delivered up to its final seq, nothing
    is reported for a handle after its terminal event, and nothing at all after
    :class:`ConnectionTerminated`.

    ``rng`` cuts every transfer into random pieces; ``bytewise`` feeds it one byte at a time.
    """

    def __init__(
        self,
        client_config: Config | None = None,
        server_config: Config | None = None,
        *,
        now: float = 0.0,
        rng: RandomSource | None = None,
        bytewise: bool = False,
        resume_token: str = "",
        auth: bytes = b"",
    ) -> None:
        self.now = now
        self.rng = rng
        self.bytewise = bytewise
        self.client = Connection(
            Role.CLIENT, client_config, now=now, resume_token=resume_token, auth=auth
        )
        self.server = Connection(Role.SERVER, server_config, now=now)
        #: The requests the server reported, by handle.
        self.requests: dict[int, _Request] = {}
        # Per side: the next seq each receiving handle expects, and the handles that are over.
        self._expect: dict[Role, dict[int, int]] = {Role.CLIENT: {}, Role.SERVER: {}}
        # A handle, or for a bidirectional one (handle, direction): each direction closes alone.
        self._done: dict[Role, set[object]] = {Role.CLIENT: set(), Role.SERVER: set()}
        self._bidi: set[int] = set()
        self._over: set[Role] = set()

    # -- moving bytes ---------------------------------------------------------------------------

    def peer(self, conn: Connection) -> Connection:
        """The other side of ``conn``."""
        return self.server if conn is self.client else self.client

    def feed(self, conn: Connection, data: bytes) -> list[Event]:
        """``conn.receive_data`` the bytes, whole or cut as this pair cuts them; check and
        return the events."""
        pieces = [data]
        if self.bytewise:
            pieces = [data[i : i + 1] for i in range(len(data))]
        elif self.rng is not None:
            rng = self.rng
            cuts = sorted(rng.randrange(len(data) + 1) for _ in range(rng.randrange(4)))
            pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
        events: list[Event] = []
        for piece in pieces:
            if piece:
                events += conn.receive_data(piece)
        self._check(conn, events)
        return events

    def transfer(self, max_bytes: int | None = None, *, rounds: int | None = None) -> Transfer:
        """Move bytes both ways (``data_to_send(max_bytes)`` then the peer's ``receive_data``)
        until neither side has anything to send, or for ``rounds`` rounds (one call each way
        per round: with a small ``max_bytes``, chunks are left half sent); return every event,
        including those that ``take_events`` had waiting."""
        got: dict[Role, list[Event]] = {Role.CLIENT: [], Role.SERVER: []}
        for conn in (self.client, self.server):
            got[conn.role] += self._take(conn)
        moved = True
        while moved and rounds != 0:
            rounds = None if rounds is None else rounds - 1
            moved = False
            for sender in (self.client, self.server):
                data = sender.data_to_send(max_bytes)
                got[sender.role] += self._take(sender)
                if data:
                    moved = True
                    receiver = self.peer(sender)
                    got[receiver.role] += self.feed(receiver, data)
        return Transfer(got[Role.CLIENT], got[Role.SERVER])

    def advance(self, seconds: float) -> Transfer:
        """Advance the clock, run both sides' timers, then :meth:`transfer`."""
        self.now += seconds
        client = self.client.handle_timer(self.now)
        self._check(self.client, client)
        server = self.server.handle_timer(self.now)
        self._check(self.server, server)
        return Transfer(client, server) + self.transfer()

    def disconnect(self, by: Connection) -> Transfer:
        """``by``'s transport closes: its peer sees the end of input and must report
        CONNECTION_LOST (unless it was over already)."""
        peer = self.peer(by)
        was_over = peer.closed
        events = peer.receive_data(b"")
        self._check(peer, events)
        if not was_over:
            expect_terminated(events, ErrorCode.CONNECTION_LOST, by_peer=True)
        if by is self.client:
            return Transfer([], events)
        return Transfer(events, [])

    def _take(self, conn: Connection) -> list[Event]:
        events = conn.take_events()
        self._check(conn, events)
        return events

    def _check(self, conn: Connection, events: list[Event]) -> None:
        """The invariants of one side's event stream (see the class docstring)."""
        role = conn.role
        expect = self._expect[role]
        done = self._done[role]
        for event in events:
            if role in self._over:
                raise AssertionError(f"{role.value} reported {event} after its connection ended")
            if isinstance(event, ConnectionTerminated | HandshakeRefused):
                self._over.add(role)
                continue
            handle: int | None = getattr(event, "handle", None)
            if handle is None:
                continue
            keys = self._keys(handle, event)
            if any(key in done for key in keys):
                raise AssertionError(f"{role.value} reported {event} after handle {handle} closed")
            match event:
                case SubscribeRequested() | OpenRequested() | UploadRequested():
                    self.requests[handle] = event
                    if isinstance(event, OpenRequested) and event.bidi:
                        self._bidi.add(handle)  # (also when the client was driven directly)
                    if handle in self._bidi or (
                        isinstance(event, UploadRequested) and not event.resume
                    ):
                        expect[handle] = 1  # (a resume starts where the server says)
                case RequestAccepted():
                    self._on_accepted(event, expect)
                case DataReceived() | UploadData():
                    self._check_seq(role, expect, handle, event.seq, str(event))
                    expect[handle] = event.last_seq + 1
                case GapReceived():
                    self._check_seq(role, expect, handle, event.from_seq, str(event))
                    expect[handle] = event.to_seq + 1
                case StreamEnded() | UploadEnded() | StreamFailed() | UploadFailed():
                    self._check_seq(role, expect, handle, event.last_seq + 1, str(event))
            if isinstance(event, _TERMINAL):
                done.update(keys)

    def _keys(self, handle: int, event: Event | None) -> tuple[object, ...]:
        """What closes or must be open for ``event``: the handle, or the directions of a
        bidirectional one it concerns (both for None)."""
        if handle not in self._bidi:
            return (handle,)
        if isinstance(event, _RECEIVING_EVENTS):
            return ((handle, _RX),)
        if isinstance(event, _SENDING_EVENTS):
            return ((handle, _TX),)
        return ((handle, _RX), (handle, _TX))

    def _on_accepted(self, event: RequestAccepted, expect: dict[int, int]) -> None:
        request = self.requests.get(event.handle)
        if isinstance(request, SubscribeRequested):
            start = event.last_seq + 1 if request.after_seq is None else request.after_seq + 1
            expect[event.handle] = start
        elif isinstance(request, OpenRequested):
            expect[event.handle] = 1

    @staticmethod
    def _check_seq(role: Role, expect: dict[int, int], handle: int, seq: int, what: str) -> None:
        want = expect.get(handle)
        if want is not None and seq != want:
            raise AssertionError(f"{role.value} reported {what}: expected seq {want} next")

    def _mark_done(self, conn: Connection, handle: int, direction: str = _RX) -> None:
        """``conn`` closed ``handle`` (the ``direction`` of a bidirectional one) itself."""
        self._done[conn.role].add((handle, direction) if handle in self._bidi else handle)

    def _sender_of(self, handle: int) -> Connection:
        """The side that writes data on ``handle``: the client for an upload."""
        if isinstance(self.requests.get(handle), UploadRequested):
            return self.client
        return self.server

    # -- the handshake --------------------------------------------------------------------------

    def handshake(
        self,
        session_id: str = "session",
        resume_token: str = "token",  # noqa: S107 - an opaque test value
        *,
        resumed: bool = False,
        features: Feature = Feature.QUERIES | Feature.BIDI,
    ) -> Transfer:
        """HELLO, then ``accept_handshake`` (announcing ``features``), then WELCOME,
        checking both events."""
        first = self._hello()
        self.server.accept_handshake(
            session_id=session_id, resume_token=resume_token, resumed=resumed, features=features
        )
        second = self.transfer()
        completed = second.client[0] if len(second.client) == 1 else None
        if not (
            isinstance(completed, HandshakeCompleted)
            and completed.version == PROTOCOL_VERSION
            and (completed.session_id, completed.resume_token, completed.resumed)
            == (session_id, resume_token, resumed)
        ):
            raise AssertionError(f"expected HandshakeCompleted, got {second.client}")
        expect_events(second.server, [], "server after WELCOME")
        return first + second

    def refuse_handshake(self, code: int, message: str = "") -> Transfer:
        """HELLO, then ``refuse_handshake``: the client must report exactly HandshakeRefused."""
        first = self._hello()
        self.server.refuse_handshake(code, message)
        second = self.transfer()
        expect_events(second.client, [HandshakeRefused(code, message)], "client")
        expect_events(second.server, [ConnectionTerminated(code, message, False)], "server")
        return first + second

    def _hello(self) -> Transfer:
        cfg = self.client.config
        t = self.transfer()
        hello = t.server[0] if len(t.server) == 1 else None
        if not (
            isinstance(hello, HandshakeRequested)
            and hello.version == PROTOCOL_VERSION
            and dict(hello.settings).get(Setting.MAX_FRAME_SIZE) == cfg.max_frame_size
            and dict(hello.settings).get(Setting.MAX_CHUNK_SIZE) == cfg.max_chunk_size
        ):
            raise AssertionError(f"expected HandshakeRequested, got {t.server}")
        return t

    # -- requests (client) ----------------------------------------------------------------------

    def subscribe(
        self,
        channel: str,
        stream_id: str,
        *,
        after_seq: int = 0,
        tail: bool = False,
        credit_chunks: int | None = None,
        credit_bytes: int | None = None,
        policy: OverflowPolicy = OverflowPolicy.DEFAULT,
        priority: int = 0,
    ) -> int:
        """Client ``subscribe``; the server must report the same :class:`SubscribeRequested`."""
        handle = self.client.subscribe(
            channel,
            stream_id,
            after_seq=after_seq,
            tail=tail,
            credit_chunks=credit_chunks,
            credit_bytes=credit_bytes,
            policy=policy,
            priority=priority,
        )
        after = None if tail else after_seq
        want = SubscribeRequested(handle, channel, stream_id, after, policy, priority)
        self._expect_request(want)
        return handle

    def open(
        self,
        channel: str,
        args: bytes = b"",
        *,
        stream_id: str = "",
        credit_chunks: int | None = None,
        credit_bytes: int | None = None,
        policy: OverflowPolicy = OverflowPolicy.DEFAULT,
        priority: int = 0,
        join: bool = False,
        bidi: bool = False,
    ) -> int:
        """Client ``open``; the server must report the same :class:`OpenRequested`. With
        ``bidi``, the wrappers that write (``send_data``, ``send_end``, ``send_error``) take
        ``by=`` to say which direction; they default to the server's."""
        handle = self.client.open(
            channel,
            args,
            stream_id=stream_id,
            credit_chunks=credit_chunks,
            credit_bytes=credit_bytes,
            policy=policy,
            priority=priority,
            join=join,
            bidi=bidi,
        )
        if bidi:
            self._bidi.add(handle)
        self._expect_request(
            OpenRequested(handle, channel, stream_id, args, policy, priority, join, bidi)
        )
        return handle

    def upload(self, channel: str, stream_id: str = "", args: bytes = b"") -> int:
        """Client ``upload``; the server must report the same :class:`UploadRequested`."""
        handle = self.client.upload(channel, stream_id, args)
        self._expect_request(UploadRequested(handle, channel, stream_id, args))
        return handle

    def _expect_request(self, want: _Request) -> None:
        t = self.transfer()
        expect_events(_settled(t.server), [want], "server")
        expect_events(_settled(t.client), [], "client")

    def cancel(self, handle: int) -> Transfer:
        """Client ``cancel``; the server must report exactly :class:`CancelRequested`."""
        self.client.cancel(handle)
        self._mark_done(self.client, handle)
        t = self.transfer()
        expect_events(_settled(t.server), [CancelRequested(handle)], "server")
        return t

    def unsubscribe(self, handle: int) -> Transfer:
        """Client ``unsubscribe``; the server must report exactly :class:`Unsubscribed`."""
        self.client.unsubscribe(handle)
        self._mark_done(self.client, handle)
        t = self.transfer()
        expect_events(_settled(t.server), [Unsubscribed(handle)], "server")
        return t

    # -- answers (server) -----------------------------------------------------------------------

    def accept(
        self,
        handle: int,
        *,
        stream_id: str = "",
        first_seq: int = 1,
        last_seq: int = 0,
        policy: OverflowPolicy | None = None,
        joined: bool = False,
    ) -> Transfer:
        """Server ``accept``; the client must report :class:`RequestAccepted` with the same
        seqs, then the EVICTED gap the request's ``after_seq`` and ``first_seq`` imply."""
        if not self.server.accept(
            handle,
            stream_id=stream_id,
            first_seq=first_seq,
            last_seq=last_seq,
            policy=policy,
            joined=joined,
        ):
            raise AssertionError(f"accept({handle}) found the handle closed")
        t = self.transfer()
        want: list[Event] = [RequestAccepted(handle, stream_id, first_seq, last_seq, joined)]
        request = self.requests.get(handle)
        start: int | None = None  # tail subscriptions and uploads have no gap
        if isinstance(request, OpenRequested):
            start = 1
        elif isinstance(request, SubscribeRequested) and request.after_seq is not None:
            start = request.after_seq + 1
        if start is not None and start < first_seq:
            want.append(GapReceived(handle, start, first_seq - 1, GapReason.EVICTED))
        expect_events(_settled(t.client), want, "client")
        return t

    def reject(self, handle: int, code: int, message: str = "") -> Transfer:
        """Server ``reject``; the client must report exactly :class:`RequestRejected`."""
        if not self.server.reject(handle, code, message):
            raise AssertionError(f"reject({handle}) found the handle closed")
        self._done[Role.SERVER].update(self._keys(handle, None))
        t = self.transfer()
        expect_events(_settled(t.client), [RequestRejected(handle, code, message)], "client")
        return t

    def cancel_upload(
        self, handle: int, code: int = ErrorCode.UPLOAD_CANCELLED, message: str = ""
    ) -> Transfer:
        """Server ``cancel_upload``; the client must report exactly :class:`UploadCancelled`."""
        if not self.server.cancel_upload(handle, code, message):
            raise AssertionError(f"cancel_upload({handle}) found the handle closed")
        self._mark_done(self.server, handle)
        t = self.transfer()
        expect_events(_settled(t.client), [UploadCancelled(handle, code, message)], "client")
        return t

    # -- data (server subscriptions, client uploads) --------------------------------------------

    def send_data(self, handle: int, *chunks: bytes, by: Connection | None = None) -> Transfer:
        """``send_data`` each chunk on the side that writes ``handle`` (every write must be
        ACCEPTED); the peer must report data events for ``handle`` only, whose chunks are
        exactly these."""
        sender = by or self._sender_of(handle)
        for chunk in chunks:
            result = sender.send_data(handle, chunk)
            if result is not WriteResult.ACCEPTED:
                raise AssertionError(f"send_data({handle}) returned {result}")
        t = self.transfer()
        got = t.server if sender is self.client else t.client
        kind = UploadData if sender is self.client else DataReceived
        received: list[bytes] = []
        for event in got:
            if not isinstance(event, kind) or event.handle != handle:
                raise AssertionError(f"expected only {kind.__name__}(h={handle}), got {event}")
            received += event.chunks
        if received != list(chunks):
            raise AssertionError(
                f"sent {len(chunks)} chunks on handle {handle}, {len(received)} arrived "
                "(or different ones)"
            )
        return t

    def send_gap(self, handle: int, to_seq: int, reason: GapReason = GapReason.EVICTED) -> Transfer:
        """Server ``send_gap``; the client must report exactly the :class:`GapReceived`
        (and, for OVERFLOW, the :class:`OverflowWarning`)."""
        start = self._expect[Role.CLIENT].get(handle, 0)
        if self.server.send_gap(handle, to_seq, reason) is not WriteResult.ACCEPTED:
            raise AssertionError(f"send_gap({handle}) found the handle closed")
        t = self.transfer()
        want: list[Event] = [GapReceived(handle, start, to_seq, reason)]
        if reason is GapReason.OVERFLOW:
            want.append(OverflowWarning(handle, to_seq - start + 1, start, to_seq))
        expect_events(_settled(t.client), want, "client")
        return t

    def send_end(self, handle: int, *, by: Connection | None = None) -> Transfer:
        """``send_end`` on the side that writes ``handle``; the peer must report exactly
        :class:`StreamEnded` (or :class:`UploadEnded`) after the last seq it received."""
        sender = by or self._sender_of(handle)
        receiver = self.peer(sender)
        last = self._expect[receiver.role].get(handle, 1) - 1
        if not sender.send_end(handle):
            raise AssertionError(f"send_end({handle}) found the handle closed")
        t = self.transfer()
        if sender is self.client:
            expect_events(_settled(t.server), [UploadEnded(handle, last)], "server")
        else:
            expect_events(_settled(t.client), [StreamEnded(handle, last)], "client")
        return t

    def send_error(
        self, handle: int, code: int, message: str = "", *, by: Connection | None = None
    ) -> Transfer:
        """``send_error`` on the side that writes ``handle``; the peer must report exactly
        :class:`StreamFailed` (or :class:`UploadFailed`)."""
        sender = by or self._sender_of(handle)
        receiver = self.peer(sender)
        last = self._expect[receiver.role].get(handle, 1) - 1
        if not sender.send_error(handle, code, message):
            raise AssertionError(f"send_error({handle}) found the handle closed")
        t = self.transfer()
        if sender is self.client:
            expect_events(_settled(t.server), [UploadFailed(handle, code, message, last)], "server")
        else:
            expect_events(_settled(t.client), [StreamFailed(handle, code, message, last)], "client")
        return t

    def consume(self, handle: int, chunks: int, nbytes: int) -> Transfer:
        """``consume`` on the side that receives ``handle`` (``auto_credit=False``); the
        writer may report nothing but :class:`Writable` for it (the credit it gets is not an
        event), while the data it could now send flows."""
        sender = self._sender_of(handle)
        self.peer(sender).consume(handle, chunks, nbytes)
        t = self.transfer()
        mine = t.server if sender is self.server else t.client
        expect_events([e for e in mine if e != Writable(handle)], [], "writer")
        return t

    # -- both roles -----------------------------------------------------------------------------

    def ping(self, by: Connection) -> Transfer:
        """``by.ping()``: the peer reports :class:`PingReceived`, ``by`` the matching
        :class:`PongReceived`."""
        payload = by.ping()
        t = self.transfer()
        mine, theirs = (t.client, t.server) if by is self.client else (t.server, t.client)
        expect_events(theirs, [PingReceived(payload)], "pinged side")
        expect_events(mine, [PongReceived(payload)], "pinging side")
        return t

    def goaway(self, by: Connection, code: int = ErrorCode.NO_ERROR, message: str = "") -> Transfer:
        """``by.goaway(code, message)``. The peer reports :class:`GoawayReceived` (code 0;
        followed by :class:`ConnectionTerminated` if it had nothing open) or
        :class:`ConnectionTerminated` with the code (any other code)."""
        by.goaway(code, message)
        t = self.transfer()
        mine, theirs = (t.client, t.server) if by is self.client else (t.server, t.client)
        if code != ErrorCode.NO_ERROR:
            expect_events(theirs, [ConnectionTerminated(code, message, True)], "peer")
            expect_events(mine, [ConnectionTerminated(code, message, False)], "closing side")
            return t
        first = theirs[0] if theirs else None
        if not isinstance(first, GoawayReceived) or (first.code, first.message) != (code, message):
            raise AssertionError(f"expected GoawayReceived first, got {theirs}")
        return t
