"""The NamespaceLabels provider against a real kube-apiserver (no Pulumi engine): the methods the engine calls,
in-process, on real namespaces. Server-side apply's field ownership, JSON-patch tests, dry runs and admission
policies are the API server's own; the engine's side (deletes of earlier versions' resources, the preview) is
in test_bindings_migration.py and test_upgrade.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client as k8s
from pulumi.dynamic import Config, ConfigureRequest

from harness.control_plane import KubeCluster, wait_for
from mesh.kube import KUBECONFIG_KEY
from mesh.namespace_labels import FIELD_MANAGER, REMOVED_LEGACY_ANNOTATION, label_apply
from mesh.providers.legacy_label import LegacyInjectionLabelProvider
from mesh.providers.namespace_labels import NamespaceLabelsProvider
from tests.e2e.cluster_objects import label_by_hand, new_namespace

pytestmark = pytest.mark.e2e

EARLIER_MANAGER = "istio-mesh"
"""The field manager of the earlier versions' per-namespace NamespacePatch."""


@pytest.fixture(scope="module")
def api(kube_cluster: KubeCluster) -> k8s.ApiClient:
    return kube_cluster.api()


@pytest.fixture()
def provider(kube_cluster: KubeCluster) -> NamespaceLabelsProvider:
    p = NamespaceLabelsProvider()
    p.configure(ConfigureRequest(Config({KUBECONFIG_KEY: str(kube_cluster.kubeconfig)}, "istio-mesh")))
    return p


def read(api: k8s.ApiClient, ns: str) -> dict[str, Any]:
    return json.loads(k8s.CoreV1Api(api).read_namespace(ns, _preload_content=False).data)["metadata"]


def labels(api: k8s.ApiClient, ns: str) -> dict[str, str]:
    return read(api, ns).get("labels") or {}


def annotations(api: k8s.ApiClient, ns: str) -> dict[str, str]:
    return read(api, ns).get("annotations") or {}


def managers(api: k8s.ApiClient, ns: str) -> set[str]:
    """Field managers that own `istio.io/rev`."""
    return {m["manager"] for m in read(api, ns).get("managedFields") or []
            if "f:istio.io/rev" in ((m.get("fieldsV1") or {}).get("f:metadata") or {}).get("f:labels", {})}


def checked(provider: NamespaceLabelsProvider, bound: dict[str, str], created: list[str] | None = None) -> Any:
    return provider.check({}, {"namespaces": bound, "created": created or [], "drift": None})


def test_binding_sets_the_label_removes_the_legacy_one_and_unbinding_gives_both_back(
    api: k8s.ApiClient, provider: NamespaceLabelsProvider,
) -> None:
    plain, legacy = new_namespace(api, {"team": "x"}), new_namespace(api)
    label_by_hand(api, legacy, {"istio-injection": "enabled"})  # kubectl's, which server-side apply never removes
    bound = {plain: "stable", legacy: "stable"}
    news = checked(provider, bound)
    assert news.failures == [] and news.inputs["drift"][legacy].startswith("istio.io/rev is unset")
    outs = provider.create(news.inputs).outs
    assert outs == {"namespaces": bound, "created": [], "drift": {}}
    assert labels(api, plain) == {"team": "x", "istio.io/rev": "stable", "kubernetes.io/metadata.name": plain}
    assert labels(api, legacy).get("istio.io/rev") == "stable" and "istio-injection" not in labels(api, legacy)
    assert annotations(api, legacy)[REMOVED_LEGACY_ANNOTATION] == "enabled"
    assert managers(api, plain) == {FIELD_MANAGER}
    again = checked(provider, bound)
    assert again.inputs["drift"] == {} and not provider.diff("id", outs, again.inputs).changes

    outs = provider.update("id", outs, checked(provider, {plain: "stable"}).inputs).outs
    assert labels(api, legacy).get("istio-injection") == "enabled", "given back on unbinding"
    assert "istio.io/rev" not in labels(api, legacy) and REMOVED_LEGACY_ANNOTATION not in annotations(api, legacy)
    provider.delete("id", outs)
    assert "istio.io/rev" not in labels(api, plain) and labels(api, plain)["team"] == "x", "the namespace stays"


def test_a_label_set_again_by_hand_is_drift_and_the_next_update_puts_it_right(
    api: k8s.ApiClient, provider: NamespaceLabelsProvider,
) -> None:
    a, b, c = new_namespace(api), new_namespace(api), new_namespace(api)
    bound = {a: "stable", b: "stable", c: "stable"}
    outs = provider.create(checked(provider, bound).inputs).outs
    untouched = read(api, c)["resourceVersion"]
    label_by_hand(api, a, {"istio.io/rev": "other"})
    label_by_hand(api, b, {"istio-injection": "disabled"})
    news = checked(provider, bound).inputs
    assert news["drift"] == {a: "istio.io/rev is other, not stable",
                             b: "istio-injection=disabled is set (it beats istio.io/rev)"}
    assert provider.diff("id", outs, news).changes, "a hand edit shows as a change without a refresh"
    outs = provider.update("id", outs, news).outs
    assert labels(api, a)["istio.io/rev"] == "stable" and managers(api, a) == {FIELD_MANAGER}
    assert "istio-injection" not in labels(api, b) and annotations(api, b)[REMOVED_LEGACY_ANNOTATION] == "disabled"
    assert read(api, c)["resourceVersion"] == untouched, "a namespace that is right is not patched"
    provider.delete("id", outs)
    assert labels(api, b)["istio-injection"] == "disabled"


def test_moving_one_of_many_patches_only_that_one(api: k8s.ApiClient, provider: NamespaceLabelsProvider) -> None:
    names = [new_namespace(api) for _ in range(12)]
    bound = dict.fromkeys(names, "stable")
    outs = provider.create(checked(provider, bound).inputs).outs
    versions = {ns: read(api, ns)["resourceVersion"] for ns in names}
    moved = {**bound, names[3]: "canary"}
    news = checked(provider, moved).inputs
    assert news["drift"] == {names[3]: "istio.io/rev is stable, not canary"}
    outs = provider.update("id", outs, news).outs
    assert labels(api, names[3])["istio.io/rev"] == "canary"
    assert {ns: read(api, ns)["resourceVersion"] for ns in names if ns != names[3]} == {
        ns: v for ns, v in versions.items() if ns != names[3]}
    provider.delete("id", outs)


def test_a_bound_namespace_that_does_not_exist_is_refused_unless_the_program_creates_it(
    provider: NamespaceLabelsProvider,
) -> None:
    failures = checked(provider, {"nowhere-ns": "stable"}).failures
    assert [f.reason for f in failures] == [
        "istio-mesh:namespaces.nowhere-ns: namespace nowhere-ns does not exist in the cluster; the program never "
        "creates or deletes a namespace it binds: create it first, or remove the binding"]
    assert checked(provider, {"nowhere-ns": "stable"}, created=["nowhere-ns"]).failures == []


@pytest.fixture()
def guarded(api: k8s.ApiClient) -> Iterator[str]:
    """A namespace whose istio-injection label an admission policy forbids removing."""
    adm = k8s.AdmissionregistrationV1Api(api)
    ns = new_namespace(api, {"guarded": "true", "istio-injection": "enabled"})
    name = f"keep-injection-{ns}"
    adm.create_validating_admission_policy({
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["UPDATE"],
                                   "resources": ["namespaces"]}],
                "objectSelector": {"matchLabels": {"guarded": "true"}},
            },
            "validations": [{"expression": "has(object.metadata.labels) && 'istio-injection' in object.metadata.labels",
                             "message": "istio-injection must stay"}],
        },
    })
    adm.create_validating_admission_policy_binding({
        "metadata": {"name": name},
        "spec": {"policyName": name, "validationActions": ["Deny"]},
    })
    try:
        yield ns
    finally:
        adm.delete_validating_admission_policy_binding(name)
        adm.delete_validating_admission_policy(name)


def test_a_legacy_label_the_api_server_will_not_let_go_is_refused_at_check(
    api: k8s.ApiClient, provider: NamespaceLabelsProvider, guarded: str,
) -> None:
    def refused() -> list[str]:
        return [f.reason for f in checked(provider, {guarded: "stable"}).failures]

    wait_for("the admission policy to take effect", lambda: bool(refused()), timeout=60)
    [reason] = refused()
    assert reason.startswith(f"istio-mesh:namespaces.{guarded}: namespace {guarded} carries istio-injection=enabled")
    assert "istio-injection must stay" in reason and "preview again" in reason
    assert labels(api, guarded)["istio-injection"] == "enabled", "a dry run changed nothing"
    assert "istio.io/rev" not in labels(api, guarded)


def test_taking_over_from_an_earlier_versions_patch_and_guard_keeps_the_label_and_the_removed_value(
    api: k8s.ApiClient, provider: NamespaceLabelsProvider, kube_cluster: KubeCluster,
) -> None:
    """The order of an upgrading `up`: the stack-wide resource is created, then the earlier per-namespace
    patch gives its fields up (the Kubernetes provider's delete of a Patch applies nothing under its manager)
    and the earlier guard is deleted with the value it removed."""
    core = k8s.CoreV1Api(api)
    ns = new_namespace(api)
    core.patch_namespace(ns, label_apply(ns, "stable"), field_manager=EARLIER_MANAGER, force=True,
                         _content_type="application/apply-patch+yaml")  # the earlier NamespacePatch
    outs = provider.create(checked(provider, {ns: "stable"}).inputs).outs
    assert managers(api, ns) == {EARLIER_MANAGER, FIELD_MANAGER}, "both own the same value"
    core.patch_namespace(ns, label_apply(ns, None), field_manager=EARLIER_MANAGER, force=True,
                         _content_type="application/apply-patch+yaml")
    assert labels(api, ns)["istio.io/rev"] == "stable", "still bound: the label stays"
    guard = LegacyInjectionLabelProvider()
    guard.configure(ConfigureRequest(Config({KUBECONFIG_KEY: str(kube_cluster.kubeconfig)}, "istio-mesh")))
    guard.delete(ns, {"namespace": ns, "previous": "enabled"})
    assert annotations(api, ns)[REMOVED_LEGACY_ANNOTATION] == "enabled" and "istio-injection" not in labels(api, ns)
    provider.delete("id", outs)
    assert labels(api, ns).get("istio-injection") == "enabled", "unbinding later gives back what the guard removed"
    assert "istio.io/rev" not in labels(api, ns)


def test_an_earlier_guard_of_a_namespace_unbound_in_the_same_up_gives_its_value_back(
    api: k8s.ApiClient, kube_cluster: KubeCluster,
) -> None:
    ns = new_namespace(api)
    guard = LegacyInjectionLabelProvider()
    guard.configure(ConfigureRequest(Config({KUBECONFIG_KEY: str(kube_cluster.kubeconfig)}, "istio-mesh")))
    guard.delete(ns, {"namespace": ns, "previous": "disabled"})
    assert labels(api, ns)["istio-injection"] == "disabled"
    guard.delete("gone", {"namespace": "no-such-namespace-here", "previous": "enabled"})  # nothing to give back
