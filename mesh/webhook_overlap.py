"""Injection webhooks that would overlap once a change is applied (pure): two webhook entries that would
both inject the same pod, as `istioctl analyze` reports with IST0139.

Two webhooks injecting one pod give it two proxies (or fail its creation). The webhooks after the change
are: each revision's own `istio-sidecar-injector-<rev>` (the istiod chart's `rev.namespace.` and
`rev.object.` entries), each tag's webhook as `mesh.revision_tag_webhook` renders it, a revisionless
`istio-sidecar-injector` deactivated while a default tag exists (`mesh.revisionless_injector`), and every
other live injector left as it is; those of removed revisions and tags are gone. Namespaces are read with
the labels the change gives them (a binding sets `istio.io/rev` and removes `istio-injection`). Pods are
tried with every combination of the label values the webhooks' object selectors test.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from mesh.istio_vocabulary import (
    DEFAULT_TAG,
    INJECT_KEY,
    LEGACY_INJECTION_LABEL,
    NEVER_INJECTED_NAMESPACES,
    REV_LABEL,
    istiod_service,
)
from mesh.label_selector import selects
from mesh.revision_tag_webhook import tag_webhook, webhook_name
from mesh.revisionless_injector import REVISIONLESS_INJECTOR, deactivated, is_deactivated, restored
from mesh.spec import MeshSpec

NAME_LABEL = "kubernetes.io/metadata.name"
"""The label the API server puts on every namespace: its name."""
_OTHER = "\x00other"
"""Stands for "any value no selector names" when pod labels are tried."""


def revision_webhook_name(revision: str) -> str:
    """The istiod chart's name for a revision's injector (istiod in istio-system)."""
    return f"{REVISIONLESS_INJECTOR}-{revision}"


def revision_webhook(revision: str) -> dict[str, Any]:
    """The selectors of the webhook a revision's istiod chart renders (istio-revisions.md, "Injection
    webhook selectors"); only what the overlap check reads."""
    opted_in = {"key": INJECT_KEY, "operator": "NotIn", "values": ["false"]}
    no_legacy = {"key": LEGACY_INJECTION_LABEL, "operator": "DoesNotExist"}
    service = {"service": {"name": istiod_service(revision)}}
    this = {"key": REV_LABEL, "operator": "In", "values": [revision]}
    return {"metadata": {"name": revision_webhook_name(revision)}, "webhooks": [
        {"name": "rev.namespace.sidecar-injector.istio.io", "clientConfig": service,
         "namespaceSelector": {"matchExpressions": [this, no_legacy]},
         "objectSelector": {"matchExpressions": [opted_in]}},
        {"name": "rev.object.sidecar-injector.istio.io", "clientConfig": service,
         "namespaceSelector": {"matchExpressions": [{"key": REV_LABEL, "operator": "DoesNotExist"}, no_legacy]},
         "objectSelector": {"matchExpressions": [opted_in, this]}},
    ]}


def webhooks_after(spec: MeshSpec, deployed_revisions: Iterable[str], deployed_tags: Iterable[str],
                   live: Mapping[str, Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """The injection webhook configurations once the change is applied, by name, from the live ones."""
    result: dict[str, Mapping[str, Any]] = dict(live)
    for revision in deployed_revisions:
        result.pop(revision_webhook_name(revision), None)
    for tag in deployed_tags:
        result.pop(webhook_name(tag), None)
    for revision in spec.installed:  # an external revision's webhook is its installer's: the live one stays
        result[revision_webhook_name(revision)] = revision_webhook(revision)
    for tag, revision in spec.tags.items():
        result[webhook_name(tag)] = tag_webhook(tag, revision, spec.revisions[revision].values)
    old = live.get(REVISIONLESS_INJECTOR)
    if old is not None:
        if DEFAULT_TAG in spec.tags:
            result[REVISIONLESS_INJECTOR] = deactivated(old)
        elif is_deactivated(old):
            result[REVISIONLESS_INJECTOR] = restored(old) or old
    return result


def namespaces_after(spec: MeshSpec, deployed_namespaces: Iterable[str],
                     live: Mapping[str, Mapping[str, str]]) -> dict[str, dict[str, str]]:
    """The labels of the namespaces that matter once the change is applied: bound ones (now or before),
    gateway namespaces, and those carrying injection labels."""
    result = {ns: dict(labels) for ns, labels in live.items()
              if REV_LABEL in labels or LEGACY_INJECTION_LABEL in labels}
    for ns in deployed_namespaces:
        if ns not in spec.namespaces and ns in live:
            result[ns] = {k: v for k, v in live[ns].items() if k != REV_LABEL}
    for gw in spec.gateways.values():
        result.setdefault(gw.namespace, dict(live.get(gw.namespace) or {NAME_LABEL: gw.namespace}))
    for ns, binding in spec.namespaces.items():
        labels = {k: v for k, v in (live.get(ns) or {NAME_LABEL: ns}).items() if k != LEGACY_INJECTION_LABEL}
        result[ns] = {**labels, REV_LABEL: binding.revision}
    return {ns: labels for ns, labels in sorted(result.items()) if ns not in NEVER_INJECTED_NAMESPACES}


@dataclass(frozen=True)
class Entry:
    webhook: str
    entry: str
    namespace_selector: Mapping[str, Any]
    object_selector: Mapping[str, Any]

    def __str__(self) -> str:
        return f"{self.webhook}/{self.entry}"


@dataclass(frozen=True)
class Overlap:
    namespace: str
    webhooks: list[str]
    """`<configuration>/<entry>` of every webhook that would inject the pod."""
    pod_labels: dict[str, str]
    """The labels of such a pod (none: any pod of the namespace)."""


def _entries(configs: Mapping[str, Mapping[str, Any]]) -> list[Entry]:
    return [Entry(name, w.get("name", ""), w.get("namespaceSelector") or {}, w.get("objectSelector") or {})
            for name, config in sorted(configs.items()) for w in config.get("webhooks") or []]


def _pod_label_sets(entries: Iterable[Entry]) -> list[dict[str, str]]:
    """Every combination of the values the object selectors test, plus absent and some other value."""
    values: dict[str, set[str]] = {}
    for e in entries:
        sel = e.object_selector
        for k, v in (sel.get("matchLabels") or {}).items():
            values.setdefault(k, set()).add(v)
        for x in sel.get("matchExpressions") or []:
            values.setdefault(x["key"], set()).update(x.get("values") or [])
    keys = sorted(values)
    choices = [[None, *sorted(values[k]), _OTHER] for k in keys]
    return [{k: v for k, v in zip(keys, combo, strict=True) if v is not None}
            for combo in itertools.product(*choices)]


def overlaps(configs: Mapping[str, Mapping[str, Any]], namespaces: Mapping[str, Mapping[str, str]]) -> list[Overlap]:
    """Per namespace, each set of webhook entries that would all inject one pod (the fewest labels shown)."""
    entries = _entries(configs)
    pods = sorted(_pod_label_sets(entries), key=len)
    found: list[Overlap] = []
    for ns, labels in namespaces.items():
        here = [e for e in entries if selects(e.namespace_selector, labels)]
        seen: set[tuple[str, ...]] = set()
        for pod in pods:
            hit = tuple(str(e) for e in here if selects(e.object_selector, pod))
            if len(hit) > 1 and hit not in seen:
                seen.add(hit)
                shown = {k: ("<any other value>" if v == _OTHER else v) for k, v in pod.items()}
                found.append(Overlap(ns, list(hit), shown))
    return found
