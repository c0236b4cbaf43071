"""`mesh status` (pure): pods per revision per namespace, pods on no managed revision, and whether each
revision can be dropped, by the drain guard's own decision."""

from __future__ import annotations

from typing import Any

from mesh.drain import pods_using, template_from_object
from mesh.review import Deployed
from mesh.status import installed_revisions, revisions_in_state, status
from mesh.webhook_overlap import revision_webhook
from mesh.workloads import pod_from_object

OLD_PROXY, NEW_PROXY = "docker.io/istio/proxyv2:1.30.0", "docker.io/istio/proxyv2:1.31.0"
DEPLOYED = Deployed.from_outputs({
    "revisions": {"1-30-0": {"version": "1.30.0", "proxy": OLD_PROXY},
                  "1-31-0": {"version": "1.31.0", "proxy": NEW_PROXY}},
    "tags": {"default": "1-31-0", "stable": "1-31-0", "canary": "1-31-0"},
    "namespaces": {"team-a": "1-31-0", "team-c": "1-31-0", "fresh": "1-31-0"},
    "gateways": {"ingress": {"namespace": "istio-ingress", "revision": "1-31-0"}},
})


def pod(ns: str, name: str, rev: str | None = None, image: str | None = None, *, label: str | None = None,
        phase: str = "Running", opted_out: bool = False) -> dict[str, Any]:
    containers = [{"name": "app", "image": "app:1"}]
    if image:
        containers.append({"name": "istio-proxy", "image": image})
    labels = {**({"istio.io/rev": label} if label else {}),
              **({"sidecar.istio.io/inject": "false"} if opted_out else {})}
    return {"metadata": {"namespace": ns, "name": name, "labels": labels,
                         "annotations": {"istio.io/rev": rev} if rev else {}},
            "spec": {"containers": containers}, "status": {"phase": phase}}


PODS = [
    pod("team-a", "web-1", "1-31-0", NEW_PROXY),
    pod("team-a", "web-2", "1-31-0", NEW_PROXY),
    pod("team-c", "batch-1", "1-30-0", OLD_PROXY),
    pod("team-c", "batch-2", "1-31-0", NEW_PROXY),
    pod("team-c", "done", "1-30-0", OLD_PROXY, phase="Succeeded"),
    pod("legacy", "old-app", "1-30-0", OLD_PROXY),
    pod("istio-ingress", "ingress-1", None, None, label="1-30-0"),
    pod("old-install", "svc-1", "default", "docker.io/istio/proxyv2:1.29.0"),
    pod("fresh", "adopted", None, None),
    pod("fresh", "opted-out", None, None, opted_out=True),
    pod("kube-system", "dns", None, None),
]


def test_pods_per_revision_per_namespace_with_their_proxies() -> None:
    s = status("dev", DEPLOYED, PODS)
    old, new = s.revisions
    assert (old.name, old.tags, old.bound) == ("1-30-0", [], [])
    assert {ns: p.pods for ns, p in old.pods.items()} == {"istio-ingress": 1, "legacy": 1, "team-c": 1}
    assert old.pods["team-c"].proxies == {"1.30.0": 1} and old.pods["istio-ingress"].proxies == {"none": 1}
    assert (new.tags, new.bound, new.gateways) == (["canary", "default", "stable"], ["fresh", "team-a", "team-c"],
                                                   ["ingress"])
    assert {ns: (p.pods, p.stale) for ns, p in new.pods.items()} == {"team-a": (2, 0), "team-c": (1, 0)}


def test_a_pod_on_its_revision_with_an_older_proxy_counts_as_stale() -> None:
    s = status("dev", DEPLOYED, [pod("team-a", "web-1", "1-31-0", "docker.io/istio/proxyv2:1.30.9")])
    assert s.revisions[1].pods["team-a"].stale == 1
    assert "`team-a`: 1 pods (proxy 1.30.9: 1), 1 on an older proxy" in s.markdown()


def test_can_be_dropped_is_the_drain_guards_decision() -> None:
    s = status("dev", DEPLOYED, PODS)
    old, new = s.revisions
    users = [pod_from_object(p) for p in PODS]
    assert old.can_drop is (not pods_using(users, "1-30-0")) is False
    assert old.why == "3 pods still run it (istio-ingress (1), legacy (1), team-c (1)): up would refuse to remove it"
    assert new.can_drop is False
    drained = status("dev", DEPLOYED, [p for p in PODS if p["metadata"]["annotations"].get("istio.io/rev") != "1-30-0"
                                       and p["metadata"]["name"] != "ingress-1"])
    assert drained.revisions[0].can_drop and drained.revisions[0].why == "no pod runs it and nothing points at it"
    assert "- `1-30-0`: 1.30.0; bound: none\n  - no pods\n  - can be dropped: yes" in drained.markdown()


def test_a_drained_revision_still_named_by_the_config_says_what_to_move_first() -> None:
    only_new = status("dev", DEPLOYED, [])
    assert only_new.revisions[1].can_drop
    assert only_new.revisions[1].why == ("no pod runs it; first point tag `canary`, tag `default`, tag `stable`, "
                                         "namespace `fresh`, namespace `team-a`, namespace `team-c`, "
                                         "gateway `ingress` elsewhere")


def test_pods_on_no_managed_revision_and_uninjected_pods_of_bound_namespaces() -> None:
    s = status("dev", DEPLOYED, PODS)
    assert s.unmanaged == {"fresh": {"(not injected)": 1}, "old-install": {"default": 1}}
    md = s.markdown()
    assert "- `fresh`: 1 pods not injected" in md and "- `old-install`: 1 pods on `default`" in md


def test_without_the_cluster_nothing_is_said_to_be_droppable() -> None:
    s = status("dev", DEPLOYED, None, "no kubeconfig")
    assert not any(r.can_drop for r in s.revisions)
    md = s.markdown()
    assert "cluster part skipped: no kubeconfig" in md and "can be dropped: no, unknown" in md
    assert s.to_json()["cluster_note"] == "no kubeconfig"


def test_a_stack_never_deployed_says_so() -> None:
    s = status("dev", Deployed(), [pod("x", "p", "default", OLD_PROXY)], state_note="no deployed state")
    assert "- none deployed (no deployed state)" in s.markdown() and s.unmanaged == {"x": {"default": 1}}


def test_a_revision_whose_removal_was_refused_is_read_from_the_cluster() -> None:
    """The refused run exported outputs without it; its webhook is still installed, and so are its pods."""
    hook = revision_webhook("1-30-0")
    hook["metadata"]["labels"] = {"istio.io/rev": "1-30-0", "app.kubernetes.io/version": "1.30.0"}
    foreign = {"metadata": {"name": "other-injector", "labels": {"istio.io/rev": "x"}}}
    installed = installed_revisions({"istio-sidecar-injector-1-30-0": hook, "other-injector": foreign})
    assert installed == {"1-30-0": "1.30.0"}
    after_refusal = Deployed.from_outputs({"revisions": {"1-31-0": {"version": "1.31.0", "proxy": NEW_PROXY}}})
    s = status("dev", after_refusal, PODS, installed=installed)
    old = s.revisions[0]
    assert (old.name, old.in_stack, old.can_drop, set(old.pods)) == ("1-30-0", False, False,
                                                                      {"istio-ingress", "legacy", "team-c"})
    assert "old-install" in s.unmanaged and "legacy" not in s.unmanaged
    assert "- `1-30-0`: 1.30.0; installed, not in the stack's last outputs" in s.markdown()


def test_a_revision_still_selected_by_labels_cannot_be_dropped() -> None:
    """No pod runs 1-30-0, but a namespace and a CronJob's template still select it: the guard would refuse."""
    drained = [p for p in PODS if p["metadata"]["annotations"].get("istio.io/rev") != "1-30-0"
               and p["metadata"]["name"] != "ingress-1"]
    cron = template_from_object("CronJob", {"metadata": {"namespace": "plain", "name": "nightly"}, "spec": {
        "jobTemplate": {"spec": {"template": {"metadata": {"labels": {"istio.io/rev": "1-30-0"}}}}}}})
    s = status("dev", DEPLOYED, drained, namespace_labels={"batch": {"istio.io/rev": "1-30-0"}}, templates=[cron])
    old = s.revisions[0]
    assert old.can_drop is False
    assert old.why == ("no pod runs it, but namespace `batch` (istio.io/rev=1-30-0) and pod template "
                       "`plain/CronJob/nightly` still select it: up would refuse to remove it")
    assert status("dev", DEPLOYED, drained, namespace_labels={}, templates=[]).revisions[0].can_drop


def test_pods_no_restart_moves_are_told_apart_with_the_reason() -> None:
    """Uninjected pods the bound revision's istiod would not inject, and a proxy the template pins, are not
    pods waiting to move."""
    never = {"policy": "enabled", "never": [{"matchLabels": {"app": "batch"}}], "always": [],
             "root_namespace": "istio-system"}
    deployed = Deployed.from_outputs({
        "revisions": {"1-31-0": {"version": "1.31.0", "proxy": NEW_PROXY, "injector": never}},
        "namespaces": {"fresh": "1-31-0"},
    })
    batch = pod("fresh", "batch-1")
    batch["metadata"]["labels"] = {"app": "batch"}
    pinned = pod("fresh", "own-proxy", "1-31-0", "registry.example/own/proxyv2:7")
    pinned["metadata"]["annotations"]["proxy.istio.io/overrides"] = (
        '{"containers": [{"name": "istio-proxy", "image": "registry.example/own/proxyv2:7"}]}')
    s = status("dev", deployed, [batch, pod("fresh", "adopted"), pinned])
    assert s.unmanaged == {"fresh": {"(not injected)": 1}}
    assert s.left_alone == {"fresh": {
        "not injected by 1-31-0: its labels match sidecarInjectorWebhook.neverInjectSelector {app=batch}": 1}}
    assert s.revisions[0].pods["fresh"].stale == 0
    assert ("- `fresh`: 1 pods not injected by 1-31-0: its labels match sidecarInjectorWebhook.neverInjectSelector "
            "{app=batch}") in s.markdown()


def test_an_installed_revision_the_state_holds_nothing_of_is_outside_the_stack() -> None:
    """Another team's istiod, or an external revision the stack no longer declares (issue 24's e2e): installed, in
    neither the outputs nor the state, so never a removal of the stack's that was refused, and never droppable.
    One whose IstioRevision the state still holds (a refused removal) stays the stack's."""
    installed = {"1-30-0": "1.30.0", "asm-managed-rapid": "1.30.1"}
    after_refusal = Deployed.from_outputs({"revisions": {"1-31-0": {"version": "1.31.0", "proxy": NEW_PROXY}}})
    export = {"deployment": {"resources": [
        {"type": "istio-mesh:index:IstioRevision", "urn": "urn:pulumi:dev::istio-mesh::x$istio-mesh:index:"
         "IstioRevision::1-31-0"},
        {"type": "istio-mesh:index:IstioRevision", "urn": "urn:pulumi:dev::istio-mesh::x$istio-mesh:index:"
         "IstioRevision::1-30-0", "delete": True},
    ]}}
    held = revisions_in_state(export)
    assert held == {"1-31-0", "1-30-0"}
    s = status("dev", after_refusal, PODS, installed=installed, held=held)
    old, new, other = s.revisions
    assert (old.name, old.external, old.in_stack, old.can_drop) == ("1-30-0", False, False, False)
    assert (new.name, new.external, new.in_stack) == ("1-31-0", False, True)
    assert (other.name, other.external, other.can_drop, other.pods) == ("asm-managed-rapid", True, False, {})
    assert other.why == "external: installed outside the stack, which never removes it"
    md = s.markdown()
    assert "- `asm-managed-rapid`: 1.30.1; external (installed outside the stack)" in md, md
    assert "- `1-30-0`: 1.30.0; installed, not in the stack's last outputs" in md, md
    # The state not read: nothing known of who installed it, as before.
    unknown = {r.name: r for r in status("dev", after_refusal, PODS, installed=installed).revisions}
    assert not unknown["asm-managed-rapid"].external and not unknown["asm-managed-rapid"].in_stack
