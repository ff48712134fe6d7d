"""The adapter scenario suite: the conformance check (``streamproto.testing.check_adapter``)
on every backend-transport pair, and clients against servers of other backends, through the
blocking proxies of ``transports.testing``; plus what the check cannot ask of a foreign adapter
(raw malformed frames)."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator

import pytest

from streamproto import ErrorCode
from streamproto._frames import FrameDecoder, Goaway
from streamproto.testing import SCENARIOS, check_adapter
from transports.testing import (
    BACKENDS,
    TRANSPORTS,
    pair,
    pair_factory,
    threads_left,
)

PAIRS = [(b, b, t) for b in BACKENDS for t in TRANSPORTS]
CROSS = [
    ("asyncio", "trio", "tcp"),
    ("asyncio", "sync", "ws"),
    ("trio", "asyncio", "ws"),
    ("trio", "sync", "tcp"),
    ("sync", "asyncio", "tcp"),
    ("sync", "trio", "ws"),
]
ALL = PAIRS + CROSS


def ids(case: tuple[str, str, str]) -> str:
    server, client, transport = case
    return f"{server}-server/{client}-client/{transport}"


@pytest.fixture(params=ALL, ids=ids)
def case(request: pytest.FixtureRequest) -> tuple[str, str, str]:
    result: tuple[str, str, str] = request.param
    return result


@pytest.fixture(params=PAIRS, ids=ids)
def same(request: pytest.FixtureRequest) -> tuple[str, str, str]:
    result: tuple[str, str, str] = request.param
    return result


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """A thread census around every scenario: each backend's threads (the sync backend's
    readers, writers, timers and handler threads; the harness's loop threads) are gone once
    the client and server are closed."""
    before = {t.ident for t in threading.enumerate()}
    yield
    assert threads_left(before) == []


# Every scenario of the conformance check, on every pair. Scenarios that need a client and a
# server of one backend (their own cancel, disconnect and overflow paths) run on the same pairs.
ON_ALL = [
    "subscribe_and_receive",
    "resume_after_lost_transport",
    "close_aborts_the_producer",
    "upload_and_upload_cancel",
    "chunks_larger_than_a_frame",
    "run_or_join",
    "stream_status",
    "stream_delete",
    "bidi_echo",
    "bidi_half_close",
    "bidi_resume_after_lost_transport",
    "resumable_upload_after_lost_transport",
]
ON_SAME = [name for name in SCENARIOS if name not in ON_ALL]


def test_every_scenario_is_run_somewhere() -> None:
    assert sorted(ON_ALL + ON_SAME) == sorted(SCENARIOS)


@pytest.mark.parametrize("scenario", ON_ALL)
def test_conformance_on_every_pair(case: tuple[str, str, str], scenario: str) -> None:
    report = check_adapter(pair_factory(*case), scenarios=[scenario])
    assert [r.name for r in report.results] == [scenario]


@pytest.mark.parametrize("scenario", ON_SAME)
def test_conformance_on_same_backend_pairs(same: tuple[str, str, str], scenario: str) -> None:
    check_adapter(pair_factory(*same), scenarios=[scenario])


def test_malformed_frame_is_answered_with_its_code(same: tuple[str, str, str]) -> None:
    backend, _, transport = same
    with pair(backend, backend, transport) as (server, _client):
        oversize = struct.pack(">IBBI", 1 << 30, 0x01, 0, 0)
        frames = FrameDecoder().feed(_raw_exchange(server.url, oversize))
        assert len(frames) == 1
        assert isinstance(frames[0], Goaway)
        assert frames[0].code == ErrorCode.FRAME_TOO_LARGE


def _raw_exchange(url: str, data: bytes) -> bytes:
    """Send raw bytes (inside a binary message for ws://) and return what comes back."""
    hostport = url.split("://", 1)[1].split("/", 1)[0]
    host, port = hostport.rsplit(":", 1)
    if url.startswith("tcp://"):
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            sock.sendall(data)
            chunks = []
            while True:
                piece = sock.recv(65536)
                if not piece:
                    break
                chunks.append(piece)
            return b"".join(chunks)
    from websockets.sync.client import connect

    with connect(url, subprotocols=["streamproto.v1"], open_timeout=5) as ws:
        ws.send(data)
        message = ws.recv(timeout=5)
        assert isinstance(message, bytes)
        return message
