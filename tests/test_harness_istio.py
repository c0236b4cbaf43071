"""The harness's pure parts around real istiod: how a Deployment becomes a local istiod's command line,
how the apiserver's audit events become pod admissions, and how istioctl's output is read."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.admission_log import parse_event
from harness.istio_checks import parse_analysis
from harness.istiod import arguments, environment, fingerprint, revision_of

KUBECONFIG = Path("/tmp/admin.kubeconfig")


def deployment(env: list[dict[str, Any]], args: list[str] | None = None, image: str = "docker.io/istio/pilot:1.30.0"
               ) -> dict[str, Any]:
    return {
        "metadata": {"name": "istiod-1-30-0", "namespace": "istio-system", "labels": {"istio.io/rev": "1-30-0"}},
        "spec": {"template": {"spec": {"serviceAccountName": "istiod-1-30-0", "containers": [
            {"name": "discovery", "image": image, "args": args or ["discovery", "--monitoringAddr=:15014"],
             "env": env}]}}},
    }


CHART_ENV = [
    {"name": "REVISION", "value": "1-30-0"},
    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
    {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
    {"name": "SERVICE_ACCOUNT", "valueFrom": {"fieldRef": {"fieldPath": "spec.serviceAccountName"}}},
    {"name": "KUBECONFIG", "value": "/var/run/secrets/remote/config"},
    {"name": "GOMAXPROCS", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu", "divisor": "1"}}},
]


def test_environment_resolves_field_references_as_for_one_pod() -> None:
    env = environment(deployment(CHART_ENV), KUBECONFIG)
    assert env["REVISION"] == "1-30-0"
    assert (env["POD_NAME"], env["POD_NAMESPACE"], env["SERVICE_ACCOUNT"]) == (
        "istiod-1-30-0-local", "istio-system", "istiod-1-30-0")
    assert env["KUBECONFIG"] == str(KUBECONFIG), "the chart's remote-secret path is replaced"
    assert env["GOMAXPROCS"] == "1"
    assert env["JWT_POLICY"] == "first-party-jwt"


def test_arguments_keep_the_charts_and_move_every_listener_to_loopback() -> None:
    ports = {"httpAddr": 1, "grpcAddr": 2, "secureGRPCAddr": 3, "monitoringAddr": 4, "httpsAddr": 5, "ctrlz": 6}
    args = arguments(deployment(CHART_ENV, ["discovery", "--monitoringAddr=:15014", "--domain", "cluster.local"]),
                     ports, KUBECONFIG)
    assert args[:4] == ["discovery", "--monitoringAddr=:15014", "--domain", "cluster.local"]
    assert args[4:] == ["--httpAddr=127.0.0.1:1", "--grpcAddr=127.0.0.1:2", "--secureGRPCAddr=127.0.0.1:3",
                        "--monitoringAddr=127.0.0.1:4", "--httpsAddr=127.0.0.1:5", "--ctrlz_port=6",
                        f"--kubeconfig={KUBECONFIG}"]


def test_revision_and_fingerprint_follow_the_template() -> None:
    dep = deployment(CHART_ENV)
    assert revision_of(dep) == "1-30-0"
    assert revision_of(deployment([])) == "1-30-0", "the label when the env has no REVISION"
    assert fingerprint(dep) == fingerprint(deployment(CHART_ENV))
    assert fingerprint(dep) != fingerprint(deployment(CHART_ENV, image="docker.io/istio/pilot:1.30.1"))


def audit_event(annotations: dict[str, str], pod: dict[str, Any] | None, code: int = 201) -> dict[str, Any]:
    return {
        "stage": "ResponseComplete", "verb": "create",
        "objectRef": {"resource": "pods", "namespace": "shop", "apiVersion": "v1"},
        "requestReceivedTimestamp": "2026-12-06T10:00:00.000000Z",
        "stageTimestamp": "2026-12-06T10:00:01.500000Z",
        "annotations": annotations, "responseStatus": {"code": code},
        "requestObject": {"metadata": {"generateName": "web-7d9-"}},
        **({"responseObject": pod} if pod else {}),
    }


def mutation(configuration: str, mutated: bool) -> str:
    return json.dumps({"configuration": configuration, "webhook": "rev.namespace.sidecar-injector.istio.io",
                       "mutated": mutated})


def test_an_audit_event_says_which_injectors_changed_the_pod() -> None:
    pod = {"metadata": {"name": "web-7d9-abcde", "annotations": {
        "istio.io/rev": "1-31-0", "sidecar.istio.io/status": '{"revision":"1-31-0"}'}},
        "spec": {"containers": [{"name": "app", "image": "app:1"},
                                {"name": "istio-proxy", "image": "docker.io/istio/proxyv2:1.31.0"}]}}
    admitted = parse_event(audit_event({
        "mutation.webhook.admission.k8s.io/round_1_index_0": mutation("istio-revision-tag-default", False),
        "mutation.webhook.admission.k8s.io/round_0_index_0": mutation("istio-revision-tag-default", True),
        "mutation.webhook.admission.k8s.io/round_0_index_1": mutation("other-webhook", True),
        "authorization.k8s.io/decision": "allow"}, pod))
    assert admitted is not None
    assert (admitted.namespace, admitted.name) == ("shop", "web-7d9-abcde")
    assert admitted.webhooks == (("istio-revision-tag-default", True), ("other-webhook", True),
                                 ("istio-revision-tag-default", False)), "in call order, rounds first"
    assert admitted.injectors == ["istio-revision-tag-default"]
    assert (admitted.revision, admitted.proxy_image, admitted.patched) == (
        "1-31-0", "docker.io/istio/proxyv2:1.31.0", True)
    assert admitted.time == 1796551201.5


def test_a_refused_create_and_other_events_are_read_as_such() -> None:
    refused = parse_event(audit_event(
        {"mutation.webhook.admission.k8s.io/round_0_index_0": mutation("istio-sidecar-injector-1-30-0", False)},
        None, code=500))
    assert refused is not None and (refused.code, refused.patched, refused.revision) == (500, False, "")
    assert parse_event({**audit_event({}, None), "verb": "delete"}) is None
    assert parse_event({**audit_event({}, None), "stage": "RequestReceived"}) is None


def test_analysis_keeps_injection_findings_at_warning_or_error() -> None:
    output = json.dumps([
        {"code": "IST0139", "level": "Error", "origin": "MutatingWebhookConfiguration a", "message": "overlap"},
        {"code": "IST0102", "level": "Info", "origin": "Namespace plain", "message": "not injected"},
        {"code": "IST0103", "level": "Warning", "origin": "Pod shop/web", "message": "missing proxy"},
        {"code": "IST0118", "level": "Warning", "origin": "Service shop/web", "message": "port name"},
    ])
    assert [(m.code, m.origin) for m in parse_analysis(output)] == [
        ("IST0103", "Pod shop/web"), ("IST0139", "MutatingWebhookConfiguration a")]
    assert parse_analysis("\n✔ No validation issues found when analyzing all namespaces.\n") == []
