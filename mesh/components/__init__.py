"""Pulumi components: one per domain object, each translating a validated spec into resources."""

from mesh.components.gateway import Gateway
from mesh.components.istio import Istio
from mesh.components.istio_revision import IstioRevision
from mesh.components.istio_revision_tag import IstioRevisionTag
from mesh.components.namespace_binding import NamespaceBinding

__all__ = ["Gateway", "Istio", "IstioRevision", "IstioRevisionTag", "NamespaceBinding"]
