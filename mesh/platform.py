"""Platform profiles and the istio-cni node agent: what the `profile` and `cni` keys turn into. Pure.

Since Istio 1.24 every chart (base, cni, istiod, gateway) splits two kinds of profile: configuration
profiles (`files/profile-<p>.yaml`, chosen by `profile`: ambient, demo, ...) and platform profiles
(`files/profile-platform-<p>.yaml`, chosen by `global.platform`). There is no `profile-openshift.yaml`
any more, so `--set profile=openshift` (still in the charts' install-OpenShift.md) fails with "unknown
profile". The stack key `profile` therefore names a platform and is passed to every chart as
`global.platform`; configuration profiles are not offered (they change what this program derives).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mesh.istio_vocabulary import ISTIO_NAMESPACE
from mesh.spec import MeshSpec, parse_version

PLATFORMS_SINCE = (1, 24)
"""The first minor whose charts select platforms with `global.platform`."""
PLATFORMS = ("gke", "k3d", "k3s", "microk8s", "minikube", "openshift")
"""The platform profiles every chart ships from 1.24 on (`files/profile-platform-<p>.yaml`; a unit test
compares this with the mirrored charts)."""
CONFIGURATION_PROFILES = ("ambient", "demo", "preview", "remote", "stable")
"""Istio's configuration profiles (`files/profile-<p>.yaml`), named only to explain why they are refused."""

OPENSHIFT = "openshift"
CNI_REQUIRED = (OPENSHIFT,)
"""Platforms whose profile turns on `pilot.cni.enabled` (no NET_ADMIN for istio-init): CNI must run."""
CNI_NAMESPACE = {OPENSHIFT: "kube-system"}
"""Where istio-cni runs, when not istio-system: OpenShift runs privileged node agents only in kube-system
(the chart's install-OpenShift.md and the profile's `trustedZtunnelNamespace` say so)."""

ISTIOD_CNI_KEYS = (("pilot", "cni", "enabled"), ("istio_cni", "enabled"))
"""Values that make a revision's injector leave traffic redirection to istio-cni (no istio-init):
`pilot.cni.enabled` in every istiod chart this program supports, `istio_cni.enabled` in older ones."""

NAD_API_VERSION = "k8s.cni.cncf.io/v1"
NAD_KIND = "NetworkAttachmentDefinition"
NAD_NAME = "istio-cni"
"""Multus attachment named by injected pods; OpenShift's platform setup creates it per application namespace."""

SCC_ANYUID_ROLE = "system:openshift:scc:anyuid"
"""The ClusterRole OpenShift 4 grants the `anyuid` SCC through (what `oc adm policy add-scc-to-*` binds)."""
SCC_BINDING = "istio-mesh-scc-anyuid"


def uses_platforms(version: str) -> bool:
    v = parse_version(version)
    return (v.major, v.minor) >= PLATFORMS_SINCE


def platform_values(spec: MeshSpec) -> dict[str, Any]:
    """`global.platform` for every chart, or nothing when no profile is set (existing stacks: no diff)."""
    return {"global": {"platform": spec.profile}} if spec.profile else {}


def cni_required_by_profile(spec: MeshSpec) -> bool:
    return spec.profile in CNI_REQUIRED


def cni_namespace(spec: MeshSpec) -> str:
    return CNI_NAMESPACE.get(spec.profile or "", ISTIO_NAMESPACE)


def needs_network_attachments(spec: MeshSpec) -> bool:
    """OpenShift's CNI is Multus: pods reach istio-cni only through a NetworkAttachmentDefinition."""
    return spec.cni.enabled and spec.profile == OPENSHIFT


def network_attachment(namespace: str) -> dict[str, Any]:
    """The attachment OpenShift's platform setup asks for in each namespace (an empty spec: Multus finds
    istio-cni's config by name)."""
    return {"apiVersion": NAD_API_VERSION, "kind": NAD_KIND, "metadata": {"name": NAD_NAME, "namespace": namespace}}


@dataclass(frozen=True)
class SccGrant:
    """A RoleBinding to the `anyuid` SCC's ClusterRole for some service accounts of one namespace."""

    name: str
    namespace: str
    subjects: tuple[dict[str, str], ...]

    def role_binding(self) -> dict[str, Any]:
        return {
            "metadata": {"name": self.name, "namespace": self.namespace},
            "role_ref": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": SCC_ANYUID_ROLE},
            "subjects": [dict(s) for s in self.subjects],
        }


def scc_grants(spec: MeshSpec) -> list[SccGrant]:
    """OpenShift's platform setup for Istio: `anyuid` for the control plane's service accounts (every
    revision's istiod, in istio-system) and for each gateway's service account (the gateway chart names it
    after the gateway). Nothing on other platforms."""
    if spec.profile != OPENSHIFT:
        return []
    grants = [SccGrant(SCC_BINDING, ISTIO_NAMESPACE, (
        {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": f"system:serviceaccounts:{ISTIO_NAMESPACE}"},
    ))]
    grants += [
        SccGrant(f"{SCC_BINDING}-{name}", gw.namespace,
                 ({"kind": "ServiceAccount", "name": name, "namespace": gw.namespace},))
        for name, gw in sorted(spec.gateways.items())
    ]
    return grants
