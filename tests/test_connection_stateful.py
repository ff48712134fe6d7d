"""A client and a server driven through random operations by a hypothesis state machine.

The model plays a small hub: streams with a history (seq i is ``chunks[i - 1]``) that it can
grow, evict from the front, end or fail; subscriptions that it serves from ``after_seq`` (replay,
an EVICTED gap for what it no longer holds, then live chunks); uploads; and a client that
subscribes, opens, uploads, cancels, leaves, and after a lost connection resumes every stream it
was reading with ``after_seq`` = the last seq it got. Bytes move in random pieces, with random
``max_bytes``; time moves with or without the network.

Checked after every step (and by :class:`ConnectionPair` on every transfer): each handle's seqs
are contiguous from its starting point, data and gaps together leave no seq out and none twice,
every chunk has the content the stream holds at that seq, gaps have the reason the server had
(OVERFLOW only for drop_oldest), terminal events carry the stream's outcome and come after
everything else and last, every request is answered once the server has decided, senders that
were told BLOCKED hear Writable, queued and buffered bytes stay within the configured bounds, a
connection only ends with a code the model caused, and no operation raises except a
LocalProtocolError the model predicted.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from streamproto import (
    CancelRequested,
    Config,
    ConnectionTerminated,
    ConnState,
    DataReceived,
    DeleteRequested,
    ErrorCode,
    Event,
    GapReason,
    GapReceived,
    GoawayReceived,
    ListRequested,
    LocalProtocolError,
    OpenRequested,
    OverflowPolicy,
    OverflowWarning,
    RequestAccepted,
    RequestRejected,
    StatusRequested,
    StreamEnded,
    StreamEntry,
    StreamFailed,
    StreamsReceived,
    StreamState,
    SubscribeRequested,
    Unsubscribed,
    UploadCancelled,
    UploadData,
    UploadEnded,
    UploadFailed,
    UploadRequested,
    Writable,
    WriteResult,
)
from streamproto._frames import HEADER_SIZE
from streamproto.testing import ConnectionPair, Transfer

#: Executed steps (rules) over the whole run; reported by tests/conftest.py.
STEPS = 0

CLIENT = Config(
    max_frame_size=16_384,
    max_chunk_size=65_536,
    window_chunks=2,
    window_bytes=60_000,
    keepalive=1.0,
    max_queued_chunks=3,
    max_queued_bytes=65_536,
)
SERVER = Config(
    max_frame_size=16_384,
    max_chunk_size=65_536,
    window_chunks=3,
    window_bytes=60_000,
    keepalive=1.0,
    max_queued_chunks=2,
    max_queued_bytes=65_536,
    max_connection_queued_bytes=90_000,
    max_subscriptions=12,
    max_uploads=2,
)
#: Sizes around the frame size (16384 - 8 fits one frame) and up to the chunk limit.
SIZES = st.sampled_from([0, 1, 9, 300, 4_000, 16_376, 16_377, 40_000, 65_536])
NAMES = [("t:a", "s1"), ("t:a", "s2"), ("t:b", "s3")]
POLICIES = st.sampled_from([*OverflowPolicy, OverflowPolicy.BLOCK, OverflowPolicy.ERROR])


def chunk_of(key: tuple[str, str], seq: int, size: int) -> bytes:
    """Distinct content for every (stream, seq), so that a misplaced chunk is noticed."""
    stamp = f"{key[1]}#{seq};".encode()
    return (stamp * (size // len(stamp) + 1))[:size]


class MStream:
    """A stream on the model server: its history, what is evicted, its outcome."""

    def __init__(self, key: tuple[str, str]) -> None:
        self.key = key
        self.chunks: list[bytes] = []
        self.first = 1  # seqs before it are evicted
        self.outcome: tuple[int, str] | None = None  # (0, "") ended, else (code, message)

    @property
    def last(self) -> int:
        return len(self.chunks)


class SSub:
    """A server subscription: the model writes seqs from ``next`` as the stream has them."""

    def __init__(self, handle: int, stream: MStream, next_seq: int, policy: OverflowPolicy):
        self.handle = handle
        self.stream = stream
        self.next = next_seq
        self.policy = policy
        self.blocked = False  # told BLOCKED, waiting for Writable
        self.done = False  # ended, failed, or closed by the peer or the policy


class CSub:
    """A client subscription."""

    def __init__(self, handle: int, key: tuple[str, str] | None, after: int | None):
        self.handle = handle
        self.key = key  # None for an OPEN until its ACCEPT names the stream
        self.after = after  # None: tail
        self.start = 0 if after is None else after + 1  # the first seq it may get
        self.state = "requested"  # -> active -> closed
        self.next = self.start


class CUp:
    """A client upload: the chunks the core accepted, and one waiting for Writable."""

    def __init__(self, handle: int) -> None:
        self.handle = handle
        self.written: list[bytes] = []
        self.waiting: bytes | None = None
        self.state = "requested"
        self.finished = False  # END or ERROR sent
        self.fail_code: int | None = None
        self.accepted = False


class StatefulConnections(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.streams: dict[tuple[str, str], MStream] = {k: MStream(k) for k in NAMES}
        self.pos: dict[tuple[str, str], int] = {}  # the last seq the client got, per stream
        self.opened = 0
        self.now = 0.0
        self.pair: ConnectionPair
        self.ssubs: dict[int, SSub] = {}
        self.csubs: dict[int, CSub] = {}
        self.cups: dict[int, CUp] = {}
        self.sups: dict[int, list[bytes]] = {}  # server uploads: what arrived
        self.cancelled_uploads: set[int] = set()
        # Client queries (status, list, delete): None while unanswered, then the answer.
        self.queries: dict[int, StreamsReceived | RequestRejected | None] = {}
        self.answers: dict[int, StreamsReceived | RequestRejected] = {}  # what the server sent
        self.pending: dict[int, Event] = {}  # requests the server has not answered
        self.codes: set[int] = set()  # connection codes the model caused
        self.over: set[str] = set()  # the sides whose connection ended

    # -- connections ----------------------------------------------------------------------------

    @initialize()
    def connect(self) -> None:
        self.new_pair()

    def new_pair(self) -> None:
        self.pair = ConnectionPair(CLIENT, SERVER, now=self.now)
        self.ssubs, self.csubs, self.cups, self.sups = {}, {}, {}, {}
        self.cancelled_uploads = set()
        self.queries, self.answers = {}, {}
        self.pending = {}
        self.codes = {ErrorCode.NO_ERROR}
        self.over = set()
        self.pair.handshake()

    @property
    def client_open(self) -> bool:
        return self.pair.client.state is ConnState.OPEN and not self.over

    @property
    def alive(self) -> bool:
        return not self.over and not self.pair.client.closed and not self.pair.server.closed

    @rule(seed=st.integers(0, 2**32), max_bytes=st.sampled_from([None, None, 64, 3_000, 20_000]))
    def pump(self, seed: int, max_bytes: int | None) -> None:
        self.pair.rng = random.Random(seed)
        self.handle(self.pair.transfer(max_bytes))

    @rule(seed=st.integers(0, 2**32), max_bytes=st.sampled_from([64, 3_000, 20_000]))
    def trickle(self, seed: int, max_bytes: int) -> None:
        """One ``data_to_send(max_bytes)`` each way, no more: chunks stay half sent."""
        self.pair.rng = random.Random(seed)
        self.handle(self.pair.transfer(max_bytes, rounds=1))

    @rule()
    def settle(self) -> None:
        """The server accepts every request and the bytes flow until nothing moves: then
        every request is answered, or the connection is over."""
        self.settle_down()
        if not self.pair.client.closed and not self.pending:
            for sub in self.csubs.values():
                assert sub.state != "requested", f"request {sub.handle} never answered"
            for up in self.cups.values():
                assert up.state != "requested", f"upload {up.handle} never answered"
            for h, got in self.queries.items():
                if h in self.answers:
                    assert got == self.answers[h], f"query {h}: {got}"
                else:  # never reached the application: refused while the connection drains
                    assert isinstance(got, RequestRejected), f"query {h}: {got}"
                    assert got.code == ErrorCode.SERVER_SHUTDOWN, f"query {h}: {got}"

    def settle_down(self) -> None:
        for _ in range(50):
            if not self.pair.server.closed:
                for h in sorted(self.pending):
                    self.answer_request(h, True)
            for up in list(self.cups.values()):
                self.retry_upload(up)
            t = self.pair.transfer()
            self.handle(t)
            if t == Transfer([], []) and not (self.pending and not self.pair.server.closed):
                return
        raise AssertionError("the connection never went quiet")

    @rule(dt=st.sampled_from([0.1, 0.6, 1.0, 2.5]))
    def tick(self, dt: float) -> None:
        self.now += dt
        self.handle(self.pair.advance(dt))

    @precondition(lambda self: self.alive)
    @rule(dt=st.sampled_from([1.0, 2.0]))
    def stall(self, dt: float) -> None:
        """Time passes and nothing gets through: keepalive may give up."""
        self.now += dt
        self.pair.now = self.now
        self.codes.add(ErrorCode.KEEPALIVE_TIMEOUT)
        client = self.pair.client.handle_timer(self.now)
        server = self.pair.server.handle_timer(self.now)
        self.handle(Transfer(client, server))

    @precondition(lambda self: self.alive)
    @rule(
        by_client=st.booleans(),
        code=st.sampled_from([0, 0, ErrorCode.INTERNAL_ERROR, 1500, ErrorCode.CONNECTION_LOST]),
    )
    def goaway(self, by_client: bool, code: int) -> None:
        """GOAWAY to drain or to close, or the transport lost (CONNECTION_LOST)."""
        if code == ErrorCode.CONNECTION_LOST:
            self.reconnect()
            return
        conn = self.pair.client if by_client else self.pair.server
        self.codes.add(code)
        conn.goaway(code, "model")
        self.handle(Transfer(*self.pair_events(conn, conn.take_events())))

    @precondition(lambda self: not self.alive)
    @rule()
    def reconnect(self) -> None:
        """The transport goes away (if it had not yet); a new connection resumes every stream
        the client was reading from the last seq it got."""
        self.codes.add(ErrorCode.CONNECTION_LOST)
        for conn in (self.pair.client, self.pair.server):
            if not conn.closed:
                self.handle(Transfer(*self.pair_events(conn, conn.receive_data(b""))))
        resume = [s.key for s in self.csubs.values() if s.state != "closed" and s.key is not None]
        self.now += 0.01
        self.new_pair()
        for key in dict.fromkeys(resume):
            self.do_subscribe(key, self.pos.get(key, 0), OverflowPolicy.DEFAULT, 0)
        self.handle(self.pair.transfer())

    def pair_events(self, conn: Any, events: list[Event]) -> tuple[list[Event], list[Event]]:
        return (events, []) if conn is self.pair.client else ([], events)

    # -- client requests ------------------------------------------------------------------------

    def do_subscribe(
        self, key: tuple[str, str], after: int | None, policy: OverflowPolicy, prio: int
    ) -> None:
        h = self.pair.client.subscribe(
            key[0],
            key[1],
            after_seq=after or 0,
            tail=after is None,
            policy=policy,
            priority=prio,
        )
        self.csubs[h] = CSub(h, key, after)

    @precondition(lambda self: self.client_open)
    @rule(
        which=st.sampled_from(NAMES),
        mode=st.sampled_from(["start", "resume", "tail", "future"]),
        policy=POLICIES,
        prio=st.integers(0, 3),
    )
    def subscribe(
        self, which: tuple[str, str], mode: str, policy: OverflowPolicy, prio: int
    ) -> None:
        stream = self.streams[which]
        after = {
            "start": 0,
            "resume": self.pos.get(which, 0),
            "tail": None,
            "future": stream.last + 2,
        }[mode]
        self.do_subscribe(which, after, policy, prio)

    @precondition(lambda self: self.client_open)
    @rule(named=st.booleans(), policy=POLICIES)
    def open(self, named: bool, policy: OverflowPolicy) -> None:
        self.opened += 1
        sid = f"o{self.opened}" if named else ""
        h = self.pair.client.open("t:open", b"args", stream_id=sid, policy=policy)
        self.csubs[h] = CSub(h, None, 0)

    @precondition(lambda self: self.client_open and self.opened)
    @rule(data=st.data(), policy=POLICIES)
    def join(self, data: st.DataObject, policy: OverflowPolicy) -> None:
        """OPEN with JOIN naming a stream the model opened (running or finished)."""
        sid = f"o{data.draw(st.integers(1, self.opened))}"
        h = self.pair.client.open("t:open", b"args", stream_id=sid, policy=policy, join=True)
        self.csubs[h] = CSub(h, None, 0)

    @precondition(lambda self: self.client_open)
    @rule(which=st.sampled_from(NAMES), op=st.sampled_from(["status", "list", "delete"]))
    def query(self, which: tuple[str, str], op: str) -> None:
        client = self.pair.client
        if op == "status":
            h = client.status(*which)
        elif op == "list":
            h = client.list_streams(which[0], after=which[1], states=0b10, limit=2)
        else:
            h = client.delete(*which)
        self.queries[h] = None

    @precondition(lambda self: self.client_open)
    @rule()
    def upload(self) -> None:
        h = self.pair.client.upload("t:up", "", b"meta")
        self.cups[h] = CUp(h)

    @precondition(lambda self: self.alive and any(s.state != "closed" for s in self.csubs.values()))
    @rule(data=st.data(), cancel=st.booleans())
    def leave(self, data: st.DataObject, cancel: bool) -> None:
        sub = data.draw(st.sampled_from([s for s in self.csubs.values() if s.state != "closed"]))
        (self.pair.client.cancel if cancel else self.pair.client.unsubscribe)(sub.handle)
        sub.state = "closed"

    def open_uploads(self) -> list[CUp]:
        return [u for u in self.cups.values() if u.state != "closed" and not u.finished]

    @precondition(lambda self: self.alive and self.open_uploads())
    @rule(data=st.data(), size=SIZES)
    def upload_write(self, data: st.DataObject, size: int) -> None:
        up = data.draw(st.sampled_from(self.open_uploads()))
        if up.waiting is None:
            up.waiting = bytes([len(up.written) % 251]) * size
            self.retry_upload(up)

    def retry_upload(self, up: CUp, *, woken: bool = False) -> None:
        if up.waiting is None or up.state == "closed":
            return
        result = self.pair.client.send_data(up.handle, up.waiting)
        if result is WriteResult.CLOSED:  # only when the whole connection is over
            assert self.pair.client.closed
            up.state = "closed"
            return
        assert result in (WriteResult.ACCEPTED, WriteResult.BLOCKED)  # uploads BLOCK
        assert not woken or result is WriteResult.ACCEPTED, f"Writable({up.handle}), BLOCKED"
        if result is WriteResult.ACCEPTED:
            up.written.append(up.waiting)
            up.waiting = None

    @precondition(lambda self: self.alive and [u for u in self.open_uploads() if u.accepted])
    @rule(data=st.data())
    def upload_end(self, data: st.DataObject) -> None:
        up = data.draw(st.sampled_from([u for u in self.open_uploads() if u.accepted]))
        up.waiting = None  # a write still waiting for Writable is given up
        up.finished = True
        assert self.pair.client.send_end(up.handle)

    @precondition(lambda self: self.alive and self.open_uploads())
    @rule(data=st.data())
    def upload_fail(self, data: st.DataObject) -> None:
        up = data.draw(st.sampled_from(self.open_uploads()))
        up.waiting = None
        up.finished = True
        up.fail_code = 1700
        if not up.accepted:
            up.state = "closed"  # failed before ACCEPT: closed at once
        assert self.pair.client.send_error(up.handle, 1700, "client gave up")

    # -- the server -----------------------------------------------------------------------------

    @precondition(lambda self: self.pending and not self.pair.server.closed)
    @rule(data=st.data(), accept=st.sampled_from([True, True, True, False]))
    def answer(self, data: st.DataObject, accept: bool) -> None:
        h = data.draw(st.sampled_from(sorted(self.pending)))
        self.answer_request(h, accept)

    def answer_request(self, h: int, accept: bool) -> None:
        request = self.pending.pop(h)
        server = self.pair.server
        if isinstance(request, SubscribeRequested):
            stream = self.streams.get((request.channel, request.stream_id))
            if stream is None or not accept:
                server.reject(h, ErrorCode.UNKNOWN_STREAM, "no")
                return
            if not server.accept(
                h, stream_id=request.stream_id, first_seq=stream.first, last_seq=stream.last
            ):
                return
            after = stream.last if request.after_seq is None else request.after_seq
            self.add_ssub(h, stream, max(after + 1, stream.first), request.policy)
        elif isinstance(request, StatusRequested | ListRequested | DeleteRequested):
            self.answer_query(h, request, accept)
        elif isinstance(request, OpenRequested):
            sid = request.stream_id or f"picked{h}-{self.opened}"
            key = (request.channel, sid)
            running = self.streams.get(key)
            if accept and request.join and running is not None and running.outcome is None:
                # Run-or-join: subscribed to the running stream from seq 1 (R-JOIN-1).
                if server.accept(
                    h, stream_id=sid, first_seq=running.first, last_seq=running.last, joined=True
                ):
                    self.add_ssub(h, running, running.first, request.policy)
                return
            if not accept or key in self.streams:
                server.reject(h, ErrorCode.STREAM_EXISTS if accept else 1500, "no")
                return
            stream = self.streams[key] = MStream(key)
            if server.accept(h, stream_id=sid):
                self.add_ssub(h, stream, 1, request.policy)
        else:
            assert isinstance(request, UploadRequested)
            if not accept:
                server.reject(h, ErrorCode.NOT_ALLOWED, "no")
            elif server.accept(h, stream_id=f"up{h}"):
                self.sups[h] = []

    def entry(self, key: tuple[str, str]) -> StreamEntry:
        stream = self.streams.get(key)
        if stream is None:
            return StreamEntry(key[1], StreamState.MISSING)
        state = StreamState.OPEN if stream.outcome is None else StreamState.ENDED
        return StreamEntry(key[1], state, 0, stream.first, stream.last)

    def answer_query(
        self, h: int, request: StatusRequested | ListRequested | DeleteRequested, accept: bool
    ) -> None:
        server = self.pair.server
        if not accept:
            server.reject(h, ErrorCode.FORBIDDEN, "no")
            self.answers[h] = RequestRejected(h, ErrorCode.FORBIDDEN, "no")
            return
        if isinstance(request, ListRequested):
            keys = sorted(k for k in self.streams if k[0] == request.channel)
            entries = [self.entry(k) for k in keys if k[1] > request.after][: request.limit]
            following = entries[-1].stream_id if entries else ""
        else:  # the model answers a delete with the entry and deletes nothing
            entries = [self.entry((request.channel, request.stream_id))]
            following = ""
        server.answer_streams(h, entries, following)
        self.answers[h] = StreamsReceived(h, tuple(entries), following)

    def add_ssub(self, h: int, stream: MStream, next_seq: int, policy: OverflowPolicy) -> None:
        if policy is OverflowPolicy.DEFAULT:
            policy = SERVER.default_policy
        sub = self.ssubs[h] = SSub(h, stream, next_seq, policy)
        self.flush(sub)

    def flush(self, sub: SSub, *, woken: bool = False) -> None:
        """Write what the stream has from ``sub.next`` on, then its outcome. After a Writable
        (``woken``) the write that was refused must fit, unless other handles have filled the
        connection-wide cap since."""
        if sub.done or sub.blocked:
            return
        server = self.pair.server
        stream = sub.stream
        while sub.next <= stream.last:
            if sub.next < stream.first:  # evicted before it was written
                result = server.send_gap(sub.handle, stream.first - 1)
                sub.next = stream.first
            else:
                result = server.send_data(sub.handle, stream.chunks[sub.next - 1])
                if result is WriteResult.ACCEPTED:
                    sub.next += 1
            if result is WriteResult.BLOCKED:
                assert sub.policy is OverflowPolicy.BLOCK
                queued = server.statistics().queued_bytes
                size = len(stream.chunks[sub.next - 1])
                cap_full = queued + size > SERVER.max_connection_queued_bytes
                assert not woken or cap_full, f"Writable({sub.handle}) but still BLOCKED"
                sub.blocked = True
                return
            woken = False
            if result is WriteResult.FAILED:
                assert sub.policy is OverflowPolicy.ERROR
                sub.done = True
                return
            if result is WriteResult.CLOSED:
                sub.done = True
                return
        if stream.outcome is not None:
            code, message = stream.outcome
            if code == 0:
                server.send_end(sub.handle)  # False if the client left meanwhile
            else:
                server.send_error(sub.handle, code, message)
            sub.done = True

    def live_subs(self, stream: MStream) -> list[SSub]:
        return [s for s in self.ssubs.values() if s.stream is stream and not s.done]

    @precondition(lambda self: not self.pair.server.closed)
    @rule(which=st.sampled_from(NAMES), size=SIZES, count=st.integers(1, 8))
    def produce(self, which: tuple[str, str], size: int, count: int) -> None:
        self.write(self.streams[which], size, count)

    @precondition(lambda self: not self.pair.server.closed)
    @rule(which=st.sampled_from(NAMES), size=SIZES, seed=st.integers(0, 2**32))
    def produce_and_pump(self, which: tuple[str, str], size: int, seed: int) -> None:
        self.write(self.streams[which], size, 2)
        self.pump(seed, None)

    @precondition(lambda self: not self.pair.server.closed)
    @rule(data=st.data(), size=SIZES)
    def produce_opened(self, data: st.DataObject, size: int) -> None:
        opened = [s for k, s in self.streams.items() if k[0] == "t:open"]
        if opened:
            self.write(data.draw(st.sampled_from(opened)), size, 1)

    def write(self, stream: MStream, size: int, count: int) -> None:
        if stream.outcome is not None:
            return
        for _ in range(count):
            stream.chunks.append(chunk_of(stream.key, stream.last + 1, size))
        for sub in self.live_subs(stream):
            self.flush(sub)

    @precondition(lambda self: not self.pair.server.closed)
    @rule(which=st.sampled_from(NAMES), n=st.integers(1, 4))
    def evict(self, which: tuple[str, str], n: int) -> None:
        stream = self.streams[which]
        stream.first = min(stream.first + n, stream.last + 1)
        for sub in self.live_subs(stream):
            self.flush(sub)

    @precondition(lambda self: not self.pair.server.closed and self.ssubs)
    @rule(data=st.data(), n=st.integers(1, 3))
    def skip(self, data: st.DataObject, n: int) -> None:
        """The server decides some seqs of one subscription will not be sent (send_gap)."""
        subs = [s for s in self.ssubs.values() if not s.done and not s.blocked]
        subs = [s for s in subs if s.next <= s.stream.last]
        if not subs:
            return
        sub = data.draw(st.sampled_from(subs))
        to = min(sub.next + n - 1, sub.stream.last)
        assert self.pair.server.send_gap(sub.handle, to) is WriteResult.ACCEPTED
        sub.next = to + 1
        self.flush(sub)

    @precondition(lambda self: not self.pair.server.closed)
    @rule(data=st.data(), fail=st.booleans())
    def finish(self, data: st.DataObject, fail: bool) -> None:
        running = [s for s in self.streams.values() if s.outcome is None]
        if not running:
            return
        stream = data.draw(st.sampled_from(running))
        stream.outcome = (1234, "producer failed") if fail else (0, "")
        for sub in self.live_subs(stream):
            self.flush(sub)

    @precondition(lambda self: self.alive and self.sups)
    @rule(data=st.data())
    def cancel_upload(self, data: st.DataObject) -> None:
        h = data.draw(st.sampled_from(sorted(self.sups)))
        if self.pair.server.cancel_upload(h, ErrorCode.UPLOAD_CANCELLED, "enough"):
            self.cancelled_uploads.add(h)
        del self.sups[h]

    # -- misuse ---------------------------------------------------------------------------------

    @precondition(lambda self: self.alive)
    @rule(data=st.data())
    def misuse(self, data: st.DataObject) -> None:
        """An operation the model knows is illegal raises LocalProtocolError and changes
        nothing."""
        client, server = self.pair.client, self.pair.server
        cases: list[tuple[Any, tuple[Any, ...], set[int]]] = [
            (client.consume, (1, 0, 0), {ErrorCode.INVALID_STATE}),  # auto credit is on
            (server.subscribe, ("t:a", "s1"), {ErrorCode.INVALID_STATE}),
            (client.accept, (1,), {ErrorCode.INVALID_STATE}),
            (client.subscribe, ("Bad:Name!", "s"), {ErrorCode.INVALID_NAME}),
            (server.send_gap, (10**6, 1), {ErrorCode.UNKNOWN_HANDLE}),
        ]
        for sub in self.csubs.values():
            if sub.state != "closed":
                cases.append((client.send_data, (sub.handle, b"x"), {ErrorCode.INVALID_STATE}))
        for h, sub in self.ssubs.items():
            if not sub.done and h in self.pair.requests:
                cases.append((server.accept, (h,), {ErrorCode.INVALID_STATE}))
        for h in self.pending:
            if isinstance(self.pending[h], SubscribeRequested | OpenRequested):
                cases.append((server.send_data, (h, b"x"), {ErrorCode.INVALID_STATE}))
        if self.pair.client.state is not ConnState.OPEN:
            cases.append((client.upload, ("t:up",), {ErrorCode.CONNECTION_CLOSED}))
        for up in self.open_uploads():
            if not up.accepted and up.state == "requested":  # END needs the ACCEPT (R-UP-3)
                cases.append((client.send_end, (up.handle,), {ErrorCode.INVALID_STATE}))
        fn, args, codes = data.draw(st.sampled_from(cases))
        before = (client.statistics(), server.statistics())
        with pytest.raises(LocalProtocolError) as info:
            fn(*args)
        assert info.value.code in codes, info.value
        assert (client.statistics(), server.statistics()) == before

    # -- events ---------------------------------------------------------------------------------

    def handle(self, t: Transfer) -> None:
        for event in t.server:
            self.on_server(event)
        for event in t.client:
            self.on_client(event)

    def on_connection_event(self, side: str, event: Event) -> bool:
        if isinstance(event, ConnectionTerminated):
            assert event.code in self.codes, event
            self.over.add(side)
            return True
        if isinstance(event, GoawayReceived):
            assert event.code == 0
            return True
        return not hasattr(event, "handle")  # pings and pongs

    def on_server(self, event: Event) -> None:
        if self.on_connection_event("server", event):
            return
        h: int = event.handle  # type: ignore[union-attr]
        match event:
            case (
                SubscribeRequested()
                | OpenRequested()
                | UploadRequested()
                | StatusRequested()
                | ListRequested()
                | DeleteRequested()
            ):
                self.pending[h] = event
            case CancelRequested() | Unsubscribed():
                self.pending.pop(h, None)
                assert self.csubs[h].state == "closed"
                if h in self.ssubs:
                    self.ssubs[h].done = True
            case Writable():
                sub = self.ssubs[h]
                assert sub.blocked, event
                sub.blocked = False
                self.flush(sub, woken=True)
            case OverflowWarning():
                assert self.ssubs[h].policy is OverflowPolicy.DROP_OLDEST
            case UploadData():
                got = self.sups[h]
                assert event.seq == len(got) + 1
                got += event.chunks
                assert got == self.cups[h].written[: len(got)]
            case UploadEnded():
                assert self.sups.pop(h) == self.cups[h].written
                assert event.last_seq == len(self.cups[h].written)
            case UploadFailed():
                self.pending.pop(h, None)
                assert event.code == self.cups[h].fail_code
                self.sups.pop(h, None)
            case _:  # pragma: no cover - every server event is listed
                raise AssertionError(f"unexpected server event {event}")

    def on_client(self, event: Event) -> None:
        if self.on_connection_event("client", event):
            return
        h: int = event.handle  # type: ignore[union-attr]
        if h in self.cups:
            self.on_client_upload(self.cups[h], event)
            return
        if h in self.queries:
            assert self.queries[h] is None, f"{event}: the query was answered"
            assert isinstance(event, StreamsReceived | RequestRejected), event
            self.queries[h] = event
            return
        sub = self.csubs[h]
        assert sub.state != "closed", f"{event} after the handle closed"
        match event:
            case RequestAccepted():
                assert sub.state == "requested"
                if event.joined:  # only an OPEN that asked to join
                    assert getattr(self.pair.requests.get(h), "join", False), event
                sub.state = "active"
                if sub.key is None:
                    sub.key = ("t:open", event.stream_id)
                if sub.after is None:
                    sub.start = sub.next = event.last_seq + 1
            case RequestRejected():
                sub.state = "closed"
            case DataReceived():
                stream = self.streams[sub.key]  # type: ignore[index]
                assert event.seq == sub.next
                for i, chunk in enumerate(event.chunks):
                    assert chunk == stream.chunks[event.seq + i - 1], "wrong content"
                self.advance(sub, event.last_seq)
            case GapReceived():
                stream = self.streams[sub.key]  # type: ignore[index]
                assert event.from_seq == sub.next
                if event.reason is GapReason.OVERFLOW:
                    assert self.effective(sub) is OverflowPolicy.DROP_OLDEST
                else:
                    assert event.to_seq <= stream.last
                self.advance(sub, event.to_seq)
            case OverflowWarning():
                assert self.effective(sub) is OverflowPolicy.DROP_OLDEST
            case StreamEnded() | StreamFailed():
                stream = self.streams[sub.key]  # type: ignore[index]
                assert event.last_seq == sub.next - 1  # everything before was delivered
                if isinstance(event, StreamFailed) and event.code == ErrorCode.RESOURCE_EXHAUSTED:
                    assert self.effective(sub) is OverflowPolicy.ERROR
                else:
                    want = stream.outcome
                    assert want is not None
                    if isinstance(event, StreamEnded):
                        assert want == (0, "")
                    else:
                        assert (event.code, event.message) == want
                    assert event.last_seq == max(stream.last, sub.start - 1)
                sub.state = "closed"
            case _:  # pragma: no cover - every client event is listed
                raise AssertionError(f"unexpected client event {event}")

    def effective(self, sub: CSub) -> OverflowPolicy:
        request = self.pair.requests.get(sub.handle)
        policy = getattr(request, "policy", OverflowPolicy.DEFAULT)
        return SERVER.default_policy if policy is OverflowPolicy.DEFAULT else policy

    def advance(self, sub: CSub, last: int) -> None:
        sub.next = last + 1
        key = sub.key
        assert key is not None
        self.pos[key] = max(self.pos.get(key, 0), last)

    def on_client_upload(self, up: CUp, event: Event) -> None:
        assert up.state != "closed", f"{event} after the upload closed"
        match event:
            case RequestAccepted():
                up.state = "active"
                up.accepted = True
            case RequestRejected():
                up.state = "closed"
            case UploadCancelled():
                assert up.handle in self.cancelled_uploads
                up.state = "closed"
            case Writable():
                self.retry_upload(up, woken=True)
            case _:  # pragma: no cover - every upload event is listed
                raise AssertionError(f"unexpected upload event {event}")

    # -- invariants -----------------------------------------------------------------------------

    @invariant()
    def bounded(self) -> None:
        global STEPS  # noqa: PLW0603 - the run's step count, for the report
        STEPS += 1
        for conn, cfg in ((self.pair.client, CLIENT), (self.pair.server, SERVER)):
            stats = conn.statistics()
            assert stats.queued_bytes <= cfg.max_connection_queued_bytes
            assert stats.buffered_bytes <= HEADER_SIZE + cfg.max_frame_size

    def teardown(self) -> None:
        """Settle: the server answers every request and nothing more is produced; once the
        bytes stop, every request has its answer and every sender has written everything."""
        self.settle()
        if not self.alive:
            return
        for ssub in self.ssubs.values():
            assert ssub.done or ssub.next > ssub.stream.last, f"{ssub.handle} stalled"
            # A subscription the server finished is finished for the client, and one the
            # client left is gone from the server.
            assert (self.csubs[ssub.handle].state == "closed") is ssub.done, ssub.handle
        for up in self.cups.values():
            assert up.state == "closed" or up.waiting is None, f"upload {up.handle} stalled"


StatefulConnections.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestStatefulConnections = StatefulConnections.TestCase
