"""A revision the stack does not install (issue 24, item 5), end to end: real engine, real Kubernetes provider,
real API server, and a real istiod serving each revision, on a control plane of its own.

The out-of-band install is a real `helm install` of the toolchain's istiod chart (1.30.1) for revision
`asm-managed-rapid` (release `istiod-asm-managed-rapid`), after a `helm install` of the base chart (Istio's CRDs,
no default revision), as a platform team's Helm releases would leave it. The harness's istiod supervisor runs a
real istiod for its Deployment, as for every `app=istiod` Deployment. Base is shared: the stack takes it over as it
does on any cluster where Helm installed it (README, "Revisions installed outside the stack"), so it is not part of
what is read back; the istiod release is.

The stack has one revision of its own (`1-31-0`) and declares `asm-managed-rapid: {external: true}`. Namespace
`payments` starts on the external revision, `orders` on its own; then both move across, then the first config
comes back (a revert), then the stack drops its reference to the external revision. `mesh review` before each
change names the external target with the image it read from the injector ConfigMap; after each `up` the API
server's audit log says which injection webhook injected every new pod, `mesh status` lists the external revision
with its pods and never as droppable, the real istioctl agrees, and a second preview shows no changes. After EVERY
step, every object of the out-of-band release (and Helm's record of it) is read back and compared with what it
was once its istiod served, apart from the fields istiod and the controllers write at run time
(`RUNTIME_FIELDS`).
"""

from __future__ import annotations

import copy
import json
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from harness.control_plane import KubeCluster, wait_for
from harness.mesh_stack import MeshStack
from harness.revision import ISTIO_NS, wait_injects
from harness.toolchain import Tools
from tests.e2e.cluster_objects import (
    create_deployment,
    create_namespace,
    deployments_settled,
    helm,
    pod_revisions,
)
from tests.e2e.istio_agreement import check_istio_agrees

EXT, EXT_VERSION = "asm-managed-rapid", "1.30.1"
OWN, OWN_VERSION = "1-31-0", "1.31.0"
HUB = "docker.io/istio"
RELEASE = f"istiod-{EXT}"
EXT_IMAGE, OWN_IMAGE = f"{HUB}/proxyv2:{EXT_VERSION}", f"{HUB}/proxyv2:{OWN_VERSION}"
INJECTOR = {EXT: f"istio-sidecar-injector-{EXT}", OWN: f"istio-sidecar-injector-{OWN}"}
IMAGE = {EXT: EXT_IMAGE, OWN: OWN_IMAGE}
PAYMENTS, ORDERS = "payments", "orders"
"""`payments` starts bound to the external revision, `orders` to the stack's own."""
WORKLOADS = ("web", "api")

RUNTIME_FIELDS: dict[str, tuple[tuple[str, ...], ...]] = {
    "*": (("metadata", "resourceVersion"), ("metadata", "managedFields"), ("metadata", "generation"), ("status",)),
    "MutatingWebhookConfiguration": (("webhooks", "*", "clientConfig", "caBundle"),),
    "ValidatingWebhookConfiguration": (("webhooks", "*", "clientConfig", "caBundle"),
                                       ("webhooks", "*", "failurePolicy")),
}
"""Kind -> paths that change at run time without anyone touching the install, ignored by the read-back: the API
server's bookkeeping and every status (`*`), the caBundle istiod patches into its webhooks, and the failurePolicy
its validation controller sets once it serves (istio#52785). Everything else must stay as the install left it."""


def config(tools: Tools, namespaces: dict[str, str], external: bool = True) -> dict[str, Any]:
    revisions: dict[str, Any] = {OWN: {"version": OWN_VERSION}}
    if external:
        revisions[EXT] = {"external": True}
    return {
        "charts": {"path": str(tools.cache / "istio-{version}" / "charts")},
        "hub": HUB,
        "revisions": revisions,
        "namespaces": namespaces,
        "rollout": {"concurrency": 4, "timeoutSeconds": 180},
    }


FIRST = {PAYMENTS: EXT, ORDERS: OWN}
SWAPPED = {PAYMENTS: OWN, ORDERS: EXT}


def kubectl_json(cluster: KubeCluster, *args: str, stdin: str = "") -> dict[str, Any]:
    """`kubectl <args> -o json` (a missing object fails it, naming the object)."""
    done = subprocess.run([str(cluster.tools.kubectl), f"--kubeconfig={cluster.kubeconfig}", *args, "-o", "json"],
                          input=stdin, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _drop(obj: Any, path: tuple[str, ...]) -> None:
    """Remove `path` from `obj` in place; `*` walks every item of a list."""
    head, rest = path[0], path[1:]
    if head == "*":
        for item in obj if isinstance(obj, list) else []:
            _drop(item, rest)
    elif isinstance(obj, dict) and head in obj:
        if rest:
            _drop(obj[head], rest)
        else:
            del obj[head]


def without_runtime_fields(obj: dict[str, Any]) -> dict[str, Any]:
    kept = copy.deepcopy(obj)
    for path in (*RUNTIME_FIELDS["*"], *RUNTIME_FIELDS.get(obj["kind"], ())):
        _drop(kept, path)
    return kept


def release_objects(cluster: KubeCluster) -> dict[str, dict[str, Any]]:
    """Every object of the out-of-band release as the cluster has it now (`kind/name` -> object without its run-time
    fields), read by what Helm says it installed, plus Helm's own record of the release (its Secret)."""
    manifest = helm(cluster, "get", "manifest", RELEASE, "-n", ISTIO_NS)
    assert len([d for d in yaml.safe_load_all(manifest) if d]) > 10, manifest
    records = kubectl_json(cluster, "get", "secret", "-n", ISTIO_NS, "-l", f"owner=helm,name={RELEASE}")["items"]
    assert len(records) == 1, [r["metadata"]["name"] for r in records]
    items = [*kubectl_json(cluster, "get", "-n", ISTIO_NS, "-f", "-", stdin=manifest)["items"], *records]
    return {f"{o['kind']}/{o['metadata']['name']}": without_runtime_fields(o) for o in items}


def differences(before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]]) -> list[str]:
    """One line per object gone, added, or changed (with the top-level keys that changed)."""
    lines = [f"{k}: gone" for k in sorted(set(before) - set(after))]
    lines += [f"{k}: new" for k in sorted(set(after) - set(before))]
    for k in sorted(set(before) & set(after)):
        if before[k] != after[k]:
            keys = sorted({*before[k], *after[k]})
            changed = [key for key in keys if before[k].get(key) != after[k].get(key)]
            meta = [m for m in sorted({*before[k].get("metadata", {}), *after[k].get("metadata", {})})
                    if before[k].get("metadata", {}).get(m) != after[k].get("metadata", {}).get(m)]
            lines.append(f"{k}: changed {changed} (metadata: {meta})")
    return lines


class Walk:
    def __init__(self, cluster: KubeCluster, stack: MeshStack, tools: Tools) -> None:
        self.cluster, self.stack, self.tools = cluster, stack, tools
        self.api = cluster.api()
        self.install: dict[str, dict[str, Any]] = {}

    def assert_install_untouched(self) -> None:
        assert self.install, "the out-of-band install was never read"
        assert differences(self.install, release_objects(self.cluster)) == []

    def pods(self) -> dict[str, dict[str, str | None]]:
        return {ns: pod_revisions(self.api, ns) for ns in (PAYMENTS, ORDERS)}

    def review(self) -> dict[str, Any]:
        done = self.stack.review("--json")
        assert done.returncode == 0, done.stdout + done.stderr
        return json.loads(done.stdout)

    def status(self) -> dict[str, dict[str, Any]]:
        done = self.stack.status("--json")
        assert done.returncode == 0, done.stdout + done.stderr
        return {r["name"]: r for r in json.loads(done.stdout)["revisions"]}

    def up_moving(self, namespaces: dict[str, str]) -> None:
        """`up` of the config written last, which binds `namespaces`, checked: every workload of a namespace whose
        revision changes is restarted, each new pod injected by its revision's own webhook and real istiod (audit
        log) with that revision's image, and the others keep their pods."""
        before = self.pods()
        moving = {ns for ns, rev in namespaces.items() if set(before[ns].values()) != {rev}}
        assert self.cluster.admission is not None
        assert self.stack.config()["namespaces"] == namespaces
        since = time.time()
        self.stack.up()
        after = self.pods()
        for ns, rev in namespaces.items():
            assert set(after[ns].values()) == {rev}, (ns, after[ns])
            if ns in moving:
                assert not set(after[ns]) & set(before[ns]), f"{ns}: every pod recreated"
            else:
                assert after[ns] == before[ns], f"{ns}: not restarted"
        for ns in moving:
            created = [c for c in self.cluster.admission.injections(ns) if c.time >= since and c.code == 201]
            assert {(c.revision, c.proxy_image, tuple(c.injectors)) for c in created} == {
                (namespaces[ns], IMAGE[namespaces[ns]], (INJECTOR[namespaces[ns]],))}, created
            assert len(created) >= len(after[ns]), created

    def check_step(self, bound: dict[str, str]) -> None:
        """After each step: the install untouched, status shows the external revision with its pods and never
        droppable, a fresh preview shows no change, and istioctl agrees."""
        self.assert_install_untouched()
        status = self.status()
        ext = status[EXT]
        assert ext["external"] and not ext["can_drop"], ext
        assert ext["why"].startswith("external: installed outside the stack, which never removes it"), ext
        on_ext = [ns for ns, rev in bound.items() if rev == EXT]
        assert ext["bound"] == on_ext and ext["version"] == EXT_VERSION, ext
        assert {ns: p["pods"] for ns, p in ext["pods"].items()} == {
            ns: len(WORKLOADS) for ns in on_ext}, ext
        assert all(p["proxies"] == {EXT_VERSION: len(WORKLOADS)} for p in ext["pods"].values()), ext
        own = status[OWN]
        assert not own["external"] and {ns: p["pods"] for ns, p in own["pods"].items()} == {
            ns: len(WORKLOADS) for ns, rev in bound.items() if rev == OWN}, own
        assert self.stack.preview_changes() == {}, "\n".join(self.stack.log[-60:])
        check_istio_agrees(self.cluster, self.stack)
        self.assert_install_untouched()


@pytest.fixture(scope="module")
def walk(pristine_cluster: KubeCluster, e2e_tools: Tools, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Walk]:
    stack = MeshStack(e2e_tools, pristine_cluster.kubeconfig, tmp_path_factory.mktemp("external-stack"))
    yield Walk(pristine_cluster, stack, e2e_tools)


def planned(review: dict[str, Any]) -> dict[str, tuple[str, str, dict[str, int]]]:
    """Namespace -> (target revision, why, restarts) as the review plans them."""
    return {d["move"]["namespace"]: (d["move"]["target"]["revision"], d["move"]["why"], d["restart"])
            for d in review["data_plane"]}


def note(revision: str) -> str:
    """What the review says of a move's target: the external revision's version and image read from the cluster."""
    return f"(external, {EXT_VERSION}, proxy {EXT_IMAGE} (read from the cluster))" if revision == EXT else ""


def test_1_an_istiod_installed_out_of_band_by_helm_injects(walk: Walk) -> None:
    cluster, api = walk.cluster, walk.api
    charts = cluster.tools.charts[EXT_VERSION]
    helm(cluster, "install", "istio-base", str(charts.base), "-n", ISTIO_NS, "--create-namespace",
         "--set", "defaultRevision=")
    helm(cluster, "install", RELEASE, str(charts.istiod), "-n", ISTIO_NS, "--set", f"revision={EXT}",
         "--set", f"global.hub={HUB}", "--set", f"global.tag={EXT_VERSION}")
    assert cluster.istiod is not None
    cluster.istiod.wait_serving(EXT)
    wait_injects(cluster, {"istio.io/rev": EXT}, EXT)
    walk.install = release_objects(cluster)
    assert {k.split("/")[0] for k in walk.install} >= {
        "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration", "ConfigMap", "Deployment", "Service",
        "Secret"}, sorted(walk.install)
    # Running before the stack exists: binding them restarts them into the mesh.
    for ns in (PAYMENTS, ORDERS):
        create_namespace(api, ns)
        for name in WORKLOADS:
            create_deployment(api, ns, name, replicas=1)
    for ns in (PAYMENTS, ORDERS):
        wait_for(f"{ns} settled", lambda ns=ns: deployments_settled(api, ns))
    assert {rev for pods in walk.pods().values() for rev in pods.values()} == {None}
    walk.assert_install_untouched()


def test_2_the_stack_binds_one_namespace_to_the_external_revision_and_one_to_its_own(walk: Walk) -> None:
    walk.stack.write_config(config(walk.tools, FIRST))
    review = walk.review()
    assert f"revision `{EXT}` added as external (installed outside the stack: nothing is installed, the preview " \
        "checks its injection webhook)" in review["control_plane"], review["control_plane"]
    assert f"revision `{OWN}` added at {OWN_VERSION}" in review["control_plane"], review["control_plane"]
    assert planned(review) == {
        PAYMENTS: (EXT, f"(unbound) -> {EXT} {note(EXT)}", {f"Deployment/{w}": 1 for w in sorted(WORKLOADS)}),
        ORDERS: (OWN, f"(unbound) -> {OWN}", {f"Deployment/{w}": 1 for w in sorted(WORKLOADS)}),
    }, review["data_plane"]
    walk.up_moving(FIRST)
    outputs = walk.stack.outputs()
    assert outputs["revisions"][EXT] == {"external": True, "version": EXT_VERSION, "proxy": EXT_IMAGE}, outputs
    walk.check_step(FIRST)


def test_3_both_namespaces_move_across(walk: Walk) -> None:
    walk.stack.write_config(config(walk.tools, SWAPPED))
    text = walk.stack.review()
    assert text.returncode == 0, text.stdout + text.stderr
    assert f"- `{ORDERS}`: {OWN} -> {EXT} {note(EXT)}, rolling: restarts Deployment/api (1 pods), " \
        "Deployment/web (1 pods)" in text.stdout, text.stdout
    assert f"- `{PAYMENTS}`: {EXT} -> {OWN}, rolling: restarts" in text.stdout, text.stdout
    walk.up_moving(SWAPPED)
    walk.check_step(SWAPPED)


def test_4_reverting_to_the_first_config_moves_both_back(walk: Walk) -> None:
    walk.stack.write_config(config(walk.tools, FIRST))
    assert planned(walk.review()) == {
        PAYMENTS: (EXT, f"{OWN} -> {EXT} {note(EXT)}", {f"Deployment/{w}": 1 for w in sorted(WORKLOADS)}),
        ORDERS: (OWN, f"{EXT} -> {OWN}", {f"Deployment/{w}": 1 for w in sorted(WORKLOADS)}),
    }
    walk.up_moving(FIRST)
    walk.check_step(FIRST)


def test_5_dropping_the_external_revision_from_the_config_deletes_nothing_of_it(walk: Walk) -> None:
    """`payments` moves to the stack's revision and `revisions.asm-managed-rapid` goes in the same `up`: the
    ExternalRevision leaves the state, the release's objects stay as they were and its istiod still injects."""
    both_own = {PAYMENTS: OWN, ORDERS: OWN}
    walk.stack.write_config(config(walk.tools, both_own, external=False))
    review = walk.review()
    assert f"external revision `{EXT}` no longer declared (nothing of it is deleted)" in review["control_plane"], \
        review["control_plane"]
    walk.up_moving(both_own)
    assert EXT not in walk.stack.outputs()["revisions"]
    assert not [r for r in walk.stack.resources() if r["type"].endswith(":ExternalRevision")]
    walk.assert_install_untouched()
    wait_injects(walk.cluster, {"istio.io/rev": EXT}, EXT, timeout=30)
    assert walk.stack.preview_changes() == {}, "\n".join(walk.stack.log[-60:])
    check_istio_agrees(walk.cluster, walk.stack)
    walk.assert_install_untouched()
    # Still installed, now undeclared: status lists it as outside the stack (nothing of it in the state), never
    # as a removal of the stack's that was refused, and never droppable.
    ext = walk.status()[EXT]
    assert (ext["version"], ext["pods"], ext["bound"]) == (EXT_VERSION, {}, []), ext
    assert (ext["external"], ext["can_drop"]) == (True, False), ext
