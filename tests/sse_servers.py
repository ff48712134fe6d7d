"""SSE servers for the independent-client tests, each started on a free port and stopped.

:func:`run_sse_starlette` runs :mod:`sse_starlette_app` (sse-starlette under uvicorn) in a
process of its own and yields the :class:`SseTarget` that describes it. Our own HTTP listeners
get the same treatment: a context manager that yields an ``SseTarget`` serving
``sse_contract.CHANNEL`` with ``chunk(1..count)`` is all a new server needs to run every test
of ``test_sse_clients.py``.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

from sse_contract import CHANNEL, COUNT, SseTarget

__all__ = ["ReadyProcess", "run_ours", "run_sse_starlette"]

HERE = Path(__file__).resolve().parent


class ReadyProcess:
    """A child process that prints ``ready <port>`` once it listens and exits when its
    standard input closes (stopped by closing it, then killed if it lingers)."""

    def __init__(self, argv: list[str], *, timeout: float = 60.0) -> None:
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        line: list[bytes] = []
        reader = threading.Thread(
            target=lambda: line.append(self.proc.stdout.readline()),  # type: ignore[union-attr]
            daemon=True,
        )
        reader.start()
        reader.join(timeout)
        words = line[0].split() if line else []
        if len(words) != 2 or words[0] != b"ready":
            self.stop()
            err = self.proc.stderr.read().decode(errors="replace")[-2000:]  # type: ignore[union-attr]
            raise RuntimeError(f"{argv[1:]} did not get ready: {line!r} {err}")
        self.port = int(words[1])

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.proc.stdin.close()  # type: ignore[union-attr]
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(15)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


@contextlib.contextmanager
def run_sse_starlette(pace: float = 0.005, server: str = "uvicorn") -> Iterator[SseTarget]:
    """sse-starlette under ``server`` (uvicorn or hypercorn), ``pace`` seconds between chunks."""
    process = ReadyProcess(
        [
            sys.executable,
            str(HERE / "sse_starlette_app.py"),
            "--pace",
            str(pace),
            "--server",
            server,
        ]
    )
    try:
        yield SseTarget(
            name=f"sse-starlette/{server}",
            base=f"http://127.0.0.1:{process.port}",
            channel=CHANNEL,
            stream_id="fixed",
            count=COUNT,
            post_body=str(COUNT),
        )
    finally:
        process.stop()


@contextlib.contextmanager
def run_ours(server: str, pace: float = 0.005) -> Iterator[SseTarget]:
    """One of streamproto's HTTP listeners (:mod:`sse_ours_app`): ``server`` is a backend
    (``asyncio``, ``trio``, ``sync``) or the ASGI app under ``asgi-uvicorn``/``asgi-hypercorn``."""
    process = ReadyProcess(
        [sys.executable, str(HERE / "sse_ours_app.py"), "--server", server, "--pace", str(pace)]
    )
    try:
        yield SseTarget(
            name=f"streamproto/{server}",
            base=f"http://127.0.0.1:{process.port}",
            channel=CHANNEL,
            stream_id="fixed",
            count=COUNT,
            post_body=str(COUNT),
        )
    finally:
        process.stop()
