"""Every check of `mesh.checks` over one change: what the review's "Checks" section and `--json` carry, and what
the program refuses at preview (`preview_refusals`)."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field

from mesh.checks import REFUSAL, Finding, behaviour_changes, chart_values, kubernetes_support, upgrade_notes
from mesh.checks import version_skew as skew
from mesh.checks.chart_facts import ChartFacts
from mesh.checks.steps import Step, chart_uses, steps
from mesh.checks.upgrade_notes import Note
from mesh.checks.version_skew import ProxyPod
from mesh.spec import DEFAULT_CHART_REPOSITORY, PROJECT, MeshSpec


@dataclass(frozen=True)
class Facts:
    """What the checks read, gathered once by the caller (chart files, release notes, the cluster)."""

    charts: Mapping[tuple[str, str], ChartFacts] = field(default_factory=dict)
    notes_available: Mapping[str, frozenset[str]] = field(default_factory=dict)
    """Version -> the release-note files of its snapshot."""
    notes: Mapping[str, Note] = field(default_factory=dict)
    """The parsed notes new in some step."""
    cluster_version: str | None = None
    pods: tuple[ProxyPod, ...] | None = None
    """The live injected pods, when an in-place change made the caller read them; None when not read."""
    restarted: frozenset[str] = frozenset()
    """Namespaces whose workloads this `up` restarts."""
    kept: Mapping[tuple[str, str], str] = field(default_factory=dict)
    """(namespace, pod) -> why no restart changes its proxy (`mesh.workloads.left_alone`), for the moving namespaces."""
    skipped: tuple[str, ...] = ()
    """What could not be checked, and why."""


@dataclass(frozen=True)
class Checks:
    findings: list[Finding]
    skipped: list[str] = field(default_factory=list)

    def of(self, severity: str) -> list[Finding]:
        return [f for f in self.findings if f.severity == severity]


def installed_versions(spec: MeshSpec) -> dict[str, str]:
    """Revision -> version, for the revisions the stack installs itself."""
    return {name: rev.version for name, rev in spec.revisions.items() if rev.version is not None}


def chart_versions(spec: MeshSpec, change: Iterable[Step]) -> set[tuple[str, str]]:
    """The (chart, version) pairs whose files the checks read: every release the config renders with values of
    the user's, and the target chart of every step (nothing else is read: a move of namespaces reads no chart)."""
    return {(chart, version) for _, chart, version, values in chart_uses(spec) if values} | {
        (s.chart, s.after) for s in change}


def run(spec: MeshSpec, deployed_versions: Mapping[str, str], deployed_cni: str | None, facts: Facts) -> Checks:
    change = steps(deployed_versions, deployed_cni, spec)
    versions = installed_versions(spec)
    uses = chart_uses(spec)
    values = {key: vals for key, _, _, vals in uses}
    cni = spec.newest_version if spec.cni.enabled else None
    findings = [
        *kubernetes_support.check(facts.cluster_version, {f"revisions.{n}": v for n, v in versions.items()}),
        *skew.check(versions, deployed_versions, change, cni, facts.pods, facts.restarted, facts.kept),
        *behaviour_changes.compatibility_versions(uses, facts.charts),
        *behaviour_changes.check(change, values, facts.charts),
        *chart_values.check(uses, facts.charts),
        *upgrade_notes.check(change, facts.notes_available, facts.notes),
    ]
    return Checks(findings, list(facts.skipped))


def preview_refusals(spec: MeshSpec, charts: Mapping[tuple[str, str], ChartFacts]) -> list[Finding]:
    """What `pulumi preview` refuses from the chart files alone: a `compatibilityVersion` the chart does not ship,
    a value the chart removed. (The rules that need the deployed state or the cluster run in the review.)"""
    uses = chart_uses(spec)
    found = [*behaviour_changes.compatibility_versions(uses, charts), *chart_values.check(uses, charts)]
    return [f for f in found if f.severity == REFUSAL]


def skipped(spec: MeshSpec, wanted: Collection[tuple[str, str]], found: Collection[tuple[str, str]],
            cluster_note: str | None) -> list[str]:
    """What the checks could not read, and how to let them: chart files (a local mirror) and the cluster."""
    reasons = []
    chart_rules = "behaviour changes, chart values, compatibilityVersion, upgrade notes"
    if not spec.charts.path:
        where = spec.charts.oci or spec.charts.repository or DEFAULT_CHART_REPOSITORY
        reasons.append(f"{chart_rules}: charts come from {where}, not from disk: set {PROJECT}:charts.path to a "
                       "local mirror (`helm pull --untar` of each chart per version) to run them")
    else:
        missing = sorted(set(wanted) - set(found))
        reasons += [f"{chart_rules} of the {chart} chart {version}: not in the mirror at {spec.charts.path}"
                    for chart, version in missing]
    if cluster_note:
        reasons.append(f"Kubernetes support and proxy skew: {cluster_note}")
    return reasons
