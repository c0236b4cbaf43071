"""Pulumi components, one per domain object: `Istio` resolves the validated spec once, and every other
component only translates the resolved arguments it is given into resources."""

from mesh.components.gateway import Gateway
from mesh.components.istio import Istio
from mesh.components.istio_cni import IstioCNI
from mesh.components.istio_revision import IstioRevision
from mesh.components.istio_revision_tag import IstioRevisionTag
from mesh.components.namespace_bindings import NamespaceBindings
from mesh.components.platform_privileges import PlatformPrivileges

__all__ = [
    "Gateway", "Istio", "IstioCNI", "IstioRevision", "IstioRevisionTag", "NamespaceBindings", "PlatformPrivileges",
]
