"""The h11 driver without a socket or a loop: what it asks of its backend, and when.

A backend flushes after every ``receive``; a wakeup from inside ``receive`` would flush before
the handler that the request started has run (on asyncio: a flush queued ahead of the handler's
task), and the head would leave alone with its first event a write later.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

from streamproto import Config, Hub, Producer
from streamproto._http import HttpOptions
from transports._http import HttpDriver


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def setup() -> tuple[HttpDriver, list[Callable[[], None]], list[str]]:
    counter = itertools.count(1)
    hub = Hub(clock=Clock(), ids=lambda: f"id{next(counter)}")
    handlers: list[Callable[[], None]] = []  # started by the hub, run later as a loop would
    wakeups: list[str] = []

    def on_open(producer: Producer, args: bytes) -> None:
        def run() -> None:
            producer.write(b"first " + args)
            producer.close()

        handlers.append(run)

    hub.register("app:chat", on_open=on_open)

    def websocket(framing: object) -> object:
        raise AssertionError("no upgrade here")

    driver = HttpDriver(
        hub,
        Config(),
        HttpOptions(),
        Clock(),
        lambda: wakeups.append("wakeup"),
        websocket=websocket,  # type: ignore[arg-type]
    )
    return driver, handlers, wakeups


POST = b"POST /app:chat HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"


def test_no_wakeup_while_receiving_so_head_and_first_event_leave_together() -> None:
    driver, handlers, wakeups = setup()
    driver.receive(POST)
    assert wakeups == []  # the backend flushes after receive: no earlier flush to queue
    assert len(handlers) == 1
    handlers[0]()  # the handler's task runs before the backend's flush
    out = driver.outgoing()
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"stream-id: id" in head.lower()
    assert b"data: first hello\n\n" in body
    assert b"event: end" in body
    assert driver.finished
    assert driver.outgoing() == b""


def test_wakeups_outside_receive_reach_the_backend() -> None:
    driver, handlers, wakeups = setup()
    driver.receive(POST)
    out = driver.outgoing()  # flushed before the handler ran: the head alone
    assert out.startswith(b"HTTP/1.1 200 ")
    assert b"data:" not in out
    wakeups.clear()
    handlers[0]()  # written later: the hub wakes the driver, which wakes its backend
    assert wakeups
    assert b"data: first hello\n\n" in driver.outgoing()
