"""After every step of an e2e walk: does Istio's own tooling agree with the stack?

`check_istio_agrees` runs the independent checks of ``harness.istio_checks`` (the real istioctl) and
reads the pods the real istiod injected:

* `istioctl analyze -A` reports no injection or webhook finding (IST0139, IST0158, IST0102, IST0103,
  IST0123, IST0135 at Warning or Error) except exactly those the step causes on purpose;
* `istioctl tag list` equals the stack's `tags` output;
* every injected pod carries what real istiod writes: `sidecar.istio.io/status` naming the revision,
  the `istio.io/rev` annotation equal to it, and the containers that status lists (the real
  `istio-proxy` from the revision's template, running the pilot-agent `proxy` command).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping

from kubernetes import client as k8s

from harness.control_plane import KubeCluster
from harness.istio_checks import analyze, tag_list
from harness.mesh_stack import MeshStack

STATUS = "sidecar.istio.io/status"


def injected_pod_problems(api: k8s.ApiClient) -> list[str]:
    """Injected pods (by istiod's status annotation) that lack what istiod writes, one line each."""
    problems = []
    for pod in k8s.CoreV1Api(api).list_pod_for_all_namespaces().items:
        annotations = pod.metadata.annotations or {}
        if STATUS not in annotations or pod.metadata.deletion_timestamp:
            continue
        where = f"{pod.metadata.namespace}/{pod.metadata.name}"
        status = json.loads(annotations[STATUS])
        if annotations.get("istio.io/rev") != status.get("revision"):
            problems.append(f"{where}: istio.io/rev {annotations.get('istio.io/rev')!r} != {status.get('revision')!r}")
        containers = {c.name: c for c in pod.spec.containers}
        missing = [c for c in status.get("containers") or [] if c not in containers]
        init = {c.name for c in pod.spec.init_containers or []}
        missing += [c for c in status.get("initContainers") or [] if c not in init]
        if missing:
            problems.append(f"{where}: status lists {missing}, not in the pod")
        proxy = containers.get("istio-proxy")
        if proxy is None or not proxy.image or "proxyv2" not in proxy.image or (proxy.args or [""])[0] != "proxy":
            problems.append(f"{where}: no istio-proxy of istiod's template ({proxy and proxy.image})")
    return problems


def check_istio_agrees(
    cluster: KubeCluster, stack: MeshStack, expected: Iterable[tuple[str, str]] = (),
    tags: Mapping[str, str] | None = None,
) -> None:
    """The checks above; `expected` are the (code, origin) analyzer findings this step causes on purpose;
    `tags` what `istioctl tag list` must say when it is not the stack's `tags` output (before a takeover)."""
    found = analyze(cluster)
    assert {(m.code, m.origin) for m in found} == set(expected), "\n".join(
        f"{m.level} [{m.code}] ({m.origin}) {m.message}" for m in found
    )
    want = stack.outputs().get("tags", {}) if tags is None else dict(tags)
    assert tag_list(cluster) == want, "istioctl tag list disagrees with the stack"
    assert injected_pod_problems(cluster.api()) == []
