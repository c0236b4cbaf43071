"""What a watch of one kind in one namespace knows, and what to do after each thing the API server sends.

The MeshRollout follows the namespaces it moves the way Kubernetes' own controllers do: list once (paged), then
watch from the list's resourceVersion, applying each event to a cache; the rollout reads the cache instead of
listing again. These are the watch's rules, as pure functions, so they are tested without a cluster:

* `ADDED`/`MODIFIED` store the object, `DELETED` drops it, `BOOKMARK` only moves the resourceVersion on; each
  event's resourceVersion is where the next watch resumes, so a dropped connection loses nothing;
* an `ERROR` event or a refused watch with code 410 (Gone: the resourceVersion was compacted away) means the
  cache can no longer be brought up to date by events: list again;
* an object older than the one stored is never stored over it (a restart's patch response is stored at once,
  so the next tick sees the new generation, and an older event still on its way cannot undo that).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

GONE = 410


class Step(Enum):
    """What a watch does next."""

    RESUME = "resume"
    """Watch again from the cache's resourceVersion (nothing was lost)."""
    RELIST = "relist"
    """List again and replace the cache: events since the resourceVersion are gone."""


def newer(candidate: str, stored: str) -> bool:
    """Whether an object at resourceVersion `candidate` may replace one at `stored`. The API server's versions
    are etcd revisions (integers); anything else is compared as unknown, so the later arrival wins."""
    if candidate.isdigit() and stored.isdigit():
        return int(candidate) >= int(stored)
    return True


def _name(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name", ""))


def _version(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


@dataclass
class ObjectCache:
    """The objects of one kind in one namespace, by name, and the resourceVersion a watch resumes from."""

    objects: dict[str, dict[str, Any]] = field(default_factory=dict)
    resource_version: str = ""
    synced: bool = False
    """Whether a list has filled it: before that it knows nothing, not 'no objects'."""

    def replace(self, items: Iterable[dict[str, Any]], resource_version: str) -> None:
        """A fresh list: everything it returned, nothing else."""
        self.objects = {_name(o): o for o in items}
        self.resource_version = resource_version
        self.synced = True

    def store(self, obj: dict[str, Any]) -> bool:
        """Keep `obj` unless the stored copy is newer; whether it was kept."""
        name = _name(obj)
        old = self.objects.get(name)
        if old is not None and not newer(_version(obj), _version(old)):
            return False
        self.objects[name] = obj
        return True

    def apply(self, event: Mapping[str, Any]) -> Step:
        """One watch event applied; RELIST when the watch says its resourceVersion is gone."""
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            return Step.RELIST if obj.get("code") == GONE else Step.RESUME
        version = _version(obj)
        if kind in ("ADDED", "MODIFIED"):
            self.store(obj)
        elif kind == "DELETED":
            old = self.objects.get(_name(obj))
            if old is not None and newer(version, _version(old)):
                del self.objects[_name(obj)]
        if version:
            self.resource_version = version
        return Step.RESUME


def after_failure(status: int | None) -> Step:
    """What follows a watch the API server refused (`status`) or a connection that broke (None)."""
    return Step.RELIST if status == GONE else Step.RESUME


def lines(chunks: Iterable[bytes]) -> Iterator[str]:
    """A watch response's body as the JSON lines it carries, whatever the chunking; a last line without its
    newline is an event cut off by a dropped connection, so it is not yielded."""
    pending = b""
    for chunk in chunks:
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for line in complete:
            if line.strip():
                yield line.decode()
