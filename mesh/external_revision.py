"""Revisions installed outside the stack (`revisions.<r>: {external: true}`), as read from the cluster. Pure.

A managed control plane's release channel (`asm-managed`, `asm-managed-rapid`, `asm-managed-stable`) or an istiod
another team installs is a revision the stack binds to but never installs. What the program needs of it is read
from what its installer left in the cluster, the way the istiod chart renders it:

- its injection webhook: the MutatingWebhookConfiguration `istio-sidecar-injector-<r>`, else one labelled
  `istio.io/rev=<r>` that is no tag's (a tag's webhook carries `istio.io/tag` too). None means nothing injects
  pods sent to it, and binding to it is refused. Its label `app.kubernetes.io/version` is the version;
- its injector ConfigMap `istio-sidecar-injector-<r>` (in the namespace of the Service the webhook calls, else
  istio-system), key `values`: the chart values the injector renders pods with (`global.hub`, `global.tag`,
  `global.proxy.image`, `global.variant`, `global.proxy.autoInject`, `sidecarInjectorWebhook.*InjectSelector`).
  From them the proxy image it injects (mesh.proxy_image) and which pods it injects (mesh.injection). A managed
  control plane injects from a remote service and leaves no such ConfigMap: the image is unknown, and moves to
  it are checked for the revision alone.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from mesh.injection import InjectorPolicy
from mesh.istio_vocabulary import ISTIO_NAMESPACE, REV_LABEL, TAG_LABEL
from mesh.proxy_image import proxy_image_from_values
from mesh.revision_tag_webhook import tag_webhook
from mesh.spec import PROJECT
from mesh.webhook_overlap import revision_webhook_name
from mesh.workloads import Target

VERSION_LABEL = "app.kubernetes.io/version"
"""The chart's app version, on the webhook the istiod chart renders."""


def injector_configmap(revision: str) -> str:
    """The istiod chart's name for a revision's injector ConfigMap (the same as its webhook's)."""
    return revision_webhook_name(revision)


def find_injector(revision: str, webhooks: Mapping[str, Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The revision's own injection webhook among every MutatingWebhookConfiguration (by name), or None."""
    if (named := webhooks.get(revision_webhook_name(revision))) is not None:
        return named
    for _name, hook in sorted(webhooks.items()):
        labels = (hook.get("metadata") or {}).get("labels") or {}
        if labels.get(REV_LABEL) == revision and TAG_LABEL not in labels:
            return hook
    return None


def _client(hook: Mapping[str, Any]) -> Mapping[str, Any]:
    """The first entry's clientConfig: every entry of an injector's webhook calls the same istiod."""
    entries = hook.get("webhooks") or [{}]
    return entries[0].get("clientConfig") or {}


def describe_client(client: Mapping[str, Any]) -> str:
    """`Service istio-system/istiod-x (/inject)` or `URL https://...`: what a webhook entry calls."""
    if client.get("url"):
        return f"URL {client['url']}"
    svc = client.get("service") or {}
    return f"Service {svc.get('namespace')}/{svc.get('name')} ({svc.get('path') or '/'})"


@dataclass(frozen=True)
class ExternalFacts:
    """What the cluster says about an external revision."""

    revision: str
    webhook: str
    """The name of its injection webhook configuration."""
    calls: str
    """What that webhook calls (`describe_client`)."""
    version: str
    """Its version, "" when neither the webhook's label nor the values say."""
    proxy_image: str
    """The image its injector writes into pods now, "" when it cannot be known (no injector ConfigMap values)."""
    injector: Mapping[str, Any]
    """Which pods it injects (`InjectorPolicy.props`), from its values (the chart's defaults without them)."""

    def props(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def target_note(self) -> str:
        """The target a move to it is checked against, for the review and the log."""
        version = f", {self.version}" if self.version else ""
        if self.proxy_image:
            return f"external{version}, proxy {self.proxy_image} (read from the cluster)"
        return (f"external{version}; its proxy image cannot be read from the cluster (no `values` in ConfigMap "
                f"{injector_configmap(self.revision)}, as with a managed control plane's remote injector): pods are "
                "checked for the revision alone")


def external_target(facts: ExternalFacts) -> Target:
    """What pods moved to the external revision must run: the revision, and its proxy image where known."""
    return Target(facts.revision, facts.proxy_image, InjectorPolicy.from_props(facts.injector))


def configmap_namespace(hook: Mapping[str, Any]) -> str:
    """Where the revision's injector ConfigMap lives: the namespace of the istiod its webhook calls."""
    return str((_client(hook).get("service") or {}).get("namespace") or ISTIO_NAMESPACE)


def injector_values(configmap: Mapping[str, Any] | None) -> dict[str, Any]:
    """The `values` of an injector ConfigMap (JSON); empty when absent or unreadable."""
    raw = ((configmap or {}).get("data") or {}).get("values")
    try:
        values = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return values if isinstance(values, dict) else {}


def external_facts(revision: str, hook: Mapping[str, Any], configmap: Mapping[str, Any] | None) -> ExternalFacts:
    """The facts of `revision` from its injection webhook and its injector ConfigMap (None when absent)."""
    values = injector_values(configmap)
    glob = values.get("global") if isinstance(values.get("global"), Mapping) else {}
    labels = (hook.get("metadata") or {}).get("labels") or {}
    version = str(labels.get(VERSION_LABEL) or glob.get("tag") or "")
    image = proxy_image_from_values(values) if glob.get("hub") and glob.get("tag") else ""
    return ExternalFacts(
        revision=revision,
        webhook=str((hook.get("metadata") or {}).get("name") or ""),
        calls=describe_client(_client(hook)),
        version=version,
        proxy_image=image,
        injector=InjectorPolicy.from_values(values).props(),
    )


def missing_message(revision: str) -> str:
    """Why binding to an external revision without an injection webhook is refused, naming what to look for."""
    return (
        f"{PROJECT}:revisions.{revision}: revision {revision} is external, but nothing in the cluster injects for it: "
        f"there is no MutatingWebhookConfiguration {revision_webhook_name(revision)} nor one labelled "
        f"{REV_LABEL}={revision} (a tag's webhook, labelled {TAG_LABEL}, does not count), so pods sent to it would "
        f"start without a proxy: install it first (or check its name: `kubectl get "
        f"mutatingwebhookconfigurations -l {REV_LABEL} -L {REV_LABEL}`), or remove the revision and what points at it"
    )


def tag_target_problem(tag: str, revision: str, hook: Mapping[str, Any]) -> str | None:
    """Why the stack's tag `tag` may not point at external `revision`, or None: the tag's webhook, as the program
    renders it, calls istiod's Service `istiod-<revision>`; an external revision whose own webhook calls anything
    else (a managed control plane's URL, istiod in another namespace) would get its pods sent elsewhere."""
    ours = _client(tag_webhook(tag, revision, {}))
    theirs = _client(hook)
    wanted, found = ours.get("service") or {}, theirs.get("service") or {}
    same = (not theirs.get("url") and found.get("name") == wanted.get("name")
            and found.get("namespace") == wanted.get("namespace")
            and (found.get("path") or "/inject") == wanted.get("path"))
    if same:
        return None
    return (
        f"{PROJECT}:tags.{tag}: points at external revision {revision}, whose injection webhook "
        f"{(hook.get('metadata') or {}).get('name')} calls {describe_client(theirs)}, but the tag's webhook would call "
        f"{describe_client(ours)}, so pods selecting the tag would not reach {revision}'s injector: bind the "
        f"namespaces to {revision} itself ({REV_LABEL}={revision}) instead of through a tag, or point the tag at a "
        "revision the stack installs"
    )
