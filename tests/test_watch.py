"""The MeshRollout follows what it moves with watches, and every large read is paged.

Pure rules first (mesh.object_cache: events, resume, relist), then the paged reads (mesh.kube) and a watch
(mesh.providers.watch) against fake list calls, then a whole MeshRollout `create` against a fake API server
that pages, streams watch events (the pods' a moment late), drops a watch and answers another with 410 Gone.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
import yaml
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import ProtocolError

from mesh import kube
from mesh.object_cache import ObjectCache, Step, after_failure, lines
from mesh.providers import watch
from mesh.providers.rollout import MeshRolloutProvider, kinds_to_follow, roll
from mesh.restart_budget import Schedule
from mesh.workloads import RESTARTED_FOR, RESTARTED_FOR_PROXY, RolloutRun
from tests.test_workloads import NS, B, FakeCluster, deployment, in_ns, namespace, restarting, rolled

OLD, NEW = "docker.io/istio/proxyv2:1.30.0", "docker.io/istio/proxyv2:1.31.0"


def obj(name: str, version: int, **extra: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "resourceVersion": str(version)}, **extra}


# --- the cache's rules ---------------------------------------------------------------------------


def test_events_update_the_cache_and_where_the_next_watch_resumes() -> None:
    cache = ObjectCache()
    cache.replace([obj("a", 5), obj("b", 6)], "7")
    assert cache.synced and cache.resource_version == "7"
    assert cache.apply({"type": "MODIFIED", "object": obj("a", 8, spec=1)}) is Step.RESUME
    assert cache.apply({"type": "ADDED", "object": obj("c", 9)}) is Step.RESUME
    assert cache.apply({"type": "DELETED", "object": obj("b", 10)}) is Step.RESUME
    assert cache.apply({"type": "BOOKMARK", "object": obj("", 12)}) is Step.RESUME
    assert sorted(cache.objects) == ["a", "c"] and cache.objects["a"]["spec"] == 1
    assert cache.resource_version == "12"


def test_gone_means_list_again_anything_else_resumes() -> None:
    cache = ObjectCache()
    cache.replace([], "3")
    assert cache.apply({"type": "ERROR", "object": {"kind": "Status", "code": 410}}) is Step.RELIST
    assert cache.apply({"type": "ERROR", "object": {"kind": "Status", "code": 500}}) is Step.RESUME
    assert cache.resource_version == "3"
    assert after_failure(410) is Step.RELIST
    assert after_failure(None) is after_failure(500) is Step.RESUME


def test_a_patch_result_stored_first_is_not_undone_by_an_older_event() -> None:
    cache = ObjectCache()
    cache.replace([obj("web", 5, generation=1)], "5")
    assert cache.store(obj("web", 9, generation=2))
    cache.apply({"type": "MODIFIED", "object": obj("web", 7, generation=1)})  # sent before the patch
    assert cache.objects["web"]["generation"] == 2
    cache.apply({"type": "MODIFIED", "object": obj("web", 11, generation=2, status="observed")})
    assert cache.objects["web"]["status"] == "observed"


def test_watch_lines_across_chunks_and_a_cut_off_event_dropped() -> None:
    chunks = [b'{"type":"ADDED"}\n{"ty', b'pe":"MODIFIED"}\n', b"\n", b'{"type":"DEL']
    assert list(lines(chunks)) == ['{"type":"ADDED"}', '{"type":"MODIFIED"}']


def test_what_a_namespace_is_watched_for() -> None:
    assert kinds_to_follow({"Deployment": [{}], "StatefulSet": [], "ReplicaSet": [{}], "Pod": []}) == [
        "Deployment", "ReplicaSet", "Pod"]
    assert kinds_to_follow({"DaemonSet": [{}]}) == ["DaemonSet", "Pod"]


def test_a_workload_done_before_its_pods_is_read_afresh_before_it_fails() -> None:
    w = deployment("web", "a")
    run = RolloutRun(B, 1, 300)
    run.plan([w], 0)
    schedule = Schedule({NS: run}, 1)
    assert [started.key for _e, started in schedule.tick({NS: {w.key: w}}, 0)] == ["Deployment/web"]
    moving = restarting(w, "b")
    assert schedule.unconfirmed({NS: {w.key: moving}}) == []  # still rolling: nothing to judge yet
    ahead = replace(moving, observed_generation=moving.generation)  # complete, yet its old pod still seen
    assert schedule.unconfirmed({NS: {w.key: ahead}}) == [NS]
    assert schedule.unconfirmed({NS: {w.key: rolled(moving, "b")}}) == []


def test_the_next_tick_reads_the_entries_in_flight_and_the_next_in_turn() -> None:
    workloads = {ns: in_ns(ns, namespace(3)) for ns in "abcde"}
    runs = {}
    for ns, ws in workloads.items():
        runs[ns] = RolloutRun(B, 2, 300)
        runs[ns].plan(ws.values(), 0)
    schedule = Schedule(runs, concurrency=2)
    assert schedule.wanted(2) == ["a", "b"]
    started = schedule.tick({ns: workloads[ns] for ns in schedule.wanted(2)}, 0)
    assert [e for e, _w in started] == ["a", "b"]
    assert schedule.wanted(2) == ["a", "b", "c", "d"]  # a and b to account for, c and d next in turn
    assert schedule.tick({"c": workloads["c"]}, 1) == []  # no slot free; a and b not read: not accounted


def test_the_rollout_follows_a_window_of_namespaces_not_every_one_it_moves() -> None:
    cluster = FakeCluster({f"ns{i:02d}": in_ns(f"ns{i:02d}", namespace(2)) for i in range(12)}, ticks=2)
    runs = {}
    for ns, ws in cluster.workloads.items():
        runs[ns] = RolloutRun(B, 2, 300)
        runs[ns].plan(ws.values(), 0)
    roll(cluster, Schedule(runs, concurrency=2), clock=lambda: cluster.waited)  # type: ignore[arg-type]
    assert len(cluster.restarts) == 24
    assert max(len(followed) for followed in cluster.followed) <= 2 + 2 * 2  # in flight + the next 2 per slot
    assert set().union(*cluster.followed) == set(cluster.workloads)


# --- paged lists ------------------------------------------------------------------------------------


class PagedList:
    """A list call over `items`, `limit` at a time; the continue tokens listed in `expire` answer 410 once,
    with a token for the rest of the list when `offer` is set."""

    def __init__(self, items: list[dict[str, Any]], expire: set[str] = frozenset(), offer: bool = True) -> None:
        self.items, self.expire, self.offer = items, set(expire), offer
        self.calls: list[dict[str, Any]] = []

    def __call__(self, **kw: Any) -> Any:
        self.calls.append(kw)
        start = int(kw.get("_continue") or 0)
        if kw.get("_continue") in self.expire:
            self.expire.discard(kw["_continue"])
            meta = {"continue": str(start)} if self.offer else {}
            e = ApiException(status=410, reason="Gone")
            e.body = json.dumps({"kind": "Status", "code": 410, "reason": "Expired", "metadata": meta})
            raise e
        end = start + kw["limit"]
        meta = {"resourceVersion": "42", **({"continue": str(end)} if end < len(self.items) else {})}
        return SimpleNamespace(data=json.dumps({"metadata": meta, "items": self.items[start:end]}).encode())


@pytest.fixture
def small_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kube, "PAGE_SIZE", 2)


def test_a_list_pages_and_goes_on_past_an_expired_continue_token(small_pages: None) -> None:
    items = [obj(f"p{i}", i) for i in range(7)]
    call = PagedList(items, expire={"4"})
    assert list(kube.list_objects(call, namespace="shop")) == items  # each item once
    assert [c["limit"] for c in call.calls] == [2] * 5
    assert [c["_continue"] for c in call.calls] == [None, "2", "4", "4", "6"]
    with pytest.raises(ApiException):  # no token offered: the 410 is the caller's
        list(kube.list_objects(PagedList(items, expire={"2"}, offer=False)))


def test_a_consistent_list_starts_over_when_its_continue_token_expires(small_pages: None) -> None:
    items = [obj(f"p{i}", i) for i in range(5)]
    call = PagedList(items, expire={"4"})
    assert kube.list_consistent(call, namespace="shop") == (items, "42")
    assert [c["_continue"] for c in call.calls] == [None, "2", "4", None, "2", "4"]
    always = PagedList(items, expire=set())
    always.expire = type("Every", (), {"__contains__": lambda _s, k: k == "2", "discard": lambda _s, _k: None})()
    with pytest.raises(ApiException, match="expired 5 times"):
        kube.list_consistent(always)


# --- one watch: resume, relist, stop ------------------------------------------------------------------


class Stream:
    """A watch response: `chunks`, then `end` (None: the server closed it normally)."""

    def __init__(self, chunks: list[bytes], end: Exception | None = None) -> None:
        self.chunks, self.end, self.closed = chunks, end, False

    def stream(self, **_kw: Any) -> Iterator[bytes]:
        yield from self.chunks
        if self.end:
            raise self.end

    def close(self) -> None:
        self.closed = True

    def release_conn(self) -> None:
        pass


def event(kind: str, name: str, version: int) -> bytes:
    return json.dumps({"type": kind, "object": obj(name, version)}).encode() + b"\n"


def test_a_watch_resumes_after_a_dropped_connection_and_relists_on_gone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(watch, "BACKOFF_SECONDS", 0)
    follower: watch.Follower
    lists = iter([([obj("a", 20), obj("z", 21)], "21")])
    watches: list[str] = []

    def call(**kw: Any) -> Any:
        if not kw.get("watch"):
            items, version = next(lists)
            return SimpleNamespace(data=json.dumps({"metadata": {"resourceVersion": version},
                                                    "items": items}).encode())
        watches.append(kw["resource_version"])
        assert kw["allow_watch_bookmarks"] and kw["timeout_seconds"] == watch.WATCH_SECONDS
        if len(watches) == 1:  # two events, then the connection drops mid-event
            return Stream([event("ADDED", "b", 11), event("MODIFIED", "a", 12), b'{"type":'],
                          ProtocolError("connection broken"))
        if len(watches) == 2:
            return Stream([event("BOOKMARK", "", 15)])  # ends normally
        if len(watches) == 3:
            return Stream([b'{"type":"ERROR","object":{"kind":"Status","code":410}}\n'])
        follower.stop()
        return Stream([])

    changed = threading.Event()
    follower = watch.Follower(call, "shop", threading.Lock(), changed)
    follower.cache.replace([obj("a", 10)], "10")
    follower.run()
    assert watches == ["10", "12", "15", "21"]  # resumed where it was; after 410, from the new list
    assert sorted(follower.cache.objects) == ["a", "z"]  # the list replaced what the events had built
    assert changed.is_set()


# --- the MeshRollout against a fake API server ----------------------------------------------------


class FakeApi:
    """Namespaced Deployments, ReplicaSets and pods with paged lists, streamed watches and a controller: a
    restart patch makes a new ReplicaSet and pod on the patch's revision at once (a list sees them), while pod
    events reach watchers `pod_lag` seconds late. The first pod watch is dropped, the second answered 410."""

    def __init__(self, namespaces: list[str], per_namespace: int, pod_lag: float = 0.3) -> None:
        self.lock = threading.Condition()
        self.version = 100
        self.store: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
        self.events: list[tuple[int, str, str, dict[str, Any], float]] = []
        self.requests: list[tuple[str, str, dict[str, list[str]]]] = []
        self.pod_lag = pod_lag
        self.pod_watches = 0
        with self.lock:
            for ns in namespaces:
                for i in range(per_namespace):
                    self._deploy(ns, f"w{i}", "a", OLD, gen=1)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                outer.get(self)

            def do_PATCH(self) -> None:
                outer.patch(self)

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    # objects

    def _put(self, plural: str, ns: str, o: dict[str, Any], kind: str = "MODIFIED") -> None:
        self.version += 1
        o["metadata"]["resourceVersion"] = str(self.version)
        o["metadata"]["namespace"] = ns
        bucket = self.store.setdefault((plural, ns), {})
        if kind == "DELETED":
            bucket.pop(o["metadata"]["name"], None)
        else:
            bucket[o["metadata"]["name"]] = o
        lag = self.pod_lag if plural == "pods" else 0.0
        self.events.append((self.version, plural, ns, {"type": kind, "object": json.loads(json.dumps(o))},
                            time.monotonic() + lag))
        self.lock.notify_all()

    def _deploy(self, ns: str, name: str, rev: str, image: str, gen: int) -> None:
        meta = {"name": name, "uid": f"{ns}-{name}", "generation": gen}
        status = {"observedGeneration": gen, "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1,
                  "availableReplicas": 1}
        template = {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "app"}]}}
        self._put("deployments", ns, {"metadata": meta, "spec": {"replicas": 1, "template": template,
                                      "selector": {"matchLabels": {"app": name}}}, "status": status}, "ADDED")
        self._pod(ns, name, rev, image, gen)

    def _pod(self, ns: str, name: str, rev: str, image: str, gen: int) -> None:
        rs = {"name": f"{name}-{gen}", "uid": f"{ns}-{name}-rs{gen}",
              "ownerReferences": [{"controller": True, "kind": "Deployment", "uid": f"{ns}-{name}"}]}
        self._put("replicasets", ns, {"metadata": rs}, "ADDED")
        pod = {"name": f"{name}-{gen}-pod", "uid": f"{ns}-{name}-pod{gen}", "annotations": {"istio.io/rev": rev},
               "ownerReferences": [{"controller": True, "kind": "ReplicaSet", "uid": rs["uid"]}]}
        self._put("pods", ns, {"metadata": pod, "spec": {"containers": [{"name": "istio-proxy", "image": image}]},
                               "status": {"phase": "Running"}}, "ADDED")

    # requests

    def route(self, path: str) -> tuple[str, str] | None:
        parts = path.strip("/").split("/")
        if parts[:3] == ["api", "v1", "namespaces"] and len(parts) == 5:
            return parts[4], parts[3]
        if parts[:4] == ["apis", "apps", "v1", "namespaces"] and len(parts) in (6, 7):
            return parts[5], parts[4]
        return None

    def reply(self, h: BaseHTTPRequestHandler, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        h.send_response(code)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    def get(self, h: BaseHTTPRequestHandler) -> None:
        url = urlparse(h.path)
        query = parse_qs(url.query)
        self.requests.append(("GET", url.path, query))
        where = self.route(url.path)
        if where is None:
            return self.reply(h, 404, {"kind": "Status", "code": 404})
        plural, ns = where
        if watching(query):
            return self.stream(h, plural, ns, int(query["resourceVersion"][0]))
        limit, start = int(query["limit"][0]), int(query.get("continue", ["0"])[0])
        with self.lock:
            items = sorted(self.store.get((plural, ns), {}).values(), key=lambda o: o["metadata"]["name"])
            meta = {"resourceVersion": str(self.version)}
        if start + limit < len(items):
            meta["continue"] = str(start + limit)
        self.reply(h, 200, {"metadata": meta, "items": items[start:start + limit]})

    def stream(self, h: BaseHTTPRequestHandler, plural: str, ns: str, since: int) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()

        def send(line: dict[str, Any]) -> None:
            data = json.dumps(line).encode() + b"\n"
            h.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            h.wfile.flush()

        with self.lock:
            number = self.pod_watches = self.pod_watches + (plural == "pods")
        if plural == "pods" and number == 2:
            send({"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired"}})
            h.wfile.write(b"0\r\n\r\n")
            return
        sent = 0
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with self.lock:
                due = [e for e in self.events if e[0] > since and e[1] == plural and e[2] == ns
                       and e[4] <= time.monotonic()]
                if not due:
                    self.lock.wait(0.05)
                    continue
            for version, _plural, _ns, line, _due in due:
                send(line)
                since = version
                sent += 1
            if plural == "pods" and number == 1 and sent:
                h.close_connection = True  # dropped mid-stream, no terminating chunk
                return
        h.wfile.write(b"0\r\n\r\n")

    def patch(self, h: BaseHTTPRequestHandler) -> None:
        url = urlparse(h.path)
        body = json.loads(h.rfile.read(int(h.headers["Content-Length"])))
        self.requests.append(("PATCH", url.path, {}))
        plural, ns = self.route(url.path) or ("", "")
        name = url.path.rstrip("/").split("/")[-1]
        annotations = body["spec"]["template"]["metadata"]["annotations"]
        with self.lock:
            d = self.store[(plural, ns)][name]
            gen = d["metadata"]["generation"] + 1
            d["metadata"]["generation"] = gen
            d["spec"]["template"]["metadata"]["annotations"] = annotations
            self._put(plural, ns, d)
            reply = json.loads(json.dumps(d))
        threading.Timer(0.1, self.controller, (ns, name, annotations, gen)).start()
        self.reply(h, 200, reply)

    def controller(self, ns: str, name: str, annotations: dict[str, str], gen: int) -> None:
        """The rollout completes: the old pod goes, a new one on the patch's target runs, and the Deployment
        says so; a list sees all of it at once, pod watchers only `pod_lag` later."""
        with self.lock:
            old = self.store[("pods", ns)][f"{name}-{gen - 1}-pod"]
            self._put("pods", ns, old, "DELETED")
            self._pod(ns, name, annotations[RESTARTED_FOR], annotations[RESTARTED_FOR_PROXY], gen)
            d = self.store[("deployments", ns)][name]
            d["status"]["observedGeneration"] = gen
            self._put("deployments", ns, d)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"


def watching(query: dict[str, list[str]]) -> bool:
    return [v.lower() for v in query.get("watch", [])] == ["true"]


def test_the_rollout_follows_its_namespaces_with_watches_not_polls(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, small_pages: None
) -> None:
    monkeypatch.setattr(watch, "BACKOFF_SECONDS", 0.05)
    api = FakeApi(["shop", "cart"], per_namespace=3)
    config = tmp_path / "kubeconfig"
    config.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": api.url}}], "users": [{"name": "u", "user": {}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}))
    monkeypatch.setenv("KUBECONFIG", str(config))
    entry = {"revision": "b", "proxy_image": NEW, "strategy": "rolling"}
    props = {"namespaces": {"shop": entry, "cart": entry}, "gateways": {}, "concurrency": 2,
             "per_namespace": 0, "timeout_seconds": 30, "injectors": {}}
    started = time.monotonic()
    outs = MeshRolloutProvider().create(props).outs
    took = time.monotonic() - started
    api.server.shutdown()
    assert outs["results"]["shop"]["restarted"] == ["Deployment/w0", "Deployment/w1", "Deployment/w2"]
    assert outs["results"]["cart"]["pods_on_other_revisions"] == 0
    gets = [(path, q) for method, path, q in api.requests if method == "GET" and "proxyconfigs" not in path]
    assert all("/namespaces/" in path for path, _q in gets)  # nothing cluster-wide
    kind = {path: path.rsplit("/", 1)[1] for path, _q in gets}
    watches = [(kind[path], q) for path, q in gets if watching(q)]
    starts = [kind[path] for path, q in gets if not watching(q) and "continue" not in q]
    assert all(q["limit"] == ["2"] for path, q in gets if not watching(q))  # every list paged
    # each namespace: every kind listed once; then Deployments, ReplicaSets and pods watched (no StatefulSet or
    # DaemonSet there); pods and ReplicaSets listed afresh only where a Deployment looked done before its pods did
    assert {k for k, _q in watches} == {"deployments", "replicasets", "pods"}
    confirms = starts.count("replicasets") - 2
    assert 1 <= confirms <= 6  # the pods' events are late: at least once; at most once per restart
    assert starts.count("deployments") == 2
    assert len(starts) == 2 * 5 + 1 + 2 * confirms  # + 1: the pods listed again after the watch's 410 Gone
    pod_watches = [q["resourceVersion"][0] for k, q in watches if k == "pods"]
    assert len(pod_watches) >= 4  # 2 namespaces' first watches, the one resumed after the drop, after the 410
    assert took < 10


def test_the_first_lists_of_new_namespaces_run_at_once() -> None:
    """A rollout's start lists every kind of every namespace it starts with; one after the other they are round
    trips end to end (7-9 s for 20 namespaces on a loaded API server). Here every list waits until all four are
    in flight: lists made one at a time would never get there."""
    in_flight = threading.Barrier(4, timeout=10)
    seen: list[tuple[str, str]] = []

    def lister(kind: str) -> Any:
        def call(**kw: Any) -> Any:
            in_flight.wait()
            seen.append((kw["namespace"], kind))
            return SimpleNamespace(data=json.dumps({"metadata": {"resourceVersion": "7"}, "items": []}).encode())
        return call

    watches = watch.Watches({"deployments": lister("deployments"), "pods": lister("pods")})
    watches.follow(["a", "b"], lambda listed: [])
    assert sorted(seen) == [("a", "deployments"), ("a", "pods"), ("b", "deployments"), ("b", "pods")]
    assert set(watches.followers) == {"a", "b"}
