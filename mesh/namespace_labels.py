"""Pure rules for the labels of every bound namespace: what to change, from the bindings and the live namespaces.

A binding sets the namespace's `istio.io/rev` label by server-side apply under one field manager of
our own, never owning the namespace: giving the binding up gives the label up (the API server removes
a field when its last manager stops applying it), and the namespace stays. The legacy
`istio-injection` label beats `istio.io/rev` (it sends pods to the default tag, or blocks injection
when `disabled`), so a binding removes it. Server-side apply cannot (it never removes a field another
manager, such as `kubectl label`, owns), a JSON patch `remove` can. The value removed is kept on the
namespace itself, in an annotation, so that unbinding gives it back whatever happens to the Pulumi
state in between: a namespace leaves the program as it came, its next pods still injected. So is an
`istio.io/rev` set by hand before the first binding: our forced apply takes the label over, and giving it
up would remove it, so the hand value is kept too and applied back (by another manager) on unbinding.

One stack-wide resource applies these for every namespace (mesh.providers.namespace_labels): the
inputs map namespace to label value, so the preview shows per namespace what moves, and one list of
the cluster's namespaces serves any number of bindings.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mesh.istio_vocabulary import DEFAULT_TAG, LEGACY_INJECTION_ENABLED, LEGACY_INJECTION_LABEL, REV_LABEL

FIELD_MANAGER = "istio-mesh-namespaces"
"""The field manager of every binding's label. Not the earlier versions' `istio-mesh` (one NamespacePatch per
namespace): while a stack upgrades, both own the label with the same value, so the old patches' deletion
gives up only theirs and the label stays."""
REMOVED_LEGACY_ANNOTATION = "istio-mesh/removed-istio-injection"
"""Annotation on a bound namespace: the `istio-injection` value the binding removed, given back on unbinding."""
REPLACED_REV_ANNOTATION = "istio-mesh/replaced-istio-rev"
"""Annotation on a bound namespace: the `istio.io/rev` value set by hand that its first binding replaced,
given back on unbinding (our apply forces the label over, so its release alone would remove it)."""
RESTORE_MANAGER = "istio-mesh-restored"
"""The field manager of a given-back `istio.io/rev`: applied before ours lets go, it owns the label even when
the values are equal, so the label never disappears in between."""


def _pointer(*keys: str) -> str:
    return "/" + "/".join(k.replace("~", "~0").replace("/", "~1") for k in keys)


@dataclass(frozen=True)
class LiveNamespace:
    """What the rules read of a namespace in the cluster."""

    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    label_owned: bool = False
    """Whether our field manager applies `istio.io/rev` (else it is someone else's, or an earlier version's)."""

    @property
    def legacy(self) -> str | None:
        """The `istio-injection` value, or None when the namespace has none."""
        return self.labels.get(LEGACY_INJECTION_LABEL)


def owns_rev_label(managed_fields: Iterable[Mapping[str, Any]], manager: str = FIELD_MANAGER) -> bool:
    """Whether `manager` applies `istio.io/rev` (server-side apply's record in `metadata.managedFields`)."""
    for entry in managed_fields:
        if entry.get("manager") != manager or entry.get("operation") != "Apply":
            continue
        labels = ((entry.get("fieldsV1") or {}).get("f:metadata") or {}).get("f:labels") or {}
        if f"f:{REV_LABEL}" in labels:
            return True
    return False


def live_namespace(obj: Mapping[str, Any]) -> LiveNamespace:
    """A namespace as the API server returns it (a plain dict)."""
    meta = obj.get("metadata") or {}
    return LiveNamespace(
        name=meta["name"],
        labels=dict(meta.get("labels") or {}),
        annotations=dict(meta.get("annotations") or {}),
        label_owned=owns_rev_label(meta.get("managedFields") or []),
    )


def drift(bound: Mapping[str, str], live: Mapping[str, LiveNamespace]) -> dict[str, str]:
    """Per bound namespace, how the cluster differs from its binding (a hand edit since the last `up`);
    namespaces not there yet (created later in the same run) have nothing to differ."""
    found: dict[str, str] = {}
    for ns, target in sorted(bound.items()):
        namespace = live.get(ns)
        if namespace is None:
            continue
        problems = []
        if (value := namespace.labels.get(REV_LABEL)) != target:
            problems.append(f"{REV_LABEL} is {value or 'unset'}, not {target}")
        if namespace.legacy is not None:
            problems.append(f"{LEGACY_INJECTION_LABEL}={namespace.legacy} is set (it beats {REV_LABEL})")
        if problems:
            found[ns] = "; ".join(problems)
    return found


@dataclass(frozen=True)
class Change:
    """What one namespace needs: its label applied (`label`) or given up (`release`), and the legacy label
    removed (`remove_legacy`, the value read) or given back (`restore_legacy`)."""

    namespace: str
    label: str | None = None
    release: bool = False
    remove_legacy: str | None = None
    restore_legacy: str | None = None
    forget_legacy: bool = False
    """Drop the annotation that remembered the removed value (given back, or set again by hand since)."""
    keep_rev: str | None = None
    """The hand-set `istio.io/rev` a first binding replaces, remembered before the label is applied."""
    restore_rev: str | None = None
    forget_rev: bool = False


@dataclass(frozen=True)
class Plan:
    changes: list[Change]
    missing: list[str]
    """Bound namespaces that do not exist: the program never creates a namespace it binds."""


def plan(bound: Mapping[str, str], released: Iterable[str], live: Mapping[str, LiveNamespace]) -> Plan:
    """The changes that bring the cluster to the bindings; only namespaces that differ are touched, so a run
    over 1,000 bound namespaces patches the few that moved. `released` are namespaces bound before and not now."""
    changes: list[Change] = []
    missing: list[str] = []
    previously = set(released)
    for ns, target in sorted(bound.items()):
        namespace = live.get(ns)
        if namespace is None:
            missing.append(ns)
            continue
        current = namespace.labels.get(REV_LABEL)
        apply = current != target or not namespace.label_owned
        # A first binding over a value of someone else's (a hand edit of a namespace bound already is drift).
        keep = (current if apply and current not in (None, target) and not namespace.label_owned
                and ns not in previously and REPLACED_REV_ANNOTATION not in namespace.annotations else None)
        if apply or namespace.legacy is not None:
            changes.append(Change(ns, label=target if apply else None, remove_legacy=namespace.legacy, keep_rev=keep))
    for ns in sorted(previously - set(bound)):
        namespace = live.get(ns)
        if namespace is None:
            continue  # deleted meanwhile: nothing to give back
        kept = namespace.annotations.get(REMOVED_LEGACY_ANNOTATION)
        kept_rev = namespace.annotations.get(REPLACED_REV_ANNOTATION)
        if namespace.label_owned or kept is not None or kept_rev is not None:
            changes.append(Change(
                ns,
                release=namespace.label_owned,
                restore_legacy=kept if namespace.legacy is None else None,  # set again by hand since: theirs wins
                forget_legacy=kept is not None,
                restore_rev=kept_rev if namespace.label_owned else None,  # the same rule for istio.io/rev
                forget_rev=kept_rev is not None,
            ))
    return Plan(changes, missing)


def label_apply(namespace: str, target: str | None) -> dict[str, Any]:
    """The server-side apply body of our field manager: the label, or (None) nothing, which gives it up."""
    metadata: dict[str, Any] = {"name": namespace}
    if target is not None:
        metadata["labels"] = {REV_LABEL: target}
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": metadata}


def keep_patch(change: Change) -> dict[str, Any] | None:
    """The merge patch that remembers the hand-set `istio.io/rev` before the binding replaces it, or None."""
    if change.keep_rev is None:
        return None
    return {"metadata": {"annotations": {REPLACED_REV_ANNOTATION: change.keep_rev}}}


def restore_apply(change: Change) -> dict[str, Any] | None:
    """The server-side apply body (of RESTORE_MANAGER) that gives the hand-set `istio.io/rev` back, or None."""
    return None if change.restore_rev is None else label_apply(change.namespace, change.restore_rev)


def removal_patch(namespace: LiveNamespace, value: str) -> list[dict[str, Any]]:
    """A JSON patch that removes the legacy label only if it still has the value just read (no lost update),
    and remembers that value on the namespace. A value remembered already (removed before, set again by hand)
    is kept: unbinding gives back what the namespace had when it was first bound."""
    ops: list[dict[str, Any]] = [
        {"op": "test", "path": _pointer("metadata", "labels", LEGACY_INJECTION_LABEL), "value": value},
        {"op": "remove", "path": _pointer("metadata", "labels", LEGACY_INJECTION_LABEL)},
    ]
    if REMOVED_LEGACY_ANNOTATION in namespace.annotations:
        return ops
    if namespace.annotations:
        ops.append({"op": "add", "path": _pointer("metadata", "annotations", REMOVED_LEGACY_ANNOTATION),
                    "value": value})
    else:
        ops.append({"op": "add", "path": _pointer("metadata", "annotations"),
                    "value": {REMOVED_LEGACY_ANNOTATION: value}})
    return ops


def release_patch(change: Change) -> dict[str, Any] | None:
    """The merge patch that gives the legacy label back and forgets what was kept, or None when nothing is to do."""
    metadata: dict[str, Any] = {}
    if change.restore_legacy is not None:
        metadata["labels"] = {LEGACY_INJECTION_LABEL: change.restore_legacy}
    forget = {key: None for key, drop in ((REMOVED_LEGACY_ANNOTATION, change.forget_legacy),
                                          (REPLACED_REV_ANNOTATION, change.forget_rev)) if drop}
    if forget:
        metadata["annotations"] = forget
    return {"metadata": metadata} if metadata else None


def handover_patch(namespace: LiveNamespace, previous: str | None) -> dict[str, Any] | None:
    """What deleting an earlier version's per-namespace legacy-label guard does, given the value it removed.

    Still bound (our field manager applies the label: the stack-wide resource took the binding over in the
    same `up`), the value moves onto the namespace's annotation, where unbinding finds it. Unbound, the value
    is given back, as the guard always did. Either way a label set again by hand since wins."""
    if previous is None or namespace.legacy is not None:
        return None
    if namespace.label_owned:
        if REMOVED_LEGACY_ANNOTATION in namespace.annotations:
            return None
        return {"metadata": {"annotations": {REMOVED_LEGACY_ANNOTATION: previous}}}
    return {"metadata": {"labels": {LEGACY_INJECTION_LABEL: previous}}}


@dataclass(frozen=True)
class GatewayPin:
    """A gateway in a namespace no binding manages: the tag or revision its pods ask for by their own
    `istio.io/rev` label, and its canary's (None without a canary)."""

    namespace: str
    revision: str
    canary: str | None = None


def gateway_label_conflicts(pins: Mapping[str, GatewayPin], live: Mapping[str, LiveNamespace]) -> dict[str, str]:
    """Per config key, how a gateway namespace's own injection label would override its pods' label.

    A pod's `istio.io/rev` counts only in a namespace with neither injection label: `istio-injection=enabled`
    sends every pod to the default tag, another `istio-injection` value blocks injection, and a namespace's
    `istio.io/rev` beats the pod's. So a gateway pinned elsewhere (or its canary, pinned to another revision
    by definition) would silently run the wrong revision, or no proxy at all. Refused rather than managed:
    the label serves the namespace's other pods too, and binding the namespace is the managed way."""
    found: dict[str, str] = {}
    for name, pin in sorted(pins.items()):
        namespace = live.get(pin.namespace)
        if namespace is None:
            continue  # created by this run: no labels to override anything
        legacy, rev = namespace.legacy, namespace.labels.get(REV_LABEL)
        if legacy is not None:
            label = f"{LEGACY_INJECTION_LABEL}={legacy}"
            wins = DEFAULT_TAG if legacy == LEGACY_INJECTION_ENABLED else None
        elif rev is not None:
            label, wins = f"{REV_LABEL}={rev}", rev
        else:
            continue
        unlabel = f"kubectl label namespace {pin.namespace} {label.split('=')[0]}-"
        if wins != pin.revision:
            found[f"gateways.{name}.namespace"] = _overridden(pin.namespace, label, pin.revision, wins) + (
                f": remove the label (`{unlabel}`), bind the namespace to the gateway's pin "
                f"(`namespaces.{pin.namespace}: {pin.revision}`, which manages its labels and gives them back when "
                "unbound), or move the gateway to a namespace without injection labels")
        if pin.canary is not None and wins != pin.canary:
            found[f"gateways.{name}.canary"] = _overridden(pin.namespace, label, pin.canary, wins) + (
                f": a canary's pods need their own label to count, so remove the label (`{unlabel}`) or move the "
                "gateway to a namespace without injection labels")
    return found


def _overridden(namespace: str, label: str, pinned: str, wins: str | None) -> str:
    if wins is None:
        gets = "no proxy at all (it blocks every revision's injection)"
    elif wins == DEFAULT_TAG and label.startswith(LEGACY_INJECTION_LABEL):
        gets = f'the default tag\'s revision, not "{pinned}"'
    else:
        gets = f'"{wins}", not "{pinned}"'
    return (f"namespace {namespace} carries {label}, which beats the gateway's pod label {REV_LABEL}={pinned}: "
            f"its pods would get {gets}")
