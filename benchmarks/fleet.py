"""A wave of N stacks (N local control planes, one stack each) against the time of its slowest stack: does a wave
run in about the time of its slowest stack, or in the sum of them?

On harness/fleet.py (N control planes with their real istiod, one project and backend, `python -m mesh fleet` in
its own process):

* setup (not measured): revisions r1 and r2 installed in every cluster by one fleet run, namespace `shop` (W
  one-replica Deployments) bound to r1;
* run A: `shop` moves to r2 in every stack, one wave of N stacks with `parallel: 1`: each stack alone, one after
  the other (each stack's time is what the fleet reports for it: preview, `up`, gates);
* run B: `shop` moves back to r1, the same wave with `parallel: N`.

Reported: run B's wall time against the slowest stack of run A (the goal: about 1x), and against run A's wall
time (the sum). On a machine with fewer cores than engines at once, the stacks share CPU, which the ratio shows.

Run from the repository root: .venv/bin/python -m benchmarks.fleet [--stacks 3] [--workloads 4]
Measured figures: README, section Scale.
"""

from __future__ import annotations

import argparse
import os
import re
import time

from harness.fleet import LocalFleet
from harness.toolchain import locate_or_exit
from tests.e2e.cluster_objects import create_deployment, create_namespace

STACK_LINE = re.compile(r"^- `(?P<stack>[^`]+)`: (?P<outcome>\w+): .*\((?P<seconds>\d+)s\)$")


def configure(fleet: LocalFleet, bound_to: str) -> None:
    fleet.configure({"charts": fleet.charts(), "revisions": {"r1": {"version": "1.30.0"}, "r2": {"version": "1.31.0"}},
                     "tags": {"default": "r1"}, "namespaces": {"shop": bound_to},
                     "rollout": {"concurrency": 8, "timeoutSeconds": 300}})


def timed_run(fleet: LocalFleet, parallel: int) -> tuple[float, dict[str, float]]:
    """One fleet run of a single wave: its wall time, and each stack's own time as the run reports it."""
    fleet.write_fleet({"waves": [list(fleet.names)], "parallel": parallel})
    started = time.monotonic()
    done = fleet.run("up")
    wall = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"fleet up failed ({done.returncode}):\n{done.stdout[-5000:]}\n{done.stderr[-3000:]}")
    stacks = {}
    for line in done.stdout.splitlines():
        m = STACK_LINE.match(line)
        if m and m["outcome"] == "updated":
            stacks[m["stack"]] = float(m["seconds"])
    if set(stacks) != set(fleet.names):
        raise SystemExit(f"not every stack was updated: {stacks}\n{done.stdout[-5000:]}")
    return wall, stacks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stacks", type=int, default=3)
    parser.add_argument("--workloads", type=int, default=4)
    args = parser.parse_args()
    tools = locate_or_exit()
    fleet = LocalFleet(tools, tuple(f"c{i + 1}" for i in range(args.stacks)))
    try:
        fleet.start()
        for cluster in fleet.clusters.values():
            create_namespace(cluster.api(), "shop")
            for i in range(args.workloads):
                create_deployment(cluster.api(), "shop", f"w{i}", replicas=1)
        configure(fleet, "r1")
        timed_run(fleet, args.stacks)  # setup: both revisions installed, shop on r1
        configure(fleet, "r2")
        alone_wall, alone = timed_run(fleet, 1)
        configure(fleet, "r1")
        wave_wall, together = timed_run(fleet, args.stacks)
    finally:
        fleet.stop()
    slowest = max(alone.values())
    print(f"machine: {os.cpu_count()} cores; {args.stacks} stacks, {args.workloads} workloads moved per stack")
    print("run A (parallel 1): " + ", ".join(f"{s} {t:.0f}s" for s, t in sorted(alone.items()))
          + f"; wall {alone_wall:.0f}s")
    print(f"run B (parallel {args.stacks}): " + ", ".join(f"{s} {t:.0f}s" for s, t in sorted(together.items()))
          + f"; wall {wave_wall:.0f}s")
    print(f"wave of {args.stacks} / its slowest stack alone: {wave_wall / slowest:.2f}x")
    print(f"wave of {args.stacks} / the stacks one after the other: {wave_wall / alone_wall:.2f}x")
    around = wave_wall - max(together.values())
    print(f"fleet's own time around the stacks (run B wall - its slowest stack): {around:.0f}s")


if __name__ == "__main__":
    main()
