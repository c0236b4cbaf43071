"""`python -m mesh review --stack STACK [--json]`: the upgrade review of the work tree's stack config.

Run from the project directory with the stack's backend configured as for `pulumi` itself. Exit 0 with
the review on stdout; exit 2 with the validation message on stdout when the config is invalid. The
cluster part (what `up` restarts, what a removal would be refused on) needs the cluster the stack
points at; without one the review says it was skipped. Rules: mesh.review; this module only reads.
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

from mesh.review import Deployed, Review, control_plane, data_plane, moves, refusals, unmanaged_labels
from mesh.spec import PROJECT, MeshSpec, SpecError, load_spec
from mesh.validation import validate_or_raise


def stack_config(stack: str) -> dict[str, Any]:
    """Every key of Pulumi.<stack>.yaml, as written (secure values stay encrypted and unused)."""
    path = Path(f"Pulumi.{stack}.yaml")
    if not path.is_file():
        raise SystemExit(f"no {path} in {Path.cwd()}: run from the project directory")
    return (yaml.safe_load(path.read_text()) or {}).get("config") or {}


def deployed_outputs(stack: str) -> tuple[dict[str, Any], str | None]:
    """The stack's last outputs, or nothing (and why) for a stack never deployed or out of reach."""
    try:
        done = subprocess.run(["pulumi", "stack", "output", "--json", "--stack", stack, "--non-interactive"],
                              capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return {}, f"pulumi unavailable ({e})"
    if done.returncode != 0:
        return {}, done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "no deployed state"
    return json.loads(done.stdout or "{}"), None


def cluster_part(spec: MeshSpec, deployed: Deployed, raw: dict[str, Any]) -> tuple[list, dict, dict, str | None]:
    """Read only what the review needs: the moving namespaces, and all pods only when a revision goes."""
    from kubernetes import client, config
    from urllib3.exceptions import HTTPError

    from mesh import kube
    from mesh.drain import pod_revision_from_object
    from mesh.providers.rollout import NamespaceReader, RolloutError

    plain = {k: v for k, v in raw.items() if isinstance(v, str)}
    settings = kube.settings_from(plain.get)
    if not settings.kubeconfig and not os.path.exists(os.path.expanduser(kube.DEFAULT_KUBECONFIG)):
        return [], {}, {}, "no kubeconfig (set KUBECONFIG or kubernetes:kubeconfig)"
    try:
        with kube.api_client(settings) as api:
            planes = []
            for move in moves(deployed, spec):
                try:
                    workloads, pods = NamespaceReader(api, move.namespace, move.workload).snapshot()
                except RolloutError:  # a gateway not installed yet: its pods start on the target
                    workloads, pods = {}, []
                planes.append(data_plane(move, workloads.values(), pods))
            core = client.CoreV1Api(api)
            refused = {}
            if set(deployed.versions) - set(spec.revisions):  # every pod, as the guard reads them, only then
                pods = (pod_revision_from_object(p) for p in kube.list_objects(core.list_pod_for_all_namespaces))
                refused = refusals(deployed, spec, (p for p in pods if p is not None))
            labelled = {
                ns.metadata.name: ns.metadata.labels or {}
                for selector in ("istio-injection", "istio.io/rev")
                for ns in core.list_namespace(label_selector=selector).items
            }
    except (client.exceptions.ApiException, HTTPError, OSError, config.ConfigException) as e:
        return [], {}, {}, f"cluster unreachable ({type(e).__name__}: {str(e).splitlines()[0][:200]})"
    return planes, refused, unmanaged_labels(labelled, spec), None


def review(stack: str) -> tuple[int, Review | str]:
    raw = stack_config(stack)
    outputs, state_note = deployed_outputs(stack)
    deployed = Deployed.from_outputs(outputs)
    mesh_keys = {k.removeprefix(f"{PROJECT}:"): v for k, v in raw.items() if k.startswith(f"{PROJECT}:")}
    try:
        spec = validate_or_raise(load_spec(mesh_keys))
    except SpecError as exc:
        return 2, str(exc)
    planes, refused, unmanaged, cluster_note = cluster_part(spec, deployed, raw)
    lines = control_plane(deployed, spec)
    if state_note:
        lines.insert(0, f"(compared with an empty mesh: {state_note})")
    return 0, Review(stack, lines, None if cluster_note else planes, refused, unmanaged,
                     spec.rollout.concurrency, spec.rollout.timeout_seconds, cluster_note)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m mesh", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    rev = sub.add_parser("review", help="what the work tree's config changes, and what up will restart")
    rev.add_argument("--stack", required=True)
    rev.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    code, result = review(args.stack)
    if isinstance(result, str):
        print(result)
        return code
    print(json.dumps(result.to_json(), indent=2) if args.json else result.markdown().rstrip("\n"))
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
