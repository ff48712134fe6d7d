"""Server statistics and their Prometheus text exposition.

Every server of every backend has ``server.statistics()``: a :class:`ServerStatistics`
snapshot of its open connections (:class:`ConnectionInfo`), its channels
(:class:`streamproto.ChannelStatistics`), its hub (:class:`streamproto.HubStatistics`) and
totals over its life. :func:`prometheus_text` renders one or more servers in the Prometheus
text format (version 0.0.4), to be served at ``/metrics`` by whatever HTTP server the
application runs (docs/metrics.md shows how)::

    body = prometheus_text(server)  # Content-Type: CONTENT_TYPE
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol

import attrs

from streamproto import ChannelStatistics, ConnectionStatistics, HubStatistics

__all__ = [
    "CONTENT_TYPE",
    "ConnectionInfo",
    "ServerStatistics",
    "prometheus_text",
]

#: The Content-Type of :func:`prometheus_text`'s output.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@attrs.frozen(kw_only=True)
class ConnectionInfo:
    """One open server connection."""

    #: Its id in logs and traces (``c12``).
    id: str
    #: Its session's id ("" before the handshake).
    session_id: str
    #: Seconds since it was accepted.
    age: float
    #: Transport bytes received and sent (WebSocket framing included).
    bytes_in: int
    bytes_out: int
    #: The sans-IO connection's counters (state, open handles, chunks, queued bytes).
    connection: ConnectionStatistics


@attrs.frozen(kw_only=True)
class ServerStatistics:
    """A server's statistics at one moment (see ``server.statistics()``)."""

    #: The URL the server listens on.
    address: str
    #: Connections admitted, and refused with SERVER_BUSY, since the server started.
    accepted: int
    refused: int
    #: The open connections, oldest first.
    connections: tuple[ConnectionInfo, ...]
    #: Every registered channel of its hub, by name.
    channels: Mapping[str, ChannelStatistics]
    hub: HubStatistics
    #: Bytes in, bytes out, chunks received, sent and dropped by the connections that closed.
    closed_totals: tuple[int, int, int, int, int]

    def totals(self) -> dict[str, int]:
        """Counters over the server's life (closed and open connections): ``bytes_in``,
        ``bytes_out``, ``chunks_received``, ``chunks_sent``, ``chunks_dropped``."""
        b_in, b_out, received, sent, dropped = self.closed_totals
        for info in self.connections:
            stats = info.connection
            b_in += info.bytes_in
            b_out += info.bytes_out
            received += stats.chunks_received
            sent += stats.chunks_sent
            dropped += stats.chunks_dropped
        return {
            "bytes_in": b_in,
            "bytes_out": b_out,
            "chunks_received": received,
            "chunks_sent": sent,
            "chunks_dropped": dropped,
        }


class HasStatistics(Protocol):
    """Anything with ``statistics() -> ServerStatistics``: a server of any backend."""

    def statistics(self) -> ServerStatistics: ...


_SERVER_COUNTERS = (
    ("accepted", "connections_accepted", "Connections admitted."),
    ("refused", "connections_refused", "Connections refused with SERVER_BUSY (at capacity)."),
)
_TOTALS = (
    ("bytes_in", "received_bytes", "Transport bytes received."),
    ("bytes_out", "sent_bytes", "Transport bytes sent."),
    ("chunks_received", "chunks_received", "Chunks received (uploads)."),
    ("chunks_sent", "chunks_sent", "Chunks sent to subscribers."),
    ("chunks_dropped", "chunks_dropped", "Chunks dropped for subscribers that fell behind."),
)
_HUB_GAUGES = (
    ("channels", "Registered channels."),
    ("open_streams", "Streams being written."),
    ("retained_streams", "Finished streams kept for late subscribers."),
    ("subscriptions", "Subscriptions of connected sessions."),
    ("parked_subscriptions", "Subscriptions held for disconnected sessions."),
    ("sessions", "Sessions, connected or within their grace period."),
    ("uploads", "Open uploads."),
)
_CHANNEL_GAUGES = (
    ("open_streams", "Streams being written, per channel."),
    ("retained_streams", "Finished streams kept, per channel."),
    ("subscriptions", "Subscriptions, per channel."),
    ("parked_subscriptions", "Subscriptions of disconnected sessions, per channel."),
    ("uploads", "Open uploads, per channel."),
)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class _Exposition:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.lines: list[str] = []

    def family(
        self, name: str, kind: str, text: str, samples: Iterable[tuple[dict[str, str], float]]
    ) -> None:
        full = f"{self.prefix}_{name}_total" if kind == "counter" else f"{self.prefix}_{name}"
        self.lines.append(f"# HELP {full} {text}")
        self.lines.append(f"# TYPE {full} {kind}")
        for labels, value in samples:
            pairs = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
            self.lines.append(f"{full}{{{pairs}}} {value:g}" if pairs else f"{full} {value:g}")


def prometheus_text(*servers: HasStatistics, prefix: str = "streamproto") -> str:
    """The statistics of ``servers`` in the Prometheus text format (serve it with
    :data:`CONTENT_TYPE`). Connection metrics are labelled ``listener`` (the server's
    address); hub and channel metrics come once per hub, labelled ``hub`` (0, 1, ... in the
    order the servers are given) when the servers serve more than one. Metric names start
    with ``prefix``. Per-connection figures are summed, not labelled, to keep the number of
    series bounded: ``server.statistics().connections`` has them one by one."""
    snapshots = [(server, server.statistics()) for server in servers]
    out = _Exposition(prefix)
    listener = [({"listener": s.address}, s) for _, s in snapshots]
    out.family(
        "connections",
        "gauge",
        "Open connections.",
        ((labels, len(s.connections)) for labels, s in listener),
    )
    for attr, name, text in _SERVER_COUNTERS:
        out.family(name, "counter", text, ((lb, getattr(s, attr)) for lb, s in listener))
    totals = [(labels, s.totals()) for labels, s in listener]
    for key, name, text in _TOTALS:
        out.family(name, "counter", text, ((labels, t[key]) for labels, t in totals))
    out.family(
        "queued_bytes",
        "gauge",
        "Bytes queued for subscribers on open connections.",
        ((labels, sum(c.connection.queued_bytes for c in s.connections)) for labels, s in listener),
    )
    # One hub may be served on several listeners: its figures count once.
    hubs: list[ServerStatistics] = []
    seen: list[object] = []
    for server, snapshot in snapshots:
        hub = getattr(server, "hub", server)
        if not any(hub is other for other in seen):
            seen.append(hub)
            hubs.append(snapshot)
    hub_labels = [({"hub": str(i)} if len(hubs) > 1 else {}, s) for i, s in enumerate(hubs)]
    for attr, text in _HUB_GAUGES:
        out.family(
            f"hub_{attr}", "gauge", text, ((lb, getattr(s.hub, attr)) for lb, s in hub_labels)
        )
    for attr, text in _CHANNEL_GAUGES:
        out.family(
            f"channel_{attr}",
            "gauge",
            text,
            (
                ({**lb, "channel": name}, getattr(stats, attr))
                for lb, s in hub_labels
                for name, stats in sorted(s.channels.items())
            ),
        )
    return "\n".join(out.lines) + "\n"
