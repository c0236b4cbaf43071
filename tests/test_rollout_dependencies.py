"""What the MeshRollout waits for: a revision's chart (and istio-base before it) only when that chart changes.

The program runs under Pulumi mocks twice per case: a first `up` whose record of completed charts (the Istio
component's `charts` output) is captured, then the change, with the engine's previous state answering with
that record. The MeshRollout's dependencies are followed through every registration (a dependency on a
component counts as one on each of its children, as the engine does), so what it waits for is the set of
resources reachable from it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

import pulumi
import pulumi.runtime.settings
from pulumi.runtime import rpc
from pulumi.runtime.mocks import MockMonitor, MockResourceArgs, Mocks

from mesh.deployed_charts import fingerprint, settled
from mesh.program import deploy, read_config, spec_from_config
from mesh.spec import PROJECT

OLD, NEW = "1-30-0", "1-31-0"
ISTIO = "istio-mesh:index:Istio"
CHART = "kubernetes:helm.sh/v4:Chart"
ROLLOUT = "pulumi-python:dynamic/mesh:MeshRollout"


class _PreviousState(Mocks):
    """Resources as the mocks make them, with the Istio component's outputs as the last `up` left them."""

    def __init__(self, record: Mapping[str, str]) -> None:
        self.record = dict(record)

    def new_resource(self, args: MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        state = dict(args.inputs)
        if args.typ == CHART:
            state["resources"] = []
        if args.typ == ISTIO and self.record:
            state["charts"] = self.record
        return (f"{args.name}-id" if args.custom else None), state

    def call(self, args: Any) -> tuple[dict[str, Any], None]:
        return {}, None


class _Monitor(MockMonitor):
    """Records each registration's dependencies, and the outputs the program registers for the Istio component."""

    def __init__(self, mocks: Mocks) -> None:
        super().__init__(mocks)
        self.registered: dict[str, tuple[str, str, set[str]]] = {}
        self.record: dict[str, str] | None = None

    def RegisterResource(self, request: Any) -> Any:  # noqa: N802 (gRPC method name)
        response = super().RegisterResource(request)
        self.registered[response.urn] = (request.type, request.name, set(request.dependencies))
        return response

    def RegisterResourceOutputs(self, request: Any) -> Any:  # noqa: N802 (gRPC method name)
        if request.urn.endswith(f"{ISTIO}::mesh"):
            self.record = dict(rpc.deserialize_properties(request.outputs)["charts"])
        return super().RegisterResourceOutputs(request)


def run(config: Mapping[str, Any], record: Mapping[str, str]) -> _Monitor:
    """The program under mocks with `config`, the last `up` having recorded `record`."""
    asyncio.set_event_loop(asyncio.new_event_loop())
    pulumi.runtime.settings.ROOT.set(None)
    pulumi.runtime.set_all_config({
        f"{PROJECT}:{key}": value if isinstance(value, str) else json.dumps(value) for key, value in config.items()
    })
    mocks = _PreviousState(record)
    monitor = _Monitor(mocks)
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack="test", preview=False, monitor=monitor)
    try:
        @pulumi.runtime.test
        def program() -> None:
            deploy(spec_from_config(read_config(pulumi.Config())))

        program()
    finally:
        pulumi.runtime.settings.reset_options()
    return monitor


def waits_for(monitor: _Monitor) -> set[tuple[str, str]]:
    """(type, name) of every resource the MeshRollout's step comes after, directly or not."""
    (start,) = [urn for urn, (typ, _, _) in monitor.registered.items() if typ == ROLLOUT]
    seen: set[str] = set()
    todo = set(monitor.registered[start][2])
    while todo:
        urn = todo.pop()
        if urn in seen or urn not in monitor.registered:
            continue
        seen.add(urn)
        deps = monitor.registered[urn][2]
        todo |= deps
        # A component stands for its children, as the engine counts it.
        todo |= {child for child in monitor.registered if child.startswith(_child_prefix(urn))}
    return {monitor.registered[urn][:2] for urn in seen}


def _child_prefix(urn: str) -> str:
    """URNs of `urn`'s children start with its qualified type plus `$` (`urn:...::a$b::name` for a child of a)."""
    head, qualified, _name = urn.rsplit("::", 2)
    return f"{head}::{qualified}$"


def config(tag: str, *, old_version: str = "1.30.0", new: bool = True) -> dict[str, Any]:
    revisions = {OLD: {"version": old_version}, **({NEW: {"version": "1.31.0"}} if new else {})}
    return {
        "revisions": revisions,
        "tags": {"stable": tag},
        "namespaces": {"team-a": "stable", "team-b": OLD},
        "rollout": {"concurrency": 4},
    }


def deployed(cfg: Mapping[str, Any]) -> dict[str, str]:
    """The record a completed first `up` of `cfg` leaves."""
    record = run(cfg, {}).record
    assert record, "the Istio component records its charts"
    return record


def charts(waited: set[tuple[str, str]]) -> set[str]:
    return {name for typ, name in waited if typ == CHART}


def test_a_pure_move_between_unchanged_revisions_waits_for_the_tag_and_labels_only() -> None:
    before = config(OLD)
    waited = waits_for(run(config(NEW), deployed(before)))
    assert charts(waited) == set(), "no chart: both revisions are as the last up left them"
    assert ("kubernetes:admissionregistration.k8s.io/v1:MutatingWebhookConfiguration",
            "istio-revision-tag-stable") in waited, "the moved tag's webhook points at the new revision first"
    assert ("pulumi-python:dynamic/mesh:NamespaceLabels", "namespace-labels") in waited
    assert ("pulumi-python:dynamic/mesh:VersionGate", "versions") in waited
    assert not {name for typ, name in waited if typ == "pulumi-python:dynamic/mesh:DrainGuard"}


def test_without_a_record_everything_waits_as_before() -> None:
    """A first install, or the first `up` after a failed one (nothing recorded): every chart first."""
    waited = waits_for(run(config(NEW), {}))
    assert charts(waited) == {"istio-base", f"istiod-{OLD}", f"istiod-{NEW}"}


def test_a_move_to_a_new_revision_waits_for_its_chart_and_base() -> None:
    before = config(OLD, new=False)
    waited = waits_for(run(config(NEW), deployed(before)))
    assert charts(waited) == {f"istiod-{NEW}", "istio-base"}, "the new revision (after base), not the old one"
    assert ("pulumi-python:dynamic/mesh:DrainGuard", f"{NEW}-drain-guard") in waited


def test_an_in_place_upgrade_waits_for_the_upgraded_chart() -> None:
    before = config(OLD, old_version="1.30.0", new=False)
    after = config(OLD, old_version="1.30.1", new=False)
    waited = waits_for(run(after, deployed(before)))
    assert f"istiod-{OLD}" in charts(waited), "the binding on the revision itself waits for its new istiod"


def test_a_changed_value_of_a_revision_is_a_change() -> None:
    before = config(OLD)
    after = config(NEW)
    after["revisions"][NEW]["values"] = {"pilot": {"env": {"PILOT_TRACE_SAMPLING": "10"}}}
    waited = waits_for(run(after, deployed(before)))
    assert charts(waited) == {f"istiod-{NEW}", "istio-base"}


def test_the_record_is_what_the_next_up_compares_with() -> None:
    current = {"revision/a": fingerprint("a", {"x": 1}), "revision/b": fingerprint("b", {})}
    assert settled(current, current) == frozenset(current)
    assert settled({"revision/a": current["revision/a"]}, current) == {"revision/a"}
    assert settled({"revision/a": fingerprint("a", {"x": 2})}, current) == frozenset()
    assert settled(None, current) == frozenset()
    assert fingerprint({"b": 1, "a": 2}) == fingerprint({"a": 2, "b": 1})


def test_an_unchanged_gateway_chart_is_not_waited_for() -> None:
    """The gateway's chart follows its revision's version: on its own revision it stays as it was while a tag
    moves; on the moved tag it changes (a new chart version), and the move waits for it."""
    def with_gateway(tag: str, pin: str) -> dict[str, Any]:
        return {**config(tag), "gateways": {"ingress": {"namespace": "istio-ingress", "revision": pin}}}

    assert charts(waits_for(run(with_gateway(NEW, OLD), deployed(with_gateway(OLD, OLD))))) == set()
    assert charts(waits_for(run(with_gateway(NEW, "stable"), deployed(with_gateway(OLD, "stable"))))) == {"ingress"}


def registration_order(monitor: _Monitor) -> list[str]:
    return [name for _typ, name, _deps in monitor.registered.values()]


def test_charts_register_after_the_labels_when_the_move_waits_for_none() -> None:
    """The engine diffs registrations in arrival order: istio-base's objects first would hold up the move."""
    order = registration_order(run(config(NEW), deployed(config(OLD))))
    assert order.index("namespace-labels") < order.index("istio-base")
    order = registration_order(run(config(NEW), {}))
    assert order.index("istio-base") < order.index("namespace-labels"), "a first install: charts first, as before"
