"""`python -m mesh fleet plan|up --fleet FILE`: the fleet file's waves, run through Pulumi's Automation API.

The I/O edge of `mesh.fleet`: every stack is previewed with a saved plan, and `up` runs with that plan, so it
does only what its preview showed (the engine stops it otherwise); a stack's review and gates are `mesh review`'s
and `mesh status`'s own readings of its cluster (the one its stack config points at). Run with the project's
backend configured as for `pulumi` itself (`pulumi login`, or PULUMI_BACKEND_URL); update plans are an
experimental engine feature, so the runs set PULUMI_EXPERIMENTAL for the engine.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from pulumi import automation as auto

from mesh.checks import REFUSAL
from mesh.fleet import gates
from mesh.fleet.fleet_file import FleetError, FleetFile, load_fleet
from mesh.fleet.report import StackRun, gate_lines, plan_summary, stack_line, stop_message, wave_healthy
from mesh.fleet.waves import Part, Wave, part, resolve, unlisted
from mesh.review import Deployed, Review, stack_outputs
from mesh.spec import PROJECT, SpecError, load_spec
from mesh.status import revisions_in_state

ENGINE_ENV = {"PULUMI_EXPERIMENTAL": "true"}
"""`pulumi up --plan` is behind the engine's experimental flag."""
NODE_AGENTS = ("istio-cni-node", "ztunnel")


class PrometheusError(Exception):
    """The stack's Prometheus did not answer the query."""


class Fleet:
    """One fleet file's stacks, each previewed, updated and gated through the Automation API."""

    def __init__(self, fleet: FleetFile, project: Path, source: str, say: Callable[[str], None]) -> None:
        self.fleet = fleet
        self.project = project
        self.workspace = auto.LocalWorkspace(work_dir=str(project), env_vars=ENGINE_ENV)
        self.stacks = sorted(s.name for s in self.workspace.list_stacks())
        self.waves = resolve(fleet, self.stacks, source)
        self.plans = Path(tempfile.mkdtemp(prefix="mesh-fleet-"))
        self._lock = threading.RLock()
        self._selected: dict[str, auto.Stack] = {}
        self._config: dict[str, dict[str, Any]] = {}
        self._say = say
        self.stop = threading.Event()

    def say(self, line: str) -> None:
        with self._lock:
            self._say(line)

    def stack(self, name: str) -> auto.Stack:
        """Selected once per stack, one at a time (`select` writes the workspace's current stack, which threads must
        not race on; every operation then names its stack itself)."""
        with self._lock:
            if name not in self._selected:
                self._selected[name] = auto.Stack.select(name, self.workspace)
            return self._selected[name]

    def raw_config(self, name: str) -> dict[str, Any]:
        """The stack file's config, with its secrets decrypted by the engine (a fleet's stacks each reach their
        own cluster, so a kubeconfig is often a secret `kubernetes:kubeconfig`); read once per run."""
        from mesh.__main__ import stack_config

        with self._lock:
            if name not in self._config:
                raw = stack_config(name)
                secrets = {k: v.value for k, v in self.stack(name).get_all_config().items() if v.secret}
                self._config[name] = {**raw, **secrets}
            return self._config[name]

    # ---- plan ----------------------------------------------------------------------------------------
    def engine(self, run: StackRun, what: str, call: Callable[[], Any]) -> Any:
        """One engine operation on `run`'s stack: its result, or None with `run` saying why (a lock held by another
        update, or the operation's failure)."""
        try:
            return call()
        except auto.ConcurrentUpdateError as e:
            run.outcome, run.message = "locked", _lock_message(e)
        except auto.CommandError as e:
            run.outcome, run.message = "failed", f"{what} failed: {_last_line(e)}"
        return None

    def preview(self, name: str, wave: int) -> StackRun:
        """Preview `name` with its plan saved (`up` replays it); the outcome says converged, planned or why not."""
        run = StackRun(name, wave)
        result = self.engine(run, "preview", lambda: self.stack(name).preview(
            plan=str(self.plan_file(name)), color="never"))
        if result is not None:
            run.changes = {op: n for op, n in result.change_summary.items() if op != "same" and n}
            run.outcome = "planned" if run.changes else "converged"
        return run

    def export(self, name: str) -> dict[str, Any]:
        """The stack's state as `pulumi stack export` gives it, which `mesh review` and `mesh status` read."""
        return {"deployment": self.stack(name).export_stack().deployment or {}}

    def plan_file(self, name: str) -> Path:
        return self.plans / f"{name}.plan.json"

    def review(self, run: StackRun) -> Review | None:
        """The stack's `mesh review` against its last deployed state; refusals land on `run`."""
        from mesh.__main__ import build_review

        _, found = build_review(run.stack, self.raw_config(run.stack), Deployed.from_export(self.export(run.stack)))
        if isinstance(found, str):
            run.refusals.append(found)
            return None
        run.restarts = found.restarts if found.data_plane is not None else None
        run.refusals += [f"{PROJECT}:{f.key}: {f.message}" for f in found.checks.of(REFUSAL)]
        run.refusals += [f"removing `{r}`: {sum(u.values())} pods still run it" for r, u in found.refusals.items()]
        run.refusals += [f"removing `{r}`: still selected" for r in found.selected]
        return found

    def plan(self) -> int:
        """Preview and review every stack of every wave (in parallel, `parallel` at once); 2 when any refuses."""
        runs: dict[str, StackRun] = {}
        reviews: dict[str, Review | None] = {}

        def one(name: str, wave: int) -> None:
            run = self.preview(name, wave)
            reviews[name] = self.review(run)
            runs[name] = run

        with ThreadPoolExecutor(max_workers=self.fleet.parallel) as pool:
            for f in [pool.submit(one, s, w.index) for w in self.waves for s in w.stacks]:
                f.result()
        for wave in self.waves:
            for name in wave.stacks:
                self.say(f"## `{name}` (wave {wave.index + 1})\n\n{stack_line(runs[name])}\n")
                found = reviews[name]
                self.say(found.markdown() if found is not None else "\n".join(runs[name].refusals) + "\n")
        self.say(plan_summary(self.waves, runs, unlisted(self.waves, self.stacks)))
        return 2 if any(r.refusals or r.stopped for r in runs.values()) else 0

    # ---- up ------------------------------------------------------------------------------------------
    def update(self, name: str, wave: int) -> StackRun:
        """Preview with a saved plan, `up` with it when anything changes, then hold the gates."""
        started = time.monotonic()
        run = self._update(name, wave)
        run.seconds = time.monotonic() - started
        return run

    def _update(self, name: str, wave: int) -> StackRun:
        run = self.preview(name, wave)
        if run.stopped:
            return run
        if run.outcome == "converged":
            self.say(f"[{name}] no changes: not updated, holding its gates")
            run.gates = self.gates(name, before=None)
        else:
            before = self.overlaps(name)
            self.say(f"[{name}] up: {', '.join(f'{n} to {op}' for op, n in sorted(run.changes.items()))}")
            done = self.engine(run, "up", lambda: self.stack(name).up(
                plan=str(self.plan_file(name)), color="never",
                on_output=lambda line: self.say(f"[{name}] {line.rstrip()}")))
            if done is None:
                return run
            run.outcome = "updated"
            run.gates = self.gates(name, before=before)
        if not gates.healthy(run.gates):
            run.outcome = "unhealthy"
        return run

    def run_wave(self, wave: Wave) -> dict[str, StackRun]:
        """The wave's stacks, `parallel` at once; after the first stop, stacks not yet started are left alone."""
        runs: dict[str, StackRun] = {}

        def one(name: str) -> None:
            if self.stop.is_set():
                return
            run = self.update(name, wave.index)
            runs[name] = run
            self.say(stack_line(run))
            for line in gate_lines(run):
                self.say(line)
            if run.stopped:
                self.stop.set()

        with ThreadPoolExecutor(max_workers=self.fleet.parallel) as pool:
            for f in [pool.submit(one, s) for s in wave.stacks]:
                f.result()
        return runs

    def up(self, waves: list[Wave], command: str) -> int:
        """The waves in order; stops (exit 1) at the first failed stack or gate, naming what it never touched."""
        every: dict[str, StackRun] = {}
        for wave in waves:
            self.say(f"### {wave.label}")
            runs = self.run_wave(wave)
            every.update(runs)
            if wave_healthy(runs.values()) and len(runs) == len(wave.stacks) and self.fleet.soak_seconds and any(
                    r.outcome == "updated" for r in runs.values()):
                self.say(f"soaking {self.fleet.soak_seconds}s, then holding the gates again")
                time.sleep(self.fleet.soak_seconds)
                for run in runs.values():
                    run.gates = self.gates(run.stack, before=None)
                    if not gates.healthy(run.gates):
                        run.outcome = "unhealthy"
                    for line in gate_lines(run):
                        self.say(f"[{run.stack}] after soak: {line.strip().removeprefix('- ')}")
            if not wave_healthy(runs.values()) or len(runs) < len(wave.stacks):
                self.say(stop_message(waves, every, wave, command))
                return 1
        self.say(f"Fleet done: {len(every)} stack(s) in {len(waves)} wave(s), every gate held.")
        return 0

    # ---- gates ---------------------------------------------------------------------------------------
    def overlaps(self, name: str) -> list[Any] | None:
        """Injector overlaps in the stack's cluster now (the baseline a `new overlap` is judged against)."""
        from mesh import kube
        from mesh.__main__ import injectors, kube_settings
        from mesh.webhook_overlap import overlaps

        settings = kube_settings(self.raw_config(name))
        if settings is None:
            return None
        with kube.api_client(settings) as api:
            labels = {ns["metadata"]["name"]: ns["metadata"].get("labels") or {}
                      for ns in kube.list_objects(kube.collection(api, "Namespace"))}
            return overlaps(injectors(api), labels)

    def gates(self, name: str, before: list[Any] | None) -> list[gates.GateResult]:
        """Read the stack's cluster once for every gate (`mesh status`'s reading, workloads, istiods, node agents,
        webhooks) and judge it."""
        from mesh.__main__ import build_status, kube_settings

        raw = self.raw_config(name)
        export = self.export(name)
        code, status = build_status(name, raw, stack_outputs(export), None, revisions_in_state(export))
        if code != 0 or status.cluster_note is not None:
            return [gates.GateResult(gates.DATA_PLANE, False, status.cluster_note or "the cluster could not be read")]
        try:
            spec = load_spec({k.removeprefix(f"{PROJECT}:"): v for k, v in raw.items() if k.startswith(f"{PROJECT}:")})
        except SpecError as e:
            return [gates.GateResult(gates.DATA_PLANE, False, str(e))]
        strategies = {ns: b.strategy for ns, b in spec.namespaces.items()}
        settings = kube_settings(raw)
        cluster = _read_cluster(settings, {ns for r in status.revisions for ns in r.bound})
        try:
            value, skipped = self.prometheus(name)
        except PrometheusError as e:
            value, skipped = float("nan"), f"unanswered: {e}"
        prom = self.fleet.prometheus
        return gates.judge(gates.Facts(
            status=status, strategies=strategies, workloads=cluster["workloads"], istiods=cluster["istiods"],
            node_agents=cluster["agents"], overlaps=cluster["overlaps"], overlaps_before=before,
            prometheus=value, prometheus_skipped=skipped, prometheus_max=prom.max if prom else None,
            prometheus_query=prom.query if prom else "",
            external=frozenset(n for n, r in spec.revisions.items() if r.external)))

    def prometheus(self, name: str) -> tuple[float | None, str | None]:
        """The fleet's query against the stack's Prometheus: its value, or why it was not read (a Prometheus that
        does not answer is no evidence of health: the gate fails, see `gates.prometheus`)."""
        prom = self.fleet.prometheus
        if prom is None:
            return None, "no Prometheus gate in the fleet file"
        url = prom.url_for(name)
        if url is None:
            return None, f"no Prometheus URL for stack {name} in prometheus.urls: skipped"
        return query_prometheus(url, prom.query), None


def query_prometheus(url: str, query: str) -> float:
    """An instant query's value (Prometheus' HTTP API); PrometheusError when it does not answer with one."""
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/api/v1/query?{urllib.parse.urlencode({'query': query})}",
                                    timeout=30) as r:
            return prometheus_value(json.load(r))
    except (OSError, ValueError, KeyError, IndexError, TypeError) as e:
        raise PrometheusError(f"{url}: {type(e).__name__}: {e}") from None


def prometheus_value(body: dict[str, Any]) -> float:
    """A query result's value: a scalar, or the largest sample of a vector (no series: 0, nothing is failing)."""
    if body.get("status") != "success":
        raise ValueError(f"query {body.get('status')}: {body.get('error', 'no error given')}")
    data = body["data"]
    if data["resultType"] == "scalar":
        return float(data["result"][1])
    samples = [float(s["value"][1]) for s in data["result"] or []]
    return max(samples) if samples else 0.0


def _read_cluster(settings: Any, bound: Iterable[str]) -> dict[str, Any]:
    from mesh import kube
    from mesh.__main__ import injectors
    from mesh.webhook_overlap import overlaps
    from mesh.workloads import workload_from_object

    wanted = set(bound)
    with kube.api_client(settings) as api:
        workloads: dict[str, list[Any]] = {ns: [] for ns in wanted}
        for kind in ("Deployment", "StatefulSet", "DaemonSet"):
            for obj in kube.list_objects(kube.collection(api, kind)):
                if obj["metadata"]["namespace"] in wanted:
                    workloads[obj["metadata"]["namespace"]].append(workload_from_object(kind, obj))
        istiods = {}
        for obj in kube.list_objects(kube.collection(api, "Deployment"), label_selector="app=istiod"):
            revision = (obj["metadata"].get("labels") or {}).get("istio.io/rev", "default")
            istiods[revision] = _rollout(obj, (obj.get("spec") or {}).get("replicas", 1), "updatedReplicas",
                                         "readyReplicas")
        agents = [_rollout(obj, (obj.get("status") or {}).get("desiredNumberScheduled", 0),
                           "updatedNumberScheduled", "numberReady")
                  for name in NODE_AGENTS
                  for obj in kube.list_objects(kube.collection(api, "DaemonSet"),
                                               field_selector=f"metadata.name={name}")]
        labels = {ns["metadata"]["name"]: ns["metadata"].get("labels") or {}
                  for ns in kube.list_objects(kube.collection(api, "Namespace"))}
        found = overlaps(injectors(api), labels)
    return {"workloads": workloads, "istiods": istiods, "agents": agents, "overlaps": found}


def _rollout(obj: dict[str, Any], desired: int, updated: str, ready: str) -> gates.Rollout:
    meta, status = obj["metadata"], obj.get("status") or {}
    return gates.Rollout(f"{meta['namespace']}/{meta['name']}", int(desired), int(status.get(updated) or 0),
                         int(status.get(ready) or 0),
                         int(status.get("observedGeneration") or 0) >= int(meta.get("generation") or 0))


def _last_line(e: Exception) -> str:
    text = (getattr(e, "stderr", "") or str(e)).strip()
    lines = [line for line in text.splitlines() if line.strip()]
    return _unprefixed(lines[-1])[:500] if lines else type(e).__name__


def _unprefixed(line: str) -> str:
    """A CLI error line without the Automation API's `stderr:` and the CLI's `error:` in front."""
    line = line.strip()
    for prefix in ("stderr:", "error:"):
        line = line.removeprefix(prefix).strip()
    return line


def _lock_message(e: Exception) -> str:
    """The backend's own words on who holds the lock (a diy backend names the lock file, user, host and pid)."""
    text = getattr(e, "stderr", "") or str(e)
    said = [_unprefixed(line) for line in text.splitlines() if "locked by" in line or "created by" in line]
    return " ".join(said)[:800] or _last_line(e)


def main(action: str, fleet_path: str, only: Part) -> int:
    path = Path(fleet_path).resolve()
    try:
        fleet = load_fleet(path.read_text(), path.name)
        project = (path.parent / fleet.project).resolve()
        os.chdir(project)  # stack files and relative kubeconfig paths are the project's, as for `pulumi`
        runner = Fleet(fleet, project, path.name, lambda line: print(line, flush=True))
    except FleetError as e:
        print(e)
        return 2
    except OSError as e:
        print(f"{fleet_path}: {e}")
        return 2
    if action == "plan":
        return runner.plan()
    flag = "" if only == "all" else f" --only {only}"
    return runner.up(part(fleet, runner.waves, only), f"python -m mesh fleet up --fleet {fleet_path}{flag}")
