"""Istio's upgrade rules as checks over data: one module per rule, each a pure function from facts (versions,
chart files as parsed by `mesh.checks.chart_facts`, the stack's values, cluster facts read once) to findings.

The review (`mesh.review`) runs them all and prints one "Checks" section; the program refuses at preview what
a check calls a refusal (`mesh.program`). Modules: `kubernetes_support`, `version_skew`, `behaviour_changes`,
`chart_values`, `upgrade_notes`; the data they read: `chart_facts`; the change they judge: `steps`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from mesh.spec import PROJECT

Severity = Literal["passed", "warning", "refusal"]
PASSED: Severity = "passed"
WARNING: Severity = "warning"
REFUSAL: Severity = "refusal"


@dataclass(frozen=True)
class Finding:
    """One outcome of one rule: what it is about (a config key, without the project prefix), and why."""

    rule: str
    severity: Severity
    key: str
    message: str
    details: Mapping[str, Any] = field(default_factory=dict)
    """The same facts as data, for `--json` (flags, pods, notes)."""

    def __str__(self) -> str:
        return f"{PROJECT}:{self.key}: {self.message}"


def passed(rule: str, key: str, message: str, **details: Any) -> Finding:
    return Finding(rule, PASSED, key, message, details)


def warning(rule: str, key: str, message: str, **details: Any) -> Finding:
    return Finding(rule, WARNING, key, message, details)


def refusal(rule: str, key: str, message: str, **details: Any) -> Finding:
    return Finding(rule, REFUSAL, key, message, details)


def of_severity(findings: Iterable[Finding], severity: Severity) -> list[Finding]:
    return [f for f in findings if f.severity == severity]
