"""A real headless Chromium as an SSE client, with no CDP library.

:class:`PageServer` serves the pages of ``tests/browser/`` from a tiny static HTTP server on a
port of its own (so the SSE server under test is another origin, as in production) and
receives each page's report, POSTed back as JSON to ``/result``. :func:`run_page` launches
``chromium --headless=new`` on a page URL, waits for the report and always kills the browser
(its whole process group). A page that reports nothing in time fails the test with the
browser's stderr.

    with PageServer() as pages:
        report = run_page(pages, "eventsource.html", {"server": base, "channel": ch, ...})
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import signal
import subprocess
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

__all__ = ["PAGES", "PageServer", "chromium", "run_page"]

PAGES = Path(__file__).resolve().parent / "browser"
#: A browser on a busy two-core machine can take several seconds just to start.
DEFAULT_TIMEOUT = 90.0
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-extensions",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--mute-audio",
)


def chromium() -> str | None:
    """The Chromium executable on PATH, or None."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        name = urlsplit(self.path).path.lstrip("/")
        page = PAGES / name
        if "/" in name or not name.endswith(".html") or not page.is_file():
            self.send_error(404)
            return
        body = page.read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        if urlsplit(self.path).path != "/result":
            self.send_error(404)
            return
        try:
            self.server.results.put(json.loads(body))
        except ValueError:
            self.server.results.put({"js_errors": [f"unreadable report: {body[:200]!r}"]})
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.results: queue.Queue[dict[str, Any]] = queue.Queue()


class PageServer:
    """Serves ``tests/browser/*.html`` on ``127.0.0.1`` and collects the pages' reports."""

    def __init__(self) -> None:
        self._server = _Server()
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )
        self._thread.start()

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, page: str, params: dict[str, str]) -> str:
        return f"{self.origin}/{page}?{urlencode(params)}"

    def result(self, timeout: float) -> dict[str, Any] | None:
        try:
            return self._server.results.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)

    def __enter__(self) -> PageServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """Kill the browser and every process it started (its own session's group)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(10)


def run_page(
    pages: PageServer,
    page: str,
    params: dict[str, str],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    tag: str = "",
) -> dict[str, Any]:
    """Open ``page`` with ``params`` in a fresh headless Chromium and return its report.

    Raises AssertionError (with the browser's stderr) if no report arrives in ``timeout``
    seconds. The browser is killed in every case. ``tag`` goes into the environment of every
    browser process as ``STREAMPROTO_BROWSER_TAG`` (so a test can check none is left).
    """
    exe = chromium()
    if exe is None:
        raise AssertionError("chromium is not installed (.ci/run installs it)")
    with tempfile.TemporaryDirectory(prefix="sp-chromium-", ignore_cleanup_errors=True) as profile:
        log = Path(profile) / "stderr.log"
        with log.open("wb") as stderr:
            proc = subprocess.Popen(
                [exe, *FLAGS, f"--user-data-dir={profile}/data", pages.url(page, params)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,
                env={**os.environ, "STREAMPROTO_BROWSER_TAG": tag},
            )
            try:
                report = pages.result(timeout)
            finally:
                _kill_group(proc)
        if report is None:
            tail = log.read_text(errors="replace")[-3000:]
            raise AssertionError(
                f"{page}: no report within {timeout:.0f} s (browser exit {proc.returncode}); "
                f"chromium stderr:\n{tail}"
            )
    return report
