"""Pure planning of the data-plane migration a binding change needs.

No I/O and no pulumi import: the Rollout provider (mesh/providers/rollout.py) reads the cluster,
feeds the objects it read to these functions as plain dicts, and acts on their decisions. Keeping
every rule here (what to restart, when a rollout is complete, what a stuck one waits for, when to
stop) makes the rules testable without a cluster and keeps the provider a thin I/O loop.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any, Literal

from mesh.injection import InjectorPolicy
from mesh.istio_vocabulary import INJECT_KEY, REV_ANNOTATION, REV_LABEL
from mesh.proxy_image import PodProxy, ProxyState, configured_image_type, pod_proxy, proxy_state

RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
"""Template annotation `kubectl rollout restart` sets; we set it the same way."""
RESTARTED_FOR = "mesh.istio-mesh.dev/restarted-for-revision"
"""Template annotation naming the revision a restart was made for, so a resumed run waits on an
in-flight rollout instead of restarting it a second time."""
RESTARTED_FOR_PROXY = "mesh.istio-mesh.dev/restarted-for-proxy"
"""Its companion naming the proxy image the restart was made for: a restart for the same revision but
another image (an in-place upgrade since) is not ours to wait on."""
UNINJECTED = "(not injected)"
"""Report key for pods that carry no revision annotation."""

Kind = Literal["Deployment", "StatefulSet", "DaemonSet"]
KINDS: tuple[Kind, ...] = ("Deployment", "StatefulSet", "DaemonSet")


@dataclass(frozen=True)
class Target:
    """What a pod must run to be done: the bound revision, and the proxy image that revision injects now
    (a version or hub change keeps the revision and changes the image: an in-place upgrade)."""

    revision: str
    proxy_image: str
    """"" when it cannot be known (an external revision whose injector is remote): pods are checked for the
    revision alone."""
    injector: InjectorPolicy = field(default_factory=InjectorPolicy, compare=False)
    """What the revision's istiod decides per pod (which pods it injects at all); not part of a restart's stamp."""

    def __str__(self) -> str:
        return f"{self.revision} ({self.proxy_image})" if self.proxy_image else self.revision

    def stale_proxy(self, pod: Pod) -> bool:
        """Whether a pod on the revision runs another proxy image than it injects now (never, when unknown)."""
        return bool(self.proxy_image) and proxy_state(pod.proxy, self.proxy_image) is ProxyState.STALE


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("metadata") or {}


def _controller_uid(obj: Mapping[str, Any]) -> str | None:
    for ref in _meta(obj).get("ownerReferences") or []:
        if ref.get("controller"):
            return ref.get("uid")
    return None


def opted_out(labels: Mapping[str, str], annotations: Mapping[str, str]) -> bool:
    """Whether istiod refuses to inject a pod with these labels and annotations (pod or template).

    As istio/istio `pkg/kube/inject/inject.go` `injectRequired` decides: the `sidecar.istio.io/inject`
    label, when present (whatever its value), replaces the annotation; only the exact value "false"
    opts out ("true" opts in, anything else falls back to the namespace's policy). The webhooks'
    objectSelector (`NotIn [false]`) keeps a label "false" from even reaching istiod.
    """
    return labels.get(INJECT_KEY, annotations.get(INJECT_KEY)) == "false"


@dataclass(frozen=True)
class Pod:
    """What one pod tells about the proxy it runs and why it may not be ready."""

    namespace: str
    name: str
    revision: str | None
    owner_uid: str | None
    injectable: bool
    live: bool
    problem: str | None = None
    proxy: PodProxy = field(default_factory=PodProxy)
    revision_label: str | None = None
    """The `istio.io/rev` label: the tag or revision the pod asks for by itself (gateways), if any."""
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    """Its labels and annotations, which the injector's selectors and ProxyConfig read."""


def pod_from_object(obj: Mapping[str, Any]) -> Pod:
    """Read a pod as returned by the API (a dict); `live` excludes terminating and finished pods."""
    meta = _meta(obj)
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    phase = status.get("phase")
    return Pod(
        namespace=meta.get("namespace", ""),
        name=meta.get("name", ""),
        revision=annotations.get(REV_ANNOTATION),
        owner_uid=_controller_uid(obj),
        injectable=not opted_out(labels, annotations) and not spec.get("hostNetwork", False),
        live=not meta.get("deletionTimestamp") and phase not in ("Succeeded", "Failed"),
        problem=_pod_problem(status),
        proxy=pod_proxy(spec, annotations),
        revision_label=labels.get(REV_LABEL),
        labels=labels,
        annotations=annotations,
    )


def with_proxy_configs(pod: Pod, proxy_configs: list[Mapping[str, Any]], root_namespace: str) -> Pod:
    """The pod with the image type the ProxyConfig resources its revision's istiod reads give it (if any)."""
    image_type = configured_image_type(pod.namespace, pod.labels, pod.annotations, proxy_configs, root_namespace)
    return replace(pod, proxy=replace(pod.proxy, image_type=image_type))


def _pod_problem(status: Mapping[str, Any]) -> str | None:
    """Why a pod is not ready, in the words of its conditions and container states."""
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    scheduled = conditions.get("PodScheduled")
    if scheduled and scheduled.get("status") == "False":
        return f"{scheduled.get('reason') or 'not scheduled'}: {scheduled.get('message') or ''}".strip()
    for cs in status.get("containerStatuses") or []:
        waiting = (cs.get("state") or {}).get("waiting")
        if waiting:
            return f"container {cs.get('name')} {waiting.get('reason') or 'waiting'}"
    ready = conditions.get("Ready")
    if ready and ready.get("status") == "True":
        return None
    if ready:
        return f"not ready ({ready.get('reason') or 'Ready=False'})"
    return f"{status.get('phase') or 'Pending'}"


@dataclass(frozen=True)
class Workload:
    """A Deployment, StatefulSet or DaemonSet with the status numbers its kind uses.

    `desired` is spec.replicas (DaemonSet: status.desiredNumberScheduled) and `current` all pods
    the controller counts, old ones included (status.replicas / currentNumberScheduled).
    """

    kind: Kind
    namespace: str
    name: str
    uid: str
    generation: int
    observed_generation: int
    desired: int
    current: int
    updated: int
    ready: int
    available: int
    template_labels: Mapping[str, str] = field(default_factory=dict)
    template_annotations: Mapping[str, str] = field(default_factory=dict)
    host_network: bool = False
    paused: bool = False
    update_revision: str = ""
    current_revision: str = ""
    manual_update: str | None = None
    """Why a template change does not roll the pods by itself (OnDelete, partition), if so."""
    stalled: str | None = None
    """The Deployment's Progressing condition when it reports ProgressDeadlineExceeded."""
    pods: tuple[Pod, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.kind}/{self.name}"

    @property
    def opted_out(self) -> bool:
        return opted_out(self.template_labels, self.template_annotations)

    @property
    def restarted_for(self) -> Target | None:
        """What our last restart of it was for; restarts stamped before the proxy was recorded have no image."""
        revision = self.template_annotations.get(RESTARTED_FOR)
        if revision is None:
            return None
        return Target(revision, self.template_annotations.get(RESTARTED_FOR_PROXY, ""))

    @property
    def live_pods(self) -> tuple[Pod, ...]:
        return tuple(p for p in self.pods if p.live)


def workload_from_object(kind: Kind, obj: Mapping[str, Any]) -> Workload:
    """Read a workload as returned by the API (a dict) into the numbers its kind's status uses."""
    meta = _meta(obj)
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    template = spec.get("template") or {}
    tmeta = template.get("metadata") or {}
    common: dict[str, Any] = {
        "kind": kind,
        "namespace": meta.get("namespace", ""),
        "name": meta.get("name", ""),
        "uid": meta.get("uid", ""),
        "generation": int(meta.get("generation") or 0),
        "observed_generation": int(status.get("observedGeneration") or 0),
        "template_labels": dict(tmeta.get("labels") or {}),
        "template_annotations": dict(tmeta.get("annotations") or {}),
        "host_network": bool((template.get("spec") or {}).get("hostNetwork", False)),
    }
    if kind == "DaemonSet":
        strategy = spec.get("updateStrategy") or {}
        return Workload(
            **common,
            desired=int(status.get("desiredNumberScheduled") or 0),
            current=int(status.get("currentNumberScheduled") or 0),
            updated=int(status.get("updatedNumberScheduled") or 0),
            ready=int(status.get("numberReady") or 0),
            available=int(status.get("numberAvailable") or 0),
            manual_update="updateStrategy OnDelete" if strategy.get("type") == "OnDelete" else None,
        )
    replicas = spec.get("replicas")
    desired = 1 if replicas is None else int(replicas)
    numbers: dict[str, Any] = {
        "desired": desired,
        "current": int(status.get("replicas") or 0),
        "updated": int(status.get("updatedReplicas") or 0),
        "ready": int(status.get("readyReplicas") or 0),
        "available": int(status.get("availableReplicas") or 0),
    }
    if kind == "StatefulSet":
        strategy = spec.get("updateStrategy") or {}
        partition = int(((strategy.get("rollingUpdate") or {}).get("partition")) or 0)
        manual = None
        if strategy.get("type") == "OnDelete":
            manual = "updateStrategy OnDelete"
        elif partition > 0:
            manual = f"rollingUpdate.partition={partition}"
        return Workload(
            **common,
            **numbers,
            update_revision=status.get("updateRevision") or "",
            current_revision=status.get("currentRevision") or "",
            manual_update=manual,
        )
    stalled = None
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
            stalled = cond.get("message") or "progress deadline exceeded"
    return Workload(**common, **numbers, paused=bool(spec.get("paused")), stalled=stalled)


def attach_pods(
    workloads: Iterable[Workload],
    pods: Iterable[Pod],
    replicaset_owners: Mapping[str, str],
) -> list[Workload]:
    """Give each workload its pods, following controller owner references.

    A Deployment owns its pods through ReplicaSets: `replicaset_owners` maps a ReplicaSet's uid
    to its Deployment's uid. Owner references rather than label selectors, because selectors of
    different workloads may overlap.
    """
    by_owner: dict[str, list[Pod]] = {}
    for pod in pods:
        if pod.owner_uid is None:
            continue
        owner = replicaset_owners.get(pod.owner_uid, pod.owner_uid)
        by_owner.setdefault(owner, []).append(pod)
    return [replace(w, pods=tuple(sorted(by_owner.get(w.uid, []), key=lambda p: p.name))) for w in workloads]


def waiting_for(w: Workload) -> str | None:
    """What the workload's rollout still waits for, or None once it is complete.

    The rules are those of `kubectl rollout status`, plus availability for every kind (a restart
    is only done when the new pods serve) and no old replicas left.
    """
    if w.observed_generation < w.generation:
        return f"controller has not observed generation {w.generation} yet (observed {w.observed_generation})"
    if w.kind == "Deployment":
        if w.paused:
            return "rollout is paused (spec.paused=true)"
        if w.stalled:
            return f"progress deadline exceeded: {w.stalled}"
        if w.updated < w.desired:
            return f"{w.updated} of {w.desired} replicas updated"
        if w.current > w.updated:
            return f"{w.current - w.updated} old replicas pending termination"
        if w.available < w.desired:
            return f"{w.available} of {w.desired} updated replicas available"
        return None
    if w.kind == "StatefulSet":
        if w.manual_update:
            return f"pods are only replaced when deleted ({w.manual_update})"
        if w.updated < w.desired or (w.desired > 0 and w.update_revision != w.current_revision):
            return f"{w.updated} of {w.desired} pods at the new revision"
        if w.ready < w.desired:
            return f"{w.ready} of {w.desired} pods ready"
        if w.available < w.desired:
            return f"{w.available} of {w.desired} pods available"
        return None
    if w.manual_update:
        return f"pods are only replaced when deleted ({w.manual_update})"
    if w.updated < w.desired:
        return f"{w.updated} of {w.desired} pods updated"
    if w.available < w.desired:
        return f"{w.available} of {w.desired} pods available"
    return None


def describe_wait(w: Workload) -> str:
    """`waiting_for` plus the first pod problem, which usually names the real cause."""
    reason = waiting_for(w) or "complete"
    problems = [f"pod {p.name}: {p.problem}" for p in w.live_pods if p.problem]
    return f"{reason}; {problems[0]}" if problems else reason


def left_alone(pod: Pod, target: Target) -> str | None:
    """Why a restart cannot change what a live injectable pod runs, or None: the target's injector would not
    inject it, or its proxy image is its own (set by hand, by its template's container, or by digest alone)."""
    refused = target.injector.refuses(pod.labels, pod.annotations)
    if refused:
        return f"not injected by {target.revision}: {refused}"
    if pod.revision == target.revision and target.proxy_image:
        state = proxy_state(pod.proxy, target.proxy_image)
        if state in (ProxyState.PINNED, ProxyState.OVERRIDDEN, ProxyState.DIGEST_ONLY):
            return state.value
    return None


def is_stale(pod: Pod, target: Target) -> bool:
    """An injectable pod not on the target revision (uninjected included), or on it with another proxy image.
    Pods whose proxy image was chosen by hand, or cannot be compared, count as on target (see proxy_state), and
    pods the target's injector would not inject are not stale: no restart can move them."""
    if not pod.injectable or target.injector.refuses(pod.labels, pod.annotations):
        return False
    return pod.revision != target.revision or target.stale_proxy(pod)


def off_target(w: Workload, target: Target) -> list[Pod]:
    """The workload's live pods that must be recreated to reach `target`."""
    return [p for p in w.live_pods if is_stale(p, target)]


def _runs(pod: Pod, target: Target) -> str:
    """What a stale pod runs instead of the target, in a word."""
    if pod.revision == target.revision:
        return f"{pod.revision} ({pod.proxy.image})"
    return pod.revision or UNINJECTED


class Action(Enum):
    RESTART = "restart"
    WAIT = "wait"
    SKIP = "skip"
    MANUAL = "manual"


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str


def decide(w: Workload, target: Target) -> Decision:
    """Whether a workload needs a restart to run `target`.

    An in-flight restart for the same target (our template annotations, rollout not complete) is
    waited on, never restarted again: that is what makes an interrupted run resumable.
    """
    if w.opted_out:
        return Decision(Action.SKIP, f"opted out of injection ({INJECT_KEY}=false)")
    if w.host_network:
        return Decision(Action.SKIP, "hostNetwork pods are never injected")
    refused = target.injector.refuses(w.template_labels, w.template_annotations)
    if refused:
        return Decision(Action.SKIP, f"not injected by {target.revision}: {refused}; a restart cannot move its pods")
    if w.paused and (stale := off_target(w, target)):
        # Before the in-flight check: a paused Deployment never completes a rollout, so waiting on it is futile.
        return Decision(Action.MANUAL, f"{len(stale)} pods not on {target}; Deployment is paused (spec.paused=true): "
                        f"`kubectl rollout resume deployment/{w.name} -n {w.namespace}`, then `pulumi up` again")
    in_flight = w.restarted_for == target and waiting_for(w) is not None
    if in_flight:
        return Decision(Action.WAIT, f"restart for {target} already in progress")
    stale = off_target(w, target)
    if not stale:
        if not w.live_pods:
            return Decision(Action.SKIP, "no running pods")
        return Decision(Action.SKIP, f"all pods already run {target}")
    if w.manual_update:
        return Decision(
            Action.MANUAL, f"{len(stale)} pods not on {target}; {w.manual_update}: delete them to move them"
        )
    return Decision(Action.RESTART, f"{len(stale)} of {len(w.live_pods)} pods not on {target}")


def restart_patch(target: Target, now_rfc3339: str) -> dict[str, Any]:
    """The merge patch `kubectl rollout restart` sends, plus the target the restart is for."""
    annotations = {RESTARTED_AT: now_rfc3339, RESTARTED_FOR: target.revision, RESTARTED_FOR_PROXY: target.proxy_image}
    return {"spec": {"template": {"metadata": {"annotations": annotations}}}}


@dataclass(frozen=True)
class RevisionReport:
    """Live injectable pods by the revision they run, those of the target revision with another proxy
    image, and those whose proxy is left alone, by name (the `natural` strategy's report)."""

    target: Target
    by_revision: Mapping[str, int]
    stale_proxies: int
    left_alone: Mapping[str, str]

    @property
    def on_target(self) -> int:
        return self.by_revision.get(self.target.revision, 0) - self.stale_proxies

    @property
    def on_other(self) -> int:
        return sum(n for rev, n in self.by_revision.items() if rev != self.target.revision)

    def others(self) -> dict[str, int]:
        return {rev: n for rev, n in sorted(self.by_revision.items()) if rev != self.target.revision}

    def summary(self, where: str) -> str:
        if not self.on_other and not self.stale_proxies:
            return f"{where}: all {self.on_target} pods run {self.target}"
        behind = []
        if self.on_other:
            parts = ", ".join(f"{rev}: {n}" for rev, n in self.others().items())
            behind.append(f"{self.on_other} pods still run other revisions ({parts})")
        if self.stale_proxies:
            behind.append(f"{self.stale_proxies} run {self.target.revision} with another proxy image")
        return f"{where}: {', '.join(behind)}, {self.on_target} run {self.target}; they move when next recreated"

    def left_alone_summary(self, where: str) -> str | None:
        """The pods whose proxy the rollout does not check, and why."""
        if not self.left_alone:
            return None
        return f"{where}: proxies left alone: " + "; ".join(f"{pod}: {why}" for pod, why in self.left_alone.items())


def revision_report(pods: Iterable[Pod], target: Target) -> RevisionReport:
    """Pods the target's injector would not inject are named with the reason, not counted as behind."""
    live = [p for p in pods if p.live and p.injectable]
    alone = {p.name: why for p in sorted(live, key=lambda p: p.name) if (why := left_alone(p, target))}
    counted = [p for p in live if not target.injector.refuses(p.labels, p.annotations)]
    on_revision = [p for p in counted if p.revision == target.revision]
    return RevisionReport(
        target=target,
        by_revision=dict(Counter(p.revision or UNINJECTED for p in counted)),
        stale_proxies=sum(target.stale_proxy(p) for p in on_revision),
        left_alone=alone,
    )


@dataclass
class RolloutRun:
    """The state of one rolling restart of a namespace, advanced by `plan` then `tick`.

    Keeps up to `concurrency` workloads in flight. Each has `timeout_seconds` from its restart
    (or from the first sighting, for one already in flight) to complete. When one is stuck or
    ends on the wrong revision, no further restarts start (a new revision breaking workloads
    should not be rolled onto more of them); those in flight are still waited for.
    """

    target: Target
    concurrency: int
    timeout_seconds: float
    queue: list[str] = field(default_factory=list)
    in_flight: dict[str, float] = field(default_factory=dict)
    restarted: list[str] = field(default_factory=list)
    done: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    manual: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    total: int = 0

    def plan(self, workloads: Iterable[Workload], now: float, elsewhere: Mapping[str, str] | None = None) -> None:
        """Sort the namespace's workloads into to-restart, to-wait-on and left-alone; `elsewhere` (workload key ->
        gateway entry) names the workloads another entry of the same `up` moves."""
        for w in sorted(workloads, key=lambda w: (KINDS.index(w.kind), w.name)):
            owner = (elsewhere or {}).get(w.key)
            d = Decision(Action.SKIP, f"moved by its gateway entry {owner}") if owner else decide(w, self.target)
            if d.action is Action.RESTART:
                self.queue.append(w.key)
            elif d.action is Action.WAIT:
                self.in_flight[w.key] = now + self.timeout_seconds
            elif d.action is Action.MANUAL:
                self.manual[w.key] = d.reason
            else:
                self.skipped[w.key] = d.reason
        self.total = len(self.queue) + len(self.in_flight)

    def tick(self, snapshot: Mapping[str, Workload], now: float) -> list[Workload]:
        """Account for what completed or got stuck, then return the workloads to restart now, keeping at
        most `concurrency` in flight. The caller patches each returned workload; they are already counted
        as in flight."""
        self.account(snapshot, now)
        starts: list[Workload] = []
        while self.can_start and len(self.in_flight) < self.concurrency:
            _took_slot, w = self.start_next(snapshot, now)
            if w is not None:
                starts.append(w)
        return starts

    def account(self, snapshot: Mapping[str, Workload], now: float) -> None:
        """Move in-flight workloads that completed to `done`, and those stuck or on the wrong target to `failed`."""
        for key, deadline in list(self.in_flight.items()):
            w = snapshot.get(key)
            if w is None:
                del self.in_flight[key]
                self.done.append(key)
                continue
            wait = waiting_for(w)
            if wait is None:
                del self.in_flight[key]
                stale = off_target(w, self.target)
                if stale:
                    self.failed[key] = self._wrong_target(stale)
                else:
                    self.done.append(key)
            elif now >= deadline:
                del self.in_flight[key]
                self.failed[key] = f"timed out after {self.timeout_seconds:g}s: {describe_wait(w)}"

    @property
    def can_start(self) -> bool:
        """Work is queued and nothing failed (a failure stops further restarts)."""
        return bool(self.queue) and not self.failed

    def start_next(self, snapshot: Mapping[str, Workload], now: float) -> tuple[bool, Workload | None]:
        """Take the next queued workload, decided again on `snapshot`: whether it now takes a slot (restarted,
        or found restarting already), and the workload to patch (None unless it needs a restart)."""
        key = self.queue.pop(0)
        w = snapshot.get(key)
        d = decide(w, self.target) if w is not None else Decision(Action.SKIP, "deleted")
        if d.action is Action.RESTART:
            self.in_flight[key] = now + self.timeout_seconds
            self.restarted.append(key)
            return True, w
        if d.action is Action.WAIT:
            self.in_flight[key] = now + self.timeout_seconds
            return True, None
        if d.action is Action.MANUAL:  # paused since the plan: refused like one paused from the start
            self.manual[key] = d.reason
            self.total -= 1
            return False, None
        self.skipped[key] = d.reason
        self.total -= 1
        return False, None

    def _wrong_target(self, stale: list[Pod]) -> str:
        """Why restarted pods can still be off target, and where to look."""
        runs = sorted({_runs(p, self.target) for p in stale})
        revision = self.target.revision
        if any(p.revision != revision for p in stale):
            hint = f"is the namespace bound to {revision} and its injection webhook installed?"
        else:
            hint = (
                f"does istiod of {revision} inject from its current config (configmap "
                f"istio-sidecar-injector-{revision}: global.hub, global.proxy.image, global.variant)?"
            )
        return f"rolled out, but {len(stale)} pods run {', '.join(runs)} instead of {self.target}: {hint}"

    @property
    def finished(self) -> bool:
        return not self.in_flight and (not self.queue or bool(self.failed))

    @property
    def remaining(self) -> int:
        return len(self.queue) + len(self.in_flight)

    def failure_message(self, namespace: str) -> str | None:
        """The error a failed run raises: every stuck workload and what it waits for."""
        if not self.failed and not self.manual:
            return None
        lines = [f"rollout of namespace {namespace} to revision {self.target.revision} did not complete:"]
        lines += [f"  {key}: {why}" for key, why in sorted(self.failed.items())]
        lines += [f"  {key}: {why}" for key, why in sorted(self.manual.items())]
        if self.queue:
            lines.append(f"  not restarted after the failure: {', '.join(self.queue)}")
        lines.append(
            f"  done: {len(self.done)} of {self.total}. Fix the cause and run `pulumi up` again: "
            "finished workloads are not restarted twice."
        )
        return "\n".join(lines)
