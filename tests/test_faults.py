"""Fault injection at the core: the connection is cut at every frame boundary and in the middle
of frames, in each direction, while a client replays history and receives live chunks; then it
reconnects, resumes its session and re-subscribes after the last seq it saw. Whatever the cut,
nothing raises, both sides see the connection end, and every chunk arrives exactly once, in
order, across the two connections."""

from __future__ import annotations

import itertools
import struct
from collections.abc import Iterator

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

HISTORY = 12
LIVE = 12
EXPECTED = [b"chunk-%02d" % i for i in range(1, HISTORY + LIVE + 1)]


class Run:
    """One client connection against a hub, with the bytes of one direction cut at ``cut``."""

    def __init__(self, hub: Hub, token: str, cut: int | None, direction: str) -> None:
        self.client = Connection(Role.CLIENT, Config(window_chunks=4), resume_token=token)
        self.server = Connection(Role.SERVER, Config(auto_credit=False))
        self.peer = hub.attach(self.server)
        self.cut = cut
        self.direction = direction
        self.sent = 0  # bytes of the cut direction delivered so far
        self.stream: bytearray = bytearray()  # what went in the cut direction
        self.events: list[object] = []
        self.broken = False

    def _through(self, data: bytes, direction: str) -> bytes:
        """What of ``data`` gets through before the cut (and note the cut)."""
        if direction != self.direction:
            return data
        self.stream += data
        if self.cut is None or self.sent + len(data) <= self.cut:
            self.sent += len(data)
            return data
        keep = data[: self.cut - self.sent]
        self.sent = self.cut
        self.broken = True
        return keep

    def pump(self) -> None:
        for _ in range(1000):
            if self.broken:
                return
            up = self._through(self.client.data_to_send(), "up")
            if up:
                self.peer.handle_events(self.server.receive_data(up))
            down = self._through(self.server.data_to_send(), "down")
            self.peer.handle_events(self.server.take_events())
            if down:
                self.events += self.client.receive_data(down)
            if self.broken:
                self.events += self.client.receive_data(b"")
                self.peer.handle_events(self.server.receive_data(b""))
                return
            if not up and not down:
                return

    def delivered(self) -> list[tuple[int, bytes]]:
        out = []
        for event in self.events:
            if isinstance(event, DataReceived):
                out += [(event.seq + i, chunk) for i, chunk in enumerate(event.chunks)]
        return out


def scenario(cut: int | None, direction: str) -> tuple[list[tuple[int, bytes]], Run, Run | None]:
    clock = itertools.count()
    ids = itertools.count(1)
    hub = Hub(clock=lambda: float(next(clock)), ids=lambda: f"id{next(ids)}")
    channel = hub.register("fault:x", ChannelOptions(replay=Window(chunks=1000)))
    producer = channel.start("s")
    for i in range(1, HISTORY + 1):
        producer.write(b"chunk-%02d" % i)
    first = Run(hub, "", cut, direction)
    first.pump()
    handle = first.client.subscribe("fault:x", "s") if not first.broken else 0
    first.pump()
    for i in range(HISTORY + 1, HISTORY + LIVE + 1):
        producer.write(b"chunk-%02d" % i)
        first.pump()
    producer.close()
    first.pump()
    got = first.delivered()
    if not first.broken:
        assert any(isinstance(e, StreamEnded) for e in first.events)
        return got, first, None
    assert isinstance(first.events[-1], ConnectionTerminated)
    assert first.client.closed
    assert first.server.closed
    token = next((e.resume_token for e in first.events if isinstance(e, HandshakeCompleted)), "")
    after = got[-1][0] if got else 0
    second = Run(hub, token, None, direction)
    second.pump()
    assert any(
        isinstance(e, HandshakeCompleted) and e.resumed == bool(token) for e in second.events
    )
    handle = second.client.subscribe("fault:x", "s", after_seq=after)
    second.pump()
    assert not any(isinstance(e, GapReceived) for e in second.events)
    assert any(isinstance(e, StreamEnded) and e.handle == handle for e in second.events)
    return got + second.delivered(), first, second


def frame_cuts(stream: bytes) -> Iterator[int]:
    """Every frame boundary, and three points inside each frame."""
    offset = 0
    while offset + 4 <= len(stream):
        (length,) = struct.unpack_from(">I", stream, offset)
        end = offset + 10 + length
        yield offset
        yield from sorted({offset + 1, offset + 7, (offset + end) // 2} - {offset, end})
        offset = end
    yield len(stream)


@pytest.mark.parametrize("direction", ["down", "up"])
def test_a_cut_anywhere_loses_and_repeats_nothing(direction: str) -> None:
    reference, run, _ = scenario(None, direction)
    assert [chunk for _, chunk in reference] == EXPECTED
    cuts = list(frame_cuts(bytes(run.stream)))
    assert len(cuts) > 40  # every frame of the conversation, and points inside them
    for cut in cuts:
        got, _first, _second = scenario(cut, direction)
        assert [seq for seq, _ in got] == list(range(1, len(EXPECTED) + 1)), f"cut at {cut}"
        assert [chunk for _, chunk in got] == EXPECTED, f"cut at {cut}"
