"""Bidirectional streams driven by a hypothesis state machine: a client and a server connection
open bidirectional handles and, in random order, write on both directions, end or fail either
direction, cancel, leave or upload-cancel the other one, and move bytes in random pieces with
small windows and queues (so credit, BLOCKED and Writable all happen).

Checked after every step (and by :class:`ConnectionPair` on every transfer, per direction):
each direction's chunks arrive in order, each once, exactly as written (under BLOCK nothing is
dropped); a direction that its writer ended or failed, and its reader did not close first,
delivers every chunk and then that outcome with the last seq written; a direction closes on its
own, leaving the other running; and a handle is forgotten by both sides exactly when both of
its directions are closed.
"""

from __future__ import annotations

import random

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from streamproto import (
    CancelRequested,
    Config,
    DataReceived,
    Direction,
    ErrorCode,
    Event,
    HState,
    OpenRequested,
    OverflowPolicy,
    RequestAccepted,
    StreamEnded,
    StreamFailed,
    Unsubscribed,
    UploadCancelled,
    UploadData,
    UploadEnded,
    UploadFailed,
    WriteResult,
)
from streamproto.testing import ConnectionPair

CONFIG = Config(window_chunks=2, window_bytes=256, max_queued_chunks=3, max_queued_bytes=512)
CH = "demo:bidi"
RX, TX = Direction.RECEIVING, Direction.SENDING
_CLOSED = HState.CLOSED


class Way:
    """One direction of one handle, as the model sees it."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []  # chunks the writer's send_data ACCEPTED
        self.got: list[bytes] = []  # chunks the reader was handed
        self.outcome: tuple[str, int, str] | None = None  # what the writer sent: end / error
        self.closed_by_reader = False  # cancel, unsubscribe, upload-cancel
        self.terminal: list[Event] = []  # terminal events the reader reported


class Bidi:
    def __init__(self, handle: int) -> None:
        self.handle = handle
        self.answered = False
        self.rejected = False
        self.down = Way()  # the server's direction
        self.up = Way()  # the client's direction


class BidiMachine(RuleBasedStateMachine):
    @initialize(seed=st.integers(0, 2**32))
    def start(self, seed: int) -> None:
        self.pair = ConnectionPair(CONFIG, CONFIG, rng=random.Random(seed))
        self.pair.handshake()
        self.handles: dict[int, Bidi] = {}

    # -- moving bytes -------------------------------------------------------------------------

    def _absorb(self, client: list[Event], server: list[Event]) -> None:
        for event in client:
            b = self.handles.get(getattr(event, "handle", 0))
            if b is None:
                continue
            match event:
                case DataReceived():
                    b.down.got += event.chunks
                case StreamEnded() | StreamFailed():
                    b.down.terminal.append(event)
                case UploadCancelled():
                    b.up.terminal.append(event)
                case RequestAccepted():
                    b.answered = True
        for event in server:
            b = self.handles.get(getattr(event, "handle", 0))
            if b is None:
                continue
            match event:
                case UploadData():
                    b.up.got += event.chunks
                case UploadEnded() | UploadFailed():
                    b.up.terminal.append(event)
                case CancelRequested() | Unsubscribed():
                    b.down.terminal.append(event)

    @rule(max_bytes=st.sampled_from([None, 40, 300]))
    def transfer(self, max_bytes: int | None) -> None:
        t = self.pair.transfer(max_bytes, rounds=None if max_bytes is None else 3)
        self._absorb(t.client, t.server)

    # -- requests and answers -----------------------------------------------------------------

    @precondition(lambda self: len(self.handles) < 4)
    @rule()
    def open_bidi(self) -> None:
        h = self.pair.client.open(CH, b"", bidi=True, policy=OverflowPolicy.BLOCK)
        self.handles[h] = Bidi(h)
        t = self.pair.transfer()
        assert any(isinstance(e, OpenRequested) and e.bidi and e.handle == h for e in t.server)
        self._absorb(t.client, t.server)

    def _pending(self) -> list[Bidi]:
        return [
            b
            for b in self.handles.values()
            if not b.answered
            and not b.rejected
            and self.pair.server.handle_state(b.handle) is HState.REQUESTED
        ]

    @precondition(lambda self: self._pending())
    @rule(data=st.data(), accept=st.sampled_from([True, True, True, False]))
    def answer(self, data: st.DataObject, accept: bool) -> None:
        b = data.draw(st.sampled_from(self._pending()))
        if accept:
            assert self.pair.server.accept(b.handle, stream_id=f"s{b.handle}")
        else:
            assert self.pair.server.reject(b.handle, ErrorCode.NOT_ALLOWED, "no")
            b.rejected = True

    # -- writing --------------------------------------------------------------------------------

    def _writable(self, client: bool) -> list[Bidi]:
        conn = self.pair.client if client else self.pair.server
        ok = (HState.REQUESTED, HState.ACTIVE) if client else (HState.ACTIVE,)
        return [
            b
            for b in self.handles.values()
            if conn.handle_state(b.handle, TX) in ok
            and (b.up if client else b.down).outcome is None
        ]

    @precondition(lambda self: self._writable(True) or self._writable(False))
    @rule(data=st.data(), size=st.integers(0, 200), client=st.booleans())
    def write(self, data: st.DataObject, size: int, client: bool) -> None:
        if not self._writable(client):
            client = not client
        b = data.draw(st.sampled_from(self._writable(client)))
        way = b.up if client else b.down
        chunk = bytes([len(way.sent) % 256]) * size
        conn = self.pair.client if client else self.pair.server
        result = conn.send_data(b.handle, chunk)
        assert result in (WriteResult.ACCEPTED, WriteResult.BLOCKED)
        if result is WriteResult.ACCEPTED:
            way.sent.append(chunk)

    def _endable(self, client: bool) -> list[Bidi]:
        conn = self.pair.client if client else self.pair.server
        return [
            b
            for b in self.handles.values()
            if conn.handle_state(b.handle, TX) is HState.ACTIVE
            and (b.up if client else b.down).outcome is None
        ]

    @precondition(lambda self: self._endable(True) or self._endable(False))
    @rule(data=st.data(), client=st.booleans(), fail=st.booleans())
    def finish(self, data: st.DataObject, client: bool, fail: bool) -> None:
        if not self._endable(client):
            client = not client
        b = data.draw(st.sampled_from(self._endable(client)))
        way = b.up if client else b.down
        conn = self.pair.client if client else self.pair.server
        if fail:
            assert conn.send_error(b.handle, 4000 + b.handle, "gave up")
            way.outcome = ("error", 4000 + b.handle, "gave up")
        else:
            assert conn.send_end(b.handle)
            way.outcome = ("end", 0, "")

    # -- closing the other direction ------------------------------------------------------------

    def _readable(self, client: bool) -> list[Bidi]:
        conn = self.pair.client if client else self.pair.server
        ok = (HState.REQUESTED, HState.ACTIVE, HState.DRAINING) if client else (HState.ACTIVE,)
        return [b for b in self.handles.values() if conn.handle_state(b.handle, RX) in ok]

    @precondition(lambda self: self._readable(True) or self._readable(False))
    @rule(data=st.data(), client=st.booleans(), leave=st.booleans())
    def close_reading(self, data: st.DataObject, client: bool, leave: bool) -> None:
        if not self._readable(client):
            client = not client
        b = data.draw(st.sampled_from(self._readable(client)))
        if client:
            (self.pair.client.unsubscribe if leave else self.pair.client.cancel)(b.handle)
            b.down.closed_by_reader = True
        else:
            assert self.pair.server.cancel_upload(b.handle, message="enough")
            b.up.closed_by_reader = True

    # -- what must hold -------------------------------------------------------------------------

    @invariant()
    def chunks_arrive_in_order_once_and_whole(self) -> None:
        for b in self.handles.values():
            for way in (b.down, b.up):
                assert way.got == way.sent[: len(way.got)]
                assert len(way.terminal) <= 1

    @invariant()
    def settled_directions_are_whole_and_close_alone(self) -> None:
        pair = self.pair
        for _ in range(2):  # (the second moves what the first one's events released)
            t = pair.transfer()
            self._absorb(t.client, t.server)
        for b in self.handles.values():
            if b.rejected:
                for conn in (pair.client, pair.server):
                    assert conn.handle_state(b.handle) is _CLOSED
                continue
            if not b.answered:
                continue
            for way, writer, reader in (
                (b.down, pair.server, pair.client),
                (b.up, pair.client, pair.server),
            ):
                rx_of_reader = reader.handle_state(b.handle, RX)
                if way.outcome is not None and not way.closed_by_reader and not way.terminal:
                    continue  # cancelled by the writer's peer in a race: nothing to compare
                if way.outcome is not None and way.terminal and not way.closed_by_reader:
                    assert way.got == way.sent
                    kind, code, message = way.outcome
                    event = way.terminal[0]
                    if kind == "end":
                        assert isinstance(event, StreamEnded | UploadEnded)
                    else:
                        assert isinstance(event, StreamFailed | UploadFailed)
                        assert (event.code, event.message) == (code, message)
                    assert event.last_seq == len(way.sent)
                    assert rx_of_reader is _CLOSED
                if way.outcome is None and not way.closed_by_reader and not way.terminal:
                    # Nobody closed this direction: it is open on both sides, whatever
                    # happened to the other one.
                    assert writer.handle_state(b.handle, TX) is not _CLOSED
                    assert rx_of_reader is not _CLOSED
            both = all(
                conn.handle_state(b.handle, d) is _CLOSED
                for conn in (pair.client, pair.server)
                for d in (RX, TX)
            )
            assert (pair.client.handle_state(b.handle) is _CLOSED) == all(
                pair.client.handle_state(b.handle, d) is _CLOSED for d in (RX, TX)
            )
            if both:
                assert pair.server.handle_state(b.handle) is _CLOSED


TestBidiMachine = BidiMachine.TestCase
TestBidiMachine.settings = settings(
    max_examples=200,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
