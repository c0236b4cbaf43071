"""What an istiod revision leaves in a cluster for the webhook route to work, minus istiod itself.

``install_fake_revision`` creates the revision's ``istiod-<rev>`` Service, its injector ConfigMap
(the hub and tag the stand-in injector reads) and its ``istio-sidecar-injector-<rev>`` webhook,
built by hand with the selectors of Istio's chart (template ``mutatingwebhook.yaml``: entries
``rev.namespace.`` and ``rev.object.``), so the apiserver, not the stand-in, decides which revision
injects a pod. The harness's own tests and the restart benchmark use it where rendering the real
istiod chart through Pulumi would be beside the point.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

ISTIO_NS = "istio-system"
HUB = "docker.io/istio"


def create_or_keep(fn: Callable[..., Any], *args: Any) -> None:
    """Create, keeping what exists (409): installing twice is harmless."""
    try:
        fn(*args)
    except ApiException as e:
        if e.status != 409:
            raise


def revision_webhook(rev: str, tag: str | None = None) -> dict[str, Any]:
    """istio-sidecar-injector-<rev>, as the istiod chart renders it for revision `rev`.

    With `tag`: istio-revision-tag-<tag>, the same entries keyed on the tag's name but
    calling the revision's Service (chart template revision-tags-mwc.yaml).
    """
    key = tag or rev
    not_disabled = {"key": "sidecar.istio.io/inject", "operator": "NotIn", "values": ["false"]}

    def entry(prefix: str, ns_sel: list[dict[str, Any]], obj_sel: list[dict[str, Any]]) -> dict:
        return {
            "name": f"{prefix}sidecar-injector.istio.io",
            "clientConfig": {
                "service": {
                    "name": f"istiod-{rev}",
                    "namespace": ISTIO_NS,
                    "path": "/inject",
                    "port": 443,
                }
            },
            "sideEffects": "None",
            "rules": [
                {
                    "operations": ["CREATE"],
                    "apiGroups": [""],
                    "apiVersions": ["v1"],
                    "resources": ["pods"],
                }
            ],
            "failurePolicy": "Fail",
            "reinvocationPolicy": "Never",
            "admissionReviewVersions": ["v1"],
            "namespaceSelector": {"matchExpressions": ns_sel},
            "objectSelector": {"matchExpressions": obj_sel},
        }

    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {
            "name": f"istio-revision-tag-{tag}" if tag else f"istio-sidecar-injector-{rev}",
            "labels": {"istio.io/rev": rev, "app": "sidecar-injector"} | ({"istio.io/tag": tag} if tag else {}),
        },
        "webhooks": [
            entry(
                "rev.namespace.",
                [
                    {"key": "istio.io/rev", "operator": "In", "values": [key]},
                    {"key": "istio-injection", "operator": "DoesNotExist"},
                ],
                [not_disabled],
            ),
            entry(
                "rev.object.",
                [
                    {"key": "istio.io/rev", "operator": "DoesNotExist"},
                    {"key": "istio-injection", "operator": "DoesNotExist"},
                ],
                [not_disabled, {"key": "istio.io/rev", "operator": "In", "values": [key]}],
            ),
        ],
    }


def install_fake_revision(api: k8s.ApiClient, rev: str, tag: str) -> None:
    """What the istiod chart leaves behind that the webhook route needs, minus istiod pods."""
    core = k8s.CoreV1Api(api)
    labels = {"app": "istiod", "istio.io/rev": rev}
    create_or_keep(
        core.create_namespaced_service,
        ISTIO_NS,
        {
            "metadata": {"name": f"istiod-{rev}", "labels": labels},
            "spec": {
                "selector": labels,
                "ports": [{"name": "https-webhook", "port": 443, "targetPort": 15017}],
            },
        },
    )
    values = {"global": {"hub": HUB, "tag": tag}, "revision": rev}
    create_or_keep(
        core.create_namespaced_config_map,
        ISTIO_NS,
        {
            "metadata": {"name": f"istio-sidecar-injector-{rev}", "labels": labels},
            "data": {"values": json.dumps(values), "config": "{}"},
        },
    )
    create_or_keep(
        k8s.AdmissionregistrationV1Api(api).create_mutating_webhook_configuration,
        revision_webhook(rev),
    )
