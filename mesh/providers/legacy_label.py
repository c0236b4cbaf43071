"""LegacyInjectionLabelProvider: only so stacks deployed by earlier versions can delete their guards.

Earlier versions kept one `LegacyInjectionLabel` per bound namespace, which removed `istio-injection` and
kept the removed value in the Pulumi state. The engine deletes such a resource with the provider class
named in the state (this module and class name), so the class stays. Its delete runs after the stack-wide
NamespaceLabels took the binding over in the same `up`: a namespace still bound gets the value moved onto
its annotation, where unbinding finds it; one unbound in that `up` gets its label back, as before
(mesh.namespace_labels.handover_patch). Nothing registers this resource any more.
"""

from __future__ import annotations

from typing import Any

from mesh import kube
from mesh.istio_vocabulary import LEGACY_INJECTION_LABEL
from mesh.namespace_labels import handover_patch, live_namespace
from mesh.providers import KubeProvider, progress


class LegacyInjectionLabelProvider(KubeProvider):
    def delete(self, _id: str, props: dict[str, Any]) -> None:
        namespace, previous = props["namespace"], props.get("previous")
        with kube.api_client(self.kube_settings()) as api:
            if (found := kube.find(api, "Namespace", namespace)) is None:
                return  # the namespace is gone: nothing to give back
            if (patch := handover_patch(live_namespace(found), previous)) is None:
                return
            kube.patch(api, "Namespace", namespace, patch)
            given_back = LEGACY_INJECTION_LABEL in patch["metadata"].get("labels", {})
            progress(f"namespace {namespace}: " + (
                f"unbound; {LEGACY_INJECTION_LABEL}={previous} given back" if given_back
                else f"the removed {LEGACY_INJECTION_LABEL}={previous} is now kept on the namespace"))
