"""Revisions the stack does not install (`revisions.<r>: {external: true}`, issue 24): a managed control plane's
release channel or another team's istiod. Config and validation, what the program registers for them, and what
the preview reads of them in the cluster (a fake one). Moves and `mesh status`: tests/test_external_moves.py."""

from __future__ import annotations

import contextlib
import copy
import json
from typing import Any

import pytest

from harness.simulation import Registration, simulate
from mesh.external_revision import external_facts, find_injector, tag_target_problem
from mesh.providers import external_revision as external_provider
from mesh.providers.external_revision import ExternalRevisionProvider
from mesh.providers.version_gate import VersionGateProvider
from mesh.proxy_image import EXTERNAL_IMAGE
from mesh.spec import load_spec
from mesh.validation import ownership_changes
from tests.test_validation import errors_of

MANAGED = "asm-managed-rapid"
OWN = "1-30-2"
OWN_IMAGE = "docker.io/istio/proxyv2:1.30.2"
CONFIG: dict[str, Any] = {
    "charts": {"path": "/mirror/istio-{version}"},
    "revisions": {OWN: {"version": "1.30.2"}, MANAGED: {"external": True}, "team-b": {"external": True}},
    "tags": {"stable": OWN, "platform": "team-b"},
    "namespaces": {"payments": MANAGED, "checkout": "stable", "search": "platform"},
    "gateways": {"ingress": {"namespace": "istio-ingress", "revision": MANAGED, "service": {"type": "ClusterIP"}}},
}


def with_revisions(**revisions: Any) -> dict[str, Any]:
    config = copy.deepcopy(CONFIG)
    config["revisions"].update(revisions)
    return config


# --- config and validation -------------------------------------------------------------------------------------


def test_namespaces_gateways_and_tags_bind_to_an_external_revision() -> None:
    assert errors_of(CONFIG) == []
    spec = load_spec(CONFIG)
    assert spec.installed == {OWN: "1.30.2"}
    assert spec.external == [MANAGED, "team-b"]
    assert spec.newest_version == "1.30.2"


def test_an_external_revision_takes_neither_a_version_nor_values() -> None:
    errors = errors_of(with_revisions(**{MANAGED: {"external": True, "version": "1.30.3",
                                                   "values": {"global": {"hub": "gcr.io/x"}}}}))
    assert [e.split(":")[1].split(" ")[0] for e in errors] == [
        f"revisions.{MANAGED}.version", f"revisions.{MANAGED}.values"]
    assert "its version is whatever its installer runs" in errors[0]
    assert "the stack renders no istiod chart for it" in errors[1]


def test_a_revision_the_stack_installs_needs_a_version_and_the_message_offers_external() -> None:
    (error,) = errors_of(with_revisions(**{"1-31-0": {}}))
    assert error.startswith("istio-mesh:revisions.1-31-0.version: is required but not set")
    assert "revisions.1-31-0.external to true" in error


def test_with_only_external_revisions_gateways_and_cni_have_no_chart_version() -> None:
    config = with_revisions()
    del config["revisions"][OWN]
    config["tags"] = {"platform": "team-b"}
    config["namespaces"] = {"payments": MANAGED}
    config["cni"] = {"enabled": True}
    errors = errors_of(config)
    assert [e.split(":")[1] for e in errors] == ["gateways.ingress", "cni.enabled"]
    assert "add a revision the stack installs" in errors[0]
    del config["gateways"], config["cni"]
    assert errors_of(config) == []


def test_a_revision_never_changes_owner_and_the_last_own_revision_is_not_dropped_for_external_ones() -> None:
    """VersionGate knows what was deployed: the stack's revision made external would delete its istiod under its
    pods; an external one made the stack's would take its installer's objects over; and dropping the last own
    revision would delete base (the CRDs)."""
    gate = VersionGateProvider()
    before = {"versions": {OWN: "1.30.2"}, "external": [MANAGED]}
    assert gate.check(before, {"versions": {OWN: "1.30.2"}, "external": [MANAGED, "team-b"]}).failures == []
    (failure,) = gate.check(before, {"versions": {"1-31-0": "1.31.0"}, "external": [MANAGED, OWN]}).failures
    assert failure.property == "external"
    assert failure.reason.startswith(f"istio-mesh:revisions.{OWN}.external: is true, but the stack installed")
    (failure,) = gate.check(before, {"versions": {OWN: "1.30.2", MANAGED: "1.30.3"}}).failures
    assert failure.reason.startswith(f"istio-mesh:revisions.{MANAGED}.version: is set, but revision {MANAGED} was "
                                     "external")
    (error,) = ownership_changes({OWN: "1.30.2"}, [], {}, [MANAGED])
    assert error.key == "revisions" and "delete its base chart" in error.message
    assert gate.diff("versions", before, dict(before)).changes is False
    assert gate.diff("versions", {"versions": {OWN: "1.30.2"}}, before).changes is True


def _by_type(records: dict[str, Registration], kind: str) -> dict[str, Registration]:
    return {r.name: r for r in records.values() if r.type.endswith(kind)}


def test_the_stack_installs_nothing_for_an_external_revision_and_waits_for_its_check() -> None:
    records = simulate(CONFIG)
    charts = {r.name for r in records.values() if r.type == "kubernetes:helm.sh/v4:Chart"}
    assert charts == {"istio-base", f"istiod-{OWN}", "ingress"}
    assert set(_by_type(records, ":DrainGuard")) == {f"{OWN}-drain-guard"}
    external = _by_type(records, ":ExternalRevision")
    assert {n: (r.inputs["revision"], r.inputs["tags"]) for n, r in external.items()} == {
        f"{MANAGED}-external": (MANAGED, []), "team-b-external": ("team-b", ["platform"])}
    assert _by_type(records, ":VersionGate")["versions"].inputs["external"] == [MANAGED, "team-b"]
    labels = _by_type(records, ":NamespaceLabels")["namespace-labels"]
    assert any(d.endswith(f"ExternalRevision::{MANAGED}-external") for d in labels.dependencies)
    tag = _by_type(records, ":MutatingWebhookConfiguration")["istio-revision-tag-platform"]
    assert any(d.endswith("team-b-external") for d in tag.dependencies)
    assert "istiod-revision-tag-platform" not in _by_type(records, ":Service")  # its version is its installer's
    rollout = _by_type(records, ":MeshRollout")["data-plane-rollout"].inputs
    assert rollout["namespaces"]["payments"] == {"revision": MANAGED, "proxy_image": EXTERNAL_IMAGE,
                                                 "strategy": "rolling"}
    assert rollout["gateways"]["istio-ingress/ingress"]["proxy_image"] == EXTERNAL_IMAGE
    assert rollout["namespaces"]["checkout"]["proxy_image"] == OWN_IMAGE


def test_a_stack_of_external_revisions_only_installs_no_base() -> None:
    config = {"revisions": {MANAGED: {"external": True}}, "namespaces": {"payments": MANAGED}}
    records = simulate(config)
    assert [r for r in records.values() if r.type == "kubernetes:helm.sh/v4:Chart"] == []
    assert set(_by_type(records, ":ExternalRevision")) == {f"{MANAGED}-external"}


# --- what the preview reads of it ------------------------------------------------------------------------------


def injector(name: str, revision: str, *, version: str | None = "1.30.3", url: str | None = None,
             tag: str | None = None) -> dict[str, Any]:
    """A MutatingWebhookConfiguration as an istiod chart (or `istioctl tag`) leaves it."""
    labels = {"istio.io/rev": revision, **({"app.kubernetes.io/version": version} if version else {}),
              **({"istio.io/tag": tag} if tag else {})}
    client = {"url": url} if url else {"service": {"name": f"istiod-{revision}", "namespace": "istio-system",
                                                   "path": "/inject", "port": 443}}
    return {"metadata": {"name": name, "labels": labels},
            "webhooks": [{"name": "rev.namespace.sidecar-injector.istio.io", "clientConfig": client}]}


def injector_configmap(hub: str, tag: str, **glob: Any) -> dict[str, Any]:
    """The injector ConfigMap's `values`, as the istiod chart renders them (only what is read)."""
    values = {"global": {"hub": hub, "tag": tag, "proxy": {"autoInject": "enabled", "image": "proxyv2"}, **glob},
              "sidecarInjectorWebhook": {"neverInjectSelector": [{"matchLabels": {"batch": "true"}}]}}
    return {"metadata": {"name": "istio-sidecar-injector-team-b"}, "data": {"values": json.dumps(values)}}


class FakeCluster:
    """The webhooks and ConfigMaps the external revisions' reads ask for."""

    def __init__(self, webhooks: dict[str, dict[str, Any]], configmaps: dict[tuple[str, str], dict[str, Any]]) -> None:
        self.webhooks, self.configmaps = webhooks, configmaps
        self.reads: list[tuple[str, str]] = []

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(external_provider.kube, "api_client", lambda _settings: contextlib.nullcontext())
        monkeypatch.setattr(external_provider, "read_webhooks", lambda _api: self.webhooks)

        def configmap(_api: Any, name: str, namespace: str) -> dict[str, Any] | None:
            self.reads.append((namespace, name))
            return self.configmaps.get((namespace, name))

        monkeypatch.setattr(external_provider, "read_configmap", configmap)


TEAM_B = FakeCluster(
    {"istio-sidecar-injector-team-b": injector("istio-sidecar-injector-team-b", "team-b"),
     "istio-revision-tag-x": injector("istio-revision-tag-x", MANAGED, tag="x"),
     "istio-sidecar-injector-1-30-2": injector("istio-sidecar-injector-1-30-2", OWN)},
    {("istio-system", "istio-sidecar-injector-team-b"): injector_configmap("registry.example/istio", "1.30.3")},
)


def test_preview_refuses_an_external_revision_without_injection_webhook(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only a tag's webhook names asm-managed-rapid here: nothing injects for the revision itself."""
    TEAM_B.install(monkeypatch)
    (failure,) = ExternalRevisionProvider().check({}, {"revision": MANAGED, "tags": []}).failures
    assert failure.property == "revision"
    assert failure.reason.startswith(f"istio-mesh:revisions.{MANAGED}: revision {MANAGED} is external, but nothing "
                                     "in the cluster injects for it")
    assert f"MutatingWebhookConfiguration istio-sidecar-injector-{MANAGED} nor one labelled istio.io/rev={MANAGED}" \
        in failure.reason


def test_preview_reads_the_version_and_proxy_image_from_the_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    TEAM_B.install(monkeypatch)
    checked = ExternalRevisionProvider().check({}, {"revision": "team-b", "tags": ["platform"]})
    assert checked.failures == []
    assert {k: checked.inputs[k] for k in ("webhook", "version", "proxy_image")} == {
        "webhook": "istio-sidecar-injector-team-b", "version": "1.30.3",
        "proxy_image": "registry.example/istio/proxyv2:1.30.3"}
    assert checked.inputs["injector"]["never"] == [{"matchLabels": {"batch": "true"}}]
    # The version its installer moved it to shows as a change in the preview.
    assert ExternalRevisionProvider().diff("x", {**checked.inputs, "version": "1.30.2"}, checked.inputs).changes


def test_a_webhook_found_by_its_label_serves_and_its_configmap_is_read_where_its_istiod_is() -> None:
    hook = injector("istio-sidecar-injector-team-b-platform", "team-b")
    hook["webhooks"][0]["clientConfig"]["service"]["namespace"] = "platform-istio"
    found = find_injector("team-b", {"istio-revision-tag-b": injector("istio-revision-tag-b", "team-b", tag="b"),
                                     hook["metadata"]["name"]: hook})
    assert found is hook
    assert external_provider.configmap_namespace(hook) == "platform-istio"


def test_a_managed_control_plane_is_moved_to_by_revision_alone() -> None:
    """A remote injector (URL) and no injector ConfigMap: the image cannot be known, and the review says so."""
    hook = injector(f"istio-sidecar-injector-{MANAGED}", MANAGED, version=None,
                    url="https://meshconfig.googleapis.com/inject")
    facts = external_facts(MANAGED, hook, None)
    assert (facts.version, facts.proxy_image, facts.calls) == ("", "", "URL https://meshconfig.googleapis.com/inject")
    assert "its proxy image cannot be read from the cluster" in facts.target_note
    assert "checked for the revision alone" in facts.target_note


def test_a_tag_may_point_at_an_external_revision_only_when_its_webhook_reaches_the_same_injector(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert tag_target_problem("platform", "team-b", injector("istio-sidecar-injector-team-b", "team-b")) is None
    managed = FakeCluster({f"istio-sidecar-injector-{MANAGED}": injector(
        f"istio-sidecar-injector-{MANAGED}", MANAGED, url="https://meshconfig.googleapis.com/inject")}, {})
    managed.install(monkeypatch)
    (failure,) = ExternalRevisionProvider().check({}, {"revision": MANAGED, "tags": ["default"]}).failures
    assert failure.property == "tags"
    assert failure.reason.startswith(f"istio-mesh:tags.default: points at external revision {MANAGED}, whose "
                                     "injection webhook")
    assert "calls URL https://meshconfig.googleapis.com/inject" in failure.reason
    assert f"bind the namespaces to {MANAGED} itself" in failure.reason


def test_an_external_revision_is_never_deleted(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def api_client(_settings: Any) -> Any:
        calls.append("api")
        return contextlib.nullcontext()

    monkeypatch.setattr(external_provider.kube, "api_client", api_client)
    ExternalRevisionProvider().delete("external-team-b", {"revision": "team-b"})
    assert calls == []
