"""The npm ``eventsource`` package under node as an SSE client (``tests/node/sse_client.mjs``).

:func:`run_node_client` runs it on a URL and returns the JSON lines it printed. ``.ci/run``
installs node and the package (``npm ci`` in ``tests/node``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["NODE_DIR", "NodeRun", "run_node_client"]

NODE_DIR = Path(__file__).resolve().parent / "node"
CLIENT = NODE_DIR / "sse_client.mjs"


@dataclass(frozen=True)
class NodeRun:
    returncode: int
    lines: list[dict[str, Any]]
    stderr: str

    def of(self, *types: str) -> list[dict[str, Any]]:
        return [line for line in self.lines if line["type"] in types]


def run_node_client(
    url: str, *, post: str | None = None, timeout: float = 60.0, close_at_end: bool = True
) -> NodeRun:
    """Read ``url`` with npm ``eventsource`` (``post``: open with ``POST url`` and this body
    first; ``close_at_end`` False: read on after the end event until a 204 closes it); the
    client gives up after ``timeout`` seconds, and is killed 30 s after that."""
    node = shutil.which("node")
    if node is None:
        raise AssertionError("node is not installed (.ci/run installs it)")
    if not (NODE_DIR / "node_modules" / "eventsource").is_dir():
        raise AssertionError(f"npm eventsource is not installed: run npm ci in {NODE_DIR}")
    argv = [node, str(CLIENT), url, "--timeout", str(timeout)]
    if post is not None:
        argv += ["--post", post]
    if not close_at_end:
        argv.append("--no-close-at-end")
    proc = subprocess.run(
        argv, cwd=NODE_DIR, capture_output=True, text=True, timeout=timeout + 30, check=False
    )
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    return NodeRun(proc.returncode, lines, proc.stderr)
