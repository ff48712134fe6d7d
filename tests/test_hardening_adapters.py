"""Adapter robustness under hostile input and load, on every backend (and transport where it
matters): wakeups that never recurse, draining after a client's GOAWAY, bounded output for
peers that do not read, connection and handshake caps, and priorities on a real socket.

The rig, raw peers and the task and thread census are those of :mod:`test_adapter_faults`.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import attrs
import pytest
from hub_helpers import HubHarness
from test_adapter_faults import (  # noqa: F401 - thread_census is an autouse fixture
    PAIRS,
    WAIT,
    RawPeer,
    counted,
    pair_id,
    raw,
    rig,
    serves_next_client,
    thread_census,
    wait_for,
)

from streamproto import ChannelOptions, OverflowPolicy
from streamproto._frames import Credit, Data, End, Goaway, Ping, Subscribe, encode
from streamproto.testing import CONFORMANCE_SERVER_CONFIG
from transports import Gap
from transports.testing import BACKENDS

# -- 1. no wake path recurses -------------------------------------------------------------------


def test_hub_wakeups_that_flush_inline_do_not_nest() -> None:
    """A wakeup that flushes its connection at once (as the thread backend's inline path does)
    hands the hub events that mark other peers dirty: the hub must drain them in the outermost
    ``_wake``, not by calling wakeups from inside wakeups."""
    h = HubHarness()
    channel = h.hub.register("demo:hot", ChannelOptions(default_policy=OverflowPolicy.DROP_OLDEST))
    producer = channel.start("s")
    depth = [0, 0]  # now, deepest

    def inline(client: Any) -> Any:
        def wakeup() -> None:
            depth[0] += 1
            depth[1] = max(depth[1], depth[0])
            server = client.server
            server.data_to_send()
            client.peer.handle_events(server.take_events())
            depth[0] -= 1

        return wakeup

    clients = [h.connect() for _ in range(300)]
    for client in clients:
        client.conn.subscribe("demo:hot", "s", credit_chunks=1)
        h.pump()
        client.peer.wakeup = inline(client)
    for i in range(50):  # queues overflow: every write drops, warns and wakes 300 peers
        producer.write(b"%d" % i)
    assert depth[1] == 1
    assert all(not c.server.closed for c in clients)


STALLED = 200


def subscribe(stream_id: str, chunks: int) -> bytes:
    """SUBSCRIBE handle 1 to ``test:streams``/``stream_id`` with ``chunks`` of credit."""
    return encode(
        Subscribe(1, "test:streams", stream_id, credit_chunks=chunks, credit_bytes=1 << 20)
    )


def test_stalled_subscribers_do_not_break_the_writer(backend: str) -> None:
    """200 subscribers that never read (they send a PING now and then) and one that does,
    while the producer writes 1 KiB chunks as fast as it can: no wake path recurses (a
    RecursionError would kill the writes or the connections' writers), and the healthy
    subscriber gets every chunk up to the last."""
    config = attrs.evolve(CONFORMANCE_SERVER_CONFIG, max_queued_chunks=32)
    limit = sys.getrecursionlimit()
    with counted("slow"), rig(backend, "tcp", config=config) as r:
        r.server.start("test:streams", "hot")
        peers: list[RawPeer] = []
        try:
            for i in range(STALLED):
                peer = RawPeer(r.url)
                peers.append(peer)
                peer.hello()
                peer.send(subscribe("hot", 4))
                if i == 0:
                    peer.read_until(lambda f: type(f).__name__ == "Accept")
            client = r.connect()
            sub = client.subscribe("test:streams", "hot", on_gap="item")
            client.wait_accepted(sub.sub)
            chunk = b"x" * 1024
            for _ in range(40):
                for peer in peers:  # input resets the thread backend's inline-send budget
                    peer.send(encode(Ping(1)))
                time.sleep(0.02)
                r.server.write("hot", *[chunk] * 100)
            r.server.write("hot", b"last")
            r.server.close_stream("hot")
            items = sub.rest(WAIT)
            assert sub.error is None
            assert items[-1] == b"last"
            assert all(i == chunk or isinstance(i, Gap) for i in items[:-1])
            assert sys.getrecursionlimit() == limit
        finally:
            for peer in peers:
                peer.close()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    result: str = request.param
    return result


# -- 2. owed data still goes out after the client's GOAWAY ---------------------------------------


@pytest.mark.parametrize("same", PAIRS, ids=pair_id)
def test_owed_chunks_are_sent_after_a_client_goaway(same: tuple[str, str]) -> None:
    """R-GOAWAY-2: a client sends GOAWAY(NO_ERROR) while its subscription is owed 35 chunks,
    then the CREDIT for them: the server sends all 35 and END, then closes (WebSocket: 1000)."""
    backend, transport = same
    chunks = [(b"%02d" % i) * 700 for i in range(40)]
    with counted("races"), rig(backend, transport) as r:
        r.server.start("test:streams", "owed")
        r.server.write("owed", *chunks)
        with raw(r.url) as peer:
            peer.hello()
            peer.send(subscribe("owed", 5))
            peer.read_until(lambda f: isinstance(f, Data) and f.seq + len(f.chunks) > 5)
            peer.send(encode(Goaway(0)))
            time.sleep(0.05)  # two separate reads on the server
            peer.send(encode(Credit(1, 35, 0)))
            time.sleep(0.05)
            r.server.close_stream("owed")
            peer.read_until(lambda f: False)
            got = [c for f in peer.received if isinstance(f, Data) for c in f.chunks]
            assert got == chunks
            ends = [f for f in peer.received if isinstance(f, End)]
            assert [e.last_seq for e in ends] == [40]
            if peer.ws:
                assert peer.close_code == 1000
        serves_next_client(r, "goaway")
