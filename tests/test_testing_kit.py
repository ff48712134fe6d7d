"""The public test tooling: MockClock and the hypothesis strategies."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamproto import Config, Connection, ErrorCode, LocalProtocolError, PingReceived, Role
from streamproto._frames import FrameDecoder, encode
from streamproto.testing import MockClock
from streamproto.testing.strategies import byte_splits, frames


def test_mock_clock_drives_keepalive() -> None:
    clock = MockClock(100.0)
    config = Config(keepalive=10)
    client = Connection(Role.CLIENT, config, now=clock())
    server = Connection(Role.SERVER, config, now=clock())
    server.receive_data(client.data_to_send())
    server.accept_handshake(session_id="s", resume_token="t")
    client.receive_data(server.data_to_send())
    assert clock() == clock.now == 100.0
    assert client.next_deadline() == 110.0
    clock.advance(10)  # the WELCOME counts as traffic: the idle timer starts again
    assert client.handle_timer(clock()) == []
    assert client.data_to_send() == b""
    clock.advance(10)  # ten silent seconds: a PING goes out
    client.handle_timer(clock())
    events = server.receive_data(client.data_to_send())
    assert [type(e) for e in events] == [PingReceived]
    with pytest.raises(LocalProtocolError, match=ErrorCode.INVALID_ARGUMENT.name):
        clock.advance(-1)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_any_frame_survives_any_split(data: st.DataObject) -> None:
    frame = data.draw(frames())
    raw = encode(frame)
    pieces = data.draw(byte_splits(raw))
    assert b"".join(pieces) == raw
    decoder = FrameDecoder(1 << 24)
    out = [f for piece in pieces for f in decoder.feed(piece)]
    assert b"".join(encode(f) for f in out) == raw
