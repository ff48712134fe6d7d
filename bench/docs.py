"""Regenerate ``docs/benchmarks.md`` from a results file: ``python -m bench.docs [--json PATH]
[--out PATH]`` (defaults: ``bench/results/latest.json`` and ``docs/benchmarks.md``).

:func:`render` turns the JSON document that ``python -m bench`` writes into the page: the
end-to-end figures of every backend and transport with the peers beside them, the ratios
(ours against each peer, trio and threads against asyncio), the issue's targets with the
measured values, the other workloads' tables, and a note on the machine and the run.

It also keeps ``bench/history.json``: each full-mode results file it renders adds one entry
(its commit, time and the :data:`HEADLINES` it has), and the page ends with their table, so a
regression shows against the commits before it. Quick (smoke) runs are not recorded, nor is
a results file recorded twice.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bench.e2e import BACKENDS, METRICS, TRANSPORTS, case_names, target_rows

__all__ = ["render", "write"]

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_JSON = ROOT / "bench" / "results" / "latest.json"
DEFAULT_OUT = ROOT / "docs" / "benchmarks.md"
DEFAULT_HISTORY = ROOT / "bench" / "history.json"
#: History entries shown on the page (the newest); the file keeps them all.
HISTORY_SHOWN = 12

#: The ratios the history keeps: (column, workload, derived key). Throughput ratios: higher
#: is better; latency ratios (rtt): lower is better.
HEADLINES = (
    ("64 B asyncio/tcp ÷ websockets", "e2e", "64 B asyncio/tcp / websockets/ws"),
    ("rtt p50 asyncio/tcp ÷ websockets", "e2e", "rtt p50 asyncio/tcp / websockets/ws"),
    ("rtt p50 asyncio/ws ÷ websockets", "e2e", "rtt p50 asyncio/ws / websockets/ws"),
    ("64 B sync/tcp ÷ asyncio", "e2e", "64 B sync/tcp / asyncio/tcp"),
    ("rtt p50 sync/tcp ÷ asyncio", "e2e", "rtt p50 sync/tcp / asyncio/tcp"),
    ("core 64 B ÷ bare", "core", "64 B ours throughput / bare throughput"),
    (
        "fan-out 1000, one write ÷ 1M/s",
        "hub-fanout",
        "1000 subscriptions / goal (1,000,000 deliveries/s)",
    ),
)

_UNITS = {"us": "µs"}
_RATIO_METRICS = ("64 B", "4 KiB", "rtt p50")


def _number(value: float) -> str:
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _figure(m: dict[str, Any]) -> str:
    if m["min"] == m["max"]:
        return _number(m["median"])
    return f"{_number(m['median'])} ({_number(m['min'])}-{_number(m['max'])})"


def _table(header: list[str], rows: Iterable[list[str]]) -> list[str]:
    """A Markdown table: the first column left-aligned, the others right-aligned."""
    lines = ["| " + " | ".join(header) + " |", "|:---|" + "---:|" * (len(header) - 1)]
    lines.extend("| " + " | ".join(row) + " |" for row in rows)
    return lines


def _machine(document: dict[str, Any]) -> list[str]:
    meta = document.get("meta", {})
    e2e = document.get("workloads", {}).get("e2e", {}).get("params", {})
    mode = "**quick mode** (smoke numbers: short runs)" if meta.get("quick") else "full mode"
    lines = [
        "## The run",
        "",
        f"- When: {meta.get('time', '?')}, commit `{meta.get('commit') or '?'}`, {mode}.",
        f"- Python {str(meta.get('python', '?')).split()[0]} ({meta.get('implementation', '?')}), "
        f"{meta.get('platform', '?')}.",
    ]
    reruns = meta.get("reruns", {})
    if reruns:
        lines.append(
            "- Re-run later and merged in (`python -m bench --merge`), the rest as above: "
            + "; ".join(
                f"{name} at {run.get('time', '?')}, commit `{run.get('commit') or '?'}`"
                f"{' (quick mode)' if run.get('quick') else ''}"
                for name, run in reruns.items()
            )
            + "."
        )
    if e2e:
        load = e2e.get("loadavg_before"), e2e.get("loadavg_after")
        load_text = " → ".join(f"{v[0]:.1f}" for v in load if v) or "?"
        lines.append(
            f"- {e2e.get('cpu_count', '?')} CPUs; 1-minute load average {load_text} "
            "(before → after the e2e workload). Client and server share these CPUs with each "
            "other and with whatever else runs: on a loaded machine the throughputs drop and "
            "the p99 latencies mostly measure scheduling."
        )
    if meta.get("allocator"):
        lines.append(f"- Allocator: {meta['allocator']}.")
    lines += [
        "- Numbers compare implementations within one run on one machine; they are not "
        "portable across machines.",
        "",
    ]
    return lines


def _e2e(report: dict[str, Any]) -> list[str]:
    params = report.get("params", {})
    by_name = {m["name"]: m for m in report.get("measurements", [])}
    median = {name: m["median"] for name, m in by_name.items()}
    cases = [c for c in case_names() if any(f"{c} {metric}" in by_name for metric in METRICS)]
    ours = [c for c in cases if c.split("/")[0] in BACKENDS]
    peers = [c for c in cases if c.split("/")[0] not in BACKENDS]
    lines = [
        "## End to end",
        "",
        "Server in its own process, client in another, over 127.0.0.1; one connection per "
        "session. `tcp` is streamproto's raw TCP framing, `ws` its WebSocket framing "
        "(wsproto). Peers: `raw` is a bare 4-byte length prefix over an asyncio Protocol "
        "with batched writes (the floor for a Python transport), `websockets` the "
        "`websockets` library (asyncio, one message per chunk, no compression), `grpc` "
        "grpcio's `grpc.aio` unary-stream call with bytes messages.",
        "",
        f"- **64 B**: chunks/s of a stream of {params.get('chunks_64B', '?'):,} chunks of 64 "
        "bytes, from `open` to the end of the stream (overflow policy BLOCK, client credit "
        f"window {params.get('client_window', '?')}).",
        "- **64 B write_many**: the same stream, the server's handler writing bursts of 64 "
        "chunks with `ServerProducer.write_many` instead of one `write` each (the same bytes "
        "reach the client).",
        "- **64 B batched**: the `write_many` stream read with `sub.batches()` (lists of "
        "what has arrived) instead of one iteration step per chunk: both ends batched, as "
        "the `raw` peer is.",
        f"- **4 KiB**: MB/s (10^6 bytes) of {params.get('chunks_4KiB', '?'):,} chunks of 4096 "
        "bytes, the same way.",
        f"- **rtt p50 / p99**: µs from `open` of an echo stream (64 bytes of args, written "
        f"back as one chunk) to its first chunk; {params.get('round_trips', '?'):,} sequential "
        "round trips per repeat, percentiles per repeat.",
        f"- Median over {params.get('repeats', '?')} repeat(s) (min-max in brackets), the "
        "cases run round-robin.",
        "",
        "### Figures",
        "",
    ]
    header = ["case"] + [f"{metric} ({_UNITS.get(unit, unit)})" for metric, unit in METRICS.items()]
    rows = []
    for case in cases:
        label = f"**{case}**" if case in ours else case
        rows.append(
            [label]
            + [
                _figure(by_name[f"{case} {metric}"]) if f"{case} {metric}" in by_name else "-"
                for metric in METRICS
            ]
        )
    lines += _table(header, rows)

    def ratio(num: str, den: str) -> str:
        a, b = median.get(num), median.get(den)
        return "-" if a is None or not b else f"{a / b:.3g}x"

    lines += [
        "",
        "### Ours against the peers",
        "",
        "Throughput columns: ours / peer (above 1: ours is faster). Latency columns: ours / "
        "peer (below 1: ours is faster).",
        "",
    ]
    header = ["case"] + [
        f"{metric} / {peer.split('/')[0]}" for metric in _RATIO_METRICS for peer in peers
    ]
    rows = [
        [case]
        + [
            ratio(f"{case} {metric}", f"{peer} {metric}")
            for metric in _RATIO_METRICS
            for peer in peers
        ]
        for case in ours
    ]
    lines += _table(header, rows)
    others = [b for b in BACKENDS[1:] if any(c.startswith(f"{b}/") for c in ours)]
    if others and any(c.startswith("asyncio/") for c in ours):
        lines += [
            "",
            "### trio and threads against asyncio",
            "",
            "Same transport. Throughput: backend / asyncio (below 1: slower than asyncio); "
            "latency: backend / asyncio (above 1: slower).",
            "",
        ]
        rows = [
            [f"{backend}/{transport}"]
            + [
                ratio(f"{backend}/{transport} {metric}", f"asyncio/{transport} {metric}")
                for metric in _RATIO_METRICS
            ]
            for backend in others
            for transport in TRANSPORTS
        ]
        lines += _table(["case", *_RATIO_METRICS], rows)
    lines += [
        "",
        "### Targets",
        "",
        'From the benchmark issue. For "trio and threads within 1.5x of asyncio" the '
        "throughput rows are asyncio / backend, so that at most 1.5 meets it.",
        "",
    ]
    rows = []
    for row in target_rows(median):
        value = row["value"]
        status = {True: "met", False: "**missed**", None: "not measured"}[row["met"]]
        shown = "-" if value is None else _number(value)
        rows.append([row["target"], shown, f"{row['op']} {row['bound']:,}", status])
    lines += _table(["target", "measured", "goal", ""], rows)
    left_out = {**params.get("skipped", {}), **params.get("failed", {})}
    if left_out:
        lines += ["", "Left out of this run:", ""]
        lines += [f"- `{case}`: {why}" for case, why in left_out.items()]
    lines.append("")
    return lines


def _other(name: str, report: dict[str, Any], description: str) -> list[str]:
    lines = [f"## {name}", ""]
    if description:
        lines += [description, ""]
    rows = [
        [
            m["name"] + (" (info)" if m.get("info") else ""),
            _figure(m),
            _UNITS.get(m["unit"], m["unit"]),
        ]
        for m in report.get("measurements", [])
    ]
    lines += _table(["case", "median (min-max)", "unit"], rows)
    derived = report.get("derived", {})
    if derived:
        lines.append("")
        lines += [f"- {key}: {value:.2f}x" for key, value in derived.items()]
    lines.append("")
    return lines


def headlines(document: dict[str, Any]) -> dict[str, Any] | None:
    """The history entry of a results document: None for a quick run, or one without any
    of the :data:`HEADLINES`."""
    meta = document.get("meta", {})
    if meta.get("quick", True):
        return None
    workloads = document.get("workloads", {})
    ratios = {
        column: workloads[workload]["derived"][key]
        for column, workload, key in HEADLINES
        if key in workloads.get(workload, {}).get("derived", {})
    }
    if not ratios:
        return None
    return {"commit": meta.get("commit"), "time": meta.get("time"), "ratios": ratios}


def record(document: dict[str, Any], history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``history`` with ``document``'s entry added, unless it has none or is there already
    (the same commit and time)."""
    entry = headlines(document)
    if entry is None or any(
        (old["commit"], old["time"]) == (entry["commit"], entry["time"]) for old in history
    ):
        return history
    return [*history, entry]


def _history(history: list[dict[str, Any]]) -> list[str]:
    lines = [
        "## History",
        "",
        "The headline ratios of the full runs this page was generated from, oldest first "
        f"(the last {HISTORY_SHOWN}; all in `bench/history.json`). Each is a ratio within "
        "one run, so runs on a busier machine stay comparable; throughput ratios are better "
        "higher, rtt ratios lower. A commit ending in `+dirty` had uncommitted changes.",
        "",
    ]
    if not history:
        return [*lines, "No full run recorded yet.", ""]
    header = ["commit", "when"] + [column for column, _, _ in HEADLINES]
    rows = [
        [f"`{entry['commit']}`", str(entry["time"])[:16].replace("T", " ")]
        + [
            f"{entry['ratios'][column]:.2f}x" if column in entry["ratios"] else "-"
            for column, _, _ in HEADLINES
        ]
        for entry in history[-HISTORY_SHOWN:]
    ]
    return [*lines, *_table(header, rows), ""]


def render(document: dict[str, Any], history: list[dict[str, Any]] | None = None) -> str:
    """The Markdown page for a results document (as written by ``python -m bench``), with
    the table of ``history`` (entries as :func:`record` makes them) at its end."""
    from bench import load_workloads  # noqa: PLC0415

    descriptions = {name: w.description for name, w in load_workloads().items()}
    workloads = document.get("workloads", {})
    lines = [
        "# Benchmarks",
        "",
        "<!-- Generated by `python -m bench.docs` from bench/results/latest.json; "
        "do not edit by hand. Rerun `python -m bench` then `python -m bench.docs`. -->",
        "",
        "streamproto beside its peers, measured in one run of `python -m bench` "
        "(see `bench/` for the workloads).",
        "",
    ]
    lines += _machine(document)
    if "e2e" in workloads:
        lines += _e2e(workloads["e2e"])
    else:
        lines += ["## End to end", "", "This results file has no e2e run.", ""]
    for name, report in workloads.items():
        if name != "e2e":
            lines += _other(name, report, descriptions.get(name, ""))
    if history is not None:
        lines += _history(history)
    return "\n".join(lines).rstrip() + "\n"


def write(
    json_path: Path = DEFAULT_JSON, out: Path = DEFAULT_OUT, history_path: Path = DEFAULT_HISTORY
) -> Path:
    """Render ``json_path`` to ``out``, after recording its headlines in ``history_path``
    (see :func:`record`); returns ``out``."""
    document = json.loads(json_path.read_text(encoding="utf-8"))
    history: list[dict[str, Any]] = []
    if history_path.exists():
        history = json.loads(history_path.read_text(encoding="utf-8"))
    updated = record(document, history)
    if updated is not history:
        history_path.write_text(
            json.dumps(updated, indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(document, updated), encoding="utf-8")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.docs", description=__doc__)
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="results file")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="page to write")
    parser.add_argument(
        "--history", type=Path, default=DEFAULT_HISTORY, help="headline history to add to"
    )
    args = parser.parse_args(argv)
    print(f"wrote {write(args.json, args.out, args.history)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
