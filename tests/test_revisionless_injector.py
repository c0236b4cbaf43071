"""Taking over from a revisionless install: its injector deactivated while the default tag exists, restorable."""

from __future__ import annotations

import copy
import json

from mesh.drain import pods_using
from mesh.istio_vocabulary import REVISIONLESS
from mesh.revision_tag_webhook import previous_tag_webhook, tag_service, tag_webhook
from mesh.revisionless_injector import (
    NEVER_MATCH,
    ORIGINAL_SELECTORS,
    TagRollback,
    deactivated,
    is_deactivated,
    restored,
    revisionless_pods,
    tag_rollback,
    tag_service_rollback,
    whole_numbers,
)
from mesh.workloads import pod_from_object

LEGACY_NS = {"matchExpressions": [{"key": "istio-injection", "operator": "In", "values": ["enabled"]}]}
NOT_OPTED_OUT = {"matchExpressions": [{"key": "sidecar.istio.io/inject", "operator": "NotIn", "values": ["false"]}]}


def old_injector() -> dict:
    return {
        "metadata": {"name": "istio-sidecar-injector", "resourceVersion": "42", "labels": {"istio.io/rev": "default"}},
        "webhooks": [
            {"name": "namespace.sidecar-injector.istio.io", "namespaceSelector": LEGACY_NS,
             "objectSelector": NOT_OPTED_OUT, "clientConfig": {"service": {"name": "istiod"}}},
            {"name": "object.sidecar-injector.istio.io", "objectSelector": NOT_OPTED_OUT,
             "clientConfig": {"service": {"name": "istiod"}}},
        ],
    }


def test_deactivation_selects_nothing_and_keeps_the_originals_on_the_object() -> None:
    hook = old_injector()
    off = deactivated(hook)
    assert is_deactivated(off) and not is_deactivated(hook)
    assert hook == old_injector(), "the input is not modified"
    for w in off["webhooks"]:
        assert w["namespaceSelector"] == w["objectSelector"] == {"matchLabels": {"istio.io/deactivated": "never-match"}}
    assert off["metadata"]["resourceVersion"] == "42", "a replace must carry what was read"
    kept = json.loads(off["metadata"]["annotations"][ORIGINAL_SELECTORS])
    assert kept["namespace.sidecar-injector.istio.io"]["namespaceSelector"] == LEGACY_NS


def test_restoring_gives_back_exactly_what_the_install_had() -> None:
    back = restored(deactivated(old_injector()))
    assert back is not None
    assert back["webhooks"] == old_injector()["webhooks"]
    assert ORIGINAL_SELECTORS not in back["metadata"]["annotations"]
    assert restored(old_injector()) is None, "never deactivated: nothing to restore"


def test_deactivating_twice_keeps_the_first_originals() -> None:
    off = deactivated(old_injector())
    again = deactivated(off)
    assert again["metadata"]["annotations"][ORIGINAL_SELECTORS] == off["metadata"]["annotations"][ORIGINAL_SELECTORS]
    assert restored(again)["webhooks"] == old_injector()["webhooks"]


def test_an_entry_added_by_an_upgrade_of_the_old_install_is_left_as_it_is_on_restore() -> None:
    off = deactivated(old_injector())
    off["webhooks"].append({"name": "auto.sidecar-injector.istio.io", "objectSelector": NOT_OPTED_OUT})
    assert not is_deactivated(off), "re-activated by an upgrade: drift the next up fixes"
    back = restored(off)
    assert back["webhooks"][2] == {"name": "auto.sidecar-injector.istio.io", "objectSelector": NOT_OPTED_OUT}


def test_pods_of_the_revisionless_istiod_are_counted_with_the_drain_guards_rule() -> None:
    pods = [
        {"metadata": {"namespace": "shop", "name": f"p{i}", "annotations": {"istio.io/rev": REVISIONLESS}}}
        for i in range(3)
    ] + [{"metadata": {"namespace": "shop", "name": "new", "annotations": {"istio.io/rev": "1-30-0"}}}]
    users = pods_using([pod_from_object(p) for p in pods], REVISIONLESS)
    assert users == {"shop": ["p0", "p1", "p2"]}
    assert revisionless_pods({"shop": 3}) == (
        "3 pod(s) still run the revisionless istiod, in shop (3): bind or restart them before uninstalling it")
    assert revisionless_pods({}).startswith("no pod runs the revisionless istiod")


ISTIOCTL_NEVER = {"matchLabels": {"istio.io/deactivated": "never-match"}}
"""istioctl's own never-match (`istioctl/pkg/util/common.go`), which `istioctl x check-inject` recognises."""


def istioctl_deactivated() -> dict:
    """`istio-sidecar-injector` as a revisionless `istioctl install` leaves it: both selectors never-match."""
    hook = old_injector()
    for w in hook["webhooks"]:
        w["namespaceSelector"] = copy.deepcopy(ISTIOCTL_NEVER)
        w["objectSelector"] = copy.deepcopy(ISTIOCTL_NEVER)
    return hook


def test_istioctls_never_match_counts_as_deactivated_and_is_never_kept_as_original() -> None:
    hook = istioctl_deactivated()
    assert is_deactivated(hook)
    assert deactivated(hook) == hook, "nothing to switch off, nothing kept"
    assert restored(deactivated(hook)) is None, "a rollback leaves it exactly as istioctl did"


def test_the_takeovers_own_never_match_is_istioctls_selector() -> None:
    for w in deactivated(old_injector())["webhooks"]:
        assert w["namespaceSelector"] == ISTIOCTL_NEVER and w["objectSelector"] == ISTIOCTL_NEVER


def test_an_entry_istioctl_switched_off_is_not_kept_and_stays_off_on_restore() -> None:
    hook = old_injector()
    hook["webhooks"][1]["namespaceSelector"] = copy.deepcopy(ISTIOCTL_NEVER)
    hook["webhooks"][1]["objectSelector"] = copy.deepcopy(ISTIOCTL_NEVER)
    off = deactivated(hook)
    assert is_deactivated(off)
    assert list(json.loads(off["metadata"]["annotations"][ORIGINAL_SELECTORS])) == [
        "namespace.sidecar-injector.istio.io"]
    assert restored(off)["webhooks"] == hook["webhooks"]


def test_an_earlier_releases_never_match_still_counts_as_deactivated() -> None:
    earlier = {"matchExpressions": [{"key": "istio-mesh.dev/deactivated", "operator": "In", "values": ["never-match"]}]}
    hook = old_injector()
    kept = {w["name"]: {"namespaceSelector": w.get("namespaceSelector"), "objectSelector": w.get("objectSelector")}
            for w in hook["webhooks"]}
    hook["metadata"]["annotations"] = {ORIGINAL_SELECTORS: json.dumps(kept)}
    for w in hook["webhooks"]:
        w["namespaceSelector"] = copy.deepcopy(earlier)
        w["objectSelector"] = copy.deepcopy(earlier)
    assert is_deactivated(hook)
    assert restored(hook)["webhooks"] == old_injector()["webhooks"]


def istioctl_default_tag(service: str = "istiod", rev: str = "default") -> dict:
    """`istio-revision-tag-default` as `istioctl install` (service `istiod`) or `istioctl tag set default`
    (service `istiod-<rev>`) leaves it, as read back from the API server."""
    return {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": {
            "name": "istio-revision-tag-default", "uid": "u-1", "resourceVersion": "7", "generation": 1,
            "creationTimestamp": "2026-12-01T00:00:00Z",
            "labels": {"istio.io/rev": rev, "istio.io/tag": "default", "app": "sidecar-injector"},
            "managedFields": [{"manager": "istio-operator", "operation": "Apply"}],
        },
        "webhooks": [{"name": "namespace.sidecar-injector.istio.io", "namespaceSelector": LEGACY_NS,
                      "clientConfig": {"service": {"name": service, "namespace": "istio-system"}}}],
    }


def _without_server_metadata(hook: dict) -> dict:
    server_owned = ("uid", "resourceVersion", "generation", "creationTimestamp", "managedFields")
    return {**hook, "metadata": {k: v for k, v in hook["metadata"].items() if k not in server_owned}}


def ours_now(resource_version: str = "9") -> dict:
    hook = tag_webhook("default", "1-31-0", {})
    hook["metadata"].update(uid="u-1", resourceVersion=resource_version)
    return hook


def test_a_default_tag_found_before_the_takeover_is_kept_without_what_the_api_server_owns() -> None:
    kept = previous_tag_webhook(istioctl_default_tag())
    assert kept is not None
    assert set(kept["metadata"]) == {"name", "labels"}
    assert kept["webhooks"] == istioctl_default_tag()["webhooks"]
    assert previous_tag_webhook(None) is None
    assert previous_tag_webhook(ours_now()) is None, "the program's own webhook is never what came before"


def test_removing_the_default_tag_puts_back_exactly_the_webhook_found_before() -> None:
    for before in (istioctl_default_tag(), istioctl_default_tag("istiod-1-30-0", "1-30-0")):
        step = tag_rollback(previous_tag_webhook(before), ours_now("9"), istioctl_deactivated())
        assert step.action == "replace" and step.refusal is None
        assert step.body["metadata"]["resourceVersion"] == "9", "replaces what was read, or fails"
        assert _without_server_metadata(step.body) == _without_server_metadata(before)
    gone = tag_rollback(previous_tag_webhook(istioctl_default_tag()), None, None)
    assert gone.action == "create" and "resourceVersion" not in gone.body["metadata"]


def test_without_a_default_tag_before_the_programs_own_is_deleted() -> None:
    assert tag_rollback(None, ours_now(), old_injector()) == TagRollback("delete"), "its selectors given back"
    assert tag_rollback(None, ours_now(), None) == TagRollback("delete"), "a cluster that never had Istio"
    assert tag_rollback(None, None, None) == TagRollback("leave")
    assert tag_rollback(None, istioctl_default_tag(), None) == TagRollback("leave"), "made since by someone else"


def test_removing_the_default_tag_is_refused_when_no_webhook_would_inject_legacy_namespaces() -> None:
    step = tag_rollback(None, ours_now(), istioctl_deactivated())
    assert step.action == "leave"
    assert "istio-mesh:tags.default" in step.refusal and "istio-injection=enabled" in step.refusal
    assert "istioctl tag set default" in step.refusal


def istioctl_tag_service(revision: str = "default") -> dict:
    """`istiod-revision-tag-default` as `istioctl install` leaves it (a live read)."""
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "istiod-revision-tag-default", "namespace": "istio-system", "uid": "s-1",
                         "resourceVersion": "4", "managedFields": [{"manager": "istio-operator"}],
                         "labels": {"istio.io/rev": revision, "istio.io/tag": "default", "app": "istiod"}},
            "spec": {"clusterIP": "10.96.0.40", "clusterIPs": ["10.96.0.40"],
                     "selector": {"app": "istiod", "istio.io/rev": revision},
                     "ports": [{"name": "https-webhook", "port": 443, "targetPort": 15017}]}}


def test_removing_the_default_tag_puts_back_the_tag_service_found_before() -> None:
    """istioctl makes the default tag's Service too (seen with the real istioctl: the program's apply conflicted
    with `istio-operator` on it before it was taken over like the webhook)."""
    kept = previous_tag_webhook(istioctl_tag_service())
    ours = tag_service("default", "1-31-0", "1.31.0")
    assert ours is not None
    ours["metadata"].update(resourceVersion="12", uid="s-1")
    step = tag_service_rollback(kept, ours)
    assert step.action == "replace" and step.body["metadata"]["resourceVersion"] == "12"
    assert _without_server_metadata(step.body) == _without_server_metadata(istioctl_tag_service())
    gone = tag_service_rollback(kept, None)
    assert gone.action == "create" and "clusterIP" not in gone.body["spec"] and "clusterIPs" not in gone.body["spec"]
    assert tag_service_rollback(None, ours) == TagRollback("delete")
    assert tag_service_rollback(None, istioctl_tag_service()) == TagRollback("leave"), "someone else's"
    assert tag_service_rollback(None, None) == TagRollback("leave")


def test_numbers_kept_in_the_state_are_given_back_as_integers() -> None:
    """Seen with the real engine: the kept webhook came back from the state with `port: 443.0` and
    `timeoutSeconds: 10.0`, and the Kubernetes client refused the replace. The rollback sends integers."""
    from_state = {**istioctl_default_tag(), "webhooks": [
        {**w, "timeoutSeconds": 10.0, "clientConfig": {"service": {"name": "istiod", "port": 443.0}}}
        for w in istioctl_default_tag()["webhooks"]]}
    step = tag_rollback(previous_tag_webhook(from_state), ours_now(), istioctl_deactivated())
    assert {(type(w["timeoutSeconds"]), type(w["clientConfig"]["service"]["port"])) for w in step.body["webhooks"]} \
        == {(int, int)}
    service = {**istioctl_tag_service(), "spec": {**istioctl_tag_service()["spec"], "ports": [{"port": 443.0}]}}
    assert tag_service_rollback(previous_tag_webhook(service), None).body["spec"]["ports"] == [{"port": 443}]
    assert whole_numbers({"a": [1.5, 2.0], "b": "3"}) == {"a": [1.5, 2], "b": "3"}


def test_a_helm_upgrade_of_the_switched_off_injector_leaves_it_switched_off() -> None:
    """Seen with real Helm 3.18 on the local cluster: `helm upgrade istiod --reuse-values` puts the chart's
    `matchExpressions` back but keeps the never-match `matchLabels` it never owned, so each selector requires
    both and the entry still matches nothing. Before, the takeover took that for an active injector and would
    have kept the merged selectors (never-match included) as the originals."""
    taken_over = deactivated(old_injector())
    upgraded = copy.deepcopy(taken_over)
    for entry, chart in zip(upgraded["webhooks"], old_injector()["webhooks"], strict=True):
        for key in ("namespaceSelector", "objectSelector"):
            entry[key] = {**chart.get(key, {}), **NEVER_MATCH}
    assert is_deactivated(upgraded)
    assert deactivated(upgraded) == upgraded, "nothing to change, and the originals kept stay as they were"
    back = restored(upgraded)
    assert back is not None and back["webhooks"] == old_injector()["webhooks"]
