"""The h11 driver without a socket or a loop: what it asks of its backend, and when.

A backend flushes after every ``receive``; a wakeup from inside ``receive`` would flush before
the handler that the request started has run (on asyncio: a flush queued ahead of the handler's
task), and the head would leave alone with its first event a write later.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import h11
import pytest

from streamproto import Config, Hub, Producer
from streamproto._http import HttpOptions
from transports._http import HttpDriver, _split_head


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


def _fields(head: bytes) -> list[tuple[str, str]]:
    lines = head.decode("latin-1").split("\r\n")[1:]
    return [(name.lower(), value.strip()) for name, _, value in (x.partition(":") for x in lines)]


def test_a_streamed_head_has_each_field_once_and_h11_frames_it() -> None:
    driver, handlers, _ = setup()
    driver.receive(POST)
    handlers[0]()
    head, _, _ = driver.outgoing().partition(b"\r\n\r\n")
    fields = _fields(head)
    names = [name for name, _ in fields]
    assert len(names) == len(set(names)), fields
    assert ("content-type", "text/event-stream") in fields
    assert ("transfer-encoding", "chunked") in fields  # set by h11: a body of unknown length
    assert ("connection", "close") in fields  # the request asked for it
    assert "content-length" not in names
    assert ("stream-id", "id3") in fields


@pytest.mark.parametrize(
    "field",
    [("x-bad", "a\r\nInjected: yes"), ("bad name", "v"), ("x-pad", " v"), ("x-nul", "a\x00b")],
)
def test_a_field_that_is_not_valid_is_refused_by_h11(field: tuple[str, str]) -> None:
    assert _split_head([("content-type", "text/plain"), field]) is None
    with pytest.raises(h11.LocalProtocolError):
        h11.Response(status_code=200, headers=[field])


def test_framing_fields_go_to_h11_and_the_others_are_lines() -> None:
    split = _split_head([("content-length", "2"), ("x-a", "1"), ("connection", "close")])
    assert split == ([("content-length", "2"), ("connection", "close")], b"x-a: 1\r\n")
