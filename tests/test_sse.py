"""The SSE codec: byte-exact for every chunk, and the parser's rules (WHATWG 9.2.6)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamproto import ErrorCode, GapReason, LocalProtocolError
from streamproto._sse import (
    PING,
    SseEvent,
    SseParser,
    decode_chunk,
    encode_chunk,
    encode_chunks,
    encode_end,
    encode_error,
    encode_gap,
    encode_retry,
)

texts = st.text().map(lambda s: s.encode("utf-8", "surrogatepass"))
chunks = st.one_of(st.binary(max_size=300), texts, st.sampled_from([b"", b"\n", b"\r", b"\r\n"]))


def _feed_split(data: bytes, cuts: list[int]) -> list[SseEvent]:
    parser = SseParser()
    events: list[SseEvent] = []
    start = 0
    for cut in sorted(cuts):
        events += parser.feed(data[start:cut])
        start = cut
    events += parser.feed(data[start:])
    return events


@given(st.lists(chunks, max_size=8), st.lists(st.integers(0, 4000), max_size=6))
def test_round_trip_is_byte_exact_however_the_bytes_are_cut(
    payloads: list[bytes], cuts: list[int]
) -> None:
    wire = encode_retry(1000) + b"".join(encode_chunk(i + 1, c) for i, c in enumerate(payloads))
    for events in (_feed_split(wire, cuts), _feed_split(wire, list(range(len(wire))))):
        assert [decode_chunk(e) for e in events] == payloads
        assert [e.id for e in events] == [str(i + 1) for i in range(len(payloads))]


@given(st.integers(1, 1 << 40), st.lists(chunks, max_size=8))
def test_a_batch_encodes_as_its_chunks_one_by_one(first: int, payloads: list[bytes]) -> None:
    one_by_one = b"".join(encode_chunk(first + i, c) for i, c in enumerate(payloads))
    assert encode_chunks(first, payloads) == one_by_one


@given(chunks)
def test_text_goes_as_data_lines_and_the_rest_as_base64(chunk: bytes) -> None:
    wire = encode_chunk(7, chunk)
    try:
        chunk.decode("utf-8")
        text = b"\r" not in chunk
    except UnicodeDecodeError:
        text = False
    assert (not wire.startswith(b"id: 7\nevent: bytes\n")) == text


def test_control_events() -> None:
    parser = SseParser()
    wire = (
        encode_retry(250)
        + PING
        + encode_gap(3, 9, GapReason.EVICTED)
        + encode_end(9)
        + encode_error(1234, "boom", 9)
    )
    events = parser.feed(wire)
    assert parser.retry == 250
    assert parser.comments == 1
    gap, end, error = events
    assert (gap.event, gap.id, json.loads(gap.data)) == (
        "gap",
        "9",
        {"first": 3, "last": 9, "reason": "evicted"},
    )
    assert (end.event, json.loads(end.data)) == ("end", {"last_seq": 9})
    assert error.event == "error"
    assert json.loads(error.data) == {
        "code": 1234,
        "name": "APPLICATION_1234",
        "message": "boom",
        "last_seq": 9,
    }


def test_parser_rules() -> None:
    parser = SseParser()
    # BOM at the start, CR and CRLF line ends, a field without a colon, an unknown field,
    # an id with NUL (ignored), a bad retry (ignored), no space after the colon.
    events = parser.feed(
        b"\xef\xbb\xbfdata:a\rdata\r\nid: 5\nid: x\x00y\nretry: soon\nfoo: bar\n\n"
    )
    assert events == [SseEvent("message", "a\n", "5")]
    assert parser.retry is None
    # An event without data is not dispatched, its type does not leak into the next one.
    assert parser.feed(b"event: nothing\n\ndata: z\n\n") == [SseEvent("message", "z", "5")]
    # A CR at the end of one feed and the LF at the start of the next are one line end.
    assert parser.feed(b"data: q\r") == []
    assert parser.feed(b"\n\n") == [SseEvent("message", "q", "5")]


def test_parser_bounds() -> None:
    with pytest.raises(LocalProtocolError) as line:
        SseParser(max_line=10).feed(b"data: " + b"x" * 20)
    assert line.value.code == ErrorCode.INVALID_ARGUMENT
    with pytest.raises(LocalProtocolError):
        SseParser(max_event=10).feed(b"data: 123456\ndata: 123456\n")


def test_decode_refuses_what_is_not_a_chunk() -> None:
    with pytest.raises(LocalProtocolError):
        decode_chunk(SseEvent("end", "{}", ""))
    with pytest.raises(LocalProtocolError):
        decode_chunk(SseEvent("bytes", "not base64!", ""))
