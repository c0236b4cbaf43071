"""Fleets (pure): the fleet file, its waves resolved against the project's stacks, the health gates over what a
stack's cluster shows, and what a run says when it stops."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from pulumi.automation import CommandResult, ConcurrentUpdateError

from mesh.fleet import gates
from mesh.fleet.fleet_file import FleetError, load_fleet, parse_fleet
from mesh.fleet.report import StackRun, plan_summary, stop_message, wave_healthy
from mesh.fleet.waves import Wave, part, resolve, unlisted
from mesh.fleet_run import PrometheusError, _lock_message, prometheus_value, query_prometheus
from mesh.review import Deployed
from mesh.status import status
from mesh.webhook_overlap import Overlap
from mesh.workloads import workload_from_object

STACKS = ["dev", "staging-eu", "staging-us", "prod-eu", "prod-us", "sandbox"]
FLEET = """
waves:
  - [dev]
  - [staging-eu, staging-us]
  - ["prod-*"]
parallel: 2
soakSeconds: 30
protected: ["prod-*"]
prometheus:
  query: sum(rate(istio_requests_total{response_code=~"5.."}[5m]))
  max: 0.5
  urls: {"prod-*": "http://prom:9090", "staging-eu": "http://prom-eu:9090"}
"""


def problems(text: str, stacks: list[str] = STACKS) -> list[str]:
    with pytest.raises(FleetError) as e:
        resolve(load_fleet(text, "fleet.yaml"), stacks)
    assert str(e.value).startswith(f"the fleet file has {len(e.value.problems)} problem(s)")
    return e.value.problems


def test_fleet_file_reads_the_issue_example() -> None:
    fleet = load_fleet(FLEET, "fleet.yaml")
    assert (fleet.parallel, fleet.soak_seconds, fleet.protected) == (2, 30, ["prod-*"])
    assert fleet.prometheus is not None
    assert fleet.prometheus.url_for("prod-us") == "http://prom:9090"
    assert fleet.prometheus.url_for("staging-eu") == "http://prom-eu:9090"
    assert fleet.prometheus.url_for("dev") is None
    waves = resolve(fleet, STACKS)
    assert [w.stacks for w in waves] == [("dev",), ("staging-eu", "staging-us"), ("prod-eu", "prod-us")]
    assert waves[2].label == "wave 3 (prod-eu, prod-us)"
    assert unlisted(waves, STACKS) == ["sandbox"]


def test_shape_errors_name_their_keys_all_at_once() -> None:
    with pytest.raises(FleetError) as e:
        parse_fleet({"waves": [["dev"], "prod"], "parallel": 0, "soakSeconds": -1, "gates": {}})
    found = "\n".join(e.value.problems)
    assert "waves[1]: Input should be a valid list" in found and '["prod-*"]' in found
    assert "parallel: Input should be greater than or equal to 1" in found
    assert "soakSeconds: Input should be greater than or equal to 0" in found
    assert "gates: Extra inputs are not permitted" in found
    assert len(e.value.problems) == 4
    with pytest.raises(FleetError, match=r"waves\[1\]: an empty wave"):
        parse_fleet({"waves": [["dev"], []]})
    with pytest.raises(FleetError, match="waves: Field required"):
        parse_fleet({})
    with pytest.raises(FleetError, match="must be a mapping"):
        load_fleet("- dev\n", "fleet.yaml")
    with pytest.raises(FleetError, match="not YAML"):
        load_fleet("waves: [dev\n", "fleet.yaml")


def test_a_pattern_that_matches_nothing_is_an_error_with_the_closest_stack() -> None:
    found = problems("waves: [[dev], [stagingeu], ['qa-*']]")
    assert found == ['waves[1][0]: "stagingeu" matches no stack of the project (did you mean "staging-eu"?); '
                     f"stacks: {', '.join(sorted(STACKS))}",
                     f'waves[2][0]: "qa-*" matches no stack of the project; stacks: {", ".join(sorted(STACKS))}']


def test_a_stack_belongs_to_one_wave() -> None:
    assert problems("waves: [['staging-*'], ['staging-eu', 'dev']]") == [
        'waves[1][0]: stack "staging-eu" is already in waves[0]: a stack belongs to one wave']
    # Listed twice in one wave: once is enough, no error.
    fleet = load_fleet("waves: [['staging-*', 'staging-eu']]", "f")
    assert resolve(fleet, STACKS)[0].stacks == ("staging-eu", "staging-us")


def test_protected_stacks_come_last() -> None:
    found = problems("waves: [[prod-eu], [dev]]\nprotected: [prod-eu, nothing]")
    assert found == ['protected[1]: "nothing" matches no stack of the project; '
                     f"stacks: {', '.join(sorted(STACKS))}",
                     'protected: stack "prod-eu" (waves[0]) comes before unprotected stacks (waves[1]): CI updates '
                     "protected stacks after all others, so move them to the last waves"]
    # A wave may mix them when it is the last with unprotected stacks: CI's second job takes the rest of it.
    fleet = load_fleet("waves: [[dev], [staging-eu, prod-eu], [prod-us]]\nprotected: ['prod-*']", "f")
    waves = resolve(fleet, STACKS)
    assert [(w.index, w.stacks) for w in part(fleet, waves, "unprotected")] == [(0, ("dev",)), (1, ("staging-eu",))]
    assert [(w.index, w.stacks) for w in part(fleet, waves, "protected")] == [(1, ("prod-eu",)), (2, ("prod-us",))]
    assert part(fleet, waves, "all") == waves


# ---- gates ----------------------------------------------------------------------------------------------
OLD, NEW = "docker.io/istio/proxyv2:1.30.0", "docker.io/istio/proxyv2:1.31.0"
DEPLOYED = Deployed.from_outputs({
    "revisions": {"old": {"version": "1.30.0", "proxy": OLD}, "new": {"version": "1.31.0", "proxy": NEW}},
    "namespaces": {"shop": "new", "batch": "new", "legacy": "old"},
})


def pod(ns: str, name: str, rev: str | None, image: str | None) -> dict[str, Any]:
    containers = [{"name": "app", "image": "app:1"}, *([{"name": "istio-proxy", "image": image}] if image else [])]
    return {"metadata": {"namespace": ns, "name": name, "annotations": {"istio.io/rev": rev} if rev else {}},
            "spec": {"containers": containers}, "status": {"phase": "Running"}}


def deployment(ns: str, name: str, desired: int, ready: int, updated: int | None = None,
               observed: int = 2) -> Any:
    return workload_from_object("Deployment", {
        "metadata": {"namespace": ns, "name": name, "uid": name, "generation": 2},
        "spec": {"replicas": desired, "template": {"metadata": {}}},
        "status": {"observedGeneration": observed, "replicas": desired, "readyReplicas": ready,
                   "availableReplicas": ready, "updatedReplicas": desired if updated is None else updated}})


def test_data_plane_gate_is_mesh_status_reading() -> None:
    healthy = status("s", DEPLOYED, [pod("shop", "a", "new", NEW), pod("legacy", "b", "old", OLD)])
    assert gates.data_plane(healthy, {}).ok is True
    assert gates.data_plane(healthy, {}).message == "every pod of 3 bound namespace(s) on its revision and proxy"
    moved_half = status("s", DEPLOYED, [pod("shop", "a", "new", NEW), pod("shop", "b", "old", OLD),
                                        pod("batch", "c", "new", OLD), pod("batch", "d", None, None)])
    result = gates.data_plane(moved_half, {})
    assert result.ok is False
    assert result.message == ("`batch`: 1 pods on an older proxy than `new` injects; `batch`: 1 pods not injected, "
                              "bound to `new`; `shop`: 1 pods on `old`, bound to `new`")
    # Pods of a namespace bound `natural` or `none` move on their next deploy: not a failure.
    assert gates.data_plane(moved_half, {"shop": "natural", "batch": "none"}).ok is True


def test_readiness_istiod_and_node_agent_gates() -> None:
    ready = gates.workloads_ready({"shop": [deployment("shop", "web", 2, 2)]})
    assert (ready.ok, ready.message) == (True, "1 workload(s) of the bound namespaces ready")
    stuck = gates.workloads_ready({"shop": [deployment("shop", "web", 2, 2), deployment("shop", "api", 1, 0)],
                                   "batch": [deployment("batch", "old", 1, 1, observed=1)]})
    assert stuck.ok is False
    assert stuck.message == "`batch/Deployment/old`: 1/1 ready, 1 updated; `shop/Deployment/api`: 0/1 ready, 1 updated"

    st = status("s", DEPLOYED, [])
    istiods = {"old": gates.Rollout("istio-system/istiod-old", 1, 1, 1),
               "new": gates.Rollout("istio-system/istiod-new", 2, 1, 2)}
    assert gates.istiod_ready(st, istiods, ()).message == "`new`: istio-system/istiod-new 2/2 ready, 1 updated"
    assert gates.istiod_ready(st, {"old": istiods["old"]}, ()).message == "`new`: no istiod Deployment"
    assert gates.istiod_ready(st, {"old": istiods["old"]}, {"new"}).ok is True  # external: its installer's
    fine = {"old": istiods["old"], "new": gates.Rollout("istio-system/istiod-new", 2, 2, 2)}
    assert gates.istiod_ready(st, fine, ()).ok is True
    assert gates.istiod_ready(st, {**fine, "new": gates.Rollout("x", 1, 1, 1, current_generation=False)}, ()).ok \
        is False

    assert gates.node_agents([]).message == "none installed (no CNI, no ztunnel)"
    agents = [gates.Rollout("istio-system/istio-cni-node", 3, 3, 3), gates.Rollout("istio-system/ztunnel", 3, 2, 3)]
    assert gates.node_agents(agents).message == "istio-system/ztunnel: 3/3 ready, 2 updated"
    assert gates.node_agents(agents[:1]).ok is True


def test_only_new_overlaps_fail() -> None:
    old = Overlap("legacy", ["istio-sidecar-injector-old", "istio-revision-tag-default"], {})
    new = Overlap("shop", ["istio-sidecar-injector-new", "istio-revision-tag-default"], {})
    assert gates.new_overlaps([old], [old]).ok is True
    found = gates.new_overlaps([old, new], [old])
    assert (found.ok, found.message) == (
        False, "`shop`: istio-revision-tag-default, istio-sidecar-injector-new would all inject one pod")
    assert gates.new_overlaps([old, new], None).ok is True  # not updated: every overlap is older than the run


def test_prometheus_gate() -> None:
    assert gates.prometheus(None, "no Prometheus URL for stack dev", 0.5, "q").ok is None
    assert gates.prometheus(0.2, None, 0.5, "q").message == "q = 0.2 (at most 0.5)"
    assert gates.prometheus(0.7, None, 0.5, "q") == gates.GateResult("prometheus", False, "q = 0.7, above 0.5")
    unanswered = gates.prometheus(float("nan"), "unanswered: http://p: URLError", 0.5, "q")
    assert (unanswered.ok, unanswered.message) == (False, "q: Prometheus unanswered: http://p: URLError")
    vector = {"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {"a": "1"}, "value": [1, "0.25"]}, {"metric": {"a": "2"}, "value": [1, "0.75"]}]}}
    assert prometheus_value(vector) == 0.75
    assert prometheus_value({"status": "success", "data": {"resultType": "vector", "result": []}}) == 0.0
    assert prometheus_value({"status": "success", "data": {"resultType": "scalar", "result": [1, "3"]}}) == 3.0
    with pytest.raises(ValueError, match="query error: parse error"):
        prometheus_value({"status": "error", "error": "parse error"})


class FakePrometheus(BaseHTTPRequestHandler):
    """Answers /api/v1/query on loopback as Prometheus' HTTP API does: the query `up` with a vector, any other
    with a 400 and an error body."""

    def do_GET(self) -> None:
        query = parse_qs(urlparse(self.path).query).get("query", [""])[0]
        if urlparse(self.path).path == "/api/v1/query" and query == "up":
            code, body = 200, {"status": "success", "data": {"resultType": "vector", "result": [
                {"metric": {"job": "istiod"}, "value": [0, "0.125"]}]}}
        else:
            code, body = 400, {"status": "error", "errorType": "bad_data", "error": "parse error"}
        payload = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: Any) -> None:
        pass


def test_query_prometheus_over_http() -> None:
    server = HTTPServer(("127.0.0.1", 0), FakePrometheus)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_port}/"
    try:
        assert query_prometheus(url, "up") == 0.125
        with pytest.raises(PrometheusError, match="HTTP Error 400"):
            query_prometheus(url, "sum(")
    finally:
        server.shutdown()
        server.server_close()
    with pytest.raises(PrometheusError, match=f"{url}: URLError"):
        query_prometheus(url, "up")  # nothing listens any more


# ---- report ---------------------------------------------------------------------------------------------
def test_stop_message_names_the_cause_what_is_untouched_and_how_to_resume() -> None:
    waves = [Wave(0, ("dev",)), Wave(1, ("staging-eu", "staging-us")), Wave(2, ("prod-eu",))]
    runs = {"dev": StackRun("dev", 0, "converged"),
            "staging-eu": StackRun("staging-eu", 1, "unhealthy", {"update": 2}, gates=[
                gates.GateResult("workloads ready", False, "`shop/Deployment/api`: 0/1 ready, 1 updated"),
                gates.GateResult("prometheus", None, "skipped")])}
    assert not wave_healthy([runs["staging-eu"]])
    assert wave_healthy([runs["dev"]])
    text = stop_message(waves, runs, waves[1], "python -m mesh fleet up --fleet fleet.yaml")
    assert text.splitlines() == [
        "Stopped at wave 2 (staging-eu, staging-us).",
        "- `staging-eu` unhealthy: gate workloads ready: `shop/Deployment/api`: 0/1 ready, 1 updated",
        "Untouched: staging-us, prod-eu.",
        "Fix the cause, then resume with `python -m mesh fleet up --fleet fleet.yaml`: stacks whose preview shows "
        "no change are not updated again, only their gates are held.",
    ]
    locked = {"dev": StackRun("dev", 0, "locked", message="the stack is currently locked by 1 lock(s)")}
    text = stop_message(waves, locked, waves[0], "cmd")
    assert "- `dev` locked: the stack is currently locked by 1 lock(s)" in text
    assert "never cancel it from here" in text and "Untouched: staging-eu, staging-us, prod-eu." in text


def test_plan_summary_counts_changes_restarts_and_refusals() -> None:
    waves = [Wave(0, ("dev",)), Wave(1, ("prod",))]
    runs = {"dev": StackRun("dev", 0, "planned", {"update": 3, "create": 1}, restarts=4),
            "prod": StackRun("prod", 1, "converged", restarts=None,
                             refusals=["istio-mesh:revisions.a.values.x: refused"])}
    text = plan_summary(waves, runs, ["sandbox"])
    assert "| 1 | dev | 1 to create, 3 to update | 4 | none |" in text
    assert "| 2 | prod | no changes | ? | istio-mesh:revisions.a.values.x: refused |" in text
    assert "1 of 2 stack(s) change, 4 workload(s) restarted in all, 1 stack(s) refused." in text
    assert "Not in any wave (a fleet run never touches them): sandbox." in text


def test_a_lock_is_reported_in_the_backends_words() -> None:
    """As the Automation API raises it when a diy backend's stack is locked (text from the fleet e2e)."""
    error = ConcurrentUpdateError(CommandResult(stdout="", code=255, stderr=(
        "error: the stack is currently locked by 1 lock(s). Either wait for the other process(es) to end or delete "
        "the lock file with `pulumi cancel`.\n  file:///state/.pulumi/locks/organization/istio-mesh/c2/x.json: "
        "created by release-bot@ci-runner-7 (pid 4242) at 2026-12-07T03:56:16Z\n")))
    assert _lock_message(error) == (
        "the stack is currently locked by 1 lock(s). Either wait for the other process(es) to end or delete the lock "
        "file with `pulumi cancel`. file:///state/.pulumi/locks/organization/istio-mesh/c2/x.json: created by "
        "release-bot@ci-runner-7 (pid 4242) at 2026-12-07T03:56:16Z")
