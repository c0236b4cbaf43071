"""Rules of the drain guard: which pods keep a revision in use, and the refusal message."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest

from mesh.drain import Selectors, pods_using, refusal_message, revision_used, selectors_of, template_from_object
from mesh.istio_vocabulary import INJECT_KEY
from mesh.providers import drain_guard
from mesh.providers.drain_guard import DrainGuardProvider
from mesh.workloads import Pod, pod_from_object


def pod(ns: str, name: str, annotation: str | None = None, label: str | None = None, *, injectable: bool = True,
        live: bool = True) -> Pod:
    return Pod(ns, name, annotation, None, injectable, live, revision_label=label)


@pytest.mark.parametrize(
    ("annotation", "label", "injectable", "used"),
    [
        ("a", None, True, "a"),  # injected by a
        ("b", "a", True, "b"),  # labelled a, but its namespace label won: runs b's proxy
        ("a", None, False, "a"),  # injected before it opted out: still runs a's proxy
        (None, "a", True, "a"),  # asks for a by label, not injected: its next recreation needs a
        (None, "a", False, None),  # labelled a but never injected (opted out, hostNetwork): never needs a
        (None, None, True, None),
    ],
)
def test_which_revision_a_pod_keeps_in_use(
    annotation: str | None, label: str | None, injectable: bool, used: str | None
) -> None:
    assert revision_used(pod("ns", "p", annotation, label, injectable=injectable)) == used


def test_reading_pods_ignores_finished_and_terminating_ones() -> None:
    def obj(phase: str) -> dict[str, Any]:
        return {
            "metadata": {
                "namespace": "ns",
                "name": "p",
                "annotations": {"istio.io/rev": "a"},
                "labels": {"istio.io/rev": "gw"},
            },
            "status": {"phase": phase},
        }

    running = pod_from_object(obj("Running"))
    assert (running.revision, running.revision_label, running.injectable) == ("a", "gw", True)
    assert revision_used(running) == "a"
    opted_out = obj("Running")
    opted_out["metadata"]["labels"][INJECT_KEY] = "false"
    assert pod_from_object(opted_out).injectable is False
    assert revision_used(pod_from_object(opted_out)) == "a"
    terminating = obj("Running")
    terminating["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    for gone in (obj("Succeeded"), obj("Failed"), terminating):
        assert revision_used(pod_from_object(gone)) is None
        assert pods_using([pod_from_object(gone)], "a") == {}


@pytest.mark.parametrize(
    ("labels", "annotations", "spec", "pinned"),
    [
        ({}, {}, {}, True),
        ({}, {INJECT_KEY: "false"}, {}, False),
        ({INJECT_KEY: "false"}, {}, {}, False),
        ({INJECT_KEY: "true"}, {INJECT_KEY: "false"}, {}, True),  # the label beats the annotation
        ({INJECT_KEY: ""}, {INJECT_KEY: "false"}, {}, True),  # present, even empty, it still replaces it
        ({}, {INJECT_KEY: "False"}, {}, True),  # only the exact "false" opts out
        ({}, {}, {"hostNetwork": True}, False),  # never injected
    ],
)
def test_a_label_only_pod_pins_the_revision_unless_istiod_would_never_inject_it(
    labels: dict, annotations: dict, spec: dict, pinned: bool
) -> None:
    """The guard reads pods through mesh.workloads: the same injection rules as the rollout planner."""
    obj = {
        "metadata": {"namespace": "ns", "name": "gw-1", "labels": {"istio.io/rev": "a", **labels},
                     "annotations": annotations},
        "spec": spec,
        "status": {"phase": "Running"},
    }
    assert (revision_used(pod_from_object(obj)) == "a") is pinned
    assert pods_using([pod_from_object(obj)], "a") == ({"ns": ["gw-1"]} if pinned else {})


def test_pods_using_groups_by_namespace_sorted() -> None:
    pods = [pod("z", "z1", "a"), pod("shop", "web-2", "a"), pod("shop", "web-1", "a"), pod("shop", "x", "b"),
            pod("shop", "old", "a", live=False)]
    assert pods_using(pods, "a") == {"shop": ["web-1", "web-2"], "z": ["z1"]}
    assert pods_using(pods, "c") == {}


def test_free_revision_has_no_refusal() -> None:
    assert refusal_message("a", {}) is None


def test_refusal_names_namespaces_counts_and_how_to_move_them() -> None:
    users = {"shop": [f"web-{i}" for i in range(5)], "istio-ingress": ["gw-1"]}
    message = refusal_message("1-29-2", users)
    assert message is not None
    assert message.startswith("revision 1-29-2 is still in use by 6 pod(s) in 2 namespace(s)")
    assert "  shop: 5 pod(s) (web-0, web-1, web-2, +2 more)" in message
    assert "  istio-ingress: 1 pod(s) (gw-1)" in message
    assert "rolling" in message and "pulumi up" in message
    assert "kubectl rollout restart deployment,statefulset,daemonset -n <namespace>" in message
    assert "istio.io/rev=1-29-2" in message
    assert "stays installed" in message


def workload(kind: str, ns: str, name: str, labels: dict[str, str], host_network: bool = False) -> dict[str, Any]:
    template = {"metadata": {"labels": labels}, "spec": {"hostNetwork": host_network}}
    spec = {"jobTemplate": {"spec": {"template": template}}} if kind == "CronJob" else {"template": template}
    return {"metadata": {"namespace": ns, "name": name}, "spec": spec}


def test_namespace_labels_and_pod_templates_still_selecting_the_revision_keep_it_in_use() -> None:
    """No pod alive (a CronJob between runs, a Deployment scaled to 0, a namespace labelled by hand): once the
    revision is gone, their next pods would start without a sidecar, and nothing would fail."""
    namespaces = {"batch": {"istio.io/rev": "a"}, "legacy": {"istio.io/rev": "a", "istio-injection": "enabled"},
                  "other": {"istio.io/rev": "b"}, "plain": {}, "kube-system": {"istio.io/rev": "a"}}
    templates = [
        template_from_object("CronJob", workload("CronJob", "plain", "nightly", {"istio.io/rev": "a"})),
        template_from_object("Deployment", workload("Deployment", "plain", "idle", {"istio.io/rev": "a"})),
        template_from_object("Deployment", workload("Deployment", "other", "ns-wins", {"istio.io/rev": "a"})),
        template_from_object("Deployment", workload(
            "Deployment", "plain", "opted-out", {"istio.io/rev": "a", INJECT_KEY: "false"})),
        template_from_object("DaemonSet", workload("DaemonSet", "plain", "host", {"istio.io/rev": "a"}, True)),
        template_from_object("Deployment", workload("Deployment", "kube-system", "dns", {"istio.io/rev": "a"})),
    ]
    found = selectors_of("a", namespaces, templates)
    assert found == Selectors(namespaces=["batch"], templates={"plain": ["CronJob/nightly", "Deployment/idle"]})
    message = refusal_message("a", {}, found)
    assert message is not None and message.startswith("revision a is still selected by 1 namespace label(s) "
                                                      "and 2 pod template(s)")
    assert "  namespace batch: istio.io/rev=a" in message
    assert "  plain: CronJob/nightly, Deployment/idle" in message
    assert "kubectl label namespace <namespace> istio.io/rev=<tag or revision> --overwrite" in message
    assert selectors_of("c", namespaces, templates) == Selectors()
    assert refusal_message("c", {}, Selectors()) is None


# --- the provider around the rules ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("news", "changes", "replaces"),
    [
        ({"revision": "a", "drain_timeout_seconds": 0.0}, False, []),
        ({"revision": "a", "drain_timeout_seconds": 60.0}, True, []),  # delete reads it from the state
        ({"revision": "b", "drain_timeout_seconds": 0.0}, True, ["revision"]),
    ],
)
def test_guard_diff(news: dict, changes: bool, replaces: list[str]) -> None:
    result = DrainGuardProvider().diff("a", {"revision": "a", "drain_timeout_seconds": 0.0}, news)
    assert (result.changes, result.replaces) == (changes, replaces)


def test_guard_check() -> None:
    failures = DrainGuardProvider().check({}, {"revision": "", "drain_timeout_seconds": -1.0}).failures
    assert [f.property for f in failures] == ["revision", "drain_timeout_seconds"]


class FakeCluster:
    """Pods using the revision, one answer per poll, and a clock that sleeps instantly."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, answers: list[dict[str, list[str]]]) -> None:
        self.answers, self.now, self.polls = answers, 0.0, 0
        self.selectors = Selectors()
        monkeypatch.setattr(drain_guard, "revision_users", self.users)
        monkeypatch.setattr(drain_guard, "revision_selectors", lambda _api, _revision: self.selectors)
        monkeypatch.setattr(drain_guard, "monotonic", lambda: self.now)
        monkeypatch.setattr(drain_guard, "sleep", self.sleep)
        monkeypatch.setattr(drain_guard.kube, "api_client", lambda _settings: contextlib.nullcontext())

    def users(self, _api: object, revision: str) -> dict[str, list[str]]:
        self.polls += 1
        return self.answers[min(self.polls, len(self.answers)) - 1]

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_guard_delete_waits_for_the_drain_then_lets_go(monkeypatch: pytest.MonkeyPatch) -> None:
    cluster = FakeCluster(monkeypatch, [{"shop": ["web-1"]}, {"shop": ["web-1"]}, {}])
    DrainGuardProvider().delete("a", {"revision": "a", "drain_timeout_seconds": 60.0})
    assert cluster.polls == 3
    assert cluster.now == 2 * drain_guard.POLL_SECONDS


def test_guard_delete_refuses_after_the_drain_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    cluster = FakeCluster(monkeypatch, [{"shop": ["web-1"]}])
    with pytest.raises(drain_guard.RevisionInUseError, match="revision a is still in use by 1 pod"):
        DrainGuardProvider().delete("a", {"revision": "a", "drain_timeout_seconds": 12.0})
    assert cluster.now == 12.0  # waited the whole timeout, not a poll more


def test_guard_delete_without_timeout_refuses_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    cluster = FakeCluster(monkeypatch, [{"shop": ["web-1"]}])
    with pytest.raises(drain_guard.RevisionInUseError):
        DrainGuardProvider().delete("a", {"revision": "a", "drain_timeout_seconds": 0.0})
    assert (cluster.polls, cluster.now) == (1, 0.0)


def test_guard_delete_refuses_while_a_namespace_label_still_selects_the_revision(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """No pod left, but `batch` is labelled istio.io/rev=a (a CronJob's namespace between runs)."""
    cluster = FakeCluster(monkeypatch, [{}])
    cluster.selectors = Selectors(namespaces=["batch"], templates={"batch": ["CronJob/nightly"]})
    with pytest.raises(drain_guard.RevisionInUseError, match=r"namespace batch: istio\.io/rev=a"):
        DrainGuardProvider().delete("a", {"revision": "a", "drain_timeout_seconds": 0.0})
