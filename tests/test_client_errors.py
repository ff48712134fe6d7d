"""Errors that say what happened (a local close, a gap, a producer on no channel), what the
conformance check reports when an adapter fails, and the types a user's script sees."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from streamproto import ErrorCode, ErrorKind, GapReason, LocalProtocolError
from streamproto.testing import PairFactory, PairOptions, check_adapter
from transports import ClientStatistics, ConnectionClosed, GapError, StreamError
from transports.testing import BACKENDS, pair, pair_factory

USER_SCRIPT = Path(__file__).parent / "typing" / "user_script.py"


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_local_close_ends_what_is_open_with_connection_closed(backend: str) -> None:
    """Closing the client is not a lost connection: CONNECTION_CLOSED, not retryable, for the
    subscriptions it ends and for a request made after it."""
    with pair(backend, backend, "tcp") as (server, client):
        server.start("test:streams", "s1")
        server.write("s1", b"a")
        sub = client.subscribe("test:streams", "s1")
        assert sub.take(1) == [b"a"]
        client.thread.call(client.client.close)
        assert sub.rest() == []
        assert isinstance(sub.error, ConnectionClosed)
        assert sub.error.code == ErrorCode.CONNECTION_CLOSED
        assert not ErrorCode(sub.error.code).retryable
        with pytest.raises(ConnectionClosed):
            client.thread.call(lambda: client.client.subscribe("test:streams", "s1"))


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_producer_on_no_channel_is_a_local_error(backend: str) -> None:
    with pair(backend, backend, "tcp") as (server, _client):
        with pytest.raises(LocalProtocolError) as caught:
            server.thread.call(lambda: server.server.producer("test:nothing"))
        assert caught.value.code == ErrorCode.UNKNOWN_CHANNEL
        assert "test:nothing" in str(caught.value)


@pytest.mark.parametrize("backend", BACKENDS)
def test_client_statistics_are_a_typed_snapshot(backend: str) -> None:
    with pair(backend, backend, "tcp") as (server, client):
        server.start("test:streams", "s1")
        server.write("s1", b"a", b"b")
        sub = client.subscribe("test:streams", "s1")
        assert sub.take(2) == [b"a", b"b"]
        stats = client.thread.call(client.client.statistics)
        assert isinstance(stats, ClientStatistics)
        assert (stats.chunks, stats.gaps, stats.reconnects, stats.resumed) == (2, 0, 0, 0)


class _Greedy:
    """A client whose subscriptions wait for one chunk more than the scenario asked for."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def subscribe(self, channel: str, stream_id: str) -> Any:
        sub = self._client.subscribe(channel, stream_id)
        take = sub.take
        sub.take = lambda n: take(n + 1)
        return sub


def _greedy(make: PairFactory) -> PairFactory:
    @contextlib.contextmanager
    def make_pair(options: PairOptions) -> Iterator[tuple[Any, Any]]:
        with make(options) as (server, client):
            yield server, _Greedy(client)

    return make_pair


def test_check_adapter_names_the_step_and_what_it_waited_for() -> None:
    """A hung step fails after ``timeout`` (not a long default), naming the scenario's line
    and what the step waited for."""
    started = time.monotonic()
    report = check_adapter(
        _greedy(pair_factory("sync", "sync", "tcp")),
        scenarios=["subscribe_and_receive"],
        raise_on_failure=False,
        timeout=0.5,
    )
    elapsed = time.monotonic() - started
    (failure,) = report.failures
    assert isinstance(failure.error, TimeoutError)
    assert str(failure.error).startswith(
        "waited 0.5 s for 4 items of subscribe('test:streams', 's1'); 3 came: [b'a', b'b', b'c']"
    )
    assert failure.step.startswith("_subscribe_and_receive, line ")
    assert f"FAIL at {failure.step}: TimeoutError(" in str(report)
    assert elapsed < 15  # the proxies' own default would wait 20 s


def test_check_adapter_refuses_a_timeout_that_is_not_positive() -> None:
    with pytest.raises(LocalProtocolError) as caught:
        check_adapter(pair_factory("sync", "sync", "tcp"), timeout=0)
    assert caught.value.code == ErrorCode.INVALID_ARGUMENT


def test_a_users_script_passes_mypy_strict_with_no_flags(tmp_path: Path) -> None:
    """``py.typed`` in both packages, subscriptions typed by ``on_gap`` overloads, typed
    statistics: the script's ``assert_type`` calls all hold (checked where no project
    configuration applies)."""
    script = tmp_path / "user_script.py"
    script.write_text(USER_SCRIPT.read_text())
    wrong = tmp_path / "wrong.py"
    wrong.write_text(
        USER_SCRIPT.read_text().replace("assert_type(chunk, bytes)", "assert_type(chunk, str)")
    )
    mypy = [sys.executable, "-m", "mypy", "--strict", "--no-incremental"]
    ok = subprocess.run(
        [*mypy, script.name], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    bad = subprocess.run(
        [*mypy, wrong.name], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert bad.returncode == 1
    assert bad.stdout.count('Expression is of type "bytes", not "str"') == 3


def test_gap_errors_carry_chunks_missing_with_their_reason() -> None:
    for reason in (GapReason.EVICTED, GapReason.OVERFLOW):
        gap = GapError(3, 7, reason)
        assert isinstance(gap, StreamError)
        assert gap.code == ErrorCode.CHUNKS_MISSING
        assert (gap.from_seq, gap.to_seq, gap.reason) == (3, 7, reason)
        assert str(gap) == f"[CHUNKS_MISSING] seqs 3..7 are missing ({reason.name.lower()})"
    assert ErrorCode.CHUNKS_MISSING.kind is ErrorKind.LOCAL
    assert not ErrorCode.CHUNKS_MISSING.retryable


def _after_a_gap(backend: str, address: str, more: Any) -> tuple[tuple[int, int], list[bytes]]:
    """Subscribe to ``test:small``/``g`` from seq 1 under ``on_gap="raise"``, catch the gap,
    then call ``more()`` (the producer writes again) and read on with a new loop until
    ``b"last"``. Returns the gap's seqs and what the second loop read."""
    got: list[bytes] = []
    if backend == "sync":
        from transports.sync import connect as sync_connect

        with sync_connect(address) as client:
            sub = client.subscribe("test:small", "g")
            with pytest.raises(GapError) as caught:
                for _ in sub:
                    pass
            more()
            for chunk in sub:
                got.append(chunk)
                if chunk == b"last":
                    break
        return (caught.value.from_seq, caught.value.to_seq), got

    async def read(client: Any) -> tuple[int, int]:
        sub = client.subscribe("test:small", "g")
        try:
            async for _ in sub:
                pass
        except GapError as gap:
            seqs = (gap.from_seq, gap.to_seq)
        more()
        async for chunk in sub:
            got.append(chunk)
            if chunk == b"last":
                break
        return seqs

    if backend == "asyncio":
        import asyncio

        from transports.asyncio import connect as asyncio_connect

        async def on_asyncio() -> tuple[int, int]:
            async with await asyncio_connect(address) as client:
                return await read(client)

        return asyncio.run(on_asyncio()), got
    import trio

    from transports.trio import connect as trio_connect

    async def on_trio() -> tuple[int, int]:
        async with trio_connect(address) as client:
            return await read(client)

    return trio.run(on_trio), got


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_gap_error_leaves_the_subscription_open_for_a_new_loop(backend: str) -> None:
    """Under ``on_gap="raise"`` the loop ends with GapError and the subscription stays open:
    a new loop reads what follows the gap, live chunks too (no CANCEL was sent)."""
    with pair("sync", backend, "tcp") as (server, _client):
        server.start("test:small", "g")  # a replay window of 16 chunks
        server.write("g", *[b"%d" % i for i in range(1, 21)])  # seqs 1-4 evicted

        def more() -> None:
            server.write("g", b"live", b"last")

        seqs, got = _after_a_gap(backend, server.url, more)
    assert seqs == (1, 4)
    assert got == [b"%d" % i for i in range(5, 21)] + [b"live", b"last"]
