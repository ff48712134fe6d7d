"""``python -m bench [--quick] [--json PATH] [workload ...]``: run workloads, print, save JSON."""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import Config, Report, load_workloads, stabilize_allocator

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "latest.json"


def _git_commit() -> str | None:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            check=True,
        )
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    commit = result.stdout.strip()
    # Uncommitted changes to tracked files: the figures are not that commit's alone.
    return f"{commit}+dirty" if commit and status.stdout.strip() else commit or None


def _print_report(name: str, description: str, report: Report, config: Config) -> None:
    params = ", ".join(f"{k}={v}" for k, v in report.params.items())
    print(f"\n{name}: {description}")
    print(f"  {config.repeats} repeats; {params}; median (min-max)")
    width = max(len(m.name) for m in report.measurements)
    for m in report.measurements:
        note = "  (info)" if m.info else ""
        print(f"  {m.name:<{width}}  {m.median:10.1f}  ({m.min:.1f}-{m.max:.1f}) {m.unit}{note}")
    for key, value in report.derived.items():
        print(f"  {key}: {value:.2f}x")
    faulty = [m.name for m in report.measurements if m.faults and statistics.median(m.faults) > 16]
    if faulty:
        print(f"  warning: page faults in every call of {', '.join(faulty)}: allocator noise")


def main(argv: list[str] | None = None) -> int:
    workloads = load_workloads()
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer, shorter samples (smoke run)")
    parser.add_argument(
        "--json", type=Path, default=DEFAULT_JSON, help=f"results file (default: {DEFAULT_JSON})"
    )
    parser.add_argument(
        "--merge",
        action="store_true",
        help="replace only these workloads in the existing results file (recorded in "
        "meta.reruns) and keep the others",
    )
    parser.add_argument(
        "workload", nargs="*", help=f"workloads to run (default: all): {', '.join(workloads)}"
    )
    args = parser.parse_args(argv)
    unknown = [name for name in args.workload if name not in workloads]
    if unknown:
        parser.error(f"unknown workload {', '.join(unknown)}; choose from {', '.join(workloads)}")
    names = args.workload or list(workloads)
    config = Config.make(args.quick)
    allocator = stabilize_allocator()
    print(
        f"streamproto bench: Python {platform.python_version()} "
        f"({platform.python_implementation()}), {platform.machine()}, "
        f"{'quick' if config.quick else 'full'} mode; {allocator or 'allocator left as is'}"
    )
    results: dict[str, Any] = {}
    for name in names:
        entry = workloads[name]
        started = time.perf_counter()
        report = entry.run(config)
        _print_report(name, entry.description, report, config)
        results[name] = {**report.to_json(), "seconds": time.perf_counter() - started}
    document = {
        "meta": {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "commit": _git_commit(),
            "python": sys.version,
            "implementation": platform.python_implementation(),
            "platform": platform.platform(),
            "machine": platform.machine(),
            "quick": config.quick,
            "repeats": config.repeats,
            "allocator": allocator,
        },
        "workloads": results,
    }
    if args.merge and args.json.exists():
        merged = json.loads(args.json.read_text(encoding="utf-8"))
        reruns = merged["meta"].setdefault("reruns", {})
        for name in results:
            reruns[name] = document["meta"]
        merged["workloads"].update(results)
        document = merged
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
