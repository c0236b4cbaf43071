"""Pure rules of the drain guard: is a revision still in use, and what to tell the user if so.

A pod uses the revision that injected it: the `istio.io/rev` annotation the injector writes
(istio-revisions.md, "Which revision a running pod uses"). A pod that carries no such annotation
but the label `istio.io/rev=<rev>` asks for that revision by label (gateways, object-selector
injection): it was created while no webhook matched, and its next recreation needs the revision's
webhook, so it pins the revision as well, unless istiod would never inject it (opted out, or
hostNetwork). Pods are read by mesh.workloads (`Pod`, `pod_from_object`), so the guard and the
rollout planner read a pod the same way, with the same injection rules. No I/O here:
mesh/providers/drain_guard.py lists the pods and raises the message built here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from mesh.workloads import Pod

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


def refusal_message(revision: str, users: Mapping[str, list[str]]) -> str | None:
    """Why the revision may not be removed and how to move its pods, or None when it is free."""
    if not users:
        return None
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
        "The removal stopped here: the revision stays installed.",
    ]
    return "\n".join(lines)
