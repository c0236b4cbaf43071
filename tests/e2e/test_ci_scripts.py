"""The scripts the CI workflows run (scripts/ci/preview, scripts/ci/apply), run as the jobs run them, against a
control plane of this module's own, the real Pulumi engine with a local file backend, and the charts from the
local mirror (as Pulumi.dev.yaml reads them). So what CI runs is what is tested; only the GitHub side (the
comment API, the Pulumi action) is not, see tests/test_workflows.py.

Each test works on a copy of the project (the stack files, the program, scripts/ci) in a temp dir, so the
repo never changes; the copy's .venv is the repo's.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.control_plane import KubeCluster
from harness.toolchain import REPO_ROOT, Tools
from mesh.spec import SpecError, load_spec
from mesh.validation import validate_or_raise
from tests.e2e.cluster_objects import create_namespace, namespace_labels

STACK = "dev"
MARKER = f"<!-- istio-mesh-review:{STACK} -->"


def dev_config(tools: Tools) -> dict[str, Any]:
    """Pulumi.dev.yaml as shipped, its chart mirror pointed at this run's tool cache (the same by default)."""
    config = yaml.safe_load((REPO_ROOT / f"Pulumi.{STACK}.yaml").read_text())["config"]
    config["istio-mesh:charts"] = {"path": str(tools.cache / "istio-{version}" / "charts")}
    return config


class CiCheckout:
    """A checkout as a CI job has it: the project, scripts/ci and a stack file, plus the job's environment."""

    def __init__(self, root: Path, tools: Tools, kubeconfig: Path, config: dict[str, Any]) -> None:
        self.root = root / "checkout"
        self.root.mkdir(parents=True)
        for name in ("Pulumi.yaml", "__main__.py", "requirements.txt"):
            shutil.copy(REPO_ROOT / name, self.root / name)
        ignore = shutil.ignore_patterns("__pycache__")
        shutil.copytree(REPO_ROOT / "mesh", self.root / "mesh", ignore=ignore)
        shutil.copytree(REPO_ROOT / "scripts" / "ci", self.root / "scripts" / "ci", ignore=ignore)
        # scripts/ci/setup would create .venv from requirements.txt; the repo's is that venv already.
        (self.root / ".venv").symlink_to(REPO_ROOT / ".venv")
        project = yaml.safe_load((self.root / "Pulumi.yaml").read_text())
        project["runtime"]["options"]["virtualenv"] = str(REPO_ROOT / ".venv")
        (self.root / "Pulumi.yaml").write_text(yaml.safe_dump(project, sort_keys=False))
        (self.root / f"Pulumi.{STACK}.yaml").write_text(yaml.safe_dump({"config": config}, sort_keys=False))
        state = root / "state"
        state.mkdir()
        self.summary = root / "step-summary.md"
        # What the workflow's env gives the job: the state backend and passphrase (repository secrets there),
        # the kubeconfig scripts/ci/kubeconfig exported; here also the toolchain's Pulumi, offline.
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("PULUMI_", "KUBECONFIG"))},
            "PATH": tools.env_path(),
            "PULUMI_HOME": str(root / "pulumi-home"),
            "PULUMI_BACKEND_URL": f"file://{state}",
            "PULUMI_CONFIG_PASSPHRASE": "e2e",
            "PULUMI_SKIP_UPDATE_CHECK": "true",
            "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
            "KUBECONFIG": str(kubeconfig),
            "RUNNER_TEMP": str(root),
            "GITHUB_STEP_SUMMARY": str(self.summary),
        }

    def run(self, *args: str, timeout: int = 1800) -> subprocess.CompletedProcess:
        result = subprocess.run([str(self.root / args[0]), *args[1:]], cwd=self.root, env=self.env,
                                capture_output=True, text=True, timeout=timeout, check=False)
        print(f"$ {' '.join(args)} -> {result.returncode}\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
        return result

    def pulumi_json(self, *args: str) -> Any:
        result = self.run_pulumi(*args, "--json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    def run_pulumi(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["pulumi", *args, "--stack", STACK, "--non-interactive"], cwd=self.root,
                              env=self.env, capture_output=True, text=True, timeout=300, check=False)

    def review(self) -> subprocess.CompletedProcess:
        """`mesh review` itself, as scripts/ci/preview runs it."""
        return subprocess.run([str(self.root / ".venv" / "bin" / "python"), "-m", "mesh", "review", "--stack", STACK],
                              cwd=self.root, env=self.env, capture_output=True, text=True, timeout=300, check=False)


@pytest.fixture(scope="module")
def cluster(pristine_cluster: KubeCluster, e2e_tools: Tools) -> KubeCluster:
    """The dev stack's bound namespaces exist, as in a real cluster (bindings label them, never create them)."""
    config = dev_config(e2e_tools)
    for namespace in config["istio-mesh:namespaces"]:
        create_namespace(pristine_cluster.api(), namespace)
    return pristine_cluster


@pytest.fixture()
def checkout_for(cluster: KubeCluster, e2e_tools: Tools, tmp_path: Path):
    def make(config: dict[str, Any]) -> CiCheckout:
        return CiCheckout(tmp_path, e2e_tools, cluster.kubeconfig, config)

    return make


def validation_errors(config: dict[str, Any]) -> list[str]:
    try:
        validate_or_raise(load_spec({k.removeprefix("istio-mesh:"): v for k, v in config.items()}))
    except SpecError as exc:
        return [str(e) for e in exc.errors]
    return []


def test_preview_of_a_valid_config_is_the_review_under_its_marker(checkout_for, e2e_tools: Tools) -> None:
    checkout = checkout_for(dev_config(e2e_tools))
    body_file = checkout.root.parent / "body.md"
    result = checkout.run("scripts/ci/preview", STACK, str(body_file))
    assert result.returncode == 0, result.stderr
    body = body_file.read_text()
    assert body.startswith(MARKER + "\n")
    assert f"### Upgrade review: stack `{STACK}`" in body
    review = checkout.review()
    assert review.returncode == 0, review.stderr
    assert review.stdout.strip() and review.stdout.strip() in body, "the comment is the review, as printed"
    for revision in ("1-30-0", "1-31-0"):
        assert revision in body, "a never-deployed stack: the review shows its revisions added"
    assert MARKER not in checkout.summary.read_text(), "the job summary shows the review without the marker"


def test_preview_and_apply_of_an_invalid_config_fail_with_the_message(checkout_for, e2e_tools: Tools) -> None:
    config = dev_config(e2e_tools)
    config["istio-mesh:gateways"]["ingress"]["namespace"] = "kube-system"
    expected = validation_errors(config)
    assert expected and all("gateways.ingress" in e for e in expected)
    checkout = checkout_for(config)
    body_file = checkout.root.parent / "body.md"

    result = checkout.run("scripts/ci/preview", STACK, str(body_file))
    assert result.returncode != 0
    body = body_file.read_text()
    assert body.startswith(MARKER + "\n") and "the config is invalid" in body
    for message in expected:
        assert message in body

    applied = checkout.run("scripts/ci/apply", STACK)
    assert applied.returncode == 2
    assert "nothing was applied" in applied.stdout
    for message in expected:
        assert message in applied.stdout
    exported = checkout.run_pulumi("stack", "export")  # always JSON; it has no --json flag
    assert exported.returncode == 0, exported.stderr
    deployment = json.loads(exported.stdout)["deployment"]
    assert not deployment.get("resources"), "the engine never ran"


def test_apply_runs_pulumi_up_for_dev(checkout_for, cluster: KubeCluster, e2e_tools: Tools) -> None:
    checkout = checkout_for(dev_config(e2e_tools))
    result = checkout.run("scripts/ci/apply", STACK)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Resources:" in result.stdout and "created" in result.stdout

    outputs = checkout.pulumi_json("stack", "output", "--show-secrets")
    assert set(outputs["revisions"]) == {"1-30-0", "1-31-0"}
    assert outputs["tags"] == {"default": "1-30-0", "stable": "1-30-0", "canary": "1-31-0"}
    api = cluster.api()
    assert namespace_labels(api, "payments").get("istio.io/rev") == "canary"
    assert namespace_labels(api, "checkout").get("istio.io/rev") == "stable"

    # Merged again without a change: up is a no-op, and the PR review of the deployed stack still works.
    again = checkout.run("scripts/ci/apply", STACK)
    assert again.returncode == 0, again.stderr[-3000:]
    summary = again.stdout.split("Resources:")[-1]
    assert "unchanged" in summary and not any(op in summary for op in ("created", "updated", "deleted", "replaced"))
    body_file = checkout.root.parent / "body.md"
    assert checkout.run("scripts/ci/preview", STACK, str(body_file)).returncode == 0
    assert body_file.read_text().startswith(MARKER + "\n")
