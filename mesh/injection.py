"""Whether a revision's injector injects a pod that reaches it (pure), from the inputs istiod itself uses.

A bound namespace sends every pod to its revision's webhook, but istiod may still return it uninjected:
istio/istio `pkg/kube/inject/inject.go` `injectRequired` reads the pod's `sidecar.istio.io/inject` label
(else annotation), then the `neverInjectSelector` and `alwaysInjectSelector` lists and the policy, all
rendered by the istiod chart (`files/injection-template` config map: `policy` from `global.proxy.autoInject`,
the selectors from `sidecarInjectorWebhook.*InjectSelector`). A restart cannot move such a pod onto a
revision: the planner predicts it, leaves the workload alone and says why.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mesh.istio_vocabulary import INJECT_KEY, ISTIO_NAMESPACE
from mesh.label_selector import is_valid, selects

ENABLED = "enabled"
DISABLED = "disabled"


def _selector_matches(selector: Any, labels: Mapping[str, str]) -> bool:
    """`metav1.LabelSelectorAsSelector(s).Matches(labels)`, for a selector istiod does not skip: an empty or
    invalid one (unknown operator, In/NotIn without values) matches nothing here, as istiod ignores it."""
    if not is_valid(selector) or not (selector.get("matchLabels") or selector.get("matchExpressions")):
        return False
    return selects(selector, labels)


@dataclass(frozen=True)
class InjectorPolicy:
    """A revision's `policy` and selector lists, as its istiod reads them from its config map, and its mesh config's
    root namespace (where mesh-wide ProxyConfig resources live: `mesh.proxy_image.configured_image_type`)."""

    policy: str = ENABLED
    never: tuple[Mapping[str, Any], ...] = ()
    always: tuple[Mapping[str, Any], ...] = ()
    root_namespace: str = ISTIO_NAMESPACE

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> InjectorPolicy:
        """From the values the revision's istiod chart is rendered with (chart defaults: enabled, no selectors)."""
        glob = values.get("global") or {}
        webhook = values.get("sidecarInjectorWebhook") or {}
        return cls(
            policy=str((glob.get("proxy") or {}).get("autoInject") or ENABLED),
            never=tuple(webhook.get("neverInjectSelector") or ()),
            always=tuple(webhook.get("alwaysInjectSelector") or ()),
            root_namespace=str((values.get("meshConfig") or {}).get("rootNamespace")
                               or glob.get("istioNamespace") or ISTIO_NAMESPACE),
        )

    def props(self) -> dict[str, Any]:
        """As the MeshRollout's `injectors` input carries it (plain data for the engine)."""
        return {"policy": self.policy, "never": [dict(s) for s in self.never],
                "always": [dict(s) for s in self.always], "root_namespace": self.root_namespace}

    @classmethod
    def from_props(cls, props: Mapping[str, Any] | None) -> InjectorPolicy:
        props = props or {}
        return cls(str(props.get("policy") or ENABLED), tuple(props.get("never") or ()),
                   tuple(props.get("always") or ()), str(props.get("root_namespace") or ISTIO_NAMESPACE))

    def refuses(self, labels: Mapping[str, str], annotations: Mapping[str, str]) -> str | None:
        """Why istiod returns a pod with these labels and annotations uninjected, or None when it injects it.

        `sidecar.istio.io/inject` "true" or "false" decides alone (the label beats the annotation; any other
        value counts as unset); otherwise the first never-selector that matches refuses, else the first
        always-selector that matches injects, else the policy decides: `enabled` injects, `disabled` does not.
        """
        explicit = labels.get(INJECT_KEY, annotations.get(INJECT_KEY))
        if explicit == "true":
            return None if self.policy in (ENABLED, DISABLED) else self._off()
        if explicit == "false":
            return f"{INJECT_KEY}=false"
        never = _first_match(self.never, labels)
        if never is not None:
            return f"its labels match sidecarInjectorWebhook.neverInjectSelector {describe_selector(never)}"
        if self.policy not in (ENABLED, DISABLED):
            return self._off()
        if self.policy == ENABLED or _first_match(self.always, labels) is not None:
            return None
        return (f"global.proxy.autoInject is disabled: only pods with {INJECT_KEY}=true or matching "
                "sidecarInjectorWebhook.alwaysInjectSelector are injected")

    def _off(self) -> str:
        return f"global.proxy.autoInject is {self.policy!r}, neither enabled nor disabled: istiod injects nothing"


def _first_match(selectors: Sequence[Mapping[str, Any]], labels: Mapping[str, str]) -> Mapping[str, Any] | None:
    return next((s for s in selectors if _selector_matches(s, labels)), None)


def describe_selector(selector: Mapping[str, Any]) -> str:
    """`{app=batch, tier in (a,b)}`: a selector as a reader of the log recognises it from the values."""
    parts = [f"{k}={v}" for k, v in (selector.get("matchLabels") or {}).items()]
    for e in selector.get("matchExpressions") or []:
        values = f" ({','.join(map(str, e.get('values') or []))})" if e.get("values") else ""
        parts.append(f"{e.get('key')} {e.get('operator')}{values}")
    return "{" + ", ".join(parts) + "}"


def injectors_of(revisions: Iterable[str], values: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """The MeshRollout's `injectors` input: the policy of each revision an entry moves to, when its values change
    it (absent means the chart's default). Adding or dropping a revision, or leaving its selectors alone,
    leaves the input as it was."""
    found = {name: InjectorPolicy.from_values(values[name]) for name in sorted(revisions)}
    return {name: policy.props() for name, policy in found.items() if policy != InjectorPolicy()}
