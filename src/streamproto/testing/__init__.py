"""Test tooling for streamproto users and adapter authors.

:class:`ConnectionPair` joins a client and a server :class:`~streamproto.Connection` in memory
and checks, on every call, that each side receives exactly what the other sent (h11's
``ConnectionPair``). The ``expect_*`` helpers raise AssertionError with a readable message, so
they work with any test runner and under ``python -O``.

:func:`check_adapter` runs the protocol scenarios against any adapter, given a factory of
connected server/client pairs (``transports.testing.pair_factory`` makes one for adapters shaped
like ours); :class:`MockClock` is time that moves only when told.

:class:`FakeTransport` is a connection without sockets whose :class:`Pipe` directions deliver
all at once, one byte at a time, late or in random pieces (:class:`Delivery`), and break at a
frame boundary or inside a frame (:class:`Cut`); :class:`Wire` runs the adapter loop between
a client and a server (or a hub's :class:`~streamproto.Peer`) over one.
"""

from ._clock import MockClock
from ._conformance import (
    CONFORMANCE_CLIENT_WINDOW,
    CONFORMANCE_SERVER_CONFIG,
    SCENARIOS,
    ClientUnderTest,
    ConformanceError,
    ConformanceReport,
    PairFactory,
    PairOptions,
    ScenarioResult,
    ServerUnderTest,
    SubscriptionUnderTest,
    check_adapter,
    upload_digest,
)
from ._links import Cut, Delivery, FakeTransport, Pipe, PipeStatistics, Wire, frame_sizes
from ._pair import (
    ConnectionPair,
    Transfer,
    decode_frames,
    expect_events,
    expect_goaway,
    expect_terminated,
)

__all__ = [
    "CONFORMANCE_CLIENT_WINDOW",
    "CONFORMANCE_SERVER_CONFIG",
    "SCENARIOS",
    "ClientUnderTest",
    "ConformanceError",
    "ConformanceReport",
    "ConnectionPair",
    "Cut",
    "Delivery",
    "FakeTransport",
    "MockClock",
    "PairFactory",
    "PairOptions",
    "Pipe",
    "PipeStatistics",
    "ScenarioResult",
    "ServerUnderTest",
    "SubscriptionUnderTest",
    "Transfer",
    "Wire",
    "check_adapter",
    "decode_frames",
    "expect_events",
    "expect_goaway",
    "expect_terminated",
    "frame_sizes",
    "upload_digest",
]
