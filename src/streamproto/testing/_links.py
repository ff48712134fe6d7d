"""Fake transports: unfriendly delivery without sockets (trio's memory and lockstep streams in
spirit, sans-IO).

Rules for this file:

1. A :class:`Pipe` is one direction. It never loses, repeats or reorders a byte: it only decides
   *when* bytes arrive and in what pieces (:class:`Delivery`), and *where* the stream breaks
   (:class:`Cut`). Everything sent before the break arrives; nothing sent after it does.
2. Time and randomness are passed in (a clock such as :class:`MockClock`, a ``random.Random``):
   nothing here reads a clock or draws a random number of its own.
3. A :class:`FakeTransport` is one connection: two pipes that break together.
4. A :class:`Wire` is the adapter loop of ``docs/adapters.md`` over a transport, and nothing
   more: every decision stays in the connections and the hub.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Callable

import attrs

from .._connection import Connection, Role
from .._errors import ErrorCode, LocalProtocolError
from .._events import Event
from .._frames import HEADER_SIZE
from .._hub import Peer
from ._pair import RandomSource, Transfer

__all__ = [
    "Cut",
    "Delivery",
    "FakeTransport",
    "Pipe",
    "PipeStatistics",
    "Wire",
    "frame_sizes",
]

#: Every frame starts with its body's length (``>I``) inside a ``HEADER_SIZE``-byte header.
_LENGTH = struct.Struct(">I")

#: Enough for a lockstep transfer of a few hundred kilobytes; a wire that needs more is
#: almost always one that never settles (a producer that writes on every ``Writable``).
DEFAULT_MAX_STEPS = 100_000


def _invalid(message: str) -> LocalProtocolError:
    return LocalProtocolError(ErrorCode.INVALID_ARGUMENT, message)


def frame_sizes(data: bytes | bytearray | memoryview) -> list[int]:
    """The size, header included, of each whole frame at the start of ``data`` (a trailing
    partial frame is left out). Sweep :class:`Cut` points over a recorded
    :attr:`Pipe.transcript` with it."""
    sizes: list[int] = []
    offset = 0
    while offset + _LENGTH.size <= len(data):
        size = HEADER_SIZE + _LENGTH.unpack_from(data, offset)[0]
        if offset + size > len(data):
            break
        sizes.append(size)
        offset += size
    return sizes


@attrs.frozen
class Delivery:
    """How a :class:`Pipe` hands its bytes over. The default delivers everything at once.

    ``delay``: bytes sent at ``clock()`` == t become deliverable at t + ``delay`` (in order;
    a ``clock`` is required for a delay). ``max_piece``: one receive returns at most this many
    bytes. ``rng``: one receive returns a random number (1 to all) of the deliverable bytes.
    """

    delay: float = 0.0
    clock: Callable[[], float] | None = None
    max_piece: int | None = None
    rng: RandomSource | None = None

    def __attrs_post_init__(self) -> None:
        if not self.delay >= 0:  # also refuses NaN
            raise _invalid("delay must be >= 0")
        if self.delay and self.clock is None:
            raise _invalid("a delay needs a clock")
        if self.max_piece is not None and self.max_piece < 1:
            raise _invalid("max_piece must be >= 1")

    @classmethod
    def lockstep(cls) -> Delivery:
        """One byte per receive."""
        return cls(max_piece=1)

    @classmethod
    def delayed(cls, clock: Callable[[], float], delay: float) -> Delivery:
        """Bytes arrive ``delay`` seconds of ``clock`` after they were sent, in order."""
        return cls(delay=delay, clock=clock)

    @classmethod
    def random(cls, rng: RandomSource, max_piece: int | None = None) -> Delivery:
        """Deliverable bytes split at random points (pass a seeded ``random.Random``)."""
        return cls(max_piece=max_piece, rng=rng)

    def _now(self) -> float:
        return 0.0 if self.clock is None else self.clock()

    def _piece(self, ready: int) -> int:
        """How many of ``ready`` (>= 1) deliverable bytes one receive returns."""
        n = ready if self.max_piece is None else min(ready, self.max_piece)
        return n if self.rng is None else 1 + self.rng.randrange(n)


@attrs.frozen
class Cut:
    """Where a stream breaks: after ``frames`` whole frames and ``into`` bytes of the next.

    ``Cut(0)`` lets nothing through; ``Cut(3)`` is the boundary after the third frame;
    ``Cut(3, 1)`` also lets the first byte of the fourth frame through. ``into`` must be less
    than that frame's size (a pipe raises INVALID_ARGUMENT when the frame shows it is not).
    """

    frames: int
    into: int = 0

    def __attrs_post_init__(self) -> None:
        if self.frames < 0 or self.into < 0:
            raise _invalid("a cut's frames and into must be >= 0")


@attrs.frozen
class PipeStatistics:
    """A pipe's counters, in bytes (``frames``: whole frames that passed the cut point)."""

    sent: int
    pending: int
    delivered: int
    discarded: int
    frames: int


class _Framer:
    """Follows the frame boundaries of a byte stream as it goes by, one piece at a time."""

    __slots__ = ("_end", "_head", "frames", "offset", "start")

    def __init__(self) -> None:
        self.offset = 0  # bytes seen
        self.frames = 0  # whole frames seen
        self.start = 0  # where the current frame starts
        self._head = b""  # the current frame's length prefix, until it is whole
        self._end: int | None = None  # where the current frame ends, once its length is known

    @property
    def size(self) -> int | None:
        """The current frame's size, once its length prefix has gone by."""
        return None if self._end is None else self._end - self.start

    def room(self) -> int:
        """Bytes until the next change of state (the length known, or the frame over)."""
        if self._end is None:
            return _LENGTH.size - len(self._head)
        return self._end - self.offset

    def feed(self, piece: bytes) -> None:
        """Take ``piece``, at most :meth:`room` bytes long."""
        self.offset += len(piece)
        if self._end is None:
            self._head += piece
            if len(self._head) == _LENGTH.size:
                self._end = self.start + HEADER_SIZE + _LENGTH.unpack(self._head)[0]
        if self.offset == self._end:
            self.frames += 1
            self.start = self.offset
            self._head = b""
            self._end = None


class Pipe:
    """One direction of a fake transport: ``send(data)`` on one end, ``receive()`` on the other.

    ``delivery`` paces the bytes (default: all at once). ``cut`` breaks the stream at a frame
    boundary or inside a frame, counting the protocol frames that went through this pipe: the
    bytes before the cut point arrive, then the end of input (``b""``); bytes sent after it are
    discarded. :meth:`cut` breaks it at once. ``record=True`` keeps every delivered byte in
    :attr:`transcript` (for :func:`~streamproto.testing.decode_frames`).
    """

    def __init__(
        self, delivery: Delivery | None = None, *, cut: Cut | None = None, record: bool = False
    ) -> None:
        self.delivery = delivery if delivery is not None else Delivery()
        self._plan = cut
        self._record: bytearray | None = bytearray() if record else None
        self._framer = _Framer()
        self._queue: deque[tuple[float, bytes]] = deque()  # (deliverable at, bytes)
        self._head = 0  # bytes of _queue[0] already delivered
        self._pending = 0
        self._delivered = 0
        self._discarded = 0
        self._sent = 0
        self._closed = False  # by the sender
        self._cut_point: Cut | None = None
        self._eof_delivered = False
        self._partner: Pipe | None = None  # broken together with this one (FakeTransport)
        self._reach_cut()

    # -- the sending end ------------------------------------------------------------------------

    def send(self, data: bytes | bytearray | memoryview) -> None:
        """Queue ``data`` for the receiver; after a cut, discard it. Raises CONNECTION_CLOSED
        after :meth:`close`."""
        if self._closed:
            raise LocalProtocolError(ErrorCode.CONNECTION_CLOSED, "send after close")
        data = bytes(data)
        self._sent += len(data)
        passed = 0
        while passed < len(data) and not self.broken:
            room = self._framer.room()
            target = self._target()
            if target is not None:
                room = min(room, target - self._framer.offset)
            piece = data[passed : passed + room]
            self._framer.feed(piece)
            passed += len(piece)
            self._reach_cut()
        self._discarded += len(data) - passed
        if passed:
            self._queue.append((self.delivery._now() + self.delivery.delay, data[:passed]))
            self._pending += passed

    def close(self) -> None:
        """The sender is done: the receiver gets the end of input after the bytes in flight."""
        self._closed = True

    def cut(self) -> None:
        """Break the stream here: the bytes in flight arrive, then the end of input; later
        sends are discarded. A pipe of a :class:`FakeTransport` breaks its partner too."""
        if not self.finished:
            framer = self._framer
            self._cut_point = Cut(framer.frames, framer.offset - framer.start)
        partner = self._partner
        if partner is not None and not partner.finished:
            partner.cut()

    # -- the receiving end ----------------------------------------------------------------------

    def receive(self) -> bytes | None:
        """The bytes deliverable now (a non-empty piece); ``b""`` once, at the end of input
        (after a cut or :meth:`close`); None when nothing is deliverable now."""
        limit = self.delivery.max_piece
        if self.delivery.rng is not None:
            limit = None  # a random piece is drawn from all the deliverable bytes
        ready = self._ready(limit)
        if ready == 0:
            if self.finished and not self._queue and not self._eof_delivered:
                self._eof_delivered = True
                return b""
            return None
        return self._take(self.delivery._piece(ready))

    def next_due(self) -> float | None:
        """When the next bytes in flight become deliverable (per the delivery's clock), or
        None if none are in flight."""
        return self._queue[0][0] if self._queue else None

    # -- state ----------------------------------------------------------------------------------

    @property
    def broken(self) -> bool:
        """Whether the stream was cut."""
        return self._cut_point is not None

    @property
    def finished(self) -> bool:
        """Whether the stream is over (closed by the sender, or cut)."""
        return self._closed or self.broken

    @property
    def eof_delivered(self) -> bool:
        """Whether :meth:`receive` has returned the end of input."""
        return self._eof_delivered

    @property
    def cut_point(self) -> Cut | None:
        """Where the stream broke (whole frames and bytes into the next), or None."""
        return self._cut_point

    @property
    def cut_offset(self) -> int | None:
        """How many bytes got through before the stream broke, or None."""
        return self._framer.offset if self.broken else None

    @property
    def transcript(self) -> bytes:
        """Every byte delivered so far. Raises INVALID_STATE unless made with
        ``record=True``."""
        if self._record is None:
            raise LocalProtocolError(ErrorCode.INVALID_STATE, "make the pipe with record=True")
        return bytes(self._record)

    def statistics(self) -> PipeStatistics:
        """Counters."""
        return PipeStatistics(
            sent=self._sent,
            pending=self._pending,
            delivered=self._delivered,
            discarded=self._discarded,
            frames=self._framer.frames,
        )

    # -- internals ------------------------------------------------------------------------------

    def _target(self) -> int | None:
        """The stream offset of the planned cut, once the frame it falls in has started."""
        plan = self._plan
        framer = self._framer
        if plan is None or framer.frames != plan.frames:
            return None
        size = framer.size
        if size is not None and plan.into >= size:
            raise _invalid(f"frame {plan.frames} is {size} bytes long: cut into it < {size}")
        return framer.start + plan.into

    def _reach_cut(self) -> None:
        target = self._target()
        if target is not None and self._framer.offset == target:
            self.cut()

    def _ready(self, limit: int | None) -> int:
        """The deliverable bytes (counted up to ``limit``)."""
        now = self.delivery._now()
        ready = -self._head
        for due, data in self._queue:
            if due > now or (limit is not None and ready >= limit):
                break
            ready += len(data)
        return max(ready, 0)

    def _take(self, n: int) -> bytes:
        parts: list[bytes] = []
        while n:
            data = self._queue[0][1]
            piece = data[self._head : self._head + n]
            parts.append(piece)
            n -= len(piece)
            self._head += len(piece)
            if self._head == len(data):
                self._queue.popleft()
                self._head = 0
        out = b"".join(parts)
        self._pending -= len(out)
        self._delivered += len(out)
        if self._record is not None:
            self._record += out
        return out


class FakeTransport:
    """One connection's two directions, :attr:`to_server` and :attr:`to_client`, that break
    together: when one is cut, the other is cut where it stands (what is in flight arrives).

    Each direction is the given pipe, or a new ``Pipe(delivery)``::

        FakeTransport()                                  # everything at once
        FakeTransport(Delivery.lockstep())               # one byte per receive
        FakeTransport(Delivery.delayed(clock, 0.25))     # a quarter second late
        FakeTransport(Delivery.random(random.Random(7)))  # random pieces
        FakeTransport(to_client=Pipe(cut=Cut(5, 3)))     # 5 frames and 3 bytes, then lost
    """

    def __init__(
        self,
        delivery: Delivery | None = None,
        *,
        to_server: Pipe | None = None,
        to_client: Pipe | None = None,
    ) -> None:
        self.to_server = to_server if to_server is not None else Pipe(delivery)
        self.to_client = to_client if to_client is not None else Pipe(delivery)
        if self.to_server is self.to_client:
            raise _invalid("the two directions need two pipes")
        self.to_server._partner = self.to_client
        self.to_client._partner = self.to_server
        if self.broken:  # a Cut(0) breaks its pipe as it is made
            self.cut()

    @property
    def broken(self) -> bool:
        """Whether the connection was cut."""
        return self.to_server.broken or self.to_client.broken

    def cut(self) -> None:
        """Break the connection now, both ways."""
        self.to_server.cut()
        self.to_client.cut()

    def next_due(self) -> float | None:
        """When the next bytes in flight, either way, become deliverable; None if none are."""
        dues = [d for d in (self.to_server.next_due(), self.to_client.next_due()) if d is not None]
        return min(dues, default=None)


class Wire:
    """Runs the adapter loop (``docs/adapters.md``) between a client :class:`Connection` and a
    server, over a :class:`FakeTransport` (default: in memory).

    ``server`` is a server :class:`Connection` or the :class:`~streamproto.Peer` that
    ``Hub.attach`` made for one; a peer is handed every non-empty event list its connection
    returns. Each :meth:`step` takes ``data_to_send()`` then ``take_events()`` from both sides
    into the transport, then hands each side one ``receive()`` of its direction (``b""`` at the
    end of input). Like an adapter, it closes a side's output once that connection is closed.
    The events each side reported collect in :attr:`client_events` / :attr:`server_events`
    until :meth:`take_events`.

    The wire never moves the clock. Over a delayed transport, :meth:`run` stops when only
    bytes that are not due yet remain::

        while (due := wire.transport.next_due()) is not None:
            clock.advance(max(0.0, due - clock()))
            wire.run()
    """

    def __init__(
        self,
        client: Connection,
        server: Connection | Peer,
        transport: FakeTransport | None = None,
    ) -> None:
        self.peer = server if isinstance(server, Peer) else None
        self.client = client
        self.server = server.conn if isinstance(server, Peer) else server
        if client.role is not Role.CLIENT or self.server.role is not Role.SERVER:
            raise _invalid("a wire joins a client connection to a server connection")
        self.transport = transport if transport is not None else FakeTransport()
        self.client_events: list[Event] = []
        self.server_events: list[Event] = []

    def take_events(self) -> Transfer:
        """The events collected so far (and forget them)."""
        transfer = Transfer(self.client_events, self.server_events)
        self.client_events = []
        self.server_events = []
        return transfer

    def step(self) -> bool:
        """One round of the loop; whether anything moved (bytes, end of input or events)."""
        moved = False
        for conn, pipe in (
            (self.client, self.transport.to_server),
            (self.server, self.transport.to_client),
        ):
            data = conn.data_to_send()
            events = conn.take_events()
            self._report(conn, events)
            if data:
                pipe.send(data)
            if conn.closed and not pipe.finished:
                pipe.close()
            moved = moved or bool(data or events)
        for conn, pipe in (
            (self.server, self.transport.to_server),
            (self.client, self.transport.to_client),
        ):
            piece = pipe.receive()
            if piece is not None:
                self._report(conn, conn.receive_data(piece))
                moved = True
        return moved

    def run(
        self, until: Callable[[], bool] | None = None, *, max_steps: int = DEFAULT_MAX_STEPS
    ) -> int:
        """:meth:`step` until nothing moves, or until ``until()`` is true; return the steps
        that moved something. Raises INVALID_STATE if the wire goes quiet before ``until()``
        holds, or needs more than ``max_steps`` steps."""
        if max_steps < 1:
            raise _invalid("max_steps must be >= 1")
        steps = 0
        while until is None or not until():
            if steps == max_steps:
                raise LocalProtocolError(
                    ErrorCode.INVALID_STATE, f"the wire did not settle in {max_steps} steps"
                )
            if not self.step():
                if until is None:
                    return steps
                raise LocalProtocolError(
                    ErrorCode.INVALID_STATE, "the wire went quiet before the condition held"
                )
            steps += 1
        return steps

    def _report(self, conn: Connection, events: list[Event]) -> None:
        if conn is self.client:
            self.client_events += events
            return
        self.server_events += events
        if self.peer is not None and events:
            self.peer.handle_events(events)
