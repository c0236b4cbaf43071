"""Independent checks with the real ``istioctl``: what Istio's own tool says about a cluster.

The e2e tests assert the program's results with their own reading of the cluster; these checks ask
``istioctl`` (built from the same snapshot as the istiod that serves the revisions) instead, so a wrong
assumption shared by the program and its tests still shows:

* :func:`analyze`: ``istioctl analyze --all-namespaces``, the messages of the injection and webhook
  analyzers at level Warning or Error. istioctl reads Istio's objects, webhooks included, of one revision
  only (``--revision``, default ``default``: objects labelled for another revision are not seen, so an
  overlap between two revisions' webhooks goes unreported without it), so it runs once per revision
  installed in the cluster. An overlap between webhooks labelled for two different revisions is seen by no
  single run: istioctl cannot report it (the program's review does);
* :func:`tag_list`: ``istioctl tag list``, tag -> revision as istioctl reads the tag webhooks;
* :func:`precheck`: ``istioctl x precheck``, what it reports before an install or upgrade.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from typing import Any

from kubernetes import client as k8s

from harness.control_plane import KubeCluster

INJECTION_CODES = frozenset({"IST0139", "IST0158", "IST0102", "IST0103", "IST0123", "IST0135"})
"""InvalidWebhook (overlapping injectors), PodsIstioProxyImageMismatchInNamespace, NamespaceNotInjected,
PodMissingProxy, NamespaceMultipleInjectionLabels, DeprecatedAnnotation."""
REPORTED_LEVELS = frozenset({"Warning", "Error"})


@dataclass(frozen=True, order=True)
class AnalyzerMessage:
    """One message of `istioctl analyze`."""

    code: str
    origin: str  # e.g. "Namespace team-a", "Pod team-a/web-5d4f..."
    level: str
    message: str


def istioctl(cluster: KubeCluster, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the toolchain's istioctl against the cluster."""
    assert cluster.tools.istioctl is not None, "no istioctl in the toolchain"
    done = subprocess.run(
        [str(cluster.tools.istioctl), f"--kubeconfig={cluster.kubeconfig}", *args],
        capture_output=True, text=True, timeout=300, check=False,
    )
    if check and done.returncode != 0:
        raise AssertionError(f"istioctl {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done


def parse_analysis(output: str) -> list[AnalyzerMessage]:
    """`istioctl analyze -o json` output -> its injection/webhook messages at Warning or Error, sorted."""
    text = output.strip()
    messages: list[dict[str, Any]] = json.loads(text) if text.startswith("[") else []
    return sorted(
        AnalyzerMessage(m["code"], m.get("origin", ""), m["level"], m["message"])
        for m in messages
        if m["code"] in INJECTION_CODES and m["level"] in REPORTED_LEVELS
    )


def installed_revisions(cluster: KubeCluster) -> list[str]:
    """Every revision an injection webhook of the cluster is labelled for (`default` for unlabelled ones, and
    when there is none: namespaces and pods are read by every run alike)."""
    hooks = k8s.AdmissionregistrationV1Api(cluster.api()).list_mutating_webhook_configuration().items
    return sorted({(h.metadata.labels or {}).get("istio.io/rev", "default") for h in hooks} or {"default"})


def analyze(cluster: KubeCluster) -> list[AnalyzerMessage]:
    """`istioctl analyze --all-namespaces --revision <r>` for every installed revision: their injection and
    webhook messages at Warning or Error, each once."""
    found: set[AnalyzerMessage] = set()
    for revision in installed_revisions(cluster):
        # Exit code 79: messages at or above the failure threshold were found; the output is still valid.
        done = istioctl(cluster, "analyze", "--all-namespaces", "--revision", revision, "--output", "json",
                        check=False)
        if done.returncode not in (0, 79):
            raise AssertionError(f"istioctl analyze --revision {revision} exited {done.returncode}:\n{done.stderr}")
        found.update(parse_analysis(done.stdout))
    return sorted(found)


def tag_list(cluster: KubeCluster) -> dict[str, str]:
    """`istioctl tag list`: tag -> revision (revisions without a tag left out)."""
    out = istioctl(cluster, "tag", "list", "--output", "json").stdout.strip()
    entries: list[dict[str, Any]] = json.loads(out) if out.startswith("[") else []
    return {e["tag"]: e["revision"] for e in entries if e["tag"]}


def precheck(cluster: KubeCluster) -> subprocess.CompletedProcess[str]:
    """`istioctl x precheck` (exit 0: no blocking issue found)."""
    return istioctl(cluster, "x", "precheck", check=False)
