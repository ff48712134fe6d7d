"""Fault injection at the core: the connection is cut at every frame boundary and in the middle
of frames, in each direction, while a client replays history and receives live chunks; then it
reconnects, resumes its session and re-subscribes after the last seq it saw. Whatever the cut,
nothing raises, both sides see the connection end, and every chunk arrives exactly once, in
order, across the two connections."""

from __future__ import annotations

import itertools

import pytest

from streamproto import (
    ChannelOptions,
    Config,
    Connection,
    ConnectionTerminated,
    DataReceived,
    GapReceived,
    HandshakeCompleted,
    Hub,
    Role,
    StreamEnded,
    Window,
)
from streamproto.testing import Cut, FakeTransport, Pipe, Wire, frame_sizes

HISTORY = 12
LIVE = 12
EXPECTED = [b"chunk-%02d" % i for i in range(1, HISTORY + LIVE + 1)]


def connect(hub: Hub, token: str, transport: FakeTransport) -> Wire:
    """One client connection against ``hub`` over ``transport``."""
    client = Connection(Role.CLIENT, Config(window_chunks=4), resume_token=token)
    server = Connection(Role.SERVER, Config(auto_credit=False))
    return Wire(client, hub.attach(server), transport)


def delivered(wire: Wire) -> list[tuple[int, bytes]]:
    return [
        (event.seq + i, chunk)
        for event in wire.client_events
        if isinstance(event, DataReceived)
        for i, chunk in enumerate(event.chunks)
    ]


def scenario(
    direction: str, cut: Cut | None
) -> tuple[list[tuple[int, bytes]], FakeTransport, Wire | None]:
    """Subscribe over a transport whose ``direction`` is cut at ``cut`` (and recorded); if it
    broke, reconnect and resume. Returns every chunk delivered, the first transport and the
    second wire (None if the first connection survived)."""
    clock = itertools.count()
    ids = itertools.count(1)
    hub = Hub(clock=lambda: float(next(clock)), ids=lambda: f"id{next(ids)}")
    channel = hub.register("fault:x", ChannelOptions(replay=Window(chunks=1000)))
    producer = channel.start("s")
    for i in range(1, HISTORY + 1):
        producer.write(b"chunk-%02d" % i)
    pipe = Pipe(cut=cut, record=True)
    if direction == "to_server":
        first = connect(hub, "", FakeTransport(to_server=pipe))
    else:
        first = connect(hub, "", FakeTransport(to_client=pipe))
    first.run()
    if not first.client.closed:
        first.client.subscribe("fault:x", "s")
    first.run()
    for i in range(HISTORY + 1, HISTORY + LIVE + 1):
        producer.write(b"chunk-%02d" % i)
        first.run()
    producer.close()
    first.run()
    got = delivered(first)
    if not first.transport.broken:
        assert any(isinstance(e, StreamEnded) for e in first.client_events)
        return got, first.transport, None
    assert isinstance(first.client_events[-1], ConnectionTerminated)
    assert isinstance(first.server_events[-1], ConnectionTerminated)
    assert first.client.closed
    assert first.server.closed
    token = next(
        (e.resume_token for e in first.client_events if isinstance(e, HandshakeCompleted)), ""
    )
    after = got[-1][0] if got else 0
    second = connect(hub, token, FakeTransport())
    second.run()
    assert any(
        isinstance(e, HandshakeCompleted) and e.resumed == bool(token) for e in second.client_events
    )
    handle = second.client.subscribe("fault:x", "s", after_seq=after)
    second.run()
    assert not any(isinstance(e, GapReceived) for e in second.client_events)
    assert any(isinstance(e, StreamEnded) and e.handle == handle for e in second.client_events)
    return got + delivered(second), first.transport, second


def frame_cuts(stream: bytes) -> list[Cut]:
    """Every frame boundary, and three points inside each frame."""
    sizes = frame_sizes(stream)
    assert sum(sizes) == len(stream)
    cuts = [
        Cut(index, into)
        for index, size in enumerate(sizes)
        for into in sorted({0, 1, 7, size // 2})
    ]
    return [*cuts, Cut(len(sizes))]


@pytest.mark.parametrize("direction", ["to_client", "to_server"])
def test_a_cut_anywhere_loses_and_repeats_nothing(direction: str) -> None:
    reference, transport, _ = scenario(direction, None)
    assert [chunk for _, chunk in reference] == EXPECTED
    stream = getattr(transport, direction).transcript
    cuts = frame_cuts(stream)
    assert len(cuts) > 40  # every frame of the conversation, and points inside them
    resumed = 0
    for cut in cuts:
        got, first, second = scenario(direction, cut)
        pipe = getattr(first, direction)
        assert pipe.cut_point == cut
        assert pipe.transcript == stream[: pipe.cut_offset], f"cut at {cut}"
        assert [seq for seq, _ in got] == list(range(1, len(EXPECTED) + 1)), f"cut at {cut}"
        assert [chunk for _, chunk in got] == EXPECTED, f"cut at {cut}"
        resumed += second is not None
    assert resumed == len(cuts)  # every cut broke the first connection
