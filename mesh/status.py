"""What runs where, now (pure): per revision the stack deployed, its version, tags, bound namespaces and
the pods that run it per namespace, the pods on no revision the stack manages, and whether each revision
can be dropped.

`mesh/__main__.py` hands in the stack's last outputs and every pod of the cluster as it is read, page by page;
each is folded into counts as it comes (`PodCounts`), so memory does not grow with the pods. A pod runs
the revision the drain guard says it uses (`mesh.drain.revision_used`, the same function), so "can be
dropped" here and the guard's refusal at `up` never disagree; its proxy is compared with the image the
revision injects now by `mesh.proxy_image.proxy_state`, as the rollout compares it.

A revision whose removal `up` refused is still installed, but the refused run already exported the
stack's new outputs without it: revisions are therefore also read from the cluster (each revision's
injection webhook, `istio-sidecar-injector-<rev>`) and shown as installed but no longer in the stack. One
the stack's state holds nothing of (another team's istiod, an external revision no longer declared) was never
the stack's to remove: it is shown as outside the stack.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from mesh.drain import PodTemplate, Selectors, revision_used, selectors_of
from mesh.injection import InjectorPolicy
from mesh.istio_vocabulary import LEGACY_INJECTION_LABEL, REV_LABEL
from mesh.proxy_image import ProxyState, parse_image, proxy_state
from mesh.review import Deployed, selecting
from mesh.webhook_overlap import revision_webhook_name
from mesh.workloads import UNINJECTED, Pod, pod_from_object

VERSION_LABEL = "app.kubernetes.io/version"
"""The chart's app version, on every object the istiod chart renders."""
REVISION_TYPE = "istio-mesh:index:IstioRevision"
"""The component of a revision the stack installs (mesh.components.istio_revision)."""


def revisions_in_state(export: Mapping[str, Any]) -> frozenset[str]:
    """The revisions whose IstioRevision the state of `pulumi stack export` holds, pending deletes included (a
    refused removal keeps it there)."""
    resources = (export.get("deployment") or {}).get("resources") or []
    return frozenset(r["urn"].rsplit("::", 1)[-1] for r in resources if r.get("type") == REVISION_TYPE)


@dataclass(frozen=True)
class NamespacePods:
    """The live pods of one namespace that run one revision."""

    pods: int
    proxies: Mapping[str, int]
    """Proxy image tag (or the image, when it has no tag) -> pods."""
    stale: int
    """Pods whose proxy is not the image the revision injects now (they move on their next restart)."""


@dataclass(frozen=True)
class RevisionStatus:
    name: str
    version: str
    proxy: str | None
    tags: list[str]
    bound: list[str]
    gateways: list[str]
    pods: dict[str, NamespacePods]
    can_drop: bool
    why: str
    in_stack: bool = True
    """False for a revision installed in the cluster that the stack's last outputs no longer name."""
    external: bool = False
    """Installed outside the stack (`revisions.<r>.external`): never the stack's to drop."""


@dataclass(frozen=True)
class Status:
    stack: str
    revisions: list[RevisionStatus]
    unmanaged: dict[str, dict[str, int]] = field(default_factory=dict)
    """Namespace -> revision (or "(not injected)" in bound namespaces) -> pods on no revision of the stack."""
    left_alone: dict[str, dict[str, int]] = field(default_factory=dict)
    """Bound namespace -> why -> uninjected pods its revision's istiod would not inject (no restart moves them)."""
    cluster_note: str | None = None
    """Why the pods could not be read; None when they were."""
    state_note: str | None = None
    """Why the stack's outputs could not be read (a stack never deployed); None when they were."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def markdown(self) -> str:
        out = [f"#### Revisions ({self.stack})"]
        if not self.revisions:
            out.append(f"- none deployed{f' ({self.state_note})' if self.state_note else ''}")
        for r in self.revisions:
            facts = [r.version, *([f"tags {', '.join(r.tags)}"] if r.tags else []),
                     f"bound: {', '.join(r.bound) or 'none'}",
                     *([f"gateways: {', '.join(r.gateways)}"] if r.gateways else [])]
            if r.external:
                facts.insert(1, "external (installed outside the stack)")
            elif not r.in_stack:
                facts.insert(1, "installed, not in the stack's last outputs (its removal was refused or is pending)")
            out.append(f"- `{r.name}`: {'; '.join(facts)}")
            if self.cluster_note is None:
                if not r.pods:
                    out.append("  - no pods")
                for ns, p in r.pods.items():
                    images = ", ".join(f"{tag}: {n}" for tag, n in p.proxies.items())
                    stale = f", {p.stale} on an older proxy" if p.stale else ""
                    out.append(f"  - `{ns}`: {p.pods} pods (proxy {images}){stale}")
            out.append(f"  - can be dropped: {'yes' if r.can_drop else 'no'}, {r.why}")
        out.append("#### Pods on no managed revision")
        if self.cluster_note is not None:
            out.append(f"- cluster part skipped: {self.cluster_note}")
        elif not self.unmanaged:
            out.append("- none")
        for ns, revisions in self.unmanaged.items():
            listed = ", ".join(f"{n} {'pods not injected' if rev == UNINJECTED else f'pods on `{rev}`'}"
                               for rev, n in revisions.items())
            out.append(f"- `{ns}`: {listed}")
        if self.left_alone:
            out.append("#### Pods no restart moves")
        out += [f"- `{ns}`: {n} pods {why}" for ns, whys in self.left_alone.items() for why, n in whys.items()]
        return "\n".join(out) + "\n"


def _tag(image: str | None) -> str:
    if image is None:
        return "none"
    ref = parse_image(image)
    return ref.tag or image


@dataclass
class PodCounts:
    """Every pod of the cluster folded as it is read, one at a time, into the counts the report shows: per revision
    a pod uses (`mesh.drain.revision_used`, the guard's rule) and namespace, its pods, their proxies and how many
    are stale; per bound namespace, its uninjected pods (by why, when its revision's istiod would not inject
    them). It grows with namespaces x revisions x proxy images, never with the pods."""

    deployed: Deployed
    proxies: dict[str, dict[str, Counter[str]]] = field(default_factory=dict)
    """Revision -> namespace -> proxy tag -> live pods using it."""
    stale: Counter[tuple[str, str]] = field(default_factory=Counter)
    """(revision, namespace) -> pods whose proxy is not the image the revision injects now."""
    uninjected: Counter[str] = field(default_factory=Counter)
    """Bound namespace -> its pods running no proxy, which a restart would inject."""
    left_alone: Counter[tuple[str, str]] = field(default_factory=Counter)
    """(bound namespace, why its revision's istiod would not inject them) -> its pods running no proxy."""

    def add(self, pod: Pod) -> None:
        if not pod.live:
            return
        revision = revision_used(pod)
        if revision is None:
            bound = self.deployed.namespaces.get(pod.namespace)
            if pod.injectable and bound is not None:
                refused = self.deployed.injectors.get(bound, InjectorPolicy()).refuses(pod.labels, pod.annotations)
                if refused:
                    self.left_alone[(pod.namespace, f"not injected by {bound}: {refused}")] += 1
                else:
                    self.uninjected[pod.namespace] += 1
            return
        by_namespace = self.proxies.setdefault(revision, {})
        by_namespace.setdefault(pod.namespace, Counter())[_tag(pod.proxy.image)] += 1
        expected = self.deployed.proxies.get(revision)
        if expected is not None and proxy_state(pod.proxy, expected) is ProxyState.STALE:
            self.stale[(revision, pod.namespace)] += 1

    def using(self, revision: str) -> dict[str, NamespacePods]:
        """The live pods using `revision`, by namespace (sorted)."""
        found = self.proxies.get(revision) or {}
        return {ns: NamespacePods(sum(tags.values()), dict(sorted(tags.items())), self.stale[(revision, ns)])
                for ns, tags in sorted(found.items())}


def _drop_verdict(name: str, deployed: Deployed, users: Mapping[str, NamespacePods],
                  selectors: Selectors | None = None) -> tuple[bool, str]:
    """The drain guard's decision (no pod uses it, no label selects it), and what still points at the
    revision in the config."""
    if users:
        total = sum(n.pods for n in users.values())
        where = ", ".join(f"{ns} ({n.pods})" for ns, n in users.items())
        return False, f"{total} pods still run it ({where}): up would refuse to remove it"
    if selectors:
        found = [f"namespace `{ns}` ({REV_LABEL}={name})" for ns in selectors.namespaces]
        found += [f"pod template `{ns}/{w}`" for ns, names in selectors.templates.items() for w in names]
        return False, f"no pod runs it, but {' and '.join(found)} still select it: up would refuse to remove it"
    refs = [f"tag `{t}`" for t, r in sorted(deployed.tags.items()) if r == name]
    refs += [f"namespace `{ns}`" for ns, r in sorted(deployed.namespaces.items()) if r == name]
    refs += [f"gateway `{g}`" for g, v in sorted(deployed.gateways.items()) if v.get("revision") == name]
    refs += [f"gateway `{g}`'s canary" for g, v in sorted(deployed.gateways.items()) if v.get("canary") == name]
    if refs:
        return True, f"no pod runs it; first point {', '.join(refs)} elsewhere"
    return True, "no pod runs it and nothing points at it"


def _gateways_on(deployed: Deployed, revision: str) -> list[str]:
    """Gateways pinned to the revision, and gateways whose canary runs it (`<gateway> (canary)`)."""
    pinned = [g for g, v in deployed.gateways.items() if v.get("revision") == revision]
    return sorted([*pinned, *(f"{g} (canary)" for g, v in deployed.gateways.items() if v.get("canary") == revision)])


def injection_labels(labels: Mapping[str, str]) -> dict[str, str]:
    """A namespace's labels that choose its injector: all that the drain guard's `selectors_of` reads of them."""
    return {k: v for k, v in labels.items() if k in (REV_LABEL, LEGACY_INJECTION_LABEL)}


def installed_revisions(webhooks: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """Revision -> version of every revision whose istiod chart left its injection webhook in the cluster."""
    found = {}
    for name, hook in webhooks.items():
        labels = (hook.get("metadata") or {}).get("labels") or {}
        revision = labels.get(REV_LABEL)
        if revision and name == revision_webhook_name(revision):
            found[revision] = labels.get(VERSION_LABEL, "?")
    return found


def status(stack: str, deployed: Deployed, pod_objects: Iterable[Mapping[str, Any]] | None,
           cluster_note: str | None = None, state_note: str | None = None,
           installed: Mapping[str, str] | None = None,
           namespace_labels: Mapping[str, Mapping[str, str]] | None = None,
           templates: Iterable[PodTemplate] | None = None, external: Iterable[str] = (),
           held: Iterable[str] | None = None) -> Status:
    """The report from the stack's outputs, the cluster's pods (None when they could not be read; iterated once,
    each folded as it comes) and the revisions installed in the cluster (`installed_revisions`), and, as the drain
    guard also reads them, every namespace's labels (those of injection suffice) and every workload's pod template
    (`mesh.drain.template_from_object`; only those `selecting` keeps are held). `external` are the
    revisions installed outside the stack (its outputs' and its config's): shown with their pods, never droppable.
    `held` are those the stack's state holds (`revisions_in_state`; None when it was not read): an installed revision
    in neither it nor the outputs is outside the stack too."""
    counts = PodCounts(deployed)
    for obj in pod_objects or ():
        counts.add(pod_from_object(obj))
    revisions = []
    outside = {*external, *deployed.external}
    if held is not None:
        outside |= set(installed or {}) - set(held) - set(deployed.versions)
    every = {**(installed or {}), **{n: v for n, v in deployed.external.items() if v}, **deployed.versions}
    every.update({n: "?" for n in outside if n not in every})
    every_template = selecting(templates or ())
    for name, version in sorted(every.items()):
        using = counts.using(name) if pod_objects is not None else {}
        selecting_it = selectors_of(name, namespace_labels or {}, every_template)
        can_drop, why = _drop_verdict(name, deployed, using, selecting_it)
        if pod_objects is None:
            can_drop, why = False, "unknown: the pods could not be read"
        if name in outside:
            running = f"; {sum(n.pods for n in using.values())} pods run it" if using else ""
            can_drop, why = False, f"external: installed outside the stack, which never removes it{running}"
        revisions.append(RevisionStatus(
            name=name, version=version, proxy=deployed.proxies.get(name),
            tags=sorted(t for t, r in deployed.tags.items() if r == name),
            bound=sorted(ns for ns, r in deployed.namespaces.items() if r == name),
            gateways=_gateways_on(deployed, name),
            pods=using,
            can_drop=can_drop, why=why, in_stack=name in deployed.versions or name in outside,
            external=name in outside,
        ))
    unmanaged, left_alone = _unmanaged(counts, every)
    return Status(stack, revisions, unmanaged, left_alone, cluster_note, state_note)


def _unmanaged(counts: PodCounts,
               revisions: Iterable[str]) -> tuple[dict[str, dict[str, int]], dict[str, dict[str, int]]]:
    """Pods that use a revision neither deployed nor installed (a revisionless install's `default`, one
    removed by hand), and pods in bound namespaces that run no proxy at all; apart, those of them the bound
    revision's istiod would not inject (its `injector` output), with the reason."""
    known = set(revisions)
    found = Counter({(ns, UNINJECTED): n for ns, n in counts.uninjected.items()})
    for revision, by_namespace in counts.proxies.items():
        if revision not in known:
            found.update({(ns, revision): sum(tags.values()) for ns, tags in by_namespace.items()})
    return _by_namespace(found), _by_namespace(counts.left_alone)


def _by_namespace(counted: Counter[tuple[str, str]]) -> dict[str, dict[str, int]]:
    result: dict[str, dict[str, int]] = {}
    for (ns, key), n in sorted(counted.items()):
        result.setdefault(ns, {})[key] = n
    return result
