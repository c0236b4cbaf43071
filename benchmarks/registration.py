"""How long the program's own part of a preview takes as the stack grows: config load, validation and
resource registration under Pulumi mocks (harness/simulation.py), without an engine.

For each size N (default 0, 50, 200, 1000, 2000) it runs the program once on a stack with N bound
namespaces (a third each on the `stable` and `canary` tags and on a revision with strategy
`natural`, two revisions, one gateway), each size in a fresh interpreter so that no size inherits
another's heap. It prints the wall time and the program's CPU time (the mock engine's threads left
out; what to compare on a loaded machine, where wall time mostly measures the other processes), and
the marginal cost of a namespace from the size before (equal marginals are linear growth), once as the
program runs and once with Python's cyclic garbage collector off. `--profile N` adds a cProfile of size
N with its self time grouped by where the code lives (program, harness, SDK).
The issue's target: 1,000 namespaces under 2 s, linear from 50 to 2,000.

Run from the repository root:
.venv/bin/python -m benchmarks.registration [--sizes 0 50 200 1000 2000] [--profile 1000]

Measured figures: README, section Scale.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import os
import platform
import pstats
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path
from typing import Any
from unittest.mock import patch

from pulumi.runtime.mocks import MockMonitor

from harness.simulation import simulate
from mesh.program import spec_from_config

ROOT = Path(__file__).resolve().parents[1]


def stack_config(namespaces: int) -> dict[str, Any]:
    bindings: list[Any] = ["stable", "canary", {"revision": "1-30-2", "strategy": "natural"}]
    return {
        "charts": {"path": "/mirror/istio-{version}"},
        "revisions": {"1-30-2": {"version": "1.30.2"}, "1-31-0": {"version": "1.31.0"}},
        "tags": {"default": "1-30-2", "stable": "1-30-2", "canary": "1-31-0"},
        "namespaces": {f"team-{i:04d}": bindings[i % 3] for i in range(namespaces)},
        "gateways": {"ingress": {"namespace": "istio-ingress", "revision": "stable", "service": {"type": "ClusterIP"}}},
        "rollout": {"strategy": "rolling", "concurrency": 4},
    }


@contextmanager
def mock_engine_cpu() -> Iterator[list[float]]:
    """CPU seconds in the mock monitor's RegisterResource: the SDK calls it on executor threads, where
    a real engine's gRPC call would be (and where cProfile, main thread only, does not look)."""
    spent = [0.0]
    register = MockMonitor.RegisterResource

    def timed(self: MockMonitor, request: Any) -> Any:
        start = time.thread_time()
        try:
            return register(self, request)
        finally:
            spent[0] += time.thread_time() - start

    with patch.object(MockMonitor, "RegisterResource", timed):
        yield spent


def measure(namespaces: int) -> dict[str, float]:
    """One run of the program (in this process), and config load and validation alone."""
    config = stack_config(namespaces)
    start = time.perf_counter()
    spec_from_config(config)
    validation = time.perf_counter() - start
    with mock_engine_cpu() as engine:
        start, cpu = time.perf_counter(), time.process_time()
        resources = len(simulate(config))
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {"seconds": seconds, "validation": validation, "engine": engine[0], "resources": resources,
            "cpu": cpu - engine[0]}


def in_fresh_interpreter(namespaces: int, gc_off: bool) -> dict[str, float]:
    args = [sys.executable, "-m", "benchmarks.registration", "--one", str(namespaces)]
    args += ["--gc-off"] if gc_off else []
    return json.loads(subprocess.run(args, cwd=ROOT, capture_output=True, text=True, check=True).stdout)


SDK_STEPS = {
    "_get_stack_trace": "stack trace captured per resource",
    "resource_types": "output types read from annotations per resource",
    "serialize_provider": "dynamic provider pickled (dill)",
    "prepare_resource": "inputs and dependencies resolved",
    "serialize_properties": "inputs serialized to protobuf",
}
"""Per-resource steps of the Pulumi SDK worth naming in a profile (function name -> what it does)."""


def where(path: str) -> str | None:
    """The part a function belongs to; None for the stdlib and builtins, whose time goes to their callers."""
    if f"{ROOT}/mesh/" in path:
        return "program (mesh/)"
    if f"{ROOT}/harness/" in path:
        return "harness (harness/simulation.py)"
    for part, group in [("/pulumi/", "Pulumi SDK"), ("/dill/", "dill (provider pickling)"),
                        ("/google/protobuf/", "protobuf"), ("/asyncio/", "asyncio (running the SDK's tasks)")]:
        if part in path:
            return group
    return None


def self_time_by_part(stats: pstats.Stats) -> Counter[str]:
    """Self time per part, the stdlib's and builtins' split among their callers by the time each caused."""
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    shares: dict[Any, Counter[str]] = {}

    def share(function: Any) -> Counter[str]:
        if function not in shares:
            shares[function] = Counter({"stdlib (recursive)": 1.0})
            part = where(function[0])
            callers = raw[function][4]
            caused = sum(c[2] for c in callers.values())
            result: Counter[str] = Counter()
            if part:
                result[part] = 1.0
            elif not caused:
                result["stdlib (no caller)"] = 1.0
            for caller, c in callers.items() if not part and caused else ():
                for owner, fraction in share(caller).items():
                    result[owner] += fraction * c[2] / caused
            shares[function] = result
        return shares[function]

    total: Counter[str] = Counter()
    for function, (_calls, _primitive, tottime, _cumtime, _callers) in raw.items():
        for owner, fraction in share(function).items():
            total[owner] += tottime * fraction
    return total


def profile(namespaces: int) -> None:
    profiler = cProfile.Profile()
    with mock_engine_cpu() as engine:
        profiler.runcall(simulate, stack_config(namespaces))
    stats = pstats.Stats(profiler)
    by_part = self_time_by_part(stats)
    total = sum(by_part.values())
    print(f"\ncProfile of {namespaces} namespaces ({total:.1f}s under the profiler), self time by part:")
    for part, seconds in by_part.most_common():
        print(f"  {100 * seconds / total:5.1f}%  {part}")
    print(f"  and {engine[0]:.1f}s CPU in the mock engine's threads, outside this profile")
    print("Named per-resource steps of the SDK, cumulative:")
    steps = [
        (cumtime, calls, function)
        for (path, _line, function), (_cc, calls, _tt, cumtime, _callers) in stats.stats.items()  # type: ignore[attr-defined]
        if function in SDK_STEPS and where(path) == "Pulumi SDK"
    ]
    for cumtime, calls, function in sorted(steps, reverse=True):
        print(f"  {100 * cumtime / total:5.1f}%  {function} x{calls}: {SDK_STEPS[function]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[0, 50, 200, 1000, 2000])
    parser.add_argument("--profile", type=int, metavar="N", help="also profile the run with N namespaces")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--gc-off", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        if args.gc_off:
            gc.disable()
        print(json.dumps(measure(args.one)))
        return

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"machine: {os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), {platform.machine()}, "
          f"Python {platform.python_version()}, pulumi {version('pulumi')}, load average {load}")
    print(f"{'namespaces':>10} {'resources':>9} {'config+val':>10} {'seconds':>8} {'CPU':>7} {'mock engine':>11}"
          f" {'CPU ms/added ns':>15} | {'gc off: seconds':>15} {'CPU':>7} {'CPU ms/added ns':>15}")
    previous: dict[bool, tuple[int, float]] = {}
    for size in sorted(args.sizes):
        cells = []
        for gc_off in (False, True):
            result = in_fresh_interpreter(size, gc_off)
            last = previous.get(gc_off)
            marginal = f"{1000 * (result['cpu'] - last[1]) / (size - last[0]):.2f}" if last and size > last[0] else "-"
            previous[gc_off] = (size, result["cpu"])
            cells.append((result, marginal))
        (on, on_marginal), (off, off_marginal) = cells
        print(f"{size:>10} {on['resources']:>9} {on['validation']:>9.3f}s {on['seconds']:>7.2f}s {on['cpu']:>6.2f}s"
              f" {on['engine']:>10.2f}s {on_marginal:>15} | {off['seconds']:>14.2f}s {off['cpu']:>6.2f}s"
              f" {off_marginal:>15}")
    if args.profile:
        profile(args.profile)


if __name__ == "__main__":
    main()
