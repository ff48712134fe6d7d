"""MemoryStore, the in-memory ReplayStore: windows, eviction and compaction, reads, generations.

With the hub tests this covers _store.py 100% (branches included); this file alone does too.
"""

from __future__ import annotations

import pytest

from streamproto import (
    ErrorCode,
    LocalProtocolError,
    MemoryStore,
    Outcome,
    Replay,
    ReplayStore,
    StreamInfo,
    StreamStatus,
    Window,
)

KEY = ("demo:tokens", "s1")


def raises(code: ErrorCode) -> pytest.RaisesExc[LocalProtocolError]:
    return pytest.raises(LocalProtocolError, match=rf"\[{code.name}\]")


def filled(window: Window, n: int, size: int = 1) -> tuple[MemoryStore, int]:
    store = MemoryStore()
    gen = store.acquire(KEY, window)
    for i in range(1, n + 1):
        assert store.append(KEY, gen, bytes([i % 256]) * size) == i
    return store, gen


def test_memory_store_is_a_replay_store() -> None:
    store: ReplayStore = MemoryStore()
    assert store.status(KEY) is None


def test_new_stream_holds_nothing() -> None:
    store = MemoryStore()
    gen = store.acquire(KEY, Window())
    assert len(store) == 1
    assert store.status(KEY) == StreamInfo(gen, first_seq=1, last_seq=0, outcome=None)
    assert store.read(KEY, 0, 10) == Replay(1, ())


def test_window_by_chunks() -> None:
    store, gen = filled(Window(chunks=3, nbytes=1000), 5)
    assert store.status(KEY) == StreamInfo(gen, 3, 5, None)
    assert store.read(KEY, 0, 10) == Replay(3, (b"\x03", b"\x04", b"\x05"))


def test_window_by_bytes() -> None:
    store, _ = filled(Window(chunks=100, nbytes=25), 5, size=10)
    info = store.status(KEY)
    assert info is not None
    assert (info.first_seq, info.last_seq) == (4, 5)  # 20 bytes fit, 30 would not


def test_newest_chunk_is_kept_even_if_it_alone_is_over_the_byte_window() -> None:
    store, _ = filled(Window(chunks=100, nbytes=5), 3, size=10)
    assert store.read(KEY, 0, 10) == Replay(3, (b"\x03" * 10,))


def test_window_of_zero_chunks_keeps_nothing_but_counts_seqs() -> None:
    store, _ = filled(Window(chunks=0, nbytes=100), 4)
    info = store.status(KEY)
    assert info is not None
    assert (info.first_seq, info.last_seq) == (5, 4)  # first > last: none held
    assert store.read(KEY, 0, 10) == Replay(5, ())


def test_eviction_compacts_the_list_and_keeps_seqs() -> None:
    # A long run through a small window: compaction happens many times (amortized O(1)), and
    # every read afterwards still maps seqs to the right chunks.
    store = MemoryStore()
    gen = store.acquire(KEY, Window(chunks=10, nbytes=1 << 20))
    for i in range(1, 1001):
        store.append(KEY, gen, i.to_bytes(2, "big"))
        info = store.status(KEY)
        assert info is not None
        assert info.last_seq == i
        assert info.first_seq == max(1, i - 9)
        replay = store.read(KEY, info.first_seq - 1, 100)
        assert replay.first_seq == info.first_seq
        assert [int.from_bytes(c, "big") for c in replay.chunks] == list(
            range(info.first_seq, i + 1)
        )


def test_read_after_and_limit() -> None:
    store, _ = filled(Window(chunks=100), 10)
    assert store.read(KEY, 3, 2) == Replay(4, (b"\x04", b"\x05"))
    assert store.read(KEY, 9, 5) == Replay(10, (b"\x0a",))
    assert store.read(KEY, 10, 5) == Replay(11, ())  # nothing after the last seq
    assert store.read(KEY, 3, 0) == Replay(4, ())
    assert store.read(KEY, 3, -1) == Replay(4, ())  # a negative limit reads nothing


def test_read_before_first_seq_starts_at_first_seq() -> None:
    store, _ = filled(Window(chunks=4), 10)
    replay = store.read(KEY, 2, 100)
    assert replay.first_seq == 7  # the reader reports a gap 3..6
    assert len(replay.chunks) == 4


def test_read_of_unknown_stream() -> None:
    with raises(ErrorCode.UNKNOWN_STREAM):
        MemoryStore().read(KEY, 0, 1)


def test_read_shares_the_appended_objects() -> None:
    store = MemoryStore()
    gen = store.acquire(KEY, Window())
    chunk = b"x" * 100
    store.append(KEY, gen, chunk)
    assert store.read(KEY, 0, 1).chunks[0] is chunk  # no copy in the store


def test_finish_records_the_outcome_and_closes_the_stream() -> None:
    store, gen = filled(Window(), 2)
    failed = Outcome(StreamStatus.FAILED, 1234, "boom")
    store.finish(KEY, gen, failed)
    assert store.status(KEY) == StreamInfo(gen, 1, 2, failed)
    with raises(ErrorCode.STREAM_CLOSED):
        store.append(KEY, gen, b"late")
    with raises(ErrorCode.STREAM_CLOSED):
        store.finish(KEY, gen, Outcome(StreamStatus.ENDED))
    assert store.read(KEY, 0, 10) == Replay(1, (b"\x01", b"\x02"))  # still readable


def test_acquire_while_open_is_refused() -> None:
    store, gen = filled(Window(), 1)
    with raises(ErrorCode.STREAM_EXISTS):
        store.acquire(KEY, Window())
    assert store.status(KEY) == StreamInfo(gen, 1, 1, None)  # untouched


def test_acquire_after_finish_is_a_new_generation_and_fences_the_old_one() -> None:
    store, old = filled(Window(), 3)
    store.finish(KEY, old, Outcome(StreamStatus.ENDED))
    new = store.acquire(KEY, Window())
    assert new > old
    assert store.status(KEY) == StreamInfo(new, 1, 0, None)  # a fresh history
    with raises(ErrorCode.STALE_GENERATION):
        store.append(KEY, old, b"stale")
    with raises(ErrorCode.STALE_GENERATION):
        store.finish(KEY, old, Outcome(StreamStatus.ENDED))
    assert store.append(KEY, new, b"fresh") == 1
    assert store.read(KEY, 0, 10) == Replay(1, (b"fresh",))  # nothing stale leaked in


def test_acquire_after_release_is_a_new_generation() -> None:
    store, old = filled(Window(), 1)
    store.finish(KEY, old, Outcome(StreamStatus.ENDED))
    store.release(KEY, old)
    assert store.status(KEY) is None
    assert len(store) == 0
    new = store.acquire(KEY, Window())
    assert new != old
    with raises(ErrorCode.STALE_GENERATION):
        store.append(KEY, old, b"stale")


def test_generations_are_unique_across_keys() -> None:
    store = MemoryStore()
    a = store.acquire(("a:b", "1"), Window())
    b = store.acquire(("a:b", "2"), Window())
    assert a != b


def test_append_to_a_released_or_unknown_stream_is_stale() -> None:
    store = MemoryStore()
    with raises(ErrorCode.STALE_GENERATION):
        store.append(KEY, 1, b"x")


def test_release_of_another_generation_is_a_no_op() -> None:
    store, old = filled(Window(), 1)
    store.finish(KEY, old, Outcome(StreamStatus.ENDED))
    new = store.acquire(KEY, Window())
    store.release(KEY, old)  # the old generation is gone already: the new one stays
    assert store.status(KEY) == StreamInfo(new, 1, 0, None)
    store.release(("a:b", "never"), 1)  # unknown key: nothing happens
    assert len(store) == 1
    store.release(KEY, new)
    assert len(store) == 0
