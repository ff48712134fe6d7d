"""Test-session hooks."""

from __future__ import annotations

import gc
import sys
import warnings
from collections.abc import Iterator

import pytest


@pytest.fixture
def no_unclosed_sockets() -> Iterator[None]:
    """Collect garbage once the case is over: a transport or socket it left open warns now and
    fails this case, instead of whichever later case the collector happens to run in."""
    yield
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        gc.collect()
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []


def _stateful_steps(terminalreporter: pytest.TerminalReporter) -> None:
    """Report how many steps the connection state machine executed (the lead quotes it)."""
    for name, module in list(sys.modules.items()):
        if name.rpartition(".")[2] == "test_connection_stateful":
            steps = getattr(module, "STEPS", 0)
            if steps:
                terminalreporter.write_line(f"stateful connection steps executed: {steps}")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The step count above, and the adapter fault-injection counts (what actually ran)."""
    _stateful_steps(terminalreporter)
    module = next(
        (m for n, m in list(sys.modules.items()) if n.rpartition(".")[2] == "test_adapter_faults"),
        None,
    )
    stats = getattr(module, "STATS", None)
    if stats:
        parts = [f"{c} {stats[c]}" for c in module.CATEGORIES]  # type: ignore[union-attr]
        parts += [f"{k} {stats[k]}" for k in ("hangs", "leaked tasks", "leaked threads")]
        terminalreporter.write_line("adapter faults: " + ", ".join(parts))
