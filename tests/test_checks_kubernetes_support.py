"""Rule 1: the cluster's Kubernetes version against each revision's supported range and istioctl's minimum."""

from __future__ import annotations

from mesh.checks import kubernetes_support
from mesh.checks.kubernetes_support import MIN_K8S, SUPPORTED, check, kube_minor


def test_inside_the_range_passes_and_names_it() -> None:
    (finding,) = check("v1.33.13", {"revisions.1-31-0": "1.31.0"})
    assert finding.severity == "passed"
    assert finding.key == "revisions.1-31-0.version"
    assert "1.32 to 1.36" in finding.message


def test_above_the_range_warns_naming_revision_range_and_cluster() -> None:
    (finding,) = check("v1.37.1-gke.200", {"revisions.1-30-0": "1.30.0"})
    assert finding.severity == "warning"
    assert str(finding).startswith("istio-mesh:revisions.1-30-0.version: Istio 1.30.0 supports Kubernetes 1.32 to 1.36")
    assert "v1.37.1-gke.200" in finding.message
    assert finding.details == {"cluster": "1.37", "istio": "1.30", "oldest": "1.32", "newest": "1.36"}


def test_below_istioctls_minimum_is_refused() -> None:
    old, new = check("v1.31.4", {"revisions.a": "1.30.1", "revisions.b": "1.29.3"})
    assert (old.key, old.severity) == ("revisions.a.version", "refusal")
    assert "needs Kubernetes 1.32 or newer (istioctl's MinK8SVersion)" in old.message
    assert (new.key, new.severity) == ("revisions.b.version", "passed")  # 1.29 supports 1.31


def test_a_minor_without_data_says_where_to_add_it() -> None:
    (finding,) = check("v1.33.0", {"revisions.x": "1.40.0"})
    assert finding.severity == "warning"
    assert "mesh/checks/kubernetes_support.py" in finding.message


def test_no_cluster_no_findings_and_versions_read_as_the_api_server_writes_them() -> None:
    assert check(None, {"revisions.a": "1.31.0"}) == []
    assert kube_minor("v1.33.13") == "1.33"
    assert kube_minor("v1.30.2+k3s1") == "1.30"
    assert kube_minor("garbage") is None


def test_every_row_names_its_source_and_istioctls_minimum_is_within_the_range() -> None:
    assert all(s.source for s in SUPPORTED.values())
    for istio, floor in MIN_K8S.items():
        assert floor == SUPPORTED[istio].oldest
    assert kubernetes_support.RULE == "kubernetes-support"
