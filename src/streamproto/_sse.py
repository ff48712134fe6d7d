"""Server-Sent Events text for a stream's chunks, and back (spec/HTTP.md, R-HTTP-20..29).

Rules for this file:

1. Encoding is byte-exact: :func:`decode_chunk` of what an SSE parser makes of
   :func:`encode_chunk`'s text gives back the chunk, for every chunk (property-tested).
2. A chunk that is UTF-8 without CR travels as the default event (``data:`` lines, split at LF
   and rejoined with LF by every parser); any other chunk travels base64 under ``event: bytes``.
   CR is excluded because parsers end lines at CR, LF and CRLF alike, so a CR would come back as
   LF; invalid UTF-8 is excluded because browsers decode the body with replacement characters.
3. :class:`SseParser` is the WHATWG "event stream interpretation" algorithm, bounded: a line
   longer than ``max_line`` or an event bigger than ``max_event`` is an error, not a buffer.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import json
from typing import Final

import attrs

from ._errors import ErrorCode, LocalProtocolError, code_name
from ._frames import GapReason

__all__ = [
    "BYTES_EVENT",
    "PING",
    "SseEvent",
    "SseParser",
    "decode_chunk",
    "encode_chunk",
    "encode_chunks",
    "encode_end",
    "encode_error",
    "encode_gap",
    "encode_retry",
]

#: The event name of a chunk sent base64.
BYTES_EVENT: Final = "bytes"
#: A comment line: a heartbeat that every parser ignores. No blank line follows it (the next
#: event's lines do), so that no parser sees an event without data.
PING: Final = b": ping\n"


def _text_safe(chunk: bytes) -> bool:
    if b"\r" in chunk:
        return False
    if chunk.isascii():
        return True
    try:
        chunk.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def encode_chunk(seq: int, chunk: bytes) -> bytes:
    """The SSE event of chunk ``seq``: ``id: <seq>``, then the chunk as ``data:`` lines or,
    when it is not UTF-8 without CR, base64 under ``event: bytes``."""
    if _text_safe(chunk):
        return b"id: %d\ndata: %s\n\n" % (seq, chunk.replace(b"\n", b"\ndata: "))
    return b"id: %d\nevent: bytes\ndata: %s\n\n" % (seq, base64.b64encode(chunk))


def encode_chunks(seq: int, chunks: tuple[bytes, ...] | list[bytes]) -> bytes:
    """The events of ``chunks``, the first of which has seq ``seq``: what
    :func:`encode_chunk` gives for each, in one piece (the per-chunk path of an SSE response)."""
    out: list[bytes] = []
    append = out.append
    for chunk in chunks:
        if (chunk.isascii() and b"\r" not in chunk) or _text_safe(chunk):
            append(b"id: %d\ndata: %s\n\n" % (seq, chunk.replace(b"\n", b"\ndata: ")))
        else:
            append(b"id: %d\nevent: bytes\ndata: %s\n\n" % (seq, base64.b64encode(chunk)))
        seq += 1
    return b"".join(out)


def encode_gap(first: int, last: int, reason: GapReason) -> bytes:
    """A gap event: seqs ``first``..``last`` will never come. Its id is ``last``, so a client
    that reconnects after it resumes behind the gap."""
    body = json.dumps({"first": first, "last": last, "reason": reason.name.lower()})
    return b"id: %d\nevent: gap\ndata: %s\n\n" % (last, body.encode())


def encode_end(last_seq: int) -> bytes:
    """The end event: the stream ended well after ``last_seq``. Its id is ``<last_seq>:end``,
    so a client that reconnects after it says it saw the end (and is answered 204)."""
    return b'id: %d:end\nevent: end\ndata: {"last_seq": %d}\n\n' % (last_seq, last_seq)


def encode_error(code: int, message: str, last_seq: int) -> bytes:
    """The error event: the stream (or this response) failed with ``code``."""
    body = {"code": code, "name": code_name(code), "message": message, "last_seq": last_seq}
    return b"event: error\ndata: %s\n\n" % json.dumps(body).encode()


def encode_retry(milliseconds: int) -> bytes:
    """The reconnection advice that opens every event stream: one line, which the stream's
    first event (or heartbeat) completes, so that no parser sees an event without data."""
    return b"retry: %d\n" % milliseconds


@attrs.frozen
class SseEvent:
    """One dispatched event: its type (``message`` by default), data and last event id."""

    event: str
    data: str
    id: str


def decode_chunk(event: SseEvent) -> bytes:
    """The chunk an event of :func:`encode_chunk` carries. Raises INVALID_ARGUMENT for
    another event type or bad base64."""
    if event.event == "message":
        return event.data.encode()
    if event.event == BYTES_EVENT:
        try:
            return base64.b64decode(event.data, validate=True)
        except binascii.Error as exc:
            raise LocalProtocolError(ErrorCode.INVALID_ARGUMENT, f"bad base64: {exc}") from exc
    raise LocalProtocolError(ErrorCode.INVALID_ARGUMENT, f"not a chunk event: {event.event!r}")


class SseParser:
    """An incremental ``text/event-stream`` parser (WHATWG HTML, 9.2.6).

    ``feed(data)`` returns the events completed by ``data``; ``retry`` holds the latest
    reconnection time advised, ``comments`` counts comment lines (heartbeats).
    """

    def __init__(self, *, max_line: int = 1 << 24, max_event: int = 1 << 24) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._buf = ""
        self._max_line = max_line
        self._max_event = max_event
        self._first = True
        self._cr = False  # the last character fed was a CR: a following LF is part of it
        self._data: list[str] = []
        self._size = 0
        self._type = ""
        self.last_id = ""
        self.retry: int | None = None
        self.comments = 0

    def feed(self, data: bytes) -> list[SseEvent]:
        """Bytes of the stream in; the events they complete out."""
        text = self._decoder.decode(data)
        if self._first and text:
            self._first = False
            text = text.removeprefix("\ufeff")
        if self._cr and text.startswith("\n"):
            text = text[1:]
        self._cr = text.endswith("\r")
        events: list[SseEvent] = []
        buf = self._buf + text
        start = 0
        n = len(buf)
        while start < n:
            cr, lf = buf.find("\r", start), buf.find("\n", start)
            if cr < 0 and lf < 0:
                break
            end = lf if cr < 0 or 0 <= lf < cr else cr
            line = buf[start:end]
            start = end + 1
            if end == cr and start < n and buf[start] == "\n":
                start += 1
            self._line(line, events)
        self._buf = buf[start:]
        if len(self._buf) > self._max_line:
            raise LocalProtocolError(ErrorCode.INVALID_ARGUMENT, "SSE line too long")
        return events

    def _line(self, line: str, events: list[SseEvent]) -> None:
        if not line:
            self._dispatch(events)
            return
        if line.startswith(":"):
            self.comments += 1
            return
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._size += len(value) + 1
            if self._size > self._max_event:
                raise LocalProtocolError(ErrorCode.INVALID_ARGUMENT, "SSE event too large")
            self._data.append(value)
        elif name == "event":
            self._type = value
        elif name == "id" and "\0" not in value:
            self.last_id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self.retry = int(value)

    def _dispatch(self, events: list[SseEvent]) -> None:
        data, kind = self._data, self._type
        self._data, self._type, self._size = [], "", 0
        if not data:
            return
        events.append(SseEvent(kind or "message", "\n".join(data), self.last_id))
