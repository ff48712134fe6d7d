"""Run a fuzz target with atheris (coverage-guided), seeded from the golden vectors.

    python fuzz/run.py decoder                 # long mode: until stopped (Ctrl-C)
    python fuzz/run.py server -runs=20000      # any libFuzzer flag works
    python fuzz/run.py --smoke                 # every target, bounded, seeds from spec/vectors

Findings are written by libFuzzer as crash-* files in the working directory; every crash
becomes a regression input in tests/test_fuzz.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SMOKE_RUNS = {"decoder": 40_000, "server": 15_000, "client": 15_000, "hub": 8_000}


def _bytes(value: object) -> bytes:
    """Decode a vector's bytes value (spec/vectors/README.md: hex, repeat object, or list)."""
    if isinstance(value, str):
        return bytes.fromhex(value)
    if isinstance(value, dict):
        return bytes.fromhex(value["repeat"]) * int(value["count"])
    if isinstance(value, list):
        return b"".join(_bytes(part) for part in value)
    raise TypeError(f"not a bytes value: {value!r}")


def seeds() -> list[bytes]:
    """Every golden vector (valid and invalid), whole: the fuzzer mutates from real frames."""
    found: list[bytes] = []
    for name in ("frames.json", "invalid.json"):
        for vector in json.loads((ROOT / "spec" / "vectors" / name).read_text()):
            # The unknown-frame budget vectors are a thousand copies of one frame: every
            # execution of a mutant would pay for them, for no coverage the others lack.
            if "hex" in vector and "unknown_budget" not in vector:
                found.append(_bytes(vector["hex"]))
    # A split seed byte first (see harnesses._splits), then a run of frames.
    return [b"\x00" + seed for seed in found] + [b"\x01" + b"".join(found[:12])]


def write_corpus(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for i, seed in enumerate(seeds()):
        (directory / f"seed-{i:03d}").write_bytes(seed)


def fuzz(target: str, argv: list[str]) -> None:
    import atheris  # noqa: PLC0415 - only the fuzzing command needs it

    with atheris.instrument_imports():
        sys.path.insert(0, str(HERE))
        import harnesses  # noqa: PLC0415 - imported under atheris's instrumentation
    test_one = harnesses.TARGETS[target]
    corpus = Path(tempfile.mkdtemp(prefix=f"fuzz-{target}-"))
    write_corpus(corpus)
    atheris.Setup([sys.argv[0], *argv, str(corpus)], test_one)
    atheris.Fuzz()


def smoke() -> int:
    """Each target for a bounded number of executions, in its own process."""
    failed = 0
    artifacts = tempfile.mkdtemp(prefix="fuzz-findings-")
    for target, runs in SMOKE_RUNS.items():
        command = [
            sys.executable,
            str(HERE / "run.py"),
            target,
            f"-runs={runs}",
            "-seed=1",
            f"-artifact_prefix={artifacts}/{target}-",
        ]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        tail = [line for line in result.stderr.splitlines() if line.startswith("Done")]
        print(f"{target}: exit {result.returncode} {tail[-1] if tail else ''}")
        if result.returncode != 0:
            failed += 1
            print(result.stderr[-3000:])
            print(f"findings are in {artifacts}")
    return failed


def main() -> None:
    if sys.argv[1:] == ["--smoke"]:
        sys.exit(smoke())
    if len(sys.argv) < 2 or sys.argv[1] not in SMOKE_RUNS:
        sys.exit(f"usage: python fuzz/run.py {{{'|'.join(SMOKE_RUNS)}|--smoke}} [libFuzzer flags]")
    fuzz(sys.argv[1], sys.argv[2:])


if __name__ == "__main__":
    main()
