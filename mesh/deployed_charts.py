"""Which charts an `up` leaves as the last completed `up` deployed them.

What moves pods (the tag webhooks, the namespace labels, the MeshRollout) waits for a revision's chart only
when that chart changes: a new revision, or its own upgrade, must serve before pods are sent to it. A
revision whose chart inputs are the ones last deployed already serves, and waiting for the engine to walk
its unchanged objects (and istio-base's before them) only delays the move. The record is a fingerprint of each
chart's inputs, written once the chart is complete (`mesh.components.istio`), so an `up` that failed before a
chart finished leaves the previous fingerprint, and the next `up` waits for that chart again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from typing import Any


def revision_key(name: str) -> str:
    return f"revision/{name}"


def gateway_key(name: str) -> str:
    return f"gateway/{name}"


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    raise TypeError(f"cannot fingerprint {type(value).__name__}")


def fingerprint(*parts: Any) -> str:
    """A digest of everything a chart is rendered and applied from (references, values, namespaces)."""
    encoded = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=_plain)
    return hashlib.sha256(encoded.encode()).hexdigest()


def settled(recorded: Mapping[str, Any] | None, current: Mapping[str, str]) -> frozenset[str]:
    """The keys of `current` whose fingerprint is the one recorded by the last completed `up`: nothing to wait
    for. A key never recorded (a first install, a stack deployed before the record existed) is not settled."""
    recorded = recorded or {}
    return frozenset(key for key, digest in current.items() if recorded.get(key) == digest)
