"""The error-code registry and the exception types.

Rules for this file:

1. Every code the protocol or the library can produce is a member of :class:`ErrorCode`, with a
   row in ``_INFO`` (kind, retryable, summary). ``spec/errors.md`` and ``docs/errors/`` mirror it
   and a test keeps the three in step.
2. Codes 0-99 are connection codes (carried in GOAWAY), 100-199 request and stream codes (carried
   in REJECT, ERROR and UPLOAD_CANCEL), 200-299 local codes (raised, never sent). 1000-65535 are
   for applications (a producer's ``fail(code, ...)``). Everything else below 1000 is reserved.
3. The peer's faults never raise out of ``receive_data``: they become an error frame and an
   event. The local application's misuse raises :class:`LocalProtocolError`.
"""

from __future__ import annotations

import enum
from typing import Final

__all__ = [
    "APPLICATION_CODE_MAX",
    "APPLICATION_CODE_MIN",
    "ErrorCode",
    "ErrorKind",
    "FrameError",
    "LocalProtocolError",
    "ProtocolError",
    "RemoteProtocolError",
    "StreamProtoError",
    "code_name",
    "is_application_code",
    "is_retryable",
]

APPLICATION_CODE_MIN: Final = 1000
APPLICATION_CODE_MAX: Final = 0xFFFF


class ErrorKind(enum.Enum):
    """Where a code is used: on the connection, on one request or stream, or only locally."""

    CONNECTION = "connection"
    STREAM = "stream"
    LOCAL = "local"


class ErrorCode(enum.IntEnum):
    """Every error code streamproto defines. See ``spec/errors.md``; one page per code in
    ``docs/errors/``."""

    # Connection codes (GOAWAY).
    NO_ERROR = 0
    PROTOCOL_ERROR = 1
    MALFORMED_FRAME = 2
    FRAME_TOO_LARGE = 3
    UNSUPPORTED_VERSION = 4
    HANDSHAKE_TIMEOUT = 5
    KEEPALIVE_TIMEOUT = 6
    AUTH_FAILED = 7
    INVALID_HANDLE = 8
    HANDLE_EXHAUSTED = 9
    FLOW_CONTROL_ERROR = 10
    SERVER_SHUTDOWN = 11
    CONNECTION_LOST = 12
    INTERNAL_ERROR = 13
    CHUNK_TOO_LARGE = 14
    EXCESSIVE_LOAD = 15
    SERVER_BUSY = 16
    # Request and stream codes (REJECT, ERROR, UPLOAD_CANCEL).
    UNKNOWN_CHANNEL = 100
    UNKNOWN_STREAM = 101
    INVALID_NAME = 102
    STREAM_EXISTS = 103
    LIMIT_EXCEEDED = 104
    RESOURCE_EXHAUSTED = 105
    CANCELLED = 106
    UPLOAD_CANCELLED = 107
    UPLOAD_DISCONNECTED = 108
    STALE_GENERATION = 109
    NOT_ALLOWED = 110
    HANDLER_FAILED = 111
    FORBIDDEN = 112
    PRODUCER_LOST = 113
    STORE_UNAVAILABLE = 114
    STREAM_DELETED = 115
    STREAM_EXPIRED = 116
    UNKNOWN_UPLOAD = 120
    # Local codes (raised, never sent).
    STREAM_CLOSED = 200
    CHANNEL_EXISTS = 201
    INVALID_STATE = 202
    UNKNOWN_HANDLE = 203
    CONNECTION_CLOSED = 204
    INVALID_ARGUMENT = 205
    CHUNKS_MISSING = 206
    DECODE_FAILED = 207

    @property
    def kind(self) -> ErrorKind:
        """Connection, stream or local."""
        return _INFO[self][0]

    @property
    def retryable(self) -> bool:
        """Whether the same request may succeed if tried again (on a new connection)."""
        return _INFO[self][1]

    @property
    def summary(self) -> str:
        """A one-line meaning, the same as in ``spec/errors.md``."""
        return _INFO[self][2]

    @property
    def doc_path(self) -> str:
        """The docs page of this code, relative to the repository root."""
        return f"docs/errors/{self.name.lower().replace('_', '-')}.md"


_C, _S, _L = ErrorKind.CONNECTION, ErrorKind.STREAM, ErrorKind.LOCAL

_INFO: Final[dict[ErrorCode, tuple[ErrorKind, bool, str]]] = {
    ErrorCode.NO_ERROR: (_C, False, "graceful close; nothing went wrong"),
    ErrorCode.PROTOCOL_ERROR: (_C, False, "the peer sent a frame its state does not allow"),
    ErrorCode.MALFORMED_FRAME: (_C, False, "a frame's fields could not be decoded"),
    ErrorCode.FRAME_TOO_LARGE: (_C, False, "a frame's length exceeds the receiver's maximum"),
    ErrorCode.UNSUPPORTED_VERSION: (_C, False, "no protocol version is common to both peers"),
    ErrorCode.HANDSHAKE_TIMEOUT: (_C, True, "the handshake did not finish in time"),
    ErrorCode.KEEPALIVE_TIMEOUT: (_C, True, "the peer stopped answering pings"),
    ErrorCode.AUTH_FAILED: (_C, False, "the server refused the handshake's credentials"),
    ErrorCode.INVALID_HANDLE: (_C, False, "a frame named a handle that was never opened"),
    ErrorCode.HANDLE_EXHAUSTED: (_C, True, "no handles are left; open a new connection"),
    ErrorCode.FLOW_CONTROL_ERROR: (_C, False, "the peer sent beyond its credit or overflowed it"),
    ErrorCode.SERVER_SHUTDOWN: (_C, True, "the server is shutting down"),
    ErrorCode.CONNECTION_LOST: (_C, True, "the transport closed without a GOAWAY"),
    ErrorCode.INTERNAL_ERROR: (_C, True, "the peer hit an internal error"),
    ErrorCode.CHUNK_TOO_LARGE: (_C, False, "a chunk exceeds the receiver's maximum chunk size"),
    ErrorCode.EXCESSIVE_LOAD: (
        _C,
        True,
        "the peer piled up unread replies or sent too many unknown frames",
    ),
    ErrorCode.SERVER_BUSY: (_C, True, "the server is at its cap of connections or handshakes"),
    ErrorCode.UNKNOWN_CHANNEL: (_S, False, "no channel has this name"),
    ErrorCode.UNKNOWN_STREAM: (_S, False, "the channel has no stream with this id"),
    ErrorCode.INVALID_NAME: (_S, False, "a channel name or stream id breaks the id rules"),
    ErrorCode.STREAM_EXISTS: (_S, False, "a stream with this id is already open"),
    ErrorCode.LIMIT_EXCEEDED: (_S, True, "a configured limit on requests or streams is reached"),
    ErrorCode.RESOURCE_EXHAUSTED: (_S, True, "the subscriber fell too far behind (error policy)"),
    ErrorCode.CANCELLED: (_S, False, "the stream was aborted because it was cancelled"),
    ErrorCode.UPLOAD_CANCELLED: (_S, False, "the server cancelled the upload"),
    ErrorCode.UPLOAD_DISCONNECTED: (_S, True, "the uploader disconnected before ending"),
    ErrorCode.STALE_GENERATION: (_S, False, "the stream id was reused; this writer is fenced"),
    ErrorCode.NOT_ALLOWED: (_S, False, "the channel does not allow this request"),
    ErrorCode.HANDLER_FAILED: (_S, True, "the channel's handler raised while starting a stream"),
    ErrorCode.FORBIDDEN: (_S, False, "the server's authorization hook refused this request"),
    ErrorCode.PRODUCER_LOST: (_S, True, "the stream's producer process stopped renewing its lease"),
    ErrorCode.STORE_UNAVAILABLE: (_S, True, "the shared replay store is unreachable or lost data"),
    ErrorCode.STREAM_DELETED: (_S, False, "the stream was deleted while it was read"),
    ErrorCode.STREAM_EXPIRED: (_S, False, "the open stream had no write for its idle TTL"),
    ErrorCode.UNKNOWN_UPLOAD: (_S, False, "no parked upload of that id to resume"),
    ErrorCode.STREAM_CLOSED: (_L, False, "write, close or fail on a stream already closed"),
    ErrorCode.CHANNEL_EXISTS: (_L, False, "a channel with this name is already registered"),
    ErrorCode.INVALID_STATE: (_L, False, "the operation is not allowed in the current state"),
    ErrorCode.UNKNOWN_HANDLE: (_L, False, "no open handle has this number"),
    ErrorCode.CONNECTION_CLOSED: (_L, False, "the connection is closed or draining"),
    ErrorCode.INVALID_ARGUMENT: (_L, False, "an argument is out of its documented range"),
    ErrorCode.CHUNKS_MISSING: (_L, False, "a gap: seqs that will never arrive were skipped"),
    ErrorCode.DECODE_FAILED: (_L, False, "a chunk's payload is not a value of the codec"),
}


def is_application_code(code: int) -> bool:
    """True for codes in the application range (1000-65535)."""
    return APPLICATION_CODE_MIN <= code <= APPLICATION_CODE_MAX


def code_name(code: int) -> str:
    """The stable name of ``code``: the member name, ``APPLICATION_<n>`` or ``UNKNOWN_<n>``."""
    try:
        return ErrorCode(code).name
    except ValueError:
        return f"APPLICATION_{code}" if is_application_code(code) else f"UNKNOWN_{code}"


def is_retryable(code: int) -> bool:
    """Whether ``code`` is retryable. Application and unknown codes are not."""
    try:
        return ErrorCode(code).retryable
    except ValueError:
        return False


class StreamProtoError(Exception):
    """Base of every exception streamproto raises. Carries a numeric ``code``."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"[{code_name(code)}] {message}")
        self.code = code
        self.message = message

    @property
    def retryable(self) -> bool:
        """See :func:`is_retryable`."""
        return is_retryable(self.code)


class ProtocolError(StreamProtoError):
    """A violation of the protocol, by this side (:class:`LocalProtocolError`) or by the peer
    (:class:`RemoteProtocolError`)."""


class LocalProtocolError(ProtocolError):
    """The local application asked for something the protocol or the API does not allow.

    The connection stays usable unless the code is ``CONNECTION_CLOSED``.
    """


class RemoteProtocolError(ProtocolError):
    """The peer broke the protocol. The connection reports it as an event and an error frame;
    this exception is used inside the core and by tools that decode frames on their own."""


class FrameError(RemoteProtocolError):
    """Bytes that do not decode as a valid frame (``MALFORMED_FRAME``, ``FRAME_TOO_LARGE``,
    ``UNSUPPORTED_VERSION``)."""
