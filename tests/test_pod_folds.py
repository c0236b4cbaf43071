"""`mesh status` and `mesh review` fold the cluster's pods one at a time into the small summaries they report
(`mesh.status.PodCounts`, `mesh.review.ClusterPods`): the same report as from every pod at once, memory flat
with the number of pods, and the pods of a page folded before the next page is asked for."""

from __future__ import annotations

import gc
import json
import tracemalloc
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

import mesh.__main__ as cli
from mesh import kube
from mesh import status as status_module
from mesh.checks import version_skew
from mesh.checks.steps import Step
from mesh.drain import PodTemplate
from mesh.review import ClusterPods, Deployed, proxy_pods, selecting
from mesh.spec import load_spec
from mesh.status import PodCounts, injection_labels, status
from mesh.workloads import pod_from_object
from tests.test_status import DEPLOYED, NEW_PROXY, OLD_PROXY, PODS, pod


def many_pods(count: int, namespaces: int) -> Iterator[dict[str, Any]]:
    """`count` live pods spread over `namespaces`, made one at a time (nothing here holds them)."""
    for i in range(count):
        ns = f"ns-{i % namespaces}"
        yield pod(ns, f"p-{i}", "1-31-0" if i % 3 else "1-30-0", NEW_PROXY if i % 3 else OLD_PROXY)


def peak_bytes(count: int) -> int:
    gc.collect()  # garbage of earlier tests, collected whenever the collector runs, is not the fold's
    tracemalloc.start()
    try:
        status("dev", DEPLOYED, many_pods(count, 20))
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_status_memory_is_flat_with_the_number_of_pods() -> None:
    small, large = peak_bytes(500), peak_bytes(10_000)
    # Holding the 9,500 more pods (as dicts or Pod records, 1-2 KB each) would add 10-20 MB; the fold keeps counts
    # only. The peak itself (20-80 KB) moves with the interpreter's caches and when its collector runs, so the
    # bound is what holding them would cost, not a ratio of two small numbers.
    assert large < small + 1_000_000, (small, large)


def test_the_fold_grows_with_namespaces_and_revisions_not_with_pods() -> None:
    few, lots = PodCounts(DEPLOYED), PodCounts(DEPLOYED)
    for p in many_pods(30, 3):
        few.add(pod_from_object(p))
    for p in many_pods(9_000, 3):
        lots.add(pod_from_object(p))

    def entries(c: PodCounts) -> int:
        return sum(len(tags) for by in c.proxies.values() for tags in by.values()) + len(c.stale)

    assert entries(few) == entries(lots) == 3
    assert sum(n.pods for n in lots.using("1-31-0").values()) == 6_000
    assert sum(n.pods for n in lots.using("1-30-0").values()) == 3_000


def test_status_from_a_one_shot_stream_equals_status_from_a_list() -> None:
    listed = status("dev", DEPLOYED, PODS)
    streamed = status("dev", DEPLOYED, iter(PODS))
    assert streamed == listed
    old = streamed.revisions[0]
    assert {ns: (p.pods, p.proxies) for ns, p in old.pods.items()} == {
        "istio-ingress": (1, {"none": 1}), "legacy": (1, {"1.30.0": 1}), "team-c": (1, {"1.30.0": 1})}


def test_status_keeps_only_the_injection_labels_and_the_templates_that_can_select() -> None:
    labels = {"team": "a", "istio.io/rev": "1-30-0", "istio-injection": "enabled", "tier": "gold"}
    assert injection_labels(labels) == {"istio.io/rev": "1-30-0", "istio-injection": "enabled"}
    plain = PodTemplate("shop", "Deployment/web", None, True)
    labelled = PodTemplate("shop", "Deployment/api", "1-30-0", True)
    opted_out = PodTemplate("shop", "Deployment/job", "1-30-0", False)
    other = PodTemplate("shop", "CronJob/nightly", "1-31-0", True)
    assert selecting([plain, labelled, opted_out, other]) == [labelled, other]
    assert selecting([plain, labelled, opted_out, other], {"1-30-0"}) == [labelled]


class PagedPods:
    """`list_pod_for_all_namespaces` over `count` pods, counting the requests (the page is the continue token)."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.requests = 0

    def __call__(self, **kw: Any) -> Any:
        self.requests += 1
        start = int(kw.get("_continue") or 0)
        end = min(start + kw["limit"], self.count)
        items = [pod("team-a", f"web-{i}", "1-31-0", NEW_PROXY) for i in range(start, end)]
        meta = {"continue": str(end)} if end < self.count else {}
        return SimpleNamespace(data=json.dumps({"metadata": meta, "items": items}).encode())


def empty_list(**_kw: Any) -> Any:
    return SimpleNamespace(data=b'{"metadata": {}, "items": []}')


def test_build_status_folds_each_page_before_asking_for_the_next(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kube, "PAGE_SIZE", 10)
    pods = PagedPods(35)
    monkeypatch.setattr(kube, "collection", lambda _api, kind: pods if kind == "Pod" else empty_list)

    class Client:
        def __enter__(self) -> Client:
            return self

        def __exit__(self, *_exc: object) -> None:
            pass

    monkeypatch.setattr(kube, "api_client", lambda _settings: Client())
    monkeypatch.setattr(cli, "kube_settings", lambda _raw: object())
    folded_at: list[int] = []
    read = status_module.pod_from_object

    def recording(obj: Any) -> Any:
        folded_at.append(pods.requests)
        return read(obj)

    monkeypatch.setattr(status_module, "pod_from_object", recording)
    outputs = {"revisions": {"1-31-0": {"version": "1.31.0", "proxy": NEW_PROXY}}, "namespaces": {"team-a": "1-31-0"}}
    code, result = cli.build_status("dev", {}, outputs)
    assert code == 0 and result.revisions[0].pods["team-a"].pods == 35
    assert pods.requests == 4  # 4 pages of 10
    assert folded_at[:10] == [1] * 10 and folded_at[10] == 2  # a page is folded before the next is read
    assert folded_at[-1] == 4


SPEC = load_spec({"revisions": {"1-31-0": {"version": "1.31.0"}}, "tags": {"default": "1-31-0"}})
REMOVED = Deployed.from_outputs({"revisions": {"1-30-2": {"version": "1.30.2"}, "1-31-0": {"version": "1.29.0"}}})


def review_pod(ns: str, name: str, rev: str, image: str) -> Any:
    return pod_from_object(pod(ns, name, rev, image))


def test_the_review_fold_counts_the_removed_revisions_users_and_keeps_only_the_skewed_pods() -> None:
    change = [Step("revisions.1-31-0", "istiod", "1.29.0", "1.31.0", "in place")]
    fold = ClusterPods.of(REMOVED, SPEC, change)
    assert fold.removed == {"1-30-2"} and fold.in_place == {"1-31-0": "1.31.0"}
    pods = [review_pod(f"ns-{i % 4}", f"p-{i}", "1-30-2", "docker.io/istio/proxyv2:1.30.2") for i in range(400)]
    pods += [review_pod("shop", f"ok-{i}", "1-31-0", "docker.io/istio/proxyv2:1.30.1") for i in range(300)]
    pods += [review_pod("shop", "behind", "1-31-0", "docker.io/istio/proxyv2:1.29.0"),
             review_pod("lab", "newer", "1-31-0", "docker.io/istio/proxyv2:1.32.0")]
    for p in pods:
        fold.add(p)
    assert fold.refusals() == {"1-30-2": {"ns-0": 100, "ns-1": 100, "ns-2": 100, "ns-3": 100}}
    assert [p.name for p in fold.skewed] == ["behind", "newer"]  # 2 named, not the 702 read
    # The skew check says the same from the kept pods as from every pod.
    every = version_skew.check({"1-31-0": "1.31.0"}, {"1-31-0": "1.29.0"}, change, None, proxy_pods(pods))
    kept = version_skew.check({"1-31-0": "1.31.0"}, {"1-31-0": "1.29.0"}, change, None, tuple(fold.skewed))
    assert kept == every and any("out of skew" in f.message for f in kept)


def test_without_a_removal_or_an_in_place_change_the_review_reads_no_pod() -> None:
    same = Deployed.from_outputs({"revisions": {"1-31-0": {"version": "1.31.0"}}})
    fold = ClusterPods.of(same, SPEC, [])
    assert not fold.removed and not fold.in_place
