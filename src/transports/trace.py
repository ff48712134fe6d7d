"""Frame tracing: one structured record per frame in and out of a connection.

A *tracer* is any callable that takes a record (a dict that ``json.dumps`` accepts). Pass one
to a backend's ``serve`` or ``connect`` (``trace=``) and every frame the connection sends or
receives becomes a record, in the manner of qlog::

    {"time": 1765012345.123456, "conn": "c3", "event": "frame_received",
     "frame": {"type": "SUBSCRIBE", "handle": 1, "channel": "logs:app", "stream_id": "app",
               "after_seq": 0, ...}}

Records carry the frame's type and fields and the sizes of what it carries, never payloads,
auth data or resume tokens: a DATA frame is ``{"type": "DATA", "handle": 1, "seq": 7,
"length": 312}``, one record per frame on the wire (a run of chunks decoded at once gives one
record per chunk). :class:`JsonLinesTrace` writes them to a file as JSON lines; the command
line's ``--trace FILE`` uses it.

The trace decodes a copy of the bytes with its own decoder, after the connection's framing (TCP
or WebSocket) is removed: what it shows is what the peers' state machines saw. A trace that
meets bytes it cannot decode records ``{"event": "undecodable", ...}`` once for that direction
and stops tracing it; the connection itself answers the fault as it always does.
"""

from __future__ import annotations

import enum
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import IO, Any

import attrs

from streamproto import FrameError, code_name
from streamproto._frames import (
    MAX_FRAME_SIZE_LIMIT,
    Data,
    Frame,
    FrameDecoder,
    Hello,
    Setting,
    Unknown,
    Welcome,
)

__all__ = ["FrameTap", "JsonLinesTrace", "TraceRecord", "Tracer", "frame_records"]

TraceRecord = dict[str, Any]
#: Takes one record per frame; called in the connection's loop (or, with threads, under its
#: lock): it must be quick and must not block on the connection.
Tracer = Callable[[TraceRecord], None]

#: Fields that hold secrets: their presence and size are traced, never their value.
_SECRET = frozenset({"resume_token", "auth"})


def _value(name: str, value: object) -> tuple[str, object]:
    if name in _SECRET:
        return f"{name}_length", len(value)  # type: ignore[arg-type]
    if isinstance(value, bytes):
        return f"{name}_length", len(value)
    if isinstance(value, enum.Enum):
        return name, value.name
    return name, value


def _settings(pairs: tuple[tuple[int, int], ...]) -> dict[str, int]:
    names = {int(s): s.name for s in Setting}
    return {names.get(ident, str(ident)): value for ident, value in pairs}


def frame_records(frame: Frame) -> Iterator[TraceRecord]:
    """The trace fields of ``frame``: one dict per frame on the wire (a :class:`Data` run of
    ``n`` chunks gives ``n``), with sizes in place of payloads and secrets."""
    if isinstance(frame, Data):
        for i, chunk in enumerate(frame.chunks):
            record: TraceRecord = {
                "type": "DATA",
                "handle": frame.handle,
                "seq": frame.seq + i,
                "length": len(chunk),
            }
            if frame.more:
                record["more"] = True
            yield record
        return
    if isinstance(frame, Unknown):
        yield {
            "type": "UNKNOWN",
            "frame_type": frame.type,
            "flags": frame.flags,
            "handle": frame.handle,
            "length": len(frame.body),
        }
        return
    record = {"type": frame.TYPE.name}
    for field in attrs.fields(type(frame)):
        value = getattr(frame, field.name)
        if field.name == "settings" and isinstance(frame, Hello | Welcome):
            record["settings"] = _settings(value)
            continue
        key, shown = _value(field.name, value)
        record[key] = shown
    if "code" in record:
        record["code_name"] = code_name(record["code"])
    yield record


class FrameTap:
    """Traces one connection: :meth:`received` and :meth:`sent` take the protocol bytes (the
    framing already removed) as they flow; each complete frame becomes a record for
    ``tracer``, stamped with ``clock()`` and ``conn``."""

    __slots__ = ("_clock", "_decoders", "_tracer", "conn")

    def __init__(self, tracer: Tracer, conn: str, clock: Callable[[], float] = time.time) -> None:
        self._tracer = tracer
        self._clock = clock
        self.conn = conn
        # The trace observes, it does not police: it reads frames of any legal size.
        self._decoders: dict[str, FrameDecoder | None] = {
            "frame_received": FrameDecoder(MAX_FRAME_SIZE_LIMIT),
            "frame_sent": FrameDecoder(MAX_FRAME_SIZE_LIMIT),
        }

    def received(self, data: bytes) -> None:
        """Bytes the connection received."""
        if data:
            self._feed("frame_received", data)

    def sent(self, data: bytes) -> None:
        """Bytes the connection sent."""
        if data:
            self._feed("frame_sent", data)

    def _feed(self, event: str, data: bytes) -> None:
        decoder = self._decoders[event]
        if decoder is None:
            return
        frames: list[Frame] = []
        error = decoder.feed_into(data, frames)
        now = self._clock()
        tracer, conn = self._tracer, self.conn
        for frame in frames:
            for fields in frame_records(frame):
                tracer({"time": now, "conn": conn, "event": event, "frame": fields})
        if error is not None:
            self._decoders[event] = None
            tracer(_undecodable(now, conn, event, error))


def _undecodable(now: float, conn: str, event: str, error: FrameError) -> TraceRecord:
    direction = "received" if event == "frame_received" else "sent"
    return {
        "time": now,
        "conn": conn,
        "event": "undecodable",
        "direction": direction,
        "code": int(error.code),
        "code_name": code_name(error.code),
        "message": error.message,
    }


class JsonLinesTrace:
    """A tracer that writes each record as one line of JSON to ``file`` (text mode), flushed
    per record so a trace survives a crash. Safe to share between connections and threads."""

    def __init__(self, file: IO[str]) -> None:
        self.file = file
        self._lock = threading.Lock()

    def __call__(self, record: TraceRecord) -> None:
        line = json.dumps(record, separators=(",", ":"))
        with self._lock:
            self.file.write(line + "\n")
            self.file.flush()
