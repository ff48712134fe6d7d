"""Stream history behind a small interface, and the in-memory implementation.

Rules for this file:

1. The hub keeps every stream's history (retained chunks, last seq, terminal outcome,
   generation) behind :class:`ReplayStore` and nothing else, so another store can replace
   :class:`MemoryStore` without changing the hub's semantics.
2. Each method is one atomic step on one stream, named after what assistant-stream's store
   does (acquire, append, read, finish, status, release). A store shared by several processes
   (Redis Streams) implements each as one server-side operation; an asynchronous store wraps
   itself in a synchronous facade with a local cache of the window (write-through), because
   the hub, like the core, never awaits.
3. Generations fence reuse: ``acquire`` returns a generation that every write must present;
   a writer holding an older generation gets STALE_GENERATION, never its successor's stream.
4. Memory is bounded by each stream's window (chunks and bytes); what falls out of it is
   gone, and readers learn where history now starts (``first_seq``) to report the gap.
5. A *shared* store (``shared`` is True: several processes write and read the same streams)
   holds locally only the streams this process produces or follows. What the hub lacks it
   asks for as an effect, the way a connection asks for a timer: :class:`Lookup` (a stream
   another process produces), :class:`CancelRemote` (the last local listener cancelled under
   the ABORT rule) and :class:`Erase` (a stream produced here was deleted), drained with
   ``Hub.store_requests()``. The adapter carries them out against the server and hands the
   answers back with ``Hub.handle_store_event``: :class:`StreamLoaded`,
   :class:`StreamAppended` (chunks or the outcome of a followed stream reached the local
   cache), :class:`AbortRequested` and :class:`StoreFailed`. The only
   synchronous question about other processes is ``followers(key)`` (as last heard), so the
   last cancel of a stream no other process follows aborts it at once, as in one process.
   The store's methods stay synchronous: writes go to the local cache and are carried to the
   server behind the hub's back, in order; a failure there comes back as :class:`StoreFailed`.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Protocol

import attrs

from ._errors import ErrorCode, LocalProtocolError

__all__ = [
    "AbortRequested",
    "CancelRemote",
    "Claim",
    "Erase",
    "Lookup",
    "MemoryStore",
    "Outcome",
    "Replay",
    "ReplayStore",
    "StoreEvent",
    "StoreFailed",
    "StoreRequest",
    "StreamAppended",
    "StreamClaimed",
    "StreamInfo",
    "StreamLoaded",
    "StreamStatus",
    "Window",
]


class StreamStatus(enum.Enum):
    """Where a stream is in its life."""

    OPEN = "open"
    ENDED = "ended"
    FAILED = "failed"
    #: Finished by the hub when the last subscriber's cancel aborted the producer (R-SUB-50):
    #: replayed as ERROR with the outcome's code (CANCELLED) and message, never as END.
    ABORTED = "aborted"


@attrs.frozen
class Window:
    """How much history a stream retains: at most ``chunks`` chunks and ``nbytes`` bytes
    (the newest chunk is kept even if it alone exceeds ``nbytes``, unless ``chunks`` is 0)."""

    chunks: int = 1024
    nbytes: int = 4 << 20


@attrs.frozen
class Outcome:
    """How a stream finished: ENDED, or FAILED or ABORTED with a code and message."""

    status: StreamStatus
    code: int = 0
    message: str = ""


@attrs.frozen
class StreamInfo:
    """A stream's status: generation, the seqs held (``first_seq > last_seq`` when none) and
    its outcome (None while open)."""

    generation: int
    first_seq: int
    last_seq: int
    outcome: Outcome | None


@attrs.frozen
class Replay:
    """Chunks read from history: ``chunks[i]`` has seq ``first_seq + i``. ``first_seq`` may be
    above the seq asked for when older chunks were evicted (a gap to report)."""

    first_seq: int
    chunks: tuple[bytes, ...]


Key = tuple[str, str]


@attrs.frozen
class Lookup:
    """Effect: find the stream ``key`` in the shared store (a subscribe named a stream this
    process neither produces nor follows), load its retained history (``window``) into the
    local cache, follow it, and answer with :class:`StreamLoaded`."""

    key: Key
    window: Window


@attrs.frozen
class CancelRemote:
    """Effect: the last local listener of ``key`` cancelled under the ABORT rule. Tell the
    producer's process (maybe this one), which aborts the stream if no process listens any
    more, and answers the producer's process with :class:`AbortRequested`."""

    key: Key
    generation: int
    reason: str


@attrs.frozen
class Claim:
    """Effect: an OPEN of the stream ``key`` (generation ``generation``, from ``acquire``)
    waits for its claim to be held by the shared server, in order with the stream's writes.
    Answer with :class:`StreamClaimed`, or with :class:`StoreFailed` when the server refuses
    it (STREAM_EXISTS: another process's producer holds the id; STORE_UNAVAILABLE)."""

    key: Key
    generation: int


@attrs.frozen
class Erase:
    """Effect: the stream ``key`` that this process produced was deleted (R-QUERY-4). Drop
    its history from the shared server once its outcome is there (in order with the
    stream's writes, so readers in other processes still end with STREAM_DELETED), so that
    no process finds it any more: a later lookup answers it missing. Nothing answers it."""

    key: Key
    generation: int


StoreRequest = Lookup | Claim | CancelRemote | Erase


@attrs.frozen
class StreamLoaded:
    """Answer to :class:`Lookup`: the store's ``status(key)`` now tells whether the stream
    exists (None: it does not), and ``read`` serves its history."""

    key: Key


@attrs.frozen
class StreamClaimed:
    """Answer to :class:`Claim`: the shared server holds generation ``generation`` of
    ``key``, so a lookup from any process finds it."""

    key: Key
    generation: int


@attrs.frozen
class StreamAppended:
    """Chunks, the outcome or both of a followed stream (generation ``generation``) reached
    the local cache."""

    key: Key
    generation: int


@attrs.frozen
class AbortRequested:
    """A cancel from some process reached the producer's: abort the stream if this process
    produces it (generation ``generation``) and nobody here listens to it."""

    key: Key
    generation: int
    reason: str


@attrs.frozen
class StoreFailed:
    """The shared store cannot keep a stream this process produces (fenced by a newer
    generation: STALE_GENERATION; reaped after a lost lease: PRODUCER_LOST; the server
    unreachable or its data lost: STORE_UNAVAILABLE): the stream fails locally with ``code``
    and the producer is stopped."""

    key: Key
    generation: int
    code: int
    message: str


StoreEvent = StreamLoaded | StreamClaimed | StreamAppended | AbortRequested | StoreFailed


class ReplayStore(Protocol):
    """Where the hub keeps stream history. Keys are ``(channel, stream_id)``.

    ``shared`` says whether several processes share the store (rule 5): the hub then asks
    for what it lacks through ``Hub.store_requests``. A store that is not shared sets it to
    False and answers ``followers`` with 0 (:class:`MemoryStore` does)."""

    #: Several processes write and read the same streams (rule 5).
    shared: bool

    def acquire(self, key: tuple[str, str], window: Window) -> int:
        """Create the stream (replacing a finished one) and return its new generation.
        Raises STREAM_EXISTS while a stream with this key is open."""

    def append(self, key: tuple[str, str], generation: int, chunk: bytes) -> int:
        """Append ``chunk``; return its seq. Raises STALE_GENERATION for an old generation
        and STREAM_CLOSED after ``finish``."""

    def read(self, key: tuple[str, str], after_seq: int, limit: int) -> Replay:
        """Up to ``limit`` retained chunks after ``after_seq``. Raises UNKNOWN_STREAM."""

    # A store may also have ``extend(key, generation, chunks) -> int``: append every chunk of
    # a non-empty sequence in one step and return the seq of the last (as :meth:`append`
    # does, and with the same state as that many appends left). The hub uses it for batches
    # when present (:meth:`MemoryStore.extend`) and calls ``append`` per chunk otherwise, so
    # stores written before it existed keep working.

    def finish(self, key: tuple[str, str], generation: int, outcome: Outcome) -> None:
        """Record the terminal outcome. Raises like ``append``."""

    def status(self, key: tuple[str, str]) -> StreamInfo | None:
        """The stream's status, or None if there is no such stream."""

    def release(self, key: tuple[str, str], generation: int) -> None:
        """Forget the stream of this generation (a no-op for another generation)."""

    def followers(self, key: tuple[str, str]) -> int:
        """How many other processes follow the stream ``key`` produced here, as last heard
        (0 for a store that is not shared). The last local cancel of a stream nobody else
        follows aborts it at once, as in one process; otherwise it becomes a
        :class:`CancelRemote`, and the producer's process aborts when the last one cancels."""


class _History:
    __slots__ = (
        "chunks",
        "first_seq",
        "generation",
        "head",
        "max_bytes",
        "max_chunks",
        "nbytes",
        "outcome",
        "window",
    )

    def __init__(self, generation: int, window: Window) -> None:
        self.generation = generation
        self.window = window
        self.max_chunks = window.chunks
        self.max_bytes = window.nbytes
        self.chunks: list[bytes] = []
        self.head = 0  # index in ``chunks`` of the oldest retained chunk
        self.first_seq = 1  # seq of chunks[head]
        self.nbytes = 0
        self.outcome: Outcome | None = None

    @property
    def last_seq(self) -> int:
        return self.first_seq + len(self.chunks) - self.head - 1


class MemoryStore:
    """The default :class:`ReplayStore`: history in this process's memory."""

    #: Not shared: one process's streams (see :class:`ReplayStore`).
    shared = False

    def __init__(self) -> None:
        self._streams: dict[tuple[str, str], _History] = {}
        self._generation = 0

    def __len__(self) -> int:
        return len(self._streams)

    def acquire(self, key: tuple[str, str], window: Window) -> int:
        """See :meth:`ReplayStore.acquire`."""
        old = self._streams.get(key)
        if old is not None and old.outcome is None:
            raise LocalProtocolError(ErrorCode.STREAM_EXISTS, f"stream {key[1]!r} is open")
        self._generation += 1
        self._streams[key] = _History(self._generation, window)
        return self._generation

    def _writable(self, key: tuple[str, str], generation: int) -> _History:
        h = self._streams.get(key)
        if h is None or h.generation != generation:
            raise LocalProtocolError(
                ErrorCode.STALE_GENERATION,
                f"stream {key[1]!r} generation {generation} was replaced or released",
            )
        if h.outcome is not None:
            raise LocalProtocolError(ErrorCode.STREAM_CLOSED, f"stream {key[1]!r} is closed")
        return h

    def append(self, key: tuple[str, str], generation: int, chunk: bytes) -> int:
        """See :meth:`ReplayStore.append`."""
        h = self._streams.get(key)
        if h is None or h.generation != generation or h.outcome is not None:
            h = self._writable(key, generation)  # raises
        chunks = h.chunks
        chunks.append(chunk)
        nbytes = h.nbytes = h.nbytes + len(chunk)
        retained = len(chunks) - h.head
        if retained > h.max_chunks or (nbytes > h.max_bytes and retained > 1):
            if retained - 1 == h.max_chunks and nbytes - len(chunks[h.head]) <= h.max_bytes:
                # The steady state of a full window: one in, one out.
                head = h.head
                h.nbytes = nbytes - len(chunks[head])
                chunks[head] = b""
                head += 1
                h.first_seq += 1
                if head > 64 and head * 2 > len(chunks):  # compact, as _evict does
                    del chunks[:head]
                    head = 0
                h.head = head
            else:
                self._evict(h)
        return h.first_seq + len(chunks) - h.head - 1

    def extend(self, key: tuple[str, str], generation: int, chunks: Sequence[bytes]) -> int:
        """Append every chunk of the non-empty ``chunks`` in one step; return the seq of the
        last. The history is as ``len(chunks)`` calls of :meth:`append` would leave it (the
        window evicts the oldest first, the batch's own chunks included). Raises like
        ``append``, before appending anything."""
        h = self._streams.get(key)
        if h is None or h.generation != generation or h.outcome is not None:
            h = self._writable(key, generation)  # raises
        held = h.chunks
        held += chunks
        h.nbytes += sum(map(len, chunks))
        retained = len(held) - h.head
        if retained > h.max_chunks or (h.nbytes > h.max_bytes and retained > 1):
            self._evict(h)
        return h.first_seq + len(held) - h.head - 1

    @staticmethod
    def _evict(h: _History) -> None:
        chunks = h.chunks
        max_chunks = h.max_chunks
        max_bytes = h.max_bytes
        head = h.head
        end = len(chunks)
        nbytes = h.nbytes
        if end - head > max_chunks:  # whole chunks beyond the count first: no sizes needed
            drop = end - head - max_chunks
            nbytes -= sum(map(len, chunks[head : head + drop]))
            chunks[head : head + drop] = [b""] * drop  # free them now: compaction may be later
            head += drop
        while nbytes > max_bytes and end - head > 1:
            nbytes -= len(chunks[head])
            chunks[head] = b""
            head += 1
        h.nbytes = nbytes
        h.first_seq += head - h.head
        if head > 64 and head * 2 > end:  # compact: amortized O(1) per chunk
            del chunks[:head]
            head = 0
        h.head = head

    def read(self, key: tuple[str, str], after_seq: int, limit: int) -> Replay:
        """See :meth:`ReplayStore.read`."""
        h = self._streams.get(key)
        if h is None:
            raise LocalProtocolError(ErrorCode.UNKNOWN_STREAM, f"no stream {key[1]!r}")
        start = max(after_seq + 1, h.first_seq)
        index = h.head + (start - h.first_seq)
        return Replay(start, tuple(h.chunks[index : index + max(limit, 0)]))

    def finish(self, key: tuple[str, str], generation: int, outcome: Outcome) -> None:
        """See :meth:`ReplayStore.finish`."""
        self._writable(key, generation).outcome = outcome

    def status(self, key: tuple[str, str]) -> StreamInfo | None:
        """See :meth:`ReplayStore.status`."""
        h = self._streams.get(key)
        if h is None:
            return None
        return StreamInfo(h.generation, h.first_seq, h.last_seq, h.outcome)

    def release(self, key: tuple[str, str], generation: int) -> None:
        """See :meth:`ReplayStore.release`."""
        h = self._streams.get(key)
        if h is not None and h.generation == generation:
            del self._streams[key]

    def followers(self, key: tuple[str, str]) -> int:
        """See :meth:`ReplayStore.followers`: no other process (the store is not shared)."""
        return 0
