"""The wire format: frame classes, ``encode`` and the incremental :class:`FrameDecoder`.

Rules for this file:

1. This module knows the bytes and nothing of state: which frame may come when is decided in
   ``_state.py`` and ``_connection.py``.
2. Every frame is ``length:u32 | type:u8 | flags:u8 | handle:u32 | body`` (big-endian), where
   ``length`` counts the body only. spec/PROTOCOL.md section 3 is the normative text.
3. Decoding never trusts a length: an oversize frame is refused from its header, before its body
   is buffered, and every field is bounds-checked. Malformed input raises :class:`FrameError` with
   its code; nothing else escapes. A frame of unknown type costs a few integer operations: a
   decoder with an unknown-frame budget skips it without building an object.
4. A run of DATA frames for one handle with consecutive seqs decodes as one :class:`Data` whose
   ``chunks`` holds every payload: the hot path costs one Python object per run, not per frame.
   Encoding such a :class:`Data` gives the same frames back.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable
from typing import ClassVar, Final

import attrs

from ._errors import ErrorCode, FrameError

__all__ = [
    "DEFAULT_MAX_FRAME_SIZE",
    "HEADER_SIZE",
    "MAGIC",
    "MAX_FRAME_SIZE_LIMIT",
    "MAX_HANDSHAKE_BODY",
    "MIN_MAX_FRAME_SIZE",
    "MIN_UNKNOWN_BYTES",
    "MIN_UNKNOWN_FRAMES",
    "PROTOCOL_VERSION",
    "Accept",
    "Cancel",
    "Credit",
    "Data",
    "End",
    "Error",
    "Feature",
    "Frame",
    "FrameDecoder",
    "FrameFlag",
    "FrameType",
    "Gap",
    "GapReason",
    "Goaway",
    "Hello",
    "Open",
    "OverflowPolicy",
    "Ping",
    "Pong",
    "Query",
    "QueryOp",
    "Reject",
    "Setting",
    "StreamEntry",
    "StreamState",
    "Streams",
    "Subscribe",
    "Unknown",
    "Unsubscribe",
    "Upload",
    "UploadAck",
    "UploadCancel",
    "UploadResult",
    "Welcome",
    "encode",
    "encode_data",
]

PROTOCOL_VERSION: Final = 1
MAGIC: Final = b"STRP"
HEADER_SIZE: Final = 10
#: Every peer accepts frame bodies of at least this many bytes (HTTP/2 chose the same floor);
#: HELLO and WELCOME must fit in it because they travel before any limit is known.
MIN_MAX_FRAME_SIZE: Final = 16_384
#: The largest HELLO or WELCOME body (R-FRAME-7), whatever the receiver's MAX_FRAME_SIZE.
MAX_HANDSHAKE_BODY: Final = MIN_MAX_FRAME_SIZE
#: Frames of unknown type, and bytes of their bodies, that every receiver accepts in a row
#: before a frame of a known type (R-FWD-30): a sender that needs more sends a PING between.
MIN_UNKNOWN_FRAMES: Final = 1000
MIN_UNKNOWN_BYTES: Final = 1 << 20
DEFAULT_MAX_FRAME_SIZE: Final = 65_536
MAX_FRAME_SIZE_LIMIT: Final = 16_777_216

U8: Final = 0xFF
U16: Final = 0xFFFF
U32: Final = 0xFFFF_FFFF
U64: Final = 0xFFFF_FFFF_FFFF_FFFF

_HEADER = struct.Struct(">IBBI")
_LENGTH_TYPE = struct.Struct(">IB")
_DATA_HEADER = struct.Struct(">IBBIQ")
_DATA_HEADER_SIZE: Final = 18
_U16 = struct.Struct(">H")
_U64 = struct.Struct(">Q")
_SETTING = struct.Struct(">HI")
_VERSIONS = struct.Struct(">HH")
_GOAWAY_FIXED = struct.Struct(">HI")
_SUBSCRIBE_FIXED = struct.Struct(">QIIBB")
_OPEN_FIXED = struct.Struct(">IIBB")
_ACCEPT_FIXED = struct.Struct(">QQII")
_GAP = struct.Struct(">QQB")
_ERROR_FIXED = struct.Struct(">HQ")
_CREDIT = struct.Struct(">II")
_QUERY_FIXED = struct.Struct(">BBH")
_ENTRY_FIXED = struct.Struct(">BHQQ")


class FrameType(enum.IntEnum):
    """The frame type byte. 0x00-0x0F are connection frames (handle 0), 0x10-0x3F handle frames;
    other values are unknown to version 1 and ignored by receivers."""

    HELLO = 0x01
    WELCOME = 0x02
    PING = 0x03
    PONG = 0x04
    GOAWAY = 0x05
    SUBSCRIBE = 0x10
    OPEN = 0x11
    UPLOAD = 0x12
    ACCEPT = 0x13
    REJECT = 0x14
    DATA = 0x15
    GAP = 0x16
    END = 0x17
    ERROR = 0x18
    CANCEL = 0x19
    UNSUBSCRIBE = 0x1A
    UPLOAD_CANCEL = 0x1B
    CREDIT = 0x1C
    QUERY = 0x1D
    STREAMS = 0x1E
    UPLOAD_ACK = 0x1F
    UPLOAD_RESULT = 0x20


class FrameFlag(enum.IntFlag):
    """Flag bits. A flag's meaning depends on the frame type; unknown bits are ignored."""

    MORE = 0x01  # DATA: the chunk continues in the next DATA frame of this handle
    TAIL = 0x01  # SUBSCRIBE: start at live data, ignore after_seq
    RESUMED = 0x01  # WELCOME: the session named by the resume token was resumed
    JOIN = 0x01  # OPEN: join the stream if one with this id is running (run-or-join)
    JOINED = 0x01  # ACCEPT: the OPEN joined a running stream instead of starting one
    BIDI = 0x02  # OPEN: the handle carries chunks both ways (section 6.4)
    RESUMABLE = 0x01  # UPLOAD: the server parks the upload on a disconnect (section 9.1)
    RESULT = 0x02  # UPLOAD: the server answers the finished upload with UPLOAD_RESULT
    RESUME = 0x04  # UPLOAD: take over the session's parked upload of this id


class OverflowPolicy(enum.IntEnum):
    """What the sender does when a subscriber's queue is full (spec section 8)."""

    DEFAULT = 0
    DROP_OLDEST = 1
    BLOCK = 2
    ERROR = 3


class QueryOp(enum.IntEnum):
    """What a QUERY asks (spec section 5.5)."""

    STATUS = 1  # one stream's state
    LIST = 2  # a page of the channel's streams
    DELETE = 3  # delete one stream


class StreamState(enum.IntEnum):
    """A stream's state in a STREAMS entry. LIST filters by a bit mask of ``1 << state``."""

    MISSING = 0  # no such stream (never written, released, or deleted)
    OPEN = 1  # its producer may still write
    ENDED = 2
    FAILED = 3  # with the producer's code
    ABORTED = 4  # its last subscriber cancelled (code CANCELLED)


class Feature(enum.IntFlag):
    """Bits of the server's FEATURES setting: what it implements beyond the base protocol, so
    that a client never sends a request the server would ignore (R-FWD-4)."""

    QUERIES = 0x01  # QUERY and STREAMS: status, list and delete (section 5.5)
    BIDI = 0x02  # OPEN's flag BIDI: bidirectional streams (section 6.4)
    UPLOAD_RESUME = 0x04  # resumable uploads, UPLOAD_ACK and UPLOAD_RESULT (section 9.1)


class GapReason(enum.IntEnum):
    """Why chunks are missing."""

    EVICTED = 1  # no longer retained by the replay window
    OVERFLOW = 2  # dropped by the drop_oldest policy because the subscriber fell behind


class Setting(enum.IntEnum):
    """Setting ids carried in HELLO and WELCOME. Unknown ids are ignored."""

    MAX_FRAME_SIZE = 1
    MAX_CHUNK_SIZE = 2
    KEEPALIVE_MS = 3
    MAX_SUBSCRIPTIONS = 4
    MAX_UPLOADS = 5
    SESSION_GRACE_MS = 6
    FEATURES = 7


# -- validators ---------------------------------------------------------------------------------


def _uint(bound: int) -> Callable[[object, attrs.Attribute[int], int], None]:
    def check(_inst: object, attr: attrs.Attribute[int], value: int) -> None:
        if not 0 <= value <= bound:
            raise ValueError(f"{attr.name} must be in 0..{bound}, got {value}")

    return check


def _seq(_inst: object, attr: attrs.Attribute[int], value: int) -> None:
    if not 1 <= value <= U64:
        raise ValueError(f"{attr.name} must be in 1..{U64} (seqs start at 1), got {value}")


def _handle(_inst: object, attr: attrs.Attribute[int], value: int) -> None:
    if not 1 <= value <= U32:
        raise ValueError(f"{attr.name} must be in 1..{U32}, got {value}")


def _str16(_inst: object, attr: attrs.Attribute[str], value: str) -> None:
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValueError(f"{attr.name} must be valid UTF-8 (no lone surrogates)") from None
    if size > U16:
        raise ValueError(f"{attr.name} must encode to at most {U16} bytes")


def _settings(
    _inst: object, attr: attrs.Attribute[tuple[tuple[int, int], ...]], value: object
) -> None:
    if not isinstance(value, tuple) or len(value) > U16:
        raise ValueError(f"{attr.name} must be a tuple of at most {U16} (id, value) pairs")
    for pair in value:
        if not (
            isinstance(pair, tuple)
            and len(pair) == 2
            and 0 <= pair[0] <= U16
            and 0 <= pair[1] <= U32
        ):
            raise ValueError(f"{attr.name} entries must be (u16 id, u32 value), got {pair!r}")


def _short(value: bytes | str, limit: int = 24) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


_u8, _u16, _u32, _u64 = _uint(U8), _uint(U16), _uint(U32), _uint(U64)

# -- frames -------------------------------------------------------------------------------------


@attrs.frozen
class Hello:
    """Client → server, first frame: versions, settings, resume token and auth payload."""

    TYPE: ClassVar[FrameType] = FrameType.HELLO

    min_version: int = attrs.field(default=PROTOCOL_VERSION, validator=_u16)
    max_version: int = attrs.field(default=PROTOCOL_VERSION, validator=_u16)
    settings: tuple[tuple[int, int], ...] = attrs.field(default=(), validator=_settings)
    resume_token: str = attrs.field(default="", validator=_str16)
    auth: bytes = b""

    def __str__(self) -> str:
        return (
            f"HELLO v{self.min_version}-{self.max_version} {len(self.settings)} settings "
            f"resume={bool(self.resume_token)} auth={len(self.auth)}B"
        )


@attrs.frozen
class Welcome:
    """Server → client: the handshake is accepted."""

    TYPE: ClassVar[FrameType] = FrameType.WELCOME

    version: int = attrs.field(default=PROTOCOL_VERSION, validator=_u16)
    resumed: bool = False
    settings: tuple[tuple[int, int], ...] = attrs.field(default=(), validator=_settings)
    session_id: str = attrs.field(default="", validator=_str16)
    resume_token: str = attrs.field(default="", validator=_str16)

    def __str__(self) -> str:
        return f"WELCOME v{self.version} session={_short(self.session_id)} resumed={self.resumed}"


@attrs.frozen
class Ping:
    """Either side: answer with PONG carrying the same payload."""

    TYPE: ClassVar[FrameType] = FrameType.PING

    payload: int = attrs.field(default=0, validator=_u64)

    def __str__(self) -> str:
        return f"PING {self.payload}"


@attrs.frozen
class Pong:
    """Either side: the answer to PING."""

    TYPE: ClassVar[FrameType] = FrameType.PONG

    payload: int = attrs.field(default=0, validator=_u64)

    def __str__(self) -> str:
        return f"PONG {self.payload}"


@attrs.frozen
class Goaway:
    """Either side: no new requests on this connection. Code 0 drains; any other code closes.
    Sent by the server before WELCOME it refuses the handshake."""

    TYPE: ClassVar[FrameType] = FrameType.GOAWAY

    code: int = attrs.field(default=0, validator=_u16)
    last_handle: int = attrs.field(default=0, validator=_u32)
    message: str = attrs.field(default="", validator=_str16)

    def __str__(self) -> str:
        return f"GOAWAY code={self.code} last={self.last_handle} {_short(self.message)}"


@attrs.frozen
class Subscribe:
    """Client → server: subscribe a new handle to an existing stream."""

    TYPE: ClassVar[FrameType] = FrameType.SUBSCRIBE

    handle: int = attrs.field(validator=_handle)
    channel: str = attrs.field(validator=_str16)
    stream_id: str = attrs.field(validator=_str16)
    after_seq: int = attrs.field(default=0, validator=_u64)
    tail: bool = False
    credit_chunks: int = attrs.field(default=0, validator=_u32)
    credit_bytes: int = attrs.field(default=0, validator=_u32)
    policy: OverflowPolicy = attrs.field(default=OverflowPolicy.DEFAULT, converter=OverflowPolicy)
    priority: int = attrs.field(default=0, validator=_u8)

    def __str__(self) -> str:
        start = "tail" if self.tail else f"after={self.after_seq}"
        return (
            f"SUBSCRIBE h={self.handle} {_short(self.channel, 20)}/{_short(self.stream_id, 20)} "
            f"{start} {self.policy.name}"
        )


@attrs.frozen
class Open:
    """Client → server: ask a channel to start a stream and subscribe this handle to it."""

    TYPE: ClassVar[FrameType] = FrameType.OPEN

    handle: int = attrs.field(validator=_handle)
    channel: str = attrs.field(validator=_str16)
    stream_id: str = attrs.field(default="", validator=_str16)
    credit_chunks: int = attrs.field(default=0, validator=_u32)
    credit_bytes: int = attrs.field(default=0, validator=_u32)
    policy: OverflowPolicy = attrs.field(default=OverflowPolicy.DEFAULT, converter=OverflowPolicy)
    priority: int = attrs.field(default=0, validator=_u8)
    args: bytes = b""
    #: Flag JOIN: join the stream if it is running instead of being refused (R-JOIN-1).
    join: bool = False
    #: Flag BIDI: the client sends chunks on the handle too (R-BIDI-1).
    bidi: bool = False

    def __str__(self) -> str:
        return (
            f"OPEN h={self.handle} {_short(self.channel)}/{_short(self.stream_id)} "
            f"args={_short(self.args)}{' join' * self.join}{' bidi' * self.bidi}"
        )


@attrs.frozen
class Upload:
    """Client → server: start an upload (client → server stream) on a new handle."""

    TYPE: ClassVar[FrameType] = FrameType.UPLOAD

    handle: int = attrs.field(validator=_handle)
    channel: str = attrs.field(validator=_str16)
    stream_id: str = attrs.field(default="", validator=_str16)
    args: bytes = b""
    #: Flag RESUMABLE: park the upload in the session on a disconnect (R-UPR-2).
    resumable: bool = False
    #: Flag RESULT: answer the finished upload with the handler's result (R-UPR-7).
    result: bool = False
    #: Flag RESUME: take over the session's parked upload ``stream_id`` (R-UPR-4).
    resume: bool = False

    def __str__(self) -> str:
        flags = " resumable" * self.resumable + " result" * self.result + " resume" * self.resume
        return f"UPLOAD h={self.handle} {_short(self.channel)}/{_short(self.stream_id)}{flags}"


@attrs.frozen
class Accept:
    """Server → client: the request on ``handle`` is accepted."""

    TYPE: ClassVar[FrameType] = FrameType.ACCEPT

    handle: int = attrs.field(validator=_handle)
    stream_id: str = attrs.field(validator=_str16)
    first_seq: int = attrs.field(default=1, validator=_u64)
    last_seq: int = attrs.field(default=0, validator=_u64)
    credit_chunks: int = attrs.field(default=0, validator=_u32)
    credit_bytes: int = attrs.field(default=0, validator=_u32)
    #: Flag JOINED: an OPEN joined a running stream (R-JOIN-2).
    joined: bool = False

    def __str__(self) -> str:
        return (
            f"ACCEPT h={self.handle} id={_short(self.stream_id)} "
            f"seq={self.first_seq}..{self.last_seq}{' joined' * self.joined}"
        )


@attrs.frozen
class Reject:
    """Server → client: the request on ``handle`` is refused; the handle is closed."""

    TYPE: ClassVar[FrameType] = FrameType.REJECT

    handle: int = attrs.field(validator=_handle)
    code: int = attrs.field(validator=_u16)
    message: str = attrs.field(default="", validator=_str16)

    def __str__(self) -> str:
        return f"REJECT h={self.handle} code={self.code} {_short(self.message)}"


def _chunks(_inst: Data, attr: attrs.Attribute[tuple[bytes, ...]], value: object) -> None:
    if not isinstance(value, tuple) or not value:
        raise ValueError("chunks must be a non-empty tuple of bytes")


@attrs.frozen
class Data:
    """A run of chunks for one handle with consecutive seqs ``seq, seq+1, ...``.

    On the wire each chunk is one DATA frame. With ``more`` the run is a single fragment of a
    chunk whose next fragment follows in the next DATA frame of this handle (same seq).
    """

    TYPE: ClassVar[FrameType] = FrameType.DATA

    handle: int = attrs.field(validator=_handle)
    seq: int = attrs.field(validator=_seq)
    chunks: tuple[bytes, ...] = attrs.field(validator=_chunks)
    more: bool = attrs.field(default=False)

    @more.validator
    def _check_more(self, _attr: attrs.Attribute[bool], value: bool) -> None:
        if value and len(self.chunks) != 1:
            raise ValueError("a fragment (more=True) carries exactly one chunk")
        if self.seq + len(self.chunks) - 1 > U64:
            raise ValueError("seq of the last chunk must fit in u64")

    def __str__(self) -> str:
        size = sum(map(len, self.chunks))
        last = self.seq + len(self.chunks) - 1
        more = " MORE" if self.more else ""
        return f"DATA h={self.handle} seq={self.seq}..{last} {len(self.chunks)}x {size}B{more}"


@attrs.frozen
class Gap:
    """Server → client: seqs ``from_seq..to_seq`` (inclusive) will never be delivered."""

    TYPE: ClassVar[FrameType] = FrameType.GAP

    handle: int = attrs.field(validator=_handle)
    from_seq: int = attrs.field(validator=_seq)
    to_seq: int = attrs.field(validator=_u64)
    reason: GapReason = attrs.field(converter=GapReason)

    @to_seq.validator
    def _check_range(self, _attr: attrs.Attribute[int], value: int) -> None:
        if value < self.from_seq:
            raise ValueError("to_seq must be >= from_seq")

    def __str__(self) -> str:
        return f"GAP h={self.handle} {self.from_seq}..{self.to_seq} {self.reason.name}"


@attrs.frozen
class End:
    """The stream on ``handle`` ended after ``last_seq`` (server → client for a subscription,
    client → server for an upload)."""

    TYPE: ClassVar[FrameType] = FrameType.END

    handle: int = attrs.field(validator=_handle)
    last_seq: int = attrs.field(validator=_u64)

    def __str__(self) -> str:
        return f"END h={self.handle} last={self.last_seq}"


@attrs.frozen
class Error:
    """The stream on ``handle`` failed after ``last_seq`` with ``code`` (server → client for a
    subscription, client → server for an upload)."""

    TYPE: ClassVar[FrameType] = FrameType.ERROR

    handle: int = attrs.field(validator=_handle)
    code: int = attrs.field(validator=_u16)
    last_seq: int = attrs.field(default=0, validator=_u64)
    message: str = attrs.field(default="", validator=_str16)

    def __str__(self) -> str:
        return f"ERROR h={self.handle} code={self.code} last={self.last_seq} {_short(self.message)}"


@attrs.frozen
class Cancel:
    """Client → server: leave the subscription and ask the producer to stop."""

    TYPE: ClassVar[FrameType] = FrameType.CANCEL

    handle: int = attrs.field(validator=_handle)

    def __str__(self) -> str:
        return f"CANCEL h={self.handle}"


@attrs.frozen
class Unsubscribe:
    """Client → server: leave the subscription; the producer is not asked to stop."""

    TYPE: ClassVar[FrameType] = FrameType.UNSUBSCRIBE

    handle: int = attrs.field(validator=_handle)

    def __str__(self) -> str:
        return f"UNSUBSCRIBE h={self.handle}"


@attrs.frozen
class UploadCancel:
    """Server → client: stop the upload on ``handle``."""

    TYPE: ClassVar[FrameType] = FrameType.UPLOAD_CANCEL

    handle: int = attrs.field(validator=_handle)
    code: int = attrs.field(default=int(ErrorCode.UPLOAD_CANCELLED), validator=_u16)
    message: str = attrs.field(default="", validator=_str16)

    def __str__(self) -> str:
        return f"UPLOAD_CANCEL h={self.handle} code={self.code} {_short(self.message)}"


@attrs.frozen
class UploadAck:
    """Server → client: every seq of the upload on ``handle`` up to ``seq`` is taken (kept by
    the server across a disconnect); the uploader may forget them (R-UPR-3)."""

    TYPE: ClassVar[FrameType] = FrameType.UPLOAD_ACK

    handle: int = attrs.field(validator=_handle)
    seq: int = attrs.field(default=0, validator=_u64)

    def __str__(self) -> str:
        return f"UPLOAD_ACK h={self.handle} seq={self.seq}"


@attrs.frozen
class UploadResult:
    """Server → client: the upload on ``handle`` is complete; ``payload`` is its result
    (empty without flag RESULT). Closes the handle on both sides (R-UPR-7)."""

    TYPE: ClassVar[FrameType] = FrameType.UPLOAD_RESULT

    handle: int = attrs.field(validator=_handle)
    payload: bytes = b""

    def __str__(self) -> str:
        return f"UPLOAD_RESULT h={self.handle} {_short(self.payload)}"


@attrs.frozen
class Credit:
    """Either side: the receiver on ``handle`` grants this many more chunks and bytes."""

    TYPE: ClassVar[FrameType] = FrameType.CREDIT

    handle: int = attrs.field(validator=_handle)
    chunks: int = attrs.field(default=0, validator=_u32)
    nbytes: int = attrs.field(default=0, validator=_u32)

    def __str__(self) -> str:
        return f"CREDIT h={self.handle} +{self.chunks}/+{self.nbytes}B"


@attrs.frozen
class Query:
    """Client → server request: a stream's status, a page of a channel's streams, or a
    delete. ``stream_id`` names the stream (STATUS, DELETE) or, for LIST, the cursor: the
    page starts after it (empty: at the first id). ``states`` (LIST) is a mask of
    ``1 << StreamState`` (0: every state); ``limit`` (LIST) the most entries wanted."""

    TYPE: ClassVar[FrameType] = FrameType.QUERY

    handle: int = attrs.field(validator=_handle)
    op: QueryOp = attrs.field(converter=QueryOp)
    channel: str = attrs.field(validator=_str16)
    stream_id: str = attrs.field(default="", validator=_str16)
    states: int = attrs.field(default=0, validator=_u8)
    limit: int = attrs.field(default=0, validator=_u16)

    def __str__(self) -> str:
        return (
            f"QUERY h={self.handle} {self.op.name} {_short(self.channel, 20)}/"
            f"{_short(self.stream_id, 20)}"
        )


@attrs.frozen
class StreamEntry:
    """One stream in a STREAMS reply: its state, the code it failed with (FAILED, ABORTED;
    else 0) and the seqs it retains (``first_seq > last_seq`` when none)."""

    stream_id: str = attrs.field(validator=_str16)
    state: StreamState = attrs.field(converter=StreamState)
    code: int = attrs.field(default=0, validator=_u16)
    first_seq: int = attrs.field(default=1, validator=_u64)
    last_seq: int = attrs.field(default=0, validator=_u64)

    def __str__(self) -> str:
        code = f" code={self.code}" if self.code else ""
        seqs = f"seq={self.first_seq}..{self.last_seq}"
        return f"{_short(self.stream_id)} {self.state.name}{code} {seqs}"


def _entries(_inst: object, attr: attrs.Attribute[tuple[StreamEntry, ...]], value: object) -> None:
    if not isinstance(value, tuple) or len(value) > U16:
        raise ValueError(f"{attr.name} must be a tuple of at most {U16} entries")


@attrs.frozen
class Streams:
    """Server → client: the answer to a QUERY (closes the handle). STATUS and DELETE: one
    entry (DELETE: as the stream was before it was deleted). LIST: a page, in id order, and
    ``next``, the cursor of the next page (empty on the last)."""

    TYPE: ClassVar[FrameType] = FrameType.STREAMS

    handle: int = attrs.field(validator=_handle)
    entries: tuple[StreamEntry, ...] = attrs.field(default=(), validator=_entries)
    next: str = attrs.field(default="", validator=_str16)

    def __str__(self) -> str:
        more = f" next={_short(self.next)}" if self.next else ""
        return f"STREAMS h={self.handle} {len(self.entries)} entries{more}"


@attrs.frozen
class Unknown:
    """A frame whose type this version does not know. Receivers ignore it (spec rule R-FWD-1)."""

    type: int = attrs.field(validator=_u8)
    flags: int = attrs.field(default=0, validator=_u8)
    handle: int = attrs.field(default=0, validator=_u32)
    body: bytes = b""

    @type.validator
    def _check_type(self, _attr: attrs.Attribute[int], value: int) -> None:
        if value in _KNOWN_TYPES:
            raise ValueError(f"type 0x{value:02x} is known: use its frame class")

    def __str__(self) -> str:
        return f"UNKNOWN type=0x{self.type:02x} h={self.handle} {len(self.body)}B"


Frame = (
    Hello
    | Welcome
    | Ping
    | Pong
    | Goaway
    | Subscribe
    | Open
    | Upload
    | Accept
    | Reject
    | Data
    | Gap
    | End
    | Error
    | Cancel
    | Unsubscribe
    | UploadCancel
    | UploadAck
    | UploadResult
    | Credit
    | Query
    | Streams
    | Unknown
)

# -- encoding -----------------------------------------------------------------------------------


def _s16(value: str) -> bytes:
    raw = value.encode("utf-8")
    return _U16.pack(len(raw)) + raw


def _settings_bytes(settings: tuple[tuple[int, int], ...]) -> bytes:
    return _U16.pack(len(settings)) + b"".join(_SETTING.pack(k, v) for k, v in settings)


def _frame(ftype: int, flags: int, handle: int, body: bytes) -> bytes:
    return _HEADER.pack(len(body), ftype, flags, handle) + body


def encode_data(handle: int, seq: int, payload: bytes, flags: int = 0) -> bytes:
    """One DATA frame. The hot path: one ``struct.pack`` and one concatenation."""
    return _DATA_HEADER.pack(8 + len(payload), _T_DATA, flags, handle, seq) + payload


def encode(frame: Frame) -> bytes:
    """The bytes of ``frame`` (several frames for a :class:`Data` run)."""
    match frame:
        case Data():
            if len(frame.chunks) == 1:
                return encode_data(frame.handle, frame.seq, frame.chunks[0], int(frame.more))
            return b"".join(
                encode_data(frame.handle, frame.seq + i, chunk)
                for i, chunk in enumerate(frame.chunks)
            )
        case Credit():
            body = _CREDIT.pack(frame.chunks, frame.nbytes)
            return _frame(FrameType.CREDIT, 0, frame.handle, body)
        case Hello():
            body = (
                MAGIC
                + _VERSIONS.pack(frame.min_version, frame.max_version)
                + _settings_bytes(frame.settings)
                + _s16(frame.resume_token)
                + frame.auth
            )
            return _frame(FrameType.HELLO, 0, 0, body)
        case Welcome():
            body = (
                _U16.pack(frame.version)
                + _settings_bytes(frame.settings)
                + _s16(frame.session_id)
                + _s16(frame.resume_token)
            )
            return _frame(FrameType.WELCOME, FrameFlag.RESUMED * frame.resumed, 0, body)
        case Ping():
            return _frame(FrameType.PING, 0, 0, _U64.pack(frame.payload))
        case Pong():
            return _frame(FrameType.PONG, 0, 0, _U64.pack(frame.payload))
        case Goaway():
            body = _GOAWAY_FIXED.pack(frame.code, frame.last_handle) + _s16(frame.message)
            return _frame(FrameType.GOAWAY, 0, 0, body)
        case Subscribe():
            body = (
                _SUBSCRIBE_FIXED.pack(
                    frame.after_seq,
                    frame.credit_chunks,
                    frame.credit_bytes,
                    frame.policy,
                    frame.priority,
                )
                + _s16(frame.channel)
                + _s16(frame.stream_id)
            )
            return _frame(FrameType.SUBSCRIBE, FrameFlag.TAIL * frame.tail, frame.handle, body)
        case Open():
            body = (
                _OPEN_FIXED.pack(
                    frame.credit_chunks, frame.credit_bytes, frame.policy, frame.priority
                )
                + _s16(frame.channel)
                + _s16(frame.stream_id)
                + frame.args
            )
            flags = FrameFlag.JOIN * frame.join | FrameFlag.BIDI * frame.bidi
            return _frame(FrameType.OPEN, flags, frame.handle, body)
        case Upload():
            body = _s16(frame.channel) + _s16(frame.stream_id) + frame.args
            flags = (
                FrameFlag.RESUMABLE * frame.resumable
                | FrameFlag.RESULT * frame.result
                | FrameFlag.RESUME * frame.resume
            )
            return _frame(FrameType.UPLOAD, flags, frame.handle, body)
        case UploadAck():
            return _frame(FrameType.UPLOAD_ACK, 0, frame.handle, _U64.pack(frame.seq))
        case UploadResult():
            return _frame(FrameType.UPLOAD_RESULT, 0, frame.handle, frame.payload)
        case Accept():
            body = _ACCEPT_FIXED.pack(
                frame.first_seq, frame.last_seq, frame.credit_chunks, frame.credit_bytes
            ) + _s16(frame.stream_id)
            return _frame(FrameType.ACCEPT, FrameFlag.JOINED * frame.joined, frame.handle, body)
        case Reject():
            body = _U16.pack(frame.code) + _s16(frame.message)
            return _frame(FrameType.REJECT, 0, frame.handle, body)
        case Gap():
            body = _GAP.pack(frame.from_seq, frame.to_seq, frame.reason)
            return _frame(FrameType.GAP, 0, frame.handle, body)
        case End():
            return _frame(FrameType.END, 0, frame.handle, _U64.pack(frame.last_seq))
        case Error():
            body = _ERROR_FIXED.pack(frame.code, frame.last_seq) + _s16(frame.message)
            return _frame(FrameType.ERROR, 0, frame.handle, body)
        case Cancel():
            return _frame(FrameType.CANCEL, 0, frame.handle, b"")
        case Unsubscribe():
            return _frame(FrameType.UNSUBSCRIBE, 0, frame.handle, b"")
        case UploadCancel():
            body = _U16.pack(frame.code) + _s16(frame.message)
            return _frame(FrameType.UPLOAD_CANCEL, 0, frame.handle, body)
        case Query():
            body = (
                _QUERY_FIXED.pack(frame.op, frame.states, frame.limit)
                + _s16(frame.channel)
                + _s16(frame.stream_id)
            )
            return _frame(FrameType.QUERY, 0, frame.handle, body)
        case Streams():
            parts = [_U16.pack(len(frame.entries))]
            for e in frame.entries:
                parts.append(_ENTRY_FIXED.pack(e.state, e.code, e.first_seq, e.last_seq))
                parts.append(_s16(e.stream_id))
            parts.append(_s16(frame.next))
            return _frame(FrameType.STREAMS, 0, frame.handle, b"".join(parts))
        case Unknown():  # pragma: no branch - the match is exhaustive
            return _frame(frame.type, frame.flags, frame.handle, frame.body)


# -- decoding -----------------------------------------------------------------------------------


class _Reader:
    """Bounds-checked field reader over one frame body."""

    __slots__ = ("body", "pos")

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.pos = 0

    def fixed(self, fmt: struct.Struct) -> tuple[int, ...]:
        end = self.pos + fmt.size
        if end > len(self.body):
            raise _malformed("body too short")
        values: tuple[int, ...] = fmt.unpack_from(self.body, self.pos)
        self.pos = end
        return values

    def string(self) -> str:
        (size,) = self.fixed(_U16)
        end = self.pos + size
        if end > len(self.body):
            raise _malformed("string runs past the end of the frame")
        raw = self.body[self.pos : end]
        self.pos = end
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise _malformed("string is not valid UTF-8") from None

    def settings(self) -> tuple[tuple[int, int], ...]:
        (count,) = self.fixed(_U16)
        end = self.pos + count * _SETTING.size
        if end > len(self.body):
            raise _malformed("settings run past the end of the frame")
        pairs = tuple(_SETTING.iter_unpack(self.body[self.pos : end]))
        self.pos = end
        return pairs

    def rest(self) -> bytes:
        value = self.body[self.pos :]
        self.pos = len(self.body)
        return value

    def done(self) -> None:
        if self.pos != len(self.body):
            raise _malformed("trailing bytes after the last field")


def _malformed(why: str) -> FrameError:
    return FrameError(ErrorCode.MALFORMED_FRAME, why)


def _policy(value: int) -> OverflowPolicy:
    try:
        return OverflowPolicy(value)
    except ValueError:
        raise _malformed(f"unknown overflow policy {value}") from None


def _decode_other(ftype: int, flags: int, handle: int, body: bytes) -> Frame:
    """Every frame but DATA, which the decoder's loop handles inline."""
    if ftype in _CONNECTION_TYPES:
        if handle != 0:
            raise _malformed(f"{FrameType(ftype).name} must use handle 0")
    elif ftype in _HANDLE_TYPES and handle == 0:
        raise _malformed(f"{FrameType(ftype).name} needs a handle")
    r = _Reader(body)
    frame: Frame
    if ftype == FrameType.CREDIT:
        chunks, nbytes = r.fixed(_CREDIT)
        frame = Credit(handle, chunks, nbytes)
    elif ftype == FrameType.HELLO:
        if body[:4] != MAGIC:
            raise _malformed("HELLO does not start with the magic b'STRP'")
        r.pos = 4
        lo, hi = r.fixed(_VERSIONS)
        settings = r.settings()
        token = r.string()
        frame = Hello(lo, hi, settings, token, r.rest())
    elif ftype == FrameType.WELCOME:
        (version,) = r.fixed(_U16)
        settings = r.settings()
        session_id = r.string()
        frame = Welcome(version, bool(flags & FrameFlag.RESUMED), settings, session_id, r.string())
    elif ftype == FrameType.PING:
        frame = Ping(r.fixed(_U64)[0])
    elif ftype == FrameType.PONG:
        frame = Pong(r.fixed(_U64)[0])
    elif ftype == FrameType.GOAWAY:
        code, last = r.fixed(_GOAWAY_FIXED)
        frame = Goaway(code, last, r.string())
    elif ftype == FrameType.SUBSCRIBE:
        after, cchunks, cbytes, policy, prio = r.fixed(_SUBSCRIBE_FIXED)
        channel = r.string()
        frame = Subscribe(
            handle,
            channel,
            r.string(),
            after,
            bool(flags & FrameFlag.TAIL),
            cchunks,
            cbytes,
            _policy(policy),
            prio,
        )
    elif ftype == FrameType.OPEN:
        cchunks, cbytes, policy, prio = r.fixed(_OPEN_FIXED)
        channel = r.string()
        stream_id = r.string()
        frame = Open(
            handle,
            channel,
            stream_id,
            cchunks,
            cbytes,
            _policy(policy),
            prio,
            r.rest(),
            bool(flags & FrameFlag.JOIN),
            bool(flags & FrameFlag.BIDI),
        )
    elif ftype == FrameType.UPLOAD:
        channel = r.string()
        stream_id = r.string()
        frame = Upload(
            handle,
            channel,
            stream_id,
            r.rest(),
            bool(flags & FrameFlag.RESUMABLE),
            bool(flags & FrameFlag.RESULT),
            bool(flags & FrameFlag.RESUME),
        )
    elif ftype == FrameType.UPLOAD_ACK:
        frame = UploadAck(handle, r.fixed(_U64)[0])
    elif ftype == FrameType.UPLOAD_RESULT:
        frame = UploadResult(handle, r.rest())
    elif ftype == FrameType.ACCEPT:
        first, last, cchunks, cbytes = r.fixed(_ACCEPT_FIXED)
        frame = Accept(
            handle, r.string(), first, last, cchunks, cbytes, bool(flags & FrameFlag.JOINED)
        )
    elif ftype == FrameType.REJECT:
        (code,) = r.fixed(_U16)
        frame = Reject(handle, code, r.string())
    elif ftype == FrameType.GAP:
        start, stop, reason = r.fixed(_GAP)
        if reason not in _GAP_REASONS:
            raise _malformed(f"unknown gap reason {reason}")
        if not 1 <= start <= stop:
            raise _malformed("GAP needs 1 <= from_seq <= to_seq")
        frame = Gap(handle, start, stop, GapReason(reason))
    elif ftype == FrameType.END:
        frame = End(handle, r.fixed(_U64)[0])
    elif ftype == FrameType.ERROR:
        code, last = r.fixed(_ERROR_FIXED)
        frame = Error(handle, code, last, r.string())
    elif ftype == FrameType.CANCEL:
        frame = Cancel(handle)
    elif ftype == FrameType.UNSUBSCRIBE:
        frame = Unsubscribe(handle)
    elif ftype == FrameType.UPLOAD_CANCEL:
        (code,) = r.fixed(_U16)
        frame = UploadCancel(handle, code, r.string())
    elif ftype == FrameType.QUERY:
        op, states, limit = r.fixed(_QUERY_FIXED)
        if op not in _QUERY_OPS:
            raise _malformed(f"unknown query op {op}")
        channel = r.string()
        frame = Query(handle, QueryOp(op), channel, r.string(), states, limit)
    elif ftype == FrameType.STREAMS:
        (count,) = r.fixed(_U16)
        entries = []
        for _ in range(count):
            state, code, first, last = r.fixed(_ENTRY_FIXED)
            if state not in _STREAM_STATES:
                raise _malformed(f"unknown stream state {state}")
            entries.append(StreamEntry(r.string(), StreamState(state), code, first, last))
        frame = Streams(handle, tuple(entries), r.string())
    else:
        return Unknown(ftype, flags, handle, body)
    r.done()
    return frame


# Plain ints for the hot path: IntEnum and IntFlag arithmetic allocates.
_T_DATA: Final = int(FrameType.DATA)
_HANDSHAKE_TYPES: Final = (int(FrameType.HELLO), int(FrameType.WELCOME))
_F_MORE: Final = int(FrameFlag.MORE)
_CONNECTION_TYPES: Final = frozenset(
    {FrameType.HELLO, FrameType.WELCOME, FrameType.PING, FrameType.PONG, FrameType.GOAWAY}
)
_HANDLE_TYPES: Final = frozenset(FrameType) - _CONNECTION_TYPES
_GAP_REASONS: Final = frozenset(GapReason)
_QUERY_OPS: Final = frozenset(QueryOp)
_STREAM_STATES: Final = frozenset(StreamState)
_KNOWN_TYPES: Final = frozenset(int(t) for t in FrameType)


class FrameDecoder:
    """Incremental decoder: feed bytes split anywhere, get whole frames.

    ``max_frame_size`` is the largest body this side accepts (announced to the peer as
    ``Setting.MAX_FRAME_SIZE``). A frame announcing a larger body, or a HELLO or WELCOME
    announcing more than ``MAX_HANDSHAKE_BODY``, is refused from its header with
    ``FRAME_TOO_LARGE`` before any of its body is buffered, so the decoder holds at most
    ``HEADER_SIZE + max_frame_size`` bytes between calls.

    Without ``unknown_budget`` a frame of unknown type decodes as :class:`Unknown`. With
    ``unknown_budget=(frames, nbytes)`` it is skipped unread (R-FWD-1) and counted: more than
    ``frames`` unknown frames, or more than ``nbytes`` bytes of their bodies, in a row (with no
    frame of a known type between them) is ``EXCESSIVE_LOAD`` (R-FWD-30).

    After a :class:`FrameError` the byte stream has lost its framing: every later call raises
    the same error.
    """

    __slots__ = (
        "_error",
        "_max",
        "_need",
        "_pending",
        "_run_bytes",
        "_run_frames",
        "_run_open",
        "_unknown_budget",
    )

    def __init__(
        self,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        *,
        unknown_budget: tuple[int, int] | None = None,
    ) -> None:
        if not MIN_MAX_FRAME_SIZE <= max_frame_size <= MAX_FRAME_SIZE_LIMIT:
            raise ValueError(
                f"max_frame_size must be in {MIN_MAX_FRAME_SIZE}..{MAX_FRAME_SIZE_LIMIT}"
            )
        if unknown_budget is not None and (
            unknown_budget[0] < MIN_UNKNOWN_FRAMES or unknown_budget[1] < MIN_UNKNOWN_BYTES
        ):
            raise ValueError(
                f"unknown_budget must allow at least {MIN_UNKNOWN_FRAMES} frames "
                f"and {MIN_UNKNOWN_BYTES} bytes"
            )
        self._max = max_frame_size
        self._unknown_budget = unknown_budget
        self._pending = bytearray()
        self._need = HEADER_SIZE
        self._error: FrameError | None = None
        # The unknown frames (and their body bytes) since the last known frame; _run_open says
        # whether the last whole frame decoded was unknown, so a run can span calls.
        self._run_frames = 0
        self._run_bytes = 0
        self._run_open = False

    @property
    def max_frame_size(self) -> int:
        """The largest frame body accepted."""
        return self._max

    @property
    def buffered(self) -> int:
        """Bytes held for an incomplete frame."""
        return len(self._pending)

    def feed(self, data: bytes | bytearray | memoryview) -> list[Frame]:
        """Decode every complete frame in the bytes received so far.

        Raises :class:`FrameError` (``MALFORMED_FRAME``, ``FRAME_TOO_LARGE`` or, with an
        unknown-frame budget, ``EXCESSIVE_LOAD``) for input that is not a valid frame; the
        frames decoded before the bad one are lost with it, so callers that must keep them use
        :meth:`feed_into`.
        """
        out: list[Frame] = []
        error = self.feed_into(data, out)
        if error is not None:
            raise error
        return out

    def feed_into(
        self, data: bytes | bytearray | memoryview, out: list[Frame]
    ) -> FrameError | None:
        """Like :meth:`feed`, appending frames to ``out`` and returning the error (if any)
        instead of raising it, so the frames before a bad frame are kept."""
        if self._error is not None:
            return self._error
        if self._pending:
            self._pending += data
            if len(self._pending) < self._need:
                return None
            buf = bytes(self._pending)
            self._pending = bytearray()
        else:
            buf = data if type(data) is bytes else bytes(data)
        try:
            self._parse(buf, out)
        except FrameError as exc:
            self._error = exc
            self._pending = bytearray()
            return exc
        return None

    def _parse(self, buf: bytes, out: list[Frame]) -> None:
        limit = self._max
        end = len(buf)
        off = 0
        unpack_header = _HEADER.unpack_from
        unpack_data = _DATA_HEADER.unpack_from
        unpack_type = _LENGTH_TYPE.unpack_from
        data_type = _T_DATA
        more_flag = _F_MORE
        known = _KNOWN_TYPES
        budget = self._unknown_budget
        # Where the current run of unknown frames ends in buf (-1: no run reaches this far).
        unknown_end = 0 if self._run_open else -1
        unknown_frames = self._run_frames
        unknown_bytes = self._run_bytes
        # The open run of whole DATA chunks: handle, next expected seq, first seq, payloads.
        run_handle = 0
        run_next = -1  # no DATA frame has this seq: the first one never joins an empty run
        run_first = 0
        run: list[bytes] = []
        append = run.append
        while True:
            avail = end - off
            if avail >= _DATA_HEADER_SIZE:
                length, ftype, flags, handle, seq = unpack_data(buf, off)
                stop = off + HEADER_SIZE + length
                # The hot path: the next whole chunk of the open run.
                if (
                    ftype == data_type
                    and handle == run_handle
                    and seq == run_next
                    and stop <= end
                    and 8 <= length <= limit
                    and not flags & more_flag
                ):
                    append(buf[off + _DATA_HEADER_SIZE : stop])
                    run_next += 1
                    off = stop
                    continue
            elif avail >= HEADER_SIZE:
                length, ftype, flags, handle = unpack_header(buf, off)
                seq = 0
                stop = off + HEADER_SIZE + length
            else:
                break
            if run:  # whatever comes next ends the run: hand it out before any error
                out.append(Data(run_handle, run_first, tuple(run)))
                run = []
                append = run.append
                run_handle, run_next = 0, -1
            if length > limit:
                raise _too_large(length, limit)
            if length > MAX_HANDSHAKE_BODY and ftype in _HANDSHAKE_TYPES:
                raise _too_large(length, MAX_HANDSHAKE_BODY)
            if stop > end:
                break
            start = off + HEADER_SIZE
            if ftype not in known and budget is not None:
                # R-FWD-1 at the cost of a few integer operations; R-FWD-30 bounds the run.
                if unknown_end != off:
                    unknown_frames = unknown_bytes = 0
                max_frames, max_bytes = budget
                while True:  # this frame, and the unknown frames right behind it
                    unknown_frames += 1
                    unknown_bytes += length
                    off = stop
                    if unknown_frames > max_frames or unknown_bytes > max_bytes:
                        raise FrameError(
                            ErrorCode.EXCESSIVE_LOAD,
                            f"{unknown_frames} unknown frames ({unknown_bytes} body bytes) "
                            f"in a row exceed {max_frames} frames or {max_bytes} bytes",
                        )
                    if end - off < HEADER_SIZE:
                        break
                    length, ftype = unpack_type(buf, off)
                    stop = off + HEADER_SIZE + length
                    if ftype in known or length > limit or stop > end:
                        break  # the main loop takes it (or its error, or its wait)
                unknown_end = off
                continue
            off = stop
            if ftype != data_type:
                out.append(_decode_other(ftype, flags, handle, buf[start:stop]))
                continue
            if length < 8 or handle == 0 or seq == 0:
                raise _malformed("DATA needs a handle and a seq >= 1")
            payload = buf[start + 8 : stop]
            if flags & more_flag:
                out.append(Data(handle, seq, (payload,), True))
                continue
            append(payload)
            run_handle, run_first, run_next = handle, seq, seq + 1
        if run:
            out.append(Data(run_handle, run_first, tuple(run)))
        self._run_open = unknown_end == off
        self._run_frames = unknown_frames
        self._run_bytes = unknown_bytes
        rest = end - off
        if rest:
            self._pending = bytearray(buf[off:])
            if rest >= 4:
                (length,) = struct.unpack_from(">I", buf, off)
                if length > limit:
                    raise _too_large(length, limit)
                if rest > 4 and length > MAX_HANDSHAKE_BODY and buf[off + 4] in _HANDSHAKE_TYPES:
                    raise _too_large(length, MAX_HANDSHAKE_BODY)
                # Until the header is whole, wait for it: its checks run again then.
                self._need = HEADER_SIZE + length if rest >= HEADER_SIZE else HEADER_SIZE
            else:
                self._need = HEADER_SIZE
        else:
            self._need = HEADER_SIZE


def _too_large(length: int, limit: int) -> FrameError:
    return FrameError(ErrorCode.FRAME_TOO_LARGE, f"frame body of {length} bytes exceeds {limit}")
