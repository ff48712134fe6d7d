"""Server statistics on every backend, and their Prometheus exposition, parsed by the official
client's parser."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest
from harness import BACKENDS, TIMEOUT, ClientProxy, ServerProxy
from prometheus_client.parser import text_string_to_metric_families

from streamproto import ChannelStatistics, Config, ConnState, HubStatistics
from transports import Backoff, StreamError
from transports import asyncio as sp
from transports.metrics import CONTENT_TYPE, ServerStatistics, prometheus_text

WAIT = 30.0
DOCS = Path(__file__).resolve().parent.parent / "docs"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the exposition: (name, sorted labels) -> value."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return out


def families(text: str) -> dict[str, str]:
    return {f.name: f.type for f in text_string_to_metric_families(text)}


def test_statistics_and_exposition_of_a_live_server() -> None:
    async def main() -> tuple[ServerStatistics, str, ServerStatistics, str]:
        server = await sp.serve(None, "tcp://127.0.0.1:0", config=Config(max_connections=2))
        server.channel("demo:a")
        server.channel("demo:b")
        producer = server.producer("demo:a", "s1")
        one = await sp.connect(server.address)
        two = await sp.connect(server.address)
        with pytest.raises(StreamError):  # over max_connections: refused
            await sp.connect(server.address, reconnect=Backoff(attempts=0))
        subs = [one.subscribe("demo:a", "s1"), two.subscribe("demo:a", "s1")]
        for sub in subs:
            await sub.accepted()
        for i in range(10):
            await producer.write(b"x" * (i + 1))
        for sub in subs:
            for _ in range(10):
                await sub.__aiter__().__anext__()
        live, live_text = server.statistics(), prometheus_text(server)
        await one.close()
        await two.close()
        while server.statistics().connections:
            await asyncio.sleep(0.01)
        after, after_text = server.statistics(), prometheus_text(server)
        await server.shutdown(timeout=WAIT)
        return live, live_text, after, after_text

    live, text, after, after_text = asyncio.run(asyncio.wait_for(main(), WAIT))
    # The snapshot.
    assert (live.accepted, live.refused) == (2, 1)
    assert [c.id for c in live.connections] == sorted(
        (c.id for c in live.connections), key=lambda i: int(i[1:])
    )
    for info in live.connections:
        assert info.session_id
        assert info.age >= 0
        assert info.connection.state is ConnState.OPEN
        assert info.connection.chunks_sent == 10
        assert info.bytes_out > sum(range(1, 11))
        assert info.bytes_in > 0
    assert live.channels == {
        "demo:a": ChannelStatistics(
            open_streams=1,
            retained_streams=0,
            subscriptions=2,
            parked_subscriptions=0,
            uploads=0,
        ),
        "demo:b": ChannelStatistics(
            open_streams=0, retained_streams=0, subscriptions=0, parked_subscriptions=0, uploads=0
        ),
    }
    assert isinstance(live.hub, HubStatistics)
    assert live.hub.sessions == 2
    assert live.totals()["chunks_sent"] == 20
    # The exposition, as Prometheus reads it.
    listener = (("listener", live.address),)
    got = samples(text)
    assert got["streamproto_connections", listener] == 2
    assert got["streamproto_connections_accepted_total", listener] == 2
    assert got["streamproto_connections_refused_total", listener] == 1
    assert got["streamproto_chunks_sent_total", listener] == 20
    assert got["streamproto_sent_bytes_total", listener] == live.totals()["bytes_out"]
    assert got["streamproto_hub_sessions", ()] == 2
    assert got["streamproto_channel_subscriptions", (("channel", "demo:a"),)] == 2
    assert got["streamproto_channel_open_streams", (("channel", "demo:b"),)] == 0
    kinds = families(text)
    assert kinds["streamproto_chunks_sent"] == "counter"
    assert kinds["streamproto_queued_bytes"] == "gauge"
    assert all(name.startswith("streamproto_") for name in kinds)
    assert "text/plain; version=0.0.4" in CONTENT_TYPE
    # Counters keep what closed connections did; gauges follow the live ones.
    assert after.connections == ()
    gone = samples(after_text)
    assert gone["streamproto_connections", listener] == 0
    assert gone["streamproto_chunks_sent_total", listener] == 20
    assert (
        gone["streamproto_sent_bytes_total", listener]
        >= got["streamproto_sent_bytes_total", listener]
    )
    assert after.totals()["chunks_sent"] == 20


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_server_has_public_statistics(backend: str) -> None:
    server = ServerProxy(backend, "tcp")
    try:
        client = ClientProxy(backend, server.url)
        try:
            server.start("test:streams", "s1")
            sub = client.subscribe("test:streams", "s1")
            server.write("s1", b"a", b"b")
            assert sub.take(2, TIMEOUT) == [b"a", b"b"]
            stats = server.thread.call(server.server.statistics)
            text = server.thread.call(prometheus_text, server.server)
        finally:
            client.close()
    finally:
        server.stop()
    [info] = stats.connections
    assert info.connection.chunks_sent == 2
    assert stats.channels["test:streams"].subscriptions == 1
    listener = (("listener", server.url),)
    assert samples(text)["streamproto_chunks_sent_total", listener] == 2


def test_one_hub_on_two_listeners_counts_once_and_two_hubs_are_labelled() -> None:
    async def main() -> tuple[str, str]:
        tcp = await sp.serve(None, "tcp://127.0.0.1:0")
        ws = await sp.serve(tcp.hub, "ws://127.0.0.1:0/streams")
        other = await sp.serve(None, "tcp://127.0.0.1:0")
        tcp.channel("demo:shared")
        other.channel("demo:other")
        shared, both = prometheus_text(tcp, ws), prometheus_text(tcp, other, prefix="sp")
        for server in (tcp, ws, other):
            await server.shutdown(timeout=WAIT)
        return shared, both

    shared, both = asyncio.run(asyncio.wait_for(main(), WAIT))
    got = samples(shared)
    assert got["streamproto_hub_channels", ()] == 1
    assert len([k for k in got if k[0] == "streamproto_connections"]) == 2  # one per listener
    labelled = samples(both)
    assert labelled["sp_hub_channels", (("hub", "0"),)] == 1
    assert labelled["sp_channel_open_streams", (("channel", "demo:other"), ("hub", "1"))] == 0


class Fake:
    """A stand-in with an address that needs escaping."""

    def __init__(self, stats: ServerStatistics) -> None:
        self.stats = stats

    def statistics(self) -> ServerStatistics:
        return self.stats


def test_label_values_are_escaped() -> None:
    hub = HubStatistics(0, 0, 0, 0, 0, 0, 0)
    odd = 'tcp://host:1/"quoted"\\back\nslash'
    stats = ServerStatistics(
        address=odd,
        accepted=0,
        refused=0,
        connections=(),
        channels={},
        hub=hub,
        closed_totals=(1, 2, 3, 4, 5),
    )
    text = prometheus_text(Fake(stats))
    assert '\\"quoted\\"\\\\back\\nslash' in text
    got = samples(text)
    assert got["streamproto_received_bytes_total", (("listener", odd),)] == 1
    assert got["streamproto_chunks_dropped_total", (("listener", odd),)] == 5


def test_the_metrics_page_runs() -> None:
    text = (DOCS / "metrics.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    assert blocks
    for index, block in enumerate(blocks):
        namespace: dict[str, Any] = {"__name__": "docs"}
        exec(compile(block, f"docs/metrics.md block {index}", "exec"), namespace)
