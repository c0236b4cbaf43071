"""The canary upgrade, end to end: each step is a `pulumi up` of a config edit through the Automation API,
with the real engine, the real Kubernetes provider rendering the real Istio charts (1.30 and 1.31), and a
real API server deciding from those webhooks which revision injects each pod.

Steps run in order and share one stack and a cluster of their own, where a real istiod serves each revision;
after each: a fresh preview shows no changes, the state holds no credentials, and the real istioctl agrees
(analyze, tag list; `istioctl x precheck` passes before the canary is added). `mesh review` before each
change names what `up` then restarts, and `mesh status` after it counts the pods per revision per namespace
the cluster has and says which revision can be dropped.
"""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes.client.rest import ApiException
from pulumi import automation as auto

from harness.control_plane import KubeCluster, wait_for
from harness.istio_checks import analyze, precheck
from harness.mesh_stack import MeshStack
from harness.toolchain import Tools
from tests.e2e.cluster_objects import (
    create_deployment,
    create_namespace,
    deployments_settled,
    label_by_hand,
    namespace_labels,
    pod_revisions,
    restart_deployments,
    scale_up_and_get_new_pods,
)
from tests.e2e.istio_agreement import check_istio_agrees

OLD, NEW = "1-30-0", "1-31-0"
TEAMS = ("team-a", "team-b", "team-c")
LEGACY = "legacy"
"""Labelled istio-injection=enabled and never bound: unmanaged pods that follow the default tag."""
LEGACY_BOUND = "team-d"
"""Labelled istio-injection=enabled by hand (`kubectl label`), then bound, moved and unbound."""
GATEWAY_NS = "istio-ingress"
WATCHED = (*TEAMS, LEGACY_BOUND, LEGACY, GATEWAY_NS)


def steady_config(tools: Tools) -> dict[str, Any]:
    return {
        "charts": {"path": str(tools.cache / "istio-{version}" / "charts")},
        "hub": "docker.io/istio",
        "revisions": {OLD: {"version": "1.30.0"}},
        "tags": {"default": OLD, "stable": OLD},
        "namespaces": {
            "team-a": "stable",
            "team-b": "stable",
            "team-c": {"revision": "stable", "strategy": "natural"},
            LEGACY_BOUND: "stable",
        },
        "gateways": {
            GATEWAY_NS.removeprefix("istio-"): {
                "namespace": GATEWAY_NS,
                "revision": "stable",
                "replicas": 1,
                "service": {"type": "ClusterIP"},
            }
        },
        "rollout": {"concurrency": 4, "timeoutSeconds": 180},
    }


def canary_config(tools: Tools) -> dict[str, Any]:
    config = copy.deepcopy(steady_config(tools))
    config["revisions"][NEW] = {"version": "1.31.0"}
    config["tags"]["canary"] = NEW
    return config


# ---- cluster helpers -------------------------------------------------------------------------------




def all_pods(api: k8s.ApiClient) -> dict[str, dict[str, str | None]]:
    return {ns: pod_revisions(api, ns) for ns in WATCHED}


def mesh_json(done: Any) -> dict[str, Any]:
    """The JSON a `python -m mesh` command printed, once it exited 0."""
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)


def checked_status(walk: Walk) -> dict[str, dict[str, Any]]:
    """`mesh status --json` by revision, checked against the cluster: in every watched namespace, the pods it
    counts per revision are those annotated with it, all on that revision's proxy version, none elsewhere."""
    status = mesh_json(walk.stack.status("--json"))
    revisions = {r["name"]: r for r in status["revisions"]}
    pods = all_pods(walk.api)
    assert {rev for ns in WATCHED for rev in pods[ns].values() if rev} <= set(revisions), (pods, status)
    in_cluster = {rev: {ns: n for ns in WATCHED if (n := sum(r == rev for r in pods[ns].values()))}
                  for rev in revisions}
    reported = {rev: {ns: p["pods"] for ns, p in r["pods"].items() if ns in WATCHED} for rev, r in revisions.items()}
    assert reported == in_cluster, status
    for r in revisions.values():
        assert all(set(p["proxies"]) == {r["version"]} and not p["stale"] for p in r["pods"].values()), r
    assert not set(status["unmanaged"]) & set(WATCHED), status["unmanaged"]
    return revisions


def planned_restarts(review: dict[str, Any]) -> dict[str, int]:
    """Namespace -> pods the review says `up` restarts there."""
    return {d["move"]["namespace"]: sum(d["restart"].values()) for d in review["data_plane"] if d["restart"]}


def recreated(before: dict[str, dict[str, str | None]], after: dict[str, dict[str, str | None]]) -> dict[str, int]:
    """Namespace -> pods replaced between two reads, for the namespaces where any were."""
    return {ns: len(set(before[ns]) - set(after[ns])) for ns in WATCHED if set(before[ns]) - set(after[ns])}


def webhook(api: k8s.ApiClient, name: str) -> Any:
    return k8s.AdmissionregistrationV1Api(api).read_mutating_webhook_configuration(name)


def called_services(hook: Any) -> set[str]:
    return {w.client_config.service.name for w in hook.webhooks}


def dangling_webhooks(api: k8s.ApiClient) -> list[str]:
    """Webhooks (mutating or validating) calling a Service that does not exist."""
    adm, core = k8s.AdmissionregistrationV1Api(api), k8s.CoreV1Api(api)
    configs = [*adm.list_mutating_webhook_configuration().items, *adm.list_validating_webhook_configuration().items]
    dangling = []
    for cfg in configs:
        for w in cfg.webhooks or []:
            svc = w.client_config.service
            if svc is None:
                continue
            try:
                core.read_namespaced_service(svc.name, svc.namespace)
            except ApiException as e:
                if e.status != 404:
                    raise
                dangling.append(f"{cfg.metadata.name}/{w.name} -> {svc.namespace}/{svc.name}")
    return dangling


def revision_objects(api: k8s.ApiClient, revision: str) -> dict[str, bool]:
    """Whether each of a revision's main objects exists."""
    apps, core, adm = k8s.AppsV1Api(api), k8s.CoreV1Api(api), k8s.AdmissionregistrationV1Api(api)
    reads: dict[str, Callable[[], Any]] = {
        f"deployment/istiod-{revision}": lambda: apps.read_namespaced_deployment(f"istiod-{revision}", "istio-system"),
        f"service/istiod-{revision}": lambda: core.read_namespaced_service(f"istiod-{revision}", "istio-system"),
        f"configmap/istio-sidecar-injector-{revision}": lambda: core.read_namespaced_config_map(
            f"istio-sidecar-injector-{revision}", "istio-system"
        ),
        f"mutatingwebhook/istio-sidecar-injector-{revision}": lambda: adm.read_mutating_webhook_configuration(
            f"istio-sidecar-injector-{revision}"
        ),
    }
    found = {}
    for name, read in reads.items():
        try:
            found[name] = read().metadata.deletion_timestamp is None  # being deleted counts as gone
        except ApiException as e:
            if e.status != 404:
                raise
            found[name] = False
    return found


def credentials(kubeconfig: Path) -> list[str]:
    """Every secret string in the kubeconfig, raw and base64-decoded PEM bodies."""
    doc = yaml.safe_load(kubeconfig.read_text())
    secrets: list[str] = []
    for user in doc.get("users", []):
        for key in ("client-key-data", "client-certificate-data", "token", "password"):
            value = (user.get("user") or {}).get(key)
            if not value:
                continue
            secrets.append(value)
            if key.endswith("-data"):
                pem = base64.b64decode(value).decode()
                secrets += [line for line in pem.splitlines() if line and not line.startswith("-----")][:2]
    return secrets


# ---- the walk ---------------------------------------------------------------------------------------


class Walk:
    """State shared by the steps."""

    def __init__(self, cluster: KubeCluster, stack: MeshStack, tools: Tools) -> None:
        self.cluster, self.stack, self.tools = cluster, stack, tools
        self.api = cluster.api()
        self.secrets = credentials(cluster.kubeconfig)
        self.tag_uids: dict[str, str] = {}

    def check_converged(self, istioctl_finds: Iterable[tuple[str, str]] = ()) -> None:
        """A second preview shows no changes, the state file holds no credentials, and Istio's own tooling
        agrees with the stack (`istioctl_finds`: the analyzer findings this step causes on purpose)."""
        assert self.stack.preview_changes() == {}, "\n".join(self.stack.log[-80:])
        state = self.stack.state_text()
        leaked = [s[:16] for s in self.secrets if s in state]
        assert not leaked, f"credentials in the state: {leaked}"
        check_istio_agrees(self.cluster, self.stack, istioctl_finds)


@pytest.fixture(scope="module")
def walk(pristine_cluster: KubeCluster, e2e_tools: Tools, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Walk]:
    """A cluster of its own: `istioctl analyze -A` after each step must see this walk's objects alone."""
    stack = MeshStack(e2e_tools, pristine_cluster.kubeconfig, tmp_path_factory.mktemp("mesh-stack"))
    yield Walk(pristine_cluster, stack, e2e_tools)


def test_1_steady_state_injects_every_pod_with_the_one_revision(walk: Walk) -> None:
    api = walk.api
    for ns in ("team-a", "team-b", "team-c"):
        create_namespace(api, ns)
    create_namespace(api, LEGACY, {"istio-injection": "enabled"})
    create_namespace(api, LEGACY_BOUND)
    label_by_hand(api, LEGACY_BOUND, {"istio-injection": "enabled"})
    # team-a, team-b and team-d run before the mesh exists: adopting them restarts them into the mesh.
    create_deployment(api, "team-a", "web")
    create_deployment(api, "team-a", "api")
    create_deployment(api, "team-b", "billing")
    create_deployment(api, LEGACY_BOUND, "shop", replicas=1)
    wait_for("team workloads", lambda: all(deployments_settled(api, ns) for ns in ("team-a", "team-b", LEGACY_BOUND)))
    assert set(pod_revisions(api, "team-a").values()) == {None}

    walk.stack.write_config(steady_config(walk.tools))
    walk.stack.up()

    create_deployment(api, "team-c", "batch")
    create_deployment(api, LEGACY, "old-app")
    for ns in WATCHED:
        wait_for(f"{ns} settled", lambda ns=ns: deployments_settled(api, ns))
    pods = all_pods(api)
    assert all(pods[ns] for ns in WATCHED), pods
    assert {rev for ns in WATCHED for rev in pods[ns].values()} == {OLD}, pods
    labels = namespace_labels(api, "team-a")
    assert labels["istio.io/rev"] == "stable" and "istio-injection" not in labels
    # The hand-set legacy label (owned by kubectl, which server-side apply never removes) is gone.
    labels = namespace_labels(api, LEGACY_BOUND)
    assert labels["istio.io/rev"] == "stable" and "istio-injection" not in labels, labels
    assert walk.stack.outputs()["tags"] == {"default": OLD, "stable": OLD}
    walk.tag_uids = {t: webhook(api, f"istio-revision-tag-{t}").metadata.uid for t in ("default", "stable")}
    status = checked_status(walk)
    assert list(status) == [OLD] and status[OLD]["tags"] == ["default", "stable"]
    assert status[OLD]["bound"] == sorted((*TEAMS, LEGACY_BOUND)) and status[OLD]["gateways"] == ["ingress"]
    assert not status[OLD]["can_drop"]
    walk.check_converged()


def test_1a_the_reviews_overlap_check_and_istioctl_analyze_agree(walk: Walk) -> None:
    """A copy of the `stable` tag's webhook (labelled with its revision, as istioctl reads webhooks) makes two
    injectors select the same pods on purpose. `mesh review` and `istioctl analyze`'s IST0139 must name the
    same webhook entries; IST0139 tests label permutations, not namespaces, so only the review names where
    (every namespace bound through the tag); then the copy goes and both are quiet again."""
    adm = k8s.AdmissionregistrationV1Api(walk.api)
    raw = json.loads(adm.read_mutating_webhook_configuration("istio-revision-tag-stable", _preload_content=False).data)
    copy_name = "stable-injector-copy"
    adm.create_mutating_webhook_configuration({
        "metadata": {"name": copy_name, "labels": {"istio.io/rev": OLD}},
        "webhooks": raw["webhooks"],
    })
    try:
        review = mesh_json(walk.stack.review("--json"))
        ours = {w for o in review["overlaps"] for w in o["webhooks"]}
        found = [m for m in analyze(walk.cluster) if m.code == "IST0139"]
        theirs = {w for m in found for w in m.message.split("[", 1)[1].split("]", 1)[0].split()}
        assert ours and ours == theirs, (sorted(ours), [m.message for m in found])
        assert {o["namespace"] for o in review["overlaps"] if not o["pod_labels"]} == {*TEAMS, LEGACY_BOUND}
    finally:
        adm.delete_mutating_webhook_configuration(copy_name)
    wait_for("the copy gone from istioctl's view",
             lambda: not [m for m in analyze(walk.cluster) if m.code == "IST0139"], timeout=30)
    assert mesh_json(walk.stack.review("--json"))["overlaps"] == []
    walk.check_converged()


ISTIOD_FIELD_MANAGER = "pilot-discovery"
"""The field manager the real istiod's webhook controllers write with (istio#45204 shows it in conflicts)."""


def wait_istiod_patched(walk: Walk) -> list[str]:
    """Wait until the real istiod of each revision has done to its webhooks what it does once it serves:
    `caBundle` in every entry, written under its own field manager. Returns the names."""
    adm = k8s.AdmissionregistrationV1Api(walk.api)

    def configs() -> list[Any]:
        return [*adm.list_validating_webhook_configuration().items, *adm.list_mutating_webhook_configuration().items]

    def patched() -> bool:
        return all(
            all(w.client_config.ca_bundle for w in c.webhooks)
            and ISTIOD_FIELD_MANAGER in {m.manager for m in c.metadata.managed_fields or []}
            for c in configs()
        )

    wait_for("istiod's caBundle in every webhook", patched, timeout=120)
    return [c.metadata.name for c in configs()]


def assert_istiod_fields_kept(walk: Walk) -> None:
    """Every webhook still has istiod's caBundle, and every validator fails closed."""
    adm = k8s.AdmissionregistrationV1Api(walk.api)
    validators = adm.list_validating_webhook_configuration().items
    for cfg in [*validators, *adm.list_mutating_webhook_configuration().items]:
        assert all(w.client_config.ca_bundle for w in cfg.webhooks), f"{cfg.metadata.name} lost istiod's caBundle"
    assert {w.failure_policy for v in validators for w in v.webhooks} == {"Fail"}


def test_1b_webhook_fields_istiod_patches_at_run_time_are_not_drift(walk: Walk) -> None:
    """The real istiod fills in caBundle and flips failurePolicy to Fail once it serves (istio#52785). The
    charts render `Fail` from the start (base.validationFailurePolicy), so istiod's Update changes no value
    we apply: no conflict with its field manager on the next apply, and no drift to ignore."""
    adm = k8s.AdmissionregistrationV1Api(walk.api)
    validators = adm.list_validating_webhook_configuration().items
    assert {v.metadata.name for v in validators} == {"istiod-default-validator", f"istio-validator-{OLD}-istio-system"}
    assert {w.failure_policy for v in validators for w in v.webhooks} == {"Fail"}, "rendered fail-open"
    patched = wait_istiod_patched(walk)
    assert walk.stack.preview_changes(refresh=True) == {}
    walk.stack.up(refresh=True)
    assert len(patched) == len(adm.list_validating_webhook_configuration().items) + len(
        adm.list_mutating_webhook_configuration().items)
    assert_istiod_fields_kept(walk)
    walk.check_converged()


def test_2_adding_the_canary_installs_it_and_restarts_nothing(walk: Walk) -> None:
    api = walk.api
    checked = precheck(walk.cluster)
    assert checked.returncode == 0, f"istioctl x precheck before the canary:\n{checked.stdout}\n{checked.stderr}"
    before = all_pods(api)
    walk.stack.write_config(canary_config(walk.tools))
    review = mesh_json(walk.stack.review("--json"))
    assert f"revision `{NEW}` added at 1.31.0" in review["control_plane"] and "tag `canary`: (none) -> 1-31-0" in \
        review["control_plane"], review
    assert (review["data_plane"], review["refusals"], review["overlaps"]) == ([], {}, []), review
    # Istio's upgrade rules, shown before `up`: the behaviour flags the 1.31 chart flips after 1.30 (and how to
    # keep them), and the cluster's Kubernetes version inside the new revision's supported range.
    checks = review["checks"]
    flips = [w for w in checks["warnings"] if w["rule"] == "behaviour-changes"]
    assert [w["key"] for w in flips] == [f"revisions.{NEW}"] and flips[0]["details"]["keep"] == "1.30", checks
    assert flips[0]["details"]["flags"], checks
    assert {p["details"]["cluster"] for p in checks["passed"] if p["rule"] == "kubernetes-support"} == {"1.33"}, checks
    result = walk.stack.up()
    assert not {"delete", "replace"} & set(result.summary.resource_changes or {}), result.summary.resource_changes
    assert all(revision_objects(api, NEW).values())
    assert called_services(webhook(api, "istio-revision-tag-canary")) == {f"istiod-{NEW}"}
    assert all_pods(api) == before
    # The base chart went 1.30.0 -> 1.31.0 (its validator's labels changed) without a refresh, as CI runs.
    validator = k8s.AdmissionregistrationV1Api(api).read_validating_webhook_configuration("istiod-default-validator")
    assert validator.metadata.labels["app.kubernetes.io/version"] == "1.31.0"
    wait_istiod_patched(walk)  # the new istiod does the same to its own webhooks
    status = checked_status(walk)
    assert status[NEW]["pods"] == {} and status[NEW]["tags"] == ["canary"]
    assert status[NEW]["can_drop"] and status[NEW]["why"] == "no pod runs it; first point tag `canary` elsewhere"
    walk.check_converged()


def test_3_moving_one_namespace_restarts_only_its_workloads(walk: Walk) -> None:
    api = walk.api
    before = all_pods(api)
    walk.stack.set_path("namespaces.team-a", "canary")
    review = walk.stack.review("--json")
    assert review.returncode == 0, review.stdout + review.stderr
    planned = {d["move"]["namespace"]: d["restart"] for d in json.loads(review.stdout)["data_plane"]}
    assert planned == {"team-a": {"Deployment/api": 2, "Deployment/web": 2}}, review.stdout
    assert json.loads(review.stdout)["overlaps"] == [], review.stdout
    walk.stack.up()
    after = all_pods(api)
    # What the review named is what up restarted: every pod of those workloads, nothing elsewhere.
    assert set(after["team-a"].values()) == {NEW}
    assert not set(after["team-a"]) & set(before["team-a"]), "every team-a pod was recreated"
    assert {ns: after[ns] for ns in WATCHED if ns != "team-a"} == {ns: before[ns] for ns in WATCHED if ns != "team-a"}
    assert list(checked_status(walk)[NEW]["pods"]) == ["team-a"]
    walk.check_converged()


def test_3b_a_namespace_once_labelled_istio_injection_moves_to_the_canary(walk: Walk) -> None:
    """Were the legacy label still there, it would beat istio.io/rev and send the pods to the default
    tag's revision (the old one): the rollout would time out waiting for them to reach the canary."""
    api = walk.api
    before = all_pods(api)
    walk.stack.set_path(f"namespaces.{LEGACY_BOUND}", "canary")
    walk.stack.up()
    after = all_pods(api)
    assert set(after[LEGACY_BOUND].values()) == {NEW}
    assert {ns: after[ns] for ns in WATCHED if ns != LEGACY_BOUND} == {
        ns: before[ns] for ns in WATCHED if ns != LEGACY_BOUND}
    assert "istio-injection" not in namespace_labels(api, LEGACY_BOUND)
    walk.check_converged()


def test_3c_a_legacy_label_set_again_by_hand_is_drift_the_next_up_removes(walk: Walk) -> None:
    api = walk.api
    label_by_hand(api, LEGACY_BOUND, {"istio-injection": "enabled"})
    assert walk.stack.preview_changes() == {"update": 1}
    walk.stack.up()
    assert "istio-injection" not in namespace_labels(api, LEGACY_BOUND)
    walk.check_converged()


def test_4_moving_the_stable_and_default_tags_retargets_their_webhooks_in_place(walk: Walk) -> None:
    api = walk.api
    before = all_pods(api)
    walk.stack.set_path("tags.stable", NEW)
    walk.stack.set_path("tags.default", NEW)
    review = mesh_json(walk.stack.review("--json"))
    walk.stack.up()
    # The review named exactly the namespaces and pods up restarted; the natural one's pods wait.
    assert planned_restarts(review) == recreated(before, all_pods(api)) == {
        "team-b": len(before["team-b"]), GATEWAY_NS: len(before[GATEWAY_NS])}, review
    assert {d["move"]["namespace"]: d["pending_pods"] for d in review["data_plane"]
            if d["move"]["strategy"] == "natural"} == {"team-c": len(before["team-c"])}, review
    for tag in ("default", "stable"):
        hook = webhook(api, f"istio-revision-tag-{tag}")
        assert called_services(hook) == {f"istiod-{NEW}"}
        assert hook.metadata.uid == walk.tag_uids[tag], f"{tag}'s webhook was recreated, not updated"
    validator = k8s.AdmissionregistrationV1Api(api).read_validating_webhook_configuration("istiod-default-validator")
    assert {w.client_config.service.name for w in validator.webhooks} == {f"istiod-{NEW}"}
    assert_istiod_fields_kept(walk)
    after = all_pods(api)
    assert set(after["team-b"].values()) == {NEW} and set(after[GATEWAY_NS].values()) == {NEW}
    # natural strategy and unmanaged legacy pods keep running the old proxy until their next deploy
    assert after["team-c"] == before["team-c"] and after[LEGACY] == before[LEGACY]
    new_pods = scale_up_and_get_new_pods(api, LEGACY, "old-app", 3, before[LEGACY])
    assert list(new_pods.values()) == [NEW], "a new pod in a legacy-labelled namespace gets the default tag's revision"
    status = checked_status(walk)
    assert (status[OLD]["tags"], status[NEW]["tags"]) == ([], ["canary", "default", "stable"])
    assert set(status[OLD]["pods"]) == {"team-c", LEGACY} and not status[OLD]["can_drop"]
    walk.check_converged()


def test_4b_unbinding_gives_the_legacy_label_back_and_restarts_nothing(walk: Walk) -> None:
    api = walk.api
    before = all_pods(api)
    config = walk.stack.config()
    del config["namespaces"][LEGACY_BOUND]
    walk.stack.write_config(config)
    walk.stack.up()
    labels = namespace_labels(api, LEGACY_BOUND)
    assert labels.get("istio-injection") == "enabled" and "istio.io/rev" not in labels, labels
    assert all_pods(api) == before
    new_pods = scale_up_and_get_new_pods(api, LEGACY_BOUND, "shop", 2, before[LEGACY_BOUND])
    assert list(new_pods.values()) == [NEW], "unbound, its new pods follow the default tag again"
    walk.check_converged()


def old_revision_in_state(stack: MeshStack) -> list[str]:
    return sorted(r["urn"] for r in stack.resources() if f"istiod-{OLD}" in r["urn"] or f"{OLD}-drain" in r["urn"])


def test_5_dropping_the_old_revision_while_pods_run_it_is_refused(walk: Walk) -> None:
    api = walk.api
    in_state = old_revision_in_state(walk.stack)
    assert len(in_state) > 10, in_state
    config = walk.stack.config()
    config["revisions"] = {NEW: config["revisions"][NEW]}
    walk.stack.write_config(config)
    review = walk.stack.review()
    assert review.returncode == 0, review.stdout + review.stderr
    assert f"removing `{OLD}`: up will refuse" in review.stdout and "team-c" in review.stdout, review.stdout
    # status (of what is deployed) says the same: it cannot be dropped, and names the same pods.
    old = checked_status(walk)[OLD]
    assert not old["can_drop"] and old["why"].endswith(": up would refuse to remove it"), old
    assert set(old["pods"]) == {"team-c", LEGACY} and old["why"].split(":")[0] in review.stdout, (old, review.stdout)
    with pytest.raises(auto.CommandError) as refused:
        walk.stack.up()
    message = str(refused.value)
    assert OLD in message and "team-c" in message and LEGACY in message, message[-3000:]
    assert all(revision_objects(api, OLD).values()), "a refused removal deletes nothing of the revision"
    assert old_revision_in_state(walk.stack) == in_state


def test_6_once_drained_the_old_revision_goes_and_leaves_no_dangling_webhook(walk: Walk) -> None:
    api = walk.api
    restart_deployments(api, "team-c")
    restart_deployments(api, LEGACY)
    before = all_pods(api)
    assert {rev for ns in WATCHED for rev in before[ns].values()} == {NEW}
    old = checked_status(walk)[OLD]
    assert (old["pods"], old["can_drop"], old["why"]) == ({}, True, "no pod runs it and nothing points at it"), old
    walk.stack.up()
    assert not any(revision_objects(api, OLD).values())
    assert dangling_webhooks(api) == []
    assert all_pods(api) == before
    assert list(checked_status(walk)) == [NEW]
    walk.check_converged()


def test_7_rollback_to_the_canary_config_converges(walk: Walk) -> None:
    api = walk.api
    before = all_pods(api)
    walk.stack.write_config(canary_config(walk.tools))
    review = mesh_json(walk.stack.review("--json"))
    assert f"revision `{OLD}` added at 1.30.0" in review["control_plane"], review
    walk.stack.up()
    assert planned_restarts(review) == recreated(before, all_pods(api)) == {
        ns: len(before[ns]) for ns in ("team-a", "team-b", LEGACY_BOUND, GATEWAY_NS)}, review
    assert all(revision_objects(api, OLD).values())
    for tag in ("default", "stable"):
        assert called_services(webhook(api, f"istio-revision-tag-{tag}")) == {f"istiod-{OLD}"}
    pods = all_pods(api)
    assert set(pods["team-a"].values()) == {OLD} and set(pods["team-b"].values()) == {OLD}
    assert walk.stack.outputs()["namespaces"] == {"team-a": OLD, "team-b": OLD, "team-c": OLD, LEGACY_BOUND: OLD}
    assert set(pods[LEGACY_BOUND].values()) == {OLD}
    labels = namespace_labels(api, LEGACY_BOUND)
    assert labels["istio.io/rev"] == "stable" and "istio-injection" not in labels, "bound again: removed again"
    assert dangling_webhooks(api) == []
    status = checked_status(walk)
    assert set(status[OLD]["pods"]) == {"team-a", "team-b", LEGACY_BOUND, GATEWAY_NS}
    assert set(status[NEW]["pods"]) == {"team-c", LEGACY} and not status[NEW]["can_drop"]
    walk.check_converged()


def managed_resources(stack: MeshStack) -> dict[str, Any]:
    """Inputs and outputs of every resource in the cluster: components, the stack's outputs and the
    providers' copy of the stack config are re-recorded by any run that gets that far, failed or not."""
    return {r["urn"]: (r.get("inputs"), r.get("outputs")) for r in stack.resources()
            if r["custom"] and not r["type"].startswith("pulumi:providers:")}


def test_8_an_in_place_jump_of_two_minors_is_refused_before_anything_changes(walk: Walk) -> None:
    before = managed_resources(walk.stack)
    walk.stack.set_path(f"revisions.{OLD}.version", "1.32.0")
    try:
        with pytest.raises(auto.CommandError) as refused:
            walk.stack.preview_changes()
        assert f"istio-mesh:revisions.{OLD}.version: changes revision {OLD} in place from 1.30.0 to 1.32.0" \
            in str(refused.value)
        with pytest.raises(auto.CommandError):
            walk.stack.up()
        assert managed_resources(walk.stack) == before
    finally:
        walk.stack.set_path(f"revisions.{OLD}.version", "1.30.0")
    walk.check_converged()
