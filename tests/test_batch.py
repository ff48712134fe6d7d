"""The batch paths are the one-at-a-time paths, only cheaper.

``Connection.send_data_many``, ``Producer.write_many`` and ``MemoryStore.extend`` promise the
same seqs, bytes on the wire and events as a loop of ``send_data`` / ``write`` / ``append``
that stops at the first answer that is not ACCEPTED. Each property here runs two identical
worlds side by side, one driven chunk by chunk and one in batches, and compares everything
each side emits after every step: under every overflow policy, with small queue bounds, a
shared connection-wide cap, fragmented chunks, late subscribers catching up and BLOCKED
producers retrying.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from streamproto import (
    AbortRule,
    ChannelOptions,
    Config,
    Connection,
    DataReceived,
    ErrorCode,
    GapReason,
    GapReceived,
    HState,
    Hub,
    LocalProtocolError,
    MemoryStore,
    OverflowPolicy,
    Replay,
    Role,
    StreamFailed,
    Window,
    WriteResult,
)
from streamproto._frames import U64

POLICIES = (OverflowPolicy.DROP_OLDEST, OverflowPolicy.BLOCK, OverflowPolicy.ERROR)
BIG = 17_000  # above the 16,376-byte fragment size of the default frame size

sizes = st.one_of(st.integers(0, 90), st.integers(0, 90), st.integers(0, 90), st.just(BIG))
batches = st.lists(sizes, min_size=0, max_size=12)


class Payloads:
    """Distinct, deterministic chunk contents (both worlds draw the same sequence)."""

    def __init__(self) -> None:
        self.counter = itertools.count()

    def make(self, size: int) -> bytes:
        n = next(self.counter)
        return (n.to_bytes(4, "big") * (size // 4 + 1))[:size]


# -- one connection -----------------------------------------------------------------------------


def _connected(
    server_config: Config, client_config: Config, policies: list[OverflowPolicy]
) -> tuple[Connection, Connection, list[int]]:
    client = Connection(Role.CLIENT, client_config)
    server = Connection(Role.SERVER, server_config)
    server.receive_data(client.data_to_send())
    server.accept_handshake(session_id="s", resume_token="t")
    client.receive_data(server.data_to_send())
    handles = []
    for i, policy in enumerate(policies):
        handle = client.subscribe("bench:batch", f"s{i}", policy=policy)
        server.receive_data(client.data_to_send())
        server.accept(handle, stream_id=f"s{i}")
        handles.append(handle)
        client.receive_data(server.data_to_send())
    return client, server, handles


class ConnWorld:
    def __init__(self, batch: bool, params: dict[str, Any]) -> None:
        self.batch = batch
        self.payloads = Payloads()
        self.client, self.server, self.handles = _connected(
            Config(
                max_queued_chunks=params["max_chunks"],
                max_queued_bytes=params["max_bytes"],
                max_connection_queued_bytes=params["conn_bytes"],
            ),
            Config(
                window_chunks=params["window_chunks"],
                window_bytes=params["window_bytes"],
                max_frame_size=16_384,  # BIG chunks travel in fragments
            ),
            params["policies"],
        )
        self.log: list[object] = []

    def write(self, index: int, sizes: list[int]) -> None:
        if not sizes:  # send_data_many checks the handle even then: test_send_data_many_answers
            return
        handle = self.handles[index]
        chunks = [self.payloads.make(size) for size in sizes]
        if self.batch:
            self.log.append(("many", self.server.send_data_many(handle, chunks)))
        else:
            count = 0
            result = WriteResult.ACCEPTED
            for chunk in chunks:
                result = self.server.send_data(handle, chunk)
                if result is not WriteResult.ACCEPTED:
                    break
                count += 1
            self.log.append(("many", (count, result)))
        self.log.append(("server events", self.server.take_events()))

    def flush(self, max_bytes: int | None) -> None:
        out = self.server.data_to_send(max_bytes)
        self.log.append(("out", out))
        self.log.append(("server events", self.server.take_events()))
        if out:  # b"" would say the transport closed
            self.log.append(("client events", self.client.receive_data(out)))
        back = self.client.data_to_send()
        self.log.append(("back", back))
        if back:
            self.log.append(("server events", self.server.receive_data(back)))
        self.log.append(("stats", self.server.statistics()))


conn_params = st.fixed_dictionaries(
    {
        "max_chunks": st.integers(1, 6),
        "max_bytes": st.sampled_from([1, 40, 150, 400, 40_000]),
        "conn_bytes": st.sampled_from([1, 100, 300, 60_000, 1 << 20]),
        "window_chunks": st.integers(0, 5),
        "window_bytes": st.sampled_from([0, 50, 200, 1 << 20]),
        "policies": st.lists(st.sampled_from(POLICIES), min_size=1, max_size=3),
    }
)
conn_steps = st.lists(
    st.one_of(
        st.tuples(st.just("write"), st.integers(0, 2), batches),
        st.tuples(st.just("flush"), st.sampled_from([None, 1, 100, 20_000])),
    ),
    max_size=14,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(params=conn_params, steps=conn_steps)
def test_send_data_many_is_a_loop_of_send_data(params: dict[str, Any], steps: list[Any]) -> None:
    single = ConnWorld(False, params)
    many = ConnWorld(True, params)
    for step in steps:
        for world in (single, many):
            if step[0] == "write":
                index = step[1] % len(world.handles)
                try:
                    world.write(index, step[2])
                except LocalProtocolError as exc:  # the subscription failed (ERROR) earlier
                    world.log.append(("raised", exc.code))
            else:
                world.flush(step[1])
        assert many.log == single.log
    for world in (single, many):
        world.flush(None)
    assert many.log == single.log


def test_send_data_many_answers() -> None:
    params = Config(max_queued_chunks=2, max_queued_bytes=1000)
    client, server, (handle,) = _connected(
        params, Config(window_chunks=1, window_bytes=100), [OverflowPolicy.BLOCK]
    )
    assert server.send_data_many(handle, []) == (0, WriteResult.ACCEPTED)
    # 1 chunk of credit + 2 queued beyond it: the fourth is refused.
    assert server.send_data_many(handle, [b"a", b"b", b"c", b"d"]) == (3, WriteResult.BLOCKED)
    assert server.send_data_many(handle, [b"d"], seq=4) == (0, WriteResult.BLOCKED)
    with pytest.raises(LocalProtocolError) as info:
        server.send_data_many(handle, [b"d"], seq=9)
    assert info.value.code is ErrorCode.INVALID_ARGUMENT
    # Misuse rejects the whole batch before anything is queued.
    with pytest.raises(LocalProtocolError) as info:
        server.send_data_many(handle, [b"", b"x" * ((1 << 20) + 1)])
    assert info.value.code is ErrorCode.CHUNK_TOO_LARGE
    server._handles[handle].next_seq = U64  # type: ignore[union-attr]
    with pytest.raises(LocalProtocolError) as info:
        server.send_data_many(handle, [b"", b""])
    assert info.value.code is ErrorCode.INVALID_ARGUMENT
    client.cancel(handle)
    server.receive_data(client.data_to_send())
    assert server.send_data_many(handle, [b"x"]) == (0, WriteResult.CLOSED)
    with pytest.raises(LocalProtocolError) as info:
        server.send_data_many(99, [b"x"])
    assert info.value.code is ErrorCode.UNKNOWN_HANDLE


def test_send_data_many_on_an_upload_before_accept() -> None:
    client, _, _ = _connected(Config(), Config(), [])
    handle = client.upload("bench:batch", "u")
    # No credit before ACCEPT: chunks queue up to the bounds, as send_data's would.
    assert client.send_data_many(handle, [b"a", b"b"]) == (2, WriteResult.ACCEPTED)
    assert client.statistics().queued_bytes == 2


# -- the store ----------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    window=st.builds(Window, chunks=st.integers(0, 8), nbytes=st.integers(0, 300)),
    steps=st.lists(st.lists(st.integers(0, 120), max_size=150), max_size=8),
)
def test_extend_is_a_loop_of_append(window: Window, steps: list[list[int]]) -> None:
    key = ("a:b", "s")
    single, many = MemoryStore(), MemoryStore()
    gens = single.acquire(key, window), many.acquire(key, window)
    payloads = Payloads()
    for sizes in steps:
        chunks = [payloads.make(size) for size in sizes]
        if not chunks:
            continue
        for chunk in chunks:
            last = single.append(key, gens[0], chunk)
        assert many.extend(key, gens[1], chunks) == last
        info_a, info_b = single.status(key), many.status(key)
        assert info_a is not None
        assert info_b is not None
        assert (info_a.first_seq, info_a.last_seq) == (info_b.first_seq, info_b.last_seq)
        for after in (0, info_a.first_seq, info_a.last_seq - 1):
            assert single.read(key, after, 1000) == many.read(key, after, 1000)


def test_extend_checks_the_generation_first() -> None:
    store = MemoryStore()
    key = ("a:b", "s")
    generation = store.acquire(key, Window())
    with pytest.raises(LocalProtocolError) as info:
        store.extend(key, generation + 1, [b"x"])
    assert info.value.code is ErrorCode.STALE_GENERATION
    store.finish(key, generation, store_outcome())
    with pytest.raises(LocalProtocolError) as info:
        store.extend(key, generation, [b"x"])
    assert info.value.code is ErrorCode.STREAM_CLOSED


def store_outcome() -> Any:
    from streamproto import Outcome, StreamStatus

    return Outcome(StreamStatus.ENDED)


# -- the hub ------------------------------------------------------------------------------------


class AppendOnlyStore(MemoryStore):
    """A store without ``extend`` (written before it existed): the hub appends one by one."""

    def __getattribute__(self, name: str) -> Any:
        if name == "extend":
            raise AttributeError(name)
        return super().__getattribute__(name)


class HubWorld:
    """A hub, one stream, clients on a few connections. Everything observable goes to ``log``."""

    def __init__(self, batch: bool, params: dict[str, Any]) -> None:
        self.batch = batch
        self.payloads = Payloads()
        ids = itertools.count()
        store = AppendOnlyStore() if params["append_only"] else MemoryStore()
        self.hub = Hub(clock=lambda: 0.0, ids=lambda: f"id{next(ids)}", store=store)
        self.channel = self.hub.register(
            "bench:batch",
            ChannelOptions(
                replay=Window(chunks=params["replay"], nbytes=params["replay"] * 60),
                # A cancel here is a way to leave: an abort would finish the stream, and the
                # writes compared here would stop there.
                on_last_cancel=AbortRule.CONTINUE,
            ),
        )
        self.producer = self.channel.start("s")
        self.log: list[object] = []
        self.producer.on_writable = lambda: self.log.append("writable")
        server_config = Config(
            max_queued_chunks=params["max_chunks"],
            max_queued_bytes=params["max_bytes"],
            max_connection_queued_bytes=params["conn_bytes"],
            max_chunk_size=1 << 20,
        )
        self.links = []
        for limit in params["client_max_chunk"]:
            client = Connection(
                Role.CLIENT,
                Config(
                    keepalive=0,
                    window_chunks=params["window_chunks"],
                    window_bytes=params["window_bytes"],
                    max_chunk_size=limit,
                    max_frame_size=16_384,  # BIG chunks travel in fragments
                ),
            )
            server = Connection(Role.SERVER, server_config)
            peer = self.hub.attach(server)
            self.links.append((client, server, peer))
            self.pump(len(self.links) - 1)
            self.pump(len(self.links) - 1)
        self.handles: list[tuple[int, int]] = []
        self.payloads_seen: list[bytes] = []

    def subscribe(self, link: int, policy: OverflowPolicy, after: int | None) -> None:
        client = self.links[link][0]
        if after is None:
            handle = client.subscribe("bench:batch", "s", tail=True, policy=policy)
        else:
            handle = client.subscribe("bench:batch", "s", after_seq=after, policy=policy)
        self.handles.append((link, handle))
        self.pump(link)
        self.pump(link)

    def write(self, sizes: list[int]) -> None:
        chunks = [self.payloads.make(size) for size in sizes]
        self.payloads_seen += chunks
        if self.batch:
            self.log.append(("write", self.producer.write_many(chunks)))
        else:
            count = 0
            result = WriteResult.ACCEPTED
            for chunk in chunks:
                result = self.producer.write(chunk)
                if result is not WriteResult.ACCEPTED:
                    break
                count += 1
            self.log.append(("write", (count, result)))
        self.log.append(("last seq", self.producer.last_seq))

    def pump(self, link: int, max_bytes: int | None = None) -> None:
        client, server, peer = self.links[link]
        out = server.data_to_send(max_bytes)
        events = server.take_events()
        self.log.append((link, "out", out, events))
        peer.handle_events(events)
        if out:  # b"" would say the transport closed
            self.log.append((link, "client", client.receive_data(out)))
        back = client.data_to_send()
        if back:
            events = server.receive_data(back)
            self.log.append((link, "back", back, events))
            peer.handle_events(events)

    def leave(self, index: int) -> None:
        if not self.handles:
            return
        link, handle = self.handles[index % len(self.handles)]
        client = self.links[link][0]
        if client.handle_state(handle) is not HState.CLOSED:
            client.cancel(handle)


hub_params = st.fixed_dictionaries(
    {
        "append_only": st.booleans(),
        "replay": st.integers(0, 40),
        "max_chunks": st.integers(1, 6),
        "max_bytes": st.sampled_from([1, 60, 250, 40_000]),
        "conn_bytes": st.sampled_from([1, 200, 500, 80_000, 1 << 20]),
        "window_chunks": st.integers(0, 5),
        "window_bytes": st.sampled_from([0, 100, 1 << 20]),
        "client_max_chunk": st.lists(st.sampled_from([1 << 20, 60]), min_size=1, max_size=3),
    }
)
hub_steps = st.lists(
    st.one_of(
        st.tuples(st.just("write"), batches),
        st.tuples(st.just("pump"), st.integers(0, 2), st.sampled_from([None, 1, 200])),
        st.tuples(
            st.just("subscribe"),
            st.integers(0, 2),
            st.sampled_from(POLICIES),
            st.one_of(st.none(), st.integers(0, 30)),
        ),
        st.tuples(st.just("leave"), st.integers(0, 5)),
    ),
    max_size=16,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(params=hub_params, steps=hub_steps)
@example(  # a subscriber whose after_seq skips part of a batch joins the ready list later
    params={
        "append_only": False,
        "replay": 0,
        "max_chunks": 1,
        "max_bytes": 1,
        "conn_bytes": 1,
        "window_chunks": 1,
        "window_bytes": 100,
        "client_max_chunk": [1 << 20],
    },
    steps=[
        ("write", [BIG, 0, BIG, BIG, BIG, 0]),
        ("subscribe", 0, OverflowPolicy.DROP_OLDEST, 9),
        ("write", [0, 0]),
        ("subscribe", 0, OverflowPolicy.DROP_OLDEST, None),
        ("write", [0, 0]),
        ("pump", 0, None),
    ],
)
@example(  # the connection cap shared unevenly: two subscribers on one link, one on another
    params={
        "append_only": False,
        "replay": 40,
        "max_chunks": 6,
        "max_bytes": 40_000,
        "conn_bytes": 500,
        "window_chunks": 0,
        "window_bytes": 0,
        "client_max_chunk": [1 << 20, 1 << 20],
    },
    steps=[
        ("subscribe", 0, OverflowPolicy.DROP_OLDEST, None),
        ("subscribe", 1, OverflowPolicy.DROP_OLDEST, None),
        ("subscribe", 1, OverflowPolicy.DROP_OLDEST, None),
        ("write", [50] * 8),
        ("pump", 1, None),
    ],
)
def test_write_many_is_a_loop_of_write(params: dict[str, Any], steps: list[Any]) -> None:
    single = HubWorld(False, params)
    many = HubWorld(True, params)
    for step in steps:
        for world in (single, many):
            apply_hub_step(world, step)
        assert many.log == single.log
    close_and_compare(single, many)


def apply_hub_step(world: HubWorld, step: Any) -> None:
    """One step of the ``hub_steps`` strategy."""
    match step:
        case ("write", sizes):
            world.write(sizes)
        case ("pump", link, max_bytes):
            world.pump(link % len(world.links), max_bytes)
        case ("subscribe", link, policy, after):
            world.subscribe(link % len(world.links), policy, after)
        case ("leave", index):
            world.leave(index)


def close_and_compare(single: HubWorld, other: HubWorld) -> None:
    """End the stream in both worlds, drain every link, and compare all they emitted."""
    for world in (single, other):
        world.producer.close()
        for link in range(len(world.links)):
            for _ in range(3):
                world.pump(link)
    assert other.log == single.log
    assert other.hub.statistics() == single.hub.statistics()


def test_write_many_answers() -> None:
    world = HubWorld(
        True,
        {
            "append_only": False,
            "replay": 8,
            "max_chunks": 1,
            "max_bytes": 1000,
            "conn_bytes": 1 << 20,
            "window_chunks": 1,
            "window_bytes": 1000,
            "client_max_chunk": [1 << 20],
        },
    )
    world.subscribe(0, OverflowPolicy.BLOCK, None)
    assert world.producer.write_many([]) == (0, WriteResult.ACCEPTED)
    # One chunk of credit and one queued beyond it: the third blocks.
    assert world.producer.write_many([b"a", bytearray(b"b"), b"c"]) == (2, WriteResult.BLOCKED)
    assert world.producer.last_seq == 2
    world.pump(0)
    assert "writable" in world.log
    assert world.producer.write_many([b"c"]) == (1, WriteResult.ACCEPTED)
    world.producer.close()
    with pytest.raises(LocalProtocolError) as info:
        world.producer.write_many([b"d"])
    assert info.value.code is ErrorCode.STREAM_CLOSED


def _one_subscriber(policy: OverflowPolicy) -> tuple[HubWorld, Connection, Connection, int]:
    world = HubWorld(
        True,
        {
            "append_only": False,
            "replay": 8,
            "max_chunks": 4,
            "max_bytes": 1000,
            "conn_bytes": 1 << 20,
            "window_chunks": 4,
            "window_bytes": 1000,
            "client_max_chunk": [1 << 20],
        },
    )
    world.subscribe(0, policy, None)
    client, server, _ = world.links[0]
    return world, client, server, world.handles[0][1]


@pytest.mark.parametrize(
    ("policy", "answer"),
    [(OverflowPolicy.DROP_OLDEST, (2, WriteResult.ACCEPTED)), (OverflowPolicy.BLOCK, (0, None))],
)
def test_write_many_to_a_handle_closed_before_the_hub_heard(
    policy: OverflowPolicy, answer: tuple[int, WriteResult | None]
) -> None:
    # The client's CANCEL reached the server connection; its event has not reached the hub.
    world, client, server, handle = _one_subscriber(policy)
    client.cancel(handle)
    server.receive_data(client.data_to_send())
    written, result = world.producer.write_many([b"a", b"b"])
    # write says the same: has_room is False on a closed handle, so BLOCK blocks.
    assert (written, result) == (answer[0], answer[1] or WriteResult.BLOCKED)
    assert world.producer.write(b"c") is (answer[1] or WriteResult.BLOCKED)


def test_write_many_on_a_handle_the_application_ended_raises_like_write() -> None:
    world, _, server, handle = _one_subscriber(OverflowPolicy.DROP_OLDEST)
    world.producer.write(b"queued")  # not flushed: the handle drains, it does not close
    server.send_end(handle)  # behind the hub's back: the subscription is still live there
    for write in (world.producer.write, world.producer.write_many):
        with pytest.raises(LocalProtocolError) as info:
            write([b"a"] if write is world.producer.write_many else b"a")  # type: ignore[operator]
        assert info.value.code is ErrorCode.STREAM_CLOSED


def test_catch_up_when_the_store_no_longer_holds_anything() -> None:
    # A store may drop a stream's whole history while a subscriber catches up (MemoryStore
    # keeps the newest chunk, others need not): the subscriber gets one gap to the end.
    world = HubWorld(
        True,
        {
            "append_only": False,
            "replay": 8,
            "max_chunks": 1,
            "max_bytes": 1000,
            "conn_bytes": 1 << 20,
            "window_chunks": 1,
            "window_bytes": 1000,
            "client_max_chunk": [1 << 20],
        },
    )
    assert world.links[0][1].peer_max_chunk_size == 1 << 20
    world.write([10] * 5)
    world.subscribe(0, OverflowPolicy.DROP_OLDEST, 0)  # catches up, blocked after 2
    store = world.hub._store

    def forgotten(key: tuple[str, str], after_seq: int, limit: int) -> Replay:
        return Replay(6, ())

    store.read = forgotten  # type: ignore[method-assign]
    for _ in range(3):
        world.pump(0)
    client_events = [e for entry in world.log if entry[1] == "client" for e in entry[2]]
    gaps = [e for e in client_events if isinstance(e, GapReceived)]
    assert [(g.to_seq, g.reason) for g in gaps] == [(5, GapReason.EVICTED)]
    world.write([10])
    world.pump(0)
    assert world.links[0][0].handle_state(world.handles[0][1]) is HState.ACTIVE


def _small_world(client_max_chunk: int = 1 << 20) -> HubWorld:
    return HubWorld(
        True,
        {
            "append_only": False,
            "replay": 8,
            "max_chunks": 1,
            "max_bytes": 1000,
            "conn_bytes": 1 << 20,
            "window_chunks": 1,
            "window_bytes": 1000,
            "client_max_chunk": [client_max_chunk],
        },
    )


def test_write_many_to_a_closed_handle_that_skips_chunks() -> None:
    # after_seq ahead of the stream, and closed before the hub heard: nothing is queued.
    world = _small_world()
    world.subscribe(0, OverflowPolicy.DROP_OLDEST, 1)
    client, server, _ = world.links[0]
    client.cancel(world.handles[0][1])
    server.receive_data(client.data_to_send())
    assert world.producer.write_many([b"a", b"b"]) == (2, WriteResult.ACCEPTED)
    assert server.statistics().queued_bytes == 0


def test_catch_up_waits_for_room_before_failing_a_too_large_chunk() -> None:
    # As one at a time: the chunk too large for this subscriber waits for room like any other,
    # then fails the subscription with CHUNK_TOO_LARGE; the chunks before it are delivered.
    world = _small_world(client_max_chunk=60)
    world.write([10, 10, 100])
    world.subscribe(0, OverflowPolicy.DROP_OLDEST, 0)  # 2 fit (credit 1, queue 1), then full
    for _ in range(3):
        world.pump(0)
    client = world.links[0][0]
    events = [e for entry in world.log if entry[1] == "client" for e in entry[2]]
    handle = world.handles[0][1]
    assert [c for e in events if isinstance(e, DataReceived) for c in e.chunks] == [
        world.payloads_seen[0],
        world.payloads_seen[1],
    ]
    failed = [e for e in events if isinstance(e, StreamFailed)]
    assert [(e.handle, e.code) for e in failed] == [(handle, ErrorCode.CHUNK_TOO_LARGE)]
    assert client.handle_state(handle) is HState.CLOSED
