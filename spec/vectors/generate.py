#!/usr/bin/env python3
"""Regenerate the golden vectors ``frames.json`` and ``invalid.json`` (format: README.md).

    python spec/vectors/generate.py          # rewrite both files
    python spec/vectors/generate.py --check  # exit 1 if either file is out of date

The valid vectors are frame objects passed through ``streamproto``'s ``encode``; the invalid ones
are built byte by byte with ``struct`` so that they do not depend on the encoder. The files are
committed: regenerating them is a deliberate change of the wire format and shows up in review as
a diff of hex. ``tests/test_vectors.py`` checks that this script reproduces the committed files.
Needs only the standard library and streamproto.
"""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path
from typing import Any

import attrs

from streamproto._frames import (
    MAGIC,
    MAX_FRAME_SIZE_LIMIT,
    MAX_HANDSHAKE_BODY,
    MIN_MAX_FRAME_SIZE,
    MIN_UNKNOWN_BYTES,
    MIN_UNKNOWN_FRAMES,
    Accept,
    Cancel,
    Credit,
    Data,
    End,
    Error,
    Frame,
    FrameType,
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
    StreamState,
    Subscribe,
    Unknown,
    Unsubscribe,
    Upload,
    UploadAck,
    UploadCancel,
    UploadResult,
    Welcome,
    encode,
)

HERE = Path(__file__).resolve().parent
U16, U32, U64 = 0xFFFF, 0xFFFF_FFFF, 0xFFFF_FFFF_FFFF_FFFF
H = U32  # the largest handle
UTF8 = "résumé-κόσμε-日本-🔑"  # 1-, 2-, 3- and 4-byte sequences
#: Byte runs at least this long are stored as ``{"repeat": hex, "count": n}``.
REPEAT_MIN = 64

# -- JSON form ----------------------------------------------------------------------------------

#: The ``"type"`` of each frame class in the JSON form.
TYPE_NAMES: dict[type, str] = {
    Hello: "HELLO",
    Welcome: "WELCOME",
    Ping: "PING",
    Pong: "PONG",
    Goaway: "GOAWAY",
    Subscribe: "SUBSCRIBE",
    Open: "OPEN",
    Upload: "UPLOAD",
    Accept: "ACCEPT",
    Reject: "REJECT",
    Data: "DATA",
    Gap: "GAP",
    End: "END",
    Error: "ERROR",
    Cancel: "CANCEL",
    Unsubscribe: "UNSUBSCRIBE",
    UploadCancel: "UPLOAD_CANCEL",
    UploadAck: "UPLOAD_ACK",
    UploadResult: "UPLOAD_RESULT",
    Credit: "CREDIT",
    Query: "QUERY",
    Streams: "STREAMS",
    Unknown: "UNKNOWN",
}
#: ``Unknown.type`` is stored under this key, since ``"type"`` names the frame class.
UNKNOWN_TYPE_KEY = "type_byte"
#: Keys that differ from the codec's attribute names: the vectors use the spec's field names
#: (CREDIT's ``bytes``, which a Python attribute would shadow the builtin with).
FIELD_KEYS = {(Credit, "nbytes"): "bytes"}


def bytes_to_json(value: bytes) -> str | dict[str, Any] | list[Any]:
    """Hex, with runs of one byte of at least ``REPEAT_MIN`` stored as repeat objects."""
    parts: list[str | dict[str, Any]] = []
    start = pos = 0
    while pos < len(value):
        end = pos
        while end < len(value) and value[end] == value[pos]:
            end += 1
        if end - pos >= REPEAT_MIN:
            if start < pos:
                parts.append(value[start:pos].hex())
            parts.append({"repeat": value[pos : pos + 1].hex(), "count": end - pos})
            start = end
        pos = end
    if start < len(value) or not parts:
        parts.append(value[start:].hex())
    return parts[0] if len(parts) == 1 else parts


def frame_to_json(frame: Frame) -> dict[str, Any]:
    out: dict[str, Any] = {"type": TYPE_NAMES[type(frame)]}
    for field in attrs.fields(type(frame)):
        value = getattr(frame, field.name)
        key = UNKNOWN_TYPE_KEY if (type(frame) is Unknown and field.name == "type") else field.name
        key = FIELD_KEYS.get((type(frame), field.name), key)
        if isinstance(value, bytes):
            value = bytes_to_json(value)
        elif isinstance(frame, Data) and field.name == "chunks":
            value = [bytes_to_json(chunk) for chunk in value]
        elif field.name == "settings":
            value = [list(pair) for pair in value]
        elif isinstance(value, OverflowPolicy | GapReason | QueryOp):
            value = value.name
        elif field.name == "entries":
            value = [
                {
                    "stream_id": e.stream_id,
                    "state": e.state.name,
                    "code": e.code,
                    "first_seq": e.first_seq,
                    "last_seq": e.last_seq,
                }
                for e in value
            ]
        out[key] = value
    return out


# -- valid frames -------------------------------------------------------------------------------

#: One of each setting id, as plain ints (decoded settings are plain ints).
ALL_SETTINGS = (
    (int(Setting.MAX_FRAME_SIZE), 65_536),
    (int(Setting.MAX_CHUNK_SIZE), 1 << 20),
    (int(Setting.KEEPALIVE_MS), 30_000),
    (int(Setting.MAX_SUBSCRIPTIONS), 100),
    (int(Setting.MAX_UPLOADS), 10),
    (int(Setting.SESSION_GRACE_MS), 5_000),
)

#: (name, frame, max_frame_size or None). The hex is ``encode(frame)``.
FRAMES: list[tuple[str, Frame, int | None]] = [
    ("hello-default", Hello(), None),
    (
        "hello-full",
        Hello(1, 3, ALL_SETTINGS, "token-123", b"\x00\x01bearer xyz\xff"),
        None,
    ),
    ("hello-unknown-setting-id", Hello(settings=((0, 0), (0xBEEF, 7))), None),
    ("hello-max-values", Hello(U16, U16, ((U16, U32), (0, U32)), UTF8, b"\xff"), None),
    ("hello-zero-versions", Hello(0, 0), None),
    ("welcome-default", Welcome(), None),
    (
        "welcome-resumed",
        Welcome(1, True, ALL_SETTINGS[:2], "session-42", "token-43"),
        None,
    ),
    ("welcome-not-resumed-with-token", Welcome(1, False, (), "s", "t"), None),
    ("welcome-max-values", Welcome(U16, True, ((U16, U32),), UTF8, UTF8), None),
    ("ping-zero", Ping(0), None),
    ("ping-max", Ping(U64), None),
    ("ping-pattern", Ping(0x0102_0304_0506_0708), None),
    ("pong-zero", Pong(0), None),
    ("pong-max", Pong(U64), None),
    ("goaway-default", Goaway(), None),
    ("goaway-shutdown", Goaway(11, 42, "server shutting down"), None),
    ("goaway-max-values", Goaway(U16, U32, UTF8), None),
    ("subscribe-minimal", Subscribe(1, "", ""), None),
    ("subscribe-after-seq", Subscribe(5, "news", "2024/10", after_seq=99), None),
    ("subscribe-tail", Subscribe(6, "news", "live", tail=True), None),
    (
        "subscribe-drop-oldest",
        Subscribe(7, "ch", "s", 1, False, 10, 4096, OverflowPolicy.DROP_OLDEST, 3),
        None,
    ),
    ("subscribe-block", Subscribe(8, "ch", "s", policy=OverflowPolicy.BLOCK), None),
    ("subscribe-error-policy", Subscribe(9, "ch", "s", policy=OverflowPolicy.ERROR), None),
    (
        "subscribe-max-values",
        Subscribe(H, UTF8, UTF8, U64, True, U32, U32, OverflowPolicy.ERROR, 0xFF),
        None,
    ),
    ("open-minimal", Open(1, ""), None),
    (
        "open-full",
        Open(2, "llm", "req-1", 8, 65_536, OverflowPolicy.BLOCK, 1, b'{"prompt":"hi"}'),
        None,
    ),
    (
        "open-max-values",
        Open(H, UTF8, UTF8, U32, U32, OverflowPolicy.DROP_OLDEST, 0xFF, b"\x00\xff"),
        None,
    ),
    ("open-join", Open(4, "llm:chat", "answer-7", 8, 32_768, join=True), None),
    # Bidirectional streams (section 6.4): flag BIDI; the ACCEPT's credit fields are the
    # client's direction's initial credit, its seqs the server's direction's.
    ("bidi-open", Open(5, "echo:upper", "", 8, 32_768, bidi=True), None),
    (
        "bidi-open-with-join",
        Open(6, "echo:upper", "e-1", 8, 32_768, join=True, bidi=True),
        None,
    ),
    ("bidi-accept", Accept(5, "e1", 1, 0, 8, 65_536), None),
    ("upload-minimal", Upload(1, ""), None),
    ("upload-full", Upload(3, "files", "f-1", b"\x01\x02\x03"), None),
    ("upload-max-values", Upload(H, UTF8, UTF8, b"\xff" * 3), None),
    ("accept-default", Accept(1, ""), None),
    ("accept-replay", Accept(2, "s-1", 10, 20, 100, 1 << 20), None),
    ("accept-max-values", Accept(H, UTF8, U64, U64, U32, U32), None),
    ("accept-joined", Accept(4, "answer-7", 1, 12, joined=True), None),
    ("reject-unknown-channel", Reject(1, 100, "no channel 'x'"), None),
    ("reject-empty-message", Reject(2, 0), None),
    ("reject-max-values", Reject(H, U16, UTF8), None),
    ("data-one-chunk", Data(1, 1, (b"hello",)), None),
    ("data-empty-payload", Data(1, 1, (b"",)), None),
    ("data-max-handle", Data(H, 7, (b"\x00",)), None),
    ("data-max-seq", Data(1, U64, (b"last",)), None),
    ("data-more", Data(2, 5, (b"frag",), more=True), None),
    ("data-more-empty-payload", Data(2, 5, (b"",), more=True), None),
    ("data-more-max-values", Data(H, U64, (b"\xff",), more=True), None),
    ("data-run-3-chunks", Data(3, 10, (b"a", b"bc", b"def")), None),
    ("data-run-with-empty-chunks", Data(3, 1, (b"", b"x", b"")), None),
    ("data-run-ending-at-max-seq", Data(4, U64 - 2, (b"1", b"2", b"3")), None),
    (
        "data-body-at-min-max-frame-size",
        Data(5, 1, (b"\xab" * (MIN_MAX_FRAME_SIZE - 8),)),
        MIN_MAX_FRAME_SIZE,
    ),
    ("gap-evicted", Gap(1, 1, 10, GapReason.EVICTED), None),
    ("gap-overflow", Gap(2, 5, 5, GapReason.OVERFLOW), None),
    ("gap-max-values", Gap(H, U64, U64, GapReason.OVERFLOW), None),
    ("gap-whole-range", Gap(3, 1, U64, GapReason.EVICTED), None),
    ("end-zero", End(1, 0), None),
    ("end-max-values", End(H, U64), None),
    ("error-default", Error(1, 111), None),
    ("error-application-code", Error(2, 1000, 17, "quota exceeded"), None),
    ("error-max-values", Error(H, U16, U64, UTF8), None),
    ("cancel", Cancel(1), None),
    ("cancel-max-handle", Cancel(H), None),
    ("unsubscribe", Unsubscribe(1), None),
    ("unsubscribe-max-handle", Unsubscribe(H), None),
    ("upload-cancel-default", UploadCancel(1), None),
    ("upload-cancel-max-values", UploadCancel(H, U16, UTF8), None),
    ("credit-zero", Credit(1, 0, 0), None),
    ("credit-typical", Credit(2, 16, 1 << 20), None),
    ("credit-max-values", Credit(H, U32, U32), None),
    ("unknown-type-0x00", Unknown(0x00), None),
    ("unknown-connection-range-0x0f", Unknown(0x0F, 0, 0, b"\x01\x02"), None),
    ("unknown-connection-range-with-handle", Unknown(0x06, 0, 9, b""), None),
    ("unknown-handle-range-0x3f", Unknown(0x3F, 0x01, 1, b"body"), None),
    ("unknown-handle-range-0x3e", Unknown(0x3E, 0, 2, b"\x00" * 8), None),
    ("query-status", Query(5, QueryOp.STATUS, "llm:chat", "answer-7"), None),
    ("query-list", Query(6, QueryOp.LIST, "llm:chat", "answer-7", 0b110, 50), None),
    ("query-delete", Query(7, QueryOp.DELETE, "llm:chat", "answer-7"), None),
    ("query-max-values", Query(H, QueryOp.LIST, UTF8, UTF8, 0xFF, U16), None),
    ("streams-empty", Streams(6), None),
    (
        "streams-status",
        Streams(5, (StreamEntry("answer-7", StreamState.FAILED, 1001, 1, 12),)),
        None,
    ),
    (
        "streams-page",
        Streams(
            6,
            (
                StreamEntry("a", StreamState.OPEN, 0, 3, 9),
                StreamEntry("b", StreamState.ENDED, 0, 1, 0),
                StreamEntry("c", StreamState.ABORTED, 106, 1, 4),
                StreamEntry("d", StreamState.MISSING),
            ),
            "d",
        ),
        None,
    ),
    (
        "streams-max-values",
        Streams(H, (StreamEntry(UTF8, StreamState.OPEN, U16, U64, U64),), UTF8),
        None,
    ),
    ("unknown-max-values", Unknown(0xFF, 0xFF, H, b"\xff" * 16), None),
    # Section 9.1: resumable uploads and results (FEATURES 0x04).
    ("upload-resume-resumable-result", Upload(4, "files:in", "f1", b"x", True, True), None),
    ("upload-resume-resume", Upload(9, "files:in", "f1", b"x", True, True, True), None),
    ("upload-resume-result-only", Upload(5, "files:in", "", b"", False, True), None),
    ("upload-resume-accept-from-seq-9", Accept(9, "f1", 9, 8, 4, 32_768), None),
    ("upload-resume-ack", UploadAck(4, 8), None),
    ("upload-resume-ack-max-values", UploadAck(H, U64), None),
    ("upload-resume-result", UploadResult(4, b"ok"), None),
    ("upload-resume-result-empty", UploadResult(1), None),
    # R-FRAME-7: the largest HELLO and WELCOME bodies, whatever the receiver's MAX_FRAME_SIZE.
    (
        "hello-body-at-handshake-limit",
        Hello(auth=b"\xab" * (MAX_HANDSHAKE_BODY - len(encode(Hello())) + 10)),
        None,
    ),
    (
        "welcome-body-at-handshake-limit",
        Welcome(resume_token="r" * (MAX_HANDSHAKE_BODY - len(encode(Welcome())) + 10)),
        None,
    ),
    # R-SET-30: KEEPALIVE_MS values as announced; KEEPALIVE says what a receiver takes.
    ("hello-keepalive-below-floor", Hello(settings=((int(Setting.KEEPALIVE_MS), 1),)), None),
    ("welcome-keepalive-below-floor", Welcome(settings=((int(Setting.KEEPALIVE_MS), 999),)), None),
    ("welcome-keepalive-at-floor", Welcome(settings=((int(Setting.KEEPALIVE_MS), 1000),)), None),
    ("welcome-keepalive-off", Welcome(settings=((int(Setting.KEEPALIVE_MS), 0),)), None),
]

#: The KEEPALIVE_MS a receiver of the vector's frame takes from it (R-SET-30).
KEEPALIVE: dict[str, int] = {
    "hello-keepalive-below-floor": 1000,
    "welcome-keepalive-below-floor": 1000,
    "welcome-keepalive-at-floor": 1000,
    "welcome-keepalive-off": 0,
}


def _header(length: int, ftype: int, flags: int = 0, handle: int = 0) -> bytes:
    return struct.pack(">IBBI", length, ftype, flags, handle)


def _raw(ftype: int, body: bytes, flags: int = 0, handle: int = 0) -> bytes:
    return _header(len(body), ftype, flags, handle) + body


def _data(handle: int, seq: int, payload: bytes, flags: int = 0) -> bytes:
    return _raw(FrameType.DATA, struct.pack(">Q", seq) + payload, flags, handle)


#: (name, bytes, frame): non-canonical encodings. They decode to ``frame``, whose canonical
#: encoding differs (unknown flag bits are ignored on receipt and never sent).
NON_CANONICAL: list[tuple[str, bytes, Frame]] = [
    (
        "ping-unknown-flag-bits",
        _raw(FrameType.PING, struct.pack(">Q", 1), flags=0xFF),
        Ping(1),
    ),
    (
        "subscribe-tail-and-unknown-flag-bits",
        _raw(
            FrameType.SUBSCRIBE,
            struct.pack(">QIIBB", 0, 0, 0, 0, 0) + b"\x00\x01c\x00\x01s",
            flags=0x81,
            handle=1,
        ),
        Subscribe(1, "c", "s", tail=True),
    ),
    (
        "welcome-unknown-flag-bits-not-resumed",
        _raw(FrameType.WELCOME, b"\x00\x01" + b"\x00\x00" * 3, flags=0xFE),
        Welcome(),
    ),
    ("data-unknown-flag-bit", _data(1, 1, b"x", flags=0x02), Data(1, 1, (b"x",))),
    ("data-more-and-unknown-flag-bits", _data(1, 1, b"x", flags=0xFF), Data(1, 1, (b"x",), True)),
    (
        "upload-resume-unknown-flag-bits",
        _raw(FrameType.UPLOAD, b"\x00\x01c\x00\x01s", flags=0xF9, handle=1),
        Upload(1, "c", "s", b"", True, False, False),
    ),
    (
        "cancel-unknown-flag-bits",
        _raw(FrameType.CANCEL, b"", flags=0x80, handle=4),
        Cancel(4),
    ),
]


def frame_vectors() -> list[dict[str, Any]]:
    vectors: list[dict[str, Any]] = []
    for name, frame, max_frame_size in FRAMES:
        vector: dict[str, Any] = {
            "name": name,
            "frame": frame_to_json(frame),
            "hex": bytes_to_json(encode(frame)),
        }
        if max_frame_size is not None:
            vector["max_frame_size"] = max_frame_size
        if name in KEEPALIVE:
            vector["keepalive_ms"] = KEEPALIVE[name]
        vectors.append(vector)
    for name, raw, frame in NON_CANONICAL:
        vectors.append(
            {"name": name, "frame": frame_to_json(frame), "hex": raw.hex(), "canonical": False}
        )
    return vectors


# -- invalid byte strings -----------------------------------------------------------------------

T = FrameType
MALFORMED, TOO_LARGE = "MALFORMED_FRAME", "FRAME_TOO_LARGE"


def _s16(raw: bytes) -> bytes:
    return struct.pack(">H", len(raw)) + raw


def _u16(value: int) -> bytes:
    return struct.pack(">H", value)


VERSIONS = struct.pack(">HH", 1, 1)
NO_SETTINGS = _u16(0)
EMPTY = _s16(b"")
GOAWAY_FIXED = struct.pack(">HI", 0, 0)
SUBSCRIBE_FIXED = struct.pack(">QIIBB", 0, 0, 0, 0, 0)
OPEN_FIXED = struct.pack(">IIBB", 0, 0, 0, 0)
ACCEPT_FIXED = struct.pack(">QQII", 1, 0, 0, 0)
ERROR_FIXED = struct.pack(">HQ", 111, 0)
CODE = _u16(107)


def _subscribe(
    fixed: bytes = SUBSCRIBE_FIXED, rest: bytes = EMPTY + EMPTY, handle: int = 1
) -> bytes:
    return _raw(T.SUBSCRIBE, fixed + rest, handle=handle)


def _gap(start: int, stop: int, reason: int, handle: int = 1, extra: bytes = b"") -> bytes:
    return _raw(T.GAP, struct.pack(">QQB", start, stop, reason) + extra, handle=handle)


def _goaway_message(raw: bytes) -> bytes:
    return _raw(T.GOAWAY, GOAWAY_FIXED + _s16(raw))


PING_1 = _raw(T.PING, struct.pack(">Q", 1))
RUN_2 = _data(1, 1, b"a") + _data(1, 2, b"b")

EMPTY_UNKNOWN = _raw(0x40, b"")
BUDGET = [MIN_UNKNOWN_FRAMES, MIN_UNKNOWN_BYTES]

#: (name, bytes value, error code name, extra keys): inputs too long for plain hex, built from
#: repeat objects (R-FWD-30 needs more than 1000 frames to trip; its 1 MiB byte budget is
#: left to the test suites, since a seed of that size would slow every fuzzing run down).
INVALID_REPEATED: list[tuple[str, Any, str, dict[str, Any]]] = [
    (
        "unknown-frames-over-budget",
        {"repeat": EMPTY_UNKNOWN.hex(), "count": MIN_UNKNOWN_FRAMES + 1},
        "EXCESSIVE_LOAD",
        {"unknown_budget": BUDGET},
    ),
    (
        "unknown-frames-over-budget-after-ping",
        [
            {"repeat": EMPTY_UNKNOWN.hex(), "count": MIN_UNKNOWN_FRAMES},
            PING_1.hex(),
            {"repeat": EMPTY_UNKNOWN.hex(), "count": MIN_UNKNOWN_FRAMES + 1},
        ],
        "EXCESSIVE_LOAD",
        {"unknown_budget": BUDGET, "frames_before": 1},
    ),
]

#: (name, bytes, error code name, extra keys).
INVALID: list[tuple[str, bytes, str, dict[str, int]]] = [
    # The length is checked from the header, before any of the body arrives.
    ("oversize-default-limit", _header(65_537, T.PING), TOO_LARGE, {}),
    ("oversize-max-u32-length", _header(U32, T.DATA, handle=1), TOO_LARGE, {}),
    (
        "oversize-min-limit",
        _header(MIN_MAX_FRAME_SIZE + 1, T.DATA, handle=1),
        TOO_LARGE,
        {"max_frame_size": MIN_MAX_FRAME_SIZE},
    ),
    ("oversize-unknown-type", _header(65_537, 0x7F), TOO_LARGE, {}),
    # R-FRAME-7: HELLO and WELCOME bodies are capped at 16384 below any MAX_FRAME_SIZE.
    ("hello-body-over-handshake-limit", _header(MIN_MAX_FRAME_SIZE + 1, T.HELLO), TOO_LARGE, {}),
    (
        "welcome-body-over-handshake-limit",
        _header(MIN_MAX_FRAME_SIZE + 1, T.WELCOME),
        TOO_LARGE,
        {"max_frame_size": MAX_FRAME_SIZE_LIMIT},
    ),
    ("oversize-after-ping", PING_1 + _header(70_000, T.GOAWAY), TOO_LARGE, {"frames_before": 1}),
    (
        "oversize-after-data-run",
        RUN_2 + _header(1 << 20, T.DATA, handle=1),
        TOO_LARGE,
        {"frames_before": 2},
    ),
    # HELLO
    ("hello-empty-body", _raw(T.HELLO, b""), MALFORMED, {}),
    ("hello-short-magic", _raw(T.HELLO, b"STR"), MALFORMED, {}),
    ("hello-bad-magic", _raw(T.HELLO, b"STRQ" + VERSIONS + NO_SETTINGS + EMPTY), MALFORMED, {}),
    (
        "hello-lowercase-magic",
        _raw(T.HELLO, b"strp" + VERSIONS + NO_SETTINGS + EMPTY),
        MALFORMED,
        {},
    ),
    ("hello-truncated-versions", _raw(T.HELLO, MAGIC + b"\x00\x01\x00"), MALFORMED, {}),
    ("hello-missing-settings-count", _raw(T.HELLO, MAGIC + VERSIONS), MALFORMED, {}),
    ("hello-truncated-settings-count", _raw(T.HELLO, MAGIC + VERSIONS + b"\x00"), MALFORMED, {}),
    (
        "hello-settings-count-past-end",
        _raw(T.HELLO, MAGIC + VERSIONS + _u16(2) + struct.pack(">HI", 1, 2) + EMPTY),
        MALFORMED,
        {},
    ),
    (
        "hello-settings-partial-pair",
        _raw(T.HELLO, MAGIC + VERSIONS + _u16(1) + b"\x00\x01\x00"),
        MALFORMED,
        {},
    ),
    ("hello-missing-token", _raw(T.HELLO, MAGIC + VERSIONS + NO_SETTINGS), MALFORMED, {}),
    (
        "hello-token-past-end",
        _raw(T.HELLO, MAGIC + VERSIONS + NO_SETTINGS + _u16(5) + b"ab"),
        MALFORMED,
        {},
    ),
    (
        "hello-token-invalid-utf8",
        _raw(T.HELLO, MAGIC + VERSIONS + NO_SETTINGS + _s16(b"\xff")),
        MALFORMED,
        {},
    ),
    (
        "hello-nonzero-handle",
        _raw(T.HELLO, MAGIC + VERSIONS + NO_SETTINGS + EMPTY, handle=1),
        MALFORMED,
        {},
    ),
    # WELCOME
    ("welcome-empty-body", _raw(T.WELCOME, b""), MALFORMED, {}),
    ("welcome-truncated-version", _raw(T.WELCOME, b"\x00"), MALFORMED, {}),
    ("welcome-missing-settings-count", _raw(T.WELCOME, b"\x00\x01"), MALFORMED, {}),
    (
        "welcome-settings-count-past-end",
        _raw(T.WELCOME, b"\x00\x01" + _u16(U16) + EMPTY + EMPTY),
        MALFORMED,
        {},
    ),
    ("welcome-missing-session-id", _raw(T.WELCOME, b"\x00\x01" + NO_SETTINGS), MALFORMED, {}),
    (
        "welcome-session-id-past-end",
        _raw(T.WELCOME, b"\x00\x01" + NO_SETTINGS + _u16(3) + b"ab"),
        MALFORMED,
        {},
    ),
    (
        "welcome-session-id-invalid-utf8",
        _raw(T.WELCOME, b"\x00\x01" + NO_SETTINGS + _s16(b"\xc3") + EMPTY),
        MALFORMED,
        {},
    ),
    (
        "welcome-missing-resume-token",
        _raw(T.WELCOME, b"\x00\x01" + NO_SETTINGS + EMPTY),
        MALFORMED,
        {},
    ),
    (
        "welcome-resume-token-past-end",
        _raw(T.WELCOME, b"\x00\x01" + NO_SETTINGS + EMPTY + _u16(1)),
        MALFORMED,
        {},
    ),
    (
        "welcome-resume-token-invalid-utf8",
        _raw(T.WELCOME, b"\x00\x01" + NO_SETTINGS + EMPTY + _s16(b"\x80")),
        MALFORMED,
        {},
    ),
    (
        "welcome-trailing-bytes",
        _raw(T.WELCOME, b"\x00\x01" + NO_SETTINGS + EMPTY + EMPTY + b"\x00"),
        MALFORMED,
        {},
    ),
    (
        "welcome-nonzero-handle",
        _raw(T.WELCOME, b"\x00\x01" + NO_SETTINGS + EMPTY + EMPTY, handle=U32),
        MALFORMED,
        {},
    ),
    # PING, PONG
    ("ping-empty-body", _raw(T.PING, b""), MALFORMED, {}),
    ("ping-truncated", _raw(T.PING, b"\x00" * 7), MALFORMED, {}),
    ("ping-trailing-bytes", _raw(T.PING, b"\x00" * 9), MALFORMED, {}),
    ("ping-nonzero-handle", _raw(T.PING, b"\x00" * 8, handle=1), MALFORMED, {}),
    ("pong-empty-body", _raw(T.PONG, b""), MALFORMED, {}),
    ("pong-truncated", _raw(T.PONG, b"\x00" * 7), MALFORMED, {}),
    ("pong-trailing-bytes", _raw(T.PONG, b"\x00" * 9), MALFORMED, {}),
    ("pong-nonzero-handle", _raw(T.PONG, b"\x00" * 8, handle=2), MALFORMED, {}),
    # GOAWAY
    ("goaway-empty-body", _raw(T.GOAWAY, b""), MALFORMED, {}),
    ("goaway-truncated-fixed", _raw(T.GOAWAY, b"\x00" * 5), MALFORMED, {}),
    ("goaway-missing-message", _raw(T.GOAWAY, GOAWAY_FIXED), MALFORMED, {}),
    ("goaway-truncated-message-length", _raw(T.GOAWAY, GOAWAY_FIXED + b"\x00"), MALFORMED, {}),
    ("goaway-message-past-end", _raw(T.GOAWAY, GOAWAY_FIXED + _u16(5) + b"ab"), MALFORMED, {}),
    (
        "goaway-message-length-max-past-end",
        _raw(T.GOAWAY, GOAWAY_FIXED + _u16(U16)),
        MALFORMED,
        {},
    ),
    ("goaway-message-invalid-byte-ff", _goaway_message(b"\xff"), MALFORMED, {}),
    ("goaway-message-lone-continuation", _goaway_message(b"a\x80b"), MALFORMED, {}),
    ("goaway-message-overlong-nul", _goaway_message(b"\xc0\x80"), MALFORMED, {}),
    ("goaway-message-surrogate", _goaway_message(b"\xed\xa0\x80"), MALFORMED, {}),
    ("goaway-message-truncated-sequence", _goaway_message(b"\xe2\x82"), MALFORMED, {}),
    ("goaway-message-above-u10ffff", _goaway_message(b"\xf4\x90\x80\x80"), MALFORMED, {}),
    ("goaway-trailing-bytes", _raw(T.GOAWAY, GOAWAY_FIXED + EMPTY + b"x"), MALFORMED, {}),
    ("goaway-nonzero-handle", _raw(T.GOAWAY, GOAWAY_FIXED + EMPTY, handle=1), MALFORMED, {}),
    # SUBSCRIBE
    ("subscribe-handle-0", _subscribe(handle=0), MALFORMED, {}),
    ("subscribe-truncated-fixed", _subscribe(SUBSCRIBE_FIXED[:-1], b""), MALFORMED, {}),
    ("subscribe-missing-channel", _subscribe(rest=b""), MALFORMED, {}),
    ("subscribe-channel-past-end", _subscribe(rest=_u16(2) + b"c"), MALFORMED, {}),
    ("subscribe-missing-stream-id", _subscribe(rest=EMPTY), MALFORMED, {}),
    ("subscribe-stream-id-invalid-utf8", _subscribe(rest=EMPTY + _s16(b"\xfe")), MALFORMED, {}),
    (
        "subscribe-unknown-policy-4",
        _subscribe(struct.pack(">QIIBB", 0, 0, 0, 4, 0)),
        MALFORMED,
        {},
    ),
    (
        "subscribe-unknown-policy-255",
        _subscribe(struct.pack(">QIIBB", 0, 0, 0, 255, 0)),
        MALFORMED,
        {},
    ),
    ("subscribe-trailing-bytes", _subscribe(rest=EMPTY + EMPTY + b"\x00"), MALFORMED, {}),
    # OPEN
    ("open-handle-0", _raw(T.OPEN, OPEN_FIXED + EMPTY + EMPTY), MALFORMED, {}),
    ("open-truncated-fixed", _raw(T.OPEN, OPEN_FIXED[:-1], handle=1), MALFORMED, {}),
    ("open-missing-channel", _raw(T.OPEN, OPEN_FIXED, handle=1), MALFORMED, {}),
    ("open-channel-past-end", _raw(T.OPEN, OPEN_FIXED + _u16(9), handle=1), MALFORMED, {}),
    (
        "open-channel-invalid-utf8",
        _raw(T.OPEN, OPEN_FIXED + _s16(b"\xc0") + EMPTY, handle=1),
        MALFORMED,
        {},
    ),
    ("open-missing-stream-id", _raw(T.OPEN, OPEN_FIXED + EMPTY, handle=1), MALFORMED, {}),
    (
        "open-unknown-policy",
        _raw(T.OPEN, struct.pack(">IIBB", 0, 0, 4, 0) + EMPTY + EMPTY, handle=1),
        MALFORMED,
        {},
    ),
    # QUERY and STREAMS
    ("query-handle-0", _raw(T.QUERY, b"\x01\x00\x00\x00" + EMPTY + EMPTY), MALFORMED, {}),
    (
        "query-unknown-op-0",
        _raw(T.QUERY, b"\x00\x00\x00\x00" + EMPTY + EMPTY, handle=1),
        MALFORMED,
        {},
    ),
    (
        "query-unknown-op-4",
        _raw(T.QUERY, b"\x04\x00\x00\x00" + EMPTY + EMPTY, handle=1),
        MALFORMED,
        {},
    ),
    (
        "query-missing-stream-id",
        _raw(T.QUERY, b"\x01\x00\x00\x00" + EMPTY, handle=1),
        MALFORMED,
        {},
    ),
    ("streams-count-past-end", _raw(T.STREAMS, _u16(1) + EMPTY, handle=1), MALFORMED, {}),
    (
        "streams-unknown-state-5",
        _raw(T.STREAMS, _u16(1) + struct.pack(">BHQQ", 5, 0, 1, 0) + EMPTY + EMPTY, handle=1),
        MALFORMED,
        {},
    ),
    ("streams-missing-next", _raw(T.STREAMS, _u16(0), handle=1), MALFORMED, {}),
    # UPLOAD
    ("upload-handle-0", _raw(T.UPLOAD, EMPTY + EMPTY), MALFORMED, {}),
    ("upload-empty-body", _raw(T.UPLOAD, b"", handle=1), MALFORMED, {}),
    ("upload-channel-past-end", _raw(T.UPLOAD, _u16(1), handle=1), MALFORMED, {}),
    ("upload-missing-stream-id", _raw(T.UPLOAD, _s16(b"ch"), handle=1), MALFORMED, {}),
    (
        "upload-stream-id-invalid-utf8",
        _raw(T.UPLOAD, EMPTY + _s16(b"\xff\xff"), handle=1),
        MALFORMED,
        {},
    ),
    # UPLOAD_ACK and UPLOAD_RESULT (section 9.1)
    ("upload-resume-ack-handle-0", _raw(T.UPLOAD_ACK, b"\x00" * 8), MALFORMED, {}),
    ("upload-resume-ack-truncated", _raw(T.UPLOAD_ACK, b"\x00" * 7, handle=1), MALFORMED, {}),
    ("upload-resume-ack-trailing-bytes", _raw(T.UPLOAD_ACK, b"\x00" * 9, handle=1), MALFORMED, {}),
    ("upload-resume-result-handle-0", _raw(T.UPLOAD_RESULT, b"ok"), MALFORMED, {}),
    # ACCEPT
    ("accept-handle-0", _raw(T.ACCEPT, ACCEPT_FIXED + EMPTY), MALFORMED, {}),
    ("accept-truncated-fixed", _raw(T.ACCEPT, ACCEPT_FIXED[:-1], handle=1), MALFORMED, {}),
    ("accept-missing-stream-id", _raw(T.ACCEPT, ACCEPT_FIXED, handle=1), MALFORMED, {}),
    ("accept-stream-id-past-end", _raw(T.ACCEPT, ACCEPT_FIXED + _u16(1), handle=1), MALFORMED, {}),
    (
        "accept-trailing-bytes",
        _raw(T.ACCEPT, ACCEPT_FIXED + EMPTY + b"\x00", handle=1),
        MALFORMED,
        {},
    ),
    # REJECT
    ("reject-handle-0", _raw(T.REJECT, CODE + EMPTY), MALFORMED, {}),
    ("reject-empty-body", _raw(T.REJECT, b"", handle=1), MALFORMED, {}),
    ("reject-truncated-code", _raw(T.REJECT, b"\x00", handle=1), MALFORMED, {}),
    ("reject-missing-message", _raw(T.REJECT, CODE, handle=1), MALFORMED, {}),
    ("reject-message-past-end", _raw(T.REJECT, CODE + _u16(4) + b"abc", handle=1), MALFORMED, {}),
    (
        "reject-message-invalid-utf8",
        _raw(T.REJECT, CODE + _s16(b"\xed\xbf\xbf"), handle=1),
        MALFORMED,
        {},
    ),
    ("reject-trailing-bytes", _raw(T.REJECT, CODE + EMPTY + b"\x00", handle=1), MALFORMED, {}),
    # DATA
    ("data-seq-0", _data(1, 0, b"x"), MALFORMED, {}),
    ("data-handle-0", _data(0, 1, b"x"), MALFORMED, {}),
    ("data-handle-0-seq-0", _data(0, 0, b"x"), MALFORMED, {}),
    ("data-handle-0-seq-0-empty-payload", _data(0, 0, b""), MALFORMED, {}),
    ("data-empty-body", _raw(T.DATA, b"", handle=1), MALFORMED, {}),
    ("data-body-7-bytes", _raw(T.DATA, b"\x00" * 6 + b"\x01", handle=1), MALFORMED, {}),
    ("data-more-seq-0", _data(1, 0, b"x", flags=1), MALFORMED, {}),
    ("data-more-handle-0", _data(0, 1, b"x", flags=1), MALFORMED, {}),
    ("data-seq-0-after-run", RUN_2 + _data(1, 0, b"c"), MALFORMED, {"frames_before": 2}),
    ("data-handle-0-after-run", RUN_2 + _data(0, 3, b"c"), MALFORMED, {"frames_before": 2}),
    (
        "data-handle-0-after-ping-after-run",
        RUN_2 + PING_1 + _data(0, 3, b"c"),
        MALFORMED,
        {"frames_before": 3},
    ),
    (
        "data-short-body-after-run",
        RUN_2 + _raw(T.DATA, b"\x00" * 7, handle=1),
        MALFORMED,
        {"frames_before": 2},
    ),
    # GAP
    ("gap-handle-0", _gap(1, 1, 1, handle=0), MALFORMED, {}),
    ("gap-truncated", _raw(T.GAP, struct.pack(">QQ", 1, 1), handle=1), MALFORMED, {}),
    ("gap-reason-0", _gap(1, 1, 0), MALFORMED, {}),
    ("gap-reason-3", _gap(1, 1, 3), MALFORMED, {}),
    ("gap-reason-255", _gap(1, 1, 255), MALFORMED, {}),
    ("gap-from-after-to", _gap(5, 4, 1), MALFORMED, {}),
    ("gap-from-max-to-1", _gap(U64, 1, 2), MALFORMED, {}),
    ("gap-from-0", _gap(0, 5, 1), MALFORMED, {}),
    ("gap-from-0-to-0", _gap(0, 0, 2), MALFORMED, {}),
    ("gap-trailing-bytes", _gap(1, 2, 1, extra=b"\x00"), MALFORMED, {}),
    # END
    ("end-handle-0", _raw(T.END, b"\x00" * 8), MALFORMED, {}),
    ("end-truncated", _raw(T.END, b"\x00" * 7, handle=1), MALFORMED, {}),
    ("end-trailing-bytes", _raw(T.END, b"\x00" * 9, handle=1), MALFORMED, {}),
    # ERROR
    ("error-handle-0", _raw(T.ERROR, ERROR_FIXED + EMPTY), MALFORMED, {}),
    ("error-truncated-fixed", _raw(T.ERROR, ERROR_FIXED[:-1], handle=1), MALFORMED, {}),
    ("error-missing-message", _raw(T.ERROR, ERROR_FIXED, handle=1), MALFORMED, {}),
    (
        "error-message-past-end",
        _raw(T.ERROR, ERROR_FIXED + _u16(2) + b"a", handle=1),
        MALFORMED,
        {},
    ),
    (
        "error-message-invalid-utf8",
        _raw(T.ERROR, ERROR_FIXED + _s16(b"\xf8\x88\x80\x80\x80"), handle=1),
        MALFORMED,
        {},
    ),
    ("error-trailing-bytes", _raw(T.ERROR, ERROR_FIXED + EMPTY + b"\x00", handle=1), MALFORMED, {}),
    # CANCEL, UNSUBSCRIBE
    ("cancel-handle-0", _raw(T.CANCEL, b""), MALFORMED, {}),
    ("cancel-trailing-bytes", _raw(T.CANCEL, b"\x00", handle=1), MALFORMED, {}),
    ("unsubscribe-handle-0", _raw(T.UNSUBSCRIBE, b""), MALFORMED, {}),
    ("unsubscribe-trailing-bytes", _raw(T.UNSUBSCRIBE, b"\x00", handle=1), MALFORMED, {}),
    # UPLOAD_CANCEL
    ("upload-cancel-handle-0", _raw(T.UPLOAD_CANCEL, CODE + EMPTY), MALFORMED, {}),
    ("upload-cancel-empty-body", _raw(T.UPLOAD_CANCEL, b"", handle=1), MALFORMED, {}),
    ("upload-cancel-missing-message", _raw(T.UPLOAD_CANCEL, CODE, handle=1), MALFORMED, {}),
    (
        "upload-cancel-message-past-end",
        _raw(T.UPLOAD_CANCEL, CODE + _u16(1), handle=1),
        MALFORMED,
        {},
    ),
    (
        "upload-cancel-message-invalid-utf8",
        _raw(T.UPLOAD_CANCEL, CODE + _s16(b"\xe0\x80\xaf"), handle=1),
        MALFORMED,
        {},
    ),
    (
        "upload-cancel-trailing-bytes",
        _raw(T.UPLOAD_CANCEL, CODE + EMPTY + b"\x00", handle=1),
        MALFORMED,
        {},
    ),
    # CREDIT
    ("credit-handle-0", _raw(T.CREDIT, b"\x00" * 8), MALFORMED, {}),
    ("credit-truncated", _raw(T.CREDIT, b"\x00" * 7, handle=1), MALFORMED, {}),
    ("credit-trailing-bytes", _raw(T.CREDIT, b"\x00" * 9, handle=1), MALFORMED, {}),
    # Valid frames before the bad one are delivered; the bad one and everything after are not.
    (
        "malformed-after-valid-frames",
        PING_1 + RUN_2 + _raw(T.PONG, b"") + PING_1,
        MALFORMED,
        {"frames_before": 3},
    ),
]


def invalid_vectors() -> list[dict[str, Any]]:
    return [
        {"name": name, "hex": raw.hex(), "error": error, **extra}
        for name, raw, error, extra in INVALID
    ] + [
        {"name": name, "hex": value, "error": error, **extra}
        for name, value, error, extra in INVALID_REPEATED
    ]


# -- files --------------------------------------------------------------------------------------


def render(vectors: list[dict[str, Any]]) -> str:
    """One vector per line, so that a change shows up as a one-line diff."""
    lines = (json.dumps(vector, ensure_ascii=False) for vector in vectors)
    return "[\n  " + ",\n  ".join(lines) + "\n]\n"


def outputs() -> dict[Path, str]:
    return {
        HERE / "frames.json": render(frame_vectors()),
        HERE / "invalid.json": render(invalid_vectors()),
    }


def main(argv: list[str]) -> int:
    check = argv == ["--check"]
    if argv and not check:
        print("usage: generate.py [--check]", file=sys.stderr)
        return 2
    stale = []
    for path, text in outputs().items():
        if path.exists() and path.read_text(encoding="utf-8") == text:
            continue
        stale.append(path.name)
        if not check:
            path.write_text(text, encoding="utf-8")
    if check and stale:
        print(f"out of date: {', '.join(stale)}; run spec/vectors/generate.py", file=sys.stderr)
        return 1
    print(f"wrote {', '.join(stale)}" if stale else "up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
