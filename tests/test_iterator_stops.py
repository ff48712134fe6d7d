"""When a subscription's iterator stops, one rule says whether the subscription ends with it
(``SubscriptionBase._stopped``): under ``on_gap="raise"`` a :class:`GapError` leaves it open,
so that a new loop goes on after the gap; anything else (the end, an error, the loop left)
closes it with CANCEL. Pinned here on the helper and on each backend's item and batch
iterators, without a network.
"""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest
import trio
from test_batches import chunks, feed
from test_slices import BACKENDS, FakeClient, _sub, step_once

from streamproto import JSON, DecodeError, ErrorCode, GapReason, GapReceived
from transports import GapError, StreamError, sync
from transports import asyncio as aio
from transports import trio as tri
from transports._common import SubscriptionBase

_STOPS = [
    (GapError(3, 4, GapReason.EVICTED), True),
    (GapError(3, 4, GapReason.OVERFLOW), True),
    (None, False),
    (StreamError(ErrorCode.STREAM_CLOSED, "gone"), False),
    (ValueError("a bug"), False),
    (GeneratorExit(), False),
    (asyncio.CancelledError(), False),
]


@pytest.mark.parametrize(("exc", "kept"), _STOPS)
def test_only_a_gap_error_keeps_the_subscription_open(
    exc: BaseException | None, kept: bool
) -> None:
    left = (0, False) if kept else (1, True)  # CANCEL sent, closed
    sub, core = _sub("raise")
    handle: SubscriptionBase[bytes] = SubscriptionBase(FakeClient(), sub)  # type: ignore[arg-type]
    assert handle._stopped(exc) is kept
    assert (core.left, sub.closed) == left

    # The same around a generator's loop, as the loop ends or raises.
    sub, core = _sub("raise")
    handle = SubscriptionBase(FakeClient(), sub)  # type: ignore[arg-type]
    if exc is None:
        with handle._iterating():
            assert (core.left, sub.closed) == (0, False)  # not before the loop ends
    else:
        with pytest.raises(type(exc)) as caught, handle._iterating():
            raise exc
        assert caught.value is exc  # the exception goes on as it was
    assert (core.left, sub.closed) == left


def _iterator(backend: str, handle: Any, batches: bool) -> Any:
    if batches:
        return handle.batches()
    return iter(handle) if backend == "sync" else handle.__aiter__()


def _leave(backend: str, loop: list[Any]) -> None:
    """What leaving a loop early (``break``) does to its iterator (``loop``'s only item,
    which holds the last reference to it) on each backend."""
    if backend == "sync":
        loop[0].close()
    elif backend == "asyncio":  # the loop's async-generator finalizer closes it
        with pytest.raises(StopIteration):
            loop[0].aclose().send(None)
    else:  # trio: the iterator is dropped
        loop.clear()
        gc.collect()


def _handle(backend: str, sub: Any) -> Any:
    kind = {"sync": sync.Subscription, "asyncio": aio.Subscription, "trio": tri.Subscription}
    return kind[backend](FakeClient(), sub)


@pytest.mark.parametrize("batches", [False, True], ids=["items", "batches"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_gap_keeps_it_open_for_a_new_loop_and_leaving_that_one_closes_it(
    backend: str, batches: bool
) -> None:
    sub, core = _sub("raise")
    feed(sub, chunks(1, 2), GapReceived(1, 3, 4, GapReason.EVICTED), chunks(5, 2))
    handle = _handle(backend, sub)
    first = _iterator(backend, handle, batches)
    got = [step_once(backend, first)]
    if not batches:
        got.append(step_once(backend, first))
    assert got == ([[b"c1", b"c2"]] if batches else [b"c1", b"c2"])
    with pytest.raises(GapError):
        step_once(backend, first)
    del first  # dropped after the gap too (trio's iterator is not a generator)
    gc.collect()
    assert (core.left, sub.closed, sub.seq) == (0, False, 4)

    second = [_iterator(backend, handle, batches)]
    assert step_once(backend, second[0]) == ([b"c5", b"c6"] if batches else b"c5")
    assert (core.left, sub.closed) == (0, False)
    _leave(backend, second)
    assert (core.left, sub.closed) == (1, True)


@pytest.mark.parametrize("backend", BACKENDS)
def test_any_other_error_closes_it(backend: str) -> None:
    sub, core = _sub("raise")
    feed(sub, chunks(1, 1))  # b"c1" is not JSON
    handle = _handle(backend, sub).decoded(JSON)
    it = _iterator(backend, handle, batches=False)
    with pytest.raises(DecodeError):
        step_once(backend, it)
    assert (core.left, sub.closed) == (1, True)


def test_a_cancelled_trio_step_closes_it() -> None:
    sub, core = _sub("raise")
    it = tri.Subscription(FakeClient(), sub).__aiter__()  # type: ignore[arg-type]

    async def main() -> None:
        with trio.move_on_after(0):  # the step waits (nothing buffered) and is cancelled
            await it.__anext__()

    trio.run(main)
    assert (core.left, sub.closed) == (1, True)  # (``it`` is alive: not closed by a drop)
