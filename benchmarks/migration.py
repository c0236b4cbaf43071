"""A tag flip moving 40 namespaces x 5 one-replica Deployments under a real `pulumi up`, with the stack-wide
restart budget (`rollout.concurrency` 20): how close the wall time comes to the best possible, and whether the
budget ever lets more than 20 workloads restart at once.

On the harness's local control plane (harness/control_plane.py: etcd, kube-apiserver, controllers, KWOK nodes
and a real istiod per revision, which injects what the real charts' injector config names) and through
harness/mesh_stack.py (the built CLI and plugins, a local file backend):

* setup (not measured): one stack with revisions 1-30-0 and 1-31-0 from the local chart mirror and a tag
  `stable` on 1-30-0, every namespace bound to `stable`; then W Deployments per namespace whose pods count as
  available R seconds after ready (`minReadySeconds: R`, the technique of benchmarks/restart.py), settled on
  1-30-0;
* the measured step: `stable` moves to 1-31-0 in the stack file and `pulumi up` runs. Its wall time is
  compared with the lower bound ceil(N x W / C) x R (C restarts always in flight, each taking exactly R), and
  so is the MeshRollout's own step (from the engine's step start to its outputs, i.e. without the engine's
  start-up and the chart updates before it);
* a watcher lists every Deployment every 0.2 s during the `up` and counts those restarting (our restart
  annotation for 1-31-0, rollout not complete: mesh.workloads.waiting_for); the highest count is reported;
* every resource's step is timed from the engine's events (its pre-event to its outputs): the report names
  when the first step started (engine start-up and the program's run), the slowest steps before the
  MeshRollout's (what its dependencies cost) and when the `up` ended after it.

Run from the repository root: .venv/bin/python -m benchmarks.migration [--namespaces 40] [--per-namespace 5]
[--concurrency 20] [--ready-seconds 15]

Measured figures: README, section Scale.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from kubernetes import client as k8s
from pulumi import automation as auto

from harness.control_plane import ControlPlane, wait_for
from harness.mesh_stack import MeshStack
from harness.revision import wait_ready_for_pods
from harness.toolchain import Tools, locate_or_exit
from mesh.workloads import waiting_for, workload_from_object

OLD, NEW = "1-30-0", "1-31-0"
IMAGE = "example.invalid/app:1"
ROLLOUT = "pulumi-python:dynamic/mesh:MeshRollout"


def stack_config(tools: Tools, namespaces: list[str], stable: str, concurrency: int, timeout: int) -> dict[str, Any]:
    return {
        "charts": {"path": str(tools.cache / "istio-{version}" / "charts")},
        "hub": "docker.io/istio",
        "revisions": {OLD: {"version": "1.30.0"}, NEW: {"version": "1.31.0"}},
        "tags": {"stable": stable},
        "namespaces": {ns: "stable" for ns in namespaces},
        "rollout": {"concurrency": concurrency, "timeoutSeconds": timeout},
    }


def create_deployments(apps: k8s.AppsV1Api, ns: str, count: int, ready_seconds: int) -> None:
    for i in range(count):
        labels = {"app": f"d{i}"}
        apps.create_namespaced_deployment(ns, {
            "metadata": {"name": f"d{i}"},
            "spec": {
                "replicas": 1,
                "minReadySeconds": ready_seconds,
                "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels},
                             "spec": {"containers": [{"name": "app", "image": IMAGE}]}},
            },
        })


def settled(api: k8s.ApiClient, namespaces: set[str], rev: str) -> bool:
    """Every Deployment of `namespaces` complete and every live pod of them injected by `rev`."""
    apps, core = k8s.AppsV1Api(api), k8s.CoreV1Api(api)
    listed = api.sanitize_for_serialization(apps.list_deployment_for_all_namespaces())["items"]
    if any(waiting_for(workload_from_object("Deployment", d)) for d in listed
           if d["metadata"]["namespace"] in namespaces):
        return False
    pods = [p for p in core.list_pod_for_all_namespaces().items
            if p.metadata.namespace in namespaces and not p.metadata.deletion_timestamp]
    return all((p.metadata.annotations or {}).get("istio.io/rev") == rev for p in pods)


class RestartWatcher(threading.Thread):
    """The highest number of Deployments restarting at once (restarted for NEW, rollout not complete)."""

    def __init__(self, api: k8s.ApiClient, interval: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.api, self.apps, self.interval = api, k8s.AppsV1Api(api), interval
        self.peak, self.samples = 0, 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.interval):
            listed = self.api.sanitize_for_serialization(self.apps.list_deployment_for_all_namespaces())["items"]
            workloads = [workload_from_object("Deployment", d) for d in listed]
            now = sum(1 for w in workloads if w.restarted_for is not None and w.restarted_for.revision == NEW
                      and waiting_for(w) is not None)
            self.peak, self.samples = max(self.peak, now), self.samples + 1


class StepTimes:
    """When each resource's step started and ended, from the engine's events (seconds since the `up` began):
    what the `up` spends before the MeshRollout's step, and on what."""

    def __init__(self) -> None:
        self.origin = 0.0
        self.spans: dict[str, tuple[float, float]] = {}
        self._open: dict[str, float] = {}

    def record(self, event: auto.EngineEvent) -> None:
        now = time.monotonic() - self.origin
        pre, out = event.resource_pre_event, event.res_outputs_event
        if pre is not None:
            self._open[pre.metadata.urn] = now
        if out is not None and out.metadata.urn in self._open:
            start = self._open.pop(out.metadata.urn)
            name = out.metadata.urn.rsplit("::", 1)[-1]
            key = ROLLOUT if out.metadata.type == ROLLOUT else f"{out.metadata.type} {name}"
            self.spans[key] = (start, now)

    def report(self, rollout_start: float, wall: float) -> str:
        """The engine's start-up, the slowest steps before the MeshRollout's, and the time after it."""
        before = sorted(((end - start, key) for key, (start, end) in self.spans.items() if end <= rollout_start + 0.01),
                        reverse=True)[:6]
        first = min(start for start, _end in self.spans.values())
        lines = [f"first step after {first:.1f}s (engine start-up, program run); MeshRollout step from "
                 f"{rollout_start:.1f}s to {self.spans[ROLLOUT][1]:.1f}s; up ended at {wall:.1f}s",
                 "slowest steps before it:"]
        lines += [f"  {took:5.1f}s {key} (from {self.spans[key][0]:.1f}s)" for took, key in before]
        return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--namespaces", type=int, default=40)
    parser.add_argument("--per-namespace", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--ready-seconds", type=int, default=15, help="minReadySeconds of every pod")
    args = parser.parse_args(argv)
    tools = locate_or_exit()
    workloads = args.namespaces * args.per_namespace
    lower = math.ceil(workloads / args.concurrency) * args.ready_seconds
    print(f"{platform.node()}: {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; {args.namespaces} namespaces x "
          f"{args.per_namespace} Deployments, concurrency {args.concurrency}, pods available {args.ready_seconds}s "
          f"after ready; lower bound ceil({workloads}/{args.concurrency}) x {args.ready_seconds}s = {lower}s",
          flush=True)
    cluster = ControlPlane(tools)
    cluster.start()
    try:
        api = cluster.api()
        core, apps = k8s.CoreV1Api(api), k8s.AppsV1Api(api)
        namespaces = [f"mig-{i:03d}" for i in range(args.namespaces)]
        for ns in namespaces:
            core.create_namespace({"metadata": {"name": ns}})
        timeout = 10 * args.ready_seconds + 120
        with tempfile.TemporaryDirectory() as workdir:
            stack = MeshStack(tools, cluster.kubeconfig, Path(workdir) / "stack", name="migration")
            stack.write_config(stack_config(tools, namespaces, OLD, args.concurrency, timeout))
            stack.up()
            wait_ready_for_pods(cluster, (OLD, NEW), "stable", namespaces)
            for ns in namespaces:
                create_deployments(apps, ns, args.per_namespace, args.ready_seconds)
            wait_for("every pod settled on the old revision", lambda: settled(api, set(namespaces), OLD), 900)
            print(f"setup done, load {os.getloadavg()[0]:.1f}", flush=True)

            stack.write_config(stack_config(tools, namespaces, NEW, args.concurrency, timeout))
            steps = StepTimes()
            watcher = RestartWatcher(api)
            watcher.start()
            started = steps.origin = time.monotonic()
            stack.stack.up(on_output=stack.log.append, on_event=steps.record, color="never")
            wall = time.monotonic() - started
            watcher.done.set()
            watcher.join()
            assert settled(api, set(namespaces), NEW), "not every pod moved"
            rollout_start, rollout_end = steps.spans[ROLLOUT]
            rollout = rollout_end - rollout_start
            print(f"up: {wall:.1f}s = {wall / lower:.2f} x lower bound; MeshRollout step: {rollout:.1f}s = "
                  f"{rollout / lower:.2f} x lower bound; most restarting at once: {watcher.peak} "
                  f"(limit {args.concurrency}, {watcher.samples} samples); load {os.getloadavg()[0]:.1f}")
            print(steps.report(rollout_start, wall))
            print("\n".join(line for line in stack.log if "moved " in line or "restarted " in line)[-2000:])
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
