"""The item iterators (``async for chunk in sub``, ``for chunk in sub``) hand out what has
arrived from slices of the buffer (``SubscriptionCore.take_slice``) instead of a ``poll`` per
chunk. Nothing may tell the difference: the property drives each backend's real iterator and
a reader that polls one chunk at a time through the same arrivals (runs, gaps, a lost
connection, between any two chunks) and compares, after every chunk, the item, ``sub.seq``
and every credit report made so far.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_batches import FakeCore, chunks, feed, make_sub

from streamproto import JSON, GapReason, GapReceived
from transports import Gap, sync
from transports import asyncio as aio
from transports import trio as tri
from transports._common import _CREDIT_BATCH, SubscriptionCore, _Outcome

BACKENDS = ["asyncio", "trio", "sync"]


class FakeClient:
    """What a subscription asks of its client: a lock, and a wake for credit to go out."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self.wakes = 0

    def _wake(self) -> None:
        self.wakes += 1


class LeavingCore(FakeCore):
    def __init__(self) -> None:
        super().__init__()
        self.left = 0

    def _leave(self, sub: SubscriptionCore, *, unsubscribe: bool) -> None:
        self.left += 1


def _sub(on_gap: str = "item") -> tuple[SubscriptionCore, LeavingCore]:
    sub, _ = make_sub(on_gap)
    core = LeavingCore()
    sub.core = core  # type: ignore[assignment]
    return sub, core


def step_once(backend: str, it: Any) -> Any:
    """One step of ``backend``'s iterator ``it``, which must have something to hand out (a
    step never waits here)."""
    if backend == "sync":
        return next(it)
    coro = it.__anext__()
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    raise AssertionError("the iterator waited with an item buffered")


def _stepper(
    backend: str, core: SubscriptionCore, client: FakeClient | None = None
) -> tuple[Callable[[], Any], Any]:
    """One step of ``backend``'s item iterator on ``core`` (which must have something to hand
    out: a step never waits here), and the subscription."""
    client = client or FakeClient()
    if backend == "sync":
        sub: Any = sync.Subscription(client, core)  # type: ignore[arg-type]
        it = iter(sub)
    else:
        sub = (aio.Subscription if backend == "asyncio" else tri.Subscription)(client, core)  # type: ignore[arg-type]
        it = sub.__aiter__()
    return lambda: step_once(backend, it), sub


arrivals = st.one_of(
    st.integers(1, 3 * _CREDIT_BATCH).map(lambda n: ("data", n)),
    st.integers(1, 5).map(lambda n: ("gap", n)),
    st.just(("lost", 0)),
)
scripts = st.lists(
    st.one_of(arrivals, st.integers(1, 2 * _CREDIT_BATCH).map(lambda n: ("read", n))),
    max_size=24,
)


@given(st.sampled_from(BACKENDS), scripts)
def test_slices_hand_out_what_poll_would(backend: str, script: list[tuple[str, int]]) -> None:
    ref, ref_core = _sub()
    real, real_core = _sub()
    step, _sub_obj = _stepper(backend, real)
    seq = 1
    for kind, n in script:
        if kind == "read":
            for _ in range(n):
                expected = ref.poll()
                if expected is None:
                    break
                got = step()
                assert got == expected
                assert real.seq == ref.seq
                assert real_core.consumed == ref_core.consumed
            continue
        for sub in (ref, real):
            if kind == "data":
                feed(sub, chunks(seq, n))
            elif kind == "gap":
                feed(sub, GapReceived(1, seq, seq + n - 1, GapReason.EVICTED))
            else:  # what ClientCore.lost does to a subscription
                sub.stale_seq = sub.received_seq
                sub.owed_chunks = sub.owed_bytes = 0
        seq += n


def test_a_slice_ends_where_the_credit_batch_does() -> None:
    sub, core = _sub()
    feed(sub, chunks(1, 3 * _CREDIT_BATCH))
    found = sub.take_slice()
    assert found is not None
    run, end = found
    assert (run.pos, end, len(sub.buffer)) == (0, _CREDIT_BATCH, 1)  # nothing taken yet
    sub.handed_slice(run, 0, end, last=True)
    assert (run.pos, sub.seq) == (_CREDIT_BATCH, _CREDIT_BATCH)
    assert core.consumed == [(_CREDIT_BATCH, sum(map(len, run.chunks[:end])))]
    assert sub.reported


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_iterator_left_behind_leaves_the_rest_in_the_buffer(backend: str) -> None:
    # ``await sub.__aiter__().__anext__()`` once per chunk: each new iterator goes on where
    # the last one stopped, while the old ones are still alive.
    sub, core = _sub()
    feed(sub, chunks(1, 10))
    kept = []
    client = FakeClient()
    for seq in range(1, 11):
        step, _handle = _stepper(backend, sub, client)
        kept.append(step)
        assert step() == b"c%d" % seq
        assert sub.seq == seq
    assert not sub.buffer
    # (the credit of a chunk an iterator left behind is owed once that iterator ends)
    assert sum(c for c, _ in core.consumed) <= 10


def _one_of_ten(backend: str) -> tuple[SubscriptionCore, LeavingCore, Callable[[], Any], Any]:
    """A subscription with ten chunks buffered, and ``backend``'s iterator after its first."""
    sub, core = _sub()
    feed(sub, chunks(1, 10))
    step, handle = _stepper(backend, sub)
    assert step() == b"c1"
    return sub, core, step, handle


def test_no_slice_for_a_gap_or_decoded_payloads() -> None:
    sub, _ = _sub()
    feed(sub, GapReceived(1, 1, 2, GapReason.EVICTED), chunks(3, 2))
    assert sub.take_slice() is None
    assert isinstance(sub.poll(), Gap)
    sub.codec = JSON
    assert sub.take_slice() is None
    assert sub.take_slice() is None


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_cancel_stops_a_slice_being_handed_out(backend: str) -> None:
    _sub_core, core, step, handle = _one_of_ten(backend)
    handle.close()
    assert core.left == 1
    with pytest.raises((StopIteration, StopAsyncIteration)):
        step()


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_slice_stops_where_another_reader_took_over(backend: str) -> None:
    sub, core, step, _handle = _one_of_ten(backend)
    assert sub.poll() == b"c2"  # another reader (a batches() loop, say) took one
    assert step() == b"c3"
    assert sub.seq == 3
    assert sub.take_many(10) == [b"c%d" % i for i in range(4, 11)]
    sub.outcome = _Outcome.ENDED
    with pytest.raises((StopIteration, StopAsyncIteration)):
        step()
    # Every chunk's credit was reported or is owed (c3's, since that slice stopped).
    assert sum(c for c, _ in core.consumed) + sub.owed_chunks == 10
