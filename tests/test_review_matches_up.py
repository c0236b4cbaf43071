"""The review names exactly the workloads `up` restarts: for each change, the review of it and then `up` of it
(the program under Pulumi mocks for the MeshRollout's inputs, its provider's `apply` against a fake cluster)
are compared workload by workload.

The cluster is converged on STEADY, except `reporting`, bound `natural` to the canary, whose pods still run the
old revision. The changes: a namespace moved (the plain case), a strategy-only change (`natural` -> `rolling`), a
hub change of the canary's revision (which moves only the gateway's canary Deployment), and a move retried
after a failed `up` (the stack outputs already carry it; the MeshRollout's state does not).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from harness.simulation import simulate
from mesh.providers import rollout as rollout_provider
from mesh.providers.rollout import MeshRolloutProvider
from mesh.proxy_image import PodProxy, proxy_image
from mesh.review import Deployed, data_plane, moves
from mesh.rollout_plan import rollout_inputs
from mesh.spec import MeshSpec, load_spec
from mesh.validation import validate_or_raise
from mesh.workloads import Pod, Target, Workload
from tests.test_upgrade_walk import DATA_PLANE

OLD, NEW = "docker.io/istio/proxyv2:1.30.2", "docker.io/istio/proxyv2:1.31.0"
STEADY: dict[str, Any] = {
    "charts": {"path": "/mirror/istio-{version}"},
    "revisions": {"1-30-2": {"version": "1.30.2"}, "1-31-0": {"version": "1.31.0"}},
    "tags": {"stable": "1-30-2", "canary": "1-31-0"},
    "namespaces": {"payments": "stable", "reporting": {"revision": "canary", "strategy": "natural"}},
    "gateways": {"ingress": {"namespace": "istio-ingress", "revision": "stable", "service": {"type": "ClusterIP"},
                             "canary": {"revision": "canary", "replicas": 1}}},
}
RUNNING = {
    ("payments", "api"): ("1-30-2", OLD),
    ("reporting", "batch"): ("1-30-2", OLD),  # natural: left where it was
    ("istio-ingress", "ingress"): ("1-30-2", OLD),
    ("istio-ingress", "ingress-canary"): ("1-31-0", NEW),
}


def changed(path: str, value: Any) -> dict[str, Any]:
    """STEADY with one leaf set, at a dotted path."""
    config = copy.deepcopy(STEADY)
    *parents, leaf = path.split(".")
    node = config
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value
    return config


@dataclass
class FakeCluster:
    """Deployments with two pods each, on (revision, proxy image); a restart puts them on the target at once."""

    running: dict[tuple[str, str], tuple[str, str]]
    restarted: list[tuple[str, str]] = field(default_factory=list)

    def workload(self, ns: str, name: str) -> Workload:
        revision, image = self.running[(ns, name)]
        pods = tuple(Pod(ns, f"{name}-{i}", revision, f"{ns}/{name}", injectable=True, live=True,
                         proxy=PodProxy(image=image)) for i in range(2))
        return Workload(kind="Deployment", namespace=ns, name=name, uid=f"{ns}/{name}", generation=1,
                        observed_generation=1, desired=2, current=2, updated=2, ready=2, available=2, pods=pods)

    def snapshot(self, entry: str) -> tuple[dict[str, Workload], list[Pod]]:
        ns, _, only = entry.partition("/")  # a namespace, or one Deployment of it
        found = [self.workload(n, name) for n, name in sorted(self.running) if n == ns and only in ("", name)]
        return {w.key: w for w in found}, [p for w in found for p in w.pods]

    def snapshots(self, entries: Iterable[str]) -> dict[str, tuple[dict[str, Workload], list[Pod]]]:
        return {e: self.snapshot(e) for e in entries}

    def read_proxy_configs(self, _targets: Mapping[str, Target]) -> None:
        """No ProxyConfig resources here."""

    def follow(self, _entries: Iterable[str]) -> None:
        """Nothing to watch: every read is current."""

    def wait(self, _timeout: float) -> None:
        """A restart lands at once: nothing to wait for."""

    confirm = snapshots

    def restart(self, w: Workload, target: Target) -> None:
        self.restarted.append((w.namespace, w.key))
        self.running[(w.namespace, w.name)] = (target.revision, target.proxy_image)


def registered_rollout(config: Mapping[str, Any]) -> dict[str, Any]:
    """The MeshRollout's inputs as the program registers them for `config` (and its state once `up` completed)."""
    return dict(simulate(config)[DATA_PLANE].inputs)


def outputs_of(spec: MeshSpec) -> dict[str, Any]:
    """The stack outputs `mesh.program.deploy` exports for `spec`."""
    return {
        "revisions": {n: {"version": r.version, "proxy": proxy_image(spec, n)} for n, r in spec.revisions.items()},
        "tags": dict(spec.tags),
        "namespaces": {ns: spec.resolve(b.revision) for ns, b in spec.namespaces.items()},
        "gateways": {n: {"namespace": g.namespace, "revision": spec.resolve(g.revision),
                         **({"canary": spec.resolve(g.canary.revision)} if g.canary else {})}
                     for n, g in spec.gateways.items()},
    }


def up(state: Mapping[str, Any], config: Mapping[str, Any], cluster: FakeCluster,
       monkeypatch: pytest.MonkeyPatch) -> set[tuple[str, str]]:
    """The MeshRollout's update from its state to `config`'s inputs: the workloads it restarts."""
    monkeypatch.setattr(rollout_provider.kube, "api_client", lambda _settings: contextlib.nullcontext())
    monkeypatch.setattr(rollout_provider, "ClusterReader", lambda _api: cluster)
    MeshRolloutProvider().apply(dict(state), registered_rollout(config))
    return set(cluster.restarted)


def review(deployed: Deployed, config: Mapping[str, Any], cluster: FakeCluster) -> set[tuple[str, str]]:
    """The workloads the review says `up` restarts (its moves, each read and decided as `mesh review` does)."""
    spec = validate_or_raise(load_spec(config))
    restarts = set()
    for move in moves(deployed, spec):
        workloads, pods = cluster.snapshot(f"{move.namespace}/{move.workload}" if move.workload else move.namespace)
        restarts |= {(move.namespace, key) for key in data_plane(move, workloads.values(), pods).restart}
    return restarts


CASES = {
    "a namespace moved": (changed("namespaces.payments", "canary"), {("payments", "Deployment/api")}),
    "natural -> rolling": (changed("namespaces.reporting.strategy", "rolling"), {("reporting", "Deployment/batch")}),
    "hub of the canary's revision": (changed("revisions.1-31-0.values", {"global": {"hub": "mirror.example/istio"}}),
                                     {("istio-ingress", "Deployment/ingress-canary")}),
}


@pytest.mark.parametrize("config", [STEADY, *(config for config, _ in CASES.values())])
def test_the_review_derives_the_entries_the_program_registers(config: dict[str, Any]) -> None:
    """The review predicts `up` from `rollout_inputs`: it must be what the program gives the MeshRollout."""
    registered = registered_rollout(config)
    assert rollout_inputs(load_spec(config)) == {g: registered[g] for g in ("namespaces", "gateways")}


@pytest.mark.parametrize("case", CASES)
def test_the_review_names_the_workloads_up_restarts(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    config, expected = CASES[case]
    state = registered_rollout(STEADY)
    deployed = Deployed.from_outputs(outputs_of(load_spec(STEADY)), state)
    said = review(deployed, config, FakeCluster(dict(RUNNING)))
    done = up(state, config, FakeCluster(dict(RUNNING)), monkeypatch)
    assert done == expected
    assert said == done


def test_after_a_failed_up_the_review_compares_with_what_the_rollout_last_completed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The failed `up` exported the new outputs, but its MeshRollout update failed: the state keeps its inputs,
    and the next `up` plans the move again."""
    config = changed("namespaces.payments", "canary")
    state = registered_rollout(STEADY)
    deployed = Deployed.from_outputs(outputs_of(load_spec(config)), state)
    said = review(deployed, config, FakeCluster(dict(RUNNING)))
    done = up(state, config, FakeCluster(dict(RUNNING)), monkeypatch)
    assert done == {("payments", "Deployment/api")}
    assert said == done


def test_the_state_is_read_from_the_stack_export() -> None:
    """`mesh review` reads `pulumi stack export`: the stack's outputs and the MeshRollout's entries, ignoring a
    resource pending deletion and the per-namespace Rollouts of earlier releases."""
    state = registered_rollout(STEADY)
    outputs = outputs_of(load_spec(STEADY))
    moved = {"namespaces": {"payments": {**state["namespaces"]["payments"], "revision": "1-31-0"}}, "gateways": {}}
    export = {"version": 3, "deployment": {"resources": [
        {"type": "pulumi:pulumi:Stack", "outputs": outputs},
        {"type": "pulumi-python:dynamic/mesh:MeshRollout", "outputs": moved, "delete": True},
        {"type": "pulumi-python:dynamic/mesh:Rollout", "outputs": {"namespace": "payments"}},
        {"type": "pulumi-python:dynamic/mesh:MeshRollout", "outputs": {**state, "results": {}}},
    ]}}
    deployed = Deployed.from_export(export)
    assert deployed == Deployed.from_outputs(outputs, {g: state[g] for g in ("namespaces", "gateways")})
    assert moves(deployed, load_spec(STEADY)) == []
    assert Deployed.from_export({"version": 3, "deployment": {}}) == Deployed()


def test_the_review_says_what_changed_in_each_entry() -> None:
    state = registered_rollout(STEADY)
    deployed = Deployed.from_outputs(outputs_of(load_spec(STEADY)), state)
    why = {case: [(m.namespace, m.workload, m.why) for m in moves(deployed, load_spec(config))]
           for case, (config, _) in CASES.items()}
    assert why == {
        "a namespace moved": [("payments", None, "1-30-2 -> 1-31-0")],
        "natural -> rolling": [("reporting", None, "strategy natural -> rolling")],
        "hub of the canary's revision": [
            ("istio-ingress", "ingress-canary", f"proxy {NEW} -> mirror.example/istio/proxyv2:1.31.0"),
            ("reporting", None, f"proxy {NEW} -> mirror.example/istio/proxyv2:1.31.0"),
        ],
    }
