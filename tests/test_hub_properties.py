"""Properties of the hub under random traffic (hypothesis), and its memory under a stalled
subscriber (tracemalloc).

The state machine drives several clients against one hub: subscribe (from the start, from a
seq, tail; every overflow policy), open (with handlers that write, close or raise), cancel,
unsubscribe, disconnect, resume (reconnect with the token and re-subscribe from the last seq the
client delivered), takeover, write, close, fail and clock advances, with every transfer cut at
random points. A model predicts every answer and every abort signal; after every step:

* each subscription's seqs are in order and contiguous: every seq not delivered is covered by a
  reported gap, OVERFLOW gaps only under drop_oldest, EVICTED gaps only for evicted history;
* every chunk delivered is the one written at that seq of that stream's generation;
* every request is answered exactly once, as the model says;
* a subscription of a finished stream got exactly one terminal event, matching the stream's
  outcome (or RESOURCE_EXHAUSTED under the error policy);
* each producer's abort signal fired iff the rules say (cancels and expiries under CANCEL,
  never leaves), and an aborted stream's subscribers get ERROR CANCELLED, never END;
* server connections queue at most the credit window plus the queue bound per subscription,
  and nothing once quiet; the hub's counters match the model.
"""

from __future__ import annotations

import tracemalloc
from typing import Any

from hub_helpers import Client, HubHarness
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
    AbortRule,
    ChannelOptions,
    Config,
    DataReceived,
    DisconnectRule,
    ErrorCode,
    GapReason,
    GapReceived,
    HState,
    MemoryStore,
    OverflowPolicy,
    Producer,
    RequestAccepted,
    RequestRejected,
    StreamEnded,
    StreamFailed,
    Window,
    WriteResult,
)

WINDOW = Window(chunks=8, nbytes=150)
RETENTION = 5.0
GRACE = 4.0
CHANNELS = {
    "p:cancel": ChannelOptions(
        replay=WINDOW, retention=RETENTION, on_disconnect=DisconnectRule.CANCEL
    ),
    "p:leave": ChannelOptions(replay=WINDOW, retention=RETENTION),
    "p:continue": ChannelOptions(
        replay=WINDOW,
        retention=RETENTION,
        on_last_cancel=AbortRule.CONTINUE,
        on_disconnect=DisconnectRule.CANCEL,
    ),
}
POOL = ["s0"]
SLOTS = 3
CLIENT = Config(window_chunks=3, window_bytes=60)
#: The last slot's client returns credit only when the machine says so (``consume``).
MANUAL = Config(window_chunks=3, window_bytes=60, auto_credit=False)
SERVER = Config(max_queued_chunks=2, max_queued_bytes=50, session_grace=GRACE)
#: A server subscription holds at most the client's credit plus the queue bound.
PER_SUBSCRIPTION = CLIENT.window_bytes + SERVER.max_queued_bytes
POLICIES = [
    OverflowPolicy.DEFAULT,
    OverflowPolicy.DROP_OLDEST,
    OverflowPolicy.BLOCK,
    OverflowPolicy.ERROR,
]
Key = tuple[str, str]


def content(key: Key, generation: int, seq: int) -> bytes:
    """The chunk written at ``seq``: unique per stream generation, of varying size."""
    return f"{key[0]}/{key[1]}/{generation}/{seq}".encode() + b"." * (seq * 7 % 11)


class MStream:
    """The model of one stream generation."""

    def __init__(self, key: Key, producer: Producer) -> None:
        self.key = key
        self.producer = producer
        self.generation = producer.generation
        self.last_seq = 0
        self.outcome: tuple[Any, ...] | None = None  # ("end",) or ("fail", code, message)
        self.closed_at = 0.0
        self.released = False
        self.aborted = False  # what the model expects of producer.aborted

    @property
    def rules(self) -> ChannelOptions:
        return CHANNELS[self.key[0]]


class MSub:
    """The model of one subscription (a subscribe or an open)."""

    def __init__(self, client: Client, handle: int, stream: MStream | None, policy: Any) -> None:
        self.client = client
        self.manual = not client.conn.config.auto_credit
        self.unconsumed = (0, 0)  # chunks and bytes delivered but not consumed (manual)
        self.handle = handle
        self.stream = stream  # None: to be rejected
        self.policy = policy
        self.state = "pending"  # pending, active, done, left, gone, rejected
        self.start = 1  # the first seq this subscription covers
        self.covered = 0  # the last seq delivered or gapped
        self.terminal: Any = None


class MSession:
    def __init__(self, session_id: str, token: str, client: Client) -> None:
        self.id = session_id
        self.token = token
        self.client: Client | None = client
        self.parked: dict[Key, list[MStream]] = {}
        # The policies of the parked subscriptions, in the same order: a resumed DEFAULT
        # subscription takes over the last one's (R-OVF-6).
        self.parked_policies: dict[Key, list[Any]] = {}
        self.expires_at: float | None = None


class Slot:
    """One client's life across connections."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.client: Client | None = None
        self.session: MSession | None = None
        self.last_seen: dict[Key, int] = {}  # the last seq delivered, per stream


class HubMachine(RuleBasedStateMachine):
    @initialize(rng=st.randoms(use_true_random=False))
    def setup(self, rng: Any) -> None:
        self.store = MemoryStore()
        self.h = HubHarness(store=self.store)
        self.h.rng = rng
        self.opened: list[Producer] = []
        for name, options in CHANNELS.items():
            self.h.hub.register(name, options, on_open=self._on_open)
        self.streams: dict[Key, MStream] = {}  # the current generation per key
        self.all_streams: list[MStream] = []
        self.subs: list[MSub] = []
        self.by_handle: dict[tuple[int, int], MSub] = {}
        self.sessions: dict[str, MSession] = {}  # by id
        self.slots = [Slot(CLIENT) for _ in range(SLOTS - 1)] + [Slot(MANUAL)]
        self.seen_events: dict[int, int] = {}

    # -- helpers --------------------------------------------------------------------------------

    def _on_open(self, producer: Producer, args: bytes) -> None:
        self.opened.append(producer)
        writes, then = int(args[:1]), args[1:]
        for seq in range(1, writes + 1):
            key = (producer.channel, producer.stream_id)
            if producer.write(content(key, producer.generation, seq)) is WriteResult.BLOCKED:
                break
        if then == b"c":
            producer.close()
        elif then == b"r":
            raise RuntimeError("boom")

    def now(self) -> float:
        return self.h.clock.now

    @staticmethod
    def in_hub(sub: MSub) -> bool:
        """Whether the hub still holds the subscription: it forgets it when it sends the
        END or ERROR, which a client that returns no credit may not have delivered yet."""
        return sub.state == "active" and sub.client.conn.handle_state(sub.handle) is HState.ACTIVE

    def listeners(self, stream: MStream) -> int:
        active = sum(1 for s in self.subs if s.stream is stream and self.in_hub(s))
        parked = sum(lst.count(stream) for m in self.sessions.values() for lst in m.parked.values())
        return active + parked

    def live_slots(self) -> list[int]:
        return [i for i, s in enumerate(self.slots) if s.client is not None]

    def keys(self) -> list[Key]:
        return sorted({(c, s) for c in CHANNELS for s in POOL} | set(self.streams))

    def pump(self) -> None:
        self.h.pump()
        self._digest()

    def _digest(self) -> None:
        """Fold the clients' new events into the model's subscriptions."""
        for client in self.h.clients:
            start = self.seen_events.get(id(client), 0)
            for event in client.events[start:]:
                sub = self.by_handle.get((id(client), getattr(event, "handle", -1)))
                if sub is not None:
                    self._apply(sub, event)
            self.seen_events[id(client)] = len(client.events)

    def _apply(self, sub: MSub, event: Any) -> None:
        stream = sub.stream
        match event:
            case RequestAccepted():
                assert sub.state == "pending", f"second answer {event}"
                assert stream is not None, f"expected a rejection, got {event}"
                assert event.stream_id == stream.key[1]
                if sub.start == 0:  # tail
                    sub.start = event.last_seq + 1
                sub.covered = sub.start - 1
                sub.state = "active"
            case RequestRejected():
                assert sub.state == "pending", f"second answer {event}"
                assert stream is None, f"expected an accept, got {event}"
                assert event.code in (ErrorCode.UNKNOWN_STREAM, ErrorCode.STREAM_EXISTS)
                sub.state = "rejected"
            case DataReceived():
                assert stream is not None
                for i, chunk in enumerate(event.chunks):
                    seq = event.seq + i
                    assert chunk == content(stream.key, stream.generation, seq), (
                        f"seq {seq} of {stream.key} gen {stream.generation}: {chunk!r}"
                    )
                if sub.manual:
                    chunks, nbytes = sub.unconsumed
                    sub.unconsumed = (
                        chunks + len(event.chunks),
                        nbytes + sum(map(len, event.chunks)),
                    )
                slot = self._slot_of(sub.client)
                if slot is not None:
                    last = slot.last_seen.get(stream.key, 0)
                    slot.last_seen[stream.key] = max(last, event.last_seq)
                sub.covered = event.last_seq
            case GapReceived():
                assert stream is not None
                if event.reason is GapReason.OVERFLOW:
                    assert sub.policy in (OverflowPolicy.DROP_OLDEST, OverflowPolicy.DEFAULT)
                else:
                    info = self.store.status(stream.key)
                    if info is not None and info.generation == stream.generation:
                        assert event.to_seq < info.first_seq, f"{event}: still retained"
                sub.covered = event.to_seq
            case StreamEnded() | StreamFailed():
                assert sub.state == "active", f"{event} in {sub.state}"
                sub.terminal = event
                sub.state = "done"
                sub.covered = event.last_seq

    def _slot_of(self, client: Client) -> Slot | None:
        for slot in self.slots:
            if slot.client is client:
                return slot
        return None

    def _request(self, slot: Slot, handle: int, stream: MStream | None, policy: Any) -> MSub:
        assert slot.client is not None
        sub = MSub(slot.client, handle, stream, policy)
        self.subs.append(sub)
        self.by_handle[(id(slot.client), handle)] = sub
        return sub

    def _park(self, slot: Slot) -> None:
        """The slot's connection is gone: its subscriptions are parked in its session."""
        client = slot.client
        session = slot.session
        assert client is not None
        assert session is not None
        for sub in sorted(self.subs, key=lambda s: s.handle):
            if sub.client is client and sub.state == "active":
                assert sub.stream is not None
                if self.in_hub(sub):
                    session.parked.setdefault(sub.stream.key, []).append(sub.stream)
                    session.parked_policies.setdefault(sub.stream.key, []).append(sub.policy)
                sub.state = "gone"
        session.client = None
        session.expires_at = self.now() + GRACE
        slot.client = None

    # -- connections ----------------------------------------------------------------------------

    @precondition(lambda self: any(s.client is None for s in self.slots))
    @rule(data=st.data(), subscribe=st.lists(st.booleans(), max_size=3))
    def connect(self, data: st.DataObject, subscribe: list[bool]) -> None:
        """A new client, which subscribes to some streams from the start."""
        free = [i for i, s in enumerate(self.slots) if s.client is None]
        slot = self.slots[data.draw(st.sampled_from(free))]
        client = self.h.connect(slot.config, SERVER, pump=False)
        slot.client = client
        self.pump()
        done = client.handshake
        assert not done.resumed
        slot.session = MSession(done.session_id, done.resume_token, client)
        self.sessions[done.session_id] = slot.session
        slot.last_seen = {}
        known = sorted(k for k, s in self.streams.items() if not s.released)
        for key, wanted in zip(known, subscribe, strict=False):
            if wanted:
                self._subscribe(slot, key, 0, OverflowPolicy.DEFAULT)
        self.pump()

    @precondition(lambda self: any(s.client is not None for s in self.slots))
    @rule(data=st.data())
    def disconnect(self, data: st.DataObject) -> None:
        slot = self.slots[data.draw(st.sampled_from(self.live_slots()))]
        assert slot.client is not None
        client = slot.client
        self._park(slot)
        client.disconnect()
        self.pump()

    @precondition(lambda self: any(s.session is not None for s in self.slots))
    @rule(data=st.data(), resubscribe=st.lists(st.booleans(), min_size=8, max_size=8))
    def resume(self, data: st.DataObject, resubscribe: list[bool]) -> None:
        """Reconnect with the token (taking over when the old connection is still attached)
        and re-subscribe from the last seq delivered."""
        candidates = [i for i, s in enumerate(self.slots) if s.session is not None]
        slot = self.slots[data.draw(st.sampled_from(candidates))]
        session = slot.session
        assert session is not None
        old = slot.client
        if old is not None:  # takeover: the hub parks the old connection's subscriptions
            self._park(slot)
        alive = session.id in self.sessions
        client = self.h.connect(slot.config, SERVER, resume_token=session.token, pump=False)
        slot.client = client
        self.pump()
        done = client.handshake
        assert done.resumed is alive
        if old is not None:
            assert old.conn.closed
            old.disconnect()
        if alive:
            assert done.session_id == session.id
            assert done.resume_token != session.token
            session.token = done.resume_token
            session.client = client
            session.expires_at = self.now() + GRACE if session.parked else None
        else:
            session = MSession(done.session_id, done.resume_token, client)
            self.sessions[session.id] = session
            slot.session = session
        for key, again in zip(sorted(slot.last_seen), resubscribe, strict=False):
            if again:
                self._subscribe(slot, key, slot.last_seen[key], OverflowPolicy.DEFAULT)
        self.pump()

    # -- subscriptions --------------------------------------------------------------------------

    def _subscribe(self, slot: Slot, key: Key, after: int | None, policy: Any) -> None:
        client = slot.client
        assert client is not None
        stream = self.streams.get(key)
        if stream is not None and stream.released:
            stream = None
        if after is None:
            handle = client.conn.subscribe(key[0], key[1], tail=True, policy=policy)
        else:
            handle = client.conn.subscribe(key[0], key[1], after_seq=after, policy=policy)
        sub = self._request(slot, handle, stream, policy)
        sub.start = 0 if after is None else after + 1
        session = slot.session
        if stream is not None and session is not None:
            parked = session.parked.get(key)
            if parked:
                parked.pop()
                taken = session.parked_policies[key].pop()
                if policy is OverflowPolicy.DEFAULT:
                    sub.policy = taken
                if not parked:
                    del session.parked[key]
                    del session.parked_policies[key]

    @precondition(lambda self: any(s.client is not None for s in self.slots))
    @rule(
        data=st.data(),
        start=st.sampled_from(["zero", "tail", "seen", "ahead"]),
        policy=st.sampled_from(POLICIES),
    )
    def subscribe(self, data: st.DataObject, start: str, policy: Any) -> None:
        slot = self.slots[data.draw(st.sampled_from(self.live_slots()))]
        known = sorted(k for k, s in self.streams.items() if not s.released)
        if known and data.draw(st.integers(0, 4)):  # mostly streams that exist
            key = data.draw(st.sampled_from(known))
        else:
            key = data.draw(st.sampled_from(self.keys()))
        after = {"zero": 0, "tail": None, "seen": slot.last_seen.get(key, 0)}.get(start, 2)
        self._subscribe(slot, key, after, policy)
        self.pump()

    @precondition(lambda self: any(s.client is not None for s in self.slots))
    @rule(
        data=st.data(),
        sid=st.sampled_from([None, *POOL]),
        writes=st.integers(0, 4),
        then=st.sampled_from([b"", b"c", b"r"]),
        policy=st.sampled_from(POLICIES),
        join=st.booleans(),
    )
    def open(
        self,
        data: st.DataObject,
        sid: str | None,
        writes: int,
        then: bytes,
        policy: Any,
        join: bool,
    ) -> None:
        slot = self.slots[data.draw(st.sampled_from(self.live_slots()))]
        channel = data.draw(st.sampled_from(sorted(CHANNELS)))
        client = slot.client
        assert client is not None
        current = self.streams.get((channel, sid or ""))
        refused = current is not None and current.outcome is None
        handle = client.conn.open(
            channel, b"%d" % writes + then, stream_id=sid or "", policy=policy, join=join
        )
        before = len(self.opened)
        # An OPEN that asks for DEFAULT gets the channel's open_policy: BLOCK (R-OVF-1).
        sub = self._request(
            slot, handle, None, OverflowPolicy.BLOCK if policy is OverflowPolicy.DEFAULT else policy
        )
        self.h.pump()
        if refused:
            assert len(self.opened) == before  # refused, or joined: the handler runs once
            if join:  # run-or-join: a reader of the running stream from seq 1 (R-JOIN-1)
                sub.stream = current
        else:
            (producer,) = self.opened[before:]
            key = (channel, producer.stream_id)
            old = self.streams.get(key)
            if old is not None:
                old.released = True
            stream = MStream(key, producer)
            stream.last_seq = producer.last_seq
            if then == b"c":
                stream.outcome = ("end",)
            elif then == b"r":
                stream.outcome = ("fail", ErrorCode.HANDLER_FAILED, "RuntimeError: boom")
            if stream.outcome is not None:
                stream.closed_at = self.now()
            self.streams[key] = stream
            self.all_streams.append(stream)
            sub.stream = stream
        self._digest()

    @precondition(lambda self: any(s.state == "active" for s in self.subs))
    @rule(data=st.data(), cancel=st.booleans())
    def leave(self, data: st.DataObject, cancel: bool) -> None:
        active = [s for s in self.subs if s.state == "active"]
        sub = active[data.draw(st.integers(0, len(active) - 1))]
        stream = sub.stream
        assert stream is not None
        if cancel:
            sub.client.conn.cancel(sub.handle)
        else:
            sub.client.conn.unsubscribe(sub.handle)
        sub.state = "left"
        if (
            cancel
            and stream.outcome is None
            and self.listeners(stream) == 0
            and stream.rules.on_last_cancel is AbortRule.ABORT
        ):
            self._aborted(stream, "the last subscriber cancelled")
        self.pump()

    @precondition(lambda self: any(s.unconsumed[0] for s in self.subs))
    @rule(data=st.data())
    def consume(self, data: st.DataObject) -> None:
        """The manual-credit client consumes what one subscription delivered."""
        waiting = [s for s in self.subs if s.unconsumed[0]]
        sub = waiting[data.draw(st.integers(0, len(waiting) - 1))]
        if not sub.client.gone:
            sub.client.conn.consume(sub.handle, *sub.unconsumed)
        sub.unconsumed = (0, 0)
        self.pump()

    # -- producers ------------------------------------------------------------------------------

    @rule(data=st.data(), n=st.integers(0, 12), then=st.sampled_from(["", "close", "fail"]))
    def start(self, data: st.DataObject, n: int, then: str) -> None:
        """Start a stream (reusing the id of a finished one, maybe), write ``n`` chunks, and
        maybe finish it."""
        key = data.draw(st.sampled_from(self.keys()))
        current = self.streams.get(key)
        if current is not None and current.outcome is None:
            return
        self._start(key)
        if n:
            self.write(data, n, self.streams[key])
        if then:
            self.finish(data, then == "fail", self.streams[key])

    def _start(self, key: Key) -> None:
        current = self.streams.get(key)
        channel = self.h.hub.channel(key[0])
        assert channel is not None
        producer = channel.start(key[1])
        if current is not None:
            current.released = True
        stream = MStream(key, producer)
        self.streams[key] = stream
        self.all_streams.append(stream)
        self.pump()

    def _open_streams(self) -> list[MStream]:
        return [s for s in self.streams.values() if s.outcome is None]

    @precondition(lambda self: any(s.outcome is None for s in self.streams.values()))
    @rule(data=st.data(), n=st.integers(1, 12))
    def write(self, data: st.DataObject, n: int, stream: MStream | None = None) -> None:
        if stream is None:
            stream = data.draw(st.sampled_from(self._open_streams()))
        producer = stream.producer
        for _ in range(n):
            seq = stream.last_seq + 1
            result = producer.write(content(stream.key, stream.generation, seq))
            if result is WriteResult.BLOCKED:
                assert producer.last_seq == stream.last_seq
                break
            assert result is WriteResult.ACCEPTED
            assert producer.last_seq == seq
            stream.last_seq = seq
        self._check_queues(quiet=False)
        self.pump()

    @precondition(lambda self: any(s.outcome is None for s in self.streams.values()))
    @rule(data=st.data(), fail=st.booleans())
    def finish(self, data: st.DataObject, fail: bool, stream: MStream | None = None) -> None:
        if stream is None:
            stream = data.draw(st.sampled_from(self._open_streams()))
        if fail:
            code = data.draw(st.integers(1000, 1003))
            stream.producer.fail(code, f"failed {code}")
            stream.outcome = ("fail", code, f"failed {code}")
        else:
            stream.producer.close()
            stream.outcome = ("end",)
        stream.closed_at = self.now()
        self.pump()

    def _aborted(self, stream: MStream, why: str) -> None:
        """The abort finishes the stream with its own outcome (R-SUB-50)."""
        stream.aborted = True
        message = f"aborted at seq {stream.last_seq}: {why}"
        stream.outcome = ("fail", ErrorCode.CANCELLED, message)
        stream.closed_at = self.now()

    # -- time -----------------------------------------------------------------------------------

    @rule(dt=st.sampled_from([0.5, 1.0, 2.0, 4.0, 5.0]))
    def advance(self, dt: float) -> None:
        self.h.clock.advance(dt)
        now = self.now()
        self.h.hub.handle_timer()
        for stream in self.streams.values():
            if stream.outcome is not None and stream.closed_at + RETENTION <= now:
                stream.released = True
        touched: set[int] = set()
        for session in list(self.sessions.values()):
            if session.expires_at is not None and session.expires_at <= now:
                for streams in session.parked.values():
                    for stream in streams:
                        if stream.rules.on_disconnect is DisconnectRule.CANCEL:
                            touched.add(id(stream))
                session.parked = {}
                session.parked_policies = {}
                session.expires_at = None
                if session.client is None:
                    del self.sessions[session.id]
        for stream in self.all_streams:
            if (
                id(stream) in touched
                and stream.outcome is None
                and self.listeners(stream) == 0
                and stream.rules.on_last_cancel is AbortRule.ABORT
            ):
                self._aborted(stream, "the last subscriber's session expired")
        self.pump()
        deadline = self.h.hub.next_deadline()
        assert deadline is None or deadline > now

    # -- invariants -----------------------------------------------------------------------------

    def _check_queues(self, *, quiet: bool) -> None:
        for client in self.h.clients:
            if client.gone:
                continue
            stats = client.server.statistics()
            handles = sum(
                1 for s in self.subs if s.client is client and s.state in ("active", "pending")
            )
            bound = handles * PER_SUBSCRIPTION
            if quiet and client.conn.config.auto_credit:
                bound = 0  # everything was delivered
            assert stats.queued_bytes <= bound, f"{stats.queued_bytes} queued, bound {bound}"
            assert stats.queued_bytes <= SERVER.max_connection_queued_bytes

    @invariant()
    def subscriptions_are_answered_complete_and_finished_once(self) -> None:
        for sub in self.subs:
            assert sub.state != "pending", f"handle {sub.handle} was not answered"
            stream = sub.stream
            if sub.state != "active" and sub.state != "done":
                continue
            assert stream is not None
            if sub.state == "active" and sub.manual:
                assert sub.covered <= max(stream.last_seq, sub.start - 1)
                continue
            if sub.state == "active":
                # Everything written was delivered or reported as a gap.
                assert sub.covered == max(stream.last_seq, sub.start - 1), (
                    f"handle {sub.handle} at {sub.covered}, stream at {stream.last_seq}"
                )
                assert stream.outcome is None or sub.policy is OverflowPolicy.ERROR, (
                    f"handle {sub.handle} of a finished stream has no terminal event"
                )
                continue
            terminal = sub.terminal
            if isinstance(terminal, StreamFailed) and terminal.code == ErrorCode.RESOURCE_EXHAUSTED:
                assert sub.policy is OverflowPolicy.ERROR
                continue
            assert stream.outcome is not None, f"{terminal} for an open stream"
            want_last = max(stream.last_seq, sub.start - 1)
            if stream.outcome[0] == "end":
                assert terminal == StreamEnded(sub.handle, want_last)
            else:
                _, code, message = stream.outcome
                assert terminal == StreamFailed(sub.handle, code, message, want_last)

    @invariant()
    def abort_signals_follow_the_rules(self) -> None:
        for stream in self.all_streams:
            assert stream.producer.aborted is stream.aborted, (
                f"{stream.key} gen {stream.generation}: aborted={stream.producer.aborted}"
            )

    @invariant()
    def memory_and_counters(self) -> None:
        self._check_queues(quiet=True)
        stats = self.h.hub.statistics()
        assert stats.subscriptions == sum(1 for s in self.subs if self.in_hub(s))
        assert stats.sessions == len(self.sessions)
        parked = sum(
            1
            for m in self.sessions.values()
            for lst in m.parked.values()
            for s in lst
            if not s.released
        )
        assert stats.parked_subscriptions == parked
        for stream in self.streams.values():
            info = self.store.status(stream.key)
            if stream.released:
                assert info is None or info.generation != stream.generation
                continue
            assert info is not None
            assert info.last_seq == stream.last_seq
            held = info.last_seq - info.first_seq + 1
            assert held <= WINDOW.chunks
            chunks = self.store.read(stream.key, 0, held).chunks
            assert len(chunks) <= 1 or sum(map(len, chunks)) <= WINDOW.nbytes


HubMachine.TestCase.settings = settings(
    max_examples=250,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestHubMachine = HubMachine.TestCase


# -- memory under a stalled subscriber ----------------------------------------------------------


def test_memory_stays_bounded_under_a_stalled_subscriber() -> None:
    """5,000 chunks of 1 KiB to a subscriber that never returns credit, drop_oldest, a replay
    window of 64 chunks: the peak of everything allocated while writing (store, hub, both
    connections) stays below window x chunk + queue bounds + a constant."""
    chunk_size, window, n = 1024, 64, 5000
    credit = 8  # chunks the client granted once and never returns
    server = Config(max_queued_chunks=16, max_queued_bytes=16 * chunk_size)
    h = HubHarness()
    ch = h.hub.register("m:stalled", ChannelOptions(replay=Window(window, 1 << 20)))
    producer = ch.start("s")
    client = h.connect(Config(auto_credit=False), server)
    client.conn.subscribe("m:stalled", "s", credit_chunks=credit)
    h.pump()
    queue_bound = server.max_queued_bytes + credit * chunk_size
    constant = 16 * 1024  # object headers, list and deque slots, gap frames, the output buffer
    bound = window * chunk_size + queue_bound + constant
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        for i in range(n):
            chunk = i.to_bytes(4, "big") * (chunk_size // 4)  # a new object each time
            assert producer.write(chunk) is WriteResult.ACCEPTED
            if i % 100 == 99:  # the transport takes what is sendable; the client reads nothing
                client.server.data_to_send()
                client.peer.handle_events(client.server.take_events())
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert producer.last_seq == n
    assert peak < bound, f"peak {peak} bytes, bound {bound} bytes"
    assert client.server.statistics().chunks_dropped > n - 100
