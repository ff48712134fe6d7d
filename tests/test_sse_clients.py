"""Independent SSE clients against a real SSE server: a headless Chromium (its own EventSource,
and fetch reading a POST's body), npm ``eventsource`` under node, and httpx + httpx-sse.

Each test runs against every server of the ``sse_target`` fixture: sse-starlette under uvicorn
and under hypercorn (the reference these clients are proven on), and streamproto's own HTTP
listeners on asyncio, trio and threads and its ASGI app under uvicorn and hypercorn. The
server drops the connection mid-stream through
:class:`killproxy.KillingProxy`, whatever the server is; the clients must resume by themselves
(``Last-Event-ID``, or ``after_seq`` for the fetch page) and end with every chunk exactly once,
in order, byte-exact, then the end.

Chromium and node are installed by ``.ci/run``; without them these tests fail, saying so.
"""

from __future__ import annotations

import functools
import http.client
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from urllib.parse import urlsplit

import httpx
import pytest
from _browser import PageServer, run_page
from _httpx import read_with_httpx_sse
from _node import run_node_client
from killproxy import KillingProxy, open_killing_proxy
from sse_contract import SseTarget, assert_complete, outcome, parse_stream, sse_events
from sse_servers import run_ours, run_sse_starlette

#: Server name -> context manager yielding its SseTarget.
SERVERS: dict[str, Callable[[], AbstractContextManager[SseTarget]]] = {
    "sse-starlette/uvicorn": functools.partial(run_sse_starlette, server="uvicorn"),
    "sse-starlette/hypercorn": functools.partial(run_sse_starlette, server="hypercorn"),
    **{
        f"streamproto/{name}": functools.partial(run_ours, name)
        for name in ("asyncio", "trio", "sync", "asgi-uvicorn", "asgi-hypercorn")
    },
}


@pytest.fixture(scope="module", params=list(SERVERS))
def sse_target(request: pytest.FixtureRequest) -> Iterator[SseTarget]:
    with SERVERS[request.param]() as target:
        yield target


@pytest.fixture(scope="module")
def pages() -> Iterator[PageServer]:
    with PageServer() as server:
        yield server


@pytest.fixture
def proxy(sse_target: SseTarget) -> Iterator[KillingProxy]:
    parts = urlsplit(sse_target.base)
    assert parts.hostname is not None
    assert parts.port is not None
    with open_killing_proxy(parts.hostname, parts.port) as killing:
        yield killing


def _request(target: SseTarget, method: str, url: str, body: str | None = None) -> bytes:
    """One whole response body, read with the standard library (no SSE client involved)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.netloc, timeout=60)
    try:
        conn.request(method, parts.path, body=body, headers={"Accept": "text/event-stream"})
        response = conn.getresponse()
        assert response.status == 200, (target.name, response.status)
        assert response.getheader("Content-Type", "").startswith("text/event-stream")
        return response.read()
    finally:
        conn.close()


def _mid_stream(target: SseTarget, method: str = "GET") -> int:
    """A byte count from the server that lands inside the stream's events: half its body."""
    if method == "GET":
        body = _request(target, "GET", target.stream_url())
    else:
        body = _request(target, "POST", target.channel_url(), target.post_body)
    assert_complete(outcome(sse_events(parse_stream(body))), target.count)
    return len(body) // 2


def test_the_reference_body_is_complete(sse_target: SseTarget) -> None:
    """The server sends what the contract says, read without any SSE library."""
    body = _request(sse_target, "GET", sse_target.stream_url())
    assert_complete(outcome(sse_events(parse_stream(body))), sse_target.count)
    body = _request(sse_target, "POST", sse_target.channel_url(), sse_target.post_body)
    assert_complete(outcome(sse_events(parse_stream(body))), sse_target.count)


@pytest.mark.parametrize("close_on_end", ["1", "0"], ids=["close-at-end", "stopped-by-204"])
def test_chromium_eventsource_resumes_after_the_connection_is_killed(
    sse_target: SseTarget, pages: PageServer, proxy: KillingProxy, close_on_end: str
) -> None:
    proxy.kill_after(_mid_stream(sse_target))
    through = sse_target.via(proxy.port)
    report = run_page(
        pages,
        "eventsource.html",
        {
            "server": through.base,
            "channel": through.channel,
            "stream": through.stream_id,
            "close_on_end": close_on_end,
        },
    )
    assert report["js_errors"] == [], report
    assert_complete(outcome(report["events"]), sse_target.count)
    assert proxy.killed == 1
    assert report["opens"] >= 2, report  # it did reconnect, by itself
    if close_on_end == "1":
        assert report["closed_by"] == "end", report
    else:
        # After the end the browser reconnects once more; the 204 closes it for good.
        assert report["closed_by"] == "closed", report
        assert report["ready_state"] == 2, report  # EventSource.CLOSED


def test_chromium_fetch_post_reads_the_stream(sse_target: SseTarget, pages: PageServer) -> None:
    report = run_page(
        pages,
        "fetch.html",
        {"server": sse_target.base, "channel": sse_target.channel, "body": sse_target.post_body},
    )
    assert report["js_errors"] == [], report
    assert report["closed_by"] == "end", report
    assert report["stream_id"], report  # the Stream-Id header is readable cross-origin
    assert report["requests"][0]["status"] == 200
    assert report["requests"][0]["type"].startswith("text/event-stream")
    assert_complete(outcome(report["events"]), sse_target.count)


def test_chromium_fetch_post_resumes_by_stream_id(
    sse_target: SseTarget, pages: PageServer, proxy: KillingProxy
) -> None:
    """The chat shape: POST, the answer breaks off, GET the stream from the last seq seen."""
    proxy.kill_after(_mid_stream(sse_target, "POST"))
    through = sse_target.via(proxy.port)
    report = run_page(
        pages,
        "fetch.html",
        {
            "server": through.base,
            "channel": through.channel,
            "body": through.post_body,
            "resume": "1",
        },
    )
    assert report["js_errors"] == [], report
    assert report["closed_by"] == "end", report
    assert len(report["requests"]) == 2, report
    assert report["read_errors"], report  # the first body did break off
    assert proxy.killed == 1
    assert_complete(outcome(report["events"]), sse_target.count)


@pytest.mark.parametrize("rst", [False, True], ids=["fin", "rst"])
def test_node_eventsource_resumes_after_the_connection_is_killed(
    sse_target: SseTarget, proxy: KillingProxy, rst: bool
) -> None:
    proxy.kill_after(_mid_stream(sse_target), rst=rst)
    run = run_node_client(sse_target.via(proxy.port).stream_url())
    assert run.returncode == 0, (run.lines[-5:], run.stderr)
    assert len(run.of("open")) >= 2, run.lines
    assert run.of("reconnecting"), run.lines
    assert_complete(outcome(run.lines), sse_target.count)
    assert proxy.killed == 1


def test_node_eventsource_is_stopped_by_204_after_the_end(sse_target: SseTarget) -> None:
    """Reading on after the end: the body ends, EventSource reconnects with the last id, and
    the 204 closes it for good."""
    run = run_node_client(sse_target.stream_url(), close_at_end=False)
    assert run.returncode == 0, (run.lines[-5:], run.stderr)
    assert_complete(outcome(run.of("message", "bytes", "gap", "error", "end")), sse_target.count)
    last = run.lines[-1]
    assert (last["type"], last["status"]) == ("closed", 204), run.lines[-4:]
    assert run.of("end") == [run.lines[-3]], run.lines[-4:]  # end, reconnecting, closed


def test_node_eventsource_post_then_resume_by_stream_id(
    sse_target: SseTarget, proxy: KillingProxy
) -> None:
    proxy.kill_after(_mid_stream(sse_target, "POST"))
    through = sse_target.via(proxy.port)
    run = run_node_client(through.channel_url(), post=through.post_body)
    assert run.returncode == 0, (run.lines[-5:], run.stderr)
    (stream_id,) = run.of("stream-id")
    assert stream_id["data"], run.lines
    assert len(run.of("open")) >= 2, run.lines
    assert_complete(outcome(run.lines), sse_target.count)
    assert proxy.killed == 1


@pytest.mark.parametrize("open_with", ["GET", "POST"])
def test_httpx_sse_resumes_after_the_connection_is_killed(
    sse_target: SseTarget, proxy: KillingProxy, open_with: str
) -> None:
    proxy.kill_after(_mid_stream(sse_target, open_with))
    through = sse_target.via(proxy.port)
    if open_with == "GET":
        run = read_with_httpx_sse(through.stream_url())
    else:
        run = read_with_httpx_sse(through.channel_url(), post=through.post_body)
        assert run.stream_id, run
    assert run.closed_by == "end", run
    assert len(run.broken) == 1, run.broken
    assert run.statuses == [200, 200], run.statuses
    assert_complete(outcome(run.events), sse_target.count)
    assert proxy.killed == 1


def test_httpx_sse_after_the_end_gets_204(sse_target: SseTarget) -> None:
    """A client that reconnects after the end (as EventSource does, with the end event's id,
    ``<last seq>:end``) is told to stop."""
    run = read_with_httpx_sse(sse_target.stream_url())
    assert run.closed_by == "end", run
    last = outcome(run.events).seqs[-1]
    with httpx.Client(timeout=60) as client:
        response = client.get(sse_target.stream_url(), headers={"Last-Event-ID": f"{last}:end"})
    assert response.status_code == 204
    assert response.content == b""


def test_a_reconnect_after_the_last_chunk_gets_the_end_then_204(sse_target: SseTarget) -> None:
    """A reconnect cut between the last chunk and the end (its ``Last-Event-ID`` is the last
    seq) gets the end again, whose id then stops EventSource for good (read with the stdlib)."""
    path = urlsplit(sse_target.stream_url()).path
    for last_id, status in ((str(sse_target.count), 200), (f"{sse_target.count}:end", 204)):
        conn = http.client.HTTPConnection(urlsplit(sse_target.base).netloc, timeout=60)
        try:
            conn.request(
                "GET", path, headers={"Accept": "text/event-stream", "Last-Event-ID": last_id}
            )
            response = conn.getresponse()
            assert response.status == status, last_id
            body = response.read()
            if status == 204:
                assert body == b""
            else:
                events = parse_stream(body)
                assert [e.event for e in events] == ["end"], events
                assert events[0].id == f"{sse_target.count}:end"
        finally:
            conn.close()
