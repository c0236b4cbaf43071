"""How long `mesh review` of a one-namespace move takes on a stack of N bound namespaces, and how many
API calls it makes; and `mesh status` (every pod, one list) on the same cluster.

The review needs the stack's last outputs, the MeshRollout's state and the cluster: this benchmark
builds the first two directly (N namespaces on the old revision, both revisions with their proxy image)
instead of running `pulumi up`, and times `mesh.__main__.build_review`, i.e. everything
`python -m mesh review` does after reading the state: config load and validation, the control-plane
diff, the cluster reads, the checks (`mesh.checks`, with the charts of the toolchain's mirror) and the
report. The reading of the state by the `pulumi` CLI (one `pulumi stack export`, the same whatever N) is not
in the figure.

The cluster is the harness's local control plane (harness/control_plane.py: etcd, kube-apiserver,
controllers, KWOK nodes that make pods Ready, and a real istiod per revision), with two revisions of the
real istiod chart installed by harness/revision.py, so every pod is really injected by the revision its
namespace is bound to. API calls are counted at the client (`ApiClient.call_api`), a page of a list
being one call.

Run from the repository root: .venv/bin/python -m benchmarks.review [--namespaces 200] [--pods 3]

Measured on the 2-core development machine (200 namespaces, 3 pods each): see README, "The change review".
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.rest import ApiException

from harness.control_plane import ControlPlane, KubeCluster, wait_for
from harness.revision import HUB, install_revision
from harness.toolchain import cache_dir, locate_or_exit
from mesh.__main__ import build_review, build_status
from mesh.kube import KUBECONFIG_KEY
from mesh.review import Deployed, Review
from mesh.rollout_plan import rollout_inputs
from mesh.spec import load_spec

OLD, NEW = "bench-old", "bench-new"
VERSIONS = {OLD: "1.30.0", NEW: "1.31.0"}
IMAGE = "example.invalid/app:1"


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
    spec = load_spec({"revisions": {rev: {"version": v} for rev, v in VERSIONS.items()},
                      "namespaces": dict.fromkeys(namespaces, OLD)})
    return Deployed.from_outputs(outputs(namespaces), rollout_inputs(spec))


def outputs(namespaces: list[str]) -> dict[str, Any]:
    """What the stack's last `up` would have exported: every namespace on the old revision."""
    return {
        "revisions": {rev: {"version": v, "service": f"istiod-{rev}", "proxy": f"{HUB}/proxyv2:{v}"}
                      for rev, v in VERSIONS.items()},
        "tags": {},
        "namespaces": dict.fromkeys(namespaces, OLD),
        "gateways": {},
    }


def config(namespaces: list[str], kubeconfig: Path, *, drop_old: bool = False) -> dict[str, Any]:
    """The stack file's config with the first namespace moved to the new revision."""
    bindings = {ns: NEW if i == 0 or drop_old else OLD for i, ns in enumerate(namespaces)}
    revisions = {rev: {"version": v} for rev, v in VERSIONS.items() if not (drop_old and rev == OLD)}
    return {"istio-mesh:revisions": revisions, "istio-mesh:namespaces": bindings,
            "istio-mesh:charts": {"path": str(cache_dir() / "istio-{version}" / "charts")},  # the checks read them
            KUBECONFIG_KEY: str(kubeconfig)}


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
    args = parser.parse_args(argv)

    tools = locate_or_exit(pulumi=False)
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
        code, review = timed("review, one namespace moves",
                             lambda: build_review("bench", config(namespaces, kubeconfig), state))
        assert code == 0 and isinstance(review, Review) and review.cluster_note is None, review
        [plane] = review.data_plane or []
        assert (plane.move.namespace, plane.restart) == (namespaces[0], {"Deployment/web": args.pods}), plane
        checks = review.to_json()["checks"]
        assert not checks["skipped"] and any(p["rule"] == "kubernetes-support" for p in checks["passed"]), checks
        print(f"  checks: {len(checks['passed'])} passed, {len(checks['warnings'])} warnings, "
              f"{len(checks['refusals'])} refusals", flush=True)
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
