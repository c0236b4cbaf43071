"""Which MeshRollout entries an `up` plans (pure): those new, or with another revision, proxy image or strategy
than the MeshRollout last completed.

The provider (mesh/providers/rollout.py) acts on this rule with its state as `olds`; the review (mesh/review.py)
predicts it from the same state and `rollout_inputs`, the entries the program registers for a config. The state,
not the stack outputs: a failed `up` has already exported the new config, while the MeshRollout's state keeps
the entries it last completed, and the next `up` plans the difference again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mesh.charts import CANARY_SUFFIX, gateway_workload
from mesh.proxy_image import proxy_image
from mesh.rollout_entries import gateway_entry
from mesh.spec import BindingSpec, GatewaySpec, MeshSpec

ENTRY_KEYS = ("revision", "proxy_image", "strategy")
"""What is worth restarting pods for. Concurrency and timeouts only shape the next rollout, so a change
of them alone is no change: nothing is restarted, nothing shows in the preview."""


def entries_of(props: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Namespaces and gateway Deployments (`<namespace>/<name>`) in one map."""
    return {**(props.get("namespaces") or {}), **(props.get("gateways") or {})}


def changed_entries(olds: Mapping[str, Any], news: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Entries new or with another revision, proxy image or strategy than the state has: what to move."""
    before = entries_of(olds)
    return {e: t for e, t in entries_of(news).items()
            if {k: (before.get(e) or {}).get(k) for k in ENTRY_KEYS} != {k: t.get(k) for k in ENTRY_KEYS}}


def rollout_inputs(spec: MeshSpec) -> dict[str, dict[str, dict[str, str]]]:
    """The MeshRollout's `namespaces` and `gateways` inputs for `spec`, as mesh.components.Istio registers them
    (tests/test_review_matches_up.py compares the two): every binding, and each gateway's Deployment and its
    canary's, with the revision it resolves to and the proxy image that revision injects."""

    def entry(ref: str, of: BindingSpec | GatewaySpec) -> dict[str, str]:
        revision = spec.resolve(ref)
        return {"revision": revision, "proxy_image": proxy_image(spec, revision), "strategy": spec.strategy_of(of)}

    gateways = {gateway_entry(name, g): entry(g.revision, g) for name, g in spec.gateways.items()}
    gateways.update({f"{g.namespace}/{gateway_workload(name, g)}{CANARY_SUFFIX}": entry(g.canary.revision, g)
                     for name, g in spec.gateways.items() if g.canary})
    return {"namespaces": {ns: entry(b.revision, b) for ns, b in sorted(spec.namespaces.items())},
            "gateways": dict(sorted(gateways.items()))}
