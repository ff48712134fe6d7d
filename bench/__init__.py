"""Benchmarks: ``python -m bench [--quick] [--json PATH] [workload ...]``.

A workload is a function ``run(config) -> Report`` registered with :func:`workload`; its module
is listed in ``WORKLOAD_MODULES`` (imported by :func:`load_workloads`). To add one (core, e2e,
fanout, replay, memory...), write ``bench/<name>.py`` and list it there.

A workload times callables with :func:`measure`, which runs them round-robin (so drift hits every
case alike), each sample long enough to be above timer noise, and keeps every sample: reports
show the median with the min-max range.

Numbers are for comparing revisions on one machine, not across machines. The garbage collector
is disabled while a sample runs, as :mod:`timeit` does, and :func:`stabilize_allocator` pins
glibc's malloc thresholds: left dynamic, they put some runs (not others) in a state where every
batch of multi-megabyte buffers is freshly mmapped and page-faulted in, which made the 4 KiB
codec cases bimodal (x7). Minor page faults are recorded per sample to show it if it recurs.
"""

from __future__ import annotations

import ctypes
import gc
import importlib
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "REGISTRY",
    "WORKLOAD_MODULES",
    "Config",
    "Measurement",
    "Report",
    "Workload",
    "load_workloads",
    "measure",
    "stabilize_allocator",
    "workload",
]

#: Modules that register workloads, in the order ``python -m bench`` runs them.
WORKLOAD_MODULES = (
    "bench.codec",
    "bench.core",
    "bench.hub",
    "bench.e2e",
    "bench.sse",
    "bench.redis",
)


@dataclass(frozen=True)
class Config:
    """How hard to measure. ``quick`` is for a smoke run: fewer, shorter samples."""

    quick: bool = False
    repeats: int = 9
    #: The shortest sample, in seconds: the callable is repeated until one call loop lasts this.
    min_sample_s: float = 0.02
    warmup_s: float = 0.05

    @classmethod
    def make(cls, quick: bool) -> Config:
        if quick:
            return cls(quick=True, repeats=3, min_sample_s=0.004, warmup_s=0.005)
        return cls()


@dataclass
class Measurement:
    """Samples of one timed case, each already divided by the items it processed."""

    name: str
    samples: list[float]
    unit: str = "ns/frame"
    #: Informational rows are printed but not part of a workload's headline figures.
    info: bool = False
    #: Minor page faults per call of the timed callable, one per sample (empty if unknown).
    faults: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def min(self) -> float:
        return min(self.samples)

    @property
    def max(self) -> float:
        return max(self.samples)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "unit": self.unit,
            "median": self.median,
            "min": self.min,
            "max": self.max,
            "samples": self.samples,
            "info": self.info,
            "minor_faults_per_call": self.faults,
        }


@dataclass
class Report:
    """What a workload returns: its measurements and figures derived from them (ratios...)."""

    measurements: list[Measurement]
    derived: dict[str, float] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "params": self.params,
            "measurements": [m.to_json() for m in self.measurements],
            "derived": self.derived,
        }


@dataclass(frozen=True)
class Workload:
    name: str
    description: str
    run: Callable[[Config], Report]


REGISTRY: dict[str, Workload] = {}


def workload(name: str, description: str) -> Callable[[Callable[[Config], Report]], Any]:
    """Register ``run(config) -> Report`` as the workload ``name``."""

    def register(run: Callable[[Config], Report]) -> Callable[[Config], Report]:
        if name in REGISTRY:
            raise ValueError(f"workload {name!r} is already registered")
        REGISTRY[name] = Workload(name, description, run)
        return run

    return register


def load_workloads() -> dict[str, Workload]:
    for module in WORKLOAD_MODULES:
        importlib.import_module(module)
    return REGISTRY


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # from glibc's malloc.h


def stabilize_allocator() -> str | None:
    """Pin glibc malloc's mmap threshold (32 MiB, its maximum) and trim threshold (256 MiB) so
    that freed buffers are reused rather than unmapped and faulted in again. Returns what was
    done, or None where this is not glibc."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return None
    if mallopt(_M_TRIM_THRESHOLD, 256 << 20) != 1 or mallopt(_M_MMAP_THRESHOLD, 32 << 20) != 1:
        return None
    return "malloc mmap threshold 32 MiB, trim threshold 256 MiB"


try:
    import resource

    def _minor_faults() -> int:
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
except ImportError:  # Windows

    def _minor_faults() -> int:
        return 0


def _time_loop(fn: Callable[[], object], loops: int) -> tuple[int, int]:
    """Nanoseconds and minor page faults for ``loops`` calls of ``fn``."""
    clock = time.perf_counter_ns
    enabled = gc.isenabled()
    gc.disable()
    try:
        faults = _minor_faults()
        start = clock()
        for _ in range(loops):
            fn()
        elapsed = clock() - start
        return elapsed, _minor_faults() - faults
    finally:
        if enabled:
            gc.enable()


def _calibrate(fn: Callable[[], object], config: Config) -> int:
    """The loop count that makes one sample last at least ``config.min_sample_s``."""
    loops = 1
    while True:
        elapsed, _ = _time_loop(fn, loops)
        if elapsed >= config.min_sample_s * 1e9 or loops >= 1 << 20:
            return loops
        loops *= 2 if elapsed * 4 >= config.min_sample_s * 1e9 else 8


def measure(
    cases: dict[str, tuple[Callable[[], object], int]],
    config: Config,
    *,
    unit: str = "ns/frame",
    info: frozenset[str] = frozenset(),
) -> list[Measurement]:
    """Time each ``name: (fn, items)`` case: ``config.repeats`` samples of ns per item.

    Every case is warmed up and calibrated first; then the repeats run round-robin over the
    cases so that a slow phase of the machine spreads over all of them.
    """
    loops: dict[str, int] = {}
    for name, (fn, _) in cases.items():
        deadline = time.perf_counter() + config.warmup_s
        while time.perf_counter() < deadline:
            fn()
        loops[name] = _calibrate(fn, config)
    samples: dict[str, list[float]] = {name: [] for name in cases}
    faults: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(config.repeats):
        for name, (fn, items) in cases.items():
            elapsed, faulted = _time_loop(fn, loops[name])
            samples[name].append(elapsed / (loops[name] * items))
            faults[name].append(faulted / loops[name])
    return [Measurement(name, samples[name], unit, name in info, faults[name]) for name in cases]
