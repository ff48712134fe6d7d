"""State diagrams (Mermaid) generated from the state tables, for ``docs/state-machines.md``.

``python -m streamproto diagrams`` prints the page; a test keeps the committed page equal to
what the tables say, so the pictures cannot drift from the code.
"""

from __future__ import annotations

from ._http import TRANSITIONS as EXCHANGE_TRANSITIONS
from ._http import ExchangeState
from ._state import (
    BIDI_ROUTES,
    BIDI_SIDES,
    CONNECTION_TRANSITIONS,
    HANDLE_TRANSITIONS,
    ConnState,
    HState,
    Side,
)

__all__ = ["render"]


def _diagram(rows: dict[tuple[str, str], str], start: str, end: str = "CLOSED") -> list[str]:
    lines = ["```mermaid", "stateDiagram-v2", f"    [*] --> {start}"]
    edges: dict[tuple[str, str], list[str]] = {}
    for (state, inp), new in rows.items():
        edges.setdefault((state, new), []).append(inp)
    for (state, new), inputs in edges.items():
        lines.append(f"    {state} --> {new}: {', '.join(sorted(inputs))}")
    lines += [f"    {end} --> [*]", "```"]
    return lines


def _bidi() -> list[str]:
    """The bidirectional handle: which two machines, and the machine each input steps."""
    out = [
        "## Bidirectional handle",
        "",
        "Two of the machines above under one handle (spec section 10.5): the handle is",
        "forgotten when both are CLOSED.",
        "",
        "| Role | Receiving direction | Sending direction |",
        "|---|---|---|",
    ]
    out += [f"| {role} | {rx.value} | {tx.value} |" for role, (rx, tx) in BIDI_SIDES.items()]
    out += ["", "| Input | Machine |", "|---|---|"]
    out += [f"| {inp.value} | {direction.value} |" for inp, direction in BIDI_ROUTES.items()]
    return [*out, ""]


def render() -> str:
    """The Markdown page with one diagram per handle side and one for the connection."""
    out = [
        "# State machines",
        "",
        "Generated from `src/streamproto/_state.py` by `python -m streamproto diagrams`; do not",
        "edit by hand. Inputs are `SEND_*`/`RECV_*` frames and the internal `DRAINED`; a pair",
        "missing from a diagram is a protocol error (received) or a local error (sent).",
        "",
    ]
    for side in Side:
        rows = {
            (state.value, inp.value): new.value
            for (state, inp), new in HANDLE_TRANSITIONS[side].items()
        }
        out += [f"## {side.value.capitalize()}", ""]
        out += [*_diagram(rows, HState.REQUESTED.value), ""]
    out += _bidi()
    rows = {(s.value, i.value): n.value for (s, i), n in CONNECTION_TRANSITIONS.items()}
    out += ["## Connection (both roles)", ""]
    out += _diagram(
        rows, f"{ConnState.HANDSHAKING.value}\n    [*] --> {ConnState.AWAIT_HELLO.value}"
    )
    rows = {(s.value, i.value): n.value for (s, i), n in EXCHANGE_TRANSITIONS.items()}
    out += ["", "## HTTP exchange (spec/HTTP.md)", ""]
    out += _diagram(rows, ExchangeState.PENDING.value, ExchangeState.DONE.value)
    return "\n".join(out) + "\n"
