"""``Connection.pair``: a server and a client joined in memory, the handshake off the wire.

What it must equal: the same two connections after HELLO and WELCOME went through bytes.
"""

from __future__ import annotations

from streamproto import (
    Config,
    Connection,
    ConnState,
    DataReceived,
    ErrorCode,
    HandshakeCompleted,
    HandshakeRefused,
    HandshakeRequested,
    OpenRequested,
    RequestAccepted,
    Role,
)

CONFIG = Config(max_chunk_size=1 << 14, keepalive=0)


def wire_handshake() -> tuple[Connection, Connection, list[object], list[object]]:
    server = Connection(Role.SERVER, CONFIG)
    client = Connection(Role.CLIENT, CONFIG, auth=b"token")
    asked: list[object] = list(server.receive_data(client.data_to_send()))
    server.accept_handshake(session_id="s1", resume_token="t1")
    done: list[object] = list(client.receive_data(server.data_to_send()))
    return server, client, asked, done


def test_pair_equals_a_handshake_over_bytes() -> None:
    wire_server, wire_client, wire_asked, wire_done = wire_handshake()
    server, client = Connection.pair(CONFIG, auth=b"token")
    assert (server.role, client.role) == (Role.SERVER, Role.CLIENT)
    assert client.data_to_send() == b""  # no HELLO to carry
    asked = server.take_events()
    assert asked == wire_asked
    assert isinstance(asked[0], HandshakeRequested)
    assert asked[0].auth == b"token"
    assert server.state is ConnState.HELLO_RECEIVED
    assert client.state is ConnState.HANDSHAKING
    assert server.accept_handshake(session_id="s1", resume_token="t1")
    assert server.data_to_send() == b""  # the WELCOME went straight to the client
    done = client.take_events()
    assert done == wire_done
    assert isinstance(done[0], HandshakeCompleted)
    assert done[0].session_id == "s1"
    assert (server.state, client.state) == (wire_server.state, wire_client.state)
    assert client.peer_settings == wire_client.peer_settings
    assert server.peer_settings == wire_server.peer_settings
    assert server.statistics().bytes_received == 0


def test_pair_carries_requests_as_bytes() -> None:
    server, client = Connection.pair(CONFIG)
    server.take_events()
    server.accept_handshake(session_id="s", resume_token="t")
    handle = client.open("app:chan", b"args")
    events = server.receive_data(client.data_to_send())
    assert isinstance(events[0], OpenRequested)
    assert events[0].args == b"args"
    server.accept(events[0].handle, stream_id="x")
    server.send_data(events[0].handle, b"chunk")
    got = client.receive_data(server.data_to_send())
    assert isinstance(got[0], HandshakeCompleted)  # pending since the accept, first out
    assert isinstance(got[1], RequestAccepted)
    assert got[1].handle == handle
    assert isinstance(got[2], DataReceived)
    assert got[2].chunks == (b"chunk",)


def test_pair_refusal_goes_as_goaway() -> None:
    server, client = Connection.pair(CONFIG, auth=b"bad")
    server.take_events()
    assert server.refuse_handshake(ErrorCode.AUTH_FAILED, "no")
    events = client.receive_data(server.data_to_send())
    assert events == [HandshakeRefused(ErrorCode.AUTH_FAILED, "no")]
    assert server.closed
    assert client.closed


def test_pair_accept_after_the_client_closed() -> None:
    # The client's application gave up before the server answered: the server's WELCOME
    # changes nothing on it, and the server hears of the end as from any client.
    server, client = Connection.pair(CONFIG)
    server.take_events()
    client.goaway(ErrorCode.CANCELLED, "bye")
    assert client.closed
    gone = client.take_events()
    assert server.accept_handshake(session_id="s", resume_token="t")
    assert client.take_events() == []  # no HandshakeCompleted on a closed connection
    assert gone
    assert client.closed
    server.receive_data(client.data_to_send())
    assert server.closed
