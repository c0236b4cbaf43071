"""MeshRollout: moves the running pods of every bound namespace and gateway onto their revision, under one
restart budget for the whole stack.

Binding a namespace changes nothing for running pods, and neither does an in-place upgrade of the
revision (a new version or hub): each pod keeps its proxy until recreated. One MeshRollout per stack
holds a target per namespace (`namespaces`) and per gateway workload (`gateways`, keyed
`<namespace>/<name>` for a Deployment, `<namespace>/<Kind>/<name>` otherwise: mesh.rollout_entries):
the revision, the proxy image it injects now (mesh.proxy_image) and the strategy. Its create/update
plans only the entries that are new or changed: with strategy `rolling` it restarts the workloads
whose pods run another revision or proxy image, the way `kubectl rollout restart` does, at most
`concurrency` at a time across the stack (and `per_namespace` per namespace), shared round-robin
(mesh.restart_budget), each given `timeout_seconds` to complete; `natural` only reports what still
runs elsewhere; `none` does nothing. Decisions come from mesh.workloads and mesh.restart_budget;
this module only reads and patches the cluster.

The namespaces it moves are followed with watches (mesh.providers.watch): each is listed once, page by
page, then the API server sends only what changes there, and each change wakes the next tick. Nothing is
polled and nothing is read cluster-wide, so an `up` costs the API server what moves, not what the cluster
holds. A namespace is followed while a workload of it restarts, or while
its turn to start one is near (`FOLLOWED_PER_SLOT`).

An interrupted or failed `up` leaves the previous inputs in the state, so the next `up` plans the same
entries again; the restart annotations make finished workloads skipped and in-flight ones waited on.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pulumi
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from pulumi.dynamic import CheckFailure, CheckResult, CreateResult, DiffResult, UpdateResult

from mesh import kube
from mesh.external_revision import ExternalFacts, external_target, missing_message
from mesh.injection import InjectorPolicy
from mesh.istio_vocabulary import NATURAL, NONE, ROLLING, STRATEGIES, Strategy
from mesh.providers import KubeProvider, is_unknown, progress
from mesh.providers.external_revision import read_external
from mesh.providers.watch import Watches
from mesh.proxy_image import EXTERNAL_IMAGE, proxy_configs_for
from mesh.restart_budget import Schedule, Throttle, final_line, gateway_workloads, namespace_of, progress_line
from mesh.rollout_entries import entry_workload, workload_entry
from mesh.rollout_plan import changed_entries, entries_of
from mesh.workloads import (
    KINDS,
    Kind,
    Pod,
    RevisionReport,
    RolloutRun,
    Target,
    Workload,
    attach_pods,
    pod_from_object,
    restart_patch,
    revision_report,
    with_proxy_configs,
    workload_from_object,
)

TICK_SECONDS = 1.0
"""Without a change in the followed namespaces, the schedule still ticks this often (timeouts, progress);
it reads the watches' caches, never the API server."""
FOLLOWED_PER_SLOT = 2
"""Entries followed besides those with a workload in flight: the next this many per slot of `concurrency` in
round-robin order (mesh.restart_budget.Schedule.wanted), so the watches grow with the budget, not with the
number of namespaces an `up` moves."""
PROGRESS_SECONDS = 5.0
"""At most one progress line this often."""
SETTINGS = ("concurrency", "per_namespace", "timeout_seconds", "injectors")
"""Kept in the state, never a change by themselves. `injectors` (revision -> mesh.injection.InjectorPolicy) is what
each revision's istiod decides per pod: which pods it injects at all, and its root namespace."""
FOLLOWED = ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Pod")
"""The kinds a snapshot is made of, each listed (and watched) per namespace."""
FRESH_KINDS = ("ReplicaSet", "Pod")
"""What a workload's watch can be ahead of: read afresh before a workload is failed on its pods."""


@dataclass(frozen=True)
class RolloutSettings:
    """How one binding's or gateway's pods move, resolved from the config once (`mesh.components.Istio`):
    onto which proxy image (what the bound revision injects now) and with which strategy."""

    proxy_image: str
    strategy: Strategy


@dataclass(frozen=True)
class RolloutTarget:
    """What a component contributes to the stack's MeshRollout: a namespace (workload None) or one
    workload of it (a gateway's Deployment or DaemonSet), and what its pods must run."""

    namespace: str
    revision: str
    settings: RolloutSettings
    workload: str | None = None
    kind: str = "Deployment"

    @property
    def entry(self) -> str:
        return workload_entry(self.namespace, self.kind, self.workload) if self.workload else self.namespace

    def props(self) -> dict[str, str]:
        return {"revision": self.revision, "proxy_image": self.settings.proxy_image,
                "strategy": self.settings.strategy}


class RolloutError(Exception):
    """A rollout that did not bring every workload onto its revision."""


def snapshot_of(
    entry: str, objects: Mapping[str, list[dict[str, Any]]],
    proxy_configs: tuple[list[Mapping[str, Any]], str] | None = None,
) -> tuple[dict[str, Workload], list[Pod]]:
    """An entry's workloads with their pods, and the pods it is about, from objects listed in its namespace
    (or cluster-wide: other namespaces' objects are ignored); `proxy_configs` (the ProxyConfig resources the
    entry's revision reads, and its root namespace) give pods the image type they set."""
    ns, kind_of_one, workload = entry_workload(entry)

    def mine(kind: str) -> list[dict[str, Any]]:
        return [o for o in objects.get(kind, []) if (o.get("metadata") or {}).get("namespace", ns) == ns]

    kinds: tuple[Kind, ...] = (kind_of_one,) if kind_of_one else KINDS
    workloads = [workload_from_object(kind, obj) for kind in kinds for obj in mine(kind)
                 if workload is None or obj["metadata"]["name"] == workload]
    if workload and not workloads:
        raise RolloutError(f"{kind_of_one} {workload} not found in {ns}")
    owners = {
        rs["metadata"]["uid"]: ref["uid"]
        for rs in mine("ReplicaSet")
        for ref in rs["metadata"].get("ownerReferences") or []
        if ref.get("controller") and ref.get("kind") == "Deployment"
    }
    pods = [pod_from_object(p) for p in mine("Pod")]
    if proxy_configs and proxy_configs[0]:
        pods = [with_proxy_configs(p, *proxy_configs) for p in pods]
    attached = attach_pods(workloads, pods, owners)
    if workload:
        pods = [p for w in attached for p in w.pods]
    return {w.key: w for w in attached}, pods


def kinds_to_follow(listed: Mapping[str, list[dict[str, Any]]]) -> list[str]:
    """What to watch in a namespace, from its first lists: the workload kinds it has (the plan is made from those
    lists, so a kind it lacks has nothing to move), ReplicaSets with Deployments (they link pods to them), and
    pods (whose proxies say whether a restart landed)."""
    kinds: list[str] = [kind for kind in KINDS if listed.get(kind)]
    if "Deployment" in kinds:
        kinds.append("ReplicaSet")
    return [*kinds, "Pod"]


class ClusterReader:
    """Reads the entries of a run into the snapshots mesh.workloads plans on, and patches workloads. Namespaces
    it `follow`s are read from their watches' caches; any other is listed once per read, page by page."""

    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        self.watches = Watches({kind: kube.collection(api, kind) for kind in FOLLOWED})
        self.proxy_configs: dict[str, tuple[list[Mapping[str, Any]], str]] = {}
        """Entry -> the ProxyConfig resources its revision's istiod reads, and its root namespace."""

    def read_proxy_configs(self, targets: Mapping[str, Target]) -> None:
        """One cluster-wide list of ProxyConfig resources, for every snapshot of the run: they can give pods an
        image type of their own, which a restart keeps. No ProxyConfig CRD means none."""
        try:
            found = list(kube.list_objects(kube.collection(self.api, "ProxyConfig")))
        except ApiException as e:
            if e.status != 404:
                raise
            found = []
        self.proxy_configs = {e: (proxy_configs_for(found, t.revision), t.injector.root_namespace)
                              for e, t in targets.items()} if found else {}

    def external(self, revision: str) -> ExternalFacts | None:
        """What the cluster says of an external revision now (None: no injection webhook of it)."""
        return read_external(self.api, revision)[0]

    def _listed(self, namespace: str, kinds: Iterable[str] = FOLLOWED) -> dict[str, list[dict[str, Any]]]:
        """`kinds` in one namespace, one paged list each."""
        return {kind: list(kube.list_objects(kube.collection(self.api, kind), namespace=namespace)) for kind in kinds}

    def snapshots(self, entries: Iterable[str]) -> dict[str, tuple[dict[str, Workload], list[Pod]]]:
        """Followed namespaces as their watches know them now; the others listed (one list per kind)."""
        return self._read(entries, fresh=False)

    def confirm(self, entries: Iterable[str]) -> dict[str, tuple[dict[str, Workload], list[Pod]]]:
        """The entries with their pods and ReplicaSets listed afresh: watches of different kinds are not in step,
        so a workload's watch can report its rollout complete a moment before the pods' watch shows the new
        pods. The workloads themselves are as their watch said."""
        return self._read(entries, fresh=True)

    def _read(self, entries: Iterable[str], fresh: bool) -> dict[str, tuple[dict[str, Workload], list[Pod]]]:
        entries = list(entries)
        result = {}
        for ns in sorted({namespace_of(e) for e in entries}):
            objects = self.watches.objects(ns)
            if objects is None:
                objects = self._listed(ns)
            elif fresh:
                objects.update(self._listed(ns, FRESH_KINDS))
            result.update({e: snapshot_of(e, objects, self.proxy_configs.get(e)) for e in entries
                           if namespace_of(e) == ns})
        return result

    def follow(self, entries: Iterable[str]) -> None:
        """Watch the namespaces of `entries` from now on, and no others (none: every watch stops)."""
        self.watches.follow({namespace_of(e) for e in entries}, kinds_to_follow)

    def wait(self, timeout: float) -> None:
        """Until something changes in a followed namespace, or `timeout` seconds."""
        self.watches.wait(timeout)

    def restart(self, w: Workload, target: Target) -> None:
        """Patch the pod template like `kubectl rollout restart`; a deleted workload is no error. The patched
        object goes into the watch's cache at once, so the next tick sees its new generation."""
        now = datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
        try:
            patched = kube.patch(self.api, w.kind, w.name, restart_patch(target, now), namespace=w.namespace)
        except ApiException as e:
            if e.status != 404:
                raise
            return
        self.watches.store(w.namespace, w.kind, patched)


@contextmanager
def following(reader: ClusterReader) -> Iterator[ClusterReader]:
    """The reader, whose watches all stop when the block ends, however it ends."""
    try:
        yield reader
    finally:
        reader.follow([])


class NamespaceReader:
    """One namespace (or one gateway workload of it), read as the MeshRollout reads it (for `mesh review`)."""

    def __init__(self, api: client.ApiClient, namespace: str, workload: str | None, target: Target) -> None:
        """`target` is what the entry moves to: its revision's ProxyConfig resources are read as `up` reads them."""
        self.reader = ClusterReader(api)
        self.entry = f"{namespace}/{workload}" if workload else namespace
        self.reader.read_proxy_configs({self.entry: target})

    def snapshot(self) -> tuple[dict[str, Workload], list[Pod]]:
        return self.reader.snapshots([self.entry])[self.entry]


def roll(
    reader: ClusterReader,
    schedule: Schedule,
    *,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, list[Pod]]:
    """Drive `schedule` to its end against the cluster: restart, tick on each change the watches see (or every
    `TICK_SECONDS`), log. Returns the last pods seen per entry."""
    started = clock()
    throttle = Throttle(PROGRESS_SECONDS)
    throttle.due(started)
    pods: dict[str, list[Pod]] = {}
    reported: set[str] = set()
    while True:
        wanted = schedule.wanted(FOLLOWED_PER_SLOT * schedule.concurrency)
        reader.follow(wanted)
        read = reader.snapshots(wanted)
        unsure = schedule.unconfirmed({e: w for e, (w, _p) in read.items()})
        if unsure:
            read.update(reader.confirm(unsure))
        pods.update({e: p for e, (_w, p) in read.items()})
        starts = schedule.tick({e: w for e, (w, _p) in read.items()}, clock())
        for entry, run in sorted(schedule.runs.items()):
            for key in sorted(set(run.failed) - reported):
                reported.add(key)
                pulumi.log.warn(f"{entry}: {key} {run.failed[key]}")
        for entry, w in starts:
            reader.restart(w, schedule.runs[entry].target)
        if schedule.finished:
            progress(progress_line(schedule.done, schedule.total, 0, clock() - started))
            return pods
        if throttle.due(clock()):
            progress(progress_line(schedule.done, schedule.total, schedule.in_flight, clock() - started))
        reader.wait(TICK_SECONDS)


EMPTY_RESULT: dict[str, Any] = {
    "restarted": [], "skipped": {}, "pods_on_other_revisions": 0, "other_revisions": {},
    "pods_with_stale_proxy": 0, "proxies_left_alone": {},
}


class MeshRolloutProvider(KubeProvider):
    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        failures = []
        for key in ("concurrency", "timeout_seconds"):
            value = news.get(key)
            if not is_unknown(value) and (not isinstance(value, int | float) or value < 1):
                failures.append(CheckFailure(key, f"must be a number >= 1, not {value!r}"))
        cap = news.get("per_namespace")
        if not is_unknown(cap) and (not isinstance(cap, int | float) or cap < 0):
            failures.append(CheckFailure("per_namespace", f"must be a number >= 0 (0: no cap), not {cap!r}"))
        for group in ("namespaces", "gateways"):
            entries = news.get(group) or {}
            if is_unknown(entries):
                continue
            for entry, target in entries.items():
                if is_unknown(target):
                    continue
                strategy = target.get("strategy")
                if not is_unknown(strategy) and strategy not in STRATEGIES:
                    failures.append(CheckFailure(
                        f"{group}.{entry}.strategy", f"must be one of {', '.join(STRATEGIES)}, not {strategy!r}"))
                for key in ("revision", "proxy_image"):
                    if not target.get(key):
                        failures.append(CheckFailure(f"{group}.{entry}.{key}", "must not be empty"))
        return CheckResult(news, failures)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        """A change of any entry (added, moved, removed); settings alone are no change."""
        groups = ("namespaces", "gateways")
        unknown = any(is_unknown(news.get(g)) for g in groups)
        changed = unknown or any((olds.get(g) or {}) != (news.get(g) or {}) for g in groups)
        return DiffResult(changes=changed, replaces=[], delete_before_replace=False)

    def create(self, props: dict[str, Any]) -> CreateResult:
        return CreateResult(id_="mesh-rollout", outs=self.apply({}, props))

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(outs=self.apply(olds, news))

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        """Pods stay as they are: removing the mesh's rollout is not a reason to restart anything."""

    def apply(self, olds: dict[str, Any], news: dict[str, Any]) -> dict[str, Any]:
        """Move (rolling) or report (natural) the changed entries; the outputs say, per entry, what was done
        and what remains (entries this run did not touch keep their last results)."""
        entries = entries_of(news)
        changed = {e: t for e, t in changed_entries(olds, news).items() if t["strategy"] != NONE}
        results = {e: r for e, r in (olds.get("results") or {}).items() if e in entries}
        results.update({e: dict(EMPTY_RESULT) for e in changed_entries(olds, news)})
        outs = {**{k: news.get(k) for k in ("namespaces", "gateways", *SETTINGS)}, "results": results}
        if not changed:
            return outs
        injectors = news.get("injectors") or {}
        with kube.api_client(self.kube_settings()) as api, following(ClusterReader(api)) as reader:
            targets = targets_of(reader, changed, injectors)
            reader.read_proxy_configs(targets)
            width = FOLLOWED_PER_SLOT * int(news["concurrency"])
            reader.follow(sorted(e for e, t in changed.items() if t["strategy"] == ROLLING)[:width])
            read = reader.snapshots(changed)
            for entry in sorted(e for e, t in changed.items() if t["strategy"] == NATURAL):
                report = _reported(revision_report(read[entry][1], targets[entry]), entry)
                progress(report.summary(entry))
                results[entry] = {**EMPTY_RESULT, **_report_outs(report)}
            rolling = sorted(e for e, t in changed.items() if t["strategy"] == ROLLING)
            if not rolling:
                return outs
            timeout = float(news["timeout_seconds"])
            cap = int(news.get("per_namespace") or 0) or None
            schedule = Schedule({}, int(news["concurrency"]), cap)
            claimed = gateway_workloads(entries)
            for entry in rolling:
                run = RolloutRun(targets[entry], cap or int(news["concurrency"]), timeout)
                run.plan(read[entry][0].values(), time.monotonic(), None if "/" in entry else claimed.get(entry))
                schedule.runs[entry] = run
            queued = sum(len(r.queue) for r in schedule.runs.values())
            waiting = sum(len(r.in_flight) for r in schedule.runs.values())
            left = sum(len(r.skipped) for r in schedule.runs.values())
            refused = {f"{e}: {key}": why for e, r in schedule.runs.items() for key, why in sorted(r.manual.items())}
            for where, why in refused.items():
                pulumi.log.warn(f"{where} refused: {why}")
            progress(
                f"rolling {len(rolling)} namespaces/gateways: {queued} workloads to restart, {waiting} already "
                f"restarting, {left} left alone" + (f", {len(refused)} refused" if refused else "")
                + f"; concurrency {schedule.concurrency} across the stack" + (f", {cap} per namespace" if cap else ""))
            pods = {**{e: p for e, (_w, p) in read.items()}, **roll(reader, schedule)}
        failure = schedule.failure_message()
        if failure:
            raise RolloutError(failure)
        for entry in rolling:
            run = schedule.runs[entry]
            report = _reported(revision_report(pods[entry], run.target), entry)
            if report.on_other or report.stale_proxies:
                pulumi.log.warn(report.summary(entry) + " (pods no Deployment/StatefulSet/DaemonSet owns)")
            results[entry] = {**EMPTY_RESULT, "restarted": run.restarted, "skipped": run.skipped,
                              **_report_outs(report)}
        progress(final_line(schedule.restarted()))
        return outs


def targets_of(reader: ClusterReader, changed: Mapping[str, Mapping[str, Any]],
               injectors: Mapping[str, Any]) -> dict[str, Target]:
    """Each entry's target: as its inputs say, or, for an external revision (`EXTERNAL_IMAGE`), as the cluster says
    now (the revision alone where its proxy image cannot be read), read once per revision; a revision whose webhook
    is gone is refused before anything restarts."""
    facts: dict[str, ExternalFacts] = {}
    for revision in sorted({t["revision"] for t in changed.values() if t["proxy_image"] == EXTERNAL_IMAGE}):
        found = reader.external(revision)
        if found is None:
            raise RolloutError(missing_message(revision))
        progress(f"revision {revision}: {found.target_note}")
        facts[revision] = found
    return {e: external_target(facts[t["revision"]]) if t["revision"] in facts
            else Target(t["revision"], t["proxy_image"], InjectorPolicy.from_props(injectors.get(t["revision"])))
            for e, t in changed.items()}


def _reported(report: RevisionReport, where: str) -> RevisionReport:
    """Warn about the pods whose proxy is left alone (set by hand, or not comparable): nobody else will."""
    left_alone = report.left_alone_summary(where)
    if left_alone:
        pulumi.log.warn(left_alone)
    return report


def _report_outs(report: RevisionReport) -> dict[str, Any]:
    return {
        "pods_on_other_revisions": report.on_other,
        "other_revisions": report.others(),
        "pods_with_stale_proxy": report.stale_proxies,
        "proxies_left_alone": dict(report.left_alone),
    }


class MeshRollout(pulumi.dynamic.Resource, module="mesh", name="MeshRollout"):
    """Moves every bound namespace's and gateway's pods onto its revision under one budget; see module doc."""

    namespaces: pulumi.Output[dict[str, dict[str, str]]]
    """Namespace -> {revision, proxy_image, strategy}."""
    gateways: pulumi.Output[dict[str, dict[str, str]]]
    """`<namespace>/<Deployment>` or `<namespace>/<Kind>/<name>` -> {revision, proxy_image, strategy}."""
    concurrency: pulumi.Output[int]
    per_namespace: pulumi.Output[int]
    timeout_seconds: pulumi.Output[int]
    injectors: pulumi.Output[dict[str, dict[str, Any]]]
    """Revision -> {policy, never, always, root_namespace}: what its istiod injects (mesh.injection)."""
    results: pulumi.Output[dict[str, dict[str, Any]]]
    """Per entry: restarted (Kind/name), skipped (with the reason), pods_on_other_revisions, other_revisions,
    pods_with_stale_proxy, proxies_left_alone, as of the last run that moved it."""

    def __init__(
        self,
        name: str,
        *,
        targets: Iterable[RolloutTarget],
        concurrency: int,
        per_namespace: int | None,
        timeout_seconds: int,
        injectors: Mapping[str, Mapping[str, Any]] | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        targets = list(targets)
        props = {
            "namespaces": {t.entry: t.props() for t in sorted(targets, key=lambda t: t.entry) if not t.workload},
            "gateways": {t.entry: t.props() for t in sorted(targets, key=lambda t: t.entry) if t.workload},
            "concurrency": concurrency,
            "per_namespace": per_namespace or 0,
            "timeout_seconds": timeout_seconds,
            "injectors": dict(injectors or {}),
            "results": None,
        }
        super().__init__(MeshRolloutProvider(), name, props, opts)


class RolloutProvider(KubeProvider):
    """The per-namespace Rollout of earlier versions of this program. Kept only so that `up` on a stack
    deployed by them can delete those resources (the engine loads this class from their state); deleting
    one never touched pods, and still does not."""

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        """Pods stay as they are."""
