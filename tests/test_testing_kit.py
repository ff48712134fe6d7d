"""The public test tooling: MockClock and the hypothesis strategies (frames, valid
conversations, byte splits)."""

from __future__ import annotations

import pytest
from hypothesis import find, given, settings
from hypothesis import strategies as st

from streamproto import Config, Connection, ErrorCode, LocalProtocolError, PingReceived, Role
from streamproto._frames import (
    Cancel,
    Data,
    End,
    Error,
    FrameDecoder,
    Goaway,
    Hello,
    Ping,
    Reject,
    Upload,
    UploadCancel,
    Welcome,
    encode,
)
from streamproto.testing import MockClock
from streamproto.testing.strategies import Conversation, byte_splits, conversations, frames


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


@settings(max_examples=150, deadline=None)
@given(conversations())
def test_conversations_are_valid_exchanges(conversation: Conversation) -> None:
    """Nothing in a conversation is a protocol violation: no side sent an error GOAWAY, and
    both directions decode to frames that encode back to the same bytes."""
    for raw, frames_ in (
        (conversation.to_server, conversation.client_frames()),
        (conversation.to_client, conversation.server_frames()),
    ):
        assert not [f for f in frames_ if isinstance(f, Goaway) and f.code != 0]
        assert b"".join(encode(f) for f in frames_) == raw
    assert isinstance(conversation.client_frames()[0], Hello)
    assert isinstance(conversation.server_frames()[0], Welcome)


@pytest.mark.parametrize(
    ("side", "kind"),
    [("server", Data), ("server", End), ("server", Error), ("server", Reject),
     ("server", UploadCancel), ("client", Cancel), ("client", Upload), ("client", Data),
     ("client", Ping)],
)  # fmt: skip
def test_conversations_reach_every_kind_of_frame(side: str, kind: type) -> None:
    def has(conversation: Conversation) -> bool:
        frames_ = conversation.server_frames() if side == "server" else conversation.client_frames()
        return any(isinstance(f, kind) for f in frames_)

    config = settings(max_examples=2000, deadline=None, derandomize=True, database=None)
    found = find(conversations(), has, settings=config)
    assert has(found)
