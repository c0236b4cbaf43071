"""The upgrade review: what a config change does to the mesh, from what the stack last deployed (its
outputs) and the config in the work tree, plus what the cluster runs in the namespaces that move.

Pure: `mesh/__main__.py` reads the stack outputs and the cluster and hands them in. The data-plane
numbers come from the MeshRollout's own decisions (`mesh.workloads.decide`, `revision_report`) and the
removal refusals from the drain guard's (`mesh.drain.revision_used`, `selectors_of`), so the review names what
`up` does.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Container, Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from mesh.charts import CANARY_SUFFIX, gateway_workload, istiod_values
from mesh.checks import PASSED, REFUSAL, WARNING
from mesh.checks.run import Checks
from mesh.checks.steps import Step
from mesh.checks.version_skew import ProxyPod, out_of_skew, proxy_version
from mesh.drain import PodTemplate, Selectors, revision_used, selectors_of
from mesh.external_revision import ExternalFacts, external_target
from mesh.injection import InjectorPolicy
from mesh.istio_vocabulary import LEGACY_INJECTION_LABEL, NATURAL, NONE, REV_LABEL, Strategy
from mesh.proxy_image import EXTERNAL_IMAGE
from mesh.restart_budget import gateway_workloads
from mesh.rollout_entries import gateway_entry
from mesh.rollout_plan import changed_entries, entries_of, rollout_inputs
from mesh.spec import PROJECT, GatewaySpec, MeshSpec, parse_version
from mesh.webhook_overlap import Overlap
from mesh.workloads import Action, Pod, Target, Workload, decide, revision_report

STACK_TYPE = "pulumi:pulumi:Stack"
ROLLOUT_TYPE = "pulumi-python:dynamic/mesh:MeshRollout"


@dataclass(frozen=True)
class Deployed:
    """What the stack's last `up` exported (empty for a stack never deployed)."""

    versions: Mapping[str, str] = field(default_factory=dict)
    proxies: Mapping[str, str] = field(default_factory=dict)
    tags: Mapping[str, str] = field(default_factory=dict)
    namespaces: Mapping[str, str] = field(default_factory=dict)
    gateways: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    profile: str | None = None
    cni: str | None = None
    """The istio-cni chart's version, None when CNI was off."""
    rollout: Mapping[str, Mapping[str, Mapping[str, str]]] = field(default_factory=dict)
    """The MeshRollout's `namespaces` and `gateways` as it last completed them (its state; empty when it was never
    created): what `up` plans against. A failed `up` has already exported the outputs above, not this."""
    injectors: Mapping[str, InjectorPolicy] = field(default_factory=dict)
    """Revision -> which pods its istiod injects, for the revisions whose values change that (exported only then)."""
    external: Mapping[str, str] = field(default_factory=dict)
    """Revision -> version ("" unknown) of the revisions installed outside the stack, which it never removes (not
    in `versions`, which are the ones it installed)."""

    @classmethod
    def from_outputs(cls, outputs: Mapping[str, Any],
                     rollout: Mapping[str, Mapping[str, Mapping[str, str]]] | None = None) -> Deployed:
        every = outputs.get("revisions") or {}
        revisions = {n: r for n, r in every.items() if not r.get("external")}
        return cls(
            versions={n: r["version"] for n, r in revisions.items()},
            external={n: str(r.get("version") or "") for n, r in every.items() if r.get("external")},
            proxies={n: r["proxy"] for n, r in revisions.items() if r.get("proxy")},
            injectors={n: InjectorPolicy.from_props(r["injector"]) for n, r in revisions.items() if r.get("injector")},
            tags=dict(outputs.get("tags") or {}),
            namespaces=dict(outputs.get("namespaces") or {}),
            gateways=dict(outputs.get("gateways") or {}),
            profile=(outputs.get("platform") or {}).get("profile"),
            cni=(outputs.get("platform") or {}).get("cni"),
            rollout=dict(rollout or {}),
        )

    @classmethod
    def from_export(cls, export: Mapping[str, Any]) -> Deployed:
        """From `pulumi stack export`: the stack's outputs and the MeshRollout's state, read in one."""
        live = [r for r in (export.get("deployment") or {}).get("resources") or [] if not r.get("delete")]
        state = next((r.get("outputs") or {} for r in live if r.get("type") == ROLLOUT_TYPE), {})
        rollout = {g: state[g] for g in ("namespaces", "gateways") if state.get(g)}
        return cls.from_outputs(stack_outputs(export), rollout)


def stack_outputs(export: Mapping[str, Any]) -> dict[str, Any]:
    """The stack's last outputs, from `pulumi stack export` (empty for a stack never deployed)."""
    live = [r for r in (export.get("deployment") or {}).get("resources") or [] if not r.get("delete")]
    return dict(next((r.get("outputs") or {} for r in live if r.get("type") == STACK_TYPE), {}))


@dataclass(frozen=True)
class Move:
    """A namespace (or a gateway's Deployment) whose pods `up` moves or reports."""

    namespace: str
    workload: str | None
    """A gateway's workload as its MeshRollout entry names it (`ingress`, `DaemonSet/ingress`); None: the namespace."""
    before: str | None
    target: Target
    strategy: Strategy
    why: str


def control_plane(deployed: Deployed, spec: MeshSpec) -> list[str]:
    """Revisions, base, tags and gateway pins that change, one line each."""
    lines = []
    for name, rev in sorted(spec.revisions.items()):
        old = deployed.versions.get(name)
        if rev.external:
            if name not in deployed.external:
                lines.append(f"revision `{name}` added as external (installed outside the stack: nothing is installed, "
                             "the preview checks its injection webhook)")
            continue
        if old is None:
            lines.append(f"revision `{name}` added at {rev.version}")
        elif old != rev.version:
            lines.append(f"revision `{name}` changes in place {old} -> {rev.version} "
                         "(allowed: at most one minor at a time)")
    lines += [f"revision `{name}` removed (was {v})" for name, v in sorted(deployed.versions.items())
              if name not in spec.revisions]
    lines += [f"external revision `{name}` no longer declared (nothing of it is deleted)"
              for name in sorted(deployed.external) if name not in spec.revisions]
    # Every revision external: the stack installs no base (VersionGate refuses dropping the last one it installed).
    if spec.installed and deployed.versions:
        old_base = str(max(parse_version(v) for v in deployed.versions.values()))
        if old_base != spec.newest_version:
            lines.append(f"base chart and CRDs {old_base} -> {spec.newest_version}")
    elif spec.installed:
        lines.append(f"base chart and CRDs installed at {spec.newest_version}")
    lines += _platform_lines(deployed, spec)
    for tag in sorted({*deployed.tags, *spec.tags}):
        old, new = deployed.tags.get(tag), spec.tags.get(tag)
        if old != new:
            lines.append(f"tag `{tag}`: {old or '(none)'} -> {new or '(removed)'}")
    for name, gw in sorted(spec.gateways.items()):
        lines += _gateway_lines(name, gw, deployed.gateways.get(name) or {}, spec)
    return lines


def _platform_lines(deployed: Deployed, spec: MeshSpec) -> list[str]:
    """The platform profile and the istio-cni node agent (which follows the newest revision, like base)."""
    lines = []
    if deployed.profile != spec.profile:
        lines.append(f"platform profile: {deployed.profile or '(none)'} -> {spec.profile or '(none)'} "
                     "(every chart is re-rendered with it)")
    cni = spec.newest_version if spec.cni.enabled else None
    if deployed.cni != cni:
        if deployed.cni is None:
            lines.append(f"istio-cni node agent installed at {cni}; every revision's pods use it once restarted")
        elif cni is None:
            lines.append(f"istio-cni node agent removed (was {deployed.cni}); revisions go back to istio-init")
        else:
            lines.append(f"istio-cni node agent {deployed.cni} -> {cni} (its DaemonSet rolls node by node)")
    return lines


def _gateway_lines(name: str, gw: GatewaySpec, before: Mapping[str, str], spec: MeshSpec) -> list[str]:
    """A gateway's re-pin, and its canary added, moved, removed or promoted (the canary's revision becomes the
    gateway's and the canary goes: the gateway's Deployment rolls first, its Service stays as it is)."""
    where = f"gateway `{name}` ({gw.namespace})"
    old, new = before.get("revision"), spec.resolve(gw.revision)
    old_canary = before.get("canary")
    new_canary = spec.resolve(gw.canary.revision) if gw.canary else None
    canary_deployment = gateway_workload(name, gw) + CANARY_SUFFIX
    if old_canary and not new_canary and old != new == old_canary:
        return [f"{where}: canary promoted, {old} -> {new}: the gateway's Deployment rolls to {new}, then "
                f"`{canary_deployment}` is deleted; the Service stays"]
    lines = [f"{where}: {old or '(new)'} -> {new}"] if old != new else []
    if old_canary and not new_canary:
        lines.append(f"{where}: canary on {old_canary} removed (`{canary_deployment}` deleted)")
    elif gw.canary and new_canary != old_canary:
        share = f"{gw.canary.replicas} of {gw.canary.replicas + gw.replicas} pods behind its Service"
        change = f"moves {old_canary} -> {new_canary}" if old_canary else f"added on {new_canary}"
        lines.append(f"{where}: canary {change} (`{canary_deployment}`, {share})")
    return lines


def moves(deployed: Deployed, spec: MeshSpec) -> list[Move]:
    """The MeshRollout entries `up` plans, by its own rule (`changed_entries`) against its state: new, or with
    another revision, proxy image or strategy than it last completed (gateway canaries included)."""
    before = entries_of(deployed.rollout)
    result = []
    for entry, target in sorted(changed_entries(deployed.rollout, rollout_inputs(spec)).items()):
        ns, _, workload = entry.partition("/")
        old = before.get(entry) or {}
        external = spec.revisions[target["revision"]].external
        policy = InjectorPolicy() if external else InjectorPolicy.from_values(istiod_values(spec, target["revision"]))
        result.append(Move(ns, workload or None, old.get("revision"),
                           Target(target["revision"], target["proxy_image"], policy),
                           target["strategy"],
                           _why(old, target, bool(workload))))
    return result


def with_external_target(move: Move, facts: ExternalFacts | None) -> Move:
    """A move to an external revision (target `EXTERNAL_IMAGE`) with the target the MeshRollout will read from the
    cluster (`facts`, None when the revision has no injection webhook: then the preview refuses the change)."""
    if move.target.proxy_image != EXTERNAL_IMAGE:
        return move
    if facts is None:
        return replace(move, target=Target(move.target.revision, ""),
                       why=f"{move.why} (external, but no injection webhook of it in the cluster: preview refuses it)")
    return replace(move, target=external_target(facts), why=f"{move.why} ({facts.target_note})")


def _why(old: Mapping[str, str], new: Mapping[str, str], gateway: bool) -> str:
    """What changed in an entry: its revision (or else its proxy image), and its strategy."""
    if old.get("revision") != new["revision"]:
        why = [f"{old.get('revision') or ('(new)' if gateway else '(unbound)')} -> {new['revision']}"]
    elif old.get("proxy_image") != new["proxy_image"]:
        why = [f"proxy {old.get('proxy_image')} -> {new['proxy_image']}"]
    else:
        why = []
    if old and old.get("strategy") != new["strategy"]:
        why.append(f"strategy {old.get('strategy')} -> {new['strategy']}")
    return ", ".join(why)


@dataclass(frozen=True)
class DataPlane:
    """What `up` will do in one moving namespace, from the cluster as read now."""

    move: Move
    restart: Mapping[str, int]
    """`<Kind>/<name>` -> live pods, the workloads the MeshRollout restarts."""
    waiting: int
    pending_pods: int
    """For `natural`: pods not on the target yet."""
    manual: Mapping[str, str] = field(default_factory=dict)
    """`<Kind>/<name>` -> why the MeshRollout refuses to restart it (paused; pods replaced only when deleted)."""
    left_alone: Mapping[str, str] = field(default_factory=dict)
    """Pod -> why no restart can change what it runs (`mesh.workloads.left_alone`), as `up` reports them."""


def left_to_gateways(spec: MeshSpec, move: Move) -> dict[str, str]:
    """For a namespace's move, the gateway workloads in it (`<Kind>/<name>` -> gateway entry): the MeshRollout
    moves each with its gateway's entry, never with the namespace's (`mesh.restart_budget.gateway_workloads`)."""
    if move.workload:
        return {}
    entries = (gateway_entry(name, g) for name, g in spec.gateways.items())
    return gateway_workloads(entries).get(move.namespace, {})


def data_plane(move: Move, workloads: Iterable[Workload], pods: Iterable[Pod],
               elsewhere: Mapping[str, str] | None = None) -> DataPlane:
    """The MeshRollout's own decision for each workload of the namespace; `elsewhere` are those another entry
    moves (`left_to_gateways`)."""
    pods = list(pods)
    report = revision_report(pods, move.target)
    if move.strategy == NATURAL:
        return DataPlane(move, {}, 0, report.on_other + report.stale_proxies, left_alone=dict(report.left_alone))
    if move.strategy == NONE:
        return DataPlane(move, {}, 0, 0)
    restart, waiting, manual = {}, 0, {}
    for w in workloads:
        if w.key in (elsewhere or {}):
            continue
        decision = decide(w, move.target)
        if decision.action is Action.RESTART:
            restart[w.key] = len(w.live_pods)
        elif decision.action is Action.MANUAL:
            manual[w.key] = decision.reason
        waiting += decision.action is Action.WAIT
    return DataPlane(move, dict(sorted(restart.items())), waiting, 0, dict(sorted(manual.items())),
                     dict(report.left_alone))


@dataclass
class ClusterPods:
    """Every pod of the cluster folded as it is read, one at a time, into what the review needs of them: per
    removed revision the pods still using it per namespace (the drain guard's rule, `revision_used`), and the pods
    of a revision changing in place whose proxy its new istiod does not support (those the skew check names).
    It grows with the namespaces and the pods the review names, never with the cluster's pods."""

    removed: frozenset[str]
    in_place: Mapping[str, str] = field(default_factory=dict)
    """Revision -> its version after the change, for those changing in place."""
    users: dict[str, Counter[str]] = field(default_factory=dict)
    skewed: list[ProxyPod] = field(default_factory=list)

    @classmethod
    def of(cls, deployed: Deployed, spec: MeshSpec, change: Iterable[Step]) -> ClusterPods:
        return cls(frozenset(set(deployed.versions) - set(spec.revisions)),
                   {s.key.removeprefix("revisions."): s.after for s in change if s.how == "in place"})

    def add(self, pod: Pod) -> None:
        used = revision_used(pod)
        if used in self.removed:
            self.users.setdefault(used, Counter())[pod.namespace] += 1
        for p in proxy_pods((pod,)):
            if p.revision in self.in_place and out_of_skew(p.proxy_version, self.in_place[p.revision]):
                self.skewed.append(p)

    def refusals(self) -> dict[str, dict[str, int]]:
        """Per removed revision, the pods still using it by namespace: what the drain guard refuses on."""
        return {name: dict(sorted(self.users[name].items())) for name in sorted(self.users)}


def refusals(deployed: Deployed, spec: MeshSpec, pods: Iterable[Pod]) -> dict[str, dict[str, int]]:
    """Per removed revision, the pods still using it by namespace (`ClusterPods`, folded one pod at a time)."""
    fold = ClusterPods.of(deployed, spec, ())
    for pod in pods:
        fold.add(pod)
    return fold.refusals()


def selected_after(deployed: Deployed, spec: MeshSpec, namespace_labels: Mapping[str, Mapping[str, str]],
                   templates: Iterable[PodTemplate]) -> dict[str, Selectors]:
    """Per removed revision, what still selects it by label once the change is applied, as the drain guard will
    read it: `namespace_labels` as the bindings leave them (`mesh.webhook_overlap.namespaces_after`), and the pod
    templates of workloads the stack does not render (its gateways' templates follow the config)."""
    ours = {(g.namespace, w) for name, g in spec.gateways.items()
            for w in (gateway_workload(name, g), f"{gateway_workload(name, g)}{CANARY_SUFFIX}")}
    ours |= {(str(v.get("namespace")), name) for name, v in deployed.gateways.items()}
    others = [t for t in templates if (t.namespace, t.workload.split("/", 1)[1]) not in ours]
    result = {}
    for name in sorted(set(deployed.versions) - set(spec.revisions)):
        if found := selectors_of(name, namespace_labels, others):
            result[name] = found
    return result


def selecting(templates: Iterable[PodTemplate], revisions: Container[str] | None = None) -> list[PodTemplate]:
    """The pod templates that can select a revision by label (labelled `istio.io/rev` with one of `revisions`, or
    any, and injectable): the only ones `selectors_of` counts. Kept as they are read, so a cluster's workloads pass
    through and only these stay."""
    return [t for t in templates if t.revision_label is not None and t.injectable
            and (revisions is None or t.revision_label in revisions)]


def proxy_pods(pods: Iterable[Pod]) -> tuple[ProxyPod, ...]:
    """The live pods running a proxy of a known version, with the revision that injected them (for the skew
    check); pods whose proxy image carries no version (a digest) are left out, as nothing can be said of them."""
    found = []
    for pod in pods:
        version = proxy_version(pod.proxy.image)
        if pod.live and pod.revision and version:
            found.append(ProxyPod(pod.namespace, pod.name, pod.revision, version))
    return tuple(found)


def restarted_namespaces(planes: Iterable[DataPlane]) -> frozenset[str]:
    """The namespaces where this `up` restarts workloads (their pods come back on the new proxy)."""
    return frozenset(d.move.namespace for d in planes if d.restart)


def unmanaged_labels(namespaces: Mapping[str, Mapping[str, str]], spec: MeshSpec) -> dict[str, str]:
    """Namespaces carrying injection labels that no binding manages (they follow tags on their own)."""
    return {
        ns: ", ".join(f"{k}={labels[k]}" for k in (LEGACY_INJECTION_LABEL, REV_LABEL) if k in labels)
        for ns, labels in sorted(namespaces.items())
        if ns not in spec.namespaces and (LEGACY_INJECTION_LABEL in labels or REV_LABEL in labels)
    }


@dataclass(frozen=True)
class Review:
    stack: str
    control_plane: list[str]
    data_plane: list[DataPlane] | None
    """None when the cluster could not be read."""
    refusals: dict[str, dict[str, int]]
    unmanaged: dict[str, str]
    concurrency: int
    timeout_seconds: int
    cluster_note: str | None = None
    overlaps: list[Overlap] = field(default_factory=list)
    """Injection webhooks that would both inject one pod once the change is applied (IST0139)."""
    per_namespace: int | None = None
    selected: dict[str, Selectors] = field(default_factory=dict)
    """Per removed revision, the namespace labels and pod templates still selecting it (`selected_after`)."""
    checks: Checks = field(default_factory=lambda: Checks([]))
    """Istio's upgrade rules over the change (`mesh.checks`): passed, warnings, refusals, and what was skipped."""

    @property
    def restarts(self) -> int:
        return sum(len(d.restart) for d in self.data_plane or [])

    def estimate(self) -> str:
        """Waves of up to `concurrency` workloads across the stack (the MeshRollout's one budget), each taking at
        most `timeoutSeconds`; a `perNamespace` cap makes the namespace with the most restarts take as many waves
        as it needs on its own."""
        batches = math.ceil(self.restarts / self.concurrency) if self.restarts else 0
        if self.per_namespace:
            per_ns: dict[str, int] = {}
            for d in self.data_plane or []:
                per_ns[d.move.namespace] = per_ns.get(d.move.namespace, 0) + len(d.restart)
            batches = max([batches, *(math.ceil(n / self.per_namespace) for n in per_ns.values())])
        cap = f" ({self.per_namespace} per namespace)" if self.per_namespace else ""
        return (f"{batches} batch(es) of up to {self.concurrency} across the stack{cap}, "
                f"at most {batches * self.timeout_seconds}s")

    def to_json(self) -> dict[str, Any]:
        """Everything as data; `checks` as {refusals, warnings, passed: [{rule, key, message, details}], skipped}."""
        data = asdict(self)
        data["checks"] = {
            "refusals": [asdict(f) for f in self.checks.of(REFUSAL)],
            "warnings": [asdict(f) for f in self.checks.of(WARNING)],
            "passed": [asdict(f) for f in self.checks.of(PASSED)],
            "skipped": list(self.checks.skipped),
        }
        return data

    def checks_markdown(self) -> list[str]:
        """Refusals first (the preview refuses them too), then warnings, what passed, and what was not checked."""
        out = ["#### Checks"]
        for label, severity in (("refused", REFUSAL), ("warning", WARNING), ("passed", PASSED)):
            out += [f"- {label}: `{PROJECT}:{f.key}`: {f.message}" for f in self.checks.of(severity)]
        out += [f"- skipped: {why}" for why in self.checks.skipped]
        if len(out) == 1:
            out.append("- nothing to check")
        return out

    def markdown(self) -> str:
        out = [f"#### Control plane ({self.stack})", *(f"- {line}" for line in self.control_plane or ["no change"])]
        out.append("#### Data plane")
        if self.data_plane is None:
            out.append(f"- cluster part skipped: {self.cluster_note}")
        elif not self.data_plane:
            out.append("- no namespace or gateway moves")
        for d in self.data_plane or []:
            where = d.move.namespace + (f" (gateway {d.move.workload})" if d.move.workload else "")
            if d.move.strategy == NATURAL:
                out.append(f"- `{where}`: {d.move.why}, natural: moves on next deploy, {d.pending_pods} pods pending")
            elif d.move.strategy == NONE:
                out.append(f"- `{where}`: {d.move.why}, strategy none: nothing restarted")
            else:
                listed = ", ".join(f"{k} ({n} pods)" for k, n in d.restart.items())
                does = f"restarts {listed}" if listed else "nothing to restart"
                extra = f"; {d.waiting} already restarting" if d.waiting else ""
                if d.manual:
                    refused = "; ".join(f"{k} ({why})" for k, why in d.manual.items())
                    extra += f"; refuses {refused}: up restarts the others, then fails naming them"
                out.append(f"- `{where}`: {d.move.why}, rolling: {does}{extra}")
            if d.left_alone:
                reasons = Counter(d.left_alone.values())
                listed = "; ".join(f"{n} {why}" for why, n in sorted(reasons.items()))
                out.append(f"  - leaves {len(d.left_alone)} pods as they are (a restart cannot move them): {listed}")
        if self.data_plane:
            out.append(f"- `up` restarts {self.restarts} workload(s): {self.estimate()}")
        out.append("#### Safety")
        for revision, users in self.refusals.items():
            total = sum(users.values())
            where = ", ".join(f"{ns} ({n})" for ns, n in users.items())
            out.append(f"- removing `{revision}`: up will refuse, {total} pods still run it ({where})")
        out += [f"- `{ns}` carries {labels}, which no binding manages" for ns, labels in self.unmanaged.items()]
        for o in self.overlaps:
            pod = ", ".join(f"{k}={v}" for k, v in o.pod_labels.items()) or "none"
            out.append(f"- `{o.namespace}`: webhooks {', '.join(f'`{w}`' for w in o.webhooks)} would all inject "
                       f"one pod (IST0139; pod labels: {pod})")
        for revision, sel in self.selected.items():
            found = [f"namespace `{ns}` ({REV_LABEL}={revision})" for ns in sel.namespaces]
            found += [f"pod template `{ns}/{w}`" for ns, names in sel.templates.items() for w in names]
            out.append(f"- removing `{revision}`: up will refuse, still selected by {', '.join(found)} "
                       "(their next pods would start without a sidecar)")
        if not self.refusals and not self.unmanaged and not self.overlaps and not self.selected:
            out.append("- nothing found" if self.data_plane is not None else "- not checked (no cluster)")
        out += self.checks_markdown()
        return "\n".join(out) + "\n"
