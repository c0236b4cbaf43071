"""What each Helm chart is rendered from, and with which values. Pure: spec in, plain data out.

Chart inputs stay plain values derived from config (never outputs of other resources), so the
Kubernetes provider can render every chart during `pulumi preview` and show each object's diff.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from mesh.istio_vocabulary import ISTIO_NAMESPACE
from mesh.platform import platform_values
from mesh.spec import DEFAULT_CHART_REPOSITORY, ChartSource, GatewaySpec, MeshSpec

ChartName = Literal["base", "istiod", "gateway", "cni"]

FAIL_CLOSED = {"base": {"validationFailurePolicy": "Fail"}}
"""Validating webhooks rendered with `failurePolicy: Fail` from the start. Rendered as a fresh install (as
Helm v4 charts are), the charts say `Ignore` and istiod flips it to `Fail` with an Update under its own
field manager; the next server-side apply of that webhook would send `Ignore` again and fail with a
conflict with `pilot-discovery` (istio#45204). The charts' values recommend this for server-side-apply
tools. The other field istiod writes, `caBundle`, is never rendered, so it is never applied: no ignore
rule is needed for either (and ignore paths into the `webhooks` list would not match anyway)."""


@dataclass(frozen=True)
class ChartRef:
    """Arguments for a Helm v4 Chart: `chart` plus, for repositories, `repository` and `version`."""

    chart: str
    version: str | None = None
    repository: str | None = None


def chart_ref(source: ChartSource, name: ChartName, version: str) -> ChartRef:
    """Where chart `name` at Istio `version` comes from: a local mirror, an OCI registry or a Helm repository."""
    if source.path:
        # A mirror directory is already one version: Helm ignores `version` for local charts.
        root = os.path.expanduser(source.path.format(version=version)).rstrip("/")
        return ChartRef(chart=f"{root}/{name}")
    if source.oci:
        return ChartRef(chart=f"{source.oci.rstrip('/')}/{name}", version=version)
    return ChartRef(chart=name, version=version, repository=source.repository or DEFAULT_CHART_REPOSITORY)


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Helm-style values merge: mappings merge key by key, anything else in `override` replaces."""
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def base_values(spec: MeshSpec) -> dict[str, Any]:
    """`defaultRevision` comes from the default tag alone: one source of truth (istio#58578)."""
    ours = {
        "defaultRevision": spec.default_revision,
        "global": {"istioNamespace": ISTIO_NAMESPACE},
        **FAIL_CLOSED,
    }
    return deep_merge(ours, platform_values(spec))


PROGRAM_OWNED_VALUES: dict[ChartName, tuple[tuple[str, ...], ...]] = {
    "istiod": (("revision",), ("global", "tag"), ("revisionTags",), ("base", "validationFailurePolicy")),
    "gateway": (("revision",), ("replicaCount",)),
    "cni": (("global", "tag"), ("global", "platform"), ("profile",)),
}
"""Values the program derives from other config keys; `mesh.validation` refuses them under `values`."""


def istiod_values(spec: MeshSpec, name: str) -> dict[str, Any]:
    """The revision's own values merged over the program's."""
    revision = spec.revisions[name]
    ours: dict[str, Any] = {
        "revision": name,
        "global": {"hub": spec.hub, "tag": revision.version, "istioNamespace": ISTIO_NAMESPACE},
        # Tags are owned by IstioRevisionTag, never by a revision's chart: a tag must outlive revisions.
        "revisionTags": [],
        **FAIL_CLOSED,
    }
    if spec.cni.enabled:
        # The injector leaves traffic redirection to istio-cni: no istio-init (NET_ADMIN) container.
        ours["pilot"] = {"cni": {"enabled": True}}
    return deep_merge(deep_merge(ours, platform_values(spec)), revision.values)


def gateway_values(spec: MeshSpec, gateway: GatewaySpec) -> dict[str, Any]:
    """Pin the gateway's pods to its tag or revision (pod label `istio.io/rev`); fixed replicas, no HPA."""
    service: dict[str, Any] = {"type": gateway.service.type}
    if gateway.service.ports is not None:
        service["ports"] = [
            {"name": p.name, "port": p.port, "targetPort": p.target_port or p.port, "protocol": p.protocol}
            for p in gateway.service.ports
        ]
    ours: dict[str, Any] = {
        "revision": gateway.revision,
        # A DaemonSet runs one pod per node and has no spec.replicas (the API server refuses the field).
        **({"replicaCount": gateway.replicas} if gateway_kind(gateway) == DEPLOYMENT else {}),
        "autoscaling": {"enabled": False},
        "service": service,
    }
    return deep_merge(deep_merge(ours, platform_values(spec)), gateway.values)


def gateway_version(spec: MeshSpec, gateway: GatewaySpec) -> str:
    """A gateway's chart follows the revision it is pinned to, so adding a canary never re-renders it."""
    return spec.revisions[spec.resolve(gateway.revision)].version


CANARY_SUFFIX = "-canary"
"""A gateway's canary release (and its Deployment) is the gateway's name with this suffix."""


DEPLOYMENT = "Deployment"
GATEWAY_KINDS = (DEPLOYMENT, "DaemonSet")
"""The kinds the gateway chart renders its workload as (`values.kind`, its schema's enum)."""


def gateway_workload(name: str, gateway: GatewaySpec) -> str:
    """What the chart names the gateway's workload and Service: `values.name`, else the release (gateway) name."""
    return str(gateway.values.get("name") or name)


def gateway_kind(gateway: GatewaySpec) -> str:
    """What the chart renders the gateway's workload as: `values.kind`, else a Deployment."""
    return str(gateway.values.get("kind") or DEPLOYMENT)


def gateway_selector(name: str, gateway: GatewaySpec) -> dict[str, str]:
    """The chart's selector labels (of the Service and the Deployment): `app` and `istio` from `values.labels`,
    else from the workload name (`istio` without an `istio-` prefix), as the chart's `gateway.selectorLabels`."""
    labels = gateway.values.get("labels") or {}
    workload = gateway_workload(name, gateway)
    return {
        "app": str(labels.get("app") or workload),
        "istio": str(labels.get("istio") or workload.removeprefix("istio-")),
    }


def gateway_service_account(name: str, gateway: GatewaySpec) -> str:
    """The service account the chart gives the gateway's pods (`gateway.serviceAccountName`)."""
    account = gateway.values.get("serviceAccount") or {}
    if account.get("create", True):
        return str(account.get("name") or gateway_workload(name, gateway))
    return str(account.get("name") or "default")


def canary_values(spec: MeshSpec, name: str, gateway: GatewaySpec) -> dict[str, Any]:
    """The gateway's own values, made into a second Deployment on the canary revision behind the gateway's
    Service: the gateway's selector labels (so its Service sends the canary a share of the traffic by replica
    count), no Service of its own (`service.type: None`, which the chart skips), and the gateway's service
    account (same workload identity for policies; its Role stays the main release's, so no RBAC here). No
    PodDisruptionBudget: one over the same pods as the gateway's would make every eviction fail."""
    assert gateway.canary is not None
    values = deep_merge(gateway_values(spec, gateway), {
        "name": gateway_workload(name, gateway) + CANARY_SUFFIX,
        "revision": gateway.canary.revision,
        "replicaCount": gateway.canary.replicas,
        "labels": gateway_selector(name, gateway),
        "service": {"type": "None"},
        "serviceAccount": {"create": False, "name": gateway_service_account(name, gateway)},
        "rbac": {"enabled": False},
    })
    values["podDisruptionBudget"] = {}
    return values


def canary_version(spec: MeshSpec, gateway: GatewaySpec) -> str:
    """The canary's chart follows the canary revision, as the gateway's follows its own."""
    assert gateway.canary is not None
    return spec.revisions[spec.resolve(gateway.canary.revision)].version


def cni_values(spec: MeshSpec) -> dict[str, Any]:
    """istio-cni follows the newest revision's version, as base does; `cni.values` merged over ours."""
    ours = {"global": {"hub": spec.hub, "tag": spec.newest_version}}
    return deep_merge(deep_merge(ours, platform_values(spec)), spec.cni.values)
