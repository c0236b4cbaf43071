"""Pure rules for taking over from a revisionless Istio install (`istioctl install`, or Helm without
`revision`), as `istioctl tag set default` does.

Such an install has the webhook `istio-sidecar-injector` (calling Service `istiod`), selecting the same
namespaces as the default tag (`istio-injection=enabled`, `sidecar.istio.io/inject=true`). With both
active, two webhooks match one pod (IST0139). While the default tag exists, the old webhook's
selectors are made to match nothing; the originals are kept on the object itself, so removing the
default tag (or a `git revert`) puts them back. The old istiod keeps serving the pods it injected
(annotation `istio.io/rev: default`) until they are restarted onto a revision.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

REVISIONLESS_INJECTOR = "istio-sidecar-injector"
"""The MutatingWebhookConfiguration of a revisionless install in istio-system."""
ORIGINAL_SELECTORS = "istio-mesh.dev/original-selectors"
"""Annotation holding each webhook's selectors from before deactivation (JSON: name -> selectors)."""
_NEVER = {"matchExpressions": [{"key": "istio-mesh.dev/deactivated", "operator": "In", "values": ["never-match"]}]}
"""No object carries that label, so a webhook with this selector never matches."""


def _webhooks(hook: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return list(hook.get("webhooks") or [])


def is_deactivated(hook: Mapping[str, Any]) -> bool:
    """Every entry selects nothing, and the originals are kept."""
    annotations = (hook.get("metadata") or {}).get("annotations") or {}
    return ORIGINAL_SELECTORS in annotations and all(
        w.get("namespaceSelector") == _NEVER and w.get("objectSelector") == _NEVER for w in _webhooks(hook))


def deactivated(hook: Mapping[str, Any]) -> dict[str, Any]:
    """The webhook configuration with every entry matching nothing, and its selectors kept. Selectors
    already kept are not overwritten: what is restored is what the install had."""
    result = copy.deepcopy(dict(hook))
    meta = result.setdefault("metadata", {})
    annotations = meta.setdefault("annotations", {}) or {}
    meta["annotations"] = annotations
    if ORIGINAL_SELECTORS not in annotations:
        annotations[ORIGINAL_SELECTORS] = json.dumps({
            w["name"]: {"namespaceSelector": w.get("namespaceSelector"), "objectSelector": w.get("objectSelector")}
            for w in _webhooks(hook)
        }, sort_keys=True)
    for w in result.get("webhooks") or []:
        w["namespaceSelector"] = copy.deepcopy(_NEVER)
        w["objectSelector"] = copy.deepcopy(_NEVER)
    return result


def restored(hook: Mapping[str, Any]) -> dict[str, Any] | None:
    """The webhook configuration with its kept selectors back, or None when nothing was kept."""
    result = copy.deepcopy(dict(hook))
    annotations = (result.get("metadata") or {}).get("annotations") or {}
    kept = annotations.pop(ORIGINAL_SELECTORS, None)
    if kept is None:
        return None
    originals = json.loads(kept)
    for w in result.get("webhooks") or []:
        original = originals.get(w["name"])
        if original is None:
            continue  # an entry added since (an upgrade of the old install): it was never ours to change
        for key in ("namespaceSelector", "objectSelector"):
            if original.get(key) is None:
                w.pop(key, None)
            else:
                w[key] = original[key]
    return result


def revisionless_pods(pods: Mapping[str, int]) -> str:
    """A progress line about pods still on the old install, from a namespace -> count map."""
    if not pods:
        return "no pod runs the revisionless istiod any more: it can be uninstalled"
    where = ", ".join(f"{ns} ({n})" for ns, n in sorted(pods.items()))
    return (f"{sum(pods.values())} pod(s) still run the revisionless istiod, in {where}: bind or restart them "
            "before uninstalling it")
