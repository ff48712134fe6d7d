"""A reference SSE server for the independent-client tests: sse-starlette under uvicorn (or
hypercorn).

It speaks the wire shape of spec/HTTP.md for the one channel :data:`sse_contract.CHANNEL`, so
that the browser, node and Python client harnesses are proven against a real, independent
server before they judge ours:

- ``GET /{channel}/{stream_id}``: the stream's chunks after ``Last-Event-ID`` (or
  ``?after_seq=N``), each with ``id: <seq>``, then ``event: end`` with ``id: <last seq>:end``;
  ``retry: 200`` first; a reconnect whose ``Last-Event-ID`` is the end's id gets 204 (one that
  names the last seq gets the end again: it was cut between the last chunk and the end);
- ``POST /{channel}``: the body is the chunk count (ASCII digits, empty for
  :data:`sse_contract.COUNT`); answers the new stream's events with a ``Stream-Id`` header;
- 404/400 with a JSON body for an unknown channel or stream and a bogus ``Last-Event-ID``;
- CORS for every ``http://127.0.0.1:<port>`` origin, ``Stream-Id`` exposed.

Streams are made of :func:`sse_contract.chunk` and so need no storage: a resume simply starts
after the given seq. The stream ``fixed`` always exists, with :data:`sse_contract.COUNT`
chunks. Chunks are paced (``--pace`` seconds apart) so that a client reads a live stream.

Run ``python tests/sse_starlette_app.py [--port 0] [--pace S] [--server uvicorn|hypercorn]``: it
prints ``ready <port>`` once it listens and stops when its standard input closes.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import socket
import sys
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import uvicorn
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sse_contract import CHANNEL, COUNT, chunk, encode_chunk

FIXED = "fixed"
ORIGINS = r"http://127\.0\.0\.1:\d+"


def _problem(status: int, name: str, message: str) -> JSONResponse:
    return JSONResponse({"name": name, "message": message}, status_code=status)


def make_app(pace: float = 0.0) -> Starlette:
    """The app; ``pace`` seconds pass between two chunks of a stream."""
    streams: dict[str, int] = {FIXED: COUNT}  # stream id -> chunk count
    ids = itertools.count(1)

    async def events(count: int, after: int) -> AsyncIterator[ServerSentEvent]:
        yield ServerSentEvent(retry=200)
        for seq in range(after + 1, count + 1):
            if pace and seq > after + 1:
                await anyio.sleep(pace)
            yield ServerSentEvent(**encode_chunk(seq, chunk(seq)))
        yield ServerSentEvent(data="", event="end", id=f"{count}:end")

    def respond(count: int, after: int, headers: dict[str, str] | None = None) -> Response:
        return EventSourceResponse(
            events(count, after), headers={"Cache-Control": "no-store", **(headers or {})}
        )

    async def read(request: Request) -> Response:
        channel, stream_id = request.path_params["channel"], request.path_params["stream_id"]
        if channel != CHANNEL or stream_id not in streams:
            return _problem(404, "NOT_FOUND", f"no stream {channel}/{stream_id}")
        resume = request.headers.get("last-event-id") or request.query_params.get("after_seq")
        count = streams[stream_id]
        if resume == f"{count}:end":
            return Response(status_code=204)  # the end was delivered: EventSource stops
        if resume is not None and not resume.isdigit():
            return _problem(400, "INVALID_ARGUMENT", f"bad Last-Event-ID {resume!r}")
        return respond(count, min(int(resume or 0), count))

    async def open_stream(request: Request) -> Response:
        channel = request.path_params["channel"]
        if channel != CHANNEL:
            return _problem(404, "NOT_FOUND", f"no channel {channel}")
        body = (await request.body()).strip()
        if body and not body.isdigit():
            return _problem(400, "INVALID_ARGUMENT", "the body is a chunk count")
        stream_id = f"s{next(ids)}"
        streams[stream_id] = int(body or COUNT)
        return respond(streams[stream_id], 0, {"Stream-Id": stream_id})

    return Starlette(
        routes=[
            Route("/{channel}/{stream_id}", read, methods=["GET"]),
            Route("/{channel}", open_stream, methods=["POST"]),
        ],
        middleware=[
            Middleware(
                CORSMiddleware,
                allow_origin_regex=ORIGINS,
                allow_methods=["GET", "POST"],
                allow_headers=["Last-Event-ID", "Content-Type"],
                expose_headers=["Stream-Id"],
            )
        ],
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="sse_starlette_app")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--pace", type=float, default=0.0)
    parser.add_argument("--server", choices=["uvicorn", "hypercorn"], default="uvicorn")
    args = parser.parse_args(argv)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    sock.listen(128)

    def watch() -> None:
        with contextlib.suppress(OSError, ValueError):
            sys.stdin.buffer.read()
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()
    print(f"ready {sock.getsockname()[1]}", flush=True)
    app = make_app(args.pace)
    if args.server == "hypercorn":
        import asyncio

        from hypercorn.asyncio import serve
        from hypercorn.config import Config

        config = Config()
        config.bind = [f"fd://{sock.fileno()}"]
        config.accesslog = config.errorlog = None
        asyncio.run(serve(app, config))  # type: ignore[arg-type]
    else:
        config = uvicorn.Config(app, log_level="warning", lifespan="off")
        uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
