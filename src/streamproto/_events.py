"""Events: what a connection reports after it consumed bytes or a timer fired.

Rules for this file:

1. Every event is a frozen attrs class, complete at construction; an invalid event cannot exist.
2. One event per fact. A run of chunks for one handle is one fact ("these consecutive seqs
   arrived") and so one :class:`DataReceived`, not one object per chunk.
3. ``str(event)`` is short and truncates payloads, for logs.
"""

from __future__ import annotations

import attrs

from ._errors import code_name
from ._frames import GapReason, OverflowPolicy, StreamEntry, _short

__all__ = [
    "CancelRequested",
    "ConnectionTerminated",
    "DataReceived",
    "DeleteRequested",
    "Event",
    "GapReceived",
    "GoawayReceived",
    "HandshakeCompleted",
    "HandshakeRefused",
    "HandshakeRequested",
    "ListRequested",
    "OpenRequested",
    "OverflowWarning",
    "PingReceived",
    "PongReceived",
    "RequestAccepted",
    "RequestRejected",
    "StatusRequested",
    "StreamEnded",
    "StreamFailed",
    "StreamsReceived",
    "SubscribeRequested",
    "Unsubscribed",
    "UploadCancelled",
    "UploadCompleted",
    "UploadData",
    "UploadEnded",
    "UploadFailed",
    "UploadRequested",
    "Writable",
]


def _chunks_str(name: str, handle: int, seq: int, chunks: tuple[bytes, ...]) -> str:
    size = sum(map(len, chunks))
    first = f" {_short(chunks[0])}" if len(chunks) == 1 else ""
    return f"{name}(h={handle} seq={seq}..{seq + len(chunks) - 1} {size}B{first})"


# -- connection ---------------------------------------------------------------------------------


@attrs.frozen
class HandshakeRequested:
    """Server: a client said HELLO. Call ``accept_handshake`` or ``refuse_handshake``.

    ``settings`` are the client's, as (id, value) pairs in the order sent.
    """

    version: int
    settings: tuple[tuple[int, int], ...]
    resume_token: str
    auth: bytes

    def __str__(self) -> str:
        return (
            f"HandshakeRequested(v{self.version} resume={bool(self.resume_token)} "
            f"auth={len(self.auth)}B)"
        )


@attrs.frozen
class HandshakeCompleted:
    """Client: the server accepted the handshake; requests may be sent now."""

    version: int
    session_id: str
    resume_token: str
    resumed: bool
    settings: tuple[tuple[int, int], ...]

    def __str__(self) -> str:
        return f"HandshakeCompleted(v{self.version} session={_short(self.session_id)} resumed={self.resumed})"  # noqa: E501


@attrs.frozen
class HandshakeRefused:
    """Client: the server refused the handshake. The connection is closed; this event is its
    only terminal event."""

    code: int
    message: str

    def __str__(self) -> str:
        return f"HandshakeRefused({code_name(self.code)} {_short(self.message)})"


@attrs.frozen
class PingReceived:
    """The peer pinged; the connection has already queued the PONG."""

    payload: int

    def __str__(self) -> str:
        return f"PingReceived({self.payload})"


@attrs.frozen
class PongReceived:
    """The peer answered a PING (ours or a keepalive's)."""

    payload: int

    def __str__(self) -> str:
        return f"PongReceived({self.payload})"


@attrs.frozen
class GoawayReceived:
    """The peer will accept no new requests (code 0, NO_ERROR: open streams continue).

    A GOAWAY with any other code is reported as :class:`ConnectionTerminated` instead.
    """

    code: int
    last_handle: int
    message: str

    def __str__(self) -> str:
        return f"GoawayReceived({code_name(self.code)} last={self.last_handle})"


@attrs.frozen
class ConnectionTerminated:
    """The connection is over: flush ``data_to_send()`` and close the transport.

    ``by_peer`` tells whether the peer ended it (GOAWAY, end of input) or this side did
    (protocol error detected here, timeout, local close, finished draining).
    """

    code: int
    message: str
    by_peer: bool

    def __str__(self) -> str:
        who = "peer" if self.by_peer else "local"
        return f"ConnectionTerminated({code_name(self.code)} by {who} {_short(self.message)})"


# -- requests -----------------------------------------------------------------------------------


@attrs.frozen
class SubscribeRequested:
    """Server: subscribe ``handle`` to ``channel``/``stream_id``. Answer with ``accept`` or
    ``reject``. ``after_seq`` is None for a tail (live-only) subscription."""

    handle: int
    channel: str
    stream_id: str
    after_seq: int | None
    policy: OverflowPolicy
    priority: int

    def __str__(self) -> str:
        start = "tail" if self.after_seq is None else f"after={self.after_seq}"
        return (
            f"SubscribeRequested(h={self.handle} {self.channel}/{_short(self.stream_id)} {start})"
        )


@attrs.frozen
class OpenRequested:
    """Server: start a stream on ``channel`` with ``args`` and subscribe ``handle`` to it.
    ``stream_id`` is empty when the server is to pick one."""

    handle: int
    channel: str
    stream_id: str
    args: bytes
    policy: OverflowPolicy
    priority: int
    #: The OPEN may join the stream if one with this id is running (R-JOIN-1).
    join: bool = False
    #: Flag BIDI: the client sends chunks on ``handle`` too, reported as :class:`UploadData`,
    #: :class:`UploadEnded` and :class:`UploadFailed` (R-BIDI-1).
    bidi: bool = False

    def __str__(self) -> str:
        join = " join" if self.join else ""
        bidi = " bidi" if self.bidi else ""
        return f"OpenRequested(h={self.handle} {self.channel} args={_short(self.args)}{join}{bidi})"


@attrs.frozen
class UploadRequested:
    """Server: the client wants to upload to ``channel``/``stream_id`` (empty: server picks)."""

    handle: int
    channel: str
    stream_id: str
    args: bytes
    #: Flag RESUMABLE: park it in the session on a disconnect (R-UPR-2).
    resumable: bool = False
    #: Flag RESULT: the uploader waits for a result after END (R-UPR-7).
    result: bool = False
    #: Flag RESUME: take over the session's parked upload ``stream_id`` (R-UPR-4).
    resume: bool = False

    def __str__(self) -> str:
        flags = " resume" * self.resume
        return f"UploadRequested(h={self.handle} {self.channel}/{_short(self.stream_id)}{flags})"


@attrs.frozen
class RequestAccepted:
    """Client: the subscribe, open or upload on ``handle`` was accepted. ``first_seq`` and
    ``last_seq`` are the seqs the server holds (``first_seq > last_seq`` when none)."""

    handle: int
    stream_id: str
    first_seq: int
    last_seq: int
    #: An OPEN joined a running stream instead of starting one (R-JOIN-2).
    joined: bool = False

    def __str__(self) -> str:
        return (
            f"RequestAccepted(h={self.handle} id={_short(self.stream_id)} "
            f"seq={self.first_seq}..{self.last_seq}{' joined' * self.joined})"
        )


@attrs.frozen
class RequestRejected:
    """Client: the request on ``handle`` was refused; the handle is closed."""

    handle: int
    code: int
    message: str

    def __str__(self) -> str:
        return f"RequestRejected(h={self.handle} {code_name(self.code)} {_short(self.message)})"


# -- subscription data (client side) ------------------------------------------------------------


@attrs.frozen
class DataReceived:
    """Client: chunks ``seq, seq + 1, ...`` of the subscription on ``handle``, in order."""

    handle: int
    seq: int
    chunks: tuple[bytes, ...]

    @property
    def last_seq(self) -> int:
        """The seq of the last chunk."""
        return self.seq + len(self.chunks) - 1

    def __str__(self) -> str:
        return _chunks_str("DataReceived", self.handle, self.seq, self.chunks)


@attrs.frozen
class GapReceived:
    """Client: seqs ``from_seq..to_seq`` will never arrive on ``handle``."""

    handle: int
    from_seq: int
    to_seq: int
    reason: GapReason

    def __str__(self) -> str:
        return f"GapReceived(h={self.handle} {self.from_seq}..{self.to_seq} {self.reason.name})"


@attrs.frozen
class StreamEnded:
    """Client: the stream ended after ``last_seq`` and everything up to it was delivered.
    The handle is closed."""

    handle: int
    last_seq: int

    def __str__(self) -> str:
        return f"StreamEnded(h={self.handle} last={self.last_seq})"


@attrs.frozen
class StreamFailed:
    """Client: the stream (or this subscription) failed after ``last_seq``. Closed."""

    handle: int
    code: int
    message: str
    last_seq: int

    def __str__(self) -> str:
        return f"StreamFailed(h={self.handle} {code_name(self.code)} {_short(self.message)})"


# -- subscription control (server side) ---------------------------------------------------------


@attrs.frozen
class CancelRequested:
    """Server: the client left the subscription on ``handle`` and asks the producer to stop
    (on a bidirectional stream: the server's direction; the client's runs on)."""

    handle: int

    def __str__(self) -> str:
        return f"CancelRequested(h={self.handle})"


@attrs.frozen
class Unsubscribed:
    """Server: the client left the subscription on ``handle``."""

    handle: int

    def __str__(self) -> str:
        return f"Unsubscribed(h={self.handle})"


# -- uploads ------------------------------------------------------------------------------------


@attrs.frozen
class UploadData:
    """Server: chunks ``seq, seq + 1, ...`` of the upload on ``handle`` (or of the client's
    direction of a bidirectional stream)."""

    handle: int
    seq: int
    chunks: tuple[bytes, ...]

    @property
    def last_seq(self) -> int:
        """The seq of the last chunk."""
        return self.seq + len(self.chunks) - 1

    def __str__(self) -> str:
        return _chunks_str("UploadData", self.handle, self.seq, self.chunks)


@attrs.frozen
class UploadEnded:
    """Server: the uploader ended the upload after ``last_seq``; all of it was delivered."""

    handle: int
    last_seq: int

    def __str__(self) -> str:
        return f"UploadEnded(h={self.handle} last={self.last_seq})"


@attrs.frozen
class UploadFailed:
    """Server: the uploader failed the upload with ``code``."""

    handle: int
    code: int
    message: str
    last_seq: int

    def __str__(self) -> str:
        return f"UploadFailed(h={self.handle} {code_name(self.code)} {_short(self.message)})"


@attrs.frozen
class UploadCancelled:
    """Client: the server cancelled the upload on ``handle``. Closed (on a bidirectional
    stream: the client's direction is; the server's runs on)."""

    handle: int
    code: int
    message: str

    def __str__(self) -> str:
        return f"UploadCancelled(h={self.handle} {code_name(self.code)} {_short(self.message)})"


@attrs.frozen
class UploadCompleted:
    """Client: the server took the whole resumable or result upload on ``handle`` and
    answered UPLOAD_RESULT; ``result`` is the handler's result (empty without flag RESULT).
    Closed."""

    handle: int
    result: bytes

    def __str__(self) -> str:
        return f"UploadCompleted(h={self.handle} {_short(self.result)})"


# -- flow ---------------------------------------------------------------------------------------


@attrs.frozen
class Writable:
    """The sender on ``handle`` was told BLOCKED and may write again."""

    handle: int

    def __str__(self) -> str:
        return f"Writable(h={self.handle})"


@attrs.frozen
class OverflowWarning:
    """Seqs ``from_seq..to_seq`` (``dropped`` = how many) of ``handle`` were dropped because the
    subscriber fell behind (drop_oldest policy): one per OVERFLOW gap, reported by the server
    when it sends the gap and by the client when it receives it (after the matching
    :class:`GapReceived`), with the same seqs. Drops whose gap is never sent (the subscriber
    left, the connection ended) are counted in ``ConnectionStatistics.chunks_dropped`` only."""

    handle: int
    dropped: int
    from_seq: int
    to_seq: int

    def __str__(self) -> str:
        return (
            f"OverflowWarning(h={self.handle} dropped={self.dropped} "
            f"{self.from_seq}..{self.to_seq})"
        )


# -- queries (spec section 5.5) -----------------------------------------------------------------


@attrs.frozen
class StatusRequested:
    """Server: the client asks the state of ``channel``/``stream_id``. Answer with
    ``answer_streams`` (one entry, MISSING if there is no such stream) or ``reject``."""

    handle: int
    channel: str
    stream_id: str

    def __str__(self) -> str:
        return f"StatusRequested(h={self.handle} {self.channel}/{_short(self.stream_id)})"


@attrs.frozen
class ListRequested:
    """Server: the client asks a page of ``channel``'s streams: ids after ``after`` (empty:
    from the first), in id order, at most ``limit``, whose state is in the mask ``states``
    (``1 << StreamState``; 0: any). Answer with ``answer_streams`` or ``reject``."""

    handle: int
    channel: str
    after: str
    states: int
    limit: int

    def __str__(self) -> str:
        return f"ListRequested(h={self.handle} {self.channel} after={_short(self.after)})"


@attrs.frozen
class DeleteRequested:
    """Server: the client asks to delete ``channel``/``stream_id``. Answer with
    ``answer_streams`` (the entry as it was) or ``reject``."""

    handle: int
    channel: str
    stream_id: str

    def __str__(self) -> str:
        return f"DeleteRequested(h={self.handle} {self.channel}/{_short(self.stream_id)})"


@attrs.frozen
class StreamsReceived:
    """Client: the answer to ``status``, ``list_streams`` or ``delete`` on ``handle`` (which
    is closed now): the entries, and for a list the cursor of the next page (empty: last)."""

    handle: int
    entries: tuple[StreamEntry, ...]
    next: str

    def __str__(self) -> str:
        return f"StreamsReceived(h={self.handle} {len(self.entries)} entries)"


Event = (
    HandshakeRequested
    | HandshakeCompleted
    | HandshakeRefused
    | PingReceived
    | PongReceived
    | GoawayReceived
    | ConnectionTerminated
    | SubscribeRequested
    | OpenRequested
    | UploadRequested
    | RequestAccepted
    | RequestRejected
    | DataReceived
    | GapReceived
    | StreamEnded
    | StreamFailed
    | CancelRequested
    | Unsubscribed
    | UploadData
    | UploadEnded
    | UploadFailed
    | UploadCancelled
    | UploadCompleted
    | Writable
    | OverflowWarning
    | StatusRequested
    | ListRequested
    | DeleteRequested
    | StreamsReceived
)
