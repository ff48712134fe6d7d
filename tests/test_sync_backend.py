"""The thread backend's own machinery: the inline write path, the shared I/O thread and the
reused handler threads."""

from __future__ import annotations

import socket
import threading
import time

from transports.sync import _INLINE_BUDGET, _Handlers, _Loop, _Pump, serve


class FakeSide:
    """A socket side that has ``outbox`` to send, recording which thread took it."""

    reading = True

    def __init__(self) -> None:
        self.outbox: list[bytes] = []
        self.takers: list[int] = []
        self.inputs: list[bytes] = []
        self.blocked: list[bool] = []
        self.finished = False

    def receive(self, data: bytes) -> None:
        self.inputs.append(data)

    def step(self, max_bytes: int | None = None) -> bytes:
        if not self.outbox:
            return b""
        self.takers.append(threading.get_ident())
        return self.outbox.pop(0)

    def deadline(self) -> float | None:
        return None

    def output_blocked(self, flag: bool) -> None:
        self.blocked.append(flag)


def _wait(predicate: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline
        time.sleep(0.005)


class Rig:
    """A pump on a loop running in a thread of its own, over one end of a socket pair."""

    def __init__(self, sndbuf: int | None = None) -> None:
        self.lock = threading.RLock()
        self.a, self.b = socket.socketpair()
        if sndbuf is not None:
            self.a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        self.side = FakeSide()
        self.loop = _Loop(self.lock)
        self.closed = threading.Event()
        self.pump = _Pump(self.loop, self.a, self.side, self.closed.set)  # type: ignore[arg-type]
        self.thread = threading.Thread(target=self.loop.run)
        self.loop.stopping = True  # run() returns once the pump closed
        with self.lock:
            self.loop.add(self.pump)
        self.thread.start()
        _wait(lambda: self.pump.events)  # the loop watches the socket

    def received(self, n: int) -> bytes:
        self.b.settimeout(5)
        data = bytearray()
        while len(data) < n:
            data += self.b.recv(1 << 16)
        return bytes(data)

    def close(self) -> None:
        with self.lock:
            self.side.finished = True
            self.pump.wake()
        self.thread.join(5)
        assert not self.thread.is_alive()
        assert self.closed.is_set()
        self.b.close()


def test_an_idle_pump_sends_in_the_waking_thread() -> None:
    rig = Rig()
    try:
        with rig.lock:
            rig.side.outbox.append(b"hello")
            rig.pump.wake()
            assert rig.side.takers == [threading.get_ident()]  # taken and sent right here
            assert rig.pump._pending == b""
        assert rig.received(5) == b"hello"
    finally:
        rig.close()


def test_what_the_kernel_does_not_take_goes_to_the_loop_thread_in_order() -> None:
    rig = Rig(sndbuf=4096)
    big = bytes(range(256)) * 4096  # 1 MiB: far more than the socket buffers hold
    try:
        with rig.lock:
            rig.side.outbox += [big, b"after"]
            rig.pump.wake()
            assert rig.pump._pending  # the rest waits for the loop
        assert rig.received(len(big) + 5) == big + b"after"
        assert len(set(rig.side.takers)) == 2  # the waking thread, then the loop's
        assert rig.side.blocked == [True, False]  # the side heard of the stall, once
    finally:
        rig.close()


def test_inline_sends_are_rationed_until_the_next_input() -> None:
    """A producer writing in a loop gets ``_INLINE_BUDGET`` inline sends; then the loop's
    thread takes over (and batches); input restores the budget."""
    rig = Rig()
    me = threading.get_ident()
    try:
        for i in range(_INLINE_BUDGET + 1):
            with rig.lock:
                rig.side.outbox.append(b"%d" % i)
                rig.pump.wake()
        _wait(lambda: len(rig.side.takers) == _INLINE_BUDGET + 1)
        assert rig.side.takers[:_INLINE_BUDGET] == [me] * _INLINE_BUDGET
        assert rig.side.takers[-1] != me  # the loop's thread sent the last one
        rig.b.send(b"input")
        _wait(lambda: rig.side.inputs)
        with rig.lock:
            rig.side.outbox.append(b"x")
            rig.pump.wake()
        assert rig.side.takers[-1] == me
        expected = b"".join(b"%d" % i for i in range(_INLINE_BUDGET + 1)) + b"x"
        assert rig.received(len(expected)) == expected
    finally:
        rig.close()


def test_idle_connections_cost_no_thread() -> None:
    server = serve(None, "tcp://127.0.0.1:0")
    before = threading.active_count()
    socks = []
    try:
        with server._lock:
            known = len(server.drivers)
        for _ in range(50):
            socks.append(socket.create_connection(("127.0.0.1", server.port)))
        _wait(lambda: len(server.drivers) == known + 50)
        assert threading.active_count() == before
    finally:
        for sock in socks:
            sock.close()
        server.shutdown(timeout=1.0)


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
