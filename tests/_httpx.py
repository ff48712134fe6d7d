"""``httpx`` + ``httpx-sse`` as an SSE client, with the reconnect loop a Python user writes
(httpx-sse parses events but does not reconnect): on a broken body, read again from the last
event id seen, with ``Last-Event-ID``; a 204 ends it for good."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from httpx_sse import connect_sse

__all__ = ["HttpxRun", "read_with_httpx_sse"]


@dataclass
class HttpxRun:
    events: list[dict[str, Any]] = field(default_factory=list)
    #: Status of every response, in order.
    statuses: list[int] = field(default_factory=list)
    broken: list[str] = field(default_factory=list)
    stream_id: str | None = None
    closed_by: str = ""
    #: Blocks without data (``retry:`` advice; a comment heartbeat once an id was seen) that
    #: httpx-sse hands out as empty ``message`` events, where the HTML standard dispatches no
    #: event: a user filters them (no test chunk is empty), and so does this client.
    dataless: int = 0


def read_with_httpx_sse(
    url: str, *, post: str | None = None, timeout: float = 60.0, attempts: int = 20
) -> HttpxRun:
    """Read ``url`` (``post``: open with ``POST url`` and this body, then resume with
    ``GET url/{Stream-Id}``) until the end or error event, or a 204."""
    run = HttpxRun()
    last_id = ""
    with httpx.Client(timeout=timeout) as client:
        for _ in range(attempts):
            if post is not None and not run.statuses:
                method, target, body = "POST", url, post.encode()
            else:
                method, body = "GET", None
                target = url if post is None else f"{url}/{run.stream_id}"
            headers = {"Last-Event-ID": last_id} if last_id else {}
            try:
                with connect_sse(client, method, target, content=body, headers=headers) as source:
                    run.statuses.append(source.response.status_code)
                    if source.response.status_code == 204:
                        run.closed_by = "204"
                        return run
                    if post is not None and run.stream_id is None:
                        run.stream_id = source.response.headers.get("Stream-Id")
                    source.response.raise_for_status()
                    for sse in source.iter_sse():
                        if sse.event == "message" and not sse.data:
                            run.dataless += 1
                            continue
                        run.events.append({"type": sse.event, "id": sse.id, "data": sse.data})
                        if sse.event in ("message", "bytes"):
                            last_id = sse.id
                        if sse.event in ("end", "error"):
                            run.closed_by = sse.event
                            return run
            except (httpx.TransportError, httpx.RemoteProtocolError) as exc:
                run.broken.append(f"{type(exc).__name__}: {exc}")
            time.sleep(0.1)
    run.closed_by = "too many attempts"
    return run
