"""Pure rules for a bound namespace's legacy `istio-injection` label.

The label beats `istio.io/rev` (it sends pods to the default tag, or blocks injection when
`disabled`), so a binding must remove it. Server-side apply cannot: it never removes a field another
manager (`kubectl label`) owns, and the Kubernetes provider drops null label values. A JSON patch
`remove` can, whoever set the label. The value is kept so that unbinding gives it back: a namespace
leaves the program as it came, and its next pods are still injected.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mesh.istio_vocabulary import LEGACY_INJECTION_LABEL

_POINTER = "/metadata/labels/" + LEGACY_INJECTION_LABEL.replace("~", "~0").replace("/", "~1")


def legacy_value(namespace: Mapping[str, Any]) -> str | None:
    """The namespace's `istio-injection` value, or None when it has none."""
    return ((namespace.get("metadata") or {}).get("labels") or {}).get(LEGACY_INJECTION_LABEL)


def removal_patch(value: str) -> list[dict[str, Any]]:
    """A JSON patch that removes the label only if it still has the value just read (no lost update)."""
    return [{"op": "test", "path": _POINTER, "value": value}, {"op": "remove", "path": _POINTER}]


def restore_patch(namespace: Mapping[str, Any], previous: str | None) -> dict[str, Any] | None:
    """The merge patch that gives the label back on unbinding, or None: nothing was removed, or someone
    has set the label again since (theirs wins)."""
    if previous is None or legacy_value(namespace) is not None:
        return None
    return {"metadata": {"labels": {LEGACY_INJECTION_LABEL: previous}}}


def kept_value(old_previous: str | None, removed_now: str | None) -> str | None:
    """What to restore on unbinding: the value found when the binding was made, not one set since."""
    return old_previous if old_previous is not None else removed_now
