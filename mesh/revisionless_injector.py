"""Pure rules for taking over from a revisionless Istio install (`istioctl install`, or Helm without
`revision`), as `istioctl tag set default` does.

Such an install has the webhook `istio-sidecar-injector` (calling Service `istiod`), selecting the same
namespaces as the default tag (`istio-injection=enabled`, `sidecar.istio.io/inject=true`). With both
active, two webhooks match one pod (IST0139). While the default tag exists, the old webhook's
selectors are made to match nothing (istioctl's never-match); the originals are kept on the object
itself, so removing the default tag (or a `git revert`) puts them back. An `istioctl install` (or
`istioctl tag set default`) has switched it off already and made `istio-revision-tag-default` itself:
that webhook is kept before the program's own is applied over it, and put back as it was when the
default tag is removed. The old istiod keeps serving the pods it injected
(annotation `istio.io/rev: default`) until they are restarted onto a revision.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mesh.istio_vocabulary import DEFAULT_TAG, LEGACY_INJECTION_ENABLED, LEGACY_INJECTION_LABEL
from mesh.revision_tag_webhook import is_ours, webhook_name
from mesh.spec import PROJECT

REVISIONLESS_INJECTOR = "istio-sidecar-injector"
"""The MutatingWebhookConfiguration of a revisionless install in istio-system."""
ORIGINAL_SELECTORS = "istio-mesh.dev/original-selectors"
"""Annotation holding each webhook's selectors from before deactivation (JSON: name -> selectors)."""
NEVER_MATCH = {"matchLabels": {"istio.io/deactivated": "never-match"}}
"""istioctl's own never-match selector (`istioctl/pkg/util/common.go`): `istioctl install` and `istioctl tag set
default` switch the old injector off with it, and `istioctl x check-inject` reports an entry with it (as both
selectors) as deactivated. The takeover uses the same one."""
_EARLIER_NEVER = {"matchExpressions": [
    {"key": "istio-mesh.dev/deactivated", "operator": "In", "values": ["never-match"]}]}
"""The never-match earlier releases of the program wrote: still recognised on clusters they took over."""


def _webhooks(hook: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return list(hook.get("webhooks") or [])


_NEVER_LABELS = {("istio.io/deactivated", "never-match"), ("istio-mesh.dev/deactivated", "never-match")}
"""The labels of NEVER_MATCH and _EARLIER_NEVER: no object carries them."""


def _requires_never_match(selector: Mapping[str, Any] | None) -> bool:
    """The selector requires a never-match label (istioctl's or the program's), so it matches nothing: alone, or
    merged with other requirements (a `helm upgrade` of the old install puts the chart's `matchExpressions`
    back beside the `matchLabels` it never owned, and the entry still matches nothing)."""
    if not selector:
        return False
    labels = set((selector.get("matchLabels") or {}).items())
    required = {(e.get("key"), v) for e in selector.get("matchExpressions") or [] if e.get("operator") == "In"
                and len(e.get("values") or []) == 1 for v in e["values"]}
    return bool((labels | required) & _NEVER_LABELS)


def _never_matches(entry: Mapping[str, Any]) -> bool:
    """A selector of the entry requires a never-match label: the entry injects nothing."""
    return any(_requires_never_match(entry.get(key)) for key in ("namespaceSelector", "objectSelector"))


def is_deactivated(hook: Mapping[str, Any]) -> bool:
    """Every entry selects nothing, whoever switched it off (the takeover, or istioctl)."""
    return all(_never_matches(w) for w in _webhooks(hook))


def deactivated(hook: Mapping[str, Any]) -> dict[str, Any]:
    """The webhook configuration with every entry matching nothing, and the selectors of the entries that
    still matched kept. An entry istioctl switched off is not kept (restoring it would change nothing), and
    selectors already kept are not overwritten: what is restored is what the install had."""
    result = copy.deepcopy(dict(hook))
    active = {w["name"]: w for w in _webhooks(hook) if not _never_matches(w)}
    if not active:
        return result
    meta = result.setdefault("metadata", {})
    annotations = meta.setdefault("annotations", {}) or {}
    meta["annotations"] = annotations
    if ORIGINAL_SELECTORS not in annotations:
        annotations[ORIGINAL_SELECTORS] = json.dumps({
            name: {"namespaceSelector": w.get("namespaceSelector"), "objectSelector": w.get("objectSelector")}
            for name, w in active.items()
        }, sort_keys=True)
    for w in result.get("webhooks") or []:
        if w["name"] in active:
            w["namespaceSelector"] = copy.deepcopy(NEVER_MATCH)
            w["objectSelector"] = copy.deepcopy(NEVER_MATCH)
    return result


def restored(hook: Mapping[str, Any]) -> dict[str, Any] | None:
    """The webhook configuration with its kept selectors back, or None when nothing was kept."""
    result = copy.deepcopy(dict(hook))
    annotations = (result.get("metadata") or {}).get("annotations") or {}
    kept = annotations.pop(ORIGINAL_SELECTORS, None)
    if kept is None:
        return None
    originals = json.loads(kept)
    for w in result.get("webhooks") or []:
        original = originals.get(w["name"])
        if original is None:
            continue  # an entry added since (an upgrade of the old install), or istioctl's: never ours to change
        for key in ("namespaceSelector", "objectSelector"):
            if original.get(key) is None:
                w.pop(key, None)
            else:
                w[key] = original[key]
    return result


def whole_numbers(value: Any) -> Any:
    """`value` with every integral float made an int again. A dynamic resource's outputs come back from the
    Pulumi state with every number a float (443.0, 10.0), which the Kubernetes client refuses for integer
    fields (a port, `timeoutSeconds`); kept objects are given back through this."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, Mapping):
        return {k: whole_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [whole_numbers(v) for v in value]
    return value


@dataclass(frozen=True)
class TagRollback:
    """What removing the default tag does to `istio-revision-tag-default`: `replace` it (or `create` it) with
    `body`, the webhook found before the takeover; `delete` the program's own; or `leave` it (someone else's,
    or gone). `refusal` says why the removal must stop instead."""

    action: str
    body: dict[str, Any] | None = None
    refusal: str | None = None


def tag_rollback(previous: Mapping[str, Any] | None, live: Mapping[str, Any] | None,
                 injector: Mapping[str, Any] | None) -> TagRollback:
    """Give back the default tag webhook that was there before the takeover (`previous`, from
    `previous_tag_webhook`), else delete the program's own (`live`), unless that would leave pods in
    legacy-labelled namespaces with no injecting webhook: the revisionless injector (`injector`, as its
    selectors were restored) still switched off by istioctl, with no tag of istioctl's to give back."""
    if previous is not None:
        body = whole_numbers(previous)
        if live is None:
            return TagRollback("create", body)
        body["metadata"] = {**body["metadata"], "resourceVersion": live["metadata"]["resourceVersion"]}
        return TagRollback("replace", body)
    if live is None or not is_ours(live):
        return TagRollback("leave")
    if injector is not None and is_deactivated(injector):
        return TagRollback("leave", refusal=(
            f"{PROJECT}:tags.default: removing the default tag would leave pods in {LEGACY_INJECTION_LABEL}="
            f"{LEGACY_INJECTION_ENABLED} namespaces without a sidecar: {REVISIONLESS_INJECTOR} is switched off "
            "(istio.io/deactivated: never-match, by istioctl) and no default tag webhook existed before the "
            f"program's, so {webhook_name(DEFAULT_TAG)} was kept. Put tags.default back, or point the default tag "
            "at a revision yourself first (`istioctl tag set default --revision <r> --overwrite`), then run "
            "`pulumi up` again"))
    return TagRollback("delete")


def tag_service_rollback(previous: Mapping[str, Any] | None, live: Mapping[str, Any] | None) -> TagRollback:
    """What removing the default tag does to its Service `istiod-revision-tag-default`: `replace` ours with the
    one found before the takeover (`previous`), `create` it again when ours is gone (without the cluster IP it
    had, which may be taken since), `delete` ours when there was none, or `leave` someone else's."""
    if previous is not None:
        body = whole_numbers(previous)
        if live is None:
            body["spec"] = {k: v for k, v in (body.get("spec") or {}).items() if k not in ("clusterIP", "clusterIPs")}
            return TagRollback("create", body)
        body["metadata"] = {**body["metadata"], "resourceVersion": live["metadata"]["resourceVersion"]}
        return TagRollback("replace", body)
    if live is None or not is_ours(live):
        return TagRollback("leave")
    return TagRollback("delete")


def revisionless_pods(pods: Mapping[str, int]) -> str:
    """A progress line about pods still on the old install, from a namespace -> count map."""
    if not pods:
        return "no pod runs the revisionless istiod any more: it can be uninstalled"
    where = ", ".join(f"{ns} ({n})" for ns, n in sorted(pods.items()))
    return (f"{sum(pods.values())} pod(s) still run the revisionless istiod, in {where}: bind or restart them "
            "before uninstalling it")
