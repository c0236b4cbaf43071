"""Rollout: moves the running pods of a namespace (or of one gateway) onto the revision it is bound to.

Binding a namespace changes nothing for running pods, and neither does an in-place upgrade of the
revision (a new version or hub): each pod keeps its proxy until recreated. With strategy `rolling`
this resource's create/update restarts the workloads whose pods run another revision, or another
proxy image than `proxy_image` (what the revision injects now, computed from the config by
mesh.proxy_image), the way `kubectl rollout restart` does, at most `concurrency` at a time, each
given `timeout_seconds` to complete; `natural` only reports what still runs elsewhere or an older
proxy; `none` does nothing. Decisions come from mesh.workloads; this module only reads and patches
the cluster.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pulumi
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from pulumi.dynamic import CheckFailure, CheckResult, CreateResult, DiffResult, UpdateResult

from mesh import kube
from mesh.istio_vocabulary import NATURAL, NONE, STRATEGIES, Strategy
from mesh.providers import KubeProvider, is_unknown, progress
from mesh.workloads import (
    KINDS,
    Kind,
    Pod,
    RevisionReport,
    RolloutRun,
    Target,
    Workload,
    attach_pods,
    describe_wait,
    pod_from_object,
    restart_patch,
    revision_report,
    workload_from_object,
)

POLL_SECONDS = 0.5
HEARTBEAT_SECONDS = 30.0
INPUTS = ("namespace", "workload", "revision", "proxy_image", "strategy", "concurrency", "timeout_seconds")
REPLACE_ON = ("namespace", "workload")
"""Which pods the resource is about: another namespace or gateway is another rollout."""
UPDATE_ON = ("revision", "proxy_image", "strategy")
"""What is worth restarting pods for. Concurrency and timeouts only shape the next rollout, so a
change of them alone is no change: nothing is restarted, nothing shows in the preview.

A state written before `proxy_image` existed has no such key: that counts as a change, once. The
update then restarts only the pods whose proxy differs from what their revision injects now (those
an earlier in-place upgrade left behind), none when every pod is current; the preview shows it as
`proxy_image` added."""


@dataclass(frozen=True)
class RolloutSettings:
    """How a Rollout moves pods, resolved from the config once (`mesh.components.Istio`): onto which proxy
    image (what the bound revision injects now), with which strategy, how many at a time, how long each."""

    proxy_image: str
    strategy: Strategy
    concurrency: int
    timeout_seconds: int


class RolloutError(Exception):
    """A rollout that did not bring every workload onto the revision."""


class NamespaceReader:
    """Reads one namespace (or one Deployment of it) into the snapshots mesh.workloads plans on."""

    def __init__(self, api: client.ApiClient, namespace: str, workload: str | None) -> None:
        self.apps = client.AppsV1Api(api)
        self.core = client.CoreV1Api(api)
        self.namespace = namespace
        self.workload = workload

    def _list(self, kind: str, **kwargs: Any) -> list[dict[str, Any]]:
        calls: dict[str, Callable[..., Any]] = {
            "Deployment": self.apps.list_namespaced_deployment,
            "StatefulSet": self.apps.list_namespaced_stateful_set,
            "DaemonSet": self.apps.list_namespaced_daemon_set,
            "ReplicaSet": self.apps.list_namespaced_replica_set,
            "Pod": self.core.list_namespaced_pod,
        }
        return list(kube.list_objects(calls[kind], namespace=self.namespace, **kwargs))

    def snapshot(self) -> tuple[dict[str, Workload], list[Pod]]:
        """The namespace's workloads with their pods, and the pods this rollout is about."""
        kinds: tuple[Kind, ...] = ("Deployment",) if self.workload else KINDS
        only = {"field_selector": f"metadata.name={self.workload}"} if self.workload else {}
        workloads = [workload_from_object(kind, obj) for kind in kinds for obj in self._list(kind, **only)]
        if self.workload and not workloads:
            raise RolloutError(f"Deployment {self.namespace}/{self.workload} not found")
        owners = {
            rs["metadata"]["uid"]: ref["uid"]
            for rs in self._list("ReplicaSet")
            for ref in rs["metadata"].get("ownerReferences") or []
            if ref.get("controller") and ref.get("kind") == "Deployment"
        }
        pods = [pod_from_object(p) for p in self._list("Pod")]
        attached = attach_pods(workloads, pods, owners)
        if self.workload:
            pods = [p for w in attached for p in w.pods]
        return {w.key: w for w in attached}, pods

    def restart(self, w: Workload, target: Target) -> None:
        """Patch the pod template like `kubectl rollout restart`; a deleted workload is no error."""
        patch = {
            "Deployment": self.apps.patch_namespaced_deployment,
            "StatefulSet": self.apps.patch_namespaced_stateful_set,
            "DaemonSet": self.apps.patch_namespaced_daemon_set,
        }[w.kind]
        now = datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
        try:
            patch(
                w.name,
                w.namespace,
                restart_patch(target, now),
                _content_type="application/strategic-merge-patch+json",
            )
        except ApiException as e:
            if e.status != 404:
                raise


def roll(
    reader: NamespaceReader,
    run: RolloutRun,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> list[Pod]:
    """Drive `run` to its end against the cluster: restart, poll, log. Returns the last pods seen."""
    where = reader.namespace + (f"/{reader.workload}" if reader.workload else "")
    snapshot, pods = reader.snapshot()
    run.plan(snapshot.values(), clock())
    progress(
        f"{where} -> {run.target}: {len(run.queue)} to restart, {len(run.in_flight)} already "
        f"restarting, {len(run.skipped)} left alone, concurrency {run.concurrency}"
    )
    last_heartbeat = clock()
    while True:
        done_before, failed_before = len(run.done), set(run.failed)
        starts = run.tick(snapshot, clock())
        for count, key in enumerate(run.done[done_before:], done_before + 1):
            progress(f"{where}: {key} runs {run.target} ({count} of {run.total} done)")
        for key in sorted(set(run.failed) - failed_before):
            pulumi.log.warn(f"{where}: {key} {run.failed[key]}")
        for count, w in enumerate(starts, len(run.restarted) - len(starts) + 1):
            reader.restart(w, run.target)
            progress(
                f"{where}: restarted {w.key} ({count} restarted, {len(run.in_flight)} rolling, "
                f"{len(run.queue)} not started yet)"
            )
        if run.finished:
            return pods
        if clock() - last_heartbeat >= HEARTBEAT_SECONDS:
            last_heartbeat = clock()
            waits = ", ".join(f"{k} ({describe_wait(snapshot[k])})" for k in run.in_flight if k in snapshot)
            progress(f"{where}: {run.remaining} remaining; waiting on {waits}")
        sleep(POLL_SECONDS)
        snapshot, pods = reader.snapshot()


class RolloutProvider(KubeProvider):
    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        failures = []
        strategy = news.get("strategy")
        if not is_unknown(strategy) and strategy not in STRATEGIES:
            failures.append(CheckFailure("strategy", f"must be one of {', '.join(STRATEGIES)}, not {strategy!r}"))
        for key in ("concurrency", "timeout_seconds"):
            value = news.get(key)
            if not is_unknown(value) and (not isinstance(value, int | float) or value < 1):
                failures.append(CheckFailure(key, f"must be a number >= 1, not {value!r}"))
        for key in ("namespace", "revision", "proxy_image"):
            if not news.get(key):
                failures.append(CheckFailure(key, "must not be empty"))
        return CheckResult(news, failures)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        replaces = [k for k in REPLACE_ON if olds.get(k) != news.get(k)]
        changed = replaces or [k for k in UPDATE_ON if olds.get(k) != news.get(k)]
        return DiffResult(changes=bool(changed), replaces=replaces, delete_before_replace=False)

    def create(self, props: dict[str, Any]) -> CreateResult:
        ns, workload = props["namespace"], props.get("workload")
        return CreateResult(id_=f"{ns}/{workload}" if workload else ns, outs=self.apply(props))

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(outs=self.apply(news))

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        """Pods stay as they are: unbinding a namespace is not a reason to restart anything."""

    def apply(self, props: dict[str, Any]) -> dict[str, Any]:
        """Restart (rolling) or report (natural); the outputs say what was done and what remains."""
        outs: dict[str, Any] = {k: props.get(k) for k in INPUTS}
        outs.update(
            restarted=[], skipped={}, pods_on_other_revisions=0, other_revisions={},
            pods_with_stale_proxy=0, proxies_left_alone={},
        )
        ns, strategy = props["namespace"], props["strategy"]
        target = Target(props["revision"], props["proxy_image"])
        where = ns + (f"/{props['workload']}" if props.get("workload") else "")
        if strategy == NONE:
            return outs
        with kube.api_client(self.kube_settings()) as api:
            reader = NamespaceReader(api, ns, props.get("workload"))
            if strategy == NATURAL:
                report = _reported(revision_report(reader.snapshot()[1], target), where)
                progress(report.summary(where))
                return {**outs, **_report_outs(report)}
            run = RolloutRun(target, int(props["concurrency"]), float(props["timeout_seconds"]))
            pods = roll(reader, run)
        failure = run.failure_message(where)
        if failure:
            raise RolloutError(failure)
        report = _reported(revision_report(pods, target), where)
        if report.on_other or report.stale_proxies:
            pulumi.log.warn(report.summary(where) + " (pods no Deployment/StatefulSet/DaemonSet owns)")
        progress(
            f"{where}: every workload runs {target}: {len(run.restarted)} restarted, "
            f"{len(run.done) - len(run.restarted)} finished rollouts already under way, {len(run.skipped)} left alone"
        )
        return {**outs, "restarted": run.restarted, "skipped": run.skipped, **_report_outs(report)}


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


class Rollout(pulumi.dynamic.Resource, module="mesh", name="Rollout"):
    """Moves a namespace's (or one gateway Deployment's) pods onto `revision`; see module doc."""

    namespace: pulumi.Output[str]
    workload: pulumi.Output[str | None]
    revision: pulumi.Output[str]
    proxy_image: pulumi.Output[str]
    """The image `revision` injects now: an in-place upgrade changes it, and restarts the pods that lack it."""
    strategy: pulumi.Output[str]
    concurrency: pulumi.Output[int]
    timeout_seconds: pulumi.Output[int]
    restarted: pulumi.Output[list[str]]
    """Workloads this run restarted, as Kind/name."""
    skipped: pulumi.Output[dict[str, str]]
    """Workloads left alone, with the reason (opted out, already on the revision, no pods)."""
    pods_on_other_revisions: pulumi.Output[int]
    """Injectable pods still on another revision (or not injected) after the run."""
    other_revisions: pulumi.Output[dict[str, int]]
    """Those pods by revision."""
    pods_with_stale_proxy: pulumi.Output[int]
    """Injectable pods on `revision` that still run another proxy image than `proxy_image` after the run."""
    proxies_left_alone: pulumi.Output[dict[str, str]]
    """Pods on `revision` whose proxy image is not compared, by name, with the reason (set by hand, digest only)."""

    def __init__(
        self,
        name: str,
        *,
        namespace: pulumi.Input[str],
        revision: pulumi.Input[str],
        proxy_image: pulumi.Input[str],
        strategy: pulumi.Input[str],
        concurrency: pulumi.Input[int],
        timeout_seconds: pulumi.Input[int],
        workload: pulumi.Input[str] | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        props = {
            "namespace": namespace,
            "workload": workload,
            "revision": revision,
            "proxy_image": proxy_image,
            "strategy": strategy,
            "concurrency": concurrency,
            "timeout_seconds": timeout_seconds,
            "restarted": None,
            "skipped": None,
            "pods_on_other_revisions": None,
            "other_revisions": None,
            "pods_with_stale_proxy": None,
            "proxies_left_alone": None,
        }
        super().__init__(RolloutProvider(), name, props, opts)
