"""Adapter robustness under hostile input and load, on every backend (and transport where it
matters): wakeups that never recurse, draining after a client's GOAWAY, bounded output for
peers that do not read, connection and handshake caps, and priorities on a real socket.

The rig, raw peers and the task and thread census are those of :mod:`test_adapter_faults`.
"""

from __future__ import annotations

import collections
import contextlib
import socket
import sys
import time
import tracemalloc
from typing import Any

import attrs
import pytest
from hub_helpers import HubHarness
from test_adapter_faults import (  # noqa: F401 - thread_census is an autouse fixture
    PAIRS,
    WAIT,
    RawPeer,
    _ws_frame,
    counted,
    pair_id,
    raw,
    rig,
    server_closed_all,
    serves_next_client,
    thread_census,
    wait_for,
)

from streamproto import ChannelOptions, ErrorCode, MemoryStore, OverflowPolicy, Window
from streamproto._frames import (
    Credit,
    Data,
    End,
    FrameDecoder,
    Goaway,
    Hello,
    Ping,
    Subscribe,
    Welcome,
    encode,
)
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


# -- 5. caps on connections and pending handshakes ------------------------------------------------


def refused(peer: RawPeer) -> bool:
    """Send HELLO: True if the server answered GOAWAY SERVER_BUSY (and closed), False if it
    answered WELCOME."""
    peer.send(encode(Hello()))
    frames = peer.read_until(lambda f: isinstance(f, Welcome | Goaway))
    if isinstance(frames[-1], Welcome):
        return False
    assert frames[-1].code == ErrorCode.SERVER_BUSY, frames
    assert peer.read_until(lambda f: False) == []  # then the server closes
    if peer.ws:
        assert peer.close_code == 4000 + ErrorCode.SERVER_BUSY
    return True


@pytest.mark.parametrize("same", PAIRS, ids=pair_id)
def test_connection_over_max_connections_is_refused(same: tuple[str, str]) -> None:
    """R-TR-20: with ``max_connections=4`` the fifth connection gets GOAWAY SERVER_BUSY after
    its HELLO; once one of the four leaves, a new one is served."""
    backend, transport = same
    config = attrs.evolve(CONFORMANCE_SERVER_CONFIG, max_connections=4)
    with counted("handles"), rig(backend, transport, config=config) as r:
        peers = [RawPeer(r.url) for _ in range(4)]
        try:
            assert [refused(p) for p in peers] == [False] * 4
            with raw(r.url) as extra:
                assert refused(extra)
            peers.pop().close()
            wait_for(lambda: len(r.server._drivers()) <= 3, "the server saw the close")
            with raw(r.url) as extra:
                assert not refused(extra)
        finally:
            for peer in peers:
                peer.close()


@pytest.mark.parametrize("same", PAIRS, ids=pair_id)
def test_handshakes_over_max_pending_handshakes_are_refused(same: tuple[str, str]) -> None:
    """R-TR-20: three sockets that never send HELLO hold the three pending-handshake places;
    a fourth is refused with SERVER_BUSY; once the server has seen the three leave, a client
    of the backend is served."""
    backend, transport = same
    config = attrs.evolve(CONFORMANCE_SERVER_CONFIG, max_pending_handshakes=3)
    with counted("handles"), rig(backend, transport, config=config) as r:
        idle = [RawPeer(r.url) for _ in range(3)]
        try:
            wait_for(lambda: len(r.server._drivers()) >= 3, "three sockets accepted")
            with raw(r.url) as extra:
                assert refused(extra)
        finally:
            for peer in idle:
                peer.close()
        wait_for(lambda: not r.server._drivers(), "the server saw the closes")
        serves_next_client(r, "pending")


BURST = 300


def test_a_burst_of_connections_all_get_an_answer(backend: str) -> None:
    """R-TR-20 and the default backlog: 300 sockets connect at once and send HELLO; each gets
    WELCOME or GOAWAY SERVER_BUSY (the pending-handshake cap is 128) in bounded time, none is
    left without an answer."""
    with counted("flood"), rig(backend, "tcp") as r:
        host, port = r.url.split("://")[1].rsplit(":", 1)
        socks = [socket.create_connection((host, int(port)), timeout=WAIT) for _ in range(BURST)]
        try:
            for sock in socks:
                sock.sendall(encode(Hello()))
            answers = collections.Counter()
            for sock in socks:
                decoder = FrameDecoder(max_frame_size=1 << 20)
                frames: list[Any] = []
                while not frames:
                    data = sock.recv(65536)
                    assert data, "closed without an answer"
                    frames = decoder.feed(data)
                first = frames[0]
                assert isinstance(first, Welcome) or (
                    isinstance(first, Goaway) and first.code == ErrorCode.SERVER_BUSY
                ), first
                answers[type(first).__name__] += 1
            assert sum(answers.values()) == BURST
            assert answers["Welcome"] >= 1
        finally:
            for sock in socks:
                sock.close()
        wait_for(lambda: not r.server._drivers(), "every connection gone")


# -- 4. output bounded for a peer that does not read ----------------------------------------------

FLOOD = 50 << 20
OUTPUT_BOUND = 16 << 20


def test_websocket_ping_flood_from_a_peer_that_never_reads(backend: str) -> None:
    """A client sends 50 MiB of WebSocket pings and reads nothing. The server holds at most
    one pong per connection (RFC 6455 5.5.3), so Python memory (tracemalloc; server and client
    share the process) grows by less than 16 MiB meanwhile, and nothing of the connection is
    left after the client leaves."""
    config = attrs.evolve(CONFORMANCE_SERVER_CONFIG, keepalive=0)
    with counted("flood"), rig(backend, "ws", config=config) as r:
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            with raw(r.url) as peer:
                peer.hello()
                burst = _ws_frame(b"p" * 125, 0x9) * 2000
                sent = 0
                with contextlib.suppress(OSError):  # the server may cut the connection
                    while sent < FLOOD:
                        peer.sock.sendall(burst)
                        sent += len(burst)
                peak = tracemalloc.get_traced_memory()[1] - base
            wait_for(lambda: not r.server._drivers(), "the connection is gone")
        finally:
            tracemalloc.stop()
        assert peak < OUTPUT_BOUND, peak
        serves_next_client(r, "wsping")


@pytest.mark.parametrize("same", PAIRS, ids=pair_id)
def test_output_stalled_past_the_timeout_ends_the_connection(same: tuple[str, str]) -> None:
    """R-LIM-20: a subscriber with a large credit that never reads while 8 MiB are written:
    the transport stops taking output, and ``output_stall_timeout`` (1 s) later the server
    ends the connection (EXCESSIVE_LOAD) and drops its output, without the peer sending
    anything. Nothing of the connection is left."""
    backend, transport = same
    config = attrs.evolve(CONFORMANCE_SERVER_CONFIG, output_stall_timeout=1.0, keepalive=0)
    with counted("slow"), rig(backend, transport, config=config) as r:
        r.server.start("test:streams", "big")
        with raw(r.url) as peer:
            peer.hello()
            peer.send(
                encode(
                    Subscribe(1, "test:streams", "big", credit_chunks=1 << 20, credit_bytes=1 << 30)
                )
            )
            peer.read_until(lambda f: type(f).__name__ == "Accept")
            started = time.monotonic()
            for _ in range(128):
                r.server.write("big", *[b"y" * 4096] * 16)
            wait_for(lambda: server_closed_all(r), "the stalled connection ended")
            assert time.monotonic() - started < WAIT
            wait_for(lambda: not r.server._drivers(), "the connection is gone")
        serves_next_client(r, "stall")


# -- 9. priorities on a real socket ---------------------------------------------------------------

PER_STREAM = 8 << 20


@pytest.mark.parametrize("same", PAIRS, ids=pair_id)
def test_priorities_share_a_contended_connection_by_weight(same: tuple[str, str]) -> None:
    """R-SCHED-3 through the adapters: two subscriptions on one connection, priorities 0 and 7
    (weights 1 and 8), 8 MiB queued on each before the reader reads. Once the kernel buffers
    (filled in write order) are behind it, the reader gets about 8 bytes of the urgent stream
    for each byte of the other: counted over the second half of the urgent stream's bytes."""
    backend, transport = same
    config = attrs.evolve(
        CONFORMANCE_SERVER_CONFIG, max_queued_chunks=1 << 14, max_queued_bytes=1 << 24
    )
    chunk = b"z" * 1024
    with counted("slow"), rig(backend, transport, config=config) as r:
        r.server.start("test:streams", "low")
        r.server.start("test:streams", "high")
        with raw(r.url) as peer:
            peer.hello()
            for handle, sid, prio in ((1, "low", 0), (3, "high", 7)):
                peer.send(
                    encode(
                        Subscribe(
                            handle,
                            "test:streams",
                            sid,
                            credit_chunks=1 << 20,
                            credit_bytes=1 << 30,
                            priority=prio,
                        )
                    )
                )
            while sum(type(f).__name__ == "Accept" for f in peer.received) < 2:
                peer.read_until(lambda f: type(f).__name__ == "Accept")
            for _ in range(PER_STREAM // (128 * len(chunk))):
                r.server.write("low", *[chunk] * 128)
                r.server.write("high", *[chunk] * 128)
            order: list[tuple[int, int]] = []  # (handle, bytes) in arrival order
            high = 0
            while high < PER_STREAM:
                frames = peer.read_until(lambda f: isinstance(f, Data))
                for f in frames:
                    if isinstance(f, Data):
                        n = sum(map(len, f.chunks))
                        order.append((f.handle, n))
                        high += n if f.handle == 3 else 0
        seen_high = seen_low = 0
        half_low = None
        for handle, n in order:
            if handle == 3:
                seen_high += n
                if half_low is None and seen_high >= PER_STREAM // 2:
                    half_low = seen_low
            else:
                seen_low += n
        assert half_low is not None
        low_in_window = seen_low - half_low
        ratio = (PER_STREAM // 2) / max(1, low_in_window)
        assert 5 <= ratio <= 12, (ratio, low_in_window)


def test_a_batch_that_overflows_the_window_compacts_the_history() -> None:
    """A stalled run of writes can reach the store as one large batch (``extend``): evicting
    most of it compacts the history at once, and the seqs and the retained chunks stay those
    that one ``append`` per chunk would leave."""
    store = MemoryStore()
    key = ("demo:hot", "s")
    generation = store.acquire(key, Window(chunks=10))
    chunks = [b"%d" % i for i in range(1, 101)]
    assert store.extend(key, generation, chunks) == 100
    replay = store.read(key, 0, 100)
    assert replay.first_seq == 91
    assert list(replay.chunks) == chunks[90:]
    assert store.append(key, generation, b"101") == 101
