"""The ``core`` workload: two connections in one process, no I/O.

A server :class:`~streamproto.Connection` sends N data chunks to one subscription
(``send_data`` then ``data_to_send``) and a client connection decodes them into events
(``receive_data``), credit flowing back as the client consumes — the whole sans-IO path of a
chunk. Beside it, in the same run, the bare floor: a ``struct`` length prefix encoded and
decoded for the same payloads. The headline figure is our throughput as a share of the bare
framing's (goal: at least 40% at 64 B).

``ours`` queues each chunk with ``send_data``; ``ours, send_data_many`` queues each burst with
one ``send_data_many`` call, as a producer that has a burst in hand would (same bytes out,
same events). Both are reported, each with its share of bare.

``ours, sliced flush`` queues the whole run before the first flush (a reader that fell behind)
and takes it the way the adapters do under a full socket, ``data_to_send(SLICE)`` at a time:
its cost per chunk should match one whole take's (``ours, whole flush``), whatever the queue's
length.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from bench import Config, Report, measure, workload
from bench.codec import bare_decode, bare_encode
from streamproto import Config as CoreConfig
from streamproto import Connection, DataReceived, Role

SIZES = (64, 4096)
CHUNKS = 5000
BATCH = 256  # chunks written before each flush, as an adapter writes a burst
SLICE = 256 * 1024  # the adapters' FLUSH_SLICE


def _pair(window: int) -> tuple[Connection, Connection, int]:
    config = CoreConfig(window_chunks=window, window_bytes=1 << 30, max_queued_chunks=window)
    client = Connection(Role.CLIENT, config)
    server = Connection(Role.SERVER, config)
    server.receive_data(client.data_to_send())
    server.accept_handshake(session_id="s", resume_token="t")
    client.receive_data(server.data_to_send())
    handle = client.subscribe("bench:core", "s1")
    server.receive_data(client.data_to_send())
    server.accept(handle, stream_id="s1")
    client.receive_data(server.data_to_send())
    return client, server, handle


def _cases(size: int, count: int) -> dict[str, tuple[Callable[[], object], int]]:
    rng = random.Random(size)
    payloads = [rng.randbytes(size) for _ in range(count)]
    batches = [payloads[i : i + BATCH] for i in range(0, count, BATCH)]

    def ours() -> int:
        client, server, handle = _pair(window=BATCH * 2)
        send, flush = server.send_data, server.data_to_send
        receive, back = client.receive_data, client.data_to_send
        received = 0
        for batch in batches:
            for payload in batch:
                send(handle, payload)
            for event in receive(flush()):
                if isinstance(event, DataReceived):
                    received += len(event.chunks)
            server.receive_data(back())  # the credit the client returned
        return received

    def ours_many() -> int:
        client, server, handle = _pair(window=BATCH * 2)
        send_many, flush = server.send_data_many, server.data_to_send
        receive, back = client.receive_data, client.data_to_send
        received = 0
        for batch in batches:
            send_many(handle, batch)
            for event in receive(flush()):
                if isinstance(event, DataReceived):
                    received += len(event.chunks)
            server.receive_data(back())
        return received

    def backlog(max_bytes: int | None) -> Callable[[], int]:
        def take() -> int:
            client, server, handle = _pair(window=count)
            server.send_data_many(handle, payloads)
            received = 0
            while out := server.data_to_send(max_bytes):
                for event in client.receive_data(out):
                    if isinstance(event, DataReceived):
                        received += len(event.chunks)
            return received

        return take

    def bare() -> int:
        received = 0
        for batch in batches:
            received += len(bare_decode(b"".join([bare_encode(p) for p in batch])))
        return received

    sliced, whole = backlog(SLICE), backlog(None)
    if any(f() != count for f in (ours, ours_many, sliced, whole, bare)):
        raise RuntimeError(f"core workload self-check failed for {size}-byte chunks")
    return {
        f"{size} B ours": (ours, count),
        f"{size} B ours, send_data_many": (ours_many, count),
        f"{size} B ours, sliced flush": (sliced, count),
        f"{size} B ours, whole flush": (whole, count),
        f"{size} B bare": (bare, count),
    }


@workload(
    "core", "server connection -> client connection in one process vs bare framing (ns/chunk)"
)
def run(config: Config) -> Report:
    count = CHUNKS // 5 if config.quick else CHUNKS
    cases: dict[str, tuple[Callable[[], object], int]] = {}
    for size in SIZES:
        cases.update(_cases(size, count))
    measurements = measure(cases, config)
    median = {m.name: m.median for m in measurements}
    derived = {}
    for size in SIZES:
        derived[f"{size} B ours throughput / bare throughput"] = (
            median[f"{size} B bare"] / median[f"{size} B ours"]
        )
        derived[f"{size} B ours, send_data_many throughput / bare throughput"] = (
            median[f"{size} B bare"] / median[f"{size} B ours, send_data_many"]
        )
        derived[f"{size} B sliced flush cost / whole flush cost"] = (
            median[f"{size} B ours, sliced flush"] / median[f"{size} B ours, whole flush"]
        )
    return Report(measurements, derived, {"chunks": count, "batch": BATCH, "payload_sizes": SIZES})
