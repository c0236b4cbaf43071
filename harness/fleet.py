"""A fleet of local clusters: N control planes (each with its real istiod), one project with a stack per cluster
in one local backend, and `python -m mesh fleet` run as a user runs it, for the fleet e2e test and benchmark.

Each stack reaches its cluster through its own config (`kubernetes:kubeconfig`, a path); the fleet command runs
without KUBECONFIG, so a stack pointed at the wrong cluster cannot go unnoticed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client as k8s
from pulumi import automation as auto

from harness.control_plane import ControlPlane, KubeCluster
from harness.mesh_stack import MeshStack
from harness.toolchain import Tools


class LocalFleet:
    def __init__(self, tools: Tools, names: tuple[str, ...]) -> None:
        self.tools = tools
        self.names = names
        self.workdir = Path(tempfile.mkdtemp(prefix="fleet-"))
        self.planes: list[ControlPlane] = []
        self.clusters: dict[str, KubeCluster] = {}
        self.handles: dict[str, auto.Stack] = {}
        self.fleet_file = self.workdir / "fleet.yaml"
        self.project: MeshStack | None = None

    def start(self) -> LocalFleet:
        """The control planes, one after the other, then the project and its stacks."""
        for name in self.names:
            cp = ControlPlane(self.tools)
            self.planes.append(cp)
            cp.start()
            self.clusters[name] = KubeCluster(cp.kubeconfig, self.tools, cp)
        first = self.names[0]
        self.project = MeshStack(self.tools, self.clusters[first].kubeconfig, self.workdir, name=first)
        self.handles = {first: self.project.stack, **{n: self.project.add_stack(n) for n in self.names[1:]}}
        return self

    def stop(self) -> None:
        for cp in self.planes:
            cp.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def write_fleet(self, fleet: dict[str, Any]) -> None:
        self.fleet_file.write_text(yaml.safe_dump({"project": "project", **fleet}))

    def configure(self, mesh: dict[str, Any]) -> None:
        """Every stack file with the same mesh config (as one reviewed PR changes them all), each its own cluster."""
        assert self.project is not None
        for name, cluster in self.clusters.items():
            config = {"kubernetes:kubeconfig": str(cluster.kubeconfig),
                      **{f"istio-mesh:{k}": v for k, v in mesh.items()}}
            (self.project.project / f"Pulumi.{name}.yaml").write_text(yaml.safe_dump({"config": config}))

    def charts(self) -> dict[str, str]:
        return {"path": str(self.tools.cache / "istio-{version}" / "charts")}

    def run(self, action: str, *args: str) -> subprocess.CompletedProcess[str]:
        """`python -m mesh fleet <action> --fleet FILE` from outside the project (the fleet file names it)."""
        assert self.project is not None
        env = {k: v for k, v in {**os.environ, **self.project.env}.items() if k != "KUBECONFIG"}
        return subprocess.run([sys.executable, "-m", "mesh", "fleet", action, "--fleet", str(self.fleet_file), *args],
                              cwd=self.workdir, env={**env, "PYTHONPATH": str(self.project.project)},
                              capture_output=True, text=True, timeout=2400, check=False)

    def updates(self, name: str) -> int:
        """How many updates the backend recorded for the stack (its history)."""
        return sum(1 for h in self.handles[name].history() if h.kind == "update")

    def istiod_revisions(self, name: str) -> set[str]:
        apps = k8s.AppsV1Api(self.clusters[name].api())
        found = apps.list_namespaced_deployment("istio-system", label_selector="app=istiod").items
        return {d.metadata.labels.get("istio.io/rev") for d in found}
