"""The conformance check itself: it passes a sound adapter, and it catches broken ones."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from streamproto import ErrorCode, LocalProtocolError
from streamproto.testing import (
    SCENARIOS,
    ConformanceError,
    PairFactory,
    PairOptions,
    check_adapter,
)
from transports.testing import Adapter, adapter, pair_factory


def test_a_sound_adapter_passes_every_scenario() -> None:
    report = check_adapter(pair_factory("sync", "sync", "tcp"))
    assert report.passed
    assert [r.name for r in report.results] == list(SCENARIOS)
    assert all(r.doc for r in report.results)  # each scenario says what it checks
    assert str(report).endswith(f"{len(SCENARIOS)} passed, 0 failed")


def test_a_custom_adapter_is_described_by_its_entry_points() -> None:
    ours = adapter("asyncio")
    mine = Adapter("asyncio", serve=ours.serve, connect=ours.connect)
    report = check_adapter(pair_factory(mine, "trio", "tcp"), scenarios=["subscribe_and_receive"])
    assert report.passed


class _Reversing:
    """A subscription wrapper that hands items out in the wrong order."""

    def __init__(self, sub: Any) -> None:
        self._sub = sub

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sub, name)

    def take(self, n: int) -> list[Any]:
        return list(reversed(self._sub.take(n)))


class _BrokenClient:
    """A client whose subscriptions reorder chunks and whose transport never dies."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def subscribe(self, channel: str, stream_id: str) -> _Reversing:
        return _Reversing(self._client.subscribe(channel, stream_id))

    def abort_transport(self) -> None:
        pass  # the transport is never cut, so no resume ever happens


class _NoUploadResume:
    """A client that drops the resume of uploads: it opens them as plain ones, so a lost
    transport ends them instead of parking them for the reconnect."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def upload_result(self, *args: Any, resumable: bool = False, **kwargs: Any) -> Any:
        return self._client.upload_result(*args, **kwargs)


def _broken(make: PairFactory, wrap: Callable[[Any], Any] = _BrokenClient) -> PairFactory:
    @contextlib.contextmanager
    def make_pair(options: PairOptions) -> Iterator[tuple[Any, Any]]:
        with make(options) as (server, client):
            yield server, wrap(client)

    return make_pair


def test_a_broken_adapter_fails_with_the_promise_it_broke() -> None:
    make = _broken(pair_factory("sync", "sync", "tcp"))
    names = ["subscribe_and_receive", "resume_after_lost_transport", "gap_raises_by_default"]
    report = check_adapter(make, scenarios=names, raise_on_failure=False)
    assert not report.passed
    assert [r.name for r in report.failures] == names[:2]
    first, second = (str(r.error) for r in report.failures)
    assert first == "the replayed chunks, in order"
    assert second.startswith("a resume, not {")
    assert "subscribe_and_receive: FAIL" in str(report)
    assert "gap_raises_by_default: pass" in str(report)
    with pytest.raises(ConformanceError) as caught:
        check_adapter(make, scenarios=names[:1])
    assert caught.value.report.failures[0].name == "subscribe_and_receive"


@pytest.mark.parametrize("pair", [("sync", "sync", "tcp"), ("asyncio", "trio", "ws")])
def test_an_adapter_that_drops_the_upload_resume_fails(pair: tuple[str, str, str]) -> None:
    """The resumable upload scenario passes only if the upload goes on after the reconnect:
    a client that uploads as if the upload could not be resumed sees the lost transport."""
    name = "resumable_upload_after_lost_transport"
    assert check_adapter(pair_factory(*pair), scenarios=[name]).passed
    make = _broken(pair_factory(*pair), _NoUploadResume)
    report = check_adapter(make, scenarios=[name], raise_on_failure=False)
    (failure,) = report.failures
    assert str(failure.error).startswith("the upload ends normally: ")
    assert "CONNECTION_LOST" in str(failure.error)
    assert failure.step.startswith("_resumable_upload_after_lost_transport, line ")


def test_an_unknown_scenario_is_refused() -> None:
    with pytest.raises(LocalProtocolError) as caught:
        check_adapter(pair_factory("sync", "sync", "tcp"), scenarios=["no_such_thing"])
    assert caught.value.code == ErrorCode.INVALID_ARGUMENT
