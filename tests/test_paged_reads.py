"""Cluster-wide reads are paged and folded as they come: a reader holds a page, not the cluster."""

from __future__ import annotations

import json
from collections.abc import Iterable
from types import SimpleNamespace
from typing import Any

import pytest

from mesh import kube
from mesh.drain import PodTemplate, Selectors, selectors_of
from mesh.providers import drain_guard


class Workloads:
    """Every kind's cluster-wide list call, `per_kind` workloads each (one pod-template label istio.io/rev=old
    per kind), counting the requests made."""

    def __init__(self, per_kind: int) -> None:
        self.per_kind = per_kind
        self.requests: list[str] = []

    def call(self, kind: str) -> Any:
        def list_call(**kw: Any) -> Any:
            self.requests.append(kind)
            start = int(kw.get("_continue") or 0)
            end = min(start + kw["limit"], self.per_kind)
            items = [{"metadata": {"name": f"{kind.lower()}-{i}", "namespace": "shop"},
                      "spec": {"template": {"metadata": {"labels": {"istio.io/rev": "old" if i == 0 else "new"}}},
                               "jobTemplate": {"spec": {"template": {"metadata": {"labels": {}}}}}}}
                     for i in range(start, end)]
            meta = {"continue": str(end)} if end < self.per_kind else {}
            return SimpleNamespace(data=json.dumps({"metadata": meta, "items": items}).encode())
        return list_call


def test_the_drain_guard_folds_workload_templates_page_by_page(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kube, "PAGE_SIZE", 10)
    cluster = Workloads(per_kind=35)
    no_namespaces = SimpleNamespace(data=b'{"metadata": {}, "items": []}')
    monkeypatch.setattr(kube, "collection", lambda _api, kind: (
        (lambda **_kw: no_namespaces) if kind == "Namespace" else cluster.call(kind)))
    requests_at: list[int] = []

    def folding(revision: str, namespaces: Any, templates: Iterable[PodTemplate]) -> Selectors:
        def seen() -> Iterable[PodTemplate]:
            for t in templates:
                requests_at.append(len(cluster.requests))
                yield t
        return selectors_of(revision, namespaces, seen())

    monkeypatch.setattr(drain_guard, "selectors_of", folding)
    selectors = drain_guard.revision_selectors(None, "old")  # type: ignore[arg-type]
    assert selectors.templates == {"shop": ["DaemonSet/daemonset-0", "Deployment/deployment-0",
                                            "StatefulSet/statefulset-0"]}
    assert len(cluster.requests) == 3 * 4 + 4  # 4 pages of 10 per kind: every list paged
    assert requests_at[0] == 1  # the first template is judged before the second page is even asked for
    assert requests_at[10] == 2 and requests_at[-1] == len(cluster.requests)
