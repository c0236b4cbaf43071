"""`pulumi preview` of a shipped stack (Pulumi.<stack>.yaml) with the real engine, then its `mesh review`.

The preview is compact (one line per resource and the summary); `--diff` prints every object's diff.

Against the cluster in $KUBECONFIG when set; otherwise against a throwaway local control plane
(``harness.control_plane``), where the stack's bound namespaces are created first, as they would exist in a real
cluster. The project is copied to a temp dir with a local state backend, so nothing in the repo changes.
Run from the repository root as ``python -m scripts.preview`` (``scripts/preview`` does).
"""

from __future__ import annotations

import os
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

import yaml
from kubernetes import client as k8s

from harness.control_plane import ControlPlane
from harness.mesh_stack import MeshStack
from harness.toolchain import REPO_ROOT, Tools, describe_missing, locate


def main(stack: str, diff: bool) -> int:
    raw = yaml.safe_load((REPO_ROOT / f"Pulumi.{stack}.yaml").read_text())["config"]
    config = {k.removeprefix("istio-mesh:"): v for k, v in raw.items()}
    kubeconfig_env = os.environ.get("KUBECONFIG")
    tools = locate(cluster=not kubeconfig_env, charts=False)
    if not isinstance(tools, Tools):
        print(describe_missing(tools), file=sys.stderr)
        return 2
    with ExitStack() as cleanup:
        if kubeconfig_env:
            kubeconfig = Path(kubeconfig_env)
        else:
            cp = cleanup.enter_context(ControlPlane(tools))
            kubeconfig = cp.kubeconfig
            core = k8s.CoreV1Api(cp.api())
            for ns in config.get("namespaces") or {}:
                core.create_namespace({"metadata": {"name": ns}})
            print(f"[preview] local control plane up; created namespaces {sorted(config.get('namespaces') or {})}",
                  file=sys.stderr)
        workdir = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="istio-mesh-preview-")))
        mesh = MeshStack(tools, kubeconfig, workdir, name=stack)
        mesh.write_config(config)
        result = mesh.stack.preview(on_output=print, color="never", diff=diff)
        print(f"[preview] {stack}: {result.change_summary}", file=sys.stderr)
        review = mesh.review()
        print(f"\n## mesh review --stack {stack}\n")
        print(review.stdout, end="")
        print(review.stderr, end="", file=sys.stderr)
    return review.returncode


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--diff"]
    sys.exit(main(args[0] if args else "dev", diff="--diff" in sys.argv[1:]))
