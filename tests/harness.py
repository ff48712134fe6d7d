"""The blocking proxies of ``transports.testing``, under the names the tests use."""

from transports.testing import (
    BACKENDS,
    TIMEOUT,
    TRANSPORTS,
    ClientProxy,
    ServerProxy,
    SubProxy,
    pair,
)

__all__ = ["BACKENDS", "TIMEOUT", "TRANSPORTS", "ClientProxy", "ServerProxy", "SubProxy", "pair"]
