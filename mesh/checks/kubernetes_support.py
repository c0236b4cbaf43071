"""Rule 1: the cluster's Kubernetes version against each revision's supported range.

Outside the range Istio supports for that minor: a warning. Below istioctl's own minimum (`MinK8SVersion`, the
version `istioctl install` and `istioctl x precheck` refuse below): a refusal. The cluster's version is one API
call (`GET /version`), read by the caller.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from mesh.checks import Finding, passed, refusal, warning
from mesh.checks.steps import minor

RULE = "kubernetes-support"


@dataclass(frozen=True)
class Support:
    oldest: str
    newest: str
    source: str


SUPPORTED: Mapping[str, Support] = {
    "1.29": Support("1.31", "1.35", "Istio 1.29.0 release announcement, istio/istio.io "
                                    "content/en/news/releases/1.29.x/announcing-1.29/_index.md"),
    "1.30": Support("1.32", "1.36", "Istio 1.30.0 release announcement, istio/istio.io "
                                    "content/en/news/releases/1.30.x/announcing-1.30/_index.md"),
    "1.31": Support("1.32", "1.36", "Istio 1.31.0 release announcement, istio/istio.io "
                                    "content/en/news/releases/1.31.x/announcing-1.31/_index.md"),
}
"""Istio minor -> the Kubernetes minors it supports, as each minor's release announcement in istio/istio.io gives them
("Istio 1.X.0 is officially supported on Kubernetes versions A to B"); each row names that file (all three checked
against it in December 2026). istio.io's "Support status of Istio releases" table is rendered from
`data/compatibility/supportStatus.yml`, but the copy of that file read then stopped at 1.22, so the announcements are
the source. A new minor is one line here; a minor without a row gets a warning."""

MIN_K8S: Mapping[str, str] = {
    "1.30": "1.32",
    "1.31": "1.32",
}
"""Istio minor -> istioctl's `MinK8SVersion` (`istioctl/pkg/install/k8sversion/version.go`, `MinK8SVersion = 32`
in the istio.io/istio snapshots the toolchain pins: 9739e10eb9d7 on release-1.30, eed52ebb66ad on
release-1.31). Below it Istio refuses to install."""

_KUBE_VERSION = re.compile(r"^v?(\d+)\.(\d+)")


def kube_minor(git_version: str) -> str | None:
    """`v1.33.13-gke.1` -> `1.33`; None for anything else."""
    match = _KUBE_VERSION.match(git_version.strip())
    return f"{int(match.group(1))}.{int(match.group(2))}" if match else None


def _key(version: str) -> tuple[int, int]:
    major, minor_ = version.split(".")
    return int(major), int(minor_)


def check(cluster_version: str | None, revisions: Mapping[str, str]) -> list[Finding]:
    """`revisions`: config key (`revisions.<name>`) -> the Istio version it will run; `cluster_version`: the API
    server's `gitVersion`, None when the cluster was not read."""
    if cluster_version is None:
        return []
    kube = kube_minor(cluster_version)
    if kube is None:
        return [warning(RULE, "revisions", f"the cluster's version {cluster_version!r} is not a Kubernetes "
                        "version this check can read", cluster=cluster_version)]
    findings = []
    for key, version in sorted(revisions.items()):
        istio = minor(version)
        floor, support = MIN_K8S.get(istio), SUPPORTED.get(istio)
        details = {"cluster": kube, "istio": istio}
        if floor and _key(kube) < _key(floor):
            findings.append(refusal(
                RULE, f"{key}.version",
                f"Istio {version} needs Kubernetes {floor} or newer (istioctl's MinK8SVersion), but the cluster runs "
                f"{cluster_version}: upgrade the cluster first, or keep an Istio version that supports it",
                minimum=floor, **details))
        elif support is None:
            findings.append(warning(
                RULE, f"{key}.version",
                f"no supported Kubernetes range is recorded for Istio {istio} (cluster {kube}): add it to "
                "mesh/checks/kubernetes_support.py from istio.io's supported releases", **details))
        elif not _key(support.oldest) <= _key(kube) <= _key(support.newest):
            findings.append(warning(
                RULE, f"{key}.version",
                f"Istio {version} supports Kubernetes {support.oldest} to {support.newest} ({support.source}), but "
                f"the cluster runs {cluster_version}: upgrade the cluster or the revision to a pair Istio supports",
                oldest=support.oldest, newest=support.newest, **details))
        else:
            findings.append(passed(
                RULE, f"{key}.version",
                f"Kubernetes {kube} is within Istio {istio}'s supported {support.oldest} to {support.newest}",
                oldest=support.oldest, newest=support.newest, **details))
    return findings
