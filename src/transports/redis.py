"""A replay store on Redis Streams, shared by every server process that points at one Redis.

    store = RedisStore("redis://127.0.0.1:6379/0")
    hub = new_hub(store=store)
    server = await transports.asyncio.serve(hub, "tcp://0.0.0.0:9000")
    async with open_asyncio_driver(store, server):
        ...

Rules for this file:

1. :class:`RedisStore` is the hub's synchronous :class:`~streamproto.ReplayStore`
   (``shared = True``, see ``streamproto/_store.py`` rule 5). It answers from a local copy of
   each stream this process produces or follows, bounded by the stream's window; a write
   lands in the copy at once and is queued for Redis, in order, bounded by
   ``max_pending_bytes`` (beyond it the write raises STORE_UNAVAILABLE: bounded buffering, a
   clear error, nothing accepted and dropped).
2. The driver (:class:`_Driver`, one per process) does all I/O on ``redis.asyncio``: it
   carries the hub's requests out, flushes the queue as pipelined script calls, keeps one
   ``XREAD BLOCK`` connection that multiplexes every followed stream (rule 5 on a Cluster),
   renews the leases of the streams it produces, reaps the streams whose producer's lease
   expired, and listens on one pub/sub channel for cancels. It touches the hub and the
   copies only through ``call``: the backend's loop (asyncio), lock (threads) or
   ``trio.from_thread`` (trio).
3. Every decision that involves another process is one Lua script on the Redis server, so it
   is atomic there: claiming a stream id (``claim``: fenced by generation, refused while
   another process's producer holds its lease), appending (``add``: only the holder of the
   current generation, only the next seqs, idempotent on retry), finishing, erasing (a
   DELETE: the chunks go, the outcome stays for the readers tailing it, and lookups find
   nothing), renewing, reaping and cancelling.
4. Layout, one hash tag per stream so that every key of a stream is in one Cluster slot:
   ``<prefix>:{<channel>/<id>}:m`` (hash: gen, status, code, msg, first, last, and deleted
   once erased), ``:s`` (the
   stream: entry ``<seq>-0`` holds chunk ``seq`` in field ``d``, entry ``<last>-1`` the
   outcome), ``:l`` (the producer's lease, a key with a TTL) and ``:w`` (processes that
   follow it). Cancels travel on ``<prefix>:ctl``.
5. On a Redis Cluster (``redis+cluster://``) every script still touches one stream's keys,
   so one slot; pipelines are split by node. One XREAD may only name keys of one slot, so
   the single blocking read of rule 2 cannot exist there: the scripts announce each write
   with SPUBLISH on the stream's ``:n`` channel (sharded pub/sub: it stays in the shard),
   the driver keeps one pub/sub connection per node subscribed to the channels of the
   streams it follows there, and reads the announced streams with non-blocking XREADs,
   pipelined. Housekeeping reads every followed stream once per ``lease / 3``, so a notice
   lost to a reconnect or a slot migration delays chunks and loses none.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import itertools
import json
import logging
import secrets
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

import redis.asyncio as aredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError, RedisError

from streamproto import (
    AbortRequested,
    CancelRemote,
    Claim,
    Erase,
    ErrorCode,
    Hub,
    LocalProtocolError,
    Lookup,
    Outcome,
    Replay,
    StoreFailed,
    StoreRequest,
    StreamAppended,
    StreamClaimed,
    StreamInfo,
    StreamLoaded,
    StreamStatus,
    Window,
)

__all__ = ["RedisStore", "open_asyncio_driver", "open_thread_driver", "open_trio_driver"]

log = logging.getLogger("streamproto.redis")

Key = tuple[str, str]
T = TypeVar("T")

#: Chunks read per XREAD reply, and per lookup beyond the window (the outcome entry).
READ_COUNT = 1024

_WRITE = """
local m, s, l = KEYS[1], KEYS[2], KEYS[3]
local op, gen = ARGV[1], ARGV[2]
local cur = redis.call('HMGET', m, 'gen', 'status', 'last')
if op == 'claim' then
  if cur[1] == gen then return 'OK' end
  if cur[1] and cur[2] == 'open' and redis.call('EXISTS', l) == 1 then return 'EXISTS' end
  redis.call('DEL', s, m, l)
  redis.call('HSET', m, 'gen', gen, 'status', 'open', 'first', 1, 'last', 0)
  redis.call('SET', l, gen, 'PX', ARGV[3])
  return 'OK'
end
if op == 'erase' then
  -- A DELETE (after the outcome, which stays for the readers tailing it): its chunks go,
  -- and a lookup finds nothing. Another generation, or one still open, is not erased.
  if cur[1] == gen and cur[2] ~= 'open' then
    redis.call('XTRIM', s, 'MINID', cur[3] .. '-1')
    redis.call('HSET', m, 'deleted', 1)
  end
  return 'OK'
end
if cur[1] ~= gen then return 'STALE' end
if cur[2] ~= 'open' then
  if op == 'finish' and cur[2] == ARGV[3] then return 'OK' end
  return 'CLOSED'
end
local last = tonumber(cur[3])
if op == 'add' then
  local first = tonumber(ARGV[3])
  if first > last + 1 then return 'LOST' end
  for i = 5, #ARGV do
    local seq = first + i - 5
    if seq > last then
      redis.call('XADD', s, seq .. '-0', 'd', ARGV[i])
      last = seq
    end
  end
  redis.call('XTRIM', s, 'MINID', ARGV[4])
  redis.call('HSET', m, 'last', last, 'first', ARGV[4])
  if KEYS[4] then redis.call('SPUBLISH', KEYS[4], last) end
  return 'OK'
elseif op == 'finish' then
  if tonumber(ARGV[6]) ~= last then return 'LOST' end
  redis.call('XADD', s, last .. '-1', 'o', ARGV[3], 'c', ARGV[4], 'm', ARGV[5])
  redis.call('HSET', m, 'status', ARGV[3], 'code', ARGV[4], 'msg', ARGV[5])
  redis.call('PEXPIRE', m, ARGV[7])
  redis.call('PEXPIRE', s, ARGV[7])
  redis.call('DEL', l)
  if KEYS[4] then redis.call('SPUBLISH', KEYS[4], last) end
  return 'OK'
end
redis.call('SET', l, gen, 'PX', ARGV[3])
return 'OK'
"""

# KEYS: m, s, l (, n on a Cluster); ARGV: code, message, retention ms. Fails an open stream
# whose lease is gone.
_REAP = """
local m, s, l = KEYS[1], KEYS[2], KEYS[3]
local cur = redis.call('HMGET', m, 'gen', 'status', 'last')
if not cur[1] then return {'', 'gone'} end
if cur[2] ~= 'open' then return {cur[1], cur[2]} end
if redis.call('EXISTS', l) == 1 then return {cur[1], 'open'} end
local msg = ARGV[2] .. ' (last seq ' .. cur[3] .. ')'
redis.call('XADD', s, cur[3] .. '-1', 'o', 'failed', 'c', ARGV[1], 'm', msg)
redis.call('HSET', m, 'status', 'failed', 'code', ARGV[1], 'msg', msg)
redis.call('PEXPIRE', m, ARGV[3])
redis.call('PEXPIRE', s, ARGV[3])
if KEYS[4] then redis.call('SPUBLISH', KEYS[4], cur[3]) end
return {cur[1], 'failed'}
"""

# KEYS: w; ARGV: this process, control channel, payload. The last follower's cancel publishes.
_CANCEL = """
redis.call('HDEL', KEYS[1], ARGV[1])
if redis.call('HLEN', KEYS[1]) == 0 then redis.call('PUBLISH', ARGV[2], ARGV[3]) end
return 'OK'
"""

_STATUS = {s.value: s for s in StreamStatus}
_DELETED_CODE = b"%d" % ErrorCode.STREAM_DELETED
_SCRIPTS = {"write": _WRITE, "reap": _REAP, "cancel": _CANCEL}
#: Scripts by name -> SHA1, what EVALSHA names them by (loaded where Redis answers NOSCRIPT).
_SHAS = {
    name: hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()
    for name, text in _SCRIPTS.items()
}
_CLUSTER_SCHEME = "redis+cluster://"


class _Copy:
    """This process's copy of one stream: the retained window, the outcome."""

    __slots__ = (
        "chunks",
        "claimed",
        "first_seq",
        "generation",
        "local",
        "nbytes",
        "outcome",
        "window",
    )

    def __init__(self, generation: int, window: Window, *, local: bool) -> None:
        self.generation = generation
        self.window = window
        self.local = local  # produced here (else followed)
        self.chunks: deque[bytes] = deque()
        self.first_seq = 1
        self.nbytes = 0
        self.outcome: Outcome | None = None
        #: The driver's: Redis answered this generation's claim (True: held; False: refused).
        self.claimed: bool | None = None

    @property
    def last_seq(self) -> int:
        return self.first_seq + len(self.chunks) - 1

    def add(self, chunk: bytes) -> int:
        chunks = self.chunks
        chunks.append(chunk)
        self.nbytes += len(chunk)
        window = self.window
        while chunks and (
            len(chunks) > window.chunks or (self.nbytes > window.nbytes and len(chunks) > 1)
        ):
            self.nbytes -= len(chunks.popleft())
            self.first_seq += 1
        return self.last_seq

    def receive(self, seq: int, chunk: bytes) -> None:
        """A followed stream's chunk ``seq`` from Redis (older or repeated ones are skipped;
        after a hole, history restarts at ``seq``: readers get the gap)."""
        if seq <= self.last_seq:
            return
        if seq > self.last_seq + 1:
            self.chunks.clear()
            self.nbytes = 0
            self.first_seq = seq
        self.add(chunk)


class RedisStore:
    """A :class:`~streamproto.ReplayStore` on Redis Streams, shared by every process that
    uses the same Redis (``url``, ``redis://host:port/db``) and ``prefix``.

    ``lease`` (seconds): how long a producing process may go without renewing before its open
    streams fail with PRODUCER_LOST in every process. ``retention`` (seconds): how long Redis
    keeps a finished stream (``EXPIRE``). ``max_pending_bytes``: chunks buffered for Redis at
    most; a write beyond it raises STORE_UNAVAILABLE. ``unavailable_after`` (seconds): how long
    Redis may stay unreachable before the streams this process produces or follows fail with
    STORE_UNAVAILABLE.

    A ``redis+cluster://host:port`` url (any node) or ``cluster=True`` uses a Redis Cluster:
    every key of a stream is in one slot (rule 4), and the driver tails the streams it
    follows through one sharded pub/sub connection per node (rule 5).

    It does no I/O itself: run its driver with :func:`open_asyncio_driver`,
    :func:`open_thread_driver` or :func:`open_trio_driver`.
    """

    shared = True

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "sp",
        lease: float = 5.0,
        retention: float = 60.0,
        max_pending_bytes: int = 16 << 20,
        unavailable_after: float = 10.0,
        cluster: bool = False,
    ) -> None:
        if lease <= 0 or retention <= 0 or unavailable_after <= 0:
            raise LocalProtocolError(
                ErrorCode.INVALID_ARGUMENT, "lease, retention and unavailable_after must be > 0"
            )
        if url.startswith(_CLUSTER_SCHEME):
            url, cluster = "redis://" + url.removeprefix(_CLUSTER_SCHEME), True
        self.url = url
        #: Whether ``url`` names a node of a Redis Cluster.
        self.cluster = cluster
        self.prefix = prefix
        self.lease = lease
        self.retention = retention
        self.max_pending_bytes = max_pending_bytes
        self.unavailable_after = unavailable_after
        #: This process's name in the store (who follows a stream).
        self.process_id = secrets.token_hex(8)
        self._copies: dict[Key, _Copy] = {}
        self._followers: dict[Key, set[str]] = {}  # of the streams produced here
        self._ops: deque[tuple[Any, ...]] = deque()
        self._ops_lock = threading.Lock()
        self.pending_bytes = 0
        self._inflight = 0  # ops taken by the driver, not answered yet
        #: Set by the driver: called (from the hub's context) when ops were queued.
        self.kick: Callable[[], None] = lambda: None

    # -- keys -----------------------------------------------------------------------------------

    def keys(self, key: Key) -> tuple[str, str, str, str]:
        """The Redis keys of a stream: meta, stream, lease, followers (one hash tag)."""
        base = f"{self.prefix}:{{{key[0]}/{key[1]}}}"
        return f"{base}:m", f"{base}:s", f"{base}:l", f"{base}:w"

    @property
    def control_channel(self) -> str:
        """The pub/sub channel cancels travel on."""
        return f"{self.prefix}:ctl"

    # -- ReplayStore ----------------------------------------------------------------------------

    def acquire(self, key: Key, window: Window) -> int:
        """See :meth:`streamproto.ReplayStore.acquire`. The claim is queued for Redis ahead of
        the stream's writes (the hub holds an OPEN's ACCEPT until the driver answers its
        :class:`~streamproto.Claim`); another process's open stream with this id fails it
        with STREAM_EXISTS."""
        copy = self._copies.get(key)
        if copy is not None and copy.outcome is None:
            raise LocalProtocolError(ErrorCode.STREAM_EXISTS, f"stream {key[1]!r} is open")
        # Unique across processes without a round trip; < 2**53 so Lua's numbers hold it.
        generation = secrets.randbits(52) + 1
        self._copies[key] = _Copy(generation, window, local=True)
        self._followers.pop(key, None)
        self._queue(("claim", key, generation), 0)
        return generation

    def _writable(self, key: Key, generation: int, nbytes: int) -> _Copy:
        copy = self._copies.get(key)
        if copy is None or copy.generation != generation:
            raise LocalProtocolError(
                ErrorCode.STALE_GENERATION,
                f"stream {key[1]!r} generation {generation} was replaced or released",
            )
        if copy.outcome is not None:
            code = copy.outcome.code if copy.outcome.status is StreamStatus.FAILED else 0
            if code in (ErrorCode.STALE_GENERATION, ErrorCode.STORE_UNAVAILABLE):
                raise LocalProtocolError(code, f"stream {key[1]!r}: {copy.outcome.message}")
            raise LocalProtocolError(ErrorCode.STREAM_CLOSED, f"stream {key[1]!r} is closed")
        if self.pending_bytes + nbytes > self.max_pending_bytes:
            raise LocalProtocolError(
                ErrorCode.STORE_UNAVAILABLE,
                f"{self.pending_bytes} B wait for redis already (max_pending_bytes)",
            )
        return copy

    def append(self, key: Key, generation: int, chunk: bytes) -> int:
        """See :meth:`streamproto.ReplayStore.append`. Raises STORE_UNAVAILABLE when
        ``max_pending_bytes`` wait for Redis already."""
        copy = self._writable(key, generation, len(chunk))
        seq = copy.add(chunk)
        self._queue(("add", key, generation, seq, [chunk]), len(chunk))
        return seq

    def extend(self, key: Key, generation: int, chunks: list[bytes]) -> int:
        """Append every chunk of ``chunks`` in one step (see ``append``)."""
        nbytes = sum(map(len, chunks))
        copy = self._writable(key, generation, nbytes)
        first = copy.last_seq + 1
        for chunk in chunks:
            copy.add(chunk)
        self._queue(("add", key, generation, first, list(chunks)), nbytes)
        return copy.last_seq

    def read(self, key: Key, after_seq: int, limit: int) -> Replay:
        """See :meth:`streamproto.ReplayStore.read`."""
        copy = self._copies.get(key)
        if copy is None:
            raise LocalProtocolError(ErrorCode.UNKNOWN_STREAM, f"no stream {key[1]!r}")
        start = max(after_seq + 1, copy.first_seq)
        index = start - copy.first_seq
        chunks = copy.chunks
        return Replay(start, tuple(itertools.islice(chunks, index, index + max(limit, 0))))

    def finish(self, key: Key, generation: int, outcome: Outcome) -> None:
        """See :meth:`streamproto.ReplayStore.finish`."""
        copy = self._writable(key, generation, 0)
        copy.outcome = outcome
        self._queue(("finish", key, generation, outcome, copy.last_seq), 0)

    def status(self, key: Key) -> StreamInfo | None:
        """See :meth:`streamproto.ReplayStore.status` (this process's copy)."""
        copy = self._copies.get(key)
        if copy is None:
            return None
        return StreamInfo(copy.generation, copy.first_seq, copy.last_seq, copy.outcome)

    def release(self, key: Key, generation: int) -> None:
        """Forget this process's copy (Redis keeps a finished stream for ``retention``)."""
        copy = self._copies.get(key)
        if copy is not None and copy.generation == generation:
            del self._copies[key]
            self._followers.pop(key, None)
            if not copy.local:
                self._queue(("unfollow", key, generation), 0)

    def followers(self, key: Key) -> int:
        """How many other processes follow the stream ``key`` produced here (as last heard
        on the control channel, refreshed with each lease renewal)."""
        return len(self._followers.get(key, ()))

    @property
    def flushed(self) -> bool:
        """Whether every write accepted so far has been answered by Redis."""
        with self._ops_lock:
            return not self._ops and not self._inflight

    def statistics(self) -> dict[str, int]:
        """Counters: streams copied here (produced, followed), ops and bytes waiting."""
        produced = sum(c.local for c in self._copies.values())
        return {
            "produced": produced,
            "followed": len(self._copies) - produced,
            "pending_ops": len(self._ops),
            "pending_bytes": self.pending_bytes,
        }

    # -- the driver's side ----------------------------------------------------------------------

    def _queue(self, op: tuple[Any, ...], nbytes: int) -> None:
        with self._ops_lock:
            self._ops.append(op)
            self.pending_bytes += nbytes
        self.kick()

    def _take_ops(self, *, carried: bool = True) -> list[tuple[Any, ...]]:
        with self._ops_lock:
            ops = list(self._ops)
            self._ops.clear()
            if carried:
                self._inflight += len(ops)
            return ops

    def _answered(self, ops: list[tuple[Any, ...]]) -> None:
        with self._ops_lock:
            self._inflight -= len(ops)

    def _done(self, nbytes: int) -> None:
        with self._ops_lock:
            self.pending_bytes -= nbytes

    def _requeue(self, ops: list[tuple[Any, ...]]) -> None:
        with self._ops_lock:
            self._ops.extendleft(reversed(ops))
            self._inflight -= len(ops)


def _entry_seq(entry_id: bytes) -> tuple[int, bool]:
    ms, _, sub = entry_id.partition(b"-")
    return int(ms), sub != b"0"


def _outcome(fields: dict[bytes, bytes]) -> Outcome:
    try:
        status = _STATUS[fields[b"o"].decode()]
        return Outcome(status, int(fields.get(b"c", b"0")), fields.get(b"m", b"").decode())
    except (KeyError, ValueError, UnicodeDecodeError):
        # Not written by this module: fail readers with a code rather than guess.
        return Outcome(
            StreamStatus.FAILED, ErrorCode.STORE_UNAVAILABLE, f"unreadable outcome {fields!r:.80}"
        )


class _Driver:
    """The I/O of one process's :class:`RedisStore` (rule 2)."""

    def __init__(
        self,
        store: RedisStore,
        hub: Hub,
        call: Callable[[Callable[[], Any]], Any],
        kick: Callable[[Callable[[], None]], Callable[[], None]],
    ) -> None:
        self.store = store
        self.hub = hub
        self._call = call  # run a function in the hub's context, return its result
        self.kick_factory = kick
        self.wake = asyncio.Event()
        self.follow_changed = asyncio.Event()
        # Any: redis.asyncio's Redis or RedisCluster, used through the commands they share.
        self.client: Any
        self.reader: aredis.Redis | None = None
        if store.cluster:
            self.client = RedisCluster.from_url(store.url)
            # Cancels and follow news: plain pub/sub reaches every node of a Cluster.
            self.control: aredis.Redis = aredis.Redis.from_url(store.url)
        else:
            self.client = self.control = aredis.Redis.from_url(store.url)
            self.reader = aredis.Redis.from_url(store.url, single_connection_client=True)
        self.reader_id: int | None = None
        # Cluster: one sharded pub/sub per node (rule 5), and the followed streams to read.
        self.listeners: dict[str, _Listener] = {}
        self.dirty: set[bytes] = set()
        self.reading = False
        self.stopped = False
        # Redis stream key -> (store key, generation, last entry id read)
        self.follow: dict[bytes, tuple[Key, int, bytes]] = {}
        self.down_since: float | None = None
        # The hub's requests, each kept until carried out (a failed lookup is retried).
        self.requests: deque[StoreRequest] = deque()
        # Claims the hub waits on whose answer has not come back from Redis yet.
        self.awaiting: set[tuple[Key, int]] = set()

    def call(self, fn: Callable[[], Any]) -> Any:
        """``fn()`` in the hub's context; nothing once stopped (the hub's loop may be
        waiting for this driver to end)."""
        return None if self.stopped else self._call(fn)

    # -- the loops ------------------------------------------------------------------------------

    async def run(self) -> None:
        wake = self.kick_factory(self.wake.set)
        self.store.kick = wake
        self.hub.on_store_request = wake
        self.wake.set()  # what was queued before the driver ran
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._writer())
                tasks.create_task(self._tail())
                tasks.create_task(self._housekeeping())
                tasks.create_task(self._control())
        except Exception:
            log.exception("the redis store's driver failed")
            raise
        finally:
            self.store.kick = lambda: None
            self.hub.on_store_request = None
            for listener in list(self.listeners.values()):
                await listener.close()
            await self.client.aclose()
            if self.control is not self.client:
                await self.control.aclose()
            if self.reader is not None:
                await self.reader.aclose()

    async def _writer(self) -> None:
        while not self.stopped:
            await self.wake.wait()
            self.wake.clear()
            try:
                self.requests.extend(self.call(self.hub.store_requests) or ())
                while self.requests:
                    request = self.requests[0]
                    await self._carry(request)
                    if self.requests and self.requests[0] is request:  # (_give_up clears)
                        self.requests.popleft()
                await self._flush()
                self._up()
            except (RedisError, OSError) as exc:
                self._down(exc)
                await asyncio.sleep(0.2)
                self.wake.set()
            except Exception:  # a bug must not stop the store: log it, keep serving
                log.exception("the redis store's writer failed")
                await asyncio.sleep(0.2)

    async def _tail(self) -> None:
        """One XREAD BLOCK for every followed stream (rule 2)."""
        if self.reader is None:
            await self._tail_cluster()
            return
        while not self.stopped:
            if not self.follow:
                self.follow_changed.clear()
                await self.follow_changed.wait()
                continue
            try:
                reader = self.reader
                if self.reader_id is None:
                    self.reader_id = int(await reader.client_id())
                streams = {k: v[2] for k, v in self.follow.items()}
                self.follow_changed.clear()
                if not streams:  # let go while CLIENT ID was awaited (a STATUS's lookup)
                    continue
                self.reading = True
                try:
                    reply = await reader.xread(streams, count=READ_COUNT, block=5000)  # type: ignore[arg-type]
                finally:
                    self.reading = False
                self._up()
            except (RedisError, OSError) as exc:
                self.reader_id = None
                self._down(exc)
                await asyncio.sleep(0.2)
                continue
            if reply:
                self.call(functools.partial(self._apply, reply))

    async def _tail_cluster(self) -> None:
        """Rule 5: on a Cluster one XREAD names the keys of one slot only, and every stream
        has a slot of its own, so no single blocking read can cover the followed streams.
        Instead the scripts SPUBLISH on the stream's ``:n`` channel after each write; one
        sharded pub/sub connection per node subscribes to the channels of the followed
        streams that node holds (:class:`_Listener`) and marks a stream *dirty* when told;
        this loop then reads the dirty streams from where it stopped, one non-blocking XREAD
        each, pipelined (the pipeline groups them by node)."""
        while not self.stopped:
            await self.follow_changed.wait()
            self.follow_changed.clear()
            reading: list[tuple[bytes, bytes]] = []
            try:
                await self._subscribe_followed()
                dirty, self.dirty = self.dirty, set()
                reading = [(k, self.follow[k][2]) for k in dirty if k in self.follow]
                if not reading:
                    continue
                pipe = self.client.pipeline(transaction=False)
                for rkey, last_id in reading:
                    pipe.xread({rkey: last_id}, count=READ_COUNT)
                results = await pipe.execute()
                self._up()
            except (RedisError, OSError) as exc:
                self.dirty.update(k for k, _ in reading)
                self._down(exc)
                await asyncio.sleep(0.2)
                self.follow_changed.set()
                continue
            reply: list[Any] = []
            for result in results:
                items = result.items() if isinstance(result, dict) else result or ()
                for rkey, entries in items:
                    reply.append((rkey, entries))
                    if len(entries) >= READ_COUNT:  # more to read: at once
                        self.dirty.add(rkey)
                        self.follow_changed.set()
            if reply:
                self.call(functools.partial(self._apply, reply))

    async def _subscribe_followed(self) -> None:
        """Each followed stream's ``:n`` channel subscribed on the node that holds it (a
        stream subscribed anew is read once: what was written before the subscription)."""
        want: dict[str, set[bytes]] = {}
        for rkey in self.follow:
            node = self.client.get_node_from_key(rkey)
            want.setdefault(node.name, set()).add(rkey)
        for name, listener in list(self.listeners.items()):
            if listener.failed:
                self.dirty.update(listener.streams)  # (what it missed is read again)
                await listener.close()
                del self.listeners[name]
                continue
            await listener.leave(listener.streams - want.get(name, set()))
            if not listener.streams:
                await listener.close()
                del self.listeners[name]
        for name, rkeys in want.items():
            found = self.listeners.get(name)
            if found is None:
                node = self.client.get_node(node_name=name)
                found = self.listeners[name] = _Listener(self, node.host, node.port)
            joined = await found.join(rkeys - found.streams)
            self.dirty.update(joined)

    def _notified(self, stream_key: bytes) -> None:
        self.dirty.add(stream_key)
        self.follow_changed.set()

    async def _housekeeping(self) -> None:
        """Renew this process's leases; reap followed streams whose producer is gone."""
        period = self.store.lease / 3
        while not self.stopped:
            await asyncio.sleep(period)
            try:
                await self._renew_and_reap()
                self._up()
            except (RedisError, OSError) as exc:
                self._down(exc)
            if self.down_since is not None:
                self.wake.set()
            if self.reader is None and self.follow:  # Cluster: a lost notice is read here
                self.dirty.update(self.follow)
                self.follow_changed.set()

    async def _control(self) -> None:
        """Cancels from every process (rule 4): abort here if this process produces it."""
        while not self.stopped:
            try:
                pubsub = self.control.pubsub()
                await pubsub.subscribe(self.store.control_channel)
                async for message in pubsub.listen():
                    if self.stopped:
                        break
                    if message.get("type") != "message":
                        continue
                    self.call(functools.partial(self._on_control, message["data"]))
            except (RedisError, OSError) as exc:
                self._down(exc)
                await asyncio.sleep(0.2)

    def _on_control(self, data: bytes) -> None:
        """A control message (rule 4), in the hub's context: a cancel, or a process that
        starts or stops following a stream."""
        try:
            kind, channel, stream_id, generation, arg = json.loads(data)
            key, gen = (str(channel), str(stream_id)), int(generation)
        except (ValueError, TypeError):
            log.warning("ignored a malformed control message %r", data[:80])
            return
        if kind == "cancel":
            self.hub.handle_store_event(AbortRequested(key, gen, str(arg)))
            return
        copy = self.store._copies.get(key)
        if copy is None or not copy.local or copy.generation != gen:
            return
        followers = self.store._followers.setdefault(key, set())
        if kind == "follow":
            followers.add(str(arg))
        else:
            followers.discard(str(arg))

    # -- requests -------------------------------------------------------------------------------

    async def _carry(self, request: StoreRequest) -> None:
        if isinstance(request, Claim):
            # The claim itself is queued with the stream's writes (acquire), in order; here
            # the driver only notes that the hub waits for its answer.
            copy = self.store._copies.get(request.key)
            if copy is None or copy.generation != request.generation or copy.claimed is False:
                return  # replaced, released or refused (the hub had StoreFailed)
            if copy.claimed:
                self._claimed([(request.key, request.generation)])
            else:
                self.awaiting.add((request.key, request.generation))
            return
        if isinstance(request, Erase):  # after the stream's writes, in their queue
            self.store._queue(("erase", request.key, request.generation), 0)
            return
        if isinstance(request, CancelRemote):
            payload = json.dumps(["cancel", *request.key, str(request.generation), request.reason])
            watchers = self.store.keys(request.key)[3]
            args = [self.store.process_id, self.store.control_channel, payload]
            await self._execute([self._script("cancel", [watchers], args)])
            return
        await self._lookup(request)

    async def _lookup(self, request: Lookup) -> None:
        store, key = self.store, request.key
        m, s, lk, w = store.keys(key)
        await self._flush()  # it sees what this process wrote (or erased) before it asked
        meta: Any = await self.client.hgetall(m)
        if meta and meta.get(b"status") == b"open" and not await self.client.exists(lk):
            await self._execute([self._script("reap", self._script_keys(key), self._reap_args())])
            meta = await self.client.hgetall(m)
        if not meta or _deleted(meta):
            self.call(lambda: self.hub.handle_store_event(StreamLoaded(key)))
            return
        count = max(request.window.chunks, 0) + 1
        entries: Any = await self.client.xrevrange(s, count=count)
        generation = int(meta[b"gen"])
        last = int(meta[b"last"])
        if meta[b"status"] == b"open":
            expiry = int((store.retention + 86400) * 1000)
            await self._execute([("hset", (w, store.process_id, 1)), ("pexpire", (w, expiry))])
            await self._publish([self._news("follow", key, generation)])

        def load() -> None:
            if key in store._copies:  # loaded meanwhile (or produced here): keep it
                self.hub.handle_store_event(StreamLoaded(key))
                return
            copy = _Copy(generation, request.window, local=False)
            last_id = f"{last}-0".encode()
            chunks = [(e, f) for e, f in reversed(entries)]
            for entry_id, fields in chunks:
                seq, is_outcome = _entry_seq(entry_id)
                if is_outcome:
                    copy.outcome = _outcome(fields)
                else:
                    copy.receive(seq, fields[b"d"])
                last_id = entry_id
            if copy.outcome is None and meta[b"status"] != b"open":
                copy.outcome = _outcome({b"o": meta[b"status"], **_meta_outcome(meta)})
            if copy.last_seq < last:  # everything was trimmed: history starts after it
                copy.chunks.clear()
                copy.first_seq = last + 1
            store._copies[key] = copy
            if copy.outcome is None:
                self._follow(key, generation, last_id)
            self.hub.handle_store_event(StreamLoaded(key))

        self.call(load)

    def _script_keys(self, key: Key) -> list[str]:
        """A stream's keys as the scripts take them: meta, stream, lease, and on a Cluster
        the channel they SPUBLISH on (rule 5)."""
        m, s, lk, _ = self.store.keys(key)
        return [m, s, lk, _notices(s)] if self.reader is None else [m, s, lk]

    @staticmethod
    def _script(name: str, keys: list[str], args: list[Any]) -> _Command:
        return "evalsha", (_SHAS[name], len(keys), *keys, *args)

    async def _execute(self, commands: list[_Command]) -> list[Any]:
        """``commands`` as one pipeline (on a Cluster: one per node). A server that lacks
        the scripts (new, restarted or failed over) is given them, and the pipeline runs
        once more: every script is idempotent, and so is the rest."""
        try:
            return await self._pipeline(commands)
        except NoScriptError:
            for text in _SCRIPTS.values():  # (on a Cluster: on every primary)
                await self.client.script_load(text)
            return await self._pipeline(commands)

    async def _publish(self, messages: list[str]) -> None:
        """On the control channel (a Cluster pipeline may not PUBLISH: the control
        connection is a plain one, whose messages reach every node)."""
        if messages:
            pipe = self.control.pipeline(transaction=False)
            for message in messages:
                pipe.publish(self.store.control_channel, message)
            await pipe.execute()

    async def _pipeline(self, commands: list[_Command]) -> list[Any]:
        pipe = self.client.pipeline(transaction=False)
        for name, args in commands:
            getattr(pipe, name)(*args)
        return list(await pipe.execute())

    def _news(self, kind: str, key: Key, generation: int) -> str:
        return json.dumps([kind, *key, str(generation), self.store.process_id])

    def stop(self) -> None:
        self.stopped = True
        self.wake.set()
        self.follow_changed.set()

    def _reap_args(self) -> list[Any]:
        return [
            int(ErrorCode.PRODUCER_LOST),
            "the producer stopped renewing its lease",
            int(self.store.retention * 1000),
        ]

    def _follow(self, key: Key, generation: int, last_id: bytes) -> None:
        self.follow[self.store.keys(key)[1].encode()] = (key, generation, last_id)
        self._follow_moved()

    def _follow_moved(self) -> None:
        self.follow_changed.set()
        if self.reading and self.reader_id is not None:
            reader_id = self.reader_id
            # The blocked XREAD returns now and comes back with the new set of streams.
            asyncio.get_running_loop().create_task(self._unblock(reader_id))

    async def _unblock(self, reader_id: int) -> None:
        with contextlib.suppress(RedisError, OSError):
            await self.client.client_unblock(reader_id)

    # -- writes ---------------------------------------------------------------------------------

    async def _flush(self) -> None:
        ops = self.store._take_ops()
        if not ops:
            return
        store = self.store
        calls: list[tuple[tuple[Any, ...], int]] = []  # (op, bytes it carries)
        commands: list[_Command] = []
        unfollow: list[tuple[Key, int]] = []
        merged = _merge(ops)
        for op in merged:
            kind, key = op[0], op[1]
            w = store.keys(key)[3]
            if kind == "unfollow":
                copy = store._copies.get(key)
                if copy is not None and not copy.local:
                    # Looked up again since it was let go (the lookup registered this
                    # process in :w and follows it anew): this older unfollow is void.
                    continue
                unfollow.append((key, op[2]))
                commands.append(("hdel", (w, store.process_id)))
                calls.append((op, 0))
                continue
            gen = str(op[2])
            if kind == "claim":
                args: list[Any] = ["claim", gen, int(store.lease * 1000)]
                nbytes = 0
            elif kind == "erase":
                args = ["erase", gen]
                nbytes = 0
            elif kind == "add":
                chunks: list[bytes] = op[4]
                copy = store._copies.get(key)
                first = op[3]
                minid = max(copy.first_seq if copy is not None else 1, 1)
                minid = min(minid, first + len(chunks))
                args = ["add", gen, first, minid, *chunks]
                nbytes = sum(map(len, chunks))
            else:
                outcome: Outcome = op[3]
                retention = int(store.retention * 1000)
                args = [
                    "finish",
                    gen,
                    outcome.status.value,
                    int(outcome.code),
                    outcome.message,
                    op[4],
                    retention,
                ]
                nbytes = 0
            commands.append(self._script("write", self._script_keys(key), args))
            calls.append((op, nbytes))
        try:
            results = await self._execute(commands)
            await self._publish([self._news("unfollow", key, gen) for key, gen in unfollow])
        except BaseException:  # (a cancel too: the ops stay queued, nothing is dropped)
            store._requeue(ops)  # idempotent scripts: the retry writes each seq once
            raise
        store._answered(ops)
        for key, generation in unfollow:
            rkey = store.keys(key)[1].encode()
            if rkey in self.follow and self.follow[rkey][1] == generation:
                del self.follow[rkey]
        failed: list[tuple[Key, int, int, str]] = []
        claimed: list[tuple[Key, int]] = []
        for (op, nbytes), result in zip(calls, results, strict=True):
            store._done(nbytes)
            if op[0] == "unfollow":
                continue
            answer = result.decode() if isinstance(result, bytes) else str(result)
            if op[0] == "claim":
                copy = store._copies.get(op[1])
                if copy is not None and copy.generation == op[2]:
                    copy.claimed = answer == "OK"
                if (op[1], op[2]) in self.awaiting:
                    self.awaiting.discard((op[1], op[2]))
                    if answer == "OK":
                        claimed.append((op[1], op[2]))
            if answer != "OK":
                failed.append((op[1], op[2], *_failure(answer, op[1])))
        if claimed:
            self._claimed(claimed)
        if failed:
            self.call(lambda: self._fail_local(failed))

    def _claimed(self, claims: list[tuple[Key, int]]) -> None:
        def tell() -> None:
            for key, generation in claims:
                self.hub.handle_store_event(StreamClaimed(key, generation))

        self.call(tell)

    def _fail_local(self, failed: list[tuple[Key, int, int, str]]) -> None:
        for key, generation, code, message in failed:
            copy = self.store._copies.get(key)
            if copy is not None and copy.generation == generation:
                copy.outcome = Outcome(StreamStatus.FAILED, code, message)
            self.hub.handle_store_event(StoreFailed(key, generation, code, message))

    # -- reads ----------------------------------------------------------------------------------

    def _apply(self, reply: Any) -> None:
        """XREAD's entries into the followed copies, then tell the hub (in its context)."""
        items = reply.items() if isinstance(reply, dict) else reply
        store = self.store
        for rkey, entries in items:
            followed = self.follow.get(rkey)
            if followed is None:
                continue
            key, generation, last_id = followed
            copy = store._copies.get(key)
            if copy is None or copy.generation != generation:
                self.follow.pop(rkey, None)
                continue
            for entry_id, fields in entries:
                seq, is_outcome = _entry_seq(entry_id)
                if is_outcome:
                    copy.outcome = _outcome(fields)
                else:
                    copy.receive(seq, fields[b"d"])
                last_id = entry_id
            if copy.outcome is not None:
                self.follow.pop(rkey, None)
            else:
                self.follow[rkey] = (key, generation, last_id)
            self.hub.handle_store_event(StreamAppended(key, generation))

    async def _renew_and_reap(self) -> None:
        store = self.store
        produced = [
            (k, c.generation)
            for k, c in list(store._copies.items())
            if c.local and c.outcome is None
        ]
        followed = [(v[0], v[1]) for v in list(self.follow.values())]
        if not produced and not followed:
            return
        commands: list[_Command] = []
        for key, generation in produced:
            args: list[Any] = ["lease", str(generation), int(store.lease * 1000)]
            commands.append(self._script("write", self._script_keys(key), args))
        for key, _ in followed:
            commands.append(self._script("reap", self._script_keys(key), self._reap_args()))
        for key, _ in produced:  # heals a lost follow/unfollow message
            commands.append(("hkeys", (store.keys(key)[3],)))
        results = await self._execute(commands)
        failed: list[tuple[Key, int, int, str]] = []
        for (key, generation), result in zip(produced, results, strict=False):
            answer = result.decode() if isinstance(result, bytes) else str(result)
            if answer != "OK":
                failed.append((key, generation, *_failure(answer, key)))
        replaced: list[tuple[Key, int]] = []
        n, f = len(produced), len(followed)
        for (key, generation), result in zip(followed, results[n : n + f], strict=True):
            current = result[0].decode() if isinstance(result[0], bytes) else str(result[0])
            if current != str(generation):  # reused or expired under us: not ours to wait on
                replaced.append((key, generation))
        heard = {
            key: {p.decode() for p in procs}
            for (key, _), procs in zip(produced, results[n + f :], strict=True)
        }
        self.call(lambda: self.store._followers.update(heard))
        if failed:
            self.call(lambda: self._fail_local(failed))
        if replaced:
            self.call(lambda: self._fail_followed(replaced, ErrorCode.PRODUCER_LOST, "replaced"))

    def _fail_followed(self, keys: list[tuple[Key, int]], code: int, message: str) -> None:
        for key, generation in keys:
            self.follow.pop(self.store.keys(key)[1].encode(), None)
            copy = self.store._copies.get(key)
            if copy is not None and copy.generation == generation and copy.outcome is None:
                copy.outcome = Outcome(StreamStatus.FAILED, code, message)
                self.hub.handle_store_event(StreamAppended(key, generation))

    # -- availability ---------------------------------------------------------------------------

    def _up(self) -> None:
        if self.down_since is not None:
            log.warning("redis at %s is reachable again", self.store.url)
            self.down_since = None

    def _down(self, exc: BaseException) -> None:
        now = time.monotonic()
        if self.down_since is None:
            log.warning("redis at %s unreachable: %r", self.store.url, exc)
            self.down_since = now
            return
        if now - self.down_since < self.store.unavailable_after:
            return
        message = f"redis unreachable for {now - self.down_since:.1f} s: {type(exc).__name__}"
        self.call(lambda: self._give_up(message))

    def _give_up(self, message: str) -> None:
        """Redis stayed away past ``unavailable_after``: fail what waits on it (rule 1)."""
        store = self.store
        code = ErrorCode.STORE_UNAVAILABLE
        local = [
            (k, c.generation, int(code), message)
            for k, c in store._copies.items()
            if c.local and c.outcome is None
        ]
        followed = [(k, c.generation) for k, c in store._copies.items() if not c.local]
        for op in store._take_ops(carried=False):  # failed now, not kept for a Redis gone
            if op[0] == "add":
                store._done(sum(map(len, op[4])))
        self.awaiting.clear()  # their OPENs are rejected by the StoreFailed below
        self._fail_local(local)
        self._fail_followed(followed, code, message)
        requests = [*self.requests, *self.hub.store_requests()]
        self.requests.clear()
        for request in requests:  # lookups: nothing can be found
            if isinstance(request, Lookup):
                self.hub.handle_store_event(StreamLoaded(request.key))


_Command = tuple[str, tuple[Any, ...]]


def _notices(stream_key: str) -> str:
    """The channel a stream's writes are announced on, on a Cluster (rule 5)."""
    return stream_key.removesuffix(":s") + ":n"


class _Listener:
    """On a Cluster: one node's sharded pub/sub connection, subscribed to the ``:n``
    channel of each followed stream that node holds (rule 5)."""

    def __init__(self, driver: _Driver, host: str, port: int) -> None:
        self.driver = driver
        self.client = aredis.Redis(host=host, port=port)
        self.pubsub = self.client.pubsub()
        self.streams: set[bytes] = set()
        self.failed = False
        self.task: asyncio.Task[None] | None = None

    async def join(self, rkeys: set[bytes]) -> set[bytes]:
        for rkey in rkeys:  # one SSUBSCRIBE each: its channels must share a slot
            await self.pubsub.ssubscribe(_notices(rkey.decode()))
            self.streams.add(rkey)
        if self.streams and self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._listen())
        return rkeys

    async def leave(self, rkeys: set[bytes]) -> None:
        for rkey in rkeys:
            await self.pubsub.sunsubscribe(_notices(rkey.decode()))
            self.streams.discard(rkey)

    async def _listen(self) -> None:
        try:
            async for message in self.pubsub.listen():
                if message.get("type") == "smessage":
                    channel: bytes = message["channel"]
                    self.driver._notified(channel.removesuffix(b":n") + b":s")
        except (RedisError, OSError) as exc:
            self.failed = True  # the tail replaces it and reads its streams again
            self.driver._down(exc)
            self.driver.follow_changed.set()

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, RedisError, OSError):
                await self.task
        with contextlib.suppress(RedisError, OSError):
            await self.pubsub.aclose()
            await self.client.aclose()


def _deleted(meta: dict[bytes, bytes]) -> bool:
    """Whether a DELETE ended the stream (R-QUERY-4): erased, or failed STREAM_DELETED (its
    producer's process erases it next). A lookup finds nothing."""
    return b"deleted" in meta or meta.get(b"code") == _DELETED_CODE


def _meta_outcome(meta: dict[bytes, bytes]) -> dict[bytes, bytes]:
    return {b"c": meta.get(b"code", b"0"), b"m": meta.get(b"msg", b"")}


def _failure(answer: str, key: Key) -> tuple[int, str]:
    if answer == "STALE":
        return int(ErrorCode.STALE_GENERATION), "a newer generation of this id holds the store"
    if answer == "EXISTS":
        return int(ErrorCode.STREAM_EXISTS), f"stream {key[1]!r} is open in another process"
    if answer == "LOST":
        return int(ErrorCode.STORE_UNAVAILABLE), "redis lost chunks it had acknowledged"
    return int(ErrorCode.PRODUCER_LOST), "the store closed the stream (its lease had expired)"


def _merge(ops: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Consecutive appends to one stream become one script call (one round of XADDs)."""
    out: list[tuple[Any, ...]] = []
    for op in ops:
        if op[0] == "add" and out:
            prev = out[-1]
            if (
                prev[0] == "add"
                and prev[1] == op[1]
                and prev[2] == op[2]
                and prev[3] + len(prev[4]) == op[3]
                and len(prev[4]) < READ_COUNT
            ):
                out[-1] = ("add", op[1], op[2], prev[3], [*prev[4], *op[4]])
                continue
        out.append(op)
    return out


# -- running the driver -------------------------------------------------------------------------


def _rearming(server: Any, fn: Callable[[], T]) -> T:
    try:
        return fn()
    finally:
        server._rearm_hub()


@contextlib.asynccontextmanager
async def open_asyncio_driver(store: RedisStore, server: Any) -> AsyncIterator[None]:
    """Run ``store``'s driver in the running loop for ``server`` (a
    ``transports.asyncio.Server`` whose hub uses ``store``) until the block exits."""
    driver = _Driver(store, server.hub, lambda fn: _rearming(server, fn), lambda set_: set_)
    task = asyncio.get_running_loop().create_task(driver.run())
    try:
        yield
    finally:
        await _stop(driver, task)


async def _stop(driver: _Driver, task: asyncio.Task[None]) -> None:
    # Let what was accepted reach Redis first (a while at most: it may be unreachable).
    deadline = time.monotonic() + driver.store.unavailable_after
    while not driver.store.flushed and driver.down_since is None and not task.done():
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.005)
    driver.stop()
    # redis-py may absorb a cancel delivered mid-command: repeat it until the task is done.
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=1.0)
    with contextlib.suppress(asyncio.CancelledError, Exception):
        task.result()


class _DriverThread:
    """A driver in a thread of its own, with its own asyncio loop (threads and trio)."""

    def __init__(self, store: RedisStore, hub: Hub, call: Callable[[Callable[[], Any]], Any]):
        self.loop = asyncio.new_event_loop()
        self.driver = _Driver(store, hub, call, self._kick)
        self.done: asyncio.Event | None = None
        started = threading.Event()
        self.thread = threading.Thread(
            target=self._main, args=(started,), name="streamproto-redis", daemon=True
        )
        self.thread.start()
        started.wait()

    def _kick(self, set_: Callable[[], None]) -> Callable[[], None]:
        loop = self.loop

        def threadsafe() -> None:
            loop.call_soon_threadsafe(set_)

        return threadsafe

    def _main(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)

        async def main() -> None:
            self.done = asyncio.Event()
            task = asyncio.get_running_loop().create_task(self.driver.run())
            started.set()
            await self.done.wait()
            await _stop(self.driver, task)

        self.loop.run_until_complete(main())
        self.loop.close()

    def stop(self) -> None:
        """Ask the driver to stop (join the thread afterwards)."""
        done = self.done
        if done is not None:
            self.loop.call_soon_threadsafe(done.set)


@contextlib.contextmanager
def open_thread_driver(store: RedisStore, server: Any) -> Iterator[None]:
    """Run ``store``'s driver in a thread of its own for ``server`` (a
    ``transports.sync.Server``): it calls into the hub under the server's lock."""

    def call(fn: Callable[[], T]) -> T:
        with server._lock:
            return _rearming(server, fn)

    runner = _DriverThread(store, server.hub, call)
    try:
        yield
    finally:
        runner.stop()
        runner.thread.join(timeout=30)


@contextlib.asynccontextmanager
async def open_trio_driver(store: RedisStore, server: Any) -> AsyncIterator[None]:
    """Run ``store``'s driver for ``server`` (a ``transports.trio.Server``) in a worker thread
    with its own asyncio loop on ``redis.asyncio``; it calls into the hub in trio's thread
    through ``trio.from_thread.run_sync`` (see docs/deployment.md for why)."""
    import trio  # noqa: PLC0415 - trio is an optional extra

    token = trio.lowlevel.current_trio_token()

    def call(fn: Callable[[], T]) -> T:
        return trio.from_thread.run_sync(lambda: _rearming(server, fn), trio_token=token)

    runner = _DriverThread(store, server.hub, call)
    try:
        yield
    finally:
        runner.stop()
        with trio.CancelScope(shield=True):  # keep trio running while the driver winds down
            await trio.to_thread.run_sync(runner.thread.join, 30)
