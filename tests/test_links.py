"""The fake transports: each kind of delivery does what it says, a cut lets exactly a prefix
of the stream through and then the end of input, and a whole client/hub session comes out
the same over every kind of link."""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable

import pytest

from streamproto import (
    ChannelOptions,
    Config,
    Connection,
    ConnectionTerminated,
    ConnState,
    DataReceived,
    ErrorCode,
    Event,
    HandshakeCompleted,
    HandshakeRequested,
    Hub,
    LocalProtocolError,
    Producer,
    Role,
    StreamEnded,
    Window,
)
from streamproto._frames import Ping, encode
from streamproto.testing import (
    Cut,
    Delivery,
    FakeTransport,
    MockClock,
    Pipe,
    PipeStatistics,
    Wire,
    decode_frames,
    frame_sizes,
)

CHUNKS = [b"chunk-%02d" % i for i in range(1, 13)]
DIRECTIONS = ["to_server", "to_client"]


def drain(pipe: Pipe) -> bytes:
    """Everything deliverable now, and the end of input if it comes."""
    out = b""
    while piece := pipe.receive():
        out += piece
    return out


class Session:
    """A client subscribing to a hub stream over ``transport``: six chunks of history, six
    live, then the end. Steps that find the connection gone are skipped."""

    def __init__(self, transport: FakeTransport, clock: MockClock | None = None) -> None:
        self.clock = clock if clock is not None else MockClock()
        ids = itertools.count(1)
        self.hub = Hub(clock=self.clock, ids=lambda: f"id{next(ids)}")
        channel = self.hub.register("links:x", ChannelOptions(replay=Window(chunks=100)))
        self.producer: Producer = channel.start("s")
        self.client = Connection(Role.CLIENT, Config(window_chunks=4), now=self.clock())
        server = Connection(Role.SERVER, Config(auto_credit=False), now=self.clock())
        self.wire = Wire(self.client, self.hub.attach(server), transport)

    def settle(self) -> None:
        """Run the wire, moving the clock to each delivery still in flight."""
        self.wire.run()
        while (due := self.wire.transport.next_due()) is not None:
            self.clock.advance(max(0.0, due - self.clock()))
            self.wire.run()

    def play(self) -> Session:
        for chunk in CHUNKS[:6]:
            self.producer.write(chunk)
        self.settle()
        if not self.client.closed:
            self.client.subscribe("links:x", "s")
        self.settle()
        for chunk in CHUNKS[6:]:
            self.producer.write(chunk)
            self.settle()
        self.producer.close()
        self.settle()
        return self


def normal(events: list[Event]) -> list[object]:
    """Events with each DataReceived split per chunk (how chunks group depends on the split)."""
    out: list[object] = []
    for event in events:
        if isinstance(event, DataReceived):
            out += [(event.handle, event.seq + i, c) for i, c in enumerate(event.chunks)]
        else:
            out.append(event)
    return out


def recorded() -> FakeTransport:
    return FakeTransport(to_server=Pipe(record=True), to_client=Pipe(record=True))


@pytest.fixture(scope="module")
def reference() -> Session:
    return Session(recorded()).play()


# -- each kind of delivery ----------------------------------------------------------------------


def test_memory_delivers_everything_at_once_in_order() -> None:
    pipe = Pipe(record=True)
    assert pipe.receive() is None
    pipe.send(b"ab")
    pipe.send(bytearray(b"c"))
    pipe.send(b"")
    assert pipe.statistics() == PipeStatistics(
        sent=3, pending=3, delivered=0, discarded=0, frames=0
    )
    assert pipe.receive() == b"abc"
    assert pipe.receive() is None
    pipe.close()
    assert not pipe.eof_delivered
    assert pipe.receive() == b""
    assert pipe.eof_delivered
    assert pipe.receive() is None
    assert pipe.transcript == b"abc"
    assert (pipe.broken, pipe.cut_point, pipe.cut_offset) == (False, None, None)


def test_close_lets_the_bytes_in_flight_arrive_first() -> None:
    pipe = Pipe(Delivery.lockstep())
    pipe.send(b"xy")
    pipe.close()
    assert [pipe.receive() for _ in range(4)] == [b"x", b"y", b"", None]


def test_lockstep_delivers_one_byte_per_receive() -> None:
    pipe = Pipe(Delivery.lockstep())
    pipe.send(b"abc")
    pipe.send(b"de")
    assert [pipe.receive() for _ in range(6)] == [b"a", b"b", b"c", b"d", b"e", None]


def test_lockstep_wire_moves_exactly_one_byte_per_step_each_way() -> None:
    session = Session(FakeTransport(Delivery.lockstep()))
    wire = session.wire
    pipes = (wire.transport.to_server, wire.transport.to_client)
    session.producer.write(b"hello")
    steps = 0
    subscribed = False
    while True:
        if not subscribed and session.client.state is ConnState.OPEN:
            session.client.subscribe("links:x", "s")
            subscribed = True
        before = [p.statistics().delivered for p in pipes]
        if not wire.step():
            break
        steps += 1
        for pipe, was in zip(pipes, before, strict=True):
            stats = pipe.statistics()
            accepted = stats.sent - stats.discarded
            assert stats.delivered - was == min(1, accepted - was)
    total = sum(p.statistics().delivered for p in pipes)
    assert steps >= max(p.statistics().delivered for p in pipes)
    assert total > 100
    assert [c for e in wire.client_events if isinstance(e, DataReceived) for c in e.chunks] == [
        b"hello"
    ]


def test_delayed_delivers_nothing_before_the_delay_and_everything_after() -> None:
    clock = MockClock(10.0)
    pipe = Pipe(Delivery.delayed(clock, 0.5))
    assert pipe.next_due() is None
    pipe.send(b"ab")
    clock.advance(0.25)
    pipe.send(b"cd")
    assert pipe.next_due() == 10.5
    assert pipe.receive() is None
    clock.advance(0.24)
    assert pipe.receive() is None
    clock.advance(0.01)
    assert pipe.receive() == b"ab"
    assert pipe.receive() is None
    assert pipe.next_due() == 10.75
    clock.advance(1)
    pipe.send(b"ef")
    pipe.close()
    assert pipe.receive() == b"cd"
    assert pipe.receive() is None  # the end of input waits for the bytes before it
    clock.advance(0.5)
    assert [pipe.receive(), pipe.receive()] == [b"ef", b""]


def test_delayed_wire_handshakes_only_when_the_clock_allows() -> None:
    clock = MockClock()
    client = Connection(Role.CLIENT, now=clock())
    server = Connection(Role.SERVER, now=clock())
    wire = Wire(client, server, FakeTransport(Delivery.delayed(clock, 2.0)))
    assert wire.run() == 1  # the HELLO left; nothing arrived
    assert wire.take_events().server == []
    clock.advance(1.999)
    assert wire.run() == 0
    clock.advance(0.001)
    wire.run()
    assert [type(e) for e in wire.take_events().server] == [HandshakeRequested]
    server.accept_handshake(session_id="s", resume_token="t")
    wire.run()
    assert wire.transport.next_due() == 4.0
    assert wire.take_events().client == []
    clock.advance(2.0)
    wire.run()
    assert [type(e) for e in wire.client_events] == [HandshakeCompleted]
    assert wire.transport.next_due() is None


def test_random_splits_into_pieces_of_every_size() -> None:
    data = bytes(range(256)) * 4
    pipe = Pipe(Delivery.random(random.Random(5)))
    pipe.send(data)
    pieces = []
    while piece := pipe.receive():
        pieces.append(piece)
    assert b"".join(pieces) == data
    assert len(pieces) > 3
    assert len({len(p) for p in pieces}) > 3
    capped = Pipe(Delivery.random(random.Random(5), max_piece=3))
    capped.send(data)
    pieces = []
    while piece := capped.receive():
        pieces.append(piece)
    assert b"".join(pieces) == data
    assert {len(p) for p in pieces} == {1, 2, 3}


def test_max_piece_caps_every_receive() -> None:
    pipe = Pipe(Delivery(max_piece=4))
    pipe.send(b"abc")
    pipe.send(b"defgh")
    assert [pipe.receive() for _ in range(3)] == [b"abcd", b"efgh", None]


# -- the cut ------------------------------------------------------------------------------------


def cut_points(stream: bytes) -> list[tuple[Cut, int]]:
    """Every frame boundary and three points inside every frame, with their offsets."""
    points: list[tuple[Cut, int]] = []
    offset = 0
    for index, size in enumerate(frame_sizes(stream)):
        for into in sorted({0, 1, 7, size // 2}):
            points.append((Cut(index, into), offset + into))
        offset += size
    points.append((Cut(len(frame_sizes(stream))), offset))
    return points


def test_frame_sizes_follows_the_length_prefix() -> None:
    frames = encode(Ping(1)) + encode(Ping(2))
    size = len(encode(Ping(1)))
    assert frame_sizes(frames) == [size, size]
    assert frame_sizes(frames + frames[:3]) == [size, size]  # a partial header
    assert frame_sizes(frames + frames[:12]) == [size, size]  # a partial body
    assert frame_sizes(b"") == []


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_a_pipe_cut_anywhere_delivers_exactly_the_prefix_then_the_end(
    reference: Session, direction: str
) -> None:
    stream = getattr(reference.wire.transport, direction).transcript
    assert len(frame_sizes(stream)) >= 6
    assert sum(frame_sizes(stream)) == len(stream)
    rng = random.Random(1)
    for cut, offset in cut_points(stream):
        pipe = Pipe(cut=cut, record=True)
        position = 0
        while position < len(stream):  # the sender's writes are split anywhere
            step = 1 + rng.randrange(40)
            pipe.send(stream[position : position + step])
            position += step
        assert drain(pipe) == stream[:offset], cut
        assert pipe.eof_delivered
        assert pipe.receive() is None
        assert (pipe.cut_point, pipe.cut_offset) == (cut, offset)
        stats = pipe.statistics()
        assert (stats.delivered, stats.discarded) == (offset, len(stream) - offset)
        assert stats.frames == cut.frames
        pipe.send(b"later")
        assert pipe.statistics().discarded == len(stream) - offset + 5


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_a_session_cut_anywhere_ends_on_both_sides(reference: Session, direction: str) -> None:
    stream = getattr(reference.wire.transport, direction).transcript
    for cut, offset in cut_points(stream):
        pipes = [Pipe(cut=cut if d == direction else None, record=True) for d in DIRECTIONS]
        session = Session(FakeTransport(to_server=pipes[0], to_client=pipes[1])).play()
        transport = session.wire.transport
        cut_pipe = getattr(transport, direction)
        assert cut_pipe.transcript == stream[:offset], cut
        assert (cut_pipe.cut_point, cut_pipe.cut_offset) == (cut, offset)
        assert transport.broken
        assert transport.to_server.eof_delivered
        assert transport.to_client.eof_delivered
        assert session.client.closed
        assert session.wire.server.closed
        assert isinstance(session.wire.client_events[-1], ConnectionTerminated)
        assert isinstance(session.wire.server_events[-1], ConnectionTerminated)


def test_a_manual_cut_reports_where_and_breaks_both_ways() -> None:
    transport = FakeTransport()
    ping = encode(Ping(7))
    transport.to_client.send(ping + ping[:3])
    transport.to_server.send(b"up")
    transport.to_client.cut()
    assert transport.broken
    assert transport.to_client.cut_point == Cut(1, 3)
    assert transport.to_client.cut_offset == len(ping) + 3
    assert transport.to_server.cut_point == Cut(0, 2)
    transport.to_client.send(b"lost")
    assert transport.to_client.statistics().discarded == 4
    assert (transport.to_client.receive(), transport.to_client.receive()) == (ping + ping[:3], b"")
    assert (transport.to_server.receive(), transport.to_server.receive()) == (b"up", b"")
    transport.cut()  # already cut: nothing changes
    assert transport.to_client.cut_point == Cut(1, 3)


def test_a_half_closed_transport_can_still_be_cut() -> None:
    transport = FakeTransport()
    transport.to_server.close()
    transport.cut()
    assert transport.to_server.cut_point is None  # it ended by itself
    assert transport.to_client.cut_point == Cut(0)
    assert [transport.to_server.receive(), transport.to_client.receive()] == [b"", b""]
    lone = Pipe()
    lone.close()
    lone.cut()
    assert not lone.broken


def test_cut_zero_lets_nothing_through_and_breaks_the_other_way_too() -> None:
    transport = FakeTransport(to_client=Pipe(cut=Cut(0)))
    assert transport.to_client.broken
    assert transport.to_server.cut_point == Cut(0)
    transport.to_client.send(b"x")
    assert transport.to_client.receive() == b""


def test_a_wire_over_a_cut_transport_ends_both_connections() -> None:
    client = Connection(Role.CLIENT)
    server = Connection(Role.SERVER)
    hello = len(client.data_to_send())
    client = Connection(Role.CLIENT)
    wire = Wire(client, server, FakeTransport(to_server=Pipe(cut=Cut(0, hello // 2))))
    wire.run()
    transfer = wire.take_events()
    assert transfer.server == [
        ConnectionTerminated(ErrorCode.CONNECTION_LOST, "the transport closed", True)
    ]
    assert transfer.client == [
        ConnectionTerminated(ErrorCode.CONNECTION_LOST, "the transport closed", True)
    ]
    assert wire.transport.to_server.statistics().delivered == hello // 2


# -- the wire -----------------------------------------------------------------------------------

LINKS: dict[str, Callable[[MockClock], FakeTransport]] = {
    "memory": lambda clock: FakeTransport(),
    "lockstep": lambda clock: FakeTransport(Delivery.lockstep()),
    "delayed": lambda clock: FakeTransport(Delivery.delayed(clock, 0.125)),
    "random": lambda clock: FakeTransport(Delivery.random(random.Random(11))),
    "random-lockstep-mix": lambda clock: FakeTransport(
        to_server=Pipe(Delivery.lockstep()), to_client=Pipe(Delivery.random(random.Random(3)))
    ),
}


@pytest.mark.parametrize("link", sorted(LINKS))
def test_a_session_completes_identically_over_every_link(reference: Session, link: str) -> None:
    clock = MockClock()
    session = Session(LINKS[link](clock), clock).play()
    client, server = session.wire.client_events, session.wire.server_events
    assert normal(client) == normal(reference.wire.client_events)
    assert server == reference.wire.server_events
    assert [c for e in client if isinstance(e, DataReceived) for c in e.chunks] == CHUNKS
    assert isinstance(client[-1], StreamEnded)
    assert not session.wire.transport.broken
    if link == "delayed":
        assert clock() > 0


def test_the_wire_follows_the_adapter_loop_without_a_hub() -> None:
    client = Connection(Role.CLIENT)
    server = Connection(Role.SERVER)
    wire = Wire(client, server)
    assert wire.run(lambda: bool(wire.server_events)) == 1
    server.accept_handshake(session_id="s", resume_token="t")
    wire.run(lambda: client.state is ConnState.OPEN)
    assert [type(e) for e in wire.take_events().client] == [HandshakeCompleted]
    assert wire.take_events().client == []
    client.goaway(ErrorCode.INTERNAL_ERROR, "bye")
    wire.run()
    transfer = wire.take_events()
    assert transfer.client == [ConnectionTerminated(ErrorCode.INTERNAL_ERROR, "bye", False)]
    assert transfer.server == [ConnectionTerminated(ErrorCode.INTERNAL_ERROR, "bye", True)]
    # like an adapter, the wire closed both outputs once the connections were over
    assert wire.transport.to_server.eof_delivered
    assert wire.transport.to_client.eof_delivered
    assert not wire.transport.broken
    assert wire.run() == 0


def test_decode_frames_reads_a_transcript(reference: Session) -> None:
    frames = decode_frames(reference.wire.transport.to_client.transcript)
    assert len(frames) == len(frame_sizes(reference.wire.transport.to_client.transcript))


# -- misuse -------------------------------------------------------------------------------------


def invalid(code: ErrorCode) -> pytest.RaisesExc[LocalProtocolError]:
    return pytest.raises(LocalProtocolError, match=code.name)


def test_delivery_and_cut_refuse_bad_arguments() -> None:
    clock = MockClock()
    for bad in (
        lambda: Delivery(delay=-1, clock=clock),
        lambda: Delivery(delay=float("nan"), clock=clock),
        lambda: Delivery(delay=1),
        lambda: Delivery(max_piece=0),
        lambda: Delivery.random(random.Random(), max_piece=0),
        lambda: Cut(-1),
        lambda: Cut(0, -1),
    ):
        with invalid(ErrorCode.INVALID_ARGUMENT):
            bad()
    assert Delivery(clock=clock) == Delivery(delay=0, clock=clock)


def test_a_cut_past_the_end_of_its_frame_is_refused_when_the_frame_shows_it() -> None:
    ping = encode(Ping(1))
    pipe = Pipe(cut=Cut(1, len(ping)))
    pipe.send(ping)
    with invalid(ErrorCode.INVALID_ARGUMENT):
        pipe.send(ping[:4])


def test_pipe_misuse() -> None:
    pipe = Pipe()
    with invalid(ErrorCode.INVALID_STATE):
        _ = pipe.transcript
    pipe.close()
    with invalid(ErrorCode.CONNECTION_CLOSED):
        pipe.send(b"x")
    with invalid(ErrorCode.INVALID_ARGUMENT):
        FakeTransport(to_server=pipe, to_client=pipe)


def test_wire_misuse() -> None:
    client = Connection(Role.CLIENT)
    server = Connection(Role.SERVER)
    with invalid(ErrorCode.INVALID_ARGUMENT):
        Wire(server, client)
    with invalid(ErrorCode.INVALID_ARGUMENT):
        Wire(client, Connection(Role.CLIENT))
    wire = Wire(client, server, FakeTransport(Delivery.lockstep()))
    with invalid(ErrorCode.INVALID_ARGUMENT):
        wire.run(max_steps=0)
    with invalid(ErrorCode.INVALID_STATE) as info:
        wire.run(max_steps=3)  # a HELLO takes more than three single bytes
    assert "did not settle in 3 steps" in str(info.value)
    wire.run()
    with invalid(ErrorCode.INVALID_STATE) as info:
        wire.run(lambda: False)  # nobody accepts the handshake
    assert "quiet" in str(info.value)
