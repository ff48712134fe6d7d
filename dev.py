#!/usr/bin/env python3
"""Bootstrap a virtual environment and run the demo or every gate.

    python3 dev.py demo    # the main demo
    python3 dev.py test    # ruff, ruff format, mypy --strict, the docs, pytest + 100% coverage
    python3 dev.py docs    # the docs site into build/docs/html, warnings as errors

Needs only python3 (3.11+). The environment lives in .venv and is reused when
pyproject.toml has not changed since it was made. ``test`` first installs the peers
the tests drive when they are missing: Debian's redis-server, chromium, nodejs and
npm (apt-get, through sudo when not root), then the npm packages pinned in tests/node.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if sys.platform == "win32" else "bin")
PY = BIN / "python"
STAMP = VENV / ".streamproto-stamp"
DOCS = ROOT / "build" / "docs" / "html"


def run(*args: str | Path) -> None:
    print("+", " ".join(str(a) for a in args), flush=True)
    subprocess.run([str(a) for a in args], cwd=ROOT, check=True)  # noqa: S603 - our own commands


def bootstrap() -> None:
    if sys.version_info < (3, 11):  # noqa: UP036 - this script may meet an older python3
        sys.exit("streamproto needs Python 3.11 or newer")
    want = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if PY.exists() and STAMP.exists() and STAMP.read_text() == want:
        return
    if not PY.exists():
        venv.EnvBuilder(with_pip=True).create(VENV)
    run(PY, "-m", "pip", "install", "-q", "--upgrade", "pip")
    run(PY, "-m", "pip", "install", "-q", "-e", ".[dev]")
    STAMP.write_text(want)


#: What the tests drive besides Python: a command each, and the Debian package that has it.
PEERS = {"redis-server": "redis-server", "chromium": "chromium", "node": "nodejs", "npm": "npm"}
NODE = ROOT / "tests" / "node"


def peers() -> None:
    """Install the peers the tests drive, only those missing (one apt-get update then), and
    the npm packages of tests/node when node_modules is older than the lock file."""
    missing = [package for command, package in PEERS.items() if shutil.which(command) is None]
    if missing:
        if shutil.which("apt-get") is None:
            sys.exit(f"the tests need {', '.join(missing)}: install them, then run again")
        sudo = [] if os.geteuid() == 0 else ["sudo"]
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for args in (["update", "-qq"], ["install", "-y", "-qq", *missing]):
            print("+", " ".join([*sudo, "apt-get", *args]), flush=True)
            subprocess.run([*sudo, "apt-get", *args], check=True, env=env)  # noqa: S603
    lock = hashlib.sha256((NODE / "package-lock.json").read_bytes()).hexdigest()
    stamp = NODE / "node_modules" / ".lock-sha256"
    if not stamp.exists() or stamp.read_text() != lock:
        npm = shutil.which("npm") or "npm"
        print("+ npm ci (tests/node)", flush=True)
        subprocess.run(  # noqa: S603 - our own lock file
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=NODE, check=True
        )
        stamp.write_text(lock)


def demo() -> None:
    run(PY, "examples/token_streaming.py")


def docs() -> None:
    # The source directory is the repository root (docs/conf.py says why); -E rebuilds every
    # page, so a warning on an unchanged page still fails the build.
    run(PY, "-m", "sphinx", "-b", "html", "-c", "docs", "-E", "-W", "--keep-going", "-q", ".", DOCS)
    print(f"docs: open {DOCS / 'index.html'}", flush=True)


def test() -> None:
    peers()
    run(PY, "-m", "ruff", "check", ".")
    run(PY, "-m", "ruff", "format", "--check", ".")
    run(PY, "-m", "mypy", "--strict", "src")
    docs()
    run(PY, "-m", "pytest", "--cov", "--cov-report=term-missing", "-p", "no:cacheprovider")


def main() -> None:
    commands = {"demo": demo, "test": test, "docs": docs}
    if len(sys.argv) != 2 or sys.argv[1] not in commands:
        sys.exit(f"usage: python3 dev.py {{{'|'.join(commands)}}}")
    bootstrap()
    try:
        commands[sys.argv[1]]()
    except subprocess.CalledProcessError as exc:
        sys.exit(exc.returncode)


if __name__ == "__main__":
    main()
