"""Following namespaces with watches: one thread per kind and namespace keeps a cache (mesh.object_cache) up to
date from a paged list and then a watch, as Kubernetes' informers do; readers take the caches under one lock.

The API server sends only what changes, so a rollout that follows the namespaces it moves costs what moves, not
what exists. A watch ends after `WATCH_SECONDS` (the server closes it) and resumes from the last resourceVersion
it saw; a connection that drops or stalls (no byte for `WATCH_SECONDS + STALL_SECONDS`) resumes the same way;
a 410 Gone (the version was compacted away) lists the namespace's objects of that kind again.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from mesh import kube
from mesh.object_cache import ObjectCache, Step, after_failure, lines

WATCH_SECONDS = 240
"""Server-side length of one watch request; then it resumes where it was."""
STALL_SECONDS = 30
"""A watch silent this much longer than its length is a dead connection: it is resumed."""
CONNECT_SECONDS = 10
BACKOFF_SECONDS = 1.0
"""Wait after a refused or broken watch before the next attempt."""
LIST_WORKERS = 8
"""First lists of newly followed namespaces made at once (the client keeps `kube.CONNECTIONS` connections)."""


class Follower:
    """One kind in one namespace: its cache, and the thread that keeps it current until `stop`."""

    def __init__(self, list_call: Callable[..., Any], namespace: str, lock: threading.Lock,
                 changed: threading.Event) -> None:
        self.list_call = list_call
        self.namespace = namespace
        self.cache = ObjectCache()
        self._lock = lock
        self._changed = changed
        self._stop = threading.Event()
        self._response: Any = None

    def start(self, items: list[dict[str, Any]], resource_version: str) -> None:
        """Begin from a list already made (the caller's, so its errors reach the caller), then watch."""
        with self._lock:
            self.cache.replace(items, resource_version)
        threading.Thread(target=self.run, daemon=True, name=f"watch {self.namespace}").start()

    def stop(self) -> None:
        """Stop watching; a watch blocked on the connection is woken by shutting its socket down."""
        self._stop.set()
        response = self._response
        if response is not None:
            with contextlib.suppress(AttributeError, OSError, HTTPError):
                response.shutdown()

    def run(self) -> None:
        """Watch, resume, relist, until stopped."""
        relist = False
        while not self._stop.is_set():
            try:
                if relist:
                    items, version = kube.list_consistent(self.list_call, namespace=self.namespace)
                    with self._lock:
                        self.cache.replace(items, version)
                    self._changed.set()
                    relist = False
                relist = self.watch() is Step.RELIST
            except ApiException as e:
                relist = relist or after_failure(e.status) is Step.RELIST
                self._stop.wait(BACKOFF_SECONDS)
            except (HTTPError, OSError, ValueError):  # dropped, stalled, or cut off mid-event
                self._stop.wait(BACKOFF_SECONDS)

    def watch(self) -> Step:
        """One watch request from the cache's resourceVersion, applied event by event until it ends."""
        response = self.list_call(
            namespace=self.namespace, watch=True, resource_version=self.cache.resource_version,
            allow_watch_bookmarks=True, timeout_seconds=WATCH_SECONDS,
            _request_timeout=(CONNECT_SECONDS, WATCH_SECONDS + STALL_SECONDS))
        self._response = response
        try:
            if self._stop.is_set():  # stopped while the request went out: `stop` saw no response to shut
                return Step.RESUME
            for line in lines(response.stream(amt=None, decode_content=False)):
                if self._stop.is_set():
                    return Step.RESUME
                event = json.loads(line)
                with self._lock:
                    step = self.cache.apply(event)
                if step is Step.RELIST:
                    return step
                if event.get("type") != "BOOKMARK":
                    self._changed.set()
            return Step.RESUME
        finally:
            self._response = None
            response.close()
            response.release_conn()


class Watches:
    """The followed namespaces' objects, per kind; `follow` says which namespaces, `wait` waits for a change."""

    def __init__(self, calls: Mapping[str, Callable[..., Any]]) -> None:
        """`calls`: kind -> its namespaced list call (the same call lists and watches)."""
        self.calls = dict(calls)
        self.lock = threading.Lock()
        self.changed = threading.Event()
        self.followers: dict[str, dict[str, Follower]] = {}
        """Namespace -> kind -> its follower."""

    def follow(self, namespaces: Iterable[str], kinds_for: Callable[[Mapping[str, list[dict[str, Any]]]], Iterable[str]]
               ) -> None:
        """Follow exactly `namespaces` from now on: the new ones are listed (every kind, paged; up to
        `LIST_WORKERS` lists at once, since a rollout's start lists every kind of every namespace it starts with
        and one after the other they are round trips end to end) and then watched for the kinds `kinds_for(its
        lists)` names; the others stop being watched."""
        wanted = set(namespaces)
        for ns in sorted(set(self.followers) - wanted):
            for follower in self.followers.pop(ns).values():
                follower.stop()
        new = sorted(wanted - set(self.followers))
        pairs = [(ns, kind) for ns in new for kind in self.calls]
        with ThreadPoolExecutor(max_workers=LIST_WORKERS) as pool:
            lists = dict(zip(pairs, pool.map(lambda p: kube.list_consistent(self.calls[p[1]], namespace=p[0]), pairs),
                             strict=True))
        for ns in new:
            listed = {kind: lists[(ns, kind)] for kind in self.calls}
            followers = {}
            for kind in kinds_for({k: items for k, (items, _version) in listed.items()}):
                followers[kind] = Follower(self.calls[kind], ns, self.lock, self.changed)
                followers[kind].start(*listed[kind])
            self.followers[ns] = followers

    def objects(self, namespace: str) -> dict[str, list[dict[str, Any]]] | None:
        """A followed namespace's objects by kind, as the watches know them now; None when not followed."""
        followers = self.followers.get(namespace)
        if followers is None:
            return None
        with self.lock:
            return {kind: list(f.cache.objects.values()) for kind, f in followers.items()}

    def store(self, namespace: str, kind: str, obj: dict[str, Any]) -> None:
        """Put an object the API server just returned (a patch's result) into its cache, unless a newer copy
        is there: the next read sees the change without waiting for its event."""
        follower = self.followers.get(namespace, {}).get(kind)
        if follower is not None:
            with self.lock:
                follower.cache.store(obj)

    def wait(self, timeout: float) -> None:
        """Until a followed object changes, or `timeout` seconds."""
        self.changed.wait(timeout)
        self.changed.clear()
