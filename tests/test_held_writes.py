"""Single writes that batch themselves: with ``Hub.on_writes_held`` set, a run of
``Producer.write`` calls is held and delivered as one ``write_many`` by ``Hub.flush_writes``
(or by any other entry point of the hub). Nothing may tell the difference: the property
below runs a world that writes one chunk at a time against one whose writes are held, and
compares everything each side emits after every step.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_batch import (
    BIG,
    POLICIES,
    HubWorld,
    apply_hub_step,
    batches,
    close_and_compare,
    hub_params,
)

from streamproto import OverflowPolicy, StreamLoaded, WriteResult
from streamproto._hub import HOLD_BYTES, HOLD_CHUNKS

BLOCKED = WriteResult.BLOCKED


class World(HubWorld):
    """A :class:`HubWorld` that can also write without reading ``last_seq`` afterwards (which
    delivers what is held), so a held run can meet the steps that follow it, and has a
    second stream, ``t``, whose subscribers share the connections (and their caps)."""

    def __init__(self, batch: bool, params: dict[str, Any]) -> None:
        super().__init__(batch, params)
        self.other = self.channel.start("t")

    def write_quiet(self, sizes: list[int]) -> None:
        chunks = [self.payloads.make(size) for size in sizes]
        self.payloads_seen += chunks
        self.log.append(("write", [self.producer.write(chunk) for chunk in chunks]))

    def write_other(self, sizes: list[int], many: bool) -> None:
        chunks = [self.payloads.make(size) for size in sizes]
        if many:
            self.log.append(("t many", self.other.write_many(chunks)))
        else:
            self.log.append(("t", [self.other.write(chunk) for chunk in chunks]))

    def subscribe_other(self, link: int, policy: OverflowPolicy) -> None:
        client = self.links[link][0]
        self.handles.append((link, client.subscribe("bench:batch", "t", tail=True, policy=policy)))
        self.pump(link)
        self.pump(link)


class HeldWorld(World):
    """Writes are held; the "adapter" flushes them before its connections flush, as the
    contract of ``Hub.flush_writes`` asks."""

    def __init__(self, params: dict[str, Any]) -> None:
        super().__init__(False, params)
        self.held_calls = 0
        self.hub.on_writes_held = self._held

    def _held(self) -> None:
        self.held_calls += 1

    def pump(self, link: int, max_bytes: int | None = None) -> None:
        self.hub.flush_writes()
        super().pump(link, max_bytes)


held_steps = st.lists(
    st.one_of(
        st.tuples(st.just("write"), batches),
        st.tuples(st.just("write_quiet"), batches),
        st.tuples(st.just("pump"), st.integers(0, 2), st.sampled_from([None, 1, 200])),
        st.tuples(
            st.just("subscribe"),
            st.integers(0, 2),
            st.sampled_from(POLICIES),
            st.one_of(st.none(), st.integers(0, 30)),
        ),
        st.tuples(st.just("leave"), st.integers(0, 5)),
        st.tuples(st.just("timer")),
        st.tuples(st.just("write_other"), batches, st.booleans()),
        st.tuples(st.just("subscribe_other"), st.integers(0, 2), st.sampled_from(POLICIES)),
    ),
    max_size=16,
)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(params=hub_params, steps=held_steps)
def test_held_writes_are_a_loop_of_write(params: dict[str, Any], steps: list[Any]) -> None:
    single = World(False, params)
    held = HeldWorld(params)
    writes = 0
    for step in steps:
        for world in (single, held):
            match step:
                case ("write_quiet", sizes):
                    world.write_quiet(sizes)
                case ("timer",):
                    world.hub.handle_timer()
                case ("write_other", sizes, many):
                    world.write_other(sizes, many)
                case ("subscribe_other", link, policy):
                    world.subscribe_other(link % len(world.links), policy)
                case _:
                    apply_hub_step(world, step)
        if step[0].startswith("write"):
            writes += len(step[1])
        assert held.log == single.log
    assert held.held_calls <= writes
    for world in (single, held):
        world.other.close()
    close_and_compare(single, held)


PARAMS = {
    "append_only": False,
    "replay": 40,
    "max_chunks": 1000,
    "max_bytes": 1 << 20,
    "conn_bytes": 1 << 22,
    "window_chunks": 1000,
    "window_bytes": 1 << 20,
    "client_max_chunk": [1 << 20],
}


def _held_world() -> HeldWorld:
    world = HeldWorld(PARAMS)
    world.subscribe(0, OverflowPolicy.DROP_OLDEST, None)
    return world


def _queued(world: HeldWorld) -> int:
    conn = world.links[0][1]
    return sum(h.q_chunks for h in conn._handles.values() if hasattr(h, "q_chunks"))


def test_a_run_is_held_until_flushed_and_the_callback_comes_once() -> None:
    world = _held_world()
    world.write_quiet([10, 10, 10])
    assert world.held_calls == 1
    assert _queued(world) == 0  # held: not on the connection yet
    world.hub.flush_writes()
    assert _queued(world) == 3
    world.hub.flush_writes()  # nothing held: nothing happens
    world.write_quiet([10])
    assert world.held_calls == 2  # a new run, a new call


def test_without_the_callback_writes_go_out_at_once() -> None:
    world = World(False, PARAMS)
    world.subscribe(0, OverflowPolicy.DROP_OLDEST, None)
    world.write_quiet([10])
    assert _queued(world) == 1


def test_a_stream_nobody_listens_to_is_written_at_once() -> None:
    world = HeldWorld(PARAMS)
    world.write_quiet([10, 10])
    assert world.held_calls == 0
    assert world.producer.last_seq == 2


def _block_world(max_chunks: int) -> HeldWorld:
    world = HeldWorld({**PARAMS, "max_chunks": max_chunks, "window_chunks": 1})
    world.subscribe(0, OverflowPolicy.BLOCK, None)
    return world


def test_a_block_subscriber_lets_a_run_be_held_while_its_room_lasts() -> None:
    world = _block_world(2)  # room for 3 chunks: one of credit, two queued beyond it
    world.write_quiet([10, 10, 10])
    assert world.held_calls == 1
    assert _queued(world) == 0  # held, and answered ACCEPTED
    world.write_quiet([10])  # past the room: the run is delivered, this one blocks at once
    assert world.log[-2:] == [("write", [WriteResult.ACCEPTED] * 3), ("write", [BLOCKED])]
    assert _queued(world) == 3
    world.pump(0)  # the client reads one: room for one more, and writable
    assert "writable" in world.log
    world.write_quiet([10, 10])
    assert world.log[-1] == ("write", [WriteResult.ACCEPTED, BLOCKED])
    assert world.held_calls == 2


def test_a_run_holds_room_for_the_block_subscribers_beside_others() -> None:
    world = _block_world(1)  # room for 2 chunks
    world.subscribe(0, OverflowPolicy.DROP_OLDEST, None)
    world.write_quiet([10, 10, 10])
    assert world.log[-1] == ("write", [WriteResult.ACCEPTED] * 2 + [BLOCKED])
    assert world.held_calls == 1
    assert _queued(world) == 4  # the run, delivered to both when the third came


def _queued_on(world: HeldWorld, link: int) -> int:
    conn = world.links[link][1]
    return sum(h.q_chunks for h in conn._handles.values() if hasattr(h, "q_chunks"))


@pytest.mark.parametrize("policy", [OverflowPolicy.BLOCK, OverflowPolicy.DROP_OLDEST])
@pytest.mark.parametrize("same_link", [False, True])
def test_runs_on_other_connections_stay_held(policy: OverflowPolicy, same_link: bool) -> None:
    # A run that holds room on "s"'s connection, and a run on "t" (holding room too, or not):
    # both stay held while they share no connection; on one, the first goes first.
    world = HeldWorld({**PARAMS, "client_max_chunk": [1 << 20, 1 << 20]})
    world.subscribe(0, OverflowPolicy.BLOCK, None)
    world.subscribe_other(0 if same_link else 1, policy)
    for _ in range(2):
        world.write_quiet([10])
        world.write_other([10], many=False)
    assert _queued_on(world, 0) + _queued_on(world, 1) == (3 if same_link else 0)
    world.hub.flush_writes()
    assert _queued_on(world, 0) + _queued_on(world, 1) == 4


def test_a_run_without_room_on_a_connection_goes_before_a_run_that_counts_it() -> None:
    world = HeldWorld({**PARAMS, "client_max_chunk": [1 << 20, 1 << 20]})
    world.subscribe_other(0, OverflowPolicy.DROP_OLDEST)
    world.subscribe_other(1, OverflowPolicy.DROP_OLDEST)
    world.subscribe(1, OverflowPolicy.BLOCK, None)
    world.write_other([10], many=False)  # held, on both connections
    world.write_quiet([10])  # room counted on connection 1: "t" goes first
    assert (_queued_on(world, 0), _queued_on(world, 1)) == (1, 1)


def test_a_chunk_too_large_for_a_subscriber_is_not_held() -> None:
    # Written now it fails that subscription (CHUNK_TOO_LARGE), which may let a blocked
    # writer go: that happens at once, as it would one write at a time.
    world = HeldWorld({**PARAMS, "client_max_chunk": [60]})
    world.subscribe(0, OverflowPolicy.BLOCK, None)
    world.write_quiet([61])
    assert world.held_calls == 0
    assert world.producer.last_seq == 1
    assert world.hub.statistics().subscriptions == 0


def test_a_block_subscriber_the_client_closed_blocks_without_holding() -> None:
    world = _block_world(2)
    client, server, _ = world.links[0]
    client.cancel(world.handles[0][1])
    server.receive_data(client.data_to_send())  # the hub has not seen the event yet
    world.write_quiet([10])
    assert world.log[-1] == ("write", [BLOCKED])
    assert world.held_calls == 0


@pytest.mark.parametrize("count", [1, 2])
def test_a_run_is_delivered_as_accepted_when_the_client_closed_its_handle_meanwhile(
    count: int,
) -> None:
    # Answered ACCEPTED while the BLOCK subscriber had room; its CANCEL reaches the
    # connection before the hub flushes. The run is stored as written, not blocked.
    world = _block_world(2)
    client, server, peer = world.links[0]
    world.write_quiet([10] * count)
    client.cancel(world.handles[0][1])
    events = server.receive_data(client.data_to_send())  # the hub is told later
    world.hub.flush_writes()
    assert world.log[-1] == ("write", [WriteResult.ACCEPTED] * count)
    assert world.producer.last_seq == count
    peer.handle_events(events)
    assert world.producer.write(b"x") is WriteResult.ACCEPTED  # nobody is left to block it


def test_a_write_after_the_client_closed_its_handle_delivers_the_run_and_blocks() -> None:
    # The room is counted when the second chunk comes; the handle is closed by then (the
    # hub has not heard): the first chunk goes as accepted, the second blocks, as one write
    # at a time would.
    world = _block_world(2)
    client, server, _ = world.links[0]
    world.write_quiet([10])
    client.cancel(world.handles[0][1])
    server.receive_data(client.data_to_send())
    world.write_quiet([10])
    assert world.log[-2:] == [("write", [WriteResult.ACCEPTED]), ("write", [BLOCKED])]
    assert world.producer.last_seq == 1


def test_another_stream_s_write_delivers_a_run_that_holds_room_first() -> None:
    world = _block_world(2)
    client = world.links[0][0]
    client.subscribe("bench:batch", "t", tail=True, policy=OverflowPolicy.BLOCK)
    world.pump(0)
    world.pump(0)
    world.write_quiet([10])
    assert _queued(world) == 0
    assert world.other.write(b"t") is WriteResult.ACCEPTED  # held too: "s" went first
    assert _queued(world) == 1
    assert world.other.write_many([b"u"]) == (1, WriteResult.ACCEPTED)
    assert _queued(world) == 3


@pytest.mark.parametrize(
    ("sizes", "queued"),
    [([1] * HOLD_CHUNKS, HOLD_CHUNKS), ([BIG] * (HOLD_BYTES // BIG + 1), HOLD_BYTES // BIG + 1)],
)
def test_a_long_run_is_delivered_at_the_bound(sizes: list[int], queued: int) -> None:
    world = _held_world()
    world.write_quiet(sizes[:-1])
    assert _queued(world) == 0
    world.write_quiet(sizes[-1:])  # the bound: delivered without a flush
    assert _queued(world) == queued
    world.write_quiet([1])  # the next run starts (the callback's flush is still to come)
    assert world.held_calls == 1
    assert _queued(world) == queued
    world.hub.flush_writes()
    assert _queued(world) == queued + 1


@pytest.mark.parametrize("call", ["last_seq", "write_many", "close", "fail", "store_requests"])
def test_the_producer_and_the_store_see_held_writes(call: str) -> None:
    world = _held_world()
    world.write_quiet([10, 10])
    producer = world.producer
    if call == "last_seq":
        assert producer.last_seq == 2
    elif call == "write_many":
        assert producer.write_many([b"x"]) == (1, producer.write(b"y"))
        assert producer.last_seq == 4
    elif call == "close":
        producer.close()
    elif call == "fail":
        producer.fail(4000, "no")
    else:
        assert world.hub.store_requests() == []
    assert _queued(world) >= 2


def test_a_store_event_delivers_held_writes_first() -> None:
    world = _held_world()
    world.write_quiet([10])
    world.hub.handle_store_event(StreamLoaded(("bench:batch", "other")))
    assert _queued(world) == 1


def test_writes_made_while_flushing_are_delivered_by_the_same_flush() -> None:
    world = _held_world()
    other = world.other
    world.subscribe(0, OverflowPolicy.DROP_OLDEST, None)  # on "s"; and one on "t":
    client = world.links[0][0]
    client.subscribe("bench:batch", "t", tail=True)
    world.pump(0)
    world.pump(0)
    peer = world.links[0][2]
    wakeup = peer.wakeup
    writes = [b"late"]

    def write_on_wake() -> None:  # an adapter callback that writes to another stream
        if writes:
            other.write(writes.pop())
        wakeup()

    peer.wakeup = write_on_wake
    world.write_quiet([10])
    world.hub.flush_writes()
    assert not writes
    assert _queued(world) == 3  # the chunk on "s" twice, and "late" on "t"
