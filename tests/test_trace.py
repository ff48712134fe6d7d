"""The frame trace: one record per frame in and out, on every backend, with sizes and not
payloads; what one side sent is what the other received."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from harness import BACKENDS, TIMEOUT, TRANSPORTS, ClientProxy, ServerProxy

from streamproto import ErrorCode, GapReason, OverflowPolicy
from streamproto._frames import (
    Accept,
    Data,
    Error,
    Gap,
    Hello,
    Open,
    Unknown,
    UploadCancel,
    Welcome,
    encode,
)
from transports.trace import FrameTap, JsonLinesTrace, frame_records

SECRET = b"top-secret-payload"


def frames(records: list[dict[str, Any]], event: str) -> list[dict[str, Any]]:
    return [r["frame"] for r in records if r["event"] == event]


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_each_side_traces_what_the_other_traced(backend: str, transport: str) -> None:
    server_records: list[dict[str, Any]] = []
    client_records: list[dict[str, Any]] = []
    server = ServerProxy(backend, transport)
    try:
        server.server.trace = server_records.append  # read when a connection is accepted
        client = ClientProxy(backend, server.url, trace=client_records.append)
        try:
            server.start("test:streams", "s1")
            sub = client.subscribe("test:streams", "s1")
            server.write("s1", b"one", SECRET, b"three")
            server.close_stream("s1")
            assert sub.take(3) == [b"one", SECRET, b"three"]
            sub.done.wait(TIMEOUT)
        finally:
            client.close()
    finally:
        server.stop()
    # Every record is stamped and names its connection; each side traced one connection.
    assert {r["event"] for r in server_records} == {"frame_received", "frame_sent"}
    assert all(isinstance(r["time"], float) for r in server_records + client_records)
    assert len({r["conn"] for r in server_records}) == 1
    assert len({r["conn"] for r in client_records}) == 1
    sent, received = frames(server_records, "frame_sent"), frames(client_records, "frame_received")
    # What the client received is what the server sent, frame for frame, in order (the server
    # may have sent its goodbye after the client stopped reading).
    assert received == sent[: len(received)]
    assert (
        frames(server_records, "frame_received")
        == frames(client_records, "frame_sent")[: len(frames(server_records, "frame_received"))]
    )
    data = [f for f in received if f["type"] == "DATA"]
    assert [(f["seq"], f["length"]) for f in data] == [(1, 3), (2, len(SECRET)), (3, 5)]
    assert [f["type"] for f in sent[:2]] == ["WELCOME", "ACCEPT"]
    assert any(f["type"] == "END" and f["last_seq"] == 3 for f in received)
    # Sizes, not payloads; no resume token.
    text = json.dumps(server_records + client_records)
    assert SECRET.decode() not in text
    assert '"resume_token"' not in text
    hello = frames(server_records, "frame_received")[0]
    assert hello["type"] == "HELLO"
    assert hello["resume_token_length"] == 0
    assert hello["settings"]["MAX_FRAME_SIZE"] > 0


def test_records_of_every_kind_of_field() -> None:
    [hello] = frame_records(Hello(settings=((0x7777, 5),), resume_token="tok", auth=b"pw"))
    assert hello["settings"] == {"30583": 5}
    assert (hello["resume_token_length"], hello["auth_length"]) == (3, 2)
    [welcome] = frame_records(Welcome(session_id="s", resume_token="secret"))
    assert welcome["session_id"] == "s"
    assert "secret" not in json.dumps(welcome)
    [opened] = frame_records(Open(1, "demo:x", args=b"args", policy=OverflowPolicy.BLOCK))
    assert (opened["args_length"], opened["policy"]) == (4, "BLOCK")
    [accept] = frame_records(Accept(1, "id", 1, 0))
    assert "code" not in accept
    [gap] = frame_records(Gap(1, 2, 5, GapReason.OVERFLOW))
    assert gap == {"type": "GAP", "handle": 1, "from_seq": 2, "to_seq": 5, "reason": "OVERFLOW"}
    [error] = frame_records(Error(1, 4001, 3, "boom"))
    assert (error["code"], error["code_name"], error["message"]) == (
        4001,
        "APPLICATION_4001",
        "boom",
    )
    [cancel] = frame_records(UploadCancel(2))
    assert cancel["code_name"] == "UPLOAD_CANCELLED"
    [fragment] = frame_records(Data(1, 9, (b"part",), more=True))
    assert fragment == {"type": "DATA", "handle": 1, "seq": 9, "length": 4, "more": True}
    [unknown] = frame_records(Unknown(0x7E, 1, 3, b"body"))
    assert unknown == {"type": "UNKNOWN", "frame_type": 0x7E, "flags": 1, "handle": 3, "length": 4}


def test_a_tap_reads_frames_split_anywhere_and_stops_at_bad_bytes() -> None:
    records: list[dict[str, Any]] = []
    tap = FrameTap(records.append, "c9", clock=lambda: 12.5)
    wire = encode(Data(1, 1, (b"ab", b"cde")))
    for i in range(len(wire)):  # one byte at a time
        tap.received(wire[i : i + 1])
    tap.sent(b"")  # nothing: no record
    assert [(r["time"], r["conn"], r["event"], r["frame"]["seq"]) for r in records] == [
        (12.5, "c9", "frame_received", 1),
        (12.5, "c9", "frame_received", 2),
    ]
    records.clear()
    tap.sent(b"\x00\x00\x00\x01\x05\x00\x00\x00\x00\x00X")  # GOAWAY with a 1-byte body
    assert records == [
        {
            "time": 12.5,
            "conn": "c9",
            "event": "undecodable",
            "direction": "sent",
            "code": int(ErrorCode.MALFORMED_FRAME),
            "code_name": "MALFORMED_FRAME",
            "message": records[0]["message"],
        }
    ]
    tap.sent(encode(Data(1, 1, (b"x",))))  # that direction is no longer traced
    tap.received(encode(Data(1, 3, (b"x",))))  # the other one is
    assert [r["event"] for r in records] == ["undecodable", "frame_received"]


def test_json_lines() -> None:
    out = io.StringIO()
    trace = JsonLinesTrace(out)
    trace({"time": 1.0, "conn": "c1", "event": "frame_sent", "frame": {"type": "PING"}})
    trace({"time": 2.0, "conn": "c1", "event": "frame_received", "frame": {"type": "PONG"}})
    lines = out.getvalue().splitlines()
    assert [json.loads(x)["frame"]["type"] for x in lines] == ["PING", "PONG"]
