"""How long `pulumi preview` of a one-namespace move takes with the real engine as the stack grows, and
which part of it is the program's and which the engine's.

For each size N (default 0, 50, 200, 1000; 0 is the part every stack pays: revisions, charts, tags),
on the harness's local control plane (harness/control_plane.py) and through harness/mesh_stack.py (the
built CLI and plugins, a local file backend):

* N namespaces are created first (no pods in them, so the Rollouts of `up` have nothing to restart);
* `pulumi up` grows one stack to N namespaces: the two revisions of the dev stack's shape (charts from
  the local mirror), every namespace bound to the `stable` tag (setup, not measured: with
  PULUMI_SKIP_CHECKPOINTS so the file backend does not rewrite the whole state after every step);
* the first namespace moves to `canary` in the stack file, and `pulumi preview` runs: its wall time is
  the figure (one update of the NamespacePatch and the Rollout, the rest unchanged);
* `mesh review` of the same move runs as the user runs it (its `pulumi stack output` included).

The program's part is timed inside the run: the project copy's __main__.py is replaced by one that
runs the same three calls (read_config, spec_from_config, deploy) and, at exit, writes its timeline:
when the language host's Python process started and ended (relative to the preview's start), the
time to import the program, to load and validate the config, to construct every resource
(`deploy` returning: the SDK's synchronous part, provider pickling included), and the process's CPU
time (the program and the SDK's registration, i.e. what runs under mocks in benchmarks/registration.py).
The rest of the wall is the engine's: before the program starts (CLI start, state load, plugins),
while it runs (the engine's steps answering registrations, the dynamic and Kubernetes providers'
check/diff), and after it exits. CPU of every process the preview ran (getrusage of reaped children)
is shown next to the program's own CPU.

Run from the repository root: .venv/bin/python -m benchmarks.preview [--sizes 50 200 1000]
The machine is shared: the load average before and after each preview is printed with it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

from harness.control_plane import ControlPlane
from harness.mesh_stack import MeshStack
from harness.toolchain import Tools, describe_missing, locate

TIMELINE_ENV = "ISTIO_MESH_BENCH_TIMELINE"
"""Where the timed __main__.py of the benchmark's project copy writes its timeline (JSON)."""

TIMED_MAIN = '''"""The program as the project's __main__.py runs it, timed (written by benchmarks/preview.py)."""
import atexit
import json
import os
import time

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def age() -> float:
    """Seconds since this process started (what the language host spent before running the program)."""
    with open("/proc/uptime") as f:
        uptime = float(f.read().split()[0])
    with open("/proc/self/stat") as f:
        started = int(f.read().rsplit(")", 1)[1].split()[19]) / CLOCK_TICKS
    return uptime - started


times = {"started": time.time() - age()}
mark = time.perf_counter()


def lap(name: str) -> None:
    global mark
    now = time.perf_counter()
    times[name] = now - mark
    mark = now


import pulumi  # noqa: E402

from mesh.program import deploy, read_config, spec_from_config  # noqa: E402

lap("import")
spec = spec_from_config(read_config(pulumi.Config()))
lap("config")
deploy(spec)
lap("construct")


@atexit.register
def write() -> None:
    cpu = os.times()
    times.update(ended=time.time(), cpu=cpu.user + cpu.system)
    with open(os.environ["''' + TIMELINE_ENV + '''"], "w") as f:
        json.dump(times, f)
'''


def load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def stack_config(tools: Tools, namespaces: list[str], moved: int) -> dict[str, Any]:
    """The dev stack's shape (two revisions, tags, charts from the local mirror), every namespace on
    `stable` except the first `moved`, on `canary`."""
    return {
        "charts": {"path": str(tools.cache / "istio-{version}" / "charts")},
        "hub": "docker.io/istio",
        "revisions": {"1-30-0": {"version": "1.30.0"}, "1-31-0": {"version": "1.31.0"}},
        "tags": {"default": "1-30-0", "stable": "1-30-0", "canary": "1-31-0"},
        "namespaces": {ns: "canary" if i < moved else "stable" for i, ns in enumerate(namespaces)},
        "rollout": {"concurrency": 4, "timeoutSeconds": 300},
    }


def create_namespaces(api: k8s.ApiClient, namespaces: list[str]) -> None:
    core = k8s.CoreV1Api(api)
    for ns in namespaces:
        with contextlib.suppress(ApiException):  # 409: left from a smaller size
            core.create_namespace({"metadata": {"name": ns}})
    existing = {n.metadata.name for n in core.list_namespace().items}
    assert set(namespaces) <= existing


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(tools: Tools, cluster: ControlPlane, stack: MeshStack, size: int, workdir: Path) -> dict[str, Any]:
    """Grow the stack to `size` namespaces with `up`, then time the preview of one namespace's move."""
    namespaces = [f"team-{i:04d}" for i in range(size)]
    create_namespaces(cluster.api(), namespaces)
    timeline = workdir / f"timeline-{size}.json"
    stack.stack.workspace.env_vars[TIMELINE_ENV] = str(timeline)

    stack.write_config(stack_config(tools, namespaces, moved=0))
    stack.stack.workspace.env_vars["PULUMI_SKIP_CHECKPOINTS"] = "true"
    start = time.perf_counter()
    stack.up()
    up = time.perf_counter() - start
    del stack.stack.workspace.env_vars["PULUMI_SKIP_CHECKPOINTS"]
    resources = len(stack.resources())

    stack.write_config(stack_config(tools, namespaces, moved=1))
    load_before = load()
    cpu_before = children_cpu()
    started = time.time()
    start = time.perf_counter()
    changes = stack.preview_changes()
    wall = time.perf_counter() - start
    ended = time.time()
    cpu = children_cpu() - cpu_before
    program = json.loads(timeline.read_text())

    start = time.perf_counter()
    done = stack.review()
    review = time.perf_counter() - start
    assert done.returncode == 0, done.stdout + done.stderr
    return {
        "size": size, "resources": resources, "up": up, "changes": changes, "wall": wall,
        "load": f"{load_before} -> {load()}", "cpu": cpu,
        "before": program["started"] - started, "import": program["import"], "config": program["config"],
        "construct": program["construct"], "program": program["ended"] - program["started"],
        "program_cpu": program["cpu"], "after": ended - program["ended"], "review": review,
    }


def summary(results: list[dict[str, Any]]) -> None:
    """Growth: each size's cost per namespace over the smallest (the fixed part, charts and all)."""
    base = results[0]
    print(f"\ngrowth over {base['size']} namespaces (the fixed part: {base['wall']:.1f}s wall, "
          f"{base['program_cpu']:.1f}s program CPU, {base['cpu']:.1f}s CPU in all):")
    print(f"{'namespaces':>10} {'resources':>9} {'wall':>7} {'ms/ns':>6} {'program CPU ms/ns':>17}"
          f" {'other CPU ms/ns':>15}")
    for r in results[1:]:
        extra = r["size"] - base["size"]
        program = r["program_cpu"] - base["program_cpu"]
        other = r["cpu"] - r["program_cpu"] - (base["cpu"] - base["program_cpu"])
        wall = r["wall"] - base["wall"]
        print(f"{r['size']:>10} {r['resources']:>9} {r['wall']:>6.1f}s {1000 * wall / extra:>6.1f}"
              f" {1000 * program / extra:>17.1f} {1000 * other / extra:>15.1f}")


def tools_or_exit() -> Tools:
    found = locate()
    if isinstance(found, Tools):
        return found
    sys.exit(describe_missing(found))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[0, 50, 200, 1000])
    args = parser.parse_args(argv)

    tools = tools_or_exit()
    print(f"machine: {os.cpu_count()} CPUs shared, {platform.machine()}, Python {platform.python_version()}, "
          f"pulumi SDK {version('pulumi')}, CLI {tools.pulumi_bin_dir.parent.name}, load average {load()}",
          flush=True)
    cluster = ControlPlane(tools)
    cluster.start()
    results: list[dict[str, Any]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="imesh-preview-") as workdir:
            stack = MeshStack(tools, cluster.kubeconfig, Path(workdir) / "stack", name="bench")
            (stack.project / "__main__.py").write_text(TIMED_MAIN)
            for size in sorted(args.sizes):
                r = measure(tools, cluster, stack, size, Path(workdir))
                results.append(r)
                print(f"\n{size} namespaces, {r['resources']} resources (the up adding them took {r['up']:.0f}s); "
                      f"preview of a one-namespace move: {r['wall']:.2f}s wall, changes {r['changes']}, "
                      f"load {r['load']}", flush=True)
                print(f"  engine before the program: {r['before']:.2f}s (CLI start, state load, plugins)")
                print(f"  program process: {r['program']:.2f}s wall, {r['program_cpu']:.2f}s CPU "
                      f"({100 * r['program_cpu'] / r['wall']:.0f}% of the preview's wall); of which import "
                      f"{r['import']:.2f}s, config+validation {r['config']:.3f}s, "
                      f"constructing the resources {r['construct']:.2f}s")
                print(f"  engine after the program exited: {r['after']:.2f}s")
                print(f"  CPU of every process of the preview: {r['cpu']:.1f}s; not the program's: "
                      f"{r['cpu'] - r['program_cpu']:.1f}s (engine, Kubernetes and dynamic providers)")
                print(f"  mesh review of the same move: {r['review']:.2f}s", flush=True)
        summary(results)
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
