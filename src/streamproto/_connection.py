"""The sans-IO connection: bytes in, events out; decisions in, bytes out.

Rules for this file:

1. No I/O, no clock, no randomness. Time arrives as ``now`` (construction, ``handle_timer``);
   session ids and tokens arrive from the application.
2. Which transition is legal is asked of ``_state.py``; this file only carries them out.
3. ``receive_data`` never raises for the peer's fault: a violation becomes a GOAWAY with its code
   and a :class:`ConnectionTerminated` event. The local application's misuse raises
   :class:`LocalProtocolError`, and the connection stays usable unless the code says otherwise.
4. Memory is bounded by configuration: the decoder by the frame size, receivers by the credit
   they grant, senders by their queue bounds, closed handles by a single high-water mark.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Iterable, Sequence
from itertools import accumulate, chain, islice, repeat, takewhile
from typing import Final, cast

import attrs

from ._config import MAX_CREDIT, MAX_MESSAGE_BYTES, MIN_KEEPALIVE_MS, Config
from ._errors import ErrorCode, LocalProtocolError
from ._events import (
    CancelRequested,
    ConnectionTerminated,
    DataReceived,
    DeleteRequested,
    Event,
    GapReceived,
    GoawayReceived,
    HandshakeCompleted,
    HandshakeRefused,
    HandshakeRequested,
    ListRequested,
    OpenRequested,
    OverflowWarning,
    PingReceived,
    PongReceived,
    RequestAccepted,
    RequestRejected,
    StatusRequested,
    StreamEnded,
    StreamFailed,
    StreamsReceived,
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
from ._frames import (
    _DATA_HEADER,
    HEADER_SIZE,
    MAX_HANDSHAKE_BODY,
    MIN_MAX_FRAME_SIZE,
    PROTOCOL_VERSION,
    U64,
    Accept,
    Cancel,
    Credit,
    Data,
    End,
    Error,
    Feature,
    Frame,
    FrameDecoder,
    Gap,
    GapReason,
    Goaway,
    Hello,
    Open,
    OverflowPolicy,
    Ping,
    Pong,
    Query,
    QueryOp,
    Reject,
    Setting,
    StreamEntry,
    Streams,
    Subscribe,
    Unsubscribe,
    Upload,
    UploadAck,
    UploadCancel,
    UploadResult,
    Welcome,
    encode,
)
from ._names import valid_channel, valid_stream_id
from ._state import (
    BIDI_ROUTES,
    CONNECTION_TRANSITIONS,
    HANDLE_TRANSITIONS,
    ConnInput,
    ConnState,
    Direction,
    HState,
    Input,
    Side,
    recv_input,
)

__all__ = ["Connection", "ConnectionStatistics", "Role", "UploadResumePoint", "WriteResult"]

_T_DATA: Final = 0x15
_UNLIMITED: Final = 1 << 62
#: From the tables: writing data on an ACTIVE sender leaves it ACTIVE, on both sides that send,
#: so send_data's hot path may skip the lookup (the table stays the single source).
_DATA_KEEPS_ACTIVE: Final = all(
    HANDLE_TRANSITIONS[side].get((HState.ACTIVE, Input.SEND_DATA)) is HState.ACTIVE
    for side in (Side.SERVER_SUBSCRIPTION, Side.CLIENT_UPLOAD)
)
_HANDSHAKE_STATES: Final = frozenset(
    {ConnState.HANDSHAKING, ConnState.AWAIT_HELLO, ConnState.HELLO_RECEIVED}
)
#: Deficit round robin quantum per unit of weight (weight = priority + 1).
QUANTUM: Final = 16_384
_NO_FEATURES: Final = Feature(0)
_ALL_FEATURES: Final = sum(Feature)  # the bits this version knows; others are ignored
_DEFAULT_SETTINGS: Final[dict[int, int]] = {
    Setting.MAX_FRAME_SIZE: 65_536,
    Setting.MAX_CHUNK_SIZE: 1 << 20,
    Setting.KEEPALIVE_MS: 15_000,
    Setting.MAX_SUBSCRIPTIONS: 4096,
    Setting.MAX_UPLOADS: 64,
    Setting.SESSION_GRACE_MS: 30_000,
    Setting.FEATURES: 0,
}

#: Settings only a server announces; a HELLO's are ignored (R-SET-2).
_SERVER_SETTINGS: Final = frozenset(
    {Setting.MAX_SUBSCRIPTIONS, Setting.MAX_UPLOADS, Setting.SESSION_GRACE_MS, Setting.FEATURES}
)


class Role(enum.Enum):
    """Which end of the connection this object is."""

    CLIENT = "client"
    SERVER = "server"


class WriteResult(enum.Enum):
    """What became of a ``send_data``."""

    ACCEPTED = "accepted"  # queued (maybe after dropping older chunks: drop_oldest)
    BLOCKED = "blocked"  # not accepted; a Writable event follows when it may be retried
    FAILED = "failed"  # not accepted; the subscription failed with RESOURCE_EXHAUSTED
    CLOSED = "closed"  # not accepted; the peer closed the handle (a race, not a misuse)


# Enum members the per-chunk paths compare with, as module globals: on CPython 3.11 reading
# a member off its class (``HState.ACTIVE``) runs a descriptor, several times a global lookup.
_ACTIVE: Final = HState.ACTIVE
_DRAINING: Final = HState.DRAINING
_H_CLOSED: Final = HState.CLOSED
_REQUESTED: Final = HState.REQUESTED
_CONN_CLOSED: Final = ConnState.CLOSED
_ACCEPTED: Final = WriteResult.ACCEPTED
_W_CLOSED: Final = WriteResult.CLOSED
_OVERFLOW: Final = GapReason.OVERFLOW
_RECV_DATA: Final = Input.RECV_DATA
_SEND_DATA: Final = Input.SEND_DATA
_DRAINED: Final = Input.DRAINED
_RECV_HANDLE_FRAME: Final = ConnInput.RECV_HANDLE_FRAME
_CLIENT_SUBSCRIPTION: Final = Side.CLIENT_SUBSCRIPTION
_SERVER_UPLOAD: Final = Side.SERVER_UPLOAD
_RECEIVING: Final = Direction.RECEIVING
_SENDING: Final = Direction.SENDING
_DROP_OLDEST: Final = OverflowPolicy.DROP_OLDEST
_DEFAULT_POLICY: Final = OverflowPolicy.DEFAULT


@attrs.frozen
class ConnectionStatistics:
    """Counters of one connection (see :meth:`Connection.statistics`)."""

    state: ConnState
    open_handles: int
    bytes_received: int
    chunks_received: int
    chunks_sent: int
    chunks_dropped: int
    queued_bytes: int
    buffered_bytes: int


class _GapMark:
    """A GAP waiting in a sender's queue (its from_seq is the entry's seq)."""

    __slots__ = ("reason", "to_seq")

    def __init__(self, to_seq: int, reason: GapReason) -> None:
        self.to_seq = to_seq
        self.reason = reason


@attrs.frozen
class UploadResumePoint:
    """What a client needs to resume a resumable upload on a new connection (R-UPR-4), from
    :meth:`Connection.upload_resume_point`: the upload's request, and every chunk written
    that the server has not acknowledged, from ``first_seq`` on (``chunks[0]`` has seq
    ``first_seq``). ``ended``: END was sent, so the resumed upload ends after them.
    ``accepted``: the server's ACCEPT came (else the server may never have seen the request,
    and it is made again without flag RESUME, R-UPR-4)."""

    channel: str
    stream_id: str
    args: bytes
    result: bool
    first_seq: int
    chunks: tuple[bytes, ...]
    ended: bool
    accepted: bool = True

    @property
    def next_seq(self) -> int:
        """The seq the next chunk written will have."""
        return self.first_seq + len(self.chunks)


class _Up:
    """A client upload that ends with UPLOAD_RESULT (flag RESUMABLE or RESULT)."""

    __slots__ = (
        "accepted",
        "args",
        "channel",
        "ended",
        "kept",
        "resend_end",
        "result",
        "stream_id",
    )

    def __init__(
        self, channel: str, stream_id: str, args: bytes, *, resumable: bool, result: bool
    ) -> None:
        self.channel = channel
        self.stream_id = stream_id
        self.args = args
        self.result = result
        #: Resumable: every chunk written and not acknowledged, as (seq, chunk).
        self.kept: deque[tuple[int, bytes]] | None = deque() if resumable else None
        self.ended = False  # END sent: the handle waits for UPLOAD_RESULT once drained
        self.accepted = False
        #: A resume waiting for its ACCEPT: the seq after the chunks to send again (else 0).
        self.resend_end = 0


_Entry = tuple[int, "bytes | _GapMark"]
#: The queue of every _Out that never queued anything. Never mutated: see _Out.queue.
_NO_QUEUE: deque[_Entry] = deque()


class _Out:
    """The sending side of a handle: a server subscription or a client upload."""

    __slots__ = (
        "credit_bytes",
        "credit_chunks",
        "deficit",
        "handle",
        "head_size",
        "in_ready",
        "next_seq",
        "offset",
        "policy",
        "q_bytes",
        "q_chunks",
        "queue",
        "sent_seq",
        "side",
        "state",
        "twin",
        "up",
        "weight",
    )

    def __init__(self, handle: int, side: Side, credit_chunks: int, credit_bytes: int) -> None:
        self.handle = handle
        self.up: _Up | None = None
        self.side = side
        self.state = HState.REQUESTED
        self.credit_chunks = credit_chunks
        self.credit_bytes = credit_bytes
        # Shared and always empty until the first entry: an idle subscription costs no deque
        # (about 600 bytes). Only the two append sites replace it.
        self.queue: deque[_Entry] = _NO_QUEUE
        self.q_bytes = 0
        self.q_chunks = 0  # chunks in the queue (GAP marks are not counted)
        self.policy = OverflowPolicy.BLOCK
        self.weight = 1
        self.deficit = 0
        self.in_ready = False
        self.offset = 0  # bytes of the head chunk already sent as fragments
        self.head_size = 0  # the size of the head chunk while it is half sent
        self.next_seq = 1  # the seq the next queued entry must have
        self.sent_seq = 0  # the last seq sent (or gapped) on the wire
        self.twin: _In | None = None  # the receiving direction of a bidirectional handle

    def sendable(self) -> bool:
        queue = self.queue
        if not queue:
            return False
        if self.offset > 0:
            return True
        credit = self.credit_chunks >= 1 and self.credit_bytes > 0
        head = queue[0][1]
        if isinstance(head, _GapMark):
            return credit or not self.holds(head)
        return credit

    def holds(self, mark: _GapMark) -> bool:
        """Whether an OVERFLOW gap at the head waits for credit. While the subscriber has no
        credit it is not reading; holding the gap lets later drops merge into it, so a stalled
        subscriber is sent one gap per window, not one per flush (R-OVF-5). The last entry of
        a draining handle is never held: the subscriber needs it to reach the final seq."""
        return mark.reason is _OVERFLOW and not (self.state is _DRAINING and len(self.queue) == 1)


class _In:
    """The receiving side of a handle: a client subscription or a server upload."""

    __slots__ = (
        "acked",
        "confirm",
        "consumed_bytes",
        "consumed_chunks",
        "credit_bytes",
        "credit_chunks",
        "expect",
        "final_event",
        "final_seq",
        "frag",
        "frag_size",
        "handle",
        "resume",
        "side",
        "state",
        "tail",
        "twin",
        "unconsumed_bytes",
        "unconsumed_chunks",
        "window_bytes",
        "window_chunks",
    )

    def __init__(self, handle: int, side: Side, window_chunks: int, window_bytes: int) -> None:
        self.handle = handle
        self.side = side
        self.state = HState.REQUESTED
        self.window_chunks = window_chunks
        self.window_bytes = window_bytes
        self.credit_chunks = window_chunks  # what the peer may still send, as we count it
        self.credit_bytes = window_bytes
        self.consumed_chunks = 0
        self.consumed_bytes = 0
        self.unconsumed_chunks = 0
        self.unconsumed_bytes = 0
        self.expect = 1
        self.tail = False
        self.frag: list[bytes] | None = None
        self.frag_size = 0
        self.final_seq = 0
        self.final_event: Event | None = None
        # Server uploads of section 9.1: what ends them after END (0: nothing, 1: an empty
        # UPLOAD_RESULT at once, 2: the application's result), the last seq acknowledged
        # (-1: not resumable, no UPLOAD_ACK) and whether the request was a resume.
        self.confirm = 0
        self.acked = -1
        self.resume = False
        self.twin: _Out | None = None  # the sending direction of a bidirectional handle


def _part(h: _Out | _In, direction: Direction) -> _Out | _In | None:
    """The record of ``h``'s handle that ``direction`` names (rule 6 of ``_state.py``): ``h``
    itself on a one-way handle (its table judges the input) or when it is that direction, else
    its twin; None once the twin is CLOSED."""
    twin = h.twin
    if (
        twin is None
        or direction is Direction.BOTH
        or (direction is _RECEIVING) is isinstance(h, _In)
    ):
        return h
    return None if twin.state is _H_CLOSED else twin


def _open_parts(h: _Out | _In) -> tuple[_Out | _In, ...]:
    """``h`` and, on a bidirectional handle, its twin unless that is CLOSED."""
    twin = h.twin
    return (h,) if twin is None or twin.state is _H_CLOSED else (h, twin)


class _PeerFault(Exception):
    """Raised inside the receive path; becomes a GOAWAY and ConnectionTerminated."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


_plus_8 = (8).__add__  # a frame body is 8 bytes of seq, then the chunk


def _prefix_fitting(totals: Iterable[int], room: int, most: int) -> int:
    """How many of the running totals ``totals`` (non-decreasing) are <= ``room``, at most
    ``most``: the chunks of a batch that fit."""
    return len(list(takewhile(room.__ge__, islice(totals, max(most, 0)))))


def _truncate(message: str) -> str:
    raw = message.encode("utf-8", "replace")
    if len(raw) <= MAX_MESSAGE_BYTES:
        return message
    return raw[:MAX_MESSAGE_BYTES].decode("utf-8", "ignore")


def _check_handshake_size(frame: bytes, what: str) -> None:
    """R-FRAME-7: HELLO and WELCOME travel before any limit is known."""
    if len(frame) - HEADER_SIZE > MAX_HANDSHAKE_BODY:
        raise LocalProtocolError(
            ErrorCode.FRAME_TOO_LARGE,
            f"{what} must encode to at most {MAX_HANDSHAKE_BODY} bytes, "
            f"got {len(frame) - HEADER_SIZE}",
        )


def _keepalive_ms(value: int) -> int:
    """R-SET-30: a nonzero interval below the floor counts as the floor."""
    return MIN_KEEPALIVE_MS if 0 < value < MIN_KEEPALIVE_MS else value


def _check_code(code: int) -> None:
    if not 0 <= code <= 0xFFFF:
        raise LocalProtocolError(ErrorCode.INVALID_ARGUMENT, f"code must fit in u16, got {code}")


class Connection:
    """One end of one streamproto connection, for either role.

    Feed it what the transport received with :meth:`receive_data`, act on the events it
    returns, and after every call write :meth:`data_to_send` to the transport. Arm one timer
    for :meth:`next_deadline` and call :meth:`handle_timer` when it fires. When ``closed`` is
    true and ``data_to_send()`` is empty, close the transport.

    A client sends HELLO as soon as it is created; a server waits for it and reports
    :class:`HandshakeRequested`.
    """

    def __init__(
        self,
        role: Role,
        config: Config | None = None,
        *,
        now: float = 0.0,
        resume_token: str = "",
        auth: bytes = b"",
        _paired: bool = False,
    ) -> None:
        # ``_paired``: the client of a :meth:`pair`, whose HELLO the server gets by hand (it
        # is not queued as bytes).
        self._role = role
        self._cfg = config if config is not None else Config()
        self._decoder = FrameDecoder(
            self._cfg.max_frame_size,
            unknown_budget=(self._cfg.max_unknown_frames, self._cfg.max_unknown_bytes),
        )
        self._control: list[bytes] = []
        self._ready: deque[_Out] = deque()
        self._handles: dict[int, _Out | _In] = {}
        self._highest = 0
        self._pending: list[Event] = []
        # Senders told BLOCKED (or has_room False), with the size refused: owed a Writable
        # once that size fits, not before (else a writer that retries on Writable spins).
        self._blocked: dict[int, tuple[_Out, int]] = {}
        self._now = now
        self._hs_deadline = now + self._cfg.handshake_timeout
        self._keepalive = 0.0
        self._ka_deadline: float | None = None
        self._awaiting_pong = False
        self._received = False
        self._ping_counter = 0
        self._peer_settings: dict[int, int] = dict(_DEFAULT_SETTINGS)
        self._frag_max = MIN_MAX_FRAME_SIZE - 8
        self._peer_max_chunk = _DEFAULT_SETTINGS[Setting.MAX_CHUNK_SIZE]
        self._goaway_by_peer = False
        self._queued_bytes = 0
        self._subs = 0
        self._uploads = 0
        self._bytes_received = 0
        self._chunks_received = 0
        self._chunks_sent = 0
        self._chunks_dropped = 0
        self._features = _NO_FEATURES  # server: what its WELCOME announced
        #: Client: resumable uploads open when the connection ended (R-UPR-4).
        self._suspended: dict[int, UploadResumePoint] = {}
        #: The client of a :meth:`pair`: WELCOME goes to it directly, not as bytes.
        self._mate: Connection | None = None
        if role is Role.CLIENT:
            self._state = ConnState.HANDSHAKING
            if not _paired:
                hello = encode(self._hello(resume_token, auth))
                _check_handshake_size(hello, "HELLO (its resume token and auth)")
                self._control.append(hello)
        else:
            self._state = ConnState.AWAIT_HELLO

    @classmethod
    def pair(
        cls, config: Config | None = None, *, now: float = 0.0, auth: bytes = b""
    ) -> tuple[Connection, Connection]:
        """A server and a client Connection joined in memory, for code that serves a hub to
        another protocol in the same process (the HTTP mapping does).

        The handshake skips the wire: the client's HELLO (with ``auth``) is already with the
        server, whose ``take_events()`` reports :class:`HandshakeRequested`; what the server
        then decides reaches the client directly on ``accept_handshake`` (the client's
        ``take_events()`` reports :class:`HandshakeCompleted`), or as a GOAWAY on
        ``refuse_handshake``. Everything else goes as bytes, as between any two connections:
        feed each side's ``data_to_send()`` to the other's ``receive_data``. Returns
        ``(server, client)``.
        """
        server = cls(Role.SERVER, config, now=now)
        client = cls(Role.CLIENT, config, now=now, _paired=True)  # no HELLO queued as bytes
        server._on_hello(client._hello("", auth), server._pending)
        server._mate = client
        return server, client

    def _hello(self, resume_token: str, auth: bytes) -> Hello:
        settings = (
            (Setting.MAX_FRAME_SIZE, self._cfg.max_frame_size),
            (Setting.MAX_CHUNK_SIZE, self._cfg.max_chunk_size),
            (Setting.KEEPALIVE_MS, round(self._cfg.keepalive * 1000)),
        )
        return Hello(settings=settings, resume_token=resume_token, auth=auth)

    # -- properties -----------------------------------------------------------------------------

    @property
    def role(self) -> Role:
        """CLIENT or SERVER."""
        return self._role

    @property
    def config(self) -> Config:
        """This side's limits."""
        return self._cfg

    @property
    def state(self) -> ConnState:
        """The connection's state (see ``_state.CONNECTION_TRANSITIONS``)."""
        return self._state

    @property
    def closed(self) -> bool:
        """True once the connection is over: flush ``data_to_send()``, then close."""
        return self._state is _CONN_CLOSED

    @property
    def peer_max_chunk_size(self) -> int:
        """The largest chunk the peer accepts (its MAX_CHUNK_SIZE); ``send_data`` of a larger
        one raises CHUNK_TOO_LARGE."""
        return self._peer_max_chunk

    @property
    def peer_settings(self) -> dict[int, int]:
        """The peer's settings (defaults where it announced none)."""
        return dict(self._peer_settings)

    def statistics(self) -> ConnectionStatistics:
        """Counters for monitoring."""
        return ConnectionStatistics(
            state=self._state,
            open_handles=len(self._handles),
            bytes_received=self._bytes_received,
            chunks_received=self._chunks_received,
            chunks_sent=self._chunks_sent,
            chunks_dropped=self._chunks_dropped,
            queued_bytes=self._queued_bytes,
            buffered_bytes=self._decoder.buffered,
        )

    def handle_state(self, handle: int, direction: Direction = Direction.BOTH) -> HState:
        """The state of ``handle`` (CLOSED for a handle that was open and is no more).

        A bidirectional handle is CLOSED once both its directions are; ``direction``
        (RECEIVING: the chunks this side receives, SENDING: those it sends) asks the state of
        one. Without it, the state of an open direction is given, the receiving one first."""
        h = self._handles.get(handle)
        if h is not None:
            part = _part(h, direction)
            return HState.CLOSED if part is None else part.state
        if 1 <= handle <= self._highest:
            return HState.CLOSED
        raise LocalProtocolError(ErrorCode.UNKNOWN_HANDLE, f"handle {handle} was never opened")

    # -- input ----------------------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview) -> list[Event]:
        """Consume bytes from the transport; ``b""`` means the peer closed it.

        Returns the events, in order. Then call :meth:`data_to_send` (this may have queued
        PONG, CREDIT, GOAWAY or REJECT frames) and act on the events. Never raises for the
        peer's fault.
        """
        events = self.take_events()
        if self._state is _CONN_CLOSED:
            return events
        if not data:
            self._terminate(ErrorCode.CONNECTION_LOST, "the transport closed", True, events)
            return events
        self._received = True
        self._bytes_received += len(data)
        queued = len(self._control)
        if queued > self._cfg.max_queued_control_frames:
            # R-LIM-4: the peer sends what must be answered and does not read the answers.
            # They would never be read: drop them, so that only the GOAWAY remains.
            self._control.clear()
            message = f"{queued} control frames queued for a peer that does not read them"
            self._fail(ErrorCode.EXCESSIVE_LOAD, message, events)
            return events
        frames: list[Frame] = []
        error = self._decoder.feed_into(data, frames)
        try:
            for frame in frames:
                self._dispatch(frame, events)
                if self.closed:  # a property: _dispatch may have changed the state
                    break
            else:
                if error is not None:
                    raise _PeerFault(ErrorCode(error.code), error.message)
        except _PeerFault as fault:
            self._fail(fault.code, fault.message, events)
        # Closing a handle may have finished a drain: that ConnectionTerminated comes last.
        events += self.take_events()
        return events

    def take_events(self) -> list[Event]:
        """Events produced by method calls since the last ``receive_data`` or ``handle_timer``
        (overflow warnings as their GAP is sent, writable notices, the end of draining). Those
        two calls return them too, first; call this after ``send_data`` or ``data_to_send`` if
        you do not want to wait for the next one."""
        events = self._pending
        self._pending = []
        return events

    def next_deadline(self) -> float | None:
        """When :meth:`handle_timer` must next be called, or None for never."""
        state = self._state
        if state in _HANDSHAKE_STATES:
            return self._hs_deadline
        return None if state is ConnState.CLOSED else self._ka_deadline

    def handle_timer(self, now: float) -> list[Event]:
        """Run the handshake timeout and keepalive at time ``now`` (the same clock as the
        constructor's). Returns events; then call :meth:`data_to_send` and re-arm the timer
        with :meth:`next_deadline`."""
        events = self.take_events()
        self._now = now
        if self._state is ConnState.CLOSED:  # a stale timer
            return events
        if self._state in _HANDSHAKE_STATES:
            if now >= self._hs_deadline:
                self._fail(ErrorCode.HANDSHAKE_TIMEOUT, "the handshake did not finish", events)
        elif self._ka_deadline is not None and now >= self._ka_deadline:
            if self._received:
                self._received = False
                self._awaiting_pong = False
                self._ka_deadline = now + self._keepalive
            elif not self._awaiting_pong:
                self._awaiting_pong = True
                self._ka_deadline = now + self._keepalive
                self._ping_counter += 1
                self._control.append(encode(Ping(self._ping_counter)))
            else:
                self._fail(ErrorCode.KEEPALIVE_TIMEOUT, "the peer stopped answering", events)
        return events

    # -- output ---------------------------------------------------------------------------------

    def data_to_send(self, max_bytes: int | None = None) -> bytes:
        """The bytes to write to the transport now: every control frame, then queued data in
        weighted round robin, up to about ``max_bytes`` of data (None: all that credit allows).

        Call it after every other call. An empty result means nothing is ready.
        """
        parts = self._control
        self._control = []
        ready = self._ready
        if max_bytes is None:
            frag_max = self._frag_max
            while ready:
                h = ready.popleft()
                h.in_ready = False
                h.deficit = 0
                queue = h.queue
                if len(queue) == 1 and h.offset == 0 and h.credit_chunks and h.credit_bytes > 0:
                    # One whole chunk, as a fan-out flush finds on every subscription: what
                    # _emit does for it, without its set-up.
                    seq, item = queue[0]
                    if not isinstance(item, _GapMark) and len(item) <= frag_max:
                        size = len(item)
                        queue.clear()
                        parts.append(_DATA_HEADER.pack(8 + size, _T_DATA, 0, h.handle, seq))
                        parts.append(item)
                        h.credit_chunks -= 1
                        h.credit_bytes -= size
                        h.sent_seq = seq
                        h.q_bytes -= size
                        h.q_chunks -= 1
                        self._chunks_sent += 1
                        self._queued_bytes -= size
                        if h.state is _DRAINING:
                            self._sender_drained(h)
                        continue
                self._emit(h, parts, _UNLIMITED)
        else:
            budget = max_bytes
            while ready and budget > 0:
                h = ready[0]
                if h.deficit <= 0:  # a new turn
                    h.deficit += QUANTUM * h.weight
                used = self._emit(h, parts, min(h.deficit, budget))
                h.deficit -= used
                budget -= used
                if h.state is _H_CLOSED or not h.sendable():
                    ready.popleft()
                    h.in_ready = False
                    h.deficit = 0
                elif h.deficit <= 0:  # its turn is over
                    ready.rotate(-1)
                # else the budget ran out in the middle of its turn: the next call goes on
                # with it, so that small budgets keep the weights (R-SCHED-3).
        if self._blocked:
            self._wake_writers(self._pending)
        if not parts:
            return b""
        return b"".join(parts)

    def _emit(self, h: _Out, parts: list[bytes], allowance: int) -> int:
        """Move ``h``'s sendable entries into ``parts``; returns the bytes used."""
        queue = h.queue
        handle = h.handle
        pack = _DATA_HEADER.pack
        append = parts.append
        frag_max = self._frag_max
        used = 0
        sent = 0
        sent_bytes = 0
        n = min(len(queue), h.credit_chunks)
        bulk = n > 1 and h.offset == 0 and len(queue) == h.q_chunks and h.credit_bytes > 0
        if bulk and allowance < _UNLIMITED:
            # A budgeted take looks at no more chunks than the head's size says fit, so that
            # draining a long queue a slice at a time stays linear in what is sent.
            n = min(n, allowance // (18 + len(cast(bytes, queue[0][1]))))
        if bulk and n > 1:
            # The bulk path: a run of whole chunks (no gap marks queued) that credit, frame
            # size and allowance all take, framed with C-level iteration.
            seqs, items = zip(*(queue if n == len(queue) else islice(queue, n)), strict=True)
            sizes = list(map(len, items))
            total = sum(sizes)
            before_last = total - sizes[-1]
            if (
                max(sizes) <= frag_max
                and before_last < h.credit_bytes
                and before_last + 18 * (n - 1) < allowance
            ):
                headers = map(
                    pack,
                    map(_plus_8, sizes),
                    repeat(_T_DATA, n),
                    repeat(0, n),
                    repeat(handle, n),
                    seqs,
                )
                parts.extend(chain.from_iterable(zip(headers, items, strict=True)))
                if n == len(queue):
                    queue.clear()
                else:
                    popleft = queue.popleft
                    for _ in repeat(None, n):
                        popleft()
                h.credit_chunks -= n
                h.credit_bytes -= total
                h.sent_seq = seqs[-1]
                sent = n
                sent_bytes = total
                used = total + 18 * n
        while queue and used < allowance:
            if h.offset == 0:
                # The hot path: whole chunks while credit lasts, counters in locals.
                credit_chunks = h.credit_chunks
                credit_bytes = h.credit_bytes
                popleft = queue.popleft
                last = 0
                while credit_chunks >= 1 and credit_bytes > 0 and used < allowance and queue:
                    seq, item = queue[0]
                    if isinstance(item, _GapMark):
                        break
                    size = len(item)
                    if size > frag_max:
                        break
                    popleft()
                    credit_chunks -= 1
                    credit_bytes -= size
                    append(pack(8 + size, _T_DATA, 0, handle, seq))
                    append(item)
                    sent += 1
                    sent_bytes += size
                    used += size + 18
                    last = seq
                if last:
                    h.credit_chunks = credit_chunks
                    h.credit_bytes = credit_bytes
                    h.sent_seq = last
                if not queue or used >= allowance:
                    break
            seq, item = queue[0]
            if isinstance(item, _GapMark):
                if h.holds(item) and not (h.credit_chunks >= 1 and h.credit_bytes > 0):
                    break
                append(encode(Gap(handle, seq, item.to_seq, item.reason)))
                queue.popleft()
                h.sent_seq = item.to_seq
                if item.reason is _OVERFLOW:
                    # Reported as it leaves, for exactly the seqs the subscriber is told of
                    # (one warning per gap, as the client's on receipt, R-OVF-2), not per drop:
                    # a stalled subscriber's drops merge into one held gap.
                    dropped = item.to_seq - seq + 1
                    self._pending.append(OverflowWarning(handle, dropped, seq, item.to_seq))
                used += 27
                continue
            size = len(item)
            offset = h.offset
            if offset == 0:
                if h.credit_chunks < 1 or h.credit_bytes <= 0:
                    break
                # A chunk above the frame size (the fast path takes the others): fragments.
                h.credit_chunks -= 1
                h.credit_bytes -= size
                h.head_size = size
            piece = item[offset : offset + frag_max]
            offset += len(piece)
            more = offset < size
            append(pack(8 + len(piece), _T_DATA, int(more), handle, seq))
            append(piece)
            used += len(piece) + 18
            if more:
                h.offset = offset
            else:
                h.offset = h.head_size = 0
                queue.popleft()
                h.sent_seq = seq
                sent += 1
                sent_bytes += size
        if used:
            self._chunks_sent += sent
            self._queued_bytes -= sent_bytes
            h.q_bytes -= sent_bytes
            h.q_chunks -= sent
            if h.state is _DRAINING and not queue:
                self._sender_drained(h)
        return used

    def _overflow_queued(self, handle: int) -> bool:
        """Whether ``handle`` is a sender whose queue holds an OVERFLOW gap not sent yet."""
        h = self._handles.get(handle)
        return isinstance(h, _Out) and any(
            type(item) is _GapMark and item.reason is _OVERFLOW for _, item in h.queue
        )

    def _wake_writers(self, events: list[Event]) -> None:
        """A Writable for each blocked sender whose refused write fits now. Room is freed by sending
        (any handle's: the connection-wide cap), credit and closing."""
        for handle, (h, size) in list(self._blocked.items()):
            if self._has_room(h, size):
                del self._blocked[handle]
                events.append(Writable(handle))

    # -- client operations ----------------------------------------------------------------------

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
        """Client: subscribe to ``channel``/``stream_id`` from ``after_seq`` (0: from the
        start; ``tail``: live only). Returns the new handle; expect :class:`RequestAccepted` or
        :class:`RequestRejected` for it, then data."""
        self._check_names(channel, stream_id, allow_empty=False)
        if not 0 <= after_seq <= U64:
            raise LocalProtocolError(ErrorCode.INVALID_ARGUMENT, "after_seq must fit in u64")
        chunks, nbytes = self._window(credit_chunks, credit_bytes)
        handle = self._new_handle()
        h = _In(handle, Side.CLIENT_SUBSCRIPTION, chunks, nbytes)
        h.expect = after_seq + 1
        h.tail = tail
        frame = Subscribe(
            handle,
            channel,
            stream_id,
            after_seq,
            tail,
            chunks,
            nbytes,
            policy,
            self._prio(priority),
        )
        self._open_request(h, frame)
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
        """Client: ask ``channel`` to start a stream with ``args`` and subscribe to it in the
        same request, so no chunk is written before this subscriber listens. Returns the
        handle; :class:`RequestAccepted` carries the stream id. With ``join``, an OPEN naming
        a running stream subscribes to it from seq 1 instead of being refused with
        STREAM_EXISTS (``RequestAccepted.joined`` says which happened).

        With ``bidi`` the handle carries chunks both ways (R-BIDI-1): the server's arrive as
        for a subscription, and this side writes its own with :meth:`send_data`,
        :meth:`send_end` and :meth:`send_error` as on an upload (queued until ACCEPT brings
        credit). Each direction ends, fails or is cancelled on its own. Raises INVALID_STATE
        unless the server announced :attr:`Feature.BIDI`, INVALID_ARGUMENT with ``join``."""
        self._check_names(channel, stream_id, allow_empty=True)
        chunks, nbytes = self._window(credit_chunks, credit_bytes)
        if bidi and not self.peer_features & Feature.BIDI:
            raise LocalProtocolError(
                ErrorCode.INVALID_STATE,
                "the server does not announce bidirectional streams (FEATURES)",
            )
        if bidi and join:
            raise LocalProtocolError(
                ErrorCode.INVALID_ARGUMENT, "a bidirectional OPEN starts its stream: no join"
            )
        handle = self._new_handle()
        h = _In(handle, Side.CLIENT_SUBSCRIPTION, chunks, nbytes)
        if bidi:
            h.twin = _Out(handle, Side.CLIENT_UPLOAD, 0, 0)
            h.twin.twin = h
        frame = Open(
            handle,
            channel,
            stream_id,
            chunks,
            nbytes,
            policy,
            self._prio(priority),
            args,
            join,
            bidi,
        )
        self._open_request(h, frame)
        return handle

    def upload(
        self,
        channel: str,
        stream_id: str = "",
        args: bytes = b"",
        *,
        resumable: bool = False,
        result: bool = False,
    ) -> int:
        """Client: start an upload. Returns the handle; write with :meth:`send_data` (chunks
        queue until :class:`RequestAccepted` brings credit), finish with :meth:`send_end` or
        :meth:`send_error`.

        ``resumable``: the server parks the upload on a disconnect, and this side keeps every
        chunk until the server acknowledges it, so that :meth:`upload_resume_point` and
        :meth:`resume_upload` can continue it on the next connection. ``result``: after END
        the server answers with the handler's result (:class:`UploadCompleted`). Both need
        :attr:`Feature.UPLOAD_RESUME` (else INVALID_STATE); either makes the handle close on
        UPLOAD_RESULT, not when its last chunk is out (section 9.1)."""
        self._check_names(channel, stream_id, allow_empty=True)
        if (resumable or result) and not self.peer_features & Feature.UPLOAD_RESUME:
            raise LocalProtocolError(
                ErrorCode.INVALID_STATE, "the server does not announce resumable uploads"
            )
        handle = self._new_handle()
        h = _Out(handle, Side.CLIENT_UPLOAD, 0, 0)
        if resumable or result:
            h.up = _Up(channel, stream_id, args, resumable=resumable, result=result)
        self._open_request(h, Upload(handle, channel, stream_id, args, resumable, result))
        return handle

    def upload_resume_point(self, handle: int) -> UploadResumePoint | None:
        """Client: where the resumable upload on ``handle`` stands, to continue it with
        :meth:`resume_upload` on a new connection once this one has ended (R-UPR-4). Kept
        when the connection ends. None when there is nothing to resume: the upload is not
        resumable, has closed (completed, cancelled, failed), or was never accepted under a
        stream id the client knows."""
        h = self._handles.get(handle)
        if h is None:
            self.handle_state(handle)  # raises for a handle never opened
            return self._suspended.get(handle)
        return self._resume_point(h)

    @staticmethod
    def _resume_point(h: _Out | _In) -> UploadResumePoint | None:
        if not isinstance(h, _Out) or h.up is None or h.up.kept is None or not h.up.stream_id:
            return None
        up = h.up
        kept = cast(deque[tuple[int, bytes]], up.kept)
        first = kept[0][0] if kept else h.next_seq
        chunks = tuple(chunk for _, chunk in kept)
        return UploadResumePoint(
            up.channel, up.stream_id, up.args, up.result, first, chunks, up.ended, up.accepted
        )

    def resume_upload(self, point: UploadResumePoint) -> int:
        """Client: continue a resumable upload of an earlier connection of this session (after
        a RESUMED :class:`HandshakeCompleted`): UPLOAD with flag RESUME on a new handle. The
        server's ACCEPT names the next seq it expects; the chunks from there are sent again
        and the rest forgotten, so nothing is lost or repeated (R-UPR-5). Write on with
        :meth:`send_data`; an ended upload ends again by itself. A server that no longer holds
        the upload rejects it with UNKNOWN_UPLOAD."""
        self._check_names(point.channel, point.stream_id, allow_empty=False)
        if not self.peer_features & Feature.UPLOAD_RESUME:
            raise LocalProtocolError(
                ErrorCode.INVALID_STATE, "the server does not announce resumable uploads"
            )
        handle = self._new_handle()
        h = _Out(handle, Side.CLIENT_UPLOAD, 0, 0)
        up = h.up = _Up(
            point.channel, point.stream_id, point.args, resumable=True, result=point.result
        )
        up.ended = point.ended
        up.accepted = point.accepted
        up.resend_end = point.next_seq
        cast(deque[tuple[int, bytes]], up.kept).extend(
            zip(range(point.first_seq, point.next_seq), point.chunks, strict=True)
        )
        h.next_seq = point.next_seq
        frame = Upload(
            handle, point.channel, point.stream_id, point.args, True, point.result, point.accepted
        )
        self._open_request(h, frame)
        return handle

    @property
    def peer_features(self) -> Feature:
        """Client: what the server announced in WELCOME's FEATURES setting (none before)."""
        return Feature(self._peer_settings[Setting.FEATURES] & _ALL_FEATURES)

    def status(self, channel: str, stream_id: str) -> int:
        """Client: ask the state of ``channel``/``stream_id`` without subscribing (R-QUERY-2).
        Returns the handle; :class:`StreamsReceived` (one entry) or :class:`RequestRejected`
        answers. Raises INVALID_STATE unless the server announced :attr:`Feature.QUERIES`."""
        return self._query(QueryOp.STATUS, channel, stream_id)

    def list_streams(
        self, channel: str, *, after: str = "", states: int = 0, limit: int = 100
    ) -> int:
        """Client: ask a page of ``channel``'s streams: ids after ``after`` in id order, at
        most ``limit`` (1..65535), whose state is in the mask ``states`` (``1 << StreamState``;
        0: any) (R-QUERY-3). :class:`StreamsReceived` carries the page and the next cursor."""
        if not (1 <= limit <= 0xFFFF and 0 <= states <= 0xFF):
            raise LocalProtocolError(
                ErrorCode.INVALID_ARGUMENT, "limit must be in 1..65535 and states a u8 mask"
            )
        return self._query(QueryOp.LIST, channel, after, states, limit, allow_empty=True)

    def delete(self, channel: str, stream_id: str) -> int:
        """Client: ask the server to delete ``channel``/``stream_id`` (R-QUERY-4): its readers
        end with STREAM_DELETED. :class:`StreamsReceived` carries the entry as it was."""
        return self._query(QueryOp.DELETE, channel, stream_id)

    def _query(
        self,
        op: QueryOp,
        channel: str,
        stream_id: str,
        states: int = 0,
        limit: int = 0,
        *,
        allow_empty: bool = False,
    ) -> int:
        self._check_names(channel, stream_id, allow_empty=allow_empty)
        if not self.peer_features & Feature.QUERIES:
            raise LocalProtocolError(
                ErrorCode.INVALID_STATE, "the server does not announce stream queries (FEATURES)"
            )
        handle = self._new_handle()
        h = _In(handle, Side.CLIENT_QUERY, 0, 0)
        self._open_request(h, Query(handle, op, channel, stream_id, states, limit))
        return handle

    def cancel(self, handle: int) -> None:
        """Client: leave the subscription and ask the producer to stop. The handle closes at
        once; frames still in flight for it are discarded. A no-op on a closed handle."""
        self._leave(handle, Input.SEND_CANCEL, Cancel(handle))

    def unsubscribe(self, handle: int) -> None:
        """Client: leave the subscription; the producer keeps going. Closes the handle at
        once. A no-op on a closed handle."""
        self._leave(handle, Input.SEND_UNSUBSCRIBE, Unsubscribe(handle))

    def consume(self, handle: int, chunks: int, nbytes: int) -> None:
        """Receiver with ``Config.auto_credit=False``: the application has consumed this many
        chunks and bytes of ``handle``'s data; credit goes back to the sender when half the
        window is consumed. With auto credit this is not needed (and raises INVALID_STATE)."""
        if self._cfg.auto_credit:
            raise LocalProtocolError(ErrorCode.INVALID_STATE, "auto_credit is on")
        h = self._handles.get(handle)
        if h is None:
            self.handle_state(handle)  # raises for a handle never opened
            return
        h = _part(h, _RECEIVING)
        if h is None:  # a bidirectional handle whose receiving direction closed
            return
        if not isinstance(h, _In):
            raise LocalProtocolError(ErrorCode.INVALID_STATE, f"handle {handle} does not receive")
        if not (0 <= chunks <= h.unconsumed_chunks and 0 <= nbytes <= h.unconsumed_bytes):
            raise LocalProtocolError(
                ErrorCode.INVALID_ARGUMENT,
                f"consumed more than received ({h.unconsumed_chunks} chunks, "
                f"{h.unconsumed_bytes} bytes unconsumed)",
            )
        h.unconsumed_chunks -= chunks
        h.unconsumed_bytes -= nbytes
        h.consumed_chunks += chunks
        h.consumed_bytes += nbytes
        self._maybe_grant(h)

    # -- server operations ----------------------------------------------------------------------

    def accept_handshake(
        self,
        *,
        session_id: str,
        resume_token: str,
        resumed: bool = False,
        features: Feature = _NO_FEATURES,
    ) -> bool:
        """Server: accept the client's HELLO (after :class:`HandshakeRequested`). ``features``
        are announced in the FEATURES setting: announce only what you answer (a hub answers
        queries). Returns False if the connection ended meanwhile (the client broke the
        protocol or went away in the same batch of bytes): there is nothing to accept then."""
        self._require_role(Role.SERVER)
        if self._state is ConnState.CLOSED:
            return False
        cfg = self._cfg
        settings = (
            (Setting.MAX_FRAME_SIZE, cfg.max_frame_size),
            (Setting.MAX_CHUNK_SIZE, cfg.max_chunk_size),
            (Setting.KEEPALIVE_MS, round(self._keepalive * 1000)),
            (Setting.MAX_SUBSCRIPTIONS, cfg.max_subscriptions),
            (Setting.MAX_UPLOADS, cfg.max_uploads),
            (Setting.SESSION_GRACE_MS, round(cfg.session_grace * 1000)),
        ) + (((Setting.FEATURES, int(features)),) if features else ())
        welcome = Welcome(PROTOCOL_VERSION, resumed, settings, session_id, resume_token)
        self._features = features
        mate = self._mate
        if mate is None:
            data = encode(welcome)
            _check_handshake_size(data, "WELCOME (its session id and resume token)")
            self._conn_step(ConnInput.SEND_WELCOME, local=True)
            self._control.append(data)
        else:
            self._conn_step(ConnInput.SEND_WELCOME, local=True)
            if mate._state is ConnState.HANDSHAKING:  # (not if its application closed it)
                mate._on_welcome(welcome, mate._pending)
        self._start_keepalive()
        return True

    def refuse_handshake(self, code: int, message: str = "") -> bool:
        """Server: refuse the client's HELLO with ``code`` (e.g. AUTH_FAILED). The connection
        closes: flush ``data_to_send()`` and close the transport. Returns False if it had
        ended already."""
        self._require_role(Role.SERVER)
        _check_code(code)
        if self._state is ConnState.CLOSED:
            return False
        self._conn_step(ConnInput.SEND_REFUSE, local=True)
        self._control.append(encode(Goaway(code, 0, _truncate(message))))
        self._drop_all()
        self._pending.append(ConnectionTerminated(code, message, False))
        return True

    def accept(
        self,
        handle: int,
        *,
        stream_id: str = "",
        first_seq: int = 1,
        last_seq: int = 0,
        policy: OverflowPolicy | None = None,
        joined: bool = False,
        held: tuple[int, int] = (0, 0),
    ) -> bool:
        """Server: accept the request on ``handle``. For a subscription, ``first_seq`` and
        ``last_seq`` are the seqs you hold; the subscriber's first expected seq follows from
        its ``after_seq`` (a GAP for the part before ``first_seq`` is queued here) and you
        then send data from that seq on. ``policy`` overrides the requested overflow policy.
        ``joined``: an OPEN joined a running stream (flag JOINED). For an upload, the
        configured window is granted. For a resumed upload (``UploadRequested.resume``),
        ``first_seq`` is the next seq you expect (every seq before it was received on an
        earlier connection) and ``held`` the chunks and bytes of it you still hold unread:
        they count against the window, as if received on this handle (R-UPR-5). A
        bidirectional OPEN is a subscription and an upload: one ACCEPT answers its two
        directions (those the client has not closed meanwhile). Returns False if the client
        already closed the handle."""
        h = self._server_handle(handle)
        if h is None:
            return False
        if not (0 <= first_seq <= U64 and 0 <= last_seq <= U64):
            raise LocalProtocolError(ErrorCode.INVALID_ARGUMENT, "seqs must fit in u64")
        if joined and (isinstance(h, _In) or h.twin is not None):
            raise LocalProtocolError(ErrorCode.INVALID_ARGUMENT, "only an OPEN joins a stream")
        if isinstance(h, _In) and (first_seq != 1 or held != (0, 0)) and not h.resume:
            raise LocalProtocolError(
                ErrorCode.INVALID_ARGUMENT, "only a resumed upload starts later"
            )
        parts = _open_parts(h)
        for part in parts:
            self._handle_step(part, Input.SEND_ACCEPT)
        window = (0, 0)
        h_out: _Out | None = None
        for part in parts:
            if isinstance(part, _In):  # an upload or a bidi's upstream: ACCEPT grants the window
                if part.resume:
                    last_seq = first_seq - 1
                    part.expect = first_seq
                    part.acked = last_seq
                    if not self._cfg.auto_credit:  # (with auto credit, what is held is consumed)
                        part.unconsumed_chunks, part.unconsumed_bytes = held
                part.credit_chunks = max(0, part.window_chunks - part.unconsumed_chunks)
                part.credit_bytes = max(0, part.window_bytes - part.unconsumed_bytes)
                window = (part.credit_chunks, part.credit_bytes)
            else:
                h_out = part
        if h_out is None:  # an upload
            self._control.append(encode(Accept(handle, stream_id, first_seq, last_seq, *window)))
            return True
        h = h_out
        if policy is not None and policy is not OverflowPolicy.DEFAULT:
            h.policy = policy
        elif h.policy is OverflowPolicy.DEFAULT:
            h.policy = self._cfg.default_policy
        self._control.append(
            encode(Accept(handle, stream_id, first_seq, last_seq, *window, joined))
        )
        if h.next_seq == 0:  # tail subscription: start after what exists
            h.next_seq = last_seq + 1
        h.sent_seq = h.next_seq - 1
        if h.next_seq < first_seq:
            self._queue_gap(h, first_seq - 1, GapReason.EVICTED)
        return True

    def reject(self, handle: int, code: int, message: str = "") -> bool:
        """Server: refuse the request on ``handle`` with ``code``. Returns False if the client
        already closed the handle."""
        _check_code(code)
        h = self._server_handle(handle)
        if h is None:
            return False
        parts = _open_parts(h)
        for part in parts:
            self._handle_step(part, Input.SEND_REJECT)
        self._control.append(encode(Reject(handle, code, _truncate(message))))
        for part in parts:
            self._close_handle(part)
        return True

    def answer_streams(
        self, handle: int, entries: Sequence[StreamEntry], next_cursor: str = ""
    ) -> bool:
        """Server: answer the query on ``handle`` (STREAMS) and close it. The frame must fit
        the client's MAX_FRAME_SIZE (a page of 100 entries always does). Returns False if the
        connection closed the handle already."""
        h = self._server_handle(handle)
        if h is None:
            return False
        frame = encode(Streams(handle, tuple(entries), next_cursor))
        if len(frame) - 10 > self._peer_settings[Setting.MAX_FRAME_SIZE]:
            raise LocalProtocolError(ErrorCode.INVALID_ARGUMENT, "the answer exceeds a frame")
        self._handle_step(h, Input.SEND_STREAMS)
        self._control.append(frame)
        self._close_handle(h)
        return True

    def cancel_upload(
        self, handle: int, code: int = ErrorCode.UPLOAD_CANCELLED, message: str = ""
    ) -> bool:
        """Server: stop the upload on ``handle`` (UPLOAD_CANCEL). Returns False if it was
        already closed."""
        _check_code(code)
        h = self._server_handle(handle)
        if h is not None:
            h = _part(h, _RECEIVING)  # a bidirectional stream's upstream
        if h is None:
            return False
        self._handle_step(h, Input.SEND_UPLOAD_CANCEL)
        self._control.append(encode(UploadCancel(handle, code, _truncate(message))))
        self._close_handle(h)
        return True

    def send_upload_result(self, handle: int, result: bytes = b"") -> bool:
        """Server: answer the upload on ``handle``, which ended and was delivered whole
        (:class:`UploadEnded`) after a request with flag RESULT, with ``result``
        (UPLOAD_RESULT), closing it (R-UPR-7). ``result`` must fit one frame of the client's
        MAX_FRAME_SIZE. Returns False if the handle is closed already (the connection ended:
        a resumed upload's END asks for it again)."""
        h = self._server_handle(handle)
        if h is None:
            return False
        if len(result) > self._peer_settings[Setting.MAX_FRAME_SIZE]:
            raise LocalProtocolError(ErrorCode.INVALID_ARGUMENT, "the result exceeds a frame")
        self._handle_step(h, Input.SEND_UPLOAD_RESULT)
        self._control.append(encode(UploadResult(handle, result)))
        self._close_handle(h)
        return True

    # -- sending data (server subscriptions, client uploads) ------------------------------------

    def send_data(self, handle: int, chunk: bytes, *, seq: int | None = None) -> WriteResult:
        """Queue ``chunk`` on ``handle``: a server subscription (after ``accept``) or a client
        upload. ``seq`` defaults to the next one; when given it must be that one (send a gap
        to skip). Under the subscription's overflow policy a full queue drops the oldest
        chunks, answers BLOCKED, or fails the subscription. Then call ``data_to_send``.
        To queue many chunks at once, :meth:`send_data_many` does the same for less."""
        h = self._handles.get(handle)
        if not isinstance(h, _Out):
            # Raises for a misuse (never opened, or not a sender); None: the peer closed it,
            # a race, not a misuse. A bidirectional handle's sending direction is its twin.
            h = self._sender(handle)
            if h is None:
                return _W_CLOSED
        if not (h.state is _ACTIVE and _DATA_KEEPS_ACTIVE):
            self._handle_step(h, _SEND_DATA)
        next_seq = h.next_seq
        if seq is not None and seq != next_seq:
            raise LocalProtocolError(
                ErrorCode.INVALID_ARGUMENT, f"seq {seq} on handle {handle}: expected {next_seq}"
            )
        if next_seq > U64:
            raise LocalProtocolError(ErrorCode.INVALID_ARGUMENT, f"handle {handle} has no seq left")
        size = len(chunk)
        if size > self._peer_max_chunk:
            raise LocalProtocolError(
                ErrorCode.CHUNK_TOO_LARGE,
                f"chunk of {size} bytes exceeds the peer's maximum of {self._peer_max_chunk}",
            )
        # _has_room, inlined: this is the hot path of every write.
        cfg = self._cfg
        credit_chunks = h.credit_chunks
        credit_bytes = h.credit_bytes
        if (
            h.q_chunks - (h.head_size > 0) - (credit_chunks if credit_chunks > 0 else 0)
            < cfg.max_queued_chunks
            and h.q_bytes - h.head_size + size - (credit_bytes if credit_bytes > 0 else 0)
            <= cfg.max_queued_bytes
            and self._queued_bytes + size <= cfg.max_connection_queued_bytes
        ):
            queue = h.queue
            if queue is _NO_QUEUE:
                queue = h.queue = deque()
            queue.append((next_seq, chunk))
            up = h.up
            if up is not None and up.kept is not None:
                up.kept.append((next_seq, chunk))
            h.next_seq = next_seq + 1
            h.q_bytes += size
            h.q_chunks += 1
            self._queued_bytes += size
            if not h.in_ready and (
                (len(queue) == 1 and credit_chunks >= 1 and credit_bytes > 0) or h.sendable()
            ):
                h.in_ready = True
                self._ready.append(h)
            return _ACCEPTED
        return self._overflow_one(h, chunk, size, h.policy)

    def send_data_many(
        self, handle: int, chunks: Sequence[bytes], *, seq: int | None = None
    ) -> tuple[int, WriteResult]:
        """Queue ``chunks`` on ``handle`` with consecutive seqs, exactly as calling
        :meth:`send_data` for each in turn and stopping at the first answer that is not
        ACCEPTED would: the same seqs, overflow policy, bytes out and events, for one room
        check per call instead of one per chunk.

        Returns ``(accepted, result)``: the first ``accepted`` chunks were ACCEPTED (queued,
        or dropped under ``drop_oldest``, which reports them in a gap as ``send_data`` does);
        ``result`` is ACCEPTED when all were, else what ``send_data`` answered for
        ``chunks[accepted]``: BLOCKED (a :class:`Writable` follows when it fits; offer
        ``chunks[accepted:]`` again then), FAILED (the ``error`` policy failed the
        subscription) or CLOSED (the peer closed the handle). ``seq``, when given, must be the
        seq of ``chunks[0]``.

        Unlike a loop of ``send_data``, misuse raises before anything is queued: the handle
        is checked even when ``chunks`` is empty, and a chunk above
        :attr:`peer_max_chunk_size` (CHUNK_TOO_LARGE) or a batch past the last seq
        (INVALID_ARGUMENT) rejects the whole call.
        """
        h = self._handles.get(handle)
        if not isinstance(h, _Out):
            h = self._sender(handle)  # as in send_data
            if h is None:
                return 0, WriteResult.CLOSED
        return self._send_many(h, chunks, seq, h.policy)

    def _send_many(
        self, h: _Out, chunks: Sequence[bytes], seq: int | None, policy: OverflowPolicy
    ) -> tuple[int, WriteResult]:
        """:meth:`send_data_many` on an open sender, with ``policy`` for its overflow policy
        (the hub's replay passes BLOCK: catching up never trips a policy)."""
        if not (h.state is _ACTIVE and _DATA_KEEPS_ACTIVE):
            self._handle_step(h, _SEND_DATA)
        next_seq = h.next_seq
        handle = h.handle
        if seq is not None and seq != next_seq:
            raise LocalProtocolError(
                ErrorCode.INVALID_ARGUMENT, f"seq {seq} on handle {handle}: expected {next_seq}"
            )
        n = len(chunks)
        if not n:
            return 0, _ACCEPTED
        if next_seq + n - 1 > U64:
            raise LocalProtocolError(ErrorCode.INVALID_ARGUMENT, f"handle {handle} has no seq left")
        sizes = list(map(len, chunks))
        biggest = max(sizes)
        if biggest > self._peer_max_chunk:
            raise LocalProtocolError(
                ErrorCode.CHUNK_TOO_LARGE,
                f"chunk of {biggest} bytes exceeds the peer's maximum of {self._peer_max_chunk}",
            )
        total = sum(sizes)
        cfg = self._cfg
        credit_chunks = h.credit_chunks
        credit_bytes = h.credit_bytes
        # What send_data's room check would see before the first chunk; each chunk it
        # accepts adds one chunk and its size to all three.
        beyond_chunks = h.q_chunks - (h.head_size > 0) - (credit_chunks if credit_chunks > 0 else 0)
        room_chunks = cfg.max_queued_chunks - beyond_chunks
        room_bytes = min(
            cfg.max_queued_bytes
            - (h.q_bytes - h.head_size - (credit_bytes if credit_bytes > 0 else 0)),
            cfg.max_connection_queued_bytes - self._queued_bytes,
        )
        if n <= room_chunks and total <= room_bytes:
            self._enqueue(h, chunks, total)
            return n, _ACCEPTED
        fit = _prefix_fitting(accumulate(sizes), room_bytes, min(n, room_chunks))
        if fit:
            self._enqueue(h, chunks[:fit], sum(sizes[:fit]))
        if policy is _DROP_OLDEST or policy is _DEFAULT_POLICY:
            # Every chunk is accepted, maybe after dropping older ones: one at a time, as
            # send_data does, since each drop depends on the one before.
            for i in range(fit, n):
                if not self._has_room(h, sizes[i]):
                    self._overflow_one(h, chunks[i], sizes[i], policy)
                    continue
                self._enqueue(h, chunks[i : i + 1], sizes[i])
            return n, _ACCEPTED
        return fit, self._overflow_one(h, chunks[fit], sizes[fit], policy)

    def _enqueue(self, h: _Out, chunks: Sequence[bytes], total: int) -> None:
        """Queue ``chunks`` (room checked by the caller) with the next seqs."""
        queue = h.queue
        if queue is _NO_QUEUE:
            queue = h.queue = deque()
        seq = h.next_seq
        n = len(chunks)
        if n == 1:
            queue.append((seq, chunks[0]))
        else:
            queue.extend(zip(range(seq, seq + n), chunks, strict=True))
        up = h.up
        if up is not None and up.kept is not None:
            up.kept.extend(zip(range(seq, seq + n), chunks, strict=True))
        h.next_seq = seq + n
        h.q_bytes += total
        h.q_chunks += n
        self._queued_bytes += total
        if not h.in_ready and h.sendable():
            h.in_ready = True
            self._ready.append(h)

    def _room(self, h: _Out, share: int) -> tuple[int, int]:
        """The chunks and bytes ``h`` can still queue without its overflow policy, when
        ``share`` senders of this connection (``h`` among them) each queue the same chunks.
        (0, 0) when ``h`` cannot take data as it is (not ACTIVE)."""
        if h.state is not _ACTIVE:
            return 0, 0
        cfg = self._cfg
        credit_chunks = h.credit_chunks
        credit_bytes = h.credit_bytes
        room_chunks = cfg.max_queued_chunks - (
            h.q_chunks - (h.head_size > 0) - (credit_chunks if credit_chunks > 0 else 0)
        )
        room_bytes = min(
            cfg.max_queued_bytes
            - (h.q_bytes - h.head_size - (credit_bytes if credit_bytes > 0 else 0)),
            (cfg.max_connection_queued_bytes - self._queued_bytes) // share,
        )
        return min(room_chunks, U64 - h.next_seq + 1), room_bytes

    def _room_count(self, h: _Out, totals: list[int], share: int) -> int:
        """How many leading chunks of a batch whose running byte totals are ``totals`` fit in
        ``h``'s bounds without its overflow policy, when ``share`` senders of this
        connection (``h`` among them) each queue the same batch, none past the last seq. 0
        when ``h`` cannot take data as it is (not ACTIVE, out of seqs): the caller then goes
        one chunk at a time."""
        n = len(totals)
        room_chunks, room_bytes = self._room(h, share)
        if n <= room_chunks and totals[-1] <= room_bytes:
            return n
        return _prefix_fitting(totals, room_bytes, min(n, room_chunks))

    def _overflow_one(
        self, h: _Out, chunk: bytes, size: int, policy: OverflowPolicy
    ) -> WriteResult:
        """``send_data`` of a chunk that does not fit: apply ``policy``."""
        if policy is OverflowPolicy.BLOCK:
            self._blocked[h.handle] = (h, size)
            return WriteResult.BLOCKED
        if policy is OverflowPolicy.ERROR:
            self._fail_sender(h)
            return WriteResult.FAILED
        if not self._drop_oldest(h, size):
            # Dropping this handle's chunks did not make room (the connection-wide cap is
            # full with other handles' data): the new chunk is dropped too.
            self._chunks_dropped += 1
            self._queue_gap(h, h.next_seq, GapReason.OVERFLOW)
            return WriteResult.ACCEPTED
        self._enqueue(h, (chunk,), size)
        return WriteResult.ACCEPTED

    def send_gap(
        self, handle: int, to_seq: int, reason: GapReason = GapReason.EVICTED
    ) -> WriteResult:
        """Server: seqs from the next one up to ``to_seq`` will not be sent on ``handle``."""
        h = self._sender(handle)
        if h is None:
            return WriteResult.CLOSED
        self._require_role(Role.SERVER)
        self._handle_step(h, Input.SEND_GAP)
        if not h.next_seq <= to_seq <= U64:
            raise LocalProtocolError(
                ErrorCode.INVALID_ARGUMENT, f"gap must end at or after seq {h.next_seq}"
            )
        self._queue_gap(h, to_seq, reason)
        return WriteResult.ACCEPTED

    def send_end(self, handle: int) -> bool:
        """End the stream on ``handle`` after the last queued chunk. END goes out at once
        (control frames bypass data); queued chunks follow as credit allows and the handle
        closes when they are out. Returns False if the peer had closed the handle."""
        h = self._sender(handle)
        if h is None:
            return False
        self._handle_step(h, Input.SEND_END)
        self._control.append(encode(End(handle, h.next_seq - 1)))
        if h.up is not None:
            h.up.ended = True
        self._maybe_drained(h)
        return True

    def send_error(self, handle: int, code: int, message: str = "") -> bool:
        """Fail the stream on ``handle`` with ``code`` after the last queued chunk (the
        chunks before the failure are still delivered). Returns False if the peer had closed
        the handle."""
        _check_code(code)
        h = self._sender(handle)
        if h is None:
            return False
        self._handle_step(h, Input.SEND_ERROR)
        if h.state is HState.CLOSED:  # failed before ACCEPT (client upload)
            self._control.append(encode(Error(handle, code, 0, _truncate(message))))
            self._close_handle(h)
            return True
        self._control.append(encode(Error(handle, code, h.next_seq - 1, _truncate(message))))
        self._maybe_drained(h)
        return True

    def has_room(self, handle: int, nbytes: int = 0, *, others: int = 0) -> bool:
        """Whether ``send_data`` of ``nbytes`` on ``handle`` would be queued without applying
        the overflow policy, after ``others`` bytes queued on other handles of this
        connection first (they share its connection-wide cap). When it would not, a
        :class:`Writable` event follows once ``nbytes`` alone would fit. False for a closed
        handle. Lets a fan-out writer check every subscriber before it commits a chunk to any
        of them."""
        h = self._sender(handle)
        if h is None:
            return False
        if self._has_room(h, nbytes) and (
            self._queued_bytes + nbytes + others <= self._cfg.max_connection_queued_bytes
        ):
            return True
        self._blocked[handle] = (h, nbytes)
        return False

    # -- both roles -----------------------------------------------------------------------------

    def ping(self) -> int:
        """Send a PING; returns its payload, echoed by a later :class:`PongReceived`."""
        self._conn_step(ConnInput.SEND_PING, local=True)
        self._ping_counter += 1
        self._control.append(encode(Ping(self._ping_counter)))
        return self._ping_counter

    def goaway(self, code: int = ErrorCode.NO_ERROR, message: str = "") -> None:
        """Stop accepting new requests. Code 0 drains: open streams run to completion, then
        the connection ends with :class:`ConnectionTerminated`. Any other code closes now:
        queued data is dropped; flush ``data_to_send()`` and close the transport. Before the
        handshake completed there is nothing to drain, so any GOAWAY closes at once."""
        _check_code(code)
        if self._state is ConnState.CLOSED:
            return
        goaway = encode(Goaway(code, self._highest, _truncate(message)))
        if code != ErrorCode.NO_ERROR or self._state in _HANDSHAKE_STATES:
            self._conn_step(ConnInput.FAIL, local=True)
            self._control.append(goaway)
            self._drop_all()
            self._pending.append(ConnectionTerminated(code, message, False))
            return
        self._conn_step(ConnInput.SEND_GOAWAY, local=True)
        self._control.append(goaway)
        self._goaway_by_peer = False
        self._maybe_finish_draining()

    # -- receive path ---------------------------------------------------------------------------

    def _dispatch(self, frame: Frame, events: list[Event]) -> None:
        if isinstance(frame, Data):
            self._on_data(frame, events)
            return
        match frame:
            case Credit():
                self._on_credit(frame, events)
            case Subscribe() | Open() | Upload() | Query():
                self._on_request(frame, events)
            case Hello():
                self._on_hello(frame, events)
            case Welcome():
                self._on_welcome(frame, events)
            case Ping():
                self._conn_step(ConnInput.RECV_PING)
                self._control.append(encode(Pong(frame.payload)))
                events.append(PingReceived(frame.payload))
            case Pong():
                self._conn_step(ConnInput.RECV_PONG)
                events.append(PongReceived(frame.payload))
            case Goaway():
                self._on_goaway(frame, events)
            # The decoder skips unknown frame types (R-FWD-1), so one case always matches.
            case (  # pragma: no branch
                Accept()
                | Reject()
                | Gap()
                | End()
                | Error()
                | Cancel()
                | Unsubscribe()
                | UploadCancel()
                | UploadAck()
                | UploadResult()
                | Streams()
            ):
                self._on_handle_frame(frame, events)

    def _lookup(self, handle: int, inp: Input) -> _Out | _In | None:
        self._conn_step(_RECV_HANDLE_FRAME)
        h = self._handles.get(handle)
        if h is None:
            if handle > self._highest:
                raise _PeerFault(ErrorCode.INVALID_HANDLE, f"handle {handle} was never opened")
            return None  # closed, the frame crossed our CANCEL or END; discard it
        if h.twin is not None:  # bidirectional: the direction the frame belongs to
            return _part(h, BIDI_ROUTES.get(inp, Direction.BOTH))
        return h

    def _recv_step(self, h: _Out | _In, inp: Input) -> None:
        new = HANDLE_TRANSITIONS[h.side].get((h.state, inp))
        if new is None:
            raise _PeerFault(
                ErrorCode.PROTOCOL_ERROR,
                f"{inp.value} is not allowed on {h.side.value} {h.handle} in {h.state.value}",
            )
        h.state = new

    def _on_data(self, frame: Data, events: list[Event]) -> None:
        h = self._lookup(frame.handle, _RECV_DATA)
        if h is None:
            return
        if h.side is _SERVER_UPLOAD and h.state is _REQUESTED:
            raise _PeerFault(ErrorCode.FLOW_CONTROL_ERROR, "DATA on an upload before ACCEPT")
        self._recv_step(h, _RECV_DATA)
        h = cast(_In, h)  # only receivers have RECV_DATA in their tables
        chunks = frame.chunks
        seq = frame.seq
        if h.frag is not None:
            if seq != h.expect:
                raise _PeerFault(
                    ErrorCode.PROTOCOL_ERROR, "DATA of another seq inside a fragmented chunk"
                )
            piece = chunks[0]
            h.credit_bytes -= len(piece)
            self._add_fragment(h, piece)
            if frame.more:
                return
            whole = b"".join(h.frag)
            h.frag = None
            chunks = (whole, *chunks[1:])
            count_from = 1  # the completed chunk's credit was taken at its first fragment
        else:
            if seq != h.expect:
                raise _PeerFault(
                    ErrorCode.PROTOCOL_ERROR,
                    f"DATA seq {seq} on handle {h.handle}: expected {h.expect}",
                )
            count_from = 0
        n_new = len(chunks) - count_from
        if n_new:
            sizes = [len(c) for c in chunks[count_from:]]
            total = sum(sizes)
            if h.credit_chunks < n_new or h.credit_bytes - (total - sizes[-1]) <= 0:
                raise _PeerFault(
                    ErrorCode.FLOW_CONTROL_ERROR, f"DATA beyond credit on handle {h.handle}"
                )
            h.credit_chunks -= n_new
            h.credit_bytes -= total
            if frame.more:
                h.frag = []
                h.frag_size = 0
                self._add_fragment(h, chunks[0])
                return
        last = seq + len(chunks) - 1
        if h.state is _DRAINING and last > h.final_seq:
            raise _PeerFault(ErrorCode.PROTOCOL_ERROR, f"DATA after the final seq {h.final_seq}")
        h.expect = last + 1
        self._chunks_received += len(chunks)
        if h.side is _CLIENT_SUBSCRIPTION:
            events.append(DataReceived(h.handle, seq, chunks))
        else:
            events.append(UploadData(h.handle, seq, chunks))
        nbytes = sum(map(len, chunks))
        if self._cfg.auto_credit:
            h.consumed_chunks += len(chunks)
            h.consumed_bytes += nbytes
            self._maybe_grant(h)
        else:
            h.unconsumed_chunks += len(chunks)
            h.unconsumed_bytes += nbytes
        if h.state is _DRAINING:
            self._maybe_delivered(h, events)

    def _add_fragment(self, h: _In, piece: bytes) -> None:
        cast(list[bytes], h.frag).append(piece)
        h.frag_size += len(piece)
        if h.frag_size > self._cfg.max_chunk_size:
            raise _PeerFault(
                ErrorCode.CHUNK_TOO_LARGE,
                f"chunk on handle {h.handle} exceeds {self._cfg.max_chunk_size} bytes",
            )

    def _maybe_grant(self, h: _In) -> None:
        if (h.consumed_chunks or h.consumed_bytes) and (
            h.consumed_chunks * 2 >= h.window_chunks or h.consumed_bytes * 2 >= h.window_bytes
        ):
            self._handle_step(h, Input.SEND_CREDIT)
            if 0 <= h.acked < h.expect - 1:  # a resumable upload: what it took so far
                self._handle_step(h, Input.SEND_UPLOAD_ACK)
                h.acked = h.expect - 1
                self._control.append(encode(UploadAck(h.handle, h.acked)))
            self._control.append(encode(Credit(h.handle, h.consumed_chunks, h.consumed_bytes)))
            h.credit_chunks += h.consumed_chunks
            h.credit_bytes += h.consumed_bytes
            h.consumed_chunks = 0
            h.consumed_bytes = 0

    def _on_credit(self, frame: Credit, events: list[Event]) -> None:
        h = self._lookup(frame.handle, Input.RECV_CREDIT)
        if h is None:
            return
        self._recv_step(h, Input.RECV_CREDIT)
        h = cast(_Out, h)  # only senders have RECV_CREDIT in their tables
        h.credit_chunks += frame.chunks
        h.credit_bytes += frame.nbytes
        if h.credit_chunks > MAX_CREDIT or h.credit_bytes > MAX_CREDIT:
            raise _PeerFault(ErrorCode.FLOW_CONTROL_ERROR, f"credit overflow on handle {h.handle}")
        blocked = self._blocked.get(h.handle)
        if blocked is not None and self._has_room(h, blocked[1]):
            del self._blocked[h.handle]
            events.append(Writable(h.handle))
        if not h.in_ready and h.sendable():
            h.in_ready = True
            self._ready.append(h)

    def _on_handle_frame(
        self,
        frame: Accept
        | Reject
        | Gap
        | End
        | Error
        | Cancel
        | Unsubscribe
        | UploadCancel
        | UploadAck
        | UploadResult
        | Streams,
        events: list[Event],
    ) -> None:
        inp = cast(Input, recv_input(frame.TYPE))
        h = self._lookup(frame.handle, inp)
        if h is None:
            return
        parts = _open_parts(h)  # ACCEPT and REJECT answer both directions of a bidi
        for part in parts if isinstance(frame, Accept | Reject) else (h,):
            self._recv_step(part, inp)
        match frame:
            case Accept():
                events.append(
                    RequestAccepted(
                        h.handle, frame.stream_id, frame.first_seq, frame.last_seq, frame.joined
                    )
                )
                for part in parts:
                    self._on_accept(part, frame)
            case Reject():
                for part in parts:
                    self._close_handle(part)
                events.append(RequestRejected(h.handle, frame.code, frame.message))
            case Gap():
                h = cast(_In, h)
                if frame.from_seq != h.expect or h.frag is not None:
                    raise _PeerFault(
                        ErrorCode.PROTOCOL_ERROR,
                        f"GAP from {frame.from_seq} on handle {h.handle}: expected {h.expect}",
                    )
                if h.state is HState.DRAINING and frame.to_seq > h.final_seq:
                    raise _PeerFault(ErrorCode.PROTOCOL_ERROR, "GAP past the final seq")
                h.expect = frame.to_seq + 1
                events.append(GapReceived(h.handle, frame.from_seq, frame.to_seq, frame.reason))
                if frame.reason is GapReason.OVERFLOW:
                    dropped = frame.to_seq - frame.from_seq + 1
                    events.append(OverflowWarning(h.handle, dropped, frame.from_seq, frame.to_seq))
                if h.state is HState.DRAINING:
                    self._maybe_delivered(h, events)
            case Error() if h.state is HState.CLOSED:  # an upload failed before ACCEPT
                self._close_handle(h)
                events.append(UploadFailed(h.handle, frame.code, frame.message, 0))
            case End() | Error():
                h = cast(_In, h)
                if frame.last_seq < h.expect - 1:
                    raise _PeerFault(
                        ErrorCode.PROTOCOL_ERROR,
                        f"final seq {frame.last_seq} is before {h.expect - 1}, already delivered",
                    )
                h.final_seq = frame.last_seq
                if h.frag is not None and frame.last_seq < h.expect:
                    h.frag = None  # the sender gave up the chunk half sent (ERROR policy)
                upload = h.side is Side.SERVER_UPLOAD
                if isinstance(frame, End):
                    h.final_event = (UploadEnded if upload else StreamEnded)(
                        h.handle, frame.last_seq
                    )
                elif upload:
                    h.final_event = UploadFailed(
                        h.handle, frame.code, frame.message, frame.last_seq
                    )
                else:
                    h.final_event = StreamFailed(
                        h.handle, frame.code, frame.message, frame.last_seq
                    )
                self._maybe_delivered(h, events)
            case Cancel():
                self._close_handle(h)
                events.append(CancelRequested(h.handle))
            case Unsubscribe():
                self._close_handle(h)
                events.append(Unsubscribed(h.handle))
            case UploadCancel():
                self._close_handle(h)
                events.append(UploadCancelled(h.handle, frame.code, frame.message))
            case UploadAck():
                up = cast(_Out, h).up  # only client uploads have RECV_UPLOAD_ACK
                kept = None if up is None else up.kept
                if kept is None or frame.seq > cast(_Out, h).sent_seq:
                    raise _PeerFault(
                        ErrorCode.PROTOCOL_ERROR,
                        f"UPLOAD_ACK of seq {frame.seq} on handle {h.handle}, which did not "
                        "send it resumable",
                    )
                while kept and kept[0][0] <= frame.seq:
                    kept.popleft()
            case UploadResult():
                self._close_handle(h)
                events.append(UploadCompleted(h.handle, frame.payload))
            case Streams():  # pragma: no branch - every other type has its own case
                self._close_handle(h)
                events.append(StreamsReceived(h.handle, frame.entries, frame.next))

    def _on_accept(self, h: _Out | _In, frame: Accept) -> None:
        if isinstance(h, _In):
            if h.tail:
                h.expect = frame.last_seq + 1
            return
        h.credit_chunks = frame.credit_chunks
        h.credit_bytes = frame.credit_bytes
        if h.credit_chunks > MAX_CREDIT or h.credit_bytes > MAX_CREDIT:
            raise _PeerFault(ErrorCode.FLOW_CONTROL_ERROR, "credit overflow in ACCEPT")
        if h.up is not None:
            h.up.stream_id = frame.stream_id
            h.up.accepted = True
            if h.up.resend_end:
                self._resumed(h, h.up, frame.first_seq)
        if not h.in_ready and h.sendable():
            h.in_ready = True
            self._ready.append(h)

    def _maybe_delivered(self, h: _In, events: list[Event]) -> None:
        if h.expect - 1 == h.final_seq and h.frag is None:
            final = cast(Event, h.final_event)
            if h.confirm and isinstance(final, UploadEnded):
                # Section 9.1: taken whole; UPLOAD_RESULT closes it, at once without RESULT.
                self._handle_step(h, Input.AWAIT_RESULT)
                events.append(final)
                if h.confirm == 1:
                    self.send_upload_result(h.handle)
                return
            self._handle_step(h, Input.DRAINED)
            events.append(final)
            self._close_handle(h)

    def _resumed(self, h: _Out, up: _Up, first_seq: int) -> None:
        """The ACCEPT of a resume: send again what the server lacks (R-UPR-5)."""
        kept = cast(deque[tuple[int, bytes]], up.kept)
        end = up.resend_end
        up.resend_end = 0
        first = kept[0][0] if kept else end
        if not first <= first_seq <= end:
            raise _PeerFault(
                ErrorCode.PROTOCOL_ERROR,
                f"a resume from seq {first_seq} on handle {h.handle}: the client holds "
                f"{first}..{end - 1}",
            )
        while kept and kept[0][0] < first_seq:
            kept.popleft()
        again = [entry for entry in kept if entry[0] < end]
        total = sum(len(chunk) for _, chunk in again)
        h.queue = deque(chain(again, h.queue))
        h.q_chunks += len(again)
        h.q_bytes += total
        self._queued_bytes += total
        h.sent_seq = first_seq - 1
        if up.ended:
            self.send_end(h.handle)

    def _on_request(self, frame: Subscribe | Open | Upload | Query, events: list[Event]) -> None:
        if self._role is Role.CLIENT:
            raise _PeerFault(ErrorCode.PROTOCOL_ERROR, "a server cannot send requests")
        handle = frame.handle
        self._conn_step(ConnInput.RECV_REQUEST)
        if handle <= self._highest:
            raise _PeerFault(
                ErrorCode.INVALID_HANDLE, f"request handle {handle} is not above {self._highest}"
            )
        self._highest = handle
        if isinstance(frame, Query):
            self._on_query(frame, events)
            return
        if isinstance(frame, Upload):
            h_in = self._new_upload(handle)
            # Flags of section 9.1 mean something only if announced; else ignored (R-FWD-2).
            on = bool(self._features & Feature.UPLOAD_RESUME)
            resumable, result = frame.resumable and on, frame.result and on
            h_in.resume = frame.resume and resumable
            h_in.confirm = 2 if result else int(resumable)
            h_in.acked = 0 if resumable else -1
            if not self._admit(frame, h_in, self._uploads >= self._cfg.max_uploads):
                return
            self._uploads += 1
            events.append(
                UploadRequested(
                    handle,
                    frame.channel,
                    frame.stream_id,
                    frame.args,
                    resumable,
                    result,
                    h_in.resume,
                )
            )
            return
        if frame.credit_chunks > MAX_CREDIT or frame.credit_bytes > MAX_CREDIT:
            raise _PeerFault(ErrorCode.FLOW_CONTROL_ERROR, "initial credit above 2^31-1")
        h = _Out(handle, Side.SERVER_SUBSCRIPTION, frame.credit_chunks, frame.credit_bytes)
        h.policy = frame.policy
        h.weight = frame.priority + 1
        over = self._subs >= self._cfg.max_subscriptions
        bidi = isinstance(frame, Open) and frame.bidi
        if bidi:  # R-BIDI-2: the upstream counts as an upload too
            h.twin = self._new_upload(handle)
            h.twin.twin = h
            over = over or self._uploads >= self._cfg.max_uploads
        if not self._admit(frame, h.twin or h, over):
            return
        self._subs += 1
        self._uploads += bidi
        if isinstance(frame, Subscribe):
            h.next_seq = 0 if frame.tail else frame.after_seq + 1
            after = None if frame.tail else frame.after_seq
            events.append(
                SubscribeRequested(
                    handle, frame.channel, frame.stream_id, after, frame.policy, frame.priority
                )
            )
        else:
            events.append(
                OpenRequested(
                    handle,
                    frame.channel,
                    frame.stream_id,
                    frame.args,
                    frame.policy,
                    frame.priority,
                    frame.join,
                    frame.bidi,
                )
            )

    def _new_upload(self, handle: int) -> _In:
        h = _In(handle, Side.SERVER_UPLOAD, self._cfg.window_chunks, self._cfg.window_bytes)
        h.credit_chunks = h.credit_bytes = 0  # nothing until ACCEPT grants the window
        return h

    def _on_query(self, frame: Query, events: list[Event]) -> None:
        handle = frame.handle
        if not self._admit(frame, _In(handle, Side.SERVER_QUERY, 0, 0), False):
            return
        if frame.op is QueryOp.STATUS:
            events.append(StatusRequested(handle, frame.channel, frame.stream_id))
        elif frame.op is QueryOp.LIST:
            limit = frame.limit
            events.append(
                ListRequested(handle, frame.channel, frame.stream_id, frame.states, limit)
            )
        else:
            events.append(DeleteRequested(handle, frame.channel, frame.stream_id))

    def _admit(
        self, frame: Subscribe | Open | Upload | Query, h: _Out | _In, over_limit: bool
    ) -> bool:
        """Reject what the core can judge alone; else register the handle."""
        code: ErrorCode | None = None
        if self._state is ConnState.DRAINING:
            code, why = ErrorCode.SERVER_SHUTDOWN, "the connection is going away"
        elif not valid_channel(frame.channel):
            code, why = ErrorCode.INVALID_NAME, "invalid channel name"
        elif (
            frame.stream_id
            or isinstance(frame, Subscribe)
            or (isinstance(h, _In) and h.resume)  # a resume names its upload
            or (isinstance(frame, Query) and frame.op is not QueryOp.LIST)
        ) and not valid_stream_id(frame.stream_id):
            code, why = ErrorCode.INVALID_NAME, "invalid stream id"
        elif over_limit:
            code, why = ErrorCode.LIMIT_EXCEEDED, "too many open requests on this connection"
        elif isinstance(frame, Open) and frame.bidi and frame.join:
            code, why = ErrorCode.NOT_ALLOWED, "a bidirectional OPEN cannot join (R-BIDI-1)"
        if code is not None:
            self._control.append(encode(Reject(frame.handle, code, why)))
            return False
        self._handles[frame.handle] = h
        return True

    def _on_hello(self, frame: Hello, events: list[Event]) -> None:
        if self._role is Role.CLIENT:
            raise _PeerFault(ErrorCode.PROTOCOL_ERROR, "a server cannot send HELLO")
        self._conn_step(ConnInput.RECV_HELLO)
        if not frame.min_version <= PROTOCOL_VERSION <= frame.max_version:
            raise _PeerFault(
                ErrorCode.UNSUPPORTED_VERSION,
                f"client speaks {frame.min_version}..{frame.max_version}, not {PROTOCOL_VERSION}",
            )
        self._apply_peer_settings(frame.settings)
        # The server's interval binds; a client may only ask for a shorter one.
        proposed = _keepalive_ms(dict(frame.settings).get(Setting.KEEPALIVE_MS, 0)) / 1000
        own = self._cfg.keepalive
        self._keepalive = min(own, proposed) if own and proposed else own
        events.append(
            HandshakeRequested(PROTOCOL_VERSION, frame.settings, frame.resume_token, frame.auth)
        )

    def _on_welcome(self, frame: Welcome, events: list[Event]) -> None:
        if self._role is Role.SERVER:
            raise _PeerFault(ErrorCode.PROTOCOL_ERROR, "a client cannot send WELCOME")
        self._conn_step(ConnInput.RECV_WELCOME)
        if frame.version != PROTOCOL_VERSION:
            raise _PeerFault(ErrorCode.UNSUPPORTED_VERSION, f"server chose version {frame.version}")
        self._apply_peer_settings(frame.settings)
        self._keepalive = self._peer_settings[Setting.KEEPALIVE_MS] / 1000
        self._start_keepalive()
        events.append(
            HandshakeCompleted(
                frame.version, frame.session_id, frame.resume_token, frame.resumed, frame.settings
            )
        )

    def _apply_peer_settings(self, settings: Iterable[tuple[int, int]]) -> None:
        for key, value in settings:
            if key == Setting.MAX_FRAME_SIZE and value < MIN_MAX_FRAME_SIZE:
                raise _PeerFault(ErrorCode.PROTOCOL_ERROR, f"MAX_FRAME_SIZE {value} below 16384")
            if key == Setting.KEEPALIVE_MS:
                value = _keepalive_ms(value)
            if key in _DEFAULT_SETTINGS and not (
                self._role is Role.SERVER and key in _SERVER_SETTINGS
            ):
                self._peer_settings[key] = value
        self._frag_max = min(self._peer_settings[Setting.MAX_FRAME_SIZE], 1 << 24) - 8
        self._peer_max_chunk = self._peer_settings[Setting.MAX_CHUNK_SIZE]

    def _on_goaway(self, frame: Goaway, events: list[Event]) -> None:
        if self._state in (ConnState.AWAIT_HELLO, ConnState.HELLO_RECEIVED):
            self._terminate(frame.code, frame.message, True, events)
            return
        if self._state is ConnState.HANDSHAKING:
            self._conn_step(ConnInput.RECV_REFUSE)
            self._drop_all()
            events.append(HandshakeRefused(frame.code, frame.message))
            return
        if frame.code != ErrorCode.NO_ERROR:
            self._terminate(frame.code, frame.message, True, events)
            return
        self._conn_step(ConnInput.RECV_GOAWAY)
        self._goaway_by_peer = True
        events.append(GoawayReceived(frame.code, frame.last_handle, frame.message))
        if self._role is Role.CLIENT:
            # The server never saw the requests above last_handle and, draining, would reject
            # them with SERVER_SHUTDOWN if it is still there to: answer them now.
            for h in list(self._handles.values()):
                if h.handle > frame.last_handle and h.state is HState.REQUESTED:
                    for part in _open_parts(h):
                        self._close_handle(part)
                    events.append(
                        RequestRejected(h.handle, ErrorCode.SERVER_SHUTDOWN, "not processed")
                    )
        self._maybe_finish_draining(events)

    # -- helpers --------------------------------------------------------------------------------

    def _conn_step(self, inp: ConnInput, *, local: bool = False) -> None:
        new = CONNECTION_TRANSITIONS.get((self._state, inp))
        if new is None:
            why = f"{inp.value} is not allowed in {self._state.value}"
            if not local:
                raise _PeerFault(ErrorCode.PROTOCOL_ERROR, why)
            code = ErrorCode.CONNECTION_CLOSED
            if self._state not in (ConnState.CLOSED, ConnState.DRAINING):
                code = ErrorCode.INVALID_STATE
            raise LocalProtocolError(code, why)
        self._state = new

    def _handle_step(self, h: _Out | _In, inp: Input) -> None:
        new = HANDLE_TRANSITIONS[h.side].get((h.state, inp))
        if new is None:
            code = ErrorCode.INVALID_STATE
            if h.state in (HState.DRAINING, HState.FINISHING) and inp in (
                Input.SEND_DATA,
                Input.SEND_GAP,
                Input.SEND_END,
                Input.SEND_ERROR,
            ):
                code = ErrorCode.STREAM_CLOSED
            raise LocalProtocolError(
                code, f"{inp.value} is not allowed on {h.side.value} {h.handle} in {h.state.value}"
            )
        h.state = new

    def _require_role(self, role: Role) -> None:
        if self._role is not role:
            raise LocalProtocolError(ErrorCode.INVALID_STATE, f"only a {role.value} can do this")

    def _new_handle(self) -> int:
        self._require_role(Role.CLIENT)
        self._conn_step(ConnInput.SEND_REQUEST, local=True)
        if self._highest >= self._cfg.max_handle:
            raise LocalProtocolError(
                ErrorCode.HANDLE_EXHAUSTED, "no handles left: open a new connection"
            )
        self._highest += 1
        return self._highest

    def _open_request(self, h: _Out | _In, frame: Frame) -> None:
        self._handles[h.handle] = h
        self._control.append(encode(frame))

    def _check_names(self, channel: str, stream_id: str, *, allow_empty: bool) -> None:
        self._require_role(Role.CLIENT)
        if not valid_channel(channel):
            raise LocalProtocolError(ErrorCode.INVALID_NAME, f"invalid channel name {channel!r}")
        if (stream_id or not allow_empty) and not valid_stream_id(stream_id):
            raise LocalProtocolError(ErrorCode.INVALID_NAME, f"invalid stream id {stream_id!r}")

    def _window(self, chunks: int | None, nbytes: int | None) -> tuple[int, int]:
        chunks = self._cfg.window_chunks if chunks is None else chunks
        nbytes = self._cfg.window_bytes if nbytes is None else nbytes
        if not (0 <= chunks <= MAX_CREDIT and 0 <= nbytes <= MAX_CREDIT):
            raise LocalProtocolError(ErrorCode.INVALID_ARGUMENT, "credit must be in 0..2^31-1")
        return chunks, nbytes

    @staticmethod
    def _prio(priority: int) -> int:
        if not 0 <= priority <= 255:
            raise LocalProtocolError(ErrorCode.INVALID_ARGUMENT, "priority must be in 0..255")
        return priority

    def _leave(self, handle: int, inp: Input, frame: Cancel | Unsubscribe) -> None:
        self._require_role(Role.CLIENT)
        h = self._handles.get(handle)
        if h is None:
            self.handle_state(handle)  # raises for a handle never opened
            return
        h = _part(h, _RECEIVING)  # a bidirectional stream's downstream
        if h is None:
            return
        self._handle_step(h, inp)
        self._control.append(encode(frame))
        self._close_handle(h)

    def _server_handle(self, handle: int) -> _Out | _In | None:
        self._require_role(Role.SERVER)
        h = self._handles.get(handle)
        if h is None:
            self.handle_state(handle)
        return h

    def _sender(self, handle: int) -> _Out | None:
        h = self._handles.get(handle)
        if h is None:
            self.handle_state(handle)  # raises for a handle never opened
            return None
        if h.twin is not None:
            return cast("_Out | None", _part(h, _SENDING))
        if not isinstance(h, _Out):
            raise LocalProtocolError(ErrorCode.INVALID_STATE, f"handle {handle} does not send data")
        return h

    def _sending(self, handle: int) -> _Out | None:
        """The record that sends on ``handle``, a handle the hub opened to send on (a
        bidirectional one's sending direction): None once that direction is closed."""
        h = self._handles.get(handle)
        if h is not None and h.twin is not None:
            return cast("_Out | None", _part(h, _SENDING))
        return cast("_Out | None", h)

    def _has_room(self, h: _Out, size: int) -> bool:
        cfg = self._cfg
        # A half-sent head chunk (head_size > 0) took its credit when it started.
        credit_chunks = h.credit_chunks
        credit_bytes = h.credit_bytes
        beyond_chunks = h.q_chunks - (h.head_size > 0) - (credit_chunks if credit_chunks > 0 else 0)
        beyond_bytes = h.q_bytes - h.head_size + size - (credit_bytes if credit_bytes > 0 else 0)
        return (
            beyond_chunks < cfg.max_queued_chunks
            and beyond_bytes <= cfg.max_queued_bytes
            and self._queued_bytes + size <= cfg.max_connection_queued_bytes
        )

    def _drop_oldest(self, h: _Out, size: int) -> bool:
        """Drop the oldest whole queued chunks of ``h`` until ``size`` more bytes fit, and put
        one OVERFLOW gap for exactly the dropped seqs in their place. Returns whether the new
        chunk fits now (it may not when other handles fill the connection-wide cap)."""
        queue = h.queue
        keep: list[_Entry] = []
        if h.offset:  # the head chunk is half sent: it must finish
            keep.append(queue.popleft())
        gap_from = 0
        gap_to = 0
        while queue and not self._has_room(h, size):
            seq, item = queue.popleft()
            if isinstance(item, _GapMark):
                if gap_from == 0 and item.reason is not GapReason.OVERFLOW:
                    keep.append((seq, item))  # an EVICTED gap before the drops stays as it is
                else:  # an earlier overflow gap, or one between dropped chunks: merge
                    gap_from = gap_from or seq
                    gap_to = item.to_seq
                continue
            if gap_from == 0:
                gap_from = seq
            gap_to = seq
            h.q_bytes -= len(item)
            h.q_chunks -= 1
            self._queued_bytes -= len(item)
            self._chunks_dropped += 1
        if gap_from:
            if queue and isinstance(queue[0][1], _GapMark):  # merge with the gap that follows
                gap_to = queue.popleft()[1].to_seq  # type: ignore[union-attr]
            queue.appendleft((gap_from, _GapMark(gap_to, GapReason.OVERFLOW)))
        queue.extendleft(reversed(keep))
        return self._has_room(h, size)

    def _queue_gap(self, h: _Out, to_seq: int, reason: GapReason) -> None:
        queue = h.queue
        if queue is _NO_QUEUE:
            queue = h.queue = deque()
        last = queue[-1][1] if queue else None
        if isinstance(last, _GapMark) and last.reason is reason:
            last.to_seq = to_seq  # it ends just before next_seq: extend it
        else:
            queue.append((h.next_seq, _GapMark(to_seq, reason)))
        h.next_seq = to_seq + 1
        if not h.in_ready:
            h.in_ready = True
            self._ready.append(h)

    def _fail_sender(self, h: _Out) -> None:
        """The ERROR policy: the subscription fails with RESOURCE_EXHAUSTED, queue dropped."""
        self._handle_step(h, Input.SEND_ERROR)
        self._control.append(
            encode(Error(h.handle, ErrorCode.RESOURCE_EXHAUSTED, h.sent_seq, "subscriber too slow"))
        )
        h.offset = 0
        self._handle_step(h, Input.DRAINED)
        self._close_handle(h)  # discards the queue

    def _maybe_drained(self, h: _Out) -> None:
        if not h.queue:
            self._sender_drained(h)

    def _sender_drained(self, h: _Out) -> None:
        """A DRAINING sender sent its last queued entry: closed, unless it is an upload that
        ended and waits for its UPLOAD_RESULT (R-UPR-7)."""
        if h.up is not None and h.up.ended:
            self._handle_step(h, Input.AWAIT_RESULT)
            return
        self._handle_step(h, _DRAINED)
        self._close_handle(h)

    def _close_handle(self, h: _Out | _In) -> None:
        """Forget an open handle, or one direction of a bidirectional one (every caller holds
        a record that was open; a bidi's second record may be unregistered)."""
        h.state = HState.CLOSED
        handles = self._handles
        if handles.get(h.handle) is h:
            twin = h.twin
            if twin is not None and twin.state is not _H_CLOSED:
                handles[h.handle] = twin  # a half-close: the other direction runs on
            else:
                del handles[h.handle]
        if isinstance(h, _Out):
            self._blocked.pop(h.handle, None)
            freed = h.q_bytes
            self._queued_bytes -= freed
            h.q_bytes = h.q_chunks = 0
            h.queue.clear()
            if freed and self._blocked:  # room under the connection-wide cap
                self._wake_writers(self._pending)
            if h.side is Side.SERVER_SUBSCRIPTION:
                self._subs -= 1
        elif h.side is Side.SERVER_UPLOAD:
            self._uploads -= 1
        self._maybe_finish_draining()

    def _maybe_finish_draining(self, events: list[Event] | None = None) -> None:
        if self._state is ConnState.DRAINING and not self._handles:
            self._conn_step(ConnInput.DRAINED)
            event = ConnectionTerminated(ErrorCode.NO_ERROR, "drained", self._goaway_by_peer)
            (events if events is not None else self._pending).append(event)

    def _start_keepalive(self) -> None:
        self._ka_deadline = self._now + self._keepalive if self._keepalive > 0 else None

    def _drop_all(self) -> None:
        for h in list(self._handles.values()):
            point = self._resume_point(h)
            if point is not None:
                self._suspended[h.handle] = point
            h.state = HState.CLOSED
            if h.twin is not None:
                h.twin.state = HState.CLOSED
        self._handles.clear()
        self._ready.clear()
        self._blocked.clear()
        self._queued_bytes = 0
        self._subs = self._uploads = 0

    def _terminate(self, code: int, message: str, by_peer: bool, events: list[Event]) -> None:
        """The connection is over without this side sending anything more."""
        self._conn_step(ConnInput.FAIL)
        self._drop_all()
        events.append(ConnectionTerminated(code, message, by_peer))

    def _fail(self, code: ErrorCode, message: str, events: list[Event]) -> None:
        """The peer broke the protocol (or a timer expired): GOAWAY with the code, then over."""
        self._control.append(encode(Goaway(code, self._highest, _truncate(message))))
        self._terminate(code, message, False, events)
