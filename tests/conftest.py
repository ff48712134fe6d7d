"""Test-session hooks."""

from __future__ import annotations

import sys

import pytest


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Report how many steps the connection state machine executed (the lead quotes it)."""
    for name, module in list(sys.modules.items()):
        if name.rpartition(".")[2] == "test_connection_stateful":
            steps = getattr(module, "STEPS", 0)
            if steps:
                terminalreporter.write_line(f"stateful connection steps executed: {steps}")
