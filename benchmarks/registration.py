"""How long the program's own part of a preview takes as the stack grows: config load, validation and
resource registration under Pulumi mocks (harness/simulation.py), without an engine.

For each size N (default 50, 200, 1000, 2000) it runs the program once on a stack with N bound
namespaces (a third each on the `stable` and `canary` tags and on a revision with strategy
`natural`, two revisions, one gateway), each size in a fresh interpreter so that no size inherits
another's heap. It prints the wall time, the time per namespace and that per-namespace time relative
to the smallest size (1.00 everywhere is linear), and the program's CPU time per namespace (the mock
engine's threads left out; what to compare on a loaded machine, where wall time mostly measures the
other processes), once as the program runs and once with Python's cyclic garbage collector off (how
much of the growth is the collector's). `--profile N` adds a cProfile of size N with its self time
grouped by where the code lives (program, harness, SDK).
The issue's target: 1,000 namespaces under 2 s, linear from 50 to 2,000.

`--per-type N` times N resources of each kind a namespace registers, alone (bare component, label patch,
dynamic resource), each in a fresh interpreter.

Run from the repository root:
.venv/bin/python -m benchmarks.registration [--sizes 50 200 1000 2000] [--per-type 1000] [--profile 1000]

Measured on the 2-core development machine (Python 3.11.7, pulumi 3.272.0) with the stack-wide restart
budget (3 resources per namespace: binding, label patch, legacy-label guard), load average 8 from other
work (so compare CPU, not wall): the program's CPU per namespace 9.5 ms at 50 namespaces, 10.2 at 200,
9.9 at 1,000 (9.9 s), 11.0 at 2,000; collector off 10.8, 7.9, 8.1, 8.7: linear, about 5 times over the
2 s target. --per-type 1000: bare component 2.1 ms CPU, NamespacePatch 3.5, dynamic resource 3.4.
--profile 1000: 77% SDK, 18% asyncio, 1.2% mesh/; the stack trace the SDK captures per resource 35%,
resolving inputs 11%, serializing them 6%, provider pickling 0% (once per class, sdk_workaround).
Before the budget (4 resources per namespace, load 4-5): 15.7-17.7 ms wall per namespace.
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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path
from typing import Any
from unittest.mock import patch

import pulumi
from pulumi.runtime.mocks import MockMonitor
from pulumi_kubernetes.core.v1 import NamespacePatch
from pulumi_kubernetes.meta.v1 import ObjectMetaPatchArgs

from harness.simulation import mocked, simulate
from mesh.program import spec_from_config
from mesh.providers.legacy_label import LegacyInjectionLabel

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


class _Bare(pulumi.ComponentResource):
    def __init__(self, name: str) -> None:
        super().__init__("bench:index:Bare", name, None, None)
        self.register_outputs({})


def _patch(i: int) -> None:
    NamespacePatch(f"team-{i:04d}", metadata=ObjectMetaPatchArgs(
        name=f"team-{i:04d}", labels={"istio.io/rev": "stable"}, annotations={"pulumi.com/patchForce": "true"}))


PER_TYPE: dict[str, Callable[[int], object]] = {
    "ComponentResource (bare)": lambda i: _Bare(f"c-{i}"),
    "NamespacePatch": _patch,
    "dynamic (LegacyInjectionLabel)": lambda i: LegacyInjectionLabel(f"team-{i:04d}-legacy", namespace=f"team-{i:04d}"),
}
"""One resource of each kind a namespace registers, built as the components build them."""


def per_type(kind: str, count: int) -> float:
    """CPU seconds (all threads) to register `count` resources of one kind alone, under the same mocks."""
    with mocked({}, preview=True):

        @pulumi.runtime.test
        def register() -> None:
            for i in range(count):
                PER_TYPE[kind](i)

        start = time.process_time()
        register()
        return time.process_time() - start


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
    parser.add_argument("--sizes", type=int, nargs="+", default=[50, 200, 1000, 2000])
    parser.add_argument("--profile", type=int, metavar="N", help="also profile the run with N namespaces")
    parser.add_argument("--per-type", type=int, metavar="N", help="also time N resources of each kind alone")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--kind", help=argparse.SUPPRESS)
    parser.add_argument("--gc-off", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.kind:
        print(json.dumps(per_type(args.kind, args.one)))
        return
    if args.one:
        if args.gc_off:
            gc.disable()
        print(json.dumps(measure(args.one)))
        return

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"machine: {os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), {platform.machine()}, "
          f"Python {platform.python_version()}, pulumi {version('pulumi')}, load average {load}")
    header = (f"{'namespaces':>10} {'resources':>9} {'config+val':>10} {'seconds':>8} {'mock engine CPU':>15}"
              f" {'ms/ns':>7} {'growth':>6} {'CPU ms/ns':>9} | {'gc off: seconds':>15} {'ms/ns':>7} {'growth':>6}"
              f" {'CPU ms/ns':>9}")
    print(header)
    base: dict[bool, float] = {}
    for size in sorted(args.sizes):
        cells = []
        for gc_off in (False, True):
            result = in_fresh_interpreter(size, gc_off)
            per_namespace = 1000 * result["seconds"] / size
            base.setdefault(gc_off, per_namespace)
            cells.append((result, per_namespace, per_namespace / base[gc_off]))
        (on, on_ms, on_growth), (off, off_ms, off_growth) = cells
        print(f"{size:>10} {on['resources']:>9} {on['validation']:>9.3f}s {on['seconds']:>7.2f}s"
              f" {on['engine']:>14.2f}s {on_ms:>7.2f}"
              f" {on_growth:>6.2f} {1000 * on['cpu'] / size:>9.2f} | {off['seconds']:>14.2f}s {off_ms:>7.2f}"
              f" {off_growth:>6.2f} {1000 * off['cpu'] / size:>9.2f}")
    if args.per_type:
        print(f"\n{args.per_type} resources of one kind alone, each kind in a fresh interpreter:")
        for kind in PER_TYPE:
            seconds = json.loads(subprocess.run(
                [sys.executable, "-m", "benchmarks.registration", "--one", str(args.per_type), "--kind", kind],
                cwd=ROOT, capture_output=True, text=True, check=True).stdout)
            print(f"  {1000 * seconds / args.per_type:6.2f} ms CPU each  {kind}")
    if args.profile:
        profile(args.profile)


if __name__ == "__main__":
    main()
