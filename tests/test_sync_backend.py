"""The thread backend's own machinery: the inline write path and the reused handler threads."""

from __future__ import annotations

import socket
import threading
import time

from transports.sync import _Handlers, _Writer


class FakeSide:
    """A socket side that has ``outbox`` to send, recording which thread took it."""

    def __init__(self) -> None:
        self.outbox: list[bytes] = []
        self.takers: list[int] = []
        self.finished = False

    def receive(self, data: bytes) -> None:
        pass

    def step(self, max_bytes: int | None = None) -> bytes:
        if not self.outbox:
            return b""
        self.takers.append(threading.get_ident())
        return self.outbox.pop(0)

    def deadline(self) -> float | None:
        return None

    def output_blocked(self, flag: bool) -> None:
        pass


def _wait(predicate: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline
        time.sleep(0.005)


def test_an_idle_writer_sends_in_the_waking_thread() -> None:
    lock = threading.RLock()
    a, b = socket.socketpair()
    side = FakeSide()
    writer = _Writer(lock, a, side)
    writer.thread.start()
    try:
        _wait(lambda: writer._idle)
        with lock:
            side.outbox.append(b"hello")
            writer.wake()
            assert side.takers == [threading.get_ident()]  # taken and sent right here
            assert writer._pending == b""
        b.settimeout(5)
        assert b.recv(100) == b"hello"
    finally:
        with lock:
            writer.stop()
        writer.thread.join(5)
        a.close()
        b.close()


def test_what_the_kernel_does_not_take_goes_to_the_writer_thread_in_order() -> None:
    lock = threading.RLock()
    a, b = socket.socketpair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    side = FakeSide()
    writer = _Writer(lock, a, side)
    writer.thread.start()
    big = bytes(range(256)) * 4096  # 1 MiB: far more than the socket buffers hold
    try:
        _wait(lambda: writer._idle)
        with lock:
            side.outbox += [big, b"after"]
            writer.wake()
            assert writer._pending  # the rest waits for the thread
        received = bytearray()
        b.settimeout(5)
        while len(received) < len(big) + 5:
            received += b.recv(1 << 16)
        assert bytes(received) == big + b"after"
        assert len(set(side.takers)) == 2  # the waking thread, then the writer thread
    finally:
        with lock:
            writer.stop()
        writer.thread.join(5)
        a.close()
        b.close()


def test_handler_threads_are_reused_and_never_starve() -> None:
    handlers = _Handlers()
    ran: list[str] = []
    for _ in range(50):  # one after another: one thread serves them all
        done = threading.Event()

        def task(done: threading.Event = done) -> None:
            ran.append(threading.current_thread().name)
            done.set()

        handlers.submit(task)
        assert done.wait(5)
        _wait(lambda: handlers._idle == 1)
    assert len(ran) == 50
    assert len(handlers.threads) == 1
    release = threading.Event()
    second = threading.Event()
    handlers.submit(release.wait)  # a long handler holds the idle thread...
    handlers.submit(second.set)  # ...so this one gets a thread of its own
    assert second.wait(5)
    release.set()
    threads = handlers.close()
    for thread in threads:
        thread.join(5)
        assert not thread.is_alive()
    assert handlers.threads == set()


def test_inline_sends_are_rationed_until_the_next_input() -> None:
    """A producer writing in a loop gets ``_INLINE_BUDGET`` inline sends; then the writer
    thread takes over (and batches); input restores the budget."""
    from transports.sync import _INLINE_BUDGET

    lock = threading.RLock()
    a, b = socket.socketpair()
    side = FakeSide()
    writer = _Writer(lock, a, side)
    writer.thread.start()
    me = threading.get_ident()
    try:
        for i in range(_INLINE_BUDGET + 1):
            _wait(lambda: writer._idle)
            with lock:
                side.outbox.append(b"%d" % i)
                writer.wake()
        _wait(lambda: len(side.takers) == _INLINE_BUDGET + 1)
        assert side.takers[:_INLINE_BUDGET] == [me] * _INLINE_BUDGET
        assert side.takers[-1] != me  # the writer thread sent the last one
        _wait(lambda: writer._idle)
        with lock:
            writer.budget = _INLINE_BUDGET  # what reading input does
            side.outbox.append(b"x")
            writer.wake()
        assert side.takers[-1] == me
        b.settimeout(5)
        received = b""
        while len(received) < _INLINE_BUDGET + 2:
            received += b.recv(100)
        assert received == b"".join(b"%d" % i for i in range(_INLINE_BUDGET + 1)) + b"x"
    finally:
        with lock:
            writer.stop()
        writer.thread.join(5)
        a.close()
        b.close()
