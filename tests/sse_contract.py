"""What an SSE server under test must send, and how the independent clients' reports are judged.

Every server the SSE client tests run against (the sse-starlette reference app of
:mod:`sse_starlette_app`, and streamproto's own HTTP listeners) serves a channel whose streams
carry the chunks :func:`chunk` makes, seq 1 to ``count``: mostly short text, some text with LF
(several ``data:`` lines), some bytes that are not UTF-8 (``event: bytes``, base64). A server
is described to the tests by an :class:`SseTarget`.

The wire shape (``GET {base}/{channel}/{stream_id}``, ``POST {base}/{channel}`` with the open's
args as the body and the stream id in a ``Stream-Id`` header, ``id: <seq>`` per chunk,
``event: bytes`` / ``gap`` / ``end`` / ``error``, 204 to a reconnect after the end, CORS) is the
one of spec/HTTP.md.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

#: The channel of the SSE client tests (``namespace:name``, as our channel names are).
CHANNEL = "test:sse"
#: Chunks per stream in the client tests: enough that a cut lands well inside the stream.
COUNT = 60


def chunk(seq: int) -> bytes:
    """The chunk with sequence number ``seq`` (1-based) of every test stream."""
    if seq % 5 == 0:  # not UTF-8: goes as base64 under ``event: bytes``
        return bytes([0xFF, 0xFE, seq % 256, 0x00, 0x0D, 0x0A])
    if seq % 7 == 0:  # LF inside: several ``data:`` lines, rejoined exactly
        return f"line one of {seq}\nline two\n\nafter an empty line".encode()
    return f"chunk {seq} é".encode()


def chunks(count: int) -> list[bytes]:
    """The chunks of a ``count``-chunk test stream, in order."""
    return [chunk(seq) for seq in range(1, count + 1)]


def is_text(data: bytes) -> bool:
    """Whether ``data`` can travel as ``data:`` lines (UTF-8 without CR)."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return b"\r" not in data


def encode_chunk(seq: int, data: bytes) -> dict[str, str]:
    """The SSE fields (``id``, ``event``, ``data``) of one chunk."""
    if is_text(data):
        return {"id": str(seq), "event": "message", "data": data.decode("utf-8")}
    return {"id": str(seq), "event": "bytes", "data": base64.b64encode(data).decode("ascii")}


def format_event(fields: dict[str, str]) -> bytes:
    """One SSE event as bytes: ``event:`` (unless ``message``), ``id:``, ``data:`` lines."""
    lines = []
    if fields.get("event", "message") != "message":
        lines.append(f"event: {fields['event']}")
    if "id" in fields:
        lines.append(f"id: {fields['id']}")
    lines.extend(f"data: {line}" for line in fields.get("data", "").split("\n"))
    return ("\n".join(lines) + "\n\n").encode("utf-8")


@dataclass(frozen=True)
class SseEvent:
    """One dispatched SSE event as a client saw it (``id``: the last event id then, as
    ``MessageEvent.lastEventId`` is)."""

    event: str
    data: str
    id: str | None = None


class SseParser:
    """An incremental ``text/event-stream`` parser (the WHATWG algorithm, minus ``retry``):
    feed bytes, get the events dispatched so far. Comments are counted, not returned."""

    def __init__(self) -> None:
        self._buffer = b""
        self._event = ""
        self._data: list[str] = []
        self._id_buffer: str | None = None
        #: The last event id, set when an event is complete (a cut event does not move it).
        self.last_id: str | None = None
        self.comments = 0
        self.retry: int | None = None

    def feed(self, data: bytes) -> list[SseEvent]:
        buffer = self._buffer + data
        held = buffer.endswith(b"\r")  # maybe the first half of a CRLF: decide with the next
        if held:
            buffer = buffer[:-1]
        *lines, rest = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
        self._buffer = rest + b"\r" if held else rest
        events = []
        for raw in lines:
            line = raw.decode("utf-8")
            if not line:
                self.last_id = self._id_buffer
                # As browsers do: an event without a data line is not dispatched.
                if self._data:
                    data = "\n".join(self._data)
                    events.append(SseEvent(self._event or "message", data, self.last_id))
                self._event, self._data = "", []
                continue
            if line.startswith(":"):
                self.comments += 1
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                self._data.append(value)
            elif name == "event":
                self._event = value
            elif name == "id" and "\0" not in value:
                self._id_buffer = value
            elif name == "retry" and value.isdigit():
                self.retry = int(value)
        return events


def parse_stream(body: bytes) -> list[SseEvent]:
    """Every complete event of a whole ``text/event-stream`` body."""
    return SseParser().feed(body)


@dataclass
class Outcome:
    """What a client saw of one stream, reduced to what the tests assert on."""

    #: (seq, chunk bytes) of every chunk event, in arrival order.
    chunks: list[tuple[int, bytes]] = field(default_factory=list)
    gaps: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    ended: bool = False
    #: Events after the end (there must be none).
    after_end: list[str] = field(default_factory=list)

    @property
    def seqs(self) -> list[int]:
        return [seq for seq, _ in self.chunks]


def outcome(events: Iterable[dict[str, Any]]) -> Outcome:
    """Reduce a client report's events (dicts with ``type``, ``id``, ``data``) to an Outcome."""
    out = Outcome()
    for event in events:
        kind = event["type"]
        if out.ended:
            out.after_end.append(kind)
        elif kind in ("message", "bytes"):
            data = event["data"]
            raw = base64.b64decode(data) if kind == "bytes" else data.encode("utf-8")
            out.chunks.append((int(event["id"]), raw))
        elif kind == "gap":
            out.gaps.append(json.loads(event["data"]))
        elif kind == "error":
            out.errors.append(json.loads(event["data"]))
        elif kind == "end":
            out.ended = True
    return out


def assert_complete(seen: Outcome, count: int) -> None:
    """Every chunk exactly once, in order, byte-exact, then the end and nothing after it."""
    assert seen.errors == [], seen.errors
    assert seen.gaps == [], seen.gaps
    assert seen.seqs == list(range(1, count + 1)), seen.seqs
    for seq, data in seen.chunks:
        assert data == chunk(seq), (seq, data)
    assert seen.ended, "the stream's end event never arrived"
    assert seen.after_end == [], seen.after_end


def sse_events(report_events: Iterable[SseEvent]) -> Iterator[dict[str, Any]]:
    """Parsed SseEvents in the report shape of :func:`outcome`."""
    for event in report_events:
        yield {"type": event.event, "id": event.id, "data": event.data}


@dataclass(frozen=True)
class SseTarget:
    """An SSE server under test.

    ``base`` is the URL the paths hang off (``http://127.0.0.1:PORT`` or with a path prefix,
    no trailing slash). ``stream_id`` names a stream of ``channel`` that ``GET`` can read and
    that carries ``chunks(count)``; ``post_body`` opens a new stream of ``count`` chunks.
    ``origin_port`` is not needed: the server must allow any ``http://127.0.0.1:*`` origin
    (or ``*``).
    """

    name: str
    base: str
    channel: str
    stream_id: str
    count: int
    post_body: str

    def stream_url(self, stream_id: str | None = None) -> str:
        return f"{self.base}/{self.channel}/{stream_id or self.stream_id}"

    def channel_url(self) -> str:
        return f"{self.base}/{self.channel}"

    def via(self, port: int) -> SseTarget:
        """This target reached through ``127.0.0.1:port`` (a proxy in front of it), same path."""
        parts = urlsplit(self.base)
        base = urlunsplit((parts.scheme, f"127.0.0.1:{port}", parts.path, "", ""))
        return dataclasses.replace(self, base=base)
