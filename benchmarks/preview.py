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
  the figure (one update of the NamespaceLabels and the MeshRollout, the rest unchanged);
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

Run from the repository root: .venv/bin/python -m benchmarks.preview [--sizes 0 50 200 1000]
The machine is shared: the load average before and after each preview is printed with it.

Measured figures: README, section Scale.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import tempfile
import threading
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

from harness.control_plane import ControlPlane
from harness.mesh_stack import MeshStack
from harness.toolchain import Tools, locate_or_exit

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

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


KINDS = (
    ("pulumi-language-python-exec", "program (language host's Python)"),
    ("-m pulumi.dynamic", "dynamic providers' host (Python)"),
    ("pulumi-resource-kubernetes", "Kubernetes provider"),
    ("pulumi-language-python", "language host (Go)"),
    ("/pulumi ", "engine (pulumi CLI)"),
    ("kube-apiserver", "cluster: kube-apiserver"),
    ("etcd", "cluster: etcd"),
)
"""Which process is which, by a piece of its command line (first match wins); the rest is "other"."""


class ProcessCpu(threading.Thread):
    """CPU seconds used meanwhile by every process under this one, by kind, sampled from /proc (a process
    that exits counts up to one interval short): which of engine, providers, program and cluster pays."""

    def __init__(self, interval: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.first: dict[int, float] = {}
        self.last: dict[int, tuple[str, float]] = {}
        self.done = threading.Event()

    def __enter__(self) -> ProcessCpu:
        self.first = {pid: cpu for pid, (_kind, cpu) in self.sample().items()}
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.join()
        self.last.update(self.sample())

    def run(self) -> None:
        while not self.done.wait(self.interval):
            self.last.update(self.sample())

    def by_kind(self) -> dict[str, float]:
        spent: dict[str, float] = {}
        for pid, (kind, cpu) in self.last.items():
            spent[kind] = spent.get(kind, 0.0) + cpu - self.first.get(pid, 0.0)
        return spent

    @staticmethod
    def sample() -> dict[int, tuple[str, float]]:
        parents: dict[int, int] = {}
        cpu: dict[int, float] = {}
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            pid = int(entry.name)
            parents[pid] = int(fields[1])
            cpu[pid] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
        mine, found = {os.getpid()}, True
        while found:
            found = False
            for pid, parent in parents.items():
                if parent in mine and pid not in mine:
                    mine.add(pid)
                    found = True
        mine.discard(os.getpid())
        kinds = {}
        for pid in mine:
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    command = f.read().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if not command:  # exiting: its last sample already says what it was
                continue
            kind = next((name for piece, name in KINDS if piece in command), "other")
            kinds[pid] = (kind, cpu[pid])
        return kinds


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
    started = time.time()
    start = time.perf_counter()
    with ProcessCpu() as processes:
        changes = stack.preview_changes()
    wall = time.perf_counter() - start
    ended = time.time()
    spent = processes.by_kind()
    program = json.loads(timeline.read_text())

    start = time.perf_counter()
    done = stack.review()
    review = time.perf_counter() - start
    assert done.returncode == 0, done.stdout + done.stderr
    return {
        "size": size, "resources": resources, "up": up, "changes": changes, "wall": wall,
        "load": f"{load_before} -> {load()}", "cpu": sum(spent.values()), "spent": spent,
        "before": program["started"] - started, "import": program["import"], "config": program["config"],
        "construct": program["construct"], "program": program["ended"] - program["started"],
        "program_cpu": program["cpu"], "after": ended - program["ended"], "review": review,
    }


def summary(results: list[dict[str, Any]]) -> None:
    """Growth: what each size costs per namespace over the smallest (the fixed part, charts and all)."""
    base = results[0]
    kinds = sorted({kind for r in results for kind in r["spent"]}, key=lambda k: -results[-1]["spent"].get(k, 0.0))
    print(f"\nper namespace over {base['size']} namespaces (the fixed part: {base['wall']:.1f}s wall, "
          f"{base['cpu']:.1f}s CPU), ms wall and ms CPU of each process kind:")
    print(f"{'namespaces':>10} {'wall':>7} | " + " | ".join(kinds))
    for r in results[1:]:
        extra = r["size"] - base["size"]
        print(f"{r['size']:>10} {1000 * (r['wall'] - base['wall']) / extra:>7.1f} | " + " | ".join(
            f"{1000 * (r['spent'].get(k, 0.0) - base['spent'].get(k, 0.0)) / extra:.1f}" for k in kinds))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[0, 50, 200, 1000])
    args = parser.parse_args(argv)

    tools = locate_or_exit()
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
                print(f"  CPU meanwhile, {r['cpu']:.1f}s in all: " + ", ".join(
                    f"{kind} {cpu:.1f}s" for kind, cpu in sorted(r["spent"].items(), key=lambda kv: -kv[1])))
                print(f"  mesh review of the same move: {r['review']:.2f}s", flush=True)
        summary(results)
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
