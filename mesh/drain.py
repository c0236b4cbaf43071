"""Pure rules of the drain guard: is a revision still in use, and what to tell the user if so.

A pod uses the revision that injected it: the `istio.io/rev` annotation the injector writes
(istio-revisions.md, "Which revision a running pod uses"). A pod that carries no such annotation
but the label `istio.io/rev=<rev>` asks for that revision by label (gateways, object-selector
injection): it was created while no webhook matched, and its next recreation needs the revision's
webhook, so it pins the revision as well, unless istiod would never inject it (opted out, or
hostNetwork). Pods are read by mesh.workloads (`Pod`, `pod_from_object`), so the guard and the
rollout planner read a pod the same way, with the same injection rules. No I/O here:
mesh/providers/drain_guard.py lists the pods and raises the message built here.

Pods are not all: a namespace labelled `istio.io/rev=<rev>` (by hand, or whose pods are all gone, a CronJob's
between runs) and a pod template labelled so (a Deployment scaled to zero, a CronJob) still select the
revision. Once it is removed their next pods start without a sidecar and nothing fails, so they keep it in
use as well, as the webhooks would match them: a namespace's label counts unless `istio-injection` beats
it; a template's label counts in a namespace with neither label, unless istiod would never inject it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mesh.istio_vocabulary import LEGACY_INJECTION_LABEL, NEVER_INJECTED_NAMESPACES, REV_LABEL
from mesh.workloads import Pod, opted_out

EXAMPLES_PER_NAMESPACE = 3


def revision_used(pod: Pod) -> str | None:
    """The revision `pod` keeps in use: the one that injected it, else the one its label asks for when
    istiod would inject it; None when none. Finished pods run no proxy, and terminating ones are on
    their way out (their proxies drain on the certificates they hold): neither counts."""
    if not pod.live:
        return None
    if pod.revision is not None:
        return pod.revision
    return pod.revision_label if pod.injectable else None


def pods_using(pods: Iterable[Pod], revision: str) -> dict[str, list[str]]:
    """Names of the pods using `revision`, by namespace (sorted, for a stable message)."""
    users: dict[str, list[str]] = {}
    for pod in pods:
        if revision_used(pod) == revision:
            users.setdefault(pod.namespace, []).append(pod.name)
    return {ns: sorted(names) for ns, names in sorted(users.items())}


TEMPLATE_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "CronJob")
"""Workloads whose pod template makes pods later. ReplicaSets and Jobs are left out: theirs are the templates
of the Deployment or CronJob that made them (a Job running right now has its pods counted)."""


@dataclass(frozen=True)
class PodTemplate:
    """What a workload's pod template asks of the injector."""

    namespace: str
    workload: str
    """`<Kind>/<name>`, as the refusal names it."""
    revision_label: str | None
    injectable: bool


def template_from_object(kind: str, obj: Mapping[str, Any]) -> PodTemplate:
    """A workload as the API returns it (a dict); a CronJob's template is its job template's."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    if kind == "CronJob":
        spec = (spec.get("jobTemplate") or {}).get("spec") or {}
    template = spec.get("template") or {}
    labels = (template.get("metadata") or {}).get("labels") or {}
    annotations = (template.get("metadata") or {}).get("annotations") or {}
    return PodTemplate(
        namespace=meta.get("namespace", ""),
        workload=f"{kind}/{meta.get('name', '')}",
        revision_label=labels.get(REV_LABEL),
        injectable=not opted_out(labels, annotations) and not (template.get("spec") or {}).get("hostNetwork", False),
    )


@dataclass(frozen=True)
class Selectors:
    """Namespace labels and pod templates that still select a revision (sorted, for a stable message)."""

    namespaces: list[str] = field(default_factory=list)
    templates: dict[str, list[str]] = field(default_factory=dict)
    """Namespace -> `<Kind>/<name>` of the workloads."""

    def __bool__(self) -> bool:
        return bool(self.namespaces or self.templates)


def selectors_of(revision: str, namespaces: Mapping[str, Mapping[str, str]],
                 templates: Iterable[PodTemplate]) -> Selectors:
    """What still selects `revision` by label, from every namespace's labels and every workload's template
    (namespaces Istio never injects, such as kube-system, select nothing)."""
    selecting = sorted(ns for ns, labels in namespaces.items()
                       if labels.get(REV_LABEL) == revision and LEGACY_INJECTION_LABEL not in labels
                       and ns not in NEVER_INJECTED_NAMESPACES)
    found: dict[str, list[str]] = {}
    for t in templates:
        if t.namespace in NEVER_INJECTED_NAMESPACES:
            continue
        labels = namespaces.get(t.namespace) or {}
        namespace_decides = REV_LABEL in labels or LEGACY_INJECTION_LABEL in labels
        if t.revision_label == revision and t.injectable and not namespace_decides:
            found.setdefault(t.namespace, []).append(t.workload)
    return Selectors(selecting, {ns: sorted(names) for ns, names in sorted(found.items())})


def _selector_lines(revision: str, selectors: Selectors) -> list[str]:
    lines = [f"  namespace {ns}: {REV_LABEL}={revision}" for ns in selectors.namespaces]
    lines += [f"  {ns}: {', '.join(names)}" for ns, names in selectors.templates.items()]
    return lines


def refusal_message(revision: str, users: Mapping[str, list[str]], selectors: Selectors | None = None) -> str | None:
    """Why the revision may not be removed and how to move what uses it, or None when it is free."""
    selectors = selectors or Selectors()
    if not users and not selectors:
        return None
    if not users:
        templates = sum(len(names) for names in selectors.templates.values())
        return "\n".join([
            (f"revision {revision} is still selected by {len(selectors.namespaces)} namespace label(s) and "
             f"{templates} pod template(s); once it is removed, their next pods would start without a sidecar:"),
            *_selector_lines(revision, selectors),
            *_selector_fix(revision),
            "The removal stopped here: the revision stays installed.",
        ])
    total = sum(len(names) for names in users.values())
    lines = [
        (
            f"revision {revision} is still in use by {total} pod(s) in {len(users)} namespace(s); "
            "removing it would delete the istiod their proxies depend on:"
        )
    ]
    for ns, names in users.items():
        shown = ", ".join(names[:EXAMPLES_PER_NAMESPACE])
        more = f", +{len(names) - EXAMPLES_PER_NAMESPACE} more" if len(names) > EXAMPLES_PER_NAMESPACE else ""
        lines.append(f"  {ns}: {len(names)} pod(s) ({shown}{more})")
    lines += [
        "Move them first, then remove the revision again:",
        (
            "  - bind each namespace above to another revision or tag in the stack config, keep its rollout "
            "strategy `rolling`, and run `pulumi up` (its workloads are restarted onto the new revision);"
        ),
        (
            "  - or, with the namespace already bound elsewhere, restart them yourself: "
            "`kubectl rollout restart deployment,statefulset,daemonset -n <namespace>`;"
        ),
        f"  - pods labelled istio.io/rev={revision} (gateways) need that label changed too.",
    ]
    if selectors:
        lines += ["Still selecting it by label (their next pods would start without a sidecar):",
                  *_selector_lines(revision, selectors), *_selector_fix(revision)]
    lines.append("The removal stopped here: the revision stays installed.")
    return "\n".join(lines)


def _selector_fix(revision: str) -> list[str]:
    return [
        ("  - relabel each namespace: bind it in the stack config, or "
         "`kubectl label namespace <namespace> istio.io/rev=<tag or revision> --overwrite`;"),
        f"  - change the {REV_LABEL}={revision} label of each pod template above to a tag or another revision.",
    ]
