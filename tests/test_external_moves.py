"""Moves to, from and between revisions installed outside the stack (issue 24) through the MeshRollout (its provider
against a fake cluster), the review's target for them, and `mesh status`."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest

from mesh.external_revision import external_facts
from mesh.providers import rollout as rollout_provider
from mesh.providers.rollout import MeshRolloutProvider
from mesh.proxy_image import EXTERNAL_IMAGE, PodProxy
from mesh.review import Deployed, Move, moves, with_external_target
from mesh.spec import load_spec
from mesh.status import status
from mesh.workloads import Pod, Target, Workload
from tests.test_external_revisions import CONFIG, MANAGED, OWN, OWN_IMAGE, TEAM_B, injector

MANAGED_URL = "https://meshconfig.googleapis.com/inject"


# --- moves through the MeshRollout -----------------------------------------------------------------------------


class FakeWorkloads:
    """Deployments with two pods each on (revision, proxy image); a restart puts them on the target (with the image
    the target's injector writes, `injects`, when the target says none)."""

    def __init__(self, running: dict[tuple[str, str], tuple[str, str]], injects: dict[str, str]) -> None:
        self.running, self.injects = running, injects
        self.restarted: list[tuple[str, str]] = []

    def workload(self, ns: str, name: str) -> Workload:
        revision, image = self.running[(ns, name)]
        pods = tuple(Pod(ns, f"{name}-{i}", revision, f"{ns}/{name}", injectable=True, live=True,
                         proxy=PodProxy(image=image)) for i in range(2))
        return Workload(kind="Deployment", namespace=ns, name=name, uid=f"{ns}/{name}", generation=1,
                        observed_generation=1, desired=2, current=2, updated=2, ready=2, available=2, pods=pods)

    def snapshots(self, entries: Any) -> dict[str, tuple[dict[str, Workload], list[Pod]]]:
        result = {}
        for entry in entries:
            found = [self.workload(n, name) for n, name in sorted(self.running) if n == entry]
            result[entry] = ({w.key: w for w in found}, [p for w in found for p in w.pods])
        return result

    def read_proxy_configs(self, _targets: Any) -> None:
        """No ProxyConfig resources here."""

    def follow(self, _entries: Any) -> None:
        """Nothing to watch: every read is current."""

    def wait(self, _timeout: float) -> None:
        """A restart lands at once: nothing to wait for."""

    def confirm(self, entries: Any) -> dict[str, tuple[dict[str, Workload], list[Pod]]]:
        return self.snapshots(entries)

    def external(self, revision: str) -> Any:
        return {"team-b": external_facts("team-b", TEAM_B.webhooks["istio-sidecar-injector-team-b"],
                                         TEAM_B.configmaps[("istio-system", "istio-sidecar-injector-team-b")]),
                MANAGED: external_facts(MANAGED, injector(f"istio-sidecar-injector-{MANAGED}", MANAGED,
                                                          url=MANAGED_URL), None),
                }.get(revision)

    def restart(self, w: Workload, target: Target) -> None:
        self.restarted.append((w.namespace, w.name))
        self.running[(w.namespace, w.name)] = (target.revision, target.proxy_image or self.injects[target.revision])


TEAM_B_IMAGE = "registry.example/istio/proxyv2:1.30.3"
MANAGED_IMAGE = "gcr.io/gke-release/asm/proxyv2:1.30.3-asm.1"


def rollout(monkeypatch: pytest.MonkeyPatch, cluster: FakeWorkloads, olds: dict[str, Any],
            namespaces: dict[str, Any]) -> dict[str, Any]:
    monkeypatch.setattr(rollout_provider.kube, "api_client", lambda _settings: contextlib.nullcontext())
    monkeypatch.setattr(rollout_provider, "ClusterReader", lambda _api: cluster)
    monkeypatch.setattr(rollout_provider, "POLL_SECONDS", 0, raising=False)  # polled in earlier versions
    news = {"namespaces": namespaces, "gateways": {}, "concurrency": 1, "per_namespace": 0, "timeout_seconds": 5,
            "injectors": {}}
    return MeshRolloutProvider().apply(olds, news)


def entry(revision: str, strategy: str = "rolling") -> dict[str, str]:
    image = OWN_IMAGE if revision == OWN else EXTERNAL_IMAGE
    return {"revision": revision, "proxy_image": image, "strategy": strategy}


def test_moves_to_from_and_between_external_revisions_restart_the_workloads(monkeypatch: pytest.MonkeyPatch) -> None:
    cluster = FakeWorkloads(
        {("payments", "api"): (OWN, OWN_IMAGE), ("checkout", "web"): ("team-b", TEAM_B_IMAGE),
         ("search", "query"): ("team-b", TEAM_B_IMAGE), ("orders", "db"): (MANAGED, MANAGED_IMAGE)},
        {MANAGED: MANAGED_IMAGE, "team-b": TEAM_B_IMAGE})
    before = {"namespaces": {"payments": entry(OWN), "checkout": entry("team-b"), "search": entry("team-b"),
                             "orders": entry(MANAGED)}, "gateways": {}}
    outs = rollout(monkeypatch, cluster, before, {
        "payments": entry(MANAGED),   # own -> managed channel
        "checkout": entry(OWN),       # external -> own
        "search": entry(MANAGED),     # external -> external
        "orders": entry(MANAGED),     # unchanged
    })
    assert sorted(cluster.restarted) == [("checkout", "web"), ("payments", "api"), ("search", "query")]
    assert outs["results"]["payments"]["restarted"] == ["Deployment/api"]
    assert cluster.running[("payments", "api")] == (MANAGED, MANAGED_IMAGE)
    assert cluster.running[("checkout", "web")] == (OWN, OWN_IMAGE)


def test_on_an_external_revision_a_known_image_is_checked_and_an_unknown_one_is_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """team-b's injector writes registry.example/...:1.30.3 (read from its ConfigMap): a pod on an older image is
    restarted; the managed channel's image is unknown, so a pod on it with any image is on target."""
    cluster = FakeWorkloads({("checkout", "web"): ("team-b", "registry.example/istio/proxyv2:1.30.2"),
                             ("orders", "db"): (MANAGED, "gcr.io/gke-release/asm/proxyv2:1.29.9-asm.3")},
                            {MANAGED: MANAGED_IMAGE, "team-b": TEAM_B_IMAGE})
    rollout(monkeypatch, cluster, {}, {"checkout": entry("team-b"), "orders": entry(MANAGED)})
    assert cluster.restarted == [("checkout", "web")]


def test_natural_and_none_work_the_same_for_external_revisions(monkeypatch: pytest.MonkeyPatch) -> None:
    cluster = FakeWorkloads({("payments", "api"): (OWN, OWN_IMAGE), ("orders", "db"): (OWN, OWN_IMAGE)},
                            {MANAGED: MANAGED_IMAGE})
    outs = rollout(monkeypatch, cluster, {}, {"payments": entry(MANAGED, "natural"), "orders": entry(MANAGED, "none")})
    assert cluster.restarted == []
    assert outs["results"]["payments"]["other_revisions"] == {OWN: 2}
    assert outs["results"]["orders"]["other_revisions"] == {}


def test_a_move_to_an_external_revision_whose_webhook_is_gone_fails_before_restarting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cluster = FakeWorkloads({("payments", "api"): (OWN, OWN_IMAGE)}, {})
    with pytest.raises(rollout_provider.RolloutError, match="revision gone is external, but nothing in the cluster"):
        rollout(monkeypatch, cluster, {}, {"payments": entry("gone")})
    assert cluster.restarted == []


def test_the_review_plans_the_same_moves_with_an_external_target() -> None:
    spec = load_spec(CONFIG)
    deployed = Deployed.from_outputs({"revisions": {OWN: {"version": "1.30.2", "proxy": OWN_IMAGE},
                                                    MANAGED: {"external": True, "version": "", "proxy": ""}}})
    assert deployed.versions == {OWN: "1.30.2"} and deployed.external == {MANAGED: ""}
    planned = {m.namespace: m.target for m in moves(deployed, spec)}
    assert planned["payments"] == Target(MANAGED, EXTERNAL_IMAGE)


# --- mesh status -----------------------------------------------------------------------------------------------


def test_status_shows_external_revisions_with_their_pods_and_never_droppable() -> None:
    deployed = Deployed.from_outputs({
        "revisions": {OWN: {"version": "1.30.2", "proxy": OWN_IMAGE},
                      MANAGED: {"external": True, "version": "1.30.3", "proxy": ""}},
        "namespaces": {"payments": MANAGED},
    })
    pod = {"metadata": {"namespace": "payments", "name": "api-0", "annotations": {"istio.io/rev": MANAGED}},
           "spec": {"containers": [{"name": "istio-proxy", "image": MANAGED_IMAGE}]}, "status": {"phase": "Running"}}
    report = status("prod", deployed, [pod], installed={MANAGED: "1.30.3", "team-b": "1.30.3"},
                    external=["team-b"])
    by_name = {r.name: r for r in report.revisions}
    assert by_name[MANAGED].external and not by_name[MANAGED].can_drop
    assert by_name[MANAGED].why == "external: installed outside the stack, which never removes it; 1 pods run it"
    assert by_name[MANAGED].pods["payments"].pods == 1
    assert by_name["team-b"].external and not by_name["team-b"].can_drop  # declared, not yet deployed
    assert by_name[OWN].can_drop and not by_name[OWN].external
    text = report.markdown()
    assert f"- `{MANAGED}`: 1.30.3; external (installed outside the stack); bound: payments" in text
    assert "can be dropped: no, external: installed outside the stack" in text


def test_the_review_of_a_move_to_a_managed_channel_says_the_target_is_the_revision_alone() -> None:
    facts = external_facts(MANAGED, injector(f"istio-sidecar-injector-{MANAGED}", MANAGED, version=None,
                                             url=MANAGED_URL), None)
    move = Move("payments", None, OWN, Target(MANAGED, EXTERNAL_IMAGE), "rolling", f"{OWN} -> {MANAGED}")
    resolved = with_external_target(move, facts)
    assert resolved.target == Target(MANAGED, "")
    assert resolved.why.startswith(f"{OWN} -> {MANAGED} (external; its proxy image cannot be read")
    gone = with_external_target(move, None)
    assert gone.why.endswith("(external, but no injection webhook of it in the cluster: preview refuses it)")
