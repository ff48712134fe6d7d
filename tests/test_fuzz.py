"""Fuzzing in the test suite: the seed corpus and every past finding replayed through the
harnesses, and a bounded coverage-guided smoke run of every target (atheris)."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "fuzz"))

import harnesses  # noqa: E402
import run  # noqa: E402

#: Inputs the fuzzer found, with what they broke. Each must now pass its harness.
FINDINGS = [
    # A DATA frame with handle 0 and seq 0 joined the decoder's empty run (its initial
    # handle and next seq were both 0) and crashed building Data(handle=0) with ValueError.
    ("client", "AAAAAAgVAAAAAAAAAAAAAAAAAA=="),
    # HELLO then garbage in one read: the connection failed before the application answered
    # HandshakeRequested, and accept_handshake raised CONNECTION_CLOSED.
    (
        "server",
        "AQAAAAwBAAAAAABTVFJQAAEAAQAAAAAAISEhISEhISEhISEhISEhISEhISEhISEhISEhISEhISEhISEhISEAALr+"
        "/gAAAABTVFJQAAEfcsOpc3Vtw6ktzrrPjM+DzrzOtS3mlwEAAQAAAAIAEAAAAApzZXNzaW9uLTQxAAAAABAAAQID"
        "BAUGBwg=",
    ),
]


@pytest.mark.parametrize(("target", "data"), FINDINGS)
def test_past_findings(target: str, data: str) -> None:
    harnesses.TARGETS[target](base64.b64decode(data))


@pytest.mark.parametrize("target", sorted(harnesses.TARGETS))
def test_seed_corpus(target: str) -> None:
    for seed in run.seeds():
        harnesses.TARGETS[target](seed)


def test_invariant_breaks_are_reported() -> None:
    with pytest.raises(harnesses.InvariantError):
        harnesses._check(False, "a finding")


def test_fuzz_smoke() -> None:
    """Every target, coverage-guided, a bounded number of executions (about a minute)."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "fuzz" / "run.py"), "--smoke"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr[-5000:]
    for target in run.SMOKE_RUNS:
        assert f"{target}: exit 0 Done" in result.stdout
