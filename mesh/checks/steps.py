"""The change the checks judge: which chart of which part of the mesh goes from which Istio version to which.

From what the stack last deployed (revision -> version, the istio-cni agent's version) and the config. A new
revision counts as a step from the oldest deployed version below it, since the workloads that move to it come
from the deployed revisions (the oldest has the most behaviour changes ahead of it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from mesh.charts import ChartName, canary_version, gateway_version
from mesh.spec import MeshSpec, parse_version

How = Literal["new", "in place"]


@dataclass(frozen=True)
class Step:
    key: str
    """The config key the step belongs to (`revisions.1-31-0`, `cni`)."""
    chart: ChartName
    before: str | None
    """None: nothing deployed before it (a fresh install, or a revision with no older one deployed)."""
    after: str
    how: How

    @property
    def minors(self) -> int:
        """How many minors the step climbs (0 for a patch, negative for a downgrade)."""
        if self.before is None:
            return 0
        old, new = parse_version(self.before), parse_version(self.after)
        return (new.major - old.major) * 100 + new.minor - old.minor


def minor(version: str) -> str:
    v = parse_version(version)
    return f"{v.major}.{v.minor}"


def steps(deployed_versions: Mapping[str, str], deployed_cni: str | None, spec: MeshSpec) -> list[Step]:
    """Every revision whose version changes or that is new, and the istio-cni agent's move (it follows the
    newest revision)."""
    result = []
    for name, rev in sorted(spec.revisions.items()):
        old = deployed_versions.get(name)
        if rev.version is None:  # installed outside the stack: no chart of ours moves it
            continue
        if old is not None:
            if old != rev.version:
                result.append(Step(f"revisions.{name}", "istiod", old, rev.version, "in place"))
            continue
        below = [v for v in deployed_versions.values() if parse_version(v) < parse_version(rev.version)]
        before = str(min(parse_version(v) for v in below)) if below else None
        result.append(Step(f"revisions.{name}", "istiod", before, rev.version, "new"))
    if spec.cni.enabled and deployed_cni != spec.newest_version:
        how: How = "new" if deployed_cni is None else "in place"
        result.append(Step("cni", "cni", deployed_cni, spec.newest_version, how))
    return result


def chart_uses(spec: MeshSpec) -> list[tuple[str, ChartName, str, Mapping[str, object]]]:
    """Every chart release the config renders with user values: (config key, chart, version, values)."""
    uses: list[tuple[str, ChartName, str, Mapping[str, object]]] = [
        (f"revisions.{name}", "istiod", rev.version, rev.values) for name, rev in sorted(spec.revisions.items())
        if rev.version is not None
    ]
    for name, gw in sorted(spec.gateways.items()):
        if _installed(spec, gw.revision):
            uses.append((f"gateways.{name}", "gateway", gateway_version(spec, gw), gw.values))
        if gw.canary and _installed(spec, gw.canary.revision):
            uses.append((f"gateways.{name}", "gateway", canary_version(spec, gw), gw.values))
    if spec.cni.enabled:
        uses.append(("cni", "cni", spec.newest_version, spec.cni.values))
    return uses


def _installed(spec: MeshSpec, target: str) -> bool:
    """Whether a tag or revision name stands for a revision the stack installs (a chart version to follow)."""
    rev = spec.revisions.get(spec.resolve(target))
    return rev is not None and rev.version is not None
