"""Hub workloads: fan-out, the memory of idle subscriptions, replay to a late subscriber.

``hub-fanout``
    One stream, 1 / 100 / 1000 subscriptions over up to 100 connections. A timed call is one
    ``producer.write`` of a 64-byte chunk plus ``data_to_send()`` on every server connection:
    the server's whole cost of delivering it. Clients granted the maximum credit up front, so
    no CREDIT frame is needed while timing and nothing is dropped. Reported in deliveries/s.
    Goal: >= 1,000,000 deliveries/s at 1000 subscriptions. The ``write_many`` rows do the same
    with one ``producer.write_many`` of 16 chunks per call (a producer with a burst in hand;
    the same bytes reach every subscriber), each delivery still one chunk to one subscriber.
    The ``held`` rows make the same 16 deliveries per subscriber with 16 ``producer.write``
    calls and one ``hub.flush_writes()`` (the asyncio backend's end of a loop turn: the hub
    holds a run of writes and delivers it as one ``write_many``).

``hub-memory``
    tracemalloc delta of subscribing N idle subscriptions (live, no data) on one server
    connection: the SUBSCRIBE bytes are made by the client before tracing starts, so the delta
    is the server connection's and the hub's state only. Reported per subscription for N=1000,
    and in total for N=100,000 (``Config(max_subscriptions=100_000)``). Goal: <= 512 B per
    idle subscription.

``hub-replay``
    A late subscriber to a finished stream whose 10,000 chunks of 64 bytes are all retained,
    with credit for all of them. "server" times from the SUBSCRIBE bytes arriving to the last
    byte out of ``data_to_send()`` (receive, hub, store reads, framing); "both" adds the
    client decoding it all up to its StreamEnded. Reported in chunks/s. Goal: >= 1,000,000
    chunks/s. (The hub's catch-up queues each batch read from the store with one
    ``send_data_many``-style call; nothing here is batched by the benchmark itself.)
"""

from __future__ import annotations

import gc
import itertools
import statistics
import tracemalloc
from collections.abc import Callable

from bench import Config, Measurement, Report, measure, workload
from streamproto import (
    MAX_CREDIT,
    ChannelOptions,
    Connection,
    DataReceived,
    Hub,
    OverflowPolicy,
    Peer,
    Role,
    StreamEnded,
    Window,
)
from streamproto import Config as ConnConfig

CHUNK = b"x" * 64
FANOUT = (1, 100, 1000)
FANOUT_BATCH = 16  # chunks per write_many in the batched fan-out rows
MAX_CONNECTIONS = 100
REPLAY_CHUNKS = 10_000
IDLE = 1000
MANY = 100_000


class _Rig:
    """A hub with a fake clock and counter ids, and client/server pairs attached to it."""

    def __init__(self, options: ChannelOptions | None = None) -> None:
        ids = itertools.count()
        self.hub = Hub(clock=lambda: 0.0, ids=lambda: f"id{next(ids)}")
        self.channel = self.hub.register("bench:hub", options)

    def connect(
        self, server_config: ConnConfig | None = None
    ) -> tuple[Connection, Connection, Peer]:
        client = Connection(Role.CLIENT, ConnConfig(keepalive=0))
        server = Connection(Role.SERVER, server_config)
        peer = self.hub.attach(server)
        self.pump(client, server, peer)
        return client, server, peer

    @staticmethod
    def pump(client: Connection, server: Connection, peer: Peer) -> list[object]:
        events: list[object] = []
        while True:
            data = client.data_to_send()
            if data:
                peer.handle_events(server.receive_data(data))
            out = server.data_to_send()
            peer.handle_events(server.take_events())
            if out:
                events += client.receive_data(out)
            if not data and not out:
                return events


def _rates(m: Measurement, unit: str, scale: float = 1e9) -> Measurement:
    """ns per item -> items per second."""
    return Measurement(m.name, [scale / s for s in m.samples], unit, m.info, m.faults)


# -- fan-out ------------------------------------------------------------------------------------


def _fanout_case(
    subs: int, batch: int = 1, *, held: bool = False
) -> tuple[Callable[[], object], int]:
    rig = _Rig(ChannelOptions(replay=Window(chunks=64)))
    producer = rig.channel.start("s")
    conns = min(subs, MAX_CONNECTIONS)
    servers = []
    for i in range(conns):
        client, server, peer = rig.connect()
        n = subs // conns + (1 if i < subs % conns else 0)
        for _ in range(n):
            client.subscribe(
                "bench:hub", "s", tail=True, credit_chunks=MAX_CREDIT, credit_bytes=MAX_CREDIT
            )
        rig.pump(client, server, peer)
        servers.append(server)
    flushes = [s.data_to_send for s in servers]
    if held:
        rig.hub.on_writes_held = lambda: None
        write = producer.write
        flush_writes = rig.hub.flush_writes
        run = range(batch)

        def deliver() -> None:
            for _ in run:
                write(CHUNK)
            flush_writes()
            for flush in flushes:
                flush()

    elif batch == 1:
        write = producer.write

        def deliver() -> None:
            write(CHUNK)
            for flush in flushes:
                flush()

    else:
        write_many = producer.write_many
        burst = [CHUNK] * batch

        def deliver() -> None:
            write_many(burst)
            for flush in flushes:
                flush()

    # Check that every subscription gets every chunk before timing.
    deliver_check = producer.write_many([CHUNK] * batch)
    sent = sum(len(flush()) for flush in flushes)
    if deliver_check[0] != batch or sent != subs * batch * (18 + len(CHUNK)):
        raise RuntimeError(f"fan-out self-check failed: {sent} bytes for {subs} subscriptions")
    return deliver, subs * batch


@workload("hub-fanout", "one write to 1/100/1000 subscriptions over <= 100 connections")
def run_fanout(config: Config) -> Report:
    cases = {f"{n} subscriptions": _fanout_case(n) for n in FANOUT}
    for n in FANOUT:
        cases[f"{n} subscriptions, write_many x{FANOUT_BATCH}"] = _fanout_case(n, FANOUT_BATCH)
    for n in FANOUT:
        cases[f"{n} subscriptions, {FANOUT_BATCH} writes held"] = _fanout_case(
            n, FANOUT_BATCH, held=True
        )
    measurements = [_rates(m, "deliveries/s") for m in measure(cases, config, unit="ns/delivery")]
    best = {m.name: m.median for m in measurements}
    batched = f"1000 subscriptions, write_many x{FANOUT_BATCH}"
    held = f"1000 subscriptions, {FANOUT_BATCH} writes held"
    return Report(
        measurements,
        {
            "1000 subscriptions / goal (1,000,000 deliveries/s)": best["1000 subscriptions"] / 1e6,
            f"{batched} / goal (1,000,000 deliveries/s)": best[batched] / 1e6,
            f"{held} / goal (1,000,000 deliveries/s)": best[held] / 1e6,
        },
        {
            "chunk_bytes": len(CHUNK),
            "max_connections": MAX_CONNECTIONS,
            "write_many_batch": FANOUT_BATCH,
        },
    )


# -- memory -------------------------------------------------------------------------------------


def _idle_bytes(n: int) -> int:
    """Bytes the server connection and the hub hold for ``n`` idle subscriptions."""
    server_config = ConnConfig(max_subscriptions=max(n, 1), keepalive=0)
    rig = _Rig()
    rig.channel.start("s")
    client, server, peer = rig.connect(server_config)
    for _ in range(n):
        client.subscribe("bench:hub", "s", tail=True)
    request = client.data_to_send()
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        peer.handle_events(server.receive_data(request))
        server.data_to_send()  # the ACCEPTs leave; the subscriptions stay
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    if peer.hub.statistics().subscriptions != n:
        raise RuntimeError("memory self-check failed: not every subscription was accepted")
    del request
    return after - before


@workload("hub-memory", "tracemalloc bytes held by idle subscriptions (server conn + hub)")
def run_memory(config: Config) -> Report:
    per_sub = [_idle_bytes(IDLE) / IDLE for _ in range(config.repeats)]
    many = [_idle_bytes(MANY) / 1e6 for _ in range(config.repeats)]
    measurements = [
        Measurement(f"{IDLE} idle subscriptions, per subscription", per_sub, "B"),
        Measurement(f"{MANY} idle subscriptions, in all", many, "MB"),
    ]
    return Report(
        measurements,
        {"per subscription / goal (512 B)": statistics.median(per_sub) / 512},
        {"idle": IDLE, "many": MANY},
    )


def _idle_connection_bytes(n: int) -> int:
    """Bytes held for ``n`` idle, handshaken connections: each server connection, its hub peer
    and session (the clients exist before tracing starts; what they allocate while the
    handshake runs is counted too, a small overestimate)."""
    rig = _Rig()
    clients = [Connection(Role.CLIENT, ConnConfig(keepalive=0)) for _ in range(n)]
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = []
        for client in clients:
            server = Connection(Role.SERVER, ConnConfig(keepalive=0))
            peer = rig.hub.attach(server)
            rig.pump(client, server, peer)
            kept.append(peer)
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    if rig.hub.statistics().sessions != n:
        raise RuntimeError("memory self-check failed: not every connection was handshaken")
    return after - before


SLOW_CHUNKS = 5_000
SLOW_CHUNK = b"s" * 1024
SLOW_WINDOW = 64


def _slow_consumer_peak(policy: OverflowPolicy) -> tuple[int, int]:
    """Peak traced bytes while a producer writes SLOW_CHUNKS of 1 KiB to a subscriber that
    never returns credit, under ``policy``; and the bound the configuration promises
    (replay window + credit window + queue bound, in chunk bytes)."""
    window = Window(chunks=SLOW_WINDOW, nbytes=SLOW_WINDOW * len(SLOW_CHUNK))
    rig = _Rig(ChannelOptions(replay=window, default_policy=policy))
    server_config = ConnConfig(keepalive=0, max_queued_chunks=16, max_queued_bytes=16 << 10)
    client = Connection(
        Role.CLIENT,
        ConnConfig(keepalive=0, auto_credit=False, window_chunks=8, window_bytes=8 << 10),
    )
    server = Connection(Role.SERVER, server_config)
    peer = rig.hub.attach(server)
    rig.pump(client, server, peer)
    producer = rig.channel.start("slow")
    client.subscribe("bench:hub", "slow")
    rig.pump(client, server, peer)
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for i in range(SLOW_CHUNKS):  # 5,000 < 65,536: two bytes name the chunk
            chunk = SLOW_CHUNK[:-2] + i.to_bytes(2, "big", signed=False)[-2:]  # a new object
            if producer.write(chunk).name == "BLOCKED":
                break
            client.receive_data(server.data_to_send())  # delivered, never consumed
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    bound = (SLOW_WINDOW + 8 + 16) * len(SLOW_CHUNK)
    return peak, bound


@workload("memory", "an idle connection, and a stalled consumer's peak under each overflow policy")
def run_memory_more(config: Config) -> Report:
    n = 100 if config.quick else 1000
    idle = [_idle_connection_bytes(n) / n for _ in range(config.repeats)]
    measurements = [Measurement("idle connection (server side)", idle, "B")]
    derived = {}
    for policy in (OverflowPolicy.DROP_OLDEST, OverflowPolicy.BLOCK, OverflowPolicy.ERROR):
        runs = [_slow_consumer_peak(policy) for _ in range(1 if config.quick else 3)]
        peaks = [peak / 1024 for peak, _ in runs]
        bound = runs[0][1]
        measurements.append(Measurement(f"stalled consumer peak, {policy.name}", peaks, "KiB"))
        derived[f"{policy.name} peak / (window x chunk + bounds)"] = (
            statistics.median([peak for peak, _ in runs]) / bound
        )
    return Report(measurements, derived, {"connections": n, "chunks_written": SLOW_CHUNKS})


# -- replay -------------------------------------------------------------------------------------


def _replay_cases() -> dict[str, tuple[Callable[[], object], int]]:
    n = REPLAY_CHUNKS
    rig = _Rig(ChannelOptions(replay=Window(chunks=n, nbytes=n * len(CHUNK))))
    producer = rig.channel.start("s")
    for _ in range(n):
        producer.write(CHUNK)
    producer.close()
    client, server, peer = rig.connect()

    def subscribe() -> bytes:
        client.subscribe("bench:hub", "s", credit_chunks=n, credit_bytes=n * len(CHUNK))
        return client.data_to_send()

    def server_side() -> int:
        peer.handle_events(server.receive_data(subscribe()))
        return len(server.data_to_send())

    def both() -> int:
        peer.handle_events(server.receive_data(subscribe()))
        events = client.receive_data(server.data_to_send())
        if not isinstance(events[-1], StreamEnded):
            raise RuntimeError("replay self-check failed: no StreamEnded")
        return len(events)

    # Check the work before timing it.
    expected = n * (18 + len(CHUNK))
    sent = server_side()
    if not expected < sent < expected + 200:
        raise RuntimeError(f"replay self-check failed: {sent} bytes for {n} chunks")
    peer.handle_events(server.receive_data(subscribe()))
    events = client.receive_data(server.data_to_send())
    got = sum(len(e.chunks) for e in events if isinstance(e, DataReceived))
    if got != n or not isinstance(events[-1], StreamEnded):
        raise RuntimeError(f"replay self-check failed: {got} chunks delivered")
    return {"server": (server_side, n), "both": (both, n)}


@workload("hub-replay", "10,000 retained chunks to a late subscriber, SUBSCRIBE to the last chunk")
def run_replay(config: Config) -> Report:
    measurements = [
        _rates(m, "chunks/s") for m in measure(_replay_cases(), config, unit="ns/chunk")
    ]
    best = {m.name: m.median for m in measurements}
    return Report(
        measurements,
        {"server / goal (1,000,000 chunks/s)": best["server"] / 1e6},
        {"chunks": REPLAY_CHUNKS, "chunk_bytes": len(CHUNK)},
    )
