"""The hub: the server's registry of channels, streams, sessions and uploads.

Rules for this file:

1. Pure, like the connection: time comes from an injected ``clock``, ids and tokens from an
   injected ``ids`` source, I/O from nobody. The adapters feed it events and flush the
   connections it wakes.
2. History lives in the :class:`ReplayStore`; the hub keeps only who listens where, and each
   subscription's cursor (the last seq handed to its connection).
3. A subscription is *catching up* while its cursor is behind the stream: the hub pulls history
   from the store as fast as the connection has room (never past it, so replay cannot trip an
   overflow policy), and the subscription goes *live* when it reaches the end. Live
   subscriptions get each chunk as it is written; their connection applies the overflow
   policy.
4. Every request gets exactly one answer (accept or reject with a code); a late subscriber to a
   finished stream gets its chunks and then the same END or ERROR.
5. Leave, cancel and disconnect differ: only a cancel (or a disconnect that expires under a
   channel whose rule says so) can fire the producer's abort signal, and only when it removes
   the stream's last subscriber.
6. With a shared store (``store.shared``, see ``_store.py`` rule 5) a stream may be produced
   in another process. A subscribe, STATUS or DELETE naming a stream the hub does not know
   waits for the answer to a :class:`Lookup` effect (a DELETE then refuses a stream found
   there: it is another process's); a stream found that way is *remote*: it has no
   producer here, its subscriptions stay catching up (they read the local cache as it is
   filled and are pumped on :class:`StreamAppended`), and it is let go when its last local
   listener leaves, or released as soon as it ends deleted (STREAM_DELETED). A DELETE of a
   stream produced here also erases it from the store (:class:`Erase`), so no process finds
   it afterwards. The last local cancel under the ABORT rule becomes a
   :class:`CancelRemote` effect, for remote and local streams alike, because listeners in
   other processes count too; the producer's process aborts on :class:`AbortRequested`.
   An OPEN is accepted (and its handler called) only once the store confirmed the stream's
   claim (:class:`Claim`, answered by :class:`StreamClaimed`), so a client that has its
   ACCEPT can subscribe through any process; a refused claim rejects the OPEN with the
   store's code.
"""

from __future__ import annotations

import enum
import heapq
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from itertools import accumulate
from typing import Any, Final, cast

import attrs

from . import _access
from ._access import AccessRequest, Authenticate, Authorize, RequestKind
from ._connection import Connection, Role, WriteResult
from ._errors import ErrorCode, ErrorKind, LocalProtocolError, StreamProtoError, is_application_code
from ._events import (
    CancelRequested,
    ConnectionTerminated,
    DeleteRequested,
    Event,
    HandshakeRequested,
    ListRequested,
    OpenRequested,
    OverflowWarning,
    StatusRequested,
    SubscribeRequested,
    Unsubscribed,
    UploadData,
    UploadEnded,
    UploadFailed,
    UploadRequested,
    Writable,
)
from ._frames import Feature, GapReason, OverflowPolicy, StreamEntry, StreamState
from ._names import valid_channel, valid_stream_id
from ._overflow import Overflow, OverflowLog, held_back
from ._state import ConnState
from ._store import (
    CancelRemote,
    Claim,
    Erase,
    Key,
    Lookup,
    MemoryStore,
    Outcome,
    ReplayStore,
    StoreEvent,
    StoreFailed,
    StoreRequest,
    StreamAppended,
    StreamClaimed,
    StreamInfo,
    StreamLoaded,
    StreamStatus,
    Window,
)

__all__ = [
    "AbortReason",
    "AbortRule",
    "BidiHandler",
    "Channel",
    "ChannelOptions",
    "DisconnectRule",
    "Hub",
    "HubStatistics",
    "Peer",
    "Producer",
    "ProducerStatistics",
    "UploadReader",
    "handler_failure",
]

log = logging.getLogger("streamproto.hub")

# Enum members the per-chunk paths compare with, as module globals (see _connection.py).
_BLOCK: Final = OverflowPolicy.BLOCK
_ACCEPTED: Final = WriteResult.ACCEPTED
_BLOCKED: Final = WriteResult.BLOCKED
_FAILED: Final = WriteResult.FAILED

#: Chunks read from the store per step of a catch-up.
REPLAY_BATCH = 256
#: Entries per page of a stream listing at most: 100 entries of the longest ids fit in the
#: smallest frame any peer accepts (16384 bytes).
MAX_PAGE = 100
_DELETED = "the stream was deleted"
#: The requests that may wait for a shared store's lookup of a stream (rule 6).
_LookedUp = SubscribeRequested | StatusRequested | DeleteRequested
_STATES: Final = {
    StreamStatus.ENDED: StreamState.ENDED,
    StreamStatus.FAILED: StreamState.FAILED,
    StreamStatus.ABORTED: StreamState.ABORTED,
}

#: A run of held writes (see :meth:`Hub.flush_writes`) is delivered early once it holds this
#: many chunks or bytes, so what a producer holds stays bounded however long it writes
#: without yielding (the adapters' producers yield at the same bounds).
HOLD_CHUNKS = 512
HOLD_BYTES = 256 * 1024


class AbortRule(enum.Enum):
    """What a channel does when the last subscriber of a stream cancels."""

    ABORT = "abort"  # fire the producer's abort signal
    CONTINUE = "continue"  # let the producer run (late subscribers replay it)


class DisconnectRule(enum.Enum):
    """What a subscription of a session whose grace period expired counts as."""

    LEAVE = "leave"
    CANCEL = "cancel"


@attrs.frozen
class AbortReason:
    """Why a producer's abort signal fired: ``code`` CANCELLED when the last subscriber
    cancelled (the CANCEL frame carries no code or message of its own, so this is what the
    protocol has: the rule that fired, and the seq it fired at, in ``message``), or the
    store's code (PRODUCER_LOST, STORE_UNAVAILABLE, STALE_GENERATION...) when a shared store
    could not keep the stream. Subscribers see the same code and message in their ERROR."""

    code: int
    message: str


def handler_failure(exc: BaseException) -> tuple[int, str]:
    """The ``(code, message)`` a stream or upload fails with when its handler raises ``exc``:
    the exception's own code when it carries one a stream may end with (a
    :class:`StreamProtoError` with an application code, 1000-65535, or a stream code such as
    NOT_ALLOWED), else HANDLER_FAILED with the exception's type and text."""
    if isinstance(exc, StreamProtoError):
        code = exc.code
        try:
            sendable = is_application_code(code) or ErrorCode(code).kind is ErrorKind.STREAM
        except ValueError:
            sendable = False
        if sendable:
            return code, exc.message
    return ErrorCode.HANDLER_FAILED, f"{type(exc).__name__}: {exc}"


def _non_negative(_inst: object, attr: attrs.Attribute[Any], value: float) -> None:
    if value < 0:
        raise LocalProtocolError(ErrorCode.INVALID_ARGUMENT, f"{attr.name} must be >= 0")


@attrs.frozen(kw_only=True)
class ChannelOptions:
    """A channel's behaviour and limits."""

    #: History retained per stream for replay and resume.
    replay: Window = attrs.field(factory=Window)
    #: How long a finished stream stays subscribable (seconds).
    retention: float = attrs.field(default=60.0, validator=_non_negative)
    #: Finished streams remembered at most; the oldest is released first.
    max_closed_streams: int = attrs.field(default=1024, validator=_non_negative)
    #: Policy for subscriptions (SUBSCRIBE) that ask for DEFAULT.
    default_policy: OverflowPolicy = OverflowPolicy.DROP_OLDEST
    #: Policy for OPEN requests that ask for DEFAULT. BLOCK, because the stream an OPEN
    #: starts has one reader who asked for every chunk of it: a requester slightly slower
    #: than its producer would otherwise lose most of the stream as one overflow gap.
    open_policy: OverflowPolicy = OverflowPolicy.BLOCK
    #: Run-or-join: an OPEN naming a running stream joins it (subscribed from seq 1, the
    #: handler not called) as if it had the JOIN flag, instead of getting STREAM_EXISTS.
    join_running: bool = False
    #: Whether clients may delete this channel's streams (DELETE; after authorization).
    allow_delete: bool = False
    #: Idle TTL of an open stream, in seconds (0: none): a stream with no write for this long
    #: fails with STREAM_EXPIRED and its producer's abort signal fires. Each write refreshes it.
    idle_ttl: float = attrs.field(default=0.0, validator=_non_negative)
    #: What the last subscriber's cancel does.
    on_last_cancel: AbortRule = AbortRule.ABORT
    #: What a subscription of an expired session counts as.
    on_disconnect: DisconnectRule = DisconnectRule.LEAVE
    #: Open streams at most.
    max_streams: int = attrs.field(default=10_000, validator=_non_negative)
    #: Open uploads at most.
    max_uploads: int = attrs.field(default=1_000, validator=_non_negative)
    #: Answer a request the authorization hook refuses exactly as a request naming an unknown
    #: channel is answered (UNKNOWN_CHANNEL, same message), so names cannot be probed.
    conceal: bool = False


@attrs.frozen
class HubStatistics:
    """Counters of a hub."""

    channels: int
    open_streams: int
    retained_streams: int
    subscriptions: int
    parked_subscriptions: int
    sessions: int
    uploads: int


@attrs.frozen
class ChannelStatistics:
    """Counters of one channel (see :meth:`Channel.statistics`)."""

    open_streams: int
    retained_streams: int
    #: Live and catching-up subscriptions to its streams.
    subscriptions: int
    #: Subscriptions held for disconnected sessions.
    parked_subscriptions: int
    uploads: int


@attrs.frozen
class ProducerStatistics:
    """Counters of a producer (see :meth:`Producer.statistics`)."""

    #: Overflow warnings: OVERFLOW gaps sent to its subscribers (drop_oldest policy).
    overflows: int
    #: The seqs those gaps covered, summed over subscribers.
    dropped: int


OpenHandler = Callable[["Producer", bytes], None]
UploadHandler = Callable[["UploadReader"], None]
#: ``on_bidi(producer, reader, args)``: the two directions of one bidirectional stream.
BidiHandler = Callable[["Producer", "UploadReader", bytes], None]


class _Sub:
    """One connection's subscription to one stream."""

    __slots__ = ("cursor", "handle", "held", "live", "peer", "policy", "stream")

    def __init__(self, peer: Peer, handle: int, stream: _Stream, cursor: int) -> None:
        self.peer = peer
        self.handle = handle
        self.stream = stream
        self.cursor = cursor  # the last seq handed to the connection (or skipped by a gap)
        self.live = False
        self.policy = OverflowPolicy.DROP_OLDEST
        self.held = False  # counted in its stream's n_hold


def _cursor(sub: _Sub) -> int:
    return sub.cursor


class _Stream:
    """The hub's view of one stream: who listens, and its producer."""

    __slots__ = (
        "blocked",
        "catching",
        "channel",
        "closed_at",
        "generation",
        "held",
        "held_bytes",
        "key",
        "live",
        "n_block",
        "n_hold",
        "parked",
        "producer",
        "remote",
        "reserved",
        "room_bytes",
        "room_chunks",
        "room_max",
        "run_peers",
        "touched",
    )

    def __init__(self, channel: Channel, key: tuple[str, str], generation: int) -> None:
        self.channel = channel
        self.key = key
        self.generation = generation
        self.live: list[_Sub] = []
        self.catching: set[_Sub] = set()
        self.parked = 0  # subscriptions held by disconnected sessions
        self.n_block = 0  # live subscriptions with the BLOCK policy
        # BLOCK subscriptions catching up or parked: the producer waits for them (R-OVF-6)
        self.n_hold = 0
        self.blocked = False  # the producer was told BLOCKED and waits for on_writable
        self.producer: Producer | None = None
        self.closed_at = -1.0
        self.remote = False  # produced in another process (a shared store's stream)
        self.touched = 0.0  # the time of the last write (with an idle TTL)
        self.held: list[bytes] | None = None  # written, not yet delivered (Hub.flush_writes)
        self.held_bytes = 0
        # A held run with BLOCK subscribers holds room in their queues (Hub._reserve): it
        # may grow to ``room_chunks`` chunks of ``room_bytes`` bytes, none over ``room_max``
        # (counted when its second chunk comes: -1 until then).
        self.reserved = False
        self.room_chunks = 0
        self.room_bytes = 0
        self.room_max = 0
        self.run_peers: list[Peer] = []  # the connections of its held run's subscribers

    def listeners(self) -> int:
        return len(self.live) + len(self.catching) + self.parked


class Producer:
    """The writing end of a stream, from :meth:`Channel.start` or an open handler.

    ``write`` returns ACCEPTED, or BLOCKED when a subscriber under the BLOCK policy has no room
    (nothing was written; ``on_writable`` is called when it may be retried). ``write_many``
    writes a burst the same way for much less per chunk. ``aborted`` and
    ``on_abort`` tell the producer to stop: the last subscriber cancelled, and the hub has
    finished the stream with the outcome ABORTED (R-SUB-50). After that ``write`` raises
    STREAM_CLOSED, while ``close`` and ``fail`` do nothing, so a handler that stops on the
    signal may still end the stream as it always does. With a shared store the signal also
    fires when the store cannot keep the stream (``StoreFailed``: fenced by a newer
    generation, the store unreachable...): the stream failed with that code, and ``write``
    raises it. ``on_overflow`` hears of each subscriber that fell behind under drop_oldest.
    """

    def __init__(self, hub: Hub, stream: _Stream) -> None:
        self._hub = hub
        self._stream = stream
        self._closed = False
        self._aborted_because = ""
        self._closed_code: int = ErrorCode.STREAM_CLOSED
        self.aborted = False
        #: Why the abort signal fired (None until it does).
        self.abort_reason: AbortReason | None = None
        #: Called once when the abort signal fires (the stream is already finished then).
        self.on_abort: Callable[[], None] | None = None
        #: Called when a write that was BLOCKED may be retried (also when the last blocking
        #: subscriber leaves: after an abort, the retry raises STREAM_CLOSED; and when the hub
        #: ends the stream, deleted, expired or lost: the retry raises that code).
        self.on_writable: Callable[[], None] | None = None
        #: Called with an :class:`Overflow` when a subscriber under drop_oldest is sent the gap
        #: of the chunks dropped for it (once per gap: at most once per its credit window).
        #: A WARNING record also goes to the ``streamproto.hub`` logger, at most one per
        #: ``LOG_INTERVAL`` seconds per stream.
        self.on_overflow: Callable[[Overflow], None] | None = None
        self._overflows = 0
        self._dropped = 0
        self._overflow_log = OverflowLog()

    @property
    def channel(self) -> str:
        """The channel's name."""
        return self._stream.key[0]

    @property
    def stream_id(self) -> str:
        """The stream's id."""
        return self._stream.key[1]

    @property
    def generation(self) -> int:
        """The generation fencing this producer from a later stream with the same id."""
        return self._stream.generation

    @property
    def closed(self) -> bool:
        """True after ``close`` or ``fail``, and once the stream was aborted."""
        return self._closed

    @property
    def last_seq(self) -> int:
        """The seq of the last chunk written (0 before the first)."""
        self._hub._deliver_held()  # (every stream's: they keep their order)
        info = self._hub._store.status(self._stream.key)
        if info is None or info.generation != self._stream.generation:
            return 0
        return info.last_seq

    def statistics(self) -> ProducerStatistics:
        """Counters: the overflows of its subscribers."""
        return ProducerStatistics(overflows=self._overflows, dropped=self._dropped)

    def write(self, chunk: bytes) -> WriteResult:
        """Append ``chunk`` and deliver it to every live subscriber. Raises STREAM_CLOSED
        after close, fail or the abort, STALE_GENERATION if the id was reused."""
        if self._closed:
            self._check_open()  # raises
        return self._hub._write(self._stream, chunk if type(chunk) is bytes else bytes(chunk))

    def write_many(self, chunks: Iterable[bytes]) -> tuple[int, WriteResult]:
        """Write ``chunks`` in order, exactly as calling :meth:`write` for each in turn and
        stopping at the first BLOCKED would (the same seqs, bytes and events for every
        subscriber, under every overflow policy), for much less per chunk: one store step and
        one queueing step per subscriber while the batch fits everywhere.

        Returns ``(written, result)``: the first ``written`` chunks were written; ``result``
        is ACCEPTED when all were, else BLOCKED: ``chunks[written]`` and the rest were not,
        and ``on_writable`` is called when they may be offered again. Raises like ``write``.
        """
        self._check_open()
        self._hub._deliver_held()  # what was written came first, on every stream
        return self._hub._write_many(self._stream, list(map(bytes, chunks)))

    def close(self) -> None:
        """End the stream: subscribers get END after the last chunk. Does nothing once the
        stream was aborted (its outcome is recorded already)."""
        if self.aborted:
            return
        self._check_open()
        self._closed = True
        self._hub._finish(self._stream, Outcome(StreamStatus.ENDED))

    def fail(self, code: int, message: str = "") -> None:
        """Fail the stream with ``code`` (use application codes, 1000-65535): subscribers,
        now and late, get ERROR with this code and message after the last chunk. Does
        nothing once the stream was aborted (its outcome is recorded already)."""
        if self.aborted:
            return
        self._check_open()
        if not 0 < code <= 0xFFFF:
            raise LocalProtocolError(ErrorCode.INVALID_ARGUMENT, "code must be in 1..65535")
        self._closed = True
        self._hub._finish(self._stream, Outcome(StreamStatus.FAILED, code, message))

    def _check_open(self) -> None:
        if self._closed:
            why = self._aborted_because or "is already closed"
            raise LocalProtocolError(self._closed_code, f"stream {self.stream_id!r} {why}")

    def _overflowed(self, record: Overflow, now: float) -> None:
        self._overflows += 1
        self._dropped += record.dropped
        held = self._overflow_log.admit(record, now)
        if held is not None:
            log.warning(
                "%s/%s: seqs %d..%d (%d) dropped for session %s (handle %d), which fell behind%s",
                record.channel,
                record.stream_id,
                record.from_seq,
                record.to_seq,
                record.dropped,
                record.session_id,
                record.handle,
                held_back(held),
            )
        if self.on_overflow is not None:
            self.on_overflow(record)

    def _abort(self, why: str) -> None:
        """The last subscriber cancelled under the ABORT rule: finish the stream with its own
        outcome (R-SUB-50), then tell the producer."""
        reason = f"aborted at seq {self.last_seq}: {why}"
        self.aborted = True
        self.abort_reason = AbortReason(ErrorCode.CANCELLED, reason)
        self._closed = True
        self._aborted_because = f"was {reason}"
        self._hub._finish(self._stream, Outcome(StreamStatus.ABORTED, ErrorCode.CANCELLED, reason))
        if self.on_abort is not None:
            self.on_abort()

    def _end_by_hub(self, code: int, message: str) -> None:
        """The hub ends an open stream for its own reason (deleted, idle TTL): it fails with
        ``code``, writes raise it, and the abort signal tells the producer to stop."""
        outcome = Outcome(StreamStatus.FAILED, code, message)
        self._hub._store.finish(self._stream.key, self._stream.generation, outcome)
        self._stop(outcome, f"failed: {message}")

    def _listened(self) -> bool:
        return bool(self._stream.listeners())

    def _lost(self, code: int, message: str) -> None:
        """The shared store cannot keep the stream (:class:`StoreFailed`): it fails with
        ``code``, writes raise it, and the abort signal tells the producer to stop."""
        self._stop(Outcome(StreamStatus.FAILED, code, message), f"failed in the store: {message}")

    def _stop(self, outcome: Outcome, because: str) -> None:
        self.aborted = True
        self.abort_reason = AbortReason(outcome.code, outcome.message)
        self._closed = True
        self._closed_code = outcome.code
        self._aborted_because = because
        waiting = self._stream.blocked  # a write waits for room, which will not come now
        self._hub._closed_stream(self._stream, outcome)
        if waiting and self.on_writable is not None:
            self.on_writable()  # it retries, and raises the stream's error
        if self.on_abort is not None:
            self.on_abort()


class UploadReader:
    """The server's end of an upload: chunks in order, then the outcome.

    Read with :meth:`read_nowait`; ``on_readable`` is called when chunks or the outcome arrive.
    On a server connection with ``Config(auto_credit=False)`` (what the adapters use), reading
    returns credit to the uploader, so an upload never buffers more than its window. With auto
    credit the connection returns credit as it receives; a reader that falls a whole window
    behind then has its upload cancelled with RESOURCE_EXHAUSTED, so memory stays bounded.
    """

    def __init__(self, hub: Hub, channel: str, stream_id: str, args: bytes) -> None:
        self._hub = hub
        self.channel = channel
        self.stream_id = stream_id
        self.args = args
        self._chunks: list[bytes] = []
        self._head = 0
        self._peer: Peer | None = None
        self._handle = 0
        #: The uploader asked to resume it after a disconnect (flag RESUMABLE, section 9.1).
        self.resumable = False
        #: The uploader waits for a result after END (flag RESULT): see :meth:`set_result`.
        self.wants_result = False
        self._result: bytes | None = None
        self._received = 0  # the last seq received, on any connection
        self._parked: _Session | None = None  # the session holding it while disconnected
        self._finishing = False  # its handle ended and waits for the result
        #: None while open; ``(0, "")`` after END; ``(code, message)`` after a failure.
        self.outcome: tuple[int, str] | None = None
        #: Called when chunks or the outcome arrive.
        self.on_readable: Callable[[], None] | None = None
        # The client's direction of a bidirectional stream: its id is the stream's, not one
        # of the channel's upload ids.
        self._bidi = False

    @property
    def attached(self) -> bool:
        """Whether an uploader is connected to this reader."""
        return self._peer is not None

    def read_nowait(self) -> bytes | None:
        """The next chunk, or None if none is buffered (check ``outcome`` for the end)."""
        if self._head >= len(self._chunks):
            return None
        chunk = self._chunks[self._head]
        self._head += 1
        if self._head == len(self._chunks):
            self._chunks.clear()
            self._head = 0
        peer = self._peer
        if peer is not None and not peer.conn.config.auto_credit:
            peer.conn.consume(self._handle, 1, len(chunk))
            self._hub._dirty.add(peer)
            self._hub._wake()
        return chunk

    def cancel(self, code: int = ErrorCode.UPLOAD_CANCELLED, message: str = "") -> None:
        """Stop the upload (UPLOAD_CANCEL to the uploader); the reader fails with ``code``.
        An upload that ended and waits for its result can still be cancelled (R-UPR-8)."""
        peer = self._peer
        if self.outcome is not None and (peer is None or not self.wants_result):
            return
        hub = self._hub
        if peer is not None:
            peer.conn.cancel_upload(self._handle, code, message)
            hub._detach_upload(peer, self._handle)
            hub._dirty.add(peer)
            hub._wake()
        elif self._parked is not None:  # a resume finds nothing now (UNKNOWN_UPLOAD)
            self._parked.uploads.pop((self.channel, self.stream_id))
            self._parked = None
            hub._release_upload_id(self)
        else:  # an expected upload that never came: the id is no longer expected
            hub._channels[self.channel]._expected.pop(self.stream_id, None)
        self._finish((code, message))

    def set_result(self, result: bytes) -> None:
        """The upload's result (the uploader asked for one, ``wants_result``): sent to the
        uploader in UPLOAD_RESULT once the upload ended, now if it has (R-UPR-7). At most
        16384 bytes, so that it fits a frame of any client. A result set while the uploader
        is away is sent when it resumes."""
        if not self.wants_result or self._result is not None:
            raise LocalProtocolError(
                ErrorCode.INVALID_STATE, "the uploader asked for no result, or it is set"
            )
        if len(result) > MAX_RESULT:
            raise LocalProtocolError(
                ErrorCode.INVALID_ARGUMENT, f"a result must be at most {MAX_RESULT} bytes"
            )
        self._result = result
        peer = self._peer
        if peer is not None and self._finishing:  # its handle waits for it
            self._hub._send_result(peer, self)
            self._hub._wake()

    @property
    def buffered(self) -> int:
        """Chunks received and not read yet."""
        return len(self._chunks) - self._head

    @property
    def _held(self) -> tuple[int, int]:
        """Chunks and bytes received and not read."""
        unread = self._chunks[self._head :]
        return len(unread), sum(map(len, unread))

    def _push(self, chunks: Iterable[bytes]) -> None:
        self._chunks.extend(chunks)
        self._notify()

    def _finish(self, outcome: tuple[int, str]) -> None:
        # Only open readers get here: a finished one is detached (and no longer expected).
        self.outcome = outcome
        self._peer = None
        self._notify()

    def _notify(self) -> None:
        if self.on_readable is not None:
            self.on_readable()


class Channel:
    """A named namespace of streams (``<namespace>:<name>``), from :meth:`Hub.register`."""

    def __init__(
        self,
        hub: Hub,
        name: str,
        options: ChannelOptions,
        on_open: OpenHandler | None,
        on_upload: UploadHandler | None,
        *,
        authorize: Authorize | None = None,
        on_bidi: BidiHandler | None = None,
    ) -> None:
        self._hub = hub
        self.name = name
        self.options = options
        self.on_open = on_open
        self.on_upload = on_upload
        self.on_bidi = on_bidi
        #: This channel's authorization hook (None: the hub's).
        self.authorize = authorize
        self._open: dict[str, _Stream] = {}
        self._closed: OrderedDict[str, _Stream] = OrderedDict()
        self._expected: dict[str, UploadReader] = {}
        self._uploads = 0
        # Ids of the channel's attached uploads: an id names one open upload at a time
        # (R-REQ-8). Uploads have their own namespace, apart from the outbound streams.
        self._upload_ids: set[str] = set()

    def start(self, stream_id: str | None = None) -> Producer:
        """Start a stream (``stream_id`` None: the hub picks one) and return its producer.
        Raises INVALID_NAME, STREAM_EXISTS (open already) or LIMIT_EXCEEDED."""
        return self._hub._start(self, stream_id)

    def expect_upload(self, stream_id: str | None = None) -> UploadReader:
        """Pre-allocate an upload id: a client's UPLOAD naming it is attached to the returned
        reader (and not passed to ``on_upload``)."""
        sid = self._hub._ids() if stream_id is None else stream_id
        if not valid_stream_id(sid):
            raise LocalProtocolError(ErrorCode.INVALID_NAME, f"invalid stream id {sid!r}")
        if sid in self._expected:
            raise LocalProtocolError(ErrorCode.STREAM_EXISTS, f"upload {sid!r} already expected")
        if sid in self._upload_ids:
            raise LocalProtocolError(ErrorCode.STREAM_EXISTS, f"upload {sid!r} is open")
        reader = UploadReader(self._hub, self.name, sid, b"")
        self._expected[sid] = reader
        return reader

    def status(self, stream_id: str) -> StreamEntry:
        """The state of ``stream_id`` (MISSING if the channel has no such stream), as a
        client's ``status`` would see it."""
        return self._hub._entry(self, stream_id)

    def list_streams(
        self, *, after: str = "", states: int = 0, limit: int = MAX_PAGE
    ) -> tuple[tuple[StreamEntry, ...], str]:
        """A page of the channel's streams: ids after ``after`` in id order, at most ``limit``
        (and :data:`MAX_PAGE`), whose state is in the mask ``states`` (``1 << StreamState``;
        0: any); and the cursor of the next page (empty: this is the last)."""
        return self._hub._list(self, after, states, limit)

    def delete(self, stream_id: str) -> StreamEntry:
        """Delete ``stream_id``: its readers end with ERROR STREAM_DELETED, its producer's
        abort signal fires (writes raise STREAM_DELETED) and its history is released, so it
        is MISSING afterwards. Returns the entry as it was (MISSING: nothing deleted)."""
        return self._hub._delete(self, stream_id)

    def producer(self, stream_id: str) -> Producer | None:
        """The producer of the open stream ``stream_id``, if any."""
        stream = self._open.get(stream_id)
        return None if stream is None else stream.producer

    def statistics(self) -> ChannelStatistics:
        """Counters (gauges): its streams, their subscriptions and its uploads."""
        streams = [*self._open.values(), *self._closed.values()]
        return ChannelStatistics(
            open_streams=len(self._open),
            retained_streams=len(self._closed),
            subscriptions=sum(len(s.live) + len(s.catching) for s in streams),
            parked_subscriptions=sum(s.parked for s in streams),
            uploads=self._uploads,
        )

    def _stream(self, stream_id: str) -> _Stream | None:
        stream = self._open.get(stream_id)
        return stream if stream is not None else self._closed.get(stream_id)


class Peer:
    """One server connection attached to the hub (see :meth:`Hub.attach`), listed by
    :meth:`Hub.peers` until it ends."""

    def __init__(
        self, hub: Hub, conn: Connection, wakeup: Callable[[], None], peer_id: str
    ) -> None:
        self.hub = hub
        self.conn = conn
        #: Its id in the hub's registry (:meth:`Hub.peer`), and in the adapter's logs.
        self.id = peer_id
        #: Called when the hub queued bytes on ``conn``: flush ``conn.data_to_send()``.
        self.wakeup = wakeup
        self.session: _Session | None = None
        self.subs: dict[int, _Sub] = {}
        # Subscriptions the hub ended whose handle still holds an OVERFLOW gap: its warning
        # comes when the gap is sent, and must still reach their producer.
        self._ending: dict[int, _Sub] = {}
        self.uploads: dict[int, UploadReader] = {}
        # Bidirectional OPENs whose client failed its direction before the hub accepted them
        # (an OPEN waiting for the store's claim): the outcome their reader starts with.
        self._failed_early: dict[int, tuple[int, str]] = {}
        self.closed = False

    @property
    def principal(self) -> object:
        """Who this connection authenticated as (what ``authenticate`` returned; None when
        anonymous or before the handshake)."""
        return None if self.session is None else self.session.principal

    def handle_events(self, events: Iterable[Event]) -> None:
        """Act on the events ``conn.receive_data`` / ``handle_timer`` returned."""
        self.hub.handle_events(self, events)

    def close(self, code: int = ErrorCode.NO_ERROR, message: str = "") -> None:
        """Send GOAWAY: with NO_ERROR the connection takes no new requests and ends once its
        open streams drained; any other code (or any code before the handshake is over)
        closes it now. The adapter is woken to write the GOAWAY and, once the connection is
        closed, to close its transport. Nothing happens if it is closed already."""
        if self.closed or self.conn.closed:
            return
        self.conn.goaway(code, message)
        self.hub._dirty.add(self)
        self.hub._wake()


class _Session:
    __slots__ = ("completed", "expires_at", "id", "parked", "peer", "principal", "token", "uploads")

    def __init__(self, session_id: str, token: str, principal: object) -> None:
        self.id = session_id
        self.token = token
        self.principal = principal  # fixed for the session's life: a resume must present it
        self.peer: Peer | None = None
        self.parked: dict[tuple[str, str], list[_Sub]] = {}
        #: Resumable uploads of a disconnected connection, by (channel, upload id).
        self.uploads: dict[tuple[str, str], UploadReader] = {}
        #: The last resumable uploads that completed, for a resume whose UPLOAD_RESULT was
        #: lost with its connection (R-UPR-6): at most ``Config.max_completed_uploads``,
        #: oldest forgotten first.
        self.completed: OrderedDict[tuple[str, str], UploadReader] = OrderedDict()
        self.expires_at = -1.0


#: The largest upload result the hub sends: the smallest frame any client accepts (R-UPR-7).
MAX_RESULT: Final = 16_384


def _same(owner: object, principal: object) -> bool:
    return owner is principal or owner == principal


def _reject_unknown_channel(conn: Connection, handle: int, name: str) -> None:
    # The one reply for an unknown channel: a concealed refusal must be byte-identical to it.
    conn.reject(handle, ErrorCode.UNKNOWN_CHANNEL, f"no channel {name!r}")


class _Idle:
    """The idle-TTL timer of an open stream."""

    __slots__ = ("stream",)

    def __init__(self, stream: _Stream) -> None:
        self.stream = stream


class _Call:
    __slots__ = ("fn",)

    def __init__(self, fn: Callable[[], None]) -> None:
        self.fn = fn


class Hub:
    """The server-side registry shared by all connections.

    ``clock`` returns the current time in seconds (monotonic); ``ids`` returns a fresh
    unguessable, URL-safe token each call (``transports.default_ids``, 128 random bits, in
    production; a counter in tests): session ids, resume tokens and server-chosen stream ids
    come from it. A disconnected session is kept for its connection's ``Config.session_grace``;
    a session remembers its last ``Config.max_completed_uploads`` completed resumable uploads
    (16 by default), for resumes whose result was lost with a connection (spec R-UPR-6).

    ``authenticate(auth)`` sees each HELLO's auth payload and returns the *principal* (any
    object identifying who connected; None is anonymous), kept with the session: a resume
    token resumes its session only for the same principal (``==``). It refuses by returning
    a :class:`Refuse` (GOAWAY with its code: AUTH_FAILED or an application code) or False;
    an ``int`` is read as a refusal with that code, as before principals. Without it every
    connection is anonymous.

    ``authorize(request)`` sees an :class:`AccessRequest` for every SUBSCRIBE, OPEN and
    UPLOAD (unless the channel has its own hook, see :meth:`register`) before anything else
    is checked, and returns True to allow, or a :class:`Refuse` (REJECT with its code: a
    stream or application code); any other answer, or an exception, refuses with FORBIDDEN.
    A channel with ``ChannelOptions(conceal=True)`` answers every refusal as an unknown
    channel is answered. See ``docs/security.md``.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float],
        ids: Callable[[], str],
        store: ReplayStore | None = None,
        authenticate: Authenticate | None = None,
        authorize: Authorize | None = None,
    ) -> None:
        self._clock = clock
        self._ids = ids
        self._store: ReplayStore = store if store is not None else MemoryStore()
        self._authenticate = authenticate
        self._authorize = authorize
        self._channels: dict[str, Channel] = {}
        self._peers: dict[str, Peer] = {}  # attached and not closed, by id, in attach order
        self._peer_seq = 0
        self._shutting_down = False
        self._sessions: dict[str, _Session] = {}  # by resume token
        self._timers: list[tuple[float, int, object]] = []
        self._timer_seq = 0
        self._dirty: set[Peer] = set()
        self._waking = False  # a _wake is draining _dirty (further up this call stack)
        self._held: list[_Stream] = []  # streams whose writes wait for flush_writes
        self._told = False  # on_writes_held was called, and flush_writes not since
        #: The connections where a held run holds room (see _reserve), and that run.
        self._room_held: dict[Peer, _Stream] = {}
        #: How many held runs have a subscriber on each connection (once per subscriber).
        self._run_peers: dict[Peer, int] = {}
        #: Set by an adapter that runs an event loop to let ``Producer.write`` hold chunks
        #: until :meth:`flush_writes`; called when the first is held after the adapter's last
        #: ``flush_writes`` (see there). An adapter that unsets it calls ``flush_writes``.
        self.on_writes_held: Callable[[], None] | None = None
        # The store's optional batch append (see ReplayStore).
        self._extend: Callable[[tuple[str, str], int, list[bytes]], int] | None = getattr(
            self._store, "extend", None
        )
        # A shared store's effects (``_store.py`` rule 5), the subscribes and status queries
        # waiting for the answer to a Lookup, and the OPENs waiting for their Claim (each
        # bounded by each connection's open requests).
        self._shared = self._store.shared
        self._requests: list[StoreRequest] = []
        self._lookups: dict[Key, list[tuple[Peer, _LookedUp]]] = {}
        self._claims: dict[Key, tuple[Peer, OpenRequested, OverflowPolicy]] = {}
        #: Called when :meth:`store_requests` has something new (a shared store's adapter
        #: sets it to wake the task or thread that carries the requests out).
        self.on_store_request: Callable[[], None] | None = None

    # -- registry -------------------------------------------------------------------------------

    def register(
        self,
        name: str,
        options: ChannelOptions | None = None,
        *,
        on_open: OpenHandler | None = None,
        on_upload: UploadHandler | None = None,
        on_bidi: BidiHandler | None = None,
        authorize: Authorize | None = None,
    ) -> Channel:
        """Register a channel. ``on_open(producer, args)`` serves OPEN requests (the requester
        is subscribed before it is called); ``on_upload(reader)`` serves UPLOAD requests;
        ``on_bidi(producer, reader, args)`` serves bidirectional OPENs (section 6.4): the
        producer writes the stream the requester is subscribed to, as for ``on_open``, and
        the reader reads what the requester sends on the same handle, as for ``on_upload``.
        ``authorize(request)`` decides this channel's requests instead of the hub's hook (a
        bidirectional OPEN is asked as an OPEN). Raises INVALID_NAME or CHANNEL_EXISTS."""
        if not valid_channel(name):
            raise LocalProtocolError(ErrorCode.INVALID_NAME, f"invalid channel name {name!r}")
        if name in self._channels:
            raise LocalProtocolError(ErrorCode.CHANNEL_EXISTS, f"channel {name!r} is registered")
        channel = Channel(
            self,
            name,
            options or ChannelOptions(),
            on_open,
            on_upload,
            authorize=authorize,
            on_bidi=on_bidi,
        )
        self._channels[name] = channel
        return channel

    def channel(self, name: str) -> Channel | None:
        """The registered channel ``name``, if any."""
        return self._channels.get(name)

    def channels(self) -> tuple[Channel, ...]:
        """Every registered channel, in registration order."""
        return tuple(self._channels.values())

    def attach(
        self,
        conn: Connection,
        wakeup: Callable[[], None] | None = None,
        *,
        peer_id: str | None = None,
    ) -> Peer:
        """Attach a server connection. Pass every event it returns to
        :meth:`Peer.handle_events`; ``wakeup`` is called when the hub queued bytes on it.
        ``peer_id`` names it in :meth:`peers` (the adapter's connection id, so logs and the
        registry agree); None: the hub numbers it ``p1``, ``p2``, ... An id in use raises
        INVALID_ARGUMENT."""
        if conn.role is not Role.SERVER:
            raise LocalProtocolError(ErrorCode.INVALID_ARGUMENT, "attach a server connection")
        if peer_id is None:
            self._peer_seq += 1
            peer_id = f"p{self._peer_seq}"
        if peer_id in self._peers:
            raise LocalProtocolError(
                ErrorCode.INVALID_ARGUMENT, f"a connection {peer_id!r} is attached"
            )
        peer = Peer(self, conn, wakeup or (lambda: None), peer_id)
        self._peers[peer_id] = peer
        return peer

    def peers(self) -> tuple[Peer, ...]:
        """Every attached connection that has not ended, oldest first (whatever adapter
        attached it). A connection leaves the list when its ``ConnectionTerminated`` was
        handed to :meth:`Peer.handle_events`, or its handshake was refused."""
        return tuple(self._peers.values())

    @property
    def peer_count(self) -> int:
        """How many connections :meth:`peers` lists."""
        return len(self._peers)

    def peer(self, peer_id: str) -> Peer | None:
        """The attached connection ``peer_id``, if it has not ended."""
        return self._peers.get(peer_id)

    @property
    def shutting_down(self) -> bool:
        """True once :meth:`shutdown` was called: new handshakes are refused."""
        return self._shutting_down

    def shutdown(
        self, code: int = ErrorCode.NO_ERROR, message: str = "server shutting down"
    ) -> None:
        """GOAWAY to every attached connection (:meth:`Peer.close`) and refuse new handshakes
        with SERVER_SHUTDOWN from now on. With NO_ERROR open streams drain and each
        connection ends when its streams are done; a connection still in its handshake has
        nothing to drain and closes with SERVER_SHUTDOWN. Wait until :attr:`peer_count` is 0
        (or a deadline), then call again with SERVER_SHUTDOWN to close what is left; see
        ``docs/embedding.md``. May be called again (to force, say)."""
        self._shutting_down = True
        for peer in list(self._peers.values()):
            drainable = peer.conn.state in (ConnState.OPEN, ConnState.DRAINING)
            if code == ErrorCode.NO_ERROR and not drainable:
                peer.close(ErrorCode.SERVER_SHUTDOWN, message)
            else:
                peer.close(code, message)

    def statistics(self) -> HubStatistics:
        """Counters."""
        channels = self._channels.values()
        streams = [s for c in channels for s in c._open.values()]
        closed = [s for c in channels for s in c._closed.values()]
        every = streams + closed
        return HubStatistics(
            channels=len(self._channels),
            open_streams=len(streams),
            retained_streams=len(closed),
            subscriptions=sum(len(s.live) + len(s.catching) for s in every),
            parked_subscriptions=sum(s.parked for s in every),
            sessions=len(self._sessions),
            uploads=sum(c._uploads for c in channels),
        )

    # -- a shared store's effects ---------------------------------------------------------------

    def store_requests(self) -> list[StoreRequest]:
        """What the hub asks of a shared store (see ``_store.py`` rule 5), oldest first; each
        is returned once. Carry them out and hand the answers to :meth:`handle_store_event`.
        Always empty with a store that is not shared."""
        self._deliver_held()  # held writes append to the store: their requests go now
        requests, self._requests = self._requests, []
        return requests

    def handle_store_event(self, event: StoreEvent) -> None:
        """Act on what a shared store's adapter learned (the answer to a request, or news of
        a stream this process produces or follows). Read :meth:`next_deadline` and
        :meth:`store_requests` again afterwards."""
        self._deliver_held()
        if isinstance(event, StreamLoaded):
            self._on_loaded(event.key)
        elif isinstance(event, StreamClaimed):
            self._on_claimed(self._known(event.key, event.generation), None)
        elif isinstance(event, StreamAppended):
            stream = self._known(event.key, event.generation)
            if stream is not None and stream.remote:
                self._on_remote_appended(stream)
        else:  # AbortRequested or StoreFailed: news for this process's producer
            stream = self._known(event.key, event.generation)
            producer = None if stream is None else stream.producer
            if producer is not None and not producer.closed:
                if isinstance(event, StoreFailed):
                    producer._lost(event.code, event.message)
                    self._on_claimed(stream, event)
                elif not producer._listened():
                    producer._abort(event.reason)
        self._wake()

    def _request(self, request: StoreRequest) -> None:
        self._requests.append(request)
        if self.on_store_request is not None:
            self.on_store_request()

    def _known(self, key: Key, generation: int) -> _Stream | None:
        channel = self._channels.get(key[0])
        stream = None if channel is None else channel._stream(key[1])
        return stream if stream is not None and stream.generation == generation else None

    def _on_loaded(self, key: Key) -> None:
        waiting = self._lookups.pop(key, [])
        channel = self._channels[key[0]]  # channels are never unregistered
        info = self._store.status(key)
        if channel._stream(key[1]) is None and info is not None:
            stream = _Stream(channel, key, info.generation)
            stream.remote = True
            if info.outcome is None:
                channel._open[key[1]] = stream
            else:
                self._retain(stream)
        for peer, event in waiting:
            if peer.closed:
                continue
            if isinstance(event, StatusRequested):  # the stream as the store knows it
                peer.conn.answer_streams(event.handle, [self._entry(channel, event.stream_id)])
            elif isinstance(event, DeleteRequested):
                self._answer_delete(peer.conn, channel, event)
            else:
                self._on_subscribe(peer, event, looked_up=True)
            self._dirty.add(peer)  # its answer
        found = channel._stream(key[1])
        if found is not None and found.remote and not found.listeners():
            self._let_go(found)  # every requester went away meanwhile

    def _on_claimed(self, stream: _Stream | None, failed: StoreFailed | None) -> None:
        """The store answered the Claim of ``stream`` (if an OPEN waits for it): accept
        the OPEN, or reject it with the store's code and forget the stream."""
        pending = None if stream is None else self._claims.pop(stream.key, None)
        if pending is None:
            return
        stream = cast(_Stream, stream)
        producer = cast(Producer, stream.producer)
        peer, event, policy = pending
        if failed is not None:  # the producer failed already (_lost): the id was never ours
            self._release(stream)
            if not peer.closed:
                peer.conn.reject(event.handle, failed.code, failed.message)
                peer._failed_early.pop(event.handle, None)
                self._dirty.add(peer)
        elif peer.closed:
            producer._abort("the requester left before the store held the stream")
        else:
            self._opened(peer, event, producer, policy)
            self._dirty.add(peer)

    def _on_remote_appended(self, stream: _Stream) -> None:
        for sub in list(stream.catching):
            self._pump(sub)
        info = self._store.status(stream.key)
        if info is not None and info.outcome is not None and stream.key[1] in stream.channel._open:
            del stream.channel._open[stream.key[1]]
            if info.outcome.code != ErrorCode.STREAM_DELETED:
                self._retain(stream)
                return
            # Deleted in its producer's process: released here too (R-QUERY-4), and a reader
            # still catching up ends as a reader of a deleted stream does, without a gap.
            for sub in list(stream.catching):
                self._send_outcome(sub, info.outcome)
            self._store.release(stream.key, stream.generation)

    def _let_go(self, stream: _Stream) -> None:
        """A remote stream nobody here listens to any more: stop following it."""
        channel = stream.channel
        if channel._open.get(stream.key[1]) is stream:
            del channel._open[stream.key[1]]
            self._store.release(stream.key, stream.generation)
        # A finished one stays retained here until its retention (it costs no following).

    # -- time -----------------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When :meth:`handle_timer` must next be called (session expiry, retention)."""
        timers = self._timers
        while timers and not self._timer_valid(timers[0]):
            heapq.heappop(timers)
        return timers[0][0] if timers else None

    def handle_timer(self) -> None:
        """Expire sessions past their grace period, release finished streams past their
        retention and run the :meth:`call_later` callbacks that are due, as of ``clock()``."""
        self._deliver_held()
        now = self._clock()
        timers = self._timers
        while timers and timers[0][0] <= now:
            entry = heapq.heappop(timers)
            if not self._timer_valid(entry):
                continue
            target = entry[2]
            if isinstance(target, _Session):
                self._expire_session(target)
            elif isinstance(target, _Stream):
                self._release(target)
            elif isinstance(target, _Idle):
                self._idle(target.stream)
            else:
                call = cast(_Call, target)
                try:
                    call.fn()
                except Exception:
                    log.exception("timer callback %r failed", call.fn)
        self._wake()

    def call_later(self, delay: float, callback: Callable[[], None]) -> None:
        """Call ``callback()`` from :meth:`handle_timer` once ``delay`` seconds of ``clock()``
        have passed.

        Work paced by the hub's clock (a producer that writes on a schedule) then needs no
        task or thread of its own, and runs the same under every adapter and under a test
        clock. Adapters read :meth:`next_deadline` again after handing the hub events and
        after ``handle_timer``, so call it from an open or upload handler, a producer's
        callback or another timer callback. A callback that raises is logged.
        """
        self._add_timer(self._clock() + delay, _Call(callback))

    def _add_timer(self, when: float, target: object) -> None:
        self._timer_seq += 1
        heapq.heappush(self._timers, (when, self._timer_seq, target))

    def _timer_valid(self, entry: tuple[float, int, object]) -> bool:
        when, _, target = entry
        if isinstance(target, _Session):
            return target.expires_at == when and self._sessions.get(target.token) is target
        if isinstance(target, _Idle):
            stream = target.stream
            return stream.channel._open.get(stream.key[1]) is stream
        if not isinstance(target, _Stream):
            return True  # a call_later callback
        stream = target
        channel = stream.channel
        return (
            channel._closed.get(stream.key[1]) is stream
            and stream.closed_at + channel.options.retention == when
        )

    # -- events ---------------------------------------------------------------------------------

    def handle_events(self, peer: Peer, events: Iterable[Event]) -> None:
        """Act on a connection's events (see :meth:`Peer.handle_events`)."""
        self._deliver_held()  # what was written came first
        acted = False
        for event in events:
            if peer.closed:
                break
            acted = True
            match event:
                case SubscribeRequested():
                    self._on_subscribe(peer, event)
                case OpenRequested():
                    self._on_open(peer, event)
                case StatusRequested() | ListRequested() | DeleteRequested():
                    self._on_query(peer, event)
                case UploadRequested():
                    self._on_upload(peer, event)
                case CancelRequested() | Unsubscribed():
                    sub = peer.subs.pop(event.handle, None)
                    if sub is not None:
                        self._leave(sub, cancelled=isinstance(event, CancelRequested))
                    else:  # its queue, gap included, is discarded: no warning will come
                        peer._ending.pop(event.handle, None)
                case OverflowWarning():
                    self._on_overflow(peer, event)
                case Writable():
                    self._on_writable(peer, event.handle)
                case UploadData():
                    self._on_upload_data(peer, event)
                case UploadEnded():
                    self._on_upload_ended(peer, event.handle)
                case UploadFailed():
                    if event.handle in peer.uploads:
                        reader = self._detach_upload(peer, event.handle)
                        reader._finish((event.code, event.message))
                    else:  # a bidirectional OPEN's, before the hub accepted it
                        peer._failed_early[event.handle] = (event.code, event.message)
                case HandshakeRequested():
                    self._on_handshake(peer, event)
                case ConnectionTerminated():
                    self._on_disconnect(peer)
                case _:
                    pass  # pings, pongs, goaway: nothing to decide here
        if acted:  # what the events made us queue on this connection (an empty list: nothing)
            self._dirty.add(peer)
        self._wake()

    def _on_upload_data(self, peer: Peer, event: UploadData) -> None:
        reader = peer.uploads[event.handle]
        reader._received = event.last_seq
        reader._push(event.chunks)
        config = peer.conn.config
        if config.auto_credit and reader.buffered > config.window_chunks:
            # With auto credit the uploader got its credit back on delivery: only the reader
            # reading bounds this buffer. A reader that falls a window behind is cut off.
            reader.cancel(ErrorCode.RESOURCE_EXHAUSTED, "the upload's reader fell behind")

    def _on_overflow(self, peer: Peer, event: OverflowWarning) -> None:
        handle = event.handle
        # A handle holds one OVERFLOW gap at a time (drops merge into it): an ended
        # subscription's warning is its last.
        sub = peer.subs.get(handle) or peer._ending.pop(handle, None)
        if sub is None:  # not a subscription of this hub's (a gap someone else queued)
            return
        producer = cast(Producer, sub.stream.producer)  # every stream is made with one
        session = cast(_Session, peer.session)  # subscriptions come after the handshake
        record = Overflow(
            sub.stream.key[0],
            sub.stream.key[1],
            session.id,
            handle,
            event.dropped,
            event.from_seq,
            event.to_seq,
        )
        producer._overflowed(record, self._clock())

    def _forget(self, sub: _Sub) -> None:
        """The hub is done with ``sub`` while its handle may still drain."""
        peer = sub.peer
        peer.subs.pop(sub.handle, None)
        if peer.conn._overflow_queued(sub.handle):
            peer._ending[sub.handle] = sub

    def _wake(self) -> None:
        # A wakeup may flush its connection inline (the thread backend does), which hands the
        # hub that connection's events, which mark peers dirty and wake again: a nested call
        # only adds to ``_dirty`` and the outermost one drains it, so the stack stays flat
        # however many connections wake each other.
        if self._waking:
            return
        self._waking = True
        try:
            dirty = self._dirty
            while dirty:
                dirty.pop().wakeup()
        finally:
            self._waking = False

    # -- handshake and sessions -----------------------------------------------------------------

    def _on_handshake(self, peer: Peer, event: HandshakeRequested) -> None:
        principal: object = None
        if self._shutting_down:  # a refusal R-HS-4 names: retryable, so the client goes elsewhere
            self._refuse(peer, ErrorCode.SERVER_SHUTDOWN, "server shutting down")
            return
        if self._authenticate is not None:
            principal, refusal = _access.authenticate(self._authenticate, event.auth)
            if refusal is not None:
                self._refuse(peer, refusal.code, refusal.message)
                return
        session = self._sessions.get(event.resume_token) if event.resume_token else None
        if session is not None and not _same(session.principal, principal):
            # Another principal's token takes nothing over and is answered as an unknown
            # token is; the session, its connection and its token stay its owner's (R-SESS-40).
            log.warning("a resume token was presented by another principal: new session")
            session = None
        resumed = session is not None
        if session is None:
            session = _Session(self._ids(), "", principal)
        elif session.peer is not None:  # the old connection has not noticed it is dead yet
            old = session.peer
            old.conn.goaway(ErrorCode.CONNECTION_LOST, "the session resumed on a new connection")
            self._dirty.add(old)
            self._on_disconnect(old)  # parks its subscriptions in the session
        self._sessions.pop(session.token, None)
        session.token = self._ids()
        session.peer = peer
        session.expires_at = -1.0
        self._sessions[session.token] = session
        if session.parked or session.uploads:
            # Subscriptions and uploads the client does not take back within a grace period
            # are released.
            session.expires_at = self._clock() + peer.conn.config.session_grace
            self._add_timer(session.expires_at, session)
        peer.session = session
        peer.conn.accept_handshake(
            session_id=session.id,
            resume_token=session.token,
            resumed=resumed,
            features=Feature.QUERIES | Feature.BIDI | Feature.UPLOAD_RESUME,
        )

    def _refuse(self, peer: Peer, code: int, message: str) -> None:
        peer.conn.refuse_handshake(code, message)
        peer.closed = True
        self._peers.pop(peer.id, None)

    def _on_disconnect(self, peer: Peer) -> None:
        peer.closed = True
        self._peers.pop(peer.id, None)
        session = peer.session
        for handle, reader in list(peer.uploads.items()):
            if reader.resumable and session is not None:
                # R-UPR-2: the reader waits; the session holds it for a resume.
                del peer.uploads[handle]
                reader._peer = None
                reader._parked = session
                session.uploads[(reader.channel, reader.stream_id)] = reader
            elif reader.outcome is None:
                self._detach_upload(peer, handle)._finish(
                    (ErrorCode.UPLOAD_DISCONNECTED, "the uploader disconnected")
                )
            else:  # ended, its result not given yet: no one to give it to
                self._detach_upload(peer, handle)._peer = None
        if session is None:  # no handshake, so no requests either
            return
        self._park_all(peer, session)
        session.peer = None
        grace = peer.conn.config.session_grace
        session.expires_at = self._clock() + grace
        if grace <= 0:
            self._expire_session(session)
        else:
            self._add_timer(session.expires_at, session)

    def _park_all(self, peer: Peer, session: _Session) -> None:
        for sub in peer.subs.values():
            self._hold(sub)  # before the detach, which would let the producer go
            if sub.live:
                self._detach(sub)
            else:  # catching up: held already
                sub.stream.catching.discard(sub)
            sub.stream.parked += 1
            session.parked.setdefault(sub.stream.key, []).append(sub)
        peer.subs.clear()

    def _expire_session(self, session: _Session) -> None:
        """Release a disconnected session, or the parked subscriptions of a resumed one."""
        session.expires_at = -1.0
        if session.peer is None:
            self._sessions.pop(session.token, None)
        uploads = session.uploads
        session.uploads = {}
        session.completed.clear()
        for reader in uploads.values():
            reader._parked = None
            self._release_upload_id(reader)
            if reader.outcome is None:
                reader._finish((ErrorCode.UPLOAD_DISCONNECTED, "the uploader did not resume"))
        parked = session.parked
        session.parked = {}
        for subs in parked.values():
            for sub in subs:
                sub.stream.parked -= 1
                self._unhold(sub)
                rule = sub.stream.channel.options.on_disconnect
                self._after_leave(
                    sub.stream,
                    cancelled=rule is DisconnectRule.CANCEL,
                    why="the last subscriber's session expired",
                )

    # -- streams --------------------------------------------------------------------------------

    def _start(self, channel: Channel, stream_id: str | None) -> Producer:
        sid = self._ids() if stream_id is None else stream_id
        if not valid_stream_id(sid):
            raise LocalProtocolError(ErrorCode.INVALID_NAME, f"invalid stream id {sid!r}")
        if sid in channel._open:
            raise LocalProtocolError(ErrorCode.STREAM_EXISTS, f"stream {sid!r} is open")
        if len(channel._open) >= channel.options.max_streams:
            raise LocalProtocolError(
                ErrorCode.LIMIT_EXCEEDED, f"channel {channel.name!r} has its maximum of streams"
            )
        old = channel._closed.pop(sid, None)
        if old is not None:  # reuse of a retained id: the old stream is released first
            self._release(old, already_popped=True)
        key = (channel.name, sid)
        stream = _Stream(channel, key, self._store.acquire(key, channel.options.replay))
        stream.producer = Producer(self, stream)
        channel._open[sid] = stream
        ttl = channel.options.idle_ttl
        if ttl:
            stream.touched = self._clock()
            self._add_timer(stream.touched + ttl, _Idle(stream))
        return stream.producer

    def _idle(self, stream: _Stream) -> None:
        """An idle TTL timer of an open stream: expire it, or re-arm from its last write (a
        write only notes the time, so a busy stream costs one timer per TTL, not per write)."""
        ttl = stream.channel.options.idle_ttl
        due = stream.touched + ttl
        if due > self._clock():
            self._add_timer(due, _Idle(stream))
            return
        producer = cast(Producer, stream.producer)  # a local open stream has one
        producer._end_by_hub(ErrorCode.STREAM_EXPIRED, f"no write for {ttl:g} s (idle TTL)")

    def flush_writes(self) -> None:
        """Deliver the writes the hub holds.

        With :attr:`on_writes_held` set, ``Producer.write`` to a stream with live
        subscribers answers ACCEPTED at once and holds the chunk when that is the answer it
        would get written now: always when no subscriber is under the BLOCK policy, else
        while every BLOCK subscriber has room for the run (see ``_reserve``). The writes
        that follow join it, and the run is delivered as one ``write_many`` (a run of one as
        the write it is) (the same seqs, bytes and events as the writes one at a time, for
        the per-subscriber work once per run); a write past the room delivers the run and is
        answered as it would be. The hub calls ``on_writes_held()`` when it holds the first
        chunk; the adapter then calls ``flush_writes()`` before its connections next flush
        (at the end of the loop turn), so a lone write goes out no later than before. Every
        other entry point (``handle_events``, ``handle_timer``, the store's, and the
        producer's other calls) delivers what is held first, so nothing can tell a held run
        from one written just before it. A run is delivered early at :data:`HOLD_CHUNKS`
        chunks or :data:`HOLD_BYTES` bytes."""
        self._told = False
        self._deliver_held()

    def _deliver_held(self) -> None:
        """Deliver every held run, in the order they started (an entry point's flush: the
        adapter's own is still to come when it was told)."""
        held = self._held  # (popped one at a time: it names exactly the runs not delivered)
        while held:
            self._flush_stream(held.pop(0))

    def _flush_stream(self, stream: _Stream) -> None:
        chunks = cast(list[bytes], stream.held)  # (_held lists the streams with a run)
        stream.held = None
        stream.held_bytes = 0
        run_peers = self._run_peers
        for peer in stream.run_peers:
            left = run_peers[peer] - 1
            if left:
                run_peers[peer] = left
            else:
                del run_peers[peer]
        if stream.reserved:
            stream.reserved = False
            room_held = self._room_held
            for peer in stream.run_peers:
                room_held.pop(peer, None)
        # Answered ACCEPTED already, and still would be: every entry point that could
        # change that delivers the run first. Only the connections may have changed under
        # it (``receive_data`` closing a handle, or all of them at the transport's end):
        # their subscribers get nothing of it, as with any write to a closed handle, and
        # the store has it for a resume.
        if len(chunks) == 1:  # a lone write
            self._write_now(stream, chunks[0], accepted=True)
        else:
            self._write_many(stream, chunks, accepted=True)

    def _write(self, stream: _Stream, chunk: bytes) -> WriteResult:
        """Producer.write: held (see flush_writes) when it may be, else written now."""
        held = stream.held
        if held is not None:  # a run is held: this chunk joins it
            if not stream.reserved:
                held.append(chunk)
                stream.held_bytes += len(chunk)
                if len(held) >= HOLD_CHUNKS or stream.held_bytes >= HOLD_BYTES:
                    self._deliver_held()  # (the runs held before it go first)
                return _ACCEPTED
            size = len(chunk)
            if stream.room_chunks < 0:  # the second chunk of the run: count the room now
                self._count_room(stream)
            if (
                len(held) < stream.room_chunks
                and stream.held_bytes + size <= stream.room_bytes
                and size <= stream.room_max
            ):
                held.append(chunk)
                stream.held_bytes += size
                return _ACCEPTED
            self._deliver_held()  # the room it held is used up: this one is decided now
        elif self._run_peers and self._meets_run(stream):
            # Runs held for other streams on its connections go first, as they were written
            # first: one that holds room there (which this write could take), and, for a
            # write that may count room there itself (a BLOCK subscriber), any run at all.
            self._deliver_held()
        if self.on_writes_held is not None and stream.live and not stream.n_hold:
            if not stream.n_block:
                # Nobody can block it (no BLOCK subscriber live, catching up or parked), so
                # the answer is ACCEPTED whenever it is delivered.
                self._hold_run(stream, chunk)
                return _ACCEPTED
            if self._reserve(stream, chunk):
                return _ACCEPTED
        return self._write_now(stream, chunk)

    def _meets_run(self, stream: _Stream) -> bool:
        """Whether a write to ``stream`` (which holds no run) must deliver the held runs
        first: one of its subscribers is on a connection where another run holds room, or,
        with a BLOCK subscriber (whose room it may count), where another run is held."""
        if stream.n_block:
            run_peers: Mapping[Peer, object] = self._run_peers
        else:
            run_peers = self._room_held
        return any(sub.peer in run_peers for sub in stream.live)

    def _hold_run(self, stream: _Stream, chunk: bytes) -> None:
        stream.held = [chunk]
        stream.held_bytes = len(chunk)
        self._held.append(stream)
        peers = stream.run_peers = [sub.peer for sub in stream.live]
        run_peers = self._run_peers
        for peer in peers:
            run_peers[peer] = run_peers.get(peer, 0) + 1
        if not self._told:  # else the adapter's flush is still to come
            self._told = True
            self.on_writes_held()  # type: ignore[misc]  # (checked by the caller)

    def _reserve(self, stream: _Stream, chunk: bytes) -> bool:
        """Hold ``chunk`` as the first of a run, when every BLOCK subscriber of ``stream`` has
        room for it: written now it would be ACCEPTED, so it may be answered so at once and
        delivered with the run. On the connections of its subscribers it is the only run
        held (_write delivers the others there first, and this one first when another
        stream writes there while it is held; every other entry point delivers it), so
        nothing takes that room before it is delivered. The run grows while the room counted
        when the second chunk comes lasts (see _count_room); a write past it delivers the
        run and is decided on its own, as one at a time would be. (A chunk too large for a
        subscriber fails that subscription: that is not held either.)"""
        live = stream.live
        size = len(chunk)
        if any(size > sub.peer.conn._peer_max_chunk for sub in live):
            return False
        if not self._block_room(live, size):
            return False
        stream.reserved = True
        stream.room_chunks = -1  # not counted yet
        self._hold_run(stream, chunk)
        room_held = self._room_held
        for peer in stream.run_peers:
            room_held[peer] = stream
        return True

    @staticmethod
    def _count_room(stream: _Stream) -> None:
        """The chunks and bytes every BLOCK subscriber of ``stream`` can queue without its
        overflow policy deciding, and the largest chunk every subscriber takes: how far the
        held run may grow (its chunks are not queued yet, so the room includes theirs)."""
        live = stream.live
        share = len(live)  # as if all were on each connection: enough unless a cap is near
        room_chunks = HOLD_CHUNKS
        room_bytes = HOLD_BYTES
        room_max = room_bytes
        for sub in live:
            conn = sub.peer.conn
            room_max = min(room_max, conn._peer_max_chunk)
            if sub.policy is _BLOCK:
                h = conn._sending(sub.handle)
                if h is None:  # closed by the client since: write blocks (see _batch_fit)
                    room_chunks = 0
                    break
                chunks, nbytes = conn._room(h, share)
                room_chunks = min(room_chunks, chunks)
                room_bytes = min(room_bytes, nbytes)
        stream.room_chunks = room_chunks
        stream.room_bytes = room_bytes
        stream.room_max = room_max

    def _write_now(self, stream: _Stream, chunk: bytes, *, accepted: bool = False) -> WriteResult:
        """Write ``chunk`` now; ``accepted``: a held one, which BLOCK subscribers do not
        decide again (see _flush_stream)."""
        size = len(chunk)
        if stream.n_hold and not accepted:
            stream.blocked = True
            return _BLOCKED
        if stream.channel.options.idle_ttl:
            stream.touched = self._clock()
        if stream.n_block and not accepted and not self._block_room(stream.live, size):
            stream.blocked = True
            return _BLOCKED
        seq = self._store.append(stream.key, stream.generation, chunk)
        dirty = self._dirty
        failed: list[_Sub] | None = None
        for sub in stream.live:
            if seq <= sub.cursor:  # the subscriber said it had seen this seq (after_seq)
                continue
            peer = sub.peer
            conn = peer.conn
            # A chunk larger than this subscriber's MAX_CHUNK_SIZE fails only this
            # subscription (CHUNK_TOO_LARGE); the others still get it.
            if size > conn._peer_max_chunk:
                self._too_large(sub)
                result = _FAILED
            else:
                result = conn.send_data(sub.handle, chunk, seq=seq)
            sub.cursor = seq
            dirty.add(peer)
            # CLOSED: the client closed the handle and its CANCEL or UNSUBSCRIBE event is on
            # its way to handle_events, which must see the subscription to count a cancel.
            if result is _FAILED:
                failed = failed or []
                failed.append(sub)
        if failed:
            for sub in failed:
                self._forget(sub)
                self._leave(sub, cancelled=False)
        self._wake()
        return _ACCEPTED

    @staticmethod
    def _block_room(live: list[_Sub], size: int) -> bool:
        """Whether every BLOCK subscriber can queue a chunk of ``size`` bytes. Subscribers on
        one connection share its connection-wide cap, and the chunk goes to each of them: a
        BLOCK subscriber needs room for its copy after the copies of the others on its
        connection, or the write would be stored and not queued for it."""
        if len(live) == 1:  # one reader (the usual stream): no copies of others to count
            sub = live[0]
            return sub.policy is not _BLOCK or sub.peer.conn.has_room(sub.handle, size)
        per_conn: dict[Connection, int] = {}
        for sub in live:
            conn = sub.peer.conn
            per_conn[conn] = per_conn.get(conn, 0) + size
        for sub in live:
            if sub.policy is _BLOCK:
                conn = sub.peer.conn
                if not conn.has_room(sub.handle, size, others=per_conn[conn] - size):
                    return False
        return True

    def _write_many(
        self, stream: _Stream, chunks: list[bytes], *, accepted: bool = False
    ) -> tuple[int, WriteResult]:
        """Producer.write_many: batches where every subscriber has room for them, else one
        chunk at a time through _write_now, whose answers define the semantics
        (``accepted``: a held run, see _write_now)."""
        n = len(chunks)
        done = 0
        while done < n:
            rest = chunks[done:] if done else chunks
            fit = self._batch_fit(stream, rest, accepted)
            if not fit:
                # Some subscriber is full (its policy decides), or cannot take a batch: the
                # rest goes one chunk at a time, exactly as write does.
                for chunk in rest:
                    if self._write_now(stream, chunk, accepted=accepted) is _BLOCKED:
                        return done, _BLOCKED
                    done += 1
                break
            self._deliver(stream, rest if fit == len(rest) else rest[:fit])
            done += fit
        return n, _ACCEPTED

    @staticmethod
    def _batch_fit(stream: _Stream, chunks: list[bytes], accepted: bool = False) -> int:
        """How many leading ``chunks`` every live subscriber can queue without its overflow
        policy (or CHUNK_TOO_LARGE) deciding anything. Writing those one at a time would
        accept each everywhere, so they may go as one batch per subscriber (``accepted``: a
        held run, see _write_now)."""
        if stream.n_hold and not accepted:  # write blocks
            return 0
        totals = list(accumulate(map(len, chunks)))
        biggest = max(map(len, chunks))
        live = stream.live
        fit = len(chunks)
        # The connection-wide cap is shared by the subscribers on one connection: at first
        # assume they all are on each (cheap, and enough unless the cap is near).
        share = len(live) or 1
        shares: dict[Connection, int] | None = None
        for sub in live:
            conn = sub.peer.conn
            h = conn._sending(sub.handle)
            if h is None:  # closed by the client: its writes answer CLOSED, queue nothing,
                if sub.policy is _BLOCK and not accepted:  # but has_room says no: write blocks
                    return 0
                continue
            if biggest > conn._peer_max_chunk:
                limit = conn._peer_max_chunk
                fit = min(fit, next(i for i, c in enumerate(chunks) if len(c) > limit))
            room = conn._room_count(h, totals, share)
            if room < fit and share > 1:
                if shares is None:
                    shares = {}
                    for other in live:
                        c = other.peer.conn
                        shares[c] = shares.get(c, 0) + 1
                room = conn._room_count(h, totals, shares[conn])
            fit = min(fit, room)
            if not fit:
                return 0
        return fit

    def _deliver(self, stream: _Stream, chunks: list[bytes]) -> None:
        """Append ``chunks`` and queue them on every live subscriber: each has room
        (_batch_fit), so each takes them as one batch."""
        store = self._store
        extend = self._extend
        if stream.channel.options.idle_ttl:
            stream.touched = self._clock()
        if extend is not None:
            last = extend(stream.key, stream.generation, chunks)
        else:
            for chunk in chunks:
                last = store.append(stream.key, stream.generation, chunk)
        first = last - len(chunks) + 1
        total = sum(map(len, chunks))
        dirty = self._dirty
        ahead: list[_Sub] = []
        for sub in stream.live:
            if sub.cursor >= first:  # the subscriber said it had seen some (after_seq)
                if sub.cursor < last:
                    ahead.append(sub)
                continue
            peer = sub.peer
            h = peer.conn._sending(sub.handle)
            if h is not None:  # else closed by the client: see _write
                peer.conn._enqueue(h, chunks, total)
            sub.cursor = last
            dirty.add(peer)
        # Written one at a time, these get their first chunk later than the others: queue
        # them in that order, which is the order they join their connection's ready list.
        ahead.sort(key=_cursor)
        for sub in ahead:
            peer = sub.peer
            part = chunks[sub.cursor - first + 1 :]
            h = peer.conn._sending(sub.handle)
            if h is not None:
                peer.conn._enqueue(h, part, sum(map(len, part)))
            sub.cursor = last
            dirty.add(peer)
        self._wake()

    def _too_large(self, sub: _Sub) -> None:
        conn = sub.peer.conn
        limit = conn._peer_max_chunk
        conn.send_error(sub.handle, ErrorCode.CHUNK_TOO_LARGE, f"chunks here are <= {limit} B")

    def _finish(self, stream: _Stream, outcome: Outcome) -> None:
        self._deliver_held()  # what was written came first, on every stream
        self._store.finish(stream.key, stream.generation, outcome)
        self._closed_stream(stream, outcome)

    def _closed_stream(self, stream: _Stream, outcome: Outcome) -> None:
        """A local stream finished with ``outcome`` (recorded in the store already)."""
        del stream.channel._open[stream.key[1]]
        stream.blocked = False  # no write to retry: on_writable is not called any more
        for sub in list(stream.live):
            self._send_outcome(sub, outcome)
        self._retain(stream)
        self._wake()

    def _retain(self, stream: _Stream) -> None:
        """Keep a finished stream for its channel's retention."""
        channel = stream.channel
        stream.closed_at = self._clock()
        channel._closed[stream.key[1]] = stream
        self._add_timer(stream.closed_at + channel.options.retention, stream)
        while len(channel._closed) > channel.options.max_closed_streams:
            _, oldest = channel._closed.popitem(last=False)
            self._release(oldest, already_popped=True)

    def _send_outcome(self, sub: _Sub, outcome: Outcome) -> None:
        conn = sub.peer.conn
        if outcome.status is StreamStatus.ENDED:
            conn.send_end(sub.handle)
        else:
            conn.send_error(sub.handle, outcome.code, outcome.message)
        self._dirty.add(sub.peer)
        self._forget(sub)
        self._detach(sub)

    def _release(self, stream: _Stream, already_popped: bool = False) -> None:
        """Forget a finished stream: after its retention, or when its id is reused. A
        subscriber still catching up gets a gap for the history it had not read, then the
        stream's own outcome."""
        if not already_popped:
            stream.channel._closed.pop(stream.key[1], None)
        if stream.catching:
            info = cast(StreamInfo, self._store.status(stream.key))  # finished, not released
            for sub in list(stream.catching):  # behind the end, or _pump had let it go
                sub.peer.conn.send_gap(sub.handle, info.last_seq, GapReason.EVICTED)
                sub.cursor = info.last_seq
                self._send_outcome(sub, cast(Outcome, info.outcome))
        self._store.release(stream.key, stream.generation)

    # -- subscriptions --------------------------------------------------------------------------

    def _on_subscribe(
        self, peer: Peer, event: SubscribeRequested, *, looked_up: bool = False
    ) -> None:
        conn = peer.conn
        if looked_up:  # admitted before the lookup
            channel = self._channels[event.channel]
        else:
            admitted = self._admit(peer, event.handle, event.channel, RequestKind.SUBSCRIBE, event)
            if admitted is None:
                return
            channel = admitted
        stream = channel._stream(event.stream_id)
        if stream is None:
            if self._shared and not looked_up:  # maybe another process's: ask the store
                self._look_up(channel, peer, event)
                return
            conn.reject(event.handle, ErrorCode.UNKNOWN_STREAM, f"no stream {event.stream_id!r}")
            return
        session = cast(_Session, peer.session)  # requests come after the handshake
        parked = session.parked.get(stream.key)
        taken = parked.pop() if parked else None
        policy = event.policy
        if policy is OverflowPolicy.DEFAULT:
            # A resumed subscription keeps the policy of the one it takes over (an OPEN's
            # BLOCK, say), which its client asked for as DEFAULT too (R-OVF-6).
            policy = channel.options.default_policy if taken is None else taken.policy
        self._attach(peer, event.handle, stream, event.after_seq, policy)
        if taken is not None:  # a resumed subscription takes over its parked one
            taken.stream.parked -= 1  # maybe an older generation's stream
            self._unhold(taken)
            if not parked:
                del session.parked[stream.key]
        self._pump(peer.subs[event.handle])

    def _attach(
        self,
        peer: Peer,
        handle: int,
        stream: _Stream,
        after_seq: int | None,
        policy: OverflowPolicy,
        *,
        joined: bool = False,
    ) -> None:
        """Accept a subscription of ``stream`` after ``after_seq`` (None: live only); the
        caller pumps it."""
        info = cast(StreamInfo, self._store.status(stream.key))  # the caller found it
        peer.conn.accept(
            handle,
            stream_id=stream.key[1],
            first_seq=info.first_seq,
            last_seq=info.last_seq,
            policy=policy,
            joined=joined,
        )
        cursor = info.last_seq if after_seq is None else max(after_seq, info.first_seq - 1)
        sub = _Sub(peer, handle, stream, cursor)
        sub.policy = policy
        peer.subs[handle] = sub
        stream.catching.add(sub)
        self._hold(sub)

    def _on_open(self, peer: Peer, event: OpenRequested) -> None:
        conn = peer.conn
        channel = self._admit(peer, event.handle, event.channel, RequestKind.OPEN, event)
        if channel is None:
            return
        if (channel.on_bidi if event.bidi else channel.on_open) is None:
            why = "bidirectional streams" if event.bidi else "streams"
            conn.reject(event.handle, ErrorCode.NOT_ALLOWED, f"this channel does not open {why}")
            return
        if event.bidi and channel._uploads >= channel.options.max_uploads:
            conn.reject(event.handle, ErrorCode.LIMIT_EXCEEDED, "too many uploads")
            return
        policy = event.policy
        if policy is OverflowPolicy.DEFAULT:
            policy = channel.options.open_policy
        running = channel._open.get(event.stream_id) if event.stream_id else None
        # A bidirectional OPEN never joins (R-BIDI-1): its handler reads this requester.
        if running is not None and not event.bidi and (event.join or channel.options.join_running):
            # Run-or-join (R-JOIN-1): a second requester shares the running producer, read
            # from seq 1 like the first; the handler is not called again.
            self._attach(peer, event.handle, running, 0, policy, joined=True)
            self._pump(peer.subs[event.handle])
            return
        try:
            producer = self._start(channel, event.stream_id or None)
        except StreamProtoError as exc:
            conn.reject(event.handle, exc.code, exc.message)
            return
        if self._shared:  # accepted once the store holds the claim (rule 6)
            self._claims[producer._stream.key] = (peer, event, policy)
            self._request(Claim(producer._stream.key, producer.generation))
            return
        self._opened(peer, event, producer, policy)

    def _opened(
        self, peer: Peer, event: OpenRequested, producer: Producer, policy: OverflowPolicy
    ) -> None:
        """Accept an OPEN whose stream ``producer`` writes, subscribe the requester, and
        hand the producer to the channel's open handler (a bidirectional OPEN's: with the
        reader of the requester's direction too)."""
        stream = producer._stream
        channel = stream.channel
        peer.conn.accept(
            event.handle, stream_id=producer.stream_id, first_seq=1, last_seq=0, policy=policy
        )
        sub = _Sub(peer, event.handle, stream, 0)
        sub.policy = policy
        peer.subs[event.handle] = sub
        self._go_live(sub)
        reader: UploadReader | None = None
        if event.bidi:
            reader = UploadReader(self, channel.name, producer.stream_id, event.args)
            reader._bidi = True
            early = peer._failed_early.pop(event.handle, None)
            if early is not None:  # the client failed its direction before the ACCEPT
                reader._finish(early)
            else:  # (if it failed it in this batch of events, its UploadFailed comes next)
                self._attach_upload(peer, event.handle, reader)
        try:
            if reader is not None:
                cast(BidiHandler, channel.on_bidi)(producer, reader, event.args)
            else:
                cast(OpenHandler, channel.on_open)(producer, event.args)  # _on_open checked it
        except Exception as exc:
            log.exception("open handler of %s failed", channel.name)
            if not producer.closed:
                producer.fail(*handler_failure(exc))
            if reader is not None:
                reader.cancel(*handler_failure(exc))

    def _look_up(self, channel: Channel, peer: Peer, event: _LookedUp) -> None:
        """Ask the shared store for a stream this process does not have; ``event`` is
        answered when the store does (:meth:`_on_loaded`). One Lookup per stream at a time."""
        key = (channel.name, event.stream_id)
        waiting = self._lookups.setdefault(key, [])
        waiting.append((peer, event))
        if len(waiting) == 1:
            self._request(Lookup(key, channel.options.replay))

    # -- queries: status, list, delete (spec section 5.5) -------------------------------------

    def _on_query(
        self, peer: Peer, event: StatusRequested | ListRequested | DeleteRequested
    ) -> None:
        conn = peer.conn
        handle = event.handle
        if isinstance(event, ListRequested):
            channel = self._admit(peer, handle, event.channel, RequestKind.LIST, event)
            if channel is not None:
                entries, following = self._list(channel, event.after, event.states, event.limit)
                conn.answer_streams(handle, entries, following)
            return
        kind = RequestKind.STATUS if isinstance(event, StatusRequested) else RequestKind.DELETE
        channel = self._admit(peer, handle, event.channel, kind, event)
        if channel is None:
            return
        if isinstance(event, DeleteRequested) and not channel.options.allow_delete:
            conn.reject(handle, ErrorCode.NOT_ALLOWED, "this channel does not delete streams")
        elif self._shared and channel._stream(event.stream_id) is None:
            # Maybe another process's: ask the store (a DELETE must not answer MISSING for a
            # stream that exists elsewhere; it refuses it, spec section 17).
            self._look_up(channel, peer, event)
        elif isinstance(event, StatusRequested):
            conn.answer_streams(handle, [self._entry(channel, event.stream_id)])
        else:
            self._answer_delete(conn, channel, event)

    def _answer_delete(self, conn: Connection, channel: Channel, event: DeleteRequested) -> None:
        try:
            conn.answer_streams(event.handle, [self._delete(channel, event.stream_id)])
        except StreamProtoError as exc:
            conn.reject(event.handle, exc.code, exc.message)

    def _entry(self, channel: Channel, stream_id: str) -> StreamEntry:
        stream = channel._stream(stream_id)
        info = None if stream is None else self._store.status(stream.key)
        if info is None:
            return StreamEntry(stream_id, StreamState.MISSING)
        outcome = info.outcome
        if outcome is None:
            return StreamEntry(stream_id, StreamState.OPEN, 0, info.first_seq, info.last_seq)
        state = _STATES[outcome.status]
        return StreamEntry(stream_id, state, outcome.code, info.first_seq, info.last_seq)

    def _list(
        self, channel: Channel, after: str, states: int, limit: int
    ) -> tuple[tuple[StreamEntry, ...], str]:
        # Sorting every id per page costs O(n log n) for n streams of the channel, which
        # max_streams and max_closed_streams bound; the cursor is an id, so a page is exact
        # however streams come and go between pages (none twice, none skipped that stayed).
        limit = min(limit, MAX_PAGE)
        page: list[StreamEntry] = []
        for sid in sorted(channel._open.keys() | channel._closed.keys()):
            if sid <= after:
                continue
            entry = self._entry(channel, sid)
            if states and not states & (1 << entry.state):
                continue
            if len(page) == limit:
                return tuple(page), page[-1].stream_id
            page.append(entry)
        return tuple(page), ""

    def _delete(self, channel: Channel, stream_id: str) -> StreamEntry:
        entry = self._entry(channel, stream_id)
        stream = channel._stream(stream_id)
        if stream is None:
            return entry
        if stream.remote:
            raise LocalProtocolError(ErrorCode.NOT_ALLOWED, "the stream is another process's")
        if stream.producer is not None and not stream.producer.closed:
            stream.producer._end_by_hub(ErrorCode.STREAM_DELETED, _DELETED)
        outcome = Outcome(StreamStatus.FAILED, ErrorCode.STREAM_DELETED, _DELETED)
        for sub in [*stream.live, *stream.catching]:  # readers of its history too
            self._send_outcome(sub, outcome)
        self._release(stream)
        if self._shared:  # and from the shared store, so no process finds it any more
            self._request(Erase(stream.key, stream.generation))
        return entry

    def _admit(
        self,
        peer: Peer,
        handle: int,
        name: str,
        kind: RequestKind,
        event: SubscribeRequested
        | OpenRequested
        | UploadRequested
        | StatusRequested
        | ListRequested
        | DeleteRequested,
    ) -> Channel | None:
        """The channel a request names, if it exists and the request is authorized; else
        the request is rejected here, before anything about the stream is revealed."""
        conn = peer.conn
        channel = self._channels.get(name)
        if channel is None:
            _reject_unknown_channel(conn, handle, name)
            return None
        hook = channel.authorize or self._authorize
        if hook is None:
            return channel
        args = event.args if isinstance(event, OpenRequested | UploadRequested) else b""
        sid = event.after if isinstance(event, ListRequested) else event.stream_id
        request = AccessRequest(peer.principal, kind, name, sid, args)
        refusal = _access.authorize(hook, request)
        if refusal is None:
            return channel
        if channel.options.conceal:
            _reject_unknown_channel(conn, handle, name)
        else:
            conn.reject(handle, refusal.code, refusal.message)
        return None

    def _pump(self, sub: _Sub) -> None:
        """Move a catching-up subscription forward as far as its connection has room."""
        stream = sub.stream
        conn = sub.peer.conn
        store = self._store
        handle = sub.handle
        while True:
            # A catching-up subscription's stream is in the store: _release answers them all
            # before it releases the stream.
            info = cast(StreamInfo, store.status(stream.key))
            if sub.cursor >= info.last_seq:
                if info.outcome is not None:
                    stream.catching.discard(sub)
                    self._send_outcome(sub, info.outcome)
                elif not stream.remote:  # a remote stream's chunks come by StreamAppended
                    self._go_live(sub)
                return
            replay = store.read(stream.key, sub.cursor, REPLAY_BATCH)
            if replay.first_seq > sub.cursor + 1:
                conn.send_gap(handle, replay.first_seq - 1, GapReason.EVICTED)
                sub.cursor = replay.first_seq - 1
            self._dirty.add(sub.peer)
            chunks = replay.chunks
            if not chunks:  # nothing retained: the gap took the cursor to the end
                continue
            h = conn._sending(handle)
            if h is None:  # the client closed it; its event is on the way
                return
            limit = conn._peer_max_chunk
            big = len(chunks)
            if max(map(len, chunks)) > limit:
                big = next(i for i, c in enumerate(chunks) if len(c) > limit)
            # As far as the connection has room, never past it (BLOCK whatever the policy):
            # a Writable event resumes the catch-up.
            sent, result = conn._send_many(
                h, chunks if big == len(chunks) else chunks[:big], sub.cursor + 1, _BLOCK
            )
            sub.cursor += sent
            if result is _BLOCKED:
                return
            if big < len(chunks):
                if not conn.has_room(handle, len(chunks[big])):
                    return
                self._too_large(sub)
                sub.peer.subs.pop(sub.handle, None)
                self._leave(sub, cancelled=False)
                return

    def _go_live(self, sub: _Sub) -> None:
        stream = sub.stream
        stream.catching.discard(sub)
        stream.live.append(sub)
        sub.live = True
        if sub.policy is OverflowPolicy.BLOCK:
            stream.n_block += 1
            self._unhold(sub)

    def _hold(self, sub: _Sub) -> None:
        """A BLOCK subscription that cannot take live chunks (catching up, or parked) holds
        its producer: writes block until it is live again or gone (R-OVF-6)."""
        if sub.policy is OverflowPolicy.BLOCK and not sub.held:
            sub.held = True
            sub.stream.n_hold += 1

    def _unhold(self, sub: _Sub) -> None:
        if sub.held:
            sub.held = False
            sub.stream.n_hold -= 1
            self._maybe_unblock(sub.stream)

    def _detach(self, sub: _Sub) -> None:
        stream = sub.stream
        if sub.live:
            stream.live.remove(sub)
            sub.live = False
            if sub.policy is OverflowPolicy.BLOCK:
                stream.n_block -= 1
                self._maybe_unblock(stream)
        else:
            stream.catching.discard(sub)
            self._unhold(sub)

    def _leave(self, sub: _Sub, *, cancelled: bool) -> None:
        self._detach(sub)
        self._after_leave(sub.stream, cancelled=cancelled)

    def _after_leave(
        self, stream: _Stream, *, cancelled: bool, why: str = "the last subscriber cancelled"
    ) -> None:
        producer = stream.producer
        if stream.listeners():
            return
        channel = stream.channel
        if (
            cancelled
            and (
                channel._open.get(stream.key[1]) is stream
                if stream.remote
                else producer is not None and not producer.closed
            )
            and channel.options.on_last_cancel is AbortRule.ABORT
        ):
            if self._shared and (stream.remote or self._store.followers(stream.key)):
                # Other processes listen: the producer's process decides once they are gone.
                self._request(CancelRemote(stream.key, stream.generation, why))
            else:
                cast(Producer, producer)._abort(why)
        if stream.remote:
            self._let_go(stream)

    def _on_writable(self, peer: Peer, handle: int) -> None:
        sub = peer.subs.get(handle)
        if sub is None:
            return
        if sub.live:
            self._maybe_unblock(sub.stream)
        else:
            self._pump(sub)

    def _maybe_unblock(self, stream: _Stream) -> None:
        if not stream.blocked or stream.n_hold:
            return
        for sub in stream.live:
            if sub.policy is OverflowPolicy.BLOCK and not sub.peer.conn.has_room(sub.handle, 0):
                return
        stream.blocked = False
        producer = stream.producer
        if producer is not None and producer.on_writable is not None:
            producer.on_writable()

    # -- uploads --------------------------------------------------------------------------------

    def _on_upload(self, peer: Peer, event: UploadRequested) -> None:
        conn = peer.conn
        channel = self._admit(peer, event.handle, event.channel, RequestKind.UPLOAD, event)
        if channel is None:
            return
        session = cast(_Session, peer.session)  # requests come after the handshake
        parked = session.uploads.get((channel.name, event.stream_id))
        if event.resume or (event.resumable and parked is not None and parked._received == 0):
            # A resume; or the request again of a parked upload whose ACCEPT was lost with its
            # connection, so that none of it can have arrived (R-UPR-4).
            self._resume_upload(peer, channel, event)
            return
        if event.stream_id in channel._upload_ids:
            why = f"upload {event.stream_id!r} is open"
            conn.reject(event.handle, ErrorCode.STREAM_EXISTS, why)
            return
        reader = channel._expected.pop(event.stream_id, None) if event.stream_id else None
        if reader is None:
            if channel.on_upload is None:
                conn.reject(event.handle, ErrorCode.NOT_ALLOWED, "this channel takes no uploads")
                return
            if channel._uploads >= channel.options.max_uploads:
                conn.reject(event.handle, ErrorCode.LIMIT_EXCEEDED, "too many uploads")
                return
            sid = event.stream_id or self._ids()
            reader = UploadReader(self, channel.name, sid, event.args)
            handler: UploadHandler | None = channel.on_upload
        else:
            reader.args = event.args
            handler = None
        reader.resumable = event.resumable
        reader.wants_result = event.result
        conn.accept(event.handle, stream_id=reader.stream_id)
        self._attach_upload(peer, event.handle, reader)
        if handler is not None:
            try:
                handler(reader)
            except Exception as exc:
                log.exception("upload handler of %s failed", channel.name)
                reader.cancel(*handler_failure(exc))

    def _attach_upload(self, peer: Peer, handle: int, reader: UploadReader) -> None:
        reader._peer = peer
        reader._handle = handle
        reader._finishing = False
        peer.uploads[handle] = reader
        channel = self._channels[reader.channel]
        channel._uploads += 1
        if not reader._bidi:
            channel._upload_ids.add(reader.stream_id)

    def _detach_upload(self, peer: Peer, handle: int) -> UploadReader:
        reader = peer.uploads.pop(handle)
        self._release_upload_id(reader)
        return reader

    def _release_upload_id(self, reader: UploadReader) -> None:
        channel = self._channels[reader.channel]
        channel._uploads -= 1
        if not reader._bidi:
            channel._upload_ids.discard(reader.stream_id)

    def _resume_upload(self, peer: Peer, channel: Channel, event: UploadRequested) -> None:
        """UPLOAD with flag RESUME: take over the session's parked upload, or a completed
        one whose result may have been lost (R-UPR-4..6)."""
        session = cast(_Session, peer.session)  # requests come after the handshake
        key = (channel.name, event.stream_id)
        reader = session.uploads.pop(key, None)
        if reader is not None:  # parked: still counted in the channel
            reader._parked = None
            self._release_upload_id(reader)
        else:
            reader = session.completed.pop(key, None)
            if reader is None or event.stream_id in channel._upload_ids:
                why = f"no parked upload {event.stream_id!r} to resume"
                peer.conn.reject(event.handle, ErrorCode.UNKNOWN_UPLOAD, why)
                return
        peer.conn.accept(
            event.handle,
            stream_id=reader.stream_id,
            first_seq=reader._received + 1,
            held=reader._held,
        )
        self._attach_upload(peer, event.handle, reader)

    def _on_upload_ended(self, peer: Peer, handle: int) -> None:
        reader = peer.uploads[handle]
        if reader.outcome is None:
            reader.outcome = (0, "")
            reader._notify()
        if reader.wants_result and reader._result is None:
            reader._finishing = True  # the handle waits in FINISHING for set_result
            return
        if reader.wants_result:
            self._send_result(peer, reader)
            return
        self._detach_upload(peer, handle)
        reader._peer = None
        self._completed(peer, reader)

    def _send_result(self, peer: Peer, reader: UploadReader) -> None:
        """UPLOAD_RESULT for an ended upload whose result is set; the handle closes."""
        handle = reader._handle
        peer.conn.send_upload_result(handle, cast(bytes, reader._result))
        self._detach_upload(peer, handle)
        reader._peer = None
        self._dirty.add(peer)
        self._completed(peer, reader)

    @staticmethod
    def _completed(peer: Peer, reader: UploadReader) -> None:
        if not reader.resumable:
            return
        done = cast(_Session, peer.session).completed
        done[(reader.channel, reader.stream_id)] = reader
        while len(done) > peer.conn.config.max_completed_uploads:
            done.popitem(last=False)
