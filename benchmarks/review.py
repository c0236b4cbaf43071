"""How long `python -m mesh review` of a one-namespace move takes on a stack of N bound namespaces, and what part
of it Istio's upgrade rules (`mesh.checks`) take; how many API calls the review makes; and `mesh status` (every pod,
one list) on the same cluster.

The command is run as a user runs it: a new Python process in a project directory whose stack's backend (a local
file backend) holds the state, so its figure includes process start and imports, the state read (`pulumi stack
export`, the real CLI), the cluster reads, the checks and the report. The state is imported (`pulumi stack import`)
rather than made by `pulumi up`: the stack's outputs and the MeshRollout's state after an `up` of N namespaces on the
old revision with both revisions installed (read back through `Deployed.from_export` and compared). The checks are on:
`charts.path` is the toolchain's chart mirror. Their part is measured two ways in the same run: the same command timed
stage by stage inside its process (`review_checks`, with the state read, the cluster reads and the rest), and the
command with the chart mirror absent (`charts.path` at a directory that does not exist: the chart rules skipped).

The cluster is the harness's local control plane (harness/control_plane.py: etcd, kube-apiserver,
controllers, KWOK nodes that make pods Ready, and a real istiod per revision), with two revisions of the
real istiod chart installed by harness/revision.py, so every pod is really injected by the revision its
namespace is bound to. API calls are counted in-process at the client (`ApiClient.call_api`, a page of a list
being one call), on `mesh.__main__.build_review`.

Run from the repository root: .venv/bin/python -m benchmarks.review [--namespaces 200] [--pods 3] [--runs 5]

Measured on the 2-core development machine (200 namespaces, 3 pods each): see README, "Scale".
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import json
import os
import pstats
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.rest import ApiException

from harness.control_plane import ControlPlane, KubeCluster, wait_for
from harness.revision import HUB, install_revision
from harness.toolchain import REPO_ROOT, Tools, cache_dir, locate_or_exit
from mesh.__main__ import build_review, build_status
from mesh.kube import KUBECONFIG_KEY
from mesh.review import Deployed, Review
from mesh.rollout_plan import rollout_inputs
from mesh.spec import PROJECT, load_spec

OLD, NEW = "bench-old", "bench-new"
VERSIONS = {OLD: "1.30.0", NEW: "1.31.0"}
IMAGE = "example.invalid/app:1"
STACK = "bench"
NO_MIRROR = "/nonexistent/istio-{version}/charts"
STAGED = """
import json, os, sys, time
wall, cpu = {}, {}
def clock(name, since):
    wall[name] = wall.get(name, 0.0) + time.perf_counter() - since[0]
    cpu[name] = cpu.get(name, 0.0) + time.process_time() - since[1]
def now():
    return time.perf_counter(), time.process_time()
start = t = now()
import mesh.__main__ as cli
clock("imports", t)
t = now()
import kubernetes.client, urllib3, mesh.kube, mesh.providers.drain_guard, mesh.providers.rollout, mesh.chart_files
clock("lazy_imports", t)
def timed(name, f):
    def run(*args, **kwargs):
        t = now()
        try:
            return f(*args, **kwargs)
        finally:
            clock(name, t)
    return run
for name in ("pulumi_json", "cluster_part", "review_checks"):
    setattr(cli, name, timed(name, getattr(cli, name)))
code = cli.main(sys.argv[1:])
clock("main", start)
times = os.times()
cpu["pulumi"] = times.children_user + times.children_system
print(json.dumps({"wall": wall, "cpu": cpu}), file=sys.stderr)
sys.exit(code)
"""
"""`python -m mesh` with its stages timed (wall and this process's CPU) in the process: its imports, the ones it
makes on first use (`lazy_imports`: the kubernetes client (its ApiClient: the program calls the API by path, never
through the generated API classes), the MeshRollout's and drain guard's readers, the chart files; imported ahead
here), the state read (`pulumi_json`; the `pulumi` CLI's own CPU is `pulumi`), the cluster reads (`cluster_part`,
`GET /version` for the checks included), the checks (`review_checks`), and all of it (`main`)."""


@contextlib.contextmanager
def counted_calls() -> Iterator[list[str]]:
    """Every API call the kubernetes client makes meanwhile, as `METHOD path`."""
    calls: list[str] = []
    original = k8s.ApiClient.call_api

    def call_api(self: k8s.ApiClient, resource_path: str, method: str, *args: Any, **kwargs: Any) -> Any:
        calls.append(f"{method} {resource_path}")
        return original(self, resource_path, method, *args, **kwargs)

    k8s.ApiClient.call_api = call_api  # type: ignore[method-assign]
    try:
        yield calls
    finally:
        k8s.ApiClient.call_api = original  # type: ignore[method-assign]


class Cluster:
    """N namespaces bound to the old revision, one Deployment of `pods` replicas in each."""

    def __init__(self, kubeconfig: Path) -> None:
        self.api = k8s_config.new_client_from_config(config_file=str(kubeconfig))
        self.core, self.apps = k8s.CoreV1Api(self.api), k8s.AppsV1Api(self.api)

    def install_revisions(self, cluster: KubeCluster) -> None:
        for rev, version in VERSIONS.items():
            install_revision(cluster, rev, version)

    def _has_sa(self, ns: str) -> bool:
        try:
            self.core.read_namespaced_service_account("default", ns)
            return True
        except ApiException:
            return False

    def populate(self, namespaces: list[str], pods: int) -> None:
        for ns in namespaces:
            self.core.create_namespace({"metadata": {"name": ns, "labels": {"istio.io/rev": OLD}}})
        for ns in namespaces:
            wait_for(f"ServiceAccount of {ns}", lambda ns=ns: self._has_sa(ns), 120)
            labels = {"app": "web"}
            self.apps.create_namespaced_deployment(ns, {
                "metadata": {"name": "web"},
                "spec": {"replicas": pods, "selector": {"matchLabels": labels},
                         "template": {"metadata": {"labels": labels},
                                      "spec": {"containers": [{"name": "app", "image": IMAGE}]}}},
            })
        want = len(namespaces) * pods
        wait_for(f"{want} injected Ready pods", lambda: self._ready_injected() >= want, 900)

    def _ready_injected(self) -> int:
        pods = self.core.list_pod_for_all_namespaces(label_selector="app=web").items
        return sum(
            (p.metadata.annotations or {}).get("istio.io/rev") == OLD
            and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
            for p in pods
        )


def deployed(namespaces: list[str]) -> Deployed:
    """The outputs below and the MeshRollout's state after the same `up`."""
    return Deployed.from_outputs(outputs(namespaces), {g: m for g, m in deployed_rollout(namespaces).items() if m})


def outputs(namespaces: list[str]) -> dict[str, Any]:
    """What the stack's last `up` would have exported: every namespace on the old revision."""
    return {
        "revisions": {rev: {"version": v, "service": f"istiod-{rev}", "proxy": f"{HUB}/proxyv2:{v}"}
                      for rev, v in VERSIONS.items()},
        "tags": {},
        "namespaces": dict.fromkeys(namespaces, OLD),
        "gateways": {},
    }


def config(namespaces: list[str], kubeconfig: Path, *, drop_old: bool = False,
           charts: str | None = None) -> dict[str, Any]:
    """The stack file's config with the first namespace moved to the new revision; `charts`: the mirror's path
    (default: the toolchain's, which the checks read)."""
    bindings = {ns: NEW if i == 0 or drop_old else OLD for i, ns in enumerate(namespaces)}
    revisions = {rev: {"version": v} for rev, v in VERSIONS.items() if not (drop_old and rev == OLD)}
    return {"istio-mesh:revisions": revisions, "istio-mesh:namespaces": bindings,
            "istio-mesh:charts": {"path": charts or str(cache_dir() / "istio-{version}" / "charts")},
            KUBECONFIG_KEY: str(kubeconfig)}


class Project:
    """A project directory with a local file backend whose stack holds the state `deployed()` describes, where
    `python -m mesh review` runs as a user runs it."""

    def __init__(self, tools: Tools, workdir: Path) -> None:
        self.dir = workdir / "project"
        self.dir.mkdir()
        shutil.copy(REPO_ROOT / "Pulumi.yaml", self.dir / "Pulumi.yaml")
        (workdir / "state").mkdir()
        self.env = {**os.environ, "PULUMI_HOME": str(workdir / "pulumi-home"),
                    "PULUMI_BACKEND_URL": f"file://{workdir / 'state'}", "PULUMI_CONFIG_PASSPHRASE": "bench",
                    "PULUMI_SKIP_UPDATE_CHECK": "true", "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
                    "PATH": tools.env_path(), "PYTHONPATH": str(REPO_ROOT)}
        self.pulumi("stack", "init", STACK)

    def pulumi(self, *args: str) -> str:
        return subprocess.run(["pulumi", *args, "--non-interactive"], cwd=self.dir, env=self.env, check=True,
                              capture_output=True, text=True, timeout=300).stdout

    def import_state(self, namespaces: list[str]) -> None:
        """The stack's outputs and the MeshRollout's state as an `up` of `namespaces` on the old revision leaves
        them, imported into the backend; read back as the review reads them."""
        export = json.loads(self.pulumi("stack", "export", "--stack", STACK))
        base = f"urn:pulumi:{STACK}::{PROJECT}::"
        stack_urn, provider_urn, provider_id = (f"{base}pulumi:pulumi:Stack::{PROJECT}-{STACK}",
                                                f"{base}pulumi:providers:pulumi-python::default", "0" * 8)
        export["deployment"]["resources"] = [
            {"urn": stack_urn, "custom": False, "type": "pulumi:pulumi:Stack", "outputs": outputs(namespaces)},
            {"urn": provider_urn, "custom": True, "id": provider_id, "type": "pulumi:providers:pulumi-python",
             "parent": stack_urn},
            {"urn": f"{base}pulumi-python:dynamic/mesh:MeshRollout::data-plane-rollout", "custom": True,
             "id": "data-plane-rollout", "type": "pulumi-python:dynamic/mesh:MeshRollout", "parent": stack_urn,
             "provider": f"{provider_urn}::{provider_id}", "inputs": {}, "outputs": dict(deployed_rollout(namespaces))},
        ]
        with tempfile.NamedTemporaryFile("w", suffix=".json") as f:
            json.dump(export, f)
            f.flush()
            self.pulumi("stack", "import", "--stack", STACK, "--file", f.name)
        read = Deployed.from_export(json.loads(self.pulumi("stack", "export", "--stack", STACK)))
        assert read == deployed(namespaces), "the imported state does not read back as the benchmark's state"

    def write_config(self, raw: dict[str, Any]) -> None:
        (self.dir / f"Pulumi.{STACK}.yaml").write_text(json.dumps({"config": raw}))

    def review(self, staged: bool) -> tuple[float, float, dict[str, Any], dict[str, float]]:
        """One `python -m mesh review --json` in a new process: wall time, CPU time (the process and the `pulumi`
        it runs, not the API server's), its JSON, and (`staged`) its stages."""
        command = ["-c", STAGED] if staged else ["-m", "mesh"]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        done = subprocess.run([sys.executable, *command, "review", "--stack", STACK, "--json"], cwd=self.dir,
                              env=self.env, capture_output=True, text=True, timeout=300, check=False)
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        stages = json.loads(done.stderr.strip().splitlines()[-1]) if staged else {}
        return wall, cpu, json.loads(done.stdout), stages


def deployed_rollout(namespaces: list[str]) -> dict[str, Any]:
    """The MeshRollout's state after the `up` (its inputs, every namespace on the old revision)."""
    spec = load_spec({"revisions": {rev: {"version": v} for rev, v in VERSIONS.items()},
                      "namespaces": dict.fromkeys(namespaces, OLD)})
    return rollout_inputs(spec)


def command_runs(project: Project, namespaces: list[str], kubeconfig: Path, runs: int, pods: int) -> None:
    """The real command, `runs` times each way, interleaved: checks on (staged, and plain), chart mirror absent."""
    with_mirror, without = config(namespaces, kubeconfig), config(namespaces, kubeconfig, charts=NO_MIRROR)
    plain: list[tuple[float, float]] = []
    absent: list[tuple[float, float]] = []
    staged: list[dict[str, dict[str, float]]] = []
    for _ in range(runs):
        project.write_config(with_mirror)
        _, _, review, stages = project.review(staged=True)
        checks = review["checks"]
        assert not checks["skipped"] and not checks["refusals"], checks
        moved = [(d["move"]["namespace"], d["restart"]) for d in review["data_plane"]]
        assert moved == [(namespaces[0], {"Deployment/web": pods})], moved
        staged.append(stages)
        plain.append(project.review(staged=False)[:2])
        project.write_config(without)
        wall, cpu, review, _ = project.review(staged=False)
        assert any("not in the mirror" in why for why in review["checks"]["skipped"]) or not review["checks"][
            "skipped"], review["checks"]
        absent.append((wall, cpu))
    med = statistics.median
    print(f"`python -m mesh review` of a one-namespace move, real process, {runs} runs each way, interleaved "
          f"(load average {os.getloadavg()[0]:.1f} at the end):", flush=True)
    for what, timings in (("checks on", plain), ("chart mirror absent", absent)):
        walls, cpus = [w for w, _ in timings], [c for _, c in timings]
        print(f"  {what}: wall median {med(walls):.2f}s, min {min(walls):.2f}s; CPU (process and its pulumi) "
              f"median {med(cpus):.2f}s, min {min(cpus):.2f}s", flush=True)
    print(f"  checks on / mirror absent: wall {med(w for w, _ in plain) / med(w for w, _ in absent):.2f} x, "
          f"CPU {med(c for _, c in plain) / med(c for _, c in absent):.2f} x", flush=True)
    total, total_cpu = med(s["wall"]["main"] for s in staged), med(s["cpu"]["main"] for s in staged)
    print(f"  stages of the checks-on command in its process (medians; all of it: {total:.2f}s wall, {total_cpu:.2f}s "
          "CPU):", flush=True)
    for name in ("imports", "lazy_imports", "pulumi_json", "cluster_part", "review_checks"):
        part, part_cpu = med(s["wall"].get(name, 0.0) for s in staged), med(s["cpu"].get(name, 0.0) for s in staged)
        print(f"    {name}: {part:.3f}s wall = {part / total:.1%}, {part_cpu:.3f}s CPU = {part_cpu / total_cpu:.1%}",
              flush=True)
    print(f"    the pulumi CLI (stack export): {med(s['cpu']['pulumi'] for s in staged):.2f}s CPU", flush=True)


def timed(what: str, run: Callable[[], Any]) -> Any:
    with counted_calls() as calls:
        start = time.perf_counter()
        result = run()
        wall = time.perf_counter() - start
    print(f"{what}: {wall:.2f}s, {len(calls)} API calls", flush=True)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--namespaces", type=int, default=200)
    parser.add_argument("--pods", type=int, default=3, help="pods per namespace (one Deployment)")
    parser.add_argument("--runs", type=int, default=5, help="runs of the real command, each way")
    parser.add_argument("--profile", action="store_true",
                        help="also profile the in-process one-namespace review (cProfile, top 25 by own time)")
    args = parser.parse_args(argv)

    tools = locate_or_exit(pulumi=True)
    control_plane = ControlPlane(tools)
    control_plane.start()
    try:
        kubeconfig = control_plane.kubeconfig
        cluster = Cluster(kubeconfig)
        cluster.install_revisions(KubeCluster(kubeconfig, tools, control_plane))
        namespaces = [f"team-{i:03d}" for i in range(args.namespaces)]
        start = time.perf_counter()
        cluster.populate(namespaces, args.pods)
        print(f"{args.namespaces} bound namespaces, {args.namespaces * args.pods} injected pods "
              f"(set up in {time.perf_counter() - start:.0f}s)", flush=True)
        state = deployed(namespaces)
        with tempfile.TemporaryDirectory(prefix="bench-review-") as workdir:
            project = Project(tools, Path(workdir))
            project.import_state(namespaces)
            command_runs(project, namespaces, kubeconfig, args.runs, args.pods)
        code, review = timed("review, one namespace moves",
                             lambda: build_review("bench", config(namespaces, kubeconfig), state))
        assert code == 0 and isinstance(review, Review) and review.cluster_note is None, review
        [plane] = review.data_plane or []
        assert (plane.move.namespace, plane.restart) == (namespaces[0], {"Deployment/web": args.pods}), plane
        checks = review.to_json()["checks"]
        assert not checks["skipped"] and any(p["rule"] == "kubernetes-support" for p in checks["passed"]), checks
        print(f"  checks: {len(checks['passed'])} passed, {len(checks['warnings'])} warnings, "
              f"{len(checks['refusals'])} refusals", flush=True)
        if args.profile:
            with cProfile.Profile() as profile:
                build_review("bench", config(namespaces, kubeconfig), state)
            pstats.Stats(profile).sort_stats("tottime").print_stats(25)
        code, review = timed("review, every namespace moves and the old revision goes (every pod listed)",
                             lambda: build_review("bench", config(namespaces, kubeconfig, drop_old=True), state))
        assert code == 0 and isinstance(review, Review) and len(review.refusals[OLD]) == args.namespaces
        code, status = timed("status (every pod listed)",
                             lambda: build_status("bench", config(namespaces, kubeconfig), outputs(namespaces)))
        old = next(r for r in status.revisions if r.name == OLD)
        assert code == 0 and sum(p.pods for p in old.pods.values()) == args.namespaces * args.pods
    finally:
        control_plane.stop()


if __name__ == "__main__":
    main()
