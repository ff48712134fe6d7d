"""Test tooling for streamproto users and adapter authors.

:class:`ConnectionPair` joins a client and a server :class:`~streamproto.Connection` in memory
and checks, on every call, that each side receives exactly what the other sent (h11's
``ConnectionPair``). The ``expect_*`` helpers raise AssertionError with a readable message, so
they work with any test runner and under ``python -O``.
"""

from ._clock import MockClock
from ._pair import (
    ConnectionPair,
    Transfer,
    decode_frames,
    expect_events,
    expect_goaway,
    expect_terminated,
)

__all__ = [
    "ConnectionPair",
    "MockClock",
    "Transfer",
    "decode_frames",
    "expect_events",
    "expect_goaway",
    "expect_terminated",
]
