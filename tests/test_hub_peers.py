"""The hub's registry of attached connections and its shutdown: list, count, look up, close
one, GOAWAY to all with a drain, refuse handshakes once shutting down."""

from __future__ import annotations

import pytest
from hub_helpers import HubHarness

from streamproto import (
    ConnectionTerminated,
    DataReceived,
    ErrorCode,
    GoawayReceived,
    HandshakeRefused,
    LocalProtocolError,
    Refuse,
    StreamEnded,
)

CH = "demo:tokens"


def test_attached_connections_are_listed_counted_and_found_until_they_end() -> None:
    h = HubHarness()
    assert (h.hub.peers(), h.hub.peer_count) == ((), 0)
    a, b = h.connect(), h.connect()
    assert h.hub.peers() == (a.peer, b.peer)
    assert [p.id for p in h.hub.peers()] == ["p1", "p2"]
    assert h.hub.peer_count == 2
    assert h.hub.peer("p2") is b.peer
    assert h.hub.peer("p9") is None
    a.disconnect()
    assert h.hub.peers() == (b.peer,)
    assert h.hub.peer("p1") is None
    assert a.peer.closed


def test_an_adapter_names_its_connections_and_ids_are_unique() -> None:
    h = HubHarness()
    client = h.connect()
    conn = h.connect(pump=False).server  # another server connection, to attach again
    with pytest.raises(LocalProtocolError, match="'p1' is attached"):
        h.hub.attach(conn, peer_id="p1")
    peer = h.hub.attach(conn, peer_id="c7")
    assert h.hub.peer("c7") is peer
    assert client.peer.id == "p1"


def test_a_refused_handshake_leaves_the_registry() -> None:
    h = HubHarness(authenticate=lambda auth: Refuse(ErrorCode.AUTH_FAILED, "no"))
    client = h.connect()
    assert any(isinstance(e, HandshakeRefused) for e in client.events)
    assert h.hub.peers() == ()


def test_closing_one_connection_with_no_error_lets_its_streams_drain() -> None:
    h = HubHarness()
    producer = h.hub.register(CH).start("s1")
    watcher, bystander = h.connect(), h.connect()
    handle = watcher.conn.subscribe(CH, "s1")
    h.pump()
    watcher.peer.close(message="moving you")
    h.pump()
    goaway = [e for e in watcher.events if isinstance(e, GoawayReceived)]
    assert [(g.code, g.message) for g in goaway] == [(ErrorCode.NO_ERROR, "moving you")]
    assert h.hub.peer(watcher.peer.id) is watcher.peer  # draining: still attached
    producer.write(b"late")
    producer.close()
    h.pump()
    assert [e.chunks for e in watcher.of(handle) if isinstance(e, DataReceived)] == [(b"late",)]
    assert any(isinstance(e, StreamEnded) for e in watcher.of(handle))
    assert h.hub.peers() == (bystander.peer,)  # drained, so gone
    assert watcher.server.closed
    assert not bystander.server.closed


def test_closing_one_connection_with_a_code_closes_it_now() -> None:
    h = HubHarness()
    h.hub.register(CH).start("s1")
    client = h.connect()
    client.conn.subscribe(CH, "s1")
    h.pump()
    wakeups = client.wakeups
    client.peer.close(ErrorCode.EXCESSIVE_LOAD, "too much")
    assert client.wakeups > wakeups  # the adapter is told to write the GOAWAY
    h.pump()
    ended = [e for e in client.events if isinstance(e, ConnectionTerminated)]
    assert [(e.code, e.message, e.by_peer) for e in ended] == [
        (ErrorCode.EXCESSIVE_LOAD, "too much", True)
    ]
    assert h.hub.peers() == ()
    client.peer.close()  # closed already: nothing
    assert h.hub.peers() == ()


def test_shutdown_goaways_everyone_drains_then_forces_and_refuses_newcomers() -> None:
    h = HubHarness()
    producer = h.hub.register(CH).start("s1")
    busy, idle = h.connect(), h.connect()
    early = h.connect(pump=False)  # its HELLO has not arrived: nothing to drain
    busy.conn.subscribe(CH, "s1")
    busy.step()
    assert not h.hub.shutting_down
    h.hub.shutdown()
    assert h.hub.shutting_down
    h.pump()
    # The idle connection had nothing open: it ended at once; the early one was closed.
    assert h.hub.peers() == (busy.peer,)
    assert [e.code for e in idle.events if isinstance(e, GoawayReceived)] == [0]
    early_end = [e for e in early.events if isinstance(e, HandshakeRefused)]
    assert [e.code for e in early_end] == [ErrorCode.SERVER_SHUTDOWN]
    # The busy one still gets its stream's chunks.
    producer.write(b"more")
    h.pump()
    assert any(isinstance(e, DataReceived) for e in busy.events)
    # A newcomer is refused (retryable: another server may take it).
    late = h.connect()
    refused = [e for e in late.events if isinstance(e, HandshakeRefused)]
    assert [e.code for e in refused] == [ErrorCode.SERVER_SHUTDOWN]
    assert h.hub.peers() == (busy.peer,)
    # The drain deadline passes: force.
    h.hub.shutdown(ErrorCode.SERVER_SHUTDOWN)
    h.pump()
    ended = [e for e in busy.events if isinstance(e, ConnectionTerminated)]
    assert [e.code for e in ended] == [ErrorCode.SERVER_SHUTDOWN]
    assert h.hub.peers() == ()
    assert h.hub.peer_count == 0
