"""What the three backends share: everything that needs no I/O and no particular event loop.

Rules for this file:

1. The backends are "loop + lock + clock": they move bytes, sleep until a deadline and wake
   waiters. Every decision — credit, keepalive, replay, resume, backoff, which iterator gets
   which chunk — is made here or in the sans-IO core, once.
2. Waking is a callback (``notify``) each backend maps to its own primitive (asyncio.Event,
   trio.Event, threading.Condition); nothing here blocks.
3. Client-side buffers are bounded by the credit window: the client connection runs with
   ``auto_credit=False`` and credit is returned as the application takes chunks (in batches,
   always before it would wait for more).
"""

from __future__ import annotations

import abc
import contextlib
import enum
import functools
import inspect
import logging
import random
import sys
from collections import deque
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Sequence,
)
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, Literal, Protocol, Self, TypeVar, cast, overload

import attrs

from streamproto import (
    AbortReason,
    Authorize,
    Channel,
    ChannelOptions,
    Codec,
    Config,
    Connection,
    ConnectionTerminated,
    ConnState,
    DataReceived,
    DecodeError,
    Direction,
    ErrorCode,
    Event,
    GapReason,
    GapReceived,
    GoawayReceived,
    HandshakeCompleted,
    HandshakeRefused,
    HandshakeRequested,
    HState,
    Hub,
    LocalProtocolError,
    Overflow,
    OverflowPolicy,
    OverflowWarning,
    Peer,
    Producer,
    ProducerStatistics,
    RequestAccepted,
    RequestRejected,
    Role,
    StreamEnded,
    StreamEntry,
    StreamFailed,
    StreamProtoError,
    StreamsReceived,
    StreamState,
    UploadCancelled,
    UploadCompleted,
    UploadReader,
    UploadResumePoint,
    Writable,
    WriteResult,
    handler_failure,
    is_retryable,
)
from streamproto._frames import QueryOp
from streamproto._http import HttpOptions
from streamproto._overflow import OverflowLog, held_back

from ._framing import Framing
from ._hubs import new_hub
from ._log import ConnectionLog, client_log, describe, log_events, next_conn_id, server_log
from ._schemes import Url, parse_url
from .metrics import ConnectionInfo, ServerStatistics
from .trace import FrameTap, Tracer

__all__ = [
    "FLUSH_SLICE",
    "AsyncBidiBase",
    "AsyncProducerBase",
    "AsyncQueries",
    "Backoff",
    "BidiBase",
    "Bidis",
    "ClientBase",
    "ClientCore",
    "ClientStatistics",
    "ConnectionClosed",
    "ConnectionLost",
    "Gap",
    "GapError",
    "ProducerBase",
    "QueryCore",
    "QueryRequest",
    "ServerBase",
    "ServerDriver",
    "ServerUploadBase",
    "Side",
    "Stepping",
    "StreamError",
    "StreamPage",
    "SubscriptionBase",
    "SubscriptionCore",
    "UploadBase",
    "UploadCore",
    "Uploads",
    "Url",
    "handler_failed",
    "parse_url",
    "read_upload",
    "server_config",
]

log = logging.getLogger("streamproto.transports")

#: Overflows a subscription keeps for ``recent_overflows``.
RECENT_OVERFLOWS = 16
_CLOSED = HState.CLOSED

GapMode = Literal["raise", "item"]


# -- errors and items ---------------------------------------------------------------------------


class StreamError(StreamProtoError):
    """A subscription or upload ended with an error: rejected, failed by its producer,
    cancelled by the server, or lost with its connection. ``code`` says which.

    Raise ``StreamError(code, message)`` in an open handler (a generator, a piped source)
    to fail its stream with that code (an application code, 1000-65535), or in an upload
    handler to cancel the upload with it: see :func:`streamproto.handler_failure`."""


class ConnectionLost(StreamError):
    """The connection is gone and could not be resumed (CONNECTION_LOST)."""


class ConnectionClosed(StreamError):
    """The application closed the client (CONNECTION_CLOSED, not retryable): what is still
    open on it ends with this, and new requests raise it."""


class GapError(StreamError):
    """Raised by a subscription iterator (``on_gap="raise"``) when seqs ``from_seq..to_seq``
    will never arrive (code CHUNKS_MISSING; ``reason`` says why: evicted or overflow).
    Iteration may continue after it."""

    def __init__(self, from_seq: int, to_seq: int, reason: GapReason) -> None:
        super().__init__(
            ErrorCode.CHUNKS_MISSING,
            f"seqs {from_seq}..{to_seq} are missing ({reason.name.lower()})",
        )
        self.from_seq = from_seq
        self.to_seq = to_seq
        self.reason = reason


@attrs.frozen
class ClientStatistics:
    """A client's counters since it was made (``client.statistics()``, a snapshot)."""

    #: Chunks received, over every connection.
    chunks: int
    #: Gaps received (evicted or overflow), each counted once.
    gaps: int
    #: Overflow warnings: gaps of chunks the server dropped because a subscription fell behind.
    overflows: int
    #: Connections made after the first one.
    reconnects: int
    #: Reconnections that resumed the session (its subscriptions went on where they were).
    resumed: int


@attrs.frozen
class Gap:
    """Yielded by a subscription iterator (``on_gap="item"``) in place of missing seqs."""

    from_seq: int
    to_seq: int
    reason: GapReason


# -- backoff ---------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Backoff:
    """Reconnect policy: exponential backoff with full jitter, bounded attempts.

    Attempt ``n`` (from 0) waits a uniform random time in ``[0, min(maximum, initial *
    factor**n)]``. ``attempts=0`` disables reconnecting.
    """

    initial: float = 0.05
    factor: float = 2.0
    maximum: float = 5.0
    attempts: int = 8

    def delay(self, attempt: int, rng: random.Random) -> float:
        """How long to wait before attempt ``attempt``."""
        return rng.uniform(0, min(self.maximum, self.initial * self.factor**attempt))


NO_RECONNECT = Backoff(attempts=0)
#: Chunks a subscription takes before it reports them to its connection (at the latest).
_CREDIT_BATCH = 32


#: A producer yields to its event loop once it wrote this many chunks or bytes since it last
#: did (see :class:`Pacer`).
YIELD_CHUNKS = 512
YIELD_BYTES = 256 << 10


class Pacer:
    """When an async producer that is never blocked should yield to its loop.

    Without yielding it would hold the loop until it is blocked, and the connection's flush
    runs only when the loop gets control: nothing goes out while it writes, then everything at
    once, and both ends take turns idling. Yielding after every write costs as much the other
    way (one small flush per chunk). Every ``YIELD_CHUNKS`` chunks or ``YIELD_BYTES`` bytes,
    whichever comes first, measured best for asyncio and trio (docs/performance.md)."""

    __slots__ = ("chunks", "nbytes")

    def __init__(self) -> None:
        self.chunks = 0
        self.nbytes = 0

    def due(self, chunks: int, nbytes: int) -> bool:
        """Count a write of ``chunks`` chunks and ``nbytes`` bytes; True when it is time to
        yield (and the count starts again)."""
        self.chunks += chunks
        self.nbytes += nbytes
        if self.chunks >= YIELD_CHUNKS or self.nbytes >= YIELD_BYTES:
            self.chunks = self.nbytes = 0
            return True
        return False


#: Data bytes a writer takes from the core per write (R-SCHED-3 in the adapters). The next
#: slice is taken once the transport took this one (trio's ``send_all`` and the threads'
#: ``sendall`` returned, asyncio's buffer is below its high-water mark), so under contention the
#: data waits in the core, whose weighted round robin picks what goes next, instead of in a
#: transport buffer in the order it was written. Without contention the slices follow each
#: other at once.
FLUSH_SLICE = 256 << 10


def server_config(config: Config | None) -> Config:
    """A server connection's config: upload credit returns as the reader reads, so an
    upload nobody reads stalls at its window instead of filling memory."""
    return attrs.evolve(config or Config(), auto_credit=False)


class Side(Protocol):
    """One socket's sans-IO side, as a backend drives it (:class:`ServerDriver`,
    :class:`ClientCore`): socket bytes in with ``receive``; after every call and whenever
    woken, and at ``deadline()``, write ``step()``; close the socket once ``finished``."""

    def receive(self, data: bytes) -> None: ...

    def step(self, max_bytes: int | None = None) -> bytes: ...

    def deadline(self) -> float | None: ...

    def output_blocked(self, flag: bool) -> None: ...

    @property
    def finished(self) -> bool: ...

    @property
    def stalled(self) -> bool: ...

    @property
    def reading(self) -> bool:
        """Whether to read the socket now (an HTTP upload beyond its credit says no); the
        side wakes its writer when this may have changed."""
        ...


def always_reads(side: object) -> bool:
    """Whether ``side`` reads all the time (its class says ``reading = True``): a backend then
    needs no gate that pauses reading for it (only an HTTP socket's side has one)."""
    return getattr(type(side), "reading", True) is True


# -- server -------------------------------------------------------------------------------------

#: States in which GOAWAY(NO_ERROR) is allowed (the core refuses it during the handshake).
_DRAINABLE = (ConnState.OPEN, ConnState.DRAINING)


def handler_failed(target: Producer | UploadReader, exc: BaseException) -> None:
    """A handler the backend ran as a task or thread raised: what the hub does for handlers
    that raise while it calls them, so the requester gets an answer instead of a hang. An
    exception carrying a code (``StreamError(code, message)``) fails the stream with it
    (:func:`streamproto.handler_failure`); any other, with HANDLER_FAILED."""
    if isinstance(target, Producer) and target.aborted:
        # The abort finished the stream; a handler that wrote on (its write raised
        # STREAM_CLOSED) or ended badly after it has nothing left to report to anyone.
        log.debug("handler of %s stopped after the abort: %r", target.channel, exc)
        return
    code, message = handler_failure(exc)
    if code == ErrorCode.HANDLER_FAILED:
        log.error("handler of %s failed", target.channel, exc_info=exc)
    else:  # the application chose to end the stream this way: not a bug to log loudly
        log.info("handler of %s failed the stream: %s", target.channel, describe(code, message))
    if isinstance(target, Producer):
        if not target.closed:
            target.fail(code, message)
    else:
        target.cancel(code, message)


def read_upload(reader: UploadReader) -> bytes | None:
    """The next chunk of an upload, or None: wait for ``on_readable``, unless ``outcome``
    says the upload ended well. Raises :class:`StreamError` with the outcome's code
    (UPLOAD_DISCONNECTED, the uploader's own code, ...) once the chunks before it were read."""
    chunk = reader.read_nowait()
    if chunk is None and reader.outcome is not None and reader.outcome[0] != 0:
        raise StreamError(*reader.outcome)
    return chunk


def fail_on_violation(framing: Framing, conn: Connection) -> list[Event]:
    """A peer that broke the transport's rules (a WebSocket text message) gets a connection
    error PROTOCOL_ERROR: its GOAWAY goes out before the framing closes (spec R-TR-4).
    Returns the connection's events, to be handled at once, like those of input."""
    if framing.violation is None or conn.closed:
        return []
    conn.goaway(ErrorCode.PROTOCOL_ERROR, framing.violation)
    return conn.take_events()


class OutputGuard:
    """Whether a connection's output has stalled (R-LIM-20): the backend reports when its
    transport stops taking bytes (above its high-water mark, a send that does not return) and
    when it takes them again; stalled for ``timeout`` seconds running, the connection ends."""

    __slots__ = ("since", "timeout")

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.since: float | None = None

    def blocked(self, flag: bool, now: float) -> None:
        """The transport stopped (True) or resumed (False) taking output, at ``now``."""
        if not flag:
            self.since = None
        elif self.since is None:
            self.since = now

    def deadline(self) -> float | None:
        """When the stall becomes fatal (None: not stalled)."""
        return None if self.since is None else self.since + self.timeout


class Stepping(abc.ABC):
    """What a side does when its backend asks for output (``step``): run its timers if they
    are due, then hand over ``outgoing``. Shared by every side: server, client and HTTP."""

    clock: Callable[[], float]

    @abc.abstractmethod
    def deadline(self) -> float | None:
        """When ``timer`` must run next."""

    @abc.abstractmethod
    def timer(self) -> None:
        """Run the timers that are due."""

    @abc.abstractmethod
    def outgoing(self, max_bytes: int | None = None) -> bytes:
        """Socket bytes to write now (about ``max_bytes`` of data; None: all there is)."""

    def step(self, max_bytes: int | None = None) -> bytes:
        """Run the timers if they are due, then ``outgoing(max_bytes)``."""
        deadline = self.deadline()
        if deadline is not None and self.clock() >= deadline:
            self.timer()
        return self.outgoing(max_bytes)


class ServerDriver(Stepping):
    """One accepted socket on the server: framing, a server Connection and its hub Peer.

    The backend calls ``receive`` with socket bytes, writes ``outgoing()`` after every call and
    whenever ``wakeup`` fires, arms a timer for ``deadline()`` and calls ``timer()``; it closes
    the socket when ``finished`` is true.
    """

    def __init__(
        self,
        hub: Hub,
        framing: Framing,
        config: Config,
        clock: Callable[[], float],
        wakeup: Callable[[], None],
        *,
        trace: Tracer | None = None,
    ) -> None:
        self.framing = framing
        self.clock = clock
        self.opened_at = clock()
        self.conn = Connection(Role.SERVER, config, now=self.opened_at)
        #: This connection's id in logs, traces, statistics and the hub's registry.
        self.id = next_conn_id()
        self.peer: Peer = hub.attach(self.conn, wakeup, peer_id=self.id)
        self.log = ConnectionLog(server_log, self._ids)
        self.tap = None if trace is None else FrameTap(trace, self.id)
        #: Transport bytes in and out (framing included).
        self.bytes_in = self.bytes_out = 0
        self.log.debug("connection accepted")
        self.hub = hub
        self.close_code = int(ErrorCode.NO_ERROR)
        self.close_reason = ""
        self._flushing = False
        self.guard = OutputGuard(config.output_stall_timeout)
        #: The connection ended because its output stalled: close the transport at once
        #: (the goodbye cannot reach a peer that does not read).
        self.stalled = False

    def _ids(self) -> tuple[str, str]:
        session = self.peer.session
        return self.id, "" if session is None else session.id

    #: A streamproto connection always reads: its credit bounds what the peer may send.
    reading = True

    def _handle(self, events: list[Event]) -> None:
        log_events(self.log, events)
        handshake = False
        for event in events:
            if isinstance(event, ConnectionTerminated):
                self.close_code = event.code
                self.close_reason = event.message
            elif isinstance(event, HandshakeRequested):
                handshake = True
        self.peer.handle_events(events)
        if handshake and self.conn.state is ConnState.OPEN:
            self.log.info("connection open")

    def output_blocked(self, flag: bool) -> None:
        """The transport stopped (True) or resumed (False) taking output."""
        self.guard.blocked(flag, self.clock())

    def _check_output(self) -> None:
        deadline = self.guard.deadline()
        if deadline is not None and self.clock() >= deadline and not self.conn.closed:
            self.stalled = True
            self.close_code = int(ErrorCode.EXCESSIVE_LOAD)
            self.log.warning("output stalled for %g s: closing", self.guard.timeout)
            self.conn.goaway(
                ErrorCode.EXCESSIVE_LOAD, f"output stalled for {self.guard.timeout:g} s"
            )
            self._handle(self.conn.take_events())

    def receive(self, data: bytes) -> None:
        """Socket bytes in; ``b""`` for end of input."""
        if self.guard.since is not None:  # a peer that sends and does not read
            self._check_output()
        self.bytes_in += len(data)
        payload = self.framing.receive(data)
        if payload:
            if self.tap is not None:
                self.tap.received(payload)
            self._handle(self.conn.receive_data(payload))
        if violated := fail_on_violation(self.framing, self.conn):
            self._handle(violated)
        if self.framing.closed and not self.conn.closed:
            self._handle(self.conn.receive_data(b""))

    def outgoing(self, max_bytes: int | None = None) -> bytes:
        """Socket bytes to write now: every control frame and about ``max_bytes`` of data
        (None: all that credit allows), in the core's weighted order (R-SCHED-3)."""
        if self._flushing:
            # Re-entered by a wakeup from the hub while the events below are handled (the
            # thread adapter flushes inline): the outer call returns everything in order, and
            # the close last, so no close can overtake the last data.
            return b""
        self._flushing = True
        try:
            # Sending can free room (Writable) and the hub's answer to that can queue more.
            conn, wrap, tap = self.conn, self.framing.wrap, self.tap
            payload = conn.data_to_send(max_bytes)
            parts = [wrap(payload)]
            if tap is not None:
                tap.sent(payload)
            while events := conn.take_events():
                self._handle(events)
                if max_bytes is not None:
                    max_bytes = max(0, max_bytes - len(payload))
                payload = conn.data_to_send(max_bytes)
                parts.append(wrap(payload))
                if tap is not None:
                    tap.sent(payload)
            if conn.closed and not self.framing.closed:
                parts.append(self.framing.close(self.close_code))
        finally:
            self._flushing = False
        out = b"".join(parts)
        self.bytes_out += len(out)
        return out

    def deadline(self) -> float | None:
        """When ``timer`` must run next."""
        deadline, stall = self.conn.next_deadline(), self.guard.deadline()
        if stall is None or (deadline is not None and deadline < stall):
            return deadline
        return stall

    def timer(self) -> None:
        """Run the connection's timers."""
        self._check_output()
        self._handle(self.conn.handle_timer(self.clock()))

    def connection_lost(self) -> None:
        """The socket is closed: make sure the hub knows the connection is gone (sessions
        park, uploads fail with UPLOAD_DISCONNECTED), however the connection ended."""
        if not self.conn.closed:
            self.receive(b"")
        if not self.peer.closed:
            # A connection closed by a local non-zero GOAWAY emits no ConnectionTerminated.
            self._handle([ConnectionTerminated(self.close_code, "the transport closed", False)])
        self.log.info("connection closed: %s", describe(self.close_code, self.close_reason))

    @property
    def handshaking(self) -> bool:
        """True until the handshake is over (counted against ``max_pending_handshakes``)."""
        return self.conn.state in _HANDSHAKING

    def shutdown(self, code: int = ErrorCode.NO_ERROR) -> None:
        """GOAWAY: NO_ERROR drains open streams; another code closes now (as NO_ERROR does
        before the handshake is over: there is nothing to drain yet)."""
        if code == ErrorCode.NO_ERROR and self.conn.state not in _DRAINABLE:
            code = ErrorCode.SERVER_SHUTDOWN
        if not self.conn.closed:
            self.conn.goaway(code, "server shutting down")
            self.close_code = code
            self.close_reason = "server shutting down"
            self._handle(self.conn.take_events())

    @property
    def finished(self) -> bool:
        """True when the socket should be closed (after writing ``outgoing()``)."""
        return self.conn.closed or self.framing.closed


class RefusingDriver(ServerDriver):
    """An accepted socket over the server's caps (R-TR-20): it answers the client's HELLO
    (after the WebSocket upgrade) with GOAWAY SERVER_BUSY and closes. The hub never sees it;
    the handshake timeout bounds a socket that never sends HELLO."""

    def __init__(self, framing: Framing, config: Config, clock: Callable[[], float]) -> None:
        self.framing = framing
        self.clock = clock
        self.conn = Connection(Role.SERVER, config, now=clock())
        self.id = next_conn_id()
        self.tap = None
        self.bytes_in = self.bytes_out = 0
        self.close_code = int(ErrorCode.SERVER_BUSY)
        self.close_reason = "the server is busy"
        self.guard = OutputGuard(config.output_stall_timeout)
        self.stalled = False
        self._flushing = False

    def _handle(self, events: list[Event]) -> None:
        # Answering the HELLO rather than at once: the client's bytes are read by then, so
        # the close is a FIN after the GOAWAY, not a reset that may discard it.
        if any(isinstance(event, HandshakeRequested) for event in events):
            self.conn.refuse_handshake(ErrorCode.SERVER_BUSY, "the server is busy")

    def connection_lost(self) -> None:
        """Nothing to tell the hub."""


_HANDSHAKING = (ConnState.AWAIT_HELLO, ConnState.HELLO_RECEIVED)


# -- client -------------------------------------------------------------------------------------


class _Outcome(enum.Enum):
    ENDED = "ended"


class _Run:
    """The chunks of one DataReceived (seqs ``seq, seq + 1, ...``), handed out from ``pos``:
    buffering a run costs the same for one chunk or a thousand."""

    __slots__ = ("chunks", "pos", "seq")

    def __init__(self, seq: int, chunks: tuple[bytes, ...]) -> None:
        self.seq = seq
        self.chunks = chunks
        self.pos = 0


class SubscriptionCore:
    """The shared state of one client subscription (or opened stream) and its iterator."""

    #: A client reads all the time: its credit bounds what the server may send.
    reading = True

    def __init__(
        self,
        core: ClientCore,
        channel: str,
        stream_id: str,
        *,
        after_seq: int,
        tail: bool,
        open_args: bytes | None,
        policy: OverflowPolicy,
        priority: int,
        on_gap: GapMode,
        join: bool = False,
    ) -> None:
        self.core = core
        self.channel = channel
        self.stream_id = stream_id
        self.tail = tail
        self.open_args = open_args
        self.join = join
        self.joined = False  # the OPEN joined a running stream (ACCEPT flag JOINED)
        self.policy = policy
        self.priority = priority
        self.on_gap = on_gap
        self.received_seq = after_seq  # last seq received into the buffer
        self.seq = after_seq  # seq of the last chunk handed to the application
        self.buffer: deque[_Run | Gap] = deque()
        self.outcome: _Outcome | StreamError | None = None
        self.handle = 0
        self.conn_serial = 0
        self.accepted = False
        self.closed = False
        self.cancelled = False  # cancel() dropped the buffer: a taken slice is dropped too
        # Chunks taken but not yet reported to the connection (credit is returned in batches),
        # and the last seq that came over an earlier connection (its credit died with it).
        self.owed_chunks = 0
        self.owed_bytes = 0
        self.stale_seq = after_seq
        self.reported = False  # consumption was reported: the connection has CREDIT to send
        self.notify: Callable[[], None] = lambda: None
        self.overflows = 0
        self.recent_overflows: deque[Overflow] = deque(maxlen=RECENT_OVERFLOWS)
        self.on_overflow: Callable[[Overflow], None] | None = None
        self._overflow_log = OverflowLog()
        #: Decodes payloads into values (``decoded(codec)``); None hands out bytes.
        self.codec: Codec[Any] | None = None
        # An error met while a batch was filled, raised on the next poll: (error, its seq).
        self._pending: tuple[StreamProtoError, int] | None = None

    @property
    def buffered(self) -> int:
        """Chunks received and not handed out yet (gaps not counted)."""
        return sum(len(i.chunks) - i.pos for i in self.buffer if isinstance(i, _Run))

    def take_many(self, limit: int) -> list[bytes | Gap]:
        """Up to ``limit`` items in order: payloads, and gaps under ``on_gap="item"``. Under
        ``on_gap="raise"`` a gap ends the batch before it; one at the head raises
        :class:`GapError`. Returns their credit as :meth:`poll` would for each."""
        buffer = self.buffer
        out: list[bytes | Gap] = []
        stale_seq = self.stale_seq
        while buffer and limit > 0:
            head = buffer[0]
            if isinstance(head, Gap):
                if self.on_gap != "item" and out:
                    break
                buffer.popleft()
                self.seq = head.to_seq
                if self.on_gap != "item":
                    self._report()
                    raise GapError(head.from_seq, head.to_seq, head.reason)
                out.append(head)
                limit -= 1
                continue
            chunks = head.chunks
            pos = head.pos
            end = min(len(chunks), pos + limit)
            part = chunks[pos:end]  # (the whole tuple itself when that is all of it)
            out += part
            limit -= end - pos
            last = head.seq + end - 1
            if last > stale_seq:  # (a run is all stale or all fresh: lost() ends at a run)
                self.owed_chunks += len(part)
                self.owed_bytes += sum(map(len, part))
            self.seq = last
            head.pos = end  # (also when it leaves: a slice being handed out sees it moved)
            if end == len(chunks):
                buffer.popleft()
        if self.owed_chunks and (not buffer or self.owed_chunks >= _CREDIT_BATCH):
            self._report()
        return out

    def _report(self) -> None:
        if self.owed_chunks:
            self.core._consume(self, self.owed_chunks, self.owed_bytes)
            self.owed_chunks = self.owed_bytes = 0
            self.reported = True

    def poll(self) -> bytes | Gap | None:
        """What an iterator hands out next: a payload, or a Gap under ``on_gap="item"``.
        None when there is nothing: stop if ``finished``, else wait for ``notify``. Raises
        :class:`GapError` for a gap under ``on_gap="raise"``, and the stream's error once
        every chunk before it was handed out. Returns the chunk's credit (in batches:
        ``reported`` says when it did)."""
        buffer = self.buffer
        if not buffer:
            self._raise_error()
            return None
        head = buffer[0]
        if isinstance(head, Gap):
            buffer.popleft()
            self.seq = head.to_seq
            if self.owed_chunks and not buffer:
                self._report()
            if self.on_gap == "item":
                return head
            raise GapError(head.from_seq, head.to_seq, head.reason)
        pos = head.pos
        chunks = head.chunks
        chunk = chunks[pos]
        seq = self.seq = head.seq + pos
        head.pos = pos = pos + 1  # (also when it leaves: see take_many)
        if pos == len(chunks):
            buffer.popleft()
        if seq > self.stale_seq:  # (stale chunks come first: nothing is owed before them)
            self.owed_chunks += 1
            self.owed_bytes += len(chunk)
            # Report consumption in batches, and always before the consumer would wait.
            if not buffer or self.owed_chunks >= _CREDIT_BATCH:
                self._report()
        return chunk

    def take_slice(self) -> tuple[_Run, int] | None:
        """For an item iterator without a codec: the run at the head of the buffer and where
        the slice of it to hand out ends (its chunks from ``run.pos`` up to that index), so
        that they go out a chunk per step without a :meth:`poll` each; None when the head is
        not a run (nothing, a gap) or payloads are decoded. The chunks stay in the buffer
        until they are handed out: the iterator moves ``run.pos`` and sets ``seq`` as each
        goes, stops if another reader moved ``run.pos`` or ``cancelled`` is set meanwhile,
        and calls :meth:`handed_slice` for the chunks it handed out. A slice ends where the
        credit batch does, so the credit is reported at the chunk :meth:`poll` would
        report it at."""
        buffer = self.buffer
        if not buffer or self.codec is not None:
            return None
        head = buffer[0]
        if isinstance(head, Gap):
            return None
        end = min(len(head.chunks), head.pos + max(1, _CREDIT_BATCH - self.owed_chunks))
        return head, end

    def handed_slice(self, run: _Run, start: int, end: int, *, last: bool) -> None:
        """The chunks ``start:end`` of ``run`` were handed out (``last``: the slice's last
        one is going now, so the run moves past it, leaves the buffer when it is done, and
        the credit is reported as :meth:`poll` would; else the iterator stopped early and
        the credit is only owed)."""
        if last:
            self.seq = run.seq + end - 1
            run.pos = end
            if end == len(run.chunks) and self.buffer and self.buffer[0] is run:
                self.buffer.popleft()
        if run.seq + end - 1 > self.stale_seq and end > start:  # (a lost connection: stale)
            part = run.chunks[start:end]
            self.owed_chunks += len(part)
            self.owed_bytes += sum(map(len, part))
            if last and (not self.buffer or self.owed_chunks >= _CREDIT_BATCH):
                self._report()

    @property
    def poller(self) -> Callable[[], Any]:
        """What an item iterator polls: :meth:`poll`, or :meth:`poll_value` with a codec."""
        return self.poll if self.codec is None else self.poll_value

    def poll_value(self) -> Any:
        """:meth:`poll` with the payload decoded by ``codec``: raises
        :class:`streamproto.DecodeError` (with the chunk's seq) for a payload the codec
        cannot decode (the chunk is consumed)."""
        if self._pending is not None:
            (error, self.seq), self._pending = self._pending, None
            raise error
        item = self.poll()
        codec = self.codec
        if codec is None or item is None or isinstance(item, Gap):
            return item
        try:
            return codec.decode(item)
        except DecodeError as exc:
            exc.seq = self.seq
            raise
        except Exception as exc:
            raise DecodeError(f"not {codec.name}: {exc!r}", item, self.seq) from exc

    def poll_many(self, limit: int) -> list[Any] | None:
        """What a batch iterator hands out next: :meth:`take_many`, or None when there is
        nothing (stop if ``finished``, else wait); raises like :meth:`poll`."""
        if not self.buffer and self._pending is None:
            self._raise_error()
            return None
        if self.codec is None and self._pending is None:
            return self.take_many(limit)
        # Decoded one at a time; an error after the first item ends the batch before it
        # and is raised by the next call, as a gap is.
        out: list[Any] = []
        while len(out) < limit and (self.buffer or self._pending is not None):
            before = self.seq
            try:
                out.append(self.poll_value())
            except StreamProtoError as exc:
                if not out:
                    raise
                self._pending = (exc, self.seq)
                self.seq = before
                break
        return out

    def _raise_error(self) -> None:
        """Raise the stream's error if it ended with one (the buffer is empty)."""
        error = self.error()
        if error is not None:
            raise error

    def check_accepted(self) -> bool:
        """True once the server accepted the request; raises if it ended without an accept."""
        if not self.accepted and self.outcome is not None:
            raise self.error() or StreamError(ErrorCode.STREAM_CLOSED, "ended")
        return self.accepted

    @property
    def finished(self) -> bool:
        """True when the buffer is empty and the stream is over."""
        return not self.buffer and self.outcome is not None

    def error(self) -> StreamError | None:
        """The error that ended the stream, if it did not end well."""
        return self.outcome if isinstance(self.outcome, StreamError) else None

    def cancel(self, *, unsubscribe: bool = False) -> None:
        """Leave (and, unless ``unsubscribe``, ask the producer to stop). An iterator waiting
        on this subscription in another task or thread ends quietly; what was buffered and
        not taken is dropped."""
        if self.closed:
            return
        self.closed = True
        self.cancelled = True
        self.core._leave(self, unsubscribe=unsubscribe)
        self.buffer.clear()
        self.outcome = _Outcome.ENDED
        self.notify()

    def _overflowed(self, record: Overflow, now: float) -> None:
        """The server dropped ``record``'s seqs for this subscriber, which fell behind."""
        self.overflows += 1
        self.recent_overflows.append(record)
        held = self._overflow_log.admit(record, now)
        if held is not None:
            log.warning(
                "%s/%s: seqs %d..%d (%d) were dropped by the server: this subscriber fell behind%s",
                record.channel,
                record.stream_id,
                record.from_seq,
                record.to_seq,
                record.dropped,
                held_back(held),
            )
        if self.on_overflow is not None:
            self.on_overflow(record)

    def _finish(self, outcome: _Outcome | StreamError) -> None:
        if self.outcome is None:
            self.outcome = outcome
            self.closed = True
            self.notify()


class UploadCore:
    """The shared state of one client upload."""

    def __init__(
        self,
        core: ClientCore,
        channel: str,
        stream_id: str,
        args: bytes,
        *,
        resumable: bool = False,
        result: bool = False,
    ) -> None:
        self.core = core
        self.channel = channel
        self.stream_id = stream_id
        self.args = args
        self.resumable = resumable
        self.wants_result = result
        self.handle = 0
        self.accepted = False
        self.error: StreamError | None = None
        self.done = False
        #: True once the upload is over on this side: END (or ERROR) and every queued chunk
        #: went out, and for an upload with a result (or a resumable one) UPLOAD_RESULT came.
        self.drained = False
        #: What UPLOAD_RESULT carried (b"" without one).
        self.result = b""
        #: Where a resumable upload stands while its connection is gone (spec R-UPR-4).
        self.point: UploadResumePoint | None = None
        #: END was asked for while a resume waited for its ACCEPT: sent once it comes.
        self.end_pending = False
        self.notify: Callable[[], None] = lambda: None

    def write(self, chunk: bytes) -> WriteResult:
        """Queue a chunk: ACCEPTED, or BLOCKED (wait for ``notify``). Raises the upload's
        error once it failed or was cancelled."""
        if self.error is not None:
            raise self.error
        conn = self.core.conn
        if self.point is not None and not self.done:
            return WriteResult.BLOCKED  # resumed on the next connection, then notified
        if conn is None or self.done:
            raise StreamError(ErrorCode.STREAM_CLOSED, "the upload is finished")
        result = conn.send_data(self.handle, chunk)
        if result is WriteResult.CLOSED:
            raise self.error or StreamError(ErrorCode.UPLOAD_CANCELLED, "upload cancelled")
        return result

    def check_accepted(self) -> bool:
        """True once the server accepted the upload; raises if it was refused or lost."""
        if not self.accepted and self.error is not None:
            raise self.error
        return self.accepted

    def finish(self, exc: BaseException | None) -> None:
        """Leaving the upload's ``with`` block: END, or ERROR with the exception's code."""
        if exc is None:
            self.end()
            return
        code = getattr(exc, "code", 0)
        self.fail(code if isinstance(code, int) and code > 0 else ErrorCode.CANCELLED, str(exc))

    def end(self) -> None:
        """Finish the upload: END goes out now, queued chunks follow under credit (a
        suspended resumable upload ends once resumed)."""
        if self.error is not None:
            raise self.error
        conn = self.core.conn
        if self.done:
            return
        if self.point is not None:  # suspended: the resume ends it (spec R-UPR-5)
            self.done = True
            self.point = attrs.evolve(self.point, ended=True)
            return
        if conn is not None:
            self.done = True
            self.core._ending.add(self)
            if conn.handle_state(self.handle) is HState.REQUESTED:
                self.end_pending = True  # a resume not answered yet
            else:
                conn.send_end(self.handle)

    def fail(self, code: int, message: str = "") -> None:
        """Fail the upload with ``code``."""
        conn = self.core.conn
        if conn is not None and not self.done and self.error is None:
            self.done = True
            conn.send_error(self.handle, code, message)
            self.core._ending.add(self)

    @property
    def settled(self) -> bool:
        """True once the upload failed, was cancelled, or drained after ``end``."""
        return self.error is not None or self.drained

    def _fail(self, error: StreamError) -> None:
        # A cancel (or loss) while the queue drains after END still counts: the server did
        # not get the whole upload.
        if self.error is None and not self.drained:
            self.error = error
        self.done = True
        self.point = None
        self.core._ending.discard(self)
        self.notify()


@attrs.frozen
class QueryRequest:
    """A status, list or delete request, as a client's call makes it (``stream_id`` is the
    cursor of a listing; ``states`` its filter mask)."""

    op: QueryOp
    channel: str
    stream_id: str
    states: int = 0
    limit: int = 100


@attrs.frozen
class StreamPage:
    """A page of a channel's streams (``client.list_streams``): ``entries`` in id order, and
    ``next``, the cursor to pass as ``after`` for the next page (empty: this is the last)."""

    entries: tuple[StreamEntry, ...]
    next: str


def state_mask(status: StreamState | Iterable[StreamState] | None) -> int:
    """The LIST filter for ``status``: one state, several, or None for every state."""
    if status is None:
        return 0
    states = [status] if isinstance(status, StreamState) else list(status)
    return sum(1 << StreamState(s) for s in set(states))


class QueryCore:
    """One status, list or delete request of a client, until its answer (or failure)."""

    def __init__(self) -> None:
        self.answer: StreamsReceived | None = None
        self.error: StreamError | None = None
        self.notify: Callable[[], None] = lambda: None

    @property
    def done(self) -> bool:
        return self.answer is not None or self.error is not None

    def entry(self) -> StreamEntry:
        """The one entry of a status or delete answer (raises the failure)."""
        return self.page().entries[0]

    def page(self) -> StreamPage:
        """The answer as a page (raises the failure)."""
        if self.error is not None:
            raise self.error
        answer = cast(StreamsReceived, self.answer)  # done: one or the other
        return StreamPage(answer.entries, answer.next)

    def _finish(self, answer: StreamsReceived | None, error: StreamError | None) -> None:
        self.answer, self.error = answer, error
        self.notify()


class ClientCore(Stepping):
    """The client's shared state: the current connection, subscriptions, uploads, resume.

    A backend creates one, calls ``new_connection()`` for every (re)connection, feeds it
    ``receive(data)``, writes ``outgoing()``, runs ``timer()`` and calls ``lost()`` when the
    socket dies, then ``reconnect_delay()`` tells it how long to wait before trying again.
    """

    #: A client reads all the time: its credit bounds what the server may send.
    reading = True

    def __init__(
        self,
        url: Url,
        *,
        config: Config | None = None,
        auth: bytes = b"",
        clock: Callable[[], float],
        backoff: Backoff = NO_RECONNECT,
        rng: random.Random | None = None,
        trace: Tracer | None = None,
    ) -> None:
        self.url = url
        self.trace = trace
        #: The current connection's id in logs and traces (a new one per reconnection).
        self.id = ""
        self.tap: FrameTap | None = None
        self.log = ConnectionLog(client_log, lambda: (self.id, self.session_id))
        self.config = attrs.evolve(config or Config(), auto_credit=False)
        self.auth = auth
        self.clock = clock
        self.backoff = backoff
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not secrets
        self.conn: Connection | None = None
        self.framing: Framing | None = None
        self.serial = 0
        self.resume_token = ""
        self.session_id = ""
        self.ready = False
        self.failure: StreamError | None = None
        self.attempt = 0
        self.reconnects = 0
        self.resumed = 0
        self.gaps = 0
        self.overflows = 0
        self.chunks = 0
        self.goaway = False
        self.terminated = ConnectionLost(ErrorCode.CONNECTION_LOST, "the connection was lost")
        self.close_code = int(ErrorCode.NO_ERROR)
        self._goodbye = b""
        self._subs: dict[int, SubscriptionCore] = {}
        self._pending: list[SubscriptionCore] = []
        self._uploads: dict[int, UploadCore] = {}
        self._queries: dict[int, QueryCore] = {}
        self._ending: set[UploadCore] = set()  # ended or failed uploads still draining
        #: Resumable uploads whose connection was lost, resumed on the next one (R-UPR-4).
        self._suspended: list[UploadCore] = []
        self.on_ready: Callable[[], None] = lambda: None

    # -- connection lifecycle -------------------------------------------------------------------

    def new_connection(self) -> None:
        """Start a (re)connection: a fresh framing and Connection, resuming the session."""
        self.serial += 1
        self.id = next_conn_id()
        self.tap = None if self.trace is None else FrameTap(self.trace, self.id)
        self.log.debug("connecting to %s", self.url.address(self.url.port))
        self.framing = self.url.framing(client=True)
        self.conn = Connection(
            Role.CLIENT,
            self.config,
            now=self.clock(),
            resume_token=self.resume_token,
            auth=self.auth,
        )
        self.ready = False
        self.goaway = False
        self.terminated = ConnectionLost(ErrorCode.CONNECTION_LOST, "the connection was lost")
        self.close_code = int(ErrorCode.NO_ERROR)  # the code of the GOAWAY that ended it

    #: A client does not bound its output by time: it only talks to the server it chose.
    stalled = False

    def output_blocked(self, flag: bool) -> None:
        """See :meth:`ServerDriver.output_blocked` (nothing to do on a client)."""

    def receive(self, data: bytes) -> None:
        """Socket bytes in (``b""``: end of input)."""
        framing, conn = self.framing, self.conn
        if framing is None or conn is None:
            return
        payload = framing.receive(data)
        if payload:
            if self.tap is not None:
                self.tap.received(payload)
            self._route(conn.receive_data(payload))
        if violated := fail_on_violation(framing, conn):
            self._route(violated)
        if framing.closed and not conn.closed:
            self._route(conn.receive_data(b""))

    def outgoing(self, max_bytes: int | None = None) -> bytes:
        """Socket bytes to write now (about ``max_bytes`` of data; None: all there is)."""
        framing, conn = self.framing, self.conn
        if framing is None or conn is None:
            goodbye, self._goodbye = self._goodbye, b""
            return goodbye
        payload = conn.data_to_send(max_bytes) if framing.ready else b""
        events = conn.take_events()
        if events:
            self._route(events)
            if max_bytes is not None:
                max_bytes = max(0, max_bytes - len(payload))
            payload += conn.data_to_send(max_bytes) if framing.ready else b""
        if self.tap is not None:
            self.tap.sent(payload)
        if self._ending and (not conn.closed or self.close_code == ErrorCode.NO_ERROR):
            # A cancel would have come as an event above; a handle closed without one drained
            # (not one the connection's failure closed: ``lost`` fails those). An upload with
            # a result closes on UPLOAD_RESULT, an event too. A bidirectional handle's other
            # direction may run on: its sending direction is the upload.
            sending = Direction.SENDING
            for up in [
                u
                for u in self._ending
                if not (u.wants_result or u.resumable)
                and conn.handle_state(u.handle, sending) is _CLOSED
            ]:
                up.drained = True
                self._ending.discard(up)
                self._uploads.pop(up.handle, None)
                up.notify()
        data = framing.wrap(payload)
        if conn.closed and not framing.closed:
            data += framing.close(self.close_code)
        return data

    def deadline(self) -> float | None:
        """When ``timer`` must run next."""
        return None if self.conn is None else self.conn.next_deadline()

    def timer(self) -> None:
        """Run the connection's timers."""
        if self.conn is not None:
            self._route(self.conn.handle_timer(self.clock()))

    def close(self) -> None:
        """The application closes the client: GOAWAY (the next ``outgoing()`` carries it and
        the WebSocket close; ``finished`` is true), and everything open fails with
        CONNECTION_CLOSED (:class:`ConnectionClosed`), so no iterator waits for a connection
        that will not come."""
        conn, framing = self.conn, self.framing
        if conn is not None and framing is not None and not conn.closed:
            if conn.state in _DRAINABLE:
                conn.goaway(ErrorCode.NO_ERROR)
            self._goodbye = self.outgoing() + framing.close(ErrorCode.NO_ERROR)
        if self.failure is None:
            self.log.debug("closed by the application")
            self.give_up(ConnectionClosed(ErrorCode.CONNECTION_CLOSED, "the client is closed"))

    def statistics(self) -> ClientStatistics:
        """The client's counters."""
        return ClientStatistics(
            chunks=self.chunks,
            gaps=self.gaps,
            overflows=self.overflows,
            reconnects=self.reconnects,
            resumed=self.resumed,
        )

    @property
    def finished(self) -> bool:
        """True when the current socket should be closed."""
        return (
            self.conn is None
            or self.conn.closed
            or (self.framing is not None and self.framing.closed)
        )

    def lost(self, error: StreamError | None = None) -> None:
        """The socket is gone. Open subscriptions wait for the next connection (or fail if
        reconnecting is off); resumable uploads wait for it too, other uploads fail."""
        conn = self.conn
        if conn is not None and self.failure is None:
            lost = error or self.terminated
            self.log.info("connection lost: %s", describe(lost.code, lost.message))
        self.conn = None
        self.framing = None
        self.ready = False
        lost = error or self.terminated
        for upload in list(self._uploads.values()):
            point = None if conn is None else conn.upload_resume_point(upload.handle)
            if point is not None and self.failure is None:
                # Resumed on the next connection (spec R-UPR-4), with END again if it ended.
                upload.point = attrs.evolve(point, ended=point.ended or upload.end_pending)
                upload.handle = 0
                upload.end_pending = False
                self._ending.discard(upload)
                self._suspended.append(upload)
            else:
                upload._fail(lost)
        self._uploads.clear()
        if self.failure is not None:  # giving up: nothing will be resumed
            for upload in self._suspended:
                upload._fail(lost)
            self._suspended.clear()
        queries = list(self._queries.values())  # a query is not repeated: it fails
        self._queries.clear()
        for q in queries:
            q._finish(None, lost)
        subs = list(self._subs.values())
        self._subs.clear()
        for sub in subs:
            sub.handle = 0
            # What is buffered came over the lost connection: taking it returns no credit.
            sub.stale_seq = sub.received_seq
            sub.owed_chunks = sub.owed_bytes = 0
            if sub.closed:
                continue
            if sub.open_args is not None and not sub.accepted:
                sub._finish(StreamError(ErrorCode.CONNECTION_LOST, "lost before the open answer"))
            else:
                self._pending.append(sub)

    def give_up(self, error: StreamError | None = None) -> None:
        """Reconnecting failed for good: everything open fails with ``error`` (default: why
        the last connection ended)."""
        error = error or self.terminated
        if self.failure is None and self.conn is None:  # (close() logged its own reason)
            self.log.warning("giving up: %s", describe(error.code, error.message))
        self.failure = error
        self.lost(error)
        for sub in self._pending:
            sub._finish(error)
        self._pending.clear()
        self.on_ready()

    def reconnect_delay(self) -> float | None:
        """How long to wait before the next attempt, or None to give up."""
        if self.attempt >= self.backoff.attempts:
            return None
        delay = self.backoff.delay(self.attempt, self.rng)
        self.attempt += 1
        self.log.debug(
            "reconnecting in %.3f s (attempt %d of %d)", delay, self.attempt, self.backoff.attempts
        )
        return delay

    # -- operations -----------------------------------------------------------------------------

    def subscribe(
        self,
        channel: str,
        stream_id: str,
        *,
        after_seq: int = 0,
        tail: bool = False,
        policy: OverflowPolicy = OverflowPolicy.DEFAULT,
        priority: int = 0,
        on_gap: GapMode = "raise",
        open_args: bytes | None = None,
        join: bool = False,
    ) -> SubscriptionCore:
        """A new subscription (or, with ``open_args``, an OPEN request; ``join``: run or join)."""
        self._check_usable()
        sub = SubscriptionCore(
            self,
            channel,
            stream_id,
            after_seq=after_seq,
            tail=tail,
            open_args=open_args,
            policy=policy,
            priority=priority,
            on_gap=on_gap,
            join=join,
        )
        self._pending.append(sub)
        if self.ready:
            self._send_pending()
        return sub

    def upload(
        self,
        channel: str,
        stream_id: str = "",
        args: bytes = b"",
        *,
        resumable: bool = False,
        result: bool = False,
    ) -> UploadCore:
        """A new upload (requires a ready connection). ``resumable``: it survives a
        reconnect; ``result``: the server answers it with a result (spec section 9.1)."""
        conn = self._open_conn()
        up = UploadCore(self, channel, stream_id, args, resumable=resumable, result=result)
        up.handle = self._new_handle(
            conn,
            lambda: conn.upload(channel, stream_id, args, resumable=resumable, result=result),
        )
        self._uploads[up.handle] = up
        return up

    def bidi(
        self,
        channel: str,
        stream_id: str = "",
        args: bytes = b"",
        *,
        policy: OverflowPolicy = OverflowPolicy.DEFAULT,
        priority: int = 0,
        on_gap: GapMode = "raise",
    ) -> tuple[UploadCore, SubscriptionCore]:
        """A bidirectional OPEN (requires a ready connection): the client's direction as an
        upload, the server's as an opened stream, on one handle. A lost connection fails the
        first and resumes the second, as it does uploads and subscriptions."""
        conn = self._open_conn()
        sub = SubscriptionCore(
            self,
            channel,
            stream_id,
            after_seq=0,
            tail=False,
            open_args=args,
            policy=policy,
            priority=priority,
            on_gap=on_gap,
        )
        up = UploadCore(self, channel, stream_id, args)
        handle = self._new_handle(
            conn,
            lambda: conn.open(
                channel, args, stream_id=stream_id, policy=policy, priority=priority, bidi=True
            ),
        )
        sub.handle = up.handle = handle
        sub.conn_serial = self.serial
        self._subs[handle] = sub
        self._uploads[handle] = up
        return up, sub

    def query(self, request: QueryRequest, notify: Callable[[], None]) -> QueryCore:
        """A status, list or delete request (requires a ready connection)."""
        op, channel, stream_id = request.op, request.channel, request.stream_id
        conn = self._open_conn()
        if op is QueryOp.STATUS:
            handle = conn.status(channel, stream_id)
        elif op is QueryOp.LIST:
            handle = conn.list_streams(
                channel, after=stream_id, states=request.states, limit=request.limit
            )
        else:
            handle = conn.delete(channel, stream_id)
        q = QueryCore()
        q.notify = notify
        self._queries[handle] = q
        return q

    def _open_conn(self) -> Connection:
        """The connection a request that needs one now (upload, bidi, query) is made on:
        raises the client's failure, or CONNECTION_LOST while it is not ready."""
        self._check_usable()
        conn = self.conn
        if conn is None or not self.ready or conn.state is not ConnState.OPEN:
            raise ConnectionLost(ErrorCode.CONNECTION_LOST, "not connected")
        return conn

    def _new_handle(self, conn: Connection, request: Callable[[], int]) -> int:
        """``request()`` (a request made on ``conn``), its handle; out of handles, ``conn``
        drains to make way for the next connection (R-HANDLE-6) and the caller gets a
        StreamError HANDLE_EXHAUSTED to retry once reconnected."""
        try:
            return request()
        except LocalProtocolError as exc:
            if exc.code != ErrorCode.HANDLE_EXHAUSTED:
                raise
            self._out_of_handles(conn)
            raise StreamError(exc.code, "no handles left: retry once reconnected") from None

    def _check_usable(self) -> None:
        if self.failure is not None:
            raise self.failure

    def _send_pending(self) -> None:
        """Make the waiting requests on the current connection. A request leaves the queue
        only once it was made: while the connection is not OPEN (it died and ``lost()`` has
        not run yet, or it drains after a GOAWAY) the requests wait for the next one."""
        conn = self.conn
        if conn is None or not self.ready or self.goaway or conn.state is not ConnState.OPEN:
            return
        pending = self._pending
        while pending:
            sub = pending[0]
            if not sub.closed:
                try:
                    sub.handle = self._request(conn, sub)
                except LocalProtocolError as exc:
                    if exc.code != ErrorCode.HANDLE_EXHAUSTED:
                        pending.pop(0)  # a bad request (its name, say): the caller's error
                        raise
                    self._out_of_handles(conn)
                    return
                sub.conn_serial = self.serial
                self._subs[sub.handle] = sub
            pending.pop(0)

    @staticmethod
    def _request(conn: Connection, sub: SubscriptionCore) -> int:
        if sub.open_args is not None and not sub.accepted:
            return conn.open(
                sub.channel,
                sub.open_args,
                stream_id=sub.stream_id,
                policy=sub.policy,
                priority=sub.priority,
                join=sub.join,
            )
        return conn.subscribe(
            sub.channel,
            sub.stream_id,
            after_seq=sub.received_seq,
            tail=sub.tail and not sub.accepted,
            policy=sub.policy,
            priority=sub.priority,
        )

    def _out_of_handles(self, conn: Connection) -> None:
        """R-HANDLE-6: no handles left on this connection. GOAWAY(NO_ERROR) lets the open
        streams finish; then the connection ends and the next one (same session) takes the
        requests still waiting."""
        self.goaway = True
        conn.goaway()

    def _consume(self, sub: SubscriptionCore, chunks: int, nbytes: int) -> None:
        conn = self.conn
        if conn is not None and sub.conn_serial == self.serial and sub.handle in self._subs:
            conn.consume(sub.handle, chunks, nbytes)

    def _leave(self, sub: SubscriptionCore, *, unsubscribe: bool) -> None:
        if sub in self._pending:
            self._pending.remove(sub)
        conn = self.conn
        if conn is not None and self._subs.pop(sub.handle, None) is sub:
            if unsubscribe:
                conn.unsubscribe(sub.handle)
            else:
                conn.cancel(sub.handle)

    # -- events ---------------------------------------------------------------------------------

    def _route(self, events: list[Event]) -> None:
        log_events(self.log, events)
        subs = self._subs
        for event in events:
            if isinstance(event, DataReceived):
                sub = subs.get(event.handle)
                if sub is None:
                    continue
                chunks = event.chunks
                sub.buffer.append(_Run(event.seq, chunks))
                sub.received_seq = event.seq + len(chunks) - 1
                self.chunks += len(chunks)
                sub.notify()
            elif isinstance(event, GapReceived):
                sub = subs.get(event.handle)
                if sub is not None:
                    sub.buffer.append(Gap(event.from_seq, event.to_seq, event.reason))
                    sub.received_seq = event.to_seq
                    self.gaps += 1
                    sub.notify()
            elif isinstance(event, RequestAccepted):
                self._on_accepted(event)
            elif isinstance(event, StreamsReceived):
                self._queries.pop(event.handle)._finish(event, None)
            elif isinstance(event, StreamEnded | StreamFailed | RequestRejected):
                sub = subs.pop(event.handle, None)
                if isinstance(event, RequestRejected):
                    error = StreamError(event.code, event.message)
                    if event.handle in self._queries:  # a refused status, list or delete
                        self._queries.pop(event.handle)._finish(None, error)
                        continue
                    up = self._uploads.pop(event.handle, None)  # (a bidi has both)
                    if up is not None:
                        up._fail(error)
                if sub is None:
                    continue
                if isinstance(event, StreamEnded):
                    sub._finish(_Outcome.ENDED)
                else:
                    sub._finish(StreamError(event.code, event.message))
            elif isinstance(event, Writable):
                up = self._uploads.get(event.handle)
                if up is not None:
                    up.notify()
            elif isinstance(event, UploadCancelled):
                up = self._uploads.pop(event.handle, None)
                if up is not None:
                    up._fail(StreamError(event.code, event.message or "upload cancelled"))
            elif isinstance(event, UploadCompleted):
                up = self._uploads.pop(event.handle, None)
                if up is not None:
                    up.result = event.result
                    up.drained = True
                    self._ending.discard(up)
                    up.notify()
            elif isinstance(event, OverflowWarning):
                self.overflows += 1
                sub = subs.get(event.handle)
                if sub is not None:  # (it follows its GapReceived, before any end)
                    record = Overflow(
                        sub.channel,
                        sub.stream_id,
                        self.session_id,
                        event.handle,
                        event.dropped,
                        event.from_seq,
                        event.to_seq,
                    )
                    sub._overflowed(record, self.clock())
            elif isinstance(event, HandshakeCompleted):
                self._on_handshake(event)
            elif isinstance(event, HandshakeRefused):
                self.log.info("handshake refused: %s", describe(event.code, event.message))
                self.close_code = event.code
                if is_retryable(event.code):  # SERVER_BUSY, say: the backend reconnects later
                    self.terminated = ConnectionLost(event.code, event.message or "refused")
                else:
                    self.give_up(StreamError(event.code, event.message or "handshake refused"))
            elif isinstance(event, GoawayReceived):
                self.goaway = True
            elif isinstance(event, ConnectionTerminated):
                self.close_code = event.code
                if event.code != ErrorCode.NO_ERROR:
                    # The backend sees ``finished`` and calls ``lost``; the code says why.
                    self.terminated = ConnectionLost(event.code, event.message)

    def _on_accepted(self, event: RequestAccepted) -> None:
        sub = self._subs.get(event.handle)
        if sub is not None:
            if not sub.accepted and sub.tail:
                sub.received_seq = sub.seq = event.last_seq
            if not sub.accepted:
                sub.joined = event.joined
            sub.accepted = True
            sub.stream_id = event.stream_id
            sub.notify()
        up = self._uploads.get(event.handle)  # (a bidirectional OPEN is both)
        if up is not None:
            up.accepted = True
            up.stream_id = event.stream_id
            if up.end_pending:  # ended while its resume waited for this ACCEPT
                up.end_pending = False
                cast(Connection, self.conn).send_end(event.handle)
            up.notify()

    def _on_handshake(self, event: HandshakeCompleted) -> None:
        if self.resume_token:
            self.reconnects += 1
            self.resumed += int(event.resumed)
        again = bool(self.resume_token)
        self.resume_token = event.resume_token
        self.session_id = event.session_id
        if not again:
            self.log.info("connected to %s", self.url.address(self.url.port))
        elif event.resumed:
            self.log.info("reconnected: session resumed")
        else:
            self.log.info("reconnected: a new session (the old one expired)")
        self.ready = True
        self.attempt = 0
        self._send_pending()
        self._resume_uploads()
        self.on_ready()

    def _resume_uploads(self) -> None:
        """Continue the suspended resumable uploads on the new connection (R-UPR-4): the
        server answers with where to go on from, or UNKNOWN_UPLOAD if it kept none."""
        conn = cast(Connection, self.conn)
        suspended, self._suspended = self._suspended, []
        for up in suspended:
            point = cast(UploadResumePoint, up.point)
            up.point = None
            up.handle = conn.resume_upload(point)
            self._uploads[up.handle] = up
            if point.ended:
                self._ending.add(up)
            up.notify()


# -- what the backends' public classes share ----------------------------------------------------
#
# Each backend subclasses these and supplies the loop: how to run a handler (``_start``), how
# to wake the socket's writer (``_wake``), and ``_lock``, held around every call into the hub
# or the client core (a real lock only in the thread backend; the event loops need none).

_NO_LOCK: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
_P = TypeVar("_P", bound="ProducerBase[Any]")
_U = TypeVar("_U", bound="ServerUploadBase")
_S = TypeVar("_S", bound="SubscriptionBase[bytes]")
_SG = TypeVar("_SG", bound="SubscriptionBase[bytes | Gap]")
#: What a subscription hands out: ``bytes``, or ``bytes | Gap`` with ``on_gap="item"``.
_T = TypeVar("_T")
#: What a producer writes: ``bytes`` unless its channel has a codec.
if TYPE_CHECKING:
    from typing_extensions import TypeVar as _TypeVar

    _V = _TypeVar("_V", default=bytes)
else:
    _V = TypeVar("_V")
#: A backend's client upload class.
_UP = TypeVar("_UP", bound="UploadBase")
_BI = TypeVar("_BI", bound="BidiBase")
#: A value type of a codec.
_W = TypeVar("_W")


class ServerBase(abc.ABC, Generic[_P, _U]):
    """A server's loop-independent half, serving ``hub`` (None: :func:`transports.new_hub`,
    128-bit random ids). The backend sets ``port`` once it listens and implements
    ``_producer``/``_upload`` (wrap the hub's objects) and ``_start`` (run a handler as a task
    or thread; errors go to :func:`handler_failed`)."""

    _lock: contextlib.AbstractContextManager[Any] = _NO_LOCK

    def __init__(
        self,
        hub: Hub | None,
        url: str,
        config: Config | None,
        http: HttpOptions | None = None,
        trace: Tracer | None = None,
    ) -> None:
        self.hub = hub if hub is not None else new_hub()
        self.url = parse_url(url)
        self.config = server_config(config)
        #: How an ``http://`` listener maps HTTP onto the hub (its WebSocket path is the URL's).
        self.http = attrs.evolve(http or HttpOptions(), ws_path=self.url.path)
        #: Gets a record per frame of every connection accepted (see :mod:`transports.trace`).
        self.trace = trace
        #: The port the server listens on.
        self.port = 0
        # Admitted sockets, not yet gone: binary connections (ServerDriver) and, on an
        # ``http://`` listener, HTTP sockets (HttpDriver) until they upgrade to a WebSocket.
        self._live: set[Any] = set()
        # Counters of the connections that are gone, so the totals only grow.
        self._accepted = self._refused = 0
        self._gone_totals = [0, 0, 0, 0, 0]  # bytes in, out; chunks received, sent, dropped
        # Channel codecs (``channel(codec=...)``): what the channel's producers encode with.
        self._codecs: dict[str, Codec[Any]] = {}

    def _driver(
        self, framing: Framing | None, clock: Callable[[], float], wakeup: Callable[[], None]
    ) -> ServerDriver:
        """The driver of a socket just accepted: a refusing one over ``max_connections`` or
        ``max_pending_handshakes`` (R-TR-20). The backend calls :meth:`_gone` when it ends.
        On an ``http://`` listener, an :class:`~transports._http.HttpDriver` (which has the
        same interface, and makes its WebSocket driver here after an upgrade).

        ``framing`` None: the listener's own, made here (an ``http://`` listener needs none
        until a request upgrades, and then makes a WebSocket framing for it)."""
        if self.url.kind == "http":
            from ._http import HttpDriver  # noqa: PLC0415 - it imports this module

            def websocket(ws: Framing) -> ServerDriver:
                self._live.discard(http)  # the socket counts once, as the WebSocket
                return self._admit(ws, clock, wakeup)

            busy = len(self._live) >= self.config.max_connections
            http = HttpDriver(
                self.hub, self.config, self.http, clock, wakeup, websocket=websocket, busy=busy
            )
            if not busy:
                self._live.add(http)
            return cast(ServerDriver, http)
        if framing is None:
            framing = self.url.framing(client=False)
        return self._admit(framing, clock, wakeup)

    def _admit(
        self, framing: Framing, clock: Callable[[], float], wakeup: Callable[[], None]
    ) -> ServerDriver:
        config, live = self.config, self._live
        if len(live) >= config.max_connections or (
            sum(d.handshaking for d in live) >= config.max_pending_handshakes
        ):
            self._refused += 1
            if self._refused & (self._refused - 1) == 0:  # 1, 2, 4, 8, ...: a flood logs little
                server_log.warning(
                    "at capacity (%d connections, max_connections=%d, "
                    "max_pending_handshakes=%d): %d connections refused with SERVER_BUSY so far",
                    len(live),
                    config.max_connections,
                    config.max_pending_handshakes,
                    self._refused,
                )
            return RefusingDriver(framing, config, clock)
        driver = ServerDriver(self.hub, framing, config, clock, wakeup, trace=self.trace)
        live.add(driver)
        self._accepted += 1
        return driver

    def _gone(self, driver: ServerDriver) -> None:
        """A socket's driver is done with."""
        ws = getattr(driver, "ws", None)  # an HTTP socket upgraded to a WebSocket
        for gone in (driver, ws):
            if gone is None or gone not in self._live:
                continue
            self._live.discard(gone)
            if isinstance(gone, ServerDriver):  # a binary connection: its counters stay
                stats = gone.conn.statistics()
                totals = self._gone_totals
                totals[0] += gone.bytes_in
                totals[1] += gone.bytes_out
                totals[2] += stats.chunks_received
                totals[3] += stats.chunks_sent
                totals[4] += stats.chunks_dropped

    def statistics(self) -> ServerStatistics:
        """A snapshot: every open connection (:class:`~transports.metrics.ConnectionInfo`),
        every channel, the hub's counters, and totals over the server's life. Render it for
        Prometheus with :func:`transports.metrics.prometheus_text`. An ``http://`` listener's
        connections are those upgraded to WebSocket; its HTTP requests are not listed."""
        with self._lock:
            now = None
            connections = []
            b_in, b_out, received, sent, dropped = self._gone_totals
            drivers = [d for d in self._live if isinstance(d, ServerDriver)]
            for driver in sorted(drivers, key=lambda d: int(d.id[1:])):
                now = driver.clock() if now is None else now
                session = driver.peer.session
                connections.append(
                    ConnectionInfo(
                        id=driver.id,
                        session_id="" if session is None else session.id,
                        age=now - driver.opened_at,
                        bytes_in=driver.bytes_in,
                        bytes_out=driver.bytes_out,
                        connection=driver.conn.statistics(),
                    )
                )
            return ServerStatistics(
                address=self.address,
                accepted=self._accepted,
                refused=self._refused,
                connections=tuple(connections),
                channels={c.name: c.statistics() for c in self.hub.channels()},
                hub=self.hub.statistics(),
                closed_totals=(b_in, b_out, received, sent, dropped),
            )

    @property
    def address(self) -> str:
        """The URL clients connect to."""
        return self.url.address(self.port)

    def _log_listening(self) -> None:
        """The backend listens (INFO, as websockets logs it)."""
        server_log.info("listening on %s", self.address)

    def _log_shutdown(self, timeout: float) -> None:
        """The backend starts its shutdown."""
        server_log.info(
            "shutting down %s: GOAWAY to %d connections, %g s to drain",
            self.address,
            len(self._live),
            timeout,
        )

    def channel(
        self,
        name: str,
        options: ChannelOptions | None = None,
        *,
        on_open: Callable[[_P, bytes], Any] | None = None,
        on_upload: Callable[[_U], Any] | None = None,
        on_bidi: Callable[[_P, _U], Any] | None = None,
        authorize: Authorize | None = None,
        codec: Codec[Any] | None = None,
    ) -> Channel:
        """Register a channel. ``on_open(producer, args)`` serves OPEN requests and
        ``on_upload(upload)`` UPLOAD requests, each as a task of the server (async backends:
        coroutine functions) or in a thread of its own (thread backend: plain functions).

        ``on_open`` may instead be an async generator function (thread backend: a generator
        function): what it yields is written with the stream's back-pressure, the stream ends
        when it returns, and fails when it raises (with the exception's code if it carries
        one, see :class:`StreamError`); it is stopped when the stream is aborted (see
        ``producer.pipe``). ``codec`` (a :class:`streamproto.Codec`, e.g.
        :data:`streamproto.JSON`) makes the channel's producers write values: each is
        encoded to one chunk; None keeps ``bytes``. ``authorize(request)`` decides this
        channel's requests instead of the hub's hook; it is called in the server's loop (or
        under its lock), so it must not block.

        ``on_bidi(producer, upload)`` serves bidirectional streams (a client's ``bidi``): it
        writes with ``producer`` what the client reads, and reads from ``upload`` (its
        ``args`` are the request's) what the client writes, on the same handle. It runs as
        ``on_open`` does (a generator's items are written, and its return ends the stream);
        when it returns or raises, the client's direction is cancelled if it is still open
        (UPLOAD_CANCELLED, or the exception's code), since nobody reads it any more."""
        open_cb = upload_cb = bidi_cb = None
        if on_open is not None:
            open_handler = on_open

            def open_cb(producer: Producer, args: bytes) -> None:
                wrapper = self._producer(producer)
                self._start(wrapper._serve, producer, open_handler, args)

        if on_upload is not None:
            upload_handler = on_upload

            def upload_cb(reader: UploadReader) -> None:
                upload = self._upload(reader)
                self._start(upload._serve, reader, upload_handler)

        if on_bidi is not None:
            bidi_handler = on_bidi

            def bidi_cb(producer: Producer, reader: UploadReader, args: bytes) -> None:
                wrapper = self._producer(producer)
                self._start(wrapper._serve_bidi, producer, bidi_handler, self._upload(reader))

        with self._lock:
            chan = self.hub.register(
                name,
                options,
                on_open=open_cb,
                on_upload=upload_cb,
                on_bidi=bidi_cb,
                authorize=authorize,
            )
            if codec is not None:
                self._codecs[name] = codec
            return chan

    def producer(self, channel: str, stream_id: str | None = None) -> _P:
        """Start a stream on a registered channel (``stream_id`` None: the hub picks one).
        It writes with the channel's codec, if it has one."""
        with self._lock:
            return self._producer(self._channel(channel).start(stream_id))

    def expect_upload(self, channel: str, stream_id: str | None = None) -> _U:
        """Allocate an upload id on a registered channel (``stream_id`` None: the hub picks
        one; read it from the result's ``stream_id``) and return its reader: the client's
        UPLOAD naming that id is attached to it instead of going to ``on_upload``. Read it as
        any upload; :meth:`ServerUploadBase.cancel` withdraws the id if no upload came."""
        with self._lock:
            return self._upload(self._channel(channel).expect_upload(stream_id))

    def _channel(self, name: str) -> Channel:
        chan = self.hub.channel(name)
        if chan is None:
            raise LocalProtocolError(ErrorCode.UNKNOWN_CHANNEL, f"no channel {name!r}")
        return chan

    @abc.abstractmethod
    def _producer(self, producer: Producer) -> _P:
        """Supplied by each backend."""

    @abc.abstractmethod
    def _upload(self, reader: UploadReader) -> _U:
        """Supplied by each backend."""

    @abc.abstractmethod
    def _start(
        self, fn: Callable[..., Any], target: Producer | UploadReader | None, *args: Any
    ) -> None:
        """Supplied by each backend."""

    def _rearm_hub(self) -> None:
        """The hub's next deadline may have moved."""


class ProducerBase(Generic[_V], abc.ABC):
    """The non-waiting half of a backend's ``ServerProducer``: a hub :class:`Producer` that
    writes values of type ``_V`` (``bytes`` unless it has a ``codec``).

    A backend's server makes these for its handlers (``server`` is then that server: its
    lock and hub timer, and the channel's codec). An application that runs the hub itself
    (inside another framework, see docs/adapters.md) wraps the producers it gets from
    :meth:`streamproto.Channel.start` the same way, with no server: ``ServerProducer(producer,
    codec=JSON)``; the thread backend's also takes the ``lock`` its hub calls are made under.
    Re-arm the hub's timer (``hub.next_deadline()``) after ``close`` and ``fail``."""

    def __init__(
        self,
        producer: Producer,
        *,
        codec: Codec[_V] | None = None,
        server: ServerBase[Any, Any] | None = None,
        lock: contextlib.AbstractContextManager[Any] | None = None,
    ) -> None:
        self.producer = producer
        self._server = server
        if codec is None and server is not None:
            codec = server._codecs.get(producer.channel)
        #: The codec values are written with (None: ``bytes`` as they are).
        self.codec: Codec[_V] | None = codec
        if lock is None:
            lock = server._lock if server is not None else _NO_LOCK
        self._lock = lock

    @property
    def stream_id(self) -> str:
        """The stream's id."""
        return self.producer.stream_id

    @property
    def last_seq(self) -> int:
        """The seq of the last chunk written."""
        with self._lock:
            return self.producer.last_seq

    @property
    def abort_reason(self) -> AbortReason | None:
        """Why the abort signal fired (None until it does): code CANCELLED when the last
        subscriber cancelled (CANCEL carries no reason on the wire: the message says which
        rule fired and at which seq), or a shared store's code when it lost the stream."""
        return self.producer.abort_reason

    @property
    def on_overflow(self) -> Callable[[Overflow], None] | None:
        """Called with an :class:`streamproto.Overflow` each time a subscriber under
        drop_oldest is sent the gap of chunks dropped for it (see
        :attr:`streamproto.Producer.on_overflow`). It runs in the server's loop (thread
        backend: its I/O thread, under its lock): keep it short and do not block."""
        return self.producer.on_overflow

    @on_overflow.setter
    def on_overflow(self, callback: Callable[[Overflow], None] | None) -> None:
        with self._lock:
            self.producer.on_overflow = callback

    def statistics(self) -> ProducerStatistics:
        """Counters: the overflows of its subscribers."""
        with self._lock:
            return self.producer.statistics()

    def _encode(self, value: _V) -> bytes:
        codec = self.codec
        return cast(bytes, value) if codec is None else codec.encode(value)

    def write_nowait(self, value: _V) -> WriteResult:
        """Write without waiting: ACCEPTED, or BLOCKED (nothing written) when a subscriber
        under the BLOCK policy has no room."""
        chunk = self._encode(value)
        with self._lock:
            return self.producer.write(chunk)

    def _encode_many(self, values: Sequence[_V]) -> Sequence[bytes]:
        if self.codec is None:
            return cast(Sequence[bytes], values)
        return [*map(self._encode, values)]

    def write_many_nowait(self, values: Iterable[_V]) -> tuple[int, WriteResult]:
        """Write ``values`` without waiting, as :meth:`streamproto.Producer.write_many` does:
        ``(written, ACCEPTED)``, or ``(written, BLOCKED)`` when a subscriber under the BLOCK
        policy has no room for ``values[written]`` (it and the rest were not written)."""
        chunks = values if self.codec is None else list(map(self._encode, values))
        with self._lock:
            return self.producer.write_many(cast(Iterable[bytes], chunks))

    def close(self) -> None:
        """End the stream."""
        with self._lock:
            self.producer.close()
            self._rearm()  # its retention timer

    def fail(self, code: int, message: str = "") -> None:
        """Fail the stream with ``code`` (an application code, 1000-65535). Raising
        ``StreamError(code, message)`` in a handler does the same."""
        with self._lock:
            self.producer.fail(code, message)
            self._rearm()

    def _rearm(self) -> None:
        if self._server is not None:
            self._server._rearm_hub()

    @abc.abstractmethod
    def _serve(self, handler: Callable[..., Any], args: bytes) -> Any:
        """Run an open handler (``handler(self, args)``); supplied by each backend."""

    def _serve_bidi(self, handler: Callable[..., Any], upload: ServerUploadBase) -> Any:
        """Run a bidirectional handler (``handler(self, upload)``) as :meth:`_serve` runs an
        open handler (an awaitable for an async backend), then tell ``upload`` the handler is
        over (:meth:`ServerUploadBase._handler_done`)."""
        try:
            result = self._serve(lambda producer, _args: handler(producer, upload), upload.args)
        except BaseException as exc:
            upload._handler_done(exc)
            raise
        if inspect.isawaitable(result):
            return _then_done(result, upload)
        upload._handler_done(None)
        return result

    def _piped(self, exc: BaseException) -> bool:
        """A pipe's source or write raised ``exc``: True if the abort explains it (stop
        quietly); else the stream fails with the exception's code (it is re-raised)."""
        with self._lock:
            if self.producer.aborted:
                return True
            if not self.producer.closed:
                self.fail(*handler_failure(exc))
        return False


class AsyncProducerBase(ProducerBase[_V]):
    """What the asyncio and trio producers share: ``pipe`` and async-generator handlers
    over the backend's ``write``, and the constructor (the backend's ``_signals`` makes its
    events)."""

    aborted: _Flag

    def __init__(
        self,
        producer: Producer,
        *,
        codec: Codec[_V] | None = None,
        server: ServerBase[Any, Any] | None = None,
    ) -> None:
        super().__init__(producer, codec=codec, server=server)
        self._pacer = Pacer()
        #: Interrupts a running ``pipe`` when the abort fires (set while one runs).
        self._interrupt: Callable[[], None] | None = None
        self._signals()
        producer.on_abort = self._on_abort

    @abc.abstractmethod
    def _signals(self) -> None:
        """Make ``aborted`` and the writable signal (hooked to the producer's
        ``on_writable``); supplied by each backend."""

    def _on_abort(self) -> None:
        self.aborted.set()
        if self._interrupt is not None:
            self._interrupt()

    @abc.abstractmethod
    def _interrupting(self) -> contextlib.AbstractAsyncContextManager[None]:
        """A scope that ``_interrupt`` cancels, and that swallows that cancellation (and
        only that one); supplied by each backend."""

    @abc.abstractmethod
    async def write(self, value: _V) -> None:
        """Supplied by each backend."""

    async def pipe(self, source: AsyncIterable[_V] | Iterable[_V], *, end: bool = True) -> int:
        """Write every item of ``source`` (an async or a plain iterable) with back-pressure,
        then end the stream (unless ``end`` is False). Returns how many were written.

        Stops early, quietly, when the stream is aborted (the last subscriber cancelled):
        what it awaits (the source's next item, a write) is cancelled at once, the source
        is closed (an async generator's ``aclose``; one interrupted inside an ``await`` sees
        the cancellation there, so its ``finally`` runs) and :attr:`abort_reason` says why.
        If the source or a write raises, the stream fails with the exception's code
        (:class:`StreamError` carries one; anything else gives HANDLER_FAILED) and the
        exception propagates."""
        written = 0
        items: AsyncIterator[_V] | Iterator[_V] = (
            aiter(source) if isinstance(source, AsyncIterable) else iter(source)
        )
        try:
            async with self._interrupting():
                if isinstance(items, AsyncIterator):
                    async for item in items:
                        if self.producer.aborted:
                            break
                        await self.write(item)
                        written += 1
                else:
                    for item in items:
                        if self.producer.aborted:
                            break
                        await self.write(item)
                        written += 1
        except Exception as exc:
            if not self._piped(exc):
                raise
        finally:
            await _close_source(items)
        if end and not self.producer.aborted:
            self.close()
        return written

    async def _serve(self, handler: Callable[..., Any], args: bytes) -> None:
        """Run an open handler: await a coroutine; pipe an async generator (or iterator)."""
        result = handler(self, args)
        if inspect.iscoroutine(result):  # the usual handler, without the ABC checks below
            await result
        elif isinstance(result, AsyncIterator | Iterator):
            await self.pipe(result)
        elif result is not None:
            await result


async def _then_done(result: Awaitable[Any], upload: ServerUploadBase) -> None:
    """An async bidirectional handler's run, then ``upload._handler_done``."""
    try:
        await result
    except BaseException as exc:
        upload._handler_done(exc)
        raise
    upload._handler_done(None)


class _Flag(Protocol):
    """An event an async producer's ``aborted`` is (asyncio's, trio's)."""

    def set(self) -> None: ...

    def is_set(self) -> bool: ...


async def _close_source(items: AsyncIterator[Any] | Iterator[Any]) -> None:
    close = getattr(items, "aclose", None)
    if close is not None:
        await close()
    else:
        close_sync = getattr(items, "close", None)
        if close_sync is not None:
            close_sync()


class ServerUploadBase(abc.ABC):
    """The non-waiting half of a backend's ``ServerUpload``."""

    def __init__(self, server: ServerBase[Any, Any], reader: UploadReader) -> None:
        self.reader = reader
        self._server = server
        #: The codec of the channel: a handler's return value is encoded with it.
        self.codec: Codec[Any] | None = server._codecs.get(reader.channel)

    @property
    def wants_result(self) -> bool:
        """Whether the uploader waits for a result: what the handler returns (spec R-UPR-7)."""
        return self.reader.wants_result

    @abc.abstractmethod
    def _serve(self, handler: Callable[[Any], Any]) -> Any:
        """Run ``handler(self)`` and give what it returns to :meth:`_returned` (each backend:
        a coroutine function, or a plain function for threads)."""

    def _returned(self, value: object) -> None:
        """The handler returned ``value``: the upload's result, if the uploader wants one
        (``bytes``, or a value of the channel's codec; None is an empty result)."""
        if not self.reader.wants_result:
            return
        if value is None:
            result = b""
        elif self.codec is not None:
            result = self.codec.encode(value)
        elif isinstance(value, bytes | bytearray | memoryview):
            result = bytes(value)
        else:
            raise StreamError(
                ErrorCode.INVALID_ARGUMENT, "an upload handler's result must be bytes or None"
            )
        with self._server._lock:
            if self.reader._result is None and not (
                self.reader.outcome is not None and self.reader.outcome[0]
            ):
                self.reader.set_result(result)

    @property
    def stream_id(self) -> str:
        """The upload's id."""
        return self.reader.stream_id

    @property
    def args(self) -> bytes:
        """The arguments the client sent with the upload."""
        return self.reader.args

    def cancel(self, code: int = ErrorCode.UPLOAD_CANCELLED, message: str = "") -> None:
        """Stop the upload (the client's writes fail with ``code``)."""
        with self._server._lock:
            self.reader.cancel(code, message)

    def _handler_done(self, exc: BaseException | None) -> None:
        """A bidirectional stream's handler is over: nobody reads the client's direction any
        more, so it is cancelled if still open (a client writing on would wait for credit
        forever)."""
        code, message = (
            (ErrorCode.UPLOAD_CANCELLED, "the handler returned")
            if exc is None
            else handler_failure(exc)
        )
        self.cancel(code, message)  # (a no-op once the upload is over)


class ClientBase(abc.ABC, Generic[_S, _SG]):
    """A client's loop-independent half. The backend implements ``_wake`` (flush the
    socket soon) and ``_subscription`` (wrap a :class:`SubscriptionCore`). ``_S`` is the
    backend's subscription of ``bytes``, ``_SG`` the one of ``bytes | Gap`` (``on_gap="item"``):
    ``subscribe`` and ``open`` return one or the other by overloads."""

    _lock: contextlib.AbstractContextManager[Any] = _NO_LOCK

    def __init__(self, core: ClientCore) -> None:
        self.core = core

    @overload
    def subscribe(
        self,
        channel: str,
        stream_id: str,
        *,
        after_seq: int = ...,
        tail: bool = ...,
        policy: OverflowPolicy = ...,
        priority: int = ...,
        on_gap: Literal["raise"] = ...,
    ) -> _S: ...

    @overload
    def subscribe(
        self,
        channel: str,
        stream_id: str,
        *,
        after_seq: int = ...,
        tail: bool = ...,
        policy: OverflowPolicy = ...,
        priority: int = ...,
        on_gap: Literal["item"],
    ) -> _SG: ...

    def subscribe(
        self,
        channel: str,
        stream_id: str,
        *,
        after_seq: int = 0,
        tail: bool = False,
        policy: OverflowPolicy = OverflowPolicy.DEFAULT,
        priority: int = 0,
        on_gap: GapMode = "raise",
    ) -> _S | _SG:
        """Subscribe to ``channel``/``stream_id`` after ``after_seq`` (or live only, with
        ``tail``). Iterate the result."""
        with self._lock:
            core = self.core.subscribe(
                channel,
                stream_id,
                after_seq=after_seq,
                tail=tail,
                policy=policy,
                priority=priority,
                on_gap=on_gap,
            )
            self._wake()
            return self._subscription(core)

    @overload
    def open(
        self,
        channel: str,
        args: bytes = ...,
        *,
        stream_id: str = ...,
        policy: OverflowPolicy = ...,
        priority: int = ...,
        on_gap: Literal["raise"] = ...,
        join: bool = ...,
    ) -> _S: ...

    @overload
    def open(
        self,
        channel: str,
        args: bytes = ...,
        *,
        stream_id: str = ...,
        policy: OverflowPolicy = ...,
        priority: int = ...,
        on_gap: Literal["item"],
        join: bool = ...,
    ) -> _SG: ...

    def open(
        self,
        channel: str,
        args: bytes = b"",
        *,
        stream_id: str = "",
        policy: OverflowPolicy = OverflowPolicy.DEFAULT,
        priority: int = 0,
        on_gap: GapMode = "raise",
        join: bool = False,
    ) -> _S | _SG:
        """Ask ``channel`` to start a stream with ``args``, subscribed from its first chunk.
        With ``join`` (and a ``stream_id``), if that stream is running already the request
        joins it from its first chunk instead of failing with STREAM_EXISTS: two requesters
        of the same answer share one producer (``subscription.joined`` says which happened
        once the first item or the end arrives)."""
        with self._lock:
            core = self.core.subscribe(
                channel,
                stream_id,
                open_args=args,
                policy=policy,
                priority=priority,
                on_gap=on_gap,
                join=join,
            )
            self._wake()
            return self._subscription(core)

    def statistics(self) -> ClientStatistics:
        """The client's counters (a snapshot)."""
        with self._lock:
            return self.core.statistics()

    def _query(self, request: QueryRequest, notify: Callable[[], None]) -> QueryCore:
        """Send a status, list or delete request (the backend waited for a ready connection
        and waits for ``done``)."""
        with self._lock:
            q = self.core.query(request, notify)
            self._wake()
            return q

    @abc.abstractmethod
    def _wake(self) -> None:
        """Supplied by each backend."""

    @abc.abstractmethod
    def _subscription(self, core: SubscriptionCore) -> _S | _SG:
        """Supplied by each backend."""


class Uploads(Generic[_UP]):
    """The ``upload`` call of the backends' clients (mixed into a :class:`ClientBase`): the
    backend names its upload class in ``_upload_type``."""

    _upload_type: type[_UP]

    def upload(
        self,
        channel: str,
        stream_id: str = "",
        args: bytes = b"",
        *,
        resumable: bool = False,
        result: bool = False,
    ) -> _UP:
        """An upload, used as ``async with client.upload(...) as up`` (the thread backend:
        ``with``). ``resumable``: it survives a reconnect, going on from what the server took
        (the server must announce it, else INVALID_STATE; docs/channels.md); ``result``:
        ``up.result()`` after the block returns what the server's handler returned (async
        backends: ``await up.result()``)."""
        client = cast("ClientBase[Any, Any]", self)
        return self._upload_type(
            client, channel, stream_id, args, resumable=resumable, result=result
        )


class Bidis(Generic[_BI]):
    """The ``bidi`` call of the backends' clients (mixed into a :class:`ClientBase`): the
    backend names its bidirectional stream class in ``_bidi_type``."""

    _bidi_type: type[_BI]

    def bidi(
        self,
        channel: str,
        args: bytes = b"",
        *,
        stream_id: str = "",
        policy: OverflowPolicy = OverflowPolicy.DEFAULT,
        priority: int = 0,
    ) -> _BI:
        """A bidirectional stream on ``channel`` (whose server registered ``on_bidi``), used
        as ``async with client.bidi(...) as stream`` (the thread backend: ``with``): it writes
        the client's direction and iterates the server's (docs/channels.md)."""
        client = cast("ClientBase[Any, Any]", self)
        return self._bidi_type(client, channel, stream_id, args, policy=policy, priority=priority)


class AsyncQueries(abc.ABC):
    """The status, list and delete calls of the asyncio and trio clients; each supplies
    ``_ask``: wait for a ready connection, send the query, wait for its answer."""

    async def status(self, channel: str, stream_id: str) -> StreamEntry:
        """The state of ``channel``/``stream_id`` without subscribing: MISSING, OPEN (with
        its seqs), ENDED, FAILED or ABORTED (with the code). Raises :class:`StreamError`
        if the server refuses (FORBIDDEN, UNKNOWN_CHANNEL...)."""
        return (await self._ask(QueryRequest(QueryOp.STATUS, channel, stream_id))).entry()

    async def list_streams(
        self,
        channel: str,
        *,
        status: StreamState | Iterable[StreamState] | None = None,
        after: str = "",
        limit: int = 100,
    ) -> StreamPage:
        """A page of ``channel``'s streams in id order after ``after``, those in ``status``
        (one state or several; None: all), at most ``limit``; pass ``page.next`` as
        ``after`` for the next page (empty: none)."""
        request = QueryRequest(QueryOp.LIST, channel, after, state_mask(status), limit)
        return (await self._ask(request)).page()

    async def delete(self, channel: str, stream_id: str) -> StreamEntry:
        """Delete ``channel``/``stream_id`` (if the channel lets clients delete): its
        readers end with STREAM_DELETED. Returns the entry as it was."""
        return (await self._ask(QueryRequest(QueryOp.DELETE, channel, stream_id))).entry()

    @abc.abstractmethod
    async def _ask(self, request: QueryRequest) -> QueryCore:
        """Supplied by each async backend."""


class SubscriptionBase(Generic[_T]):
    """The non-waiting half of a backend's ``Subscription``; ``_T`` is what it hands out
    (``bytes``, or ``bytes | Gap`` under ``on_gap="item"``)."""

    def __init__(self, client: ClientBase[Any, Any], core: SubscriptionCore) -> None:
        self._client = client
        self._core = core

    @property
    def seq(self) -> int:
        """The seq of the last chunk (or gap end) handed out."""
        return self._core.seq

    @property
    def stream_id(self) -> str:
        """The stream id (known for an open once it is accepted)."""
        return self._core.stream_id

    @property
    def joined(self) -> bool:
        """For an ``open(..., join=True)``: whether it joined a running stream rather than
        starting one (known once it is accepted)."""
        return self._core.joined

    @property
    def overflows(self) -> int:
        """How many overflow warnings this subscription had: gaps of chunks the server
        dropped because it fell behind (drop_oldest). A WARNING record goes to the
        ``streamproto.transports`` logger too, at most one per 10 seconds per subscription."""
        return self._core.overflows

    @property
    def recent_overflows(self) -> tuple[Overflow, ...]:
        """The last 16 overflow warnings, oldest first: the same seqs as their gaps."""
        with self._client._lock:
            return tuple(self._core.recent_overflows)

    @property
    def on_overflow(self) -> Callable[[Overflow], None] | None:
        """Called with an :class:`streamproto.Overflow` when an overflow gap arrives (before
        the iterator hands the gap out). It runs in the client's loop (thread backend: its
        I/O thread, under its lock): keep it short and do not block."""
        return self._core.on_overflow

    @on_overflow.setter
    def on_overflow(self, callback: Callable[[Overflow], None] | None) -> None:
        with self._client._lock:
            self._core.on_overflow = callback

    def _use(self, codec: Codec[Any]) -> None:
        """Decode payloads with ``codec`` from now on (see the backends' ``decoded``)."""
        with self._client._lock:
            self._core.codec = codec

    def _batch_poll(self, max_chunks: int | None) -> Callable[[], list[Any] | None]:
        """The poll of a ``batches`` iterator (checks ``max_chunks``)."""
        if max_chunks is None:
            limit = sys.maxsize
        elif isinstance(max_chunks, int) and max_chunks > 0:
            limit = max_chunks
        else:
            raise LocalProtocolError(
                ErrorCode.INVALID_ARGUMENT, f"max_chunks must be a positive int: {max_chunks!r}"
            )
        return functools.partial(self._core.poll_many, limit)

    def _hand_out(self, part: tuple[_Run, int]) -> Iterator[bytes]:
        """Hand out a slice found by :meth:`SubscriptionCore.take_slice` a chunk per step,
        without a poll each: ``seq`` as each goes, the credit as the last goes (as ``poll``
        would). What is not handed out stays in the buffer for the next reader; the slice
        stops when another reader took from the run or the subscription was cancelled. The
        credit of chunks handed out before it stopped is owed when it stops (an iterator
        left behind mid-slice: when it is closed)."""
        core = self._core
        run, end = part
        chunks = run.chunks
        base = run.seq
        start = i = run.pos
        try:
            while i < end - 1:
                i += 1
                run.pos = i
                core.seq = base + i - 1
                yield chunks[i - 1]
                if run.pos != i or core.cancelled:
                    return
            with self._client._lock:
                core.handed_slice(run, start, end, last=True)
                if core.reported:  # the credit it returned goes out
                    core.reported = False
                    self._client._wake()
            i = start  # (accounted)
            yield chunks[end - 1]
        finally:
            if i > start and not core.cancelled:  # stopped early: what went out is owed
                with self._client._lock:
                    core.handed_slice(run, start, i, last=False)

    def close(self, *, unsubscribe: bool = False) -> None:
        """Stop: CANCEL (or UNSUBSCRIBE) unless the stream is already over."""
        with self._client._lock:
            if not self._core.closed:
                self._core.cancel(unsubscribe=unsubscribe)
                self._client._wake()

    def _stopped(self, exc: BaseException | None) -> bool:
        """An iterator of this subscription stopped: it ended or was left (``exc`` None), or
        a step raised ``exc``. A :class:`GapError` (``on_gap="raise"``) leaves the
        subscription open, so that another loop goes on after the gap; anything else closes
        it. Returns whether it stays open."""
        if isinstance(exc, GapError):
            return True
        self.close()
        return False

    @contextlib.contextmanager
    def _iterating(self) -> Iterator[None]:
        """Around the loop of a generator over the subscription: :meth:`_stopped` as the
        loop ends, raises or is left (the generator closed)."""
        try:
            yield
        except BaseException as exc:
            self._stopped(exc)
            raise
        self._stopped(None)


class UploadBase:
    """The non-waiting half of a backend's client ``Upload``."""

    def __init__(
        self,
        client: ClientBase[Any, Any],
        channel: str,
        stream_id: str,
        args: bytes,
        *,
        resumable: bool = False,
        result: bool = False,
    ) -> None:
        self._client = client
        self._args = (channel, stream_id, args)
        self._resumable = resumable
        self._wants_result = result
        self._core: UploadCore | None = None
        self._made()

    def _made(self) -> None:
        """Where a backend sets up its wakeup primitive, at the end of ``__init__``."""

    @property
    def stream_id(self) -> str:
        """The upload's id (the server's choice when none was given)."""
        return self._core.stream_id if self._core is not None else self._args[1]

    def _begin(self, notify: Callable[[], None]) -> UploadCore:
        """Send the UPLOAD request (the client must be ready)."""
        with self._client._lock:
            core = self._client.core.upload(
                *self._args, resumable=self._resumable, result=self._wants_result
            )
            core.notify = notify
            self._core = core
            self._client._wake()
            return core

    def _started(self) -> UploadCore:
        if self._core is None:
            raise StreamError(ErrorCode.INVALID_STATE, "use the upload as a context manager")
        return self._core

    def _result(self) -> bytes:
        """The result of a settled upload (raises its error)."""
        core = self._started()
        if core.error is not None:
            raise core.error
        return core.result

    def _finish(self, exc: BaseException | None) -> None:
        """Leaving the block: END, or ERROR with the exception's code."""
        if self._core is not None:
            with self._client._lock:
                self._core.finish(exc)
                self._client._wake()


class BidiBase(UploadBase):
    """The non-waiting half of a backend's client ``Bidi``: one handle that carries the
    client's chunks as an upload does and the server's as an opened stream does. Each
    direction ends on its own: ``end`` (or leaving the block) ends the client's, the server's
    ends when its iterator does."""

    def __init__(
        self,
        client: ClientBase[Any, Any],
        channel: str,
        stream_id: str,
        args: bytes,
        *,
        policy: OverflowPolicy = OverflowPolicy.DEFAULT,
        priority: int = 0,
        on_gap: GapMode = "raise",
    ) -> None:
        super().__init__(client, channel, stream_id, args)
        self._options = (policy, priority, on_gap)
        self._reader: SubscriptionBase[Any] | None = None

    def _begin(self, notify: Callable[[], None]) -> UploadCore:
        """Send the bidirectional OPEN (the client must be ready)."""
        with self._client._lock:
            policy, priority, on_gap = self._options
            core, sub = self._client.core.bidi(
                *self._args, policy=policy, priority=priority, on_gap=on_gap
            )
            core.notify = notify
            self._core = core
            self._reader = self._client._subscription(sub)
            self._client._wake()
            return core

    def _incoming(self) -> SubscriptionBase[Any]:
        """The server's direction (the backend's subscription)."""
        if self._reader is None:
            raise StreamError(ErrorCode.INVALID_STATE, "use the stream as a context manager")
        return self._reader

    @property
    def seq(self) -> int:
        """The seq of the last chunk of the server's direction handed out."""
        return 0 if self._reader is None else self._reader.seq

    def _end(self) -> None:
        """End the client's direction now: END goes out after the queued chunks; the
        server's direction runs on. Raises the direction's error if the server cancelled it."""
        with self._client._lock:
            self._started().end()
            self._client._wake()

    def _close(self, exc: BaseException | None) -> None:
        """Leaving the block: the client's direction ends (ERROR with the exception's code if
        one is raised) unless it is over already, and the server's is cancelled unless it
        ended."""
        core = self._core
        if core is None:
            return
        with self._client._lock:
            if not core.done and core.error is None:
                core.finish(exc)
                self._client._wake()
        if self._reader is not None:
            self._reader.close()


if TYPE_CHECKING:

    class _AsyncUpload(UploadBase):
        # What an async backend's upload class gives the Bidi it is mixed into (it follows
        # AsyncBidiBase in the Bidi's bases); a base for the type checker only.
        async def __aenter__(self) -> Any: ...

        async def _drained(self) -> UploadCore: ...

else:
    _AsyncUpload = object


class AsyncBidiBase(BidiBase, _AsyncUpload):
    """What the ``Bidi`` of an async backend shares: ``async with`` and ``end``. The backend's
    ``Bidi`` puts it before its upload class in its bases (``class Bidi(AsyncBidiBase,
    Upload)``), whose ``__aenter__`` (send the OPEN, wait for the accept) and ``_drained``
    (wait until the upload is over) it uses."""

    async def __aenter__(self) -> Self:
        await super().__aenter__()
        return self

    async def end(self) -> None:
        """End the client's direction (END follows what was written); the server's direction
        runs on, to be read to its end."""
        self._end()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._close(exc)
        if exc is None:  # the client's direction goes out in full (or was cut: no raise)
            await self._drained()
