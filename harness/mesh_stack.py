"""Drive the real program through the Automation API: a copy of the project in a temp dir, a local
file backend, the built CLI and plugins, and the cluster's kubeconfig from the environment only."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from pulumi import automation as auto

from harness.toolchain import REPO_ROOT, Tools

STACK = "e2e"
PROJECT_FILES = ("Pulumi.yaml", "__main__.py", "requirements.txt")


class MeshStack:
    """One stack of the istio-mesh project, aimed at one cluster."""

    def __init__(self, tools: Tools, kubeconfig: Path, workdir: Path, name: str = STACK) -> None:
        self.kubeconfig = kubeconfig
        self.name = name
        self.project = workdir / "project"
        self.project.mkdir(parents=True)
        for file in PROJECT_FILES:
            shutil.copy(REPO_ROOT / file, self.project / file)
        shutil.copytree(REPO_ROOT / "mesh", self.project / "mesh", ignore=shutil.ignore_patterns("__pycache__"))
        project = yaml.safe_load((self.project / "Pulumi.yaml").read_text())
        project["runtime"]["options"]["virtualenv"] = str(REPO_ROOT / ".venv")
        (self.project / "Pulumi.yaml").write_text(yaml.safe_dump(project, sort_keys=False))
        self.backend = workdir / "state"
        self.backend.mkdir()
        self.log: list[str] = []
        env = {
            "PULUMI_HOME": str(workdir / "pulumi-home"),
            "PULUMI_BACKEND_URL": f"file://{self.backend}",
            "PULUMI_CONFIG_PASSPHRASE": "e2e",
            "PULUMI_SKIP_UPDATE_CHECK": "true",
            "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
            "PULUMI_AUTOMATION_API_SKIP_VERSION_CHECK": "true",
            "KUBECONFIG": str(kubeconfig),
            "PATH": tools.env_path(),
        }
        self.env = env
        self.tools = tools
        self.stack = self.add_stack(name, env)

    def add_stack(self, name: str, env: dict[str, str] | None = None) -> auto.Stack:
        """Another stack of this project, in the same backend (a fleet's stacks); `env` replaces this one's."""
        return auto.create_stack(
            name,
            work_dir=str(self.project),
            opts=auto.LocalWorkspaceOptions(
                work_dir=str(self.project),
                env_vars=env or self.env,
                pulumi_command=auto.PulumiCommand(root=str(self.tools.pulumi_bin_dir.parent), skip_version_check=True),
            ),
        )

    def write_config(self, config: dict[str, Any]) -> None:
        """Replace the stack file's config, as a reviewed PR would."""
        body = {"config": {f"istio-mesh:{k}": v for k, v in config.items()}}
        (self.project / f"Pulumi.{self.name}.yaml").write_text(yaml.safe_dump(body, sort_keys=False))

    def set_path(self, key: str, value: str) -> None:
        """`pulumi config set --path <key> <value>`, as the README's runbook does."""
        self.stack.set_config(key, auto.ConfigValue(value), path=True)

    def review(self, *args: str) -> subprocess.CompletedProcess[str]:
        """`python -m mesh review` of this stack, run as a user runs it: in the project, with its backend."""
        return self.mesh("review", *args)

    def status(self, *args: str) -> subprocess.CompletedProcess[str]:
        """`python -m mesh status` of this stack, run the same way."""
        return self.mesh("status", *args)

    def mesh(self, command: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "mesh", command, "--stack", self.name, *args],
                              cwd=self.project, env={**os.environ, **self.env}, capture_output=True, text=True,
                              timeout=300, check=False)

    def config(self) -> dict[str, Any]:
        raw = yaml.safe_load((self.project / f"Pulumi.{self.name}.yaml").read_text())["config"]
        return {k.removeprefix("istio-mesh:"): v for k, v in raw.items()}

    def up(self, refresh: bool = False) -> auto.UpResult:
        return self.stack.up(on_output=self.log.append, color="never", refresh=refresh)

    def preview_changes(self, refresh: bool = False) -> dict[str, int]:
        """Change counts of a fresh preview (after reading the cluster, with refresh), without the unchanged ones."""
        result = self.stack.preview(on_output=self.log.append, color="never", diff=True, refresh=refresh)
        return {op: n for op, n in result.change_summary.items() if op != "same" and n}

    def state_text(self) -> str:
        """Everything the backend stores for the stack (checkpoint and history), as text."""
        return "\n".join(p.read_text(errors="replace") for p in self.backend.rglob("*") if p.is_file())

    def outputs(self) -> dict[str, Any]:
        return {k: v.value for k, v in self.stack.outputs().items()}

    def resources(self) -> list[dict[str, Any]]:
        return json.loads(json.dumps(self.stack.export_stack().deployment))["resources"]
