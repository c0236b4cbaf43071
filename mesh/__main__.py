"""`python -m mesh review|status --stack STACK [--json]`: the upgrade review of the work tree's stack
config, and what runs where now; `python -m mesh fleet plan|up --fleet FILE`: many stacks in waves
(`mesh.fleet_run`).

Run from the project directory with the stack's backend configured as for `pulumi` itself.
`review`: exit 0 with the review on stdout; exit 2 with the validation message on stdout when the
config is invalid. The cluster part (what `up` restarts, what a removal would be refused on, webhooks
that would overlap) needs the cluster the stack points at; without one the review says it was skipped.
`status`: the stack's deployed revisions and the pods that run them; exit 0, or exit 1 (after printing
what the state alone tells) when the cluster cannot be read, since then it cannot say what runs where.
Rules: mesh.review, mesh.status, mesh.webhook_overlap; this module only reads.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from mesh.checks import REFUSAL
from mesh.checks.run import Checks, Facts, chart_versions, run, skipped
from mesh.checks.steps import steps
from mesh.checks.upgrade_notes import to_read
from mesh.drain import PodTemplate
from mesh.review import (
    ClusterPods,
    Deployed,
    Review,
    control_plane,
    data_plane,
    left_to_gateways,
    moves,
    restarted_namespaces,
    selected_after,
    selecting,
    stack_outputs,
    unmanaged_labels,
    with_external_target,
)
from mesh.spec import PROJECT, MeshSpec, SpecError, load_spec
from mesh.status import Status, injection_labels, installed_revisions, revisions_in_state, status
from mesh.validation import validate_or_raise
from mesh.webhook_overlap import namespaces_after, overlaps, webhooks_after

NO_KUBECONFIG = "no kubeconfig (set KUBECONFIG or kubernetes:kubeconfig)"


def stack_config(stack: str) -> dict[str, Any]:
    """Every key of Pulumi.<stack>.yaml, as written (secure values stay encrypted and unused)."""
    path = Path(f"Pulumi.{stack}.yaml")
    if not path.is_file():
        raise SystemExit(f"no {path} in {Path.cwd()}: run from the project directory")
    return (yaml.safe_load(path.read_text()) or {}).get("config") or {}


def pulumi_json(stack: str, *command: str) -> tuple[dict[str, Any], str | None]:
    """What `pulumi <command> --stack STACK` prints as JSON, or nothing (and why) for a stack never deployed or
    out of reach."""
    try:
        done = subprocess.run(["pulumi", *command, "--stack", stack, "--non-interactive"],
                              capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return {}, f"pulumi unavailable ({e})"
    if done.returncode != 0:
        return {}, done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "no deployed state"
    return json.loads(done.stdout or "{}"), None


def kube_settings(raw: dict[str, Any]) -> Any:
    """The cluster the stack points at, as the providers find it; None when there is no kubeconfig."""
    from mesh import kube

    settings = kube.settings_from({k: v for k, v in raw.items() if isinstance(v, str)}.get)
    if not settings.kubeconfig and not os.path.exists(os.path.expanduser(kube.DEFAULT_KUBECONFIG)):
        return None
    return settings


def unreachable(e: Exception) -> str:
    return f"cluster unreachable ({type(e).__name__}: {str(e).splitlines()[0][:200]})"


def injectors(api: Any) -> dict[str, dict[str, Any]]:
    """Every MutatingWebhookConfiguration with an entry on pods (one list), by name."""
    from mesh import kube

    found = kube.list_objects(kube.collection(api, "MutatingWebhookConfiguration"))
    return {m["metadata"]["name"]: m for m in found
            if any("pods" in (r.get("resources") or []) for w in m.get("webhooks") or [] for r in w.get("rules") or [])}


def cluster_part(spec: MeshSpec, deployed: Deployed, raw: dict[str, Any]) -> dict[str, Any] | str:
    """Read only what the review needs: the moving namespaces (the MeshRollout's own reader), every pod
    and workloads only when a revision goes (as the drain guard reads them), every pod when a revision changes in
    place (whose proxies the skew check reads), one list of namespaces, one of webhooks and the API server's
    version. Pods and workloads are folded page by page (`ClusterPods`, `selecting`): what stays is counts and
    the pods and templates the review names. The Review's cluster fields, or why the cluster could not be read."""
    from kubernetes import client, config
    from urllib3.exceptions import HTTPError

    from mesh import kube
    from mesh.providers.drain_guard import each_template
    from mesh.providers.rollout import ClusterReader, NamespaceReader, RolloutError
    from mesh.workloads import pod_from_object

    settings = kube_settings(raw)
    if settings is None:
        return NO_KUBECONFIG
    try:
        with kube.api_client(settings) as api:
            planes = []
            external = ClusterReader(api)  # an external revision's target, as the MeshRollout reads it
            for move in moves(deployed, spec):
                move = with_external_target(move, external.external(move.target.revision)
                                            if spec.revisions[move.target.revision].external else None)
                try:
                    workloads, pods = NamespaceReader(api, move.namespace, move.workload, move.target).snapshot()
                except RolloutError:  # a gateway not installed yet: its pods start on the target
                    workloads, pods = {}, []
                planes.append(data_plane(move, workloads.values(), pods, left_to_gateways(spec, move)))
            templates: list[PodTemplate] = []
            fold = ClusterPods.of(deployed, spec, steps(deployed.versions, deployed.cni, spec))
            read_pods = bool(fold.removed or fold.in_place)
            for p in kube.list_objects(kube.collection(api, "Pod")) if read_pods else ():
                fold.add(pod_from_object(p))  # page by page: only the fold's counts and named pods stay
            if fold.removed:  # every pod and workload, as the guard reads them
                templates = selecting(each_template(api), fold.removed)
            kubernetes = kube.server_version(api)
            labels = {ns["metadata"]["name"]: ns["metadata"].get("labels") or {}
                      for ns in kube.list_objects(kube.collection(api, "Namespace"))}
            hooks = injectors(api)
    except (client.exceptions.ApiException, HTTPError, OSError, config.ConfigException) as e:
        return unreachable(e)
    after = webhooks_after(spec, deployed.versions, deployed.tags, hooks)
    labels_after = namespaces_after(spec, deployed.namespaces, labels)
    return {"data_plane": planes, "refusals": fold.refusals(), "unmanaged": unmanaged_labels(labels, spec),
            "overlaps": overlaps(after, labels_after),
            "selected": selected_after(deployed, spec, labels_after, templates),
            "kubernetes": kubernetes, "proxy_pods": tuple(fold.skewed) if read_pods else None}


def review_checks(spec: MeshSpec, deployed: Deployed, cluster: dict[str, Any] | str) -> Checks:
    """Istio's upgrade rules (`mesh.checks`) over the change: the chart files and release notes of the versions
    involved, read from the local mirror once (`mesh.chart_files`), and the cluster facts `cluster_part` read."""
    from mesh import chart_files

    change = steps(deployed.versions, deployed.cni, spec)
    wanted = chart_versions(spec, change)
    charts = chart_files.library(spec.charts, wanted)
    available, where = chart_files.release_notes(spec.charts, {v for s in change for v in (s.before, s.after) if v})
    notes = {i: chart_files.read_note(where[v], i) for v, ids in to_read(change, available).items() for i in ids}
    read = not isinstance(cluster, str)
    facts = Facts(charts, available, notes,
                  cluster_version=cluster["kubernetes"] if read else None,
                  pods=cluster["proxy_pods"] if read else None,
                  restarted=restarted_namespaces(cluster["data_plane"]) if read else frozenset(),
                  kept={(d.move.namespace, pod): why for d in (cluster["data_plane"] if read else [])
                        for pod, why in d.left_alone.items()},
                  skipped=tuple(skipped(spec, wanted, charts, None if read else cluster)))
    return run(spec, deployed.versions, deployed.cni, facts)


def build_review(stack: str, raw: dict[str, Any], deployed: Deployed,
                 state_note: str | None = None) -> tuple[int, Review | str]:
    """The review of `raw` (the stack file's config) against `deployed` (the stack's last outputs and the
    MeshRollout's state)."""
    mesh_keys = {k.removeprefix(f"{PROJECT}:"): v for k, v in raw.items() if k.startswith(f"{PROJECT}:")}
    try:
        spec = validate_or_raise(load_spec(mesh_keys))
    except SpecError as exc:
        return 2, str(exc)
    cluster = cluster_part(spec, deployed, raw)
    lines = control_plane(deployed, spec)
    if state_note:
        lines.insert(0, f"(compared with an empty mesh: {state_note})")
    settings = (spec.rollout.concurrency, spec.rollout.timeout_seconds)
    cap = spec.rollout.per_namespace
    checks = review_checks(spec, deployed, cluster)
    code = 2 if checks.of(REFUSAL) else 0  # what the preview (or, for a revision's skew, the version gate) refuses
    if isinstance(cluster, str):
        return code, Review(stack, lines, None, {}, {}, *settings, cluster_note=cluster, per_namespace=cap,
                            checks=checks)
    return code, Review(stack, lines, cluster["data_plane"], cluster["refusals"], cluster["unmanaged"], *settings,
                        overlaps=cluster["overlaps"], per_namespace=cap, selected=cluster["selected"], checks=checks)


def review(stack: str) -> tuple[int, Review | str]:
    """Against the state (`pulumi stack export`): its outputs, and what the MeshRollout last completed, which
    `up` plans against (after a failed `up` the outputs already carry the new config)."""
    export, state_note = pulumi_json(stack, "stack", "export")
    return build_review(stack, stack_config(stack), Deployed.from_export(export), state_note)


def build_status(stack: str, raw: dict[str, Any], outputs: dict[str, Any],
                 state_note: str | None = None, held: frozenset[str] | None = None) -> tuple[int, Status]:
    """What runs where: the deployed revisions from `outputs` (`held`: those the state holds, None when not read,
    see `mesh.status.status`) and those installed (one list of webhooks), and
    every pod, namespace and workload of the cluster (one paged list each, as the drain guard reads them), each
    folded as its page arrives into what the report needs (pod counts, injection labels, the pod templates that
    select a revision), so memory stays flat with the cluster's size."""
    from kubernetes import client, config
    from urllib3.exceptions import HTTPError

    from mesh import kube
    from mesh.providers.drain_guard import each_template

    deployed = Deployed.from_outputs(outputs)
    # Declared external in the work tree but not yet deployed: still never the stack's to drop.
    declared = raw.get(f"{PROJECT}:revisions") or {}
    external = {*deployed.external, *(n for n, r in declared.items() if isinstance(r, dict) and r.get("external"))}
    settings = kube_settings(raw)
    if settings is None:
        return 1, status(stack, deployed, None, NO_KUBECONFIG, state_note, external=external)
    try:
        with kube.api_client(settings) as api:
            installed = installed_revisions(injectors(api))
            namespaces = {ns["metadata"]["name"]: injection_labels(ns["metadata"].get("labels") or {})
                          for ns in kube.list_objects(kube.collection(api, "Namespace"))}
            templates = selecting(each_template(api))
            # Every pod folded page by page as status() reads it: the list is consumed inside, not held.
            pods = kube.list_objects(kube.collection(api, "Pod"))
            return 0, status(stack, deployed, pods, None, state_note, installed, namespaces, templates, external,
                             held)
    except (client.exceptions.ApiException, HTTPError, OSError, config.ConfigException) as e:
        return 1, status(stack, deployed, None, unreachable(e), state_note, external=external)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m mesh", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    rev = sub.add_parser("review", help="what the work tree's config changes, and what up will restart")
    rev.add_argument("--stack", required=True)
    rev.add_argument("--json", action="store_true")
    now = sub.add_parser("status", help="what runs where now, and which revisions can be dropped")
    now.add_argument("--stack", required=True)
    now.add_argument("--json", action="store_true")
    fleet = sub.add_parser("fleet", help="plan or roll the stacks of a fleet file in waves, with health gates")
    fleet.add_argument("action", choices=("plan", "up"))
    fleet.add_argument("--fleet", required=True, help="the fleet file (see mesh/fleet/fleet_file.py)")
    fleet.add_argument("--only", choices=("all", "unprotected", "protected"), default="all",
                       help="CI's two jobs: the stacks outside `protected`, then (behind approval) the protected ones")
    args = parser.parse_args(argv)
    if args.command == "fleet":
        from mesh import fleet_run

        return fleet_run.main(args.action, args.fleet, args.only)
    if args.command == "status":
        export, state_note = pulumi_json(args.stack, "stack", "export")
        code, result = build_status(args.stack, stack_config(args.stack), stack_outputs(export), state_note,
                                    None if state_note else revisions_in_state(export))
    else:
        code, result = review(args.stack)
    if isinstance(result, str):
        print(result)
        return code
    print(json.dumps(result.to_json(), indent=2) if args.json else result.markdown().rstrip("\n"))
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
