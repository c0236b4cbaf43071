"""What the API server's admission did to every pod it created, read from its audit log.

The local API server writes an audit event for every pod create (``audit-policy.yaml`` of
``control_plane.py``: level RequestResponse for ``pods`` ``create``, nothing else). Each event carries
the API server's own annotations naming every mutating webhook it called and whether that webhook
changed the pod (``mutation.webhook.admission.k8s.io/round_<r>_index_<i>``), and the pod as stored,
so the tests see which injection webhooks matched a pod and what the real istiod injected, without
any stand-in in the path.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

MUTATION_PREFIX = "mutation.webhook.admission.k8s.io/"
PROXY_CONTAINER = "istio-proxy"
STATUS_ANNOTATION = "sidecar.istio.io/status"
REV_ANNOTATION = "istio.io/rev"


@dataclass(frozen=True)
class PodAdmission:
    """One pod create as the API server admitted (or refused) it."""

    time: float
    namespace: str
    name: str  # the stored name (a controller's pods get theirs from generateName)
    code: int  # the response code: 201, or the refusal's
    webhooks: tuple[tuple[str, bool], ...]  # (configuration, mutated), in call order
    revision: str  # the istio.io/rev annotation istiod wrote ("" when not injected)
    proxy_image: str  # the injected istio-proxy container's image ("" when none)
    status: str  # the sidecar.istio.io/status annotation istiod wrote

    @property
    def patched(self) -> bool:
        """Whether an injector changed the pod (istiod wrote its status annotation)."""
        return bool(self.status)

    @property
    def injectors(self) -> list[str]:
        """The Istio injection webhook configurations that changed this pod."""
        return [name for name, mutated in self.webhooks if mutated and _is_injector(name)]


def _is_injector(configuration: str) -> bool:
    return configuration.startswith(("istio-sidecar-injector", "istio-revision-tag-"))


def _timestamp(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def parse_event(event: dict[str, Any]) -> PodAdmission | None:
    """One audit event as a pod admission; None for anything but a completed pod create."""
    ref = event.get("objectRef") or {}
    if event.get("verb") != "create" or ref.get("resource") != "pods" or ref.get("subresource"):
        return None
    if event.get("stage") != "ResponseComplete":
        return None
    calls: list[tuple[int, int, str, bool]] = []
    for key, value in (event.get("annotations") or {}).items():
        if not key.startswith(MUTATION_PREFIX):
            continue
        round_, _, index = key[len(MUTATION_PREFIX) :].removeprefix("round_").partition("_index_")
        detail = json.loads(value)
        calls.append((int(round_), int(index), detail.get("configuration", ""), bool(detail.get("mutated"))))
    pod = event.get("responseObject") or {}
    meta = pod.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    containers = (pod.get("spec") or {}).get("containers") or []
    proxy = next((c.get("image", "") for c in containers if c.get("name") == PROXY_CONTAINER), "")
    return PodAdmission(
        time=_timestamp(event.get("stageTimestamp") or event["requestReceivedTimestamp"]),
        namespace=ref.get("namespace", ""),
        name=meta.get("name") or ref.get("name") or "",
        code=int((event.get("responseStatus") or {}).get("code", 0)),
        webhooks=tuple((c[2], c[3]) for c in sorted(calls)),
        revision=annotations.get(REV_ANNOTATION, "") if STATUS_ANNOTATION in annotations else "",
        proxy_image=proxy if STATUS_ANNOTATION in annotations else "",
        status=annotations.get(STATUS_ANNOTATION, ""),
    )


def lists(path: Path, resource: str) -> list[tuple[str, str]]:
    """Every completed list of `resource` (a core kind the audit policy records lists of) in the log, as
    (namespace, "" for every namespace; the client's user agent)."""
    found = []
    for line in path.read_text().splitlines():
        event = json.loads(line)
        ref = event.get("objectRef") or {}
        if event.get("verb") == "list" and ref.get("resource") == resource and event.get("stage") == "ResponseComplete":
            found.append((ref.get("namespace", ""), event.get("userAgent", "")))
    return found


class AdmissionLog:
    """The pod creates of one API server's audit log, from a mark on (see :meth:`clear`)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._lock = threading.Lock()

    def calls(self) -> list[PodAdmission]:
        """Every pod create since the last :meth:`clear`, oldest first."""
        with self._lock:
            offset = self._offset
        try:
            with open(self.path, "rb") as f:
                f.seek(offset)
                lines = f.read().splitlines()
        except FileNotFoundError:
            return []
        parsed = (parse_event(json.loads(line)) for line in lines if line.strip().endswith(b"}"))
        return [p for p in parsed if p is not None]

    def injections(self, namespace: str | None = None) -> list[PodAdmission]:
        """The pod creates an Istio injector was called for (optionally of one namespace)."""
        return [
            c
            for c in self.calls()
            if any(_is_injector(name) for name, _ in c.webhooks) and (namespace is None or c.namespace == namespace)
        ]

    def clear(self) -> None:
        """Forget everything logged so far: later reads start here."""
        with self._lock:
            try:
                self._offset = self.path.stat().st_size
            except FileNotFoundError:
                self._offset = 0
