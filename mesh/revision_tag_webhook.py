"""A revision tag's injection webhook and Service, as manifests (pure).

Mirrors the istiod chart's `revision-tags-mwc.yaml` / `revision-tags-svc.yaml`, but owned by the tag
instead of by a revision's chart: a tag must outlive the revisions it points at, and moving it must be
an in-place update of one webhook's target (`istiod-<revision>`), never a delete and create.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mesh.istio_vocabulary import (
    DEFAULT_TAG,
    INJECT_KEY,
    ISTIO_NAMESPACE,
    LEGACY_INJECTION_ENABLED,
    LEGACY_INJECTION_LABEL,
    NEVER_INJECTED_NAMESPACES,
    REV_LABEL,
    TAG_LABEL,
    istiod_service,
)
from mesh.spec import parse_version

MANAGED_BY = "istio-mesh"
"""The `app.kubernetes.io/managed-by` label of every webhook and Service the program renders."""
SERVER_OWNED_METADATA = ("uid", "resourceVersion", "generation", "creationTimestamp", "managedFields", "selfLink")
"""Metadata the API server writes: never kept, never sent back."""
TAG_SERVICE_SINCE = (1, 28)
"""Istio renders a Service per tag (`istiod-revision-tag-<tag>`) since 1.28; the 1.27 branch has none."""


@dataclass(frozen=True)
class InjectorSettings:
    """The revision's chart values a tag webhook takes, as the chart's `revision-tags-mwc.yaml` and
    `istioctl tag set` do, so a tag injects exactly like the revision's own webhook."""

    reinvocation_policy: str = "Never"
    injection_path: str = "/inject"
    injection_url: str = ""
    enable_namespaces_by_default: bool = False

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> InjectorSettings:
        """Read from a revision's `values` (absent keys keep the chart's defaults)."""
        webhook = values.get("sidecarInjectorWebhook") or {}
        remote = values.get("istiodRemote") or {}
        return cls(
            reinvocation_policy=webhook.get("reinvocationPolicy") or cls.reinvocation_policy,
            injection_path=remote.get("injectionPath") or cls.injection_path,
            injection_url=remote.get("injectionURL") or cls.injection_url,
            enable_namespaces_by_default=bool(webhook.get("enableNamespacesByDefault", False)),
        )


def webhook_name(tag: str) -> str:
    return f"istio-revision-tag-{tag}"


def service_name(tag: str) -> str:
    return f"istiod-revision-tag-{tag}"


def _labels(tag: str, revision: str) -> dict[str, str]:
    return {
        TAG_LABEL: tag,
        REV_LABEL: revision,
        "app": "sidecar-injector",
        "app.kubernetes.io/name": "istiod",
        "app.kubernetes.io/managed-by": MANAGED_BY,
    }


def _not_opted_out() -> dict[str, Any]:
    return {"key": INJECT_KEY, "operator": "NotIn", "values": ["false"]}


def _hook(prefix: str, revision: str, injector: InjectorSettings, namespace_selector: list[dict[str, Any]],
          object_selector: list[dict[str, Any]]) -> dict[str, Any]:
    client: dict[str, Any] = (
        {"url": injector.injection_url} if injector.injection_url else
        {"service": {"name": istiod_service(revision), "namespace": ISTIO_NAMESPACE,
                     "path": injector.injection_path, "port": 443}}
    )
    return {
        "name": f"{prefix}sidecar-injector.istio.io",
        "clientConfig": client,
        "sideEffects": "None",
        "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}],
        "failurePolicy": "Fail",
        "reinvocationPolicy": injector.reinvocation_policy,
        "admissionReviewVersions": ["v1"],
        "namespaceSelector": {"matchExpressions": namespace_selector},
        "objectSelector": {"matchExpressions": object_selector},
    }


def tag_webhook(tag: str, revision: str, revision_values: Mapping[str, Any]) -> dict[str, Any]:
    """The MutatingWebhookConfiguration that injects pods selecting `tag` with `revision`'s istiod,
    configured from that revision's chart values."""
    injector = InjectorSettings.from_values(revision_values)
    no_legacy = {"key": LEGACY_INJECTION_LABEL, "operator": "DoesNotExist"}
    no_rev = {"key": REV_LABEL, "operator": "DoesNotExist"}
    webhooks = [
        _hook("rev.namespace.", revision, injector,
              [{"key": REV_LABEL, "operator": "In", "values": [tag]}, no_legacy],
              [_not_opted_out()]),
        _hook("rev.object.", revision, injector,
              [no_rev, no_legacy],
              [_not_opted_out(), {"key": REV_LABEL, "operator": "In", "values": [tag]}]),
    ]
    if tag == DEFAULT_TAG:
        # The default tag also serves the legacy label and revisionless `sidecar.istio.io/inject=true` pods.
        webhooks += [
            _hook("namespace.", revision, injector,
                  [{"key": LEGACY_INJECTION_LABEL, "operator": "In", "values": [LEGACY_INJECTION_ENABLED]}],
                  [_not_opted_out()]),
            _hook("object.", revision, injector,
                  [no_legacy, no_rev],
                  [{"key": INJECT_KEY, "operator": "In", "values": ["true"]}, no_rev]),
        ]
        if injector.enable_namespaces_by_default:
            # Every namespace without a label, except those Istio never injects.
            webhooks.append(_hook(
                "auto.", revision, injector,
                [no_legacy, no_rev, {"key": "kubernetes.io/metadata.name", "operator": "NotIn",
                                     "values": list(NEVER_INJECTED_NAMESPACES)}],
                [{"key": INJECT_KEY, "operator": "DoesNotExist"}, no_rev],
            ))
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": webhook_name(tag), "labels": _labels(tag, revision)},
        "webhooks": webhooks,
    }


def is_ours(hook: Mapping[str, Any]) -> bool:
    """Whether a live webhook configuration is one the program rendered (its label says so)."""
    labels = (hook.get("metadata") or {}).get("labels") or {}
    return labels.get("app.kubernetes.io/managed-by") == MANAGED_BY


def previous_tag_webhook(live: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """What to keep of a tag webhook (or the tag's Service) found before the program applies its own
    (`istioctl install` makes `istio-revision-tag-default` and `istiod-revision-tag-default`, so does `istioctl
    tag set default`), so that removing the tag puts that one back as it was: everything but what the API
    server owns. None when there is none, or it is ours already."""
    if live is None or is_ours(live):
        return None
    kept = copy.deepcopy(dict(live))
    kept["metadata"] = {k: v for k, v in (kept.get("metadata") or {}).items() if k not in SERVER_OWNED_METADATA}
    return kept


def tag_service(tag: str, revision: str, version: str) -> dict[str, Any] | None:
    """The tag's Service in front of `revision`'s istiod pods, for versions that have one."""
    v = parse_version(version)
    if (v.major, v.minor) < TAG_SERVICE_SINCE:
        return None
    labels = {**_labels(tag, revision), "app": "istiod", "istio": "pilot"}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": service_name(tag), "namespace": ISTIO_NAMESPACE, "labels": labels},
        "spec": {
            "ports": [
                {"port": 15010, "name": "grpc-xds", "protocol": "TCP"},
                {"port": 15012, "name": "https-dns", "protocol": "TCP"},
                {"port": 443, "name": "https-webhook", "targetPort": 15017, "protocol": "TCP"},
                {"port": 15014, "name": "http-monitoring", "protocol": "TCP"},
            ],
            "selector": {"app": "istiod", REV_LABEL: revision},
        },
    }
