"""How long the MeshRollout provider takes to move W workloads onto a new revision, against the best
possible time and against the manual runbook, all measured in one run on one cluster.

For each W (default 10, 50, 200) with concurrency N (default 10) and pods that take R seconds
to count as available (`minReadySeconds: R`, so every rollout waits R after its pod is ready,
whichever tool drives it):

* ours: one namespace with W one-replica Deployments, bound to the new revision, moved by
  `MeshRolloutProvider.create` (strategy rolling, concurrency N), as `pulumi up` would run it;
* lower bound: ceil(W / N) x R, i.e. N rollouts always in flight, each taking exactly R;
* kubectl: the same W Deployments spread over namespaces of N, moved namespace by namespace
  with `kubectl rollout restart deployment -n NS` then `kubectl rollout status` on each of its
  Deployments: also N at a time, but in waves that wait for their slowest member.

The kubectl used is the one the e2e toolchain builds (matching the control plane), else the
first on PATH; the output says which. Without --kubeconfig, the benchmark starts the harness's
own control plane (harness/control_plane.py: etcd, kube-apiserver, controllers, KWOK nodes and a real
istiod per revision), so pods really get injected by the revision their namespace is bound to; the two
revisions are the real istiod chart installed as `helm install` would (harness/revision.py).
Run from the repository root: .venv/bin/python -m benchmarks.restart [--sizes 10 50 200] [--concurrency 10]

Measured with the defaults on the 2-core development machine (KWOK cluster of the e2e harness):
W=10: ours 10.8s, kubectl 11.4s; W=50: 54.3s, 56.7s; W=200: 220.6s, 226.2s; i.e. ours/lower bound
1.08-1.10 and kubectl/lower bound 1.13-1.14. The ~1s over R per rollout is the cluster's own
(pod creation, scheduling, old pod removal), paid by both.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.rest import ApiException
from pulumi.dynamic import Config, ConfigureRequest

from harness.control_plane import ControlPlane, KubeCluster, wait_for
from harness.revision import install_revision
from harness.toolchain import locate_or_exit
from mesh.kube import KUBECONFIG_KEY
from mesh.providers.rollout import MeshRolloutProvider

OLD, NEW = "bench-old", "bench-new"
IMAGE = "example.invalid/app:1"


@dataclass(frozen=True)
class Result:
    workloads: int
    ours: float
    kubectl: float
    lower_bound: float


class Bench:
    """The cluster-side steps: namespaces, Deployments, the two ways of restarting them."""

    def __init__(self, kubeconfig: Path, kubectl: str, ready_seconds: int) -> None:
        self.kubeconfig = kubeconfig
        self.kubectl = kubectl
        self.ready_seconds = ready_seconds
        self.api = k8s_config.new_client_from_config(config_file=str(kubeconfig))
        self.core = k8s.CoreV1Api(self.api)
        self.apps = k8s.AppsV1Api(self.api)

    def install_revisions(self, cluster: KubeCluster) -> None:
        for rev, version in ((OLD, "1.30.0"), (NEW, "1.31.0")):
            install_revision(cluster, rev, version)

    def namespace(self, rev: str) -> str:
        name = f"bench-{uuid.uuid4().hex[:8]}"
        self.core.create_namespace({"metadata": {"name": name, "labels": {"istio.io/rev": rev}}})
        wait_for(f"ServiceAccount of {name}", lambda: self._has_sa(name), 60)
        return name

    def _has_sa(self, ns: str) -> bool:
        try:
            self.core.read_namespaced_service_account("default", ns)
            return True
        except ApiException:
            return False

    def deployments(self, ns: str, count: int) -> list[str]:
        names = [f"d{i:03d}" for i in range(count)]
        for name in names:
            labels = {"app": name}
            self.apps.create_namespaced_deployment(
                ns,
                {
                    "metadata": {"name": name},
                    "spec": {
                        "replicas": 1,
                        "minReadySeconds": self.ready_seconds,
                        "selector": {"matchLabels": labels},
                        "template": {
                            "metadata": {"labels": labels},
                            "spec": {"containers": [{"name": "app", "image": IMAGE}]},
                        },
                    },
                },
            )
        return names

    def settled(self, namespaces: list[str], rev: str) -> Callable[[], bool]:
        """Every Deployment available and every pod on `rev`."""

        def check() -> bool:
            for ns in namespaces:
                for d in self.apps.list_namespaced_deployment(ns).items:
                    st = d.status
                    if (st.available_replicas or 0) != 1 or (st.replicas or 0) != 1 or (st.updated_replicas or 0) != 1:
                        return False
                pods = [p for p in self.core.list_namespaced_pod(ns).items if not p.metadata.deletion_timestamp]
                if any((p.metadata.annotations or {}).get("istio.io/rev") != rev for p in pods):
                    return False
            return True

        return check

    def bind(self, namespaces: list[str], rev: str) -> None:
        for ns in namespaces:
            self.core.patch_namespace(ns, {"metadata": {"labels": {"istio.io/rev": rev}}})

    def drop(self, namespaces: list[str]) -> None:
        for ns in namespaces:
            self.core.delete_namespace(ns)
        wait_for("namespaces gone", lambda: not any(self._exists(ns) for ns in namespaces), 600)

    def _exists(self, ns: str) -> bool:
        try:
            self.core.read_namespace(ns)
            return True
        except ApiException:
            return False

    @contextlib.contextmanager
    def workloads(self, groups: list[int]) -> Iterator[list[str]]:
        """Namespaces (one per group size) of Deployments, settled on OLD, bound to NEW."""
        namespaces = [self.namespace(OLD) for _ in groups]
        try:
            for ns, count in zip(namespaces, groups, strict=True):
                self.deployments(ns, count)
            wait_for("workloads settled on the old revision", self.settled(namespaces, OLD), 900)
            self.bind(namespaces, NEW)
            yield namespaces
            wait_for("every pod on the new revision", self.settled(namespaces, NEW), 60)
        finally:
            self.drop(namespaces)

    def ours(self, ns: str, concurrency: int) -> float:
        provider = MeshRolloutProvider()
        provider.configure(ConfigureRequest(Config({KUBECONFIG_KEY: str(self.kubeconfig)}, "istio-mesh")))
        # What the stand-in injects for NEW (its hub and tag).
        target = {"revision": NEW, "proxy_image": "docker.io/istio/proxyv2:1.31.0", "strategy": "rolling"}
        props = {
            "namespaces": {ns: target},
            "gateways": {},
            "concurrency": concurrency,
            "per_namespace": 0,
            "timeout_seconds": 10 * self.ready_seconds + 120,
        }
        log = io.StringIO()
        started = time.monotonic()
        with contextlib.redirect_stderr(log):  # the provider's progress lines
            provider.create(props)
        return time.monotonic() - started

    def by_kubectl(self, namespaces: list[str]) -> float:
        started = time.monotonic()
        for ns in namespaces:
            self._kubectl("rollout", "restart", "deployment", "-n", ns)
            for d in self.apps.list_namespaced_deployment(ns).items:
                self._kubectl("rollout", "status", f"deployment/{d.metadata.name}", "-n", ns, "--timeout=10m")
        return time.monotonic() - started

    def _kubectl(self, *args: str) -> None:
        subprocess.run(
            [self.kubectl, f"--kubeconfig={self.kubeconfig}", *args], check=True, capture_output=True, timeout=900
        )


def measure(bench: Bench, workloads: int, concurrency: int) -> Result:
    with bench.workloads([workloads]) as (ns,):
        ours = bench.ours(ns, concurrency)
    waves = [min(concurrency, workloads - i) for i in range(0, workloads, concurrency)]
    with bench.workloads(waves) as namespaces:
        kubectl = bench.by_kubectl(namespaces)
    lower = math.ceil(workloads / concurrency) * bench.ready_seconds
    return Result(workloads, ours, kubectl, lower)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 50, 200])
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--ready-seconds", type=int, default=10, help="minReadySeconds of every pod")
    parser.add_argument("--kubeconfig", type=Path, help="use this cluster (it must answer Istio's webhooks)")
    args = parser.parse_args(argv)

    control_plane: ControlPlane | None = None
    kubectl = shutil.which("kubectl") or "kubectl"
    kubeconfig = args.kubeconfig
    tools = locate_or_exit(pulumi=False, cluster=kubeconfig is None)
    if kubeconfig is None:
        kubectl = str(tools.kubectl or kubectl)
        control_plane = ControlPlane(tools)  # KWOK nodes hold any number of pods
        control_plane.start()
        kubeconfig = control_plane.kubeconfig
    try:
        bench = Bench(kubeconfig, kubectl, args.ready_seconds)
        bench.install_revisions(KubeCluster(kubeconfig, tools, control_plane))
        print(f"kubectl: {kubectl}; concurrency {args.concurrency}; pods available {args.ready_seconds}s after ready")
        header = ("W", "lower bound", "ours", "kubectl", "ours/LB", "kubectl/LB", "ours/kubectl")
        print("{:>5} {:>12} {:>9} {:>9} {:>8} {:>10} {:>12}".format(*header))
        for w in args.sizes:
            r = measure(bench, w, args.concurrency)
            print(
                f"{r.workloads:>5} {r.lower_bound:>11.1f}s {r.ours:>8.1f}s {r.kubectl:>8.1f}s "
                f"{r.ours / r.lower_bound:>8.2f} {r.kubectl / r.lower_bound:>10.2f} {r.ours / r.kubectl:>12.2f}",
                flush=True,
            )
    finally:
        if control_plane is not None:
            control_plane.stop()


if __name__ == "__main__":
    main()
